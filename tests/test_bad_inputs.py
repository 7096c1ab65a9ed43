"""Issue 10 ("a new user's first hour"): each bad input gets one clear line, never a silent wrong
answer or a bare traceback. One test per line of the issue owned here; the README snippets and the
notebooks' code paths are tested in test_readme.py and test_notebook_paths.py.

``tools/train_net.py`` runs once in a subprocess (exit status and stderr as the shell sees them);
its other cases call the same entry point, ``cli(argv)``, in-process to keep the file fast.
"""

import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, tiny_sam
from detectron2.data import DatasetCatalog, MetadataCatalog

from sam_d2 import PromptError, SamPredictor

TRAIN_NET = REPO_ROOT / "tools" / "train_net.py"
CONFIG = str(REPO_ROOT / "configs" / "sam_vit_b.yaml")
#: Overrides that make configs/sam_vit_b.yaml a tiny random SAM on the CPU.
TINY_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.SAM.VARIANT", "custom",
    "MODEL.SAM.IMAGE_SIZE", "256",
    "MODEL.SAM.ENCODER.EMBED_DIM", "32",
    "MODEL.SAM.ENCODER.DEPTH", "2",
    "MODEL.SAM.ENCODER.NUM_HEADS", "2",
    "MODEL.SAM.ENCODER.GLOBAL_ATTN_INDEXES", "(1,)",
    "MODEL.SAM.ENCODER.WINDOW_SIZE", "8",
]  # fmt: skip


# ---------------------------------------------------------------- the predictor (drop-in)
@pytest.fixture(scope="module")
def predictor():
    """A predictor holding the issue's (5000, 5000) image."""
    p = SamPredictor(tiny_sam())
    p.set_image(np.zeros((5000, 5000, 3), np.uint8))
    return p


