"""ViTDet from yacs (``build_vitdet_backbone``, ``configs/ViTDet``) vs Detectron2's own ViTDet.

The reference is Detectron2's LazyConfig model ``common/models/mask_rcnn_vitdet.py`` from the
installed model zoo, with the edits of upstream's ``projects/ViTDet/configs/{COCO,LVIS}/*.py``
(not shipped in the wheel) transcribed in :func:`_upstream_model`.

- tiny parity: the same random weights (every parameter, rel-pos tables and the cls-token position
  embedding included) in a model-zoo ``.pkl``, loaded into ours through ``SamCheckpointer``,
  Detectron2's plain ``DetectionCheckpointer`` or a plain strict ``load_state_dict``, give the same
  pyramid features and the same boxes, scores, classes and masks (float64, so no decision can
  flip on rounding);
- the official model-zoo ``.pkl`` layout (ViT-B, real dims) loads with zero missing / unexpected
  keys and every value in place; all 12 configs (B/L/H x Mask/Cascade x COCO/LVIS) have exactly
  upstream's keys and shapes, and the same non-parameter settings (thresholds, top-k, matchers,
  box weights, poolers, fed loss, drop path, windows, padding), compared attribute by attribute.
"""

import contextlib
import os
import pickle
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import pytest
import torch
import torchvision.ops.boxes as box_ops
from conftest import SHARED_DATA
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyCall as L
from detectron2.config import get_cfg, instantiate
from detectron2.data import transforms as T
from detectron2.data.detection_utils import get_fed_loss_cls_weights, read_image
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.roi_heads import (
    CascadeROIHeads,
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
)
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from sam_d2.checkpoint import SamCheckpointer
from sam_d2.config import add_sam_config
from sam_d2.modeling.backbone import global_attn_indexes_from_window_blocks

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "ViTDet")

# projects/ViTDet/configs: ViT presets (embed_dim, depth, num_heads, global blocks) and drop path.
_VIT = {
    "b": (768, 12, 12, (2, 5, 8, 11)),
    "l": (1024, 24, 16, (5, 11, 17, 23)),
    "h": (1280, 32, 16, (7, 15, 23, 31)),
}
_DROP_PATH = {("coco", "b"): 0.1, ("coco", "l"): 0.4, ("coco", "h"): 0.5}
_DROP_PATH.update({("lvis", "b"): 0.1, ("lvis", "l"): 0.4, ("lvis", "h"): 0.4})
_EPOCHS = {("coco", "h"): "75ep"}

ALL_MODELS = [
    (dataset, cascade, size)
    for dataset in ("coco", "lvis")
    for cascade in (False, True)
    for size in ("b", "l", "h")
]


def _config_file(dataset: str, cascade: bool, size: str) -> str:
    name = "cascade_mask_rcnn" if cascade else "mask_rcnn"
    epochs = _EPOCHS.get((dataset, size), "100ep")
    return os.path.join(CONFIG_DIR, dataset.upper(), f"{name}_vitdet_{size}_{epochs}.yaml")


