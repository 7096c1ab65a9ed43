"""Datasets (registered on import, lazily), mappers, transforms and image reading."""
from .image_io import read_image_rgb, to_rgb_uint8
from .sam23 import (
    SAM23_DATASETS,
    load_sam23,
    register_all_sam23,
    register_sam23,
    subsample_by_images,
)
from .transforms import ResizeLongestSide, longest_side_shape

register_all_sam23()  # lazy: sam23_<name> under $DETECTRON2_DATASETS, no file access until loaded

__all__ = [
    "read_image_rgb",
    "to_rgb_uint8",
    "SAM23_DATASETS",
    "load_sam23",
    "register_all_sam23",
    "register_sam23",
    "subsample_by_images",
    "ResizeLongestSide",
    "longest_side_shape",
]
