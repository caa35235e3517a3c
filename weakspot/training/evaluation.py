"""Accuracy overall and per subgroup (e.g. label x planted cue): the numbers a shortcut benchmark is read by."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from rich.table import Table

from weakspot.data import ImageSet
from weakspot.errors import WeakspotError
from weakspot.models import Classifier


def group_keys(imageset: ImageSet, attributes: Sequence[str], label_name: str) -> list[tuple[str, ...]]:
    """Each image's group: its values of ``attributes`` (``label_name`` means the class), in that order."""
    columns = []
    for attribute in attributes:
        if attribute == label_name:
            columns.append([imageset.class_names[int(label)] for label in imageset.labels])
        elif attribute in imageset.groups:
            columns.append(imageset.groups[attribute])
        else:
            raise WeakspotError(f"{imageset.source}: no group attribute '{attribute}'")
    return list(zip(*columns)) if columns else [() for _ in range(len(imageset))]


def group_accuracy(correct: torch.Tensor, imageset: ImageSet, attributes: Sequence[str], label_name: str) -> dict[str, Any]:
    """Accuracy overall, per group of ``attributes`` (``label_name`` means the class) and of the worst group."""
    members: dict[tuple[str, ...], list[int]] = {}
    for index, key in enumerate(group_keys(imageset, attributes, label_name)):
        members.setdefault(key, []).append(index)
    correct = correct.cpu().bool()
    groups = [{"group": dict(zip(attributes, key)), "n": len(indices),
               "accuracy": float(correct[indices].float().mean())} for key, indices in sorted(members.items())]
    worst = min(groups, key=lambda row: row["accuracy"]) if groups else None
    return {"n": len(imageset), "accuracy": float(correct.float().mean()) if len(imageset) else 0.0,
            "groups": groups, "worst_group": worst["group"] if worst else None,
            "worst_group_accuracy": worst["accuracy"] if worst else None}


def evaluate_groups(classifier: Classifier, imageset: ImageSet, attributes: Sequence[str], label_name: str) -> dict[str, Any]:
    predicted, _ = classifier.predict(imageset.images)
    return group_accuracy(predicted == imageset.labels, imageset, attributes, label_name)


def comparison_table(title: str, reports: Mapping[str, dict[str, Any]]) -> Table:
    """Accuracy per group of one split under several models (``group_accuracy`` reports of the same images), then
    the worst group and all images: the table ``finetune`` and the demo print. The first model's worst group is
    starred."""
    names = list(reports)
    first = reports[names[0]]
    table = Table(title=title)
    table.add_column("group")
    table.add_column("images", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for index, row in enumerate(first["groups"]):
        marker = " *" if row["group"] == first["worst_group"] else ""
        table.add_row(", ".join(f"{key}={value}" for key, value in row["group"].items()) + marker, str(row["n"]),
                      *(f"{reports[name]['groups'][index]['accuracy']:.1%}" for name in names))
    table.add_row("[bold]worst group[/]", "", *(f"{reports[name]['worst_group_accuracy']:.1%}" for name in names))
    table.add_row("[bold]all[/]", str(first["n"]), *(f"{reports[name]['accuracy']:.1%}" for name in names))
    return table
