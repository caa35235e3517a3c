"""Attribute confounds: a benchmark folder where the label goes with an attribute of the images in the training and
validation splits and not in test, with no pixel planted. The attribute is a column of the source's manifest
(``race=white``, ``age<30``) or the images' own brightness (``brightness``: the brighter half of the images), so
the shortcut is spread over the whole image (a skin tone, a face's age, the lighting) and no occlusion removes it.

The folder has the layout of ``weakspot data shortcut``'s (``split`` and ``cue`` columns; the ``cue`` column holds
the attribute's name where it holds and ``none`` elsewhere), so ``finetune``, ``audit`` and the benchmark script
group by it as they do by a planted cue. Confounding is done by leaving images out: in each class of the train and
val splits, as many images as keep the class's share with the attribute at ``rate`` (the cue class) or
``1 - rate`` (the others); in test, at 0.5 in every class. There is no ``clean_test`` split (nothing to clean).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from weakspot.cues import CUE_ABSENT, CUE_GROUP
from weakspot.data import SPLIT_COLUMN, ImageSet, load_dataset, manifest_columns, split_indices
from weakspot.errors import WeakspotError
from weakspot.shortcut import add_builder_arguments, cue_class_index, print_counts, split_counts, write_imageset

BRIGHTNESS = "brightness"


@dataclass(frozen=True)
class Attribute:
    """``column`` (or ``brightness``) and the test that says which images have the attribute."""

    text: str
    column: str | None  # None: the images' brightness
    values: tuple[str, ...] = ()
    below: float | None = None

    def holds(self, imageset: ImageSet) -> np.ndarray:
        if self.column is None:
            brightness = imageset.images.mean(dim=(1, 2, 3)).numpy()
            return brightness > np.median(brightness)
        raw = imageset.groups[self.column]
        if self.below is None:
            return np.array([value in self.values for value in raw])
        try:
            return np.array([float(value) < self.below for value in raw])
        except ValueError:
            raise WeakspotError(f"--attribute {self.text}: column '{self.column}' is not numeric") from None


def parse_attribute(text: str) -> Attribute:
    """``brightness``, ``COLUMN=V1,V2`` (one of the values) or ``COLUMN<X`` (a number below X)."""
    if text == BRIGHTNESS:
        return Attribute(text, None)
    if "=" in text:
        column, _, values = text.partition("=")
        chosen = tuple(value.strip() for value in values.split(",") if value.strip())
        if column.strip() and chosen:
            return Attribute(text, column.strip(), values=chosen)
    if "<" in text:
        column, _, bound = text.partition("<")
        try:
            return Attribute(text, column.strip(), below=float(bound))
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"expected brightness, COLUMN=V1,V2 or COLUMN<X, got {text!r}")


def confounded_rows(labels: np.ndarray, holds: np.ndarray, shares: dict[int, float], rng: np.random.Generator) -> np.ndarray:
    """Row indices that keep, in each class, the most images whose share with the attribute is ``shares[class]``."""
    kept = []
    for value in np.unique(labels):
        with_it = rng.permutation(np.flatnonzero((labels == value) & holds))
        without = rng.permutation(np.flatnonzero((labels == value) & ~holds))
        share = shares[int(value)]
        total = min(len(with_it) / share if share > 0 else np.inf, len(without) / (1 - share) if share < 1 else np.inf)
        count_with = int(round(total * share))
        kept += [with_it[:count_with], without[: int(round(total)) - count_with]]
    return np.sort(np.concatenate(kept))


def build_confound_benchmark(source: str | Path, label: str, out: str | Path, attribute: Attribute,
                             rate: float = 0.95, cue_class: str | None = None, size: int = 96, seed: int = 0,
                             max_images: int | None = None) -> dict[str, dict[tuple[str, str], int]]:
    """Write an attribute-confound benchmark to ``out`` (the module docstring); returns the image count per split
    and (label, attribute)."""
    if not 0.0 < rate < 1.0:
        raise WeakspotError(f"--rate must be in (0, 1), got {rate}")
    if Path(out).exists():
        raise WeakspotError(f"{out}: already exists; choose a new --out (a benchmark is written once)")
    others = [column for column in manifest_columns(source) if column not in ("file", label, SPLIT_COLUMN, CUE_GROUP)]
    if attribute.column is not None and attribute.column not in others:
        raise WeakspotError(f"{source}: no column '{attribute.column}' for --attribute {attribute.text}")
    imageset = load_dataset(source, size=size, label=label, groups=others, max_images=max_images, seed=seed)
    if len(imageset.class_names) != 2:
        raise WeakspotError(f"{source}: an attribute confound needs two classes of '{label}', found {len(imageset.class_names)}")
    cue_index = cue_class_index(imageset, cue_class, label)
    holds = attribute.holds(imageset)
    labels = imageset.labels.numpy()
    strata = [f"{value}/{flag}" for value, flag in zip(labels, holds)]
    rng = np.random.default_rng(seed)
    rows, splits = [], []
    for split, indices in split_indices(labels, seed=seed, strata=strata).items():
        shares = {index: (0.5 if split == "test" else rate if index == cue_index else 1 - rate)
                  for index in range(len(imageset.class_names))}
        kept = indices[confounded_rows(labels[indices], holds[indices], shares, rng)]
        rows.append(kept)
        splits += [split] * len(kept)
    order = np.concatenate(rows)
    chosen = torch.as_tensor(order, dtype=torch.long)
    groups = {SPLIT_COLUMN: splits, CUE_GROUP: [attribute.text if holds[i] else CUE_ABSENT for i in order],
              **{column: [imageset.groups[column][i] for i in order] for column in others}}
    benchmark = ImageSet(images=imageset.images[chosen], labels=imageset.labels[chosen],
                         class_names=imageset.class_names, groups=groups, source=str(out))
    write_imageset(benchmark, out, label)
    return split_counts(benchmark)


def configure_confound_command(parser: argparse.ArgumentParser) -> None:
    """``weakspot data confound``: the arguments of ``build_confound_benchmark``."""
    parser.add_argument("--source", required=True, help="dataset with a manifest (folder with labels.csv, or a CSV)")
    parser.add_argument("--label", required=True, help="label column with two classes (e.g. gender)")
    parser.add_argument("--attribute", required=True, type=parse_attribute,
                        help="brightness, COLUMN=V1,V2 (e.g. race=white) or COLUMN<X (e.g. age<30)")
    parser.add_argument("--rate", type=float, default=0.95,
                        help="share of the cue class's train/val images with the attribute (the other class: 1 - rate)")
    parser.add_argument("--cue-class", default=None, help="class that goes with the attribute (default: the second class)")
    add_builder_arguments(parser, _run_confound_command)


def _run_confound_command(args: argparse.Namespace) -> int:
    counts = build_confound_benchmark(args.source, args.label, args.out, args.attribute, rate=args.rate,
                                      cue_class=args.cue_class, size=args.size, seed=args.seed,
                                      max_images=args.max_images)
    print_counts(f"{args.out}: {args.label} confounded with {args.attribute.text} ({args.label} x {CUE_GROUP})",
                 counts, args.label)
    return 0
