"""``PromptableSam``: SAM as a Detectron2 meta-architecture with prompts in the input dicts.

Input dict keys (one dict per image; prompts in the pixel frame of ``"image"``):
    image          (3, h, w) tensor in ``cfg.INPUT.FORMAT``, resized into the model's frame
                   (``Sam.frame``): longest side ``MODEL.SAM.IMAGE_SIZE`` for SAM, the
                   ``IMAGE_SIZE`` square for SAM 2 (``sam_d2.data.transforms.frame_transform``).
    height, width  original image size; masks are returned at this size (default: h, w).
    point_coords   (N, P, 2) float XY;  point_labels (N, P) int: 1 fg, 0 bg, -1 padding.
    boxes          (N, 4) XYXY float tensor or ``Boxes``.
    mask_inputs    (N, 1, 256, 256) low-res mask logits (e.g. a previous prediction).
    multimask_output  optional bool overriding ``MODEL.SAM.MULTIMASK_OUTPUT``.
    gt_masks       training only: (N, h, w) bool target per prompt, in the frame of ``image``.
At least one prompt kind must be present; a kind with N = 0 yields empty ``Instances``.

Output per image: ``{"instances": Instances(height, width)}`` with
    pred_masks (N, H, W) bool       the most confident of the K outputs
    scores (N,)                     its predicted IoU
    pred_boxes Boxes (N,)           boxes of pred_masks
    all_masks (N, K, H, W) bool     every output (K = 3 multimask, 1 otherwise)
    iou_predictions (N, K)          predicted IoU of every output
    low_res_logits (N, K, 256, 256) logits to feed back as mask_inputs
In training, returns ``{"loss_mask_focal", "loss_mask_dice", "loss_iou"}``.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import BitMasks, Boxes, Instances
from torch import Tensor, nn

from ...prompts import check_prompts
from ..build import sam_kwargs_from_cfg
from ..image_encoder import SamImageEncoder
from ..interactive_training import InteractiveTraining
from ..mask_decoder import MaskDecoder
from ..prompt_encoder import PromptEncoder
from ..sam import Sam, build_sam_modules
from ..speed import DTYPES, autocast, compile_sam
from ..weights import load_part_weights, register_part_loading

__all__ = ["PromptableSam", "PROMPT_KEYS"]

PROMPT_KEYS = ("point_coords", "point_labels", "boxes", "mask_inputs")


@META_ARCH_REGISTRY.register()
class PromptableSam(Sam):
    """SAM taking per-image prompts from Detectron2 input dicts (see module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        image_encoder: SamImageEncoder,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
        multimask_output: bool = True,
        mask_threshold: float = 0.0,
        prompt_chunk_size: int = 256,
        encoder_dtype: str = "fp32",
        decoder_dtype: str = "fp32",
        compile: bool = False,
        interactive_training: Optional[InteractiveTraining] = None,
        trainable: Sequence[str] = (),
        activation_checkpointing: bool = False,
        weights: str = "",
        weights_new_modules: Sequence[str] = (),
    ) -> None:
        """
        Args:
            input_format: "RGB" or "BGR", the channel order of ``"image"``.
            multimask_output: default number of outputs per prompt (3 if True, else 1).
            mask_threshold: logit threshold of binary masks.
            prompt_chunk_size: prompts decoded at once (bounds decoder memory).
            encoder_dtype: "fp32", "bf16" or "fp16"; the encoder runs under autocast unless fp32
                (fp16 needs a GPU).
            decoder_dtype: the same for the prompt encoder and mask decoder at inference (their
                outputs are returned as fp32).
            compile: ``torch.compile`` the encoder and decoder (:func:`~sam_d2.modeling.speed.
                compile_sam`; the first call of each shape pays the compilation).
            interactive_training: the training simulation run by ``losses`` (default: the
                paper's 11 rounds, ``sam_d2.modeling.interactive_training.InteractiveTraining``).
            trainable: the modules (or parameters) that train, by name in the model (e.g.
                ``("prompt_encoder", "mask_decoder")``: the image encoder frozen; HQ-SAM's
                recipe: its HQ modules ``mask_decoder.hf_token``, ...); the others get no
                gradient. Empty: everything trains.
            activation_checkpointing: recompute the encoder blocks in backward (less memory).
            weights: a checkpoint file loaded right away (``MODEL.SAM.WEIGHTS``), so that every
                Detectron2 loading path builds the model with it (see
                :mod:`sam_d2.modeling.weights`).
            weights_new_modules: modules (or parameters) by name that ``weights`` may lack; they
                keep their initialisation (``MODEL.SAM.WEIGHTS_NEW_MODULES``, e.g. HQ-SAM's
                modules when it starts from a SAM file).
        """
        super().__init__(image_encoder, prompt_encoder, mask_decoder, pixel_mean, pixel_std)
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be RGB or BGR, got {input_format!r}")
        for name, value in (("encoder_dtype", encoder_dtype), ("decoder_dtype", decoder_dtype)):
            if value not in DTYPES:
                raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {value!r}")
        self.input_format = input_format
        self.multimask_output = multimask_output
        self.mask_threshold = mask_threshold
        self.prompt_chunk_size = prompt_chunk_size
        self.encoder_dtype = encoder_dtype
        self.decoder_dtype = decoder_dtype
        self.interactive_training = interactive_training or InteractiveTraining()
        self._set_trainable(trainable)
        self.image_encoder.activation_checkpointing = activation_checkpointing
        register_part_loading(self, [""])
        if weights:
            load_part_weights(self, weights, weights_new_modules)
        if compile:
            compile_sam(self)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        encoder, prompt_encoder, decoder = build_sam_modules(**sam_kwargs_from_cfg(cfg))
        return dict(
            image_encoder=encoder,
            prompt_encoder=prompt_encoder,
            mask_decoder=decoder,
            pixel_mean=cfg.MODEL.SAM.PIXEL_MEAN,
            pixel_std=cfg.MODEL.SAM.PIXEL_STD,
            input_format=cfg.INPUT.FORMAT,
            multimask_output=cfg.MODEL.SAM.MULTIMASK_OUTPUT,
            mask_threshold=cfg.MODEL.SAM.MASK_THRESHOLD,
            prompt_chunk_size=cfg.MODEL.SAM.PROMPT_CHUNK_SIZE,
            encoder_dtype=cfg.MODEL.SAM.ENCODER_DTYPE,
            decoder_dtype=cfg.MODEL.SAM.DECODER_DTYPE,
            compile=cfg.MODEL.SAM.COMPILE,
            interactive_training=InteractiveTraining(cfg),
            trainable=cfg.MODEL.SAM.TRAIN.TRAINABLE,
            activation_checkpointing=cfg.MODEL.SAM.TRAIN.ACTIVATION_CHECKPOINTING,
            weights=cfg.MODEL.SAM.WEIGHTS,
            weights_new_modules=cfg.MODEL.SAM.WEIGHTS_NEW_MODULES,
        )

    def _set_trainable(self, trainable: Sequence[str]) -> None:
        """Gradients for the parameters under the ``trainable`` names only (all if empty)."""
        if not trainable:
            return
        names = [name for name, _ in self.named_parameters()]
        for prefix in trainable:
            if not any(name == prefix or name.startswith(f"{prefix}.") for name in names):
                raise ValueError(
                    f"trainable: {prefix!r} names no module or parameter of the model (names "
                    "look like 'mask_decoder' or 'mask_decoder.hf_token')"
                )
        for name, param in self.named_parameters():
            param.requires_grad_(any(name == p or name.startswith(f"{p}.") for p in trainable))

    def train(self, mode: bool = True) -> "PromptableSam":
        """As :meth:`nn.Module.train`, except that batch norms whose parameters are all frozen
        (``trainable``) stay in eval mode: a frozen encoder's running statistics (MobileSAM's
        TinyViT) do not drift while the rest trains."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters()
                ):
                    module.eval()
        return self

    # ---------------------------------------------------------------- images
    def rgb_images(self, batched_inputs: List[Dict[str, Any]]) -> List[Tensor]:
        """The (3, h, w) RGB images of the inputs, on the model's device."""
        images = []
        for i, x in enumerate(batched_inputs):
            if "image" not in x:
                raise KeyError(f"input {i} has no 'image'")
            img = x["image"].to(self.device)
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"input {i}: 'image' must be (3, H, W), got {tuple(img.shape)}")
            images.append(img.flip(0) if self.input_format == "BGR" else img)
        return images

    def embed_images(self, images: Sequence[Tensor]) -> Tensor:
        """(B, C, h, w) embeddings of RGB images (autocast per ``encoder_dtype``)."""
        with autocast(self.device, self.encoder_dtype):
            emb = self.encode(self.preprocess(images))
        return emb.float()

    # ---------------------------------------------------------------- prompts
    def prompts_of(self, x: Dict[str, Any], input_hw: Tuple[int, int]) -> Dict[str, Tensor]:
        """Prompt tensors of one input dict, validated and moved to the device."""
        prompts: Dict[str, Optional[Tensor]] = {}
        for key in PROMPT_KEYS:
            value = x.get(key)
            if isinstance(value, Boxes):
                value = value.tensor
            if value is not None:
                value = torch.as_tensor(value, device=self.device)
                value = value if key == "point_labels" else value.float()
            prompts[key] = value
        check_prompts(  # labels checked as given: 0.5 is refused, not truncated to 0
            prompts["point_coords"],
            prompts["point_labels"],
            prompts["boxes"],
            prompts["mask_inputs"],
            input_hw,
            self.prompt_encoder.mask_input_size,
        )
        if prompts["point_labels"] is not None:
            prompts["point_labels"] = prompts["point_labels"].int()
        return prompts

    def decode_chunked(
        self, embedding: Tensor, prompts: Dict[str, Optional[Tensor]], multimask: bool
    ) -> Tuple[Tensor, Tensor]:
        """Decode N prompts of one image in chunks: logits (N, K, 256, 256), IoUs (N, K).

        ``prompts`` maps each of :data:`PROMPT_KEYS` to a tensor or None (as from ``prompts_of``).
        """
        with autocast(self.device, "fp32" if self.training else self.decoder_dtype):
            low_res, iou = self.decode_in_chunks(
                embedding,
                self.prompt_chunk_size,
                *(prompts.get(k) for k in PROMPT_KEYS),
                multimask_output=multimask,
            )
        return low_res.float(), iou.float()

    def to_instances(
        self,
        low_res: Tensor,
        iou: Tensor,
        input_hw: Tuple[int, int],
        out_hw: Tuple[int, int],
    ) -> Instances:
        """Package decoder outputs as ``Instances`` at the original size (see module docstring)."""
        inst = Instances(out_hw)
        masks = self.logits_to_masks(low_res, input_hw, out_hw, self.prompt_chunk_size)
        scores, best = (
            iou.max(dim=1) if iou.shape[0] else (iou.new_zeros(0), iou.new_zeros(0).long())
        )
        pred = masks[torch.arange(masks.shape[0], device=masks.device), best]
        inst.pred_masks = pred
        inst.scores = scores
        inst.pred_boxes = BitMasks(pred).get_bounding_boxes()
        inst.all_masks = masks
        inst.iou_predictions = iou
        inst.low_res_logits = low_res
        return inst

    # ---------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[Dict[str, Any]]):
        """Detectron2 contract: list of input dicts -> list of {"instances"} or a loss dict."""
        if not batched_inputs:
            raise ValueError("PromptableSam got an empty batch")
        images = self.rgb_images(batched_inputs)
        embeddings = self.embed_images(images)
        if self.training:
            return self.losses(batched_inputs, images, embeddings)
        results = []
        for i, (x, img) in enumerate(zip(batched_inputs, images)):
            input_hw = (img.shape[1], img.shape[2])
            prompts = self._prompts_or_raise(i, x, input_hw)
            multimask = bool(x.get("multimask_output", self.multimask_output))
            low_res, iou = self.decode_chunked(embeddings[i : i + 1], prompts, multimask)
            out_hw = (int(x.get("height", input_hw[0])), int(x.get("width", input_hw[1])))
            results.append({"instances": self.to_instances(low_res, iou, input_hw, out_hw)})
        return results

    def _prompts_or_raise(
        self, i: int, x: Dict[str, Any], input_hw: Tuple[int, int]
    ) -> Dict[str, Optional[Tensor]]:
        try:
            return self.prompts_of(x, input_hw)
        except ValueError as e:
            raise type(e)(f"input {i} ({x.get('file_name', 'no file_name')}): {e}") from None

    def losses(
        self, batched_inputs: List[Dict[str, Any]], images: List[Tensor], embeddings: Tensor
    ) -> Dict[str, Tensor]:
        """Training losses of the simulated interactive rounds (``self.interactive_training``).

        Prompts are sampled from each input's ``gt_masks`` (N, h, w) on the device; prompt keys
        in the inputs are not used in training.

        Args:
            batched_inputs: input dicts, each with ``gt_masks`` in the frame of its ``image``.
            images: their (3, h, w) RGB images (for the frame size in error messages).
            embeddings: (B, C, h', w') image embeddings.
        """
        gt_masks = []
        for i, (x, img) in enumerate(zip(batched_inputs, images)):
            if "gt_masks" not in x:
                raise KeyError(f"input {i}: training needs 'gt_masks' (N, h, w) per mask")
            gt = torch.as_tensor(x["gt_masks"], device=self.device)
            if gt.dim() != 3 or tuple(gt.shape[1:]) != tuple(img.shape[1:]):
                raise ValueError(
                    f"input {i} ({x.get('file_name', 'no file_name')}): gt_masks must be "
                    f"(N, {img.shape[1]}, {img.shape[2]}) like its image, got {tuple(gt.shape)}"
                )
            gt_masks.append(gt)
        return self.interactive_training(self, embeddings, gt_masks)
