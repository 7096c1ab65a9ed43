"""Evaluations that survive: per-image records, SIGKILL half-way then TEST.RESUME equals an
uninterrupted run (1 and 2 processes), data checked before any model time, atomic writes.

The killed runs go through :func:`sam_d2.engine.resumable.run_evaluation` (what
``Trainer.test`` runs) in a subprocess, with a stand-in model that returns each image's blurred
mean annotator map as its edges and SIGKILLs its own process when asked to; the BSDS evaluator
(3 thresholds) scores them against the real ground truth of 4 BSDS500 test images.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, shared_path
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from scipy import ndimage as ndi

from sam_d2 import add_sam_config
from sam_d2.data.bsds500 import load_bsds_boundaries
from sam_d2.engine.resumable import check_test_datasets
from sam_d2.utils.atomic import atomic_open

IMAGE_IDS = ["108069", "43051", "100007", "141012"]
DATASET = "_resume_test_bsds"


class EdgesFromGroundTruth(torch.nn.Module):
    """Stand-in model: edges = blurred mean annotator map; SIGKILLs itself on call ``kill_at``."""

    def __init__(self, calls_file: str, kill_at: int = 0) -> None:
        super().__init__()
        self.calls_file, self.kill_at, self.calls = calls_file, kill_at, 0

    def forward(self, inputs):
        self.calls += 1
        if self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(self.calls_file, "a") as f:
            f.write("".join(f"{inp['image_id']}\n" for inp in inputs))
        outputs = []
        for inp in inputs:
            gts = load_bsds_boundaries(inp["edge_gt_file"])
            edges = ndi.gaussian_filter(np.mean(np.stack(gts), axis=0), 1.0)
            outputs.append({"edges": torch.from_numpy(edges / edges.max()).float()})
        return outputs


def _register(gt_dir: str) -> None:
    dicts = [
        {"image_id": i, "file_name": f"{gt_dir}/{i}.mat", "edge_gt_file": f"{gt_dir}/{i}.mat"}
        for i in IMAGE_IDS
    ]
    DatasetCatalog.pop(DATASET, None)
    MetadataCatalog.pop(DATASET, None)
    DatasetCatalog.register(DATASET, lambda: dicts)
    MetadataCatalog.get(DATASET).set(evaluator_type="bsds_edges")


def _evaluate(gt_dir: str, out_dir: str, resume: bool, kill_at: int) -> None:
    """One rank: run_evaluation over the test dataset; rank 0 writes results.json."""
    from detectron2.data import build_detection_test_loader
    from detectron2.utils import comm

    from sam_d2.engine.resumable import run_evaluation
    from sam_d2.evaluation.build import build_evaluator

    _register(gt_dir)
    cfg = get_cfg()
    add_sam_config(cfg)
    cfg.merge_from_list(
        ["DATASETS.TEST", f"('{DATASET}',)", "OUTPUT_DIR", out_dir, "TEST.RESUME", str(resume)]
    )
    cfg.merge_from_list(["TEST.EDGES.NUM_THRESHOLDS", "3", "DATALOADER.NUM_WORKERS", "0"])

    class Trainer:
        @staticmethod
        def build_test_loader(cfg, name):
            return build_detection_test_loader(DatasetCatalog.get(name), mapper=dict)

        @staticmethod
        def build_evaluator(cfg, name):
            return build_evaluator(cfg, name, os.path.join(out_dir, "inference", name))

    calls = os.path.join(out_dir, f"calls_rank{comm.get_rank()}.txt")
    model = EdgesFromGroundTruth(calls, kill_at if comm.get_rank() == 0 else 0)
    results = run_evaluation(Trainer, cfg, model)
    if comm.is_main_process():
        with atomic_open(os.path.join(out_dir, "results.json")) as f:
            json.dump(results, f)


def _worker(gt_dir: str, out_dir: str, world: int, resume: bool, kill_at: int) -> None:
    from detectron2.engine import launch

    launch(_evaluate, world, dist_url="auto", args=(gt_dir, out_dir, resume, kill_at))


def _run(
    out_dir: Path, world: int, resume: bool = False, kill_at: int = 0, check: bool = True
) -> subprocess.CompletedProcess:
    gt_dir = str(shared_path("bsds500", "groundTruth", "test"))
    code = (
        "import test_resumable_eval as t; "
        f"t._worker({gt_dir!r}, {str(out_dir)!r}, {world}, {resume}, {kill_at})"
    )
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT / 'tests'}:{REPO_ROOT}")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _model_calls(out_dir: Path) -> list:
    return sorted(line for p in out_dir.glob("calls_rank*.txt") for line in p.read_text().split())


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    """(output folder, results) of an uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("uninterrupted")
    _run(out, world=1)
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return uninterrupted_run[1]


@pytest.mark.parametrize("world", [1, 2])
def test_killed_then_resumed_equals_uninterrupted(tmp_path, uninterrupted, world):
    # Rank 0 is killed at its 2nd image: with 1 process after 1 image, with 2 processes (rank 0
    # holds images 1-2, rank 1 images 3-4) after rank 0's first and, maybe, some of rank 1's.
    killed = _run(tmp_path, world, kill_at=2, check=False)
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert not (tmp_path / "results.json").exists()
    records = list((tmp_path / "inference" / DATASET / "records").glob("rank*/*.pkl"))
    done_before = len(records)
    assert 1 <= done_before < len(IMAGE_IDS), killed.stderr[-3000:]
    for p in tmp_path.glob("calls_rank*.txt"):
        p.unlink()
    _run(tmp_path, world, resume=True)
    resumed = json.loads((tmp_path / "results.json").read_text())
    assert resumed == uninterrupted
    # The resumed run ran the model on the images without a record only.
    assert len(_model_calls(tmp_path)) == len(IMAGE_IDS) - done_before


