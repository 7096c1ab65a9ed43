"""The contract between sam_d2's ONNX export and the predictor: decoder I/O names and metadata.

Kept apart from the predictor (no onnxruntime import) so that the exporter and the predictor share
one definition. Metadata values are strings (ONNX ``metadata_props``).
"""

from typing import Mapping

__all__ = [
    "DECODER_INPUTS",
    "DECODER_OUTPUTS",
    "KEY_ROLE",
    "KEY_VARIANT",
    "KEY_WEIGHTS",
    "KEY_IMG_SIZE",
    "KEY_MASK_OUTPUT",
    "KEY_EMBED_DIM",
    "ROLE_ENCODER",
    "ROLE_DECODER",
    "ROLE_VITDET_BACKBONE",
    "MASK_OUTPUT_ALL",
    "MASK_OUTPUT_SINGLE",
    "PRODUCER",
    "describe",
]

# Inputs and outputs of the decoder, in order: the official segment_anything export's names.
DECODER_INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")

PRODUCER = "sam_d2"
KEY_ROLE = "sam_d2.role"  # which part of SAM the file holds (ROLE_*)
KEY_VARIANT = "sam_d2.variant"  # "vit_b", "vit_l", "vit_h" or "custom"
KEY_WEIGHTS = (
    "sam_d2.weights"  # fingerprint of the whole model's weights (encoder and decoder agree)
)
KEY_IMG_SIZE = "sam_d2.img_size"  # side of the square encoder input, e.g. "1024"
KEY_EMBED_DIM = "sam_d2.embed_dim"  # channels of the image embedding, e.g. "256"
KEY_MASK_OUTPUT = "sam_d2.mask_output"  # decoder only: MASK_OUTPUT_*

ROLE_ENCODER = "image_encoder"
ROLE_DECODER = "prompt_encoder+mask_decoder"
ROLE_VITDET_BACKBONE = "vitdet_backbone"

# All 1 + K mask tokens (token 0: single-mask output, 1..K: multimask), like the official export's
# default; or one mask chosen by the official ``return_single_mask`` rule.
MASK_OUTPUT_ALL = "all"
MASK_OUTPUT_SINGLE = "single"


def describe(meta: Mapping[str, str]) -> str:
    """A one-line summary of a file's metadata, e.g. ``vit_b image_encoder (weights ab12)``."""
    if KEY_ROLE not in meta:
        return "not a sam_d2 export (no sam_d2 metadata)"
    return f"{meta.get(KEY_VARIANT, '?')} {meta[KEY_ROLE]} (weights {meta.get(KEY_WEIGHTS, '?')})"
