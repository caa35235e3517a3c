"""``weakspot audit``: the studies' report in one command. Clean and robust accuracy per subgroup (the bench
machinery and its ``report.json``), the explainers' mean attribution map per class, the images that fooled
the model, and an "audit" section in the report naming the figures and the bins.

Everything is computed before anything is written, and the outputs replace the previous ones together
(``weakspot.fileio.written_together``): a run that fails, a full disk included, leaves them as they were.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from weakspot.arguments import (add_data_arguments, add_model_arguments, add_runtime_arguments, classifier_from_args,
                                comma_list, dataset_from_args, positive_int)
from weakspot.attacks.cli import EXAMPLES_NAME, check_attack_names, print_report
from weakspot.attacks import attack_params, create_attack
from weakspot.attacks.base import Attack, AttackResult
from weakspot.bench import CHUNK, CURVES_NAME, attack_chunk, clean_correct, write_figures
from weakspot.augment.adversarial import LoopConfig
from weakspot.classifier import Classifier
from weakspot.data import ImageSet, align_labels
from weakspot.diagnosis import Diagnosis, GroupScore, diagnose
from weakspot.errors import WeakspotError
from weakspot.fileio import atomic_write_json, written_together
from weakspot.report import AttackRecords, BenchRecords, build_report
from weakspot.shortcut_finder import FINDER_IMAGES, find_shortcuts, findings_figure
from weakspot.stats import Z95, wilson
from weakspot.terminal import console, error_console

DEFAULT_EXPLAINERS = "lime,shap,gradcam"
REPORT_NAME = "report.json"
SHORTCUTS_NAME = "shortcuts.png"
DEFAULT_INTERVAL = 0.1  # +-10 points: about 100 images per subgroup at worst
WAVE = 24  # images a subgroup adds to an attack's sample at a time, until its interval is narrow enough
EXPLAIN_CHUNK = 8  # images per explainer call: the progress bar's step
BIN_SUFFIX = "_bin"
# LIME's convention as a continuous map: green raises the class, red lowers it, transparent around zero
LIME_COLORMAP = LinearSegmentedColormap.from_list(
    "red_transparent_green", [(0.85, 0.0, 0.0, 1.0), (1.0, 1.0, 1.0, 0.0), (0.0, 0.7, 0.0, 1.0)])


@dataclass(frozen=True)
class Bins:
    """``--bins age=0,20,40,60``: numeric column ``age`` becomes group ``age_bin`` with labels
    "<0", "0-19", "20-39", "40-59", "60+" (a bin holds lo <= value < next edge)."""

    column: str
    edges: tuple[int, ...]

    @property
    def group(self) -> str:
        return self.column + BIN_SUFFIX

    def labels(self) -> list[str]:
        inner = [f"{low}-{high - 1}" for low, high in zip(self.edges, self.edges[1:])]
        return [f"<{self.edges[0]}", *inner, f"{self.edges[-1]}+"]

    def label(self, value: float) -> str:
        position = sum(value >= edge for edge in self.edges)
        return self.labels()[position]


def bins_arg(text: str) -> Bins:
    column, _, edges_text = text.partition("=")
    try:
        edges = tuple(int(edge) for edge in comma_list(edges_text))
    except ValueError:
        edges = ()
    if not column.strip() or not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise argparse.ArgumentTypeError(f"expected COLUMN=E1,E2,... with increasing integer edges "
                                         f"(e.g. age=0,20,40,60), got {text!r}")
    return Bins(column.strip(), edges)


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_data_arguments(parser, split=True)
    add_runtime_arguments(parser)
    parser.add_argument("--bins", type=bins_arg, action="append", default=[],
                        help="COLUMN=E1,E2,...: a numeric column as group COLUMN_bin (e.g. age=0,20,40,60 gives "
                             "age_bin <0, 0-19, 20-39, 40-59, 60+); repeat for more columns")
    parser.add_argument("--attacks", type=comma_list, default=["all"], help="comma list of attacks, or all (default)")
    parser.add_argument("--budget", type=positive_int, default=200, help="model queries per image and attack")
    parser.add_argument("--explainers", type=comma_list, default=comma_list(DEFAULT_EXPLAINERS),
                        help=f"explainers of the mean maps (default {DEFAULT_EXPLAINERS}; also occlusion, shap-partition)")
    parser.add_argument("--explain-images", type=positive_int, default=16,
                        help="images per class averaged into each mean map (default 16)")
    parser.add_argument("--samples", type=positive_int, default=200,
                        help="model evaluations per image for lime, shap and shap-partition (default 200)")
    parser.add_argument("--segments", type=positive_int, default=24, help="about this many superpixels (default 24)")
    parser.add_argument("--interval", type=interval_width, default=DEFAULT_INTERVAL, metavar="WIDTH",
                        help="attack a sample of each subgroup big enough that its robust accuracy's 95%% interval "
                             f"is at most +-WIDTH (default {DEFAULT_INTERVAL}: about 100 images per subgroup)")
    parser.add_argument("--all-images", action="store_true", help="attack every image, not a sample")
    parser.add_argument("--shortcut-images", type=positive_int, default=FINDER_IMAGES,
                        help="images per class the shortcut finder attacks to locate and test the cues the model "
                             f"leans on (default {FINDER_IMAGES})")
    parser.add_argument("--no-shortcuts", action="store_true", help=f"no shortcut finder (and no {SHORTCUTS_NAME})")
    parser.add_argument("--out", required=True, help=f"folder for {REPORT_NAME} and the PNGs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it is drawn on a terminal only)")
    parser.set_defaults(handler=run, outputs=output_paths)


def output_paths(args: argparse.Namespace) -> list[Path]:
    """The files of ``--out``, probed before any work."""
    names = (REPORT_NAME, EXAMPLES_NAME, CURVES_NAME, *(f"mean_{method}.png" for method in args.explainers),
             *(() if args.no_shortcuts else (SHORTCUTS_NAME,)))
    return [Path(args.out) / name for name in names]


def interval_width(text: str) -> float:
    """``--interval``: a half-width in (0, 0.5]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 0.5:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 0.5], got {text!r}")
    return value


