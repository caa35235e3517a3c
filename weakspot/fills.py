"""What an occluded region is replaced with: shared by explainers (absent segments) and attacks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weakspot.errors import WeakspotError

FILLS = ("white", "black", "gray", "mean", "blur")


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
    raise WeakspotError(f"unknown fill '{fill}' (choose from {', '.join(FILLS)})")


def apply_masks(images: torch.Tensor, masks: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """Images (N,3,H,W) with ``filled`` where masks (N,H,W) are set: one tensor op, no pixel loops."""
    return torch.where(masks[:, None].bool(), filled, images)
