"""Checkpoints, configs, bad input and gradients of the SAM components and meta-architecture."""

import numpy as np
import pytest
import torch
from conftest import TINY_SAM, tiny_sam
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from sam_reference import MINI, matched_models, reference_sam
from segment_anything import sam_model_registry

import sam_d2
from sam_d2 import CheckpointError, PromptError, SamPredictor
from sam_d2.modeling.interactive_training import InteractiveTraining


@pytest.fixture(scope="module")
def tiny():
    return tiny_sam(seed=0)


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_official_key_layout_loads_without_missing_or_unexpected(variant):
    """The real checkpoints' keys (those of the official model) load as they are, strictly."""
    with torch.device("meta"):
        official = sam_model_registry[variant]().state_dict()
        model = sam_d2.build_sam(variant)
    result = model.load_state_dict(official, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(model.state_dict()) == {"vit_b": 314, "vit_l": 482, "vit_h": 594}[variant]


def test_checkpoint_file_roundtrip(tmp_path):
    ours_ref, ref = matched_models("custom", seed=5)
    path = tmp_path / "sam_mini.pth"
    torch.save(ref.state_dict(), path)  # official format: a bare state dict
    loaded = sam_d2.build_sam("custom", checkpoint=str(path), **MINI)
    for k, v in ours_ref.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert not loaded.training


def test_checkpoint_errors_name_file_and_problem(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth: checkpoint file not found"):
        sam_d2.build_sam("custom", checkpoint=str(missing), **MINI)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth: not a readable checkpoint"):
        sam_d2.build_sam("custom", checkpoint=str(corrupt), **MINI)

    ref = reference_sam(**MINI)
    truncated = {k: v for k, v in ref.state_dict().items() if "mask_decoder" not in k}
    torch.save(truncated, tmp_path / "truncated.pth")
    with pytest.raises(
        CheckpointError,
        match=r"truncated.pth: checkpoint fills 82 of 202 tensors of the model "
        r"\(missing e.g. \['mask_decoder",
    ):
        sam_d2.build_sam("custom", checkpoint=str(tmp_path / "truncated.pth"), **MINI)

    # A ViT-H-shaped encoder checkpoint into a ViT-B model.
    wide = reference_sam(embed_dim=1280, depth=1, num_heads=16, global_attn_indexes=(0,))
    torch.save(wide.state_dict(), tmp_path / "sam_vit_h.pth")
    with pytest.raises(CheckpointError, match="checkpoint is vit_h but the model is vit_b"):
        sam_d2.build_sam("vit_b", checkpoint=str(tmp_path / "sam_vit_h.pth"))


@pytest.mark.parametrize("variant", ["b", "l", "h"])
def test_yacs_configs_build_the_official_architecture(variant):
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file(f"configs/sam_vit_{variant}.yaml")
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = build_model(cfg)
        official = sam_model_registry[f"vit_{variant}"]().state_dict()
    assert isinstance(model, sam_d2.PromptableSam)
    result = model.load_state_dict(official, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown SAM variant 'vit_x'"):
        sam_d2.build_sam("vit_x")


def test_predictor_image_formats(tiny):
    predictor = SamPredictor(tiny)
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    predictor.set_image(rgb)
    emb = predictor.get_image_embedding().clone()
    predictor.set_image(rgb[..., ::-1].copy(), image_format="BGR")
    assert torch.equal(emb, predictor.get_image_embedding())
    predictor.set_image(np.dstack([rgb, np.full((40, 60), 255, np.uint8)]))  # RGBA
    assert torch.equal(emb, predictor.get_image_embedding())
    predictor.set_image(rgb[..., 0])  # grayscale
    assert predictor.original_size == (40, 60) and predictor.input_size == (171, 256)
    huge = np.zeros((6000, 9000, 3), np.uint8)
    predictor.set_image(huge)  # resized, not rejected
    assert predictor.input_size == (171, 256)
    with pytest.raises(ValueError, match="uint8"):
        predictor.set_image(rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor.set_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="image_format"):
        predictor.set_image(rgb, image_format="HSV")


def test_predictor_prompt_errors(tiny):
    predictor = SamPredictor(tiny)
    with pytest.raises(RuntimeError, match="call set_image"):
        predictor.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    predictor.set_image(np.zeros((100, 200, 3), np.uint8))
    assert predictor.predict()[0].shape == (3, 100, 200)  # no prompt: as the official predictor
    with pytest.raises(PromptError, match="outside the image"):
        predictor.predict(point_coords=np.array([[250, 10]]), point_labels=np.array([1]))
    with pytest.raises(PromptError, match="point_labels must be"):
        predictor.predict(point_coords=np.array([[5, 5]]), point_labels=np.array([3]))
    with pytest.raises(PromptError, match=r"point_labels must be \(N, P\)"):
        predictor.predict(point_coords=np.array([[5, 5], [6, 6]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="point_labels must be supplied"):
        predictor.predict(point_coords=np.array([[5, 5]]))
    with pytest.raises(PromptError, match="is not XYXY"):
        predictor.predict(box=np.array([50, 50, 10, 60]))
    with pytest.raises(PromptError, match="mask_inputs must be"):
        predictor.predict(mask_input=np.zeros((1, 32, 32), np.float32))
    masks, iou, low = predictor.predict(box=np.array([10, 10, 120, 90]), multimask_output=False)
    assert masks.shape == (1, 100, 200) and iou.shape == (1,) and low.shape == (1, 64, 64)


def test_meta_arch_inputs_and_errors(tiny):
    image = torch.randint(0, 255, (3, 128, 256), dtype=torch.uint8)
    with torch.no_grad():
        out = tiny(
            [
                {
                    "image": image,
                    "height": 64,
                    "width": 128,
                    "boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0], [10, 20, 200, 120]]),
                },
                {
                    "image": image,
                    "point_coords": torch.zeros(0, 1, 2),
                    "point_labels": torch.zeros(0, 1),
                },
            ]
        )
    inst = out[0]["instances"]
    assert inst.image_size == (64, 128) and len(inst) == 2
    assert inst.pred_masks.shape == (2, 64, 128) and inst.all_masks.shape == (2, 3, 64, 128)
    assert inst.low_res_logits.shape == (2, 3, 64, 64) and inst.scores.shape == (2,)
    assert len(out[1]["instances"]) == 0
    with pytest.raises(PromptError, match=r"input 0 .*no prompt given"):
        tiny([{"image": image}])
    half = {"point_coords": torch.tensor([[[5.0, 5.0]]]), "point_labels": torch.tensor([[0.5]])}
    with pytest.raises(PromptError, match="0.5"):  # refused, not truncated to background
        tiny([{"image": image, **half}])
    with pytest.raises(ValueError, match="exceeds the encoder input 256"):
        tiny([{"image": torch.zeros(3, 300, 100), "boxes": torch.zeros(1, 4)}])
    with pytest.raises(ValueError, match=r"'image' must be \(3, H, W\)"):
        tiny([{"image": torch.zeros(1, 30, 100), "boxes": torch.zeros(1, 4)}])
    with pytest.raises(ValueError, match="empty batch"):
        tiny([])


def test_gradients_reach_encoder_and_decoder(tiny):
    model = sam_d2.build_sam("custom", drop_path_rate=0.1, **TINY_SAM)
    model.load_state_dict(tiny.state_dict())
    model.train()
    gt = torch.zeros(2, 128, 256, dtype=torch.bool)
    gt[0, 10:60, 20:90] = True
    gt[1, 40:120, 100:250] = True
    batch = [
        {
            "image": torch.randint(0, 255, (3, 128, 256), dtype=torch.uint8),
            "boxes": torch.tensor([[20.0, 10, 90, 60], [100, 40, 250, 120]]),
            "gt_masks": gt,
        }
    ]
    # every first prompt a box, so the box-corner embedding is used whatever the random state
    model.interactive_training = InteractiveTraining(box_prob=1.0)
    losses = model(batch)
    assert set(losses) == {"loss_mask_focal", "loss_mask_dice", "loss_iou"}
    sum(losses.values()).backward()
    named = dict(model.named_parameters())
    for name in (
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.blocks.0.attn.rel_pos_h",
        "image_encoder.blocks.1.attn.rel_pos_w",
        "image_encoder.neck.0.weight",
        "prompt_encoder.point_embeddings.2.weight",
        "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight",  # the multi-prompt rounds
        "mask_decoder.iou_prediction_head.layers.2.weight",
    ):
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    with pytest.raises(KeyError, match="gt_masks"):
        model([{k: v for k, v in batch[0].items() if k != "gt_masks"}])