def subgroup_orders(keys: list[tuple], width: float | None, seed: int) -> list[list[int]]:
    """Per subgroup (rows with the same key), a seeded random order of its rows: as many as a 95% interval of
    +-``width`` on a share needs at worst (p = 0.5), or all of them (``width`` None, or a smaller subgroup)."""
    cap = None if width is None else math.ceil(Z95 ** 2 * 0.25 / width ** 2)
    generator = torch.Generator().manual_seed(seed)
    members: dict[tuple, list[int]] = {}
    for row, key in enumerate(keys):
        members.setdefault(key, []).append(row)
    return [torch.tensor(rows)[torch.randperm(len(rows), generator=generator)[:cap]].tolist()
            for _, rows in sorted(members.items())]


def narrow_enough(records: AttackRecords, correct: list[bool], rows: list[int], width: float | None) -> bool:
    """The robust error of ``rows`` (all attacked) has a 95% interval of at most +-``width``."""
    if width is None or not rows:
        return False
    errors = sum(not correct[row] or bool(records.fooled[row]) for row in rows)
    low, high = wilson(errors / len(rows), len(rows))
    return (high - low) / 2 <= width


def attack_until_narrow(attack: Attack, images: torch.Tensor, labels: torch.Tensor, correct: list[bool],
                        orders: list[list[int]], width: float | None, advance: Callable[[int], None],
                        ) -> tuple[AttackRecords, list[AttackResult], list[int]]:
    """One attack on each subgroup's images in its order, ``WAVE`` at a time, until the subgroup's robust error
    is known to +-``width`` (None: all of them): a subgroup the attack fools almost always, or almost never, is
    pinned down by a few dozen images, and the queries go where the error is uncertain. Returns the records (None
    where an image was not reached), the results and the rows they cover, in order."""
    count = len(labels)
    records = AttackRecords(attack.name, [None] * count, [0.0] * count, [0] * count, 0.0, [False] * count)
    taken = [0] * len(orders)
    results: list[AttackResult] = []
    covered: list[int] = []
    while True:
        wave: list[int] = []
        for group, order in enumerate(orders):
            if taken[group] < len(order) and not narrow_enough(records, correct, order[:taken[group]], width):
                wave += order[taken[group]:taken[group] + WAVE]
                taken[group] = min(len(order), taken[group] + WAVE)
        if not wave:
            return records, results, covered
        wave.sort()
        for start in range(0, len(wave), CHUNK):
            rows = wave[start:start + CHUNK]
            result, chunk = attack_chunk(attack, images[rows], labels[rows])
            for position, row in enumerate(rows):
                records.fooled[row], records.area[row] = chunk.fooled[position], chunk.area[position]
                records.queries[row], records.nonfinite[row] = chunk.queries[position], chunk.nonfinite[position]
            records.seconds += chunk.seconds
            results.append(result)
            covered += rows
            advance(len(rows))


