"""LIME on superpixels (Ribeiro et al. 2016), batched: ``lime_image.LimeImageExplainer`` semantics and
defaults, with the perturbed images built as tensors and sent through ``predict_proba`` in large chunks."""

from __future__ import annotations

import numpy as np
import torch

from weakspot.classifier import Classifier
from weakspot.explainers.base import (SEGMENT_MEAN, Explainer, check_fill, coalition_probabilities,
                                      explainer_fill, pad_scores, segment_counts)


def lime_masks(num_segments: int, num_samples: int, seed: int) -> torch.Tensor:
    """Binary masks (num_samples, K), first row all ones (the unperturbed image, as lime does).

    Drawn exactly like ``lime_image``: ``RandomState(seed).randint(0, 2, num_samples * K)``, so with
    ``LimeImageExplainer(random_state=seed)`` (and ``random_seed`` given to ``explain_instance``) both see
    the same perturbations. Every image uses ``seed``: an image's explanation does not depend on its batch.
    """
    data = np.random.RandomState(seed).randint(0, 2, num_samples * num_segments).reshape(num_samples, num_segments)
    data[0, :] = 1
    return torch.from_numpy(data).bool()


def lime_kernel_weights(masks: torch.Tensor, num_segments: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """lime's sample weights sqrt(exp(-d^2 / w^2)) for the cosine distance d between each mask and the
    all-ones row: d = 1 - sqrt(kept / K) (1 for the empty mask, as sklearn's cosine distance gives)."""
    kept = masks.double().sum(dim=-1)
    distance = 1.0 - torch.sqrt(kept / num_segments.double()[:, None])
    return torch.sqrt(torch.exp(-distance ** 2 / kernel_width ** 2))


def weighted_ridge(features: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                   alpha: float) -> torch.Tensor:
    """Coefficients of sklearn's ``Ridge(alpha, fit_intercept=True).fit(X, y, sample_weight=w)`` for a batch
    of problems (B, M, K), (B, M), (B, M) in closed form (weighted centring, then the normal equations).
    All-zero padding columns get coefficient 0, so ragged K can share one batched solve."""
    features, targets, weights = features.double(), targets.double(), weights.double()
    total = weights.sum(dim=1, keepdim=True)
    feature_mean = (weights[..., None] * features).sum(dim=1, keepdim=True) / total[..., None]
    target_mean = (weights * targets).sum(dim=1, keepdim=True) / total
    centred = (features - feature_mean) * weights.sqrt()[..., None]
    centred_targets = (targets - target_mean) * weights.sqrt()
    gram = centred.transpose(1, 2) @ centred + alpha * torch.eye(features.shape[-1], dtype=torch.float64)
    return torch.linalg.solve(gram, (centred.transpose(1, 2) @ centred_targets[..., None])).squeeze(-1)


class Lime(Explainer):
    """Score of a segment = its coefficient in a locally weighted ridge fit of the target probability on
    random keep/replace masks of the segments.

    Defaults are ``lime_image``'s: ``num_samples=1000``, ``kernel_width=0.25``, cosine distance, the kernel
    sqrt(exp(-d^2/w^2)), ``Ridge(alpha=1)`` and ``hide_color=None`` (``fill="segment-mean"``: each absent
    segment shows its own mean colour). ``fill`` may also be any ``fills.FILLS`` name. Uses ``num_samples``
    evaluations per image, the first being the clean image (reused, not re-evaluated).
    """

    name = "lime"

    def __init__(self, classifier: Classifier, n_segments: int = 50, segmentation: str = "slic",
                 num_samples: int = 1000, kernel_width: float = 0.25, alpha: float = 1.0,
                 fill: str = SEGMENT_MEAN, seed: int = 0) -> None:
        super().__init__(classifier, n_segments, segmentation)
        self.num_samples = num_samples
        self.kernel_width = kernel_width
        self.alpha = alpha
        self.fill = check_fill(fill)
        self.seed = seed

    def attribute(self, images: torch.Tensor, target: torch.Tensor, segments: torch.Tensor,
                  clean_probability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = segment_counts(segments)
        width = int(counts.max())
        masks = torch.zeros(images.shape[0], self.num_samples, width, dtype=torch.bool)
        for row, count in enumerate(counts.tolist()):
            masks[row, :, :count] = lime_masks(count, self.num_samples, self.seed)
        # the first row of every image is the clean image: its probability is already known
        perturbed = masks[:, 1:].reshape(-1, width)
        image_index = torch.arange(images.shape[0]).repeat_interleave(self.num_samples - 1)
        filled = explainer_fill(images, segments, self.fill)
        probabilities = coalition_probabilities(self.classifier, images, segments, filled, image_index,
                                                perturbed, target).view(images.shape[0], -1)
        labels = torch.cat([clean_probability[:, None].float(), probabilities], dim=1)
        weights = lime_kernel_weights(masks, counts, self.kernel_width)
        coefficients = weighted_ridge(masks, labels, weights, self.alpha)
        per_image = [coefficients[row, :count] for row, count in enumerate(counts.tolist())]
        return pad_scores(per_image), torch.full((images.shape[0],), self.num_samples - 1)
