"""Occlusion attacks: explainer-guided superpixels (study 000's LIME/SHAP segments), the white block
(study 000, Fig. 13; Wu et al., ICLR 2020 for the exhaustive baseline) and button masking (study 001).

All three propose masks + fills, cheapest first, and run on the batched search engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from weakspot.attacks.engine import DEFAULT_MAX_IN_FLIGHT, Proposals
from weakspot.attacks.guidance import box_mass, check_explainer, explain_per_fill
from weakspot.attacks.proposals import BoxProposals, SegmentProposals
from weakspot.attacks.search import SearchAttack, check_fills, check_fractions, check_positive_int
from weakspot.classifier import Classifier
from weakspot.errors import WeakspotError
from weakspot.explainers import Attribution
from weakspot.segmentation import SEGMENTATION_METHODS, segment

BLOCK_SEARCHES = ("guided", "exhaustive", "random")


def _check_segmentation(method: str) -> str:
    if method not in SEGMENTATION_METHODS:
        raise WeakspotError(f"unknown segmentation '{method}' (choose from {', '.join(SEGMENTATION_METHODS)})")
    return method


def square_boxes(height: int, width: int, side_fractions: Sequence[float], stride: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every position of squares whose side is each fraction of the image's shorter side, stepped by
    ``stride`` x side (the last row/column always included): boxes (T, 4) sorted by size then raster
    order, and each box's size index (T,)."""
    boxes, size_index = [], []
    for index, fraction in enumerate(side_fractions):
        side = max(1, min(height, width, round(fraction * min(height, width))))
        step = max(1, round(stride * side))
        ys = sorted(set(range(0, height - side + 1, step)) | {height - side})
        xs = sorted(set(range(0, width - side + 1, step)) | {width - side})
        grid_y, grid_x = torch.meshgrid(torch.tensor(ys), torch.tensor(xs), indexing="ij")
        y0, x0 = grid_y.flatten(), grid_x.flatten()
        boxes.append(torch.stack([y0, x0, y0 + side, x0 + side], dim=1))
        size_index.append(torch.full((y0.numel(),), index, dtype=torch.long))
    return torch.cat(boxes), torch.cat(size_index)


