"""Augmentation methods for fine-tuning: the baselines (ERM, cutout, worst-of-k, PGD) as training-stream
transforms, and the adversarial augmentation loop (``weakspot.augment.adversarial``)."""

from weakspot.augment.baselines import METHODS, Cutout, PgdTraining, WorstOfK, create_method, evaluation_mode

__all__ = ["METHODS", "Cutout", "PgdTraining", "WorstOfK", "create_method", "evaluation_mode"]
