"""The adversarial loop with JTT's restart: find the cues on a briefly trained model, then train afresh.

In a single run the loop's round comes after the model has learnt the shortcut (a round at half an epoch
confirmed no cue on the planted benchmark's button and sticker runs, one at 1.5 epochs did), so what it
keeps has only the rest of the run, at a decaying learning rate, to undo the shortcut. JTT (Liu et al.,
ICML 2021; ``augment/jtt.py``) instead trains an identification model, then retrains from the initial
weights with what that model got wrong. ``AdversarialRestart`` does the same with the loop's harvest: ERM for
``identification_epochs`` (its own schedule, last epoch kept), ONE attack round on that model (the loop's
dependence test included), then a training from the initial weights with the round's pool and cue bank in
the stream from the first step, so the cue is uninformative (``spread``) while the model learns fastest.
Cost: the identification epochs and one round on top of ERM's epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from weakspot.augment.adversarial import AdversarialAugment
from weakspot.augment.staged import Retraining, StageRunner, identification_config
from weakspot.errors import WeakspotError
from weakspot.models import Classifier
from weakspot.training.loop import BatchTransform, TrainConfig


@dataclass
class AdversarialRestart(Retraining):
    """``weakspot finetune --method adversarial --adv-restart N``: identification ERM for N epochs, one loop
    round on it, then training from the initial weights with what the round kept. ``loop`` must run at most
    one round (``rounds=1``): the round runs between the stages, none during the retraining."""

    loop: AdversarialAugment
    identification_epochs: int = 1
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.identification_epochs < 1 or self.loop.rounds != 1:
            raise WeakspotError("adversarial restart: identification epochs >= 1 and one round are required")

    def identify(self, stages: StageRunner, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig) -> Classifier:
        stages.run("identification", classifier, images, labels,
                   identification_config(config, self.identification_epochs))
        return classifier

    def prepare_retraining(self, identifier: Classifier, images: torch.Tensor, labels: torch.Tensor
                           ) -> tuple[torch.Tensor | None, BatchTransform | None]:
        # seeded by (seed, round 0) and run on the finished identification model: a resumed run rebuilds it
        self.loop.run_round(identifier, 0, float(self.identification_epochs))
        self.loop.restart_at(0.0)
        self.details = {"identification_epochs": self.identification_epochs}
        # a round that kept nothing would be retried during the retraining: the retraining is ERM's instead
        return None, self.loop if len(self.loop.pool_labels) else None


def adversarial_method(restart: int | None = None, **loop_params: Any) -> AdversarialAugment | AdversarialRestart:
    """``--method adversarial``: the loop as a training-stream transform, or with ``restart`` (identification
    epochs) its one round between an identification ERM and a training from the initial weights."""
    if restart is None:
        return AdversarialAugment(**loop_params)
    return AdversarialRestart(AdversarialAugment(**{**loop_params, "rounds": 1}), restart)
