"""The model bundle scores PNG bytes as training validated them, test-time flips included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammo import contract as c
from mammo.inference import ModelBundle
from mammo.models import Classifier
from mammo.png import encode_png
from mammo.training import Target, TrainConfig, build_model
from tasks.packaging import model_bundle


def _images() -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(5, 32, 16), dtype=np.uint8)
    images[:, 2:10, 4:12] = 250  # off-centre: the mirror differs
    return images


def _spread(model: torch.nn.Module) -> None:
    """BatchNorm statistics of real images and a larger head: scores that differ per image
    (a model fresh from its initialization scores every image nearly alike)."""
    batch = torch.from_numpy(_images()).float().unsqueeze(1) / 255
    model.train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # the plain mean of the batches seen
        model(batch)
        model(batch.flip(dims=(2,)))
        head = model.get_submodule("head.1")
        assert isinstance(head, torch.nn.Linear)
        head.weight.mul_(3)


def _bundle(tmp_path: Path, tta: bool) -> ModelBundle:
    cfg = TrainConfig(image_rows=32, image_cols=16, tta_vflip=tta, seed=2)
    model = build_model(cfg, Target.for_column(c.CANCER))
    assert isinstance(model, Classifier)
    _spread(model)
    bundle = model_bundle(model, cfg, threshold=0.5, preprocess={}, encoder=None)
    return ModelBundle.load(bundle.save(tmp_path / f"bundle-{tta}"))


def test_a_bundle_trained_with_flips_scores_the_mean_of_the_image_and_its_mirror(
    tmp_path: Path,
) -> None:
    images = _images()
    frame = pd.DataFrame({c.PNG: [encode_png(i, 1) for i in images]})
    mirrored = pd.DataFrame({c.PNG: [encode_png(i[::-1].copy(), 1) for i in images]})
    plain, tta = _bundle(tmp_path, tta=False), _bundle(tmp_path, tta=True)
    assert not plain.vflip and tta.vflip

    def logit(p: pd.DataFrame) -> np.ndarray:
        q = p[c.PROBABILITY].to_numpy()
        return np.log(q / (1 - q))

    expected = (logit(plain.predict_frame(frame)) + logit(plain.predict_frame(mirrored))) / 2
    np.testing.assert_allclose(logit(tta.predict_frame(frame)), expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(logit(plain.predict_frame(frame)), expected, atol=1e-4)


def test_a_bundle_saved_before_the_switch_existed_scores_without_flips(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, tta=False)
    old = {k: v for k, v in bundle.config.train_config.items() if k != "tta_vflip"}
    assert not ModelBundle(bundle.model, replace(bundle.config, train_config=old)).vflip
