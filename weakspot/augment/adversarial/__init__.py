"""The adversarial augmentation loop: find the cues a model leans on, prove it leans on them, and train it off them.

Stages, one module each (docs/loop.md):

- ``locate``: an explainer-guided attack round on a sample of training images; the regions whose removal
  fooled the model and whose transplant into another class fooled it too are candidate cues (``cues``).
- ``confirm``: the dependence test; a class's cues must flip other-class images more often than a control
  region of the same size, or they are the image's own evidence and are dropped.
- ``counterexamples``: the pool (removals, transplants, and the natural training images the model gets
  wrong) and the spread (every clean image's cue zone pasted or erased, blind to the label).
- ``schedule``: when rounds and pool checks run inside ``weakspot.training.fit``; ``AdversarialAugment``.

``LoopConfig`` (``config``) holds every setting a user tunes.
"""

from weakspot.augment.adversarial.config import LoopConfig
from weakspot.augment.adversarial.schedule import AdversarialAugment, RoundLog

__all__ = ["AdversarialAugment", "LoopConfig", "RoundLog"]
