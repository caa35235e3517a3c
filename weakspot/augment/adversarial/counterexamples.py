"""Counterexamples: what the training stream gets so the model stops reading a confirmed cue.

Two kinds, both with true labels. The **pool**: a round's removals and transplants (``locate``) and the natural
cue-conflicting training images, which a model that leans on a confirmed cue gets wrong; drawn into each batch
class-balanced. The **spread**: every clean image, blind to its label, gets a confirmed class's cue zone (a cue's
own region where the zone is wider than one place) pasted from a donor or erased with the same pixels of a batch
image of another class, so the zone stops saying anything about the label. No query: the spread reuses the round's cues.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weakspot.augment.adversarial.cues import CueBank
from weakspot.fills import apply_masks, fill_images
from weakspot.models import Classifier

CONFLICTS = "conflicts"  # the pool source of the natural cue-conflicting training images


def pool_weights(labels: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Draw weights over the pool: each class present gets the same share, split equally between the sources
    that kept images of it. Class-balanced, as the pool holds mostly the class that is easiest to fool; source-
    balanced, so that an edit (a fill, a pasted region) cannot predict the label by itself."""
    width = int(sources.max()) + 1
    cells = labels * width + sources
    cells_per_class = torch.bincount(torch.unique(cells) // width)
    return 1.0 / (torch.bincount(cells)[cells] * cells_per_class[labels]).float()


@dataclass
class Pool:
    """Counterexamples with their true labels and the index of the source that gave each."""

    images: torch.Tensor
    labels: torch.Tensor
    sources: torch.Tensor

    @classmethod
    def empty(cls) -> Pool:
        return cls(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.labels)

    def extend(self, images: torch.Tensor, labels: torch.Tensor, source: int) -> None:
        self.images = torch.cat([self.images, images.cpu()])
        self.labels = torch.cat([self.labels, labels.cpu()])
        self.sources = torch.cat([self.sources, torch.full((len(labels),), source)])

    def draw(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` images drawn with ``pool_weights`` from torch's global RNG (which a checkpoint saves)."""
        picked = torch.multinomial(pool_weights(self.labels, self.sources), count, replacement=True)
        return self.images[picked], self.labels[picked]


def natural_conflicts(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The training images the current model gets wrong: after a round that confirmed a cue, the images that
    conflict with it (its class without it, another class with it), which the spread's edits do not stand for."""
    return classifier.predict(images)[0].cpu() != labels.cpu()


def spread_cues(bank: CueBank, images: torch.Tensor, labels: torch.Tensor, probability: float) -> torch.Tensor:
    """Each image, with ``probability``, gets a random cue's spread mask (``CueBank.spread_masks``: its class's
    zone, or its own region where that zone is wider than one place), pasted from the cue's donor or erased (a
    fair coin): pasted from a random batch image of another class than the cue's, or filled with the cue's fill
    when the batch has none. Blind to the image's label, so the edits say nothing of it;
    the cues are drawn class-balanced, as the bank holds mostly the class that is easier to shake. Labels are
    unchanged."""
    if not len(bank):  # before any draw: an empty bank leaves the training stream (and its RNG) as ERM's
        return images
    chosen = torch.nonzero(torch.rand(len(images)) < probability).flatten()
    if not len(chosen):
        return images
    weights = 1.0 / torch.bincount(bank.labels)[bank.labels].float()
    picked = torch.multinomial(weights, len(chosen), replacement=True)
    erase = torch.rand(len(chosen)) < 0.5
    targets = images[chosen]
    sources = bank.images[picked].to(images.device)
    masks = bank.spread_masks(picked)
    erase = erase & ~swap_erased(bank, images, labels.cpu(), sources, erase, picked)
    for fill in set(bank.fills):
        of_fill = erase & torch.tensor([bank.fills[index] == fill for index in picked.tolist()])
        if of_fill.any():
            rows = of_fill.to(images.device)
            sources[rows] = fill_images(targets[rows], fill)
    images = images.clone()
    images[chosen] = apply_masks(targets, masks.to(images.device), sources)
    return images


def swap_erased(bank: CueBank, images: torch.Tensor, labels: torch.Tensor, sources: torch.Tensor,
                erase: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """For the erased rows, put in ``sources`` a random batch image of another class than the picked cue's;
    returns which rows got one. A zone from the other class is the cue's natural absence, which a fill is not."""
    swapped = torch.zeros(len(erase), dtype=torch.bool)
    for label in bank.labels[picked[erase]].unique().tolist():
        rows = torch.nonzero(erase & (bank.labels[picked] == label)).flatten()
        others = torch.nonzero(labels != label).flatten()
        if len(others):
            donors = others[torch.randint(len(others), (len(rows),))]
            sources[rows.to(sources.device)] = images[donors.to(images.device)]
            swapped[rows] = True
    return swapped
