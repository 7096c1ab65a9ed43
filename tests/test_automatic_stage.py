"""``tools/automatic_masks.py`` at scale: sharding over launch, resume after SIGKILL, SA-1B JSON,
one-line errors. Real BSDS500 images (downscaled copies), a tiny random SAM, CPU, gloo."""

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, shared_path, tiny_sam
from PIL import Image
from pycocotools import mask as mask_utils

from sam_d2.engine.automatic_stage import StageError, collect_images

TOOL = REPO_ROOT / "tools" / "automatic_masks.py"
SA1B_IMAGE_KEYS = {"image_id", "width", "height", "file_name"}
SA1B_ANNOTATION_KEYS = {
    "id",
    "segmentation",
    "bbox",
    "area",
    "predicted_iou",
    "stability_score",
    "crop_box",
    "point_coords",
}
# The tiny SAM of conftest.TINY_SAM as a config on top of the paper's SA-1B setting.
TINY_CONFIG = f"""_BASE_: "{REPO_ROOT / "configs" / "sa1b_auto.yaml"}"
MODEL:
  SAM:
    VARIANT: "custom"
    IMAGE_SIZE: 256
    MASK_IN_CHANS: 4
    ENCODER: {{EMBED_DIM: 64, DEPTH: 2, NUM_HEADS: 2, GLOBAL_ATTN_INDEXES: [1], WINDOW_SIZE: 8,
               OUT_CHANS: 32}}
    DECODER: {{MLP_DIM: 64, NUM_HEADS: 2, IOU_HEAD_HIDDEN_DIM: 32}}
"""
# Random weights pass no quality filter: keep every mask of a 4 x 4 grid (48 per image), fast.
LOOSE = [
    "--points-per-side", "4", "--crop-n-layers", "0", "--pred-iou-thresh", "0",
    "--stability-score-thresh", "0", "--box-nms-thresh", "1", "--log-period", "0.01", "--overlay",
]  # fmt: skip


