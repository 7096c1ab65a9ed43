"""PromptableSam fine-tuning through Detectron2's trainer on the real COCO sample."""

import numpy as np
import pytest
import torch
from conftest import shared_path
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

import sam_d2
from sam_d2.data.train_mapper import SamTrainMapper
from sam_d2.engine import Trainer
from sam_d2.modeling.meta_arch import PromptableSam
from sam_d2.modeling.sam import build_sam_modules

DATASET = "sam_d2_test_coco_sample_train"


def _cfg(tmp_path, config: str = "configs/sam_vit_b.yaml"):
    """``config`` with a tiny SAM at 256 px, 8 masks per image, 3 iterations, the COCO sample."""
    root = shared_path("coco_sample")
    if DATASET not in DatasetCatalog.list():
        register_coco_instances(
            DATASET, {}, str(root / "instances_sample.json"), str(root / "images")
        )
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SAM.VARIANT = "custom"
    cfg.MODEL.SAM.IMAGE_SIZE = 256
    cfg.MODEL.SAM.ENCODER.merge_from_list(
        ["EMBED_DIM", 32, "DEPTH", 2, "NUM_HEADS", 2, "GLOBAL_ATTN_INDEXES", [1], "WINDOW_SIZE", 8]
    )
    cfg.MODEL.SAM.TRAIN.MAX_MASKS_PER_IMAGE = 8
    cfg.DATASETS.TRAIN = (DATASET,)
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER = 3
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.STEPS = (2,)
    cfg.SOLVER.CHECKPOINT_PERIOD = 3
    cfg.OUTPUT_DIR = str(tmp_path)
    return cfg


def test_train_mapper_gives_image_and_masks_only(tmp_path):
    cfg = _cfg(tmp_path)
    mapper = SamTrainMapper(cfg)
    for record in DatasetCatalog.get(DATASET):
        out = mapper(record)
        masks = out["gt_masks"]
        assert out["image"].shape[0] == 3 and max(out["image"].shape[1:]) == 256
        assert masks.dtype == torch.bool and masks.shape[1:] == out["image"].shape[1:]
        assert 0 < len(masks) <= 8 and masks.flatten(1).any(1).all()
        # prompts are simulated by the model from the masks, not sampled here
        assert not {"boxes", "point_coords", "point_labels"} & set(out)


def test_train_net_iterations_reduce_nothing_to_nan(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.SOLVER.BASE_LR = 1e-4
    trainer = Trainer(cfg)
    lrs = {g["lr"] for g in trainer.optimizer.param_groups}
    assert len(lrs) > 2, "layer-wise lr decay should give the ViT blocks different rates"
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    after = trainer.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("image_encoder.blocks") for k in changed)
    assert any(k.startswith("mask_decoder") for k in changed)
    assert (tmp_path / "model_final.pth").exists()
    metrics = trainer.storage.latest()
    assert np.isfinite(metrics["total_loss"][0])


def test_paper_schedules_and_the_finetune_config():
    expected = {  # SAM paper appendix A
        "sam_vit_h.yaml": (256, 0.0008, 90000, (60000, 86666), 0.8, 0.4),
        "sam_vit_l.yaml": (128, 0.0004, 180000, (120000, 173332), 0.8, 0.4),
        "sam_vit_b.yaml": (128, 0.0008, 180000, (120000, 173332), 0.6, 0.6),
    }
    for name, (batch, lr, iters, steps, decay, drop_path) in expected.items():
        cfg = get_cfg()
        sam_d2.add_sam_config(cfg)
        cfg.merge_from_file(f"configs/{name}")
        s = cfg.SOLVER
        got = (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, tuple(s.STEPS), s.LR_DECAY_RATE)
        assert got == (batch, lr, iters, steps, decay), name
        assert cfg.MODEL.SAM.DROP_PATH_RATE == drop_path and s.WARMUP_ITERS == 250
        assert s.OPTIMIZER == "ADAMW" and s.WEIGHT_DECAY == 0.1
        assert (
            cfg.MODEL.SAM.TRAIN.NUM_CORRECTION_POINTS == 8 and cfg.MODEL.SAM.TRAIN.NO_POINT_ROUNDS
        )


