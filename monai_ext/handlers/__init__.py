"""Engine plug-ins of ``monai_ext``: adversarial ``prepare_batch`` for MONAI's trainers and evaluators."""

from monai_ext.handlers.prepare_batch import AdversarialPrepareBatch

__all__ = ["AdversarialPrepareBatch"]
