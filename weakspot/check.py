"""``weakspot check``: regression checks on a report, for CI. Exit 0 all passed, 1 a check failed,
2 bad arguments or unreadable reports."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from weakspot.errors import WeakspotError
from weakspot.report import load_report
from weakspot.terminal import console


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    value: float | None
    threshold: str
    passed: bool


def parse_thresholds(text: str) -> dict[str, float]:
    """``superpixel=0.5,block=0.4`` -> {"superpixel": 0.5, "block": 0.4}."""
    thresholds = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, separator, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not separator or not name.strip() or not 0.0 <= number <= 1.0:
            raise argparse.ArgumentTypeError(f"expected ATTACK=FRACTION in [0,1], got '{item}'")
        thresholds[name.strip()] = number
    return thresholds


def _robust_by_attack(report: dict[str, Any]) -> dict[str, float]:
    return {attack["name"]: float(attack["robust_accuracy"]) for attack in report["attacks"]}


def run_checks(report: dict[str, Any], min_clean: float | None = None, min_robust: dict[str, float] | None = None,
               baseline: dict[str, Any] | None = None, max_drop: float = 0.0) -> list[CheckOutcome]:
    """Every requested check as an outcome; an attack named in a threshold but absent from the report fails."""
    outcomes = []
    clean = float(report["clean_accuracy"])
    robust = _robust_by_attack(report)
    if min_clean is not None:
        outcomes.append(CheckOutcome("clean accuracy", clean, f">= {min_clean:.3f}", clean >= min_clean))
    for name, threshold in (min_robust or {}).items():
        value = robust.get(name)
        outcomes.append(CheckOutcome(f"robust accuracy: {name}", value, f">= {threshold:.3f}",
                                     value is not None and value >= threshold))
    if baseline is not None:
        old_clean = float(baseline["clean_accuracy"])
        outcomes.append(CheckOutcome("clean accuracy vs baseline", clean, f">= {old_clean - max_drop:.3f}",
                                     clean >= old_clean - max_drop - 1e-12))
        for name, old_value in _robust_by_attack(baseline).items():
            value = robust.get(name)
            outcomes.append(CheckOutcome(f"robust accuracy vs baseline: {name}", value,
                                         f">= {old_value - max_drop:.3f}",
                                         value is not None and value >= old_value - max_drop - 1e-12))
    return outcomes


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", help="report.json written by weakspot bench")
    parser.add_argument("--min-clean", type=float, default=None, help="minimum clean accuracy (0-1)")
    parser.add_argument("--min-robust", type=parse_thresholds, default={},
                        help="minimum robust accuracy per attack, e.g. superpixel=0.5,block=0.4")
    parser.add_argument("--baseline", default=None, help="an older report.json to compare with")
    parser.add_argument("--max-drop", type=float, default=0.0, help="largest allowed drop vs --baseline (0-1)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for option, value in (("--min-clean", args.min_clean), ("--max-drop", args.max_drop)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise WeakspotError(f"{option} must be a fraction in [0,1], got {value}")
    report = load_report(args.report)
    baseline = load_report(args.baseline) if args.baseline else None
    if args.min_clean is None and not args.min_robust and baseline is None:
        raise WeakspotError("nothing to check: give --min-clean, --min-robust or --baseline")
    outcomes = run_checks(report, args.min_clean, args.min_robust, baseline, args.max_drop)
    table = Table(title=f"weakspot check {args.report}")
    for column in ("check", "value", "required", "result"):
        table.add_column(column)
    for outcome in outcomes:
        value = "missing" if outcome.value is None else f"{outcome.value:.3f}"
        table.add_row(outcome.name, value, outcome.threshold, "[green]PASS[/]" if outcome.passed else "[red]FAIL[/]")
    console.print(table)
    failed = sum(not outcome.passed for outcome in outcomes)
    console.print(f"{len(outcomes) - failed} passed, {failed} failed")
    return 1 if failed else 0
