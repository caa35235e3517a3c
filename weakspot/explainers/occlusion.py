"""Occlusion sensitivity per segment: the automated form of study 000's manual cropping experiment."""

from __future__ import annotations

import torch

from weakspot.explainers.base import Explainer, pad_scores
from weakspot.fills import apply_masks, fill_images
from weakspot.models import Classifier


class Occlusion(Explainer):
    """Score of a segment = drop in the target probability when that segment alone is filled.

    One evaluation per segment, all segments of all images batched through ``predict_proba``.
    """

    name = "occlusion"

    def __init__(self, classifier: Classifier, n_segments: int = 50, segmentation: str = "slic",
                 fill: str = "mean") -> None:
        super().__init__(classifier, n_segments, segmentation)
        self.fill = fill

    def attribute(self, images: torch.Tensor, target: torch.Tensor, segments: torch.Tensor,
                  clean_probability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = (segments.flatten(1).max(dim=1).values + 1).tolist()
        image_index = torch.repeat_interleave(torch.arange(images.shape[0]), torch.tensor(counts))
        segment_index = torch.cat([torch.arange(count) for count in counts])
        masks = segments[image_index] == segment_index[:, None, None]
        filled = fill_images(images, self.fill)
        occluded = apply_masks(images[image_index], masks, filled[image_index])
        probabilities = self.classifier.predict_proba(occluded).cpu()
        drops = clean_probability[image_index] - probabilities[torch.arange(len(image_index)), target[image_index]]
        per_image = list(torch.split(drops, counts))
        return pad_scores(per_image), torch.tensor(counts)
