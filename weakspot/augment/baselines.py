"""Baselines the adversarial augmentation loop is compared with, as training-stream transforms.

The interface (``weakspot.training.BatchTransform``) is one callable::

    transform(images, labels, classifier) -> (images, labels)

``fit`` calls it on every training batch, after the standard augmentation and before the optimisation
step (under torchrun: on this rank's shard), with the network in train mode. It returns the batch to
train on: replaced images (cutout, worst-of-k, PGD), or a longer batch (clean images concatenated with
extra examples). Two rules keep runs reproducible and resumable: draw randomness only from torch's
global RNG (``fit`` saves its state in every checkpoint), and evaluate the model inside
``evaluation_mode(classifier)`` so scoring candidates does not move BatchNorm statistics.

A method that needs a whole dataset per round (the adversarial loop: attack the training images, keep what
fooled the model with its true label) gives the transform a ``start_step(progress, classifier)`` method,
which ``fit`` calls before every step with the epochs done so far (model in eval mode; after a resume too;
returning True restarts the learning rate's decay once), to refresh its pool, and lets ``__call__``
concatenate pool examples to each batch at a ratio. ``METHODS`` maps ``weakspot finetune --method`` names to
factories; "adversarial" is ``weakspot.augment.adversarial.AdversarialAugment``. The published methods that train in
stages, MaskTune, JTT, AFR and SPARE, are not transforms but ``weakspot.augment.staged.StagedMethod`` objects with
their own ``fit`` (``weakspot.augment.masktune``, ``jtt``, ``afr``, ``spare``), as are the oracles that are
told the groups, group-balanced ERM and DFR (``weakspot.augment.oracles``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import albumentations as A
import torch
import torch.nn.functional as F

from weakspot.augment.adversarial import AdversarialAugment
from weakspot.augment.afr import Afr
from weakspot.augment.jtt import Jtt
from weakspot.augment.masktune import MaskTune
from weakspot.augment.oracles import Dfr, GroupBalance, GroupDro
from weakspot.augment.spare import Spare
from weakspot.augment.staged import StagedMethod
from weakspot.errors import WeakspotError
from weakspot.models import Classifier
from weakspot.registry import create_from
from weakspot.training.augmentation import AlbumentationsBatch, draw_seed
from weakspot.training.loop import BatchTransform

CUTOUT_FILLS = {"random": "random_uniform", "black": 0.0, "gray": 0.5}


@contextmanager
def evaluation_mode(classifier: Classifier) -> Iterator[None]:
    """Eval mode for scoring candidates inside a training step; the previous mode is restored."""
    was_training = classifier.net.training
    classifier.net.eval()
    try:
        yield
    finally:
        classifier.net.train(was_training)


class Cutout:
    """Random occlusion (DeVries & Taylor 2017; random erasing, Zhong et al. 2020) of one square covering
    ``area`` of the image, through albumentations ``CoarseDropout``: the occlusion baseline with the same
    area budget as the attacks, but placed blindly."""

    def __init__(self, area: float = 0.06, fill: str = "random") -> None:
        if not 0.0 < area < 1.0:
            raise WeakspotError(f"cutout area must be in (0, 1), got {area}")
        if fill not in CUTOUT_FILLS:
            raise WeakspotError(f"cutout fill must be one of {', '.join(CUTOUT_FILLS)}, got {fill!r}")
        side = math.sqrt(area)
        self.occlude = AlbumentationsBatch(A.Compose([A.CoarseDropout(
            num_holes_range=(1, 1), hole_height_range=(side, side), hole_width_range=(side, side),
            fill=CUTOUT_FILLS[fill], p=1.0)]))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, classifier: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
        return self.occlude(images, draw_seed()), labels


def random_spatial(images: torch.Tensor, max_rotation: float, max_translation: float, flip: bool) -> torch.Tensor:
    """One random rotation (degrees), translation (fraction of the side) and optional horizontal flip per
    image, batched with one ``affine_grid`` + ``grid_sample``; uncovered corners are black (zero padding)."""
    count = images.shape[0]
    angle = (torch.rand(count) * 2 - 1) * math.radians(max_rotation)
    shift = (torch.rand(count, 2) * 2 - 1) * max_translation * 2  # grid coordinates span [-1, 1]
    mirror = torch.where(torch.rand(count) < 0.5, -1.0, 1.0) if flip else torch.ones(count)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * mirror, -sin, shift[:, 0]], dim=1),
                         torch.stack([sin * mirror, cos, shift[:, 1]], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class WorstOfK:
    """Worst-of-k spatial augmentation (Engstrom et al. 2019): per image, k random rotation / translation /
    flip variants are scored in one batched pass each and the one with the highest loss is trained on."""

    def __init__(self, k: int = 5, max_rotation: float = 30.0, max_translation: float = 0.1, flip: bool = True) -> None:
        if k < 1:
            raise WeakspotError(f"worst-of-k needs k >= 1, got {k}")
        self.k, self.max_rotation, self.max_translation, self.flip = k, max_rotation, max_translation, flip

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, classifier: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
        variants = torch.stack([random_spatial(images, self.max_rotation, self.max_translation, self.flip)
                                for _ in range(self.k)])
        target = labels.to(classifier.device)
        with evaluation_mode(classifier), torch.no_grad():
            losses = torch.stack([F.cross_entropy(classifier.forward(variant), target, reduction="none").cpu()
                                  for variant in variants])
        worst = losses.argmax(dim=0)
        return variants[worst, torch.arange(images.shape[0])], labels


class PgdTraining:
    """PGD adversarial training (Madry et al. 2018) through ``torchattacks.PGD`` on ``classifier.net``
    (which takes [0,1] images): every batch is replaced by its L-inf PGD examples, true labels kept."""

    def __init__(self, eps: float = 4 / 255, alpha: float = 2 / 255, steps: int = 3) -> None:
        if not (eps > 0 and alpha > 0 and steps >= 1):
            raise WeakspotError("PGD needs eps > 0, alpha > 0 and steps >= 1")
        self.eps, self.alpha, self.steps = eps, alpha, steps

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, classifier: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
        import torchattacks

        attack = torchattacks.PGD(classifier.net, eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=True)
        adversarial = attack(images.to(classifier.device), labels.to(classifier.device))
        return adversarial.detach(), labels


METHODS: dict[str, Callable[..., BatchTransform | StagedMethod | None]] = {
    "erm": lambda: None,
    "cutout": Cutout,
    "worstofk": WorstOfK,
    "pgd": PgdTraining,
    "adversarial": AdversarialAugment,  # needs images= and labels= (the training set it attacks)
    "masktune": MaskTune,
    "jtt": Jtt,
    "afr": Afr,  # val_groups= (validation group labels) for its choice of gamma and lambda, if there are any
    "spare": Spare,
    "groupbalance": GroupBalance,  # oracles: need groups= (training) or val_groups= (validation) group labels
    "groupdro": GroupDro,
    "dfr": Dfr,
}


def create_method(name: str, **params: Any) -> BatchTransform | StagedMethod | None:
    """The training-stream transform (or staged method) of method ``name`` (None for plain ERM); unknown
    names and parameters are errors."""
    return create_from(METHODS, "method", name, **params)
