"""Explainers: every method is a class with the same call ``explainer(images, target=None, segments=None)``
returning an ``Attribution``. ``create_explainer(name, classifier, **params)`` picks one by name."""

from __future__ import annotations

from typing import Any

from weakspot.classifier import Classifier
from weakspot.explainers.base import Attribution, Explainer
from weakspot.explainers.gradcam import GradCam, XGradCam
from weakspot.explainers.lime import Lime
from weakspot.explainers.occlusion import Occlusion
from weakspot.explainers.shap import KernelShap, ShapPartition
from weakspot.registry import create_from

EXPLAINERS: dict[str, type[Explainer]] = {
    "occlusion": Occlusion,
    "lime": Lime,
    "shap": KernelShap,
    "shap-partition": ShapPartition,
    "gradcam": GradCam,
    "xgradcam": XGradCam,
}


def create_explainer(name: str, classifier: Classifier, **params: Any) -> Explainer:
    """The explainer called ``name`` (see ``EXPLAINERS``), constructed on ``classifier``."""
    return create_from(EXPLAINERS, "explainer", name, classifier, **params)


__all__ = ["Attribution", "EXPLAINERS", "Explainer", "create_explainer"]
