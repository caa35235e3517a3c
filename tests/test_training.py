"""The fine-tuning loop: exact resume (in-process and after killing a real ``weakspot train``), weights-only
checkpoints, early stopping, the schedule, and two torchrun ranks training one model."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from weakspot.augment.baselines import Cutout
from weakspot.cli import main
from weakspot.errors import WeakspotError
from weakspot.fileio import append_json_line
from weakspot.models import load_model
from weakspot.shortcut import make_shortcut_dataset, write_imageset
from weakspot.training import TrainConfig, fit, train_classifier
from weakspot.training.steps import batch_starts, epoch_batches

ROOT = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(epochs=2, batch_size=16, lr=3e-3, seed=7, warmup_epochs=0.5, schedule="cosine",
                     label_smoothing=0.1, augment=True)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    train, _ = make_shortcut_dataset(64, 32, cue_rate=1.0, signal=0.0, seed=11)
    val, _ = make_shortcut_dataset(32, 32, cue_rate=1.0, signal=0.0, seed=12)
    return train, val


@pytest.fixture(scope="module")
def tiny_dir(tiny, tmp_path_factory):
    """The tiny data on disk with a split column, as ``weakspot data shortcut`` writes it."""
    train, val = tiny
    both = train.subset(range(len(train)))
    both.images, both.labels = torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels])
    both.groups = {"split": ["train"] * len(train) + ["val"] * len(val)}
    return write_imageset(both, tmp_path_factory.mktemp("data") / "tiny", label="shape")


def _model(class_names):
    torch.manual_seed(0)
    return load_model("test_efficientnet", weights=None, class_names=class_names, device="cpu")


def _weights(classifier):
    return {key: value.clone() for key, value in classifier.model.state_dict().items()}


def _assert_same(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


class _InterruptAfter:
    """A training-stream transform (random cutout: it uses the global RNG) that raises KeyboardInterrupt
    on batch ``limit + 1``, i.e. a Ctrl-C in the middle of the second epoch."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.calls, self.cutout, self.epochs_started = limit, 0, Cutout(area=0.1), []

    def start_step(self, progress, classifier):
        assert not classifier.net.training
        if progress == int(progress):
            self.epochs_started.append(int(progress))

    def __call__(self, images, labels, classifier):
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise KeyboardInterrupt
        return self.cutout(images, labels, classifier)


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(tiny, tmp_path):
    train, val = tiny
    reference = _model(train.class_names)
    uninterrupted = _InterruptAfter(None)
    fit(reference, train.images, train.labels, CONFIG, val.images, val.labels, out_dir=tmp_path / "whole",
        transform=uninterrupted)
    assert uninterrupted.epochs_started == [0, 1]
    interrupted = _model(train.class_names)
    with pytest.raises(KeyboardInterrupt):  # 64 images / 16 = 4 batches per epoch: stop in epoch 2
        fit(interrupted, train.images, train.labels, CONFIG, val.images, val.labels, out_dir=tmp_path / "cut",
            transform=_InterruptAfter(6))
    assert len((tmp_path / "cut" / "log.jsonl").read_text().splitlines()) == 1
    resumed = _model(train.class_names)  # a fresh process would start from scratch weights too
    resuming = _InterruptAfter(None)
    result = fit(resumed, train.images, train.labels, CONFIG, val.images, val.labels, out_dir=tmp_path / "cut",
                 resume=True, transform=resuming)
    assert resuming.epochs_started == [1]  # the per-epoch hook runs again for the replayed epoch only
    _assert_same(_weights(reference), _weights(resumed))
    assert [entry["epoch"] for entry in result.history] == [1, 2]
    whole_log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    cut_log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [entry["train_loss"] for entry in whole_log] == [entry["train_loss"] for entry in cut_log]


