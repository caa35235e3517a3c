"""Hardening: every subcommand fed the input users break it with.

A bad input must end in exit code 2 and ONE line on stderr that names the file or argument and the
problem (no traceback), and must leave every file already on disk byte for byte as it was (no half-written
output either). Odd but valid images (CMYK, 16-bit, alpha) load; a model that answers NaN is reported and
never "fooled"; an interrupted ``data shortcut`` leaves nothing behind; ``bench`` is deterministic.
"""

from __future__ import annotations

import errno
import contextlib
import json
import os
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from weakspot.attacks import create_attack
from weakspot.cli import main
from weakspot.data import load_dataset, read_image
from weakspot.models import Classifier, Preprocessing, load_model, read_checkpoint
from weakspot.shortcut import make_shortcut_dataset, write_imageset

IMAGES = 16  # in the tiny dataset; 32 px, classes tall / wide
pytestmark = pytest.mark.usefixtures("one_thread")


class _OpensAFile:
    """Unpickling this calls ``open(marker, "w")``: the file's existence shows whether a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.marker, "w")


def _write_manifest(folder: Path, rows: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.csv").write_text("file,label\n" + "".join(f"{name},{label}\n" for name, label in rows))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """Everything the cases need, in one folder whose bytes a failing run must not change."""
    root = tmp_path_factory.mktemp("hardening")
    imageset, _ = make_shortcut_dataset(IMAGES, 32, cue_rate=1.0, seed=0)
    data = write_imageset(imageset, root / "data", label="label")
    for name, text in {"nocolumn.csv": "file,cue\nimages/00000.png,none\n",
                       "unknown.csv": "file,label\nimages/00000.png,tall\nimages/00001.png,robot\n",
                       "duplicate.csv": "file,label\nimages/00000.png,tall\nimages/00000.png,wide\n",
                       "twocolumns.csv": "file,label,label\nimages/00000.png,tall,wide\n",
                       "escape.csv": "file,label\n../../etc/passwd,tall\n",
                       "header.csv": "file,label\n", "empty.csv": "",
                       "splits.csv": "file,label,split\nimages/00000.png,tall,train\nimages/00001.png,wide,holdout\n"
                                     "images/00002.png,tall,Train\nimages/00003.png,wide,test\n",
                       "nanage.csv": "file,label,age\nimages/00000.png,tall,30\nimages/00001.png,wide,nan\n",
                       "infage.csv": "file,label,age\nimages/00000.png,tall,inf\nimages/00001.png,wide,30\n",
                       "onlytall.csv": "file,label\n" + "".join(f"images/{index:05d}.png,tall\n" for index in range(8)),
                       }.items():
        (data / name).write_text(text)
    (data / "binary.csv").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01")  # a JPEG named .csv

    pictures = root / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(pictures / "good.jpg")
    good = (pictures / "good.jpg").read_bytes()
    (pictures / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (pictures / "zero.jpg").write_bytes(b"")
    (pictures / "folder.jpg").mkdir()
    for name in ("truncated.jpg", "zero.jpg"):
        (root / "broken" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(pictures / name, root / "broken" / "images" / name)
    _write_manifest(root / "broken", [("images/truncated.jpg", "tall"), ("images/zero.jpg", "wide")])

    modes = root / "modes" / "images"
    modes.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 40, 90)).convert("CMYK").save(modes / "cmyk.jpg")
    Image.fromarray(np.full((30, 40), 32896, dtype=np.uint16)).save(modes / "sixteen.png")  # 0x8080: mid grey
    Image.new("RGBA", (40, 30), (0, 0, 255, 128)).save(modes / "rgba.png")  # half-transparent blue
    _write_manifest(root / "modes", [("images/cmyk.jpg", "tall"), ("images/sixteen.png", "wide"),
                                     ("images/rgba.png", "tall")])

    torch.manual_seed(0)
    model = load_model("test_efficientnet", weights=None, class_names=imageset.class_names, device="cpu")
    model.save(root / "model.pt")
    load_model("test_efficientnet", weights=None, class_names=["a", "b", "c"], device="cpu").save(root / "three.pt")
    payload = read_checkpoint(root / "model.pt")
    torch.save({**payload, "arch": "test_resnet"}, root / "other_arch.pt")  # efficientnet weights, resnet tag
    torch.save({**payload, "meta_json": _OpensAFile(root / "payload_ran")}, root / "pickle.pt")
    (root / "zero.pt").write_bytes(b"")
    torch.save(model.model.state_dict(), root / "plain.pth")  # a model trained elsewhere: weights only
    torch.save({"state_dict": model.model.state_dict(), "hook": _OpensAFile(root / "payload_ran")}, root / "pickle.pth")
    (root / "zero.safetensors").write_bytes(b"")
    with torch.no_grad():
        model.model.get_classifier().weight.fill_(float("nan"))
    model.save(root / "nan.pt")

    assert main(["train", "--data", str(data), "--label", "label", "--size", "32", "--model", "test_efficientnet",
                 "--weights", "none", "--epochs", "1", "--batch-size", "8", "--no-augment", "--no-progress",
                 "--device", "cpu", "--out", str(root / "run")]) == 0
    (root / "copied_run").mkdir()
    shutil.copy(root / "model.pt", root / "copied_run" / "last.pt")  # a model, not a training run's last.pt

    outputs = root / "outputs"
    outputs.mkdir()
    (outputs / "report.json").write_text(json.dumps({"model": "old", "dataset": "old", "n": 1, "clean_accuracy": 1.0,
                                                      "attacks": [], "groups": []}))
    (outputs / "figure.png").write_bytes(good)
    (outputs / "report.json.partial").write_text(json.dumps({"identity": {"seed": 7}, "correct": [], "groups": [],
                                                             "attacks": {}}))  # saved by a run of other arguments
    for folder in ("benchmark", "demo"):
        (outputs / folder).mkdir()
        (outputs / folder / "keep.txt").write_text("written by an earlier run")
    (root / "emptydir").mkdir()
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders)."""
    return {str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
            for path in sorted(root.rglob("*"))}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``weakspot ARGV`` (argparse errors leave by SystemExit(2))."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = int(exit_info.code)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *expected: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("weakspot ") and ": error: " in lines[0], err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


