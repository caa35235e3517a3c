"""Shapley values of superpixels: exact enumeration for few segments, KernelSHAP (Lundberg & Lee 2017)
otherwise, and an adapter that runs the ``shap`` package's own Partition explainer (study 000's tool).

A segment "plays" by being shown; an absent segment shows the fill. The value of a coalition is the target
probability, so scores sum to f(all shown) - f(none shown) (efficiency) for both exact and KernelSHAP.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from weakspot.classifier import Classifier
from weakspot.explainers.base import (Explainer, check_fill, coalition_probabilities, explainer_fill, pad_scores,
                                      segment_counts, segment_sums)

MAX_EXACT_SEGMENTS = 12


def all_coalitions(players: int) -> torch.Tensor:
    """Every coalition (2^K, K) as booleans; row b holds the bits of the integer b (player i = bit i)."""
    bits = torch.arange(2 ** players)[:, None] >> torch.arange(players)[None, :]
    return (bits & 1).bool()


def exact_shapley(values: torch.Tensor, players: int) -> torch.Tensor:
    """Shapley values (K,) from the values (2^K,) of all coalitions indexed as in ``all_coalitions``:
    phi_i = sum over S without i of |S|!(K-|S|-1)!/K! * (v(S + i) - v(S))."""
    values = values.double()
    sizes = all_coalitions(players).sum(dim=1)
    weight = torch.tensor([math.factorial(s) * math.factorial(players - s - 1) / math.factorial(players)
                           for s in range(players)], dtype=torch.float64)
    index = torch.arange(2 ** players)
    phi = torch.empty(players, dtype=torch.float64)
    for player in range(players):
        without = index[(index >> player) & 1 == 0]
        phi[player] = (weight[sizes[without]] * (values[without | (1 << player)] - values[without])).sum()
    return phi


def kernel_shap_coalitions(players: int, budget: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Coalitions (M <= budget, K) and their regression weights for KernelSHAP, as ``shap.KernelExplainer``
    chooses them: sizes are taken in complementary pairs (s, K-s) from the smallest; a pair is enumerated
    exactly (weights: the Shapley kernel) while the budget's expected share covers all its subsets; the
    rest of the budget is sampled in antithetic pairs (a coalition and its complement) with sizes drawn
    from the remaining kernel mass, which the samples share equally. Duplicates are merged (weights add).
    """
    size_mass = torch.zeros(players + 1, dtype=torch.float64)
    for size in range(1, players):
        size_mass[size] = (players - 1) / (size * (players - size))
    masks: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    left, remaining = budget, size_mass.clone()
    for size in range(1, players // 2 + 1):
        group = sorted({size, players - size})
        subsets = sum(math.comb(players, s) for s in group)
        share = float(remaining[group].sum() / remaining.sum())
        if left * share < subsets - 1e-8:
            break
        for s in group:
            members = torch.tensor(list(itertools.combinations(range(players), s)))
            block = torch.zeros(len(members), players, dtype=torch.bool)
            block[torch.arange(len(members))[:, None], members] = True
            masks.append(block)
            weights.append(torch.full((len(members),), float(size_mass[s]) / math.comb(players, s), dtype=torch.float64))
        left -= subsets
        remaining[group] = 0.0
    pairs = left // 2
    if pairs > 0 and remaining.sum() > 0:
        sizes = torch.multinomial(remaining.float(), pairs, replacement=True, generator=generator)
        order = torch.rand(pairs, players, generator=generator).argsort(dim=1).argsort(dim=1)
        sampled = order < sizes[:, None]
        sampled = torch.cat([sampled, ~sampled])
        masks.append(sampled)
        weights.append(torch.full((2 * pairs,), float(remaining.sum()) / (2 * pairs), dtype=torch.float64))
    if not masks:
        return torch.zeros(0, players, dtype=torch.bool), torch.zeros(0, dtype=torch.float64)
    unique, inverse = torch.unique(torch.cat(masks), dim=0, return_inverse=True)
    merged = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.cat(weights))
    return unique, merged


def kernel_shap_solve(masks: torch.Tensor, weights: torch.Tensor, values: torch.Tensor, empty_value: float,
                      full_value: float) -> torch.Tensor:
    """The weighted least-squares fit v(S) ~ v(empty) + sum_{i in S} phi_i under the efficiency constraint
    sum phi = v(full) - v(empty), solved by eliminating the last player (as ``shap`` does)."""
    players = masks.shape[1]
    total = full_value - empty_value
    present = masks.double()
    if players == 1:
        return torch.tensor([total], dtype=torch.float64)
    design = present[:, :-1] - present[:, -1:]
    response = values.double() - empty_value - present[:, -1] * total
    root = weights.double().sqrt()[:, None]
    head = torch.linalg.lstsq(design * root, response[:, None] * root, driver="gelsd").solution.squeeze(1)
    return torch.cat([head, (total - head.sum())[None]])


