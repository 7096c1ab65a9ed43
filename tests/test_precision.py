"""Reduced precision end to end: precision names, bf16 encoder + decoder against fp32 and the
automatic generator's ``dtype`` (CPU: bf16; fp16 needs CUDA)."""

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

import sam_d2
from sam_d2.automatic import AutomaticMaskGenerator
from sam_d2.modeling.speed import autocast, check_dtype

TINY = dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    sam = sam_d2.build_sam("custom", img_size=256, **TINY).eval()
    with torch.no_grad():  # random everything (zero rel-pos / biases would hide code paths)
        for p in sam.parameters():
            if p.dim() > 1:
                p.normal_(0, p[0].numel() ** -0.5)
            else:
                p.add_(0.1 * torch.randn_like(p))
    return sam


@pytest.fixture(scope="module")
def image():
    path = shared_path("sam_images", "dog.jpg")
    return np.ascontiguousarray(np.array(Image.open(path).convert("RGB"))[::4, ::4])


def test_precision_names():
    assert check_dtype("fp32", "cpu") is None
    assert check_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 autocast is not supported on CPU"):
        check_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match=r"precision must be one of .* got 'int8'"):
        check_dtype("int8", "cpu")


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def test_bf16_encoder_and_decoder_close_to_fp32(model):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(1, 3, 256, 256, generator=g) * 50 + 120
    coords = torch.rand(16, 1, 2, generator=g) * 256
    labels = torch.ones(16, 1, dtype=torch.int)
    outs = []
    for name in ("fp32", "bf16"):
        with torch.no_grad(), autocast("cpu", name):
            emb = model.encode(model.preprocess(list(images)))
            low_res, iou = model.decode(emb, coords, labels)
        outs.append((emb.float(), low_res.float(), iou.float()))
    (e32, l32, i32), (e16, l16, i16) = outs
    assert outs[1][1].dtype == torch.float32 and e16.shape == e32.shape
    rel = (l16 - l32).norm() / l32.norm()
    assert 0 < rel < 0.05, rel.item()  # reduced precision did run, and stays close
    assert (i16 - i32).abs().max() < 0.1
    ious = _mask_iou(l16.flatten(0, 1) > 0, l32.flatten(0, 1) > 0)
    assert ious.mean() > 0.95, ious.mean().item()


def test_generator_bf16_matches_fp32_masks(model, image):
    kwargs = dict(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    ref = AutomaticMaskGenerator(model, **kwargs).generate_mask_sets([image])[0]
    low = AutomaticMaskGenerator(model, **kwargs, dtype="bf16").generate_mask_sets([image])[0]
    assert low.predicted_iou.dtype == torch.float32 and len(ref) > 3
    assert abs(len(low) - len(ref)) <= max(2, len(ref) // 5)
    ref_masks, low_masks = ref.decode_masks(), low.decode_masks()
    best = [_mask_iou(m[None].expand_as(ref_masks), ref_masks).max().item() for m in low_masks]
    assert np.median(best) > 0.9, best


def test_generator_rejects_bad_dtype(model):
    with pytest.raises(ValueError, match="fp16 autocast is not supported on CPU"):
        AutomaticMaskGenerator(model, dtype="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        AutomaticMaskGenerator(model, dtype="half")
