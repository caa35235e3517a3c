"""Equal-recall class biases (``weakspot.training.calibration``)."""

import pytest
import torch
from torch import nn

from weakspot.errors import WeakspotError
from weakspot.models import Classifier
from weakspot.training.calibration import (balance_recall, class_recalls, equal_recall_bias, worst_group_accuracy,
                                          worst_group_bias)


def biased_logits(count: int, classes: int, lean: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy logits that score the true class 1.0 higher, with ``lean`` added to the last class's logit."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % classes
    logits = torch.randn(count, classes, generator=generator) + nn.functional.one_hot(labels, classes).float()
    logits[:, -1] += lean
    return logits, labels


def recall_gap(logits: torch.Tensor, labels: torch.Tensor) -> float:
    recalls = class_recalls(logits.argmax(dim=1), labels, labels.unique())
    return float(recalls.max() - recalls.min())


def test_a_binary_lean_is_undone_and_a_balanced_model_is_left_alone():
    logits, labels = biased_logits(2000, 2, lean=-1.5)
    assert recall_gap(logits, labels) > 0.4
    bias = equal_recall_bias(logits, labels)
    assert bias[0] == 0 and 1.2 < bias[1] < 1.8
    assert recall_gap(logits + bias, labels) < 0.02
    separable = torch.tensor([[2.0, -2.0], [-2.0, 2.0]] * 10)
    assert torch.equal(equal_recall_bias(separable, torch.tensor([0, 1] * 10)), torch.zeros(2))


def test_more_classes_are_balanced_one_at_a_time():
    logits, labels = biased_logits(3000, 3, lean=2.0)
    assert recall_gap(logits, labels) > 0.5
    assert recall_gap(logits + equal_recall_bias(logits, labels), labels) < 0.05


def test_balance_recall_moves_the_head_bias_so_a_saved_model_carries_it(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    net.get_classifier = lambda: net[1]  # timm's accessor for the head
    with torch.no_grad():
        net[1].bias[1] -= 3.0  # everything called class 0
    classifier = Classifier(net, "toy", ["a", "b"])
    images, labels = torch.rand(200, 3, 4, 4), torch.arange(200) % 2
    before = net[1].bias.detach().clone()
    details = balance_recall(classifier, images, labels)
    assert details["recall_before"]["b"] < 0.1 < details["recall_after"]["b"]
    assert torch.allclose(net[1].bias - before, torch.tensor([details["bias"]["a"], details["bias"]["b"]]))
    predicted, _ = classifier.predict(images)
    assert abs(float((predicted[labels == 1] == 1).float().mean()) - details["recall_after"]["b"]) < 1e-6


def test_any_linear_last_layer_is_balanced_and_other_heads_are_refused():
    """A head found without timm's accessor (a torchvision-style model) is balanced like timm's; a last linear
    layer without a bias, one with a layer after it, or none at all is refused in one line."""
    images, labels = torch.rand(40, 3, 4, 4), torch.arange(40) % 2
    plain = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), "toy", ["a", "b"])
    assert set(balance_recall(plain, images, labels)["bias"]) == {"a", "b"}
    refused = {"no linear last layer": nn.Sequential(nn.Flatten(), nn.Linear(48, 2, bias=False)),
               "not its last layer": nn.Sequential(nn.Flatten(), nn.Linear(48, 2), nn.Tanh()),
               "no linear last layer with a bias": nn.Sequential(nn.Conv2d(3, 2, 4), nn.Flatten())}
    for message, net in refused.items():
        with pytest.raises(WeakspotError, match=f"recall balance: .*{message}"):
            balance_recall(Classifier(net, "toy", ["a", "b"]), images, labels)


def test_the_worst_group_bias_raises_the_worst_group_where_equal_recalls_do_not():
    """Validation drawn like training: a cue on 95% of class 1 and 5% of class 0 that the model reads as class 1,
    and class 1 easier with it than class 0 is without it. Equal recalls shift towards class 0 and leave class 1
    without the cue behind; fitted on the groups (label x cue) the balance raises the worst of them, and no
    nearby shift does better."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4000) % 2
    cue = torch.rand(4000, generator=generator) < torch.where(labels == 1, 0.95, 0.05)
    groups = labels * 2 + cue.long()
    margin = torch.tensor([-1.5, 0.5, -0.5, 3.0])[groups]  # class 1's logit over class 0's, per group
    logits = torch.stack([torch.zeros(4000), margin + torch.randn(4000, generator=generator)], dim=1)

    def worst(bias: torch.Tensor) -> float:
        return float(worst_group_accuracy((logits + bias).argmax(dim=1), labels, groups))

    equal, best = equal_recall_bias(logits, labels), worst_group_bias(logits, labels, groups)
    assert worst(best) > worst(equal) + 0.05
    for shift in (-0.5, -0.1, 0.1, 0.5):
        assert worst(best) >= worst(best + torch.tensor([0.0, shift]))
