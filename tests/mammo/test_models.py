"""Every registered architecture trains (forward + backward) in every head configuration."""

from __future__ import annotations

import pytest
import torch

from mammo.models import ModelError, ModelSpec, create_model, list_models, register_model

HEADS = [
    pytest.param(1, 0, id="binary-image-only"),
    pytest.param(1, 6, id="binary-fused-metadata"),
    pytest.param(4, 0, id="4class-image-only"),
    pytest.param(4, 6, id="4class-fused-metadata"),
]


# One of each family through every head; the larger siblings (EfficientNet-B2, ConvNeXt-S)
# differ only in widths and depths, and tests/mammo/test_backbones.py trains them too.
FAMILIES = ("small_cnn", "resnet18", "resnet34", "efficientnet_b0", "convnext_tiny")


def test_the_registry_lists_the_architectures() -> None:
    assert list_models() == [
        "convnext_small",
        "convnext_tiny",
        "efficientnet_b0",
        "efficientnet_b2",
        "resnet18",
        "resnet34",
        "small_cnn",
    ]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize(("num_outputs", "metadata_features"), HEADS)
def test_forward_and_backward_on_a_tiny_batch(
    name: str, num_outputs: int, metadata_features: int
) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(num_outputs=num_outputs, metadata_features=metadata_features, dropout=0.1)
    model = create_model(name, spec)
    image = torch.rand(2, 1, 64, 32)
    metadata = torch.randn(2, metadata_features) if metadata_features else None

    logits = model(image, metadata)
    assert logits.shape == (2, num_outputs)
    assert logits.dtype == torch.float32
    logits.square().mean().backward()

    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    head_grad = grads["head.1.weight"]
    assert head_grad is not None and head_grad.abs().sum() > 0
    first_conv_grad = next(g for n, g in grads.items() if n.startswith("backbone."))  # the stem
    assert first_conv_grad is not None and first_conv_grad.abs().sum() > 0
    if metadata_features:
        mlp_grad = grads["metadata_mlp.0.weight"]
        assert mlp_grad is not None and mlp_grad.abs().sum() > 0


@pytest.mark.parametrize("name", list_models())
def test_fused_metadata_changes_the_logits(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, ModelSpec(metadata_features=3)).eval()
    image = torch.rand(2, 1, 64, 32)
    with torch.no_grad():
        a = model(image, torch.zeros(2, 3))
        b = model(image, torch.full((2, 3), 5.0))
    assert not torch.allclose(a, b)


def test_any_image_size_pools_to_the_same_logit_shape() -> None:
    model = create_model("small_cnn", ModelSpec()).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 1, 96, 48)).shape == (3, 1)
        assert model(torch.rand(3, 1, 128, 64)).shape == (3, 1)


@pytest.mark.parametrize(
    ("spec", "image", "metadata"),
    [
        pytest.param(ModelSpec(metadata_features=4), (2, 1, 64, 32), None, id="fused-no-metadata"),
        pytest.param(ModelSpec(metadata_features=4), (2, 1, 64, 32), (2, 3), id="fused-bad-width"),
        pytest.param(ModelSpec(), (2, 1, 64, 32), (2, 4), id="image-only-given-metadata"),
        pytest.param(ModelSpec(), (2, 3, 64, 32), None, id="three-channel-into-one"),
        pytest.param(ModelSpec(), (1, 64, 32), None, id="missing-batch-dim"),
    ],
)
def test_bad_inputs_raise_model_error(
    spec: ModelSpec, image: tuple[int, ...], metadata: tuple[int, int] | None
) -> None:
    model = create_model("small_cnn", spec)
    meta = None if metadata is None else torch.zeros(metadata)
    with pytest.raises(ModelError):
        model(torch.rand(image), meta)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"num_outputs": 0}, id="no-outputs"),
        pytest.param({"in_channels": 0}, id="no-channels"),
        pytest.param({"metadata_features": -1}, id="negative-metadata"),
        pytest.param({"dropout": 1.0}, id="dropout-one"),
    ],
)
def test_invalid_spec_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ModelError):
        ModelSpec(**kwargs)  # type: ignore[arg-type]


def test_unknown_and_duplicate_names_are_refused() -> None:
    with pytest.raises(ModelError, match="small_cnn"):
        create_model("vit_giant", ModelSpec())
    with pytest.raises(ModelError, match="already registered"):
        register_model("small_cnn")(lambda c: (torch.nn.Identity(), c))


def test_spec_round_trips_through_a_dict() -> None:
    spec = ModelSpec(in_channels=1, num_outputs=4, metadata_features=7, dropout=0.3)
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_three_channel_stem_is_supported() -> None:
    model = create_model("resnet18", ModelSpec(in_channels=3)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 32)).shape == (2, 1)
