"""Planted shortcuts: a small cue (a dark collar "button", a sticker, a textured patch, a stroke or a faint
global tint) pasted on the images of one class far more often than on the other's.

It reproduces study 001's finding (a classifier that decides by shirt buttons) on demand, so that
explainers, attacks and the augmentation loop can be checked against a known answer: procedurally
(``make_shortcut_dataset``) or pasted on real photos as a benchmark folder (``build_shortcut_benchmark``).
Cue families share one contract (``Cue``) and one registry (``CUE_FAMILIES``), so a benchmark can swap the
cue without the methods under test knowing which one it is.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch
from PIL import Image

from weakspot.data import CLEAN_TEST, MANIFEST_NAME, SPLIT_COLUMN, ImageSet, load_dataset, manifest_columns, split_indices
from weakspot.errors import WeakspotError
from weakspot.fileio import atomic_write_text

CUE_GROUP = "cue"
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


def _jittered_centres(images: torch.Tensor, position: Position | None, jitter: float, half: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image centres (y, x) in pixels: ``position`` (drawn from ``generator`` if None) moved by a uniform
    +-``jitter`` of the image, so a model must find the cue rather than memorise a pixel; clamped so a
    shape of half-extent ``half`` pixels stays inside."""
    count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
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
                          seed: int = 0, cue: Cue = ButtonCue()) -> tuple[ImageSet, torch.Tensor]:
    """Procedural two-class images where ``cue`` (default a button) is on ``cue_rate`` of class 1 and
    ``1 - cue_rate`` of class 0. ``cue_rate=1, signal=0``: the cue alone decides the label. Returns the set
    (group ``cue`` holds the family name or "none") and the cue's bounding boxes (N, 4), -1 where absent."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    labels = labels[torch.randperm(count, generator=generator)]
    scenes = _procedural_scenes(labels, size, signal, generator)
    present = cue_assignment(labels, cue_class=1, rate=cue_rate, seed=seed)
    images, masks = cue.paste(scenes, present, torch.Generator().manual_seed(seed + 1))
    cue_values = [cue.name if flag else CUE_ABSENT for flag in present.tolist()]
    imageset = ImageSet(images=images, labels=labels, class_names=["tall", "wide"],
                        groups={CUE_GROUP: cue_values, "label": [["tall", "wide"][int(v)] for v in labels]},
                        paths=[], source=f"shortcut(count={count}, size={size}, cue_rate={cue_rate}, signal={signal}, seed={seed})")
    return imageset, mask_boxes(masks)


def _write_png(path: Path, image: torch.Tensor) -> None:
    array = (image.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path, format="PNG")


def write_imageset(imageset: ImageSet, out: str | Path, label: str) -> Path:
    """Write ``imageset`` as a loadable dataset folder: lossless PNGs under ``images/`` and ``labels.csv``
    (file,<label>,<one column per group>). Built in a temp folder beside ``out`` and renamed into place, so
    a crash never leaves a half-written dataset; ``out`` must not exist."""
    target = Path(out)
    if target.exists():
        raise WeakspotError(f"{target}: already exists; choose a new --out (a dataset is written once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        (staging / "images").mkdir()
        names = [f"images/{index:05d}.png" for index in range(len(imageset))]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda job: _write_png(staging / job[0], job[1]), zip(names, imageset.images)))
        columns = [column for column in imageset.groups if column not in ("file", label)]  # no repeated header
        rows = [[name, imageset.class_names[int(value)], *(imageset.groups[c][index] for c in columns)]
                for index, (name, value) in enumerate(zip(names, imageset.labels))]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([["file", label, *columns], *rows])
        atomic_write_text(staging / MANIFEST_NAME, buffer.getvalue())
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def build_shortcut_benchmark(source: str | Path, label: str, out: str | Path, cue: str | Cue = "button",
                             rate: float = 0.95, cue_class: str | None = None, size: int = 96, seed: int = 0,
                             max_images: int | None = None,
                             fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, dict[tuple[str, str], int]]:
    """Write a planted-shortcut benchmark to ``out``: a deterministic stratified train/val/test split of
    ``source`` where ``cue`` (a ``CUE_FAMILIES`` name or a cue instance) is on ``rate`` of ``cue_class``'s
    train/val images (default: the second class, e.g. "male") and ``1 - rate`` of the others', on 50% of
    every class in test (cue independent of the label), plus an un-planted copy of the test images (split
    ``clean_test``, cue ``none``). A cue without a position gets one drawn from ``seed``.

    ``out`` is written by ``write_imageset`` (columns file,<label>,split,cue,<other source columns>).
    Returns the image count per split and (label, cue).
    """
    planted_cue = place_cue(configure_cue(cue) if isinstance(cue, str) else cue, seed)
    if not 0.0 <= rate <= 1.0:
        raise WeakspotError(f"cue rate must be in [0, 1], got {rate}")
    if Path(out).exists():
        raise WeakspotError(f"{out}: already exists; choose a new --out (a benchmark is written once)")
    reserved = {"file", label, SPLIT_COLUMN, CUE_GROUP}
    others = [column for column in manifest_columns(source) if column not in reserved]
    imageset = load_dataset(source, size=size, label=label, groups=others, max_images=max_images, seed=seed)
    if len(imageset.class_names) < 2:
        raise WeakspotError(f"{source}: the shortcut benchmark needs at least two classes of '{label}'")
    cue_name = cue_class if cue_class is not None else imageset.class_names[1]
    if cue_name not in imageset.class_names:
        raise WeakspotError(f"cue class '{cue_name}' is not a class of '{label}' ({', '.join(imageset.class_names)})")
    cue_index = imageset.class_names.index(cue_name)
    parts: list[tuple[str, torch.Tensor, torch.Tensor, np.ndarray]] = []
    for offset, (split, indices) in enumerate(split_indices(imageset.labels, seed=seed, fractions=fractions).items()):
        labels = imageset.labels[torch.as_tensor(indices, dtype=torch.long)]
        present = cue_assignment(labels, cue_index, rate if split != "test" else 0.5, seed + offset)
        planted, _ = planted_cue.paste(imageset.images[torch.as_tensor(indices, dtype=torch.long)], present,
                                       torch.Generator().manual_seed(seed + offset))
        parts.append((split, planted, present, indices))
        if split == "test":
            parts.append((CLEAN_TEST, imageset.images[torch.as_tensor(indices, dtype=torch.long)],
                          torch.zeros_like(present), indices))
    order = np.concatenate([indices for _, _, _, indices in parts])
    groups = {SPLIT_COLUMN: [split for split, _, _, indices in parts for _ in indices],
              CUE_GROUP: [planted_cue.name if flag else CUE_ABSENT for _, _, present, _ in parts for flag in present.tolist()],
              **{column: [imageset.groups[column][i] for i in order] for column in others}}
    benchmark = ImageSet(images=torch.cat([images for _, images, _, _ in parts]),
                         labels=imageset.labels[torch.as_tensor(order, dtype=torch.long)],
                         class_names=imageset.class_names, groups=groups, source=str(out))
    write_imageset(benchmark, out, label)
    counts: dict[str, dict[tuple[str, str], int]] = {}
    for split, cue_value, value in zip(groups[SPLIT_COLUMN], groups[CUE_GROUP], benchmark.labels.tolist()):
        key = (imageset.class_names[value], cue_value)
        counts.setdefault(split, {})[key] = counts.setdefault(split, {}).get(key, 0) + 1
    return counts


def configure_benchmark_command(parser) -> None:
    """``weakspot data shortcut``: arguments of ``build_shortcut_benchmark`` and ``configure_cue``."""
    from weakspot.arguments import image_size, positive_int, seed_int

    parser.add_argument("--source", required=True, help="dataset to plant the cue in (folder with labels.csv, CSV or ImageFolder)")
    parser.add_argument("--label", required=True, help="label column (e.g. gender)")
    parser.add_argument("--cue", default="button", choices=list(CUE_FAMILIES), help="cue family (default button)")
    parser.add_argument("--cue-colour", default=None, help=f"R,G,B in [0, 1] or a name ({', '.join(COLOURS)})")
    parser.add_argument("--cue-size", type=float, default=None, help="fraction of the width (tint: the blend alpha)")
    parser.add_argument("--cue-jitter", type=float, default=None, help="per-image position jitter, fraction of the image")
    parser.add_argument("--cue-position", default=None, help="X,Y centre in fractions of the image (sticker default: drawn from --seed)")
    parser.add_argument("--rate", type=float, default=0.95, help="share of the cue class's train/val images with the cue")
    parser.add_argument("--cue-class", default=None, help="class that carries the cue (default: the second class)")
    parser.add_argument("--out", required=True, help="benchmark folder to create (must not exist)")
    parser.add_argument("--size", type=image_size, default=96, help="image side in pixels (default 96)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--max-images", type=positive_int, default=None, help="use a seeded random subset of the source")
    parser.set_defaults(handler=_run_benchmark_command)


def _run_benchmark_command(args) -> int:
    from rich.table import Table

    from weakspot.terminal import console

    cue = configure_cue(args.cue, colour=None if args.cue_colour is None else parse_colour(args.cue_colour),
                        size=args.cue_size, jitter=args.cue_jitter,
                        position=None if args.cue_position is None else parse_position(args.cue_position))
    counts = build_shortcut_benchmark(args.source, args.label, args.out, cue=cue, rate=args.rate,
                                      cue_class=args.cue_class, size=args.size, seed=args.seed,
                                      max_images=args.max_images)
    table = Table(title=f"{args.out}: planted {place_cue(cue, args.seed)} benchmark ({args.label} x {CUE_GROUP})")
    for column in ("split", args.label, CUE_GROUP):
        table.add_column(column)
    table.add_column("images", justify="right")
    for split, groups in counts.items():
        for (class_name, cue_value), count in sorted(groups.items()):
            table.add_row(split, class_name, cue_value, str(count))
    console.print(table)
    return 0
