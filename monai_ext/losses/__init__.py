"""Losses of ``monai_ext``: ProtoSeg loss, GAN losses."""

__all__: list[str] = []
