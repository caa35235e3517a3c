"""Fine-tuning: one loop for library calls (``train_classifier``), the CLI, the baselines and torchrun.

``fit`` = AdamW, linear warm-up then cosine (or constant) learning rate per step, optional label smoothing,
AMP (float16 autocast + GradScaler) on CUDA, channels_last (the ``Classifier`` keeps the network and its
inputs in it), optional albumentations augmentation, an optional per-batch ``BatchTransform`` (the hook
the baselines and the adversarial loop plug into), validation with early stopping, a rich progress bar,
JSON-lines epoch log and an atomic checkpoint every epoch.

Why resume is exact: the only random sources are (a) the shuffle, from a generator seeded by
(seed, epoch), and (b) torch's global RNG (dropout, augmentation seeds, batch transforms), whose state is
saved in the checkpoint at the end of each epoch together with optimizer, scheduler and scaler state.
Resuming after epoch e therefore replays epochs e+1.. exactly as an uninterrupted run would.

Under ``torchrun`` (torch.distributed initialised by the caller, see ``weakspot.distributed``) the network
is wrapped in DistributedDataParallel; every global batch of ``batch_size`` images is split across ranks,
validation counts are summed over ranks, and only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from weakspot.errors import WeakspotError
from weakspot.fileio import append_json_line, atomic_write_text
from weakspot.models import Classifier, read_checkpoint
from weakspot.training import calibration
from weakspot.training.steps import (ProgressBar, Trainer, all_sum, batches_of_images, count_correct,
                                     epoch_batches, gather_rng, rank_and_world, restore_rng)

BatchTransform = Callable[[torch.Tensor, torch.Tensor, Classifier], tuple[torch.Tensor, torch.Tensor]]
"""(images, labels, classifier) -> (images, labels) to train on: see ``weakspot.augment.baselines``. If the
object also has ``start_step(progress, classifier)``, ``fit`` calls it before every step with the epochs of
training done so far (epoch + share of its steps; model in eval mode, after a resume's RNG restore): the
place to refresh a pool of examples per round, also in the middle of an epoch. When it returns True the
learning rate's decay starts again from the peak at that step (once per fit: ``LearningRateFactor``)."""


class BatchObjective(Protocol):
    """What a step minimises in place of the batch's mean loss, from the per-image losses and the training rows
    they belong to (GroupDRO's group weights: ``weakspot.augment.oracles``). ``state`` and ``load_state`` carry
    what it learns across steps through a checkpoint, so ``resume`` continues it."""

    def __call__(self, losses: torch.Tensor, rows: torch.Tensor) -> torch.Tensor: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
BALANCED_CHECKPOINT = "balanced.pt"  # the kept weights with the class-bias balance (``fit``'s ``balance_recall``)
LOG_NAME = "log.jsonl"
SCHEDULES = ("constant", "cosine")
RESUME_STATE = ("optimizer", "scheduler", "scaler", "epoch", "rng", "config", "history", "best_epoch",
                "best_val_accuracy", "waited", "stopped")  # what every epoch's last.pt holds in extra_state
KEEP_CHOICES = ("best", "last")
RESUME_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "seed", "warmup_epochs",
               "schedule", "augment")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    seed: int = 0
    warmup_epochs: float = 0.0  # linear warm-up, in (fractional) epochs
    schedule: str = "constant"  # "cosine": decay to 0 over all planned steps after the warm-up
    patience: int | None = None  # early stopping: epochs without a better validation accuracy
    augment: bool = False  # flip + RandomResizedCrop + colour jitter (albumentations)
    # Weights the fit ends with: "best" validation epoch's, or "last" epoch's. A validation split drawn like
    # the training split carries the same shortcut, so "best" can pick the epoch that relies on it most.
    keep: str = "best"

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise WeakspotError(f"epochs and batch size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr) and math.isfinite(self.weight_decay) and self.weight_decay >= 0
                and 0.0 <= self.label_smoothing < 1.0):
            raise WeakspotError(f"lr must be a finite number > 0, weight decay a finite number >= 0 and label smoothing "
                                f"in [0, 1), got {self.lr}, {self.weight_decay} and {self.label_smoothing}")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0) or self.schedule not in SCHEDULES:
            raise WeakspotError(f"warm-up must be >= 0 and schedule one of {', '.join(SCHEDULES)}")
        if self.patience is not None and self.patience < 1:
            raise WeakspotError(f"patience must be >= 1, got {self.patience}")
        if self.keep not in KEEP_CHOICES:
            raise WeakspotError(f"keep must be one of {', '.join(KEEP_CHOICES)}, got {self.keep!r}")


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_val_accuracy: float | None
    stopped_early: bool
    out_dir: Path | None = None
    kept_epoch: int = 0  # the epoch whose weights the classifier holds after the fit (``TrainConfig.keep``)
    recall_balance: dict[str, Any] | None = None  # the class-bias balance the fit ended with, if it did


