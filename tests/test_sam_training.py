"""PromptableSam fine-tuning through Detectron2's trainer on the real COCO sample."""

import numpy as np
import torch
from conftest import shared_path
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

import sam_d2
from sam_d2.data.train_mapper import SamTrainMapper
from sam_d2.engine import Trainer

DATASET = "sam_d2_test_coco_sample_train"


def _cfg(tmp_path):
    root = shared_path("coco_sample")
    if DATASET not in DatasetCatalog.list():
        register_coco_instances(
            DATASET, {}, str(root / "instances_sample.json"), str(root / "images")
        )
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file("configs/sam_vit_b.yaml")
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
