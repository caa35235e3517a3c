"""Property-based checks (hypothesis) of the attack engine's invariants, on tiny images, any budget, chunk
and in-flight setting, and a model whose answers do not depend on the batch they are computed in:

- the occluded area an occlusion attack reports is the area its mask really changed;
- no image spends more queries than the budget, and the per-image counts add up to the model's calls;
- a perturbation reported as fooling the model fools it again when re-evaluated with ``predict_proba``
  (so a NaN answer, which is never a success, can never be reported as one).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from weakspot.attacks import create_attack
from weakspot.attacks.base import Perturbation
from weakspot.attacks.engine import Proposals, search
from weakspot.errors import WeakspotError
from weakspot.models import Classifier, Preprocessing

OCCLUSIONS = ("block", "button", "superpixel")
ATTACK_NAMES = (*OCCLUSIONS, "crop", "flip", "spatial")
EXAMPLES = settings(max_examples=25, deadline=None)


class LinearScorer(nn.Module):
    """Seeded per-class pixel weights around the mean image, summed in float64: each image's logits are
    computed on their own, so an image re-evaluated in another batch gets the same answer, and the margins
    are small enough for occlusions to flip some. Images with more than ``nan_above`` of their pixels black
    get NaN logits (a model that breaks on some perturbations)."""

    def __init__(self, seed: int, size: int, classes: int, nan_above: float | None) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(classes, 3, size, size, generator=generator, dtype=torch.float64))
        self.register_buffer("bias", -0.55 * self.weight.sum(dim=(1, 2, 3)))  # images are uniform in [0.1, 1]
        self.nan_above = nan_above

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.double()
        logits = (pixels[:, None] * self.weight[None]).sum(dim=(2, 3, 4)) + self.bias
        if self.nan_above is not None:
            black = (pixels == 0).all(dim=1).double().mean(dim=(1, 2))
            logits = torch.where((black > self.nan_above)[:, None], torch.full_like(logits, float("nan")), logits)
        return logits


def scorer(seed: int, size: int, classes: int, nan_above: float | None) -> Classifier:
    identity = Preprocessing(input_size=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return Classifier(LinearScorer(seed, size, classes, nan_above), "linear", [str(c) for c in range(classes)],
                      identity, device="cpu", micro_batch=8)


def attack_params(name: str, data: st.DataObject) -> dict[str, object]:
    """Each attack's own knobs, drawn small; every occlusion fills black, which changes every pixel it
    covers (the images stay in [0.1, 1])."""
    if name == "block":
        return {"fill": "black", "search": data.draw(st.sampled_from(("guided", "exhaustive", "random"))),
                "sizes": (0.2, 0.4), "guidance_segments": 4}
    if name == "button":
        return {"fills": ("black",), "guidance_segments": 4, "regions": 3, "max_patches": 2}
    if name == "superpixel":
        return {"fills": ("black",), "n_segments": data.draw(st.integers(4, 12)), "max_segments": 3}
    return {}


@pytest.mark.parametrize("name", ATTACK_NAMES)
@EXAMPLES
@given(seed=st.integers(0, 2**16), count=st.integers(1, 4),
       size=st.integers(8, 16), classes=st.integers(2, 3), budget=st.integers(1, 80),
       chunk=st.integers(1, 24), max_in_flight=st.integers(1, 4),
       nan_above=st.none() | st.floats(0.0, 0.3), mislabel=st.lists(st.booleans(), min_size=4, max_size=4),
       data=st.data())
def test_attack_invariants(name: str, seed: int, count: int, size: int, classes: int, budget: int, chunk: int,
                           max_in_flight: int, nan_above: float | None, mislabel: list[bool],
                           data: st.DataObject) -> None:
    classifier = scorer(seed, size, classes, nan_above)
    images = torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.1
    predicted = classifier.predict_proba(images).argmax(dim=1).cpu()
    labels = torch.where(torch.tensor(mislabel[:count]), (predicted + 1) % classes, predicted)
    try:
        attack = create_attack(name, classifier, budget=budget, chunk=chunk, max_in_flight=max_in_flight,
                               **attack_params(name, data))
    except WeakspotError as error:  # budgets under an attack's minimum are refused, never overrun
        assert "budget" in str(error)
        return
    before = classifier.images_evaluated
    try:
        result = attack(images, labels)
    except WeakspotError as error:  # guidance that alone needs more than the budget is refused
        assert f"budget of {budget}" in str(error) and name in OCCLUSIONS
        return

    assert int(result.queries.sum()) == classifier.images_evaluated - before
    assert int(result.queries.min()) >= 1 and int(result.queries.max()) <= budget
    assert torch.equal(result.correct, labels == predicted)
    assert not (result.fooled & ~result.correct).any()
    assert torch.equal(result.adversarial[~result.fooled], images[~result.fooled])
    fooled = torch.nonzero(result.fooled).flatten()
    if fooled.numel():
        again = classifier.predict_proba(result.adversarial[fooled]).cpu()
        assert torch.isfinite(again).all()
        assert (again.argmax(dim=1) != labels[fooled]).all()
    for index in fooled.tolist():
        perturbation = result.perturbations[index]
        assert perturbation is not None and 0.0 <= perturbation.area <= 1.0  # a flip changes no area
        if name in OCCLUSIONS:
            changed = (result.adversarial[index] != images[index]).any(dim=0).float().mean()
            assert abs(float(changed) - perturbation.area) < 1e-6


class Planned(Proposals):
    """Image i is fooled (rendered as zeros) by candidate ``first[i]`` and every later one."""

    def __init__(self, first: list[int], total: int) -> None:
        self.first = torch.tensor(first)
        self.counts = torch.full((len(first),), total, dtype=torch.long)

    def render(self, images: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        hit = candidates >= self.first[rows]
        return torch.where(hit[:, None, None, None], torch.zeros_like(images), images)

    def describe(self, row: int, candidate: int) -> Perturbation:
        return Perturbation(kind="planned", area=1.0)


class Brightness(nn.Module):
    """Class 1 for a bright image, class 0 for a black one."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = images.mean(dim=(1, 2, 3)) - 0.25
        return torch.stack([-score, score], dim=1)


@EXAMPLES
@given(first=st.lists(st.integers(0, 30), min_size=1, max_size=8), total=st.integers(1, 30),
       limit=st.integers(0, 30), chunk=st.integers(1, 16), max_in_flight=st.integers(1, 4))
def test_engine_stops_at_the_first_success_within_each_limit(first: list[int], total: int, limit: int, chunk: int,
                                                              max_in_flight: int) -> None:
    identity = Preprocessing(input_size=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    classifier = Classifier(Brightness(), "brightness", ["dark", "bright"], identity, device="cpu", micro_batch=4)
    count = len(first)
    outcome = search(classifier, torch.full((count, 3, 4, 4), 0.8), torch.ones(count, dtype=torch.long),
                     Planned(first, total), torch.full((count,), limit), chunk=chunk, max_in_flight=max_in_flight)
    reachable = min(total, limit)
    assert int(outcome.queries.sum()) == classifier.images_evaluated
    assert outcome.fooled.tolist() == [f < reachable for f in first]
    assert outcome.winner.tolist() == [f if f < reachable else -1 for f in first]
    for index, position in enumerate(first):
        queries = int(outcome.queries[index])
        if position < reachable:  # the winner, plus at most the candidates in flight with it
            assert position + 1 <= queries <= min(reachable, position + max_in_flight)
        else:
            assert queries == reachable
    assert not outcome.nonfinite.any()
