"""Pretrained backbone weights: files laid out as torchvision and timm export their ResNets
load by key into ours (RGB stem summed to grey, classifier dropped); a file that does not
fit is refused with the keys named; nothing but tensors is ever unpickled."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mammo.contract import CANCER
from mammo.pretrained import PretrainedError, backbone_state, read_weights
from mammo.training import Target, TrainConfig, TrainConfigError, build_model, check_pretrained

BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def _bn(prefix: str, width: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.rand(width, generator=gen),
        f"{prefix}.bias": torch.rand(width, generator=gen),
        f"{prefix}.running_mean": torch.rand(width, generator=gen),
        f"{prefix}.running_var": torch.rand(width, generator=gen) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def torchvision_resnet(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict torchvision's (and timm's) ``resnet18``/``resnet34`` export, written
    from their published layout: RGB stem, ``layerN.M.{conv1,bn1,conv2,bn2}``,
    ``downsample.{0,1}`` on the first block of stages 2-4, a 1000-class ``fc``."""
    gen = torch.Generator().manual_seed(seed)
    state = {"conv1.weight": torch.randn(64, 3, 7, 7, generator=gen), **_bn("bn1", 64, gen)}
    c_in = 64
    for stage, (blocks, width) in enumerate(zip(LAYERS[name], (64, 128, 256, 512), strict=True)):
        for block in range(blocks):
            p = f"layer{stage + 1}.{block}"
            state[f"{p}.conv1.weight"] = torch.randn(width, c_in, 3, 3, generator=gen)
            state.update(_bn(f"{p}.bn1", width, gen))
            state[f"{p}.conv2.weight"] = torch.randn(width, width, 3, 3, generator=gen)
            state.update(_bn(f"{p}.bn2", width, gen))
            if stage > 0 and block == 0:
                state[f"{p}.downsample.0.weight"] = torch.randn(width, c_in, 1, 1, generator=gen)
                state.update(_bn(f"{p}.downsample.1", width, gen))
            c_in = width
    state["fc.weight"] = torch.randn(1000, 512, generator=gen)
    state["fc.bias"] = torch.randn(1000, generator=gen)
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_torchvision_layout_loads_into_the_backbone(tmp_path: Path, name: str, suffix: str) -> None:
    exported = torchvision_resnet(name)
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(exported, str(path))
    else:
        torch.save(exported, path)
    model = build_model(TrainConfig(model=name, pretrained=str(path)), Target.for_column(CANCER))
    loaded = model.state_dict()
    # the RGB stem becomes one grey channel: the sum over colours
    torch.testing.assert_close(
        loaded["backbone.conv1.weight"], exported["conv1.weight"].sum(1, keepdim=True)
    )
    for key in ("layer1.0.conv1.weight", "layer4.0.downsample.0.weight", "layer3.0.bn2.bias"):
        torch.testing.assert_close(loaded[f"backbone.{key}"], exported[key])
    torch.testing.assert_close(
        loaded["backbone.layer2.1.bn1.running_var"], exported["layer2.1.bn1.running_var"]
    )
    assert loaded["head.1.weight"].shape == (1, 512)  # our head, not ImageNet's fc
    assert model(torch.rand(2, 1, 64, 32)).shape == (2, 1)


def test_wrapped_checkpoints_and_prefixes_are_unwrapped(tmp_path: Path) -> None:
    exported = {f"module.{k}": v for k, v in torchvision_resnet("resnet18").items()}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": exported, "epoch": 3}, path)
    check_pretrained(TrainConfig(model="resnet18", pretrained=str(path)))


