"""SAM 2.1 image model (variants "sam2.1_hiera_*"): parity with the official ``sam2`` package
(``SAM2ImagePredictor``, ``SAM2AutomaticMaskGenerator``) on fully random weights through the public
API, the official checkpoint layouts of every size through every loading path, wrong files."""

import numpy as np
import pytest
import torch
from families_reference import (
    LOGIT_TOL,
    assert_same_outputs,
    match_records,
    prompt_cases,
    random_state,
    real_image,
)

import sam_d2
from sam_d2 import AutomaticMaskGenerator, SamPredictor
from sam_d2.modeling.sam import Sam, build_sam_modules
from sam_d2.modeling.sam2 import image_model_state_dict

sam2_build = pytest.importorskip("sam2.build_sam", reason="reference package sam2 absent")


def _official(size: str):
    """SAM 2.1 as ``build_sam2`` builds it (dynamic multimask on, its default)."""
    return sam2_build.build_sam2(
        f"configs/sam2.1/sam2.1_hiera_{size}.yaml", ckpt_path=None, device="cpu"
    ).eval()


@pytest.mark.parametrize("size", ["t", "s", "b+", "l"])
def test_official_layout_loads_without_missing_or_unexpected(size):
    """The real checkpoints' keys (those of the official model), mapped to the image model, fill
    every tensor of ours; only the video path's tensors are left out, by name."""
    official = _official(size).state_dict()
    with torch.device("meta"):
        ours = Sam(*build_sam_modules(f"sam2.1_hiera_{size}"))
    mapped = image_model_state_dict(official)
    result = ours.load_state_dict(mapped, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    left_out = {k.split(".")[0] for k in official} - {"image_encoder", "sam_prompt_encoder"}
    assert left_out <= {
        "sam_mask_decoder", "no_mem_embed", "memory_attention", "memory_encoder",
        "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
        "mask_downsample", "obj_ptr_proj", "obj_ptr_tpos_proj",
    }  # fmt: skip


def test_image_model_parity_with_sam2_image_predictor():
    """Same weights, same preprocessed image: our encode + decode against SAM2ImagePredictor,
    every prompt kind, multimask and single-mask (SAM 2's dynamic multimask) outputs."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ref = _official("t")
    state = random_state(ref, seed=6)
    ref.load_state_dict(state)
    ours = Sam(*build_sam_modules("sam2.1_hiera_t")).eval()
    result = ours.load_state_dict(image_model_state_dict(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    image = real_image("bsds500", "images", "test", "100007.jpg")
    h, w = image.shape[:2]
    predictor = SAM2ImagePredictor(ref)
    predictor.set_image(image)
    with torch.no_grad():
        features = ours.encode(predictor._transforms(image)[None])
    to_input = np.array([1024 / w, 1024 / h])  # SAM 2 stretches the image to the square
    prev = predictor.predict(point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1]))
    for name, prompt in prompt_cases(h, w, prev[2][:1]).items():
        for multimask in (True, False):
            _, iou_ref, low_ref = predictor.predict(**prompt, multimask_output=multimask)
            kwargs = {}
            if "point_coords" in prompt:
                kwargs["point_coords"] = torch.tensor(prompt["point_coords"] * to_input)[None]
                kwargs["point_labels"] = torch.tensor(prompt["point_labels"])[None]
            if "box" in prompt:
                box = prompt["box"].reshape(2, 2) * to_input
                kwargs["boxes"] = torch.tensor(box).reshape(1, 4)
            if "mask_input" in prompt:
                kwargs["mask_inputs"] = torch.tensor(prompt["mask_input"])[None]
            kwargs = {k: v.float() if v.is_floating_point() else v for k, v in kwargs.items()}
            with torch.no_grad():
                low, iou = ours.decode(features, multimask_output=multimask, **kwargs)
            tag = f"{name}/multimask={multimask}"
            assert low.shape[1:] == low_ref.shape and iou.shape[1:] == iou_ref.shape, tag
            assert np.abs(low[0].numpy() - low_ref).max() <= LOGIT_TOL, tag
            assert np.abs(iou[0].numpy() - iou_ref).max() <= LOGIT_TOL, tag


def test_decoder_refuses_plain_sam_embeddings():
    _, prompt_encoder, decoder = build_sam_modules("sam2.1_hiera_t", img_size=256)
    sparse, dense = prompt_encoder(None, torch.tensor([[10.0, 10.0, 50.0, 50.0]]), None)
    with pytest.raises(ValueError, match="256 channels, expected 1024"):
        decoder(torch.zeros(1, 256, 16, 16), prompt_encoder.get_dense_pe(), sparse, dense, True)


@pytest.fixture(scope="module")
def models():
    """(ours through ``build_sam``, official ``build_sam2``) hiera_t with the same random weights,
    ours loading the official state dict as it is (its load hook renames the keys)."""
    ref = _official("t")
    state = random_state(ref, seed=6)
    ref.load_state_dict(state)
    ours = sam_d2.build_sam("sam2.1_hiera_t").eval()
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours, ref


def test_predictor_parity_with_sam2_image_predictor(models):
    """``SamPredictor`` against ``SAM2ImagePredictor`` from the uint8 image (SAM 2's stretch,
    float resize and normalisation): every prompt kind, multimask on and off, logits too."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ours, ref = models
    image = real_image("bsds500", "images", "test", "100007.jpg")  # 481 x 321: not square
    h, w = image.shape[:2]
    p1, p2 = SamPredictor(ours), SAM2ImagePredictor(ref)
    p1.set_image(image)
    p2.set_image(image)
    assert p1.input_size == (1024, 1024) and p1.original_size == (h, w)
    embed = p2._features["image_embed"]
    ours_embed = p1.get_image_embedding()[:, : embed.shape[1]]
    assert (ours_embed - embed).abs().max().item() <= LOGIT_TOL
    prev = p2.predict(point_coords=np.array([[w / 2, h / 2]]), point_labels=np.array([1]))[2]
    for name, prompt in prompt_cases(h, w, prev[:1]).items():
        for multimask in (True, False):
            tag = f"{name}/multimask={multimask}"
            kwargs = dict(prompt, multimask_output=multimask)
            assert_same_outputs(p1.predict(**kwargs), p2.predict(**kwargs), tag)
            m1 = p1.predict(**kwargs, return_logits=True)[0]
            m2 = p2.predict(**kwargs, return_logits=True)[0]
            assert m1.shape == m2.shape == (3 if multimask else 1, h, w), tag
            assert np.abs(m1 - m2).max() <= LOGIT_TOL, (tag, np.abs(m1 - m2).max())


@pytest.fixture(scope="module")
def official_file(models, tmp_path_factory):
    """An official ``sam2.1_hiera_tiny.pt`` layout: ``{"model": state}`` with the video tensors."""
    _, ref = models
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": ref.state_dict()}, path)
    return path


def _assert_same_weights(model, ours):
    loaded = model.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, loaded[key]), key


