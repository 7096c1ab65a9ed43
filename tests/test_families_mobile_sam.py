"""MobileSAM (variant "vit_t"): parity with the official code (PyPI ``mobilesam-mirror``) on fully
random weights, the official checkpoint layout, config, meta-architecture, generator, gradients."""

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from families_reference import assert_same_outputs, prompt_cases, random_state, real_image

import sam_d2
from sam_d2 import AutomaticMaskGenerator, CheckpointError, SamPredictor

mobile_sam = pytest.importorskip("mobile_sam", reason="reference package mobilesam-mirror absent")


@pytest.fixture(scope="module")
def models():
    """(ours, official) MobileSAM at the real size (1024 px) with the same random weights."""
    ref = mobile_sam.sam_model_registry["vit_t"]()
    state = random_state(ref, seed=1)
    ref.load_state_dict(state)
    ref.eval()  # after loading: the official attention caches its biases in eval()
    ours = sam_d2.build_sam("vit_t")
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours.eval(), ref


def test_official_layout_loads_through_the_checkpointer(models, tmp_path):
    """mobile_sam.pt's layout (a bare state dict, with TinyViT's unused ImageNet head) loads
    with zero missing / unexpected keys and identical tensors."""
    ours, ref = models
    official = ref.state_dict()
    assert any(k.startswith("image_encoder.head.") for k in official)
    path = tmp_path / "mobile_sam.pt"
    torch.save(official, path)
    loaded = sam_d2.build_sam("vit_t", checkpoint=str(path))
    for key, value in ours.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert len(loaded.state_dict()) == len(official) - 4  # head.weight/bias, norm_head.weight/bias


def test_predictor_parity_with_official(models):
    ours, ref = models
    image = real_image("bsds500", "images", "test", "100007.jpg")  # 481 x 321: cheap upsampling
    p1, p2 = SamPredictor(ours), mobile_sam.SamPredictor(ref)
    p1.set_image(image)
    p2.set_image(image)
    emb = (p1.get_image_embedding() - p2.get_image_embedding()).abs().max().item()
    assert emb <= 1e-4, emb
    h, w = image.shape[:2]
    prev = p2.predict(point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1]))[2]
    for name, prompt in prompt_cases(h, w, prev[:1]).items():
        multimask = name == "single_point"
        assert_same_outputs(
            p1.predict(**prompt, multimask_output=multimask),
            p2.predict(**prompt, multimask_output=multimask),
            name,
        )


def _small_cfg():
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file("configs/mobile_sam.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SAM.IMAGE_SIZE = 256  # TinyViT runs at any multiple of 16: a fast plumbing check
    return cfg


def test_config_builds_promptable_mobile_sam_and_generator_runs():
    cfg = _small_cfg()
    model = build_model(cfg).eval()
    assert type(model.image_encoder).__name__ == "TinyViT"
    model.load_state_dict(random_state(model, seed=2))
    image = real_image("sam_images", "dog.jpg")
    small = cv2.resize(image, (256, 192), interpolation=cv2.INTER_AREA)  # a 256-px input
    with torch.no_grad():
        out = model(
            [
                {
                    "image": torch.from_numpy(small).permute(2, 0, 1),
                    "boxes": torch.tensor([[20.0, 30.0, 200.0, 150.0]]),
                }
            ]
        )
    inst = out[0]["instances"]
    assert inst.all_masks.shape == (1, 3, 192, 256) and inst.low_res_logits.shape == (1, 3, 64, 64)
    masks = AutomaticMaskGenerator(
        model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(small)
    assert masks and all(m["segmentation"].shape == small.shape[:2] for m in masks)


def test_gradients_reach_every_encoder_parameter_with_and_without_recompute():
    cfg = _small_cfg()
    cfg.MODEL.SAM.IMAGE_SIZE = 128
    model = build_model(cfg)
    model.load_state_dict(random_state(model, seed=3))
    model.train()
    batch = model.preprocess([torch.rand(3, 128, 128) * 255])
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.image_encoder.activation_checkpointing = recompute
        model.encode(batch).pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.image_encoder.named_parameters()})
    assert set(grads[0]) == {n for n, _ in model.image_encoder.named_parameters()}
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6), name


def test_wrong_files_fail_with_one_line(models, tmp_path):
    ours, _ = models
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        vit_b = sam_model_registry["vit_b"]().state_dict()
    # A SAM ViT-B file's encoder stem and neck (the tensors that differ) into MobileSAM.
    part = {k: torch.zeros(v.shape) for k, v in vit_b.items() if "image_encoder.neck" in k}
    part["image_encoder.patch_embed.proj.weight"] = torch.zeros(768, 3, 16, 16)
    torch.save(part, tmp_path / "sam_vit_b_01ec64.pth")
    with pytest.raises(CheckpointError) as err:
        sam_d2.load_sam_checkpoint(ours, str(tmp_path / "sam_vit_b_01ec64.pth"))
    msg = str(err.value)
    assert "\n" not in msg and "sam_vit_b_01ec64.pth" in msg and "image_encoder.neck.0" in msg
    assert "vit_b" in msg and "vit_t" in msg
    # MobileSAM's file into a SAM ViT model.
    torch.save(ours.state_dict(), tmp_path / "mobile_sam.pt")
    tiny = sam_d2.build_sam(
        "custom", img_size=256, embed_dim=64, depth=1, num_heads=2, global_attn_indexes=(0,)
    )
    with pytest.raises(CheckpointError) as err:
        sam_d2.load_sam_checkpoint(tiny, str(tmp_path / "mobile_sam.pt"))
    assert "\n" not in str(err.value) and "mobile_sam.pt" in str(err.value)
