"""Automatic mask generation: parity with ``segment_anything.SamAutomaticMaskGenerator`` on the
same random weights, argument checking, RLE round trips, clean-up, grids / crops and the
proposals meta-architecture (tools/automatic_masks.py is tested in test_automatic_stage.py)."""

import math

import numpy as np
import pytest
import torch
from conftest import shared_path
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from families_reference import match_records
from PIL import Image
from pycocotools import mask as mask_utils
from sam_reference import reference_sam

import sam_d2
from sam_d2.automatic.generator import AutomaticMaskGenerator
from sam_d2.automatic.grid import crop_boxes, layer_point_grids, point_grid
from sam_d2.automatic.masks import (
    clean_mask,
    covers_image,
    masks_to_boxes,
    near_crop_edge,
    remove_small_regions,
    stability_score,
)
from sam_d2.automatic.rle import (
    PackedRle,
    mask_to_rle,
    rle_area,
    rle_to_coco,
    rle_to_mask,
)
from sam_d2.config import add_sam_config
from sam_d2.modeling.meta_arch.proposals import SamAutomaticProposals  # noqa: F401 (registers)

sa = pytest.importorskip("segment_anything")
from segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator  # noqa: E402
from segment_anything.modeling import Sam  # noqa: E402
from segment_anything.utils import amg as ref_amg  # noqa: E402

IMG_SIZE = 256
TINY = dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=8)
# The paper's filters would drop every mask of a random model: relax them so that masks survive.
RELAXED = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)


# ---------------------------------------------------------------------------------- fixtures
def _reference_sam(img_size: int = IMG_SIZE) -> Sam:
    """The official Sam with the tiny encoder."""
    return reference_sam(img_size=img_size, **TINY)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Overwrite EVERY parameter and persistent buffer with random values.

    Weight matrices get 1/sqrt(fan_in) Gaussians, norm scales 1 + noise, biases, rel-pos tables
    and position embeddings small Gaussians, the Fourier matrix unit Gaussians. The decoder's two
    transposed convolutions get kernels that are nearly constant over their 2x2 taps, so the
    masks are blobs at embedding resolution rather than a 4-pixel checkerboard (a checkerboard's
    box is the whole image, and NMS would leave a single mask to compare).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        state = model.state_dict()
        for name, t in state.items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("positional_encoding_gaussian_matrix"):
                t.copy_(torch.randn(t.shape, generator=gen))
            elif t.dim() >= 2 and "rel_pos" not in name and "pos_embed" not in name:
                t.copy_(torch.randn(t.shape, generator=gen) / math.sqrt(t[0].numel()))
            elif name.endswith("weight") and t.dim() == 1:
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
        for i in (0, 3):
            w = state[f"mask_decoder.output_upscaling.{i}.weight"]
            base = torch.randn(w.shape[:2] + (1, 1), generator=gen)
            w.copy_((base + 0.05 * torch.randn(w.shape, generator=gen)) / math.sqrt(w.shape[0]))


@pytest.fixture(scope="module")
def models():
    """(ours, reference) tiny SAMs with identical random weights."""
    ref = _reference_sam()
    _randomize(ref, seed=1)
    ours = sam_d2.build_sam("custom", img_size=IMG_SIZE, **TINY)
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("pixel_") for k in missing), (missing, unexpected)
    return ours.eval(), ref


@pytest.fixture(scope="module")
def image():
    """A real photo, downsampled 4x (134 x 200) to keep the test fast."""
    path = shared_path("sam_images", "dog.jpg")
    return np.ascontiguousarray(np.array(Image.open(path).convert("RGB"))[::4, ::4])


