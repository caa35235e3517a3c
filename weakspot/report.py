"""The robustness report: per-image attack records -> the stable ``report.json`` schema and its tables.

Reports are computed from per-image records, never from per-process summaries, so a run sharded over
torchrun ranks and merged gives the same numbers as one process.

Schema (stable; documented in the README)::

    {"model": str, "dataset": str, "n": int, "clean_accuracy": float,
     "attacks": [{"name": str, "success_rate": float, "robust_accuracy": float, "mean_area": float,
                  "mean_queries": float, "seconds": float, "nonfinite": int}],
     "groups": [{"group": {attr: value}, "n": int, "clean_error": float, "robust_error": {attack: float},
                 "robust_n": {attack: int}}]}

An image an attack did not reach (an audit's attack stops taking a subgroup's images once its interval is narrow
enough) has ``fooled`` None in the records and counts in no robust figure of that attack; ``robust_n`` is how many
of a group's images each attack's figure rests on.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from weakspot.attacks.base import AttackResult
from weakspot.errors import WeakspotError

ATTACK_FIELDS = ("name", "success_rate", "robust_accuracy", "mean_area", "mean_queries", "seconds")
TOP_FIELDS = ("model", "dataset", "n", "clean_accuracy", "attacks", "groups")


@dataclass
class AttackRecords:
    """One attack's per-image outcomes (plain lists, so they travel between processes) and its wall time."""

    name: str
    fooled: list[bool | None] = field(default_factory=list)  # None: the image was not attacked
    area: list[float] = field(default_factory=list)  # occluded area where fooled, else 0
    queries: list[int] = field(default_factory=list)
    seconds: float = 0.0
    nonfinite: list[bool] = field(default_factory=list)  # the model returned NaN/inf for the image

    @classmethod
    def from_result(cls, result: AttackResult) -> AttackRecords:
        areas = [perturbation.area if fooled and perturbation is not None else 0.0
                 for perturbation, fooled in zip(result.perturbations, result.fooled.tolist())]
        nonfinite = [False] * len(areas) if result.nonfinite is None else [bool(v) for v in result.nonfinite.tolist()]
        return cls(result.name, [bool(v) for v in result.fooled.tolist()], areas,
                   [int(v) for v in result.queries.tolist()], result.seconds, nonfinite)

    def extend(self, other: AttackRecords) -> None:
        self.fooled += other.fooled
        self.area += other.area
        self.queries += other.queries
        self.seconds += other.seconds
        self.nonfinite += other.nonfinite


@dataclass
class BenchRecords:
    """Everything a report needs, per image: clean correctness, group values, and each attack's records."""

    correct: list[bool] = field(default_factory=list)
    groups: list[dict[str, str]] = field(default_factory=list)
    attacks: dict[str, AttackRecords] = field(default_factory=dict)

    def extend(self, other: BenchRecords) -> None:
        self.correct += other.correct
        self.groups += other.groups
        for name, records in other.attacks.items():
            self.attacks.setdefault(name, AttackRecords(name)).extend(records)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def attack_summary(records: AttackRecords, correct: Sequence[bool]) -> dict[str, Any]:
    """One row of ``report["attacks"]``, over the images the attack reached."""
    reached = [i for i, fooled in enumerate(records.fooled) if fooled is not None]
    attacked = sum(correct[i] for i in reached)
    fooled = [bool(records.fooled[i]) and correct[i] for i in reached]
    areas = [records.area[i] for i, f in zip(reached, fooled) if f]
    return {
        "name": records.name,
        "success_rate": sum(fooled) / attacked if attacked else 0.0,
        "robust_accuracy": _mean([float(correct[i] and not f) for i, f in zip(reached, fooled)]),
        "mean_area": _mean(areas),
        "mean_queries": _mean([records.queries[i] for i in reached]),
        "seconds": records.seconds,
        "nonfinite": sum(records.nonfinite),
    }


def build_report(model: str, dataset: str, records: BenchRecords) -> dict[str, Any]:
    """The ``report.json`` payload; groups are every combination of the recorded group values."""
    correct = records.correct
    by_group: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for index, group in enumerate(records.groups):
        by_group.setdefault(tuple(sorted(group.items())), []).append(index)
    groups = []
    for key in sorted(by_group):
        members = by_group[key]
        reached = {name: [i for i in members if attack.fooled[i] is not None]
                   for name, attack in records.attacks.items()}
        groups.append({
            "group": dict(key),
            "n": len(members),
            "clean_error": 1.0 - _mean([float(correct[i]) for i in members]),
            "robust_error": {name: 1.0 - _mean([float(correct[i] and not attack.fooled[i]) for i in reached[name]])
                             for name, attack in records.attacks.items()},
            "robust_n": {name: len(rows) for name, rows in reached.items()},
        })
    return {
        "model": model,
        "dataset": dataset,
        "n": len(correct),
        "clean_accuracy": _mean([float(c) for c in correct]),
        "attacks": [attack_summary(attack, correct) for attack in records.attacks.values()],
        "groups": groups if records.groups and records.groups[0] else [],
    }


