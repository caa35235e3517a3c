"""The ``Classifier`` wrapper whose micro-batched ``predict_proba`` every explainer and attack calls.

The wrapper owns everything about running the network (preprocessing, device, eval mode, channels_last,
autocast, micro-batch size, BatchNorm folded for queries) so that no caller has to know it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from weakspot.errors import WeakspotError
from weakspot.folding import CHECK_IMAGES, FoldedNetwork

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
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
        from weakspot.checkpoints import save_checkpoint  # the checkpoint module builds Classifiers: import on use

        return save_checkpoint(path, self, meta=meta, extra_state=extra_state)


def linear_head(classifier: Classifier, user: str, probe: torch.Tensor) -> nn.Linear:
    """The classifier's last layer, when it is a linear layer with a bias whose outputs are the logits: timm's
    ``get_classifier()``, else the network's last ``nn.Linear`` with one output per class (torchvision's ``fc``,
    ``classifier[-1]``, ``heads.head``). ``user`` (the class-bias balance, DFR) rewrites it in place, so a layer
    with anything after it (the logits not its outputs, as seen on the ``probe`` images) is refused too: one line
    naming ``user``."""
    model = classifier.model
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Linear):
        linears = [module for module in model.modules()
                   if isinstance(module, nn.Linear) and module.out_features == len(classifier.class_names)]
        head = linears[-1] if linears else None
    if head is None or head.bias is None:
        raise WeakspotError(f"{user}: the '{classifier.arch}' model has no linear last layer with a bias")
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(output.detach().float().cpu()))
    try:
        probabilities = classifier.predict_proba(probe)
    finally:
        hook.remove()
    if not captured or not torch.allclose(captured[-1].softmax(dim=1), probabilities.float().cpu(), atol=1e-4):
        raise WeakspotError(f"{user}: the last linear layer of the '{classifier.arch}' model is not its last layer "
                            "(its outputs are not the model's logits)")
    return head