# ---------------------------------------------------------------------------------- parity
PARITY_CASES = {
    "binary": dict(),
    "crops": dict(points_per_side=4, crop_n_layers=1),
    "min_area": dict(min_mask_region_area=200),
    "crops_min_area_coco": dict(
        points_per_side=4, crop_n_layers=1, min_mask_region_area=100, output_mode="coco_rle"
    ),
    # the IoU and stability filters at work (no NMS: the surviving masks' boxes overlap a lot)
    "filtered_uncompressed": dict(
        pred_iou_thresh=0.1,
        stability_score_thresh=0.1,
        box_nms_thresh=1.0,
        output_mode="uncompressed_rle",
    ),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_parity_with_official_generator(models, image, case):
    ours_model, ref_model = models
    kwargs = {**RELAXED, **PARITY_CASES[case]}
    ours = AutomaticMaskGenerator(ours_model, **kwargs).generate(image)
    ref = SamAutomaticMaskGenerator(ref_model, **kwargs).generate(image)
    assert len(ref) > 3, "too few masks survive for a meaningful comparison"
    assert len(ours) == len(ref)
    pairs, ious = match_records(ours, ref)
    assert min(ious) >= 0.99
    mode = kwargs.get("output_mode", "binary_mask")
    for a, b in pairs:
        # the two models agree to ~1e-6 in their logits, not bitwise: a pixel whose logit sits
        # on the threshold may flip, so areas and boxes are compared with a small tolerance
        assert set(a) == set(b)
        assert a["point_coords"] == b["point_coords"] and a["crop_box"] == b["crop_box"]
        assert a["area"] == pytest.approx(b["area"], rel=0.01, abs=2)
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=2)
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-4)
        assert np.nan_to_num(a["stability_score"]) == pytest.approx(
            np.nan_to_num(b["stability_score"]), abs=1e-3
        )
        assert type(a["segmentation"]) is type(b["segmentation"])
        seg = a["segmentation"]
        if mode == "binary_mask":
            assert seg.shape == image.shape[:2] and seg.dtype == bool
        else:
            assert seg["size"] == list(image.shape[:2])
            assert isinstance(seg["counts"], str if mode == "coco_rle" else list)


