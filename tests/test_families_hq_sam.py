"""HQ-SAM (variants "hq_vit_b/l/h"): parity with the official ``segment-anything-hq`` on fully
random weights, the official checkpoint layout, config, meta-architecture, generator, gradients."""

from functools import partial

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from families_reference import assert_same_outputs, prompt_cases, random_state, real_image

import sam_d2
from sam_d2 import AutomaticMaskGenerator, CheckpointError, SamPredictor

hq = pytest.importorskip(
    "segment_anything_hq", reason="reference package segment-anything-hq absent"
)

# A small ViT at the real input size (1024 px, 64x64 tokens, window 14, two global blocks).
MINI = dict(embed_dim=128, depth=4, num_heads=4, global_attn_indexes=(1, 3))


def _reference_mini():
    """The official HQ-SAM composition (as its build_sam) with the MINI encoder."""
    m = hq.modeling
    return m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=4,
            embed_dim=128,
            img_size=1024,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=4,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(1, 3),
            window_size=14,
            out_chans=256,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=256,
            image_embedding_size=(64, 64),
            input_image_size=(1024, 1024),
            mask_in_chans=16,
        ),
        mask_decoder=m.MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            vit_dim=128,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


@pytest.fixture(scope="module")
def models():
    ref = _reference_mini()
    state = random_state(ref, seed=4)
    ref.load_state_dict(state)
    ours = sam_d2.build_sam("hq_vit_b", **MINI)
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours.eval(), ref


@pytest.mark.parametrize("vit", ["vit_b", "vit_l", "vit_h"])
def test_official_key_layout_loads_without_missing_or_unexpected(vit):
    with torch.device("meta"):
        official = hq.sam_model_registry[vit]().state_dict()
        model = sam_d2.build_sam(f"hq_{vit}")
    result = model.load_state_dict(official, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(model.state_dict()) == len(official)


def test_predictor_parity_with_official(models):
    ours, ref = models
    image = real_image("bsds500", "images", "test", "100007.jpg")  # 481 x 321: cheap upsampling
    p1, p2 = SamPredictor(ours), hq.SamPredictor(ref)
    p1.set_image(image)
    p2.set_image(image)
    h, w = image.shape[:2]
    prev = p2.predict(point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1]))[2]
    cases = prompt_cases(h, w, prev)
    runs = [(name, True, False) for name in cases]
    runs += [("single_point", False, False), ("box_points", True, True)]
    try:
        for name, multimask, hq_only in runs:
            ours.mask_decoder.hq_token_only = hq_only
            ref_out = p2.predict(**cases[name], multimask_output=multimask, hq_token_only=hq_only)
            out = p1.predict(**cases[name], multimask_output=multimask)
            assert out[1].shape == (1,)  # HQ-SAM: one mask per prompt, multimask or not
            assert_same_outputs(out, ref_out, f"{name}/multimask={multimask}/hq_only={hq_only}")
    finally:
        ours.mask_decoder.hq_token_only = False


def test_checkpoint_file_and_wrong_files(models, tmp_path):
    ours, ref = models
    torch.save(ref.state_dict(), tmp_path / "sam_hq_mini.pth")
    loaded = sam_d2.build_sam("hq_vit_b", checkpoint=str(tmp_path / "sam_hq_mini.pth"), **MINI)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    # HQ-SAM's file into plain SAM, and plain SAM's file into HQ-SAM: one line each.
    with pytest.raises(CheckpointError) as err:
        sam_d2.build_sam("custom", checkpoint=str(tmp_path / "sam_hq_mini.pth"), **MINI)
    assert "\n" not in str(err.value) and "mask_decoder.compress_vit_feat" in str(err.value)
    plain = sam_d2.build_sam("custom", **MINI)
    torch.save(plain.state_dict(), tmp_path / "sam_mini.pth")
    with pytest.raises(CheckpointError) as err:
        sam_d2.build_sam("hq_vit_b", checkpoint=str(tmp_path / "sam_mini.pth"), **MINI)
    assert "\n" not in str(err.value) and "mask_decoder.hf_token.weight" in str(err.value)


def _small_cfg(**overrides):
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file("configs/sam_hq_vit_b.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SAM.IMAGE_SIZE = 256  # ViT-B on a 16x16 token grid: a fast plumbing check
    cfg.MODEL.SAM.DROP_PATH_RATE = 0.0
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def test_config_meta_arch_generator_and_gradients():
    cfg = _small_cfg(**{"MODEL.SAM.HQ_TOKEN_ONLY": True})
    model = build_model(cfg)
    assert type(model.mask_decoder).__name__ == "HQMaskDecoder"
    assert model.mask_decoder.hq_token_only
    model.load_state_dict(random_state(model, seed=5))
    model.eval()
    image = cv2.resize(real_image("sam_images", "dog.jpg"), (256, 192))
    with torch.no_grad():
        out = model(
            [
                {
                    "image": torch.from_numpy(image).permute(2, 0, 1),
                    "boxes": torch.tensor([[20.0, 30.0, 200.0, 150.0]]),
                }
            ]
        )
    inst = out[0]["instances"]
    assert inst.all_masks.shape == (1, 1, 192, 256) and inst.iou_predictions.shape == (1, 1)
    masks = AutomaticMaskGenerator(
        model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(image)
    assert masks and all(m["segmentation"].shape == image.shape[:2] for m in masks)

    model.train()
    emb = model.encode(model.preprocess([torch.from_numpy(image).permute(2, 0, 1)]))
    low_res, iou = model.decode(emb, boxes=torch.tensor([[20.0, 30.0, 200.0, 150.0]]))
    (low_res.mean() + iou.mean()).backward()
    for name, p in model.mask_decoder.named_parameters():
        if name.startswith(("hf_", "compress_vit_feat", "embedding_")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.image_encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


HQ_MODULES = [
    "mask_decoder.hf_token",
    "mask_decoder.hf_mlp",
    "mask_decoder.compress_vit_feat",
    "mask_decoder.embedding_encoder",
    "mask_decoder.embedding_maskfeature",
]


def test_hq_sam_starts_from_a_sam_file_with_its_new_modules_named(tmp_path):
    """HQ-SAM's training starts from SAM's own file: with MODEL.SAM.WEIGHTS_NEW_MODULES naming the
    HQ modules, every SAM tensor comes from the file and only the named modules keep their
    initialisation; without it the same file is refused; a wrong name is refused."""
    from sam_d2.utils.random_weights import randomize_state_dict

    sam_file = tmp_path / "sam_vit_b.pth"
    sam = sam_d2.build_sam("vit_b", img_size=256)
    state = randomize_state_dict(sam.state_dict(), seed=3)
    torch.save({"model": state}, sam_file)
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file("configs/sam_hq_finetune_coco_format.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.SAM.IMAGE_SIZE", 256])
    cfg.MODEL.SAM.WEIGHTS = str(sam_file)
    with pytest.raises(CheckpointError, match="sam_vit_b.pth"):
        build_model(cfg)
    cfg.MODEL.SAM.WEIGHTS_NEW_MODULES = HQ_MODULES
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.manual_seed(0)
    initial = sam_d2.build_sam("hq_vit_b", img_size=256).state_dict()
    loaded = model.state_dict()
    for key, value in loaded.items():
        new = key.startswith(tuple(f"{m}." for m in HQ_MODULES))
        assert torch.equal(value, initial[key] if new else state[key]), key
    cfg.MODEL.SAM.WEIGHTS_NEW_MODULES = ["mask_decoder.hf_tokn"]
    with pytest.raises(CheckpointError, match="'mask_decoder.hf_tokn' names no module"):
        build_model(cfg)
