"""What the class-bias balance (``--balance-recall``, ``weakspot.training.calibration``) would do to runs that
trained without it: for each benchmark run folder (one ``scripts/shortcut_benchmark.py`` row: ``row.json``
and the kept checkpoint), rebuild the run's splits from its recorded command, fit the balance on validation
and print the worst group and clean-test accuracy before and after. No training: the loop's default runs it
as its last step, and this shows the same step on the other methods' models. With ``--best-shift`` it also
prints the best test worst group any one shift per class could give the model before the balance, told the
test's groups (``worst_group_bias`` on the test split): a bound on what a class-bias balance can do, not a
method.

    .venv/bin/python scripts/recall_balance_probe.py /tmp/run/sticker_s0/erm /tmp/run/sticker_s0/jtt-l50 \
        --json /tmp/run/sticker_s0.balance.json
    .venv/bin/python scripts/recall_balance_probe.py /tmp/run/button_s0/adversarial --best-shift
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import torch

from weakspot.cues import CUE_GROUP
from weakspot.fileio import atomic_write_json
from weakspot.models import load_checkpoint
from weakspot.training.calibration import balance_recall, image_logits, worst_group_accuracy, worst_group_bias
from weakspot.training.cli import configure_finetune, load_splits
from weakspot.training.evaluation import evaluate_groups, group_keys

ROW_NAME = "row.json"  # as scripts/shortcut_benchmark.py writes it


def probe(folder: Path, splits_cache: dict[tuple[object, ...], dict[str, Any]],
          best_shift: bool = False) -> dict[str, object]:
    """The balance on one run folder: its bias and, before and after, test worst group and clean-test accuracy;
    with ``best_shift`` also the best shift told the test groups (``best_test_shift``). Runs on the same data
    share their splits through ``splits_cache``."""
    command = shlex.split(json.loads((folder / ROW_NAME).read_text())["command"])
    parser = argparse.ArgumentParser()
    configure_finetune(parser)
    args = parser.parse_args(command[2:])  # after "weakspot finetune"
    key = (args.data, args.label, args.size, args.max_images, args.seed)
    if key not in splits_cache:
        splits_cache[key] = load_splits(args)
    splits = splits_cache[key]
    classifier = load_checkpoint(folder / f"{args.keep}.pt")
    attributes = [args.label, CUE_GROUP]
    measured: dict[str, object] = {"run": str(folder)}
    if best_shift:
        measured["best_shift"] = best_test_shift(classifier, splits["test"], attributes, args.label)
    for stage in ("before", "after"):
        if stage == "after":
            measured["recall_balance"] = balance_recall(classifier, splits["val"].images, splits["val"].labels)
        test = evaluate_groups(classifier, splits["test"], attributes, args.label)
        clean = evaluate_groups(classifier, splits["clean_test"], [args.label], args.label)
        measured[stage] = {"worst_group_accuracy": test["worst_group_accuracy"],
                           "clean_test_accuracy": clean["accuracy"]}
    return measured


def best_test_shift(classifier: Any, test: Any, attributes: list[str], label_name: str) -> dict[str, object]:
    """The per-class shift with the best test worst group, and that worst group (the model left unchanged)."""
    keys = group_keys(test, attributes, label_name)
    index = {key: number for number, key in enumerate(sorted(set(keys)))}
    groups = torch.tensor([index[key] for key in keys])
    logits, labels = image_logits(classifier, test.images), test.labels.cpu()
    bias = worst_group_bias(logits, labels, groups)
    worst = float(worst_group_accuracy((logits + bias.double()).argmax(dim=1), labels, groups))
    return {"bias": dict(zip(classifier.class_names, bias.tolist())), "worst_group_accuracy": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="benchmark run folders (each with row.json)")
    parser.add_argument("--json", default=None, help="save the measurements here")
    parser.add_argument("--best-shift", action="store_true",
                        help="also the best test worst group one shift per class could give (told the test groups)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results, splits_cache = [], {}
    for folder in args.runs:
        measured = probe(folder, splits_cache, args.best_shift)
        results.append(measured)
        before, after = measured["before"], measured["after"]
        print(f"{folder}: worst group {before['worst_group_accuracy']:.1%} -> {after['worst_group_accuracy']:.1%}, "
              f"clean test {before['clean_test_accuracy']:.1%} -> {after['clean_test_accuracy']:.1%}, bias "
              f"{measured['recall_balance']['bias']}")
        if args.best_shift:
            print(f"  best shift told the test groups: worst group {measured['best_shift']['worst_group_accuracy']:.1%}, "
                  f"bias {measured['best_shift']['bias']}")
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
