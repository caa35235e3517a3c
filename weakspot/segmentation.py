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


def grid_segments(count: int, height: int, width: int, cells: int = 8, shifts: torch.Tensor | None = None) -> torch.Tensor:
    """A regular ``cells`` x ``cells`` grid: fast, and the same for every image. With ``shifts`` (count, 2), each
    image's inner grid lines move down and right by that share of a cell (in [-0.5, 0.5]; the border cells grow or
    shrink): a cue on a line of the regular grid is split between cells, so occluding any one cell leaves most
    of it, while a grid shifted per image puts it whole inside one cell on many images."""
    offsets = torch.zeros(count, 2) if shifts is None else shifts.float()

    def index(length: int, shift: torch.Tensor) -> torch.Tensor:  # (count, length): each pixel's cell row or column
        cell = torch.floor(torch.arange(length)[None, :] * cells / length - shift[:, None])
        return cell.clamp(0, cells - 1).long()

    return index(height, offsets[:, 0])[:, :, None] * cells + index(width, offsets[:, 1])[:, None, :]


def segment(images: torch.Tensor, method: str = "slic", n_segments: int = 50,
            shifts: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch by name; for ``grid``, ``n_segments`` is rounded to the nearest square, and ``shifts`` moves each
    image's grid (``grid_segments``)."""
    if n_segments < 1:
        raise WeakspotError(f"n_segments must be positive, got {n_segments}")
    if method == "slic":
        return slic_segments(images, n_segments=n_segments)
    if method == "grid":
        cells = max(1, int(round(n_segments ** 0.5)))
        return grid_segments(images.shape[0], images.shape[-2], images.shape[-1], cells=cells, shifts=shifts)
    raise WeakspotError(f"unknown segmentation '{method}' (choose from {', '.join(SEGMENTATION_METHODS)})")