def sampled_attacks(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, attack_names: list[str],
                    budget: int, groups: list[dict[str, str]], orders: list[list[int]], width: float | None, seed: int,
                    advance: Callable[[str, int], None],
                    ) -> tuple[BenchRecords, dict[str, list[AttackResult]], dict[str, torch.Tensor]]:
    """Every attack on the sample's subgroups until each is narrow enough (``attack_until_narrow``): the
    records, the results per attack and the clean images those results cover. ``advance(attack, images)``
    reports progress, the images an attack skipped included."""
    records = BenchRecords(correct=clean_correct(classifier, images, labels), groups=groups)
    results: dict[str, list[AttackResult]] = {}
    covered_images: dict[str, torch.Tensor] = {}
    for name in attack_names:
        attack = create_attack(name, classifier, **attack_params(name, budget, seed=seed, max_in_flight=1))
        attack_records, results[name], covered = attack_until_narrow(
            attack, images, labels, records.correct, orders, width, lambda count, name=name: advance(name, count))
        records.attacks[name] = attack_records
        covered_images[name] = images[covered]
        advance(name, len(labels) - len(covered))
    return records, results, covered_images


def with_intervals(report: dict[str, Any]) -> dict[str, Any]:
    """The report with each subgroup's 95% intervals on its clean and robust errors (its images are a sample)."""
    for group in report["groups"]:
        group["clean_error_interval"] = wilson(group["clean_error"], group["n"])
        group["robust_error_interval"] = {name: wilson(error, group["robust_n"][name])
                                          for name, error in group["robust_error"].items()}
    return report


