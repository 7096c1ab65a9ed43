"""``tools/train_net.py --eval-only`` end to end, in a subprocess, on real data with a tiny SAM.

The SAM's weights come from a file of fixed random values, so each run's numbers are exactly
reproducible and are asserted as such (figures recorded from a run of this code on the CI machine
type; a change that moves them is a change of behaviour to look at).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, shared_path
from detectron2.config import get_cfg

import sam_d2
from sam_d2.utils.random_weights import randomize_state_dict

TINY_SAM = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.SAM.VARIANT",
    "custom",
    "MODEL.SAM.IMAGE_SIZE",
    "256",
    "MODEL.SAM.ENCODER.EMBED_DIM",
    "32",
    "MODEL.SAM.ENCODER.DEPTH",
    "2",
    "MODEL.SAM.ENCODER.NUM_HEADS",
    "2",
    "MODEL.SAM.ENCODER.GLOBAL_ATTN_INDEXES",
    "[1]",
    "MODEL.SAM.ENCODER.WINDOW_SIZE",
    "8",
    "DATALOADER.NUM_WORKERS",
    "0",
]


def _random_sam_file(tmp_path) -> str:
    """The tiny SAM of ``TINY_SAM`` with fixed random weights, as an official-layout file."""
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_list(TINY_SAM)
    sam = sam_d2.PromptableSam(cfg)
    path = tmp_path / "sam_tiny_random.pth"
    torch.save(randomize_state_dict(sam.state_dict(), seed=0), path)
    return str(path)


def _train_net(datasets_root, output_dir, config: str, *opts: str) -> dict:
    weights = _random_sam_file(output_dir.parent)
    opts = ("MODEL.WEIGHTS", weights) + opts
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root))
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tools" / "train_net.py"),
        "--config-file",
        str(REPO_ROOT / "configs" / config),
        "--eval-only",
        *TINY_SAM,
        "OUTPUT_DIR",
        str(output_dir),
        *opts,
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(output_dir / "results.json") as f:
        return json.load(f)


def test_point_benchmark_on_bbbc038_sample(tmp_path):
    """The single-point benchmark on the real BBBC038v1 nuclei (125 objects) via train_net."""
    sample = shared_path("bbbc038_sample")
    base = tmp_path / "datasets" / "sam23" / "bbbc038"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    os.symlink(sample / "img2d.tif", base / "images" / "nuclei.tif")
    os.symlink(sample / "mask2d.tif", base / "masks" / "nuclei.tif")
    results = _train_net(
        tmp_path / "datasets",
        tmp_path / "out",
        "sam_point_eval.yaml",
        "DATASETS.TEST",
        '("sam23_bbbc038",)',
    )
    per_dataset = results["point_miou/sam23_bbbc038"]
    assert per_dataset["num_objects"] == 125 and per_dataset["num_skipped"] == 0
    expected = {
        "mIoU@1": 0.15759400103113325,
        "mIoU@2": 0.14696775713835608,
        "mIoU@3": 0.13856498055042452,
        "mIoU@5": 0.1489733506992459,
        "mIoU@9": 0.15337250855611637,
        "oracle_mIoU@1": 0.18015773450820938,
    }
    for key, value in expected.items():
        assert per_dataset[key] == pytest.approx(value, rel=1e-6), key
        assert results["point_miou"][key] == per_dataset[key], key


def test_bsds500_edges_on_two_real_images(tmp_path):
    """SAM edge detection + the BSDS benchmark via train_net on two real test images (one of each
    orientation), with 9 thresholds to keep the pixel matching short."""
    bsds = shared_path("bsds500")
    root = tmp_path / "datasets" / "bsds500"
    for sub, ext in (("images", "jpg"), ("groundTruth", "mat")):
        (root / sub / "test").mkdir(parents=True)
        for stem in ("100007", "101084"):
            os.symlink(bsds / sub / "test" / f"{stem}.{ext}", root / sub / "test" / f"{stem}.{ext}")
    results = _train_net(
        tmp_path / "datasets",
        tmp_path / "out",
        "sam_bsds500_edges.yaml",
        "SAM_AUTO.POINTS_PER_SIDE",
        "4",
        "TEST.EDGES.NUM_THRESHOLDS",
        "9",
        "TEST.EDGES.NUM_WORKERS",
        "0",
    )
    edges = results["edges"]
    expected = {"ODS": 0.42922219598011335, "OIS": 0.42922219598011335, "AP": 0.24071404033093188}
    expected["R50"] = 0.0001949571094359241
    for key, value in expected.items():
        assert edges[key] == pytest.approx(value, rel=1e-6), key
    assert (tmp_path / "out" / "inference" / "bsds500_test" / "bsds_edges_pr.png").exists()
