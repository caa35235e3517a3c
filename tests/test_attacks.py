"""Attacks on the planted button shortcut, the search engine's early stopping and query accounting, the
registry's validation, and ``weakspot attack``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from weakspot.attacks import ATTACKS, create_attack, proposals
from weakspot.attacks.base import Perturbation
from weakspot.attacks.engine import Proposals, search
from weakspot.attacks.occlusion import guidance_grid
from weakspot.attacks.proposals import ImageFills
from weakspot.attacks.report import attack_summary
from weakspot.cli import main
from weakspot.errors import WeakspotError
from weakspot.fills import apply_masks
from weakspot.models import Classifier, Preprocessing
from weakspot.report import load_report
from weakspot.segmentation import grid_segments


def refool(model: Classifier, result) -> None:
    """Re-evaluating every reported adversarial image really changes the prediction away from the label."""
    fooled = result.fooled
    if fooled.any():
        predicted = model.predict_proba(result.adversarial[fooled]).argmax(dim=1).cpu()
        assert (predicted != result.labels[fooled]).all()
        assert torch.equal(predicted, result.adversarial_class[fooled])


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_accounts_queries_and_respects_budget(name, button_model, button_data):
    _, test, _ = button_data
    images, labels = test.images[:12], test.labels[:12].clone()
    labels[0] = 1 - labels[0]  # one misclassified image: never attacked, one query
    budget = 60
    before = button_model.images_evaluated
    result = create_attack(name, button_model, budget=budget)(images, labels)
    assert int(result.queries.sum()) == button_model.images_evaluated - before
    assert int(result.queries.max()) <= budget
    assert not bool(result.correct[0]) and int(result.queries[0]) == 1 and not bool(result.fooled[0])
    assert not (result.fooled & ~result.correct).any()
    assert result.adversarial.shape == images.shape
    assert torch.equal(result.adversarial[~result.fooled], images[~result.fooled])
    refool(button_model, result)
    for perturbation, fooled in zip(result.perturbations, result.fooled.tolist()):
        assert (perturbation is not None) == fooled
        if perturbation is not None:
            assert perturbation.kind == name and 0.0 <= perturbation.area <= 1.0
            json.dumps(perturbation.to_dict())
    row = attack_summary(result)
    assert row["name"] == name and row["success_rate"] == pytest.approx(result.success_rate)
    assert row["robust_accuracy"] == pytest.approx(result.robust_accuracy)


def test_superpixel_and_button_fool_the_planted_shortcut_with_two_pieces(button_model, button_data):
    _, test, _ = button_data
    for name, params, pieces in (("superpixel", {"max_segments": 2}, "k"), ("button", {"max_patches": 2}, "patches")):
        result = create_attack(name, button_model, budget=200, **params)(test.images, test.labels)
        assert result.correct.sum() >= 60
        assert result.success_rate >= 0.9, (name, result.success_rate)
        assert all(p.params[pieces] <= 2 for p in result.perturbations if p is not None)
        refool(button_model, result)


def test_superpixel_ranking_puts_the_button_first(button_model, button_data):
    """On images with the button, the single occluded segment that flips the model covers the button."""
    _, test, boxes = button_data
    with_button = torch.nonzero(test.labels == 1).flatten()[:16]
    result = create_attack("superpixel", button_model, fills=("mean",))(test.images[with_button], test.labels[with_button])
    assert result.success_rate >= 0.9
    for index, perturbation in enumerate(result.perturbations):
        if perturbation is None:
            continue
        y0, x0, y1, x1 = boxes[with_button[index]].tolist()
        changed = (result.adversarial[index] - test.images[with_button[index]]).abs().sum(0) > 0
        assert perturbation.params["k"] == 1 and changed[y0:y1, x0:x1].any()


def test_guided_block_needs_a_fifth_of_the_exhaustive_queries(button_model, button_data):
    _, test, _ = button_data
    images, labels = test.images[:16], test.labels[:16]
    guided = create_attack("block", button_model, budget=200, search="guided")(images, labels)
    exhaustive = create_attack("block", button_model, budget=3000, search="exhaustive")(images, labels)
    assert exhaustive.success_rate >= 0.9
    assert guided.success_rate >= exhaustive.success_rate
    both = guided.fooled & exhaustive.fooled
    guided_queries = guided.queries[both].float().mean()
    exhaustive_queries = exhaustive.queries[both].float().mean()
    assert guided_queries <= exhaustive_queries / 5, (float(guided_queries), float(exhaustive_queries))
    # the exhaustive grid meets the smallest blocks first: its successes are never larger
    assert exhaustive.mean_area <= guided.mean_area + 1e-9


class MeanBrightness(nn.Module):
    """Class 1 when the mean pixel is above 0.5 (NaN in, NaN out): a model whose answers we know."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = self.scale * (images.mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([-score, score], dim=1)