class KernelShap(Explainer):
    """Shapley values of the segments for the target probability.

    Images with at most ``max_exact`` segments get exact values by enumerating all 2^K coalitions;
    others get KernelSHAP with ``num_samples`` coalitions (default as ``shap``'s ``nsamples="auto"``:
    2K + 2048). ``fill``: any ``fills.FILLS`` name or ``"segment-mean"``. Every coalition of every image goes
    through ``predict_proba`` in one chunked stream; each image uses ``seed`` (batch-independent results).
    """

    name = "shap"

    def __init__(self, classifier: Classifier, n_segments: int = 50, segmentation: str = "slic",
                 num_samples: int | None = None, max_exact: int = MAX_EXACT_SEGMENTS, fill: str = "mean",
                 seed: int = 0) -> None:
        super().__init__(classifier, n_segments, segmentation)
        self.num_samples = num_samples
        self.max_exact = max_exact
        self.fill = check_fill(fill)
        self.seed = seed

    def coalitions(self, players: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The coalitions evaluated for an image with ``players`` segments (the empty one first, the full one
        left out: its value is the clean probability) and their weights (None: exact enumeration)."""
        if players <= self.max_exact:
            return all_coalitions(players)[:-1], None
        budget = self.num_samples if self.num_samples is not None else 2 * players + 2048
        masks, weights = kernel_shap_coalitions(players, budget, torch.Generator().manual_seed(self.seed))
        return torch.cat([torch.zeros(1, players, dtype=torch.bool), masks]), weights

    def attribute(self, images: torch.Tensor, target: torch.Tensor, segments: torch.Tensor,
                  clean_probability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = segment_counts(segments).tolist()
        width = max(counts)
        plans = [self.coalitions(count) for count in counts]
        present = torch.zeros(sum(len(masks) for masks, _ in plans), width, dtype=torch.bool)
        start = 0
        for (masks, _), count in zip(plans, counts):
            present[start:start + len(masks), :count] = masks
            start += len(masks)
        image_index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor([len(m) for m, _ in plans]))
        filled = explainer_fill(images, segments, self.fill)
        values = coalition_probabilities(self.classifier, images, segments, filled, image_index, present, target)
        per_image = []
        for row, ((masks, weights), image_values) in enumerate(zip(plans, torch.split(values, [len(m) for m, _ in plans]))):
            full = float(clean_probability[row])
            if weights is None:
                per_image.append(exact_shapley(torch.cat([image_values.double(), torch.tensor([full], dtype=torch.float64)]),
                                               counts[row]))
            else:
                per_image.append(kernel_shap_solve(masks[1:], weights, image_values[1:], float(image_values[0]), full))
        return pad_scores(per_image), torch.tensor([len(masks) for masks, _ in plans])


class ShapPartition(Explainer):
    """The ``shap`` package's Partition explainer with a ``shap.maskers.Image`` masker (what study 000 ran),
    behind our interface: pixel-level Owen values, summed per segment so it ranks superpixels too.

    The masker hides with our ``fill`` (passed to shap as the background image), so the comparison with
    ``KernelShap`` is like for like. ``max_evals`` and ``batch_size`` are shap's; evaluations are counted
    as the rows shap sends to the model.
    """

    name = "shap-partition"

    def __init__(self, classifier: Classifier, n_segments: int = 50, segmentation: str = "slic",
                 max_evals: int = 500, batch_size: int = 64, fill: str = "mean") -> None:
        super().__init__(classifier, n_segments, segmentation)
        self.max_evals = max_evals
        self.batch_size = batch_size
        self.fill = check_fill(fill)

    def attribute(self, images: torch.Tensor, target: torch.Tensor, segments: torch.Tensor,
                  clean_probability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import shap

        rows_evaluated = [0]

        def model(batch: np.ndarray) -> np.ndarray:
            rows_evaluated[0] += len(batch)
            tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
            return self.classifier.predict_proba(tensor).cpu().numpy()

        filled = explainer_fill(images, segments, self.fill)
        pixel_maps, evaluations = [], []
        for row in range(images.shape[0]):
            image = images[row].permute(1, 2, 0).numpy()
            masker = shap.maskers.Image(filled[row].permute(1, 2, 0).numpy(), shape=image.shape)
            explainer = shap.PartitionExplainer(model, masker)
            before = rows_evaluated[0]
            explanation = explainer(image[None], max_evals=self.max_evals, batch_size=self.batch_size,
                                    outputs=[int(target[row])], silent=True)
            pixel_maps.append(torch.from_numpy(np.asarray(explanation.values)[0, ..., 0].sum(axis=-1)).float())
            evaluations.append(rows_evaluated[0] - before)
        heatmap = torch.stack(pixel_maps)
        sums, _ = segment_sums(heatmap[:, None], segments)
        counts = segment_counts(segments).tolist()
        scores = pad_scores([sums[row, 0, :count] for row, count in enumerate(counts)])
        return scores, torch.tensor(evaluations), heatmap
