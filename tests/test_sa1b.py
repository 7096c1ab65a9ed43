"""SA-1B per-image JSON datasets: the official layout in shard folders, amg.py's list form, the
automatic generator's and the annotation app's files, lazy loading, the paper's data rules."""

import json
import shutil

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from conftest import shared_path, tiny_sam
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from sam_d2.data.image_io import read_image_rgb
from sam_d2.data.sa1b import load_sa1b_dicts, read_sa1b_json, register_all_sa1b, register_sa1b
from sam_d2.data.train_mapper import SamTrainMapper
from sam_d2.engine.automatic_stage import ImageItem, sa1b_document

COCO_IMAGE = "000000142238.jpg"


def _coco_masks():
    """The real COCO sample image's non-crowd instance masks (M, H, W) bool, as RLEs too."""
    root = shared_path("coco_sample")
    coco = json.loads((root / "instances_sample.json").read_text())
    image = next(i for i in coco["images"] if i["file_name"] == COCO_IMAGE)
    h, w = image["height"], image["width"]
    rles = []
    for a in coco["annotations"]:
        if a["image_id"] != image["id"] or a.get("iscrowd", 0):
            continue
        seg = a["segmentation"]
        rle = mask_util.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else seg
        rles.append(rle)
    masks = np.stack([mask_util.decode(r).astype(bool) for r in rles])
    return root / "images" / COCO_IMAGE, masks


def _sa1b_annotation(mask, i, **extra):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": i,
        "segmentation": {"size": list(mask.shape), "counts": rle["counts"].decode()},
        "bbox": mask_util.toBbox(rle).tolist(),
        "area": int(mask_util.area(rle)),
        "predicted_iou": 0.9,
        "stability_score": 0.97,
        "crop_box": [0, 0, mask.shape[1], mask.shape[0]],
        "point_coords": [[1.0, 2.0]],
        **extra,
    }


def _mapper(**kw):
    args = dict(image_size=256, image_format="RGB", random_flip=False, max_masks=1000)
    return SamTrainMapper(**{**args, **kw})


def _resized(masks, size=256):
    """Masks resized like the mapper resizes them (nearest neighbour, longest side = size)."""
    from sam_d2.data.transforms import ResizeLongestSide

    t = ResizeLongestSide(size).get_transform(np.zeros(masks.shape[1:] + (3,), np.uint8))
    return np.stack([t.apply_segmentation(m.astype(np.uint8)) > 0 for m in masks])


def test_official_layout_over_shard_folders_is_lazy_and_round_trips(tmp_path):
    src, masks = _coco_masks()
    h, w = masks.shape[1:]
    full = np.ones((h, w), bool)  # covers > 90 % of the image: dropped by the paper's rule
    for shard, n in (("sa_000000", 7), ("sa_000001", 12)):
        (tmp_path / shard).mkdir()
        shutil.copy(src, tmp_path / shard / f"sa_{n}.jpg")
        record = {
            "image": {"image_id": n, "width": w, "height": h, "file_name": f"sa_{n}.jpg"},
            "annotations": [_sa1b_annotation(m, i) for i, m in enumerate([*masks, full])],
        }
        (tmp_path / shard / f"sa_{n}.json").write_text(json.dumps(record))
    register_sa1b("test_sa1b_shards", str(tmp_path))
    dicts = DatasetCatalog.get("test_sa1b_shards")
    assert [d["image_id"] for d in dicts] == [7, 12]
    assert all(set(d) == {"file_name", "sa1b_json", "image_id"} for d in dicts)
    assert dicts[1]["file_name"] == str(tmp_path / "sa_000001" / "sa_12.jpg")

    out = _mapper()(dicts[0])
    assert out["image"].shape == (3, 171, 256) and (out["height"], out["width"]) == (h, w)
    expected = _resized(masks)
    expected = expected[expected.reshape(len(expected), -1).any(1)]
    assert np.array_equal(out["gt_masks"].numpy(), expected), "the full-image mask is dropped"
    kept = _mapper(max_masks=5)(dicts[0])["gt_masks"].numpy()
    assert len(kept) == 5 and all(any(np.array_equal(k, e) for e in expected) for k in kept)


def test_amg_list_form_with_images_elsewhere(tmp_path):
    src, masks = _coco_masks()
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    shutil.copy(src, tmp_path / "images" / "photo.jpg")
    anns = [_sa1b_annotation(m, 0) for m in masks[:3]]
    for a in anns:
        del a["id"]
    (tmp_path / "masks" / "photo.json").write_text(json.dumps(anns))
    dicts = load_sa1b_dicts(str(tmp_path / "masks"), str(tmp_path / "images"))
    assert dicts[0]["file_name"] == str(tmp_path / "images" / "photo.jpg")
    record = read_sa1b_json(dicts[0]["sa1b_json"])
    assert (record["height"], record["width"]) == masks.shape[1:]
    decoded = np.stack([mask_util.decode(a["segmentation"]) for a in record["annotations"]])
    assert np.array_equal(decoded.astype(bool), masks[:3])