@pytest.fixture(scope="module")
def small_predictor():
    p = SamPredictor(tiny_sam())
    p.set_image(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    return p


def test_predict_without_prompt_returns_masks_as_official(small_predictor):
    masks, iou, low_res = small_predictor.predict()
    assert masks.shape == (3, 200, 300) and iou.shape == (3,) and low_res.shape == (3, 64, 64)


def test_empty_prompt_arrays_count_as_no_prompt(small_predictor):
    _, _, none = small_predictor.predict()
    _, _, empty = small_predictor.predict(
        point_coords=np.zeros((0, 2)), point_labels=np.zeros(0), box=np.zeros(0)
    )
    np.testing.assert_array_equal(empty, none)
    box = np.array([10, 20, 150, 180])
    _, _, box_only = small_predictor.predict(box=box)
    _, _, box_and_empty = small_predictor.predict(
        point_coords=np.zeros((0, 2)), point_labels=np.zeros(0), box=box
    )
    np.testing.assert_array_equal(box_and_empty, box_only)
    assert not np.array_equal(box_only, none)


@pytest.mark.parametrize(
    "prompt, message",
    [
        (
            dict(point_coords=np.array([[6400.0, 6404.5]]), point_labels=np.array([1])),
            r"^point 0 \(6400\.0, 6404\.5\) lies outside the image of width 5000, height 5000$",
        ),
        (
            dict(point_coords=np.array([[10, 10], [-3, 7]]), point_labels=np.array([1, 0])),
            r"^point 1 \(-3\.0, 7\.0\) lies outside the image of width 5000, height 5000$",
        ),
        (
            dict(box=np.array([10, 20, 5000.5, 30])),
            r"^box 0 \(10\.0, 20\.0, 5000\.5, 30\.0\) lies outside the image of width 5000",
        ),
        (
            dict(box=np.array([300, 20, 100, 30])),
            r"^box 0 \(300\.0, 20\.0, 100\.0, 30\.0\) is not XYXY",
        ),
    ],
)
def test_prompt_errors_quote_the_users_coordinates(predictor, prompt, message):
    with pytest.raises(PromptError, match=message):
        predictor.predict(**prompt)


def test_predict_torch_errors_name_the_input_frame(predictor):
    import torch

    with pytest.raises(PromptError, match=r"lies outside the resized input image of width 256"):
        predictor.predict_torch(torch.tensor([[[300.0, 10.0]]]), torch.tensor([[1]]))


def test_point_label_one_half_is_rejected(predictor):
    with pytest.raises(PromptError, match=r"point_labels must be 1 .* found \[0\.5\]"):
        predictor.predict(point_coords=np.array([[10, 10]]), point_labels=np.array([0.5]))


@pytest.mark.parametrize(
    "hw, input_hw", [((1, 700), (1, 256)), ((700, 1), (256, 1)), ((1, 1), (256, 256))]
)
def test_one_pixel_wide_images_work(small_predictor, hw, input_hw):
    p = SamPredictor(small_predictor.model)
    p.set_image(np.full(hw + (3,), 128, np.uint8))
    assert p.input_size == input_hw  # the official transform gives a 0-pixel side and fails
    masks, _, _ = p.predict(point_coords=np.array([[0.5, 0.5]]), point_labels=np.array([1]))
    assert masks.shape == (3,) + hw


# ---------------------------------------------------------------- tools/train_net.py
@pytest.fixture(scope="module")
def train_net():
    """tools/train_net.py as a module (its ``cli(argv)`` returns the exit status)."""
    spec = importlib.util.spec_from_file_location("train_net_tool", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def test_datasets(tmp_path_factory):
    """Registers 'e10_files_missing' (its json_file is absent) and 'e10_present' (files exist)."""
    present = tmp_path_factory.mktemp("e10_present")
    names = {"e10_files_missing": dict(json_file="/nowhere/instances.json"), "e10_present": {}}
    for name, paths in names.items():
        DatasetCatalog.register(name, list)
        MetadataCatalog.get(name).set(image_root=str(present), **paths)
    yield
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _error_line(capsys) -> str:
    """The one line train_net printed to stderr (torch's own warnings may precede it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("train_net.py:")]
    assert len(lines) == 1, f"expected one error line, got {err}"
    return lines[0]


def test_train_net_missing_config_file_in_a_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(TRAIN_NET), "--config-file", "configs/nope.yaml", "--eval-only"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == ["train_net.py: error: config file not found: configs/nope.yaml"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], r"--config-file is required"),
        (["--config-file", CONFIG, "MODEL.NOPE", "1"], r"command-line options: .*MODEL\.NOPE"),
        (
            ["--config-file", CONFIG, "SOLVER.MAX_ITER", "abc"],
            r"command-line options: Type mismatch .* SOLVER\.MAX_ITER",
        ),
        (
            ["--config-file", CONFIG, "--eval-only", "DATASETS.TEST", '("coco_2017_vall",)'],
            r"unknown dataset 'coco_2017_vall' in DATASETS\.TEST; did you mean coco_2017_val",
        ),
        (
            ["--config-file", CONFIG, "--eval-only", "DATASETS.TEST", '("e10_files_missing",)'],
            r"dataset 'e10_files_missing': json_file /nowhere/instances\.json does not exist",
        ),
        (
            ["--config-file", CONFIG, "--eval-only", "DATASETS.TEST", '("e10_present",)']
            + ["MODEL.WEIGHTS", "/nowhere/sam_vit_b_01ec64.pth"],
            r"MODEL\.WEIGHTS: weights file not found: /nowhere/sam_vit_b_01ec64\.pth",
        ),
        (["--config-file", CONFIG, "DATASETS.TRAIN", "()"], r"DATASETS\.TRAIN is empty"),
        (["--config-file", CONFIG, "--eval-only"], r"DATASETS\.TEST is empty"),
    ],
    ids=[
        "no_config",
        "unknown_key",
        "type_mismatch",
        "unknown_dataset",
        "dataset_files_missing",
        "missing_weights",
        "no_train_dataset",
        "no_test_dataset",
    ],
)
def test_train_net_config_problems_are_one_line(train_net, test_datasets, capsys, argv, message):
    assert train_net.cli(argv + ["MODEL.DEVICE", "cpu"] * ("--config-file" in argv)) == 2
    line = _error_line(capsys)
    assert line.startswith("train_net.py: error: ")
    assert re.search(message, line), line


def test_train_net_failure_during_the_run_is_one_line_with_the_log(train_net, capsys, tmp_path):
    def broken():
        raise FileNotFoundError("e10_broken.json: no such file")

    DatasetCatalog.register("e10_broken", broken)
    try:
        argv = ["--config-file", CONFIG, "--eval-only", "DATASETS.TEST", '("e10_broken",)']
        status = train_net.cli(argv + TINY_OPTS + ["OUTPUT_DIR", str(tmp_path)])
    finally:
        DatasetCatalog.remove("e10_broken")
    assert status == 1
    line = _error_line(capsys)
    log = tmp_path / "log.txt"
    assert line.startswith("train_net.py: error: FileNotFoundError: ")
    assert line.endswith(f"e10_broken.json: no such file (full traceback in {log})")
    assert "Traceback (most recent call last)" in log.read_text()


def test_train_net_help_shows_defaults_and_the_python_form(train_net, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_net.parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python tools/train_net.py")
    assert "number of gpus *per machine* (default: 1)" in " ".join(out.split())
    assert "--debug" in out and "python tools/train_net.py --config-file" in out
