"""The pieces of one training run that ``fit`` (``weakspot.training.loop``) puts together: the optimisation step
and its schedule (``Trainer``, ``LearningRateFactor``), each epoch's batches, the RNG state a checkpoint saves,
the progress bar, and the sums over torchrun ranks."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.nn.parallel import DistributedDataParallel

from weakspot.distributed import all_reduce_sum
from weakspot.errors import WeakspotError
from weakspot.models import Classifier
from weakspot.training.augmentation import Prefetcher, standard_augmentation

if TYPE_CHECKING:
    from weakspot.training.loop import BatchObjective, BatchTransform, TrainConfig


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum per-rank statistics over ranks (identity in a plain run)."""
    if rank_and_world()[1] == 1:
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


def batch_starts(count: int, batch_size: int, world: int) -> list[int]:
    """Where each global batch of an epoch of ``count`` images starts. A last batch that would leave a process
    fewer than two images joins the batch before it: BatchNorm in train mode cannot normalise one image."""
    starts = list(range(0, count, batch_size))
    if len(starts) > 1 and count - starts[-1] < 2 * world:
        starts.pop()
    return starts


def epoch_batches(count: int, config: TrainConfig, epoch: int, rank: int, world: int,
                  sample_weights: torch.Tensor | None = None) -> list[torch.Tensor]:
    """This rank's index batches for one epoch: the global order is seeded by (seed, epoch) and each global
    batch (``batch_starts``) is dealt round-robin to the ranks. With ``sample_weights`` the epoch is ``count``
    draws with replacement in proportion to them (upsampling without lengthening the epoch) instead of a
    permutation."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    if sample_weights is None:
        order = torch.randperm(count, generator=generator)
    else:
        order = torch.multinomial(sample_weights.double(), count, replacement=True, generator=generator)
    starts = batch_starts(count, config.batch_size, world)
    return [order[start:end][rank::world] for start, end in zip(starts, [*starts[1:], count])]


def count_correct(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Correct predictions on this rank's shard of (images, labels)."""
    rank, world = rank_and_world()
    shard = torch.arange(rank, len(labels), world)
    if shard.numel() == 0:
        return 0, 0
    predicted, _ = classifier.predict(images[shard])
    return int((predicted == labels[shard].cpu()).sum()), int(shard.numel())


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_rng(device: torch.device) -> list[dict[str, Any]]:
    """Every rank's RNG state in rank order (each rank augments its own shard with its own stream)."""
    _, world = rank_and_world()
    state = rng_state(device)
    if world == 1:
        return [state]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, state)
    return gathered


class ProgressBar:
    """A rich progress bar on rank 0 (stderr) with loss, accuracy and throughput; silent elsewhere."""

    def __init__(self, enabled: bool, steps: int, epochs: int) -> None:
        self.steps = steps
        self.epochs = epochs
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1%}  {task.fields[rate]:.0f} img/s"),
            TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled)

    def __enter__(self) -> ProgressBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def epoch(self, epoch: int) -> Callable[[int, float, float, float], None]:
        task = self.bar.add_task("train", total=self.steps, epoch=epoch, epochs=self.epochs, loss=0.0, acc=0.0, rate=0.0)

        def update(step: int, loss: float, accuracy: float, rate: float) -> None:
            self.bar.update(task, completed=step, loss=loss, acc=accuracy, rate=rate)

        return update


class Trainer:
    """State of one fit: network (maybe DDP-wrapped), optimizer, schedule, scaler, bookkeeping."""

    def __init__(self, classifier: Classifier, config: TrainConfig, count: int, transform: BatchTransform | None,
                 objective: BatchObjective | None = None) -> None:
        self.classifier = classifier
        self.config = config
        self.transform, self.objective = transform, objective
        self.world = rank_and_world()[1]
        self.device = classifier.device
        network = classifier.net
        if self.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            network = DistributedDataParallel(network, device_ids=device_ids)
        self.network = network
        self.optimizer = torch.optim.AdamW(classifier.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = len(batch_starts(count, config.batch_size, self.world))
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

    def stateful_parts(self) -> dict[str, Any]:
        """The objective and the transform when they learn across steps (``state``/``load_state``): a resume
        must continue them, not start them afresh."""
        parts = {"objective": self.objective, "transform": self.transform}
        return {name: part for name, part in parts.items() if hasattr(part, "state") and hasattr(part, "load_state")}

    def state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                **{name: part.state() for name, part in self.stateful_parts().items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        for name, part in self.stateful_parts().items():
            if name not in state:
                raise WeakspotError(f"resume: the checkpoint was written without this run's training {name}")
            part.load_state(state[name])
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


def batches_of_images(images: torch.Tensor, batches: list[torch.Tensor], config: TrainConfig) -> Iterator[torch.Tensor]:
    if not config.augment:
        return (images[index] for index in batches)
    augment = standard_augmentation(images.shape[-1])
    return Prefetcher(lambda index, seed: augment(images[index], seed)).map(batches)
