"""Bring your own model: plain state_dicts (``.pth``, wrapped as training scripts save them, ``.safetensors``)
of timm and torchvision architectures run through ``--model/--classes``, give the same report as after
``weakspot import``, and every mismatch is one line naming the file (exit 2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from weakspot.cli import main
from weakspot.models import Preprocessing, load_model, load_plain_weights
from weakspot.shortcut import make_shortcut_dataset, write_imageset

pytestmark = pytest.mark.usefixtures("one_thread")
TIMM = "test_efficientnet"
TORCHVISION = "torchvision:squeezenet1_0"
CLASSES = "tall,wide"
BENCH = ["--label", "label", "--groups", "cue", "--size", "32", "--attacks", "flip,block", "--budget", "30",
         "--device", "cpu", "--no-progress"]


class _OpensAFile:
    """Unpickling this calls ``open(marker, "w")``: the file's existence shows whether a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """16 tiny images, and the same timm weights as .pth, wrapped .pth and .safetensors, plus a torchvision one."""
    root = tmp_path_factory.mktemp("byo")
    imageset, _ = make_shortcut_dataset(16, 32, cue_rate=0.5, seed=0)
    write_imageset(imageset, root / "data", label="label")
    torch.manual_seed(0)
    state = load_model(TIMM, weights=None, class_names=CLASSES.split(","), device="cpu").model.state_dict()
    torch.save(state, root / "timm.pth")
    torch.save({"epoch": 3, "state_dict": state, "args": argparse.Namespace(lr=0.1)}, root / "wrapped.pth")
    save_file({key: value.contiguous() for key, value in state.items()}, root / "timm.safetensors")
    torch.save({"model": {f"module.{key}": value for key, value in state.items()}}, root / "ddp.pt")
    squeezenet = torchvision.models.squeezenet1_0(weights=None, num_classes=2).state_dict()
    torch.save({"model": squeezenet, "args": argparse.Namespace(model="squeezenet1_0")}, root / "torchvision.pth")
    torch.save({key: value for key, value in state.items() if not key.startswith("bn2.")}, root / "missing.pth")
    torch.save({**state, "extra": _OpensAFile(root / "payload_ran")}, root / "pickle.pth")
    (root / "classes.txt").write_text("tall\nwide\n")
    return root


def _bench(root: Path, name: str, *flags: str) -> dict:
    report_path = root / f"{name}.json"
    assert main(["bench", "--data", str(root / "data"), *BENCH, "--json", str(report_path), *flags]) == 0
    report = json.loads(report_path.read_text())
    for attack in report["attacks"]:
        attack.pop("seconds")
    return report


@pytest.mark.parametrize("weights, model, extra", [
    ("timm.pth", TIMM, []),
    ("wrapped.pth", TIMM, ["--input-size", "40", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]),
    ("timm.safetensors", TIMM, []),
    ("ddp.pt", TIMM, []),
    ("torchvision.pth", TORCHVISION, []),
], ids=["pth", "wrapped-pth-with-preprocessing", "safetensors", "ddp-prefix", "torchvision"])
def test_plain_weights_bench_like_their_imported_checkpoint(files: Path, weights: str, model: str,
                                                            extra: list[str]) -> None:
    flags = ["--model", model, "--classes", CLASSES, *extra]
    direct = _bench(files, f"direct-{weights}", "--checkpoint", str(files / weights), *flags)
    converted = files / f"imported-{weights}.pt"
    assert main(["import", "--checkpoint", str(files / weights), *flags, "--out", str(converted)]) == 0
    imported = _bench(files, f"imported-{weights}", "--checkpoint", str(converted))
    assert direct == imported and direct["model"] == model and direct["n"] == 16
    again = _bench(files, f"again-{weights}", "--checkpoint", str(converted), *flags)  # flags that agree are fine
    assert again == imported


def test_same_weights_in_every_format_give_the_same_model(files: Path) -> None:
    images = torch.rand(4, 3, 32, 32)
    outputs = [load_plain_weights(files / name, TIMM, ["tall", "wide"], Preprocessing(), device="cpu").predict_proba(images)
               for name in ("timm.pth", "wrapped.pth", "timm.safetensors", "ddp.pt")]
    assert all(torch.equal(output, outputs[0]) for output in outputs)


def test_classes_from_a_file_and_attack_and_explain_take_the_flags(files: Path, tmp_path: Path) -> None:
    flags = ["--checkpoint", str(files / "timm.pth"), "--model", TIMM, "--classes", str(files / "classes.txt")]
    assert main(["attack", *flags, "--data", str(files / "data"), "--label", "label", "--size", "32",
                 "--attacks", "flip", "--device", "cpu", "--json", str(tmp_path / "attack.json")]) == 0
    image = next((files / "data" / "images").iterdir())
    assert main(["explain", *flags, "--image", str(image), "--method", "gradcam", "--size", "32", "--device", "cpu",
                 "--out", str(tmp_path / "gradcam.png")]) == 0
    assert (tmp_path / "gradcam.png").stat().st_size > 1000


