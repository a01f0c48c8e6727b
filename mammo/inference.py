"""A trained model as a directory that scores PNG bytes plus metadata: the core of serving.

The bundle holds the weights and everything prediction needs to reproduce training's view
of an image: the frozen preprocessing config (DICOM -> PNG, used by batch prediction), the
training resolution, the metadata encoder, the target's classes, the breast aggregation and
the decision threshold chosen on validation. The MLflow pyfunc wrapper
(tasks/pyfunc_model.py) is a thin shell around :meth:`ModelBundle.predict_frame`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from mammo import contract as c
from mammo.features import MetadataEncoder
from mammo.models import ModelSpec, create_model
from mammo.png import decode_png
from mammo.preprocess import PreprocessConfig
from mammo.training import Target, images_to_tensor, logits_of

WEIGHTS_FILE, BUNDLE_FILE = "weights.pt", "bundle.json"
BATCH = 32


class BundleError(ValueError):
    """A model bundle or a frame to score that cannot be used."""


@dataclass(frozen=True)
class BundleConfig:
    model: str  # registry name, mammo.models
    spec: dict[str, Any]  # ModelSpec.to_dict()
    target: str
    image_rows: int
    image_cols: int
    aggregation: str  # "mean" or "max" over a breast's images
    threshold: float | None  # binary: probability at which a breast is called positive
    preprocess: dict[str, Any]  # PreprocessConfig fields: how the PNGs must be made
    encoder: dict[str, Any] | None = None  # MetadataEncoder.to_dict() when fused
    train_config: dict[str, Any] = field(default_factory=dict)


def to_training_image(image: npt.NDArray[Any], rows: int, cols: int) -> npt.NDArray[np.uint8]:
    """A stored (H, W) uint8/uint16 image -> (rows, cols) uint8 at training resolution."""
    import cv2

    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # 16-bit PNG -> 8-bit: keep the high byte
    if image.shape != (rows, cols):
        image = cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA)
    return np.asarray(image, dtype=np.uint8)


class ModelBundle:
    def __init__(self, model: torch.nn.Module, config: BundleConfig) -> None:
        self.model = model.eval()
        self.config = config
        self.target = Target.for_column(config.target)
        self.encoder = MetadataEncoder.from_dict(config.encoder) if config.encoder else None

    @property
    def vflip(self) -> bool:
        """Test-time flips, when the model was trained and validated with them."""
        return bool(self.config.train_config.get("tta_vflip", False))

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(**self.config.preprocess)

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(weights, directory / WEIGHTS_FILE)
        (directory / BUNDLE_FILE).write_text(json.dumps(asdict(self.config), indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        try:
            config = BundleConfig(**json.loads((directory / BUNDLE_FILE).read_text()))
        except (OSError, TypeError, ValueError) as exc:
            raise BundleError(f"not a model bundle: {directory} ({exc})") from exc
        model = create_model(config.model, ModelSpec.from_dict(config.spec))
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return cls(model, config)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score one row per image: a ``png`` column of PNG bytes (made with this bundle's
        preprocessing config) plus, for fused models, the prediction-time metadata.

        Returns ``probability`` (binary) or one ``probability_<class>`` column per class,
        indexed like ``frame``.
        """
        if c.PNG not in frame.columns:
            raise BundleError(f"the frame to score needs a {c.PNG!r} column of PNG bytes")
        if self.encoder is not None:
            missing = [col for col in self.encoder.columns if col not in frame.columns]
            if missing:
                raise BundleError(f"this model fuses metadata; missing columns {missing}")
        probabilities = np.concatenate(list(self._probabilities(frame))) if len(frame) else None
        if self.target.is_binary:
            values = probabilities if probabilities is not None else np.zeros(0)
            return pd.DataFrame({c.PROBABILITY: values}, index=frame.index)
        names = [f"{c.PROBABILITY}_{k}" for k in self.target.classes]
        values = probabilities if probabilities is not None else np.zeros((0, len(names)))
        return pd.DataFrame(values, columns=names, index=frame.index)

    def _probabilities(self, frame: pd.DataFrame) -> Iterator[npt.NDArray[np.float64]]:
        rows, cols = self.config.image_rows, self.config.image_cols
        for start in range(0, len(frame), BATCH):
            part = frame.iloc[start : start + BATCH]
            images = np.stack(
                [to_training_image(decode_png(bytes(png)), rows, cols) for png in part[c.PNG]]
            )  # (B, rows, cols) uint8
            metadata = None
            if self.encoder is not None:
                metadata = torch.from_numpy(self.encoder.transform(part))
            with torch.inference_mode():
                logits = logits_of(self.model, images_to_tensor(images), metadata, self.vflip)
            yield self.target.probabilities(logits.numpy())
