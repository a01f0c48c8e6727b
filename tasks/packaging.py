"""A trained model as MLflow stores it: the bundle, the pyfunc and the raw torch module.

The pyfunc is logged "from code" (tasks/pyfunc_model.py, which MLflow stores with the model),
with the ``mammo`` package as its code path and the ``ModelBundle`` as its one artifact, so
a consumer needs only MLflow and the pinned serving packages to load and score it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from mammo import contract as c
from mammo import tags as t
from mammo.features import MetadataEncoder
from mammo.inference import BundleConfig, ModelBundle
from mammo.models import Classifier
from mammo.training import TrainConfig

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
MAMMO_CODE = Path(__file__).resolve().parents[1] / "mammo"
SERVING_PACKAGES = ("torch", "numpy", "pandas", "opencv-python-headless", "pydicom", "mlflow")

__all__ = [
    "MAMMO_CODE",
    "PYFUNC_CODE",
    "SERVING_PACKAGES",
    "log_models",
    "model_bundle",
    "serving_requirements",
]


def model_bundle(
    model: Classifier,
    cfg: TrainConfig,
    threshold: float | None,
    preprocess: dict[str, Any],
    encoder: MetadataEncoder | None,
) -> ModelBundle:
    """The trained ``model`` with everything scoring needs: its spec, the target, the input
    size, the aggregation and locked threshold, the preprocessing and metadata encoder."""
    return ModelBundle(
        model,
        BundleConfig(
            model=cfg.model,
            spec=model.spec.to_dict(),
            target=cfg.target,
            image_rows=cfg.image_rows,
            image_cols=cfg.image_cols,
            aggregation=cfg.aggregation,
            threshold=threshold,
            preprocess=preprocess,
            encoder=encoder.to_dict() if encoder else None,
            train_config=cfg.to_dict(),
        ),
    )


def serving_requirements() -> list[str]:
    """What a registered model needs to load and score, pinned to this environment (MLflow
    would otherwise infer it by importing the model in a subprocess, seconds per model)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_PACKAGES]


def _serving_code(target: Path) -> Path:
    """The ``mammo`` package as a model carries it: everything but the synthetic generator."""
    destination = target / "mammo"
    shutil.copytree(MAMMO_CODE, destination, ignore=shutil.ignore_patterns("synth", "__pycache__"))
    return destination


def log_models(bundle: ModelBundle, model: torch.nn.Module, work: Path) -> tuple[str, str]:
    """Log, into the active MLflow run, the pyfunc (PNG bytes + metadata -> probabilities)
    and the raw torch module; returns their model URIs."""
    target = bundle.target
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    bundle_dir = bundle.save(work / t.BUNDLE_ARTIFACT)
    code = _serving_code(work / "code")
    requirements = serving_requirements()
    inputs: list[ColSpec | TensorSpec] = [ColSpec("binary", c.PNG)]  # Schema's element type
    if bundle.encoder is not None:
        kinds = {c.AGE: "double", c.IMPLANT: "long", c.SITE_ID: "long", c.MACHINE_ID: "long"}
        inputs += [
            ColSpec(kinds.get(col, "string"), col, required=False) for col in bundle.encoder.columns
        ]
    outputs: list[ColSpec | TensorSpec] = (
        [ColSpec("double", c.PROBABILITY)]
        if target.is_binary
        else [ColSpec("double", f"{c.PROBABILITY}_{k}") for k in target.classes]
    )
    pyfunc = mlflow.pyfunc.log_model(
        name=t.PYFUNC_MODEL,
        python_model=str(PYFUNC_CODE),
        artifacts={t.BUNDLE_ARTIFACT: str(bundle_dir)},
        code_paths=[str(code)],
        signature=ModelSignature(Schema(inputs), Schema(outputs)),
        pip_requirements=requirements,
    )
    rows, cols = bundle.config.image_rows, bundle.config.image_cols
    torch_signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, 1, rows, cols), "image")]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, target.num_outputs), "logits")]),
    )
    raw = mlflow.pytorch.log_model(
        model,
        name=t.TORCH_MODEL,
        signature=torch_signature,
        code_paths=[str(code)],
        serialization_format="pickle",
        pip_requirements=requirements,
    )
    return pyfunc.model_uri, raw.model_uri
