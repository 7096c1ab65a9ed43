"""ONNX export of SAM (image encoder; prompt encoder + mask decoder) and of the ViTDet backbone.

Two files per model, run by :class:`sam_d2_onnx.SamOnnxPredictor` without torch:

- ``encoder.onnx``: input ``image`` (h, w, 3) uint8, the RGB image already resized so that its
  longest side is ``img_size`` (any h, w up to ``img_size``); normalisation and zero padding to the
  square encoder input happen inside the graph; output ``image_embeddings`` (1, C, S/16, S/16).
  The resize stays outside: sam_d2 (like the official package) resizes with Pillow's bilinear
  filter, which ONNX's ``Resize`` does not reproduce bit for bit, whereas normalising and padding
  are exact in any runtime, so a client sends small uint8 pixels and never re-implements them.
- ``decoder.onnx``: the official ``segment_anything`` export's interface, names and meaning, so
  tools built for it (its web demo, CVAT's SAM plugin) load ours. Inputs ``image_embeddings``
  (1, C, h, w); ``point_coords`` (N, P, 2) float32 in the resized frame; ``point_labels`` (N, P)
  float32: 1 fg, 0 bg, 2 / 3 box top-left / bottom-right corner, -1 padding (append a (0, 0)
  point labelled -1 when there is no box, as the official predictor does); ``mask_input``
  (N, 1, 4h, 4w) logits; ``has_mask_input`` (1,) 1 or 0; ``orig_im_size`` (2,) float32 (H, W).
  Outputs ``masks`` (N, M, H, W) logits at the original size, ``iou_predictions`` (N, M),
  ``low_res_masks`` (N, M, 4h, 4w); M = 4 (token 0 single-mask, 1..3 multimask, the official
  default) or 1 with ``return_single_mask`` (the official rule: the best multimask output for a
  single click, the single-mask output for more points). N (prompts per call) and P (points per
  prompt) are dynamic; the official export fixes N = 1.

Export uses ``torch.onnx.export`` with the dynamo exporter (torch's default since 2.9, needs
``onnxscript``) at opset :data:`OPSET`. Each file carries metadata (:mod:`sam_d2_onnx.metadata`):
variant, a fingerprint of the weights, image size, mask-output mode, so that the predictor rejects
an encoder and a decoder of different models. Files are written to a temporary folder beside the
target and moved into place (``os.replace``).
"""

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from sam_d2_onnx import metadata as md

from ..modeling.sam import Sam

__all__ = [
    "OPSET",
    "ExportError",
    "SamOnnxEncoder",
    "SamOnnxDecoder",
    "weights_fingerprint",
    "export_sam_encoder",
    "export_sam_decoder",
    "quantize_decoder",
    "export_sam",
    "export_vitdet_backbone",
]

logger = logging.getLogger(__name__)

# The dynamo exporter's native opset (torchlib is written for 18; a higher one is reached by
# ONNX's version converter). Current onnxruntime (1.31/1.32) runs it, and so do runtimes back to
# onnxruntime 1.14; only 18 is tested.
OPSET = 18
_MAX_PROMPTS, _MAX_POINTS = 65536, 4096


class ExportError(RuntimeError):
    """The export cannot run: bad output folder, unsupported model or exporter failure."""