def test_checkpoints_load_weights_only_and_hold_the_training_state(tiny, tmp_path):
    train, val = tiny
    classifier = _model(train.class_names)
    fit(classifier, train.images, train.labels, CONFIG, val.images, val.labels, out_dir=tmp_path)
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    extra = payload["extra_state"]
    assert extra["epoch"] == 2 and {"optimizer", "scheduler", "scaler", "rng", "history"} <= set(extra)
    assert isinstance(extra["rng"][0]["cpu"], torch.Tensor)
    best = load_model(None, weights=tmp_path / "best.pt")
    assert best.meta["epoch"] == max((e for e in extra["history"]), key=lambda e: e["val_accuracy"])["epoch"]
    with pytest.raises(WeakspotError, match="already there"):
        fit(classifier, train.images, train.labels, CONFIG, out_dir=tmp_path)
    with pytest.raises(WeakspotError, match="batch_size=16"):
        fit(classifier, train.images, train.labels, TrainConfig(**{**CONFIG.__dict__, "batch_size": 8}),
            out_dir=tmp_path, resume=True)


def test_warmup_then_cosine_and_early_stopping(tiny):
    train, val = tiny
    classifier = _model(train.class_names)
    config = TrainConfig(epochs=4, batch_size=16, lr=1e-3, warmup_epochs=1.0, schedule="cosine", seed=0)
    history = fit(classifier, train.images, train.labels, config).history
    assert history[0]["lr"] == pytest.approx(1e-3)  # end of the 4-step warm-up: the peak
    assert history[1]["lr"] > history[2]["lr"] > history[3]["lr"] == pytest.approx(0.0, abs=1e-12)
    train_classifier(classifier, train.images, train.labels, TrainConfig(epochs=4, lr=3e-3, batch_size=16))
    predicted, _ = classifier.predict(val.images)
    right = torch.nonzero(predicted == val.labels).flatten()  # 100% on these: no later epoch can beat epoch 1
    result = fit(classifier, train.images, train.labels, TrainConfig(epochs=6, lr=1e-7, patience=2, seed=0),
                 val.images[right], val.labels[right])
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    assert result.best_val_accuracy == 1.0


class _RestartFrom(_InterruptAfter):
    """Asks for the learning rate's restart at every step from epoch 1 on (only the first ask counts)."""

    def start_step(self, progress, classifier):
        super().start_step(progress, classifier)
        return progress >= 1.0


