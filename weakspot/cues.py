"""Cue families: the small marks a planted-shortcut benchmark pastes on one class far more often than on the
other's (a dark collar "button", a sticker, a textured patch, a stroke, a stamp in one of four corners or a faint global
tint).

Every family follows one contract (``Cue``) and sits in one registry (``CUE_FAMILIES``), so a benchmark can
swap the cue without the methods under test knowing which one it is; ``cue_assignment`` decides which
images carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar, Protocol

import numpy as np
import torch

from weakspot.errors import WeakspotError

CUE_GROUP = "cue"  # the group column that names each image's cue family, CUE_ABSENT where it has none
CUE_ABSENT = "none"
Colour = tuple[float, float, float]
Position = tuple[float, float]
COLOURS: dict[str, Colour] = {
    "black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0), "gray": (0.5, 0.5, 0.5), "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.2), "blue": (0.1, 0.2, 0.9), "yellow": (1.0, 0.9, 0.0), "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 0.9, 1.0), "orange": (1.0, 0.5, 0.0),
}
POSITION_MARGIN = 0.15  # a drawn position keeps this fraction of the image from every border


class Cue(Protocol):
    """What every cue family provides: a registry ``name`` (written in the ``cue`` column where present) and
    ``paste(images (N,3,H,W) in [0,1], present (N,) bool, generator) -> (images, masks (N,H,W) bool)``;
    the masks mark exactly the changed pixels (all False where absent). Every image draws its jitter from
    ``generator`` whether present or not, so a seed fixes the layout independently of the assignment."""

    name: ClassVar[str]

    def paste(self, images: torch.Tensor, present: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


def draw_position(generator: torch.Generator) -> Position:
    """A centre (x, y) in fractions of the image, uniform away from the extreme borders."""
    x, y = (torch.rand(2, generator=generator) * (1 - 2 * POSITION_MARGIN) + POSITION_MARGIN).tolist()
    return round(x, 3), round(y, 3)


def _jittered_centres(images: torch.Tensor, position: Position | torch.Tensor | None, jitter: float, half: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image centres (y, x) in pixels: ``position`` (one (x, y) for all, a (N, 2) tensor of one per image, or
    drawn from ``generator`` if None) moved by a uniform +-``jitter`` of the image, so a model must find the cue
    rather than memorise a pixel; clamped so a shape of half-extent ``half`` pixels stays inside."""
    count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    if isinstance(position, torch.Tensor):
        x_frac, y_frac = position[:, 0], position[:, 1]
    else:
        x_frac, y_frac = position if position is not None else draw_position(generator)
    shift = (torch.rand(count, 2, generator=generator) * 2 - 1) * jitter
    centre_y = ((y_frac + shift[:, 0]) * height).clamp(half, height - half)
    centre_x = ((x_frac + shift[:, 1]) * width).clamp(half, width - half)
    return centre_y, centre_x


