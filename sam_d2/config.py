"""Config keys of sam_d2, added to a Detectron2 yacs config by :func:`add_sam_config`.

Every key is commented where it is defined. Sections:
    MODEL.SAM          the SAM model (encoder preset, prompt encoder, mask decoder, inference)
    MODEL.SAM_PROMPTED detector-prompted SAM (the detector's boxes become SAM box prompts)
    MODEL.VIT          the shared ViT as ViTDet backbone (inside SimpleFeaturePyramid)
    SAM_AUTO           the automatic mask generator (grid prompts, crops, filtering)
    TEST.POINT_EVAL    the single-point valid-mask benchmark
    TEST.EDGES         the BSDS500 zero-shot edge benchmark
    SOLVER (extra)     layer-wise lr decay for ViT fine-tuning
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_sam_config"]


def _add_model_config(cfg: CN) -> None:
    _C = cfg
    _C.MODEL.SAM = CN()
    # SAM's own input normalisation (RGB, [0, 255]; not stored in checkpoints). Separate from
    # MODEL.PIXEL_MEAN/STD, which belong to a detector that may sit beside SAM. The SAM branch
    # converts images from INPUT.FORMAT to RGB itself.
    _C.MODEL.SAM.PIXEL_MEAN = [123.675, 116.28, 103.53]
    _C.MODEL.SAM.PIXEL_STD = [58.395, 57.12, 57.375]
    # Checkpoint of the SAM part, loaded after MODEL.WEIGHTS (official sam_vit_*.pth or sam_d2).
    # Needed when SAM sits beside a detector whose weights MODEL.WEIGHTS holds.
    _C.MODEL.SAM.WEIGHTS = ""
    # Encoder preset: "vit_b", "vit_l", "vit_h" (the official models), or "custom" to build the
    # encoder from MODEL.SAM.ENCODER below (tiny models for tests, new sizes).
    _C.MODEL.SAM.VARIANT = "vit_b"
    # Longest image side fed to the encoder; images are resized so that their longest side has
    # this length, then zero-padded (after normalisation) to a square.
    _C.MODEL.SAM.IMAGE_SIZE = 1024
    # Logit threshold turning mask logits into binary masks.
    _C.MODEL.SAM.MASK_THRESHOLD = 0.0
    # Return the 3 multimask outputs (True) or the single-mask output (False) by default.
    _C.MODEL.SAM.MULTIMASK_OUTPUT = True
    # Stochastic depth in the encoder (training only; the paper's recipe uses 0.4).
    _C.MODEL.SAM.DROP_PATH_RATE = 0.0
    # Compute precision of the image encoder at inference: "fp32", "bf16" or "fp16" (autocast).
    _C.MODEL.SAM.ENCODER_DTYPE = "fp32"
    # Number of prompts decoded at once (bounds the decoder's memory: each prompt holds a
    # 256x64x64 copy of the image embedding while it is decoded).
    _C.MODEL.SAM.PROMPT_CHUNK_SIZE = 256

    _C.MODEL.SAM.ENCODER = CN()
    # Used only when VARIANT == "custom".
    _C.MODEL.SAM.ENCODER.EMBED_DIM = 768
    _C.MODEL.SAM.ENCODER.DEPTH = 12
    _C.MODEL.SAM.ENCODER.NUM_HEADS = 12
    # Indexes of blocks with global attention; all others use windowed attention.
    _C.MODEL.SAM.ENCODER.GLOBAL_ATTN_INDEXES = [2, 5, 8, 11]
    _C.MODEL.SAM.ENCODER.WINDOW_SIZE = 14
    _C.MODEL.SAM.ENCODER.PATCH_SIZE = 16
    _C.MODEL.SAM.ENCODER.MLP_RATIO = 4.0
    # Output channels of the encoder's neck (= prompt embedding width).
    _C.MODEL.SAM.ENCODER.OUT_CHANS = 256

    _C.MODEL.SAM.DECODER = CN()
    _C.MODEL.SAM.DECODER.DEPTH = 2  # two-way transformer blocks
    _C.MODEL.SAM.DECODER.MLP_DIM = 2048
    _C.MODEL.SAM.DECODER.NUM_HEADS = 8
    _C.MODEL.SAM.DECODER.NUM_MULTIMASK_OUTPUTS = 3
    _C.MODEL.SAM.DECODER.IOU_HEAD_DEPTH = 3
    _C.MODEL.SAM.DECODER.IOU_HEAD_HIDDEN_DIM = 256
    # Channels of the dense mask-prompt downscaler.
    _C.MODEL.SAM.MASK_IN_CHANS = 16

    # Training of PromptableSam (sam_d2.data.train_mapper.SamTrainMapper).
    _C.MODEL.SAM.TRAIN = CN()
    # Masks (each with its own prompt) kept per image; the paper uses at most 64 per GPU.
    _C.MODEL.SAM.TRAIN.MAX_MASKS_PER_IMAGE = 64
    # Probability that an image's prompts are noisy boxes rather than single points.
    _C.MODEL.SAM.TRAIN.BOX_PROMPT_PROB = 0.5
    # Box corner noise: std as a fraction of the box side, capped at BOX_NOISE_MAX pixels.
    _C.MODEL.SAM.TRAIN.BOX_NOISE_STD = 0.1
    _C.MODEL.SAM.TRAIN.BOX_NOISE_MAX = 20.0


def _add_engine_config(cfg: CN) -> None:
    _C = cfg
    # Evaluator for the test sets: "" picks it from each dataset's metadata.evaluator_type;
    # otherwise one of "coco", "lvis", "lvis_mask_ar", "bsds_edges", "point_miou".
    _C.TEST.EVALUATOR = ""
    # Optimizer: "SGD" (Detectron2's default) or "ADAMW" (SAM / ViTDet recipe).
    _C.SOLVER.OPTIMIZER = "SGD"
    # Layer-wise lr decay for ViT blocks (1.0 = off; the SAM recipe uses 0.8).
    _C.SOLVER.LR_DECAY_RATE = 1.0


def add_sam_config(cfg: CN) -> None:
    """Add every sam_d2 key, with its default, to a Detectron2 config (in place)."""
    _add_model_config(cfg)
    _add_engine_config(cfg)
