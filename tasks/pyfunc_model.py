"""The registered model's MLflow pyfunc: PNG bytes plus metadata in, probabilities out.

Logged as "models from code" (mlflow.pyfunc.log_model(python_model=<this file>)): MLflow
stores this file with the model and runs it at load time, and the ``mammo`` package travels
in the model's code path, so a consumer needs only:

    model = mlflow.pyfunc.load_model("models:/mammo-cancer@champion")
    model.predict(frame)   # columns: png (bytes) [+ age, implant, site_id, machine_id, view,
                           #   laterality for fused models] -> probability per row
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel  # its home: mlflow.pyfunc only re-imports it


class MammoClassifier(PythonModel):
    def load_context(self, context: Any) -> None:
        from mammo.inference import ModelBundle
        from mammo.tags import BUNDLE_ARTIFACT

        self.bundle = ModelBundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return self.bundle.predict_frame(model_input)


set_model(MammoClassifier())
