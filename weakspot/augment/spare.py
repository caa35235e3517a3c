"""SPARE (Yang et al., "Identifying spurious biases early in training through the lens of simplicity bias",
AISTATS 2024), through the SpuCo library's own group inference (``spuco.group_inference.SpareInference``; SpuCo is
an optional extra: ``pip install 'weakspot[peers]'``). Reported worst-group accuracy: Waterbirds about 89.8%,
CelebA about 90.6%.

The recipe, as SpuCo runs it: train ERM briefly (an early model has learned the simple, spurious feature first),
cluster each class's softmax outputs of that model with k-means (the number of clusters chosen by silhouette
score), give each class a sampling power (2 where the clusters are poorly separated, silhouette under 0.9, else
1), and retrain from the initial weights drawing each image with weight 1 / (its cluster's size) ^ (its class's
power), each class's total weight the same (``SpareTrain``). Only the inference is SpuCo's; the retraining is
weakspot's own ``fit`` with those sampling weights, so that only the sampling differs from the other methods.
No group labels anywhere. Where weakspot scales it: the early model is one epoch of the run's schedule.
"""

from __future__ import annotations

import contextlib
import io
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from weakspot.augment.staged import Retraining, StageRunner, identification_config
from weakspot.errors import WeakspotError
from weakspot.models import Classifier
from weakspot.training.loop import BatchTransform, TrainConfig

SPARE_MAX_CLUSTERS = 4  # k-means tries 2..4 clusters per class and keeps the best silhouette


def spare_groups(probabilities: np.ndarray, labels: list[int], max_clusters: int, seed: int
                 ) -> tuple[dict[tuple[int, int], list[int]], dict[int, int]]:
    """SpuCo's SPARE inference on the early model's outputs: the clusters ((class, cluster) -> image indices)
    and each class's sampling power. SpuCo seeds the global random generators and prints; both are contained."""
    try:
        from spuco.group_inference import SpareInference
        from spuco.utils.random_seed import set_seed
    except ImportError as error:
        raise WeakspotError(f"spare: needs the SpuCo library ({error}); install it with pip install 'weakspot[peers]'") from None
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        set_seed(seed)
        with contextlib.redirect_stdout(io.StringIO()):
            inference = SpareInference(logits=probabilities, class_labels=labels, max_clusters=max_clusters)
            partition = inference.infer_groups()
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    # SpuCo lists the powers in the order the classes first appear in the labels
    powers = dict(zip(inference.class_partition.keys(), inference.sampling_powers))
    return partition, powers


def spare_weights(partition: dict[tuple[int, int], list[int]], powers: dict[int, int], labels: torch.Tensor) -> torch.Tensor:
    """One sampling weight per image: 1 / (its cluster's size) ^ (its class's power), each class summing to 1
    (SpuCo's ``SpareTrain``)."""
    weights = torch.zeros(len(labels), dtype=torch.float64)
    for (label, _), members in partition.items():
        weights[members] = 1.0 / len(members) ** powers[label]
    for label in labels.unique():
        weights[labels == label] /= weights[labels == label].sum()
    return weights


@dataclass
class Spare(Retraining):
    """``weakspot finetune --method spare``: an early ERM model, SpuCo's SPARE clusters of its outputs, then a
    retrain from the initial weights with SPARE's sampling weights."""

    identification_epochs: int = 1
    max_clusters: int = SPARE_MAX_CLUSTERS
    seed: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.identification_epochs < 1 or self.max_clusters < 2:
            raise WeakspotError("spare: the early model needs >= 1 epoch and the clustering >= 2 clusters")

    def identify(self, stages: StageRunner, classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig) -> Classifier:
        stages.run("identification", classifier, images, labels, identification_config(config, self.identification_epochs))
        return classifier

    def prepare_retraining(self, identifier: Classifier, images: torch.Tensor, labels: torch.Tensor
                           ) -> tuple[torch.Tensor | None, BatchTransform | None]:
        probabilities = identifier.predict_proba(images).cpu().numpy()
        labels = labels.cpu()
        partition, powers = spare_groups(probabilities, labels.tolist(), self.max_clusters, self.seed)
        names = identifier.class_names
        self.details = {"identification": f"{self.identification_epochs} epochs",
                        "clusters": {f"{names[label]}/{cluster}": len(members)
                                     for (label, cluster), members in sorted(partition.items())},
                        "sampling_powers": {names[label]: power for label, power in sorted(powers.items())}}
        return spare_weights(partition, powers, labels), None
