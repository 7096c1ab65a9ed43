"""LVIS box / mask AP through faster-coco-eval's LVIS mode, checked equal to the official lvis-api.

Real data: the LVIS v0.5 val annotations of 100 images in ../shared/data/lvis (977 polygon
instances, 1230 categories with frequencies, per-image negative and not-exhaustive categories).
Detections are the ground truth perturbed (jittered boxes, shifted masks, random scores, missed
objects), plus false positives in present, negative, not-exhaustive and unverified categories, and
one image with more than 300 detections so that LVIS's per-image cap matters.
"""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from conftest import shared_path
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from faster_coco_eval import COCO as FasterCOCO

from sam_d2.evaluation.lvis import LVISAPEvaluator, evaluate_lvis, limit_dets_per_image

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


@pytest.fixture(scope="module")
def lvis_json():
    return str(shared_path("lvis", "lvis_v0.5_val_100.json"))


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _box_result(image_id, category_id, box, score, height, width, rng, with_mask):
    x, y, w, h = box
    result = {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [x, y, w, h],
        "score": score,
    }
    if with_mask:
        mask = np.zeros((height, width), np.uint8)
        x0, y0 = int(max(0, x)), int(max(0, y))
        mask[y0 : int(min(height, y + h)), x0 : int(min(width, x + w))] = 1
        result["segmentation"] = _rle(mask)
    return result


def perturbed_detections(gt: dict, seed: int = 0) -> list:
    """Detections derived from the ground truth (see module docstring)."""
    rng = np.random.default_rng(seed)
    images = {im["id"]: im for im in gt["images"]}
    all_cats = [c["id"] for c in gt["categories"]]
    results = []
    for ann in gt["annotations"]:
        if rng.random() < 0.15:
            continue  # missed
        im = images[ann["image_id"]]
        h, w = im["height"], im["width"]
        rles = mask_util.frPyObjects(ann["segmentation"], h, w)
        mask = mask_util.decode(mask_util.merge(rles))
        shift = rng.integers(-3, 4, size=2)
        mask = np.roll(mask, tuple(shift), axis=(0, 1))
        x, y, bw, bh = ann["bbox"]
        box = [x + rng.normal(0, 2), y + rng.normal(0, 2), bw * rng.uniform(0.9, 1.1), bh]
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": [float(v) for v in box],
                "score": float(rng.random()),
                "segmentation": _rle(mask),
            }
        )
    for im in gt["images"]:
        h, w = im["height"], im["width"]
        present = sorted({a["category_id"] for a in gt["annotations"] if a["image_id"] == im["id"]})
        pools = [present, im["neg_category_ids"], im["not_exhaustive_category_ids"], all_cats]
        for pool in pools:
            for category_id in (
                rng.choice(pool, size=min(len(pool), 3), replace=False) if pool else []
            ):
                box = [rng.uniform(0, w / 2), rng.uniform(0, h / 2), w / 4, h / 4]
                results.append(
                    _box_result(
                        im["id"], int(category_id), box, float(rng.random()), h, w, rng, True
                    )
                )
    # One crowded image: 350 low-score duplicates of present objects (the per-image cap drops 50+).
    crowded = gt["images"][0]
    anns = [a for a in gt["annotations"] if a["image_id"] == crowded["id"]]
    for k in range(350):
        a = anns[k % len(anns)]
        results.append(
            _box_result(
                crowded["id"],
                a["category_id"],
                a["bbox"],
                0.3 * rng.random(),
                crowded["height"],
                crowded["width"],
                rng,
                True,
            )
        )
    return results


