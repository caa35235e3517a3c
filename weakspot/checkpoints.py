"""Weights on disk: weakspot's self-describing checkpoints, and plain state_dicts trained elsewhere (timm,
torchvision, ``.safetensors``), all read without running code and turned into a ``Classifier``."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weakspot.architectures import build_architecture
from weakspot.classifier import IMAGENET_MEAN, IMAGENET_STD, Classifier, Preprocessing
from weakspot.errors import WeakspotError
from weakspot.fileio import atomic_write
from weakspot.reading import regular_file

CHECKPOINT_FORMAT = "weakspot-checkpoint-v1"
WRAPPER_KEYS = ("state_dict", "model")  # where timm's and torchvision's training scripts put the weights


def save_checkpoint(path: str | os.PathLike, classifier: Classifier, meta: dict[str, Any] | None = None,
                    extra_state: dict[str, Any] | None = None) -> Path:
    """One file: weights + architecture + classes + preprocessing + metadata (JSON) + optional extra state
    (optimizer, scheduler, RNG: anything ``torch.load(weights_only=True)`` accepts)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": classifier.arch,
        "class_names": list(classifier.class_names),
        "preprocessing": {key: (list(value) if isinstance(value, tuple) else value)
                          for key, value in asdict(classifier.preprocessing).items()},
        "meta_json": json.dumps(meta or {}),
        "state_dict": {key: value.detach().cpu() for key, value in classifier.model.state_dict().items()},
        "extra_state": extra_state or {},
    }
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def _read_weights_file(path: str | os.PathLike) -> Any:
    """Whatever a weights file holds, read without running code: ``safetensors.torch.load_file`` for
    ``.safetensors``, else ``torch.load(weights_only=True)``. ``argparse.Namespace`` is allowed because
    timm's and torchvision's training scripts save their arguments beside the weights; any other object is
    refused."""
    file_path = regular_file(path, "checkpoint")
    if file_path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(file_path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise WeakspotError(f"{file_path}: not a readable safetensors file ({error})") from None
    if not zipfile.is_zipfile(file_path):
        raise WeakspotError(f"{file_path}: not a readable checkpoint (not a torch.save archive)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(file_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeakspotError(f"{file_path}: refused, it holds objects other than tensors and plain data "
                            "(a weights-only load does not run code; save the state_dict alone)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise WeakspotError(f"{file_path}: not a readable checkpoint ({type(error).__name__})") from None


def _is_checkpoint(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict, loaded with ``weights_only=True`` so an untrusted file cannot run code."""
    payload = _read_weights_file(path)
    if not _is_checkpoint(payload):
        raise WeakspotError(f"{path}: not a weakspot checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    return payload


def _load_state_dict(path: str | os.PathLike, model: nn.Module, state_dict: Any, arch: str, num_classes: int) -> None:
    """Load every tensor or fail in one line naming the file: a head sized for another class count, or the
    missing, unexpected and mis-shaped keys of another architecture."""
    if not isinstance(state_dict, dict) or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                                   for key, value in state_dict.items()):
        raise WeakspotError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    expected = model.state_dict()
    misshapen = [key for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    head_sizes = {int(state_dict[key].shape[0]) for key in misshapen if state_dict[key].ndim}
    if misshapen and len(head_sizes) == 1 and all(
            expected[key].ndim and expected[key].shape[0] == num_classes
            and state_dict[key].shape[1:] == expected[key].shape[1:] for key in misshapen):
        raise WeakspotError(f"{path}: the weights are for {head_sizes.pop()} classes, {num_classes} class names given")
    missing = [key for key in expected if key not in state_dict and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state_dict if key not in expected]
    problems = [f"{len(keys)} {what} key(s), e.g. '{keys[0]}'" for what, keys in (("missing", missing),
                                                                                 ("unexpected", unexpected)) if keys]
    if misshapen:
        key = misshapen[0]
        problems.append(f"'{key}' is {tuple(state_dict[key].shape)}, expected {tuple(expected[key].shape)}")
    if problems:
        raise WeakspotError(f"{path}: weights do not fit '{arch}' with {num_classes} classes ({'; '.join(problems)})")
    model.load_state_dict(state_dict, strict=False)  # strict up to num_batches_tracked, absent from some files


def _checkpoint_classifier(path: str | os.PathLike, payload: dict[str, Any], device: str | torch.device | None,
                           micro_batch: int | str | None) -> Classifier:
    try:
        arch, class_names = str(payload["arch"]), [str(name) for name in payload["class_names"]]
        preprocessing_fields = dict(payload["preprocessing"])
        state_dict = payload["state_dict"]
        meta = json.loads(payload.get("meta_json", "{}"))
    except (KeyError, TypeError, ValueError) as error:
        raise WeakspotError(f"{path}: checkpoint is missing or has a malformed field ({error})") from None
    model = build_architecture(arch, len(class_names))
    _load_state_dict(path, model, state_dict, arch, len(class_names))
    preprocessing = Preprocessing(
        input_size=preprocessing_fields.get("input_size"),
        mean=tuple(preprocessing_fields.get("mean", IMAGENET_MEAN)),
        std=tuple(preprocessing_fields.get("std", IMAGENET_STD)))
    classifier = Classifier(model, arch, class_names, preprocessing, device=device, micro_batch=micro_batch)
    classifier.meta = meta
    classifier.extra_state = payload.get("extra_state", {})
    return classifier


def load_checkpoint(path: str | os.PathLike, device: str | torch.device | None = None,
                    micro_batch: int | str | None = None) -> Classifier:
    """A ``Classifier`` from a weakspot checkpoint; the metadata is on ``classifier.meta``."""
    return _checkpoint_classifier(path, read_checkpoint(path), device, micro_batch)


def _unwrap_state_dict(payload: Any) -> Any:
    """The bare state_dict of what training scripts save: the dict itself, or under "state_dict"/"model",
    with DistributedDataParallel's "module." prefix removed."""
    if isinstance(payload, dict):
        wrapped = next((payload[key] for key in WRAPPER_KEYS if isinstance(payload.get(key), dict)), None)
        payload = payload if wrapped is None else wrapped
        if payload and all(isinstance(key, str) and key.startswith("module.") for key in payload):
            payload = {key[len("module."):]: value for key, value in payload.items()}
    return payload


def _plain_classifier(path: str | os.PathLike, payload: Any, arch: str, class_names: Sequence[str],
                      preprocessing: Preprocessing, device: str | torch.device | None,
                      micro_batch: int | str | None) -> Classifier:
    if _is_checkpoint(payload):
        raise WeakspotError(f"{path}: already a weakspot checkpoint (a '{payload.get('arch')}'); use it as it is")
    model = build_architecture(arch, len(class_names))
    _load_state_dict(path, model, _unwrap_state_dict(payload), arch, len(class_names))
    return Classifier(model, arch, class_names, preprocessing, device=device, micro_batch=micro_batch)


def load_plain_weights(path: str | os.PathLike, arch: str, class_names: Sequence[str],
                       preprocessing: Preprocessing = Preprocessing(), device: str | torch.device | None = None,
                       micro_batch: int | str | None = None) -> Classifier:
    """A ``Classifier`` from a model trained elsewhere: a plain state_dict (``.pth``/``.pt``, possibly under
    "state_dict"/"model", or ``.safetensors``) of ``arch`` (timm name or ``torchvision:NAME``), whose head
    must have ``len(class_names)`` outputs. ``save`` turns it into a weakspot checkpoint."""
    return _plain_classifier(path, _read_weights_file(path), arch, class_names, preprocessing, device, micro_batch)


def load_classifier(path: str | os.PathLike, arch: str | None = None, class_names: Sequence[str] | None = None,
                    input_size: int | None = None, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None, device: str | torch.device | None = None,
                    micro_batch: int | str | None = None) -> Classifier:
    """The one loader behind ``--checkpoint`` (the file is read once).

    A weakspot checkpoint carries its architecture, classes and preprocessing: any of them also given must
    agree with it, else the call is refused (no silent override). A plain state_dict needs ``arch`` and
    ``class_names``; preprocessing left None takes ``Preprocessing``'s defaults (ImageNet mean/std, images
    used at the size they are given).
    """
    payload = _read_weights_file(path)
    given = {key: value for key, value in {"input_size": input_size, "mean": None if mean is None else tuple(mean),
                                           "std": None if std is None else tuple(std)}.items() if value is not None}
    if not _is_checkpoint(payload):
        if arch is None or class_names is None:
            raise WeakspotError(f"{path}: not a weakspot checkpoint; a plain state_dict needs its architecture "
                                "and class names (--model, --classes)")
        return _plain_classifier(path, payload, arch, class_names, Preprocessing(**given), device, micro_batch)
    classifier = _checkpoint_classifier(path, payload, device, micro_batch)
    stored = {"model": classifier.arch, "classes": list(classifier.class_names), **asdict(classifier.preprocessing)}
    flags = {"model": arch, "classes": None if class_names is None else list(class_names), **given}
    for name, value in flags.items():
        if value is not None and value != stored[name]:
            raise WeakspotError(f"{path}: --{name.replace('_', '-')} {value} disagrees with this weakspot checkpoint's "
                                f"{stored[name]} (it carries its own architecture, classes and preprocessing: drop the flag)")
    return classifier
