"""The oracles told the groups (``weakspot.augment.oracles``): group-balanced ERM and DFR's head refit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from weakspot.augment.oracles import (Dfr, GroupBalance, GroupDro, GroupDroLoss, balanced_subsample,
                                      group_balanced_weights)
from weakspot.cli import main
from weakspot.models import Classifier, load_model
from weakspot.shortcut import make_shortcut_dataset
from weakspot.errors import WeakspotError
from weakspot.training.loop import TrainConfig, fit
from weakspot.training.steps import epoch_batches

pytestmark = pytest.mark.usefixtures("one_thread")


def test_group_balanced_weights_draw_every_group_equally_often():
    groups = ["a/x"] * 90 + ["a/y"] * 10 + ["b/x"] * 5 + ["b/y"] * 95
    weights = group_balanced_weights(groups)
    config = TrainConfig(batch_size=1000, seed=0)
    drawn = torch.cat([epoch_batches(len(groups), config, epoch, 0, 1, weights)[0] for epoch in range(20)])
    shares = [float(np.isin(drawn.numpy(), [i for i, g in enumerate(groups) if g == group]).mean())
              for group in ("a/x", "a/y", "b/x", "b/y")]
    assert all(abs(share - 0.25) < 0.03 for share in shares), shares
    chosen = balanced_subsample(np.array(groups), np.random.default_rng(0))
    assert sorted(np.unique(np.array(groups)[chosen], return_counts=True)[1].tolist()) == [5, 5, 5, 5]


def test_groupbalance_is_erm_with_group_balanced_sampling(retraining_case):
    data, config, model, initial = retraining_case
    groups = [f"{int(label)}/{cue}" for label, cue in zip(data.labels, data.groups["cue"])]
    result = GroupBalance(groups).fit(model, data.images, data.labels, config)
    assert [entry["stage"] for entry in result.history] == ["train", "train"]
    reference = load_model("test_efficientnet", weights=None, class_names=data.class_names, device="cpu")
    reference.model.load_state_dict(initial)
    fit(reference, data.images, data.labels, config, sample_weights=group_balanced_weights(groups))
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, model.model.state_dict()[key]), key


def test_groupdro_loss_weights_each_group_by_how_badly_it_does():
    objective = GroupDroLoss(["b", "a", "a", "b", "c"], step_size=0.5)
    losses = torch.tensor([2.0, 0.5, 1.5, 4.0], requires_grad=True)
    loss = objective(losses, torch.tensor([0, 1, 2, 3]))  # no image of group "c" in this batch
    # group means a 1.0, b 3.0, c absent (0): q = softmax-like update of the uniform weights
    expected = torch.tensor([1 / 3 * np.exp(0.5), 1 / 3 * np.exp(1.5), 1 / 3], dtype=torch.float64)
    expected /= expected.sum()
    assert torch.allclose(objective.weights, expected)
    assert float(loss.detach()) == pytest.approx(float(expected[0] * 1.0 + expected[1] * 3.0), rel=1e-6)
    loss.backward()  # the weights are constants of the step: an image's gradient is its group's weight / its count
    assert torch.allclose(losses.grad, torch.tensor([expected[1] / 2, expected[0] / 2, expected[0] / 2,
                                                     expected[1] / 2], dtype=torch.float32))
    resumed = GroupDroLoss(["b", "a", "a", "b", "c"], step_size=0.5)
    resumed.load_state(objective.state())
    assert torch.equal(resumed.weights, objective.weights)
    with pytest.raises(WeakspotError, match="groups"):
        GroupDroLoss(["a", "d"], step_size=0.5).load_state(objective.state())


class _InterruptedDroLoss(GroupDroLoss):
    """GroupDRO's loss that raises KeyboardInterrupt on its 9th step: a Ctrl-C in the second epoch (6 steps each)."""

    def __call__(self, losses: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps > 8:
            raise KeyboardInterrupt
        return super().__call__(losses, rows)


def test_groupdro_resumes_its_group_weights_exactly(tmp_path, retraining_case, monkeypatch):
    data, config, model, initial = retraining_case
    groups = [f"{int(label)}/{cue}" for label, cue in zip(data.labels, data.groups["cue"])]
    whole = GroupDro(groups, step_size=0.2)
    whole.fit(model, data.images, data.labels, config)
    assert max(whole.details["group_weights"].values()) > 0.3  # q moved off the uniform 0.25
    resumed = load_model("test_efficientnet", weights=None, class_names=data.class_names, device="cpu")
    resumed.model.load_state_dict(initial)
    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr("weakspot.augment.oracles.GroupDroLoss", _InterruptedDroLoss)
        GroupDro(groups, step_size=0.2).fit(resumed, data.images, data.labels, config, out_dir=tmp_path)
    resumed.model.load_state_dict(initial)  # a fresh process starts from scratch weights too
    method = GroupDro(groups, step_size=0.2)
    method.fit(resumed, data.images, data.labels, config, out_dir=tmp_path, resume=True)
    assert method.details["group_weights"] == whole.details["group_weights"]
    for key, value in model.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    with pytest.raises(WeakspotError, match="step size"):
        GroupDro(groups, step_size=0.0)
    with pytest.raises(WeakspotError, match="objective"):  # it reads the batch's rows, which a transform changes
        fit(model, data.images, data.labels, config, transform=lambda images, labels, classifier: (images, labels),
            objective=GroupDroLoss(groups, 0.2))


class TwoFeatures(nn.Module):
    """Features = two pixels of the (normalised) image: a weak core feature and a cue; a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images[:, 0, 0, :2])


def two_feature_images(labels: torch.Tensor, cue: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    images = torch.zeros(len(labels), 3, 2, 2)
    images[:, 0, 0, 0] = labels + 0.35 * torch.randn(len(labels), generator=generator)  # core: overlaps
    images[:, 0, 0, 1] = cue.float()  # the cue: exact
    return images


def test_dfr_refits_the_head_on_balanced_groups_and_drops_the_cue():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    cue = torch.where(torch.rand(400, generator=generator) < 0.9, labels, 1 - labels)  # the cue agrees 90% of the time
    images = two_feature_images(labels, cue, generator)
    classifier = Classifier(TwoFeatures(), "two_features", ["a", "b"], device="cpu")
    with torch.no_grad():  # a head that reads the cue alone, as ERM would
        classifier.model.head.weight.copy_(torch.tensor([[0.0, -20.0], [0.0, 20.0]]))
        classifier.model.head.bias.zero_()
    conflicting_labels = torch.arange(200) % 2
    conflicting = two_feature_images(conflicting_labels, 1 - conflicting_labels, generator)
    assert float((classifier.predict(conflicting)[0] == conflicting_labels).float().mean()) == 0.0
    groups = [f"{int(label)}/{int(c)}" for label, c in zip(labels, cue)]
    method = Dfr(groups[200:], seed=0)
    method.refit_head(classifier, images[:200], labels[:200], images[200:], labels[200:])
    assert method.details["balanced_images"] == 4 * min(groups[200:].count(g) for g in set(groups[200:]))
    assert float((classifier.predict(conflicting)[0] == conflicting_labels).float().mean()) > 0.85


def test_finetune_runs_the_oracles_with_the_groups_of_their_split(tmp_path, tiny_finetune):
    source_dir, common = tiny_finetune
    assert main([*common, "--method", "groupbalance", "--out", str(tmp_path / "gb")]) == 0
    results = json.loads((tmp_path / "gb" / "results.json").read_text())
    assert set(results["method_details"]["group_sizes"]) == {"tall/button", "tall/none", "wide/button", "wide/none"}
    assert [entry["stage"] for entry in results["history"]] == ["train", "train"]
    assert main([*common, "--method", "groupdro", "--dro-step", "0.1", "--out", str(tmp_path / "dro")]) == 0
    results = json.loads((tmp_path / "dro" / "results.json").read_text())
    assert set(results["method_details"]["group_weights"]) == {"tall/button", "tall/none", "wide/button", "wide/none"}
    assert results["method_details"]["step_size"] == 0.1
    assert main([*common, "--method", "erm", "--out", str(tmp_path / "erm")]) == 0
    assert main([*common, "--method", "dfr", "--dfr-base", str(tmp_path / "erm" / "last.pt"),
                 "--out", str(tmp_path / "dfr")]) == 0
    results = json.loads((tmp_path / "dfr" / "results.json").read_text())
    assert results["history"] == [] and results["method_details"]["retrains"] == 20
    assert (tmp_path / "dfr" / "last.pt").is_file()
    # a folder without groups (no cue column): the oracles have nothing to be told, a one-line error
    assert main([*common[:2], str(source_dir), *common[3:], "--method", "groupbalance", "--out", str(tmp_path / "x")]) == 2
    assert main([*common[:2], str(source_dir), *common[3:], "--method", "groupdro", "--out", str(tmp_path / "x")]) == 2
    assert main([*common, "--method", "dfr", "--balance-recall", "on", "--out", str(tmp_path / "y")]) == 2

