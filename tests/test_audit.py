"""``weakspot audit`` end to end on a tiny generated dataset with an age column: per-group rows with age bins,
valid PNGs, a report ``weakspot check`` reads, and a failing run that leaves the previous outputs as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weakspot.attacks.base import Attack, AttackResult
from weakspot.audit import WAVE, Bins, attack_until_narrow, subgroup_orders
from weakspot.stats import wilson
from weakspot.cli import main
from weakspot.models import load_model
from weakspot.report import load_report
from weakspot.shortcut import make_shortcut_dataset, write_imageset

pytestmark = pytest.mark.usefixtures("one_thread")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
AGES = [3, 15, 25, 33, 47, 52, 61, 88]


@pytest.fixture(scope="module")
def audit_files(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Path, Path]:
    """24 images at 32 px with columns label, cue and age; a tiny timm model saved as a plain state_dict."""
    root = tmp_path_factory.mktemp("audit")
    imageset, _ = make_shortcut_dataset(24, 32, cue_rate=0.5, seed=0)
    imageset.groups["age"] = [str(AGES[index % len(AGES)]) for index in range(len(imageset))]
    write_imageset(imageset, root / "data", label="label")
    torch.manual_seed(0)
    torch.save(load_model("test_efficientnet", weights=None, class_names=imageset.class_names).model.state_dict(),
               root / "plain.pth")
    return root, root / "data"


def _audit(root: Path, out: Path, *extra: str) -> int:
    return main(["audit", "--checkpoint", str(root / "plain.pth"), "--model", "test_efficientnet", "--classes",
                 "tall,wide", "--data", str(root / "data"), "--label", "label", "--groups", "cue,age_bin",
                 "--bins", "age=0,20,40,60", "--size", "32", "--budget", "30", "--device", "cpu", "--segments", "8",
                 "--samples", "32", "--explain-images", "4", "--out", str(out), *extra])


def test_bins_label_values_as_documented() -> None:
    bins = Bins("age", (0, 20, 40, 60))
    assert bins.group == "age_bin" and bins.labels() == ["<0", "0-19", "20-39", "40-59", "60+"]
    assert [bins.label(value) for value in (-1, 0, 19.5, 20, 59, 60, 100)] == ["<0", "0-19", "0-19", "20-39",
                                                                              "40-59", "60+", "60+"]


def test_audit_writes_report_with_age_bins_mean_maps_and_examples(audit_files: tuple[Path, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = audit_files
    out = tmp_path / "audit"
    assert _audit(root, out, "--attacks", "flip,block", "--explainers", "lime,shap,gradcam") == 0
    printed = capsys.readouterr().out
    assert "error rate per group" in printed
    report = load_report(out / "report.json")  # the bench schema, readable by weakspot check
    assert {"model", "dataset", "n", "clean_accuracy", "attacks", "groups", "audit"} == set(report)
    assert report["n"] == 24 and [attack["name"] for attack in report["attacks"]] == ["flip", "block"]
    assert {row["group"]["age_bin"] for row in report["groups"]} == {"0-19", "20-39", "40-59", "60+"}
    assert all(set(row["group"]) == {"cue", "age_bin"} and set(row["robust_error"]) == {"flip", "block"}
               for row in report["groups"])
    assert sum(row["n"] for row in report["groups"]) == 24
    audit = report["audit"]
    assert audit["bins"] == {"age_bin": {"column": "age", "edges": [0, 20, 40, 60],
                                         "labels": ["<0", "0-19", "20-39", "40-59", "60+"]}}
    assert audit["explained_per_class"] == {"tall": 4, "wide": 4}
    pictures = [*audit["mean_maps"].values(), audit["examples"], audit["curves"], audit["shortcuts"]["figure"]]
    assert [finding["label"] for finding in audit["shortcuts"]["findings"]] == ["tall", "wide"]
    assert list(audit["stage_seconds"]) == ["attacks", "lime maps", "shap maps", "gradcam maps", "shortcuts"]
    assert list(audit["mean_maps"]) == ["lime", "shap", "gradcam"]
    diagnosis = audit["diagnosis"]  # printed first, with the method it recommends
    assert diagnosis["kind"] in ("local cue", "subgroup gap", "none") and printed.startswith("weak spot: ")
    confirmed = any(finding["confirmed"] for finding in audit["shortcuts"]["findings"])
    assert (diagnosis["kind"] == "local cue") == confirmed
    for name in pictures:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    assert sorted(path.name for path in out.iterdir()) == sorted([*pictures, "report.json"])  # no temp files
    assert main(["check", str(out / "report.json"), "--min-clean", "0"]) == 0


def test_failing_audit_leaves_the_previous_outputs(audit_files: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = audit_files
    out = tmp_path / "audit"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"model": "previous run"}))
    (out / "mean_lime.png").write_bytes(PNG_MAGIC + b"previous")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    # flip runs, then superpixel's guidance alone needs more than the budget: the run fails half-way
    assert _audit(root, out, "--attacks", "flip,superpixel", "--budget", "5", "--explainers", "lime") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "attack 'superpixel'" in error
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


@pytest.mark.parametrize("extra, expected", [
    (["--bins", "age=40,20"], "argument --bins: expected COLUMN=E1,E2,... with increasing integer edges"),
    (["--bins", "label=0,1"],
     "labels.csv: column 'label' has the non-numeric value 'tall' in the row of 'images/00000.png' (--bins label=...)"),
    (["--explainers", "lime,crystal-ball"], "unknown explainer 'crystal-ball'"),
    (["--attacks", "laser"], "unknown attack 'laser'"),
], ids=["bins-not-increasing", "bins-not-numeric", "unknown-explainer", "unknown-attack"])
def test_audit_bad_input_is_one_line_and_writes_nothing(audit_files: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], extra: list[str],
                                                        expected: str) -> None:
    root, _ = audit_files
    try:
        code = _audit(root, tmp_path / "audit", *extra)
    except SystemExit as exit_info:
        code = int(exit_info.code)
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and expected in error, error
    assert list(tmp_path.iterdir()) == []


def test_the_audit_attacks_a_stratified_sample_with_intervals(audit_files: tuple[Path, Path], tmp_path: Path) -> None:
    """Each subgroup contributes as many images as a 95% interval of +-WIDTH needs at worst (4 at 0.5), the
    report is of that sample, and every subgroup's errors carry their Wilson interval; --all-images attacks all."""
    root, _ = audit_files
    assert _audit(root, tmp_path / "sampled", "--attacks", "flip", "--explainers", "gradcam", "--interval", "0.5") == 0
    report = load_report(tmp_path / "sampled" / "report.json")
    sample = report["audit"]["sample"]
    assert sample["of"] == 24 and sample["attacked"] == report["n"] < 24 and sample["interval"] == 0.5
    assert all(group["n"] <= 4 for group in report["groups"])
    assert sample["reached"]["flip"] == sum(group["robust_n"]["flip"] for group in report["groups"]) <= report["n"]
    for group in report["groups"]:
        low, high = group["robust_error_interval"]["flip"]
        assert 0.0 <= low <= group["robust_error"]["flip"] <= high <= 1.0
    assert _audit(root, tmp_path / "all", "--attacks", "flip", "--explainers", "gradcam", "--all-images") == 0
    assert load_report(tmp_path / "all" / "report.json")["n"] == 24


