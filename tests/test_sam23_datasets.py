"""SAM 23-dataset point benchmark: registration, format readers, subsampling, image reading.

Every format family is exercised on a small layout written to a tmp dir from the real samples in
../shared/data (the BBBC038 nuclei image and label map, the COCO sample, the LVIS v0.5 json).
"""

import json
import shutil

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import tifffile
from conftest import shared_path
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from sam_d2.data.image_io import STRETCH_PERCENTILES, read_image_rgb
from sam_d2.data.sam23 import (
    SAM23_DATASETS,
    SUBSAMPLE_TARGET,
    SUBSAMPLE_THRESHOLD,
    load_sam23,
    register_all_sam23,
    subsample_by_images,
)
from sam_d2.data.sam23_formats import LazyImage, count_masks

PAPER_ORDER = [
    "ADE20K",
    "BBBC038v1",
    "Cityscapes",
    "DOORS",
    "DRAM",
    "EgoHOS",
    "GTEA",
    "Hypersim",
    "IBD",
    "iShape",
    "LVIS",
    "NDD20",
    "NDISPark",
    "OVIS",
    "PPDLS",
    "Plittersdorf",
    "STREETS",
    "TimberSeg",
    "TrashCan",
    "VISOR",
    "WoodScape",
    "PIDRay",
    "ZeroWaste-f",
]


@pytest.fixture(scope="module")
def nuclei():
    """The real BBBC038 sample: (uint16 image, uint16 instance label map with 125 nuclei)."""
    image = tifffile.imread(shared_path("bbbc038_sample", "img2d.tif"))
    label = tifffile.imread(shared_path("bbbc038_sample", "mask2d.tif"))
    return image, label


def _areas(record):
    return sorted(int(mask_util.area(a["segmentation"])) for a in record["annotations"])


def _label_areas(label, ignore=0):
    _, counts = np.unique(label[label != ignore], return_counts=True)
    return sorted(int(c) for c in counts)


def _rgb8(image):
    return np.repeat(
        (image.astype(np.float64) / image.max() * 255).astype(np.uint8)[..., None], 3, 2
    )


def _load_one(root, name):
    records = load_sam23(name, str(root))
    assert len(records) == 1
    record = records[0]
    for anno in record["annotations"]:
        assert anno["category_id"] == 0 and anno["bbox_mode"] == BoxMode.XYWH_ABS
        assert len(anno["bbox"]) == 4
    return record


def _polygons(label):
    """The outer contour of every instance of a label map, as flat [x, y, ...] lists."""
    polys = []
    for value in np.unique(label[label > 0]):
        contours, _ = cv2.findContours((label == value).astype(np.uint8), 0, 2)
        contour = max(contours, key=cv2.contourArea)[:, 0, :]
        if len(contour) >= 3:
            polys.append(contour.astype(float).ravel().tolist())
    return polys


# ------------------------------------------------------------------------------ registration


def test_names_list_has_the_23_datasets_in_paper_order():
    assert len(SAM23_DATASETS) == 23 == len(set(SAM23_DATASETS))
    names = register_all_sam23("unused-root", prefix="order_")
    try:
        labels = [MetadataCatalog.get(n).dataset_label for n in names]
        assert labels == PAPER_ORDER
        assert {MetadataCatalog.get(n).evaluator_type for n in names} == {"point_miou"}
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_registration_is_lazy_and_loading_names_the_missing_path(tmp_path):
    root = tmp_path / "no_such_root"
    names = register_all_sam23(str(root), prefix="lazy_")
    try:
        assert names == [f"lazy_{n}" for n in SAM23_DATASETS]
        assert not root.exists()
        assert MetadataCatalog.get("lazy_bbbc038").dataset_root == str(root / "sam23" / "bbbc038")
        with pytest.raises(FileNotFoundError) as info:
            DatasetCatalog.get("lazy_bbbc038")
        assert str(root / "sam23" / "bbbc038") in str(info.value)
        assert "datasets/README.md" in str(info.value)
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_missing_annotation_file_is_named(tmp_path):
    (tmp_path / "sam23" / "trashcan").mkdir(parents=True)
    expected = tmp_path / "sam23/trashcan/instance_version/instances_train_trashcan.json"
    with pytest.raises(FileNotFoundError, match=str(expected)):
        load_sam23("trashcan", str(tmp_path))


