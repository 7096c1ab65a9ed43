"""The official notebooks' code paths run unchanged with only the import swapped.

``predictor_example.ipynb`` (single point, several points with a mask fed back, a background
point, a box, box + point, batched boxes through ``predict_torch`` with
``transform.apply_boxes_torch``) and ``automatic_mask_generator_example.ipynb`` (the tuned
settings: points_per_side=32, pred_iou_thresh=0.86, stability_score_thresh=0.92, crop_n_layers=1,
crop_n_points_downscale_factor=2, min_mask_region_area=100) are copied below as functions whose
only inputs are the names the notebooks import. Each runs once with ``segment_anything``'s names
and once with sam_d2's, on the same random weights (a tiny SAM, official checkpoint format, loaded
by sam_d2 from the file), and the results must agree.
"""

from functools import partial

import numpy as np
import pytest
import torch
from conftest import TINY_SAM, shared_path
from PIL import Image

import sam_d2
from sam_d2.utils.random_weights import randomize_state_dict

segment_anything = pytest.importorskip("segment_anything")
from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

#: Factor on the mask logits of the random model (its raw logits stay within about +-1).
LOGIT_SCALE = 50.0


def official_tiny_sam(**overrides) -> Sam:
    """The official ``Sam`` class with conftest's TINY_SAM sizes (encoder and decoder)."""
    t = {**TINY_SAM, **overrides}
    grid = t["img_size"] // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=t["img_size"],
            embed_dim=t["embed_dim"],
            depth=t["depth"],
            num_heads=t["num_heads"],
            global_attn_indexes=t["global_attn_indexes"],
            window_size=t["window_size"],
            out_chans=t["prompt_embed_dim"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=t["prompt_embed_dim"],
            image_embedding_size=(grid, grid),
            input_image_size=(t["img_size"], t["img_size"]),
            mask_in_chans=t["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=t["prompt_embed_dim"],
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=t["prompt_embed_dim"],
                mlp_dim=t["decoder_mlp_dim"],
                num_heads=t["decoder_num_heads"],
            ),
            iou_head_hidden_dim=t["iou_head_hidden_dim"],
        ),
    ).eval()


def model_pair(folder, nudge: bool, **overrides):
    """(official, sam_d2) tiny SAMs with the same random weights; sam_d2's is loaded from an
    official-format checkpoint file written to ``folder``.

    With ``nudge`` the weights are changed so that masks pass the automatic notebook's filters:
    the IoU head's bias is raised (predicted IoU > 0.86), mask logits are scaled up (stable
    masks), and the decoder's upscaling kernels are nearly constant over their 2x2 taps (blobs,
    not checkerboards).
    """
    ref = official_tiny_sam(**overrides)
    state = randomize_state_dict(ref.state_dict(), seed=3)
    if nudge:
        state["mask_decoder.iou_prediction_head.layers.2.bias"] += 1.0
        for i in range(4):
            for part in ("weight", "bias"):
                state[f"mask_decoder.output_hypernetworks_mlps.{i}.layers.2.{part}"] *= LOGIT_SCALE
        gen = torch.Generator().manual_seed(3)
        for i in (0, 3):
            w = state[f"mask_decoder.output_upscaling.{i}.weight"]
            base = torch.randn(w.shape[:2] + (1, 1), generator=gen)
            state[f"mask_decoder.output_upscaling.{i}.weight"] = (
                base + 0.05 * torch.randn(w.shape, generator=gen)
            ) / w.shape[0] ** 0.5
    ref.load_state_dict(state)
    path = folder / "sam_tiny.pth"
    torch.save(state, path)
    ours = sam_d2.build_sam("custom", checkpoint=str(path), **{**TINY_SAM, **overrides})
    return ref, ours


# ------------------------------------------------------------------ predictor_example.ipynb
def predictor_notebook(SamPredictor, sam, image, device="cpu"):  # noqa: N803 (notebook names)
    """The notebook's cells in order; returns what each cell computed."""
    out = {}
    sam.to(device=device)
    predictor = SamPredictor(sam)
    predictor.set_image(image)

    input_point = np.array([[500, 375]])
    input_label = np.array([1])
    masks, scores, logits = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        multimask_output=True,
    )
    out["single_point"] = (masks, scores, logits)

    input_point = np.array([[500, 375], [1125, 625]])
    input_label = np.array([1, 1])
    mask_input = logits[np.argmax(scores), :, :]  # Choose the model's best mask
    masks, _, _ = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        mask_input=mask_input[None, :, :],
        multimask_output=False,
    )
    out["two_points"] = masks

    input_point = np.array([[500, 375], [1125, 625]])
    input_label = np.array([1, 0])
    mask_input = logits[np.argmax(scores), :, :]  # Choose the model's best mask
    masks, _, _ = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        mask_input=mask_input[None, :, :],
        multimask_output=False,
    )
    out["background_point"] = masks

    input_box = np.array([425, 600, 700, 875])
    masks, _, _ = predictor.predict(
        point_coords=None,
        point_labels=None,
        box=input_box[None, :],
        multimask_output=False,
    )
    out["box"] = masks

    input_box = np.array([425, 600, 700, 875])
    input_point = np.array([[575, 750]])
    input_label = np.array([0])
    masks, _, _ = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        box=input_box,
        multimask_output=False,
    )
    out["box_and_point"] = masks

    input_boxes = torch.tensor(
        [
            [75, 275, 1725, 850],
            [425, 600, 700, 875],
            [1375, 550, 1650, 800],
            [1240, 675, 1400, 750],
        ],
        device=predictor.device,
    )
    transformed_boxes = predictor.transform.apply_boxes_torch(input_boxes, image.shape[:2])
    masks, _, _ = predictor.predict_torch(
        point_coords=None,
        point_labels=None,
        boxes=transformed_boxes,
        multimask_output=False,
    )
    out["batched_boxes"] = masks.cpu().numpy()
    return out


