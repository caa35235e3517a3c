"""Geometric attacks: region-of-interest crops resized back (study 000, Fig. 2), the horizontal flip
(study 001) and a grid search over small rotations and translations combined with the flip (Engstrom et
al., 2019). Each candidate is one affine resampling, rendered for a whole chunk by one ``grid_sample``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence

import torch

from weakspot.attacks.engine import DEFAULT_MAX_IN_FLIGHT, Proposals
from weakspot.attacks.proposals import AffineProposals, outside_fraction
from weakspot.attacks.search import SearchAttack, check_fractions, check_positive_int
from weakspot.classifier import Classifier
from weakspot.errors import WeakspotError

MIN_CROP_SCALE = 0.6


class AffineAttack(SearchAttack):
    """A fixed list of transforms, smallest change first, the same for every image (no guidance)."""

    kind = ""

    @abstractmethod
    def transforms(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, float]],
                                                            list[tuple[int, int, int, int] | None]]:
        """Thetas (T, 2, 3), the area each changes (T,), their parameters and crop boxes, in order."""

    def propose(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[Proposals, torch.Tensor]:
        thetas, areas, params, boxes = self.transforms(images.shape[-2], images.shape[-1])
        proposals = AffineProposals(self.kind, thetas.to(self.classifier.device), areas, params, boxes,
                                    images.shape[0])
        return proposals, torch.zeros(images.shape[0], dtype=torch.long)


class CropAttack(AffineAttack):
    """Crop a square-scaled region (``scales`` >= 0.6 of each side) at ``positions`` x ``positions`` places
    and resize it back to the full image. Order: largest scale first, then crops nearest the centre.
    Area = the fraction of the image cut away (1 - scale^2)."""

    name = kind = "crop"

    def __init__(self, classifier: Classifier, budget: int = 200,
                 scales: Sequence[float] = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6), positions: int = 5,
                 chunk: int | None = None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 margin: float = 0.0) -> None:
        super().__init__(classifier, budget, chunk, max_in_flight, margin)
        scales = check_fractions("scales", scales, 0.0, 1.0)
        if min(scales) < MIN_CROP_SCALE or max(scales) >= 1.0:
            raise WeakspotError(f"crop scales must be in [{MIN_CROP_SCALE}, 1), got {list(scales)}")
        self.scales = tuple(sorted(scales, reverse=True))
        self.positions = check_positive_int("positions", positions)

    def transforms(self, height: int, width: int):
        offsets = torch.linspace(-1, 1, self.positions) if self.positions > 1 else torch.zeros(1)
        grid_y, grid_x = torch.meshgrid(offsets, offsets, indexing="ij")
        places = sorted(zip(grid_y.flatten().tolist(), grid_x.flatten().tolist()),
                        key=lambda place: (place[0] ** 2 + place[1] ** 2, place))
        thetas, areas, params, boxes = [], [], [], []
        for scale in self.scales:
            for unit_y, unit_x in places:
                ty, tx = unit_y * (1 - scale), unit_x * (1 - scale)
                thetas.append([[scale, 0.0, tx], [0.0, scale, ty]])
                areas.append(1 - scale * scale)
                params.append({"scale": scale, "tx": tx, "ty": ty})
                boxes.append((round((ty - scale + 1) / 2 * height), round((tx - scale + 1) / 2 * width),
                              round((ty + scale + 1) / 2 * height), round((tx + scale + 1) / 2 * width)))
        return torch.tensor(thetas), torch.tensor(areas), params, boxes


class SpatialAttack(AffineAttack):
    """Grid search over rotations (degrees, up to ``max_angle`` by ``angle_step``) and translations (fraction
    of the side, up to ``max_shift`` by ``shift_step``), each with and without the horizontal flip when
    ``flip``. Order: smallest normalized change first, the flip alone first of all. Area = the fraction
    of the image that leaves the frame (zero padding)."""

    name = kind = "spatial"

    def __init__(self, classifier: Classifier, budget: int = 200, max_angle: float = 15.0, angle_step: float = 5.0,
                 max_shift: float = 0.1, shift_step: float = 0.05, flip: bool = True, chunk: int | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, margin: float = 0.0) -> None:
        super().__init__(classifier, budget, chunk, max_in_flight, margin)
        if not (0 <= max_angle <= 90 and angle_step > 0 and 0 <= max_shift <= 0.5 and shift_step > 0):
            raise WeakspotError("spatial attack: need 0 <= max_angle <= 90, 0 <= max_shift <= 0.5 and positive steps, "
                                f"got max_angle={max_angle}, angle_step={angle_step}, max_shift={max_shift}, "
                                f"shift_step={shift_step}")
        self.max_angle, self.angle_step = float(max_angle), float(angle_step)
        self.max_shift, self.shift_step = float(max_shift), float(shift_step)
        self.flip = flip

    @staticmethod
    def _symmetric(limit: float, step: float) -> list[float]:
        count = int(math.floor(limit / step + 1e-9))
        return [step * index for index in range(-count, count + 1)]

    def transforms(self, height: int, width: int):
        angles = self._symmetric(self.max_angle, self.angle_step)
        shifts = self._symmetric(self.max_shift, self.shift_step)
        grid = [(flip, angle, dy, dx) for flip in ((False, True) if self.flip else (False,))
                for angle in angles for dy in shifts for dx in shifts if flip or angle or dy or dx]
        if not grid:
            raise WeakspotError("spatial attack: the grid holds no transform (all ranges are 0 and flip is off)")

        def change(item: tuple[bool, float, float, float]) -> tuple[float, bool]:
            flip, angle, dy, dx = item
            return (math.hypot(angle / self.max_angle if self.max_angle else 0.0,
                               dy / self.max_shift if self.max_shift else 0.0,
                               dx / self.max_shift if self.max_shift else 0.0), flip)

        grid.sort(key=change)
        thetas = []
        for flip, angle, dy, dx in grid:
            radians = math.radians(angle)
            cos, sin = math.cos(radians), math.sin(radians)
            sign = -1.0 if flip else 1.0
            # pixel-space rotation about the centre, expressed in affine_grid's normalized coordinates
            thetas.append([[cos * sign, -sin * height / width, -2 * dx],
                           [sin * width / height * sign, cos, -2 * dy]])
        thetas = torch.tensor(thetas)
        params = [{"flip": float(flip), "angle": angle, "dy": dy, "dx": dx} for flip, angle, dy, dx in grid]
        return thetas, outside_fraction(thetas, height, width), params, [None] * len(grid)


class FlipAttack(SpatialAttack):
    """The horizontal flip alone (study 001 flipped shirts so the buttons changed side): one candidate."""

    name = kind = "flip"

    def __init__(self, classifier: Classifier, budget: int = 200, chunk: int | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, margin: float = 0.0) -> None:
        super().__init__(classifier, budget, max_angle=0.0, max_shift=0.0, flip=True, chunk=chunk,
                         max_in_flight=max_in_flight, margin=margin)