DATA = "--data {root}/data --label label --size 32"
ATTACK = "attack --checkpoint {root}/model.pt " + DATA + " --attacks flip --device cpu --json {root}/outputs/report.json"
BENCH = ("bench --checkpoint {root}/model.pt " + DATA + " --attacks flip --device cpu --no-progress "
         "--json {root}/outputs/report.json")
EXPLAIN = "explain --method occlusion --segments 8 --device cpu --out {root}/outputs/figure.png"
GOOD = "--checkpoint {root}/model.pt --image {root}/pictures/good.jpg"
TRAINING = "--label label --size 32 --model test_efficientnet --epochs 1 --no-progress --device cpu"
TRAIN = "train --data {root}/data " + TRAINING
FINETUNE = "finetune --data {root}/data " + TRAINING
NEW_RUN = " --out {root}/new_run"
DEMO = "demo --out {root}/outputs/demo --device cpu"
PLAIN = "--checkpoint {root}/plain.pth --model test_efficientnet --classes tall,wide"
IMPORT = "import " + PLAIN + " --out {root}/outputs/imported.pt"
AUDIT = ("audit --checkpoint {root}/model.pt " + DATA + " --attacks flip --explainers gradcam --device cpu "
         "--out {root}/outputs")
LONG = "n" * 300  # longer than any filesystem's name limit (255 bytes)
MISSING = "--checkpoint {root}/missing.pt"  # work that would fail: an output refused first was refused before it

