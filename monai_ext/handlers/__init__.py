"""Engine plug-ins of ``monai_ext``: ProtoSeg feature recording, metric handlers and results writer, per-class metric
tables, the Hausdorff distance in mm, and the adversarial ``prepare_batch`` under its old name."""

from monai_ext.engines.utils import AdversarialPrepareBatch  # re-export: configs name it here
from monai_ext.handlers.class_metrics import ClassMetricsSaver
from monai_ext.handlers.feature_recorder import FeatureRecorderHandler, batch_items, item_name, layer_name, stack_items
from monai_ext.handlers.hausdorff import PhysicalHausdorffDistance
from monai_ext.handlers.metrics_saver import AtomicMetricsSaver
from monai_ext.handlers.per_image import PerImageMetricsSaver
from monai_ext.handlers.pixel_accuracy import PixelAccuracyHandler
from monai_ext.handlers.protoseg_metrics import (
    MeanSAScoreHandler,
    OutputDiceHandler,
    SAScoreHandler,
    VarianceOfGradientsHandler,
)
from monai_ext.handlers.protoseg_sams import SAMPlotHandler
from monai_ext.handlers.protoseg_saver import ProtoSegSaver, layer_results, write_noise_study
from monai_ext.networks.utils import BASIC_UNET_LAYERS, INPUT_LAYER, FeatureRecorder  # re-exported for configs

__all__ = [
    "BASIC_UNET_LAYERS",
    "INPUT_LAYER",
    "AdversarialPrepareBatch",
    "AtomicMetricsSaver",
    "ClassMetricsSaver",
    "FeatureRecorder",
    "FeatureRecorderHandler",
    "MeanSAScoreHandler",
    "OutputDiceHandler",
    "PerImageMetricsSaver",
    "PhysicalHausdorffDistance",
    "PixelAccuracyHandler",
    "ProtoSegSaver",
    "SAMPlotHandler",
    "SAScoreHandler",
    "VarianceOfGradientsHandler",
    "batch_items",
    "item_name",
    "layer_name",
    "layer_results",
    "stack_items",
    "write_noise_study",
]
