"""weakspot: find and fix the weak spots of image classifiers.

Data flow: data -> models.Classifier (micro-batched predict_proba) -> explainers -> attacks
-> augment/training -> reports.
"""

from weakspot.errors import WeakspotError

__version__ = "0.1.0"
__all__ = ["WeakspotError", "__version__"]