def brightness_classifier() -> Classifier:
    identity = Preprocessing(input_size=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return Classifier(MeanBrightness(), "mean-brightness", ["dark", "bright"], identity, device="cpu", micro_batch=4)


class PlannedProposals(Proposals):
    """Image i is fooled (rendered black) exactly by candidate ``fooling[i]``; candidate ``nan_at`` renders
    NaN; everything rendered is logged."""

    def __init__(self, fooling: list[int], total: int, nan_at: int | None = None) -> None:
        self.fooling, self.nan_at = torch.tensor(fooling), nan_at
        self.counts = torch.full((len(fooling),), total, dtype=torch.long)
        self.log: list[tuple[int, list[int], list[int]]] = []  # (chunk, rows, candidates)

    def render(self, images, rows, candidates):
        self.log.append((len(self.log), rows.tolist(), candidates.tolist()))
        hit = candidates == self.fooling[rows]
        out = torch.where(hit[:, None, None, None], torch.zeros_like(images), images)
        if self.nan_at is not None:
            out[candidates == self.nan_at] = float("nan")
        return out

    def describe(self, row, candidate):
        return Perturbation(kind="planned", area=0.0)


@pytest.mark.parametrize("max_in_flight", [1, 4])
def test_engine_stops_each_image_at_its_first_success(max_in_flight):
    classifier = brightness_classifier()
    fooling = [0, 3, 7, 50, 2, 11, 30, 5]  # image 3 is never fooled within its limit
    images = torch.full((len(fooling), 3, 8, 8), 0.8)
    labels = torch.ones(len(fooling), dtype=torch.long)
    limits = torch.full((len(fooling),), 40)
    proposals = PlannedProposals(fooling, total=60, nan_at=1)
    before = classifier.images_evaluated
    outcome = search(classifier, images, labels, proposals, limits, chunk=8, max_in_flight=max_in_flight)
    assert int(outcome.queries.sum()) == classifier.images_evaluated - before
    assert outcome.fooled.tolist() == [f < 40 for f in fooling]
    assert outcome.winner.tolist() == [f if f < 40 else -1 for f in fooling]
    assert int(outcome.queries[3]) == 40  # the limit, not the 60 candidates
    success_chunk = {}
    for chunk, rows, candidates in proposals.log:
        for row, candidate in zip(rows, candidates):
            assert row not in success_chunk or success_chunk[row] == chunk, "a fooled image was queried again"
            if candidate == fooling[row]:
                success_chunk[row] = chunk
    for row, first in enumerate(fooling):
        if first < 40:
            extra = int(outcome.queries[row]) - (first + 1)
            assert 0 <= extra <= max_in_flight - 1
            if max_in_flight == 1:
                assert extra == 0
    assert int(outcome.probabilities[0].argmax()) == 0 and torch.isfinite(outcome.probabilities[outcome.fooled]).all()


def test_engine_never_counts_nan_as_fooled():
    classifier = brightness_classifier()
    images = torch.full((2, 3, 8, 8), 0.8)
    proposals = PlannedProposals([99, 99], total=5, nan_at=2)
    outcome = search(classifier, images, torch.ones(2, dtype=torch.long), proposals, torch.full((2,), 5))
    assert not outcome.fooled.any() and outcome.queries.tolist() == [5, 5]


class DimmingProposals(Proposals):
    """Candidate c renders the image at brightness 0.805 - 0.01 c (the brightness model's confidence falls)."""

    def __init__(self, count: int, total: int) -> None:
        self.counts = torch.full((count,), total, dtype=torch.long)

    def render(self, images, rows, candidates):
        return torch.ones_like(images) * (0.805 - 0.01 * candidates.float())[:, None, None, None]

    def describe(self, row, candidate):
        return Perturbation(kind="dimming", area=0.0)


def test_engine_margin_counts_a_confident_but_shaken_prediction_as_success():
    """p(bright) = sigmoid(40 (m - 0.5)): candidate 28 (m = 0.525, p = 0.73) is the first whose lead over
    the other class is below 0.5; candidate 31 (m = 0.495) is the first misclassification."""
    classifier = brightness_classifier()
    images = torch.full((2, 3, 8, 8), 0.8)
    labels = torch.ones(2, dtype=torch.long)
    for margin, first in ((0.0, 31), (0.5, 28)):
        outcome = search(classifier, images, labels, DimmingProposals(2, 40), torch.full((2,), 40), max_in_flight=1,
                         margin=margin)
        assert outcome.winner.tolist() == [first, first]
    for margin in (-0.1, 1.0, True):
        with pytest.raises(WeakspotError, match="margin"):
            create_attack("crop", classifier, margin=margin)
    dim = torch.full((2, 3, 32, 32), 0.58)  # p(bright) 0.96: 2% black brings the lead under 0.9, 12% never flips it
    assert not create_attack("button", classifier, budget=60, fills=("black",))(dim, labels).fooled.any()
    result = create_attack("button", classifier, budget=60, fills=("black",), margin=0.9)(dim, labels)
    assert result.fooled.all() and (result.adversarial_class == 1).all()  # shaken, still predicted bright


def test_image_fills_compute_each_image_once_and_equal_a_fresh_fill(monkeypatch):
    images = torch.rand(5, 3, 24, 24)
    image_fills = ImageFills(("median", "white"), count=5)
    computed = {"median": 0, "white": 0}
    real = proposals.fill_images

    def counting(batch: torch.Tensor, fill: str) -> torch.Tensor:
        computed[fill] += len(batch)
        return real(batch, fill)

    monkeypatch.setattr(proposals, "fill_images", counting)
    for rows in ([3, 1, 3], [1, 4, 0], [2, 3]):  # repeats within and across chunks, as the engine renders
        index = torch.tensor(rows)
        masks = torch.zeros(len(rows), 24, 24, dtype=torch.bool)
        masks[:, 4:12, 4:12] = True
        rendered = image_fills.where(images[index], index, masks, torch.tensor([0] * (len(rows) - 1) + [1]))
        fresh = [real(images[index][:-1], "median"), real(images[index][-1:], "white")]
        assert torch.equal(rendered, apply_masks(images[index], masks, torch.cat(fresh)))
    assert computed == {"median": 4, "white": 3}  # the median of each of rows 3, 1, 4, 2 once; white every time


def test_registry_validates_parameters(button_model):
    with pytest.raises(WeakspotError, match="unknown attack"):
        create_attack("laser", button_model)
    for name in ATTACKS:
        with pytest.raises(WeakspotError, match="budget"):
            create_attack(name, button_model, budget=0)
    bad = [("block", {"sizes": (0.0, 0.2)}), ("block", {"fill": "plaid"}), ("block", {"search": "psychic"}),
           ("superpixel", {"explainer": "oracle"}), ("superpixel", {"segmentation": "voronoi"}),
           ("button", {"max_patches": 9, "regions": 3}), ("button", {"areas": (0.5,)}),
           ("crop", {"scales": (0.5,)}), ("spatial", {"max_angle": -1}), ("pgd", {"eps": 0}),
           ("block", {"colour": "white"})]
    for name, params in bad:
        with pytest.raises(WeakspotError):
            create_attack(name, button_model, **params)


def test_guidance_larger_than_the_budget_is_an_error(button_model, button_data):
    _, test, _ = button_data
    attack = create_attack("superpixel", button_model, budget=10)
    with pytest.raises(WeakspotError, match="budget of 10"):
        attack(test.images[:4], test.labels[:4])


def test_attack_command_writes_table_report_and_grid(tmp_path, button_model, button_data, capsys):
    _, test, _ = button_data
    for index in range(16):
        folder = tmp_path / "data" / test.class_names[int(test.labels[index])]
        folder.mkdir(parents=True, exist_ok=True)
        array = (test.images[index].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{index:03d}.png")
    checkpoint = button_model.save(tmp_path / "model.pt")
    report_path, out = tmp_path / "report.json", tmp_path / "figures"
    assert main(["attack", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "data"), "--size", "48",
                 "--attacks", "block,flip,button", "--budget", "80", "--json", str(report_path),
                 "--out", str(out), "--device", "cpu"]) == 0
    output = capsys.readouterr().out
    assert "block" in output and "flip" in output and "robust acc" in output
    report = load_report(report_path)
    assert [row["name"] for row in report["attacks"]] == ["block", "flip", "button"]
    assert report["n"] == 16 and report["budget"] == 80
    assert (out / "examples.png").stat().st_size > 1000
    assert main(["attack", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "data"), "--size", "48",
                 "--attacks", "block,laser"]) == 2
    assert "unknown attack 'laser'" in capsys.readouterr().err


