"""Every way a Detectron2 user loads weights gives the reference model's outputs, and a file that
does not fit fails with one line instead of leaving a random model.

Paths: sam_d2's ``SamCheckpointer`` (train_net, ``build_sam``), Detectron2's plain
``DetectionCheckpointer`` and ``DefaultPredictor``, and a plain ``load_state_dict``. Models: the
promptable SAM from an official-layout SAM file (against ``segment_anything`` on the same random
weights), the detector-prompted SAM from a model-zoo ``.pkl`` plus a SAM file, and the proposal and
edge models from a SAM file given as ``MODEL.WEIGHTS``. (ViTDet alone through
``DetectionCheckpointer``: tests/test_vitdet.py.)
"""

import logging
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, shared_path
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from PIL import Image
from sam_reference import reference_sam
from segment_anything import SamPredictor as RefPredictor

import sam_d2
from sam_d2 import CheckpointError, SamCheckpointer, SamPredictor
from sam_d2.utils.random_weights import randomize_state_dict

TINY_ENCODER = dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=8)
TINY_CONFIG = REPO_ROOT / "configs" / "sam_vitdet_tiny_cpu.yaml"


def _truck() -> np.ndarray:
    return np.array(Image.open(shared_path("sam_images", "truck.jpg")).convert("RGB"))


def _official_file(tmp_path: Path, seed: int = 0):
    """The official model (tiny encoder, 256 px) with random weights, saved as ``sam.pth``."""
    ref = reference_sam(img_size=256, **TINY_ENCODER)
    ref.load_state_dict(randomize_state_dict(ref.state_dict(), seed))
    path = tmp_path / "sam.pth"
    torch.save(ref.state_dict(), path)
    return ref.eval(), str(path)


def _save_pkl(state: Dict[str, torch.Tensor], path: Path) -> str:
    data = {"model": {k: v.numpy() for k, v in state.items()}, "__author__": "Detectron2 Model Zoo"}
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return str(path)


def _tiny_cfg(*opts):
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file(str(TINY_CONFIG))
    cfg.merge_from_list(list(opts))
    return cfg


def _random_detector_file(cfg, tmp_path: Path) -> Dict[str, torch.Tensor]:
    det_cfg = cfg.clone()
    det_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    g = torch.Generator().manual_seed(7)
    state = {
        k: 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in build_model(det_cfg).state_dict().items()
    }
    _save_pkl(state, tmp_path / "model_final.pkl")
    return state


# ------------------------------------------------------------------------ promptable SAM
LOADERS = ["SamCheckpointer", "DetectionCheckpointer", "load_state_dict", "build_sam"]


@pytest.mark.parametrize("loader", LOADERS)
def test_official_sam_file_through_every_path_equals_segment_anything(loader, tmp_path):
    ref, path = _official_file(tmp_path)
    if loader == "build_sam":
        model = sam_d2.build_sam("custom", checkpoint=path, img_size=256, **TINY_ENCODER)
    else:
        model = sam_d2.build_sam("custom", img_size=256, **TINY_ENCODER)
        if loader == "load_state_dict":
            model.load_state_dict(torch.load(path), strict=True)
        else:
            checkpointer = SamCheckpointer if loader == "SamCheckpointer" else DetectionCheckpointer
            checkpointer(model).load(path)
    image = _truck()
    ours, theirs = SamPredictor(model.eval()), RefPredictor(ref)
    prompt = dict(point_coords=np.array([[500, 375], [1125, 625]]), point_labels=np.array([1, 0]))
    with torch.no_grad():
        ours.set_image(image)
        theirs.set_image(image)
        _, iou, logits = ours.predict(**prompt)
        _, iou_ref, logits_ref = theirs.predict(**prompt)
    assert np.abs(logits - logits_ref).max() < 1e-4
    assert np.abs(iou - iou_ref).max() < 1e-4


