"""The three kinds of candidates the search attacks propose, each rendered as batched tensor ops:

- ``BoxProposals``: one or several rectangles filled with a fill (block, button);
- ``SegmentProposals``: the top-k superpixels of a ranking filled with a fill (superpixel);
- ``AffineProposals``: an affine resampling of the whole image (crop, flip, rotation, translation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from weakspot.attacks.base import Perturbation
from weakspot.attacks.engine import Proposals
from weakspot.fills import IMAGE_FILLS, apply_masks, fill_images


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Union masks (M, H, W) of boxes (M, P, 4) as y0, x0, y1, x1 (end exclusive; an empty box adds nothing)."""
    ys = torch.arange(height, device=boxes.device)[None, None, :, None]
    xs = torch.arange(width, device=boxes.device)[None, None, None, :]
    y0, x0, y1, x1 = (boxes[..., index, None, None] for index in range(4))
    return ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)).any(dim=1)


class ImageFills:
    """The fills of a search's N images, each computed once per image: the engine renders many candidates of
    one image in turn, and a fill computed from the image (``IMAGE_FILLS``; the median was about 8% of a loop
    round's time) would otherwise be recomputed for every one. Holds one copy of the images per such fill
    used; a fill is per image, so the cached rows equal what a fresh computation gives."""

    def __init__(self, fills: Sequence[str], count: int) -> None:
        self.fills, self.count = tuple(fills), count
        self.cached: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # fill -> (N, 3, H, W) images, (N,) done

    def of_rows(self, images: torch.Tensor, rows: torch.Tensor, fill: str) -> torch.Tensor:
        """``fill`` of ``images`` (M, 3, H, W), the images of ``rows`` (M,)."""
        if fill not in IMAGE_FILLS:
            return fill_images(images, fill)
        if fill not in self.cached:
            self.cached[fill] = (images.new_empty(self.count, *images.shape[1:]),
                                 torch.zeros(self.count, dtype=torch.bool, device=rows.device))
        filled, done = self.cached[fill]
        missing = ~done[rows]
        if missing.any():
            new_rows = rows[missing]  # a row twice in one chunk gets the same values both times
            filled[new_rows] = fill_images(images[missing], fill)
            done[new_rows] = True
        return filled[rows]

    def where(self, images: torch.Tensor, rows: torch.Tensor, masks: torch.Tensor, fill_index: torch.Tensor
              ) -> torch.Tensor:
        """Images with ``fills[fill_index[m]]`` under ``masks[m]``."""
        filled = torch.empty_like(images)
        for index, fill in enumerate(self.fills):
            chosen = fill_index == index
            if chosen.any():
                filled[chosen] = self.of_rows(images[chosen], rows[chosen], fill)
        return apply_masks(images, masks, filled)


