"""tools/benchmark.py without running a model: argument checks, the text report and the README
table built from ``--json`` rows (the timing itself is exercised by running the tool)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(impl, phase, value, unit, batch=1, peak=1.0):
    return dict(
        variant="vit_b", device="CPU x2", dtype="bf16", compile=False, prompts=64, torch="x",
        threads=2, impl=impl, phase=phase, unit=unit, value=value, seconds=[1.0],
        first_call_s=2.0, peak_memory_gib=peak, batch_size=batch,
    )  # fmt: skip


ROWS = [
    _row("sam_d2", "encoder", 0.2, "img/s", peak=2.0),
    _row("official", "encoder", 0.1, "img/s", peak=4.0),
    _row("sam_d2", "amg", 30.0, "s/image"),
    _row("official", "amg", 90.0, "s/image"),
    {
        **{k: v for k, v in _row("sam_fast", "amg", 0, "s/image").items() if k != "value"},
        "error": "ImportError: no module",
    },
]


def test_report_ratios(bench):
    text = bench.report(ROWS)
    assert "speed-up sam_d2 vs official encoder b1    2.00x" in text
    assert "speed-up sam_d2 vs official amg           3.00x" in text  # s/image: official / ours
    assert "sam_fast amg          error: ImportError: no module" in text


def test_markdown_table_rows(bench):
    table = bench.markdown_table(ROWS).splitlines()
    assert table[0].startswith("| variant | device | precision | phase | sam_d2 | official")
    assert "| vit_b | CPU x2 | bf16 | encoder (batch 1) | 0.2 img/s | 0.1 img/s | — | 2.00× " in (
        table[2]
    )
    assert "| amg | 30 s/image | 90 s/image | error: ImportError | 3.00× |" in table[3]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dtype", "fp16", "--device", "cpu"], "fp16 autocast is not supported on CPU"),
        (["--batch-size", "0", "--device", "cpu"], "--batch-size must be >= 1"),
        (["--iters", "0", "--device", "cpu"], "--iters must be >= 1"),
        (["--amg-iters", "-1", "--device", "cpu"], "--amg-iters must be >= 0"),
        (["--amg", "--image", "no_such.jpg", "--device", "cpu"], "image not found: no_such.jpg"),
    ],
)
def test_bad_arguments(bench, argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        bench.parse_args(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def _fingerprint(bench, pixels):
    """Fingerprint of an 8x8 mask with the given flat pixel indices set."""
    mask = np.zeros(64, bool)
    mask[pixels] = True
    return bench._fingerprints([{"area": len(pixels), "segmentation": mask.reshape(8, 8)}])[0]


def test_mask_parity(bench):
    a, b, c = (_fingerprint(bench, p) for p in ([1, 2], [3, 4, 5, 6], [3, 4, 5]))
    assert bench.mask_parity([a, b], [a, b]) == dict(
        ours=2, official=2, matched=2, identical=True, min_iou=1.0
    )
    swapped = bench.mask_parity([b, a], [a, b])
    assert swapped["identical"] is False and swapped["min_iou"] == 0.0
    # one pixel off: not equal, IoU 3/4
    assert bench.mask_parity([a, c], [a, b]) == dict(
        ours=2, official=2, matched=1, identical=False, min_iou=0.75
    )
    assert bench.mask_parity([a, c], [a, b, b])["min_iou"] is None  # counts differ
    first = {"sam_d2": {"masks": [a, b]}, "official": {"masks": [a, b]}}
    times = {"sam_d2": [{"masks": [a, c]}], "official": [{"masks": [a, b]}]}
    assert bench._parity(first, times)["matched"] == 1  # the worst call decides


def test_fingerprints_of_rle_and_binary_masks_agree(bench):
    from pycocotools import mask as mask_utils

    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:6] = True
    binary = bench._fingerprints([{"area": 8, "segmentation": mask}])
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    uncompressed = {"size": [5, 7], "counts": _uncompressed_counts(mask)}
    assert binary == bench._fingerprints([{"area": 8, "segmentation": uncompressed}])
    assert binary[0] == [8, 5, 7, rle["counts"].decode("ascii")]


def _uncompressed_counts(mask):
    """Column-major run lengths starting with a run of zeros (COCO's uncompressed RLE)."""
    flat = mask.flatten(order="F").astype(int)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def test_mask_parity_in_table(bench):
    ours = dict(
        ROWS[2], mask_parity=dict(ours=62, official=62, matched=62, identical=True, min_iou=1.0)
    )
    table = bench.markdown_table([ours, ROWS[3]]).splitlines()
    assert "| amg, masks identical to official (62) | 30 s/image | 90 s/image |" in table[2]
    assert "masks: identical to official (62)" in bench.report([ours, ROWS[3]])


def test_first_call_alone_is_the_measurement(bench):
    first = {"seconds": 120.0, "count": 40}
    row = bench._row("official", "proposals", first, [], {"peak_memory_gib": 3.0}, {}, 1.0)
    assert row["value"] == 120.0 and row["masks"] == 40 and row["seconds"] == [120.0]


def test_help_shows_no_default_for_flags(bench, capsys):
    """``--no-accuracy`` (store_false, default True) must not read '(default: True)'."""
    with pytest.raises(SystemExit):
        bench.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-accuracy skip the reduced-precision accuracy check" in text
    assert "(default: True)" not in text and "(default: 1)" in text  # --amg-iters still shows
