"""One superpixel segmentation shared by explainers and attacks: label maps (N, H, W), labels 0..K-1."""

from __future__ import annotations

import numpy as np
import torch
from skimage.segmentation import slic

from weakspot.errors import WeakspotError

SEGMENTATION_METHODS = ("slic", "grid")


def _consecutive(labels: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape)


def slic_segments(images: torch.Tensor, n_segments: int = 50, compactness: float = 10.0,
                  sigma: float = 1.0) -> torch.Tensor:
    """SLIC superpixels (scikit-image) per image, about ``n_segments`` each, relabelled 0..K-1."""
    array = images.detach().permute(0, 2, 3, 1).cpu().double().numpy()
    maps = [_consecutive(slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma,
                              start_label=0, channel_axis=-1)) for image in array]
    return torch.from_numpy(np.stack(maps)).long()


def grid_segments(count: int, height: int, width: int, cells: int = 8) -> torch.Tensor:
    """A regular ``cells`` x ``cells`` grid: fast, and the same for every image."""
    rows = torch.div(torch.arange(height) * cells, height, rounding_mode="floor")
    cols = torch.div(torch.arange(width) * cells, width, rounding_mode="floor")
    single = rows[:, None] * cells + cols[None, :]
    return single.expand(count, height, width).clone()


def segment(images: torch.Tensor, method: str = "slic", n_segments: int = 50) -> torch.Tensor:
    """Dispatch by name; for ``grid``, ``n_segments`` is rounded to the nearest square."""
    if n_segments < 1:
        raise WeakspotError(f"n_segments must be positive, got {n_segments}")
    if method == "slic":
        return slic_segments(images, n_segments=n_segments)
    if method == "grid":
        cells = max(1, int(round(n_segments ** 0.5)))
        return grid_segments(images.shape[0], images.shape[-2], images.shape[-1], cells=cells)
    raise WeakspotError(f"unknown segmentation '{method}' (choose from {', '.join(SEGMENTATION_METHODS)})")