@pytest.mark.parametrize("weights, flags, expected", [
    ("timm.pth", ["--model", TIMM, "--classes", "a,b,c"], "timm.pth: the weights are for 2 classes, 3 class names given"),
    ("torchvision.pth", ["--model", TORCHVISION, "--classes", "a,b,c"],
     "torchvision.pth: the weights are for 2 classes, 3 class names given"),
    ("missing.pth", ["--model", TIMM, "--classes", CLASSES], "missing.pth: weights do not fit 'test_efficientnet' "
                                                              "with 2 classes (4 missing key(s), e.g. 'bn2.weight')"),
    ("timm.pth", ["--model", "test_resnet", "--classes", CLASSES], "timm.pth: weights do not fit 'test_resnet'"),
    ("timm.pth", ["--model", "torchvision:resnet18", "--classes", CLASSES], "timm.pth: weights do not fit 'torchvision:resnet18'"),
    ("timm.pth", ["--model", "torchvision:nope", "--classes", CLASSES], "unknown torchvision classifier 'nope'"),
    ("pickle.pth", ["--model", TIMM, "--classes", CLASSES], "pickle.pth: refused"),
    ("timm.pth", [], "timm.pth: not a weakspot checkpoint; a plain state_dict needs its architecture"),
    ("timm.pth", ["--model", TIMM, "--classes", "tall"], "argument --classes: needs at least two class names"),
    ("timm.pth", ["--model", TIMM, "--classes", CLASSES, "--mean", "1,2"], "argument --mean: needs three numbers"),
    ("timm.pth", ["--model", TIMM, "--classes", CLASSES, "--std", "1,0,1"], "argument --std: needs three positive"),
], ids=["class-count", "torchvision-class-count", "missing-keys", "wrong-architecture", "timm-as-torchvision",
        "unknown-torchvision", "pickle-payload", "no-model-flags", "one-class", "bad-mean", "zero-std"])
def test_mismatches_are_one_line_exit_2(files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        weights: str, flags: list[str], expected: str) -> None:
    for command in (["bench", "--data", str(files / "data"), *BENCH, "--json", str(tmp_path / "report.json")],
                    ["import", "--out", str(tmp_path / "model.pt")]):
        if command[0] == "import" and "--model" not in flags:
            continue  # import requires the flags: argparse says so
        try:
            code = main([*command, "--checkpoint", str(files / weights), *flags])
        except SystemExit as exit_info:
            code = int(exit_info.code)
        error = capsys.readouterr().err.strip()
        assert code == 2 and error.count("\n") == 0 and expected in error and "Traceback" not in error, error
    assert list(tmp_path.iterdir()) == []
    assert not (files / "payload_ran").exists()


def test_a_weakspot_checkpoint_with_disagreeing_flags_is_refused(files: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "model.pt"
    assert main(["import", "--checkpoint", str(files / "timm.pth"), "--model", TIMM, "--classes", CLASSES,
                 "--out", str(checkpoint)]) == 0
    capsys.readouterr()
    for flags, expected in ((["--classes", "wide,tall"], "--classes ['wide', 'tall'] disagrees"),
                            (["--model", "test_resnet"], "--model test_resnet disagrees"),
                            (["--input-size", "64"], "--input-size 64 disagrees with this weakspot checkpoint's None")):
        assert main(["bench", "--checkpoint", str(checkpoint), "--data", str(files / "data"), *BENCH, *flags]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and "model.pt: " in error and expected in error, error


def test_images_load_at_the_models_input_size_unless_size_says_otherwise(files: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint that records an input size loads its images at that size when --size is not given; given
    and different, the images load at --size and one warning line says so. Without either, 96 px."""
    checkpoint = tmp_path / "forty.pt"
    assert main(["import", "--checkpoint", str(files / "timm.pth"), "--model", TIMM, "--classes", CLASSES,
                 "--input-size", "40", "--out", str(checkpoint)]) == 0
    audit = ["audit", "--data", str(files / "data"), "--label", "label", "--attacks", "flip", "--explainers",
             "gradcam", "--explain-images", "1", "--no-shortcuts", "--device", "cpu", "--no-progress"]

    def audited_size(out: str, *flags: str) -> int:
        assert main([*audit, *flags, "--out", str(tmp_path / out)]) == 0
        return json.loads((tmp_path / out / "report.json").read_text())["audit"]["size"]

    capsys.readouterr()
    assert audited_size("default", "--checkpoint", str(checkpoint)) == 40
    assert "warning" not in capsys.readouterr().err
    assert audited_size("given", "--checkpoint", str(checkpoint), "--size", "32") == 32
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["weakspot: warning: --size 32 differs from the model's input size 40; images are loaded at "
                        "32 px and resized to 40"]
    assert audited_size("plain", "--checkpoint", str(files / "timm.pth"), "--model", TIMM, "--classes", CLASSES) == 96


def test_the_balance_refuses_a_model_without_a_linear_last_layer_before_training(files: Path, tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """squeezenet ends in a convolution: the loop's class-bias balance cannot shift its logits, so finetune says so
    in one line before it trains (no run folder written); with the balance off it trains."""
    checkpoint = tmp_path / "squeezenet.pt"
    assert main(["import", "--checkpoint", str(files / "torchvision.pth"), "--model", TORCHVISION, "--classes",
                 CLASSES, "--out", str(checkpoint)]) == 0
    finetune = ["finetune", "--weights", str(checkpoint), "--data", str(files / "data"), "--label", "label",
                "--size", "32", "--epochs", "1", "--device", "cpu", "--no-progress", "--method", "adversarial"]
    capsys.readouterr()
    assert main([*finetune, "--out", str(tmp_path / "refused")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "has no linear last layer with a bias" in errors[0]
    assert not (tmp_path / "refused" / "log.jsonl").exists()
    assert main([*finetune, "--balance-recall", "off", "--out", str(tmp_path / "trained")]) == 0
