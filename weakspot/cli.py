"""The ``weakspot`` command: one dispatcher, each subcommand configured by its own layer.

Every user-caused problem is a ``WeakspotError``: one line on stderr, exit code 2 (``--debug`` shows the
traceback). Shared argument groups (data, model, device) live in ``weakspot.arguments``. A subcommand that
writes files names them with ``parser.set_defaults(outputs=lambda args: [paths])``: they are probed
(``weakspot.fileio.check_outputs``) before the subcommand runs.
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
from weakspot.arguments import add_data_arguments, dataset_from_args, seed_int
from weakspot.errors import WeakspotError
from weakspot.fileio import check_outputs
from weakspot.terminal import console, error_console

Handler = Callable[[argparse.Namespace], int]
# the arguments that name files or folders a command reads: no output may replace them or land in an image folder
INPUT_ARGUMENTS = ("checkpoint", "weights", "data", "source", "image", "report", "baseline", "jtt_identification",
                   "dfr_base")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line style (still exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        error_console.print(f"weakspot {self.prog.split()[-1]}: error: {message}", highlight=False, markup=False,
                            soft_wrap=True)
        raise SystemExit(2)


def _run_data_inspect(args: argparse.Namespace) -> int:
    imageset = dataset_from_args(args)
    table = Table(title=f"{imageset.source}: {len(imageset)} images, {imageset.images.shape[-1]} px")
    table.add_column("attribute")
    table.add_column("value")
    table.add_column("images", justify="right")
    per_image_class = [imageset.class_names[int(label)] for label in imageset.labels]
    for index, name in enumerate(imageset.class_names):
        table.add_row("class", name, str(int((imageset.labels == index).sum())))
    for attribute, values in imageset.groups.items():
        if list(values) == per_image_class:  # an ImageFolder's "class" group is the label itself, counted above
            continue
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
    confound = actions.add_parser("confound", help="build a benchmark folder whose label goes with an attribute (no pixel planted)")
    importlib.import_module("weakspot.confound").configure_confound_command(confound)


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


def _training(configure_name: str) -> Callable[[argparse.ArgumentParser], None]:
    """``train`` or ``finetune``: the training layer's parser, writing its run folder's files."""

    def configure(parser: argparse.ArgumentParser) -> None:
        module = importlib.import_module("weakspot.training.cli")
        getattr(module, configure_name)(parser)
        parser.set_defaults(outputs=lambda args: [f"{args.out}/{module.MODEL_NAME}"])

    return configure


SUBCOMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
    ("demo", "run the whole story on a built-in planted-shortcut dataset", _from_module("weakspot.demo")),
    ("data", "inspect datasets and build planted-shortcut benchmarks", _configure_data),
    ("import", "convert a model trained elsewhere (state_dict, .safetensors) into a weakspot checkpoint", _from_module("weakspot.importer")),
    ("train", "fine-tune a timm model on a dataset", _training("configure_train")),
    ("explain", "explain predictions (LIME, SHAP, Grad-CAM, occlusion) as PNG figures", _from_module("weakspot.explainers.cli")),
    ("attack", "run explainer-guided attacks and print a robustness table", _from_module("weakspot.attacks.cli")),
    ("bench", "benchmark every attack with per-subgroup tables and a JSON report", _from_module("weakspot.bench")),
    ("audit", "one report: accuracy and robustness per subgroup, mean explanation maps, fooling examples", _from_module("weakspot.audit")),
    ("finetune", "adversarial fine-tuning and its baselines", _training("configure_finetune")),
    ("check", "regression checks on a JSON report (exit 1 on failure)", _from_module("weakspot.check")),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="weakspot", description="Find and fix the weak spots of image classifiers.")
    parser.add_argument("--version", action="version", version=f"weakspot {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, summary, configure in SUBCOMMANDS:
        configure(commands.add_parser(name, help=summary, description=summary))
    _accept_debug_anywhere(parser)
    return parser


def _accept_debug_anywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after a subcommand (``weakspot attack ... --debug``) as well as before it: every
    subcommand's parser takes it too. Its default is SUPPRESS, so a subparser that did not see the flag
    leaves the value the top-level parser set alone."""
    seen: set[int] = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for subparser in action.choices.values():
                if id(subparser) in seen:
                    continue
                seen.add(id(subparser))
                if "--debug" not in subparser._option_string_actions:
                    subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                           help="show tracebacks")
                pending.append(subparser)


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
        check_outputs(*getattr(args, "outputs", lambda _: [])(args),
                      inputs=[getattr(args, name, None) for name in INPUT_ARGUMENTS])
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