def _lvis_api(json_file: str, results: list, iou_type: str) -> dict:
    """The official evaluation (lvis-api), as Detectron2's LVISEvaluator runs it."""
    import copy

    lvis = pytest.importorskip("lvis")
    if not hasattr(np, "float"):  # lvis 0.5.3 uses np.float, removed in numpy 1.24
        np.float = float
    results = copy.deepcopy(results)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox", None)
    gt = lvis.LVIS(json_file)
    lvis_eval = lvis.LVISEval(gt, lvis.LVISResults(gt, results, max_dets=300), iou_type)
    lvis_eval.run()
    return {k: float(v * 100) for k, v in lvis_eval.get_results().items() if k in METRICS}


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equal_to_lvis_api_on_real_lvis_sample(lvis_json, iou_type):
    with open(lvis_json) as f:
        gt = json.load(f)
    results = perturbed_detections(gt)
    ours = evaluate_lvis(FasterCOCO(lvis_json), results, iou_type)
    reference = _lvis_api(lvis_json, results, iou_type)
    assert set(ours) == set(METRICS)
    for name in METRICS:
        assert ours[name] == pytest.approx(reference[name], abs=1e-6), name
    # Non-trivial numbers: the perturbation costs AP, every frequency group is populated.
    assert 10 < ours["AP"] < 90 and all(0 < ours[k] < 100 for k in ("APr", "APc", "APf"))


def test_per_image_cap_keeps_highest_scores_in_order():
    results = [{"image_id": 1, "score": s, "n": i} for i, s in enumerate([0.1, 0.9, 0.5, 0.9])]
    results.append({"image_id": 2, "score": 0.2, "n": 4})
    kept = limit_dets_per_image(results, 2)
    assert [r["n"] for r in kept] == [1, 3, 4]


def test_bad_input_is_rejected(lvis_json):
    gt = FasterCOCO(lvis_json)
    with pytest.raises(ValueError, match="'bbox' and 'segm'"):
        evaluate_lvis(gt, [], "keypoints")
    assert np.isnan(evaluate_lvis(gt, [], "bbox")["AP"])


@pytest.fixture
def lvis_sample_dataset(lvis_json):
    name = "_test_lvis_v0.5_sample"
    MetadataCatalog.pop(name, None)
    MetadataCatalog.get(name).set(json_file=lvis_json, evaluator_type="lvis")
    yield name
    MetadataCatalog.pop(name, None)


def test_evaluator_on_instances_equals_evaluate_lvis(lvis_json, lvis_sample_dataset, tmp_path):
    """Model outputs (Instances, contiguous class indices) -> the same AP as the COCO results."""
    with open(lvis_json) as f:
        gt = json.load(f)
    results = [r for r in perturbed_detections(gt) if r["image_id"] != gt["images"][0]["id"]]
    images = {im["id"]: im for im in gt["images"]}
    evaluator = LVISAPEvaluator(lvis_sample_dataset, str(tmp_path), distributed=False)
    evaluator.reset()
    for image_id, im in images.items():
        mine = [r for r in results if r["image_id"] == image_id]
        inst = Instances((im["height"], im["width"]))
        xywh = torch.tensor([r["bbox"] for r in mine], dtype=torch.float32).reshape(-1, 4)
        inst.pred_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1))
        inst.scores = torch.tensor([r["score"] for r in mine], dtype=torch.float32)
        inst.pred_classes = torch.tensor([r["category_id"] - 1 for r in mine], dtype=torch.int64)
        masks = [mask_util.decode(r["segmentation"]) for r in mine]
        inst.pred_masks = torch.from_numpy(
            np.stack(masks) if masks else np.zeros((0, im["height"], im["width"]), np.uint8)
        ).bool()
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    scores = evaluator.evaluate()
    assert list(scores) == ["bbox", "segm"]
    # The evaluator's results went through float32 boxes and scores: compare with those.
    written = json.loads((tmp_path / "lvis_instances_results.json").read_text())
    assert len(written) == len(results)
    for task in ("bbox", "segm"):
        expected = evaluate_lvis(FasterCOCO(lvis_json), written, task)
        assert scores[task] == pytest.approx(expected, abs=1e-9)
    assert scores["segm"]["AP"] == pytest.approx(
        evaluate_lvis(FasterCOCO(lvis_json), results, "segm")["AP"], abs=0.5
    )
    with pytest.raises(ValueError, match="has class 5000"):
        bad = Instances((10, 10), pred_boxes=Boxes(torch.zeros(1, 4)), scores=torch.ones(1))
        bad.pred_classes = torch.tensor([5000])
        evaluator.reset()
        evaluator.process([{"image_id": 1}], [{"instances": bad}])
        evaluator.evaluate()