def rank_within_groups(scores: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Per image, each entry's rank (0 = highest score) among the entries of its group. ``group`` (T,) is
    sorted ascending; ties keep table order."""
    by_score = torch.argsort(-scores, dim=1, stable=True)
    by_group = by_score.gather(1, torch.argsort(group[by_score], dim=1, stable=True))
    starts = torch.searchsorted(group, group)  # first table index of each entry's group
    positions = torch.arange(scores.shape[1]).expand_as(by_group)
    return torch.empty_like(by_group).scatter_(1, by_group, positions - starts[by_group])


class GuidedAttack(SearchAttack):
    """Shared parameters of the explainer-guided attacks; ``explainer_params`` go to ``create_explainer``."""

    def __init__(self, classifier: Classifier, budget: int, explainer: str, explainer_params: dict[str, Any] | None,
                 match_fill: bool, chunk: int | None, max_in_flight: int, margin: float) -> None:
        super().__init__(classifier, budget, chunk, max_in_flight, margin)
        self.explainer = explainer
        self.explainer_params = check_explainer(explainer, explainer_params)
        self.match_fill = match_fill

    def explain(self, images: torch.Tensor, labels: torch.Tensor, segments: torch.Tensor,
                fills: Sequence[str]) -> tuple[list[Attribution], torch.Tensor]:
        """One attribution per fill and the guidance queries per image (see ``explain_per_fill``)."""
        return explain_per_fill(self.classifier, self.explainer, self.explainer_params, images.cpu(), labels, segments,
                                fills, self.match_fill)


def guidance_grid(images: torch.Tensor, cells: int, shift: bool, seed: int) -> torch.Tensor:
    """The grid the box attacks explain on: the regular one, or with ``shift`` each image's own, moved by a
    seeded random share of a cell (``grid_segments``), so a cue on a line of the regular grid is not missed on
    every image alike."""
    shifts = torch.rand(images.shape[0], 2, generator=torch.Generator().manual_seed(seed)) - 0.5 if shift else None
    return segment(images.cpu(), "grid", cells, shifts=shifts)


class SuperpixelAttack(GuidedAttack):
    """Occlude the top-k segments of the explainer's ranking (of the label), k = 1, 2, ... ``max_segments``;
    each k with every fill, smaller occluded area first."""

    name = "superpixel"

    def __init__(self, classifier: Classifier, budget: int = 200, explainer: str = "occlusion",
                 explainer_params: dict[str, Any] | None = None, n_segments: int = 24, segmentation: str = "slic",
                 fills: Sequence[str] = ("mean", "black"), max_segments: int = 10, match_fill: bool = True,
                 chunk: int | None = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, margin: float = 0.0) -> None:
        super().__init__(classifier, budget, explainer, explainer_params, match_fill, chunk, max_in_flight, margin)
        self.n_segments = check_positive_int("n_segments", n_segments, 2)
        self.segmentation = _check_segmentation(segmentation)
        self.fills = check_fills(fills)
        self.max_segments = check_positive_int("max_segments", max_segments)

    def propose(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[Proposals, torch.Tensor]:
        segments = segment(images.cpu(), self.segmentation, self.n_segments)
        attributions, evaluations = self.explain(images, labels, segments, self.fills)
        count, width = images.shape[0], attributions[0].scores.shape[1]
        sizes = torch.zeros(count, width).scatter_add_(1, segments.flatten(1), torch.ones(segments.flatten(1).shape))
        rankings = torch.stack([attribution.ranking() for attribution in attributions], dim=1)  # (N, F, K)
        ranks = torch.empty_like(rankings).scatter_(2, rankings, torch.arange(width).expand_as(rankings))
        cumulative = torch.gather(sizes[:, None].expand_as(rankings), 2, rankings).cumsum(2) / segments[0].numel()
        deepest = min(self.max_segments, width)
        k = torch.arange(1, deepest + 1).repeat_interleave(len(self.fills))  # (T,) k-major
        fill = torch.arange(len(self.fills)).repeat(deepest)
        area = cumulative[:, fill, k - 1]  # (N, T)
        valid = k[None, :] <= attributions[0].num_segments[:, None]
        order = torch.argsort((~valid) * 4.0 * deepest + k * 2.0 + area, dim=1, stable=True)
        device = self.classifier.device
        proposals = SegmentProposals(segments.to(device), ranks.to(device), k[order].to(device),
                                     fill[order].to(device), self.fills, counts=valid.sum(dim=1))
        return proposals, evaluations


class BlockAttack(GuidedAttack):
    """A filled square ("white block") over sizes and positions, smaller first.

    ``search``: ``guided`` ranks each size's positions by the attribution mass under the block and tries
    the best ``tier`` positions of every size before the next ``tier``; ``random`` uses the same tiers in
    a seeded random order; ``exhaustive`` is the grid baseline (every position of the smallest size in
    raster order, then the next size; Wu et al., ICLR 2020). Only ``guided`` spends guidance queries, on a
    grid of ``guidance_segments`` cells (each image's own with ``guidance_shift``: ``guidance_grid``).
    """

    name = "block"

    def __init__(self, classifier: Classifier, budget: int = 200, sizes: Sequence[float] = (0.1, 0.15, 0.2, 0.3, 0.4),
                 stride: float = 0.5, fill: str = "white", search: str = "guided", tier: int = 4,
                 explainer: str = "occlusion", explainer_params: dict[str, Any] | None = None,
                 guidance_segments: int = 16, match_fill: bool = True, seed: int = 0, chunk: int | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, margin: float = 0.0,
                 guidance_shift: bool = False) -> None:
        super().__init__(classifier, budget, explainer, explainer_params, match_fill, chunk, max_in_flight, margin)
        self.sizes = check_fractions("sizes", sizes, 0.0, 1.0)
        self.stride = check_fractions("stride", (stride,), 0.0, 1.0)[0]
        self.fills = check_fills(fill)[:1]
        if search not in BLOCK_SEARCHES:
            raise WeakspotError(f"unknown block search '{search}' (choose from {', '.join(BLOCK_SEARCHES)})")
        self.search = search
        self.tier = check_positive_int("tier", tier)
        self.guidance_segments = check_positive_int("guidance_segments", guidance_segments)
        self.seed, self.guidance_shift = seed, guidance_shift

    def propose(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[Proposals, torch.Tensor]:
        count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        boxes, size_index = square_boxes(height, width, self.sizes, self.stride)
        evaluations = torch.zeros(count, dtype=torch.long)
        device = self.classifier.device
        fill_index = torch.zeros(1, boxes.shape[0], dtype=torch.long, device=device)
        if self.search == "exhaustive":
            return BoxProposals("block", boxes[None, :, None].to(device), fill_index, self.fills, count,
                                height, width), evaluations
        if self.search == "guided":
            segments = guidance_grid(images, self.guidance_segments, self.guidance_shift, self.seed)
            attributions, evaluations = self.explain(images, labels, segments, self.fills)
            scores = box_mass(attributions[0].heatmap, boxes)
        else:
            generator = torch.Generator().manual_seed(self.seed)
            scores = torch.rand(count, boxes.shape[0], generator=generator)
        rank = rank_within_groups(scores, size_index)
        key = (rank // self.tier) * (len(self.sizes) * boxes.shape[0]) + size_index * boxes.shape[0] + rank
        order = torch.argsort(key, dim=1)
        return BoxProposals("block", boxes[None, :, None].to(device), fill_index, self.fills, count, height,
                            width, order=order.to(device)), evaluations


def top_regions(scores: torch.Tensor, boxes: torch.Tensor, regions: int) -> torch.Tensor:
    """Per image, the ``regions`` highest-scoring boxes that do not overlap each other (greedy
    non-maximum suppression, vectorized over images): (N, regions, 4); empty boxes when none is left."""
    count = scores.shape[0]
    available = torch.ones_like(scores, dtype=torch.bool)
    picked = torch.zeros(count, regions, 4, dtype=torch.long)
    for region in range(regions):
        masked = torch.where(available, scores, torch.tensor(float("-inf")))
        best = masked.argmax(dim=1)
        found = available.gather(1, best[:, None]).squeeze(1)
        chosen = boxes[best]
        picked[found, region] = chosen[found]
        overlap = ((boxes[None, :, 0] < chosen[:, None, 2]) & (chosen[:, None, 0] < boxes[None, :, 2])
                   & (boxes[None, :, 1] < chosen[:, None, 3]) & (chosen[:, None, 1] < boxes[None, :, 3]))
        available &= ~overlap
    return picked


class ButtonAttack(GuidedAttack):
    """Small square patches (``areas``: about 1-4% of the image each) over the highest-attribution small
    regions, several at once (study 001 blacked out shirt buttons).

    Per patch size and fill, the non-overlapping regions are ranked by attribution mass; a candidate
    occludes ``n`` = 1..``max_patches`` consecutive regions of that ranking starting at ``offset``; order:
    offset, then total area, then fill. ``black`` is the study's blackout; ``mean`` removes a dark cue
    that a black patch would only enlarge. The attribution is explained on a grid of ``guidance_segments``
    cells (each image's own with ``guidance_shift``, drawn by ``seed``: ``guidance_grid``).
    """

    name = "button"

    def __init__(self, classifier: Classifier, budget: int = 200, areas: Sequence[float] = (0.01, 0.02, 0.04),
                 max_patches: int = 3, regions: int = 6, fills: Sequence[str] = ("black", "mean"),
                 explainer: str = "occlusion", explainer_params: dict[str, Any] | None = None,
                 guidance_segments: int = 16, match_fill: bool = True, chunk: int | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, margin: float = 0.0, guidance_shift: bool = False,
                 seed: int = 0) -> None:
        super().__init__(classifier, budget, explainer, explainer_params, match_fill, chunk, max_in_flight, margin)
        self.areas = check_fractions("areas", areas, 0.0, 0.25)
        self.max_patches = check_positive_int("max_patches", max_patches)
        self.regions = check_positive_int("regions", regions)
        if self.max_patches > self.regions:
            raise WeakspotError(f"max_patches ({max_patches}) cannot exceed regions ({regions})")
        self.fills = check_fills(fills)
        self.guidance_segments = check_positive_int("guidance_segments", guidance_segments)
        self.guidance_shift, self.seed = guidance_shift, seed

    def propose(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[Proposals, torch.Tensor]:
        count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        segments = guidance_grid(images, self.guidance_segments, self.guidance_shift, self.seed)
        attributions, evaluations = self.explain(images, labels, segments, self.fills)
        sides = [area ** 0.5 for area in self.areas]
        region_boxes = {}  # (fill, size) -> (N, regions, 4)
        for fill_index, attribution in enumerate(attributions):
            for size_index, side in enumerate(sides):
                boxes, _ = square_boxes(height, width, (side,), 0.5)
                region_boxes[fill_index, size_index] = top_regions(box_mass(attribution.heatmap, boxes), boxes,
                                                                   self.regions)
        combos = [(offset, patches, size_index, fill_index)
                  for offset in range(self.regions) for patches in range(1, self.max_patches + 1)
                  if offset + patches <= self.regions
                  for size_index in range(len(sides)) for fill_index in range(len(self.fills))]
        combos.sort(key=lambda combo: (combo[0], combo[1] * self.areas[combo[2]], combo[3]))
        candidate_boxes = torch.zeros(count, len(combos), self.max_patches, 4, dtype=torch.long)
        for index, (offset, patches, size_index, fill_index) in enumerate(combos):
            candidate_boxes[:, index, :patches] = region_boxes[fill_index, size_index][:, offset:offset + patches]
        device = self.classifier.device
        fill_index = torch.tensor([[combo[3] for combo in combos]], device=device)
        return BoxProposals("button", candidate_boxes.to(device), fill_index, self.fills, count, height,
                            width), evaluations