# ------------------------------------------------------------------------------ BBBC038


def test_bbbc038_stage1_layout_one_png_per_nucleus(tmp_path, nuclei):
    image, label = nuclei
    sample = tmp_path / "sam23/bbbc038/stage1_train/0a1b"
    (sample / "images").mkdir(parents=True)
    (sample / "masks").mkdir()
    rgba = np.concatenate([_rgb8(image), np.full(image.shape + (1,), 255, np.uint8)], -1)
    Image.fromarray(rgba).save(sample / "images/0a1b.png")  # stage1 images are RGBA PNGs
    for value in np.unique(label[label > 0]):
        Image.fromarray(((label == value) * 255).astype(np.uint8)).save(
            sample / f"masks/m{value}.png"
        )
    record = _load_one(tmp_path, "bbbc038")
    assert (record["height"], record["width"]) == label.shape
    assert len(record["annotations"]) == 125
    assert _areas(record) == _label_areas(label)
    assert read_image_rgb(record["file_name"]).shape == label.shape + (3,)


def test_bbbc038_label_map_tif_layout(tmp_path, nuclei):
    base = tmp_path / "sam23/bbbc038"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    shutil.copy(shared_path("bbbc038_sample", "img2d.tif"), base / "images/nuclei.tif")
    shutil.copy(shared_path("bbbc038_sample", "mask2d.tif"), base / "masks/nuclei.tif")
    record = _load_one(tmp_path, "bbbc038")
    assert record["image_id"] == "images/nuclei.tif"
    assert _areas(record) == _label_areas(nuclei[1])


# ------------------------------------------------------------------------------ COCO / LVIS json


def test_coco_json_family_keeps_crowd_flagged(tmp_path):
    folder = tmp_path / "sam23/trashcan/instance_version"
    folder.mkdir(parents=True)
    shutil.copy(
        shared_path("coco_sample", "instances_sample.json"),
        folder / "instances_train_trashcan.json",
    )
    (folder / "train").symlink_to(shared_path("coco_sample", "images"))
    records = load_sam23("trashcan", str(tmp_path))
    annos = [a for r in records for a in r["annotations"]]
    assert len(records) == 2 and len(annos) == 43
    assert sum(a["iscrowd"] for a in annos) == 3  # crowd kept, flagged, not counted as masks
    assert sum(count_masks(r) for r in records) == 40
    assert {a["category_id"] for a in annos} == {0}
    assert all(
        read_image_rgb(r["file_name"]).shape == (r["height"], r["width"], 3) for r in records
    )


def test_coco_json_family_merges_splits_and_renumbers_colliding_ids(tmp_path):
    base = tmp_path / "sam23/plittersdorf"
    base.mkdir(parents=True)
    for split in ("train", "val", "test"):
        shutil.copy(shared_path("coco_sample", "instances_sample.json"), base / f"{split}.json")
    records = load_sam23("plittersdorf", str(tmp_path))
    assert len(records) == 6 and sum(len(r["annotations"]) for r in records) == 3 * 43
    assert sorted(r["image_id"] for r in records) == list(range(6))


def test_lvis_v05_json(tmp_path):
    base = tmp_path / "sam23/lvis"
    base.mkdir(parents=True)
    shutil.copy(shared_path("lvis", "lvis_v0.5_val_100.json"), base / "lvis_v0.5_val.json")
    records = load_sam23("lvis", str(tmp_path))
    assert sum(len(r["annotations"]) for r in records) == 977  # < 15k masks: not subsampled
    assert all(
        a["iscrowd"] == 0 and a["category_id"] == 0 for r in records for a in r["annotations"]
    )
    record = next(r for r in records if r["image_id"] == 266409)
    assert record["file_name"] == str(base / "val2017" / "000000266409.jpg")


