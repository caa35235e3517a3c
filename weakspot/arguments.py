"""Argument helpers every subcommand shares, so that each spells its data, model and device flags alike.

Every ``*/cli.py`` module (and ``weakspot.shortcut``'s ``data shortcut`` command) imports from here; this
module imports none of them, so no command module needs the dispatcher in ``weakspot.cli``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from weakspot.errors import WeakspotError
from weakspot.reading import first_repeated, read_text
from weakspot.terminal import error_console

if TYPE_CHECKING:
    import torch

    from weakspot.data import ImageSet
    from weakspot.classifier import Classifier

MAX_SEED = 2**32 - 1
DEFAULT_SIZE = 96  # image side when neither --size nor a checkpoint's input size says otherwise
SPLITS = ("train", "val", "test", "clean_test")  # clean_test: only in manifests with a split column


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


def add_switch(parser: argparse.ArgumentParser, flag: str, default: bool, help: str) -> None:
    """A ``--flag`` / ``--no-flag`` option whose help ends with its default, so the text cannot drift from it."""
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                        help=f"{help} (default {'on' if default else 'off'})")


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def class_names_arg(text: str) -> list[str]:
    """``--classes``: comma-separated names in the model's output order, or a file with one name per line."""
    path = Path(text)
    if path.exists():
        try:
            names = [line.strip() for line in read_text(path, "class list").splitlines() if line.strip()]
        except WeakspotError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    else:
        names = comma_list(text)
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"needs at least two class names (a,b or a file, one per line), got {text!r}")
    repeated = first_repeated(names)
    if repeated is not None:
        raise argparse.ArgumentTypeError(f"class '{repeated}' appears twice")
    return names


def _channel_values(text: str, positive: bool) -> tuple[float, float, float]:
    try:
        values = tuple(float(item) for item in comma_list(text))
    except ValueError:
        values = ()
    if len(values) != 3 or any(not math.isfinite(value) or (positive and value <= 0) for value in values):
        kind = "positive numbers" if positive else "numbers"
        raise argparse.ArgumentTypeError(f"needs three {kind} (R,G,B), got {text!r}")
    return values  # type: ignore[return-value]


def channel_means(text: str) -> tuple[float, float, float]:
    return _channel_values(text, positive=False)


def channel_stds(text: str) -> tuple[float, float, float]:
    return _channel_values(text, positive=True)


def add_model_arguments(parser: argparse.ArgumentParser, plain_required: bool = False) -> None:
    """``--checkpoint``: a weakspot checkpoint, or a state_dict trained elsewhere described by the other flags
    (``plain_required``: they must be given, as ``weakspot import`` needs them)."""
    parser.add_argument("--checkpoint", required=True,
                        help="a weakspot checkpoint, or a plain state_dict (.pth/.pt/.safetensors) with --model and --classes")
    parser.add_argument("--model", required=plain_required, default=None,
                        help="architecture of a plain state_dict: a timm name, or torchvision:NAME (e.g. torchvision:resnet18)")
    parser.add_argument("--classes", type=class_names_arg, required=plain_required, default=None,
                        help="class names in output order: a,b or a file with one name per line")
    parser.add_argument("--input-size", type=image_size, default=None,
                        help="side the network sees, images resized to it (default: as loaded)")
    parser.add_argument("--mean", type=channel_means, default=None, help="normalization mean R,G,B (default ImageNet's)")
    parser.add_argument("--std", type=channel_stds, default=None, help="normalization std R,G,B (default ImageNet's)")


def classifier_from_args(args: argparse.Namespace, device: str | torch.device | None = None) -> Classifier:
    """The model of ``add_model_arguments``' flags on ``device`` (default ``--device``). A weakspot checkpoint
    given with flags that disagree with it is refused (see ``weakspot.checkpoints.load_classifier``)."""
    from weakspot.checkpoints import load_classifier

    classifier = load_classifier(args.checkpoint, arch=args.model, class_names=args.classes,
                                 input_size=args.input_size, mean=args.mean, std=args.std,
                                 device=args.device if device is None else device,
                                 micro_batch=micro_batch_from_args(args))
    settle_size(args, classifier.preprocessing.input_size)
    return classifier


