"""Faithfulness of an attribution: deletion and insertion curves (Petsiuk et al. 2018) on its segments.

Deletion fills segments in the attribution's order (most important first) and follows the target
probability down: a faithful ranking makes it fall fast (low AUC). Insertion starts from the filled image
and reveals segments in the same order: a faithful ranking makes it rise fast (high AUC).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weakspot.classifier import Classifier
from weakspot.explainers.base import Attribution, check_fill, coalition_probabilities, explainer_fill


@dataclass
class FaithfulnessCurves:
    """Target probability after removing (deletion) or revealing (insertion) the top ``fractions`` of each
    image's segments; ``evaluations`` counts model evaluations per image."""

    fractions: torch.Tensor  # (S,) from 0 to 1
    deletion: torch.Tensor  # (N, S)
    insertion: torch.Tensor  # (N, S)
    evaluations: torch.Tensor  # (N,)

    @property
    def deletion_auc(self) -> torch.Tensor:
        """Area under each deletion curve (N,): lower is more faithful."""
        return torch.trapezoid(self.deletion, self.fractions, dim=1)

    @property
    def insertion_auc(self) -> torch.Tensor:
        """Area under each insertion curve (N,): higher is more faithful."""
        return torch.trapezoid(self.insertion, self.fractions, dim=1)


def faithfulness_curves(classifier: Classifier, images: torch.Tensor, attribution: Attribution,
                        fill: str = "mean", steps: int | None = None) -> FaithfulnessCurves:
    """Deletion and insertion curves of ``attribution`` on ``images`` with ``steps`` + 1 points each.

    Step j removes/reveals round(j / steps * K_i) segments of image i; the default ``steps`` is the largest
    segment count, so the image with the most segments moves one segment per step. All 2 (steps + 1) images
    per input go through ``predict_proba`` in one chunked stream.
    """
    check_fill(fill)
    images = images.float().cpu()
    segments = attribution.segments
    counts = attribution.num_segments
    steps = int(counts.max()) if steps is None else steps
    fractions = torch.linspace(0.0, 1.0, steps + 1)
    moved = torch.round(fractions[None, :] * counts[:, None]).long()  # (N, S) segments removed / revealed
    position = attribution.ranking().argsort(dim=1)  # (N, K_max): each segment's place in the ranking
    deleted = position[:, None, :] >= moved[:, :, None]  # (N, S, K_max): shown while not yet deleted
    inserted = position[:, None, :] < moved[:, :, None]  # shown once revealed
    count, points = moved.shape
    present = torch.cat([deleted, inserted], dim=1).flatten(0, 1)
    image_index = torch.arange(count).repeat_interleave(2 * points)
    filled = explainer_fill(images, segments, fill)
    probabilities = coalition_probabilities(classifier, images, segments, filled, image_index, present,
                                            attribution.target).view(count, 2, points)
    return FaithfulnessCurves(fractions=fractions, deletion=probabilities[:, 0], insertion=probabilities[:, 1],
                              evaluations=torch.full((count,), 2 * points))