# ------------------------------------------------------------------------------ label maps


def test_ishape_16bit_instance_maps(tmp_path, nuclei):
    image, label = nuclei
    folder = tmp_path / "sam23/ishape/antenna/val"
    (folder / "image").mkdir(parents=True)
    (folder / "instance_map").mkdir()
    Image.fromarray(_rgb8(image)).save(folder / "image/a1.jpg")
    Image.fromarray(label.astype(np.uint16)).save(folder / "instance_map/a1.png")
    record = _load_one(tmp_path, "ishape")
    assert _areas(record) == _label_areas(label)


def test_ppdls_palette_label_png(tmp_path, nuclei):
    image, label = nuclei
    folder = tmp_path / "sam23/ppdls/Plant/Ara2012"
    folder.mkdir(parents=True)
    palette_png = Image.fromarray(label.astype(np.uint8), mode="P")
    palette_png.putpalette(np.random.RandomState(0).randint(0, 255, 768).tolist())
    palette_png.save(folder / "ara2012_plant001_label.png")
    Image.fromarray(_rgb8(image)).save(folder / "ara2012_plant001_rgb.png")
    record = _load_one(tmp_path, "ppdls")
    assert record["image_id"] == "Plant/Ara2012/ara2012_plant001_rgb.png"
    assert _areas(record) == _label_areas(label)


def test_egohos_class_maps_and_source_filter(tmp_path, nuclei):
    image, label = nuclei
    base = tmp_path / "sam23/egohos/train"
    (base / "image").mkdir(parents=True)
    (base / "label").mkdir()
    classes = np.where(label > 0, label % 8 + 1, 0).astype(np.uint8)
    for name in ("ego4d_clip_0001", "epick_P01_0001"):
        Image.fromarray(_rgb8(image)).save(base / f"image/{name}.jpg")
        Image.fromarray(classes).save(base / f"label/{name}.png")
    record = _load_one(tmp_path, "egohos")  # the EPIC-KITCHENS image is not used by the paper
    assert record["image_id"] == "train/image/ego4d_clip_0001.jpg"
    assert _areas(record) == _label_areas(classes)


def test_dram_semantic_labels_ignore_void(tmp_path, nuclei):
    image, label = nuclei
    base = tmp_path / "sam23/dram"
    (base / "test/realism").mkdir(parents=True)
    (base / "labels/realism").mkdir(parents=True)
    classes = np.where(label > 60, 15, np.where(label > 0, 8, 0)).astype(np.uint8)
    classes[:5] = 255  # void
    Image.fromarray(_rgb8(image)).save(base / "test/realism/monet.jpg")
    Image.fromarray(classes).save(base / "labels/realism/monet.png")
    record = _load_one(tmp_path, "dram")
    assert len(record["annotations"]) == 2
    assert _areas(record) == _label_areas(np.where(classes == 255, 0, classes))


def test_hypersim_hdf5_and_volume_filter(tmp_path, nuclei):
    h5py = pytest.importorskip("h5py", reason="h5py (needed for Hypersim only) is not installed")
    image, label = nuclei
    for scene in ("ai_001_002", "ai_020_001"):  # volume 20 is excluded by the paper
        images = tmp_path / f"sam23/hypersim/{scene}/images"
        (images / "scene_cam_00_final_preview").mkdir(parents=True)
        (images / "scene_cam_00_geometry_hdf5").mkdir()
        Image.fromarray(_rgb8(image)).save(
            images / "scene_cam_00_final_preview/frame.0003.tonemap.jpg"
        )
        with h5py.File(
            images / "scene_cam_00_geometry_hdf5/frame.0003.semantic_instance.hdf5", "w"
        ) as f:
            f["dataset"] = label.astype(np.int16) - 1  # -1 = unlabelled, ids from 0
    record = _load_one(tmp_path, "hypersim")
    assert "ai_001_002" in record["file_name"] and record["file_name"].endswith("tonemap.jpg")
    assert _areas(record) == _label_areas(label)


