"""SAM 2.1 image model: parity with the official ``sam2`` package (``SAM2ImagePredictor``) on fully
random weights, and the official checkpoint layouts of every size."""

import numpy as np
import pytest
import torch
from families_reference import LOGIT_TOL, prompt_cases, random_state, real_image

from sam_d2.modeling.sam import Sam
from sam_d2.modeling.sam2 import build_sam2_modules, image_model_state_dict

sam2_build = pytest.importorskip("sam2.build_sam", reason="reference package sam2 absent")


def _official(size: str):
    """SAM 2.1 as ``build_sam2`` builds it (dynamic multimask on, its default)."""
    return sam2_build.build_sam2(
        f"configs/sam2.1/sam2.1_hiera_{size}.yaml", ckpt_path=None, device="cpu"
    ).eval()


@pytest.mark.parametrize("size", ["t", "s", "b+", "l"])
def test_official_layout_loads_without_missing_or_unexpected(size):
    """The real checkpoints' keys (those of the official model), mapped to the image model, fill
    every tensor of ours; only the video path's tensors are left out, by name."""
    official = _official(size).state_dict()
    with torch.device("meta"):
        ours = Sam(*build_sam2_modules(f"hiera_{size}"))
    mapped = image_model_state_dict(official)
    result = ours.load_state_dict(mapped, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    left_out = {k.split(".")[0] for k in official} - {"image_encoder", "sam_prompt_encoder"}
    assert left_out <= {
        "sam_mask_decoder", "no_mem_embed", "memory_attention", "memory_encoder",
        "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
        "mask_downsample", "obj_ptr_proj", "obj_ptr_tpos_proj",
    }  # fmt: skip


def test_image_model_parity_with_sam2_image_predictor():
    """Same weights, same preprocessed image: our encode + decode against SAM2ImagePredictor,
    every prompt kind, multimask and single-mask (SAM 2's dynamic multimask) outputs."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ref = _official("t")
    state = random_state(ref, seed=6)
    ref.load_state_dict(state)
    ours = Sam(*build_sam2_modules("hiera_t")).eval()
    result = ours.load_state_dict(image_model_state_dict(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    image = real_image("bsds500", "images", "test", "100007.jpg")
    h, w = image.shape[:2]
    predictor = SAM2ImagePredictor(ref)
    predictor.set_image(image)
    with torch.no_grad():
        features = ours.encode(predictor._transforms(image)[None])
    to_input = np.array([1024 / w, 1024 / h])  # SAM 2 stretches the image to the square
    prev = predictor.predict(point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1]))
    for name, prompt in prompt_cases(h, w, prev[2][:1]).items():
        for multimask in (True, False):
            _, iou_ref, low_ref = predictor.predict(**prompt, multimask_output=multimask)
            kwargs = {}
            if "point_coords" in prompt:
                kwargs["point_coords"] = torch.tensor(prompt["point_coords"] * to_input)[None]
                kwargs["point_labels"] = torch.tensor(prompt["point_labels"])[None]
            if "box" in prompt:
                box = prompt["box"].reshape(2, 2) * to_input
                kwargs["boxes"] = torch.tensor(box).reshape(1, 4)
            if "mask_input" in prompt:
                kwargs["mask_inputs"] = torch.tensor(prompt["mask_input"])[None]
            kwargs = {k: v.float() if v.is_floating_point() else v for k, v in kwargs.items()}
            with torch.no_grad():
                low, iou = ours.decode(features, multimask_output=multimask, **kwargs)
            tag = f"{name}/multimask={multimask}"
            assert low.shape[1:] == low_ref.shape and iou.shape[1:] == iou_ref.shape, tag
            assert np.abs(low[0].numpy() - low_ref).max() <= LOGIT_TOL, tag
            assert np.abs(iou[0].numpy() - iou_ref).max() <= LOGIT_TOL, tag


def test_decoder_refuses_plain_sam_embeddings():
    _, prompt_encoder, decoder = build_sam2_modules("hiera_t", img_size=256)
    sparse, dense = prompt_encoder(None, torch.tensor([[10.0, 10.0, 50.0, 50.0]]), None)
    with pytest.raises(ValueError, match="256 channels, expected 1024"):
        decoder(torch.zeros(1, 256, 16, 16), prompt_encoder.get_dense_pe(), sparse, dense, True)
