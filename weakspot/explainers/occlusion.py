"""Occlusion sensitivity per segment: the automated form of study 000's manual cropping experiment."""

from __future__ import annotations

import torch

from weakspot.classifier import Classifier
from weakspot.explainers.base import (Explainer, check_fill, coalition_probabilities, explainer_fill,
                                       pad_scores, segment_counts)


class Occlusion(Explainer):
    """Score of a segment = drop in the target probability when that segment alone is filled.

    One evaluation per segment, all segments of all images batched through ``predict_proba`` in bounded
    chunks (``coalition_probabilities``). ``fill``: any ``fills.FILLS`` name or ``"segment-mean"``.
    """

    name = "occlusion"

    def __init__(self, classifier: Classifier, n_segments: int = 50, segmentation: str = "slic",
                 fill: str = "mean") -> None:
        super().__init__(classifier, n_segments, segmentation)
        self.fill = check_fill(fill)

    def attribute(self, images: torch.Tensor, target: torch.Tensor, segments: torch.Tensor,
                  clean_probability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = segment_counts(segments)
        image_index = torch.repeat_interleave(torch.arange(images.shape[0]), counts)
        segment_index = torch.cat([torch.arange(int(count)) for count in counts])
        present = torch.arange(int(counts.max()))[None, :] != segment_index[:, None]
        filled = explainer_fill(images, segments, self.fill)
        probabilities = coalition_probabilities(self.classifier, images, segments, filled, image_index, present, target)
        drops = clean_probability[image_index] - probabilities
        return pad_scores(list(torch.split(drops, counts.tolist()))), counts
