"""Planted-shortcut benchmark: fine-tune EfficientNet-Lite0 with each method on a ``weakspot data shortcut``
folder and print one side-by-side table (test accuracy, clean-test accuracy, accuracy per label x cue
group, worst-group accuracy, wall time, training time and its ratio to ERM's); save it as JSON.

    .venv/bin/weakspot data shortcut --source ../shared/data/utkface --label gender --cue button \
        --rate 0.95 --out /tmp/shortcut96 --size 96
    .venv/bin/python scripts/shortcut_benchmark.py --data /tmp/shortcut96 --work /tmp/shortcut_runs \
        --json shortcut_benchmark.json
    .venv/bin/python scripts/shortcut_benchmark.py --combine seed0.json seed1.json seed2.json

On real data with no planted cue, ``--groups race`` (with ``--data ../shared/data/utkface``) makes the
groups label x race; the split is then the seeded 70/15/15 of ``weakspot train``.

``--combine`` prints, per method, the mean over the saved runs (one per ``--seed``: each seed draws its own
subset, split and initialisation) of the worst-group accuracy, its gain over ERM in the same run, the
clean-test accuracy and the training time ratio to ERM; worst group and gain with their standard error over
runs, and with ``--versus METHOD`` each method's paired worst-group difference to METHOD. Tables of the same
``--data`` and ``--seed`` are merged into one run (ERM run once, other methods saved later to their own ``--json``); a method in several
of them keeps the row of the last one given.

The "jtt" row is not a run of its own: it is, per seed, whichever of jtt-l20 / jtt-l50 / jtt-l100 has the
best worst-group accuracy on the VALIDATION split (label x cue groups: group labels on validation, as the
JTT paper tunes lambda_up), so its test numbers are not chosen on the test split. The "spare" row is chosen the
same way between spare-e1 and spare-e2 (the early model's epochs, which the SPARE paper tunes on validation).

Every method runs ``weakspot finetune`` with the same data, seed, epochs and standard augmentation; only
the training-stream transform differs. "wall s" is measured around each whole run (data loading,
evaluation, and for the first method the one-time imports); "train s" is the ``fit`` time alone, and the
ratio to ERM is taken on it. Runs go one after another in one process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from weakspot.augment.adversarial import LoopConfig
from weakspot.cli import main as weakspot_main
from weakspot.fileio import atomic_write_json
from weakspot.training.loop import KEEP_CHOICES

# One-setting ablations of the loop: each row changes one LoopConfig field from its default.
LOOP_ABLATIONS: dict[str, dict[str, object]] = {
    "adversarial-no-spread": {"spread": 0.0},
    "adversarial-no-pool": {"mix_ratio": 0.0},
    "adversarial-no-gate": {"gate": None},
    "adversarial-no-pool-check": {"pool_check": None},
}


def loop_flags(changes: dict[str, object]) -> list[str]:
    """The ``weakspot finetune`` flags that set these LoopConfig fields ('off' for None)."""
    flag_of = {name: flag for name, flag, _, _ in LoopConfig.knobs()}
    return [item for name, value in changes.items() for item in (flag_of[name], "off" if value is None else str(value))]


# Table rows in order: (row name, finetune --method, its flags). "adversarial" is the library's default loop.
METHODS: list[tuple[str, str, list[str]]] = [
    ("erm", "erm", []),
    ("cutout", "cutout", ["--cutout-area", "0.06"]),
    ("worstofk", "worstofk", ["--k", "5"]),
    ("pgd", "pgd", ["--pgd-eps", "4", "--pgd-steps", "3"]),
    ("adversarial", "adversarial", []),
    *((name, "adversarial", loop_flags(changes)) for name, changes in LOOP_ABLATIONS.items()),
    # the published anchors: MaskTune (no hyperparameter to tune) and JTT at the paper's grid of lambda_up
    ("masktune", "masktune", []),
    # JTT's identification model is the ERM row's own model (ERM over the same epochs, last epoch), so its
    # rows need the erm row and their time includes ERM's ("identification_seconds")
    *((f"jtt-l{weight}", "jtt", ["--jtt-upweight", str(weight), "--jtt-identification", "{work}/erm/last.pt"])
      for weight in (20, 50, 100)),
    # the strongest label-free methods: AFR (its own ERM on 80% of the training split, gamma and lambda chosen on
    # the validation worst group) and SPARE (SpuCo's inference on a 1- or 2-epoch model; needs weakspot[peers])
    ("afr", "afr", []),
    *((f"spare-e{epochs}", "spare", ["--spare-epochs", str(epochs)]) for epochs in (1, 2)),
    # oracles, told the groups the others must find (weakspot/augment/oracles.py): group-balanced ERM and
    # GroupDRO (training groups), and DFR's head refitted on group-balanced validation features of the ERM row's model
    ("groupbalance", "groupbalance", []),
    ("groupdro", "groupdro", []),
    ("dfr", "dfr", ["--dfr-base", "{work}/erm/last.pt"]),
]
# A row chosen per run among others by validation worst-group accuracy, as the papers tune JTT's lambda_up and
# SPARE's inference epoch
SELECTED_ROWS = {"jtt": ("jtt-l20", "jtt-l50", "jtt-l100"), "spare": ("spare-e1", "spare-e2")}
ROW_NAME = "row.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                        help="only summarise saved --json tables (one per seed) and exit")
    parser.add_argument("--versus", default=None, metavar="METHOD",
                        help="with --combine: each method's mean worst-group difference to METHOD in the same runs")
    parser.add_argument("--data", help="a folder written by `weakspot data shortcut`")
    parser.add_argument("--label", default="gender")
    parser.add_argument("--groups", default="cue",
                        help="group columns beside the label: cue (a `data shortcut` folder) or e.g. race on real UTKFace")
    parser.add_argument("--work", help="one run folder per method is created here")
    parser.add_argument("--json", default=None, help="save the table here")
    parser.add_argument("--methods", default=",".join(name for name, _, _ in METHODS), help="rows to run (see METHODS)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the row of a method whose run folder already holds a finished row.json")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-images", type=int, default=None, help="seeded random subset of the benchmark rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on shared cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default="last", choices=KEEP_CHOICES,
                        help="finetune --keep for every row (default last: the validation split carries the shortcut)")
    return parser.parse_args()


def run_method(args: argparse.Namespace, name: str, method: str, flags: list[str]) -> dict:
    out = Path(args.work) / name
    if args.reuse and (out / ROW_NAME).is_file():
        return json.loads((out / ROW_NAME).read_text())
    flags = [flag.format(work=args.work) for flag in flags]
    command = ["finetune", "--data", args.data, "--label", args.label, "--size", str(args.size),
               "--model", "efficientnet_lite0", "--weights", "imagenet", "--method", method, *flags,
               "--epochs", str(args.epochs), "--patience", "0", "--threads", str(args.threads),
               "--seed", str(args.seed), "--keep", args.keep, "--out", str(out), "--no-progress"]
    if args.max_images:
        command += ["--max-images", str(args.max_images)]
    if args.groups != "cue":  # finetune adds a shortcut folder's cue column itself
        command += ["--groups", args.groups]
    started = time.perf_counter()
    if weakspot_main(command) != 0:
        raise SystemExit(f"weakspot {' '.join(command)} failed")
    seconds = time.perf_counter() - started
    results = json.loads((out / "results.json").read_text())
    def group_name(group: dict[str, str]) -> str:
        return "/".join(group[column] for column in (args.label, *args.groups.split(",")))

    groups = {group_name(row["group"]): row["accuracy"] for row in results["test"]["groups"]}
    row = {"method": name, "command": "weakspot " + " ".join(command), "test_accuracy": results["test"]["accuracy"],
            "clean_test_accuracy": results.get("clean_test", {}).get("accuracy"), "groups": groups,
            "group_sizes": {group_name(row["group"]): row["n"] for row in results["test"]["groups"]},
            "worst_group": results["test"]["worst_group"], "worst_group_accuracy": results["test"]["worst_group_accuracy"],
            "val_worst_group_accuracy": results.get("val", {}).get("worst_group_accuracy"),
            "wall_seconds": seconds, "train_seconds": results["train_seconds"]}
    atomic_write_json(out / ROW_NAME, row)
    return row


def selected_rows(rows: list[dict]) -> list[dict]:
    """For each of ``SELECTED_ROWS`` whose candidates all ran: a copy of the candidate with the best
    validation worst-group accuracy (the first on ties), named after the selection, with the candidates'
    summed training time as ``tuning_seconds``."""
    by_name = {row["method"]: row for row in rows}
    chosen = []
    for name, candidates in SELECTED_ROWS.items():
        if not all(candidate in by_name for candidate in candidates):
            continue
        best = max((by_name[candidate] for candidate in candidates), key=lambda row: row["val_worst_group_accuracy"])
        chosen.append({**best, "method": name, "selected": best["method"],
                       "tuning_seconds": sum(by_name[candidate]["train_seconds"] for candidate in candidates)})
    return chosen


def print_table(rows: list[dict]) -> None:
    group_names = sorted({name for row in rows for name in row["groups"]})
    table = Table(title="Planted-shortcut benchmark (test: cue independent of the label)")
    for column in ("method", "test acc", "clean-test acc", *group_names, "worst group", "wall s", "train s", "train x ERM"):
        table.add_column(column, justify="left" if column == "method" else "right")
    erm_seconds = next((row["train_seconds"] for row in rows if row["method"] == "erm"), None)
    for row in rows:
        clean = row["clean_test_accuracy"]
        table.add_row(row["method"], f"{row['test_accuracy']:.1%}", "-" if clean is None else f"{clean:.1%}",
                      *(f"{row['groups'].get(name, float('nan')):.1%}" for name in group_names),
                      f"{row['worst_group_accuracy']:.1%}", f"{row['wall_seconds']:.0f}", f"{row['train_seconds']:.0f}",
                      "-" if erm_seconds is None else f"{row['train_seconds'] / erm_seconds:.2f}")
    Console(width=200).print(table)


def mean_and_error(values: list[float], signed: bool = False) -> str:
    """Mean +- standard error over runs (sample standard deviation / sqrt(runs)), in points (values are
    shares): single runs of this benchmark move by several points, so a difference of means is read against it."""
    mean = f"{100 * statistics.fmean(values):{'+' if signed else ''}.1f}"
    if len(values) < 2:
        return f"{mean} +- -"
    return f"{mean} +- {100 * statistics.stdev(values) / math.sqrt(len(values)):.1f}"


def print_combined(paths: list[str], versus: str | None = None) -> None:
    """Mean over runs (seeds) per method: worst group, gain over the same run's ERM, test and clean test
    accuracy, time x ERM; with ``versus``, the mean worst-group difference to that method in the same runs.
    Worst group, gain and difference carry their standard error over runs."""
    runs_by_key: dict[tuple[str, int], dict[str, dict]] = {}
    for path in paths:  # tables of one data folder and seed are one run: ERM saved once, methods added later
        table = json.loads(Path(path).read_text())
        runs_by_key.setdefault((str(Path(table["data"]).resolve()), table["seed"]), {}).update(
            {row["method"]: row for row in table["methods"]})
    runs = list(runs_by_key.values())
    table = Table(title=f"Mean over {len(runs)} runs (seeds) of {len(paths)} table(s); +- standard error over runs")
    columns = ["method", "runs", "worst group %", "per run", "gain over ERM (points)",
               *([f"minus {versus} (points, runs)"] if versus else []), "test acc", "clean-test acc", "train x ERM"]
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    methods = list(dict.fromkeys(name for run in runs for name in run))
    for name in methods:
        present = [run for run in runs if name in run and "erm" in run]
        if not present:
            continue
        worst = [run[name]["worst_group_accuracy"] for run in present]
        gains = [run[name]["worst_group_accuracy"] - run["erm"]["worst_group_accuracy"] for run in present]
        test = [run[name]["test_accuracy"] for run in present]
        clean = [run[name]["clean_test_accuracy"] for run in present if run[name]["clean_test_accuracy"] is not None]
        ratios = [run[name]["train_seconds"] / run["erm"]["train_seconds"] for run in present]
        compared = []
        if versus:
            differences = [run[name]["worst_group_accuracy"] - run[versus]["worst_group_accuracy"]
                           for run in present if versus in run]
            compared = [f"{mean_and_error(differences, signed=True)} ({len(differences)})" if differences else "-"]
        table.add_row(name, str(len(present)), mean_and_error(worst), " ".join(f"{value:.1%}" for value in worst),
                      mean_and_error(gains, signed=True), *compared, f"{sum(test) / len(test):.1%}",
                      f"{sum(clean) / len(clean):.1%}" if clean else "-",
                      f"{sum(ratios) / len(ratios):.2f}")
    Console(width=220).print(table)


def main() -> int:
    args = parse_args()
    if args.combine:
        print_combined(args.combine, args.versus)
        return 0
    if not args.data or not args.work:
        raise SystemExit("--data and --work are required (or --combine)")
    rows_by_name = {name: (method, flags) for name, method, flags in METHODS}
    chosen = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in rows_by_name]
    if unknown:
        raise SystemExit(f"unknown method(s): {', '.join(unknown)} (known: {', '.join(rows_by_name)})")
    load_before = os.getloadavg()
    if any("{work}" in flag for name in chosen for flag in rows_by_name[name][1]) and chosen[0] != "erm":
        raise SystemExit("the jtt and dfr rows take the erm row's model: list erm first in --methods")
    rows = [run_method(args, name, *rows_by_name[name]) for name in chosen]
    for row in rows:
        if any("{work}" in flag for flag in rows_by_name[row["method"]][1]):
            row["identification_seconds"] = rows[0]["train_seconds"]
            row["train_seconds"] += rows[0]["train_seconds"]
    rows += selected_rows(rows)
    print_table(rows)
    if args.json:
        atomic_write_json(args.json, {"data": args.data, "size": args.size, "epochs": args.epochs,
                                      "max_images": args.max_images, "threads": args.threads, "seed": args.seed,
                                      "keep": args.keep,
                                      "cpu_count": os.cpu_count(), "load_average_before": load_before,
                                      "load_average_after": os.getloadavg(), "methods": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
