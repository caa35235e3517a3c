"""What an occluded region is replaced with: shared by explainers (absent segments) and attacks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weakspot.errors import WeakspotError

FILLS = ("white", "black", "gray", "mean", "blur", "median")
ERASING_FILLS = ("mean", "blur", "median")  # they remove detail from a region; white, black, gray paint content over it
IMAGE_FILLS = ERASING_FILLS  # computed from the image; white, black and gray are constants
MEDIAN_GRID = 24  # the median fill works on a grid of about this many cells per side
MEDIAN_KERNEL = 5  # cells: a blob under ~40% of a 5 x 5 cell window (a 10 px button at 96 px) vanishes


def median_background(images: torch.Tensor) -> torch.Tensor:
    """A fill that looks like absence: a median filter on a coarse grid, upsampled. Unlike ``mean`` (a flat
    patch of the image's colour) or ``blur`` (which smears a dark button into a dark blob), the median
    drops small dark or bright details such as a button and keeps the surrounding shirt or skin."""
    height, width = images.shape[-2:]
    cell = max(1, min(height, width) // MEDIAN_GRID)
    coarse = F.avg_pool2d(images, cell, ceil_mode=True) if cell > 1 else images
    pad = MEDIAN_KERNEL // 2
    padded = F.pad(coarse, [pad] * 4, mode="replicate")
    windows = padded.unfold(2, MEDIAN_KERNEL, 1).unfold(3, MEDIAN_KERNEL, 1)  # (N, 3, h, w, k, k)
    median = windows.flatten(-2).median(dim=-1).values
    return F.interpolate(median, size=(height, width), mode="bilinear", align_corners=False)


def fill_images(images: torch.Tensor, fill: str) -> torch.Tensor:
    """The image-sized replacement (N, 3, H, W) that shows through wherever a mask is set."""
    if fill == "white":
        return torch.ones_like(images)
    if fill == "black":
        return torch.zeros_like(images)
    if fill == "gray":
        return torch.full_like(images, 0.5)
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if fill == "blur":
        kernel = max(3, (min(images.shape[-2:]) // 8) | 1)
        padded = F.pad(images, [kernel // 2] * 4, mode="replicate")
        return F.avg_pool2d(padded, kernel, stride=1)
    if fill == "median":
        return median_background(images)
    raise WeakspotError(f"unknown fill '{fill}' (choose from {', '.join(FILLS)})")


def apply_masks(images: torch.Tensor, masks: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """Images (N,3,H,W) with ``filled`` where masks (N,H,W) are set: one tensor op, no pixel loops."""
    return torch.where(masks[:, None].bool(), filled, images)