def test_a_transform_restarts_the_decay_once_and_a_resume_keeps_the_restart(tiny, tmp_path):
    train, val = tiny
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-3, warmup_epochs=0.0, schedule="cosine", seed=0)
    plain = fit(_model(train.class_names), train.images, train.labels, config).history
    reference = _model(train.class_names)
    history = fit(reference, train.images, train.labels, config, out_dir=tmp_path / "whole",
                  transform=_RestartFrom(None)).history
    assert plain[1]["lr"] == pytest.approx(0.25e-3)  # 8 of 12 cosine steps done
    assert history[0]["lr"] == plain[0]["lr"]
    assert history[1]["lr"] == pytest.approx(0.5e-3)  # 4 of the 8 steps after the restart at step 4
    assert history[2]["lr"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(KeyboardInterrupt):  # stopped in epoch 3, after the restart
        fit(_model(train.class_names), train.images, train.labels, config, out_dir=tmp_path / "cut",
            transform=_RestartFrom(9))
    resumed = _model(train.class_names)
    fit(resumed, train.images, train.labels, config, out_dir=tmp_path / "cut", resume=True,
        transform=_RestartFrom(None))
    _assert_same(_weights(reference), _weights(resumed))


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_chooses_the_weights_the_fit_ends_with(tiny, tmp_path, keep):
    """Epoch 1 is the best validation epoch (100% on these images), so "best" and "last" differ."""
    train, val = tiny
    classifier = _model(train.class_names)
    train_classifier(classifier, train.images, train.labels, TrainConfig(epochs=4, lr=3e-3, batch_size=16))
    predicted, _ = classifier.predict(val.images)
    right = torch.nonzero(predicted == val.labels).flatten()
    result = fit(classifier, train.images, train.labels, TrainConfig(epochs=3, lr=1e-4, seed=0, keep=keep),
                 val.images[right], val.labels[right], out_dir=tmp_path)
    assert result.best_epoch == 1 and result.kept_epoch == (1 if keep == "best" else 3)
    best, last = (torch.load(tmp_path / name, weights_only=True)["state_dict"] for name in ("best.pt", "last.pt"))
    held = classifier.model.state_dict()
    kept, other = (best, last) if keep == "best" else (last, best)
    assert all(torch.equal(held[key].cpu(), kept[key]) for key in kept)
    assert not all(torch.equal(held[key].cpu(), other[key]) for key in other)
    with pytest.raises(WeakspotError, match="keep must be one of"):
        TrainConfig(keep="first").validate()


def _train_args(data: Path, out: Path, epochs: int) -> list[str]:
    return ["train", "--data", str(data), "--label", "shape", "--size", "32", "--model", "test_efficientnet",
            "--weights", "none", "--epochs", str(epochs), "--batch-size", "16", "--lr", "3e-3", "--out", str(out),
            "--patience", "0", "--no-progress", "--device", "cpu"]


def test_killed_cli_run_resumes_to_the_uninterrupted_result(tiny_dir, tmp_path):
    epochs = 6
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "weakspot.cli", *_train_args(tiny_dir, tmp_path / "killed", epochs)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # what a scheduler sends; the CLI treats it as Ctrl-C
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr, stderr
    done = torch.load(checkpoint, weights_only=True)["extra_state"]["epoch"]
    assert 1 <= done < epochs
    assert main([*_train_args(tiny_dir, tmp_path / "killed", epochs), "--resume"]) == 0
    assert main(_train_args(tiny_dir, tmp_path / "whole", epochs)) == 0
    _assert_same(torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["state_dict"],
                 torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["state_dict"])
    results = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert results["epochs_run"] == epochs and results["method"] == "erm"


WORKER = textwrap.dedent("""
    import sys, torch
    from weakspot.distributed import finish_distributed, init_distributed
    from weakspot.models import load_model
    from weakspot.shortcut import make_shortcut_dataset
    from weakspot.training import TrainConfig, fit

    rank, device = init_distributed("cpu")
    train, _ = make_shortcut_dataset(48, 32, cue_rate=1.0, signal=0.0, seed=11)
    torch.manual_seed(rank.rank)  # different initial heads: DDP must broadcast rank 0's
    classifier = load_model("test_efficientnet", weights=None, class_names=train.class_names, device=device)
    result = fit(classifier, train.images, train.labels, TrainConfig(epochs=2, batch_size=16, lr=3e-3, augment=True),
                 out_dir=sys.argv[1])
    torch.save({"state": classifier.model.state_dict(), "seen": [e["images_per_second"] * e["seconds"] for e in result.history]},
               f"{sys.argv[1]}/rank{rank.rank}.pt")
    finish_distributed()
""")


def test_torchrun_two_ranks_train_one_model(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(worker), str(out)],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-2000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    _assert_same(rank0["state"], rank1["state"])
    assert rank0["seen"] == pytest.approx([48.0, 48.0])  # the ranks split the 48 images, not 2 x 48
    _assert_same(torch.load(out / "last.pt", weights_only=True)["state_dict"], rank0["state"])
    assert len((out / "log.jsonl").read_text().splitlines()) == 2  # rank 0 alone writes the log


def test_a_log_line_the_os_refuses_is_a_one_line_error():
    with pytest.raises(WeakspotError, match="log.jsonl: cannot write there"):
        append_json_line("/proc/weakspot/log.jsonl", {"epoch": 1})


def test_a_last_batch_of_one_image_joins_the_batch_before_it(tiny):
    """BatchNorm in train mode cannot normalise one image: 12 images at a batch size of 11 train as one batch of
    12 per epoch, and a run that could only give batches of one is refused before anything is written."""
    train, _ = tiny
    assert batch_starts(12, 11, 1) == [0] and batch_starts(13, 11, 1) == [0, 11] and batch_starts(9, 4, 2) == [0, 4]
    config = TrainConfig(epochs=2, batch_size=11, lr=1e-3, seed=0)
    assert [batch.tolist() for batch in epoch_batches(12, config, 0, 0, 1)] == [torch.randperm(
        12, generator=torch.Generator().manual_seed(0)).tolist()]
    history = fit(_model(train.class_names), train.images[:12], train.labels[:12], config).history
    assert len(history) == 2 and all(math.isfinite(entry["train_loss"]) for entry in history)
    for images, batch_size in ((1, 16), (12, 1)):
        with pytest.raises(WeakspotError, match=f"{images} training images and a batch size of {batch_size} "):
            fit(_model(train.class_names), train.images[:images], train.labels[:images],
                TrainConfig(epochs=1, batch_size=batch_size))
