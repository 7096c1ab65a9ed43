"""Mask AR@1000 of class-agnostic proposals on the real LVIS v0.5 val sample (100 images)."""

import copy
import json
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from conftest import shared_path
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.lvis import register_lvis_instances
from detectron2.structures import Instances
from detectron2.utils import comm
from dist_helpers import run_distributed
from lvis import LVIS, LVISEval, LVISResults

from sam_d2.evaluation.lvis_mask_ar import (
    IOU_THRESHOLDS,
    LVISMaskProposalEvaluator,
    greedy_match,
)

JSON_PARTS = ("lvis", "lvis_v0.5_val_100.json")
DATASET = "sam_d2_test_lvis_v0.5_val_100"
KEYS = ("AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000", "AR_f@1000", "AR_c@1000", "AR_r@1000")
SMALL = 32**2
# pycocotools' decode triggers a numpy 2 copy-keyword DeprecationWarning on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
_KERNEL = np.ones((3, 3), np.uint8)

Sample = Tuple[Dict, Dict]  # (Detectron2 input dict, output dict) of one image


def _register(name: str, json_file: str) -> str:
    if name not in DatasetCatalog.list():
        register_lvis_instances(name, {}, json_file, "")
    return name


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    return cv2.erode(mask, _KERNEL, iterations=pixels) if pixels else mask


def _sample(image: Dict, masks: List[np.ndarray], scores: List[float]) -> Sample:
    h, w = image["height"], image["width"]
    stacked = np.stack(masks).astype(bool) if masks else np.zeros((0, h, w), bool)
    instances = Instances(
        (h, w),
        pred_masks=torch.from_numpy(stacked),
        scores=torch.tensor(scores, dtype=torch.float32),
    )
    return {"image_id": image["id"], "height": h, "width": w}, {"proposals": instances}


def _gt_proposals(
    gt: LVIS,
    keep: Callable[[Dict], bool] = lambda ann: True,
    erode: int = 0,
    image_ids: Optional[List[int]] = None,
) -> Iterator[Sample]:
    """GT masks (decoded from the polygons) of the kept annotations as scored proposals."""
    for image_id in sorted(gt.imgs) if image_ids is None else image_ids:
        anns = [ann for ann in gt.img_ann_map[image_id] if keep(ann)]
        masks = [_erode(gt.ann_to_mask(ann), erode) for ann in anns]
        yield _sample(gt.imgs[image_id], masks, [1.0 - 1e-3 * i for i in range(len(anns))])


def _evaluate(dataset: str, samples: Iterator[Sample], **kwargs) -> Dict[str, float]:
    evaluator = LVISMaskProposalEvaluator(dataset, **kwargs)
    evaluator.reset()
    for inputs, outputs in samples:
        evaluator.process([inputs], [outputs])
    return dict(evaluator.evaluate()["proposals_mask"])


@pytest.fixture(scope="module")
def json_file() -> str:
    return str(shared_path(*JSON_PARTS))


@pytest.fixture(scope="module")
def gt(json_file: str) -> LVIS:
    return LVIS(json_file)


@pytest.fixture(scope="module")
def dataset(json_file: str) -> str:
    return _register(DATASET, json_file)


@pytest.fixture(scope="module")
def frequency(gt: LVIS) -> Callable[[Dict], str]:
    return lambda ann: gt.cats[ann["category_id"]]["frequency"]


@pytest.fixture(scope="module")
def eroded_2px(dataset: str, gt: LVIS) -> Dict[str, float]:
    return _evaluate(dataset, _gt_proposals(gt, erode=2))


def test_gt_masks_give_full_recall(dataset: str, gt: LVIS) -> None:
    result = _evaluate(dataset, _gt_proposals(gt))
    assert list(result) == list(KEYS)
    assert result == {key: 100.0 for key in KEYS}


def test_dropping_small_objects_lowers_only_small(dataset: str, gt: LVIS) -> None:
    result = _evaluate(dataset, _gt_proposals(gt, keep=lambda ann: ann["area"] >= SMALL))
    # Every medium / large GT keeps its own exact mask, so greedy matching still recalls all of
    # them; the 570 small GT can only be recalled by a larger mask overlapping them >= 0.5.
    assert result["AR_m@1000"] == result["AR_l@1000"] == 100.0
    assert result["AR_s@1000"] < 5.0
    assert result["AR@1000"] < 50.0
    assert all(result[key] < 100.0 for key in ("AR_f@1000", "AR_c@1000"))


@pytest.mark.parametrize("group", ["r", "c"])
def test_dropping_a_frequency_group_lowers_only_that_group(
    dataset: str, gt: LVIS, frequency: Callable[[Dict], str], group: str
) -> None:
    result = _evaluate(dataset, _gt_proposals(gt, keep=lambda ann: frequency(ann) != group))
    others = [f"AR_{g}@1000" for g in "fcr" if g != group]
    # Each group is matched against its own GT only, and all of those keep their exact masks.
    assert all(result[key] == 100.0 for key in others)
    assert result[f"AR_{group}@1000"] < 50.0
    assert result["AR@1000"] < 100.0