# (case, command line, what the one error line must contain)
BAD_INPUT = [
    # data inspect: paths, manifests, sizes
    ("inspect-missing-path", "data inspect --data {root}/missing", ["missing: no such file or directory"]),
    ("inspect-empty-folder", "data inspect --data {root}/emptydir", ["emptydir: no class folders"]),
    ("inspect-zero-byte-manifest", "data inspect --data {root}/data/empty.csv --label label",
     ["empty.csv: empty manifest"]),
    ("inspect-binary-manifest", "data inspect --data {root}/data/binary.csv --label label",
     ["binary.csv: not a readable CSV"]),
    ("inspect-manifest-without-rows", "data inspect --data {root}/data/header.csv --label label", ["header.csv: no rows"]),
    ("inspect-missing-column", "data inspect --data {root}/data/nocolumn.csv --label label",
     ["nocolumn.csv: no column 'label'"]),
    ("inspect-duplicate-row", "data inspect --data {root}/data/duplicate.csv --label label",
     ["duplicate.csv:3: duplicate row for 'images/00000.png'"]),
    ("inspect-repeated-column", "data inspect --data {root}/data/twocolumns.csv --label label",
     ["twocolumns.csv: column 'label' appears twice"]),
    ("inspect-path-escape", "data inspect --data {root}/data/escape.csv --label label",
     ["escape.csv:2: path '../../etc/passwd' leaves the dataset folder"]),
    ("inspect-sample-misses-a-class", "data inspect --data {root}/data --label label --size 32 --max-images 1",
     ["labels.csv: the sample of --max-images 1 holds no image of class '"]),
    ("inspect-unknown-split-values", "data inspect --data {root}/data/splits.csv --label label --groups split",
     ["splits.csv: column 'split' has unknown value(s) 'Train', 'holdout' (allowed: train, val, test, clean_test)"]),
    ("inspect-no-readable-image", "data inspect --data {root}/broken --label label",
     ["broken/labels.csv: none of the 2 images could be read"]),
    ("inspect-size-zero", "data inspect --data {root}/data --label label --size 0", ["argument --size", "got 0"]),
    ("inspect-size-negative", "data inspect --data {root}/data --label label --size -5", ["argument --size", "got -5"]),
    ("inspect-size-absurd", "data inspect --data {root}/data --label label --size 100000",
     ["argument --size", "got 100000"]),
    ("inspect-negative-seed", "data inspect --data {root}/data --label label --max-images 4 --seed -1",
     ["argument --seed", "got -1"]),
    # data shortcut
    ("shortcut-missing-source", "data shortcut --source {root}/missing --label label --out {root}/new_benchmark",
     ["missing: no such file or directory"]),
    ("shortcut-out-exists", "data shortcut --source {root}/data --label label --out {root}/outputs/benchmark",
     ["benchmark: already exists"]),
    ("shortcut-rate", "data shortcut --source {root}/data --label label --out {root}/new_benchmark --rate 2",
     ["cue rate must be in [0, 1], got 2.0"]),
    ("shortcut-size-absurd", "data shortcut --source {root}/data --label label --out {root}/new_benchmark --size 99999",
     ["argument --size", "got 99999"]),
    ("shortcut-unknown-cue-class",
     "data shortcut --source {root}/data --label label --out {root}/new_benchmark --cue-class robot",
     ["cue class 'robot' is not a class of 'label'"]),
    # train
    ("train-missing-data", "train --data {root}/missing " + TRAINING + " --weights none" + NEW_RUN,
     ["missing: no such file or directory"]),
    ("train-unknown-split-values", "train --data {root}/data/splits.csv " + TRAINING + " --weights none" + NEW_RUN,
     ["splits.csv: column 'split' has unknown value(s) 'Train', 'holdout'"]),
    ("train-one-class", "train --data {root}/data/onlytall.csv " + TRAINING + " --weights none --batch-size 4" + NEW_RUN,
     ["a classifier needs at least two classes, got 1 (tall)"]),
    ("train-path-escape", "train --data {root}/data/escape.csv " + TRAINING + " --weights none" + NEW_RUN,
     ["leaves the dataset folder"]),
    ("train-other-class-count", TRAIN + " --weights {root}/three.pt" + NEW_RUN,
     ["three.pt: classes ['a', 'b', 'c'] differ from the data's ['tall', 'wide']"]),
    ("train-other-architecture", TRAIN + " --weights {root}/other_arch.pt" + NEW_RUN,
     ["other_arch.pt: weights do not fit 'test_resnet'"]),
    ("train-pickle-checkpoint", TRAIN + " --weights {root}/pickle.pt" + NEW_RUN, ["pickle.pt: refused"]),
    ("train-zero-byte-checkpoint", TRAIN + " --weights {root}/zero.pt" + NEW_RUN, ["zero.pt: not a readable checkpoint"]),
    ("train-run-already-there", TRAIN + " --weights none --batch-size 8 --no-augment --out {root}/run",
     ["run/last.pt: a run is already there"]),
    ("train-resume-other-architecture",
     "train --data {root}/data --label label --size 32 --model test_resnet --epochs 1 --batch-size 8 --no-augment "
     "--no-progress --device cpu --weights none --out {root}/run --resume",
     ["run/last.pt: holds a 'test_efficientnet'", "'test_resnet'"]),
    ("train-resume-other-settings", TRAIN + " --weights none --batch-size 8 --no-augment --epochs 3 --out {root}/run --resume",
     ["run/last.pt: was written with epochs=1, this run has 3"]),
    ("train-resume-not-a-run", TRAIN + " --weights none --out {root}/copied_run --resume",
     ["copied_run/last.pt: not a resumable training checkpoint"]),
    ("train-out-is-a-file", TRAIN + " --weights none --out {root}/model.pt", ["model.pt is a file"]),
    ("train-zero-epochs", TRAIN + " --weights none --epochs 0" + NEW_RUN, ["argument --epochs", "got 0"]),
    ("train-unknown-device", TRAIN + " --weights none --device banana" + NEW_RUN, ["unknown device 'banana'"]),
    ("train-batch-of-one", TRAIN + " --weights none --batch-size 1" + NEW_RUN, ["a batch size of 1 for 1 process"]),
    # finetune
    ("finetune-nan-lr", FINETUNE + " --weights none --lr nan" + NEW_RUN, ["lr must be a finite number > 0", "got nan"]),
    ("finetune-nan-weight-decay", FINETUNE + " --weights none --weight-decay nan" + NEW_RUN,
     ["weight decay a finite number >= 0", "nan"]),
    ("finetune-nan-masktune-lr", FINETUNE + " --weights none --method masktune --masktune-lr nan" + NEW_RUN,
     ["masktune: the fine-tuning learning rate must be > 0"]),
    ("finetune-nan-pgd-eps", FINETUNE + " --weights none --method pgd --pgd-eps nan" + NEW_RUN, ["PGD needs eps > 0"]),
    ("finetune-budget-zero", FINETUNE + " --weights none --method adversarial --budget 0" + NEW_RUN,
     ["argument --budget", "got 0"]),
    ("finetune-budget-negative", FINETUNE + " --weights none --method adversarial --budget -3" + NEW_RUN,
     ["argument --budget", "got -3"]),
    ("finetune-unknown-attack", FINETUNE + " --weights none --method adversarial --attacks laser" + NEW_RUN,
     ["unknown attack 'laser'"]),
    ("finetune-budget-below-guidance", FINETUNE + " --weights none --method adversarial --attacks superpixel "
     "--budget 3 --adv-warmup 5 --epochs 6" + NEW_RUN, ["attack 'superpixel'", "budget of 3"]),
    ("finetune-fraction", FINETUNE + " --weights none --method adversarial --fraction 7" + NEW_RUN,
     ["fraction in (0, 1]"]),
    ("finetune-pickle-checkpoint", FINETUNE + " --weights {root}/pickle.pt --method cutout" + NEW_RUN,
     ["pickle.pt: refused"]),
    ("finetune-other-class-count", FINETUNE + " --weights {root}/three.pt --method cutout" + NEW_RUN,
     ["three.pt: classes ['a', 'b', 'c'] differ"]),
    # explain
    ("explain-missing-checkpoint", EXPLAIN + " --checkpoint {root}/missing.pt --image {root}/pictures/good.jpg",
     ["missing.pt: checkpoint not found"]),
    ("explain-zero-byte-checkpoint", EXPLAIN + " --checkpoint {root}/zero.pt --image {root}/pictures/good.jpg",
     ["zero.pt: not a readable checkpoint"]),
    ("explain-checkpoint-is-a-folder", EXPLAIN + " --checkpoint {root}/emptydir --image {root}/pictures/good.jpg",
     ["emptydir: is a directory, not a checkpoint file"]),
    ("explain-pickle-checkpoint", EXPLAIN + " --checkpoint {root}/pickle.pt --image {root}/pictures/good.jpg",
     ["pickle.pt: refused"]),
    ("explain-other-architecture", EXPLAIN + " --checkpoint {root}/other_arch.pt --image {root}/pictures/good.jpg",
     ["other_arch.pt: weights do not fit 'test_resnet' with 2 classes"]),
    ("explain-truncated-jpeg", EXPLAIN + " --checkpoint {root}/model.pt --image {root}/pictures/truncated.jpg",
     ["truncated.jpg: unreadable or truncated image"]),
    ("explain-zero-byte-jpeg", EXPLAIN + " --checkpoint {root}/model.pt --image {root}/pictures/zero.jpg",
     ["zero.jpg: not a readable image"]),
    ("explain-nan-model", EXPLAIN + " --checkpoint {root}/nan.pt --image {root}/pictures/good.jpg",
     ["nan.pt", "NaN/inf", "good.jpg"]),
    ("explain-missing-image", EXPLAIN + " --checkpoint {root}/model.pt --image {root}/pictures/missing.jpg",
     ["missing.jpg: image not found"]),
    ("explain-image-is-a-folder", EXPLAIN + " --checkpoint {root}/model.pt --image {root}/pictures/folder.jpg",
     ["folder.jpg: is a directory, not an image file"]),
    ("explain-size-absurd", EXPLAIN + " " + GOOD + " --size 100000", ["image size must be 8 to 4096 pixels, got 100000"]),
    ("explain-size-negative", EXPLAIN + " " + GOOD + " --size -1", ["argument --size", "got -1"]),
    ("explain-out-is-a-folder", "explain --method occlusion --segments 8 --device cpu --out {root}/emptydir " + GOOD,
     ["emptydir: is a directory"]),
    # attack
    ("attack-json-is-the-checkpoint", ATTACK.replace("outputs/report.json", "model.pt"),
     ["model.pt: is also this command's input"]),
    ("import-out-is-the-checkpoint", "import " + PLAIN + " --out {root}/plain.pth",
     ["plain.pth: is also this command's input"]),
    ("train-out-inside-the-image-folder", "train --data {root}/pictures " + TRAINING + " --weights none "
     "--out {root}/pictures/run", ["inside the image folder", "pictures, whose sub-folders are its classes"]),
    ("attack-budget-zero", ATTACK + " --budget 0", ["argument --budget", "got 0"]),
    ("attack-budget-negative", ATTACK + " --budget -1", ["argument --budget", "got -1"]),
    ("attack-budget-below-guidance", ATTACK + " --attacks superpixel --budget 5",
     ["attack 'superpixel'", "more than the budget of 5"]),
    ("attack-other-class-count", ATTACK.replace("model.pt", "three.pt"),
     ["unknown label 'tall' (the model's classes: a, b, c)"]),
    ("attack-unknown-label", ATTACK.replace("{root}/data ", "{root}/data/unknown.csv "),
     ["unknown.csv: unknown label 'robot' (the model's classes: tall, wide)"]),
    ("attack-pickle-checkpoint", ATTACK.replace("model.pt", "pickle.pt"), ["pickle.pt: refused"]),
    ("attack-unknown-attack", ATTACK + " --attacks flip,laser", ["unknown attack 'laser'"]),
    ("attack-json-is-a-folder", ATTACK + " --json {root}/emptydir", ["emptydir: is a directory"]),
    ("attack-size-absurd", ATTACK + " --size 5000", ["argument --size", "got 5000"]),
    # bench
    ("bench-budget-zero", BENCH + " --budget 0", ["argument --budget", "got 0"]),
    ("bench-missing-data", BENCH.replace("{root}/data ", "{root}/missing "), ["missing: no such file or directory"]),
    ("bench-pickle-checkpoint", BENCH.replace("model.pt", "pickle.pt"), ["pickle.pt: refused"]),
    ("bench-other-architecture", BENCH.replace("model.pt", "other_arch.pt"), ["weights do not fit 'test_resnet'"]),
    ("bench-duplicate-rows", BENCH.replace("{root}/data ", "{root}/data/duplicate.csv "), ["duplicate row"]),
    ("bench-resume-other-run", BENCH + " --resume", ["report.json.partial: saved state belongs to a different run"]),
    ("bench-resume-without-json", "bench --checkpoint {root}/model.pt " + DATA + " --attacks flip --resume",
     ["--resume needs --json"]),
    ("bench-json-under-a-file", BENCH + " --json {root}/model.pt/report.json", ["model.pt is a file"]),
    ("bench-out-is-a-file", BENCH + " --out {root}/model.pt", ["model.pt is a file"]),
    ("bench-unknown-group", BENCH + " --groups race", ["no column 'race'"]),
    ("bench-size-negative", BENCH + " --size -32", ["argument --size", "got -32"]),
    ("bench-plain-without-model", BENCH.replace("{root}/model.pt", "{root}/plain.pth"),
     ["plain.pth: not a weakspot checkpoint; a plain state_dict needs its architecture and class names"]),
    ("bench-flag-disagrees-with-checkpoint", BENCH + " --classes wide,tall",
     ["model.pt: --classes ['wide', 'tall'] disagrees with this weakspot checkpoint's ['tall', 'wide']"]),
    ("attack-bad-mean", ATTACK + " --mean 0.5,0.5", ["argument --mean: needs three numbers"]),
    ("explain-plain-other-class-count", EXPLAIN + " --checkpoint {root}/plain.pth --model test_efficientnet "
     "--classes a,b,c --image {root}/pictures/good.jpg", ["plain.pth: the weights are for 2 classes, 3 class names given"]),
    # import
    ("import-other-class-count", IMPORT.replace("tall,wide", "a,b,c"),
     ["plain.pth: the weights are for 2 classes, 3 class names given"]),
    ("import-other-architecture", IMPORT.replace("--model test_efficientnet", "--model test_resnet"),
     ["plain.pth: weights do not fit 'test_resnet' with 2 classes"]),
    ("import-unknown-torchvision-model", IMPORT.replace("--model test_efficientnet", "--model torchvision:nope"),
     ["unknown torchvision classifier 'nope'"]),
    ("import-pickle-payload", IMPORT.replace("plain.pth", "pickle.pth"), ["pickle.pth: refused"]),
    ("import-zero-byte-safetensors", IMPORT.replace("plain.pth", "zero.safetensors"),
     ["zero.safetensors: not a readable safetensors file"]),
    ("import-missing-file", IMPORT.replace("plain.pth", "missing.pth"), ["missing.pth: checkpoint not found"]),
    ("import-without-model", "import --checkpoint {root}/plain.pth --classes tall,wide --out {root}/outputs/x.pt",
     ["the following arguments are required: --model"]),
    ("import-one-class", IMPORT.replace("tall,wide", "tall"), ["argument --classes: needs at least two class names"]),
    ("import-out-is-a-folder", "import " + PLAIN + " --out {root}/emptydir", ["emptydir: is a directory"]),
    # audit: refused before any work, or failing half-way with nothing written
    ("audit-missing-data", AUDIT.replace("{root}/data ", "{root}/missing "), ["missing: no such file or directory"]),
    ("audit-pickle-checkpoint", AUDIT.replace("model.pt", "pickle.pt"), ["pickle.pt: refused"]),
    ("audit-bins-not-increasing", AUDIT + " --bins age=40,20", ["argument --bins", "increasing integer edges"]),
    ("audit-bins-unknown-column", AUDIT + " --bins age=0,20", ["labels.csv: no column 'age'"]),
    ("audit-bins-not-numeric", AUDIT + " --bins label=0,20",
     ["labels.csv: column 'label' has the non-numeric value"]),
    ("audit-bins-nan", AUDIT.replace("{root}/data ", "{root}/data/nanage.csv ") + " --bins age=0,20",
     ["nanage.csv: column 'age' has the non-finite value 'nan' in the row of 'images/00001.png'"]),
    ("audit-bins-inf", AUDIT.replace("{root}/data ", "{root}/data/infage.csv ") + " --bins age=0,20",
     ["infage.csv: column 'age' has the non-finite value 'inf' in the row of 'images/00000.png'"]),
    ("attack-split-unknown-values", ATTACK.replace("{root}/data ", "{root}/data/splits.csv ") + " --split test",
     ["splits.csv: column 'split' has unknown value(s) 'Train', 'holdout'"]),
    ("audit-unknown-explainer", AUDIT + " --explainers lime,tarot", ["unknown explainer 'tarot'"]),
    ("audit-unknown-attack", AUDIT + " --attacks flip,laser", ["unknown attack 'laser'"]),
    ("audit-budget-below-guidance", AUDIT + " --attacks flip,superpixel --budget 5",
     ["attack 'superpixel'", "more than the budget of 5"]),
    ("audit-out-is-a-file", AUDIT.replace("--out {root}/outputs", "--out {root}/model.pt"), ["model.pt is a file"]),
    ("audit-size-absurd", AUDIT + " --size 100000", ["argument --size", "got 100000"]),
    # check
    ("check-missing-report", "check {root}/missing.json --min-clean 0.5", ["missing.json: report not found"]),
    ("check-zero-byte-report", "check {root}/data/empty.csv --min-clean 0.5", ["empty.csv: not a readable JSON report"]),
    ("check-report-is-a-folder", "check {root}/emptydir --min-clean 0.5", ["emptydir: not a readable JSON report"]),
    ("check-not-a-report", "check {root}/run/results.json --min-clean 0.5", ["results.json: missing field 'dataset'"]),
    ("check-threshold", "check {root}/outputs/report.json --min-clean 2", ["--min-clean must be a fraction"]),
    ("check-nothing-to-check", "check {root}/outputs/report.json", ["nothing to check"]),
    # demo: refused while parsing or before training
    ("demo-budget-zero", DEMO + " --budget 0", ["argument --budget", "got 0"]),
    ("demo-images-negative", DEMO + " --images -3", ["argument --images", "got -3"]),
    ("demo-size-absurd", DEMO + " --size 100000", ["argument --size", "got 100000"]),
    ("demo-signal", DEMO + " --signal 5", ["argument --signal", "got 5"]),
    ("demo-negative-seed", DEMO + " --seed -1", ["argument --seed", "got -1"]),
    ("demo-missing-data", DEMO + " --data {root}/missing --label label", ["missing: no such file or directory"]),
    # an output the OS refuses (a name too long, a pseudo-filesystem): refused before any work
    ("attack-json-name-too-long", ATTACK.replace("model.pt", "missing.pt") + " --json {root}/outputs/" + LONG + ".json",
     [LONG + ".json: cannot write there (File name too long)"]),
    ("attack-out-under-proc", ATTACK.replace("model.pt", "missing.pt") + " --out /proc/weakspot",
     ["/proc/weakspot/examples.png: cannot write there"]),
    ("bench-json-under-proc", BENCH.replace("model.pt", "missing.pt") + " --json /proc/weakspot/report.json",
     ["/proc/weakspot/report.json: cannot write there"]),
    ("bench-out-name-too-long", BENCH.replace("model.pt", "missing.pt") + " --out {root}/outputs/" + LONG,
     [LONG + "/examples.png: cannot write there (File name too long)"]),
    ("audit-out-name-too-long", AUDIT.replace("model.pt", "missing.pt").replace("{root}/outputs", "{root}/" + LONG),
     [LONG + "/report.json: cannot write there (File name too long)"]),
    ("audit-out-under-sys", AUDIT.replace("model.pt", "missing.pt").replace("{root}/outputs", "/sys/weakspot"),
     ["/sys/weakspot/report.json: cannot write there"]),
    ("explain-out-name-too-long", "explain --method occlusion --device cpu --image {root}/pictures/good.jpg " + MISSING
     + " --out {root}/outputs/" + LONG + ".png", [LONG + ".png: cannot write there (File name too long)"]),
    ("import-out-under-proc", IMPORT.replace("plain.pth", "missing.pth").replace("{root}/outputs", "/proc/weakspot"),
     ["/proc/weakspot/imported.pt: cannot write there"]),
    ("shortcut-out-name-too-long", "data shortcut --source {root}/missing --label label --out {root}/" + LONG,
     [LONG + "/labels.csv: cannot write there (File name too long)"]),
    ("train-out-under-proc", "train --data {root}/missing " + TRAINING + " --weights none --out /proc/weakspot",
     ["/proc/weakspot/model.pt: cannot write there"]),
    ("finetune-out-name-too-long", "finetune --data {root}/missing " + TRAINING + " --weights none --out {root}/" + LONG,
     [LONG + "/model.pt: cannot write there (File name too long)"]),
    ("demo-out-under-proc", "demo --device cpu --data {root}/missing --label label --out /proc/weakspot",
     ["/proc/weakspot/before_after.png: cannot write there"]),
]


