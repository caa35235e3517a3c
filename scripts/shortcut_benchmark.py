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
JTT paper tunes lambda_up), so its test numbers are not chosen on the test split.

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

from weakspot.cli import main as weakspot_main
from weakspot.fileio import atomic_write_json
from weakspot.training.loop import KEEP_CHOICES

# Every row measured before 2026-12-04 (tenth session) ran without the class-bias balance that the loop now ends with
# (by default, when one of its rounds kept something; LOOP leaves that default as it is).
UNBALANCED = ["--balance-recall", "off"]
# and every row measured before the eleventh session (2026-12-04) at the full spread, whatever the round's lead (the
# default again from the eighteenth)
FULL_SPREAD = ["--spread-lead", "off"]
# and every row measured before the fifteenth session (2026-12-05) with the cue zone the pixels 5% of the cues cover
COVER_ZONE = ["--zone-base", "cues", "--zone-share", "0.05", "--zone-growth", "0.04"]
# and every row measured before the seventeenth session (2026-12-05) with a zone of one cue or more and every
# round on the same guidance grid, with no fallback to the other
ONE_GRID = ["--zone-least", "1", "--no-alternate-grids", "--no-fallback-grid"]
# all four: what every row measured before the tenth session ran with
BEFORE_BALANCE = [*UNBALANCED, *FULL_SPREAD, *COVER_ZONE, *ONE_GRID]
PREVIOUS_LOOP = ["--attacks", "button", "--budget", "40", "--fraction", "0.35", "--spread", "0", "--adv-warmup", "1",
                 "--pool-check", "off", *BEFORE_BALANCE]
# The loop's default flags; a later copy of a flag overrides an earlier one (argparse), so each variant below is the
# default it was measured against with its own changes appended.
LOOP = ["--attacks", "button", "--budget", "40", "--fraction", "0.15", "--spread", "1.0", "--adv-warmup", "1.5",
        "--refresh", "0.5", "--rounds", "1", "--conflicts", "errors", "--pool-check", "0.25", "--spread-erase", "swap",
        "--spread-lead", "off", "--zone-base", "peak", "--zone-share", "0.25", "--zone-growth", "0.08",
        "--zone-least", "2", "--no-guidance-shift", "--no-alternate-grids", "--fallback-grid",
        "--lr-restart", "--gate-retest", "--retest-marginal"]
