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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.nn.parallel import DistributedDataParallel

from weakspot.distributed import all_reduce_sum
from weakspot.errors import WeakspotError
from weakspot.fileio import atomic_write_text
from weakspot.models import Classifier, read_checkpoint
from weakspot.training import calibration
from weakspot.training.augmentation import Prefetcher, standard_augmentation

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
        if self.lr <= 0 or self.weight_decay < 0 or not 0.0 <= self.label_smoothing < 1.0:
            raise WeakspotError("lr must be > 0, weight decay >= 0 and label smoothing in [0, 1)")
        if self.warmup_epochs < 0 or self.schedule not in SCHEDULES:
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


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum per-rank statistics over ranks (identity in a plain run)."""
    if _world()[1] == 1:
        return values
    return all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=device)).tolist()


class LearningRateFactor:
    """The learning rate's factor at a step: linear warm-up, then constant or cosine decay to 0 at the last
    step. ``restart`` (once) starts the decay again from the peak at the current step, over the steps left.
    A callable object, not a function, so the scheduler's state (``LambdaLR.state_dict`` keeps its attributes)
    carries the restart through a checkpoint and ``resume`` continues it."""

    def __init__(self, warmup_steps: int, total_steps: int, schedule: str) -> None:
        self.warmup_steps, self.total_steps, self.schedule = warmup_steps, total_steps, schedule
        self.restart_step: int | None = None

    def restart(self, step: int) -> None:
        """Decay from the peak again from ``step`` on; only the first call counts (a resumed run's repeated round
        asks again)."""
        if self.restart_step is None:
            self.restart_step = step

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        start = self.warmup_steps if self.restart_step is None else self.restart_step
        progress = (step - start) / max(1, self.total_steps - start)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _epoch_batches(count: int, config: TrainConfig, epoch: int, rank: int, world: int,
                   sample_weights: torch.Tensor | None = None) -> list[torch.Tensor]:
    """This rank's index batches for one epoch: the global order is seeded by (seed, epoch) and each global
    batch is dealt round-robin to the ranks, padded from the start of the order so no rank is ever empty.
    With ``sample_weights`` the epoch is ``count`` draws with replacement in proportion to them (upsampling
    without lengthening the epoch) instead of a permutation."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    if sample_weights is None:
        order = torch.randperm(count, generator=generator)
    else:
        order = torch.multinomial(sample_weights.double(), count, replacement=True, generator=generator)
    batches = []
    for start in range(0, count, config.batch_size):
        batch = order[start:start + config.batch_size]
        if batch.numel() < world:
            batch = torch.cat([batch, order[: world - batch.numel()]])
        batches.append(batch[rank::world])
    return batches


def _count_correct(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Correct predictions on this rank's shard of (images, labels)."""
    rank, world = _world()
    shard = torch.arange(rank, len(labels), world)
    if shard.numel() == 0:
        return 0, 0
    predicted, _ = classifier.predict(images[shard])
    return int((predicted == labels[shard].cpu()).sum()), int(shard.numel())


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather_rng(device: torch.device) -> list[dict[str, Any]]:
    """Every rank's RNG state in rank order (each rank augments its own shard with its own stream)."""
    _, world = _world()
    state = _rng_state(device)
    if world == 1:
        return [state]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, state)
    return gathered


def _append_line(path: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk: a crash loses at most the line being written, and
    resume rewrites the log from the checkpoint's history anyway."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class _Progress:
    """A rich progress bar on rank 0 (stderr) with loss, accuracy and throughput; silent elsewhere."""

    def __init__(self, enabled: bool, steps: int, epochs: int) -> None:
        self.steps = steps
        self.epochs = epochs
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}  {task.fields[rate]:.0f} img/s"),
            TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled)

    def __enter__(self) -> _Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def epoch(self, epoch: int) -> Callable[[int, float, float, float], None]:
        task = self.bar.add_task("train", total=self.steps, epoch=epoch, epochs=self.epochs, loss=0.0, acc=0.0, rate=0.0)

        def update(step: int, loss: float, accuracy: float, rate: float) -> None:
            self.bar.update(task, completed=step, loss=loss, acc=accuracy, rate=rate)

        return update


