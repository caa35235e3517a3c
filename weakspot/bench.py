"""``weakspot bench``: every attack on a dataset, a table per attack and per subgroup, curves, examples,
and the stable ``report.json``. Under torchrun each rank attacks a contiguous shard of the images and
rank 0 merges the per-image records into one report (same numbers as one process)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from weakspot.attacks import attack_params, create_attack
from weakspot.attacks.cli import EXAMPLES_NAME, check_attack_names, output_paths, print_report
from weakspot.attacks.base import Attack, AttackResult
from weakspot.attacks.search import correctly_classified
from weakspot.arguments import (add_data_arguments, add_model_arguments, add_runtime_arguments, classifier_from_args,
                                comma_list, dataset_from_args, positive_int)
from weakspot.classifier import Classifier
from weakspot.data import ImageSet, align_labels
from weakspot.distributed import Rank, finish_distributed, gather_to_main, init_distributed, shard_bounds
from weakspot.errors import WeakspotError
from weakspot.fileio import atomic_write_json, written_together
from weakspot.report import AttackRecords, BenchRecords, build_report
from weakspot.terminal import console

CHUNK = 32  # images per attack call: the progress bar's step, and what one call keeps in flight
CURVES_NAME = "success_vs_area.png"


def run_attacks(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, attack_names: list[str],
                budget: int, groups: list[dict[str, str]], seed: int = 0, show_progress: bool = True,
                done: BenchRecords | None = None, on_chunk: Callable[[BenchRecords], None] | None = None,
                ) -> tuple[BenchRecords, dict[str, list[AttackResult]]]:
    """Attack ``images`` chunk by chunk with each attack; per-image records plus the raw results.

    ``done`` holds records of an interrupted run: images it covered are not attacked again (attacks are
    deterministic per image, so the merged records equal an uninterrupted run). One candidate in flight
    per image keeps query counts independent of which images share a chunk (shards, resumes). ``on_chunk`` receives the
    records after every chunk (to save them).
    """
    records = BenchRecords(correct=clean_correct(classifier, images, labels), groups=groups)
    results: dict[str, list[AttackResult]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show_progress, transient=False) as progress:
        for name in attack_names:
            attack = create_attack(name, classifier, **attack_params(name, budget, seed=seed, max_in_flight=1))
            previous = done.attacks.get(name) if done is not None else None
            attack_records = previous if previous is not None else AttackRecords(name)
            records.attacks[name] = attack_records
            task = progress.add_task(f"{name:>10}", total=len(labels), completed=len(attack_records.fooled))
            results[name] = []
            for start in range(len(attack_records.fooled), len(labels), CHUNK):
                result, chunk_records = attack_chunk(attack, images[start:start + CHUNK], labels[start:start + CHUNK])
                attack_records.extend(chunk_records)
                results[name].append(result)
                progress.advance(task, len(result.labels))
                if on_chunk is not None:
                    on_chunk(records)
    return records, results


def clean_correct(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> list[bool]:
    """Per image: the model classifies it correctly (a NaN output is not correct)."""
    correct = torch.zeros(len(labels), dtype=torch.bool)
    correct[correctly_classified(classifier.predict_proba(images), labels)] = True
    return correct.tolist()


def attack_chunk(attack: Attack, images: torch.Tensor, labels: torch.Tensor) -> tuple[AttackResult, AttackRecords]:
    """One call of ``attack`` on at most ``CHUNK`` images: its result and its records, timed."""
    started = time.perf_counter()
    result = attack(images, labels)
    records = AttackRecords.from_result(result)
    records.seconds = time.perf_counter() - started
    return result, records


def _state_path(report_path: str, rank: Rank) -> Path:
    suffix = f".rank{rank.rank}.partial" if rank.distributed else ".partial"
    return Path(report_path + suffix)


def _run_identity(args: argparse.Namespace, rank: Rank, attack_names: list[str]) -> dict[str, object]:
    """What must match for a resumed run to finish the same job."""
    return {"checkpoint": str(Path(args.checkpoint).resolve()), "model": args.model, "classes": args.classes,
            "input_size": args.input_size, "mean": list(args.mean) if args.mean else None,
            "std": list(args.std) if args.std else None, "data": str(Path(args.data).resolve()), "label": args.label,
            "groups": args.groups, "size": args.size, "max_images": args.max_images, "split": args.split, "seed": args.seed,
            "budget": args.budget, "attacks": attack_names, "rank": rank.rank, "world_size": rank.world_size}


def _load_state(path: Path, identity: dict[str, object]) -> BenchRecords | None:
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if state["identity"] != identity:
            raise WeakspotError(f"{path}: saved state belongs to a different run (arguments differ); "
                                "delete it or repeat the original arguments")
        return BenchRecords(state["correct"], state["groups"],
                            {name: AttackRecords(**fields) for name, fields in state["attacks"].items()})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeakspotError(f"{path}: unreadable saved state ({type(error).__name__})") from None


def _save_state(path: Path, identity: dict[str, object], records: BenchRecords) -> None:
    atomic_write_json(path, {"identity": identity, "correct": records.correct, "groups": records.groups,
                             "attacks": {name: asdict(attack) for name, attack in records.attacks.items()}})


def save_area_curves(records: BenchRecords, path: Path) -> Path:
    """Success rate vs occluded area: for each attack, the fraction of correctly classified images fooled
    with an occluded area of at most x."""
    import matplotlib.pyplot as plt

    from weakspot.explainers.figures import save_figure

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, attack in records.attacks.items():
        areas = sorted(a for a, f, c in zip(attack.area, attack.fooled, records.correct) if f and c)
        if not areas:
            continue
        attacked = sum(c for f, c in zip(attack.fooled, records.correct) if f is not None and c)
        xs = [0.0] + areas
        ys = [0.0] + [(i + 1) / attacked for i in range(len(areas))]
        axis.step(xs, ys, where="post", label=name)
    axis.set_xlabel("occluded area (fraction of the image)")
    axis.set_ylabel("success rate (of correctly classified)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:  # no curve when no attack fooled anything
        axis.legend(loc="lower right")
    figure.tight_layout()
    return save_figure(figure, path, dpi=120)


def configure(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_data_arguments(parser, split=True)
    add_runtime_arguments(parser)
    parser.add_argument("--attacks", type=comma_list, default=["all"], help="comma list of attacks, or all")
    parser.add_argument("--budget", type=positive_int, default=200, help="model queries per image and attack")
    parser.add_argument("--json", default=None, help="write report.json here")
    parser.add_argument("--out", default=None, help="folder for the PNG curves and example grid")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from REPORT.partial (needs --json)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=run, outputs=lambda args: [*output_paths(args), args.out and Path(args.out) / CURVES_NAME])


def run(args: argparse.Namespace) -> int:
    attack_names = check_attack_names(args.attacks)
    if args.resume and not args.json:
        raise WeakspotError("--resume needs --json: the saved state lives beside the report")
    rank, device = init_distributed(args.device)
    try:
        torch.manual_seed(args.seed)
        classifier = classifier_from_args(args, device=device)
        imageset = dataset_from_args(args)
        labels = align_labels(imageset, classifier.class_names)
        start, stop = shard_bounds(len(labels), rank)
        groups = [imageset.group_of(i, args.groups) for i in range(start, stop)]
        identity = _run_identity(args, rank, attack_names)
        state_path = _state_path(args.json, rank) if args.json else None
        done = _load_state(state_path, identity) if args.resume and state_path else None
        save = (lambda records: _save_state(state_path, identity, records)) if state_path else None
        records, results = run_attacks(classifier, imageset.images[start:stop], labels[start:stop], attack_names,
                                       args.budget, groups, seed=args.seed, show_progress=rank.is_main and not args.no_progress,
                                       done=done, on_chunk=save)
        gathered = gather_to_main(records, rank)
        if gathered is not None:
            merged = BenchRecords()
            for shard in gathered:
                merged.extend(shard)
            _write_outputs(args, classifier, imageset, merged, results, imageset.images[start:stop])
        if state_path is not None:
            state_path.unlink(missing_ok=True)
        return 0
    finally:
        finish_distributed()


def _write_outputs(args: argparse.Namespace, classifier: Classifier, imageset: ImageSet, merged: BenchRecords,
                   results: dict[str, list[AttackResult]], shard_images: torch.Tensor) -> None:
    """Rank 0: the tables, then report.json and the figures of the merged records, which replace the previous
    ones together or not at all."""
    report = build_report(classifier.arch, imageset.source, merged)
    print_report(report)
    with written_together():
        if args.json:
            atomic_write_json(args.json, report)
        if args.out:
            curves, grid = write_figures(Path(args.out), merged, results, {name: shard_images for name in results},
                                         classifier)
    if args.json:
        console.print(f"report: {args.json}")
    if args.out:
        console.print(f"figures: {curves}, {grid}")


def write_figures(out: Path, records: BenchRecords, results: dict[str, list[AttackResult]],
                  images: Mapping[str, torch.Tensor], classifier: Classifier) -> tuple[Path, Path]:
    """``success_vs_area.png`` and ``examples.png`` (images that fooled the model) in ``out`` (bench, audit);
    ``images``: per attack, the clean images its results' rows are, in order."""
    from weakspot.attacks.report import example_grid

    curves = save_area_curves(records, out / CURVES_NAME)
    grid = example_grid({name: _concatenate(parts) for name, parts in results.items()}, images, out / EXAMPLES_NAME,
                        classifier.class_names)
    return curves, grid


def _concatenate(parts: list[AttackResult]) -> AttackResult:
    """One AttackResult from the per-chunk results of one attack (for the example grid)."""
    first = parts[0]
    return AttackResult(
        name=first.name, labels=torch.cat([p.labels for p in parts]), correct=torch.cat([p.correct for p in parts]),
        fooled=torch.cat([p.fooled for p in parts]), adversarial=torch.cat([p.adversarial for p in parts]),
        perturbations=[x for p in parts for x in p.perturbations],
        original_class=torch.cat([p.original_class for p in parts]),
        original_probability=torch.cat([p.original_probability for p in parts]),
        adversarial_class=torch.cat([p.adversarial_class for p in parts]),
        adversarial_probability=torch.cat([p.adversarial_probability for p in parts]),
        queries=torch.cat([p.queries for p in parts]), seconds=sum(p.seconds for p in parts),
        nonfinite=torch.cat([p.nonfinite for p in parts]))
