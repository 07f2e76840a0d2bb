"""
Adversarial attacks on segmentation networks. Each is a plain callable over a batch,
``attack(network, images, labels) -> adversarial images``; ``monai_ext.transforms.Attackd`` and
``monai_ext.engines.utils.AdversarialPrepareBatch`` wrap them for datasets and engines. An attack runs its network
through a MONAI inferer given as its ``inferer`` or handed over as an ``InfererNetwork``; through a sliding window, the
input gradient is taken one chunk of windows at a time (``sliding_window_gradient``).
"""

from monai_ext.attacks.apgd import APGD, apgd_checkpoints
from monai_ext.attacks.ball import project, to_data_units
from monai_ext.attacks.base import Attack
from monai_ext.attacks.block_dct import block_dct, block_idct
from monai_ext.attacks.cospgd import CosPGD, cospgd_loss, cospgd_weights
from monai_ext.attacks.fgsm import FGSM
from monai_ext.attacks.gradient_perturbation import GPResult, GradientPerturbation, gp_objective, matches_label
from monai_ext.attacks.inferer import InfererNetwork, describe_inferer, is_plain_inferer, with_inferer
from monai_ext.attacks.iterative_fgsm import IterativeFGSM, kurakin_num_steps
from monai_ext.attacks.layered_pgd import LayeredPGD
from monai_ext.attacks.losses import (
    LOSSES,
    PIXEL_LOSSES,
    BalancedMaskedCE,
    attack_loss,
    class_frequency_weights,
    pixel_losses,
    two_class_logits,
)
from monai_ext.attacks.objective import AttackObjective, attack_mode, check_target, network_logits, resolve_target
from monai_ext.attacks.pgd import PGD
from monai_ext.attacks.sea import SEA_LOSSES, SEA_STEPS, pixel_accuracy_score, sea_members
from monai_ext.attacks.segpgd import SegPGD, segpgd_loss, segpgd_weights
from monai_ext.attacks.shared_sweep import SharedTrajectories, shared_sweep, shares_trajectory
from monai_ext.attacks.sign_selection import SignSelectionFGSM
from monai_ext.attacks.sliding_window import sliding_window_gradient
from monai_ext.attacks.vafa import VAFA
from monai_ext.attacks.worst_case import WorstCaseAttack, dice_score, ensemble_attack

__all__ = [
    "APGD",
    "FGSM",
    "LOSSES",
    "PGD",
    "PIXEL_LOSSES",
    "SEA_LOSSES",
    "SEA_STEPS",
    "VAFA",
    "Attack",
    "AttackObjective",
    "BalancedMaskedCE",
    "CosPGD",
    "GPResult",
    "GradientPerturbation",
    "InfererNetwork",
    "IterativeFGSM",
    "LayeredPGD",
    "SegPGD",
    "SharedTrajectories",
    "SignSelectionFGSM",
    "WorstCaseAttack",
    "apgd_checkpoints",
    "attack_loss",
    "attack_mode",
    "block_dct",
    "block_idct",
    "check_target",
    "class_frequency_weights",
    "cospgd_loss",
    "cospgd_weights",
    "describe_inferer",
    "dice_score",
    "ensemble_attack",
    "gp_objective",
    "is_plain_inferer",
    "kurakin_num_steps",
    "matches_label",
    "network_logits",
    "pixel_accuracy_score",
    "pixel_losses",
    "project",
    "resolve_target",
    "sea_members",
    "segpgd_loss",
    "segpgd_weights",
    "shared_sweep",
    "shares_trajectory",
    "sliding_window_gradient",
    "to_data_units",
    "two_class_logits",
    "with_inferer",
]