class BoxProposals(Proposals):
    """Candidate t of image i: the boxes ``boxes[i or 0, order[i, t]]`` (P per candidate, empty ones are
    padding) filled with ``fills[fill_index[i or 0, order[i, t]]]``. A table (boxes or fill_index) shared
    by all images has a leading dimension of 1; ``order`` (N, T) permutes it per image (None: the table order)."""

    def __init__(self, kind: str, boxes: torch.Tensor, fill_index: torch.Tensor, fills: Sequence[str],
                 count: int, height: int, width: int, order: torch.Tensor | None = None) -> None:
        self.kind, self.boxes, self.fill_index, self.fills = kind, boxes, fill_index, tuple(fills)
        self.order, self.height, self.width = order, height, width
        self.counts = torch.full((count,), boxes.shape[1] if order is None else order.shape[1], dtype=torch.long)
        self.image_fills = ImageFills(fills, count)

    def _lookup(self, rows: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        table = candidates if self.order is None else self.order[rows, candidates]
        def source(table_rows: int) -> torch.Tensor:
            return rows if table_rows > 1 else torch.zeros_like(rows)

        return self.boxes[source(self.boxes.shape[0]), table], self.fill_index[source(self.fill_index.shape[0]), table]

    def render(self, images: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        boxes, fill_index = self._lookup(rows, candidates)
        return self.image_fills.where(images, rows, box_masks(boxes, self.height, self.width), fill_index)

    def describe(self, row: int, candidate: int) -> Perturbation:
        boxes, fill_index = self._lookup(torch.tensor([row], device=self.boxes.device),
                                         torch.tensor([candidate], device=self.boxes.device))
        area = float(box_masks(boxes, self.height, self.width).float().mean())
        kept = [tuple(int(v) for v in box) for box in boxes[0].tolist() if box[2] > box[0] and box[3] > box[1]]
        return Perturbation(kind=self.kind, area=area, box=kept[0] if len(kept) == 1 else None,
                            boxes=tuple(kept), fill=self.fills[int(fill_index[0])],
                            params={"patches": float(len(kept))})


class SegmentProposals(Proposals):
    """Candidate t of image i: the ``k[i, t]`` best-ranked segments of ranking ``fill[i, t]`` filled with
    ``fills[fill[i, t]]``. ``ranks[i, f, s]`` is segment s's position in image i's ranking for fill f;
    image i has ``counts[i]`` candidates (fewer when it has fewer segments)."""

    def __init__(self, segments: torch.Tensor, ranks: torch.Tensor, k: torch.Tensor, fill: torch.Tensor,
                 fills: Sequence[str], counts: torch.Tensor) -> None:
        self.segments, self.ranks, self.k, self.fill, self.fills = segments, ranks, k, fill, tuple(fills)
        self.counts = counts
        self.image_fills = ImageFills(fills, len(counts))

    def _masks(self, rows: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fill = self.fill[rows, candidates]
        ranks = self.ranks[rows, fill]  # (M, K)
        positions = torch.gather(ranks, 1, self.segments[rows].flatten(1)).view(-1, *self.segments.shape[1:])
        return positions < self.k[rows, candidates][:, None, None], fill

    def render(self, images: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        masks, fill = self._masks(rows, candidates)
        return self.image_fills.where(images, rows, masks, fill)

    def describe(self, row: int, candidate: int) -> Perturbation:
        rows = torch.tensor([row], device=self.k.device)
        masks, fill = self._masks(rows, torch.tensor([candidate], device=self.k.device))
        k, ranks = int(self.k[row, candidate]), self.ranks[row, int(fill[0])]
        chosen = torch.argsort(ranks)[:k].tolist()
        return Perturbation(kind="superpixel", area=float(masks.float().mean()), segments=tuple(chosen),
                            fill=self.fills[int(fill[0])], params={"k": float(k)})


class AffineProposals(Proposals):
    """The same list of affine resamplings for every image: ``thetas`` (T, 2, 3) in ``affine_grid``'s
    normalized coordinates, zero padding outside the image (as Engstrom et al. 2019)."""

    def __init__(self, kind: str, thetas: torch.Tensor, areas: torch.Tensor, params: list[dict[str, float]],
                 boxes: list[tuple[int, int, int, int] | None], count: int) -> None:
        self.kind, self.thetas, self.areas, self.params, self.boxes = kind, thetas, areas, params, boxes
        self.counts = torch.full((count,), thetas.shape[0], dtype=torch.long)

    def render(self, images: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.thetas[candidates].to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def describe(self, row: int, candidate: int) -> Perturbation:
        return Perturbation(kind=self.kind, area=float(self.areas[candidate]), box=self.boxes[candidate],
                            params=dict(self.params[candidate]))


def outside_fraction(thetas: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Fraction of output pixels (T,) whose source lies outside the image (shown as zero padding)."""
    grid = F.affine_grid(thetas.float(), [thetas.shape[0], 1, height, width], align_corners=False)
    return (grid.abs() > 1).any(dim=-1).float().mean(dim=(1, 2))