def _upstream_model(dataset: str, cascade: bool, size: str):
    """Detectron2's LazyConfig ViTDet model with the edits of the upstream project config."""
    model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
    dim, depth, heads, global_blocks = _VIT[size]
    net = model.backbone.net
    net.embed_dim, net.depth, net.num_heads = dim, depth, heads
    net.drop_path_rate = _DROP_PATH[(dataset, size)]
    net.window_block_indexes = [i for i in range(depth) if i not in global_blocks]
    lvis = dataset == "lvis"
    if lvis:  # LVIS/mask_rcnn_vitdet_b_100ep.py
        model.roi_heads.num_classes = 1203
        pred = model.roi_heads.box_predictor
        pred.test_score_thresh = 0.02
        pred.test_topk_per_image = 300
        pred.use_sigmoid_ce = True
        pred.use_fed_loss = True
        pred.get_fed_loss_cls_weights = lambda: get_fed_loss_cls_weights(["lvis_v1_train"], 0.5)
    if cascade:  # {COCO,LVIS}/cascade_mask_rcnn_vitdet_b_100ep.py
        for k in ("box_head", "box_predictor", "proposal_matcher"):
            model.roi_heads.pop(k)
        lvis_pred = dict(
            test_score_thresh=0.02,
            test_topk_per_image=300,
            use_sigmoid_ce=True,
            use_fed_loss=True,
            get_fed_loss_cls_weights=lambda: get_fed_loss_cls_weights(["lvis_v1_train"], 0.5),
        )
        model.roi_heads.update(
            _target_=CascadeROIHeads,
            box_heads=[
                L(FastRCNNConvFCHead)(
                    input_shape=ShapeSpec(channels=256, height=7, width=7),
                    conv_dims=[256, 256, 256, 256],
                    fc_dims=[1024],
                    conv_norm="LN",
                )
                for _ in range(3)
            ],
            box_predictors=[
                L(FastRCNNOutputLayers)(
                    input_shape=ShapeSpec(channels=1024),
                    box2box_transform=L(Box2BoxTransform)(weights=(w1, w1, w2, w2)),
                    num_classes="${...num_classes}",
                    cls_agnostic_bbox_reg=True,
                    **(lvis_pred if lvis else dict(test_score_thresh=0.05)),
                )
                for (w1, w2) in [(10, 5), (20, 10), (30, 15)]
            ],
            proposal_matchers=[
                L(Matcher)(thresholds=[th], labels=[0, 1], allow_low_quality_matches=False)
                for th in [0.5, 0.6, 0.7]
            ],
        )
    return model


def _our_cfg(config_file: str):
    cfg = get_cfg()
    add_sam_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Skip weight initialisation (torch.nn.init.*_ become no-ops): big models build in ~1 s."""
    saved = {
        n: f
        for n, f in vars(torch.nn.init).items()
        if n.endswith("_") and not n.startswith("_") and callable(f)
    }
    for n in saved:
        setattr(torch.nn.init, n, lambda t, *a, **k: t)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


@pytest.fixture
def float64_nms(monkeypatch):
    """Detectron2 casts boxes to float32 before NMS; let float64 scores through (both models)."""
    orig = box_ops.batched_nms
    monkeypatch.setattr(box_ops, "batched_nms", lambda b, s, i, t: orig(b.to(s.dtype), s, i, t))


def _randomize(model: nn.Module, seed: int) -> None:
    """Random values for every parameter: norms' weights around 1, everything else around 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            is_norm_weight = name.endswith("weight") and p.dim() == 1
            p.copy_(1 + 0.1 * r if is_norm_weight else (0.05 if p.dim() > 1 else 0.02) * r)


def _save_model_zoo_pkl(state_dict: Dict[str, torch.Tensor], path: str) -> None:
    """A checkpoint in Detectron2 model-zoo format: numpy arrays plus an author tag."""
    data = {"model": {k: v.numpy() for k, v in state_dict.items()}, "__author__": "Detectron2"}
    with open(path, "wb") as f:
        pickle.dump(data, f)


def _load_recording(model: nn.Module, path: str, checkpointer=SamCheckpointer):
    """Load through a Detectron2 checkpointer; return fvcore's incompatible-keys record."""
    ck = checkpointer(model)
    seen = []
    ck._log_incompatible_keys = seen.append
    ck.load(path)
    assert len(seen) == 1
    return seen[0]


def _test_image(size: int) -> Tuple[np.ndarray, Dict[str, Any]]:
    """A real COCO image if ../shared/data is present, else a smooth synthetic one."""
    sample = SHARED_DATA / "coco_sample" / "images"
    if sample.is_dir():
        img = read_image(str(sorted(sample.glob("*.jpg"))[0]), format="RGB")
    else:
        yy, xx = np.mgrid[0:300, 0:400]
        img = np.stack([xx % 97 * 2.5, yy % 61 * 4, (xx + yy) % 127 * 2], -1).astype(np.uint8)
    resized = T.ResizeShortestEdge(size, size).get_transform(img).apply_image(img)
    x = {
        "image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
        "height": img.shape[0],
        "width": img.shape[1],
    }
    return img, x


# ---------------------------------------------------------------------------------------------
# tiny parity
TINY = dict(img=256, dim=64, depth=4, heads=4, window_blocks=[0, 2], ch=64, fc=128)