def test_automatic_generator_output_round_trips(tmp_path):
    """The full-auto stage's documents (as tools/automatic_masks.py writes them) read back."""
    from sam_d2.automatic import AutomaticMaskGenerator

    src, _ = _coco_masks()
    image = read_image_rgb(str(src))[:120, :160]
    gen = AutomaticMaskGenerator(
        tiny_sam(0),
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        output_mode="coco_rle",
    )
    mask_set = gen.generate_mask_sets([image])[0]
    assert len(mask_set) > 0
    Image.fromarray(image).save(tmp_path / "crop.png")
    item = ImageItem(str(tmp_path / "crop.png"), "crop.png", "crop", 1)
    record = sa1b_document(item, image.shape[:2], mask_set.to_records("coco_rle"))
    (tmp_path / "crop.json").write_text(json.dumps(record))
    [d] = load_sa1b_dicts(str(tmp_path))
    assert d["file_name"] == str(tmp_path / "crop.png")
    read = read_sa1b_json(d["sa1b_json"])
    decoded = np.stack([mask_util.decode(a["segmentation"]) for a in read["annotations"]])
    expected = mask_set.decode_masks(16, torch.device("cpu")).numpy()
    assert np.array_equal(decoded.astype(bool), expected)
    assert [a["predicted_iou"] for a in read["annotations"]] == pytest.approx(
        mask_set.predicted_iou.tolist()
    )


def test_annotation_app_files_load_and_pending_suggestions_are_skipped(tmp_path):
    from sam_d2.annotate.storage import AnnotationStore, ImageFolder, make_annotation

    src, masks = _coco_masks()
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    shutil.copy(src, tmp_path / "imgs" / "sub" / "a.jpg")
    store = AnnotationStore(ImageFolder.scan(tmp_path / "imgs"), tmp_path / "out")
    rles = [_sa1b_annotation(m, 0)["segmentation"] for m in masks[:3]]
    common = dict(category="object", stage=1, time_s=2.0, model=None)
    store.add("sub/a.jpg", make_annotation(rles[0], source="point", **common))
    store.add("sub/a.jpg", make_annotation(rles[1], source="brush", **common))
    store.add("sub/a.jpg", make_annotation(rles[2], source="prefill", accepted=False, **common))
    register_sa1b("test_sa1b_app", str(tmp_path / "out"), str(tmp_path / "imgs"))
    [d] = DatasetCatalog.get("test_sa1b_app")
    assert d["file_name"] == str(tmp_path / "imgs" / "sub" / "a.jpg")
    read = read_sa1b_json(d["sa1b_json"])
    decoded = np.stack([mask_util.decode(a["segmentation"]) for a in read["annotations"]])
    assert np.array_equal(decoded.astype(bool), masks[:2])
    out = _mapper()(d)
    assert np.array_equal(out["gt_masks"].numpy(), _resized(masks[:2]))


def test_bad_files_are_named(tmp_path):
    (tmp_path / "sa_1.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match=r"no image for SA-1B annotation file .*sa_1.json"):
        load_sa1b_dicts(str(tmp_path))
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"x.json: not valid JSON"):
        read_sa1b_json(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"x.json: expected an SA-1B record"):
        read_sa1b_json(bad)
    a = _sa1b_annotation(np.ones((4, 5), bool), 0)
    bad.write_text(json.dumps({"image": {"height": 4, "width": 6}, "annotations": [a]}))
    with pytest.raises(ValueError, match=r"x.json: annotation 0 has a mask of size \[4, 5\]"):
        read_sa1b_json(bad)
    bad.write_text(json.dumps([{"bbox": [0, 0, 1, 1]}]))
    with pytest.raises(ValueError, match=r"x.json: annotation 0 has no COCO RLE"):
        read_sa1b_json(bad)


def test_builtin_names_register_without_touching_files(tmp_path):
    register_all_sa1b(str(tmp_path / "nowhere"))
    assert "sa1b_train" in DatasetCatalog.list()
    DatasetCatalog.remove("sa1b_train")
    MetadataCatalog.remove("sa1b_train")
    register_all_sa1b(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"SA-1B JSON folder .*nowhere/sa1b not found"):
        DatasetCatalog.get("sa1b_train")
    DatasetCatalog.remove("sa1b_train")
    MetadataCatalog.remove("sa1b_train")
    register_all_sa1b()  # back to $DETECTRON2_DATASETS for other tests
