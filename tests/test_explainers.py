"""Explainers against the reference libraries and exact formulas, on the planted-shortcut model."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from weakspot.explainers import EXPLAINERS, create_explainer
from weakspot.explainers.base import explainer_fill
from weakspot.explainers.gradcam import GradCam, XGradCam, last_conv_stage
from weakspot.explainers.lime import Lime
from weakspot.explainers.metrics import faithfulness_curves
from weakspot.explainers.shap import KernelShap, exact_shapley, kernel_shap_coalitions, kernel_shap_solve
from weakspot.segmentation import grid_segments, slic_segments


def button_images(button_data, count: int, sigma: float = 1.0):
    """The first ``count`` test images that carry the button, their SLIC segments and the button's segment.

    "The button's segment" is the segment holding the button's centre pixel. SLIC with 50 segments and
    compactness 20 puts the whole button in one segment on every test image (checked below): at 48 px
    (about 18 button pixels) with the default smoothing, at 128 px (about 185) with ``sigma=0.5`` (the
    default smoothing split about a quarter of those). So that segment is the cue and nothing else is.
    """
    _, test, boxes = button_data
    rows = torch.nonzero(boxes[:, 0] >= 0).squeeze(1)[:count]
    images, boxes = test.images[rows], boxes[rows]
    segments = slic_segments(images, n_segments=50, compactness=20, sigma=sigma)
    centre_y, centre_x = (boxes[:, 0] + boxes[:, 2]) // 2, (boxes[:, 1] + boxes[:, 3]) // 2
    button_segment = segments[torch.arange(len(rows)), centre_y, centre_x]
    dark = (images < 0.1).all(dim=1)  # the button is colour (0.05, 0.05, 0.05); the scenes are >= 0.2 - noise
    inside = (segments == button_segment[:, None, None]) & dark
    assert torch.equal(inside.flatten(1).sum(1), dark.flatten(1).sum(1)), "SLIC split a button"
    return images, segments, button_segment


def two_by_n_segments(count: int, columns: int, size: int = 48) -> torch.Tensor:
    """A 2 x ``columns`` grid: a fixed, small number of players for the exact-Shapley tests."""
    rows = (torch.arange(size) * 2 // size)[:, None]
    cols = (torch.arange(size) * columns // size)[None, :]
    return (rows * columns + cols).expand(count, size, size).clone()


def test_lime_matches_lime_image(button_model, button_data):
    from lime import lime_image

    images, segments, _ = button_images(button_data, 2)
    _, test, boxes = button_data
    no_button = test.images[boxes[:, 0] < 0][:1]
    images = torch.cat([images, no_button])
    segments = torch.cat([segments, slic_segments(no_button, n_segments=50, compactness=20)])
    ours = Lime(button_model, seed=7)(images, segments=segments)

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        return button_model.predict_proba(torch.from_numpy(batch).permute(0, 3, 1, 2).float()).cpu().numpy()

    for row in range(len(images)):
        explainer = lime_image.LimeImageExplainer(random_state=7)
        label = int(ours.target[row])
        reference = explainer.explain_instance(
            images[row].permute(1, 2, 0).double().numpy(), classifier_fn, labels=(label,), top_labels=None,
            num_samples=1000, batch_size=100, segmentation_fn=lambda _: segments[row].numpy(), random_seed=7)
        weights = dict(reference.local_exp[label])
        count = int(segments[row].max()) + 1
        theirs = np.array([weights[segment] for segment in range(count)])
        mine = ours.scores[row, :count].numpy()
        assert spearmanr(theirs, mine).statistic >= 0.9
        np.testing.assert_allclose(mine, theirs, atol=1e-6)
    assert ours.evaluations.tolist() == [1000] * len(images)


def test_lime_result_does_not_depend_on_the_batch(button_model, button_data):
    images, segments, _ = button_images(button_data, 3)
    explainer = Lime(button_model, num_samples=200, fill="gray")
    together = explainer(images, segments=segments)
    alone = explainer(images[2:], segments=segments[2:])
    torch.testing.assert_close(together.scores[2:, :alone.scores.shape[1]], alone.scores, rtol=0, atol=1e-5)


def brute_force_shapley(classifier, image: torch.Tensor, segments: torch.Tensor, filled: torch.Tensor,
                        target: int) -> np.ndarray:
    """Shapley's formula with one model call per coalition and a per-pixel numpy mask: no shared code path."""
    players = int(segments.max()) + 1
    labels, picture, background = segments.numpy(), image.numpy(), filled.numpy()

    def value(coalition: frozenset[int]) -> float:
        shown = np.isin(labels, list(coalition))
        mixed = np.where(shown[None], picture, background)
        return float(classifier.predict_proba(torch.from_numpy(mixed)[None])[0, target])

    values = {frozenset(c): value(frozenset(c)) for size in range(players + 1)
              for c in itertools.combinations(range(players), size)}
    phi = np.zeros(players)
    for player in range(players):
        others = [p for p in range(players) if p != player]
        for size in range(players):
            weight = math.factorial(size) * math.factorial(players - size - 1) / math.factorial(players)
            for coalition in itertools.combinations(others, size):
                phi[player] += weight * (values[frozenset(coalition) | {player}] - values[frozenset(coalition)])
    return phi


