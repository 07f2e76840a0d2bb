"""Engine utilities of ``monai_ext``: ``prepare_batch`` doors for MONAI's engines (as ``monai.engines.utils``), and
digests of what an engine's results depend on."""

from monai_ext.engines.utils.digest import data_digest, load_checkpoints, network_digest, state_digest
from monai_ext.engines.utils.gradient_perturbation import GradientPerturbationPrepareBatch
from monai_ext.engines.utils.prepare_batch import AdversarialPrepareBatch

__all__ = [
    "AdversarialPrepareBatch",
    "GradientPerturbationPrepareBatch",
    "data_digest",
    "load_checkpoints",
    "network_digest",
    "state_digest",
]