def test_subgroup_orders_and_wilson_interval() -> None:
    keys = [("a",)] * 300 + [("b",)] * 50
    orders = subgroup_orders(keys, 0.1, seed=3)
    assert [len(order) for order in orders] == [97, 50] and orders == subgroup_orders(keys, 0.1, seed=3)
    assert set(orders[0]) < set(range(300)) and sorted(orders[1]) == list(range(300, 350))
    assert [len(order) for order in subgroup_orders(keys, None, seed=3)] == [300, 50]
    low, high = wilson(0.5, 97)
    assert high - low <= 0.2 and low < 0.5 < high
    assert wilson(0.0, 10)[0] == 0.0 and wilson(1.0, 10)[1] == 1.0


class BrightFools(Attack):
    """A stand-in attack whose outcome is known: it fools exactly the images brighter than 0.5, one query each."""

    name = "bright"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        count = len(labels)
        fooled = images.mean(dim=(1, 2, 3)) > 0.5
        return AttackResult(self.name, labels, torch.ones(count, dtype=torch.bool), fooled, images, [None] * count,
                            labels, torch.ones(count), 1 - labels, torch.ones(count), torch.ones(count, dtype=torch.long),
                            0.0)


def test_an_attack_stops_taking_a_subgroup_once_its_interval_is_narrow() -> None:
    """A subgroup the attack always fools is pinned down by one wave; one it fools about half the time takes
    (nearly) the whole sample; every image reached is attacked once, and no other."""
    tiny_classifier = load_model("test_efficientnet", weights=None, class_names=["a", "b"])
    keys = [("always",)] * 150 + [("half",)] * 150
    images = torch.zeros(300, 3, 4, 4)
    images[:150] = 1.0
    images[150::2] = 1.0
    orders = subgroup_orders(keys, 0.1, seed=0)
    advanced: list[int] = []
    records, results, covered = attack_until_narrow(BrightFools(tiny_classifier), images, torch.zeros(300, dtype=torch.long),
                                                    [True] * 300, orders, 0.1, advanced.append)
    reached = [row for row, fooled in enumerate(records.fooled) if fooled is not None]
    half_taken = len(reached) - WAVE
    assert half_taken >= 3 * WAVE and sorted(covered) == reached == sorted(orders[0][:WAVE] + orders[1][:half_taken])
    assert sum(advanced) == len(covered) == sum(len(result.labels) for result in results)
    assert all(records.fooled[row] for row in orders[0][:WAVE]) and sum(records.queries) == len(covered)
    everything, _, _ = attack_until_narrow(BrightFools(tiny_classifier), images, torch.zeros(300, dtype=torch.long),
                                           [True] * 300, subgroup_orders(keys, None, seed=0), None, advanced.append)
    assert None not in everything.fooled
