"""Training: fine-tune a ``Classifier`` on tensors of images and labels (``fit`` for full runs with
validation, checkpoints, resume and torchrun; ``train_classifier`` for quick in-memory fine-tuning)."""

from weakspot.training.loop import BatchTransform, FitResult, TrainConfig, evaluate_accuracy, fit, train_classifier

__all__ = ["BatchTransform", "FitResult", "TrainConfig", "evaluate_accuracy", "fit", "train_classifier"]