def nonfinite_notes(report: dict[str, Any]) -> list[str]:
    """One line per attack under which the model returned NaN/inf, so such a model is not silently
    scored (those outputs never count as fooled; a NaN clean output counts as misclassified)."""
    return [f"weakspot: the model returned NaN/inf for {attack['nonfinite']} of {report['n']} image(s) under "
            f"'{attack['name']}' (never counted as fooled; NaN clean outputs count as misclassified)"
            for attack in report["attacks"] if attack.get("nonfinite")]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_share(value: Any) -> bool:
    return _is_number(value) and 0.0 <= value <= 1.0


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a report; every problem is one WeakspotError naming the file and the field."""
    report_path = Path(path)
    try:
        payload = json.loads(report_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeakspotError(f"{report_path}: report not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:  # ValueError: bad JSON, a number too long
        raise WeakspotError(f"{report_path}: not a readable JSON report ({error})") from None
    except RecursionError:
        raise WeakspotError(f"{report_path}: not a readable JSON report (nested too deeply)") from None
    if not isinstance(payload, dict):
        raise WeakspotError(f"{report_path}: a report is a JSON object")
    missing = [name for name in TOP_FIELDS if name not in payload]
    if missing:
        raise WeakspotError(f"{report_path}: missing field '{missing[0]}'")
    if not _is_share(payload["clean_accuracy"]):
        raise WeakspotError(f"{report_path}: 'clean_accuracy' is not a number in [0, 1]")
    if not isinstance(payload["attacks"], list):
        raise WeakspotError(f"{report_path}: 'attacks' is not a list")
    for position, attack in enumerate(payload["attacks"]):
        if not isinstance(attack, dict) or not isinstance(attack.get("name"), str):
            raise WeakspotError(f"{report_path}: attacks[{position}] has no 'name'")
        for name in ATTACK_FIELDS[1:]:
            if not _is_number(attack.get(name)):
                raise WeakspotError(f"{report_path}: attacks[{position}] ('{attack['name']}') field '{name}' is not a number")
        if not _is_share(attack["robust_accuracy"]):
            raise WeakspotError(f"{report_path}: attacks[{position}] ('{attack['name']}') robust_accuracy is not in [0, 1]")
    repeated = sorted(name for name, count in Counter(attack["name"] for attack in payload["attacks"]).items()
                      if count > 1)
    if repeated:
        raise WeakspotError(f"{report_path}: attack '{repeated[0]}' appears twice")
    return payload


def attacks_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['model']} on {report['dataset']}: {report['n']} images, "
                        f"clean accuracy {report['clean_accuracy']:.1%}")
    for column in ("attack", "clean acc", "robust acc", "success", "mean area", "mean queries", "seconds"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for attack in report["attacks"]:
        table.add_row(attack["name"], f"{report['clean_accuracy']:.1%}", f"{attack['robust_accuracy']:.1%}",
                      f"{attack['success_rate']:.1%}", f"{attack['mean_area']:.3f}", f"{attack['mean_queries']:.1f}",
                      f"{attack['seconds']:.1f}")
    return table


def attribute_groups(groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per value of each group attribute (race=black over all genders and ages), its errors the
    n-weighted mean of the subgroups that hold it: with three attributes the intersections number dozens,
    many of a handful of images, and the per-attribute rows are what the studies tabulate."""
    members: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for group in groups:
        for attribute, value in group["group"].items():
            members.setdefault((attribute, value), []).append(group)
    rows = []
    for (attribute, value), held in sorted(members.items()):
        n = sum(group["n"] for group in held)
        rows.append({"group": {attribute: value}, "n": n,
                     "clean_error": sum(group["clean_error"] * group["n"] for group in held) / n,
                     "robust_error": {name: sum(group["robust_error"][name] * group["n"] for group in held) / n
                                      for name in held[0]["robust_error"]}})
    return rows


def groups_table(report: dict[str, Any], per_attribute: bool = False) -> Table | None:
    """Error rate per subgroup and attack (``per_attribute``: per value of each attribute, see
    ``attribute_groups``), with its 95% interval when the report has one (an audit's sample); the worst group of
    each column is marked with '*'."""
    groups = attribute_groups(report["groups"]) if per_attribute else report["groups"]
    if not groups:
        return None
    attack_names = [attack["name"] for attack in report["attacks"]]
    table = Table(title=f"error rate per {'attribute value' if per_attribute else 'group'} (* = worst)")
    table.add_column("group")
    table.add_column("n", justify="right")
    table.add_column("clean", justify="right")
    for name in attack_names:
        table.add_column(name, justify="right")
    worst_clean = max(group["clean_error"] for group in groups)
    worst = {name: max(group["robust_error"][name] for group in groups) for name in attack_names}

    def cell(value: float, worst_value: float, interval: list[float] | None) -> str:
        spread = "" if interval is None else f" ({interval[0]:.0%}-{interval[1]:.0%})"
        return f"{value:.1%}{spread}" + (" *" if value == worst_value else "")

    for group in groups:
        label = ", ".join(f"{key}={value}" for key, value in group["group"].items())
        robust_intervals = group.get("robust_error_interval", {})
        table.add_row(label, str(group["n"]), cell(group["clean_error"], worst_clean, group.get("clean_error_interval")),
                      *[cell(group["robust_error"][name], worst[name], robust_intervals.get(name))
                        for name in attack_names])
    return table