def test_official_file_loads_through_every_path(models, official_file):
    """``build_sam(checkpoint=)``, ``sam_model_registry``, ``SamCheckpointer``,
    ``MODEL.SAM.WEIGHTS`` and plain Detectron2 ``DetectionCheckpointer``: zero missing /
    unexpected keys."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    ours, _ = models
    path = str(official_file)
    _assert_same_weights(sam_d2.build_sam("sam2.1_hiera_t", checkpoint=path), ours)
    _assert_same_weights(sam_d2.sam_model_registry["sam2.1_hiera_t"](checkpoint=path), ours)
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file("configs/sam2.1_hiera_t.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    incompatible = DetectionCheckpointer(model).load(path)
    assert incompatible == {}  # nothing left over after the model section
    _assert_same_weights(model, ours)
    sam_d2.SamCheckpointer(model).load(path)
    cfg.MODEL.SAM.WEIGHTS = path
    _assert_same_weights(build_model(cfg), ours)


def test_wrong_files_name_the_variants(official_file, tmp_path):
    """A SAM ViT-B file into SAM 2.1, and SAM 2.1 files of another size: one line naming both."""
    vit_b = tmp_path / "sam_vit_b.pth"
    with torch.device("meta"):
        shapes = sam_d2.build_sam("vit_b").state_dict()
    torch.save({k: torch.zeros(v.shape) for k, v in shapes.items()}, vit_b)
    t_into = "the checkpoint is sam2.1_hiera_t (SAM 2.1) but the model is"
    cases = [
        (vit_b, "sam2.1_hiera_t", "the checkpoint is vit_b but the model is sam2.1_hiera_t"),
        (official_file, "sam2.1_hiera_s", f"{t_into} sam2.1_hiera_s (SAM 2.1)"),
        (official_file, "sam2.1_hiera_b+", f"{t_into} sam2.1_hiera_b+ (SAM 2.1)"),
        (official_file, "vit_b", f"{t_into} vit_b"),
    ]
    for path, variant, expected in cases:
        with pytest.raises(sam_d2.CheckpointError) as err:
            sam_d2.build_sam(variant, checkpoint=str(path))
        message = str(err.value)
        assert "\n" not in message and str(path) in message and expected in message, message


def test_automatic_generator_parity_with_sam2(models):
    """``AutomaticMaskGenerator`` against ``SAM2AutomaticMaskGenerator`` with the settings both
    share (multimask grid prompts, no mask-to-mask refinement: ``use_m2m=False``, its default) and
    the thresholds passed explicitly (SAM 2's default ``pred_iou_thresh`` is 0.8, SAM's 0.88);
    relaxed so that masks of a random model survive. An 8 x 8 grid: its points are exact in
    float32 too (SAM 2 records them as float32, SAM as float64)."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    ours, ref = models
    image = real_image("bsds500", "images", "test", "100007.jpg")[::2, ::2]  # 241 x 161
    kwargs = dict(
        points_per_side=8,
        pred_iou_thresh=0.3,
        stability_score_thresh=0.0,
        box_nms_thresh=0.7,
        output_mode="coco_rle",
    )
    got = AutomaticMaskGenerator(ours, **kwargs).generate(image)
    want = SAM2AutomaticMaskGenerator(ref, use_m2m=False, multimask_output=True, **kwargs).generate(
        image
    )
    assert len(want) > 5 and len(got) == len(want)
    pairs, ious = match_records(got, want)
    assert min(ious) >= 0.99
    for a, b in pairs:
        assert a["bbox"] == pytest.approx(b["bbox"], abs=2) and a["crop_box"] == b["crop_box"]
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=LOGIT_TOL)
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=1e-3)


