"""Methods that train ERM and then refit only the linear head on the network's penultimate features (DFR, AFR):
the shared stage runner (``HeadRefit``) and the feature reader. The head is the classifier's last linear layer
(``weakspot.classifier.linear_head``); the refit writes its weight and bias in place, so the result is a plain
checkpoint of the same architecture.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from weakspot.augment.staged import StageRunner
from weakspot.errors import WeakspotError
from weakspot.models import Classifier, linear_head, load_checkpoint
from weakspot.training.loop import LAST_CHECKPOINT, FitResult, TrainConfig


def penultimate_features(classifier: Classifier, images: torch.Tensor, user: str = "dfr") -> tuple[np.ndarray, nn.Linear]:
    """What the classifier's linear head sees for each image (N, D), read by a hook on the head, and the head."""
    head = linear_head(classifier, user, images[:1])
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach().float().cpu()))
    try:
        classifier.predict_proba(images)
    finally:
        hook.remove()
    return torch.cat(captured).numpy().astype(np.float64), head


def worst_group_accuracy(predicted: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """The lowest accuracy over the groups present (the validation score DFR and AFR tune on)."""
    return min(float((predicted[groups == group] == labels[groups == group]).mean()) for group in np.unique(groups))


class HeadRefit:
    """ERM on ``erm_rows`` of the training split (or the trained checkpoint ``base``), then ``refit_head`` on the
    classifier's head, in place. The ERM stage's checkpoints go to ``OUT/erm``, the refitted model to ``OUT``."""

    name: ClassVar[str]
    base: str | None = None
    details: dict[str, Any]

    def erm_rows(self, count: int) -> torch.Tensor:
        """Which training images the ERM stage sees (all of them unless a method holds some out)."""
        return torch.arange(count)

    def check(self, val_images: torch.Tensor | None, val_labels: torch.Tensor | None, balance_recall: bool | None) -> None:
        """Refuse, before any training, what the refit cannot work with."""
        if balance_recall:
            raise WeakspotError(f"{self.name}: the head is refitted with its own class weighting; --balance-recall does not apply")

    def refit_head(self, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                   val_images: torch.Tensor, val_labels: torch.Tensor) -> None:
        raise NotImplementedError

    def fit(self, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
            val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
            out_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = False,
            meta: dict[str, Any] | None = None, balance_recall: bool | None = None) -> FitResult:
        self.check(val_images, val_labels, balance_recall)
        stages = StageRunner(val_images, val_labels, out_dir, resume, progress, meta, ("erm", "head"))
        if self.base is None:
            rows = self.erm_rows(len(labels))
            result = stages.run("erm", classifier, images[rows], labels[rows], config)
        else:
            trained = load_checkpoint(self.base, device=classifier.device)
            if trained.class_names != classifier.class_names:
                raise WeakspotError(f"{self.base}: classes {trained.class_names}, the data's are {classifier.class_names}")
            classifier.model.load_state_dict(trained.model.state_dict())
            result = FitResult(history=[], best_epoch=0, best_val_accuracy=None, stopped_early=False)
        assert val_images is not None and val_labels is not None  # check() refuses a run without them
        self.refit_head(classifier, images, labels, val_images, val_labels)
        if stages.out is not None:
            classifier.save(stages.out / LAST_CHECKPOINT, meta={**(meta or {}), "stage": "head", self.name: self.details})
        return stages.result(FitResult(history=[], best_epoch=result.best_epoch, best_val_accuracy=None,
                                       stopped_early=False, out_dir=stages.out, kept_epoch=result.kept_epoch))
