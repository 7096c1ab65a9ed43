"""Config keys of sam_d2, added to a Detectron2 yacs config by :func:`add_sam_config`.

Every key is commented where it is defined. Sections:
    MODEL.SAM          the SAM model (encoder preset, prompt encoder, mask decoder, inference)
    MODEL.SAM_PROMPTED detector-prompted SAM (the detector's boxes become SAM box prompts)
    MODEL.VIT          the shared ViT as ViTDet backbone (inside SimpleFeaturePyramid)
    SAM_AUTO           the automatic mask generator (grid prompts, crops, filtering)
    TEST.POINT_EVAL    the single-point valid-mask benchmark (23 datasets)
    TEST.EDGES         the BSDS500 zero-shot edge benchmark
    SOLVER (extra)     optimizer choice, layer-wise lr decay of the encoder trunk
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
    # Checkpoint of the SAM part (official sam_vit_*.pth or a sam_d2 checkpoint), loaded into the
    # SAM when the model is built, so that every loading path (build_model, DefaultPredictor,
    # train_net) has it; MODEL.WEIGHTS is loaded afterwards. Needed when SAM sits beside a
    # detector whose weights MODEL.WEIGHTS holds.
    _C.MODEL.SAM.WEIGHTS = ""
    # Modules (or parameters), by name in the model, that MODEL.SAM.WEIGHTS may lack: they keep
    # their initialisation, every other tensor must come from the file. For models that add
    # modules to the file's, e.g. HQ-SAM trained from SAM's own sam_vit_b_01ec64.pth (HQ-SAM's
    # recipe): ["mask_decoder.hf_token", "mask_decoder.hf_mlp", "mask_decoder.compress_vit_feat",
    # "mask_decoder.embedding_encoder", "mask_decoder.embedding_maskfeature"].
    _C.MODEL.SAM.WEIGHTS_NEW_MODULES = []
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
    # --- speed (issue 13; sam_d2.modeling.speed) ---
    # Compute precision of the prompt encoder + mask decoder at inference (autocast): "fp32",
    # "bf16" (CPU and GPU) or "fp16" (GPU only). Outputs are returned as fp32.
    _C.MODEL.SAM.DECODER_DTYPE = "fp32"
    # torch.compile the image encoder and the mask decoder (sam_d2.modeling.speed.compile_sam):
    # the first image / prompt batch pays the compilation (minutes for ViT-H), later ones run
    # faster. Parameter names and checkpoints are unchanged.
    _C.MODEL.SAM.COMPILE = False
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
    # --- Interactive training simulation (sam_d2.modeling.interactive_training; SAM paper
    # appendix A). BOX_PROMPT_PROB above is the per-mask probability that the first prompt is
    # the noisy box (else one point drawn uniformly in the mask).
    # Rounds after the first that add one point sampled uniformly in the previous error region.
    _C.MODEL.SAM.TRAIN.NUM_CORRECTION_POINTS = 8
    # The paper's 2 extra rounds without a new point (previous logits fed back only): one at a
    # random position among the correction rounds, one last. 1 + 8 + 2 = 11 rounds.
    _C.MODEL.SAM.TRAIN.NO_POINT_ROUNDS = True
    # Loss weights: focal : dice = 20 : 1 on the masks, MSE of the IoU head weighted 1.
    _C.MODEL.SAM.TRAIN.FOCAL_WEIGHT = 20.0
    _C.MODEL.SAM.TRAIN.DICE_WEIGHT = 1.0
    _C.MODEL.SAM.TRAIN.IOU_WEIGHT = 1.0
    # Data rule of the paper: masks covering more than this fraction of the image are dropped.
    _C.MODEL.SAM.TRAIN.MAX_MASK_AREA_RATIO = 0.9
    # Large-scale jitter in the SAM training mapper: resize by a random factor in
    # [INPUT.LSJ.MIN_SCALE, INPUT.LSJ.MAX_SCALE] of the IMAGE_SIZE square, random IMAGE_SIZE crop
    # (paper: [0.1, 2.0], used for its stage 1-2 data only).
    _C.MODEL.SAM.TRAIN.LSJ = False
    # The only modules (or parameters) that train, by name in the model; the others get no
    # gradient (set DROP_PATH_RATE to 0 with a frozen encoder). Empty: everything trains.
    # ["prompt_encoder", "mask_decoder"]: image encoder frozen (configs/sam_finetune_coco_format
    # .yaml); HQ-SAM's recipe, its HQ modules only: configs/sam_hq_finetune_coco_format.yaml.
    _C.MODEL.SAM.TRAIN.TRAINABLE = []
    _C.register_renamed_key(
        "MODEL.SAM.TRAIN.FREEZE_IMAGE_ENCODER",
        "MODEL.SAM.TRAIN.TRAINABLE",
        message='the frozen encoder is now TRAINABLE ["prompt_encoder", "mask_decoder"]',
    )
    # Activation checkpointing of the encoder's blocks in training (recomputes their forward in
    # backward: ViT-H at 1024 px fits with far less memory). bf16: MODEL.SAM.ENCODER_DTYPE.
    _C.MODEL.SAM.TRAIN.ACTIVATION_CHECKPOINTING = False


def _add_engine_config(cfg: CN) -> None:
    _C = cfg
    # Evaluator for the test sets: "" picks it from each dataset's metadata.evaluator_type;
    # otherwise one of "coco", "lvis", "lvis_mask_ar", "bsds_edges", "point_miou".
    _C.TEST.EVALUATOR = ""
    # Evaluation writes each image's evaluator record to OUTPUT_DIR/inference/<dataset>/records
    # as it is produced. True: reuse those of an interrupted run with the same config and run the
    # model on the remaining images only (same final numbers); False: start afresh.
    _C.TEST.RESUME = False
    # Optimizer: "SGD" (Detectron2's default) or "ADAMW" (SAM / ViTDet recipe).
    _C.SOLVER.OPTIMIZER = "SGD"
    # Layer-wise lr decay of the encoder trunk, each family by its own recipe (ViT, TinyViT,
    # Hiera: sam_d2.modeling.layer_decay); 1.0 = off; the SAM recipe uses 0.8.
    _C.SOLVER.LR_DECAY_RATE = 1.0


def _add_vitdet_config(cfg: CN) -> None:
    _C = cfg
    _C.MODEL.VIT = CN()
    # Input side the ViT is built for; sizes the rel-pos tables of the global blocks (64x64 tokens).
    _C.MODEL.VIT.IMG_SIZE = 1024
    _C.MODEL.VIT.PATCH_SIZE = 16
    # ViT-B: 768/12/12; ViT-L: 1024/24/16; ViT-H: 1280/32/16.
    _C.MODEL.VIT.EMBED_DIM = 768
    _C.MODEL.VIT.DEPTH = 12
    _C.MODEL.VIT.NUM_HEADS = 12
    _C.MODEL.VIT.MLP_RATIO = 4.0
    _C.MODEL.VIT.QKV_BIAS = True
    # Stochastic depth (training only); upstream: B 0.1, L 0.4, H 0.5 (COCO) / 0.4 (LVIS).
    _C.MODEL.VIT.DROP_PATH_RATE = 0.1
    # Side of the attention windows of the windowed blocks.
    _C.MODEL.VIT.WINDOW_SIZE = 14
    # Blocks using windowed attention (upstream's `window_block_indexes`); all other blocks use
    # global attention. B: all but 2, 5, 8, 11; L: all but 5, 11, 17, 23; H: all but 7, 15, 23, 31.
    _C.MODEL.VIT.WINDOW_BLOCK_INDEXES = [0, 1, 3, 4, 6, 7, 9, 10]
    # Decomposed relative position bias in every block.
    _C.MODEL.VIT.USE_REL_POS = True
    # Image size of the (MAE) pretraining: the absolute position embedding is stored on a
    # (PRETRAIN_IMG_SIZE / PATCH_SIZE)^2 grid (14x14) and resized bicubically to the input's
    # token grid.
    _C.MODEL.VIT.PRETRAIN_IMG_SIZE = 224
    # The position embedding keeps the (unused) class-token slot of MAE pretraining, (1, 1 + 196,
    # C), exactly as in Detectron2's ViT and the ViTDet model-zoo checkpoints.
    _C.MODEL.VIT.PRETRAIN_USE_CLS_TOKEN = True
    # Name of the ViT's output feature (the SimpleFeaturePyramid input).
    _C.MODEL.VIT.OUT_FEATURE = "last_feat"
    # SimpleFeaturePyramid: output channels, scale factors of the pyramid levels relative to the
    # stride-16 ViT output (4, 2, 1, 0.5 -> p2..p5; p6 by max-pooling p5 when SFP_TOP_BLOCK), norm.
    _C.MODEL.VIT.SFP_OUT_CHANNELS = 256
    _C.MODEL.VIT.SFP_SCALE_FACTORS = [4.0, 2.0, 1.0, 0.5]
    _C.MODEL.VIT.SFP_NORM = "LN"
    # Add p6 with LastLevelMaxPool (upstream: yes).
    _C.MODEL.VIT.SFP_TOP_BLOCK = True
    # Images are padded to a SQUARE_PAD x SQUARE_PAD square before the backbone (0 = no square
    # padding, only to a multiple of the largest stride).
    _C.MODEL.VIT.SQUARE_PAD = 1024

    # Large-scale jitter (the ViTDet training augmentation; used by sam_d2.data.mappers): random
    # horizontal flip, resize by a random scale in [MIN_SCALE, MAX_SCALE] of an
    # IMAGE_SIZE x IMAGE_SIZE target, then a random IMAGE_SIZE crop (no padding: the model pads).
    _C.INPUT.LSJ = CN()
    _C.INPUT.LSJ.ENABLED = False
    _C.INPUT.LSJ.IMAGE_SIZE = 1024
    _C.INPUT.LSJ.MIN_SCALE = 0.1
    _C.INPUT.LSJ.MAX_SCALE = 2.0

    # Optimizer extras of the ViTDet recipe (read by sam_d2.engine.Trainer.build_optimizer).
    # AdamW betas.
    _C.SOLVER.BETAS = (0.9, 0.999)
    # Weight decay of ViT position embeddings (parameters named "pos_embed"); None = WEIGHT_DECAY.
    _C.SOLVER.WEIGHT_DECAY_POS_EMBED = None


def _add_prompted_config(cfg: CN) -> None:
    _C = cfg
    _C.MODEL.SAM_PROMPTED = CN()
    # Meta-architecture of the detector whose boxes prompt SAM, built from this same config
    # (MODEL.BACKBONE, MODEL.ROI_HEADS, ...): "GeneralizedRCNN" for ViTDet / Mask R-CNN,
    # "RetinaNet", or any registered detector returning Instances with pred_boxes/scores.
    _C.MODEL.SAM_PROMPTED.DETECTOR_META_ARCHITECTURE = "GeneralizedRCNN"
    # Where the box prompts come from: "detector", or "gt" (the ground-truth boxes of the
    # input's "instances", class = gt class, score 1: an oracle to study SAM alone; the
    # detector is then not built).
    _C.MODEL.SAM_PROMPTED.BOX_SOURCE = "detector"
    # At most this many boxes per image prompt SAM, highest detector scores first (the
    # LVIS ViTDet configs return up to 300 detections, COCO ones 100).
    _C.MODEL.SAM_PROMPTED.MAX_BOXES = 300
    # First pass: 3 masks per box and keep the one with the highest predicted IoU (True, the
    # paper's "most confident mask"), or SAM's single-output mask (False).
    _C.MODEL.SAM_PROMPTED.MULTIMASK_OUTPUT = True
    # One refinement pass: feed the kept mask's low-res logits back with the box (paper).
    _C.MODEL.SAM_PROMPTED.REFINE = True


def _add_point_eval_config(cfg: CN) -> None:
    _C = cfg
    _C.TEST.POINT_EVAL = CN()
    # Click counts N at which the IoU is recorded; clicks accumulate up to max(NUM_POINTS).
    _C.TEST.POINT_EVAL.NUM_POINTS = [1, 2, 3, 5, 9]
    # First click: "center" (interior pixel farthest from the boundary, paper default) or
    # "random" (uniform interior pixel, seeded per object).
    _C.TEST.POINT_EVAL.FIRST_POINT = "center"
    # Seed of the "random" first click (combined with image id and object id).
    _C.TEST.POINT_EVAL.SEED = 0
    # One click: return SAM's 3 ambiguity-aware masks and score the most confident.
    _C.TEST.POINT_EVAL.MULTIMASK_FIRST = True
    # Two or more clicks: 3 masks (True) instead of SAM's single multi-prompt mask (False, as
    # SAM / SAM 2 evaluate).
    _C.TEST.POINT_EVAL.MULTIMASK_AFTER_FIRST = False
    # Feed the previous scored low-res mask logits back as mask_inputs from the 2nd click on.
    _C.TEST.POINT_EVAL.FEED_MASK_LOGITS = True
    # Never click the same pixel twice (RITM's not_clicked_map).
    _C.TEST.POINT_EVAL.EXCLUDE_CLICKED = True
    # Distance-transform engine for click sampling: "cv2" (RITM's, faster) or "scipy"; same clicks.
    _C.TEST.POINT_EVAL.DISTANCE_METHOD = "cv2"


def _add_edges_config(cfg: CN) -> None:
    _C = cfg
    _C.TEST.EDGES = CN()
    # Worker processes per rank for the BSDS pixel matching (the full 200-image benchmark costs
    # CPU-hours on one core).
    _C.TEST.EDGES.NUM_WORKERS = 0
    # Number of benchmark thresholds (99 in the standard protocol).
    _C.TEST.EDGES.NUM_THRESHOLDS = 99
    # Match tolerance as a fraction of the image diagonal (BSDS standard 0.0075).
    _C.TEST.EDGES.MAX_DIST = 0.0075
    # Thin binarised predictions before matching (standard: True).
    _C.TEST.EDGES.THIN = True
    # Write the precision-recall curve plot next to the CSVs in the output folder.
    _C.TEST.EDGES.SAVE_PR_CURVE = True
    # Edge map from masks: probability above which a pixel is in the binarised mask.
    _C.TEST.EDGES.MASK_THRESHOLD = 0.5
    # Half-width r of the boundary band: (2r+1)^2 window containing mask and background pixels.
    _C.TEST.EDGES.BOUNDARY_RADIUS = 1
    # Apply edge NMS (Dollar's edgesNmsMex) and then morphological thinning to the edge map.
    _C.TEST.EDGES.NMS = True
    _C.TEST.EDGES.THINNING = True


def _add_auto_config(cfg: CN) -> None:
    _C = cfg
    _C.SAM_AUTO = CN()
    # Grid points per image side on the whole image (SA-1B full-auto: 32; LVIS proposals: 64;
    # BSDS edges: 16).
    _C.SAM_AUTO.POINTS_PER_SIDE = 32
    # Point prompts decoded at once; also the most masks upscaled to crop resolution at once.
    _C.SAM_AUTO.POINTS_PER_BATCH = 64
    # Keep masks whose predicted IoU is above this (0 disables; LVIS proposals: 0).
    _C.SAM_AUTO.PRED_IOU_THRESH = 0.88
    # Keep masks whose stability score (IoU of the masks thresholded at logit +-offset)
    # reaches this (0 disables; LVIS proposals: 0).
    _C.SAM_AUTO.STABILITY_SCORE_THRESH = 0.95
    # Logit offset of the stability score.
    _C.SAM_AUTO.STABILITY_SCORE_OFFSET = 1.0
    # Box IoU of the NMS among the masks of one crop (LVIS proposals: 0.9).
    _C.SAM_AUTO.BOX_NMS_THRESH = 0.7
    # Crop layers after the whole image; layer k tiles the image with 2**k x 2**k crops.
    _C.SAM_AUTO.CROP_N_LAYERS = 0
    # Box IoU of the NMS across crops (masks from smaller crops win).
    _C.SAM_AUTO.CROP_NMS_THRESH = 0.7
    # Overlap of neighbouring layer-1 crops as a fraction of the image's short side.
    _C.SAM_AUTO.CROP_OVERLAP_RATIO = 512 / 1500
    # Layer k uses POINTS_PER_SIDE / factor**k points per side.
    _C.SAM_AUTO.CROP_N_POINTS_DOWNSCALE_FACTOR = 1
    # If > 0: fill holes / remove islands smaller than this many pixels, then NMS again.
    _C.SAM_AUTO.MIN_MASK_REGION_AREA = 0
    # If > 0: drop masks covering at least this fraction of the image (SA-1B used 0.95).
    _C.SAM_AUTO.MAX_MASK_AREA_RATIO = 0.0
    # Crops / images embedded per encoder call.
    _C.SAM_AUTO.ENCODER_BATCH_SIZE = 1
    # SamAutomaticProposals: masks kept per image after ranking.
    _C.SAM_AUTO.MAX_PROPOSALS = 1000
    # Ranking of proposals: "mean" (of predicted IoU and stability, the paper's LVIS ranking),
    # "predicted_iou" or "stability_score".
    _C.SAM_AUTO.RANKING = "mean"


def _add_family_config(cfg: CN) -> None:
    _C = cfg
    # The SAM family (sam_d2.modeling.families): MODEL.SAM.VARIANT also takes "vit_t" (MobileSAM),
    # "hq_vit_b" / "hq_vit_l" / "hq_vit_h" (HQ-SAM) and "sam2.1_hiera_t" / "sam2.1_hiera_s" /
    # "sam2.1_hiera_b+" / "sam2.1_hiera_l" (SAM 2.1's image model, stretch frame).
    # HQ-SAM: return the HQ token's mask alone (True) instead of SAM's mask plus the HQ mask
    # (False, the official default).
    _C.MODEL.SAM.HQ_TOKEN_ONLY = False


def add_sam_config(cfg: CN) -> None:
    """Add every sam_d2 key, with its default, to a Detectron2 config (in place)."""
    _add_model_config(cfg)
    _add_family_config(cfg)
    _add_engine_config(cfg)
    _add_vitdet_config(cfg)
    _add_prompted_config(cfg)
    _add_point_eval_config(cfg)
    _add_edges_config(cfg)
    _add_auto_config(cfg)