def test_files_that_do_not_fit_a_sam_fail_in_one_line(tmp_path):
    cfg = _tiny_cfg()
    _random_detector_file(cfg, tmp_path)
    vitdet = str(tmp_path / "model_final.pkl")
    one_line = r"^[^\n]*$"
    # a ViTDet file given as the SAM checkpoint: nothing of the SAM in it
    with pytest.raises(CheckpointError, match=r"model_final.pkl: checkpoint fills 0 of \d+") as e:
        sam_d2.build_sam("custom", checkpoint=vitdet, img_size=256, **TINY_ENCODER)
    assert "backbone." in str(e.value)  # names what the file holds instead
    assert re.match(one_line, str(e.value))
    # the same through Detectron2's own checkpointer: an error, not a random model
    model = sam_d2.build_sam("custom", img_size=256, **TINY_ENCODER)
    with pytest.raises(CheckpointError, match=r"checkpoint fills 0 of \d+ tensors of the model"):
        DetectionCheckpointer(model).load(vitdet)
    # a SAM file into a detector-prompted model: its detector would stay random
    _, sam_file = _official_file(tmp_path)
    cfg = _tiny_cfg(
        "MODEL.SAM.ENCODER.OUT_CHANS", 256, "MODEL.SAM.DECODER.MLP_DIM", 2048,
        "MODEL.SAM.DECODER.NUM_HEADS", 8, "MODEL.SAM.DECODER.IOU_HEAD_HIDDEN_DIM", 256,
        "MODEL.SAM.MASK_IN_CHANS", 16,
    )  # fmt: skip
    prompted = build_model(cfg)
    with pytest.raises(CheckpointError, match=r"sam.pth: checkpoint fills 0 of \d+ tensors of the "
                       r"'detector'"):  # fmt: skip
        SamCheckpointer(prompted).load(sam_file)