def _load_tool():
    spec = importlib.util.spec_from_file_location("automatic_masks_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Dict[str, Path]:
    """6 real BSDS500 test images at 1/4 size (2 in a sub-folder), a tiny config and weights."""
    source = shared_path("bsds500", "images", "test")
    root = tmp_path_factory.mktemp("stage")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    for k, path in enumerate(sorted(source.glob("*.jpg"))[:6]):
        image = Image.open(path).convert("RGB")
        image = image.resize((image.width // 4, image.height // 4), Image.BILINEAR)
        image.save(images / ("sub" if k >= 4 else "") / path.name, quality=95)
    config = root / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    weights = root / "tiny.pth"
    torch.save(tiny_sam(0).state_dict(), weights)
    corrupt = root / "corrupt.pth"
    corrupt.write_bytes(np.random.default_rng(0).bytes(1000))
    return dict(root=root, images=images, config=config, weights=weights, corrupt=corrupt)


def _base(setup: Dict[str, Path]) -> List[str]:
    return [
        str(setup["images"]), "--recursive", "--device", "cpu",
        "--config-file", str(setup["config"]), "--checkpoint", str(setup["weights"]),
    ]  # fmt: skip


def _run(argv: List[str], capfd) -> Tuple[int, str]:
    """Run the tool in this process; (exit status, stderr)."""
    capfd.readouterr()
    status = tool.main(argv)
    return status, capfd.readouterr().err


def _files(folder: Path) -> Dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory) -> Dict[str, bytes]:
    """The files of a 1-process run."""
    out = tmp_path_factory.mktemp("one_process")
    assert tool.main(_base(setup) + LOOSE + ["--output", str(out)]) == 0
    return _files(out)


def test_two_processes_write_the_files_of_one(setup, reference, tmp_path, capfd):
    status, err = _run(_base(setup) + LOOSE + ["--output", str(tmp_path), "--num-gpus", "2"], capfd)
    assert status == 0, err
    assert _files(tmp_path) == reference
    json_names = sorted(n for n in reference if n.endswith(".json"))
    expected = ["100007", "100039", "100099", "10081", "sub/101027", "sub/101084"]
    assert json_names == [n + ".json" for n in expected]
    overlays = {f"overlays/{n}.png" for n in expected}
    assert set(reference) == set(json_names) | overlays | {".automatic_masks/manifest"}
    # Progress with ETA per rank and in total, then the summary.
    assert "rank 0/2: 3/3 images (100%)" in err and "rank 1/2: 3/3 images (100%)" in err
    together = [line for line in err.splitlines() if "all 2 processes together: " in line]
    assert together and all(" images (" in line and " ETA " in line for line in together)
    assert "summary: 6 images segmented (0 already done before, 0 failed), 288 masks, " in err
    assert "48.0 masks/image" in err and "s/image per process" in err


def test_sa1b_json_layout(setup, reference):
    ids = []
    for name in sorted(n for n in reference if n.endswith(".json")):
        doc = json.loads(reference[name])
        image, annotations = doc["image"], doc["annotations"]
        assert set(doc) == {"image", "annotations"} and set(image) == SA1B_IMAGE_KEYS
        assert image["file_name"] == name[: -len(".json")] + ".jpg"
        on_disk = Image.open(setup["images"] / image["file_name"])
        assert (image["width"], image["height"]) == on_disk.size
        overlay = Image.open(io.BytesIO(reference["overlays/" + name[: -len("json")] + "png"]))
        assert overlay.size == on_disk.size and overlay.mode == "RGB"
        ids.append(image["image_id"])
        assert [a["id"] for a in annotations] == list(range(48))
        for ann in annotations:
            assert set(ann) == SA1B_ANNOTATION_KEYS
            assert isinstance(ann["segmentation"]["counts"], str)
            assert ann["segmentation"]["size"] == [image["height"], image["width"]]
            mask = mask_utils.decode(ann["segmentation"])
            assert mask.sum() == ann["area"] > 0
            ys, xs = np.nonzero(mask)
            x, y = xs.min(), ys.min()
            assert ann["bbox"] == [x, y, xs.max() - x, ys.max() - y]
            assert ann["crop_box"] == [0, 0, image["width"], image["height"]]
            assert len(ann["point_coords"]) == 1 and len(ann["point_coords"][0]) == 2
    assert ids == [1, 2, 3, 4, 5, 6]


def test_sa1b_reader_reads_the_output(setup, reference, tmp_path):
    sa1b = pytest.importorskip("sam_d2.data.sa1b", reason="no SA-1B reader in this checkout")
    for name, data in reference.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    dicts = sa1b.load_sa1b_dicts(str(tmp_path), str(setup["images"]))
    images = sorted(setup["images"].rglob("*.jpg"))
    assert sorted(Path(d["file_name"]) for d in dicts) == images
    for d in dicts:
        loaded = sa1b.read_sa1b_json(d["sa1b_json"])
        doc = json.loads(Path(d["sa1b_json"]).read_text())
        assert Path(d["file_name"]) == setup["images"] / doc["image"]["file_name"]
        assert (loaded["height"], loaded["width"]) == (
            doc["image"]["height"],
            doc["image"]["width"],
        )
        assert len(loaded["annotations"]) == len(doc["annotations"]) == 48
        for got, want in zip(loaded["annotations"], doc["annotations"]):
            assert got["id"] == want["id"] and got["bbox"] == want["bbox"]
            assert got["predicted_iou"] == want["predicted_iou"]
            got_mask, want_mask = (mask_utils.decode(a["segmentation"]) for a in (got, want))
            np.testing.assert_array_equal(got_mask, want_mask)


def _stat(pid: int) -> List[str]:
    """Fields of /proc/<pid>/stat after the command name (state, parent id, ...); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _running(pid: int) -> bool:
    return _stat(pid)[:1] not in ([], ["Z"])


def _children(pid: int) -> List[int]:
    """Process ids whose parent is ``pid``."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [p for p in pids if _stat(p)[1:2] == [str(pid)]]


def test_killed_run_resumes_to_the_same_files(setup, reference, tmp_path, capfd):
    cmd = [sys.executable, str(TOOL)] + _base(setup) + LOOSE + ["--output", str(tmp_path)]
    proc = subprocess.Popen(
        cmd + ["--num-gpus", "2"],
        cwd=REPO_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.rglob("*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the launcher only: its processes must end with it
    proc.wait()
    deadline = time.monotonic() + 60
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [pid for pid in workers if _running(pid)]
    os.killpg(proc.pid, signal.SIGKILL)  # clean up whatever is left before asserting
    assert len(workers) >= 2 and not alive, f"orphaned workers {alive} of {workers}"
    written = list(tmp_path.rglob("*.json"))
    assert 1 <= len(written) < 6, f"killed after {len(written)} of 6 images"
    for path in written:  # a killed job leaves whole files only
        json.loads(path.read_text())
    (tmp_path / ".100007.json.tmp-999").write_text('{"image": ')  # a temporary a kill left
    status, err = _run(_base(setup) + LOOSE + ["--output", str(tmp_path)], capfd)
    assert status == 0, err
    assert f"6 images, {len(written)} already done, {6 - len(written)} to segment" in err
    assert _files(tmp_path) == reference


def test_other_settings_are_refused(setup, reference, tmp_path, capfd):
    (tmp_path / ".automatic_masks").mkdir()
    (tmp_path / ".automatic_masks" / "manifest").write_bytes(reference[".automatic_masks/manifest"])
    argv = _base(setup) + LOOSE + ["--points-per-side", "2", "--output", str(tmp_path)]
    status, err = _run(argv, capfd)
    assert status == 2
    assert err.strip().splitlines() == [
        f"automatic_masks.py: error: {tmp_path}: holds the results of a run with other generator "
        "settings; use another --output (or remove that folder to start over)"
    ]


def test_zero_masks_and_unreadable_images_say_so(setup, tmp_path, capfd):
    src = tmp_path / "in"
    src.mkdir()
    photo = Image.open(setup["images"] / "10081.jpg")
    photo.convert("L").save(src / "gray.png")  # converted to RGB on reading
    photo.convert("RGBA").save(src / "rgba.png")
    (src / "broken.jpg").write_bytes(b"not a JPEG")
    argv = [str(src), "--config-file", str(setup["config"]), "--device", "cpu"]
    argv += ["--points-per-side", "4", "--crop-n-layers", "0", "--output", str(tmp_path / "out")]
    status, err = _run(argv + ["--checkpoint", str(setup["weights"])], capfd)
    assert status == 1, err
    broken = src / "broken.jpg"
    assert f"ERROR: skipped {broken}: " in err
    assert f"1 image(s) could not be read or segmented (a rerun retries them): {broken}" in err
    # The paper's filters reject every mask of a random SAM.
    assert "WARNING: all 2 images ended with zero masks: the filters may be too strict for " in err
    assert "(--pred-iou-thresh 0.88, --stability-score-thresh 0.95, " in err
    for name in ("gray", "rgba"):
        doc = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert doc["annotations"] == [] and doc["image"]["file_name"] == f"{name}.png"
        assert (doc["image"]["width"], doc["image"]["height"]) == photo.size
    assert not (tmp_path / "out" / "broken.json").exists()


BAD_INPUTS = [
    (["--checkpoint", "{root}/missing.pth"], "{root}/missing.pth: checkpoint file not found"),
    (["--checkpoint", "{corrupt}"], "{corrupt}: not a readable checkpoint"),
    (["--variant", "vit_x"], "argument --variant: invalid choice: 'vit_x'"),
    (["--points-per-side", "0"], "SAM_AUTO.POINTS_PER_SIDE (--points-per-side) must be an integer"),
    (["--output", "{config}"], "--output {config} is a file; give a folder"),
    (["--device", "cuda"], "--device cuda: no CUDA device is available here; use --device cpu"),
    (["--opts", "SAM_AUTO.NO_SUCH_KEY", "1"], "--opts: Non-existent key: SAM_AUTO.NO_SUCH_KEY"),
    (["--num-machines", "2"], "--dist-url auto works on one machine"),
]  # fmt: skip


@pytest.mark.parametrize("extra, message", BAD_INPUTS, ids=[" ".join(b[0]) for b in BAD_INPUTS])
def test_bad_input_is_one_line(setup, tmp_path, capfd, extra, message):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    fill = {k: str(v) for k, v in setup.items()}
    extra = [e.format(**fill) for e in extra]
    argv = [str(setup["images"]), "--config-file", str(setup["config"])]
    argv += ["--checkpoint", str(setup["weights"]), "--output", str(tmp_path / "out")] + extra
    try:
        status, err = _run(argv, capfd)
    except SystemExit as e:  # argparse's own errors
        status, err = e.code, capfd.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith("automatic_masks.py: error: ") and message.format(**fill) in lines[0]
    # Nothing was written: the failed run does not pin settings on the output folder.
    assert not (tmp_path / "out" / ".automatic_masks").exists()


def test_wrong_variant_checkpoint_is_one_line(setup, tmp_path, capfd):
    argv = [str(setup["images"]), "--variant", "vit_b", "--checkpoint", str(setup["weights"])]
    status, err = _run(argv + ["--device", "cpu", "--output", str(tmp_path)], capfd)
    assert status == 2
    assert err.strip().splitlines() == [
        f"automatic_masks.py: error: {setup['weights']}: 173 tensors do not fit the model, e.g. "
        "image_encoder.pos_embed: checkpoint (1, 16, 16, 64) vs model (1, 64, 64, 768); the "
        "checkpoint is width 64 but the model is vit_b"
    ]


def _documented_form(args: List[str]) -> subprocess.CompletedProcess:
    """``python tools/automatic_masks.py ARGS`` as README shows it."""
    cmd = [sys.executable, "tools/automatic_masks.py"] + args
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_documented_form_help_shows_defaults():
    proc = _documented_form(["--help"])
    assert proc.returncode == 0 and proc.stderr == ""
    text = " ".join(proc.stdout.split())
    for default in (
        "else vit_h)",
        "processes per machine (default: 1)",
        "(default: auto, a free local port; one machine only)",
        "grid points per image side on the whole image (default: 32)",
        "(default: 0.88)",
        "default: cuda if available, else cpu",
    ):
        assert default in text


def test_documented_form_failing_processes_give_one_line(setup, tmp_path):
    args = [str(setup["images"]), "--config-file", str(setup["config"]), "--device", "cpu"]
    args += ["--checkpoint", str(setup["corrupt"]), "--num-gpus", "2", "--output", str(tmp_path)]
    proc = _documented_form(args)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(
        f"automatic_masks.py: error: {setup['corrupt']}: not a readable checkpoint"
    )


def test_image_list_names_and_ids(tmp_path):
    for rel in (
        "a/x.jpg",
        "a/x.png",
        "a/deep/y.jpg",
        "b/x.jpg",
        "b/x.png",
        "b/notes.txt",
        "d/x.jpg",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    a, b = tmp_path / "a", tmp_path / "b"
    inputs = [str(a), str(b / "x.jpg"), str(tmp_path / "[ab]" / "x.*"), str(tmp_path / "d/x.jpg")]
    items = collect_images(inputs, recursive=True)
    assert [(i.file_name, i.output_name, i.image_id) for i in items] == [
        ("deep/y.jpg", "deep/y", 1),
        ("x.jpg", "x", 2),
        ("x.png", "x.png", 3),
        ("x.jpg", "x.jpg", 4),  # b/x.jpg
        ("b/x.png", "b/x", 5),  # from the glob, relative to its base; a/x.* and b/x.jpg are known
        ("x.jpg", "x_1", 6),  # d/x.jpg
    ]
    assert [i.file_name for i in collect_images([str(a)])] == ["x.jpg", "x.png"]
    kept = collect_images([str(a)], recursive=True, exclude=[str(a / "deep")])
    assert [i.file_name for i in kept] == ["x.jpg", "x.png"]
    (tmp_path / "c").mkdir()
    with pytest.raises(StageError, match="folder .*c holds no images"):
        collect_images([str(tmp_path / "c")])
    with pytest.raises(StageError, match="no images in"):
        collect_images([str(a / "deep")], exclude=[str(a / "deep")])
    with pytest.raises(StageError, match=r"notes.txt: not an image file"):
        collect_images([str(b / "notes.txt")])
    with pytest.raises(StageError, match=r"the pattern matches no image"):
        collect_images([str(tmp_path / "*.gif")])