def test_dropping_with_imperfect_proposals_never_raises_other_groups(
    dataset: str, gt: LVIS, frequency: Callable[[Dict], str], eroded_2px: Dict[str, float]
) -> None:
    """Greedy matching is monotone: removing proposals can only lose matches, never gain."""
    result = _evaluate(dataset, _gt_proposals(gt, keep=lambda ann: frequency(ann) != "c", erode=2))
    assert result["AR_c@1000"] < eroded_2px["AR_c@1000"]
    for key in ("AR_f@1000", "AR_r@1000"):
        assert result[key] <= eroded_2px[key]
    # Proposals are class-agnostic: an eroded "common" mask can be the match of an overlapping
    # frequent GT at some threshold, so AR_f may drop, but only marginally.
    assert eroded_2px["AR_f@1000"] - result["AR_f@1000"] < 0.1


def test_more_erosion_lowers_recall(dataset: str, gt: LVIS, eroded_2px: Dict[str, float]) -> None:
    eroded_1px = _evaluate(dataset, _gt_proposals(gt, erode=1))
    eroded_4px = _evaluate(dataset, _gt_proposals(gt, erode=4))
    assert 100.0 > eroded_1px["AR@1000"] > eroded_2px["AR@1000"] > eroded_4px["AR@1000"]
    for key in ("AR_s@1000", "AR_m@1000", "AR_f@1000", "AR_c@1000"):
        assert 100.0 > eroded_1px[key] > eroded_2px[key] > eroded_4px[key]
    # Erosion by k pixels costs large objects the least IoU, small objects the most.
    assert eroded_2px["AR_l@1000"] > eroded_2px["AR_m@1000"] > eroded_2px["AR_s@1000"]


def _crowded_image(gt: LVIS, num_distractors: int) -> Sample:
    """Smallest image: its GT masks (scores 0.5, 0.49, ...) after empty distractors at 0.9."""
    image = min(
        (gt.imgs[i] for i in gt.img_ann_map if len(gt.img_ann_map[i]) >= 3),
        key=lambda img: img["height"] * img["width"],
    )
    anns = gt.img_ann_map[image["id"]]
    empty = np.zeros((image["height"], image["width"]), np.uint8)
    masks = [empty] * num_distractors + [gt.ann_to_mask(ann) for ann in anns]
    scores = [0.9] * num_distractors + [0.5 - 0.01 * i for i in range(len(anns))]
    return _sample(image, masks, scores)


