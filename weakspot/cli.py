"""The ``weakspot`` command: one dispatcher, each subcommand configured by its own layer.

Every user-caused problem is a ``WeakspotError``: one line on stderr, exit code 2 (``--debug`` shows the
traceback). Shared argument groups (data, model, device) live here so every subcommand spells them alike.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from rich.table import Table

from weakspot import __version__
from weakspot.errors import WeakspotError
from weakspot.terminal import console, error_console

Handler = Callable[[argparse.Namespace], int]
MAX_SEED = 2**32 - 1


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line style (still exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        error_console.print(f"weakspot {self.prog.split()[-1]}: error: {message}", highlight=False, markup=False,
                            soft_wrap=True)
        raise SystemExit(2)


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


def _run_data_inspect(args: argparse.Namespace) -> int:
    imageset = dataset_from_args(args)
    table = Table(title=f"{imageset.source}: {len(imageset)} images, {imageset.images.shape[-1]} px")
    table.add_column("attribute")
    table.add_column("value")
    table.add_column("images", justify="right")
    for index, name in enumerate(imageset.class_names):
        table.add_row("class", name, str(int((imageset.labels == index).sum())))
    for attribute, values in imageset.groups.items():
        for value in sorted(set(values)):
            table.add_row(attribute, value, str(values.count(value)))
    table.add_row("skipped", "unreadable", str(len(imageset.skipped)))
    console.print(table)
    return 0


def _configure_data(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    inspect = actions.add_parser("inspect", help="load a dataset and count classes, groups and skipped files")
    add_data_arguments(inspect)
    inspect.add_argument("--seed", type=seed_int, default=0)
    inspect.set_defaults(handler=_run_data_inspect)
    shortcut = actions.add_parser("shortcut", help="build a planted-shortcut benchmark folder from a dataset")
    importlib.import_module("weakspot.shortcut").configure_benchmark_command(shortcut)


def _not_available(command: str, issue: int) -> Callable[[argparse.ArgumentParser], None]:
    """A subcommand that says plainly it is not built yet (exit 2) instead of pretending to work."""

    def configure(parser: argparse.ArgumentParser) -> None:
        def refuse(args: argparse.Namespace) -> int:
            raise WeakspotError(f"'weakspot {command}' is not available yet (tracked in issue {issue})")

        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        parser.set_defaults(handler=refuse)

    return configure


def _from_module(module: str) -> Callable[[argparse.ArgumentParser], None]:
    """The ``configure(parser)`` of a command's own module, imported only when the parser is built."""

    def configure(parser: argparse.ArgumentParser) -> None:
        importlib.import_module(module).configure(parser)

    return configure


SUBCOMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
    ("demo", "run the whole story on a built-in planted-shortcut dataset", _from_module("weakspot.demo")),
    ("data", "inspect datasets and build planted-shortcut benchmarks", _configure_data),
    ("train", "fine-tune a timm model on a dataset", lambda parser: importlib.import_module("weakspot.training.cli").configure_train(parser)),
    ("explain", "explain predictions (LIME, SHAP, Grad-CAM, occlusion) as PNG figures", _from_module("weakspot.explainers.cli")),
    ("attack", "run explainer-guided attacks and print a robustness table", _from_module("weakspot.attacks.cli")),
    ("bench", "benchmark every attack with per-subgroup tables and a JSON report", _from_module("weakspot.bench")),
    ("finetune", "adversarial fine-tuning and its baselines", lambda parser: importlib.import_module("weakspot.training.cli").configure_finetune(parser)),
    ("check", "regression checks on a JSON report (exit 1 on failure)", _from_module("weakspot.check")),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="weakspot", description="Find and fix the weak spots of image classifiers.")
    parser.add_argument("--version", action="version", version=f"weakspot {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, summary, configure in SUBCOMMANDS:
        configure(commands.add_parser(name, help=summary, description=summary))
    return parser


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    """SIGTERM takes the same clean path as Ctrl-C: files in progress are temp files and are dropped."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, _terminate_as_interrupt) if in_main_thread else None
    try:
        return int(args.handler(args) or 0)
    except WeakspotError as error:
        if args.debug:
            raise
        error_console.print(f"weakspot {args.command}: error: {error}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        error_console.print(f"weakspot {args.command}: interrupted", highlight=False, markup=False)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