def test_every_variant_has_one_frame():
    """The frame a config-only caller reads (mappers) is the built model's (its encoder's)."""
    from sam_d2.data.transforms import variant_frame
    from sam_d2.modeling.families import FAMILY_VARIANTS

    for variant, family in FAMILY_VARIANTS.items():
        with torch.device("meta"):
            model = Sam(*build_sam_modules(variant))
        assert variant_frame(variant) == family.frame == model.frame, variant
    assert variant_frame("vit_b") == variant_frame("custom") == "pad"


def test_stretch_transform_is_sam2s_resize():
    """``StretchToSquare``: SAM 2's float resize (``SAM2Transforms``), its coordinate scaling, and a
    Detectron2 transform for mappers (segmentations nearest, polygons scaled)."""
    from sam2.utils.transforms import SAM2Transforms

    from sam_d2.data.transforms import StretchToSquare, frame_transform

    image = real_image("bsds500", "images", "test", "100007.jpg")
    h, w = image.shape[:2]
    resize = frame_transform("stretch", 1024)
    assert isinstance(resize, StretchToSquare) and resize.get_preprocess_shape(h, w, 1024) == (
        1024,
        1024,
    )
    ours = resize.apply_image(image)
    assert ours.shape == (1024, 1024, 3) and ours.dtype == np.float32
    ref = SAM2Transforms(1024, 0.0)(image)  # normalised (3, 1024, 1024)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    ref_pixels = (ref * std[:, None, None] + mean[:, None, None]) * 255
    assert (torch.from_numpy(ours).permute(2, 0, 1) - ref_pixels).abs().max() < 1e-3
    xy = np.array([[w, h], [w / 2, h / 4]])
    np.testing.assert_allclose(resize.apply_coords(xy, (h, w)), [[1024, 1024], [512, 256]])
    t = resize.get_transform(image)
    seg = np.zeros((h, w), np.uint8)
    seg[: h // 2] = 7
    assert t.apply_segmentation(seg).dtype == np.uint8 and set(
        np.unique(t.apply_segmentation(seg))
    ) == {0, 7}
    np.testing.assert_allclose(t.apply_polygons([np.array([[w, h]], float)])[0], [[1024, 1024]])


def test_point_mapper_and_predictor_refuse_the_wrong_frame(tmp_path):
    """The point-benchmark mapper stretches for a SAM 2 config; a padded image is refused with one
    line by the predictor and by ``postprocess_masks``."""
    from detectron2.config import get_cfg
    from PIL import Image

    from sam_d2.data.point_mapper import PointEvalDatasetMapper

    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file("configs/sam2.1_hiera_t.yaml")
    cfg.MODEL.SAM.IMAGE_SIZE = 256
    path = tmp_path / "im.png"
    Image.fromarray(np.zeros((60, 100, 3), np.uint8)).save(path)
    seg = [[10.0, 10.0, 50.0, 10.0, 50.0, 40.0]]
    out = PointEvalDatasetMapper(cfg)(
        {"file_name": str(path), "annotations": [{"segmentation": seg}]}
    )
    assert out["image"].shape == (3, 256, 256) and out["instances"].gt_masks.tensor.shape == (
        1,
        60,
        100,
    )
    model = sam_d2.build_sam("sam2.1_hiera_t", img_size=256)
    with pytest.raises(ValueError, match=r"set_torch_image expects \(1, 3, 256, 256\)"):
        SamPredictor(model).set_torch_image(torch.zeros(1, 3, 154, 256), (60, 100))
    with pytest.raises(ValueError, match="stretches images to 256x256"):
        model.postprocess_masks(torch.zeros(1, 1, 64, 64), (154, 256), (60, 100))


def test_onnx_export_refuses_sam2(tmp_path):
    from sam_d2.export import ExportError, export_sam

    model = sam_d2.build_sam("sam2.1_hiera_t", img_size=256)
    with pytest.raises(ExportError, match="sam2.1_hiera_t is a SAM 2 model"):
        export_sam(model, tmp_path, "sam2.1_hiera_t")


def test_official_file_into_a_composed_meta_arch(models, official_file):
    """``DetectorPromptedSam`` (ground-truth boxes, no detector) takes the official file whole:
    its part loading adopts SAM 2's keys before placing them under ``sam.``."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    ours, _ = models
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file("configs/sam_vitdet_tiny_cpu.yaml")
    cfg.merge_from_list(
        ["MODEL.SAM_PROMPTED.BOX_SOURCE", "gt", "MODEL.SAM.VARIANT", "sam2.1_hiera_t"]
        + ["MODEL.SAM.IMAGE_SIZE", 1024, "MODEL.SAM.ENCODER.OUT_CHANS", 256]
        + ["MODEL.SAM.DECODER.MLP_DIM", 2048, "MODEL.SAM.DECODER.NUM_HEADS", 8]
        + ["MODEL.SAM.DECODER.IOU_HEAD_HIDDEN_DIM", 256]
    )
    model = build_model(cfg)
    assert model.detector is None
    DetectionCheckpointer(model).load(str(official_file))
    _assert_same_weights(model.sam, ours)


def test_encoder_gradients_with_and_without_recompute():
    """``MODEL.SAM.TRAIN.ACTIVATION_CHECKPOINTING`` reaches the Hiera blocks: same gradients."""
    model = sam_d2.build_sam("sam2.1_hiera_t", img_size=128)
    model.load_state_dict(random_state(model, seed=11))
    model.train()
    batch = model.preprocess([torch.rand(3, 128, 128) * 255])
    calls = []
    model.image_encoder.trunk.blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.image_encoder.activation_checkpointing = recompute
        calls.clear()
        model.encode(batch).pow(2).mean().backward()
        assert len(calls) == (2 if recompute else 1)  # recomputed in backward
        grads.append({n: p.grad.clone() for n, p in model.image_encoder.named_parameters()})
    assert set(grads[0]) == {n for n, _ in model.image_encoder.named_parameters()}
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6), name


def test_large_logits_are_clamped_like_sam2(models):
    """Low-res logits beyond +-32 come back clamped, as from ``SAM2ImagePredictor``; the masks
    are computed before clamping in both."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ours, ref = models
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    for key in [k for k in state if "output_hypernetworks_mlps" in k and "layers.2" in k]:
        state[key] *= 50  # logits far beyond +-32
    big_ref = _official("t")
    big_ref.load_state_dict(state)
    big_ours = sam_d2.build_sam("sam2.1_hiera_t").eval()
    big_ours.load_state_dict(state)
    image = real_image("bsds500", "images", "test", "100007.jpg")[::4, ::4]
    p1, p2 = SamPredictor(big_ours), SAM2ImagePredictor(big_ref)
    p1.set_image(image)
    p2.set_image(image)
    prompt = dict(point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1]))
    ours_out, ref_out = p1.predict(**prompt, return_logits=True), p2.predict(
        **prompt, return_logits=True
    )
    assert np.abs(ours_out[0]).max() > 32 and np.abs(ours_out[2]).max() == 32
    for a, b in zip(ours_out, ref_out):
        assert np.abs(a - b).max() <= 50 * LOGIT_TOL