def test_only_top_1000_proposals_count(dataset: str, gt: LVIS) -> None:
    inputs, outputs = _crowded_image(gt, 0)
    num_gt = len(outputs["proposals"])
    full = _evaluate(dataset, iter([(inputs, outputs)]))
    assert full["AR@1000"] == 100.0

    exactly_1000 = _evaluate(dataset, iter([_crowded_image(gt, 1000 - num_gt)]))
    assert exactly_1000["AR@1000"] == 100.0

    # One more distractor pushes the lowest-scored GT mask out of the top 1000: the same AR as
    # proposing only the other GT masks.
    over = _evaluate(dataset, iter([_crowded_image(gt, 1001 - num_gt)]))
    last_id = gt.img_ann_map[inputs["image_id"]][-1]["id"]
    without_last = _evaluate(
        dataset,
        _gt_proposals(gt, keep=lambda ann: ann["id"] != last_id, image_ids=[inputs["image_id"]]),
    )
    np.testing.assert_equal(over, without_last)
    assert over["AR@1000"] == pytest.approx(100.0 * (num_gt - 1) / num_gt)

    # A smaller K behaves the same way and renames the metrics.
    top_2 = _evaluate(dataset, iter([(inputs, outputs)]), max_proposals=2)
    assert top_2["AR@2"] == pytest.approx(100.0 * 2 / num_gt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_masks_on_gpu_give_the_same_numbers(dataset: str, gt: LVIS) -> None:
    samples = list(_gt_proposals(gt, erode=1, image_ids=sorted(gt.img_ann_map)[:20]))
    on_gpu = []
    for inputs, outputs in samples:
        on_gpu.append((inputs, {"proposals": outputs["proposals"].to("cuda")}))
    assert _evaluate(dataset, iter(on_gpu)) == _evaluate(dataset, iter(samples))


def _distributed_ar(json_file: str) -> Dict:
    """Eroded GT masks of 40 images, a third of them dropped, split over the ranks by image."""
    dataset = _register(DATASET, json_file)
    gt = LVIS(json_file)
    rank, world = comm.get_rank(), comm.get_world_size()
    image_ids = sorted(gt.imgs)[:40][rank::world]
    evaluator = LVISMaskProposalEvaluator(dataset)
    evaluator.reset()
    samples = _gt_proposals(gt, keep=lambda ann: ann["id"] % 3 != 0, erode=1, image_ids=image_ids)
    for inputs, outputs in samples:
        evaluator.process([inputs], [outputs])
    return evaluator.evaluate()


def test_one_and_two_processes_agree(json_file: str) -> None:
    one = run_distributed(_distributed_ar, 1, json_file)
    two = run_distributed(_distributed_ar, 2, json_file)
    assert list(one) == ["proposals_mask"]
    assert one == two
    assert all(0.0 < one["proposals_mask"][key] < 100.0 for key in KEYS[:-1])  # one rare GT


# --- parity with the LVIS API's own matching (lvis.LVISEval.evaluate_img) -------------------


def _collapsed_json(data: Dict, keep: Callable[[Dict], bool], path: Path) -> str:
    """The annotation file with one category holding the kept annotations (class-agnostic)."""
    data = copy.deepcopy(data)
    data["annotations"] = [dict(ann, category_id=1) for ann in data["annotations"] if keep(ann)]
    data["categories"] = [{"id": 1, "name": "object", "frequency": "f"}]
    for image in data["images"]:
        image["neg_category_ids"], image["not_exhaustive_category_ids"] = [], []
    path.write_text(json.dumps(data))
    return str(path)


def _lvis_api_recall(json_file: str, results: List[Dict]) -> Dict[str, float]:
    """AR per area range from LVISEval's per-image matches (its accumulate() needs numpy < 1.24)."""
    lvis_eval = LVISEval(json_file, LVISResults(json_file, copy.deepcopy(results), 1000), "segm")
    lvis_eval.evaluate()
    num_gt, matched = {}, {}
    for entry in filter(None, lvis_eval.eval_imgs):
        area = tuple(entry["area_rng"])
        counted = entry["gt_ignore"] == 0
        num_gt[area] = num_gt.get(area, 0) + np.count_nonzero(counted)
        matched[area] = matched.get(area, 0) + np.count_nonzero(
            (entry["gt_matches"] > 0) & counted, axis=1
        )
    labels = dict(zip(map(tuple, lvis_eval.params.area_rng), ("", "_s", "_m", "_l"), strict=True))
    return {
        f"AR{labels[a]}@1000": 100.0 * np.mean(matched[a] / num_gt[a]) for a in num_gt if num_gt[a]
    }


def _messy_proposals(gt: LVIS, image_ids: List[int]) -> Tuple[List[Sample], List[Dict]]:
    """Per GT: eroded, dilated and shifted copies with coarse (often tied) random scores."""
    rng = np.random.RandomState(0)
    samples, results = [], []
    for image_id in image_ids:
        image = gt.imgs[image_id]
        masks = []
        for ann in gt.img_ann_map[image_id]:
            mask = gt.ann_to_mask(ann)
            masks += [_erode(mask, 1), cv2.dilate(mask, _KERNEL, iterations=3)]
            masks.append(np.roll(mask, (rng.randint(-6, 7), rng.randint(-6, 7)), axis=(0, 1)))
        scores = list(np.round(rng.uniform(size=len(masks)), 1))
        samples.append(_sample(image, masks, scores))
        for mask, score in zip(masks, scores, strict=True):
            rle = mask_util.encode(np.asfortranarray(mask))
            results.append(
                {"image_id": image_id, "category_id": 1, "segmentation": rle, "score": score}
            )
    return samples, results


def test_matches_lvis_api_matching(json_file: str, gt: LVIS, tmp_path: Path) -> None:
    # LVISEval's pure-Python matching is quadratic per image: keep the images with <= 20 GT
    # (88 of the 100 images, 501 GT, the rare one included).
    image_ids = [i for i in sorted(gt.imgs) if len(gt.img_ann_map[i]) <= 20]
    data = json.loads(Path(json_file).read_text())
    data["images"] = [image for image in data["images"] if image["id"] in image_ids]
    data["annotations"] = [ann for ann in data["annotations"] if ann["image_id"] in image_ids]
    for ann in data["annotations"][::7]:
        ann["ignore"] = 1  # LVISEval's optional ignore flag, honoured by both
    ignore_json = tmp_path / "lvis_with_ignore.json"
    ignore_json.write_text(json.dumps(data))
    dataset = _register("sam_d2_test_lvis_ignore", str(ignore_json))
    samples, results = _messy_proposals(gt, image_ids)
    ours = _evaluate(dataset, iter(samples))

    frequency = {cat["id"]: cat["frequency"] for cat in data["categories"]}
    reference = _lvis_api_recall(
        _collapsed_json(data, lambda a: True, tmp_path / "all.json"), results
    )
    for group in "fcr":
        group_json = _collapsed_json(
            data, lambda a, g=group: frequency[a["category_id"]] == g, tmp_path / f"{group}.json"
        )
        reference[f"AR_{group}@1000"] = _lvis_api_recall(group_json, results)["AR@1000"]
    assert set(reference) == set(KEYS)
    for key in KEYS:
        assert ours[key] == pytest.approx(reference[key], abs=1e-9), key
    assert all(0.0 < ours[key] < 100.0 for key in KEYS if key != "AR_r@1000")


def test_greedy_match_prefers_real_gt_then_higher_iou() -> None:
    # Proposal 0 overlaps GT 0 (0.6) and GT 1 (0.8, ignored); proposal 1 overlaps GT 0 (0.9).
    ious = np.array([[0.6, 0.8, 0.0], [0.9, 0.0, 0.0]])
    matched = greedy_match(ious, np.array([False, True, False]), [0.5, 0.7])
    # At 0.5 proposal 0 takes the real GT 0 despite the better ignored GT; at 0.7 GT 0 is out of
    # its reach, so it takes the ignored GT 1 and proposal 1 gets GT 0.
    np.testing.assert_array_equal(matched, [[True, False, False], [True, True, False]])
    # Equal IoU: LVISEval's loop keeps the later GT, which here leaves proposal 1 without a match.
    ties = greedy_match(np.array([[0.7, 0.7], [0.0, 0.7]]), np.zeros(2, bool), [0.5])
    np.testing.assert_array_equal(ties, [[False, True]])
    assert greedy_match(np.zeros((0, 2)), np.zeros(2, bool)).shape == (len(IOU_THRESHOLDS), 2)


# --- bad input ---------------------------------------------------------------------------


def test_missing_json_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    _register("sam_d2_test_lvis_missing", str(missing))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        LVISMaskProposalEvaluator("sam_d2_test_lvis_missing")
    MetadataCatalog.get("sam_d2_test_lvis_no_json").set(thing_classes=["a"])
    with pytest.raises(ValueError, match="json_file"):
        LVISMaskProposalEvaluator("sam_d2_test_lvis_no_json")


def test_empty_dataset_is_rejected(json_file: str, tmp_path: Path) -> None:
    data = json.loads(Path(json_file).read_text())
    data["annotations"] = []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(data))
    _register("sam_d2_test_lvis_empty", str(empty))
    with pytest.raises(ValueError, match="0 annotations"):
        LVISMaskProposalEvaluator("sam_d2_test_lvis_empty")


