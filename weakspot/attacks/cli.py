"""``weakspot attack``: run attacks on a dataset with a checkpoint; a rich table (one row per attack),
optionally the JSON report (``weakspot check`` reads it) and the example grid PNG."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_ATTACKS = "superpixel,block,button,crop,flip,pgd"
EXAMPLES_NAME = "examples.png"


def configure(parser: argparse.ArgumentParser) -> None:
    from weakspot.arguments import add_data_arguments, add_model_arguments, add_runtime_arguments, comma_list, positive_int

    add_model_arguments(parser)
    add_data_arguments(parser, split=True)
    add_runtime_arguments(parser)
    parser.add_argument("--attacks", type=comma_list, default=comma_list(DEFAULT_ATTACKS),
                        help=f"comma list of attacks (default {DEFAULT_ATTACKS}; all: superpixel,block,button,"
                             "crop,flip,spatial,fgsm,pgd)")
    parser.add_argument("--budget", type=positive_int, default=200,
                        help="model queries per image and attack, guidance included (default 200)")
    parser.add_argument("--json", default=None, help="write the report (JSON, atomically) here")
    parser.add_argument("--out", default=None, help=f"folder for {EXAMPLES_NAME} (original vs adversarial)")
    parser.set_defaults(handler=run, outputs=output_paths)


def check_attack_names(names: list[str]) -> list[str]:
    from weakspot.attacks import ATTACKS
    from weakspot.errors import WeakspotError

    if names == ["all"]:
        return list(ATTACKS)
    unknown = [name for name in names if name not in ATTACKS]
    if unknown or not names:
        raise WeakspotError(f"unknown attack '{unknown[0] if unknown else ''}' (choose from all, {', '.join(ATTACKS)})")
    return list(dict.fromkeys(names))


def output_paths(args: argparse.Namespace) -> list[str | Path | None]:
    """What ``--json`` and ``--out`` will hold (attack, bench), probed before any attack runs."""
    return [args.json, args.out and Path(args.out) / EXAMPLES_NAME]


def print_report(report: dict[str, Any]) -> None:
    """The per-attack table, one line on stderr per attack that met NaN/inf outputs, the per-group table."""
    from weakspot.report import attacks_table, groups_table, nonfinite_notes
    from weakspot.terminal import console, error_console

    console.print(attacks_table(report))
    for note in nonfinite_notes(report):
        error_console.print(note, highlight=False, markup=False, soft_wrap=True)
    table = groups_table(report)
    if table is not None:
        console.print(table)
    if report["groups"] and len(report["groups"][0]["group"]) > 1:
        console.print(groups_table(report, per_attribute=True))


def run(args: argparse.Namespace) -> int:
    import torch

    from weakspot.attacks import attack_params, create_attack
    from weakspot.attacks.report import attack_report, example_grid
    from weakspot.arguments import classifier_from_args, dataset_from_args
    from weakspot.terminal import console
    from weakspot.data import align_labels
    from weakspot.fileio import atomic_write_json, written_together

    names = check_attack_names(args.attacks)
    classifier = classifier_from_args(args)
    imageset = dataset_from_args(args)
    labels = align_labels(imageset, classifier.class_names)
    torch.manual_seed(args.seed)
    results = []
    for name in names:
        params = attack_params(name, args.budget, seed=args.seed)
        with console.status(f"attack {name} on {len(labels)} images"):
            results.append(create_attack(name, classifier, **params)(imageset.images, labels))
    groups = [imageset.group_of(index, args.groups) for index in range(len(labels))] if args.groups else None
    report = attack_report(classifier.arch, imageset.source, results, groups)
    report["budget"] = args.budget
    print_report(report)
    with written_together():
        written = [f"report: {atomic_write_json(args.json, report)}"] if args.json else []
        if args.out:
            grid = example_grid(results, {result.name: imageset.images for result in results},
                                Path(args.out) / EXAMPLES_NAME, classifier.class_names)
            written.append(f"examples: {grid}")
    for line in written:
        console.print(line)
    return 0
