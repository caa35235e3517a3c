"""Turning attack results into a table row, a report (the ``report.json`` schema of ``weakspot.report``)
and the example grid (original above, attacked below, with the prediction change: studies' Figure 13).
Shared by ``weakspot attack`` and ``weakspot bench``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from weakspot.attacks.base import AttackResult, Perturbation
from weakspot.report import AttackRecords, BenchRecords, build_report
from weakspot.report import attack_summary as records_summary


def attack_summary(result: AttackResult) -> dict[str, Any]:
    """One row: name, success_rate, robust_accuracy, mean_area, mean_queries, seconds."""
    return records_summary(AttackRecords.from_result(result), result.correct.tolist())


def attack_report(model: str, dataset: str, results: Sequence[AttackResult],
                  groups: Sequence[dict[str, str]] | None = None) -> dict[str, Any]:
    """The ``report.json`` payload for results of several attacks on the same images (so ``weakspot
    check`` reads it); ``groups`` gives each image's group values for the per-group errors."""
    if not results:
        raise ValueError("attack_report needs at least one result")
    records = BenchRecords(correct=results[0].correct.tolist(), groups=list(groups or []),
                           attacks={result.name: AttackRecords.from_result(result) for result in results})
    return build_report(model, dataset, records)


def describe(perturbation: Perturbation | None) -> str:
    """A short caption: what was changed and how much of the image."""
    if perturbation is None:
        return ""
    detail = {"superpixel": lambda p: f"{int(p.params.get('k', 0))} seg {p.fill}",
              "block": lambda p: f"{p.fill} block",
              "button": lambda p: f"{int(p.params.get('patches', 0))} {p.fill} patch",
              "crop": lambda p: f"crop x{p.params.get('scale', 0):.2f}",
              "spatial": lambda p: f"{p.params.get('angle', 0):+.0f}deg{' flip' if p.params.get('flip') else ''}",
              "flip": lambda p: "flip"}.get(perturbation.kind, lambda p: p.kind)
    return f"{detail(perturbation)}, {perturbation.area:.0%}"


def example_grid(results: Mapping[str, AttackResult] | Sequence[AttackResult], images: Mapping[str, torch.Tensor],
                 path: str | os.PathLike, class_names: Sequence[str] | None = None, examples: int = 4) -> Path:
    """PNG: per attack, up to ``examples`` fooled images: the original (``images[name]``, the clean images of
    the result's rows) with its prediction above, the adversarial image with the new prediction and the
    perturbation below. Written atomically."""
    import matplotlib.pyplot as plt

    from weakspot.explainers.figures import save_figure

    named = dict(results) if isinstance(results, Mapping) else {result.name: result for result in results}

    def caption(probability: torch.Tensor, label: torch.Tensor) -> str:
        name = class_names[int(label)] if class_names else str(int(label))
        return f"{name} {float(probability):.0%}"

    rows = max(1, 2 * len(named))
    figure, axes = plt.subplots(rows, examples, figsize=(2.1 * examples, 2.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for position, (name, result) in enumerate(named.items()):
        chosen = torch.nonzero(result.fooled).flatten()[:examples].tolist()
        if not chosen:
            axes[2 * position, 0].set_title(f"{name}: no image fooled", fontsize=8, loc="left")
        for column, index in enumerate(chosen):
            top, bottom = axes[2 * position, column], axes[2 * position + 1, column]
            top.imshow(images[name][index].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
            bottom.imshow(result.adversarial[index].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
            before = caption(result.original_probability[index], result.original_class[index])
            after = caption(result.adversarial_probability[index], result.adversarial_class[index])
            top.set_title(f"{name}: {before}" if column == 0 else before, fontsize=8)
            bottom.set_title(f"-> {after}\n{describe(result.perturbations[index])}", fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)
