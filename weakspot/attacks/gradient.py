"""The L-inf reference attacks of ``torchattacks`` (FGSM, PGD) in the weakspot interface, so the tables put
occlusion robustness beside pixel-norm robustness.

torchattacks gets the classifier's network (which takes [0,1] images) through a thin module that calls
``classifier.forward``, so every forward+backward pass is counted in ``classifier.images_evaluated``.
Queries per attacked image: 1 clean + ``steps`` forward+backward passes + 1 final check of the result.
"""

from __future__ import annotations

import time
from abc import abstractmethod

import torch
import torchattacks
from torch import nn

from weakspot.attacks.base import Attack, AttackResult, Perturbation
from weakspot.attacks.engine import finite_rows, fooling
from weakspot.attacks.search import (build_result, check_inputs, check_positive_int, clean_pass,
                                     correctly_classified)
from weakspot.classifier import Classifier
from weakspot.errors import WeakspotError

CHANGED_PIXEL = 1e-6


class CountingNet(nn.Module):
    """``classifier.net`` seen through ``classifier.forward``: same logits, counted evaluations."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.net = classifier.net
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.forward(images)


class GradientAttack(Attack):
    """Shared run of a torchattacks L-inf attack: ``eps`` in [0,1] pixel units, ``steps`` gradient steps
    (capped by the budget), chunks of ``batch_size`` images (default: the classifier's micro-batch)."""

    steps = 1

    def __init__(self, classifier: Classifier, budget: int = 200, eps: float = 8 / 255,
                 batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(classifier, check_positive_int("budget", budget, 3))
        if not 0.0 < eps <= 1.0:
            raise WeakspotError(f"eps must be in (0, 1], got {eps}")
        self.eps = float(eps)
        self.batch_size = None if batch_size is None else check_positive_int("batch_size", batch_size)
        self.seed = seed

    @abstractmethod
    def make(self, model: nn.Module, steps: int) -> torchattacks.Attack:
        """The torchattacks attack on ``model`` with ``steps`` gradient steps."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        started = time.perf_counter()
        images, labels = check_inputs(images, labels)
        images, clean = clean_pass(self.classifier, images, labels)
        attacked = correctly_classified(clean, labels)
        steps = min(self.steps, self.budget - 2)
        attack = self.make(CountingNet(self.classifier).eval(), steps)
        device = self.classifier.device
        subset, targets = images[attacked.to(device)], labels[attacked].to(device)
        step = self.batch_size or self.classifier.micro_batch
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            adversarial = torch.cat([attack(subset[start:start + step], targets[start:start + step])
                                     for start in range(0, subset.shape[0], step)]) if subset.shape[0] else subset
        probabilities = self.classifier.predict_proba(adversarial)
        fooled = fooling(probabilities, targets).cpu()
        queries = torch.ones(labels.shape[0], dtype=torch.long)
        queries[attacked] += steps + 1
        changed = ((adversarial - subset).abs() > CHANGED_PIXEL).any(dim=1).float().mean(dim=(1, 2)).cpu()
        perturbations = [Perturbation(kind=self.name, area=float(area), params={"eps": self.eps, "steps": float(steps)})
                         if hit else None for area, hit in zip(changed.tolist(), fooled.tolist())]
        nonfinite = ~finite_rows(probabilities)
        return build_result(self.name, labels, clean, images, attacked, fooled, adversarial, probabilities,
                            perturbations, queries, started, nonfinite)


class FgsmAttack(GradientAttack):
    """One signed-gradient step of size ``eps`` (Goodfellow et al., 2015)."""

    name = "fgsm"

    def make(self, model: nn.Module, steps: int) -> torchattacks.Attack:
        return torchattacks.FGSM(model, eps=self.eps)


class PgdAttack(GradientAttack):
    """Projected gradient descent, ``steps`` steps of ``alpha`` from a random start (Madry et al., 2018)."""

    name = "pgd"

    def __init__(self, classifier: Classifier, budget: int = 200, eps: float = 8 / 255, alpha: float = 2 / 255,
                 steps: int = 10, random_start: bool = True, batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(classifier, budget, eps, batch_size, seed)
        if not 0.0 < alpha <= 1.0:
            raise WeakspotError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.steps = check_positive_int("steps", steps)
        self.random_start = random_start

    def make(self, model: nn.Module, steps: int) -> torchattacks.Attack:
        return torchattacks.PGD(model, eps=self.eps, alpha=self.alpha, steps=steps, random_start=self.random_start)
