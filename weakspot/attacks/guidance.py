"""Explainer guidance for the occlusion attacks: which segments / regions to occlude first.

An explanation is a set of model calls, so its evaluations count toward each image's queries. With
``match_fill`` and an explainer that takes a ``fill`` (occlusion, LIME, SHAP), the explainer runs once
per attack fill: "occluding this with black lowers the label most" is what a black-fill candidate needs,
and it differs from what a mean-fill candidate needs (a dark fill can ADD a cue that a mean fill removes).

A ``GuidanceCache`` passed to a guided attack keeps each image's explanation, so attacking the same image
again (the augmentation loop's later rounds) spends no guidance queries on it; the price is a ranking from
the model as it was when the image was first explained.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from weakspot.classifier import Classifier
from weakspot.explainers import EXPLAINERS, Attribution, create_explainer
from weakspot.explainers.base import pad_scores, scores_to_heatmap
from weakspot.errors import WeakspotError


class GuidanceCache:
    """Explanations by (image, segments, target, explainer, parameters): each image's segment scores and
    target probability, reused by ``explain_per_fill`` instead of asking the model again. ``hits`` and
    ``misses`` count image lookups."""

    def __init__(self) -> None:
        self.entries: dict[bytes, tuple[torch.Tensor, float]] = {}
        self.hits = self.misses = 0

    def attribution(self, explainer: str, params: dict[str, Any], images: torch.Tensor, labels: torch.Tensor,
                    segments: torch.Tensor, explain: Callable[[torch.Tensor], Attribution]) -> Attribution:
        """The explanation of every image, calling ``explain(rows)`` only for the rows not cached yet
        (evaluations are counted for those rows alone)."""
        setting = repr((explainer, sorted(params.items()))).encode()
        keys = [hashlib.blake2b(setting + images[row].numpy().tobytes() + segments[row].numpy().tobytes()
                                + int(labels[row]).to_bytes(8, "little"), digest_size=16).digest()
                for row in range(images.shape[0])]
        missing = torch.tensor([row for row, key in enumerate(keys) if key not in self.entries], dtype=torch.long)
        evaluations = torch.zeros(images.shape[0], dtype=torch.long)
        method = explainer
        if missing.numel():
            fresh = explain(missing)
            method = fresh.method
            evaluations[missing] = fresh.evaluations.long().cpu()
            for index, row in enumerate(missing.tolist()):
                count = int(fresh.num_segments[index])
                self.entries[keys[row]] = (fresh.scores[index, :count].clone(), float(fresh.probability[index]))
        self.hits += images.shape[0] - missing.numel()
        self.misses += missing.numel()
        scores = pad_scores([self.entries[key][0] for key in keys])
        return Attribution(method=method, segments=segments, scores=scores, heatmap=scores_to_heatmap(segments, scores),
                           target=labels, probability=torch.tensor([self.entries[key][1] for key in keys]),
                           evaluations=evaluations)


def check_explainer(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Refuse an unknown explainer when the attack is built, not after the clean pass."""
    if name not in EXPLAINERS:
        raise WeakspotError(f"unknown explainer '{name}' (choose from {', '.join(sorted(EXPLAINERS))})")
    return dict(params or {})


def explain_per_fill(classifier: Classifier, explainer: str, params: dict[str, Any], images: torch.Tensor,
                     labels: torch.Tensor, segments: torch.Tensor, fills: Sequence[str],
                     match_fill: bool, cache: GuidanceCache | None = None) -> tuple[list[Attribution], torch.Tensor]:
    """One attribution per attack fill (the same object repeated when one run serves all fills), explaining
    each image's label on the given segments (from ``cache`` where it has them); and the model evaluations
    spent per image (N,)."""
    accepts_fill = "fill" in inspect.signature(EXPLAINERS[explainer].__init__).parameters
    runs = fills if match_fill and accepts_fill and "fill" not in params else (None,)
    attributions, evaluations = {}, torch.zeros(images.shape[0], dtype=torch.long)
    for fill in runs:
        run_params = dict(params) if fill is None else {**params, "fill": fill}
        model_explainer = create_explainer(explainer, classifier, **run_params)

        def explain(rows: torch.Tensor) -> Attribution:
            return model_explainer(images[rows], target=labels[rows], segments=segments[rows])

        attribution = (explain(torch.arange(images.shape[0])) if cache is None
                       else cache.attribution(explainer, run_params, images, labels, segments, explain))
        attributions[fill] = attribution
        evaluations += attribution.evaluations.long().cpu()
    return [attributions[fill if fill in attributions else None] for fill in fills], evaluations


def box_mass(heatmap: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Attribution mass under each box: heatmaps (N, H, W), boxes (T, 4) -> (N, T), via an integral image."""
    integral = torch.nn.functional.pad(heatmap.float().cumsum(1).cumsum(2), (1, 0, 1, 0))
    flat = integral.flatten(1)
    width = integral.shape[2]
    y0, x0, y1, x1 = boxes.unbind(1)

    def corner(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return flat[:, y * width + x]

    return corner(y1, x1) - corner(y0, x1) - corner(y1, x0) + corner(y0, x0)
