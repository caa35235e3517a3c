"""The one result type and signature every explainer shares (captum-like uniformity, no global state)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from weakspot.models import Classifier
from weakspot.segmentation import segment


@dataclass
class Attribution:
    """Explanations of a batch of N images for one target class each.

    ``scores[i, s]`` is segment ``s``'s contribution to image i's target probability (NaN past
    ``num_segments[i]``: SLIC gives each image its own count); ``heatmap`` spreads it over pixels.
    ``evaluations[i]`` counts the model evaluations spent on image i.
    """

    method: str
    segments: torch.Tensor  # (N, H, W) long, 0..K_i-1
    scores: torch.Tensor  # (N, K_max) float, NaN padded
    heatmap: torch.Tensor  # (N, H, W) float
    target: torch.Tensor  # (N,) long
    probability: torch.Tensor  # (N,) float, the target's probability on the clean image
    evaluations: torch.Tensor  # (N,) long

    @property
    def num_segments(self) -> torch.Tensor:
        return self.segments.flatten(1).max(dim=1).values + 1

    def ranking(self) -> torch.Tensor:
        """Segment ids by descending score per image (N, K_max); padding sorts last."""
        return torch.nan_to_num(self.scores, nan=float("-inf")).argsort(dim=1, descending=True, stable=True)

    def top_segments(self, k: int) -> torch.Tensor:
        """The ``k`` highest-scoring segment ids per image (N, k)."""
        return self.ranking()[:, :k]


def scores_to_heatmap(segments: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Paint each pixel with its segment's score."""
    return torch.gather(torch.nan_to_num(scores, nan=0.0), 1, segments.flatten(1)).view_as(segments).float()


def pad_scores(per_image: list[torch.Tensor]) -> torch.Tensor:
    """Ragged per-image score vectors as one NaN-padded (N, K_max) tensor."""
    width = max(int(scores.numel()) for scores in per_image)
    padded = torch.full((len(per_image), width), float("nan"))
    for row, scores in enumerate(per_image):
        padded[row, : scores.numel()] = scores.float().cpu()
    return padded


class Explainer(ABC):
    """Construct with the classifier and parameters; call on images (N, 3, H, W) in [0,1].

    ``target`` defaults to the predicted class; ``segments`` defaults to SLIC with ``n_segments``.
    """

    name: str = ""

    def __init__(self, classifier: Classifier, n_segments: int = 50, segmentation: str = "slic") -> None:
        self.classifier = classifier
        self.n_segments = n_segments
        self.segmentation = segmentation

    def __call__(self, images: torch.Tensor, target: torch.Tensor | None = None,
                 segments: torch.Tensor | None = None) -> Attribution:
        images = images.float().cpu()
        if segments is None:
            segments = segment(images, self.segmentation, self.n_segments)
        clean = self.classifier.predict_proba(images).cpu()
        if target is None:
            target = clean.argmax(dim=1)
        target = torch.as_tensor(target, dtype=torch.long).view(-1).expand(images.shape[0]).clone()
        probability = clean.gather(1, target[:, None]).squeeze(1)
        scores, evaluations = self.attribute(images, target, segments.long().cpu(), probability)
        return Attribution(method=self.name, segments=segments.long().cpu(), scores=scores,
                           heatmap=scores_to_heatmap(segments.long().cpu(), scores), target=target,
                           probability=probability, evaluations=evaluations + 1)

    @abstractmethod
    def attribute(self, images: torch.Tensor, target: torch.Tensor, segments: torch.Tensor,
                  clean_probability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-segment scores (N, K_max NaN-padded) and model evaluations per image (N,), not counting the
        clean evaluation already spent on ``clean_probability`` (the target's probability, (N,))."""