class StageClock:
    """Seconds per stage of a run (``with clock("attacks"): ...``), and where the time went as one line."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def summary(self) -> str:
        total = sum(self.seconds.values()) or 1.0
        return ", ".join(f"{stage} {seconds:.0f} s ({seconds / total:.0%})" for stage, seconds in self.seconds.items())


def weak_spot(correct: list[bool], labels: list[int], class_names: list[str], groups: list[dict[str, str]],
              verdicts: list[str] | None) -> Diagnosis:
    """The diagnosis (``weakspot.diagnosis``) from the confirmed verdicts and the clean accuracy of each class x
    subgroup on the attacked images (a shortcut splits a class: its images with the attribute and without)."""
    members: dict[str, list[bool]] = {}
    for right, label, group in zip(correct, labels, groups):
        name = ", ".join([class_names[label], *(f"{key}={value}" for key, value in group.items())])
        members.setdefault(name, []).append(right)
    scores = [GroupScore(name, len(rights), sum(rights) / len(rights)) for name, rights in members.items()]
    return diagnose(verdicts, scores, list(dict.fromkeys(key for group in groups for key in group)))


def _check_explainers(names: list[str]) -> list[str]:
    from weakspot.explainers import EXPLAINERS

    unknown = [name for name in names if name not in EXPLAINERS]
    if unknown or not names:
        raise WeakspotError(f"unknown explainer '{unknown[0] if unknown else ''}' (choose from {', '.join(EXPLAINERS)})")
    return list(dict.fromkeys(names))


def _row_name(manifest: str, path: str) -> str:
    """An image's ``file`` as its manifest row names it (relative to the manifest's folder)."""
    return os.path.relpath(path, Path(manifest).parent.resolve())


def _load_groups(args: argparse.Namespace) -> tuple[ImageSet, list[str]]:
    """The dataset with its group columns; each ``--bins`` column is read and turned into its ``_bin`` group
    (added to the groups when ``--groups`` does not name it)."""
    bins = {spec.group: spec for spec in args.bins}
    groups = list(dict.fromkeys([*args.groups, *bins]))
    columns = list(dict.fromkeys(bins[name].column if name in bins else name for name in groups))
    imageset = dataset_from_args(argparse.Namespace(**{**vars(args), "groups": columns}))
    for spec in bins.values():
        values = []
        for path, text in zip(imageset.paths, imageset.groups[spec.column]):
            try:
                number = float(text)
            except ValueError:
                number = None
            if number is None or not math.isfinite(number):
                kind = "non-numeric" if number is None else "non-finite"
                raise WeakspotError(f"{imageset.source}: column '{spec.column}' has the {kind} value {text!r} in the "
                                    f"row of '{_row_name(imageset.source, path)}' (--bins {spec.column}=...)")
            values.append(spec.label(number))
        imageset.groups[spec.group] = values
    return imageset, groups


def _mean_maps(classifier: Classifier, name: str, images: torch.Tensor, labels: torch.Tensor,
               args: argparse.Namespace, advance: Any) -> dict[int, tuple[int, torch.Tensor]]:
    """Per class present: (images explained, mean heatmap), each image explained for its own class and its
    map scaled to max |value| 1 first, so every image weighs the same."""
    from weakspot.explainers import create_explainer
    from weakspot.explainers.cli import SAMPLES_PARAMETER, explainer_params

    samples = args.samples if name in SAMPLES_PARAMETER else None
    explainer = create_explainer(name, classifier, **explainer_params(name, args.segments, samples=samples,
                                                                      seed=args.seed))
    maps = {}
    for label in torch.unique(labels).tolist():
        chosen = torch.nonzero(labels == label).flatten()[:args.explain_images]
        total = torch.zeros(images.shape[-2:])
        for start in range(0, len(chosen), EXPLAIN_CHUNK):
            batch = chosen[start:start + EXPLAIN_CHUNK]
            heat = torch.nan_to_num(explainer(images[batch], target=labels[batch]).heatmap.float())
            total += (heat / heat.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).sum(dim=0)
            advance(len(batch))
        maps[label] = (len(chosen), total / len(chosen))
    return maps


def mean_map_figure(method: str, maps: dict[int, tuple[int, torch.Tensor]], images: torch.Tensor,
                    labels: torch.Tensor, class_names: list[str]) -> Figure:
    """One panel per class, side by side: the class's mean map over its mean image in grey, in the
    method's convention (figures.py): LIME green raises / red lowers, SHAP and occlusion red raises / blue
    lowers, Grad-CAM a heat overlay."""
    import matplotlib.pyplot as plt

    from weakspot.explainers.figures import SHAP_COLORMAP, STYLES

    style = STYLES.get(method, "shap")
    figure, axes = plt.subplots(1, len(maps), figsize=(3.3 * len(maps), 3.6), squeeze=False)
    for axis, (label, (count, heat)) in zip(axes[0], maps.items()):
        grey = images[labels == label].mean(dim=(0, 1)).numpy()
        axis.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0)
        limit = float(heat.abs().max()) or 1.0
        if style == "heat":
            shown = axis.imshow(heat.numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=limit)
        else:
            colormap = LIME_COLORMAP if style == "lime" else SHAP_COLORMAP
            shown = axis.imshow(heat.numpy(), cmap=colormap, vmin=-limit, vmax=limit)
        figure.colorbar(shown, ax=axis, fraction=0.046)
        axis.set_title(f"{class_names[label]} (mean of {count})", fontsize=9)
        axis.axis("off")
    legend = {"lime": "green raises, red lowers", "heat": "Grad-CAM heat", "shap": "red raises, blue lowers"}[style]
    figure.suptitle(f"{method}: mean attribution per class ({legend})", fontsize=10)
    figure.tight_layout()
    return figure


def run(args: argparse.Namespace) -> int:
    from weakspot.explainers.figures import save_figure

    attack_names = check_attack_names(args.attacks)
    explainer_names = _check_explainers(args.explainers)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    classifier = classifier_from_args(args)
    imageset, groups = _load_groups(args)
    labels = align_labels(imageset, classifier.class_names)
    images = imageset.images
    group_of = [imageset.group_of(i, groups) for i in range(len(labels))]
    keys = [tuple(group.values()) or (int(label),) for group, label in zip(group_of, labels)]
    width = None if args.all_images else args.interval
    orders = subgroup_orders(keys, width, args.seed)
    attacked = torch.tensor(sorted(row for order in orders for row in order), dtype=torch.long)
    position = {row: index for index, row in enumerate(attacked.tolist())}
    orders = [[position[row] for row in order] for order in orders]
    explained = sum(min(args.explain_images, int((labels == label).sum())) for label in torch.unique(labels).tolist())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=error_console, disable=args.no_progress or not error_console.is_terminal) as progress:
        task = progress.add_task("audit", total=len(attack_names) * len(attacked) + len(explainer_names) * explained)

        def attacked_images(name: str, count: int) -> None:
            progress.update(task, description=f"attack {name}", advance=count)

        stages = StageClock()
        with stages("attacks"):
            records, results, covered_images = sampled_attacks(
                classifier, images[attacked], labels[attacked], attack_names, args.budget,
                [group_of[i] for i in attacked.tolist()], orders, width, args.seed, attacked_images)
        maps = {}
        for name in explainer_names:
            progress.update(task, description=f"explain {name} (so far: {stages.summary()})")
            with stages(f"{name} maps"):
                maps[name] = _mean_maps(classifier, name, images, labels, args,
                                        lambda count: progress.advance(task, count))
        progress.update(task, description=f"find shortcuts (so far: {stages.summary()})")
        with stages("shortcuts"):
            findings, cues = ([], None) if args.no_shortcuts else find_shortcuts(
                classifier, images, labels, per_class=args.shortcut_images, seed=args.seed)
    report = with_intervals(build_report(classifier.arch, imageset.source, records))
    report["audit"] = {
        "checkpoint": args.checkpoint, "budget": args.budget, "seed": args.seed, "size": args.size, "split": args.split,
        "bins": {spec.group: {"column": spec.column, "edges": list(spec.edges), "labels": spec.labels()}
                 for spec in args.bins},
        "mean_maps": {name: f"mean_{name}.png" for name in explainer_names},
        "explained_per_class": {classifier.class_names[label]: count for label, (count, _) in
                                next(iter(maps.values())).items()},
        "examples": EXAMPLES_NAME, "curves": CURVES_NAME, "stage_seconds": stages.seconds,
        "sample": {"attacked": len(attacked), "of": len(labels), "interval": width,
                   "reached": {name: sum(fooled is not None for fooled in attack.fooled)
                               for name, attack in records.attacks.items()}}}
    verdicts = None if args.no_shortcuts else [finding.verdict for finding in findings if finding.confirmed]
    diagnosis = weak_spot([bool(c) for c in records.correct], labels[attacked].tolist(), classifier.class_names,
                          [group_of[i] for i in attacked.tolist()], verdicts)
    report["audit"]["diagnosis"] = diagnosis.as_dict()
    console.print(diagnosis.line(), highlight=False, markup=False)
    if not args.no_shortcuts:
        report["audit"]["shortcuts"] = {"gate": LoopConfig().gate, "images_per_class": args.shortcut_images,
                                        "figure": SHORTCUTS_NAME, "findings": [asdict(item) for item in findings]}
        console.print("[bold]Shortcuts[/] (the cues the model leans on, tested against a control; "
                      f"{SHORTCUTS_NAME} shows them)")
        for finding in findings:
            console.print(f"  {finding.verdict}", highlight=False, markup=False)
    print_report(report)
    with written_together():
        for name, class_maps in maps.items():
            save_figure(mean_map_figure(name, class_maps, images, labels, classifier.class_names),
                        out / f"mean_{name}.png")
        write_figures(out, records, results, covered_images, classifier)
        if not args.no_shortcuts:
            save_figure(findings_figure(classifier, images, labels, cues, findings, args.seed), out / SHORTCUTS_NAME)
        atomic_write_json(out / REPORT_NAME, report)
    console.print(f"audit: {out / REPORT_NAME}, {len(maps)} mean map(s), {EXAMPLES_NAME}, {CURVES_NAME} in {out}")
    console.print(f"time: {stages.summary()}", highlight=False)
    return 0
