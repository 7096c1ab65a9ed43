"""Numerical parity with segment-anything==1.0 on identical, fully randomised weights."""

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image
from sam_reference import matched_models
from segment_anything import SamPredictor as RefPredictor

from sam_d2 import SamPredictor
from sam_d2.data.transforms import ResizeLongestSide

LOGIT_TOL = 1e-4


def _load(*parts: str) -> np.ndarray:
    return np.array(Image.open(shared_path(*parts)).convert("RGB"))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return matched_models("custom")


@pytest.fixture(scope="module")
def images():
    return {
        "truck": _load("sam_images", "truck.jpg"),
        "dog": _load("sam_images", "dog.jpg"),
        "groceries": _load("sam_images", "groceries.jpg"),
        "bsds_landscape": _load("bsds500", "images", "test", "100007.jpg"),
        "bsds_portrait": _load("bsds500", "images", "test", "101084.jpg"),
    }


@pytest.fixture(scope="module")
def predictor_pairs(models, images):
    """Per image: (ours, reference) predictors with the image already embedded (done once)."""
    ours, ref = models
    pairs = {}
    for name, image in images.items():
        p1, p2 = SamPredictor(ours), RefPredictor(ref)
        p1.set_image(image)
        p2.set_image(image)
        pairs[name] = (p1, p2)
    return pairs


def _prompt_cases(h: int, w: int, prev_logits: np.ndarray):
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(0, w, 5), rng.uniform(0, h, 5)], axis=1)
    box = np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h])
    return {
        "single_point": dict(point_coords=pts[:1], point_labels=np.array([1])),
        "fg_bg_points": dict(point_coords=pts, point_labels=np.array([1, 0, 1, 0, 1])),
        "box": dict(box=box),
        "box_points": dict(box=box, point_coords=pts[:2], point_labels=np.array([1, 0])),
        "mask_points": dict(
            point_coords=pts[:2], point_labels=np.array([1, 1]), mask_input=prev_logits
        ),
        "mask_only": dict(mask_input=prev_logits),
    }


def _compare(ours_out, ref_out, tag):
    (m1, i1, l1), (m2, i2, l2) = ours_out, ref_out
    assert l1.shape == l2.shape and m1.shape == m2.shape, tag
    assert np.abs(l1 - l2).max() <= LOGIT_TOL, (tag, np.abs(l1 - l2).max())
    assert np.abs(i1 - i2).max() <= LOGIT_TOL, (tag, np.abs(i1 - i2).max())
    # Final masks agree except where the full-res logit is within rounding of the threshold.
    assert (m1 != m2).mean() < 1e-5, (tag, (m1 != m2).mean())


def test_image_orientations_are_real(images):
    assert images["bsds_landscape"].shape[:2] == (321, 481)
    assert images["bsds_portrait"].shape[:2] == (481, 321)


def test_embeddings_match(predictor_pairs):
    for name, (p1, p2) in predictor_pairs.items():
        assert p1.input_size == p2.input_size and p1.original_size == p2.original_size
        diff = (p1.get_image_embedding() - p2.get_image_embedding()).abs().max().item()
        assert diff <= 1e-4, (name, diff)


@pytest.mark.parametrize("multimask", [True, False])
def test_predictor_parity_all_prompt_kinds(predictor_pairs, images, multimask):
    for name, (p1, p2) in predictor_pairs.items():
        image = images[name]
        h, w = image.shape[:2]
        _, _, prev = p2.predict(
            point_coords=np.array([[w / 2, h / 2]]),
            point_labels=np.array([1]),
            multimask_output=False,
        )
        for case, kwargs in _prompt_cases(h, w, prev).items():
            tag = f"{name}/{case}/multimask={multimask}"
            out1 = p1.predict(multimask_output=multimask, **kwargs)
            out2 = p2.predict(multimask_output=multimask, **kwargs)
            _compare(out1, out2, tag)
            assert out1[0].shape == ((3 if multimask else 1), h, w)
        logits1 = p1.predict(box=np.array([5, 5, w - 5, h - 5]), return_logits=True)[0]
        logits2 = p2.predict(box=np.array([5, 5, w - 5, h - 5]), return_logits=True)[0]
        assert np.abs(logits1 - logits2).max() <= LOGIT_TOL


def test_predict_torch_batch_of_prompts(predictor_pairs):
    p1, p2 = predictor_pairs["groceries"]
    h, w = p1.input_size
    g = torch.Generator().manual_seed(3)
    coords = torch.rand(7, 3, 2, generator=g) * torch.tensor([w, h])
    labels = torch.randint(0, 2, (7, 3), generator=g)
    boxes = torch.sort(torch.rand(7, 2, 2, generator=g), dim=1).values * torch.tensor([w, h])
    out1 = p1.predict_torch(coords, labels, boxes.reshape(7, 4))
    out2 = p2.predict_torch(coords, labels, boxes.reshape(7, 4))
    assert (out1[0] != out2[0]).float().mean() < 1e-5
    for a, b in zip(out1[1:], out2[1:]):
        assert (a - b).abs().max() <= LOGIT_TOL


def test_meta_arch_batch_of_images_matches_reference(models, images, predictor_pairs):
    """Several images and many prompts in one forward() == the official predictor per image."""
    ours, _ = models
    resize = ResizeLongestSide(ours.img_size)
    batch, expected = [], []
    for name in ("dog", "bsds_landscape", "bsds_portrait"):
        image = images[name]
        h, w = image.shape[:2]
        tf = resize.get_transform(image)
        resized = tf.apply_image(image)
        rng = np.random.default_rng(1)
        pts = np.stack([rng.uniform(0, w, (4, 2)), rng.uniform(0, h, (4, 2))], axis=-1)
        labels = np.array([[1, 0]] * 4)
        boxes = np.array([[0.1 * w, 0.1 * h, 0.6 * w, 0.9 * h]] * 4) + rng.uniform(0, 9, (4, 4))
        batch.append(
            {
                "image": torch.as_tensor(np.array(resized)).permute(2, 0, 1),
                "height": h,
                "width": w,
                "point_coords": torch.as_tensor(
                    tf.apply_coords(pts.reshape(-1, 2)).reshape(4, 2, 2)
                ),
                "point_labels": torch.as_tensor(labels),
                "boxes": torch.as_tensor(tf.apply_box(boxes)),
            }
        )
        expected.append(
            predictor_pairs[name][1].predict_torch(
                batch[-1]["point_coords"].float(),
                batch[-1]["point_labels"],
                batch[-1]["boxes"].float(),
                multimask_output=True,
            )
        )
    with torch.no_grad():
        outputs = ours(batch)
    for out, (masks, iou, low_res) in zip(outputs, expected):
        inst = out["instances"]
        assert (inst.low_res_logits - low_res).abs().max() <= LOGIT_TOL
        assert (inst.iou_predictions - iou).abs().max() <= LOGIT_TOL
        assert (inst.all_masks != masks).float().mean() < 1e-5
        best = iou.argmax(1)
        assert torch.equal(inst.pred_masks, inst.all_masks[torch.arange(len(best)), best])


def test_vit_b_full_size_parity(images):
    """The real ViT-B architecture (12 blocks, 768-d), all weights random."""
    ours, ref = matched_models("vit_b", seed=1)
    p1, p2 = SamPredictor(ours), RefPredictor(ref)
    image = images["truck"]
    p1.set_image(image)
    p2.set_image(image)
    kwargs = dict(point_coords=np.array([[500, 375], [1125, 625]]), point_labels=np.array([1, 0]))
    _compare(p1.predict(**kwargs), p2.predict(**kwargs), "vit_b/points")
