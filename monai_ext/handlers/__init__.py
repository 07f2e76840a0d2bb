"""Engine plug-ins of ``monai_ext``: adversarial ``prepare_batch``, ProtoSeg handlers, per-class metric tables."""

from monai_ext.handlers.class_metrics import ClassMetricsSaver
from monai_ext.handlers.prepare_batch import AdversarialPrepareBatch
from monai_ext.handlers.protoseg_hooks import (
    BASIC_UNET_LAYERS,
    INPUT_LAYER,
    FeatureRecorder,
    batch_items,
    item_name,
    shape_groups,
)
from monai_ext.handlers.protoseg_layers import ProtoSegLayerHandler, mean_std
from monai_ext.handlers.protoseg_noise import ProtoSegNoiseStudy, UniformNoise
from monai_ext.handlers.protoseg_quality import ProtoSegQualityHandler

__all__ = [
    "AdversarialPrepareBatch",
    "BASIC_UNET_LAYERS",
    "ClassMetricsSaver",
    "INPUT_LAYER",
    "FeatureRecorder",
    "ProtoSegLayerHandler",
    "ProtoSegNoiseStudy",
    "ProtoSegQualityHandler",
    "UniformNoise",
    "batch_items",
    "item_name",
    "mean_std",
    "shape_groups",
]
