import json
from pathlib import Path

import pytest
import torch

from weakspot.attacks.base import AttackResult, Perturbation
from weakspot.check import run_checks
from weakspot.cli import main
from weakspot.report import AttackRecords, BenchRecords, attribute_groups, build_report, load_report
from weakspot.errors import WeakspotError


def _result(fooled, correct, areas, queries):
    n = len(fooled)
    return AttackResult(
        name="block", labels=torch.zeros(n, dtype=torch.long), correct=torch.tensor(correct),
        fooled=torch.tensor(fooled), adversarial=torch.zeros(n, 3, 4, 4),
        perturbations=[Perturbation("block", area) if f else None for f, area in zip(fooled, areas)],
        original_class=torch.zeros(n, dtype=torch.long), original_probability=torch.ones(n),
        adversarial_class=torch.zeros(n, dtype=torch.long), adversarial_probability=torch.ones(n),
        queries=torch.tensor(queries), seconds=1.5)


def test_report_numbers_and_groups_from_records():
    result = _result([True, False, False, True], [True, True, False, True], [0.1, 0.0, 0.0, 0.3], [5, 10, 0, 7])
    records = BenchRecords(correct=[True, True, False, True],
                           groups=[{"gender": "f"}, {"gender": "f"}, {"gender": "m"}, {"gender": "m"}],
                           attacks={"block": AttackRecords.from_result(result)})
    report = build_report("tiny", "set", records)
    assert report["n"] == 4 and report["clean_accuracy"] == 0.75
    block = report["attacks"][0]
    assert block["success_rate"] == pytest.approx(2 / 3)
    assert block["robust_accuracy"] == 0.25
    assert block["mean_area"] == pytest.approx(0.2)
    assert block["mean_queries"] == pytest.approx(5.5)
    assert report["groups"] == [
        {"group": {"gender": "f"}, "n": 2, "clean_error": 0.0, "robust_error": {"block": 0.5}, "robust_n": {"block": 2}},
        {"group": {"gender": "m"}, "n": 2, "clean_error": 0.5, "robust_error": {"block": 1.0}, "robust_n": {"block": 2}},
    ]
    records.attacks["block"].fooled[1] = None  # an image the attack did not reach counts in no robust figure
    partial = build_report("tiny", "set", records)
    assert partial["groups"][0]["robust_error"] == {"block": 1.0} and partial["groups"][0]["robust_n"] == {"block": 1}
    assert partial["attacks"][0]["robust_accuracy"] == 0.0 and partial["attacks"][0]["mean_queries"] == pytest.approx(4)


def test_attribute_rows_equal_a_report_grouped_by_that_attribute_alone():
    result = _result([True, False, True, False, True], [True, True, True, False, True], [0.1] * 5, [5] * 5)
    groups = [{"gender": "f", "race": "a"}, {"gender": "f", "race": "b"}, {"gender": "m", "race": "a"},
              {"gender": "m", "race": "a"}, {"gender": "m", "race": "b"}]
    correct = [True, True, True, False, True]
    joint = build_report("tiny", "set", BenchRecords(correct, groups, {"block": AttackRecords.from_result(result)}))
    rows = attribute_groups(joint["groups"])
    for attribute in ("gender", "race"):
        alone = build_report("tiny", "set", BenchRecords(correct, [{attribute: g[attribute]} for g in groups],
                                                         {"block": AttackRecords.from_result(result)}))
        mine = [row for row in rows if attribute in row["group"]]
        assert [(row["group"], row["n"]) for row in mine] == [(row["group"], row["n"]) for row in alone["groups"]]
        for row, expected in zip(mine, alone["groups"]):
            assert row["clean_error"] == pytest.approx(expected["clean_error"])
            assert row["robust_error"]["block"] == pytest.approx(expected["robust_error"]["block"])


def test_merged_shards_equal_one_pass():
    result = _result([True, False, True, True], [True, True, True, True], [0.1, 0.0, 0.2, 0.3], [1, 2, 3, 4])
    whole = AttackRecords.from_result(result)
    first, second = AttackRecords("block", whole.fooled[:2], whole.area[:2], whole.queries[:2], 1.0), \
        AttackRecords("block", whole.fooled[2:], whole.area[2:], whole.queries[2:], 0.5)
    merged = BenchRecords([True, True], [{}, {}], {"block": first})
    merged.extend(BenchRecords([True, True], [{}, {}], {"block": second}))
    single = BenchRecords([True] * 4, [{}] * 4, {"block": whole})
    assert build_report("m", "d", merged) == build_report("m", "d", single)


