"""Shared helpers of the SAM-family parity tests: random weights for a reference model and ours."""

from typing import Dict

import numpy as np
import torch
from conftest import shared_path
from PIL import Image

from sam_d2.automatic.rle import coco_to_mask, rle_to_mask
from sam_d2.utils.random_weights import randomize_state_dict

LOGIT_TOL = 1e-4


def random_state(model: torch.nn.Module, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Every float parameter and buffer of ``model`` randomised; BatchNorm variances kept positive
    (a negative running variance would turn both models' outputs into NaN)."""
    state = randomize_state_dict(model.state_dict(), seed)
    for key, value in state.items():
        if key.endswith("running_var"):
            state[key] = value.abs() + 0.5
    return state


def real_image(*parts: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB image from ../shared/data (skips the test when absent)."""
    return np.array(Image.open(shared_path(*parts)).convert("RGB"))


def prompt_cases(h: int, w: int, prev_logits: np.ndarray) -> Dict[str, dict]:
    """Predictor prompts (original image frame) covering every prompt kind and their mixes."""
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(0, w, 4), rng.uniform(0, h, 4)], axis=1)
    box = np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h])
    return {
        "single_point": dict(point_coords=pts[:1], point_labels=np.array([1])),
        "fg_bg_points": dict(point_coords=pts, point_labels=np.array([1, 0, 1, 0])),
        "box": dict(box=box),
        "box_points": dict(box=box, point_coords=pts[:2], point_labels=np.array([1, 0])),
        "mask_points": dict(
            point_coords=pts[:2], point_labels=np.array([1, 1]), mask_input=prev_logits
        ),
    }


def assert_same_outputs(ours, ref, tag: str) -> None:
    """Predictor outputs (masks, IoUs, low-res logits) agree: logits and IoUs to LOGIT_TOL."""
    (m1, i1, l1), (m2, i2, l2) = ours, ref
    assert l1.shape == l2.shape and m1.shape == m2.shape and i1.shape == i2.shape, tag
    assert np.abs(l1 - l2).max() <= LOGIT_TOL, (tag, np.abs(l1 - l2).max())
    assert np.abs(i1 - i2).max() <= LOGIT_TOL, (tag, np.abs(i1 - i2).max())
    assert (m1 != m2).mean() < 1e-5, (tag, (m1 != m2).mean())


def dense_mask(segmentation) -> np.ndarray:
    """(H, W) bool mask of a generator record's ``segmentation`` in any output mode."""
    if isinstance(segmentation, np.ndarray):
        return segmentation
    if isinstance(segmentation["counts"], str):
        return coco_to_mask(segmentation)
    return rle_to_mask(segmentation)


def match_records(ours, ref):
    """Pair every record of ``ours`` with the reference record of the same point, crop and
    closest predicted IoU; returns (pairs, mask IoUs)."""
    free = list(range(len(ref)))
    pairs, ious = [], []
    for a in ours:
        cands = [
            j
            for j in free
            if ref[j]["point_coords"] == a["point_coords"] and ref[j]["crop_box"] == a["crop_box"]
        ]
        assert cands, f"no reference mask for point {a['point_coords']} crop {a['crop_box']}"
        j = min(cands, key=lambda j: abs(ref[j]["predicted_iou"] - a["predicted_iou"]))
        free.remove(j)
        b = ref[j]
        ma, mb = dense_mask(a["segmentation"]), dense_mask(b["segmentation"])
        union = np.logical_or(ma, mb).sum()
        ious.append(1.0 if union == 0 else np.logical_and(ma, mb).sum() / union)
        pairs.append((a, b))
    return pairs, ious