def test_every_subcommand_has_bad_input_cases() -> None:
    from weakspot.cli import SUBCOMMANDS

    covered = {command.split()[0] for _, command, _ in BAD_INPUT}
    assert covered == {name for name, _, _ in SUBCOMMANDS}


@pytest.mark.parametrize("command, expected", [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_changes_no_file(world: Path, capsys: pytest.CaptureFixture[str],
                                                          command: str, expected: list[str]) -> None:
    before = snapshot(world)
    code, _, err = run([part.format(root=world) for part in shlex.split(command)], capsys)
    assert code == 2, err
    assert_one_line_error(err, *expected)
    assert snapshot(world) == before  # nothing already written changed, nothing half-written appeared
    assert not (world / "payload_ran").exists()


def test_cmyk_16_bit_and_alpha_images_load_as_rgb(world: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    images = world / "modes" / "images"
    expected = {"cmyk.jpg": (200, 40, 90), "sixteen.png": (128, 128, 128), "rgba.png": (127, 127, 255)}
    for name, rgb in expected.items():
        image = read_image(images / name, 16)
        assert image.shape == (3, 16, 16)
        assert torch.allclose(image.mean(dim=(1, 2)) * 255, torch.tensor(rgb, dtype=torch.float32), atol=2), name
    code, out, err = run(["data", "inspect", "--data", str(world / "modes"), "--label", "label", "--size", "16"], capsys)
    assert code == 0 and "3 images" in out and err == ""
    code, out, err = run(["attack", "--checkpoint", str(world / "model.pt"), "--data", str(world / "modes"),
                          "--label", "label", "--size", "32", "--attacks", "flip", "--device", "cpu"], capsys)
    assert code == 0 and "flip" in out and err == ""
    figure = tmp_path / "cmyk.png"
    code, _, err = run(["explain", "--checkpoint", str(world / "model.pt"), "--image", str(images / "cmyk.jpg"),
                        "--method", "occlusion", "--segments", "8", "--device", "cpu", "--out", str(figure)], capsys)
    assert code == 0 and err == "" and figure.stat().st_size > 1000


def test_unreadable_images_in_a_dataset_are_skipped_in_one_line(world: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mixed"
    (folder / "images").mkdir(parents=True)
    for name in ("truncated.jpg", "zero.jpg", "good.jpg"):
        shutil.copy(world / "pictures" / name, folder / "images" / name)
    shutil.copy(world / "pictures" / "good.jpg", folder / "images" / "good2.jpg")
    _write_manifest(folder, [("images/truncated.jpg", "tall"), ("images/zero.jpg", "wide"),
                             ("images/good.jpg", "tall"), ("images/good2.jpg", "wide")])
    code, out, err = run(["data", "inspect", "--data", str(folder), "--label", "label", "--size", "16"], capsys)
    assert code == 0 and "2 images" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "skipped 2 unreadable image(s)" in lines[0] and "truncated.jpg" in lines[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes files whatever their permissions")
def test_files_without_permission_are_one_line_errors(world: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(world / "data", tmp_path / "data")
    (tmp_path / "data" / "labels.csv").chmod(0)
    code, _, err = run(["data", "inspect", "--data", str(tmp_path / "data"), "--label", "label"], capsys)
    assert code == 2
    assert_one_line_error(err, "labels.csv: not a readable CSV", "Permission denied")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run(["attack", "--checkpoint", str(world / "model.pt"), "--data", str(world / "data"), "--label",
                        "label", "--size", "32", "--attacks", "flip", "--device", "cpu",
                        "--json", str(locked / "report.json")], capsys)
    assert code == 2
    assert_one_line_error(err, "report.json: cannot write there", "Permission denied")


@contextlib.contextmanager
def released_after(fifos: list[Path], seconds: float) -> Iterator[list[Path]]:
    """Yield a list that names each FIFO a reader still waited on after ``seconds``: from then on, opening the
    write end releases such a reader (it reads an empty file), so a hang fails the test instead of blocking."""
    hung: list[Path] = []
    done = threading.Event()

    def release() -> None:
        if done.wait(seconds):
            return
        while not done.wait(0.1):
            for fifo in fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # fails unless a reader waits on it
                except OSError:
                    continue
                hung.append(fifo)

    watchdog = threading.Thread(target=release, daemon=True)
    watchdog.start()
    try:
        yield hung
    finally:
        done.set()
        watchdog.join()


FIFO_CASES = [  # (case, command line with the FIFO as {fifo}, the FIFO's name)
    ("explain-image", EXPLAIN + " --checkpoint {root}/model.pt --image {fifo}", "pipe.jpg"),
    ("explain-checkpoint", EXPLAIN + " --checkpoint {fifo} --image {root}/pictures/good.jpg", "pipe.pt"),
    ("inspect-manifest", "data inspect --data {fifo} --label label", "pipe.csv"),
    ("inspect-labels-csv", "data inspect --data {folder} --label label", "labels.csv"),
    ("import-classes", "import --checkpoint {root}/plain.pth --model test_efficientnet --classes {fifo} "
     "--out {folder}/imported.pt", "classes.txt"),
]


@pytest.mark.parametrize("command, name", [case[1:] for case in FIFO_CASES], ids=[case[0] for case in FIFO_CASES])
def test_a_named_pipe_is_refused_not_read(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          command: str, name: str) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    argv = [part.format(root=world, fifo=fifo, folder=tmp_path) for part in shlex.split(command)]
    with released_after([fifo], 10) as hung:
        code, _, err = run(argv, capsys)
    assert not hung, f"{name}: the run blocked reading the named pipe"
    assert code == 2, err
    assert_one_line_error(err, f"{name}: is a named pipe, not a regular file")


def test_a_named_pipe_in_a_dataset_is_skipped_like_an_unreadable_image(world: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("tall", "wide"):
        (tmp_path / name).mkdir()
        shutil.copy(world / "pictures" / "good.jpg", tmp_path / name / "good.jpg")
    fifo = tmp_path / "tall" / "pipe.jpg"
    os.mkfifo(fifo)
    with released_after([fifo], 10) as hung:
        code, _, err = run(["data", "inspect", "--data", str(tmp_path), "--size", "16"], capsys)
    assert not hung, "the run blocked reading the named pipe"
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "skipped 1 unreadable image(s)" in lines[0] and "pipe.jpg: is a named pipe" in lines[0]


def test_bench_failing_midway_keeps_the_previous_report(world: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"model": "previous run"}))
    before = report.read_bytes()
    code, _, err = run(["bench", "--checkpoint", str(world / "model.pt"), "--data", str(world / "data"),
                        "--label", "label", "--size", "32", "--attacks", "flip,superpixel", "--budget", "5",
                        "--device", "cpu", "--no-progress", "--json", str(report)], capsys)
    assert code == 2
    assert_one_line_error(err, "attack 'superpixel'", "budget of 5")
    assert report.read_bytes() == before
    state = json.loads(Path(str(report) + ".partial").read_text())  # flip's finished records, for --resume
    assert len(state["attacks"]["flip"]["fooled"]) == IMAGES and "superpixel" not in state["attacks"]


def test_nan_model_is_reported_and_never_counted_as_fooled(world: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "report.json"
    code, _, err = run(["bench", "--checkpoint", str(world / "nan.pt"), "--data", str(world / "data"), "--label",
                        "label", "--size", "32", "--attacks", "flip,block,pgd", "--budget", "40", "--device", "cpu",
                        "--no-progress", "--json", str(report_path)], capsys)
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["clean_accuracy"] == 0.0  # argmax of NaN is class 0: it must not count as correct
    for attack in report["attacks"]:
        assert attack["nonfinite"] == IMAGES and attack["success_rate"] == 0.0 and attack["robust_accuracy"] == 0.0
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(f"NaN/inf for {IMAGES} of {IMAGES} image(s) under '{name}'" in line
                                   for line, name in zip(lines, ("flip", "block", "pgd")))
    code, _, err = run(["attack", "--checkpoint", str(world / "nan.pt"), "--data", str(world / "data"), "--label",
                        "label", "--size", "32", "--attacks", "flip", "--device", "cpu", "--json", str(report_path)],
                       capsys)
    assert code == 0 and f"NaN/inf for {IMAGES} of {IMAGES} image(s) under 'flip'" in err
    assert json.loads(report_path.read_text())["attacks"][0]["nonfinite"] == IMAGES


class LeftOrRight(nn.Module):
    """Class 0 when the left half is brighter, else class 1; with ``nan_for_right`` the answer for
    right-brighter images is NaN instead: a model whose answers under a flip we know."""

    def __init__(self, nan_for_right: bool) -> None:
        super().__init__()
        self.nan_for_right = nan_for_right

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        half = images.shape[-1] // 2
        score = images[..., :half].mean(dim=(1, 2, 3)) - images[..., half:].mean(dim=(1, 2, 3))
        logits = torch.stack([score, -score], dim=1) * 10
        if self.nan_for_right:
            logits = torch.where((score < 0)[:, None], torch.full_like(logits, float("nan")), logits)
        return logits


@pytest.mark.parametrize("nan_for_right", [False, True])
def test_a_nan_answer_under_attack_is_flagged_not_fooled(nan_for_right: bool) -> None:
    identity = Preprocessing(input_size=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    classifier = Classifier(LeftOrRight(nan_for_right), "left-or-right", ["left", "right"], identity, device="cpu")
    images = torch.zeros(4, 3, 8, 8)
    images[..., :4] = 0.9  # left half bright: class 0, and the flip makes the right half bright
    result = create_attack("flip", classifier, budget=5)(images, torch.zeros(4, dtype=torch.long))
    assert result.correct.all()
    assert result.fooled.tolist() == [not nan_for_right] * 4  # the finite model IS fooled by the flip
    assert result.nonfinite.tolist() == [nan_for_right] * 4


def test_interrupted_data_shortcut_leaves_no_partial_folder_and_reruns(world: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import weakspot.shortcut as shortcut

    out = tmp_path / "benchmark"
    argv = ["data", "shortcut", "--source", str(world / "data"), "--label", "label", "--size", "32", "--out", str(out)]
    real_write = shortcut._write_png
    written: list[Path] = []

    def write_then_terminate(path: Path, image: torch.Tensor) -> None:
        time.sleep(0.02)  # a real image takes a while: the signal arrives while images are still queued
        real_write(path, image)
        written.append(path)
        if len(written) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends; the CLI treats it as Ctrl-C

    monkeypatch.setattr(shortcut, "_write_png", write_then_terminate)
    code, _, err = run(argv, capsys)
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []  # neither --out nor the staging folder beside it
    monkeypatch.setattr(shortcut, "_write_png", real_write)
    code, _, err = run(argv, capsys)
    assert code == 0 and err == ""
    total = len(load_dataset(out, size=32, label="label", groups=["split"]))
    assert total > IMAGES and len(written) < total  # the interrupted run dropped its queued images


def test_bench_twice_with_the_same_seed_writes_the_same_report(button_data, button_model, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    _, test, _ = button_data
    data = write_imageset(test.subset(range(12)), tmp_path / "data", label="label")
    checkpoint = button_model.save(tmp_path / "model.pt")
    reports = []
    for attempt in range(2):
        torch.rand(attempt + 1)  # a different global RNG state before each run: bench must seed its own
        path = tmp_path / f"report{attempt}.json"
        code, _, err = run(["bench", "--checkpoint", str(checkpoint), "--data", str(data), "--label", "label",
                            "--groups", "cue", "--size", "48", "--attacks", "all", "--budget", "80", "--seed", "3",
                            "--device", "cpu", "--no-progress", "--json", str(path)], capsys)
        assert code == 0, err
        report = json.loads(path.read_text())
        for attack in report["attacks"]:
            attack.pop("seconds")  # wall time of the attack: the report's only timing field
        reports.append(report)
    assert reports[0] == reports[1]
    assert any(attack["success_rate"] > 0 for attack in reports[0]["attacks"])  # the runs did attack something


def _fail_once(function, error: int, call: int = 1, target: str = ""):
    """``function`` raising OSError(error) at its ``call``-th call (counting only the calls whose second
    argument, the target of ``os.replace``, ends with ``target``), then behaving again."""
    calls = []

    def failing(*args, **kwargs):
        if str(args[1] if len(args) > 1 else "").endswith(target):
            calls.append(args)
            if len(calls) == call:
                raise OSError(error, os.strerror(error))
        return function(*args, **kwargs)

    return failing


def _previous_audit(folder: Path) -> dict[str, bytes | None]:
    """An audit --out holding a previous run's outputs and a file of the user's; its snapshot."""
    folder.mkdir()
    for name in ("report.json", "examples.png", "success_vs_area.png", "mean_gradcam.png", "notes.txt"):
        (folder / name).write_text(f"previous {name}")
    return snapshot(folder)


@pytest.mark.parametrize("fault", ["fsync", "replace"])
def test_audit_on_a_full_disk_keeps_every_previous_output(world: Path, tmp_path: Path, fault: str,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """ENOSPC while the second output is written (fsync), or while the outputs replace the previous ones
    (the fourth rename): exit 2, one line naming the file, every previous output byte for byte, no temp file."""
    out = tmp_path / "audit"
    before = _previous_audit(out)
    if fault == "fsync":
        monkeypatch.setattr(os, "fsync", _fail_once(os.fsync, errno.ENOSPC, call=2))
    else:
        monkeypatch.setattr(os, "replace", _fail_once(os.replace, errno.ENOSPC, call=4))
    argv = shlex.split(AUDIT.replace("{root}/outputs", str(out)).format(root=world))
    code, _, err = run(argv, capsys)
    assert code == 2, err
    assert_one_line_error(err, f"{out}/success_vs_area.png: cannot write there (No space left on device)")
    assert snapshot(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["audit"]


def test_audit_into_a_new_folder_on_a_full_disk_leaves_no_folder(world: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "fsync", _fail_once(os.fsync, errno.ENOSPC, call=3))
    argv = shlex.split(AUDIT.replace("{root}/outputs", str(tmp_path / "new" / "audit")).format(root=world))
    code, _, err = run(argv, capsys)
    assert code == 2
    assert_one_line_error(err, "audit/examples.png: cannot write there (No space left on device)")
    assert list(tmp_path.iterdir()) == []


def test_bench_on_a_read_only_filesystem_keeps_the_previous_report(world: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """report.json is written before the figures: a figure refused (EROFS) must not leave the new report.
    The attacks' records stay in report.json.partial, for --resume."""
    (tmp_path / "report.json").write_text("previous report")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "examples.png").write_text("previous examples")
    before = snapshot(tmp_path)
    monkeypatch.setattr(os, "replace", _fail_once(os.replace, errno.EROFS, target="examples.png"))
    code, _, err = run(shlex.split(BENCH.format(root=world)) + ["--json", str(tmp_path / "report.json"),
                                                               "--out", str(tmp_path / "figures")], capsys)
    assert code == 2
    assert_one_line_error(err, "figures/examples.png: cannot write there (Read-only file system)")
    assert json.loads((tmp_path / "report.json.partial").read_text())["attacks"]["flip"]
    (tmp_path / "report.json.partial").unlink()
    assert snapshot(tmp_path) == before


def test_data_shortcut_on_a_full_disk_is_one_line_and_leaves_nothing(world: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import weakspot.shortcut as shortcut

    real_write = shortcut._write_png

    def write_until_full(path: Path, image: torch.Tensor) -> None:
        if path.name == "00003.png":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, image)

    monkeypatch.setattr(shortcut, "_write_png", write_until_full)
    out = tmp_path / "benchmark"
    code, _, err = run(["data", "shortcut", "--source", str(world / "data"), "--label", "label", "--size", "32",
                        "--out", str(out)], capsys)
    assert code == 2
    assert_one_line_error(err, f"{out}: cannot write there (No space left on device)")
    assert list(tmp_path.iterdir()) == []


def test_an_output_name_near_the_limit_is_written(world: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A 250-character name fits the filesystem; the temp file beside it must fit too."""
    report = tmp_path / ("r" * 245 + ".json")
    code, _, err = run(shlex.split(ATTACK.format(root=world)) + ["--json", str(report)], capsys)
    assert code == 0, err
    assert json.loads(report.read_text())["attacks"][0]["name"] == "flip"
    assert [path.name for path in tmp_path.iterdir()] == [report.name]