@pytest.mark.parametrize("own_forward", [False, True], ids=["sam_decoder", "family_decoder"])
@pytest.mark.parametrize("multimask", [True, False])
def test_decode_selected_equals_decode_then_iou_filter(models, multimask, own_forward):
    """Only prompts with a kept output are upscaled; the kept outputs are decode()'s. A decoder
    class with its own forward (HQ-SAM, SAM 2) takes the upscale-all-then-select path."""
    from sam_d2.modeling.mask_decoder import MaskDecoder

    class OwnForward(MaskDecoder):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    model = models[0]
    decoder_class = model.mask_decoder.__class__
    g = torch.Generator().manual_seed(3)
    embedding = torch.randn(1, 256, 16, 16, generator=g)
    coords = torch.rand(12, 2, 2, generator=g) * IMG_SIZE
    labels = torch.randint(0, 2, (12, 2), generator=g)
    try:
        if own_forward:
            model.mask_decoder.__class__ = OwnForward
        with torch.inference_mode():
            low_res, iou = model.decode(embedding, coords, labels, multimask_output=multimask)
            threshold = float(iou.flatten().sort().values[iou.numel() // 2])
            kept, kept_iou, prompt = model.decode_selected(
                embedding, coords, labels, threshold, multimask_output=multimask
            )
    finally:
        model.mask_decoder.__class__ = decoder_class
    keep = iou > threshold
    assert 0 < keep.sum() < keep.numel() and not keep.any(dim=1).all()  # some prompts skipped
    assert torch.equal(prompt, keep.nonzero()[:, 0])
    torch.testing.assert_close(kept_iou, iou[keep], rtol=0, atol=1e-6)
    torch.testing.assert_close(kept, low_res[keep], rtol=0, atol=1e-5)
    with torch.inference_mode():  # nothing passes
        kept, kept_iou, prompt = model.decode_selected(embedding, coords, labels, 1e9)
    assert kept.shape == (0, 64, 64) and kept_iou.shape == prompt.shape == (0,)


def test_generate_batch_equals_single_images(models, image):
    ours_model, _ = models
    kwargs = dict(RELAXED, points_per_side=4, output_mode="coco_rle")
    gen = AutomaticMaskGenerator(ours_model, **kwargs, encoder_batch_size=2)
    images = [image, np.ascontiguousarray(image[:, ::-1])]
    batch = gen.generate_batch(images)
    for one_image, records in zip(images, batch):
        single = gen.generate(one_image)
        assert len(single) == len(records) > 0
        assert [r["segmentation"] for r in records] == [r["segmentation"] for r in single]


def test_max_mask_area_ratio_drops_whole_image_masks(models, image):
    ours_model, _ = models
    kwargs = dict(RELAXED, points_per_side=4, box_nms_thresh=1.0)
    sets = AutomaticMaskGenerator(ours_model, **kwargs).generate_mask_sets([image])[0]
    ratio = 0.5
    big = (sets.areas.double() >= ratio * image.shape[0] * image.shape[1]).sum().item()
    assert 0 < big < len(sets)
    kept = AutomaticMaskGenerator(ours_model, max_mask_area_ratio=ratio, **kwargs)
    assert len(kept.generate_mask_sets([image])[0]) == len(sets) - big


def test_kept_low_res_logits_reproduce_the_masks(models, image):
    ours_model, _ = models
    gen = AutomaticMaskGenerator(
        ours_model, **dict(RELAXED, points_per_side=4), keep_low_res_logits=True
    )
    masks = gen.generate_mask_sets([image])[0]
    assert masks.low_res_logits.shape == (len(masks), 4 * IMG_SIZE // 16, 4 * IMG_SIZE // 16)
    input_hw = gen.input_size(image.shape[:2])
    assert max(input_hw) == IMG_SIZE
    logits = ours_model.postprocess_masks(masks.low_res_logits[:, None], input_hw, image.shape[:2])
    torch.testing.assert_close(logits[:, 0] > ours_model.mask_threshold, masks.decode_masks())
    plain = AutomaticMaskGenerator(ours_model, **dict(RELAXED, points_per_side=4))
    assert plain.generate_mask_sets([image])[0].low_res_logits is None


# ---------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((20, 30, 3), np.float32), ValueError),
        (np.zeros((20, 30), np.uint8), ValueError),
        (np.zeros((20, 30, 4), np.uint8), ValueError),
        (np.zeros((3, 20, 30), np.uint8), ValueError),
        (np.zeros((0, 30, 3), np.uint8), ValueError),
        (torch.zeros(20, 30, 3, dtype=torch.uint8), TypeError),
    ],
)
def test_bad_images_raise(models, bad, error):
    gen = AutomaticMaskGenerator(models[0], points_per_side=2)
    with pytest.raises(error, match="image 0"):
        gen.generate(bad)


def test_bad_arguments_raise(models):
    model = models[0]
    with pytest.raises(ValueError, match="exactly one"):
        AutomaticMaskGenerator(model, points_per_side=4, point_grids=[point_grid(4)])
    with pytest.raises(ValueError, match="exactly one"):
        AutomaticMaskGenerator(model, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        AutomaticMaskGenerator(model, output_mode="polygons")
    with pytest.raises(ValueError, match="layers"):
        AutomaticMaskGenerator(
            model, points_per_side=None, point_grids=[point_grid(4)], crop_n_layers=1
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(box_nms_thresh=1.5), r"box_nms_thresh must lie in \[0.0, 1.0\], got 1.5"),
        (dict(points_per_side=4.5), "points_per_side must be an integer >= 1, got 4.5"),
        (dict(points_per_side=0), "points_per_side must be an integer >= 1, got 0"),
        (dict(points_per_side=True), "points_per_side must be an integer"),
        (dict(points_per_batch="64"), "points_per_batch must be an integer >= 1, got '64'"),
        (dict(pred_iou_thresh="high"), "pred_iou_thresh must be a finite number, got 'high'"),
        (dict(stability_score_thresh=float("nan")), "stability_score_thresh must be a finite"),
        (dict(crop_nms_thresh=-0.1), "crop_nms_thresh must lie in"),
        (dict(crop_n_layers=-1), "crop_n_layers must be an integer >= 0"),
        (dict(crop_overlap_ratio=2.0), "crop_overlap_ratio must lie in"),
        (dict(min_mask_region_area=1.5), "min_mask_region_area must be an integer"),
        (dict(max_mask_area_ratio=0), None),  # 0 is allowed (the filter is then off)
        (dict(max_mask_area_ratio=1.2), "max_mask_area_ratio must lie in"),
        (dict(encoder_batch_size=0), "encoder_batch_size must be an integer >= 1"),
        (dict(keep_low_res_logits="no"), "keep_low_res_logits must be True or False"),
        (dict(points_per_side=None, point_grids=[[[0.5, 2.0]]]), r"point_grids\[0\] must hold"),
        (dict(points_per_side=None, point_grids=[np.zeros((3, 3))]), r"point_grids\[0\] must"),
    ],
)
def test_bad_argument_values_raise_one_line(models, kwargs, message):
    if message is None:
        AutomaticMaskGenerator(models[0], **kwargs)
        return
    with pytest.raises(ValueError, match=message) as err:
        AutomaticMaskGenerator(models[0], **kwargs)
    assert "\n" not in str(err.value)