def test_exact_shapley_equals_brute_force(button_model, button_data):
    images, _, _ = button_images(button_data, 1)
    segments = two_by_n_segments(1, 3)
    attribution = KernelShap(button_model, fill="gray")(images, segments=segments)
    reference = brute_force_shapley(button_model, images[0], segments[0], explainer_fill(images, segments, "gray")[0],
                                    int(attribution.target[0]))
    np.testing.assert_allclose(attribution.scores[0].numpy(), reference, atol=1e-5)
    assert int(attribution.evaluations[0]) == 2 ** 6  # 63 coalitions + the clean image


@pytest.mark.parametrize("samples", [2000, 300])
def test_kernel_shap_near_exact_on_ten_segments(button_model, button_data, samples):
    images, _, _ = button_images(button_data, 2)
    segments = two_by_n_segments(2, 5)
    exact = KernelShap(button_model, fill="mean")(images, segments=segments)
    sampled = KernelShap(button_model, fill="mean", num_samples=samples, max_exact=0, seed=3)(images, segments=segments)
    assert (sampled.scores - exact.scores).abs().max() <= 0.05
    assert (sampled.evaluations <= samples + 2).all()
    empty = button_model.predict_proba(explainer_fill(images, segments, "mean")).cpu()[torch.arange(2), sampled.target]
    torch.testing.assert_close(sampled.scores.sum(1), sampled.probability - empty, rtol=0, atol=1e-5)


def test_kernel_shap_sampling_recovers_a_game_with_interactions():
    """Without any model: a 16-player game with pairwise interactions, exact by enumeration (65,536
    coalitions), against KernelSHAP whose budget forces most coalitions to be sampled."""
    players = 16
    generator = torch.Generator().manual_seed(0)
    linear = torch.randn(players, generator=generator, dtype=torch.float64)
    pairs = torch.randn(players, players, generator=generator, dtype=torch.float64).triu(1) * 0.3

    def game(masks: torch.Tensor) -> torch.Tensor:
        z = masks.double()
        return z @ linear + ((z @ pairs) * z).sum(1)

    from weakspot.explainers.shap import all_coalitions

    exact = exact_shapley(game(all_coalitions(players)), players)
    masks, weights = kernel_shap_coalitions(players, 4000, torch.Generator().manual_seed(1))
    assert len(masks) <= 4000 and weights.sum() == pytest.approx(sum((players - 1) / (s * (players - s)) for s in range(1, players)))
    empty, full = 0.0, float(game(torch.ones(1, players, dtype=torch.bool)))
    estimate = kernel_shap_solve(masks, weights, game(masks), empty, full)
    assert estimate.sum() == pytest.approx(full - empty)
    assert (estimate - exact).abs().max() < 0.05 * exact.abs().max()


