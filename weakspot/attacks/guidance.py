"""Explainer guidance for the occlusion attacks: which segments / regions to occlude first.

An explanation is a set of model calls, so its evaluations count toward each image's queries. With
``match_fill`` and an explainer that takes a ``fill`` (occlusion, LIME, SHAP), the explainer runs once
per attack fill: "occluding this with black lowers the label most" is what a black-fill candidate needs,
and it differs from what a mean-fill candidate needs (a dark fill can ADD a cue that a mean fill removes).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from weakspot.classifier import Classifier
from weakspot.explainers import EXPLAINERS, Attribution, create_explainer
from weakspot.errors import WeakspotError


def check_explainer(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Refuse an unknown explainer when the attack is built, not after the clean pass."""
    if name not in EXPLAINERS:
        raise WeakspotError(f"unknown explainer '{name}' (choose from {', '.join(sorted(EXPLAINERS))})")
    return dict(params or {})


def explain_per_fill(classifier: Classifier, explainer: str, params: dict[str, Any], images: torch.Tensor,
                     labels: torch.Tensor, segments: torch.Tensor, fills: Sequence[str],
                     match_fill: bool) -> tuple[list[Attribution], torch.Tensor]:
    """One attribution per attack fill (the same object repeated when one run serves all fills), explaining
    each image's label on the given segments; and the model evaluations spent per image (N,)."""
    accepts_fill = "fill" in inspect.signature(EXPLAINERS[explainer].__init__).parameters
    runs = fills if match_fill and accepts_fill and "fill" not in params else (None,)
    attributions, evaluations = {}, torch.zeros(images.shape[0], dtype=torch.long)
    for fill in runs:
        run_params = dict(params) if fill is None else {**params, "fill": fill}
        attribution = create_explainer(explainer, classifier, **run_params)(images, target=labels, segments=segments)
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
