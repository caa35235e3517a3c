"""Baseline training-stream transforms (cutout, worst-of-k, PGD) and ``weakspot finetune``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from weakspot.augment.adversarial import AdversarialAugment, RoundLog
from weakspot.augment.baselines import Cutout, PgdTraining, WorstOfK, create_method, random_spatial
from weakspot.cli import main
from weakspot.errors import WeakspotError
from weakspot.models import load_checkpoint, load_model
from weakspot.shortcut import build_shortcut_benchmark, make_shortcut_dataset, write_imageset
from weakspot.training.loop import TrainConfig, fit


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch():
    imageset, _ = make_shortcut_dataset(16, 32, cue_rate=1.0, signal=0.0, seed=4)
    return imageset


@pytest.fixture(scope="module")
def classifier(batch):
    torch.manual_seed(0)
    model = load_model("test_efficientnet", weights=None, class_names=batch.class_names, device="cpu")
    model.net.train()  # transforms are called in train mode and must give it back
    return model


def test_cutout_occludes_the_requested_area(batch, classifier):
    torch.manual_seed(0)
    images, labels = Cutout(area=0.25, fill="black")(batch.images, batch.labels, classifier)
    changed = (images != batch.images).any(dim=1).float().mean(dim=(1, 2))
    assert torch.equal(labels, batch.labels)
    assert changed.max() <= 0.25 + 1e-6 and changed.mean() > 0.2  # 16x16 of 32x32 (less where already black)
    with pytest.raises(WeakspotError, match="fill"):
        Cutout(fill="pink")


def test_random_spatial_without_rotation_or_shift_is_identity_or_mirror(batch):
    torch.manual_seed(1)
    out = random_spatial(batch.images, max_rotation=0.0, max_translation=0.0, flip=True)
    same = (out - batch.images).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (out - batch.images.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


def test_worst_of_k_trains_on_the_highest_loss_variant(batch, classifier):
    transform = WorstOfK(k=4)
    torch.manual_seed(2)
    images, labels = transform(batch.images, batch.labels, classifier)
    assert classifier.net.training
    torch.manual_seed(2)  # the same draws, scored by hand
    variants = [random_spatial(batch.images, 30.0, 0.1, True) for _ in range(4)]
    classifier.net.eval()
    with torch.no_grad():
        losses = torch.stack([F.cross_entropy(classifier.forward(v), batch.labels, reduction="none") for v in variants])
        chosen = F.cross_entropy(classifier.forward(images), labels, reduction="none")
    classifier.net.train()
    assert torch.allclose(chosen, losses.max(dim=0).values, atol=1e-5)


def test_pgd_stays_in_the_ball_and_raises_the_loss(batch, classifier):
    eps = 8 / 255
    torch.manual_seed(3)
    images, labels = PgdTraining(eps=eps, alpha=2 / 255, steps=5)(batch.images, batch.labels, classifier)
    assert classifier.net.training and torch.equal(labels, batch.labels)
    assert (images - batch.images).abs().max() <= eps + 1e-6 and images.min() >= 0 and images.max() <= 1
    classifier.net.eval()
    with torch.no_grad():
        clean = F.cross_entropy(classifier.forward(batch.images), labels)
        attacked = F.cross_entropy(classifier.forward(images), labels)
    classifier.net.train()
    assert attacked > clean


def test_method_names_and_parameters_are_checked():
    assert create_method("erm") is None
    with pytest.raises(WeakspotError, match="unknown method 'mixup'"):
        create_method("mixup")
    with pytest.raises(WeakspotError, match="method 'worstofk'"):
        create_method("worstofk", eps=3)
    with pytest.raises(WeakspotError, match="method 'adversarial'.*images"):
        create_method("adversarial")  # it needs the training images it attacks


def test_finetune_reports_label_by_cue_groups_on_a_benchmark(tmp_path, capsys):
    source, _ = make_shortcut_dataset(80, 32, cue_rate=0.5, signal=1.0, seed=9)
    source.groups = {}
    source_dir = write_imageset(source, tmp_path / "source", label="shape")
    bench = tmp_path / "bench"
    build_shortcut_benchmark(source_dir, "shape", bench, size=32, seed=0)
    common = ["--data", str(bench), "--label", "shape", "--size", "32", "--model", "test_efficientnet",
              "--weights", "none", "--epochs", "1", "--batch-size", "16", "--no-progress", "--device", "cpu"]
    assert main(["finetune", *common, "--method", "worstofk", "--k", "2", "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["method"] == "worstofk" and results["epochs_run"] == 1
    groups = {(row["group"]["shape"], row["group"]["cue"]) for row in results["test"]["groups"]}
    assert groups == {("tall", "button"), ("tall", "none"), ("wide", "button"), ("wide", "none")}
    assert results["test"]["worst_group_accuracy"] <= results["test"]["accuracy"]
    assert {row["group"]["shape"] for row in results["clean_test"]["groups"]} == {"tall", "wide"}
    assert "worstofk: test accuracy" in capsys.readouterr().out
    assert "recall_balance" not in results and not (tmp_path / "run" / "balanced.pt").exists()  # off but for the loop
    adversarial = ["finetune", *common, "--method", "adversarial", "--attacks", "flip,crop", "--budget", "4",
                   "--adv-warmup", "0", "--refresh", "1", "--balance-recall", "on", "--out", str(tmp_path / "adv")]
    assert main(adversarial) == 0
    results = json.loads((tmp_path / "adv" / "results.json").read_text())
    assert results["method"] == "adversarial" and results["epochs_run"] == 1
    assert [entry["epoch"] for entry in results["adversarial_rounds"]] == [0]
    assert results["loop_config"]["attacks"] == ["flip", "crop"] and results["loop_config"]["budget"] == 4
    # with the class-bias balance the model the run reports on is balanced.pt, last.pt's head shifted
    balanced, last = (load_checkpoint(tmp_path / "adv" / name) for name in ("balanced.pt", "last.pt"))
    shift = balanced.model.get_classifier().bias - last.model.get_classifier().bias
    assert torch.allclose(shift, torch.tensor([results["recall_balance"]["bias"][name] for name in ("tall", "wide")]))
    assert set(results["recall_balance"]["recall_after"]) == {"tall", "wide"}
    assert results["recall_balance"]["seconds"] > 0
    # by default, a loop none of whose rounds kept anything (here: none ran) trained as ERM and keeps ERM's model
    assert main([*adversarial[:-4], "--adv-warmup", "2", "--out", str(tmp_path / "unrun")]) == 0
    results = json.loads((tmp_path / "unrun" / "results.json").read_text())
    assert results["adversarial_rounds"] == [] and "recall_balance" not in results
    assert not (tmp_path / "unrun" / "balanced.pt").exists()
    capsys.readouterr()
    assert main([*adversarial[:-2], "--attacks", "nosuch", "--out", str(tmp_path / "adv2")]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_fit_ends_with_the_balance_a_loop_asks_for_and_a_python_caller_gets_it_too(batch, tmp_path):
    def loop_that_kept(count: int) -> SimpleNamespace:
        return SimpleNamespace(history=[RoundLog(1.5, 10, kept={"button": 0}, seconds=1.0),
                                        RoundLog(2.0, 10, kept={"button": count}, seconds=1.0)])

    assert AdversarialAugment.balances_recall.fget(loop_that_kept(3))
    assert not AdversarialAugment.balances_recall.fget(loop_that_kept(0))

    class Asks:  # a transform that leaves the batch alone and asks for the balance
        balances_recall = True

        def __call__(self, images, labels, classifier):
            return images, labels

    config = TrainConfig(epochs=1, batch_size=8, seed=0, augment=False)
    images, labels = batch.images, batch.labels
    torch.manual_seed(0)
    model = load_model("test_efficientnet", weights=None, class_names=batch.class_names, device="cpu")
    result = fit(model, images, labels, config, images, labels, out_dir=tmp_path / "asks", transform=Asks())
    assert set(result.recall_balance["recall_after"]) == set(batch.class_names)
    balanced, last = (load_checkpoint(tmp_path / "asks" / name) for name in ("balanced.pt", "last.pt"))
    shift = balanced.model.get_classifier().bias - last.model.get_classifier().bias
    assert torch.allclose(shift, torch.tensor([result.recall_balance["bias"][name] for name in batch.class_names]))
    # off overrides the transform; none without a transform that asks, or without validation data to fit on
    assert fit(model, images, labels, config, images, labels, transform=Asks(), balance_recall=False).recall_balance is None
    assert fit(model, images, labels, config, images, labels).recall_balance is None
    assert fit(model, images, labels, config, transform=Asks()).recall_balance is None
    with pytest.raises(WeakspotError, match="validation"):  # asked for in so many words, it needs them
        fit(model, images, labels, config, balance_recall=True)