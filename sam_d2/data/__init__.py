"""Datasets (registered on import, lazily), mappers, transforms and image reading."""

from .bsds500 import BSDS500_SPLITS, load_bsds500_dicts, load_bsds_boundaries, register_bsds500
from .image_io import read_image_rgb, to_rgb_uint8
from .sam23 import (
    SAM23_DATASETS,
    load_sam23,
    register_all_sam23,
    register_sam23,
    subsample_by_images,
)
from .transforms import ResizeLongestSide, StretchToSquare, frame_transform, longest_side_shape

register_bsds500()  # lazy: bsds500_{train,val,test} under $DETECTRON2_DATASETS
register_all_sam23()  # lazy: sam23_<name> under $DETECTRON2_DATASETS, no file access until loaded

__all__ = [
    "BSDS500_SPLITS",
    "load_bsds500_dicts",
    "load_bsds_boundaries",
    "register_bsds500",
    "read_image_rgb",
    "to_rgb_uint8",
    "SAM23_DATASETS",
    "load_sam23",
    "register_all_sam23",
    "register_sam23",
    "subsample_by_images",
    "ResizeLongestSide",
    "StretchToSquare",
    "frame_transform",
    "longest_side_shape",
]