def _offsets(images: torch.Tensor, centre_y: torch.Tensor, centre_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre offsets (N, H, 1) and (N, 1, W) from each image's centre."""
    ys = torch.arange(images.shape[-2], dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(images.shape[-1], dtype=torch.float32)[None, None, :] + 0.5
    return ys - centre_y[:, None, None], xs - centre_x[:, None, None]


def _apply(images: torch.Tensor, present: torch.Tensor, masks: torch.Tensor,
           fill: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fill`` (broadcastable to the images) where the mask and ``present`` hold; the images elsewhere."""
    masks = masks & present.bool()[:, None, None]
    return torch.where(masks[:, None], fill.to(images.dtype), images), masks


def _colour(colour: Colour) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1)


@dataclass(frozen=True)
class ButtonCue:
    """A round patch of ``colour``, diameter ``size_frac`` of the width, centred near ``position`` (x, y
    fractions) with ``jitter``: study 001's shirt button."""

    name: ClassVar[str] = "button"
    size_frac: float = 0.1
    colour: Colour = (0.05, 0.05, 0.05)
    position: Position | None = (0.5, 0.84)
    jitter: float = 0.06

    def paste(self, images: torch.Tensor, present: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        radius = max(1.0, self.size_frac * images.shape[-1] / 2)
        dy, dx = _offsets(images, *_jittered_centres(images, self.position, self.jitter, radius, generator))
        return _apply(images, present, dy ** 2 + dx ** 2 <= radius ** 2, _colour(self.colour))


@dataclass(frozen=True)
class StickerCue:
    """A filled square of a saturated ``colour``, side ``size_frac`` of the width; its ``position`` is
    drawn from the generator when None (the benchmark draws it once from its seed), so the cue is not
    always where a button would be."""

    name: ClassVar[str] = "sticker"
    size_frac: float = 0.1
    colour: Colour = COLOURS["magenta"]
    position: Position | None = None
    jitter: float = 0.05

    def paste(self, images: torch.Tensor, present: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        half = max(0.5, self.size_frac * images.shape[-1] / 2)
        dy, dx = _offsets(images, *_jittered_centres(images, self.position, self.jitter, half, generator))
        return _apply(images, present, (dy.abs() < half) & (dx.abs() < half), _colour(self.colour))


@dataclass(frozen=True)
class PatchCue:
    """A square checkerboard of ``cells`` x ``cells`` squares in ``colour`` and ``second_colour``, side
    ``size_frac`` of the width: a texture (a logo or watermark), not a flat colour."""

    name: ClassVar[str] = "patch"
    size_frac: float = 0.12
    colour: Colour = COLOURS["black"]
    second_colour: Colour = COLOURS["white"]
    cells: int = 4
    position: Position | None = (0.8, 0.2)
    jitter: float = 0.04

    def paste(self, images: torch.Tensor, present: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        half = max(1.0, self.size_frac * images.shape[-1] / 2)
        dy, dx = _offsets(images, *_jittered_centres(images, self.position, self.jitter, half, generator))
        cell = 2 * half / self.cells
        odd = (torch.div(dy + half, cell, rounding_mode="floor") + torch.div(dx + half, cell, rounding_mode="floor")) % 2 == 1
        fill = torch.where(odd[:, None], _colour(self.second_colour), _colour(self.colour))
        return _apply(images, present, (dy.abs() < half) & (dx.abs() < half), fill)


@dataclass(frozen=True)
class StrokeCue:
    """A straight segment (a scratch or a lanyard) of length ``size_frac`` and thickness ``width_frac`` of the
    width, at ``angle`` degrees (anticlockwise from horizontal) +-``angle_jitter``, centred near ``position``."""

    name: ClassVar[str] = "stroke"
    size_frac: float = 0.4
    width_frac: float = 0.03
    angle: float = 60.0
    angle_jitter: float = 10.0
    colour: Colour = COLOURS["red"]
    position: Position | None = (0.3, 0.75)
    jitter: float = 0.05

    def paste(self, images: torch.Tensor, present: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        width = images.shape[-1]
        half_length, half_width = self.size_frac * width / 2, max(0.5, self.width_frac * width / 2)
        dy, dx = _offsets(images, *_jittered_centres(images, self.position, self.jitter, half_length + half_width, generator))
        angles = torch.deg2rad(self.angle + (torch.rand(images.shape[0], generator=generator) * 2 - 1) * self.angle_jitter)
        along_x, along_y = angles.cos()[:, None, None], -angles.sin()[:, None, None]  # image y points down
        along = (dx * along_x + dy * along_y).clamp(-half_length, half_length)
        distance = ((dx - along * along_x) ** 2 + (dy - along * along_y) ** 2).sqrt()
        return _apply(images, present, distance <= half_width, _colour(self.colour))


@dataclass(frozen=True)
class CornerCue:
    """A square stamp of ``colour``, side ``size_frac`` of the width, in one of ``positions`` drawn for each image:
    a mark that sits in one of several places (a watermark, a scanner's stamp, a ruler), not in one."""

    name: ClassVar[str] = "corners"
    size_frac: float = 0.1
    colour: Colour = COLOURS["yellow"]
    positions: tuple[Position, ...] = ((0.12, 0.12), (0.88, 0.12), (0.12, 0.88), (0.88, 0.88))
    jitter: float = 0.02

    def paste(self, images: torch.Tensor, present: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        half = max(0.5, self.size_frac * images.shape[-1] / 2)
        places = torch.tensor(self.positions, dtype=torch.float32)
        chosen = places[torch.randint(len(places), (images.shape[0],), generator=generator)]
        dy, dx = _offsets(images, *_jittered_centres(images, chosen, self.jitter, half, generator))
        return _apply(images, present, (dy.abs() < half) & (dx.abs() < half), _colour(self.colour))


@dataclass(frozen=True)
class TintCue:
    """The whole image blended toward ``colour`` by ``size_frac`` (the alpha): a global cue that no
    occlusion removes. Every pixel moves by at most the alpha; the mask is the whole image."""

    name: ClassVar[str] = "tint"
    size_frac: float = 0.1
    colour: Colour = COLOURS["magenta"]

    def paste(self, images: torch.Tensor, present: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        tinted = images + self.size_frac * (_colour(self.colour) - images)
        return _apply(images, present, torch.ones(images.shape[0], *images.shape[-2:], dtype=torch.bool), tinted)


# The benchmark's defaults per family, for aligned face crops (the collar is the bottom edge).
CUE_FAMILIES: dict[str, Cue] = {
    "button": ButtonCue(position=(0.5, 0.92), jitter=0.04),
    "sticker": StickerCue(),
    "patch": PatchCue(),
    "stroke": StrokeCue(),
    "corners": CornerCue(),
    "tint": TintCue(),
}


def parse_colour(text: str) -> Colour:
    """A colour name from ``COLOURS`` or ``R,G,B`` floats in [0, 1]."""
    if text.strip().lower() in COLOURS:
        return COLOURS[text.strip().lower()]
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= value <= 1.0 for value in values):
        raise WeakspotError(f"--cue-colour must be R,G,B in [0, 1] or one of {', '.join(COLOURS)}, got {text!r}")
    return values  # type: ignore[return-value]


def parse_position(text: str) -> Position:
    """``X,Y`` fractions of the image in [0, 1]."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2 or not all(0.0 <= value <= 1.0 for value in values):
        raise WeakspotError(f"--cue-position must be X,Y fractions in [0, 1], got {text!r}")
    return values  # type: ignore[return-value]


def configure_cue(family: str, colour: Colour | None = None, size: float | None = None,
                  jitter: float | None = None, position: Position | None = None) -> Cue:
    """The registered ``family`` with the given options replaced (None keeps the family's default); an
    option the family does not have, or an out-of-range value, is a ``WeakspotError``."""
    if family not in CUE_FAMILIES:
        raise WeakspotError(f"unknown cue '{family}' (available: {', '.join(CUE_FAMILIES)})")
    if size is not None and not 0.0 < size <= 1.0:
        raise WeakspotError(f"--cue-size must be in (0, 1], got {size}")
    if jitter is not None and not 0.0 <= jitter <= 0.5:
        raise WeakspotError(f"--cue-jitter must be in [0, 0.5], got {jitter}")
    options = {"colour": colour, "size_frac": size, "jitter": jitter, "position": position}
    cue = CUE_FAMILIES[family]
    names = {field.name for field in fields(cue)}  # type: ignore[arg-type]
    unknown = [key for key, value in options.items() if value is not None and key not in names]
    if unknown:
        flags = ", ".join("--cue-" + key.removesuffix("_frac") for key in unknown)
        raise WeakspotError(f"cue '{family}' has no {flags} option")
    return replace(cue, **{key: value for key, value in options.items() if value is not None})  # type: ignore[type-var]


def place_cue(cue: Cue, seed: int) -> Cue:
    """``cue`` with a fixed ``position`` drawn from ``seed`` if it has none, so that every split of one
    benchmark carries the cue at the same place while another seed moves it."""
    if getattr(cue, "position", False) is None:
        return replace(cue, position=draw_position(torch.Generator().manual_seed(seed)))  # type: ignore[type-var]
    return cue


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Bounding boxes (N, 4) as y0, x0, y1, x1 (exclusive) of the masks; -1 where a mask is empty."""
    rows, columns = masks.any(dim=2), masks.any(dim=1)
    height, width = masks.shape[-2:]
    first_row, first_column = rows.float().argmax(dim=1), columns.float().argmax(dim=1)
    last_row = height - rows.flip(1).float().argmax(dim=1)
    last_column = width - columns.flip(1).float().argmax(dim=1)
    boxes = torch.stack([first_row, first_column, last_row, last_column], dim=1)
    boxes[~rows.any(dim=1)] = -1
    return boxes


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