class SamOnnxEncoder(nn.Module):
    """Resized uint8 image -> image embedding, with SAM's normalisation and padding inside."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, image: Tensor) -> Tensor:
        """
        Args:
            image: (h, w, 3) uint8 RGB with max(h, w) <= ``img_size`` (the longest side resized
                to ``img_size`` by :class:`sam_d2_onnx.ResizeLongestSide`).

        Returns:
            (1, C, S/16, S/16) float32 image embedding.
        """
        return self.sam.encode(self.sam.preprocess([image.permute(2, 0, 1)]))


class SamOnnxDecoder(nn.Module):
    """Prompt encoder + mask decoder + upscaling with the official ONNX decoder's interface."""

    def __init__(self, sam: Sam, return_single_mask: bool = False) -> None:
        """
        Args:
            sam: the model whose prompt encoder and mask decoder are exported.
            return_single_mask: output one mask per prompt chosen by the official rule instead of
                all 1 + K mask tokens.
        """
        super().__init__()
        self.sam = sam
        self.return_single_mask = return_single_mask

    def _embed_points(self, point_coords: Tensor, point_labels: Tensor) -> Tensor:
        """(N, P, 2) coords and (N, P) labels in {-1, 0, 1, 2, 3} -> (N, P, C) sparse tokens."""
        pe = self.sam.prompt_encoder
        emb = pe.pe_layer.pixels(point_coords + 0.5, pe.input_image_size)
        # Rows 0-3: background, foreground, box top-left, box bottom-right; row 4: padding.
        learned = torch.cat([e.weight for e in pe.point_embeddings] + [pe.not_a_point_embed.weight])
        labels = point_labels.to(torch.int64)
        pad = labels == -1
        emb = torch.where(pad[..., None], torch.zeros_like(emb), emb)
        return emb + learned[torch.where(pad, learned.shape[0] - 1, labels)]

    def _embed_mask(self, mask_input: Tensor, has_mask_input: Tensor) -> Tensor:
        """(N, 1, 4h, 4w) logits and a (1,) flag -> (N, C, h, w) dense embedding."""
        pe = self.sam.prompt_encoder
        has = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has * pe.mask_downscaling(mask_input) + (1 - has) * no_mask

    def _select_single(self, masks: Tensor, iou: Tensor, num_points: int) -> Tuple[Tensor, Tensor]:
        """The official single-mask rule, branch-free.

        Token 0 (single-mask output) gets -1000 * 0.5 for one click plus its padding point (so the
        best multimask output wins) and +1000 * k for more points (so it always wins).
        """
        bias = torch.zeros_like(iou[:1])
        bias[:, 0] = 1000.0
        best = torch.argmax(iou + (num_points - 2.5) * bias, dim=1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return masks[rows, best][:, None], iou[rows, best][:, None]

    def _upscale(self, masks: Tensor, orig_im_size: Tensor) -> Tensor:
        """(N, M, 4h, 4w) logits -> (N, M, H, W) at ``orig_im_size`` (H, W) read at run time."""
        s = self.sam.img_size
        size = orig_im_size.to(torch.float64)  # float64: the same rounding as Python's floats
        resized = torch.floor(size * (s / size.max()) + 0.5).to(torch.int64)
        orig = size.to(torch.int64)
        rh, rw, oh, ow = resized[0].item(), resized[1].item(), orig[0].item(), orig[1].item()
        for v, hi in ((rh, s), (rw, s), (oh, None), (ow, None)):
            torch._check(v >= 1)
            if hi is not None:
                torch._check(v <= hi)
        return self.sam.postprocess_masks(masks, (rh, rw), (oh, ow))

    def forward(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
        orig_im_size: Tensor,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """See the module docstring for shapes and meaning.

        Returns:
            masks (N, M, H, W) logits, iou_predictions (N, M), low_res_masks (N, M, 4h, 4w).
        """
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_mask(mask_input, has_mask_input)
        low_res, iou = self.sam.mask_decoder.predict_masks(
            image_embeddings, self.sam.prompt_encoder.get_dense_pe(), sparse, dense
        )
        if self.return_single_mask:
            low_res, iou = self._select_single(low_res, iou, point_coords.shape[1])
        return self._upscale(low_res, orig_im_size), iou, low_res


def weights_fingerprint(model: nn.Module) -> str:
    """First 12 hex digits of a SHA-256 over the model's state dict (names, shapes and values)."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:12]


def _check_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ExportError(f"output folder {out_dir} does not exist (create it first)")
    return out_dir


def _export(
    module: nn.Module,
    args: Tuple[Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Mapping[str, Optional[Dict[int, object]]],
    meta: Mapping[str, str],
    opset: int,
    external_data: Optional[bool] = None,
) -> Path:
    """Export ``module`` to ``path`` atomically, with ``meta`` in the file's metadata.

    ``external_data``: weights in ``<path>.data`` (None: only above protobuf's 2 GB limit).
    """
    out_dir = _check_out_dir(path.parent)
    module = module.eval()
    # The math attention kernel while tracing: with the fused CPU kernel the trace records
    # output strides that its ONNX decomposition does not have, and a later reshape fails
    # ("Cannot view a tensor with shape ... and strides ...", torch 2.14).
    with warnings.catch_warnings(), sdpa_kernel([SDPBackend.MATH]):
        # The exporter's own deprecation/notice chatter; real failures raise.
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                args,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=dict(dynamic_shapes),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"{path.name}: torch.onnx.export failed: {first}") from e
    program.model.metadata_props.update(meta)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=out_dir))
    try:
        program.save(tmp / path.name, external_data=external_data)
        _move_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %s", path)
    return path


def _move_into_place(tmp: Path, path: Path) -> None:
    """Move ``tmp/<name>`` and its external-data file ``tmp/<name>.data`` (if any) to ``path``."""
    data = Path(str(path) + ".data")
    tmp_data = tmp / data.name
    if tmp_data.exists():
        os.replace(tmp_data, data)
    elif data.exists():
        data.unlink()  # a stale weights file of an earlier, larger export
    os.replace(tmp / path.name, path)


def _check_exportable(sam: Sam, variant: str) -> None:
    """Refuse models the graphs do not describe: SAM 2 (stretch frame, its own decoder)."""
    if sam.frame != "pad":
        raise ExportError(
            f"ONNX export covers SAM's padded frame and decoder only; {variant} is a SAM 2 model "
            f"({sam.frame} frame, SAM 2's prompt encoder and decoder): use sam_d2.SamPredictor"
        )


def _meta(sam: Sam, variant: str, fingerprint: str, role: str) -> Dict[str, str]:
    return {
        md.KEY_ROLE: role,
        md.KEY_VARIANT: variant,
        md.KEY_WEIGHTS: fingerprint,
        md.KEY_IMG_SIZE: str(sam.img_size),
        md.KEY_EMBED_DIM: str(sam.prompt_encoder.embed_dim),
    }


def export_sam_encoder(
    sam: Sam,
    path: Path,
    variant: str,
    fingerprint: str,
    opset: int = OPSET,
    external_data: Optional[bool] = None,
) -> Path:
    """Export the image encoder (see the module docstring for its input and output).

    Args:
        sam: the model.
        path: target ``.onnx`` file; its folder must exist.
        variant: recorded in the metadata ("vit_b", "vit_l", "vit_h", "custom").
        fingerprint: :func:`weights_fingerprint` of ``sam``, recorded in the metadata.
        opset: ONNX opset.
        external_data: weights in ``<path>.data`` beside the graph; None (default) does so only
            above protobuf's 2 GB limit (ViT-H).

    Raises:
        ExportError: for a SAM 2 model (:func:`_check_exportable`).
    """
    _check_exportable(sam, variant)
    s = sam.img_size
    h = torch.export.Dim("height", min=2, max=s)
    w = torch.export.Dim("width", min=2, max=s)
    example = torch.randint(0, 256, (s, (3 * s) // 4, 3), dtype=torch.uint8)
    return _export(
        SamOnnxEncoder(sam),
        (example,),
        Path(path),
        ["image"],
        ["image_embeddings"],
        {"image": {0: h, 1: w}},
        _meta(sam, variant, fingerprint, md.ROLE_ENCODER),
        opset,
        external_data,
    )


def export_sam_decoder(
    sam: Sam,
    path: Path,
    variant: str,
    fingerprint: str,
    return_single_mask: bool = False,
    opset: int = OPSET,
) -> Path:
    """Export prompt encoder + mask decoder + upscaling with the official decoder's interface.

    Args:
        sam, path, variant, fingerprint, opset: as in :func:`export_sam_encoder`.
        return_single_mask: one mask per prompt (official rule) instead of all 1 + K.

    Raises:
        ExportError: for a SAM 2 model (:func:`_check_exportable`).
    """
    _check_exportable(sam, variant)
    c = sam.prompt_encoder.embed_dim
    gh, gw = sam.prompt_encoder.image_embedding_size
    mh, mw = sam.prompt_encoder.mask_input_size
    n = torch.export.Dim("num_prompts", min=1, max=_MAX_PROMPTS)
    p = torch.export.Dim("num_points", min=1, max=_MAX_POINTS)
    example = (
        torch.randn(1, c, gh, gw),
        torch.rand(2, 3, 2) * sam.img_size,
        torch.tensor([[1.0, 0.0, -1.0], [1.0, 2.0, 3.0]]),
        torch.randn(2, 1, mh, mw),
        torch.ones(1),
        torch.tensor([480.0, 640.0]),
    )
    mode = md.MASK_OUTPUT_SINGLE if return_single_mask else md.MASK_OUTPUT_ALL
    return _export(
        SamOnnxDecoder(sam, return_single_mask),
        example,
        Path(path),
        md.DECODER_INPUTS,
        md.DECODER_OUTPUTS,
        {
            "image_embeddings": None,
            "point_coords": {0: n, 1: p},
            "point_labels": {0: n, 1: p},
            "mask_input": {0: n},
            "has_mask_input": None,
            "orig_im_size": None,
        },
        {**_meta(sam, variant, fingerprint, md.ROLE_DECODER), md.KEY_MASK_OUTPUT: mode},
        opset,
    )


def quantize_decoder(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of a decoder file (weights uint8, activations quantised at run
    time; what the official export offers), keeping its sam_d2 metadata.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    out_dir = _check_out_dir(dst.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=out_dir))
    try:
        quantize_dynamic(
            Path(src),
            tmp / dst.name,
            per_channel=False,
            reduce_range=False,
            weight_type=QuantType.QUInt8,
        )
        model = onnx.load(tmp / dst.name)
        have = {p.key for p in model.metadata_props}
        for prop in onnx.load(Path(src), load_external_data=False).metadata_props:
            if prop.key not in have:
                model.metadata_props.add(key=prop.key, value=prop.value)
        onnx.save(model, tmp / dst.name)
        _move_into_place(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %s", dst)
    return dst


def export_sam(
    sam: Sam,
    out_dir: Path,
    variant: str,
    return_single_mask: bool = False,
    quantize: bool = False,
    encoder: bool = True,
    opset: int = OPSET,
) -> Dict[str, Path]:
    """Export a SAM model to ``out_dir``: ``encoder.onnx``, ``decoder.onnx`` (and
    ``decoder_int8.onnx`` with ``quantize``).

    Args:
        sam: the model (any :class:`Sam`, e.g. from :func:`sam_d2.build_sam`).
        out_dir: an existing folder.
        variant: recorded in the files' metadata.
        return_single_mask: see :func:`export_sam_decoder`.
        quantize: also write the dynamically int8-quantised decoder.
        encoder: export the image encoder too (the decoder alone is what the official tools use).
        opset: ONNX opset.

    Returns:
        {"encoder": path, "decoder": path, "decoder_int8": path} for the files written.
    """
    _check_exportable(sam, variant)
    out_dir = _check_out_dir(Path(out_dir))
    fingerprint = weights_fingerprint(sam)
    paths = {}
    if encoder:
        paths["encoder"] = export_sam_encoder(
            sam, out_dir / "encoder.onnx", variant, fingerprint, opset
        )
    paths["decoder"] = export_sam_decoder(
        sam, out_dir / "decoder.onnx", variant, fingerprint, return_single_mask, opset
    )
    if quantize:
        paths["decoder_int8"] = quantize_decoder(paths["decoder"], out_dir / "decoder_int8.onnx")
    return paths


class _NamedFeatures(nn.Module):
    """A Detectron2 backbone returning its feature dict as a tuple in a fixed order."""

    def __init__(self, backbone: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.names = tuple(names)

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        feats = self.backbone(images)
        return tuple(feats[k] for k in self.names)


def export_vitdet_backbone(
    backbone: nn.Module, path: Path, image_size: int, variant: str = "vitdet", opset: int = OPSET
) -> Path:
    """Export a ViTDet backbone (``SimpleFeaturePyramid`` over :class:`sam_d2.modeling.vit.ViT`).

    Input ``images`` (B, 3, S, S) float32, normalised and padded as Detectron2's model does
    (``S`` = ``image_size``, the backbone's square padding); outputs its feature maps by name
    (``p2`` ... ``p6``). The batch dimension is dynamic.
    """
    names = list(backbone.output_shape().keys())
    b = torch.export.Dim("batch", min=1, max=1024)
    return _export(
        _NamedFeatures(backbone, names),
        (torch.randn(2, 3, image_size, image_size),),
        Path(path),
        ["images"],
        names,
        {"images": {0: b}},
        {
            md.KEY_ROLE: md.ROLE_VITDET_BACKBONE,
            md.KEY_VARIANT: variant,
            md.KEY_WEIGHTS: weights_fingerprint(backbone),
            md.KEY_IMG_SIZE: str(image_size),
        },
        opset,
    )