class AnyQuadrantCue(nn.Module):
    """Class 1 while any quadrant of a 4 x 4 cue at rows and columns 14-17 is bright: covering part of the cue
    changes nothing, as a checkerboard three quarters present still reads as the checkerboard."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cue = images[:, :, 14:18, 14:18].mean(dim=1)
        quadrants = torch.stack([cue[:, rows, columns].mean(dim=(1, 2)) for rows in (slice(0, 2), slice(2, 4))
                                 for columns in (slice(0, 2), slice(2, 4))], dim=1)
        score = 20.0 * (quadrants.max(dim=1).values - 0.5)
        return torch.stack([-score, score], dim=1)


def test_a_shifted_guidance_grid_finds_a_cue_that_sits_on_a_corner_of_the_regular_grid():
    cells, side = 5, 40  # 8-pixel cells: the cue's rows and columns 14-17 straddle the lines at 16
    cue = torch.zeros(side, side, dtype=torch.bool)
    cue[14:18, 14:18] = True
    assert len(grid_segments(1, side, side, cells)[0][cue].unique()) == 4  # each cell holds a quarter of it
    shifted = guidance_grid(torch.zeros(400, 3, side, side), cells * cells, shift=True, seed=0)
    assert torch.equal(shifted, guidance_grid(torch.zeros(400, 3, side, side), cells * cells, shift=True, seed=0))
    largest = torch.stack([torch.bincount(grid[cue], minlength=cells * cells).max() for grid in shifted]) / 16
    assert 0.3 < float((largest == 1).float().mean()) < 0.5  # whole in one cell on both axes: 0.625^2 of shifts
    identity = Preprocessing(input_size=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    classifier = Classifier(AnyQuadrantCue(), "any-quadrant", ["none", "cue"], identity, device="cpu")
    images = torch.rand(40, 3, side, side, generator=torch.Generator().manual_seed(0)) * 0.3
    images[:, :, 14:18, 14:18] = 1.0
    labels = torch.ones(40, dtype=torch.long)
    fooled = {shift: int(create_attack("button", classifier, budget=40, fills=("black",), guidance_segments=25,
                                       guidance_shift=shift)(images, labels).fooled.sum()) for shift in (False, True)}
    assert fooled[False] == 0 and fooled[True] >= 8, fooled  # about 40% of the 40 have the cue inside one cell
