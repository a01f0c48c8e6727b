"""Pretrained backbone weights from a local file: ``.safetensors``, or ``.pth`` / ``.pt``
holding tensors only. Nothing is downloaded: export the weights once (timm or torchvision
on a machine with the network), copy the file, and point ``--pretrained`` at it.

Keys are matched by name. The registered ResNets use torchvision's and timm's names, and
the EfficientNets and ConvNeXts timm's, so their exported state dicts (``resnet18``,
``efficientnet_b0``, ``convnext_tiny`` ...) load as they are:

- a wrapper's prefix (``module.``, ``model.``, ``backbone.``) is removed;
- the ImageNet classifier (keys under ``fc.``, ``classifier.``, ``head.`` that the backbone
  does not have) is dropped: our head is new. A backbone's own keys there are kept, such as
  ConvNeXt's final ``head.norm`` (timm's ``head.fc`` is the classifier);
- a 3-channel stem loads into a 1-channel one as the sum over its colour channels (a grey
  image repeated in R, G and B gives the same activations), as timm does for ``in_chans=1``:
  the stem is the conv weight (N, 3, kh, kw) whose backbone shape is (N, 1, kh, kw), whatever
  its name (``conv1``, ``conv_stem``, ``stem.0``).

Anything else must match exactly: a missing key, a key the backbone does not have, or a
shape that differs refuses the file with the keys named.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

SUFFIXES = (".safetensors", ".pth", ".pt")
_PREFIXES = ("module.", "model.", "backbone.")
_HEADS = ("fc.", "classifier.", "head.")
_SHOWN = 8  # keys named in an error, at most


class PretrainedError(ValueError):
    """A weights file cannot be read or does not fit the backbone; the message says why."""


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file (a ``state_dict`` or ``model`` entry is unwrapped)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise PretrainedError(f"{path}: pretrained weights must be one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise PretrainedError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except SafetensorError as error:
            raise PretrainedError(f"{path}: not a safetensors file: {error}") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise PretrainedError(f"{path}: not a file of tensors only: {error}") from error
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise PretrainedError(f"{path}: expected a state dict of tensors")
    return {str(k): v for k, v in loaded.items()}


def _strip(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def backbone_state(weights: dict[str, Tensor], backbone: nn.Module) -> dict[str, Tensor]:
    """``weights`` renamed, without the classifier, stems adapted: the backbone's state
    dict, or PretrainedError naming the keys and shapes that do not fit."""
    own = backbone.state_dict()
    state = {_strip(k): v for k, v in weights.items()}
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_HEADS)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
        raise PretrainedError("the weights do not fit the backbone: keys " + "; ".join(parts))
    adapted, wrong = {}, []
    for key, tensor in state.items():
        target = own[key].shape
        if tensor.ndim == 4 and tensor.shape[1] == 3 and target[1] == 1:
            tensor = tensor.sum(dim=1, keepdim=True)  # RGB stem -> grey stem
        if tensor.shape != target:
            wrong.append(f"{key} {tuple(tensor.shape)} != {tuple(target)}")
        adapted[key] = tensor.to(own[key].dtype)
    if wrong:
        raise PretrainedError(f"the weights do not fit the backbone: shapes {_names(wrong)}")
    return adapted


def load_pretrained(backbone: nn.Module, path: str | Path) -> None:
    """Load the weights file at ``path`` into ``backbone`` (see the module docstring)."""
    backbone.load_state_dict(backbone_state(read_weights(path), backbone), strict=True)


def _names(items: list[str]) -> str:
    more = f", and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