# ------------------------------------------------------------------ detector-prompted SAM
def _prompted_files(tmp_path: Path):
    cfg = _tiny_cfg()
    det_state = _random_detector_file(cfg, tmp_path)
    sam = sam_d2.PromptableSam(cfg)
    sam_state = randomize_state_dict(sam.state_dict(), seed=4)
    torch.save(sam_state, tmp_path / "sam_tiny.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "model_final.pkl")
    cfg.MODEL.SAM.WEIGHTS = str(tmp_path / "sam_tiny.pth")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    return cfg, det_state, sam_state


def test_default_predictor_loads_detector_and_sam_without_missing_key_lists(tmp_path, caplog):
    cfg, det_state, sam_state = _prompted_files(tmp_path)
    with caplog.at_level(logging.WARNING):
        predictor = DefaultPredictor(cfg)
    assert "not found in the checkpoint" not in caplog.text.lower(), caplog.text
    assert "not found in checkpoint" not in caplog.text.lower(), caplog.text
    model = predictor.model
    for k, v in det_state.items():
        assert torch.equal(model.detector.state_dict()[k], v), k
    for k, v in sam_state.items():
        assert torch.equal(model.sam.state_dict()[k], v), k

    # the reference: the same parts loaded by hand, the same input as DefaultPredictor builds
    ref = build_model(_tiny_cfg("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0)).eval()
    ref.detector.load_state_dict(det_state, strict=True)
    ref.sam.load_state_dict(sam_state, strict=True)
    bgr = _truck()[:, :, ::-1]
    with torch.no_grad():
        out = predictor(bgr)["instances"]
        image = predictor.aug.get_transform(bgr).apply_image(bgr)
        x = {"image": torch.as_tensor(image.transpose(2, 0, 1).copy())}
        x["height"], x["width"] = bgr.shape[:2]
        if predictor.input_format == "RGB":
            x["image"] = x["image"].flip(0)
        expected = ref([x])[0]["instances"]
    assert len(out) == len(expected) > 0
    assert torch.equal(out.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(out.pred_masks, expected.pred_masks) and out.pred_masks.any()

    # and a full sam_d2 checkpoint of the model (both parts) round-trips through plain paths
    full = tmp_path / "model_final_sam_d2.pth"
    torch.save({"model": model.state_dict()}, full)
    again = build_model(_tiny_cfg())
    DetectionCheckpointer(again).load(str(full))
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


# ------------------------------------------------------------------- proposals and edges
@pytest.mark.parametrize("config", ["sam_proposals_lvis.yaml", "sam_bsds500_edges.yaml"])
def test_default_predictor_runs_proposals_and_edges_from_a_sam_file(config, tmp_path):
    ref, path = _official_file(tmp_path, seed=2)
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file(str(REPO_ROOT / "configs" / config))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", path, "MODEL.SAM.VARIANT", "custom",
            "MODEL.SAM.IMAGE_SIZE", 256, "MODEL.SAM.ENCODER.EMBED_DIM", 64,
            "MODEL.SAM.ENCODER.DEPTH", 2, "MODEL.SAM.ENCODER.NUM_HEADS", 2,
            "MODEL.SAM.ENCODER.GLOBAL_ATTN_INDEXES", [1], "MODEL.SAM.ENCODER.WINDOW_SIZE", 8,
            "SAM_AUTO.POINTS_PER_SIDE", 4,
        ]
    )  # fmt: skip
    predictor = DefaultPredictor(cfg)
    loaded = predictor.model.sam.state_dict()
    official = ref.state_dict()
    for k in official:
        ours_key = k.replace(".mlp.lin1.", ".mlp.fc1.").replace(".mlp.lin2.", ".mlp.fc2.")
        if k.startswith("image_encoder.blocks."):
            k_ours = ours_key
        else:
            k_ours = k
        assert torch.equal(loaded[k_ours], official[k]), k
    image = _truck()[::4, ::4]
    with torch.no_grad():
        out = predictor(np.ascontiguousarray(image[:, :, ::-1]))
        manual = build_model(cfg).eval()
        manual.sam.load_state_dict(official, strict=True)
        x = {"image": torch.as_tensor(image.transpose(2, 0, 1).copy())}
        expected = manual([x])[0]
    if "edges" in expected:
        assert torch.equal(out["edges"], expected["edges"]) and out["edges"].max() > 0
    else:
        assert len(out["instances"]) == len(expected["instances"]) > 0
        assert torch.equal(out["instances"].pred_masks, expected["instances"].pred_masks)


# ---------------------------------------------------------------------------- the tools
def test_train_net_with_a_file_that_does_not_fit_exits_with_one_line(tmp_path):
    cfg = _tiny_cfg()
    _random_detector_file(cfg, tmp_path)
    sample = shared_path("coco_sample")
    coco = tmp_path / "datasets" / "coco"
    (coco / "annotations").mkdir(parents=True)
    os.symlink(sample / "images", coco / "val2017")
    os.symlink(sample / "instances_sample.json", coco / "annotations" / "instances_val2017.json")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    proc = subprocess.run(
        [
            sys.executable, str(REPO_ROOT / "tools" / "train_net.py"),
            "--config-file", str(REPO_ROOT / "configs" / "sam_vit_b.yaml"), "--eval-only",
            "MODEL.DEVICE", "cpu", "MODEL.SAM.VARIANT", "custom", "MODEL.SAM.IMAGE_SIZE", "256",
            "MODEL.SAM.ENCODER.EMBED_DIM", "64", "MODEL.SAM.ENCODER.DEPTH", "2",
            "MODEL.SAM.ENCODER.NUM_HEADS", "2", "MODEL.SAM.ENCODER.GLOBAL_ATTN_INDEXES", "[1]",
            "MODEL.SAM.ENCODER.WINDOW_SIZE", "8", "DATASETS.TEST", "('coco_2017_val',)",
            "MODEL.WEIGHTS", str(tmp_path / "model_final.pkl"), "OUTPUT_DIR", str(tmp_path / "o"),
        ],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "model_final.pkl: checkpoint fills 0 of" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
