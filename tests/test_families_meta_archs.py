"""MobileSAM, HQ-SAM and SAM 2.1 inside the meta-architectures: detector-prompted SAM (ground-truth
boxes), the click benchmark, automatic proposals and edges, PromptableSam training, at 128-256 px
with random weights (plumbing and the frame of each family; parity is tested per family)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from families_reference import random_state

import sam_d2
from sam_d2 import SamClickBenchmark
from sam_d2.data.transforms import frame_transform

REPO = Path(__file__).resolve().parents[1]


def _image_and_objects():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    masks = torch.zeros(2, 120, 200, dtype=torch.bool)
    masks[0, 10:60, 20:90] = True
    masks[1, 50:110, 100:190] = True
    return image, masks


VARIANTS = ["vit_t", "hq_vit_b", "sam2.1_hiera_t"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_detector_prompted_sam_with_gt_boxes(variant):
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "sam_vitdet_tiny_cpu.yaml"))
    cfg.merge_from_list(
        ["MODEL.SAM_PROMPTED.BOX_SOURCE", "gt", "MODEL.SAM.VARIANT", variant]
        + ["MODEL.SAM.IMAGE_SIZE", 256, "MODEL.SAM.DROP_PATH_RATE", 0.0]
    )
    model = build_model(cfg)
    model.sam.load_state_dict(random_state(model.sam, seed=7))
    model.eval()
    image, masks = _image_and_objects()
    gt = Instances((120, 200))
    gt.gt_boxes = Boxes(torch.tensor([[20.0, 10, 90, 60], [100, 50, 190, 110]]))
    gt.gt_classes = torch.tensor([0, 1])
    x = {
        "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "height": 120,
        "width": 200,
        "instances": gt,
    }
    with torch.no_grad():
        inst = model([x])[0]["instances"]
    assert inst.pred_masks.shape == (2, 120, 200)
    assert torch.isfinite(inst.scores).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_click_benchmark_runs(variant):
    sam = sam_d2.build_sam(variant, img_size=256)
    sam.load_state_dict(random_state(sam, seed=8))
    model = SamClickBenchmark(sam=sam.eval(), num_points=(1, 2, 3)).eval()
    image, masks = _image_and_objects()
    resized = frame_transform(sam.frame, 256).apply_image(image)  # (154, 256) or (256, 256)
    assert resized.shape[:2] == sam.input_size((120, 200))
    resized = torch.as_tensor(resized).permute(2, 0, 1)
    inst = Instances((120, 200))
    inst.gt_masks = BitMasks(masks)
    with torch.no_grad():
        out = model([{"image": resized, "height": 120, "width": 200, "instances": inst}])[0]
    assert out["point_ious"].shape == (2, 3)
    assert ((out["point_ious"] >= 0) & (out["point_ious"] <= 1)).all()
    assert (out["oracle_iou_1pt"] >= out["point_ious"][:, 0] - 1e-12).all()


@pytest.mark.parametrize("config", ["mobile_sam.yaml", "sam_hq_vit_b.yaml", "sam2.1_hiera_t.yaml"])
def test_promptable_training_step(config):
    """The paper's interactive training simulation (shortened) runs and backpropagates."""
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / config))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.SAM.IMAGE_SIZE", 128, "MODEL.SAM.DROP_PATH_RATE", 0.0]
        + ["MODEL.SAM.TRAIN.NUM_CORRECTION_POINTS", 1, "MODEL.SAM.TRAIN.NO_POINT_ROUNDS", False]
    )
    model = build_model(cfg)
    model.load_state_dict(random_state(model, seed=9))
    model.train()
    gt = torch.zeros(2, 96, 128, dtype=torch.bool)
    gt[0, 10:50, 10:60] = True
    gt[1, 40:90, 60:120] = True
    image = torch.as_tensor(
        np.random.default_rng(1).integers(0, 255, (3, 96, 128)), dtype=torch.uint8
    )
    losses = model([{"image": image, "gt_masks": gt}])
    assert set(losses) == {"loss_mask_focal", "loss_mask_dice", "loss_iou"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    grads = [p.grad for p in model.mask_decoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("arch", ["SamAutomaticProposals", "SamEdgeDetector"])
def test_generator_meta_archs_with_sam2(arch):
    """Proposals and edges (the automatic generator inside) with SAM 2.1: the crops are stretched
    to the square and the masks come back at the image size."""
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "sam2.1_hiera_t.yaml"))
    cfg.merge_from_list(
        ["MODEL.META_ARCHITECTURE", arch, "MODEL.DEVICE", "cpu", "MODEL.SAM.IMAGE_SIZE", 256]
        + ["INPUT.MIN_SIZE_TEST", 0, "SAM_AUTO.POINTS_PER_SIDE", 4]
        + ["SAM_AUTO.PRED_IOU_THRESH", 0.0, "SAM_AUTO.STABILITY_SCORE_THRESH", 0.0]
    )
    model = build_model(cfg)
    model.sam.load_state_dict(random_state(model.sam, seed=10))
    model.eval()
    assert model.sam.frame == "stretch"
    image, _ = _image_and_objects()
    x = {"image": torch.as_tensor(image).permute(2, 0, 1), "height": 120, "width": 200}
    with torch.no_grad():
        out = model([x])[0]
    if arch == "SamEdgeDetector":
        assert out["edges"].shape == (120, 200) and torch.isfinite(out["edges"]).all()
    else:
        inst = out["instances"]
        assert len(inst) > 0 and inst.pred_masks.shape[1:] == (120, 200)
