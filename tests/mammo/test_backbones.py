"""The EfficientNet and ConvNeXt backbones have timm's state-dict layout, so a timm export
loads into the grey-stem backbone by key (RGB stem summed, classifier dropped).

The reference layouts in tests/mammo/data/ are ``{key: shape}`` of
``timm.create_model(name, pretrained=False).state_dict()``, dumped with timm 1.0.31.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from mammo.models import ModelSpec, create_model, list_models
from mammo.pretrained import PretrainedError, backbone_state, load_pretrained

DATA = Path(__file__).parent / "data"
CLASSIFIER = ("classifier.", "head.fc.")  # timm's ImageNet classifier, not our backbone's
# name: (stem weight, feature width, a key deleted from a wrong checkpoint)
BACKBONES = {
    "efficientnet_b0": ("conv_stem.weight", 1280, "conv_head.weight"),
    "efficientnet_b2": ("conv_stem.weight", 1408, "blocks.6.1.se.conv_expand.bias"),
    "convnext_tiny": ("stem.0.weight", 768, "head.norm.weight"),
    "convnext_small": ("stem.0.weight", 768, "stages.2.blocks.26.gamma"),
}
NAMES = list(BACKBONES)


def timm_layout(name: str) -> dict[str, list[int]]:
    """The reference ``{key: shape}``, timm's classifier included."""
    layout: dict[str, list[int]] = json.loads((DATA / f"timm_keys_{name}.json").read_text())
    return layout


def timm_export(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict laid out as timm exports ``name``: random tensors of the reference shapes
    (RGB stem, 1000-class classifier)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in timm_layout(name).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


def zeros_export(name: str) -> dict[str, torch.Tensor]:
    """The timm layout of ``name`` filled with zeros: enough to check keys and shapes."""
    return {key: torch.zeros(shape) for key, shape in timm_layout(name).items()}


@functools.cache
def grey_backbone(name: str) -> nn.Module:
    """The 1-channel backbone of ``name``, built once and left uninitialized (the loading
    tests overwrite every tensor)."""
    with torch.device("meta"):
        backbone = create_model(name, ModelSpec()).backbone
    return backbone.to_empty(device="cpu")


def test_the_registry_lists_the_new_backbones() -> None:
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("name", NAMES)
def test_the_state_dict_is_timms_key_for_key_and_shape_for_shape(name: str) -> None:
    with torch.device("meta"):  # shapes only: nothing is allocated or initialized
        backbone = create_model(name, ModelSpec(in_channels=3)).backbone
    ours = {key: list(tensor.shape) for key, tensor in backbone.state_dict().items()}
    reference = {k: v for k, v in timm_layout(name).items() if not k.startswith(CLASSIFIER)}
    assert ours == reference
    assert any(k.startswith(CLASSIFIER) for k in timm_layout(name))  # the classifier is there


@pytest.mark.parametrize("name", NAMES)
def test_a_timm_export_loads_into_the_grey_backbone(tmp_path: Path, name: str) -> None:
    stem, _, _ = BACKBONES[name]
    exported = timm_export(name)
    path = tmp_path / f"{name}.safetensors"
    save_file(exported, str(path))
    backbone = grey_backbone(name)
    load_pretrained(backbone, path)
    loaded = backbone.state_dict()
    assert loaded[stem].shape[1] == 1
    torch.testing.assert_close(loaded[stem], exported[stem].sum(1, keepdim=True))
    assert set(loaded) == {k for k in exported if not k.startswith(CLASSIFIER)}
    for key, tensor in loaded.items():
        if key != stem:
            assert torch.equal(tensor, exported[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_a_checkpoint_that_does_not_fit_is_refused_with_the_key_named(name: str) -> None:
    stem, _, deleted = BACKBONES[name]
    backbone = grey_backbone(name)
    backbone_state(zeros_export(name), backbone)  # the intact layout fits
    partial = zeros_export(name)
    del partial[deleted]
    with pytest.raises(PretrainedError, match=rf"1 missing \({re.escape(deleted)}\)"):
        backbone_state(partial, backbone)
    reshaped = zeros_export(name)
    reshaped[deleted] = torch.zeros(3, *reshaped[deleted].shape)
    with pytest.raises(PretrainedError, match=rf"shapes {re.escape(deleted)} \(3, "):
        backbone_state(reshaped, backbone)
    with pytest.raises(PretrainedError, match=rf"{re.escape(stem)} \(8, 1, 3, 3\)"):
        backbone_state({**zeros_export(name), stem: torch.zeros(8, 3, 3, 3)}, backbone)


@pytest.mark.parametrize("name", NAMES)
def test_the_classifier_runs_on_any_image_size_and_trains(name: str) -> None:
    torch.manual_seed(0)
    _, features, _ = BACKBONES[name]
    model = create_model(name, ModelSpec(num_outputs=2)).eval()
    with torch.no_grad():
        assert model.backbone(torch.rand(2, 1, 128, 64)).shape == (2, features)
        assert model(torch.rand(2, 1, 128, 64)).shape == (2, 2)
        assert model(torch.rand(1, 1, 100, 52)).shape == (1, 2)

    model.train()
    logits = model(torch.rand(2, 1, 64, 32))
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    stem_grad = next(model.backbone.parameters()).grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0