def test_doors_binary_mask_is_one_instance(tmp_path, nuclei):
    image, label = nuclei
    folder = tmp_path / "sam23/doors/Segmentation/DS1/DS"
    (folder / "img").mkdir(parents=True)
    (folder / "mask").mkdir()
    Image.fromarray(_rgb8(image)).save(folder / "img/b1.png")
    Image.fromarray(np.repeat(((label > 0) * 255).astype(np.uint8)[..., None], 3, 2)).save(
        folder / "mask/b1.png"
    )
    record = _load_one(tmp_path, "doors")
    assert _areas(record) == [int((label > 0).sum())]


def test_gtea_connected_components(tmp_path, nuclei):
    image, label = nuclei
    base = tmp_path / "sam23/gtea"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    Image.fromarray(_rgb8(image)).save(base / "images/s1_coffee_0001.jpg")
    Image.fromarray(((label > 0) * 255).astype(np.uint8)).save(base / "masks/s1_coffee_0001.png")
    record = _load_one(tmp_path, "gtea")
    assert 100 <= len(record["annotations"]) <= 125  # touching nuclei merge
    assert sum(_areas(record)) == int((label > 0).sum())


def test_cityscapes_instance_ids_give_panoptic_segments(tmp_path, nuclei):
    image, label = nuclei
    ids = np.full(label.shape, 7, np.uint16)  # road
    ids[label > 0] = 26000 + label[label > 0]  # cars ...
    ids[label > 100] = 24  # ... except ids > 100: person region without instance id (crowd)
    ids[:, :3] = 4  # 'static', ignored in evaluation
    gt = tmp_path / "sam23/cityscapes/gtFine/val/aachen"
    img = tmp_path / "sam23/cityscapes/leftImg8bit/val/aachen"
    gt.mkdir(parents=True)
    img.mkdir(parents=True)
    Image.fromarray(ids).save(gt / "aachen_000000_000019_gtFine_instanceIds.png")
    Image.fromarray(_rgb8(image)).save(img / "aachen_000000_000019_leftImg8bit.png")
    record = _load_one(tmp_path, "cityscapes")
    cars = len(np.unique(label[(label > 0) & (label <= 100)]))
    assert len(record["annotations"]) == 1 + cars + 1
    assert [a["iscrowd"] for a in record["annotations"]].count(1) == 1
    assert count_masks(record) == 1 + cars


def test_ade20k_rgb_encoded_objects_and_parts(tmp_path, nuclei):
    image, label = nuclei
    folder = tmp_path / "sam23/ade20k/ADE20K_2021_17_01/images/ADE/validation/cultural/abbey"
    folder.mkdir(parents=True)
    seg = np.zeros(label.shape + (3,), np.uint8)
    seg[label > 0, 0] = 300 // 256 * 10  # class 300 = R / 10 * 256 + G
    seg[label > 0, 1] = 300 % 256
    seg[..., 2] = label  # B = instance
    parts = np.where((label > 0)[..., None] & (label <= 10)[..., None], seg, 0).astype(np.uint8)
    Image.fromarray(_rgb8(image)).save(folder / "ADE_val_00000001.jpg")
    Image.fromarray(seg).save(folder / "ADE_val_00000001_seg.png")
    Image.fromarray(parts).save(folder / "ADE_val_00000001_parts_1.png")
    record = _load_one(tmp_path, "ade20k")
    part_areas = _label_areas(np.where(label <= 10, label, 0))
    assert len(record["annotations"]) == 125 + len(part_areas)
    assert _areas(record) == sorted(_label_areas(label) + part_areas)


# ------------------------------------------------------------------------------ polygons, video


