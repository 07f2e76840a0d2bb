"""Metrics of ``monai_ext``: ProtoSeg segmentation ability."""

__all__: list[str] = []
