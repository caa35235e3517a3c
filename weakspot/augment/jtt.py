"""JTT, Just Train Twice (Liu et al., ICML 2021): train ERM briefly, upweight what it got wrong, retrain.

The published recipe: train an identification model with ERM for T epochs, take the training examples it
misclassifies (the error set), then train a new model from the same initialisation on the training set
with the error set upsampled ``lambda_up`` times. No group labels for training; T and lambda_up are tuned
on validation worst-group accuracy, which needs group labels on the validation split. The paper:
lambda_up 100, T 60 (of 300) on Waterbirds; lambda_up 50, T 1 (of 50) on CelebA; grid {20, 50, 100}.
Reported worst-group accuracy: Waterbirds 86.7%, CelebA 81.1%.

Where weakspot scales it: the identification model is ERM with the run's own schedule over T epochs, its
last epoch kept (the paper's "model at epoch T"); by default T = the run's epochs. The paper's T is early in
a long run but has fit the shortcut already; in a 3-epoch run at 96 px, one epoch has not: on the planted
button (seed 0), the T = 1 model erred on 23% of the cue-conflicting training females and 21% of the others,
so its error set was no richer in minority groups than the training set, while the 3-epoch ERM model erred
on 48% and 27% of the two minority groups against 10% and 2% of the majority ones. ``identification``
takes an already trained model instead (a weakspot checkpoint, e.g. the ERM run's ``last.pt``), which
skips the identification stage.
Upsampling is drawn as sampling weights (``fit``'s ``sample_weights``): each epoch draws as many images as
the training set has, each error-set image ``upweight`` times as likely as another, so the retraining costs
what ERM costs instead of growing the epoch by (lambda_up - 1) x |error set| images. Tuning lambda_up on
validation worst group is the benchmark's job (``scripts/shortcut_benchmark.py`` runs one row per value and
keeps, per seed, the one with the best validation worst group; the validation split's label x cue groups).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from weakspot.augment.staged import Retraining, StageRunner, identification_config
from weakspot.errors import WeakspotError
from weakspot.models import Classifier, load_checkpoint
from weakspot.training.loop import BatchTransform, TrainConfig


@dataclass
class Jtt(Retraining):
    """``weakspot finetune --method jtt``: identification ERM for ``identification_epochs``, then a retrain
    from the initial weights with the error set upweighted ``upweight`` times."""

    upweight: float = 50.0
    identification_epochs: int | None = None  # None: the run's epochs
    identification: str | None = None  # a trained weakspot checkpoint to take the error set from
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.upweight >= 1 or (self.identification_epochs is not None and self.identification_epochs < 1):
            raise WeakspotError("jtt: the upweight must be >= 1 and the identification epochs >= 1")

    def identify(self, stages: StageRunner, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig) -> Classifier:
        if self.identification is None:
            epochs = self.identification_epochs or config.epochs
            self.details = {"identification": f"{epochs} epochs"}
            stages.run("identification", classifier, images, labels, identification_config(config, epochs))
            return classifier
        self.details = {"identification": self.identification}
        identifier = load_checkpoint(self.identification, device=classifier.device)
        if identifier.class_names != classifier.class_names:
            raise WeakspotError(f"{self.identification}: classes {identifier.class_names}, the data's are "
                                f"{classifier.class_names}")
        return identifier

    def prepare_retraining(self, identifier: Classifier, images: torch.Tensor, labels: torch.Tensor
                           ) -> tuple[torch.Tensor | None, BatchTransform | None]:
        predicted, _ = identifier.predict(images)
        errors = predicted != labels.cpu()
        self.details.update(error_set=int(errors.sum()), train_images=len(labels), upweight=self.upweight)
        return torch.where(errors, self.upweight, 1.0), None
