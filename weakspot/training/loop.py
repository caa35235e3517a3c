"""The plain fine-tuning loop (AdamW, seeded shuffling) that tests, the demo and the augmentation loop use."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from weakspot.models import Classifier


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    seed: int = 0


def train_classifier(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                     config: TrainConfig = TrainConfig()) -> list[float]:
    """Fine-tune ``classifier`` in place on (images, labels); returns the mean loss per epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    network = classifier.net
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    network.train()
    try:
        for _ in range(config.epochs):
            order = torch.randperm(images.shape[0], generator=generator)
            total, seen = 0.0, 0
            for start in range(0, images.shape[0], config.batch_size):
                batch = order[start:start + config.batch_size]
                logits = classifier.forward(images[batch])
                loss = F.cross_entropy(logits, labels[batch].to(logits.device), label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * batch.numel()
                seen += batch.numel()
            losses.append(total / seen)
    finally:
        network.eval()
    return losses


def evaluate_accuracy(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted, _ = classifier.predict(images)
    return float((predicted == labels.cpu()).float().mean())