def settle_size(args: argparse.Namespace, input_size: int | None) -> None:
    """``args.size`` from the model's input size when ``--size`` was not given (else ``DEFAULT_SIZE``): images
    loaded at another side than the network's are resized, losing detail or adding none. Both given and
    different is allowed, with a one-line warning."""
    if not hasattr(args, "size"):  # a command that loads no images
        return
    if args.size is None:
        args.size = input_size or DEFAULT_SIZE
    elif input_size is not None and args.size != input_size:
        error_console.print(f"weakspot: warning: --size {args.size} differs from the model's input size "
                            f"{input_size}; images are loaded at {args.size} px and resized to {input_size}",
                            highlight=False, markup=False, soft_wrap=True)


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True, split: bool = False) -> None:
    """The data flags; with ``split``, also ``--split`` for commands that evaluate a trained model."""
    parser.add_argument("--data", required=required, help="ImageFolder tree, a folder with labels.csv, or a CSV manifest")
    parser.add_argument("--label", default=None, help="label column of a CSV manifest (e.g. gender)")
    parser.add_argument("--groups", type=comma_list, default=[], help="comma-separated group columns (e.g. gender,race)")
    parser.add_argument("--size", type=image_size, default=None,
                        help=f"image side in pixels (default: the model's input size, else {DEFAULT_SIZE})")
    parser.add_argument("--max-images", type=positive_int, default=None, help="load a seeded random subset")
    if split:
        parser.add_argument("--split", choices=SPLITS, default=None,
                            help="only this split, cut as 'weakspot train' cuts it (give the same --seed and "
                                 "--max-images): the manifest's split column, else a seeded 70/15/15")


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


def dataset_from_args(args: argparse.Namespace) -> ImageSet:
    """Load ``--data`` and report skipped files on stderr (the run goes on without them); with ``--split``,
    only that split (``split_sets``)."""
    from weakspot.data import SPLIT_COLUMN, load_dataset, manifest_columns

    split = getattr(args, "split", None)
    groups = args.groups
    if split and SPLIT_COLUMN in manifest_columns(args.data) and SPLIT_COLUMN not in groups:
        groups = [*groups, SPLIT_COLUMN]
    seed = getattr(args, "seed", 0)
    imageset = load_dataset(args.data, size=args.size or DEFAULT_SIZE, label=args.label, groups=groups,
                            max_images=args.max_images, seed=seed)
    if imageset.skipped:
        first_path, first_reason = imageset.skipped[0]
        error_console.print(f"weakspot: skipped {len(imageset.skipped)} unreadable image(s); first: {first_reason}",
                            highlight=False, markup=False, soft_wrap=True)
    if not split:
        return imageset
    part = split_sets(imageset, seed).get(split)
    if part is None or not len(part):
        raise WeakspotError(f"{imageset.source}: no '{split}' images (--split)")
    return part


def split_sets(imageset: ImageSet, seed: int) -> dict[str, ImageSet]:
    """The splits ``weakspot train`` trains and tests on: the manifest's ``split`` column when it was loaded,
    else a stratified 70/15/15 of the labels drawn with ``seed``. Empty splits are left out."""
    from weakspot.data import SPLIT_COLUMN, split_indices

    if SPLIT_COLUMN in imageset.groups:
        values = imageset.groups[SPLIT_COLUMN]
        splits = {name: imageset.subset([i for i, value in enumerate(values) if value == name]) for name in SPLITS}
    else:
        splits = {name: imageset.subset(indices) for name, indices in split_indices(imageset.labels, seed=seed).items()}
    return {name: part for name, part in splits.items() if len(part)}
