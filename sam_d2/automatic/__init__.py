"""SAM's automatic mask generation (the SA-1B data engine's fully automatic stage)."""

from .generator import AutomaticMaskGenerator, check_image
from .grid import crop_boxes, layer_point_grids, point_grid
from .mask_set import OUTPUT_MODES, MaskSet
from .masks import clean_mask, masks_to_boxes, remove_small_regions, stability_score
from .rle import PackedRle, coco_to_mask, mask_to_rle, rle_area, rle_to_coco, rle_to_mask

__all__ = [
    "AutomaticMaskGenerator",
    "check_image",
    "clean_mask",
    "coco_to_mask",
    "crop_boxes",
    "layer_point_grids",
    "mask_to_rle",
    "masks_to_boxes",
    "MaskSet",
    "OUTPUT_MODES",
    "PackedRle",
    "point_grid",
    "remove_small_regions",
    "rle_area",
    "rle_to_coco",
    "rle_to_mask",
    "stability_score",
]
