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


def explanation_figure(image: torch.Tensor, attribution: Attribution, index: int = 0,
                       class_names: Sequence[str] | None = None) -> Figure:
    """Two panels for image ``index`` of ``attribution``: the image, and its explanation drawn in the
    method's convention; titled with the explained class and its probability."""
    picture = image.detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float64)
    segments = attribution.segments[index].numpy()
    target = int(attribution.target[index])
    label = class_names[target] if class_names else str(target)
    style = STYLES.get(attribution.method, "shap")
    figure, (left, right) = plt.subplots(1, 2, figsize=(7.0, 3.8))
    left.imshow(picture)
    left.set_title("input")
    if style == "lime":
        right.imshow(_lime_panel(picture, segments, attribution.scores[index].numpy()))
        right.set_title("green raises, red lowers")
    elif style == "heat":
        heat = attribution.heatmap[index].numpy()
        heat = heat / heat.max() if heat.max() > 0 else heat
        right.imshow(picture)
        shown = right.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        figure.colorbar(shown, ax=right, fraction=0.046)
        right.set_title("Grad-CAM heat")
    else:
        heat = attribution.heatmap[index].numpy()
        limit = float(np.nanmax(np.abs(heat))) or 1.0
        gray = np.repeat(picture.mean(axis=2, keepdims=True), 3, axis=2)
        right.imshow(mark_boundaries(gray, segments, color=(0.5, 0.5, 0.5)), alpha=0.35)
        shown = right.imshow(heat, cmap=SHAP_COLORMAP, vmin=-limit, vmax=limit)
        figure.colorbar(shown, ax=right, fraction=0.046)
        right.set_title("red raises, blue lowers")
    for axis in (left, right):
        axis.axis("off")
    figure.suptitle(f"{attribution.method}: {label} ({float(attribution.probability[index]):.1%})")
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