def _tiny_pair(cascade: bool):
    """(Detectron2 LazyConfig model, our yacs model), tiny, same structure, ours not loaded."""
    t = TINY
    model = _upstream_model("coco", cascade, "b")
    net = model.backbone.net
    net.img_size, net.embed_dim, net.depth, net.num_heads = (
        t["img"],
        t["dim"],
        t["depth"],
        t["heads"],
    )
    net.window_block_indexes = t["window_blocks"]
    net.drop_path_rate = 0.0
    model.backbone.square_pad = t["img"]
    model.backbone.out_channels = t["ch"]
    model.proposal_generator.head.in_channels = t["ch"]
    model.proposal_generator.post_nms_topk = (1000, 50)
    rh = model.roi_heads
    heads = rh.box_heads if cascade else [rh.box_head]
    for h in heads:
        h.input_shape = ShapeSpec(channels=t["ch"], height=7, width=7)
        h.conv_dims, h.fc_dims = [t["ch"]] * 4, [t["fc"]]
    for p in rh.box_predictors if cascade else [rh.box_predictor]:
        p.input_shape = ShapeSpec(channels=t["fc"])
        p.test_score_thresh = 0.0
        p.test_topk_per_image = 20
    rh.mask_head.input_shape = ShapeSpec(channels=t["ch"], width=14, height=14)
    rh.mask_head.conv_dims = [t["ch"]] * 5
    torch.manual_seed(0)
    d2 = instantiate(model).eval()

    cfg = _our_cfg(_config_file("coco", cascade, "b"))
    v = cfg.MODEL.VIT
    v.IMG_SIZE, v.EMBED_DIM, v.DEPTH, v.NUM_HEADS = t["img"], t["dim"], t["depth"], t["heads"]
    v.WINDOW_BLOCK_INDEXES = t["window_blocks"]
    v.SQUARE_PAD, v.SFP_OUT_CHANNELS = t["img"], t["ch"]
    cfg.MODEL.ROI_BOX_HEAD.CONV_DIM, cfg.MODEL.ROI_BOX_HEAD.FC_DIM = t["ch"], t["fc"]
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = t["ch"]
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    ours = build_model(cfg).eval()
    return d2, ours


@pytest.mark.parametrize(
    "cascade,loader",
    [(False, "SamCheckpointer"), (True, "SamCheckpointer"), (False, "DetectionCheckpointer")]
    + [(True, "load_state_dict")],
    ids=["mask_rcnn-sam_d2", "cascade-sam_d2", "mask_rcnn-detectron2", "cascade-plain"],
)
def test_tiny_vitdet_matches_detectron2(cascade, loader, float64_nms, tmp_path):
    d2, ours = _tiny_pair(cascade)
    _randomize(d2, seed=1)
    path = str(tmp_path / "model_final.pkl")
    _save_model_zoo_pkl(d2.state_dict(), path)
    if loader == "load_state_dict":
        ours.load_state_dict(d2.state_dict(), strict=True)
    else:
        checkpointer = {"SamCheckpointer": SamCheckpointer}.get(loader, DetectionCheckpointer)
        inc = _load_recording(ours, path, checkpointer)
        assert not inc.missing_keys and not inc.unexpected_keys and not inc.incorrect_shapes
    # the cls-token position embedding (1, 1 + 14 * 14, C) is kept as upstream keeps it
    assert torch.equal(ours.backbone.net.pos_embed.detach(), d2.backbone.net.pos_embed.detach())

    d2.double()
    ours.double()
    _, x = _test_image(TINY["img"])
    with torch.no_grad():
        feats_ref = d2.backbone(d2.preprocess_image([x]).tensor)
        feats = ours.backbone(ours.preprocess_image([x]).tensor)
        assert list(feats) == list(feats_ref) == ["p2", "p3", "p4", "p5", "p6"]
        for k in feats_ref:
            assert feats[k].shape == feats_ref[k].shape
            diff = (feats[k] - feats_ref[k]).abs().max().item()
            assert diff < 1e-10, f"{k}: max abs diff {diff}"
        ref = d2([x])[0]["instances"]
        out = ours([x])[0]["instances"]
    assert len(ref) == 20 and len(out) == len(ref)
    assert torch.equal(out.pred_classes, ref.pred_classes)
    assert (out.pred_boxes.tensor - ref.pred_boxes.tensor).abs().max().item() < 1e-6
    assert (out.scores - ref.scores).abs().max().item() < 1e-10
    assert ref.pred_masks.any() and torch.equal(out.pred_masks, ref.pred_masks)