def _assert_masks_agree(ours: np.ndarray, ref: np.ndarray, name: str) -> None:
    """Same shape and dtype; at most 0.1% of pixels differ (logits agree to ~1e-6, a pixel
    sitting on the threshold may flip)."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, name
    assert np.mean(ours != ref) <= 1e-3, name


def test_predictor_notebook_same_results(tmp_path):
    image = np.array(Image.open(shared_path("sam_images", "truck.jpg")).convert("RGB"))
    ref_model, ours_model = model_pair(tmp_path, nudge=False)
    ref = predictor_notebook(segment_anything.SamPredictor, ref_model, image)
    ours = predictor_notebook(sam_d2.SamPredictor, ours_model, image)
    assert ours.keys() == ref.keys()
    masks, scores, logits = ours["single_point"]
    _assert_masks_agree(masks, ref["single_point"][0], "single_point")
    np.testing.assert_allclose(scores, ref["single_point"][1], atol=1e-4)
    np.testing.assert_allclose(logits, ref["single_point"][2], atol=1e-3, rtol=1e-4)
    names = ("two_points", "background_point", "box", "box_and_point", "batched_boxes")
    for name in names:
        _assert_masks_agree(ours[name], ref[name], name)
    empty = [name for name in names if not ref[name].any()]
    assert not empty, f"random weights give empty masks for {empty}: a weak comparison"
    assert ours["batched_boxes"].shape == (4, 1) + image.shape[:2]


def test_transform_methods_match_official():
    """``predictor.transform``'s official methods, numpy and torch, on odd sizes."""
    from segment_anything.utils.transforms import ResizeLongestSide as Official

    ours, ref = sam_d2.data.ResizeLongestSide(1024), Official(1024)
    rng = np.random.default_rng(0)
    for hw in [(1200, 1800), (333, 517), (5000, 7)]:
        coords = rng.uniform(0, max(hw), (3, 5, 2))
        boxes = rng.uniform(0, max(hw), (6, 4))
        np.testing.assert_array_equal(ours.apply_coords(coords, hw), ref.apply_coords(coords, hw))
        np.testing.assert_array_equal(ours.apply_boxes(boxes, hw), ref.apply_boxes(boxes, hw))
        t_coords, t_boxes = torch.as_tensor(coords), torch.as_tensor(boxes)
        assert torch.equal(
            ours.apply_coords_torch(t_coords, hw), ref.apply_coords_torch(t_coords, hw)
        )
        assert torch.equal(ours.apply_boxes_torch(t_boxes, hw), ref.apply_boxes_torch(t_boxes, hw))
        assert ours.get_preprocess_shape(*hw, 1024) == Official.get_preprocess_shape(*hw, 1024)
    image = rng.integers(0, 256, (120, 77, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ours.apply_image(image), ref.apply_image(image))
    assert ours.target_length == ref.target_length == 1024


# ------------------------------------------------------ automatic_mask_generator_example.ipynb
def amg_notebook(SamAutomaticMaskGenerator, sam, image):  # noqa: N803 (notebook names)
    """The notebook's tuned generator cell (its default-settings cell is the same call with
    fewer arguments; tests/test_automatic.py compares defaults)."""
    mask_generator_2 = SamAutomaticMaskGenerator(
        model=sam,
        points_per_side=32,
        pred_iou_thresh=0.86,
        stability_score_thresh=0.92,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
        min_mask_region_area=100,  # Requires open-cv to run post-processing
    )
    masks2 = mask_generator_2.generate(image)
    return masks2


def _sorted_records(records):
    return sorted(records, key=lambda r: (r["crop_box"], r["point_coords"], -r["predicted_iou"]))


def test_automatic_notebook_same_results(tmp_path):
    path = shared_path("sam_images", "dog.jpg")
    # 34 x 50 pixels: the notebook's 2048 prompts (32x32 grid + 4 crops at 16x16) stay cheap
    image = np.ascontiguousarray(np.array(Image.open(path).convert("RGB"))[::16, ::16])
    # a 128-px encoder input: 32 x 32 low-res masks, a quarter of the upscaling work
    ref_model, ours_model = model_pair(tmp_path, nudge=True, img_size=128)
    ref = amg_notebook(segment_anything.SamAutomaticMaskGenerator, ref_model, image)
    ours = amg_notebook(sam_d2.SamAutomaticMaskGenerator, ours_model, image)
    assert len(ref) >= 2, "too few masks survive for a meaningful comparison"
    assert len(ours) == len(ref)
    for a, b in zip(_sorted_records(ours), _sorted_records(ref)):
        assert set(a) == set(b)
        assert a["point_coords"] == b["point_coords"] and a["crop_box"] == b["crop_box"]
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-4)
        inter = np.logical_and(a["segmentation"], b["segmentation"]).sum()
        union = np.logical_or(a["segmentation"], b["segmentation"]).sum()
        assert inter / union >= 0.99
        assert a["area"] == pytest.approx(b["area"], rel=0.01, abs=2)