def test_official_positional_arguments(models):
    """The official constructor's positional order (segment_anything 1.0) is accepted as is."""
    args = (4, 16, 0.5, 0.6, 0.9, 0.8, 1, 0.65, 0.25, 2, None, 7, "coco_rle")
    gen = AutomaticMaskGenerator(models[0], *args)
    ref = SamAutomaticMaskGenerator(models[1], *args)
    for name in (
        "points_per_batch",
        "pred_iou_thresh",
        "stability_score_thresh",
        "stability_score_offset",
        "box_nms_thresh",
        "crop_n_layers",
        "crop_nms_thresh",
        "crop_overlap_ratio",
        "crop_n_points_downscale_factor",
        "min_mask_region_area",
        "output_mode",
    ):
        assert getattr(gen, name) == getattr(ref, name), name
    for ours, theirs in zip(gen.point_grids, ref.point_grids):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(TypeError):
        AutomaticMaskGenerator(models[0], *args, 0.9)  # the extras are keyword-only


# ---------------------------------------------------------------------------------- grids
@pytest.mark.parametrize("hw", [(134, 200), (480, 640), (1500, 2250), (333, 100)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crop_boxes_match_official(hw, layers):
    boxes, layer_idx = crop_boxes(hw, layers, 512 / 1500)
    ref_boxes, ref_layers = ref_amg.generate_crop_boxes(hw, layers, 512 / 1500)
    assert boxes == ref_boxes and layer_idx == ref_layers
    assert len(boxes) == sum(4**k for k in range(layers + 1))
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= hw[1] and 0 <= y0 < y1 <= hw[0]
    # the crops of every layer cover the image
    for k in range(1, layers + 1):
        cover = np.zeros(hw, bool)
        for (x0, y0, x1, y1), layer in zip(boxes, layer_idx):
            if layer == k:
                cover[y0:y1, x0:x1] = True
        assert cover.all()


def test_point_grids():
    grid = point_grid(4)
    assert grid.shape == (16, 2)
    np.testing.assert_array_equal(grid[:4, 0], [0.125, 0.375, 0.625, 0.875])  # x fastest
    np.testing.assert_array_equal(grid[::4, 1], [0.125, 0.375, 0.625, 0.875])
    grids = layer_point_grids(32, 2, 2)
    assert [len(g) for g in grids] == [32 * 32, 16 * 16, 8 * 8]
    for ours, ref in zip(grids, ref_amg.build_all_layer_point_grids(32, 2, 2)):
        np.testing.assert_array_equal(ours, ref)
    with pytest.raises(ValueError):
        layer_point_grids(2, 3, 2)


# ---------------------------------------------------------------------------------- masks / RLE
def _random_masks(n=12, h=23, w=17, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 5, 4, generator=g)
    masks = torch.nn.functional.interpolate(low, (h, w), mode="bilinear")[:, 0] > 0.5
    masks[0] = False  # empty
    masks[1] = True  # full
    masks[2] = False
    masks[2, 0, 0] = True  # first pixel only
    masks[3] = False
    masks[3, -1, -1] = True  # last pixel only
    return masks


def test_uncompressed_rle_round_trip_and_official_counts():
    masks = _random_masks()
    ref = ref_amg.mask_to_rle_pytorch(masks)
    for m, r in zip(masks, ref):
        rle = mask_to_rle(m)
        assert rle == r  # same counts as SAM's encoder (and thus pycocotools')
        np.testing.assert_array_equal(rle_to_mask(rle), m.numpy())
        assert rle_area(rle) == int(m.sum())


def test_coco_rle_decodes_with_pycocotools():
    masks = _random_masks(seed=3)
    packed = PackedRle.from_masks(masks)
    for m, coco in zip(masks, packed.to_coco()):
        assert isinstance(coco["counts"], str)
        decoded = mask_utils.decode({"size": coco["size"], "counts": coco["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), m.numpy())
        assert coco == rle_to_coco(mask_to_rle(m))
        expected = mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
        assert coco["counts"] == expected["counts"].decode()


@pytest.mark.parametrize(
    "box", [(0, 0, 17, 23), (3, 0, 12, 23), (0, 4, 17, 20), (5, 6, 17, 23), (2, 3, 9, 11)]
)
def test_packed_rle_pasted_into_image(box):
    """Encoding crop masks at an offset equals encoding the zero-padded full-size masks."""
    x0, y0, x1, y1 = box
    full = torch.zeros(12, 23, 17, dtype=torch.bool)
    crop = _random_masks(12, y1 - y0, x1 - x0, seed=x0 + 7 * y0)
    full[:, y0:y1, x0:x1] = crop
    packed = PackedRle.from_masks(crop, (23, 17), (x0, y0))
    assert packed.to_uncompressed() == ref_amg.mask_to_rle_pytorch(full)
    torch.testing.assert_close(packed.decode(), full)
    torch.testing.assert_close(packed.areas(), full.sum(dim=(1, 2)))


def test_packed_rle_select_cat_replace():
    a, b = _random_masks(seed=1), _random_masks(seed=2)
    pa, pb = PackedRle.from_masks(a), PackedRle.from_masks(b)
    both = PackedRle.cat([pa, pb])
    idx = torch.tensor([13, 0, 5, 23])
    torch.testing.assert_close(both.select(idx).decode(), torch.cat([a, b])[idx])
    torch.testing.assert_close(both.select(torch.zeros(24, dtype=torch.bool)).decode(), a[:0])
    swapped = pa.replace(torch.tensor([4, 1]), pb.select(torch.tensor([7, 8])))
    expected = a.clone()
    expected[4], expected[1] = b[7], b[8]
    torch.testing.assert_close(swapped.decode(), expected)
    with pytest.raises(ValueError):
        PackedRle.from_masks(a, (10, 10), (0, 0))


def test_batched_measurements_match_official():
    g = torch.Generator().manual_seed(0)
    logits = torch.nn.functional.interpolate(torch.randn(9, 1, 6, 5, generator=g) * 4, (31, 27))[
        :, 0
    ]
    logits[0] = -10  # empty at both thresholds -> NaN
    torch.testing.assert_close(
        stability_score(logits, 0.0, 1.0),
        ref_amg.calculate_stability_score(logits, 0.0, 1.0),
        equal_nan=True,
    )
    masks = logits > 0
    torch.testing.assert_close(masks_to_boxes(masks), ref_amg.batched_mask_to_box(masks))
    boxes = masks_to_boxes(masks) + torch.tensor([40, 30, 40, 30])
    crop, image_box = [40, 30, 67, 61], [0, 0, 67, 100]
    torch.testing.assert_close(
        near_crop_edge(boxes, crop, image_box),
        ref_amg.is_box_near_crop_edge(masks_to_boxes(masks), crop, image_box),
    )
    areas = torch.tensor([10, 95, 96, 100])
    assert covers_image(areas, 100, 0.95).tolist() == [False, True, True, True]
    assert not covers_image(areas, 100, None).any()


def test_small_region_clean_up():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[10:12, 10:12] = False  # small hole (4 px)
    mask[20:30, 20:30] = False  # large hole (100 px)
    mask[0:2, 38:40] = True  # small island (4 px)
    cleaned, changed = clean_mask(mask, min_area=20)
    assert changed
    assert cleaned[10:12, 10:12].all()  # small hole filled
    assert not cleaned[20:30, 20:30].any()  # large hole kept
    assert not cleaned[0:2, 38:40].any()  # small island removed
    assert cleaned[5:10, 5:35].all()
    for mode in ("holes", "islands"):
        ours, ours_changed = remove_small_regions(mask, 20, mode)
        ref, ref_changed = ref_amg.remove_small_regions(mask, 20, mode)
        np.testing.assert_array_equal(ours, ref)
        assert ours_changed == ref_changed
    # every island small: the largest one stays
    islands = np.zeros((20, 20), bool)
    islands[0:2, 0:2] = True
    islands[10:13, 10:13] = True
    kept, changed = remove_small_regions(islands, 50, "islands")
    assert changed and kept.sum() == 9 and kept[10:13, 10:13].all()
    same, changed = clean_mask(mask, min_area=1)
    assert not changed and (same == mask).all()


# ---------------------------------------------------------------------------------- proposals
def _proposal_cfg(max_proposals: int):
    cfg = get_cfg()
    add_sam_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SamAutomaticProposals"
    cfg.MODEL.SAM.VARIANT = "custom"
    cfg.MODEL.SAM.IMAGE_SIZE = IMG_SIZE
    e = cfg.MODEL.SAM.ENCODER
    e.EMBED_DIM, e.DEPTH, e.NUM_HEADS = TINY["embed_dim"], TINY["depth"], TINY["num_heads"]
    e.GLOBAL_ATTN_INDEXES, e.WINDOW_SIZE = list(TINY["global_attn_indexes"]), TINY["window_size"]
    cfg.INPUT.FORMAT = "BGR"
    cfg.INPUT.MIN_SIZE_TEST = 0
    cfg.SAM_AUTO.POINTS_PER_SIDE = 8  # the LVIS setting, on a smaller grid
    cfg.SAM_AUTO.PRED_IOU_THRESH = 0.0
    cfg.SAM_AUTO.STABILITY_SCORE_THRESH = 0.0
    cfg.SAM_AUTO.BOX_NMS_THRESH = 0.9
    cfg.SAM_AUTO.MAX_PROPOSALS = max_proposals
    return cfg


def test_proposals_meta_arch_ranks_and_truncates(models, image):
    ours, _ = models
    model = build_model(_proposal_cfg(max_proposals=10)).eval()
    assert isinstance(model, SamAutomaticProposals)
    model.sam.load_state_dict(ours.state_dict())
    bgr = torch.as_tensor(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)
    h, w = image.shape[:2]
    out = model(
        [{"image": bgr, "height": h, "width": w}, {"image": bgr, "height": 2 * h, "width": 2 * w}]
    )
    inst = out[0]["instances"]
    all_masks = model.generator.generate_mask_sets([image])[0]
    nonempty = all_masks.select(all_masks.areas > 0)
    expected = (nonempty.predicted_iou + torch.nan_to_num(nonempty.stability_score)) / 2
    expected = expected.sort(descending=True).values[:10]
    assert len(nonempty) > 10 and len(inst) == 10
    torch.testing.assert_close(inst.scores, expected)
    torch.testing.assert_close(inst.scores, (inst.predicted_iou + inst.stability_score) / 2)
    assert inst.pred_masks.shape == (10, h, w) and inst.pred_masks.dtype == torch.bool
    assert inst.image_size == (h, w)
    assert (inst.pred_classes == 0).all()
    x0, y0, x1, y1 = inst.pred_boxes.tensor[0].long().tolist()
    ys, xs = inst.pred_masks[0].nonzero(as_tuple=True)
    assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    big = out[1]["instances"]
    assert big.pred_masks.shape == (10, 2 * h, 2 * w)
    torch.testing.assert_close(big.scores, inst.scores)
    with pytest.raises(RuntimeError, match="inference-only"):
        model.train()([{"image": bgr}])


def test_proposals_meta_arch_rejects_bad_settings():
    cfg = _proposal_cfg(max_proposals=10)
    cfg.SAM_AUTO.RANKING = "area"
    with pytest.raises(ValueError, match="ranking"):
        build_model(cfg)
