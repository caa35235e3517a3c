"""Planted shortcuts: a small dark "button" patch pasted near the collar, correlated with the label.

It reproduces study 001's finding (a classifier that decides by shirt buttons) on demand, so that
explainers, attacks and the augmentation loop can be checked against a known answer: procedurally
(``make_shortcut_dataset``) or pasted on real photos as a benchmark folder (``build_shortcut_benchmark``).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from weakspot.data import MANIFEST_NAME, ImageSet, load_dataset, split_indices
from weakspot.errors import WeakspotError
from weakspot.fileio import atomic_write_text

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


SPLIT_COLUMN = "split"
COLLAR_CUE = ButtonCue(y_frac=0.92, jitter=0.04)  # aligned face crops end at the chin/neck: the collar is the bottom edge
CLEAN_TEST = "clean_test"
BENCHMARK_CUES = ("button",)


def manifest_columns(path: str | Path) -> list[str]:
    """The header of a CSV manifest (a ``.csv`` file or a folder with ``labels.csv``); [] for an ImageFolder."""
    source = Path(path)
    manifest = source / MANIFEST_NAME if source.is_dir() else source
    if manifest.suffix.lower() != ".csv" or not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


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


def build_shortcut_benchmark(source: str | Path, label: str, out: str | Path, cue: str = "button",
                             rate: float = 0.95, cue_class: str | None = None, size: int = 96, seed: int = 0,
                             max_images: int | None = None,
                             fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, dict[tuple[str, str], int]]:
    """Write a planted-shortcut benchmark to ``out``: a deterministic stratified train/val/test split of
    ``source`` where the button is on ``rate`` of ``cue_class``'s train/val images (default: the second
    class, e.g. "male") and ``1 - rate`` of the others', on 50% of every class in test (cue independent of
    the label), plus an un-planted copy of the test images (split ``clean_test``, cue ``none``).

    ``out`` is written by ``write_imageset`` (columns file,<label>,split,cue,<other source columns>).
    Returns the image count per split and (label, cue).
    """
    if cue not in BENCHMARK_CUES:
        raise WeakspotError(f"unknown cue '{cue}' (available: {', '.join(BENCHMARK_CUES)})")
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
        planted, _ = paste_buttons(imageset.images[torch.as_tensor(indices, dtype=torch.long)], present, COLLAR_CUE,
                                   seed=seed + offset)
        parts.append((split, planted, present, indices))
        if split == "test":
            parts.append((CLEAN_TEST, imageset.images[torch.as_tensor(indices, dtype=torch.long)],
                          torch.zeros_like(present), indices))
    order = np.concatenate([indices for _, _, _, indices in parts])
    groups = {SPLIT_COLUMN: [split for split, _, _, indices in parts for _ in indices],
              CUE_GROUP: [CUE_PRESENT if flag else CUE_ABSENT for _, _, present, _ in parts for flag in present.tolist()],
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
    """``weakspot data shortcut``: arguments of ``build_shortcut_benchmark``."""
    from weakspot.arguments import image_size, positive_int, seed_int

    parser.add_argument("--source", required=True, help="dataset to plant the cue in (folder with labels.csv, CSV or ImageFolder)")
    parser.add_argument("--label", required=True, help="label column (e.g. gender)")
    parser.add_argument("--cue", default="button", choices=BENCHMARK_CUES)
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

    counts = build_shortcut_benchmark(args.source, args.label, args.out, cue=args.cue, rate=args.rate,
                                      cue_class=args.cue_class, size=args.size, seed=args.seed,
                                      max_images=args.max_images)
    table = Table(title=f"{args.out}: planted '{args.cue}' benchmark ({args.label} x {CUE_GROUP})")
    for column in ("split", args.label, CUE_GROUP):
        table.add_column(column)
    table.add_column("images", justify="right")
    for split, groups in counts.items():
        for (class_name, cue_value), count in sorted(groups.items()):
            table.add_row(split, class_name, cue_value, str(count))
    console.print(table)
    return 0