# the twentieth session's default (2026-12-05): the retest attacks every image of its second sample
GATE_RETEST_LOOP = [*LOOP, "--no-retest-marginal"]
# the nineteenth session's default (2026-12-05): a class that passes the dependence test is kept at once
LR_RESTART_LOOP = [*GATE_RETEST_LOOP, "--no-gate-retest"]
# the eighteenth session's second default (2026-12-05): the learning rate's decay not started again after the round
FALLBACK_LEAD_OFF_LOOP = [*LR_RESTART_LOOP, "--no-lr-restart"]
# the eighteenth session's first default (2026-12-05): the spread scaled by the round's lead over 0.3, as from the
# eleventh session on
FALLBACK_LOOP = [*FALLBACK_LEAD_OFF_LOOP, "--spread-lead", "0.3"]
# the default of the fifteenth session (2026-12-05) until the seventeenth's
ZONE_PEAK_LOOP = [*FALLBACK_LOOP, *ONE_GRID]
# the default of the eleventh session (2026-12-04) until the zone around the peak cover (fifteenth session)
LEAD_LOOP = [*ZONE_PEAK_LOOP, *COVER_ZONE]
# the default of the tenth session (2026-12-04): the spread not scaled by the lead
FULL_SPREAD_LOOP = [*LEAD_LOOP, *FULL_SPREAD]
# the default from 2026-12-04 (ninth session) until the class-bias balance (tenth session)
SWAP_LOOP = [*ZONE_PEAK_LOOP, *BEFORE_BALANCE]
# the default until 2026-12-04 (ninth session): the spread erases a cue with its fill
FILL_LOOP = [*SWAP_LOOP, "--spread-erase", "fill"]
# the default from 2026-12-03 (fourth session) until the pool check (seventh session)
NO_POOL_CHECK = [*FILL_LOOP, "--pool-check", "off"]
# Table rows in order: (row name, finetune --method, its flags).
METHODS: list[tuple[str, str, list[str]]] = [
    ("erm", "erm", []),
    ("cutout", "cutout", ["--cutout-area", "0.06"]),
    ("worstofk", "worstofk", ["--k", "5"]),
    ("pgd", "pgd", ["--pgd-eps", "4", "--pgd-steps", "3"]),
    ("pgd-eps1", "pgd", ["--pgd-eps", "1", "--pgd-steps", "3"]),
    ("adversarial", "adversarial", LOOP),
    # the first round at 2.0 epochs instead of 1.5 (twenty-fourth session; not adopted: -1.4 points on the tuning runs)
    ("adversarial-warmup2", "adversarial", [*LOOP, "--adv-warmup", "2.0"]),
    # the eighteenth session's default: the full spread on top of the fallback grid
    ("adversarial-fallback-lead-off", "adversarial", FALLBACK_LEAD_OFF_LOOP),
    # the nineteenth session's default: after the first round that keeps something the learning rate's decay starts
    # again from its peak
    ("adversarial-lr-restart", "adversarial", LR_RESTART_LOOP),
    # the twentieth session's default: a class that passed the dependence test by less than twice the gate is tested
    # again on a second sample, every image of which is attacked
    ("adversarial-gate-retest", "adversarial", GATE_RETEST_LOOP),
    # the default under the name its runs of the twenty-first session had: the retest attacks only its second
    # sample's images of the marginal classes; the rest are recipients only
    ("adversarial-retest-marginal", "adversarial", LOOP),
    # a retry that confirms nothing on the regular grid falls back to the shifted one (eighteenth session)
    ("adversarial-fallback-grid", "adversarial", FALLBACK_LOOP),
    # the seventeenth session's default: every retry on the other grid than the round before, no fallback
    ("adversarial-alternate-least2", "adversarial", [*FALLBACK_LOOP, "--alternate-grids", "--no-fallback-grid"]),
    # the fifteenth session's default: every round on the regular grid, a zone of one cue or more
    ("adversarial-zone-peak-wide", "adversarial", ZONE_PEAK_LOOP),
    # each round on the other guidance grid than the round before: a retry on the shifted grid (seventeenth session)
    ("adversarial-alternate-grids", "adversarial", [*ZONE_PEAK_LOOP, "--alternate-grids"]),
    # the cue zone only where at least two cues agree (seventeenth session)
    ("adversarial-zone-least2", "adversarial", [*ZONE_PEAK_LOOP, "--zone-least", "2"]),
    # the round's box attack explains each image on its own shifted grid (sixteenth session)
    ("adversarial-shifted-guidance", "adversarial", [*ZONE_PEAK_LOOP, "--guidance-shift"]),
    # the variant not chosen: the zone around the peak cover grown by 4% of the side
    ("adversarial-zone-peak", "adversarial", [*ZONE_PEAK_LOOP, "--zone-growth", "0.04"]),
    # the default of the eleventh session (2026-12-04): the zone the pixels 5% of the cues cover
    ("adversarial-cover-zone", "adversarial", LEAD_LOOP),
    # the default without its last step, the class-bias balance (the default of the ninth session)
    ("adversarial-unbalanced", "adversarial", SWAP_LOOP),
    # the default until the spread was scaled by the round's largest dependence-test lead (eleventh session)
    ("adversarial-full-spread", "adversarial", FULL_SPREAD_LOOP),
    # the default until 2026-12-04 (ninth session; this session's tables call the default "adversarial-swap" and
    # this row "adversarial")
    ("adversarial-fill", "adversarial", FILL_LOOP),
    # the pool kept in the stream to the end of the run, whatever the model's reading of the cues
    ("adversarial-no-pool-check", "adversarial", NO_POOL_CHECK),
    # the same without the natural cue-conflicting images in the pool (the default before 2026-12-03, fourth session)
    ("adversarial-no-conflicts", "adversarial", [*NO_POOL_CHECK, "--conflicts", "off"]),
    # half the clean images edited by the spread: with the pool's cue-conflicting half of the stream, a 95/5 cue
    # is about balanced in the stream (at spread 1.0 the pool reverses it; docs/results.md)
    ("adversarial-spread-half", "adversarial", [*NO_POOL_CHECK, "--spread", "0.5"]),
    # each class's conflicting images joined by as many of its other training images (natural, unedited)
    ("adversarial-agreements", "adversarial", [*NO_POOL_CHECK, "--agreements"]),
    # the conflicting images found again with the current model every half epoch after the round
    ("adversarial-refresh", "adversarial", [*NO_POOL_CHECK, "--conflict-refresh", "0.5"]),
    # the same, the conflicting images found earlier kept beside the current model's
    ("adversarial-refresh-union", "adversarial", [*NO_POOL_CHECK, "--conflict-refresh", "0.5",
                                                  "--accumulate-conflicts"]),
    # the conflicting images found by erasing the cue zone instead of the model's errors
    ("adversarial-zone", "adversarial", [*NO_POOL_CHECK, "--conflicts", "zone"]),
    # the same on a quarter of the training images (the round's share before 2026-12-03, third session)
    ("adversarial-f25", "adversarial", [*NO_POOL_CHECK, "--fraction", "0.25"]),
    # the default before 2026-12-03 (third session): rounds at 0.5 and 1.5 epochs on a quarter of the images
    ("adversarial-two-rounds", "adversarial", ["--attacks", "button", "--budget", "40", "--fraction", "0.25",
                                               "--spread", "1.0", "--adv-warmup", "0.5", "--rounds", "2",
                                               "--pool-check", "off", "--spread-erase", "fill", *BEFORE_BALANCE]),
    # JTT's restart: ERM for 2 epochs, one round on it, 3 epochs from the initial weights with what it kept
    ("adversarial-restart", "adversarial", ["--attacks", "button", "--budget", "40", "--fraction", "0.25",
                                            "--spread", "1.0", "--adv-restart", "2", "--pool-check", "off",
                                            "--spread-erase", "fill", *BEFORE_BALANCE]),
    # the previous default: rounds at the start of epochs 2 and 3, no spread
    ("adversarial-prev", "adversarial", PREVIOUS_LOOP),
    ("adversarial-all-removals", "adversarial", [*PREVIOUS_LOOP, "--no-cues-only"]),
    ("adversarial-blind-f25", "adversarial", ["--attacks", "button", "--budget", "40", "--fraction", "0.25",
                                              "--spread", "1.0", "--adv-warmup", "1", "--pool-check", "off",
                                              "--spread-erase", "fill", *BEFORE_BALANCE]),
    # the spread alone: no pool images in the batches (what the label-blind edits do by themselves)
    ("adversarial-spread-only", "adversarial", ["--attacks", "button", "--budget", "40", "--fraction", "0.25",
                                                "--spread", "1.0", "--adv-warmup", "0.5", "--rounds", "2",
                                                "--mix-ratio", "0", "--pool-check", "off", "--spread-erase", "fill",
                                                *BEFORE_BALANCE]),
    # the published anchors: MaskTune (no hyperparameter to tune) and JTT at the paper's grid of lambda_up
    ("masktune", "masktune", []),
    # JTT's identification model is the ERM row's own model (ERM over the same epochs, last epoch), so its
    # rows need the erm row and their time includes ERM's ("identification_seconds")
    *((f"jtt-l{weight}", "jtt", ["--jtt-upweight", str(weight), "--jtt-identification", "{work}/erm/last.pt"])
      for weight in (20, 50, 100)),
    # oracles, told the groups the others must find (weakspot/augment/oracles.py): group-balanced ERM and
    # GroupDRO (training groups), and DFR's head refitted on group-balanced validation features of the ERM row's model
    ("groupbalance", "groupbalance", []),
    ("groupdro", "groupdro", []),
    ("dfr", "dfr", ["--dfr-base", "{work}/erm/last.pt"]),
]
# A row chosen per run among others by validation worst-group accuracy, as the paper tunes JTT's lambda_up
SELECTED_ROWS = {"jtt": ("jtt-l20", "jtt-l50", "jtt-l100")}
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