def test_polygon_json_families(tmp_path, nuclei):
    image, label = nuclei
    polys = _polygons(label)
    base = tmp_path / "sam23"
    # NDD20: VIA json, regions as polygons (a point region is skipped)
    (base / "ndd20/ABOVE").mkdir(parents=True)
    (base / "ndd20/BELOW").mkdir()
    regions = [
        {"shape_attributes": {"name": "polygon", "all_points_x": p[0::2], "all_points_y": p[1::2]}}
        for p in polys
    ] + [{"shape_attributes": {"name": "point", "cx": 3, "cy": 4}}]
    Image.fromarray(_rgb8(image)).save(base / "ndd20/ABOVE/1.jpg")
    (base / "ndd20/ABOVE_LABELS.json").write_text(
        json.dumps({"1.jpg1": {"filename": "1.jpg", "regions": regions}})
    )
    (base / "ndd20/BELOW_LABELS.json").write_text("{}")
    # VISOR: per-video json, frames unzipped to rgb_frames/val/<participant>/<video>/
    visor = base / "visor/GroundTruth-SparseAnnotations"
    (visor / "annotations/val").mkdir(parents=True)
    (visor / "rgb_frames/val/P01/P01_107").mkdir(parents=True)
    frame = {
        "image": {"name": "P01_107_frame_0000000140.jpg"},
        "annotations": [
            {"name": "nucleus", "segments": [np.reshape(p, (-1, 2)).tolist()]} for p in polys
        ],
    }
    (visor / "annotations/val/P01_107.json").write_text(json.dumps({"video_annotations": [frame]}))
    Image.fromarray(_rgb8(image)).save(
        visor / "rgb_frames/val/P01/P01_107/P01_107_frame_0000000140.jpg"
    )
    # WoodScape: one json per image with polygons of [x, y] points
    (base / "woodscape/instance_annotations").mkdir(parents=True)
    (base / "woodscape/rgb_images").mkdir()
    entry = {
        "image_height": 512,
        "image_width": 512,
        "annotation": [
            {"tags": ["car"], "segmentation": np.reshape(p, (-1, 2)).tolist()} for p in polys
        ],
    }
    (base / "woodscape/instance_annotations/00001_FV.json").write_text(
        json.dumps({"00001_FV.png": entry})
    )
    Image.fromarray(_rgb8(image)).save(base / "woodscape/rgb_images/00001_FV.png")

    for name in ("ndd20", "visor", "woodscape"):
        record = _load_one(tmp_path, name)
        assert len(record["annotations"]) == len(polys) >= 120, name
        assert (record["height"], record["width"]) == label.shape
        # polygons from the outer contour cover each nucleus up to its boundary pixels
        assert abs(sum(_areas(record)) / (label > 0).sum() - 1) < 0.25, name


def test_woodscape_json_without_annotation_key_names_file_and_key(tmp_path):
    folder = tmp_path / "sam23/woodscape/instance_annotations"
    folder.mkdir(parents=True)
    (folder / "00001_FV.json").write_text(
        json.dumps({"00001_FV.png": {"image_height": 4, "image_width": 4}})
    )
    with pytest.raises(ValueError, match=r"00001_FV\.json.*'annotation'"):
        load_sam23("woodscape", str(tmp_path))


def _uncompressed_rle(mask):
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], change])).tolist()}


def test_ovis_video_json_one_image_per_frame(tmp_path, nuclei):
    _, label = nuclei
    base = tmp_path / "sam23/ovis"
    base.mkdir(parents=True)
    annotations = []
    for value in np.unique(label[label > 0]).tolist():
        mask = label == value
        rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
        first = (
            _uncompressed_rle(mask)
            if value % 2
            else {"size": rle["size"], "counts": rle["counts"].decode()}
        )
        second = first if value <= 10 else None
        annotations.append(
            {"id": value, "video_id": 7, "iscrowd": 0, "segmentations": [first, second]}
        )
    video = {
        "id": 7,
        "height": 512,
        "width": 512,
        "file_names": ["v7/img_0000001.jpg", "v7/img_0000002.jpg"],
    }
    (base / "annotations_train.json").write_text(
        json.dumps({"videos": [video], "annotations": annotations})
    )
    records = load_sam23("ovis", str(tmp_path))
    assert [r["file_name"] for r in records] == [
        str(base / "train" / f) for f in video["file_names"]
    ]
    assert _areas(records[0]) == _label_areas(label)
    assert _areas(records[1]) == _label_areas(np.where(label <= 10, label, 0))


