"""What every attack shares: input checks, the clean pass, parameter validation, and turning per-image
outcomes into an ``AttackResult``; plus ``SearchAttack``, the base of the attacks that run on the engine.

Query accounting (all attacks): ``result.queries[i]`` counts EVERY model evaluation spent on image i by
the attack call — 1 for the clean prediction, the explainer's evaluations used for guidance, and the
search's candidates (forward+backward passes for gradient attacks). So ``result.queries.sum()`` equals
the growth of ``classifier.images_evaluated`` during the call, and ``queries[i] <= budget``.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence

import torch

from weakspot.attacks.base import Attack, AttackResult, Perturbation
from weakspot.attacks.engine import DEFAULT_MAX_IN_FLIGHT, Proposals, finite_rows, fooling, search
from weakspot.classifier import Classifier
from weakspot.errors import WeakspotError
from weakspot.fills import FILLS


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise WeakspotError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_fractions(name: str, values: Sequence[float], low: float, high: float) -> tuple[float, ...]:
    """A non-empty list of numbers in (low, high], sorted ascending (the cheapest-first order)."""
    values = tuple(float(value) for value in values)
    if not values or any(not low < value <= high for value in values):
        raise WeakspotError(f"{name} must be numbers in ({low}, {high}], got {list(values)}")
    return tuple(sorted(set(values)))


def check_fills(fills: Sequence[str] | str) -> tuple[str, ...]:
    fills = (fills,) if isinstance(fills, str) else tuple(fills)
    unknown = [fill for fill in fills if fill not in FILLS]
    if not fills or unknown:
        raise WeakspotError(f"unknown fill '{unknown[0] if unknown else ''}' (choose from {', '.join(FILLS)})")
    return tuple(dict.fromkeys(fills))


def check_inputs(images: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.as_tensor(labels, dtype=torch.long).cpu().view(-1)
    if images.ndim != 4 or images.shape[1] != 3:
        raise WeakspotError(f"attacks take images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise WeakspotError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def clean_pass(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images on the classifier's device and clean probabilities; one query per image."""
    images = images.to(classifier.device, dtype=torch.float32)
    return images, classifier.predict_proba(images)


def build_result(name: str, labels: torch.Tensor, clean: torch.Tensor, images: torch.Tensor,
                 attacked: torch.Tensor, fooled: torch.Tensor, adversarial: torch.Tensor,
                 adversarial_probabilities: torch.Tensor, perturbations: list[Perturbation | None],
                 queries: torch.Tensor, started: float, nonfinite: torch.Tensor) -> AttackResult:
    """An ``AttackResult`` (CPU tensors) from the clean pass and the outcome on the ``attacked`` subset
    (``fooled``, ``adversarial``, ``adversarial_probabilities``, ``perturbations``, ``nonfinite`` are per
    attacked image; a NaN/inf clean output is flagged here)."""
    clean = clean.float().cpu()
    count = labels.shape[0]
    correct = torch.zeros(count, dtype=torch.bool)
    correct[attacked] = True
    all_fooled = torch.zeros(count, dtype=torch.bool)
    all_fooled[attacked[fooled.cpu()]] = True
    original_probability, original_class = clean.max(dim=1)
    final = clean.clone()
    final_images = images.detach().cpu().clone()
    fooled_rows = attacked[fooled.cpu()]
    final[fooled_rows] = adversarial_probabilities.float().cpu()[fooled.cpu()]
    final_images[fooled_rows] = adversarial.detach().cpu()[fooled.cpu()]
    adversarial_probability, adversarial_class = final.max(dim=1)
    all_nonfinite = ~finite_rows(clean)
    all_nonfinite[attacked] |= nonfinite.cpu()
    all_perturbations: list[Perturbation | None] = [None] * count
    for row, perturbation in zip(attacked.tolist(), perturbations):
        all_perturbations[row] = perturbation
    return AttackResult(name=name, labels=labels, correct=correct, fooled=all_fooled, adversarial=final_images,
                        perturbations=all_perturbations, original_class=original_class,
                        original_probability=original_probability, adversarial_class=adversarial_class,
                        adversarial_probability=adversarial_probability, queries=queries,
                        seconds=time.perf_counter() - started, nonfinite=all_nonfinite)


def correctly_classified(clean: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Indices of the images to attack: predicted as labelled, with finite probabilities."""
    return torch.nonzero(~fooling(clean, labels.to(clean.device)).cpu()
                         & finite_rows(clean).cpu()).flatten()


class SearchAttack(Attack):
    """An attack that proposes ordered candidates and lets the engine search them.

    ``chunk``: images per ``predict_proba`` call of the search (default 4 micro-batches); ``max_in_flight``:
    candidates of one image evaluated together when few images remain (see ``engine.search``).
    ``margin`` (like C&W's kappa, in probability): a candidate also succeeds when the label's probability
    leads the best other class by less than this; 0 means misclassification. The augmentation loop uses it
    to keep cue removals that shake a confident model without flipping it.
    """

    def __init__(self, classifier: Classifier, budget: int = 200, chunk: int | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, margin: float = 0.0) -> None:
        super().__init__(classifier, check_positive_int("budget", budget))
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin < 1.0:
            raise WeakspotError(f"margin must be a number in [0, 1), got {margin!r}")
        self.margin = float(margin)
        self.chunk = None if chunk is None else check_positive_int("chunk", chunk)
        self.max_in_flight = check_positive_int("max_in_flight", max_in_flight)

    @abstractmethod
    def propose(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[Proposals, torch.Tensor]:
        """Candidates for correctly classified images (on the device) and the guidance queries (N,) spent
        on each image to order them (0 for unguided searches)."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        started = time.perf_counter()
        images, labels = check_inputs(images, labels)
        images, clean = clean_pass(self.classifier, images, labels)
        queries = torch.ones(labels.shape[0], dtype=torch.long)
        attacked = correctly_classified(clean, labels)
        if attacked.numel() == 0:
            empty = torch.zeros(0, dtype=torch.bool)
            return build_result(self.name, labels, clean, images, attacked, empty, images[:0], clean[:0], [],
                                queries, started, empty)
        proposals, guidance = self.propose(images[attacked.to(images.device)], labels[attacked])
        spent = 1 + guidance.cpu()
        if int(spent.max()) > self.budget:
            raise WeakspotError(f"attack '{self.name}': guiding the search took {int(spent.max())} queries for one "
                                f"image, more than the budget of {self.budget}; raise the budget or use a cheaper "
                                "explainer / fewer segments")
        outcome = search(self.classifier, images[attacked.to(images.device)], labels[attacked], proposals,
                         self.budget - spent, chunk=self.chunk, max_in_flight=self.max_in_flight,
                         margin=self.margin)
        queries[attacked] += guidance.cpu() + outcome.queries
        perturbations = [proposals.describe(row, int(outcome.winner[row])) if bool(outcome.fooled[row]) else None
                         for row in range(attacked.numel())]
        return build_result(self.name, labels, clean, images, attacked, outcome.fooled, outcome.adversarial,
                            outcome.probabilities, perturbations, queries, started, outcome.nonfinite)
