"""Cues: regions whose removal fooled the model and whose transplant into another class fooled it too.

A ``CueBank`` holds them (the donor images, the regions' masks, the donors' classes, the fill that erased each)
and draws each class's cue zone: where its cues sit, shared by several of them and grown a little, since one
donor's box misses a cue that moves between images. The zone is what the spread pastes and erases
(``counterexamples``), except where it covers more than one place could (``ZONE_MOST``): there each cue's own
region, grown the same way, so an edit covers one place of the cue rather than most of the image.
``paste_cues`` pastes cues into images of another class beside a control (the same pixels elsewhere): the
dependence test (``confirm``) reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from weakspot.attacks import AttackResult
from weakspot.attacks.proposals import box_masks
from weakspot.fills import ERASING_FILLS, apply_masks

# A class's zone: the pixels at least ZONE_SHARE as covered by its cues as the most covered pixel, and covered by
# at least ZONE_LEAST cues (or as many as cover the peak, if fewer), grown by ZONE_GROWTH of the image side
# (docs/results.md).
ZONE_SHARE = 0.25
ZONE_LEAST = 2
ZONE_GROWTH = 0.08
# A class zone wider than this share of the image is not one place (the local families' zones cover 10-35%, a
# stamp in one of four corners 35-61%; docs/results.md): the spread then uses each picked cue's own region, grown.
ZONE_MOST = 0.4


def grown(masks: torch.Tensor) -> torch.Tensor:
    """Boolean masks (..., H, W) grown by ``ZONE_GROWTH`` of the image side: one donor's box misses a cue that
    sits a little elsewhere in another image."""
    reach = int(round(ZONE_GROWTH * max(masks.shape[-2:])))
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    return (torch.nn.functional.max_pool2d(flat, 2 * reach + 1, 1, reach) > 0).reshape(masks.shape)


def cue_zone(masks: torch.Tensor) -> torch.Tensor:
    """The zone (H, W) of one class's cue masks (n, H, W)."""
    covered = masks.float()
    cover, count = covered.mean(dim=0), covered.sum(dim=0)
    return grown((cover >= ZONE_SHARE * cover.max()) & (count >= min(float(ZONE_LEAST), float(count.max()))))


def draw_at_most(candidates: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` of the ``candidates`` (all, if fewer), drawn by ``rng`` without replacement, sorted."""
    return np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))


@dataclass
class CueBank:
    """Confirmed cues: donor images, the regions' masks, the donors' labels and the fill that erased each."""

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    fills: tuple[str, ...]
    zone_of: dict[int, torch.Tensor] = field(init=False)  # per class: its cue zone
    spread_of: torch.Tensor = field(init=False)  # per cue: what the spread pastes or erases (``spread_masks``)

    def __post_init__(self) -> None:
        # once per bank (a round), not per batch: the zones depend on the bank alone
        self.zone_of = {int(label): cue_zone(self.masks[self.labels == label]) for label in self.labels.unique()}
        wide = {label for label, zone in self.zone_of.items() if zone.float().mean() > ZONE_MOST}
        own = grown(self.masks)
        self.spread_of = torch.stack([own[index] if label in wide else self.zone_of[label]
                                      for index, label in enumerate(self.labels.tolist())]) if len(self) else own

    @classmethod
    def empty(cls, images: torch.Tensor) -> CueBank:
        return cls(images[:0], torch.zeros(0, *images.shape[-2:], dtype=torch.bool),
                   torch.empty(0, dtype=torch.long), ())

    @classmethod
    def concat(cls, banks: Sequence[CueBank]) -> CueBank:
        return cls(torch.cat([bank.images for bank in banks]), torch.cat([bank.masks for bank in banks]),
                   torch.cat([bank.labels for bank in banks]), tuple(fill for bank in banks for fill in bank.fills))

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, keep: torch.Tensor) -> CueBank:
        """The cues where the boolean ``keep`` is set."""
        return CueBank(self.images[keep], self.masks[keep], self.labels[keep],
                       tuple(fill for fill, kept in zip(self.fills, keep.tolist()) if kept))

    def at_most(self, per_class: int, rng: np.random.Generator) -> CueBank:
        """At most ``per_class`` cues of each class, drawn by ``rng`` (all of a class that has fewer)."""
        keep = torch.zeros(len(self), dtype=torch.bool)
        for label in self.labels.unique():
            rows = torch.nonzero(self.labels == label).flatten().numpy()
            keep[torch.from_numpy(draw_at_most(rows, per_class, rng))] = True
        return self.select(keep)

    def spread_masks(self, picked: torch.Tensor) -> torch.Tensor:
        """What the spread pastes or erases for each picked cue, (len(picked), H, W): its class's zone, or the
        cue's own region grown where that zone is wider than ``ZONE_MOST`` of the image (a cue in several
        places, whose zone would erase most of every image)."""
        return self.spread_of[picked]


def erasing_removals(result: AttackResult) -> torch.Tensor:
    """Which images a box attack fooled by erasing regions (``fills.ERASING_FILLS``): the cue donors."""
    return torch.tensor([bool(fooled) and (perturbation := result.perturbations[row]) is not None
                         and bool(perturbation.boxes) and perturbation.fill in ERASING_FILLS
                         for row, fooled in enumerate(result.fooled.cpu().tolist())], dtype=torch.bool)


def perturbation_masks(result: AttackResult, rows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean masks (len(rows), H, W) of the boxes a box attack changed in those rows of its result."""
    boxes = torch.zeros(len(rows), max(len(result.perturbations[row].boxes) for row in rows.tolist()), 4,
                        dtype=torch.long)
    for index, row in enumerate(rows.tolist()):
        patch_boxes = result.perturbations[row].boxes
        boxes[index, :len(patch_boxes)] = torch.tensor(patch_boxes)
    return box_masks(boxes, height, width)


def paste_cues(images: torch.Tensor, labels: torch.Tensor, bank: CueBank, eligible: torch.Tensor,
               generator: torch.Generator, recipients: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                     torch.Tensor]:
    """Each of the bank's cues pasted at its place into ``recipients`` random ``eligible`` images of another class,
    and its control: the same donor's pixels under the same mask moved to a random place that fits. Returns the
    cue images, the control images, the recipients' labels and the cue's class per transplant."""
    height, width = images.shape[-2:]
    cue_images, control_images, recipient_labels, cue_class = [images[:0]], [images[:0]], [labels[:0]], [labels[:0]]
    for index in range(len(bank)):
        others = torch.nonzero(eligible & (labels != bank.labels[index])).flatten()
        if not len(others):
            continue
        chosen = others[torch.randint(len(others), (recipients,), generator=generator)]
        mask = bank.masks[index]
        rows, columns = torch.nonzero(mask, as_tuple=True)
        shift = (int(torch.randint(-int(rows.min()), height - int(rows.max()), (1,), generator=generator)),
                 int(torch.randint(-int(columns.min()), width - int(columns.max()), (1,), generator=generator)))
        donor = bank.images[index].expand(recipients, -1, -1, -1)
        cue_images.append(apply_masks(images[chosen], mask.expand(recipients, -1, -1), donor))
        control_images.append(apply_masks(images[chosen], torch.roll(mask, shift, (0, 1)).expand(recipients, -1, -1),
                                          donor))
        recipient_labels.append(labels[chosen])
        cue_class.append(bank.labels[index].expand(recipients))
    return torch.cat(cue_images), torch.cat(control_images), torch.cat(recipient_labels), torch.cat(cue_class)