def _check_resumable(payload: dict[str, Any], classifier: Classifier, config: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint that is not a training run's own (a copied model, another architecture or class
    set, other settings) before anything is loaded or rewritten."""
    extra = payload.get("extra_state")
    missing = [key for key in RESUME_STATE if not isinstance(extra, dict) or key not in extra]
    if missing:
        raise WeakspotError(f"{path}: not a resumable training checkpoint (no '{missing[0]}' state); start a new --out")
    if payload.get("arch") != classifier.arch or list(payload.get("class_names", [])) != classifier.class_names:
        raise WeakspotError(f"{path}: holds a '{payload.get('arch')}' with classes {payload.get('class_names')}, this "
                            f"run trains a '{classifier.arch}' with {classifier.class_names}; start a new --out")
    saved, current = extra["config"], asdict(config)
    for key in RESUME_KEYS:
        if saved.get(key) != current[key]:
            raise WeakspotError(f"{path}: was written with {key}={saved.get(key)!r}, this run has {current[key]!r}; "
                                "resume with the same settings or start a new --out")


@dataclass
class _FitState:
    """What a fit carries from epoch to epoch, and what ``last.pt`` saves of it for ``resume``."""

    history: list[dict[str, Any]]
    start_epoch: int = 0
    best_epoch: int = 0
    waited: int = 0
    stopped: bool = False
    best_accuracy: float | None = None
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights, with ``keep`` "best"


def _check_fit_inputs(images: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
                      sample_weights: torch.Tensor | None, transform: BatchTransform | None,
                      objective: BatchObjective | None, balance_recall: bool | None, has_val: bool) -> None:
    config.validate()
    if len(labels) == 0 or len(labels) != images.shape[0]:
        raise WeakspotError(f"need as many labels as images (got {len(labels)} labels, {images.shape[0]} images)")
    world = rank_and_world()[1]
    if len(labels) < 2 * world or config.batch_size < 2 * world:
        raise WeakspotError(f"training needs at least 2 images per process in every batch (BatchNorm normalises "
                            f"over the batch): {len(labels)} training images and a batch size of {config.batch_size} "
                            f"for {world} process(es)")
    if sample_weights is not None and (sample_weights.shape != labels.shape or not bool((sample_weights >= 0).all())
                                       or not float(sample_weights.sum()) > 0):
        raise WeakspotError("sample weights must be one non-negative weight per image, not all zero")
    if objective is not None and transform is not None:
        raise WeakspotError("a training objective reads the batch's training rows; a batch transform changes them")
    if balance_recall and not has_val:
        raise WeakspotError("the class-bias balance fits on validation data, and there is none; give some, "
                            "or turn it off")


def _start_state(trainer: Trainer, classifier: Classifier, config: TrainConfig, out: Path | None,
                 resume: bool) -> _FitState:
    """A fresh fit's state (torch's global RNG seeded), or with ``resume`` the one ``out/last.pt`` saved (weights,
    optimizer, schedule and RNG restored)."""
    rank, world = rank_and_world()
    if not resume:
        if out is not None and (out / LAST_CHECKPOINT).exists():
            raise WeakspotError(f"{out / LAST_CHECKPOINT}: a run is already there; pass resume (--resume) or a new out dir")
        if out is not None and rank == 0:
            atomic_write_text(out / LOG_NAME, "")
        torch.manual_seed(config.seed + rank)
        return _FitState(history=[])
    if out is None or not (out / LAST_CHECKPOINT).is_file():
        raise WeakspotError(f"{out / LAST_CHECKPOINT if out else 'resume'}: nothing to resume (no checkpoint)")
    payload = read_checkpoint(out / LAST_CHECKPOINT)
    _check_resumable(payload, classifier, config, out / LAST_CHECKPOINT)
    extra = payload["extra_state"]
    if len(extra["rng"]) != world:
        raise WeakspotError(f"{out / LAST_CHECKPOINT}: written by {len(extra['rng'])} process(es), resumed by {world}")
    classifier.model.load_state_dict(payload["state_dict"])
    trainer.load_state(extra)
    restore_rng(extra["rng"][rank], classifier.device)
    state = _FitState(history=list(extra["history"]), start_epoch=int(extra["epoch"]),
                      best_epoch=int(extra["best_epoch"]), waited=int(extra["waited"]), stopped=bool(extra["stopped"]),
                      best_accuracy=extra["best_val_accuracy"])
    if state.best_epoch and config.keep == "best":
        state.best_state = read_checkpoint(out / BEST_CHECKPOINT)["state_dict"]
    if rank == 0:
        atomic_write_text(out / LOG_NAME, "".join(json.dumps(entry) + "\n" for entry in state.history))
    return state


def _train_epoch(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, batches: list[torch.Tensor],
                 epoch: int, update: Callable[[int, float, float, float], None]) -> tuple[float, int, int, float]:
    """One epoch's steps, the transform's ``start_step`` before each; returns (summed loss, correct, images) of
    this rank and the seconds spent training (the hook's attack rounds are not training throughput)."""
    classifier, transform, world = trainer.classifier, trainer.transform, trainer.world
    classifier.net.train()
    started = time.perf_counter()
    hook_seconds = 0.0
    loss_sum, correct, seen = 0.0, 0, 0
    try:
        for step, (index, batch) in enumerate(zip(batches, batches_of_images(images, batches, trainer.config)), 1):
            if hasattr(transform, "start_step"):
                hook_started = time.perf_counter()
                classifier.net.eval()
                if transform.start_step(epoch + (step - 1) / len(batches), classifier):
                    trainer.restart_schedule()
                classifier.net.train()
                hook_seconds += time.perf_counter() - hook_started
            batch_loss, batch_correct, batch_seen = trainer.step(batch, labels[index], index)
            loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + batch_seen
            update(step, loss_sum / seen, correct / seen, seen * world / (time.perf_counter() - started - hook_seconds))
    finally:
        classifier.net.eval()
    return loss_sum, correct, seen, time.perf_counter() - started - hook_seconds


def _end_epoch(trainer: Trainer, state: _FitState, epoch: int, totals: tuple[float, int, int, float],
               val: tuple[torch.Tensor, torch.Tensor] | None, out: Path | None, run_meta: dict[str, Any]) -> None:
    """Validate, update early stopping and the best epoch, log the epoch and write its checkpoints."""
    classifier, config = trainer.classifier, trainer.config
    trainer.sync_buffers()
    seconds = totals[3]
    loss_sum, correct, seen = all_sum(list(totals[:3]), classifier.device)
    val_accuracy = None
    if val is not None:
        val_correct, val_seen = all_sum(list(count_correct(classifier, *val)), classifier.device)
        val_accuracy = val_correct / val_seen
    improved = val is None or state.best_accuracy is None or val_accuracy > state.best_accuracy
    if improved:
        state.best_accuracy, state.best_epoch, state.waited = val_accuracy, epoch + 1, 0
        if config.keep == "best":  # held in memory only to be restored at the end
            state.best_state = {key: value.detach().cpu().clone() for key, value in classifier.model.state_dict().items()}
    else:
        state.waited += 1
    state.stopped = config.patience is not None and state.waited >= config.patience and epoch + 1 < config.epochs
    entry = {"epoch": epoch + 1, "lr": trainer.optimizer.param_groups[0]["lr"], "train_loss": loss_sum / seen,
             "train_accuracy": correct / seen, "val_accuracy": val_accuracy, "images_per_second": seen / seconds,
             "seconds": seconds, "best": improved, "stopped_early": state.stopped}
    state.history.append(entry)
    rng = gather_rng(classifier.device)
    if out is not None and rank_and_world()[0] == 0:
        epoch_meta = {**run_meta, "epoch": epoch + 1, "val_accuracy": val_accuracy}
        if improved:
            classifier.save(out / BEST_CHECKPOINT, meta=epoch_meta)
        classifier.save(out / LAST_CHECKPOINT, meta=epoch_meta, extra_state={
            **trainer.state(), "epoch": epoch + 1, "rng": rng, "config": asdict(config), "history": state.history,
            "best_epoch": state.best_epoch, "best_val_accuracy": state.best_accuracy, "waited": state.waited,
            "stopped": state.stopped})
        append_json_line(out / LOG_NAME, entry)


def fit(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig = TrainConfig(),
        val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
        out_dir: str | os.PathLike | None = None, resume: bool = False, transform: BatchTransform | None = None,
        progress: bool = False, meta: dict[str, Any] | None = None,
        sample_weights: torch.Tensor | None = None, balance_recall: bool | None = None,
        objective: BatchObjective | None = None) -> FitResult:
    """Fine-tune ``classifier`` in place; with validation data the best epoch's weights are kept (unless
    ``config.keep`` is "last"). ``sample_weights`` (one non-negative weight per image) draws each epoch's
    images in proportion to them (JTT's upsampling), keeping the epoch's length. ``objective`` replaces the
    batch's mean loss (``BatchObjective``); it reads the batch's training rows, so it takes no ``transform``.

    ``balance_recall`` ends the fit with the class-bias balance on the validation data
    (``weakspot.training.calibration``: the kept weights' head shifted so the class recalls are equal);
    None leaves it to the transform's ``balances_recall`` after training (the adversarial loop's: on when
    one of its rounds kept something) when there is validation data, so a Python caller gets what
    ``weakspot finetune`` does (which, unlike ``fit``, refuses a loop run without a validation split).

    ``out_dir`` gets ``last.pt`` (every epoch, with optimizer/scheduler/scaler/RNG state for ``resume``),
    ``best.pt`` (the best validation epoch, or the last epoch without validation data), ``balanced.pt``
    (the kept weights after the balance) and ``log.jsonl``. ``last.pt`` and ``best.pt`` never carry the
    balance, so ``resume`` continues the training itself.
    Seeds torch's global RNG with ``config.seed`` (+ rank) unless resuming.
    """
    has_val = val_images is not None and val_labels is not None and len(val_labels) > 0
    _check_fit_inputs(images, labels, config, sample_weights, transform, objective, balance_recall, has_val)
    rank, world = rank_and_world()
    out = Path(out_dir) if out_dir is not None else None
    trainer = Trainer(classifier, config, len(labels), transform, objective)
    state = _start_state(trainer, classifier, config, out, resume)
    run_meta = {**(meta or {}), "train_config": asdict(config)}
    val = (val_images, val_labels) if has_val else None
    with ProgressBar(progress and rank == 0, trainer.steps_per_epoch, config.epochs) as bar:
        for epoch in range(state.start_epoch, config.epochs):
            if state.stopped:
                break
            batches = epoch_batches(len(labels), config, epoch, rank, world, sample_weights)
            totals = _train_epoch(trainer, images, labels, batches, epoch, bar.epoch(epoch + 1))
            _end_epoch(trainer, state, epoch, totals, val, out, run_meta)
    kept_epoch = len(state.history)
    if state.best_state is not None:
        classifier.model.load_state_dict(state.best_state)
        kept_epoch = state.best_epoch
    recall_balance = None
    if balance_recall or (balance_recall is None and has_val and getattr(transform, "balances_recall", False)):
        started = time.perf_counter()
        recall_balance = calibration.balance_recall(classifier, val_images, val_labels)
        recall_balance["seconds"] = time.perf_counter() - started
        if out is not None and rank == 0:
            classifier.save(out / BALANCED_CHECKPOINT, meta={**run_meta, "recall_balance": recall_balance})
    return FitResult(history=state.history, best_epoch=state.best_epoch,
                     best_val_accuracy=state.best_accuracy if has_val else None, stopped_early=state.stopped,
                     out_dir=out, kept_epoch=kept_epoch, recall_balance=recall_balance)


def train_classifier(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                     config: TrainConfig = TrainConfig()) -> list[float]:
    """Fine-tune ``classifier`` in place on (images, labels), no validation; returns the mean loss per epoch."""
    return [entry["train_loss"] for entry in fit(classifier, images, labels, config).history]


def evaluate_accuracy(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted, _ = classifier.predict(images)
    return float((predicted == labels.cpu()).float().mean())
