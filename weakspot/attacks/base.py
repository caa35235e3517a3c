"""The attack contract (torchattacks-like): construct with parameters, call on images + labels.

Every attack returns an ``AttackResult``, whatever searches inside it, so tables, the augmentation loop
and regression checks treat a white block and PGD alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from weakspot.classifier import Classifier


@dataclass(frozen=True)
class Perturbation:
    """What was changed in one image, as data: ``kind`` (e.g. "superpixel", "block", "crop", "pgd"), the
    occluded ``area`` as a fraction of the image, and whichever of box (y0, x0, y1, x1), segments, fill and
    other parameters apply. ``boxes`` lists every rectangle of a multi-patch perturbation (button)."""

    kind: str
    area: float
    box: tuple[int, int, int, int] | None = None
    segments: tuple[int, ...] | None = None
    fill: str | None = None
    params: dict[str, float] = field(default_factory=dict)
    boxes: tuple[tuple[int, int, int, int], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "area": self.area, "box": list(self.box) if self.box else None,
                "segments": list(self.segments) if self.segments is not None else None, "fill": self.fill,
                "params": dict(self.params), "boxes": [list(box) for box in self.boxes] if self.boxes else None}


@dataclass
class AttackResult:
    """Per-image outcome of one attack on N images.

    ``correct``: the clean prediction equals the label (only those are attacked); ``fooled``: a perturbation
    was found that changes the prediction away from the label; ``adversarial`` is the perturbed image where
    fooled, the original elsewhere; ``queries`` counts model evaluations per image; ``nonfinite``: the model
    returned NaN/inf for the clean image or a perturbation of it (such an output is never a success, and a
    clean one is not correct). None when the producer does not track it.
    """

    name: str
    labels: torch.Tensor  # (N,) long
    correct: torch.Tensor  # (N,) bool
    fooled: torch.Tensor  # (N,) bool, False wherever correct is False
    adversarial: torch.Tensor  # (N, 3, H, W)
    perturbations: list[Perturbation | None]
    original_class: torch.Tensor  # (N,) long
    original_probability: torch.Tensor  # (N,) probability of original_class
    adversarial_class: torch.Tensor  # (N,) long
    adversarial_probability: torch.Tensor  # (N,) probability of adversarial_class
    queries: torch.Tensor  # (N,) long
    seconds: float
    nonfinite: torch.Tensor | None = None  # (N,) bool

    @property
    def success_rate(self) -> float:
        """Fooled among the correctly classified images."""
        attacked = int(self.correct.sum())
        return float(self.fooled.sum()) / attacked if attacked else 0.0

    @property
    def robust_accuracy(self) -> float:
        """Correct and not fooled, among all images."""
        return float((self.correct & ~self.fooled).float().mean()) if len(self.labels) else 0.0

    @property
    def mean_area(self) -> float:
        """Mean occluded area of the successful perturbations (0 when none succeeded)."""
        areas = [perturbation.area for perturbation, fooled in zip(self.perturbations, self.fooled.tolist())
                 if fooled and perturbation is not None]
        return sum(areas) / len(areas) if areas else 0.0

    @property
    def mean_queries(self) -> float:
        return float(self.queries.float().mean()) if len(self.labels) else 0.0


class Attack(ABC):
    """Construct with the classifier and the attack's parameters; ``attack(images, labels)`` runs it."""

    name: str = ""

    def __init__(self, classifier: Classifier, budget: int = 200) -> None:
        self.classifier = classifier
        self.budget = budget

    @abstractmethod
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        """Attack every correctly classified image within ``budget`` queries each."""
