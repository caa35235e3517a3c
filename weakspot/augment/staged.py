"""Methods that train in stages (MaskTune, JTT): the contract, the one stage runner they share, and JTT's
identify-then-retrain shape (``Retraining``).

A staged method is an object with ``fit(classifier, images, labels, config, val_images, val_labels, out_dir,
resume, progress, meta, balance_recall) -> FitResult`` that calls ``weakspot.training.fit`` more than once (ERM
first, then a second training on masked or reweighted data); ``balance_recall`` goes to the last stage. Every
stage but the last writes its checkpoints to a subfolder of the run folder named after it, the last to the run
folder itself, so ``--resume`` continues whichever stage was cut short: a finished stage resumes to zero epochs
and gives back its weights.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Protocol

import torch

from weakspot.errors import WeakspotError
from weakspot.models import Classifier
from weakspot.training.loop import LAST_CHECKPOINT, BatchObjective, BatchTransform, FitResult, TrainConfig, fit


class StagedMethod(Protocol):
    details: dict[str, Any]  # what the stages found (error-set size, masked share), for results.json

    def fit(self, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
            val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
            out_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = False,
            meta: dict[str, Any] | None = None, balance_recall: bool | None = None) -> FitResult: ...


class StageRunner:
    """Runs the stages of one staged fit with the same validation data, run folder, resume flag and
    progress setting; collects their histories, each entry tagged with its stage."""

    def __init__(self, val_images: torch.Tensor | None, val_labels: torch.Tensor | None,
                 out_dir: str | os.PathLike | None, resume: bool, progress: bool, meta: dict[str, Any] | None,
                 stages: tuple[str, ...]) -> None:
        self.val_images, self.val_labels, self.progress, self.meta = val_images, val_labels, progress, meta
        self.out = Path(out_dir) if out_dir is not None else None
        self.stages = stages
        self.resume = resume
        self.history: list[dict[str, Any]] = []
        if resume and (self.out is None or not any((self.folder(name) / LAST_CHECKPOINT).is_file() for name in stages)):
            raise WeakspotError(f"{self.out or 'resume'}: nothing to resume (no checkpoint of any stage)")

    def folder(self, stage: str) -> Path | None:
        if self.out is None:
            return None
        return self.out if stage == self.stages[-1] else self.out / stage

    def run(self, stage: str, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
            config: TrainConfig, sample_weights: torch.Tensor | None = None,
            transform: BatchTransform | None = None, balance_recall: bool | None = False,
            objective: BatchObjective | None = None) -> FitResult:
        folder = self.folder(stage)
        resume = self.resume and folder is not None and (folder / LAST_CHECKPOINT).is_file()
        result = fit(classifier, images, labels, config, self.val_images, self.val_labels, out_dir=folder,
                     resume=resume, progress=self.progress, meta={**(self.meta or {}), "stage": stage},
                     sample_weights=sample_weights, transform=transform, balance_recall=balance_recall,
                     objective=objective)
        self.history += [{"stage": stage, **entry} for entry in result.history]
        return result

    def result(self, last: FitResult) -> FitResult:
        """The last stage's result with every stage's history."""
        return dataclasses.replace(last, history=self.history)


class Retraining:
    """A method that learns from an identification model, then trains again from the initial weights (JTT:
    the identification model's errors upweighted). Subclasses give ``identify`` (the model to learn from,
    usually after the "identification" stage) and ``prepare_retraining`` (the work done on it, such as JTT's
    error set, and what the retraining gets from that: sample weights, a batch transform)."""

    details: dict[str, Any]

    def identify(self, stages: StageRunner, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig) -> Classifier:
        raise NotImplementedError

    def prepare_retraining(self, identifier: Classifier, images: torch.Tensor, labels: torch.Tensor
                           ) -> tuple[torch.Tensor | None, BatchTransform | None]:
        raise NotImplementedError

    def fit(self, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
            val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
            out_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = False,
            meta: dict[str, Any] | None = None, balance_recall: bool | None = None) -> FitResult:
        initial = {key: value.detach().clone() for key, value in classifier.model.state_dict().items()}
        stages = StageRunner(val_images, val_labels, out_dir, resume, progress, meta, ("identification", "retrain"))
        identifier = self.identify(stages, classifier, images, labels, config)
        sample_weights, transform = self.prepare_retraining(identifier, images, labels)
        classifier.model.load_state_dict(initial)
        return stages.result(stages.run("retrain", classifier, images, labels, config, sample_weights=sample_weights,
                                        transform=transform, balance_recall=balance_recall))


def identification_config(config: TrainConfig, epochs: int) -> TrainConfig:
    """The identification stage's training: ``epochs`` on the run's own schedule, the last epoch kept."""
    return dataclasses.replace(config, epochs=epochs, keep="last", patience=None)
