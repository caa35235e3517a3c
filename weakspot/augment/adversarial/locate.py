"""Locate: one attack round on a sample of training images, and what it finds.

Each attack (explainer-guided box occlusions by default) erases regions until the model's answer shakes. Where
an erasing fill fooled it, the erased region of the clean image is what the model read as the label: pasted at
the same place into an image of another class (a transplant), it must fool the model too, or it is evidence of
that one image rather than a cue. What a round keeps (a ``Harvest``): the removals whose transplant fooled, the
transplants that fooled (each with its true label), and the cues behind them, each class's only when its cues
pass the dependence test (``confirm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from weakspot.attacks import AttackResult, attack_params, create_attack
from weakspot.attacks.engine import fooling
from weakspot.augment.adversarial.confirm import confirm_cue_classes
from weakspot.augment.adversarial.cues import CueBank, erasing_removals, perturbation_masks
from weakspot.fills import apply_masks
from weakspot.models import Classifier

# A round attacks thousands of images, so the loop's attacks use cheaper guidance than the attacks' defaults,
# the median fill (it looks like absence, where a mean fill leaves a patch the model still reads as the cue),
# and margin 0.5: a removal that leaves the true class leading by under 0.5 counts, since on training images the
# model has fitted, erasing the cue alone rarely flips it (docs/results.md).
LOOP_ATTACK_OPTIONS: dict[str, dict[str, Any]] = {
    "superpixel": {"n_segments": 12, "fills": ("median",), "margin": 0.5},
    "button": {"fills": ("median",), "guidance_segments": 25, "margin": 0.5},
}


def loop_attack(name: str, classifier: Classifier, budget: int, seed: int, shifted: bool) -> Any:
    """The attack ``name`` with the loop's options; ``shifted`` explains each image on its own shifted grid."""
    options = {**attack_params(name, budget, guidance_shift=shifted, seed=seed), **LOOP_ATTACK_OPTIONS.get(name, {})}
    return create_attack(name, classifier, **options)


@dataclass
class Harvest:
    """What one round keeps: the fooling images with their true labels, counts per source, and the cues."""

    images: torch.Tensor
    labels: torch.Tensor
    counts: dict[str, int]
    cues: CueBank
    sources: torch.Tensor  # per image: the index in ``counts`` of the source that kept it
    cue_classes: torch.Tensor  # per image: the class whose cue it lost (a removal) or got (a transplant)
    gate_lead: dict[str, float] = field(default_factory=dict)  # "attack:class": ``confirm_cue_classes``

    def class_leads(self, kept_only: bool = True) -> dict[int, float]:
        """Per class tested: its largest lead over the attacks; with ``kept_only``, only the classes the bank
        holds cues of (the gate has dropped the cues of a class under it)."""
        leads: dict[int, float] = {}
        for key, lead in self.gate_lead.items():
            label = int(key.rsplit(":", 1)[1])
            leads[label] = max(lead, leads.get(label, -1.0))
        return {label: lead for label, lead in leads.items()
                if not kept_only or bool((self.cues.labels == label).any())}

    def restrict(self, classes: Sequence[int]) -> Harvest:
        """What the harvest kept of the cues of ``classes`` only."""
        wanted = torch.tensor(list(classes), dtype=torch.long)
        keep = torch.isin(self.cue_classes, wanted)
        counts = {name: int((self.sources[keep] == index).sum()) for index, name in enumerate(self.counts)}
        bank = self.cues.select(torch.isin(self.cues.labels, wanted))
        return Harvest(self.images[keep], self.labels[keep], counts, bank, self.sources[keep], self.cue_classes[keep],
                       self.gate_lead)


def transplant_cues(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, result: AttackResult,
                    margin: float, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each region an erasing removal took out, pasted at its place into a random image of another class (the
    cue-conflicting example the other way round); the transplants that fool the model by ``margin`` are kept.
    Returns them, their (recipients') labels, their donors' rows and the pasted regions' masks."""
    donors = torch.nonzero(erasing_removals(result)).flatten().tolist()
    pairs = []
    for donor in donors:
        others = torch.nonzero(labels != labels[donor]).flatten()
        if len(others):
            pairs.append((donor, int(others[torch.randint(len(others), (1,), generator=generator)])))
    if not pairs:
        return images[:0], labels[:0], torch.empty(0, dtype=torch.long), CueBank.empty(images).masks
    donor_rows, recipient_rows = (torch.tensor(rows) for rows in zip(*pairs))
    masks = perturbation_masks(result, donor_rows, images.shape[-2], images.shape[-1])
    transplanted = apply_masks(images[recipient_rows], masks, images[donor_rows])
    fooled = fooling(classifier.predict_proba(transplanted).cpu(), labels[recipient_rows], margin)
    return transplanted[fooled], labels[recipient_rows][fooled], donor_rows[fooled], masks[fooled]


def locate(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, attacks: Sequence[str], budget: int,
           gate: float | None, seed: int, shifted: bool = False, attacked: int | None = None) -> Harvest:
    """Run each attack on the first ``attacked`` of (images, labels) (all by default; every image is a recipient
    of the transplants and of the dependence test) and keep what fooled the model: per attack, the transplants
    (source "<attack>-transplant") and the removals whose transplant fooled (source "<attack>"). With ``gate``,
    a class whose cues lead their controls by less is dropped. Seeded generators only: the training stream's RNG
    is not moved, so a round that keeps nothing leaves training exactly as ERM's."""
    images, labels = images.cpu(), labels.cpu()
    attacked_labels = labels[:attacked]
    kept_images, kept_labels, kept_sources, kept_cues, counts, banks = [], [], [], [], {}, [CueBank.empty(images)]
    gate_lead: dict[str, float] = {}
    generator = torch.Generator().manual_seed(seed)
    for name in attacks:
        attack = loop_attack(name, classifier, budget, seed, shifted)
        result = attack(images[:attacked], attacked_labels)
        grafted, grafted_labels, donors, cue_masks = transplant_cues(classifier, images, labels, result,
                                                                     getattr(attack, "margin", 0.0), generator)
        bank = CueBank(images[donors], cue_masks, labels[donors],
                       tuple(result.perturbations[row].fill for row in donors.tolist()))
        fooled = result.fooled.cpu() & ~erasing_removals(result)  # a removal counts only with its transplant
        fooled[donors] = True
        if gate is not None and len(bank):
            lead = confirm_cue_classes(classifier, images, labels, bank, generator)
            gate_lead.update({f"{name}:{label}": value for label, value in lead.items()})
            confirmed = torch.tensor([label for label, value in lead.items() if value >= gate], dtype=torch.long)
            keep = torch.isin(bank.labels, confirmed)
            grafted, grafted_labels, bank = grafted[keep], grafted_labels[keep], bank.select(keep)
            fooled = fooled & torch.isin(attacked_labels, confirmed)
        for source, source_images, source_labels, cue_classes in (
                (f"{name}-transplant", grafted, grafted_labels, bank.labels),
                (name, result.adversarial.cpu()[fooled], attacked_labels[fooled], attacked_labels[fooled])):
            kept_images.append(source_images)
            kept_labels.append(source_labels)
            kept_sources.append(torch.full((len(source_labels),), len(counts)))
            kept_cues.append(cue_classes)
            counts[source] = len(source_labels)
        banks.append(bank)
    return Harvest(torch.cat(kept_images), torch.cat(kept_labels), counts, CueBank.concat(banks),
                   torch.cat(kept_sources), torch.cat(kept_cues), gate_lead)