# ------------------------------------------------------------------------------ subsampling


def _fake_split(num_images, masks_per_image, calls):
    def build(i):
        calls.append(i)
        annos = [{"iscrowd": 0} for _ in range(masks_per_image)] + [{"iscrowd": 1}]
        return {"file_name": f"img{i:05d}.png", "annotations": annos}

    return [LazyImage(f"img{i:05d}.png", lambda i=i: build(i)) for i in range(num_images)]


def test_subsampling_rule_is_seeded_by_image_and_reaches_10k():
    calls = []
    images = _fake_split(3000, 10, calls)  # 30k masks > 15k
    records = subsample_by_images(images)
    total = sum(count_masks(r) for r in records)
    assert SUBSAMPLE_TARGET <= total < SUBSAMPLE_TARGET + 10
    # exactly the shortest prefix of the seed-0 permutation of the key-sorted images
    expected = sorted(f"img{i:05d}.png" for i in np.random.RandomState(0).permutation(3000)[:1000])
    assert [r["file_name"] for r in records] == expected
    # the walk stops once 15k masks are exceeded: 1501 images built, not 3000
    assert len(calls) == SUBSAMPLE_THRESHOLD // 10 + 1
    assert [r["file_name"] for r in subsample_by_images(images[::-1])] == expected
    assert [r["file_name"] for r in subsample_by_images(images, seed=1)] != expected


def test_subsampling_keeps_small_datasets_and_drops_empty_images():
    images = _fake_split(1400, 10, [])  # 14k masks <= 15k: everything is kept
    assert len(subsample_by_images(images)) == 1400
    empty = _fake_split(5, 0, [])  # crowd-only images hold no evaluable mask
    assert subsample_by_images(empty) == []


# ------------------------------------------------------------------------------ read_image_rgb


def test_read_image_rgb_stretches_uint16_tif(nuclei):
    image, _ = nuclei
    rgb = read_image_rgb(shared_path("bbbc038_sample", "img2d.tif"))
    assert rgb.shape == image.shape + (3,) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
    low, high = np.percentile(image, STRETCH_PERCENTILES)
    expected = np.clip(np.rint((image - low) * 255.0 / (high - low)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert (rgb[image <= low] == 0).all() and (rgb[image >= high] == 255).all()


def test_read_image_rgb_16bit_png_matches_tif(tmp_path, nuclei):
    Image.fromarray(nuclei[0]).save(tmp_path / "nuclei16.png")
    from_png = read_image_rgb(tmp_path / "nuclei16.png")
    np.testing.assert_array_equal(
        from_png, read_image_rgb(shared_path("bbbc038_sample", "img2d.tif"))
    )


def test_read_image_rgb_drops_alpha_and_expands_gray(tmp_path, nuclei):
    rgb = _rgb8(nuclei[0]).copy()
    rgb[..., 1] //= 2
    alpha = np.random.RandomState(0).randint(0, 256, rgb.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "rgba.png"), rgb)
    Image.fromarray(rgb[..., 1]).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(
        read_image_rgb(tmp_path / "gray.png"), np.dstack([rgb[..., 1]] * 3)
    )
    palette = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), mode="P")
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, 7)])
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_image_rgb(tmp_path / "palette.png")[0, 3], [3, 252, 7])


def test_read_image_rgb_rejects_non_images(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="notes.png"):
        read_image_rgb(tmp_path / "notes.png")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 32, 32), np.uint16))
    with pytest.raises(ValueError, match="stack.tif"):
        read_image_rgb(tmp_path / "stack.tif")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image_rgb(tmp_path / "missing.jpg")
