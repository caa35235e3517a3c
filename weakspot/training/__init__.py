"""Training: fine-tune a ``Classifier`` on tensors of images and labels."""

from weakspot.training.loop import TrainConfig, evaluate_accuracy, train_classifier

__all__ = ["TrainConfig", "evaluate_accuracy", "train_classifier"]
