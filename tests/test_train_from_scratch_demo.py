"""``tools/train_from_scratch_demo.py`` end to end (two iterations of a tiny SAM on the real
BSDS500 regions) and the region dataset's area threshold."""

import json
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest
from conftest import REPO_ROOT, shared_path

from sam_d2.data.bsds500_regions import load_bsds_regions, register_bsds500_regions

sys.path.insert(0, str(REPO_ROOT / "tools"))
import train_from_scratch_demo as demo  # noqa: E402


def test_min_area_ratio_keeps_only_large_regions():
    root = str(shared_path("bsds500").parent)
    records = load_bsds_regions(root, "heldout", min_area_ratio=0.05)
    assert len(records) == 50
    for r in records:
        assert r["annotations"], r["file_name"]
        for a in r["annotations"]:
            assert a["area"] >= 0.05 * r["height"] * r["width"]
            assert mask_util.area(a["segmentation"]) == a["area"]
    with pytest.raises(ValueError, match="min_area_ratio must be in"):
        register_bsds500_regions(root, min_area_ratio=1.5)


def test_demo_trains_evaluates_and_plots(tmp_path):
    """Held-out evaluation before and after two training iterations, results.json with both, the
    learning-curve PNG, and the trained weights; the same seed gives the same untrained model."""
    root = str(shared_path("bsds500").parent)
    tiny = [
        "MODEL.SAM.IMAGE_SIZE", "64", "MODEL.SAM.ENCODER.EMBED_DIM", "16",
        "MODEL.SAM.ENCODER.DEPTH", "2", "MODEL.SAM.ENCODER.NUM_HEADS", "2",
        "MODEL.SAM.ENCODER.GLOBAL_ATTN_INDEXES", "[1]", "MODEL.SAM.ENCODER.WINDOW_SIZE", "2",
        "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
        "TEST.POINT_EVAL.NUM_POINTS", "[1, 2]",
    ]  # fmt: skip
    out = tmp_path / "run"
    argv = ["--output-dir", str(out), "--data-root", root, "--eval-period", "2", "--opts", *tiny]
    assert demo.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    iters = [e["iteration"] for e in results["evaluations"]]
    assert iters == [0, 2]
    for e in results["evaluations"]:
        assert 0.0 <= e["mIoU@1"] <= 100.0 and 0.0 <= e["mIoU@2"] <= 100.0
    assert results["before"] == results["evaluations"][0]
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert (out / "model_final.pth").is_file()

    again = tmp_path / "again"
    argv[1] = str(again)
    argv[argv.index("SOLVER.MAX_ITER") + 1] = "1"  # fewer steps, same seed
    assert demo.main(argv) == 0
    first = json.loads((again / "results.json").read_text())["evaluations"][0]
    assert np.isclose(first["mIoU@1"], results["evaluations"][0]["mIoU@1"], rtol=0, atol=1e-9)