# ---------------------------------------------------------------------------------------------
# official key layout at real sizes
def test_model_zoo_pkl_vit_b_loads_without_missing_or_unexpected_keys(tmp_path):
    """A ViTDet-B Mask R-CNN ``model_final.pkl`` (real dims) loads completely, values in place."""
    with _no_init():
        d2 = instantiate(_upstream_model("coco", False, "b"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in d2.parameters():
            p.normal_(generator=g)
    path = str(tmp_path / "model_final_61ccd1.pkl")
    _save_model_zoo_pkl(d2.state_dict(), path)
    with _no_init():
        ours = build_model(_our_cfg(_config_file("coco", False, "b")))
    inc = _load_recording(ours, path)
    assert not inc.missing_keys and not inc.unexpected_keys and not inc.incorrect_shapes
    expected = d2.state_dict()
    got = ours.state_dict()
    assert set(got) == set(expected)
    bad = [k for k in got if not torch.equal(got[k], expected[k])]
    assert not bad, f"{len(bad)} tensors differ after loading, e.g. {bad[:3]}"


@pytest.mark.parametrize(
    "dataset,cascade,size",
    ALL_MODELS,
    ids=[f"{d}-{'cascade' if c else 'mask'}-{s}" for d, c, s in ALL_MODELS],
)
def test_config_mirrors_upstream(dataset, cascade, size):
    """Keys, shapes and every non-parameter setting equal upstream's; ViT-H cascade COCO (the
    SAM paper's detector) also goes through SamCheckpointer with no missing/unexpected keys."""
    with _no_init():
        d2 = instantiate(_upstream_model(dataset, cascade, size))
        ours = build_model(_our_cfg(_config_file(dataset, cascade, size)))

    ref_shapes = {k: tuple(v.shape) for k, v in d2.state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert (
        sorted(set(ref_shapes) - set(shapes)) == [] and sorted(set(shapes) - set(ref_shapes)) == []
    )
    bad = {k: (ref_shapes[k], shapes[k]) for k in shapes if shapes[k] != ref_shapes[k]}
    assert not bad

    ref_settings, settings = _settings(d2), _settings(ours)
    assert set(settings) == set(ref_settings)
    diff = {k: (ref_settings[k], settings[k]) for k in settings if settings[k] != ref_settings[k]}
    assert not diff, f"settings differ from upstream: {diff}"
    for name, buf in d2.named_buffers():  # anchors, pixel mean/std, federated-loss class weights
        assert torch.equal(dict(ours.named_buffers())[name], buf), name
    _check_vit(d2.backbone.net, ours.backbone.net)

    if (dataset, cascade, size) == ("coco", True, "h"):
        ck = SamCheckpointer(ours)
        inc = ck._load_model({"model": d2.state_dict()})
        assert not inc.missing_keys and not inc.unexpected_keys and not inc.incorrect_shapes


_SKIP_ATTRS = {"training", "_is_full_backward_hook"}


def _plain(value: Any, depth: int = 0) -> Any:
    """A comparable snapshot of a plain (non-module, non-tensor) attribute value."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, (ListConfig, DictConfig)):
        return _plain(OmegaConf.to_container(value, resolve=True), depth)
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _plain(v, depth + 1)) for k, v in value.items()))
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.tolist() if value.numel() < 50 else None)
    if callable(value) and not hasattr(value, "__dict__"):
        return "<callable>"
    if hasattr(value, "__dict__") and depth < 3 and not isinstance(value, nn.Module):
        items = {k: v for k, v in vars(value).items() if not k.startswith("__")}
        return (type(value).__name__, _plain(items, depth + 1))
    return type(value).__name__


def _settings(model: nn.Module) -> Dict[str, Any]:
    """Every plain attribute of every module outside the ViT trunk (compared across builders)."""
    out = {}
    for name, mod in model.named_modules():
        if name.startswith("backbone.net"):
            continue
        out[f"{name}:<class>"] = type(mod).__name__
        for k, v in vars(mod).items():
            if k in _SKIP_ATTRS or k in ("_parameters", "_buffers", "_modules") or "hook" in k:
                continue
            if (
                k.startswith("_non_persistent")
                or k.startswith("_state_dict")
                or k.startswith("_load")
            ):
                continue
            if callable(v) and not isinstance(v, (nn.Module, Matcher, Box2BoxTransform)):
                continue  # e.g. the fed-loss weight lambda (its result is a compared buffer)
            if k == "loss_weight" and isinstance(v, dict):
                # yacs passes {"loss_box_reg": w}, LazyConfig a float; missing keys weigh 1.0
                v = {"loss_cls": 1.0, "loss_box_reg": 1.0, **v}
            out[f"{name}.{k}"] = _plain(v)
    return out


def _check_vit(ref: nn.Module, net: nn.Module) -> None:
    """Windows, drop path, patching and outputs of the ViT trunk."""
    assert len(net.blocks) == len(ref.blocks)
    for i, (a, b) in enumerate(zip(ref.blocks, net.blocks)):
        assert b.window_size == a.window_size, f"block {i}"
        ref_dp = getattr(a.drop_path, "drop_prob", 0.0)
        assert b.drop_path == pytest.approx(ref_dp, abs=1e-7), f"block {i} drop path"
        assert b.norm1.eps == a.norm1.eps and b.norm2.eps == a.norm2.eps
        assert b.attn.num_heads == a.attn.num_heads
        assert hasattr(b.attn, "rel_pos_h") == hasattr(a.attn, "rel_pos_h")
    assert net.patch_embed.proj.stride == ref.patch_embed.proj.stride
    assert net.output_shape() == ref.output_shape()
    assert net._out_features == ref._out_features


def test_window_blocks_to_global_indexes():
    assert global_attn_indexes_from_window_blocks(12, [0, 1, 3, 4, 6, 7, 9, 10]) == [2, 5, 8, 11]
    with pytest.raises(ValueError, match="out of range"):
        global_attn_indexes_from_window_blocks(4, [0, 4])


def test_lsj_training_mapper_mirrors_upstream():
    """LSJ of coco_loader_lsj.py: flip, ResizeScale(0.1, 2.0, 1024), FixedSizeCrop(1024, no pad),
    boxes recomputed from the cropped masks; test-time ResizeShortestEdge(1024, 1024)."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    from sam_d2.engine.trainer import build_test_mapper, build_train_mapper

    cfg = _our_cfg(_config_file("coco", True, "h"))
    assert build_test_mapper(cfg) is None  # Detectron2's default mapper
    mapper = build_train_mapper(cfg)
    augs = mapper.augmentations.augs
    assert [type(a).__name__ for a in augs] == ["RandomFlip", "ResizeScale", "FixedSizeCrop"]
    assert augs[0].horizontal and augs[0].prob == 0.5
    assert (augs[1].min_scale, augs[1].max_scale) == (0.1, 2.0)
    assert (augs[1].target_height, augs[1].target_width) == (1024, 1024)
    assert tuple(augs[2].crop_size) == (1024, 1024) and augs[2].pad is False
    assert mapper.recompute_boxes and mapper.use_instance_mask and mapper.image_format == "RGB"
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (1024, 1024)

    root = SHARED_DATA / "coco_sample"
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root}")
    name = "sam_d2_test_coco_sample_lsj"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(root / "instances_sample.json"), str(root / "images"))
    cfg.INPUT.MASK_FORMAT = "bitmask"  # the sample stores RLE masks (COCO train: polygons)
    mapper = build_train_mapper(cfg)
    torch.manual_seed(0)
    np.random.seed(0)
    for d in DatasetCatalog.get(name):
        out = mapper(d)
        assert max(out["image"].shape[1:]) <= 1024
        inst = out["instances"]
        assert len(inst) > 0
        assert torch.equal(inst.gt_boxes.tensor, inst.gt_masks.get_bounding_boxes().tensor)