def _write(path, clean=0.9, robust=None):
    robust = robust or {"superpixel": 0.6, "block": 0.45}
    payload = {"model": "m", "dataset": "d", "n": 10, "clean_accuracy": clean, "groups": [],
               "attacks": [{"name": name, "success_rate": 0.1, "robust_accuracy": value, "mean_area": 0.1,
                            "mean_queries": 3.0, "seconds": 1.0} for name, value in robust.items()]}
    path.write_text(json.dumps(payload))
    return str(path)


def test_check_passes_and_fails_on_crafted_reports(tmp_path, capsys):
    good = _write(tmp_path / "good.json")
    assert main(["check", good, "--min-clean", "0.85", "--min-robust", "superpixel=0.5,block=0.4"]) == 0
    assert main(["check", good, "--min-clean", "0.95"]) == 1
    assert main(["check", good, "--min-robust", "block=0.5"]) == 1
    assert main(["check", good, "--min-robust", "pgd=0.1"]) == 1  # an attack the report lacks fails
    old = _write(tmp_path / "old.json", clean=0.91, robust={"superpixel": 0.61, "block": 0.46})
    assert main(["check", good, "--baseline", old, "--max-drop", "0.02"]) == 0
    worse = _write(tmp_path / "worse.json", clean=0.9, robust={"superpixel": 0.5, "block": 0.45})
    assert main(["check", worse, "--baseline", old, "--max-drop", "0.02"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_bad_arguments_and_files_exit_2(tmp_path, capsys):
    good = _write(tmp_path / "good.json")
    assert main(["check", str(tmp_path / "none.json"), "--min-clean", "0.5"]) == 2
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["check", str(tmp_path / "broken.json"), "--min-clean", "0.5"]) == 2
    (tmp_path / "partial.json").write_text(json.dumps({"model": "m"}))
    assert main(["check", str(tmp_path / "partial.json"), "--min-clean", "0.5"]) == 2
    assert main(["check", good]) == 2
    assert main(["check", good, "--min-clean", "1.5"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["check", good, "--min-robust", "block"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any("none.json: report not found" in line for line in errors)
    assert any("partial.json: missing field 'dataset'" in line for line in errors)


def test_load_report_rejects_non_numbers(tmp_path):
    path = tmp_path / "r.json"
    _write(path)
    payload = json.loads(path.read_text())
    payload["attacks"][0]["robust_accuracy"] = "high"
    path.write_text(json.dumps(payload))
    with pytest.raises(WeakspotError, match="field 'robust_accuracy' is not a number"):
        load_report(path)


def test_run_checks_outcomes():
    report = {"clean_accuracy": 0.8, "attacks": [{"name": "block", "robust_accuracy": 0.3}]}
    outcomes = run_checks(report, min_clean=0.8, min_robust={"block": 0.31})
    assert [outcome.passed for outcome in outcomes] == [True, False]


def test_a_report_check_cannot_read_is_exit_2_not_a_failed_check(tmp_path, capsys):
    """1 means a check failed: a report nested too deeply, with a number too long to read, an accuracy outside
    [0, 1] or an attack named twice is unreadable, exit 2 and one line naming it."""
    good = json.loads(Path(_write(tmp_path / "good.json")).read_text())
    broken = {"nested.json": "[" * 100_000 + "]" * 100_000,
              "digits.json": json.dumps(good).replace('"n": ', '"n": ' + "9" * 5000 + ", \"n_old\": ", 1),
              "accuracy.json": json.dumps({**good, "clean_accuracy": 5.0}),
              "robust.json": json.dumps({**good, "attacks": [{**good["attacks"][0], "robust_accuracy": -0.5}]}),
              "twice.json": json.dumps({**good, "attacks": [good["attacks"][0], good["attacks"][0]]})}
    expected = {"nested.json": "nested too deeply", "digits.json": "not a readable JSON report",
                "accuracy.json": "'clean_accuracy' is not a number in [0, 1]", "robust.json": "robust_accuracy is not in",
                "twice.json": "appears twice"}
    for name, text in broken.items():
        (tmp_path / name).write_text(text)
        assert main(["check", str(tmp_path / name), "--min-clean", "0.5"]) == 2, name
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(errors) == 1 and name in errors[0] and expected[name] in errors[0], errors
