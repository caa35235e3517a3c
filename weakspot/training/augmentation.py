"""Standard training augmentation through albumentations, applied to float batches in [0,1].

albumentations draws per-image parameters, so it runs image by image on one HWC view of the whole batch
(one permute + one stack per batch, no per-image tensor round trips); ``Prefetcher`` overlaps it with the
training step of the previous batch in a worker thread (OpenCV releases the GIL).

Randomness: each batch's albumentations seed is drawn from torch's global RNG in the main thread, so the
augmentation is reproduced exactly by restoring that RNG state (what ``--resume`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import albumentations as A
import numpy as np
import torch

SEED_RANGE = 2**31 - 1
Item = TypeVar("Item")


def draw_seed() -> int:
    """A seed for a non-torch random source, drawn from torch's global RNG (saved in checkpoints)."""
    return int(torch.randint(0, SEED_RANGE, (1,)))


class AlbumentationsBatch:
    """Apply an albumentations pipeline to every image of a float batch (N, 3, H, W) in [0,1]."""

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline

    def __call__(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        self.pipeline.set_random_seed(seed)
        arrays = images.detach().cpu().permute(0, 2, 3, 1).numpy()
        out = np.stack([self.pipeline(image=array)["image"] for array in arrays])
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().clamp_(0.0, 1.0)


def standard_augmentation(size: int) -> AlbumentationsBatch:
    """Flip, mild RandomResizedCrop (faces stay faces) and colour jitter: the usual fine-tuning recipe."""
    return AlbumentationsBatch(A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(0.7, 1.0), ratio=(0.85, 1.18)),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
    ]))


class Prefetcher(Generic[Item]):
    """Yield ``prepare(item, seed)`` for each item, computing the next one in a thread while the caller
    trains on the current one. Seeds are drawn in item order in the calling thread: deterministic."""

    def __init__(self, prepare: Callable[[Item, int], torch.Tensor]) -> None:
        self.prepare = prepare

    def map(self, items: Sequence[Item]) -> Iterator[torch.Tensor]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: Future | None = None
            for item in items:
                job = pool.submit(self.prepare, item, draw_seed())
                if pending is not None:
                    yield pending.result()
                pending = job
            if pending is not None:
                yield pending.result()
