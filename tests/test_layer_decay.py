"""Layer-wise lr decay of each SAM family's encoder trunk (sam_d2.modeling.layer_decay), against
the families' own recipes, and through the trainer's optimizer."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch import nn

import sam_d2
from sam_d2.engine import Trainer
from sam_d2.modeling.layer_decay import layer_decay_factors
from sam_d2.modeling.vit import lr_decay_rate

DECAY = 0.5


def _meta_sam(variant: str, **kwargs) -> nn.Module:
    """``build_sam(variant)`` at 256 px with no memory behind its tensors (names and shapes)."""
    with torch.device("meta"):
        return sam_d2.build_sam(variant, img_size=256, **kwargs)


def _trunk_order(factor, names, prefix: str, depth: int, rest: str):
    """Factors of the patch embedding, blocks 0..depth-1 and ``rest``, input to output."""
    first = [n for n in names if n.startswith(prefix + "patch_embed.")][0]
    blocks = [[n for n in names if f"blocks.{i}." in n][0] for i in range(depth)]
    return [factor(n) for n in [first, *blocks, rest]]


def test_vit_factors_unchanged():
    """SAM ViT and HQ-SAM: the rule the trainer applied before (MAE/ViTDet), value by value."""
    model = _meta_sam(
        "custom", embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4
    )
    factor = layer_decay_factors(model, DECAY)
    expected = {
        "image_encoder.pos_embed": DECAY**3,
        "image_encoder.patch_embed.proj.weight": DECAY**3,
        "image_encoder.blocks.0.attn.qkv.weight": DECAY**2,
        "image_encoder.blocks.1.attn.rel_pos_h": DECAY,
        "image_encoder.blocks.1.mlp.fc2.bias": DECAY,
        "image_encoder.neck.0.weight": 1.0,
        "prompt_encoder.point_embeddings.0.weight": 1.0,
        "mask_decoder.iou_token.weight": 1.0,
    }
    assert {n: factor(n) for n in expected} == expected
    for name, _ in model.named_parameters():  # the trainer's former lr_factor
        enc = name.startswith("image_encoder.")
        old = lr_decay_rate(name[len("image_encoder.") :], DECAY, 2) if enc else 1.0
        assert factor(name) == old, name

    hq = _meta_sam("hq_vit_b")
    factor = layer_decay_factors(hq, DECAY)
    names = [n for n, _ in hq.named_parameters()]
    order = _trunk_order(factor, names, "image_encoder.", 12, "image_encoder.neck.0.weight")
    assert order == [DECAY ** (13 - i) for i in range(14)]
    assert factor("mask_decoder.hf_token.weight") == factor("mask_decoder.hf_mlp.layers.0.weight")
    assert factor("mask_decoder.compress_vit_feat.0.weight") == 1.0


def test_tiny_vit_factors_follow_mobile_sam():
    """MobileSAM: the lr_scale its TinyViT.set_layer_lr_decay gives every parameter."""
    from mobile_sam.modeling.tiny_vit_sam import TinyViT as OfficialTinyViT

    model = _meta_sam("vit_t")
    factor = layer_decay_factors(model, DECAY)
    official = OfficialTinyViT(  # 5M parameters on the CPU (it calls .item() in __init__)
        img_size=256,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        layer_lr_decay=DECAY,
    )
    ours = {n for n, _ in model.named_parameters()}
    compared = 0
    for name, p in official.named_parameters():
        if f"image_encoder.{name}" in ours:
            # the neck gets no lr_scale (set before it exists): unscaled
            assert factor(f"image_encoder.{name}") == getattr(p, "lr_scale", 1.0), name
            compared += 1
    assert compared == sum(n.startswith("image_encoder.") for n in ours)
    leaf = {0: "conv1.c.weight"}  # stage 0 is MBConv, the others attention blocks
    order = [factor("image_encoder.patch_embed.seq.0.c.weight")] + [
        factor(f"image_encoder.layers.{s}.blocks.{j}.{leaf.get(s, 'mlp.fc1.weight')}")
        for s, depth in enumerate((2, 2, 6, 2))
        for j in range(depth)
    ]
    order.append(factor("image_encoder.neck.0.weight"))
    assert order == [DECAY**11] + [DECAY ** (11 - i) for i in range(12)] + [1.0]
    assert factor("image_encoder.layers.1.downsample.conv1.c.weight") == DECAY**8  # block 3's


def test_hiera_factors_follow_sam2():
    """SAM 2.1: Hiera.get_layer_id through layer_decay_param_modifier on image_encoder.trunk,
    with SAM 2.1's training-config override of ``*pos_embed*`` to 1."""
    from sam2.modeling.backbones.hieradet import Hiera as OfficialHiera

    model = _meta_sam("sam2.1_hiera_t")
    factor = layer_decay_factors(model, DECAY)
    official = OfficialHiera(  # Hiera-T on the CPU (it calls .item() in __init__)
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 7, 2),
        global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
    )
    num_layers = official.get_num_layers() + 1  # as layer_decay_param_modifier
    ours = {n for n, _ in model.named_parameters()}
    for name, _ in official.named_parameters():
        full = f"image_encoder.trunk.{name}"
        assert full in ours, full
        expected = DECAY ** (num_layers - official.get_layer_id(full))
        assert factor(full) == (1.0 if "pos_embed" in name else expected), name
    names = sorted(ours)
    neck = "image_encoder.neck.convs.0.conv.weight"
    order = _trunk_order(factor, names, "image_encoder.trunk.", 12, neck)
    assert order == [DECAY ** (13 - i) for i in range(14)]
    for outside in ("no_mem_embed", "conv_s0.weight", "neck.convs.3.conv.bias"):
        assert factor(f"image_encoder.{outside}") == 1.0


def test_unknown_encoder_raises_unless_decay_is_off():
    model = nn.Module()
    model.image_encoder = nn.Conv2d(3, 8, 3)
    model.mask_decoder = nn.Linear(8, 8)
    with pytest.raises(ValueError, match="no rule for the encoder Conv2d") as err:
        layer_decay_factors(model, 0.8)
    assert "\n" not in str(err.value)
    factor = layer_decay_factors(model, 1.0)
    assert {factor(n) for n, _ in model.named_parameters()} == {1.0}


def test_trainer_decays_mobile_sam_and_refuses_an_unknown_encoder():
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file("configs/mobile_sam.yaml")  # LR_DECAY_RATE 0.8 from Base-SAM
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SAM.IMAGE_SIZE = 256
    model = build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    base = cfg.SOLVER.BASE_LR
    assert lr_of[id(params["image_encoder.patch_embed.seq.0.c.weight"])] == pytest.approx(
        base * 0.8**11
    )
    assert lr_of[id(params["image_encoder.layers.3.blocks.1.mlp.fc1.weight"])] == base
    assert lr_of[id(params["mask_decoder.iou_token.weight"])] == base

    model.image_encoder = nn.Conv2d(3, 256, 16, 16)
    with pytest.raises(ValueError, match="Conv2d"):
        Trainer.build_optimizer(cfg, model)
