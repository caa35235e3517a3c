"""The planted-shortcut benchmark folder: split, cue rates, clean copy, atomic write, per-group accuracy."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from weakspot.augment.adversarial import LoopConfig
from weakspot.augment.baselines import METHODS
from weakspot.cli import build_parser, main
from weakspot.data import ImageSet, load_dataset
from weakspot.errors import WeakspotError
from weakspot.shortcut import build_shortcut_benchmark, make_shortcut_dataset, write_imageset
from weakspot.training.cli import loop_config_from_args
from weakspot.training.evaluation import group_accuracy


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    """120 generated images as a manifest dataset with an extra group column, like UTKFace's race."""
    imageset, _ = make_shortcut_dataset(120, 32, cue_rate=0.5, signal=1.0, seed=3)
    imageset.groups = {"colour": ["red" if i % 3 else "blue" for i in range(len(imageset))]}
    return write_imageset(imageset, tmp_path_factory.mktemp("source") / "shapes", label="shape")


def _rows(folder):
    with open(folder / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_benchmark_plants_the_cue_by_split_and_keeps_a_clean_test(source_dir, tmp_path):
    out = tmp_path / "bench"
    counts = build_shortcut_benchmark(source_dir, "shape", out, rate=0.9, size=32, seed=1)
    rows = _rows(out)
    assert list(rows[0]) == ["file", "shape", "split", "cue", "colour"]
    by_split = Counter((row["split"], row["shape"], row["cue"]) for row in rows)
    assert {split: sum(n for (s, _, _), n in by_split.items() if s == split) for split in ("train", "val", "test", "clean_test")} \
        == {"train": 84, "val": 18, "test": 18, "clean_test": 18}
    for split in ("train", "val"):  # 90% of the cue class ("wide", the second) has the button, 10% of "tall"
        wide = by_split[(split, "wide", "button")] / (by_split[(split, "wide", "button")] + by_split[(split, "wide", "none")])
        tall = by_split[(split, "tall", "button")] / (by_split[(split, "tall", "button")] + by_split[(split, "tall", "none")])
        assert wide == pytest.approx(0.9, abs=0.06) and tall == pytest.approx(0.1, abs=0.06)
    for name in ("tall", "wide"):  # test: the cue is independent of the label
        assert abs(by_split[("test", name, "button")] - by_split[("test", name, "none")]) <= 1  # odd counts
        assert by_split[("clean_test", name, "button")] == 0
    assert counts["test"][("wide", "button")] == by_split[("test", "wide", "button")]

    loaded = load_dataset(out, size=32, label="shape", groups=["split", "cue"])
    split, cue = loaded.groups["split"], loaded.groups["cue"]
    test = [i for i, value in enumerate(split) if value == "test"]
    clean = [i for i, value in enumerate(split) if value == "clean_test"]
    assert len(test) == len(clean)
    for planted_index, clean_index in zip(test, clean):
        difference = (loaded.images[planted_index] - loaded.images[clean_index]).abs().amax(dim=0) > 1e-6
        if cue[planted_index] == "button":  # a dark disc at the bottom centre, nothing else changed
            ys, xs = torch.nonzero(difference, as_tuple=True)
            assert 0 < difference.float().mean() < 0.05 and ys.float().mean() > 32 * 0.75
            assert abs(xs.float().mean() - 16) < 4 and loaded.images[planted_index][:, ys, xs].max() < 0.1
        else:
            assert not difference.any()


def test_benchmark_is_deterministic_and_refuses_to_overwrite(source_dir, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    build_shortcut_benchmark(source_dir, "shape", first, size=32, seed=5)
    build_shortcut_benchmark(source_dir, "shape", second, size=32, seed=5)
    assert (first / "labels.csv").read_text() == (second / "labels.csv").read_text()
    assert (first / "images" / "00007.png").read_bytes() == (second / "images" / "00007.png").read_bytes()
    with pytest.raises(WeakspotError, match="already exists"):
        build_shortcut_benchmark(source_dir, "shape", first, size=32, seed=5)


def test_bad_arguments_leave_nothing_behind(source_dir, tmp_path):
    with pytest.raises(WeakspotError, match="cue class 'round'"):
        build_shortcut_benchmark(source_dir, "shape", tmp_path / "x", cue_class="round", size=32)
    with pytest.raises(WeakspotError, match="unknown cue"):
        build_shortcut_benchmark(source_dir, "shape", tmp_path / "x", cue="scarf", size=32)
    assert list(tmp_path.iterdir()) == []


def test_cli_builds_the_benchmark(source_dir, tmp_path, capsys):
    out = tmp_path / "cli_bench"
    assert main(["data", "shortcut", "--source", str(source_dir), "--label", "shape", "--cue", "button",
                 "--rate", "0.95", "--out", str(out), "--size", "32", "--max-images", "60"]) == 0
    assert "clean_test" in capsys.readouterr().out
    assert len(_rows(out)) == 60 + 9  # 60 images + the clean copy of the 9 test images
    assert main(["data", "shortcut", "--source", str(source_dir), "--label", "shape", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_group_accuracy_reports_label_by_cue_and_the_worst_group():
    imageset = ImageSet(images=torch.zeros(6, 3, 4, 4), labels=torch.tensor([0, 0, 1, 1, 1, 1]), class_names=["f", "m"],
                        groups={"cue": ["none", "button", "button", "button", "none", "none"]})
    correct = torch.tensor([True, False, True, True, False, True])
    report = group_accuracy(correct, imageset, ["gender", "cue"], label_name="gender")
    accuracy = {(row["group"]["gender"], row["group"]["cue"]): (row["n"], row["accuracy"]) for row in report["groups"]}
    assert accuracy == {("f", "button"): (1, 0.0), ("f", "none"): (1, 1.0), ("m", "button"): (2, 1.0), ("m", "none"): (2, 0.5)}
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["worst_group"] == {"gender": "f", "cue": "button"} and report["worst_group_accuracy"] == 0.0


def load_benchmark_script() -> Any:
    """scripts/shortcut_benchmark.py as a module (scripts/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "shortcut_benchmark.py"
    spec = importlib.util.spec_from_file_location("shortcut_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    return benchmark


def test_the_benchmark_rows_run_the_default_loop_its_one_setting_ablations_and_every_method():
    """What each row runs, read through finetune's own parser: the adversarial row is the default LoopConfig,
    each ablation differs from it in exactly one setting, and every finetune method has a row."""
    benchmark = load_benchmark_script()
    parser = build_parser()
    base = ["finetune", "--data", "d", "--out", "o"]
    configs = {}
    for name, method, flags in benchmark.METHODS:
        args = parser.parse_args([*base, "--method", method, *(flag.format(work="w") for flag in flags)])
        assert args.method == method
        if method == "adversarial":
            configs[name] = asdict(loop_config_from_args(args))
    default = asdict(LoopConfig())
    assert configs.pop("adversarial") == default
    for name, config in configs.items():
        changed = {key for key in default if config[key] != default[key]}
        assert changed == set(benchmark.LOOP_ABLATIONS[name]), name
    assert len(configs) == len(benchmark.LOOP_ABLATIONS) >= 3
    assert {method for _, method, _ in benchmark.METHODS} == set(METHODS)
    names = [name for name, _, _ in benchmark.METHODS]
    assert len(set(names)) == len(names)
    for selected, candidates in benchmark.SELECTED_ROWS.items():  # a selected row is chosen among real rows
        assert selected not in names and set(candidates) <= set(names)


def test_combine_merges_tables_of_one_data_folder_and_seed(tmp_path, capsys):
    """ERM saved by one run and the loop by a later one (same --data and --seed) count as one run."""
    benchmark = load_benchmark_script()

    def row(method, worst, seconds):
        return {"method": method, "worst_group_accuracy": worst, "test_accuracy": 0.8, "clean_test_accuracy": 0.8,
                "train_seconds": seconds}

    tables = {"erm0.json": (0, [row("erm", 0.4, 100)]), "loop0.json": (0, [row("adversarial", 0.7, 200)]),
              "both1.json": (1, [row("erm", 0.5, 100), row("adversarial", 0.6, 300)])}
    for name, (seed, rows) in tables.items():
        (tmp_path / name).write_text(json.dumps({"data": str(tmp_path / "data"), "seed": seed, "methods": rows}))
    benchmark.print_combined([str(tmp_path / name) for name in tables], versus="erm")
    out = capsys.readouterr().out
    assert "Mean over 2 runs (seeds) of 3 table(s)" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    # worst group 70% and 60%: mean 65.0, standard error 7.07 / sqrt(2) = 5.0; gains +30 and +10: 20.0 +- 10.0
    assert "65.0 +- 5.0" in lines["adversarial"] and "+20.0 +- 10.0" in lines["adversarial"]
    assert "2.50" in lines["adversarial"] and "+20.0 +- 10.0 (2)" in lines["adversarial"]  # minus erm: the gain
    assert "45.0 +- 5.0" in lines["erm"] and "+0.0 +- 0.0 (2)" in lines["erm"]
