"""Single-point valid-mask benchmark: click sampling, mapper, click loop, evaluator (real data)."""

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile
import torch
from conftest import shared_path, tiny_sam
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import BitMasks, Instances
from dist_helpers import run_distributed
from PIL import Image
from scipy.ndimage import distance_transform_edt

from sam_d2.data.point_mapper import (
    PointEvalDatasetMapper,
    annotation_to_mask,
    build_point_eval_loader,
)
from sam_d2.evaluation.point_miou import PointMIoUEvaluator, average_point_miou
from sam_d2.modeling.click_simulation import (
    center_points,
    farthest_point,
    next_clicks,
    object_seed,
    padded_distance_transform,
    random_points,
)
from sam_d2.modeling.meta_arch.click_benchmark import SamClickBenchmark

NUM_POINTS = (1, 2, 3, 5, 9)
IMAGE_SIZE = 256
BBBC = "pe_test_bbbc038"
COCO = "pe_test_coco"
LVIS = "pe_test_lvis_blank"


# ----------------------------------------------------------------------------- data


def _bbbc_record() -> Dict[str, Any]:
    labels = tifffile.imread(shared_path("bbbc038_sample", "mask2d.tif"))
    annos = []
    for value in np.unique(labels)[1:]:
        rle = mask_util.encode(np.asfortranarray((labels == value).astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        annos.append({"segmentation": rle, "iscrowd": 0, "category_id": 0, "id": int(value)})
    return {
        "file_name": str(shared_path("bbbc038_sample", "img2d.tif")),
        "image_id": "bbbc038_img2d",
        "height": labels.shape[0],
        "width": labels.shape[1],
        "annotations": annos,
    }


def _coco_records() -> List[Dict[str, Any]]:
    root = shared_path("coco_sample")
    return load_coco_json(str(root / "instances_sample.json"), str(root / "images"))


def _register(name: str, loader) -> str:
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, loader)
        MetadataCatalog.get(name).set(evaluator_type="point_miou", dataset_label=name)
    return name


def _register_real() -> List[str]:
    """Register the BBBC038 and COCO samples (also called inside spawned workers)."""
    shared_path("bbbc038_sample", "mask2d.tif")
    shared_path("coco_sample", "instances_sample.json")
    return [_register(BBBC, lambda: [_bbbc_record()]), _register(COCO, _coco_records)]


def _gt_masks(record: Dict[str, Any]) -> np.ndarray:
    h, w = record["height"], record["width"]
    masks = [
        annotation_to_mask(a["segmentation"], h, w)
        for a in record["annotations"]
        if not a.get("iscrowd", 0)
    ]
    return np.stack(masks)


@pytest.fixture(scope="module")
def real_masks() -> Dict[str, np.ndarray]:
    coco = _coco_records()
    return {
        "bbbc038": _gt_masks(_bbbc_record()),
        "coco_0": _gt_masks(coco[0]),
        "coco_1": _gt_masks(coco[1]),
    }


@pytest.fixture(scope="module")
def reference_edt(real_masks) -> Dict[str, np.ndarray]:
    """scipy's distance transform of every zero-padded full-image mask (the reference)."""
    return {k: np.stack([_scipy_padded_edt(m) for m in v]) for k, v in real_masks.items()}


@pytest.fixture(scope="module")
def datasets() -> List[str]:
    return _register_real()


@pytest.fixture(scope="module")
def degraded_joint(datasets) -> Dict[str, Dict[str, float]]:
    """Results of the eroded-GT oracle on the BBBC038 and COCO samples, one joint run."""
    return _evaluate(_oracle(erode=1), datasets)


@pytest.fixture(scope="module")
def lvis_blank(tmp_path_factory) -> str:
    """LVIS v0.5 sample annotations on blank images of the right sizes (images not shipped)."""
    data = json.loads(shared_path("lvis", "lvis_v0.5_val_100.json").read_text())
    folder = tmp_path_factory.mktemp("lvis_blank")
    by_image: Dict[int, list] = {}
    for anno in data["annotations"]:
        by_image.setdefault(anno["image_id"], []).append(anno)
    records = []
    for img in data["images"]:
        path = folder / f"{img['id']}.png"
        Image.new("RGB", (img["width"], img["height"])).save(path)
        records.append(
            {
                "file_name": str(path),
                "image_id": img["id"],
                "height": img["height"],
                "width": img["width"],
                "annotations": [
                    {"segmentation": a["segmentation"], "id": a["id"], "iscrowd": 0}
                    for a in by_image.get(img["id"], [])
                ],
            }
        )
    return _register(LVIS, lambda: records)


# ----------------------------------------------------------------------------- models


def _kwargs(**options) -> Dict[str, Any]:
    return dict(sam=tiny_sam(), **options)


class GTOracle(SamClickBenchmark):
    """Test oracle plugged where SAM decodes: every output is the GT mask (eroded if asked).

    It skips the image encoder (its embedding is never used) and returns constant low-res
    logits; only ``masks_at_original`` matters for the IoU and the next clicks.
    """

    def __init__(self, erode: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.erode = erode

    def embed_images(self, images):
        return torch.zeros(len(images), 1, 1, 1, device=self.device)

    def decode_points(self, embedding, point_coords, point_labels, mask_inputs, multimask, gt):
        k = 3 if multimask else 1
        h, w = self.sam.prompt_encoder.mask_input_size
        n = point_coords.shape[0]
        # distinct predicted IoUs so that "most confident" is well defined (output 0)
        iou = torch.linspace(1.0, 0.5, k, device=self.device).expand(n, k)
        return torch.zeros(n, k, h, w, device=self.device), iou

    def masks_at_original(self, low_res, input_hw, out_hw, gt):
        masks = _erode(gt, self.erode) if self.erode else gt
        return masks[:, None].expand(-1, low_res.shape[1], -1, -1)


def _erode(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """(N, H, W) bool eroded by a (2p+1)^2 square; the image border does not erode."""
    m = masks.cpu().numpy()
    padded = np.pad(m, ((0, 0), (pixels, pixels), (pixels, pixels)), constant_values=True)
    h, w = m.shape[-2:]
    out = m.copy()
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            out &= padded[:, dy : dy + h, dx : dx + w]
    return torch.from_numpy(out).to(masks.device)


def _oracle(erode: int = 0, num_points: Sequence[int] = NUM_POINTS, **options) -> GTOracle:
    return GTOracle(erode=erode, **_kwargs(num_points=num_points, **options)).eval()


def _cfg() -> CN:
    cfg = get_cfg()
    cfg.MODEL.SAM = CN()
    cfg.MODEL.SAM.VARIANT = "custom"  # a padded-frame SAM
    cfg.MODEL.SAM.IMAGE_SIZE = IMAGE_SIZE
    cfg.INPUT.FORMAT = "RGB"
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def _evaluate(model, dataset_names: Sequence[str], **eval_kwargs) -> Dict[str, Dict[str, float]]:
    loader = build_point_eval_loader(_cfg(), dataset_names)
    evaluator = PointMIoUEvaluator(dataset_names, num_points=model.num_points, **eval_kwargs)
    return inference_on_dataset(model, loader, evaluator)


def _scipy_padded_edt(mask: np.ndarray) -> np.ndarray:
    return distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


# ----------------------------------------------------------------------------- click sampling


@pytest.mark.parametrize("which", ["bbbc038", "coco_0", "coco_1"])
@pytest.mark.parametrize("method", ["cv2", "scipy"])
def test_first_point_is_farthest_from_boundary(real_masks, reference_edt, which, method) -> None:
    masks = real_masks[which]
    clicks = center_points(masks, method)
    assert clicks.valid.all() and (clicks.labels == 1).all()
    for mask, edt, (x, y), dist in zip(masks, reference_edt[which], clicks.coords, clicks.distance):
        assert mask[y, x], "first point outside the object"
        assert edt[y, x] == edt.max() and dist == edt.max()
        # deterministic tie-breaking: first maximal pixel in raster order
        ys, xs = np.nonzero(edt == edt.max())
        assert (y, x) == (ys[0], xs[0])


def test_cv2_and_scipy_distances_agree(real_masks, reference_edt) -> None:
    for which, masks in real_masks.items():
        for mask, edt in zip(masks, reference_edt[which]):
            np.testing.assert_array_equal(padded_distance_transform(mask, "cv2"), edt)
            np.testing.assert_array_equal(padded_distance_transform(mask, "scipy"), edt)


def test_image_border_counts_as_boundary() -> None:
    mask = np.ones((5, 9), dtype=bool)  # the whole image: row 2 is 3 px from the border
    (x, y), dist = farthest_point(mask)
    assert (x, y) == (2, 2) and dist == 3.0
    # an object against the left border: its deepest point is not on the border
    mask = np.zeros((7, 12), dtype=bool)
    mask[1:6, 0:5] = True
    (x, y), dist = farthest_point(mask)
    assert (x, y) == (2, 3) and dist == pytest.approx(3.0)


def _error_cases(masks: np.ndarray) -> Dict[str, np.ndarray]:
    shifted = np.roll(masks, (0, 6, -4), axis=(0, 1, 2))
    eroded = _erode(torch.from_numpy(masks), 2).numpy()
    dilated = ~_erode(torch.from_numpy(~masks), 4).numpy()
    return {"shifted": shifted, "eroded": eroded, "dilated": dilated}


@pytest.mark.parametrize("which", ["bbbc038", "coco_0"])
def test_next_click_in_larger_error_region_with_right_label(real_masks, which) -> None:
    gt = real_masks[which][:24]  # 24 nuclei / objects: the reference EDTs are full-image
    for case, pred in _error_cases(gt).items():
        clicks = next_clicks(gt, pred)
        assert clicks.valid.all(), case
        for i, ((x, y), label) in enumerate(zip(clicks.coords, clicks.labels)):
            fn, fp = gt[i] & ~pred[i], ~gt[i] & pred[i]
            fn_edt, fp_edt = _scipy_padded_edt(fn), _scipy_padded_edt(fp)
            if label == 1:
                assert fn[y, x] and fn_edt.max() > fp_edt.max(), (case, i)
                assert fn_edt[y, x] == fn_edt.max() == clicks.distance[i]
            else:
                assert label == 0 and fp[y, x] and fp_edt.max() >= fn_edt.max(), (case, i)
                assert fp_edt[y, x] == fp_edt.max() == clicks.distance[i]
        if case == "eroded":
            assert (clicks.labels == 1).all()  # only missed pixels: foreground clicks
        if case == "dilated":
            assert (clicks.labels == 0).all()  # only spurious pixels: background clicks
    # cv2 and scipy engines click the same pixels
    gt = real_masks[which]
    for pred in _error_cases(gt).values():
        a, b = next_clicks(gt, pred, method="cv2"), next_clicks(gt, pred, method="scipy")
        np.testing.assert_array_equal(a.coords, b.coords)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_first_click_is_next_click_of_empty_prediction(real_masks) -> None:
    gt = real_masks["coco_1"]
    first = center_points(gt)
    nxt = next_clicks(gt, np.zeros_like(gt))
    np.testing.assert_array_equal(first.coords, nxt.coords)
    np.testing.assert_array_equal(first.labels, nxt.labels)


def test_clicked_pixels_are_excluded_and_perfect_predictions_get_no_click(real_masks) -> None:
    gt = real_masks["bbbc038"][:10]
    first = center_points(gt)
    # a prediction missing everything: without exclusion the click repeats the first one
    again = next_clicks(gt, np.zeros_like(gt))
    np.testing.assert_array_equal(again.coords, first.coords)
    moved = next_clicks(gt, np.zeros_like(gt), first.coords[:, None])
    assert (np.abs(moved.coords - first.coords).sum(1) > 0).all()
    assert gt[np.arange(10), moved.coords[:, 1], moved.coords[:, 0]].all()
    perfect = next_clicks(gt, gt.copy())
    assert not perfect.valid.any() and (perfect.labels == -1).all()
    # an error region made only of an already clicked pixel gives no click either
    pred = gt.copy()
    x, y = first.coords[0]
    pred[0, y, x] = False
    assert not next_clicks(gt[:1], pred[:1], first.coords[:1, None]).valid[0]


def test_random_first_points_inside_and_seeded(real_masks) -> None:
    gt = real_masks["bbbc038"]
    rngs = lambda seed: [object_seed(seed, "img", k) for k in range(len(gt))]  # noqa: E731
    a, b, c = random_points(gt, rngs(0)), random_points(gt, rngs(0)), random_points(gt, rngs(1))
    assert a.valid.all() and gt[np.arange(len(gt)), a.coords[:, 1], a.coords[:, 0]].all()
    np.testing.assert_array_equal(a.coords, b.coords)
    assert (a.coords != c.coords).any(axis=1).mean() > 0.5


# ----------------------------------------------------------------------------- mapper


def test_mapper_reads_uint16_tif_and_keeps_masks_at_original_size() -> None:
    record = _bbbc_record()
    out = PointEvalDatasetMapper(image_size=IMAGE_SIZE)(record)
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, 256, 256)
    assert out["image"].float().std() > 0
    masks = out["instances"].gt_masks.tensor
    assert tuple(masks.shape) == (125, 512, 512)
    labels = tifffile.imread(shared_path("bbbc038_sample", "mask2d.tif"))
    for k, obj in enumerate(out["instances"].object_ids.tolist()):
        assert torch.equal(masks[k], torch.from_numpy(labels == obj))
    assert out["num_empty_masks"] == 0


def test_mapper_drops_crowd_and_resizes_only_the_image() -> None:
    records = _coco_records()
    mapper = PointEvalDatasetMapper(image_size=IMAGE_SIZE)
    outs = [mapper(r) for r in records]
    crowd = sum(a.get("iscrowd", 0) for r in records for a in r["annotations"])
    assert crowd == 3
    assert sum(len(o["instances"]) for o in outs) == 40
    for r, o in zip(records, outs):
        assert o["instances"].image_size == (r["height"], r["width"])
        assert max(o["image"].shape[1:]) == IMAGE_SIZE


def test_mapper_skips_empty_masks_with_warning(caplog) -> None:
    record = _bbbc_record()
    record["annotations"] = record["annotations"][:3] + [
        {"segmentation": [[10.0, 10.0, 10.0, 10.0, 10.0, 10.0]], "iscrowd": 0, "id": 999}
    ]
    with caplog.at_level(logging.WARNING):
        out = PointEvalDatasetMapper(image_size=IMAGE_SIZE)(record)
    assert len(out["instances"]) == 3 and out["num_empty_masks"] == 1
    assert "empty mask" in caplog.text and "999" in caplog.text
    record["annotations"] = []
    out = PointEvalDatasetMapper(image_size=IMAGE_SIZE)(record)
    assert len(out["instances"]) == 0 and tuple(out["instances"].gt_masks.tensor.shape) == (
        0,
        512,
        512,
    )


# ----------------------------------------------------------------------------- oracles


def test_gt_oracle_scores_100_at_every_n(datasets, lvis_blank) -> None:
    names = datasets + [lvis_blank]
    results = _evaluate(_oracle(), names)
    expected = [f"mIoU@{n}" for n in NUM_POINTS] + ["oracle_mIoU@1"]
    for task in ["point_miou"] + [f"point_miou/{n}" for n in names]:
        for metric in expected:
            assert results[task][metric] == pytest.approx(100.0, abs=1e-9), (task, metric)
    assert results["point_miou/pe_test_bbbc038"]["num_objects"] == 125
    assert results["point_miou/pe_test_coco"]["num_objects"] == 40
    lvis = results[f"point_miou/{lvis_blank}"]
    assert lvis["num_objects"] + lvis["num_skipped"] == 977
    assert results["point_miou"]["num_datasets"] == 3


def test_degraded_oracle_scores_strictly_less_and_clicks_the_missed_ring(degraded_joint) -> None:
    model = _oracle(erode=1)
    mapper = PointEvalDatasetMapper(image_size=IMAGE_SIZE)
    x = mapper(_bbbc_record())
    with torch.no_grad():
        out = model([x])[0]
    gt = x["instances"].gt_masks.tensor.numpy()
    eroded = model.masks_at_original(
        torch.zeros(len(gt), 1, 1, 1), None, None, torch.from_numpy(gt)
    )[:, 0].numpy()
    assert (out["point_ious"] < 1).all() and (out["oracle_iou_1pt"] < 1).all()
    coords, labels = out["point_coords"].numpy(), out["point_labels"].numpy()
    assert (labels[:, 0] == 1).all()
    for r in range(1, max(NUM_POINTS)):
        ok = labels[:, r] >= 0
        assert ok.all()  # the eroded ring is never fully clicked in 9 clicks here
        i = np.arange(len(gt))
        ring = gt & ~eroded
        assert ring[i, coords[:, r, 1], coords[:, r, 0]].all() and (labels[:, r] == 1).all()
        # never the same pixel twice
        assert (np.abs(coords[:, r : r + 1] - coords[:, :r]).sum(-1) > 0).all()

    for task in ["point_miou", f"point_miou/{BBBC}", f"point_miou/{COCO}"]:
        for metric in [f"mIoU@{n}" for n in NUM_POINTS] + ["oracle_mIoU@1"]:
            assert 0 < degraded_joint[task][metric] < 100.0, (task, metric)
    # the eroded masks never change, so neither does their IoU
    metrics = degraded_joint[f"point_miou/{BBBC}"]
    assert metrics["mIoU@1"] == metrics["mIoU@9"] == metrics["oracle_mIoU@1"]
    assert metrics["mIoU@1"] == pytest.approx(100 * out["point_ious"][:, 0].mean().item())


def test_random_first_point_variant_is_seeded_per_object() -> None:
    x = PointEvalDatasetMapper(image_size=IMAGE_SIZE)(_bbbc_record())
    gt = x["instances"].gt_masks.tensor.numpy()
    with torch.no_grad():
        center = _oracle(num_points=(1,))([x])[0]["point_coords"][:, 0].numpy()
        a = _oracle(num_points=(1,), first_point="random", seed=3)([x])[0]
        b = _oracle(num_points=(1,), first_point="random", seed=3)([x, x])[
            1
        ]  # batching: same clicks
        c = _oracle(num_points=(1,), first_point="random", seed=4)([x])[0]
    first = a["point_coords"][:, 0].numpy()
    assert gt[np.arange(len(gt)), first[:, 1], first[:, 0]].all()
    assert (a["point_labels"][:, 0] == 1).all()
    assert torch.equal(a["point_coords"], b["point_coords"])
    assert torch.equal(a["point_ious"], b["point_ious"])
    assert (first != center).any(1).mean() > 0.5 and (first != c["point_coords"][:, 0].numpy()).any(
        1
    ).mean() > 0.5


def test_empty_gt_objects_are_counted_once_and_empty_images_give_nothing() -> None:
    """The mapper drops (and counts) empty GT masks; the model refuses one it is handed."""
    model = _oracle()
    x = PointEvalDatasetMapper(image_size=IMAGE_SIZE)(_bbbc_record())
    inst = x["instances"]
    masks = inst.gt_masks.tensor.clone()
    masks[5] = False
    with pytest.raises(ValueError, match=r"objects \[\d+\] have an empty GT mask"):
        model([dict(x, instances=Instances((512, 512), gt_masks=BitMasks(masks)))])

    x["num_empty_masks"] = 1  # as if the mapper had dropped one object
    empty = dict(x, instances=Instances((512, 512), gt_masks=BitMasks(masks[:0])))
    empty["num_empty_masks"] = 0
    with torch.no_grad():
        out, none = model([x, empty])
    assert out["point_ious"].shape == (125, len(NUM_POINTS))
    assert none["point_ious"].shape == (0, len(NUM_POINTS)) and "num_skipped" not in none

    evaluator = PointMIoUEvaluator(["a", "b"], num_points=NUM_POINTS)
    evaluator.process(
        [dict(x, dataset_name="a"), dict(empty, dataset_name="b")],
        [dict(out, dataset_name="a"), dict(none, dataset_name="b")],
    )
    res = evaluator.evaluate()
    assert res["point_miou/a"]["mIoU@1"] == pytest.approx(100.0)
    assert res["point_miou/a"]["num_skipped"] == 1 and res["point_miou/a"]["num_objects"] == 125
    assert np.isnan(res["point_miou/b"]["mIoU@1"]) and res["point_miou/b"]["num_objects"] == 0
    assert res["point_miou"]["num_datasets"] == 1 and res["point_miou"]["mIoU@9"] == 100.0


def test_bad_inputs_raise_clear_errors() -> None:
    model = _oracle()
    x = PointEvalDatasetMapper(image_size=IMAGE_SIZE)(_bbbc_record())
    with pytest.raises(KeyError, match="PointEvalDatasetMapper"):
        model([{k: v for k, v in x.items() if k != "instances"}])
    small = Instances((256, 256), gt_masks=BitMasks(torch.ones(1, 256, 256, dtype=torch.bool)))
    with pytest.raises(ValueError, match="original image size"):
        model([dict(x, instances=small)])
    with pytest.raises(RuntimeError, match="only evaluates"):
        model.train()([x])
    with pytest.raises(ValueError, match="num_points"):
        GTOracle(**_kwargs(num_points=(1, 5, 3)))


def test_per_dataset_runs_average_to_the_joint_run(datasets, degraded_joint) -> None:
    model = _oracle(erode=1)
    separate = {name: _evaluate(model, [name]) for name in datasets}
    combined = average_point_miou(separate)
    for task, metrics in degraded_joint.items():
        for metric, value in metrics.items():
            assert combined[task][metric] == pytest.approx(value, rel=1e-12), (task, metric)


# ----------------------------------------------------------------------------- distributed


def _distributed_eval() -> Dict[str, Dict[str, float]]:
    names = _register_real()
    return _evaluate(_oracle(erode=1, num_points=(1, 2, 3)), names)


def test_one_and_two_processes_agree(datasets) -> None:
    one = run_distributed(_distributed_eval, 1)
    two = run_distributed(_distributed_eval, 2)
    assert one.keys() == two.keys()
    for task in one:
        # exactly: fsum means do not depend on the order objects arrive in
        assert one[task] == two[task], task
    assert one[f"point_miou/{BBBC}"]["num_objects"] == 125
    assert one[f"point_miou/{COCO}"]["num_objects"] == 40


# ----------------------------------------------------------------------------- real SAM loop


def test_tiny_random_sam_runs_the_whole_loop_on_bbbc038(datasets, tmp_path) -> None:
    sam = tiny_sam(seed=0)
    model = SamClickBenchmark(sam=sam, num_points=NUM_POINTS).eval()
    mapper = PointEvalDatasetMapper(image_size=IMAGE_SIZE)
    x = mapper(_bbbc_record())
    with torch.no_grad():
        out = model([x])[0]
    m = 125
    assert out["point_ious"].shape == (m, len(NUM_POINTS))
    assert ((out["point_ious"] >= 0) & (out["point_ious"] <= 1)).all()
    assert (out["oracle_iou_1pt"] >= out["point_ious"][:, 0] - 1e-12).all()
    labels = out["point_labels"]
    assert labels.shape == (m, max(NUM_POINTS)) and (labels[:, 0] == 1).all()

    # the loop's numbers equal direct PromptableSam calls with the same clicks (same batch)
    gt = x["instances"].gt_masks.tensor
    coords = out["point_coords"].float() * torch.tensor([256 / 512, 256 / 512])
    base = dict(image=x["image"], height=512, width=512)
    with torch.no_grad():
        first = sam(
            [
                dict(
                    base,
                    point_coords=coords[:, :1],
                    point_labels=labels[:, :1],
                    multimask_output=True,
                )
            ],
        )[0]["instances"]
        best = first.iou_predictions.argmax(1)
        mask_in = first.low_res_logits[torch.arange(m), best][:, None]
        second = sam(
            [
                dict(
                    base,
                    point_coords=coords[:, :2],
                    point_labels=labels[:, :2],
                    mask_inputs=mask_in,
                    multimask_output=False,
                )
            ],
        )[0]["instances"]

    def iou(pred: torch.Tensor) -> torch.Tensor:
        inter = (pred & gt).flatten(1).sum(1).double()
        return inter / (pred | gt).flatten(1).sum(1).double()

    np.testing.assert_allclose(iou(first.pred_masks), out["point_ious"][:, 0], atol=1e-12)
    oracle = torch.stack([iou(first.all_masks[:, k]) for k in range(3)], 1).max(1).values
    np.testing.assert_allclose(oracle, out["oracle_iou_1pt"], atol=1e-12)
    active = labels[:, 1] >= 0
    assert active.all()  # a random SAM is never perfect
    np.testing.assert_allclose(iou(second.pred_masks), out["point_ious"][:, 1], atol=1e-12)

    # the evaluator's numbers, written to disk
    evaluator = PointMIoUEvaluator(BBBC, str(tmp_path), num_points=NUM_POINTS)
    evaluator.process([x], [out])
    results = evaluator.evaluate()
    assert results[f"point_miou/{BBBC}"]["num_objects"] == m
    expected = 100 * out["point_ious"].mean(0)
    for j, n in enumerate(NUM_POINTS):
        assert results["point_miou"][f"mIoU@{n}"] == pytest.approx(float(expected[j]), rel=1e-9)
    assert (tmp_path / "point_miou.json").is_file()
    saved = torch.load(tmp_path / "point_miou_per_object.pth", weights_only=False)
    assert saved[BBBC]["point_ious"].shape == (m, len(NUM_POINTS))


# ----------------------------------------------------------------------------- config


def test_yaml_config_builds_the_model_and_runs_through_the_trainer(datasets, tmp_path) -> None:
    from sam_d2.config import add_sam_config
    from sam_d2.engine import Trainer

    cfg = get_cfg()
    add_sam_config(cfg)
    configs = Path(__file__).resolve().parents[1] / "configs"
    cfg.merge_from_file(str(configs / "sam_point_eval_random.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "SamClickBenchmark"
    assert tuple(cfg.TEST.POINT_EVAL.NUM_POINTS) == NUM_POINTS
    assert cfg.TEST.POINT_EVAL.FIRST_POINT == "random" and len(cfg.DATASETS.TEST) == 23
    cfg.merge_from_list(
        [
            "MODEL.SAM.VARIANT", "custom", "MODEL.SAM.IMAGE_SIZE", IMAGE_SIZE,
            "MODEL.SAM.ENCODER.EMBED_DIM", 64, "MODEL.SAM.ENCODER.DEPTH", 2,
            "MODEL.SAM.ENCODER.NUM_HEADS", 2, "MODEL.SAM.ENCODER.GLOBAL_ATTN_INDEXES", [1],
            "MODEL.SAM.ENCODER.WINDOW_SIZE", 8, "MODEL.DEVICE", "cpu",
            "DATASETS.TEST", tuple(datasets), "DATALOADER.NUM_WORKERS", 0,
            "OUTPUT_DIR", str(tmp_path),
        ]
    )  # fmt: skip
    model = SamClickBenchmark(cfg)
    assert model.first_point == "random" and model.num_points == NUM_POINTS
    assert isinstance(Trainer.build_test_loader(cfg, BBBC).dataset[0]["instances"], Instances)
    # the Trainer's eval-only path (mapper hook, evaluator from evaluator_type) with the oracle
    oracle = GTOracle(sam=model.sam, num_points=NUM_POINTS, first_point="random").eval()
    results = Trainer.test(cfg, oracle)
    for name in datasets:
        assert results[name]["point_miou"]["mIoU@9"] == pytest.approx(100.0)
        assert results[name][f"point_miou/{name}"]["num_objects"] > 0
    mean = average_point_miou(results)["point_miou"]
    assert mean["num_datasets"] == 2 and mean["mIoU@1"] == pytest.approx(100.0)
