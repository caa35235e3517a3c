"""Planted shortcuts: a cue from ``weakspot.cues`` pasted on the images of one class far more often than on
the other's.

It reproduces study 001's finding (a classifier that decides by shirt buttons) on demand, so that
explainers, attacks and the augmentation loop can be checked against a known answer: procedurally
(``make_shortcut_dataset``) or pasted on real photos as a benchmark folder (``build_shortcut_benchmark``,
the ``weakspot data shortcut`` command).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from weakspot.cues import CUE_ABSENT, CUE_FAMILIES, CUE_GROUP, COLOURS, ButtonCue, Cue, configure_cue, cue_assignment, \
    mask_boxes, parse_colour, parse_position, place_cue
from weakspot.cues import PatchCue, StickerCue, StrokeCue, TintCue  # noqa: F401  (the families, importable from here too)
from weakspot.data import CLEAN_TEST, MANIFEST_NAME, SPLIT_COLUMN, ImageSet, load_dataset, manifest_columns, split_indices
from weakspot.errors import WeakspotError
from weakspot.fileio import temp_prefix, unwritable


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
    a crash never leaves a half-written dataset; ``out`` must not exist. An OSError (a full disk...) is a
    WeakspotError naming ``out``."""
    target = Path(out)
    try:
        if target.exists():
            raise WeakspotError(f"{target}: already exists; choose a new --out (a dataset is written once)")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    except OSError as error:
        raise unwritable(target, error) from None
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
        (staging / MANIFEST_NAME).write_text(buffer.getvalue())
        os.replace(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise unwritable(target, error) from None
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
    cue_index = cue_class_index(imageset, cue_class, label)
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
    return split_counts(benchmark)


def cue_class_index(imageset: ImageSet, cue_class: str | None, label: str) -> int:
    """The index of the class that carries the cue (default: the second class); an unknown name is an error."""
    name = cue_class if cue_class is not None else imageset.class_names[1]
    if name not in imageset.class_names:
        raise WeakspotError(f"cue class '{name}' is not a class of '{label}' ({', '.join(imageset.class_names)})")
    return imageset.class_names.index(name)


def split_counts(benchmark: ImageSet) -> dict[str, dict[tuple[str, str], int]]:
    """The image count per split and (class, cue) of a benchmark with split and cue columns."""
    counts: dict[str, dict[tuple[str, str], int]] = {}
    for split, cue_value, value in zip(benchmark.groups[SPLIT_COLUMN], benchmark.groups[CUE_GROUP],
                                       benchmark.labels.tolist()):
        key = (benchmark.class_names[value], cue_value)
        counts.setdefault(split, {})[key] = counts.setdefault(split, {}).get(key, 0) + 1
    return counts


def print_counts(title: str, counts: dict[str, dict[tuple[str, str], int]], label: str) -> None:
    """The counts of ``split_counts`` as a table: what a ``weakspot data`` builder wrote."""
    from rich.table import Table

    from weakspot.terminal import console

    table = Table(title=title)
    for column in ("split", label, CUE_GROUP):
        table.add_column(column)
    table.add_column("images", justify="right")
    for split, groups in counts.items():
        for (class_name, cue_value), count in sorted(groups.items()):
            table.add_row(split, class_name, cue_value, str(count))
    console.print(table)


def configure_benchmark_command(parser) -> None:
    """``weakspot data shortcut``: arguments of ``build_shortcut_benchmark`` and ``configure_cue``."""
    parser.add_argument("--source", required=True, help="dataset to plant the cue in (folder with labels.csv, CSV or ImageFolder)")
    parser.add_argument("--label", required=True, help="label column (e.g. gender)")
    parser.add_argument("--cue", default="button", choices=list(CUE_FAMILIES), help="cue family (default button)")
    parser.add_argument("--cue-colour", default=None, help=f"R,G,B in [0, 1] or a name ({', '.join(COLOURS)})")
    parser.add_argument("--cue-size", type=float, default=None, help="fraction of the width (tint: the blend alpha)")
    parser.add_argument("--cue-jitter", type=float, default=None, help="per-image position jitter, fraction of the image")
    parser.add_argument("--cue-position", default=None, help="X,Y centre in fractions of the image (sticker default: drawn from --seed)")
    parser.add_argument("--rate", type=float, default=0.95, help="share of the cue class's train/val images with the cue")
    parser.add_argument("--cue-class", default=None, help="class that carries the cue (default: the second class)")
    add_builder_arguments(parser, _run_benchmark_command)


def add_builder_arguments(parser, handler) -> None:
    """The flags every ``weakspot data`` folder builder shares (out, size, seed, subset), and its handler."""
    from weakspot.arguments import image_size, positive_int, seed_int

    parser.add_argument("--out", required=True, help="benchmark folder to create (must not exist)")
    parser.add_argument("--size", type=image_size, default=96, help="image side in pixels (default 96)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--max-images", type=positive_int, default=None, help="use a seeded random subset of the source")
    parser.set_defaults(handler=handler, outputs=lambda args: [Path(args.out) / MANIFEST_NAME])


def _run_benchmark_command(args) -> int:
    cue = configure_cue(args.cue, colour=None if args.cue_colour is None else parse_colour(args.cue_colour),
                        size=args.cue_size, jitter=args.cue_jitter,
                        position=None if args.cue_position is None else parse_position(args.cue_position))
    counts = build_shortcut_benchmark(args.source, args.label, args.out, cue=cue, rate=args.rate,
                                      cue_class=args.cue_class, size=args.size, seed=args.seed,
                                      max_images=args.max_images)
    print_counts(f"{args.out}: planted {place_cue(cue, args.seed)} benchmark ({args.label} x {CUE_GROUP})", counts, args.label)
    return 0
