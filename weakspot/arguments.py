"""Argument helpers every subcommand shares, so that each spells its data, model and device flags alike.

Every ``*/cli.py`` module (and ``weakspot.shortcut``'s ``data shortcut`` command) imports from here; this
module imports none of them, so no command module needs the dispatcher in ``weakspot.cli``.
"""

from __future__ import annotations

import argparse

from weakspot.errors import WeakspotError
from weakspot.terminal import error_console

MAX_SEED = 2**32 - 1


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed_int(text: str) -> int:
    """A seed every generator we use accepts (numpy refuses negatives, lime's RandomState needs < 2**32)."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_SEED}], got {text}")
    return value


def image_size(text: str) -> int:
    """An image side that is positive and small enough to decode without exhausting memory."""
    from weakspot.data import check_image_size

    try:
        return check_image_size(int(text))
    except WeakspotError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--data", required=required, help="ImageFolder tree, a folder with labels.csv, or a CSV manifest")
    parser.add_argument("--label", default=None, help="label column of a CSV manifest (e.g. gender)")
    parser.add_argument("--groups", type=comma_list, default=[], help="comma-separated group columns (e.g. gender,race)")
    parser.add_argument("--size", type=image_size, default=96, help="image side in pixels (default 96)")
    parser.add_argument("--max-images", type=positive_int, default=None, help="load a seeded random subset")


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--micro-batch", default=None, help="images per model call: a number or 'auto'")


def micro_batch_from_args(args: argparse.Namespace) -> int | str | None:
    value = getattr(args, "micro_batch", None)
    if value is None or value == "auto":
        return value
    try:
        return positive_int(value)
    except (ValueError, argparse.ArgumentTypeError):
        raise WeakspotError(f"--micro-batch must be a positive integer or 'auto', got {value!r}") from None


def dataset_from_args(args: argparse.Namespace):
    """Load ``--data`` and report skipped files on stderr (the run goes on without them)."""
    from weakspot.data import load_dataset

    imageset = load_dataset(args.data, size=args.size, label=args.label, groups=args.groups,
                            max_images=args.max_images, seed=getattr(args, "seed", 0))
    if imageset.skipped:
        first_path, first_reason = imageset.skipped[0]
        error_console.print(f"weakspot: skipped {len(imageset.skipped)} unreadable image(s); first: {first_reason}",
                            highlight=False, markup=False, soft_wrap=True)
    return imageset