def test_a_file_that_does_not_fit_is_refused_with_the_keys_named(tmp_path: Path) -> None:
    backbone = build_model(TrainConfig(model="resnet18"), Target.for_column(CANCER)).backbone
    deeper = torchvision_resnet("resnet34")
    with pytest.raises(PretrainedError, match=r"unexpected \(layer1\.2\.bn1\.bias"):
        backbone_state(deeper, backbone)
    partial = torchvision_resnet("resnet18")
    del partial["layer3.1.conv2.weight"]
    with pytest.raises(PretrainedError, match=r"1 missing \(layer3\.1\.conv2\.weight\)"):
        backbone_state(partial, backbone)
    narrow = torchvision_resnet("resnet18")
    narrow["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    with pytest.raises(PretrainedError, match=r"layer1\.0\.conv1\.weight \(32, 64, 3, 3\)"):
        backbone_state(narrow, backbone)
    small = build_model(TrainConfig(model="small_cnn"), Target.for_column(CANCER)).backbone
    with pytest.raises(PretrainedError, match="missing"):
        backbone_state(torchvision_resnet("resnet18"), small)


class Payload:
    """Any object beside the tensors: a pickle that could run code when loaded."""


def test_only_tensor_files_are_read(tmp_path: Path) -> None:
    pickled = tmp_path / "code.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": Payload()}, pickled)
    with pytest.raises(PretrainedError, match="tensors only"):
        read_weights(pickled)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(PretrainedError, match="not a safetensors file"):
        read_weights(garbage)
    with pytest.raises(PretrainedError, match="no such weights file"):
        read_weights(tmp_path / "absent.pth")
    with pytest.raises(TrainConfigError, match=r"\.safetensors or \.pth or \.pt"):
        TrainConfig(pretrained=str(tmp_path / "weights.bin"))


def test_mammo_train_refuses_a_weights_file_that_does_not_fit_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.safetensors"
    save_file(torchvision_resnet("resnet34"), str(path))
    done = subprocess.run(
        [
            str(BIN / "mammo"),
            "train",
            "--data",
            "OUT",
            "--model",
            "resnet18",
            "--pretrained",
            str(path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mammo train failed: "), lines
    assert "unexpected (layer1.2.bn1.bias" in lines[0] and "Traceback" not in done.stderr
    assert "Starting temporary server" not in done.stdout + done.stderr


class HeadNormBackbone(torch.nn.Module):
    """A backbone with its own keys under ``head.``, as ConvNeXt's final ``head.norm``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))
        self.conv_head = torch.nn.Conv2d(4, 4, 1)
        self.head = torch.nn.Module()
        self.head.norm = torch.nn.LayerNorm(4)


def test_only_classifier_keys_the_backbone_lacks_are_dropped() -> None:
    gen = torch.Generator().manual_seed(0)
    exported = {
        "stem.0.weight": torch.randn(4, 3, 3, 3, generator=gen),  # RGB stem under any name
        "stem.0.bias": torch.randn(4, generator=gen),
        "conv_head.weight": torch.randn(4, 4, 1, 1, generator=gen),  # not a classifier
        "conv_head.bias": torch.randn(4, generator=gen),
        "head.norm.weight": torch.randn(4, generator=gen),  # the backbone's own
        "head.norm.bias": torch.randn(4, generator=gen),
        "head.fc.weight": torch.randn(1000, 4, generator=gen),  # timm's classifiers
        "head.fc.bias": torch.randn(1000, generator=gen),
        "classifier.weight": torch.randn(1000, 4, generator=gen),
        "fc.bias": torch.randn(1000, generator=gen),
    }
    state = backbone_state(exported, HeadNormBackbone())
    assert sorted(state) == sorted(HeadNormBackbone().state_dict())
    torch.testing.assert_close(state["stem.0.weight"], exported["stem.0.weight"].sum(1, True))
    for key in ("head.norm.weight", "head.norm.bias", "conv_head.weight"):
        torch.testing.assert_close(state[key], exported[key])

    without_norm = {k: v for k, v in exported.items() if not k.startswith("head.norm.")}
    with pytest.raises(
        PretrainedError, match=r"2 missing \(head\.norm\.bias, head\.norm\.weight\)"
    ):
        backbone_state(without_norm, HeadNormBackbone())
    without_conv_head = {k: v for k, v in exported.items() if k != "conv_head.weight"}
    with pytest.raises(PretrainedError, match=r"1 missing \(conv_head\.weight\)"):
        backbone_state(without_conv_head, HeadNormBackbone())
    wide_norm = {**exported, "head.norm.weight": torch.ones(8)}
    with pytest.raises(PretrainedError, match=r"head\.norm\.weight \(8,\) != \(4,\)"):
        backbone_state(wide_norm, HeadNormBackbone())
