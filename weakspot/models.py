"""Models: one loader for any timm architecture (``load_model``), the ``Classifier`` wrapper and checkpoints.

The parts live in ``weakspot.classifier`` (the wrapper), ``weakspot.architectures`` (networks by name) and
``weakspot.checkpoints`` (weights on disk); this module is the import path for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

# the public names of the parts, importable from here as well
from weakspot.architectures import OFFLINE_IMAGENET, build_architecture, timm_architecture  # noqa: F401
from weakspot.checkpoints import (CHECKPOINT_FORMAT, load_checkpoint, load_classifier, load_plain_weights,  # noqa: F401
                                  read_checkpoint, save_checkpoint)
from weakspot.classifier import (IMAGENET_MEAN, IMAGENET_STD, Classifier, Preprocessing, choose_device,  # noqa: F401
                                 linear_head)
from weakspot.errors import WeakspotError


def load_model(name: str | None, num_classes: int | None = None, weights: str | os.PathLike | None = None,
               class_names: Sequence[str] | None = None, input_size: int | None = None,
               device: str | torch.device | None = None, micro_batch: int | str | None = None) -> Classifier:
    """Any timm architecture as a ``Classifier``, timm's ``create_model`` in one call.

    ``weights``: None (random init), "imagenet" (offline for ``OFFLINE_IMAGENET``'s Lite0 and Lite1, timm's cache otherwise;
    the head is replaced for ``num_classes``), or a path to a weakspot checkpoint.
    """
    if weights is not None and str(weights) != "imagenet":
        classifier = load_checkpoint(weights, device=device, micro_batch=micro_batch)
        if name is not None and name != classifier.arch:
            raise WeakspotError(f"{weights}: checkpoint is a '{classifier.arch}', not a '{name}'")
        if num_classes is not None and num_classes != classifier.num_classes:
            raise WeakspotError(f"{weights}: checkpoint has {classifier.num_classes} classes, expected {num_classes}")
        return classifier
    if name is None:
        raise WeakspotError("a model name is needed unless weights is a checkpoint")
    if class_names is None:
        if num_classes is None:
            raise WeakspotError("give num_classes or class_names")
        class_names = [str(index) for index in range(num_classes)]
    elif num_classes is not None and num_classes != len(class_names):
        raise WeakspotError(f"num_classes={num_classes} but {len(class_names)} class names")
    if len(class_names) < 2:
        raise WeakspotError(f"a classifier needs at least two classes, got {len(class_names)} "
                            f"({', '.join(class_names) or 'none'}): one class is the answer for every image")
    model = timm_architecture(name, imagenet=weights is not None)
    if len(class_names) != model.num_classes:
        model.reset_classifier(len(class_names))
    config = model.pretrained_cfg if hasattr(model, "pretrained_cfg") else {}
    preprocessing = Preprocessing(input_size=input_size,
                                  mean=tuple(config.get("mean", IMAGENET_MEAN)),
                                  std=tuple(config.get("std", IMAGENET_STD)))
    return Classifier(model, name, class_names, preprocessing, device=device, micro_batch=micro_batch)
