"""Figures in the studies' conventions: LIME green raises / red lowers the predicted class, SHAP red raises /
blue lowers, Grad-CAM a heat overlay. Matplotlib's Agg backend (no display); PNGs are written atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from skimage.segmentation import mark_boundaries  # noqa: E402

from weakspot.explainers.base import Attribution  # noqa: E402
from weakspot.fileio import atomic_write  # noqa: E402

# shap's own colours (shap.plots.colors.red_transparent_blue), transparent around zero
SHAP_COLORMAP = LinearSegmentedColormap.from_list(
    "red_transparent_blue", [(0.0, 0.5451, 0.8980, 1.0), (1.0, 1.0, 1.0, 0.0), (1.0, 0.0, 0.3176, 1.0)])
LIME_FEATURES = 8  # segments coloured in a LIME figure, by |score| (lime's get_image_and_mask num_features)
LIME_MIN_SHARE = 0.05  # ...leaving out those below this share of the largest |score| (noise, not evidence)
STYLES = {"lime": "lime", "shap": "shap", "shap-partition": "shap", "occlusion": "shap", "gradcam": "heat"}


def _lime_panel(image: np.ndarray, segments: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Top segments by |score| tinted green (raise the class) or red (lower it), with their boundaries."""
    finite = np.where(np.isfinite(scores), scores, 0.0)
    floor = LIME_MIN_SHARE * float(np.abs(finite).max())
    chosen = [int(s) for s in np.argsort(-np.abs(finite))[:LIME_FEATURES] if abs(finite[s]) > floor]
    tinted = image.copy()
    shown = np.zeros(segments.shape, dtype=int)
    for segment_id in chosen:
        region = segments == segment_id
        colour = np.array([0.0, 1.0, 0.0]) if finite[segment_id] > 0 else np.array([1.0, 0.0, 0.0])
        tinted[region] = 0.5 * tinted[region] + 0.5 * colour
        shown[region] = segment_id + 1
    return mark_boundaries(tinted, shown, color=(1.0, 1.0, 0.0))


def _picture(image: torch.Tensor) -> np.ndarray:
    return image.detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float64)


def _draw_explanation(figure: Figure, axis: plt.Axes, picture: np.ndarray, attribution: Attribution,
                      index: int) -> str:
    """Image ``index`` of ``attribution`` drawn on ``axis`` in its method's convention; returns how to read it."""
    segments = attribution.segments[index].numpy()
    style = STYLES.get(attribution.method, "shap")
    if style == "lime":
        axis.imshow(_lime_panel(picture, segments, attribution.scores[index].numpy()))
        return "green raises, red lowers"
    heat = attribution.heatmap[index].numpy()
    if style == "heat":
        heat = heat / heat.max() if heat.max() > 0 else heat
        axis.imshow(picture)
        shown = axis.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        figure.colorbar(shown, ax=axis, fraction=0.046)
        return "Grad-CAM heat"
    limit = float(np.nanmax(np.abs(heat))) or 1.0
    gray = np.repeat(picture.mean(axis=2, keepdims=True), 3, axis=2)
    axis.imshow(mark_boundaries(gray, segments, color=(0.5, 0.5, 0.5)), alpha=0.35)
    shown = axis.imshow(heat, cmap=SHAP_COLORMAP, vmin=-limit, vmax=limit)
    figure.colorbar(shown, ax=axis, fraction=0.046)
    return "red raises, blue lowers"


def _class_name(attribution: Attribution, index: int, class_names: Sequence[str] | None) -> str:
    target = int(attribution.target[index])
    return class_names[target] if class_names else str(target)


def explanation_figure(image: torch.Tensor, attribution: Attribution, index: int = 0,
                       class_names: Sequence[str] | None = None) -> Figure:
    """Two panels for image ``index`` of ``attribution``: the image, and its explanation drawn in the
    method's convention; titled with the explained class and its probability."""
    picture = _picture(image)
    figure, (left, right) = plt.subplots(1, 2, figsize=(7.0, 3.8))
    left.imshow(picture)
    left.set_title("input")
    right.set_title(_draw_explanation(figure, right, picture, attribution, index))
    for axis in (left, right):
        axis.axis("off")
    label = _class_name(attribution, index, class_names)
    figure.suptitle(f"{attribution.method}: {label} ({float(attribution.probability[index]):.1%})")
    figure.tight_layout()
    return figure


def comparison_figure(image: torch.Tensor, attributions: dict[str, Attribution], index: int = 0,
                      class_names: Sequence[str] | None = None) -> Figure:
    """The image, then each model's explanation of it (``attributions``: model name -> its explanation of the
    same images), each panel titled with the model, its explained class and probability: what a fix changed."""
    picture = _picture(image)
    figure, axes = plt.subplots(1, 1 + len(attributions), figsize=(3.6 * (1 + len(attributions)), 3.8))
    axes[0].imshow(picture)
    axes[0].set_title("input")
    for axis, (name, attribution) in zip(axes[1:], attributions.items()):
        _draw_explanation(figure, axis, picture, attribution, index)
        label = _class_name(attribution, index, class_names)
        axis.set_title(f"{name}: {label} ({float(attribution.probability[index]):.0%})")
    for axis in axes:
        axis.axis("off")
    method = next(iter(attributions.values())).method
    figure.suptitle(f"{method} explanations of the same image")
    figure.tight_layout()
    return figure


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Render to PNG in memory, then write atomically (no half-written file), and free the figure."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(figure)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