def test_finished_run_resumes_without_model_and_other_config_is_refused(uninterrupted_run):
    out, uninterrupted = uninterrupted_run
    records = out / "inference" / DATASET / "records"
    assert len(list(records.glob("rank0/*.pkl"))) == len(IMAGE_IDS)
    (out / "calls_rank0.txt").unlink()
    _run(out, world=1, resume=True)  # everything done: no model call at all
    assert _model_calls(out) == []
    assert json.loads((out / "results.json").read_text()) == uninterrupted
    manifest = records / "manifest.json"
    manifest.write_text(json.dumps({"fingerprint": "another config"}))
    refused = _run(out, world=1, resume=True, check=False)
    assert refused.returncode != 0
    assert "holds records of another configuration" in refused.stderr
    _run(out, world=1)  # not resuming: the old records are cleared, not an error
    assert json.loads(manifest.read_text())["fingerprint"] != "another config"


# ----------------------------------------------------------------------------- early checks


@pytest.fixture
def temporary_datasets():
    names = []

    def register(name, items):
        DatasetCatalog.pop(name, None)
        DatasetCatalog.register(name, lambda: items)
        names.append(name)

    yield register
    for name in names:
        DatasetCatalog.pop(name, None)


def test_missing_or_empty_data_fails_before_any_model_time(tmp_path, temporary_datasets):
    present = tmp_path / "a.jpg"
    present.write_bytes(b"")
    temporary_datasets("_ok", [{"file_name": str(present), "image_id": 1}])
    temporary_datasets("_empty", [])
    temporary_datasets(
        "_partial",
        [{"file_name": str(present)}, {"file_name": str(tmp_path / "gone.jpg")}],
    )

    def missing_folder():
        raise FileNotFoundError("BSDS500 image folder /nowhere/images/test not found")

    DatasetCatalog.register("_no_folder", missing_folder)
    try:
        assert list(check_test_datasets(["_ok"])) == ["_ok"]
        with pytest.raises(ValueError, match="_empty has no images"):
            check_test_datasets(["_ok", "_empty"])
        with pytest.raises(FileNotFoundError, match=r"_partial: 1 files listed but missing.*gone"):
            check_test_datasets(["_partial"])
        with pytest.raises(FileNotFoundError, match=r"_no_folder: BSDS500 image folder /nowhere"):
            check_test_datasets(["_no_folder"])
        with pytest.raises(KeyError, match="'_nope' is not registered"):
            check_test_datasets(["_ok", "_nope"])
        with pytest.raises(ValueError, match="DATASETS.TEST is empty"):
            check_test_datasets([])
    finally:
        DatasetCatalog.pop("_no_folder", None)


def test_atomic_open_keeps_old_content_on_failure(tmp_path):
    path = tmp_path / "sub" / "results.json"
    with atomic_open(str(path)) as f:
        f.write("old")
    with pytest.raises(RuntimeError):
        with atomic_open(str(path)) as f:
            f.write("new, half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


# ----------------------------------------------------------------------------- through train_net


def test_train_net_resume_skips_recorded_images(tmp_path):
    """``tools/train_net.py --eval-only ... TEST.RESUME True`` after a run that lost one image's
    record: the model runs on that image only and the results are those of the full run."""
    from test_train_net_e2e import TINY_SAM

    bsds = shared_path("bsds500")
    root = tmp_path / "datasets" / "bsds500"
    for sub, ext in (("images", "jpg"), ("groundTruth", "mat")):
        (root / sub / "test").mkdir(parents=True)
        for stem in ("108069", "43051"):
            os.symlink(bsds / sub / "test" / f"{stem}.{ext}", root / sub / "test" / f"{stem}.{ext}")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tools" / "train_net.py"),
        "--config-file",
        str(REPO_ROOT / "configs" / "sam_bsds500_edges.yaml"),
        "--eval-only",
        *TINY_SAM,
        "SAM_AUTO.POINTS_PER_SIDE",
        "4",
        "TEST.EDGES.NUM_THRESHOLDS",
        "5",
        "OUTPUT_DIR",
        str(out),
        "SEED",
        "0",  # the random tiny SAM must be the same network in both runs
    ]
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))

    def train_net(*opts):
        proc = subprocess.run(
            cmd + list(opts), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return json.loads((out / "results.json").read_text())

    full = train_net()
    records = sorted((out / "inference" / "bsds500_test" / "records").glob("rank0/*.pkl"))
    assert [p.name.split("-")[0] for p in records] == ["108069", "43051"]
    records[1].unlink()  # as if killed before the second image's record was written
    kept = records[0].stat().st_mtime_ns
    resumed = train_net("TEST.RESUME", "True")
    # Exactly equal (R50 is NaN, undefined, for a random tiny SAM that never reaches P = 0.5).
    assert resumed["edges"] == pytest.approx(full["edges"], rel=0, abs=0, nan_ok=True)
    # The first image was not evaluated again (its record untouched), the second one was.
    assert records[0].stat().st_mtime_ns == kept and records[1].is_file()