def test_finetune_config_freezes_the_encoder(tmp_path):
    cfg = _cfg(tmp_path, "configs/sam_finetune_coco_format.yaml")  # tiny model, small batch
    assert cfg.MODEL.SAM.TRAIN.TRAINABLE == ["prompt_encoder", "mask_decoder"]
    cfg.SOLVER.IMS_PER_BATCH = 1
    cfg.SOLVER.MAX_ITER = 1
    cfg.SOLVER.WARMUP_ITERS = 1
    trainer = Trainer(cfg)
    model = trainer.model
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in model.image_encoder.parameters()}
    assert {id(p) for p in model.mask_decoder.parameters()} <= optimized
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert "image_encoder" not in changed and "mask_decoder" in changed


def test_hq_finetune_config_trains_the_hq_modules_only(tmp_path):
    """HQ-SAM's recipe: SAM frozen, only what HQ-SAM adds to its decoder trains (ViT-B, 256 px)."""
    recipe = get_cfg()
    sam_d2.add_sam_config(recipe)
    recipe.merge_from_file("configs/sam_hq_finetune_coco_format.yaml")
    s = recipe.SOLVER  # SysCV/sam-hq train/train.py, 12 epochs of HQSeg-44K at batch 32
    assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.WARMUP_ITERS) == ("ADAMW", 1e-3, 0.0, 0)
    assert (s.IMS_PER_BATCH, s.MAX_ITER, tuple(s.STEPS)) == (32, 16620, (13850,))
    assert recipe.MODEL.SAM.HQ_TOKEN_ONLY and recipe.MODEL.SAM.VARIANT == "hq_vit_b"
    cfg = _cfg(tmp_path, "configs/sam_hq_finetune_coco_format.yaml")
    cfg.MODEL.SAM.VARIANT = "hq_vit_b"  # _cfg made it a custom SAM
    # one short step of ViT-B on the CPU: 2 box-prompted masks, one round
    cfg.MODEL.SAM.TRAIN.merge_from_list(
        ["MAX_MASKS_PER_IMAGE", 2, "BOX_PROMPT_PROB", 1.0, "NUM_CORRECTION_POINTS", 0]
    )
    cfg.MODEL.SAM.TRAIN.NO_POINT_ROUNDS = False
    cfg.SOLVER.IMS_PER_BATCH = 1
    cfg.SOLVER.MAX_ITER = 1
    cfg.SOLVER.WARMUP_ITERS = 0
    trainer = Trainer(cfg)
    model = trainer.model
    with torch.device("meta"):
        sam = sam_d2.build_sam("vit_b", img_size=256)
    added = {n for n, _ in model.named_parameters()} - {n for n, _ in sam.named_parameters()}
    assert {n.split(".")[1] for n in added} == {
        "hf_token",
        "hf_mlp",
        "compress_vit_feat",
        "embedding_encoder",
        "embedding_maskfeature",
    }
    assert {n for n, p in model.named_parameters() if p.requires_grad} == added
    params = dict(model.named_parameters())
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(params[n]) for n in added}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == added


def test_trainable_names_must_name_something():
    with torch.device("meta"):
        encoder, prompt_encoder, decoder = build_sam_modules(
            "custom", img_size=64, embed_dim=16, depth=1, num_heads=1, global_attn_indexes=(0,)
        )
    with pytest.raises(ValueError, match="'mask_decoder.hf_tokn' names no module or parameter"):
        PromptableSam(
            image_encoder=encoder,
            prompt_encoder=prompt_encoder,
            mask_decoder=decoder,
            trainable=["mask_decoder", "mask_decoder.hf_tokn"],
        )


def test_frozen_batch_norms_keep_their_statistics():
    """MobileSAM with a frozen encoder: its TinyViT batch norms stay in eval mode in training,
    so a training forward leaves their running statistics as they were."""
    encoder, prompt_encoder, decoder = build_sam_modules("vit_t", img_size=256)
    model = PromptableSam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder,
        trainable=["mask_decoder"],
    )
    norms = [m for m in model.image_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    model.train()
    assert model.training and model.mask_decoder.training
    assert not any(m.training for m in norms)
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    image = torch.randint(0, 256, (3, 192, 256), dtype=torch.uint8).float()
    masks = torch.zeros(1, 192, 256, dtype=torch.bool)
    masks[0, 50:120, 60:200] = True
    losses = model([{"image": image, "gt_masks": masks}])
    sum(losses.values()).backward()
    after = model.image_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.eval()
    assert not any(m.training for m in norms)
    everything = sam_d2.build_sam("vit_t", img_size=256).train()
    assert all(m.training for m in everything.modules() if isinstance(m, torch.nn.BatchNorm2d))
