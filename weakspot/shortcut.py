"""Planted shortcuts: a small dark "button" patch pasted near the collar, correlated with the label.

It reproduces study 001's finding (a classifier that decides by shirt buttons) on demand, so that
explainers, attacks and the augmentation loop can be checked against a known answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from weakspot.data import ImageSet

CUE_GROUP = "cue"
CUE_PRESENT, CUE_ABSENT = "button", "none"


@dataclass(frozen=True)
class ButtonCue:
    """A round patch of ``colour``, diameter ``size_frac`` of the width, centred near (``x_frac``, ``y_frac``)
    with uniform ``jitter`` (fraction of the image) so the model must find it rather than memorise a pixel."""

    size_frac: float = 0.1
    colour: tuple[float, float, float] = (0.05, 0.05, 0.05)
    x_frac: float = 0.5
    y_frac: float = 0.84
    jitter: float = 0.06


def button_masks(count: int, height: int, width: int, cue: ButtonCue, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks (N, H, W) of one button per image and their boxes (N, 4) as y0, x0, y1, x1."""
    radius = max(1.0, cue.size_frac * width / 2)
    shift = (torch.rand(count, 2, generator=generator) * 2 - 1) * cue.jitter
    centre_y = (cue.y_frac + shift[:, 0]) * height
    centre_x = (cue.x_frac + shift[:, 1]) * width
    centre_y = centre_y.clamp(radius, height - radius)
    centre_x = centre_x.clamp(radius, width - radius)
    ys = torch.arange(height, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, None, :] + 0.5
    masks = (ys - centre_y[:, None, None]) ** 2 + (xs - centre_x[:, None, None]) ** 2 <= radius ** 2
    boxes = torch.stack([(centre_y - radius).floor(), (centre_x - radius).floor(),
                         (centre_y + radius).ceil(), (centre_x + radius).ceil()], dim=1).long()
    return masks, boxes


def paste_buttons(images: torch.Tensor, present: torch.Tensor, cue: ButtonCue = ButtonCue(),
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of ``images`` with a button where ``present`` is true; boxes are all -1 where absent."""
    generator = torch.Generator().manual_seed(seed)
    masks, boxes = button_masks(images.shape[0], images.shape[-2], images.shape[-1], cue, generator)
    masks &= present.bool()[:, None, None]
    colour = torch.tensor(cue.colour, dtype=images.dtype).view(1, 3, 1, 1)
    pasted = torch.where(masks[:, None], colour, images)
    boxes[~present.bool()] = -1
    return pasted, boxes


def cue_assignment(labels: torch.Tensor, cue_class: int, rate: float, seed: int) -> torch.Tensor:
    """Which images get the button: ``rate`` of ``cue_class``, ``1 - rate`` of the others (rate 0.5:
    independent of the label). Exact counts per class, shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    present = np.zeros(len(labels), dtype=bool)
    for value in np.unique(labels.numpy()):
        members = np.flatnonzero(labels.numpy() == value)
        share = rate if value == cue_class else 1.0 - rate
        chosen = rng.permutation(members)[: int(round(share * len(members)))]
        present[chosen] = True
    return torch.from_numpy(present)


def _procedural_scenes(labels: torch.Tensor, size: int, signal: float, generator: torch.Generator) -> torch.Tensor:
    """Smooth coloured backgrounds with a central ellipse ("head"): wider for class 1, taller for class 0 by
    ``signal`` (0: the shape says nothing about the label), plus two random distractor blobs."""
    count = labels.shape[0]
    ys = torch.linspace(-1, 1, size)[None, :, None]
    xs = torch.linspace(-1, 1, size)[None, None, :]
    corners = torch.rand(count, 3, 2, 2, generator=generator) * 0.6 + 0.2
    background = torch.nn.functional.interpolate(corners, size=(size, size), mode="bilinear", align_corners=True)
    aspect = 1.0 + signal * 0.35 * (labels.float() * 2 - 1) + (torch.rand(count, generator=generator) - 0.5) * 0.1
    radius = 0.45 + torch.rand(count, generator=generator) * 0.1
    rx, ry = (radius * aspect.sqrt())[:, None, None], (radius / aspect.sqrt())[:, None, None]
    head = (xs / rx) ** 2 + ((ys + 0.15) / ry) ** 2 <= 1.0
    skin = torch.rand(count, 3, generator=generator) * 0.5 + 0.4
    scene = torch.where(head[:, None], skin[:, :, None, None], background)
    for _ in range(2):
        centre = torch.rand(count, 2, generator=generator) * 1.6 - 0.8
        blob_radius = (torch.rand(count, generator=generator) * 0.12 + 0.05)[:, None, None]
        blob = (ys - centre[:, 0, None, None]) ** 2 + (xs - centre[:, 1, None, None]) ** 2 <= blob_radius ** 2
        colour = torch.rand(count, 3, generator=generator) * 0.6 + 0.4
        scene = torch.where(blob[:, None], colour[:, :, None, None], scene)
    noise = torch.randn(count, 3, size, size, generator=generator) * 0.03
    return (scene + noise).clamp(0, 1)


def make_shortcut_dataset(count: int = 256, size: int = 64, cue_rate: float = 1.0, signal: float = 0.0,
                          seed: int = 0, cue: ButtonCue = ButtonCue()) -> tuple[ImageSet, torch.Tensor]:
    """Procedural two-class images where a button is on ``cue_rate`` of class 1 and ``1 - cue_rate`` of
    class 0. ``cue_rate=1, signal=0``: the button alone decides the label. Returns the set (group ``cue``
    records the button) and the button boxes (N, 4), -1 where absent."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    labels = labels[torch.randperm(count, generator=generator)]
    scenes = _procedural_scenes(labels, size, signal, generator)
    present = cue_assignment(labels, cue_class=1, rate=cue_rate, seed=seed)
    images, boxes = paste_buttons(scenes, present, cue, seed=seed + 1)
    cue_values = [CUE_PRESENT if flag else CUE_ABSENT for flag in present.tolist()]
    imageset = ImageSet(images=images, labels=labels, class_names=["tall", "wide"],
                        groups={CUE_GROUP: cue_values, "label": [["tall", "wide"][int(v)] for v in labels]},
                        paths=[], source=f"shortcut(count={count}, size={size}, cue_rate={cue_rate}, signal={signal}, seed={seed})")
    return imageset, boxes