def test_bad_options_and_predictions(dataset: str, gt: LVIS) -> None:
    with pytest.raises(ValueError, match="max_proposals"):
        LVISMaskProposalEvaluator(dataset, max_proposals=0)
    evaluator = LVISMaskProposalEvaluator(dataset)
    evaluator.reset()
    with pytest.raises(ValueError, match="no predictions"):
        evaluator.evaluate()

    inputs, outputs = next(_gt_proposals(gt, image_ids=sorted(gt.img_ann_map)[:1]))
    image_id, (h, w) = inputs["image_id"], outputs["proposals"].image_size
    masks, scores = outputs["proposals"].pred_masks, outputs["proposals"].scores

    wrong_shape = Instances((h, w), pred_masks=masks[:, :-1], scores=scores)
    with pytest.raises(ValueError, match=rf"image {image_id}: pred_masks has shape"):
        evaluator.process([inputs], [{"proposals": wrong_shape}])
    mask_logits_shape = Instances((h, w), pred_masks=masks[:, None], scores=scores)
    with pytest.raises(ValueError, match=r"expected \(N, H, W\)"):
        evaluator.process([inputs], [{"instances": mask_logits_shape}])
    float_masks = Instances((h, w), pred_masks=masks.float(), scores=scores)
    with pytest.raises(TypeError, match="bool"):
        evaluator.process([inputs], [{"instances": float_masks}])
    with pytest.raises(KeyError, match="scores"):
        evaluator.process([inputs], [{"instances": Instances((h, w), pred_masks=masks)}])
    with pytest.raises(KeyError, match="'proposals' or 'instances'"):
        evaluator.process([inputs], [{"sem_seg": masks}])
    with pytest.raises(ValueError, match="not an image"):
        evaluator.process([dict(inputs, image_id=-5)], [outputs])

    evaluator.process([inputs], [outputs])
    evaluator.process([inputs], [outputs])
    with pytest.raises(ValueError, match="more than once"):
        evaluator.evaluate()


def test_images_without_proposals_count_as_misses(dataset: str, gt: LVIS) -> None:
    samples = list(_gt_proposals(gt, keep=lambda ann: False))
    result = _evaluate(dataset, iter(samples))
    assert result == {key: 0.0 for key in KEYS}