class _Trainer:
    """State of one fit: network (maybe DDP-wrapped), optimizer, schedule, scaler, bookkeeping."""

    def __init__(self, classifier: Classifier, config: TrainConfig, count: int, transform: BatchTransform | None,
                 objective: BatchObjective | None = None) -> None:
        self.classifier = classifier
        self.config = config
        self.transform, self.objective = transform, objective
        self.world = _world()[1]
        self.device = classifier.device
        network = classifier.net
        if self.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            network = DistributedDataParallel(network, device_ids=device_ids)
        self.network = network
        self.optimizer = torch.optim.AdamW(classifier.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(count / config.batch_size)
        total = self.steps_per_epoch * config.epochs
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.lr_factor = LearningRateFactor(warmup, total, config.schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda")

    def step(self, images: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> tuple[float, int, int]:
        """One optimisation step on the training ``rows``; returns (summed loss, correct, images) for this rank's
        batch (the loss summed is the plain per-image loss, also under an objective)."""
        if self.transform is not None:
            images, labels = self.transform(images, labels, self.classifier)
        labels = labels.to(self.device)
        with self.classifier._autocast():
            logits = self.network(self.classifier._prepare(images)).float()
        losses = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.config.label_smoothing)
        loss = self.objective(losses, rows) if self.objective is not None else losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        correct = int((logits.detach().argmax(dim=1) == labels).sum())
        return float(losses.detach().sum()), correct, labels.numel()

    def state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                **({"objective": self.objective.state()} if self.objective is not None else {})}

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.objective is not None:
            if "objective" not in state:
                raise WeakspotError("resume: the checkpoint was written without this run's training objective")
            self.objective.load_state(state["objective"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def restart_schedule(self) -> None:
        """The learning rate's decay starts again from the peak at the next step (``LearningRateFactor``)."""
        self.lr_factor.restart(self.scheduler.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self.lr_factor(self.scheduler.last_epoch)

    def sync_buffers(self) -> None:
        """BatchNorm running statistics drift per rank (each normalises its own shard): take rank 0's, so
        every rank evaluates and saves the same model."""
        if self.world > 1:
            for buffer in self.classifier.net.buffers():
                dist.broadcast(buffer, src=0)


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


def _batches_of_images(images: torch.Tensor, batches: list[torch.Tensor], config: TrainConfig) -> Iterator[torch.Tensor]:
    if not config.augment:
        return (images[index] for index in batches)
    augment = standard_augmentation(images.shape[-1])
    return Prefetcher(lambda index, seed: augment(images[index], seed)).map(batches)


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
    config.validate()
    if len(labels) == 0 or len(labels) != images.shape[0]:
        raise WeakspotError(f"need as many labels as images (got {len(labels)} labels, {images.shape[0]} images)")
    if sample_weights is not None and (sample_weights.shape != labels.shape or not bool((sample_weights >= 0).all())
                                       or not float(sample_weights.sum()) > 0):
        raise WeakspotError("sample weights must be one non-negative weight per image, not all zero")
    if objective is not None and transform is not None:
        raise WeakspotError("a training objective reads the batch's training rows; a batch transform changes them")
    has_val = val_images is not None and val_labels is not None and len(val_labels) > 0
    if balance_recall and not has_val:
        raise WeakspotError("the class-bias balance fits on validation data, and there is none; give some, "
                            "or turn it off")
    rank, world = _world()
    is_main = rank == 0
    out = Path(out_dir) if out_dir is not None else None
    trainer = _Trainer(classifier, config, len(labels), transform, objective)
    history: list[dict[str, Any]] = []
    start_epoch, best_epoch, waited, stopped = 0, 0, 0, False
    best_accuracy: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    run_meta = {**(meta or {}), "train_config": asdict(config)}
    if resume:
        if out is None or not (out / LAST_CHECKPOINT).is_file():
            raise WeakspotError(f"{out / LAST_CHECKPOINT if out else 'resume'}: nothing to resume (no checkpoint)")
        payload = read_checkpoint(out / LAST_CHECKPOINT)
        _check_resumable(payload, classifier, config, out / LAST_CHECKPOINT)
        extra = payload["extra_state"]
        if len(extra["rng"]) != world:
            raise WeakspotError(f"{out / LAST_CHECKPOINT}: written by {len(extra['rng'])} process(es), resumed by {world}")
        classifier.model.load_state_dict(payload["state_dict"])
        trainer.load_state(extra)
        _restore_rng(extra["rng"][rank], classifier.device)
        start_epoch, history = int(extra["epoch"]), list(extra["history"])
        best_epoch, waited, stopped = int(extra["best_epoch"]), int(extra["waited"]), bool(extra["stopped"])
        best_accuracy = extra["best_val_accuracy"]
        if best_epoch and config.keep == "best":
            best_state = read_checkpoint(out / BEST_CHECKPOINT)["state_dict"]
        if is_main:
            atomic_write_text(out / LOG_NAME, "".join(json.dumps(entry) + "\n" for entry in history))
    else:
        if out is not None and (out / LAST_CHECKPOINT).exists():
            raise WeakspotError(f"{out / LAST_CHECKPOINT}: a run is already there; pass resume (--resume) or a new out dir")
        if out is not None and is_main:
            atomic_write_text(out / LOG_NAME, "")
        torch.manual_seed(config.seed + rank)
    with _Progress(progress and is_main, trainer.steps_per_epoch, config.epochs) as bar:
        for epoch in range(start_epoch, config.epochs):
            if stopped:
                break
            batches = _epoch_batches(len(labels), config, epoch, rank, world, sample_weights)
            update = bar.epoch(epoch + 1)
            classifier.net.train()
            started = time.perf_counter()
            hook_seconds = 0.0  # spent in the transform's start_step (attack rounds): not training throughput
            loss_sum, correct, seen = 0.0, 0, 0
            try:
                for step, (index, batch) in enumerate(zip(batches, _batches_of_images(images, batches, config)), 1):
                    if hasattr(transform, "start_step"):
                        hook_started = time.perf_counter()
                        classifier.net.eval()
                        if transform.start_step(epoch + (step - 1) / len(batches), classifier):
                            trainer.restart_schedule()
                        classifier.net.train()
                        hook_seconds += time.perf_counter() - hook_started
                    batch_loss, batch_correct, batch_seen = trainer.step(batch, labels[index], index)
                    loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + batch_seen
                    update(step, loss_sum / seen, correct / seen,
                           seen * world / (time.perf_counter() - started - hook_seconds))
            finally:
                classifier.net.eval()
            trainer.sync_buffers()
            seconds = time.perf_counter() - started - hook_seconds
            loss_sum, correct, seen = _all_sum([loss_sum, correct, seen], classifier.device)
            val_accuracy = None
            if has_val:
                val_correct, val_seen = _all_sum(list(_count_correct(classifier, val_images, val_labels)), classifier.device)
                val_accuracy = val_correct / val_seen
            improved = not has_val or best_accuracy is None or val_accuracy > best_accuracy
            if improved:
                best_accuracy, best_epoch, waited = val_accuracy, epoch + 1, 0
                if config.keep == "best":  # held in memory only to be restored at the end
                    best_state = {key: value.detach().cpu().clone() for key, value in classifier.model.state_dict().items()}
            else:
                waited += 1
            stopped = config.patience is not None and waited >= config.patience and epoch + 1 < config.epochs
            entry = {"epoch": epoch + 1, "lr": trainer.optimizer.param_groups[0]["lr"], "train_loss": loss_sum / seen,
                     "train_accuracy": correct / seen, "val_accuracy": val_accuracy,
                     "images_per_second": seen / seconds, "seconds": seconds, "best": improved,
                     "stopped_early": stopped}
            history.append(entry)
            rng = _gather_rng(classifier.device)
            if out is not None and is_main:
                epoch_meta = {**run_meta, "epoch": epoch + 1, "val_accuracy": val_accuracy}
                if improved:
                    classifier.save(out / BEST_CHECKPOINT, meta=epoch_meta)
                classifier.save(out / LAST_CHECKPOINT, meta=epoch_meta, extra_state={
                    **trainer.state(), "epoch": epoch + 1, "rng": rng, "config": asdict(config), "history": history,
                    "best_epoch": best_epoch, "best_val_accuracy": best_accuracy, "waited": waited, "stopped": stopped})
                _append_line(out / LOG_NAME, entry)
    kept_epoch = len(history)
    if best_state is not None:
        classifier.model.load_state_dict(best_state)
        kept_epoch = best_epoch
    recall_balance = None
    if balance_recall or (balance_recall is None and has_val and getattr(transform, "balances_recall", False)):
        started = time.perf_counter()
        recall_balance = calibration.balance_recall(classifier, val_images, val_labels)
        recall_balance["seconds"] = time.perf_counter() - started
        if out is not None and is_main:
            classifier.save(out / BALANCED_CHECKPOINT, meta={**run_meta, "recall_balance": recall_balance})
    return FitResult(history=history, best_epoch=best_epoch, best_val_accuracy=best_accuracy if has_val else None,
                     stopped_early=stopped, out_dir=out, kept_epoch=kept_epoch, recall_balance=recall_balance)


def train_classifier(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                     config: TrainConfig = TrainConfig()) -> list[float]:
    """Fine-tune ``classifier`` in place on (images, labels), no validation; returns the mean loss per epoch."""
    return [entry["train_loss"] for entry in fit(classifier, images, labels, config).history]


def evaluate_accuracy(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted, _ = classifier.predict(images)
    return float((predicted == labels.cpu()).float().mean())
