"""Engine utilities of ``monai_ext``: ``prepare_batch`` doors for MONAI's engines (as ``monai.engines.utils``)."""

from monai_ext.engines.utils.gradient_perturbation import GradientPerturbationPrepareBatch
from monai_ext.engines.utils.prepare_batch import AdversarialPrepareBatch

__all__ = ["AdversarialPrepareBatch", "GradientPerturbationPrepareBatch"]
