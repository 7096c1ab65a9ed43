"""SamTrainMapper: independent random streams per DataLoader worker, the paper's data rules,
large-scale jitter."""

import json

import numpy as np
import torch
from conftest import shared_path
from detectron2.data.build import worker_init_reset_seed
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.structures import BoxMode

from sam_d2.data.train_mapper import SamTrainMapper, annotation_area


def _record():
    """The real COCO sample image with the most instances, as a Detectron2 dict."""
    root = shared_path("coco_sample")
    coco = json.loads((root / "instances_sample.json").read_text())
    counts = {}
    for a in coco["annotations"]:
        counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    image = next(i for i in coco["images"] if i["id"] == max(counts, key=counts.get))
    annotations = [
        dict(a, bbox_mode=BoxMode.XYWH_ABS)
        for a in coco["annotations"]
        if a["image_id"] == image["id"]
    ]
    return {
        "file_name": str(root / "images" / image["file_name"]),
        "height": image["height"],
        "width": image["width"],
        "image_id": image["id"],
        "annotations": annotations,
    }


def _draws(num_workers, seed=0):
    mapper = SamTrainMapper(
        image_size=512, image_format="RGB", max_masks=3, random_flip=False, seed=seed
    )
    data = MapDataset(DatasetFromList([_record()] * 4, copy=False), mapper)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=None,
        num_workers=num_workers,
        worker_init_fn=worker_init_reset_seed,
        generator=torch.Generator().manual_seed(0),
    )
    return [out["gt_masks"] for out in loader]


def test_dataloader_workers_draw_different_mask_subsets_reproducibly():
    draws = _draws(num_workers=2)  # items 0, 2 come from worker 0; items 1, 3 from worker 1
    assert all(len(d) == 3 for d in draws)
    assert not torch.equal(draws[0], draws[1]), "both workers drew the same masks"
    assert not torch.equal(draws[0], draws[2]), "a worker repeated its own draw"
    again = _draws(num_workers=2)
    assert all(torch.equal(a, b) for a, b in zip(draws, again)), "same seed, same draws"
    other_seed = _draws(num_workers=2, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(draws, other_seed))


def test_large_masks_are_dropped_and_area_comes_from_the_mask_when_absent():
    record = _record()
    h, w = record["height"], record["width"]
    full = [[0, 0, w, 0, w, h, 0, h]]
    big = {"segmentation": full, "bbox": [0, 0, w, h], "bbox_mode": BoxMode.XYWH_ABS}
    assert annotation_area(big, h, w) == h * w
    mapper = SamTrainMapper(image_size=128, image_format="RGB", random_flip=False)
    kept = mapper.select(record["annotations"] + [big], h, w)
    assert big not in kept and len(kept) == sum(
        1 for a in record["annotations"] if not a["iscrowd"]
    )
    assert (
        len(
            SamTrainMapper(
                image_size=128, image_format="RGB", max_mask_area_ratio=1.0, random_flip=False
            ).select([big], h, w)
        )
        == 1
    )


def test_large_scale_jitter_gives_crops_within_the_encoder_input():
    np.random.seed(0)
    mapper = SamTrainMapper(image_size=128, image_format="BGR", lsj_scale=(0.1, 2.0))
    sizes = set()
    for _ in range(6):
        out = mapper(_record())
        h, w = out["image"].shape[1:]
        assert max(h, w) <= 128 and out["gt_masks"].shape[1:] == (h, w)
        assert out["gt_masks"].flatten(1).any(1).all()
        sizes.add((h, w))
    assert len(sizes) > 1, "the scale is random"
