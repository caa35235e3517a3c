"""The batched candidate-search engine every search attack runs on.

An attack proposes, per image, an ordered list of candidate perturbations (cheapest first) and a vectorized
``render`` that builds any (image, candidate) pairs as tensors on the model's device. The engine streams
candidates of MANY images together through ``predict_proba`` in chunks of whole micro-batches, stops an
image at its first fooling candidate (so it frees its slots for the others), and never lets an image
exceed its query limit.

A model output with NaN/inf never counts as fooling: the image is flagged in ``nonfinite`` (reported by
the CLI) and the search goes on with its next candidate.

Query accounting: every rendered candidate is evaluated exactly once and counted for its image, so the
sum of ``queries`` equals the images the classifier evaluated during the search. Candidates of one image
that were already in flight in the chunk where an earlier candidate fooled the model are counted too
(they were evaluated); at most ``max_in_flight - 1`` such candidates per image.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from weakspot.attacks.base import Perturbation
from weakspot.classifier import Classifier
from weakspot.errors import WeakspotError

DEFAULT_CHUNK_BATCHES = 4
DEFAULT_MAX_IN_FLIGHT = 4


class Proposals(ABC):
    """Candidates of N images: image i has ``counts[i]`` candidates, indexed 0.. in cheapest-first order. Built
    for one set of images: ``render`` may keep what it computed for row i (``proposals.ImageFills``)."""

    counts: torch.Tensor  # (N,) long, CPU

    @abstractmethod
    def render(self, images: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Perturbed images (M, 3, H, W) for clean ``images`` (M, 3, H, W) = images of ``rows`` (M,), with
        candidate ``candidates[m]`` of image ``rows[m]``; all on the classifier's device, no pixel loops."""

    @abstractmethod
    def describe(self, row: int, candidate: int) -> Perturbation:
        """The candidate as data (only called for the winners)."""


@dataclass
class SearchOutcome:
    """Per image: fooled, the winning candidate (-1), its image and probabilities, queries spent."""

    fooled: torch.Tensor  # (N,) bool
    winner: torch.Tensor  # (N,) long, -1 where not fooled
    adversarial: torch.Tensor  # (N, 3, H, W) on the device; the clean image where not fooled
    probabilities: torch.Tensor  # (N, C) of the adversarial image where fooled, NaN elsewhere
    queries: torch.Tensor  # (N,) long
    nonfinite: torch.Tensor  # (N,) bool: some candidate of the image made the model return NaN/inf


def finite_rows(probabilities: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the model's output row holds no NaN/inf (only such a row can be scored)."""
    return torch.isfinite(probabilities).all(dim=1)


def fooling(probabilities: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Prediction differs from the label, or (``margin`` > 0) the label's probability leads the best other
    class by less than ``margin``; a row with any NaN/inf never counts as fooled."""
    wrong = probabilities.argmax(dim=1) != labels
    if margin > 0:
        true = probabilities.gather(1, labels[:, None]).squeeze(1)
        best_other = probabilities.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
        wrong |= true - best_other < margin
    return wrong & finite_rows(probabilities)


def search(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, proposals: Proposals,
           limits: torch.Tensor, chunk: int | None = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
           margin: float = 0.0) -> SearchOutcome:
    """Evaluate the proposals of all images until each is fooled (see ``fooling`` for ``margin``), out of
    candidates, or at its query limit.

    Each round fills one chunk (default: 4 micro-batches) from the active images in rotating order: one
    candidate each while images outnumber the chunk's slots, up to ``max_in_flight`` each when few images
    remain (the model still sees full micro-batches; the price is a few in-flight queries after success).
    """
    if max_in_flight < 1:
        raise WeakspotError(f"max_in_flight must be >= 1, got {max_in_flight}")
    device = classifier.device
    chunk = chunk or classifier.micro_batch * DEFAULT_CHUNK_BATCHES
    count = images.shape[0]
    images = images.to(device)
    labels_device = labels.to(device)
    limit = torch.minimum(proposals.counts.cpu(), limits.cpu().clamp(min=0))
    position = torch.zeros(count, dtype=torch.long)  # next candidate per image
    queries = torch.zeros(count, dtype=torch.long)
    fooled = torch.zeros(count, dtype=torch.bool)
    nonfinite = torch.zeros(count, dtype=torch.bool)
    winner = torch.full((count,), -1, dtype=torch.long)
    adversarial = images.clone()
    probabilities = torch.full((count, classifier.num_classes), float("nan"), device=device)
    cursor = 0
    while True:
        active = torch.nonzero(~fooled & (position < limit)).flatten()
        if active.numel() == 0:
            break
        cursor %= active.numel()
        active = torch.roll(active, -cursor)
        step = max(1, min(max_in_flight, chunk // active.numel()))
        take = torch.clamp(limit[active] - position[active], max=step)
        keep = torch.cumsum(take, 0) <= chunk
        keep[0] = True
        selected, take = active[keep], take[keep]
        cursor += selected.numel()
        rows = torch.repeat_interleave(selected, take)
        offsets = torch.arange(rows.numel()) - torch.repeat_interleave(torch.cumsum(take, 0) - take, take)
        candidates = position[rows] + offsets
        rows_device = rows.to(device)
        perturbed = proposals.render(images[rows_device], rows_device, candidates.to(device))
        chunk_probabilities = classifier.predict_proba(perturbed)
        hits = fooling(chunk_probabilities, labels_device[rows_device], margin).cpu()
        nonfinite[rows[~finite_rows(chunk_probabilities).cpu()]] = True
        position[selected] += take
        queries[selected] += take
        if hits.any():
            first = torch.full((count,), rows.numel(), dtype=torch.long)
            first.scatter_reduce_(0, rows[hits], torch.nonzero(hits).flatten(), reduce="amin")
            newly = torch.nonzero(first < rows.numel()).flatten()
            picks = first[newly]
            fooled[newly] = True
            winner[newly] = candidates[picks]
            newly_device, picks_device = newly.to(device), picks.to(device)
            adversarial[newly_device] = perturbed[picks_device]
            probabilities[newly_device] = chunk_probabilities[picks_device].float()
    return SearchOutcome(fooled, winner, adversarial, probabilities, queries, nonfinite)
