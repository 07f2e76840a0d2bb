"""
Adversarial attacks on segmentation networks. Each is a plain callable over a batch,
``attack(network, images, labels) -> adversarial images``; ``monai_ext.transforms.Attackd`` and
``monai_ext.engines.utils.AdversarialPrepareBatch`` wrap them for datasets and engines.
"""

from monai_ext.attacks.base import (
    Attack,
    AttackObjective,
    attack_loss,
    attack_mode,
    check_target,
    network_logits,
    project,
    resolve_target,
    to_data_units,
)
from monai_ext.attacks.fgsm import FGSM
from monai_ext.attacks.iterative_fgsm import IterativeFGSM, kurakin_num_steps
from monai_ext.attacks.pgd import PGD

__all__ = [
    "FGSM",
    "PGD",
    "Attack",
    "AttackObjective",
    "IterativeFGSM",
    "attack_loss",
    "attack_mode",
    "check_target",
    "kurakin_num_steps",
    "network_logits",
    "project",
    "resolve_target",
    "to_data_units",
]
