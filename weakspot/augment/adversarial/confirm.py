"""Confirm: the dependence test that tells a shortcut cue from an image's own evidence.

A class's cues, pasted at their place into correctly classified images of another class, must flip them more
often than the same pixels pasted at a random place (the control), by at least the gate (``LoopConfig.gate``).
A cue that fools one recipient may be real evidence of its class (a lock of long hair); a shortcut is the same
thing in many images and flips most recipients. A class that passes by less than twice the gate is marginal:
its lead varies with the images a round attacked, so it is kept only when a second sample's lead, averaged
with the first, still reaches the gate (docs/results.md).
"""

from __future__ import annotations

import torch

from weakspot.attacks.engine import fooling
from weakspot.augment.adversarial.cues import CueBank, paste_cues
from weakspot.models import Classifier

GATE_RECIPIENTS = 8  # images each cue (and its control) is pasted into


def flip_shares(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, bank: CueBank,
                generator: torch.Generator, recipients: int = GATE_RECIPIENTS
                ) -> dict[int, tuple[torch.Tensor, torch.Tensor, int]]:
    """Per class of the bank's cues: the share of correctly classified images of another class its cues flip,
    the share their controls flip (0-d tensors), and how many transplants each share is over."""
    if not len(bank):
        return {}
    correct = classifier.predict_proba(images).argmax(dim=1).cpu() == labels
    cue_images, control_images, targets, classes = paste_cues(images, labels, bank, correct, generator, recipients)
    if not len(targets):
        return {}
    flipped = [fooling(classifier.predict_proba(batch).cpu(), targets) for batch in (cue_images, control_images)]
    return {int(label): (flipped[0][classes == label].float().mean(), flipped[1][classes == label].float().mean(),
                         int((classes == label).sum())) for label in classes.unique()}


def confirm_cue_classes(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, bank: CueBank,
                        generator: torch.Generator, recipients: int = GATE_RECIPIENTS) -> dict[int, float]:
    """Per class of the bank's cues, its lead: how much more often its cues flip a correctly classified image
    of another class than their controls do (``flip_shares``; a share of transplants, in [-1, 1])."""
    return {label: float(cue - control) for label, (cue, control, _) in
            flip_shares(classifier, images, labels, bank, generator, recipients).items()}


def cue_effects(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, bank: CueBank,
                generator: torch.Generator, recipients: int = GATE_RECIPIENTS) -> dict[int, float]:
    """Per class of the bank's cues, how much its cues raise the model's probability of that class in images of
    another class, against their controls (mean over transplants, in [-1, 1]). Signed, unlike
    ``confirm_cue_classes``: below zero the model reads the cue as evidence for the other class."""
    if not len(bank):
        return {}
    cue_images, control_images, _, classes = paste_cues(images, labels, bank, torch.ones_like(labels, dtype=torch.bool),
                                                        generator, recipients)
    if not len(classes):
        return {}
    rows = torch.arange(len(classes))
    shift = (classifier.predict_proba(cue_images).cpu()[rows, classes]
             - classifier.predict_proba(control_images).cpu()[rows, classes])
    return {int(label): float(shift[classes == label].mean()) for label in classes.unique()}


def marginal_classes(leads: dict[int, float], gate: float) -> list[int]:
    """The confirmed classes whose lead is under twice the gate: they need a second sample."""
    return [label for label, lead in leads.items() if lead < 2 * gate]


def settled_classes(leads: dict[int, float], second_leads: dict[int, float], marginal: list[int],
                    gate: float) -> list[int]:
    """The confirmed classes that stay: every class that is not marginal, and a marginal one whose two leads
    average at least the gate (a class the second sample confirmed no cue of counts there as leading by 0)."""
    return [label for label in leads
            if label not in marginal or (leads[label] + second_leads.get(label, 0.0)) / 2 >= gate]
