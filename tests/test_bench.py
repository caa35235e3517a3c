import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from weakspot.cli import main
from weakspot.shortcut import write_imageset
from weakspot.testing import assert_robust

BENCH_ARGS = ["--attacks", "superpixel,block,flip", "--budget", "80", "--size", "48", "--device", "cpu",
              "--groups", "cue", "--label", "label", "--no-progress"]


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory, button_data, button_model):
    """The button model as a checkpoint, and 24 test images (half of them with the button) as a manifest."""
    root = tmp_path_factory.mktemp("bench")
    _, test, _ = button_data
    write_imageset(test.subset(range(24)), root / "data", label="label")
    checkpoint = button_model.save(root / "model.pt")
    return root, str(checkpoint), str(root / "data")


def _report_without_timings(path):
    report = json.loads(Path(path).read_text())
    for attack in report["attacks"]:
        attack.pop("seconds")
    return report


def test_bench_prints_tables_and_writes_schema_report_and_figures(bench_files, capsys):
    root, checkpoint, data = bench_files
    report_path = root / "single.json"
    assert main(["bench", "--checkpoint", checkpoint, "--data", data, *BENCH_ARGS, "--json", str(report_path),
                 "--out", str(root / "figures")]) == 0
    output = capsys.readouterr().out
    assert "superpixel" in output and "error rate per group" in output and "*" in output
    report = json.loads(report_path.read_text())
    assert set(report) == {"model", "dataset", "n", "clean_accuracy", "attacks", "groups"}
    assert report["n"] == 24 and [a["name"] for a in report["attacks"]] == ["superpixel", "block", "flip"]
    assert {g["group"]["cue"] for g in report["groups"]} == {"button", "none"}
    assert all(set(g["robust_error"]) == {"superpixel", "block", "flip"} for g in report["groups"])
    superpixel = report["attacks"][0]
    assert superpixel["success_rate"] >= 0.9 and 0 < superpixel["mean_area"] < 0.5
    assert (root / "figures" / "success_vs_area.png").stat().st_size > 1000
    assert (root / "figures" / "examples.png").stat().st_size > 1000
    assert not list(root.glob("*.partial"))
    assert main(["check", str(report_path), "--min-clean", "0.9", "--min-robust", "flip=0.5"]) == 0
    assert main(["check", str(report_path), "--min-robust", "superpixel=0.5"]) == 1


def test_bench_resume_finishes_an_interrupted_run_identically(bench_files, monkeypatch):
    root, checkpoint, data = bench_files
    reference = root / "reference.json"
    assert main(["bench", "--checkpoint", checkpoint, "--data", data, *BENCH_ARGS, "--json", str(reference)]) == 0
    import weakspot.bench as bench

    monkeypatch.setattr(bench, "CHUNK", 8)
    calls = {"count": 0}
    real_save = bench._save_state

    def save_then_interrupt(*args):
        real_save(*args)
        calls["count"] += 1
        if calls["count"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(bench, "_save_state", save_then_interrupt)
    resumed = root / "resumed.json"
    assert main(["bench", "--checkpoint", checkpoint, "--data", data, *BENCH_ARGS, "--json", str(resumed)]) == 130
    assert not resumed.exists() and Path(str(resumed) + ".partial").is_file()
    monkeypatch.setattr(bench, "_save_state", real_save)
    assert main(["bench", "--checkpoint", checkpoint, "--data", data, *BENCH_ARGS, "--json", str(resumed), "--resume"]) == 0
    assert _report_without_timings(resumed) == _report_without_timings(reference)
    assert main(["bench", "--checkpoint", checkpoint, "--data", data, "--attacks", "flip", "--label", "label",
                 "--json", str(resumed), "--resume"]) == 0  # no partial state left: a fresh run


def free_port() -> int:
    """A port no one listens on now: two test runs on one machine must not share torchrun's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_bench_sharded_over_two_torchrun_ranks_equals_one_process(bench_files):
    root, checkpoint, data = bench_files
    single, sharded = root / "one.json", root / "two.json"
    assert main(["bench", "--checkpoint", checkpoint, "--data", data, *BENCH_ARGS, "--json", str(single)]) == 0
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
         "-m", "weakspot.cli", "bench", "--checkpoint", checkpoint, "--data", data, *BENCH_ARGS, "--json", str(sharded)],
        capture_output=True, text=True, timeout=300, env=environment)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert _report_without_timings(sharded) == _report_without_timings(single)


def test_bench_bad_input_exit_2(bench_files, tmp_path, capsys):
    root, checkpoint, data = bench_files
    assert main(["bench", "--checkpoint", checkpoint, "--data", data, "--attacks", "nope", "--label", "label"]) == 2
    assert main(["bench", "--checkpoint", str(tmp_path / "none.pt"), "--data", data, "--label", "label"]) == 2
    assert main(["bench", "--checkpoint", checkpoint, "--data", data, "--label", "label", "--resume"]) == 2
    errors = capsys.readouterr().err
    assert "unknown attack 'nope'" in errors and "none.pt: checkpoint not found" in errors and "--resume needs --json" in errors


def test_assert_robust_passes_and_fails_with_named_saved_images(button_data, button_model, tmp_path):
    _, test, _ = button_data
    images, labels = test.images[:12], test.labels[:12]
    assert_robust(button_model, images, labels, attack="flip", min_accuracy=0.9, budget=20, save_dir=tmp_path)
    names = [f"face_{i}.jpg" for i in range(12)]
    with pytest.raises(AssertionError) as failure:
        assert_robust(button_model, images, labels, attack="superpixel", min_accuracy=0.9, budget=80,
                      names=names, save_dir=tmp_path)
    message = str(failure.value)
    assert "robust accuracy under 'superpixel'" in message and "face_" in message and "'kind': 'superpixel'" in message
    saved = list((tmp_path / "superpixel").glob("*.png"))
    assert saved and all(str(path) in message for path in saved)


def test_assert_robust_accepts_a_bare_module(button_data, button_model):
    _, test, _ = button_data
    result = assert_robust(button_model.net.cpu(), test.images[:8], test.labels[:8], attack="flip",
                           min_accuracy=0.5, budget=10, save_dir=None)
    assert result.robust_accuracy >= 0.5