def _xgradcam_weights(gradient: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """pytorch_grad_cam.XGradCAM's channel weights, written out."""
    return (gradient * activation / (activation.sum(dim=(2, 3), keepdim=True) + 1e-7)).sum(dim=(2, 3), keepdim=True)


@pytest.mark.parametrize("explainer_class, reference_weights", [
    (GradCam, lambda gradient, activation: gradient.mean(dim=(2, 3), keepdim=True)),
    (XGradCam, _xgradcam_weights)])
def test_gradcam_equals_a_hooks_reference(button_model, button_data, explainer_class, reference_weights):
    images, segments, _ = button_images(button_data, 4)
    explainer = explainer_class(button_model)
    assert explainer.layer == last_conv_stage(button_model.model) == button_model.model.feature_info[-1]["module"]
    attribution = explainer(images, segments=segments)

    layer = dict(button_model.net.named_modules())["model." + explainer.layer]
    stored: dict[str, torch.Tensor] = {}
    forward = layer.register_forward_hook(lambda m, i, output: stored.__setitem__("activation", output))
    backward = layer.register_full_backward_hook(lambda m, gi, grad_output: stored.__setitem__("gradient", grad_output[0]))
    try:
        logits = button_model.net(images)
        logits[torch.arange(len(images)), attribution.target].sum().backward()
    finally:
        forward.remove()
        backward.remove()
    button_model.model.zero_grad(set_to_none=True)
    weights = reference_weights(stored["gradient"], stored["activation"].detach())
    cam = torch.relu((weights * stored["activation"]).sum(1, keepdim=True)).detach()
    cam = torch.nn.functional.interpolate(cam, size=(48, 48), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(attribution.heatmap, cam, rtol=1e-4, atol=1e-6)
    for row in range(len(images)):
        count = int(segments[row].max()) + 1
        means = torch.stack([cam[row][segments[row] == s].mean() for s in range(count)])
        torch.testing.assert_close(attribution.scores[row, :count], means, rtol=1e-4, atol=1e-6)
    assert attribution.evaluations.tolist() == [2] * len(images)


PLANTED = {  # explainer, parameters, top-k that must hold the button's segment, images
    "lime": ({"fill": "mean", "num_samples": 500}, 1, 16),
    "shap": ({"fill": "mean", "num_samples": 500}, 1, 16),
    "occlusion": ({"fill": "mean"}, 1, 32),
    "shap-partition": ({"fill": "mean", "max_evals": 500}, 1, 6),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_explainers_find_the_planted_button(button_model, button_data, name):
    params, top, count = PLANTED[name]
    images, segments, button_segment = button_images(button_data, count)
    attribution = create_explainer(name, button_model, **params)(images, segments=segments)
    assert (attribution.target == 1).all()
    found = (attribution.top_segments(top) == button_segment[:, None]).any(dim=1).float().mean()
    assert found >= 0.9


def test_gradcam_finds_the_planted_button_in_its_top_two(gradcam_button_model, gradcam_button_data):
    """Grad-CAM is as coarse as its layer. On the 48 px button model the last stage is a 2x2 map (0/32 hits);
    on this 128 px ResNet the last stage (``layer4``, stride 32, 4x4) hit 37/40 with this fixture and 35/40
    with two other training seeds, right at the threshold, while the documented override to the stride-16
    stage (``layer3``, 8x8) hit 40, 40 and 39/40. The automatic choice of the last stage is checked by
    ``test_gradcam_equals_a_hooks_reference``."""
    images, segments, button_segment = button_images(gradcam_button_data, 40, sigma=0.5)
    assert last_conv_stage(gradcam_button_model.model) == "layer4"
    attribution = GradCam(gradcam_button_model, layer="layer3")(images, segments=segments)
    assert (attribution.target == 1).all()
    found = (attribution.top_segments(2) == button_segment[:, None]).any(dim=1).float().mean()
    assert found >= 0.9


def test_deletion_and_insertion_reward_a_faithful_ranking(button_model, button_data):
    images, segments, _ = button_images(button_data, 4)
    attribution = create_explainer("occlusion", button_model)(images, segments=segments)
    faithful = faithfulness_curves(button_model, images, attribution, fill="mean", steps=10)
    reversed_ranking = dataclasses.replace(attribution, scores=-attribution.scores)
    unfaithful = faithfulness_curves(button_model, images, reversed_ranking, fill="mean", steps=10)
    torch.testing.assert_close(faithful.deletion[:, 0], attribution.probability, rtol=0, atol=1e-5)
    torch.testing.assert_close(faithful.insertion[:, -1], attribution.probability, rtol=0, atol=1e-5)
    torch.testing.assert_close(faithful.deletion[:, -1], faithful.insertion[:, 0], rtol=0, atol=1e-6)
    assert (faithful.deletion_auc < unfaithful.deletion_auc).all()
    assert (faithful.insertion_auc > unfaithful.insertion_auc).all()
    assert faithful.evaluations.tolist() == [22] * 4


def test_every_registered_explainer_returns_the_common_result(button_model, button_data):
    images = button_data[1].images[:2]
    segments = grid_segments(2, 48, 48, cells=3)
    for name in sorted(EXPLAINERS):
        params = {"max_evals": 40} if name == "shap-partition" else {}
        attribution = create_explainer(name, button_model, **params)(images, segments=segments)
        assert attribution.method == name
        assert attribution.scores.shape == (2, 9) and torch.isfinite(attribution.scores).all()
        assert attribution.heatmap.shape == (2, 48, 48) and attribution.ranking().shape == (2, 9)
        assert (attribution.evaluations >= 2).all()
