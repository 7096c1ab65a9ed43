"""``tools/train_net.py --eval-only`` end to end, in a subprocess, on real data with a tiny SAM."""

import json
import math
import os
import subprocess
import sys

from conftest import REPO_ROOT, shared_path

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


def _train_net(datasets_root, output_dir, config: str, *opts: str) -> dict:
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
    assert per_dataset["num_objects"] == 125
    for n in (1, 2, 3, 5, 9):
        assert 0.0 <= results["point_miou"][f"mIoU@{n}"] <= 100.0


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
    assert set(edges) >= {"ODS", "OIS", "AP", "R50"}
    assert all(0.0 <= edges[k] <= 1.0 for k in ("ODS", "OIS", "AP"))
    # R50 is undefined (NaN, as in the benchmark's MATLAB code) when precision never reaches 0.5,
    # which a random tiny SAM may well cause.
    assert math.isnan(edges["R50"]) or 0.0 <= edges["R50"] <= 1.0
    assert (tmp_path / "out" / "inference" / "bsds500_test" / "bsds_edges_pr.png").exists()
