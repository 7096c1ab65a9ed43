"""Detector-prompted SAM (``DetectorPromptedSam``), its mapper, weights, and COCO evaluation.

- the SAM step (box -> most confident of 3 masks -> one refinement with mask + box) equals the
  official ``segment_anything.SamPredictor`` doing the same, on identical random weights;
- with a tiny random detector: boxes/scores/classes are the detector's own, masks do not depend on
  the decoding chunk size;
- plumbing proof through ``tools/train_net.py --eval-only`` on a real ``coco_2017_val`` laid out
  under ``DETECTRON2_DATASETS`` (the two real COCO sample images): ground-truth boxes + a
  ground-truth-mask oracle in place of SAM give mask AP 100; the same masks shifted by 3 px give
  strictly less while box AP stays 100;
- ``FastCOCOEvaluator`` (faster-coco-eval) reports what Detectron2's pycocotools path reports;
- errors: unknown detector meta-architecture, SAM weights of another variant, bad box source.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from conftest import REPO_ROOT, shared_path
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import BitMasks, Boxes, Instances, pairwise_iou
from PIL import Image

from sam_d2.checkpoint import CheckpointError
from sam_d2.config import add_sam_config
from sam_d2.data.mappers import DetectorPromptedSamMapper
from sam_d2.data.transforms import ResizeLongestSide
from sam_d2.engine import load_weights
from sam_d2.evaluation.coco import FastCOCOEvaluator
from sam_d2.modeling.meta_arch.detector_prompted import DetectorPromptedSam

TINY_CONFIG = REPO_ROOT / "configs" / "sam_vitdet_tiny_cpu.yaml"
# pycocotools' decode triggers a numpy 2 copy-keyword DeprecationWarning on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _cfg(*opts: Any):
    cfg = get_cfg()
    add_sam_config(cfg)
    cfg.merge_from_file(str(TINY_CONFIG))
    cfg.merge_from_list(list(opts))
    return cfg


def _rgb(*parts: str) -> np.ndarray:
    return np.array(Image.open(shared_path(*parts)).convert("RGB"))


def _inputs(image: np.ndarray, boxes: np.ndarray = None, sam_size: int = 256) -> Dict[str, Any]:
    """An input dict whose "image" is the original image (frame = original pixels)."""
    sam = ResizeLongestSide(sam_size).get_transform(image).apply_image(image)
    x = {
        "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "sam_image": torch.as_tensor(np.ascontiguousarray(sam.transpose(2, 0, 1))),
        "height": image.shape[0],
        "width": image.shape[1],
    }
    if boxes is not None:
        gt = Instances(image.shape[:2])
        gt.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
        gt.gt_classes = torch.arange(len(boxes))
        x["instances"] = gt
    return x


# ---------------------------------------------------------------------------------------------
def test_sam_step_matches_official_predictor():
    """Most confident of 3 masks, then box + its logits once more == segment_anything does."""
    pytest.importorskip("segment_anything")
    from sam_reference import matched_models
    from segment_anything import SamPredictor as RefPredictor

    torch.manual_seed(0)
    sam, ref = matched_models("custom")
    image = _rgb("sam_images", "truck.jpg")
    h, w = image.shape[:2]
    boxes = np.array(
        [[0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h], [0.4 * w, 0.1 * h, 0.95 * w, 0.5 * h], [0, 0, w, h]],
        dtype=np.float32,
    )
    model = DetectorPromptedSam(detector=None, sam=sam, box_source="gt").eval()
    with torch.no_grad():
        out = model([_inputs(image, boxes, sam_size=1024)])[0]["instances"]

    predictor = RefPredictor(ref)
    predictor.set_image(image)
    for i, box in enumerate(boxes):
        masks, ious, low = predictor.predict(box=box, multimask_output=True)
        best = int(np.argmax(ious))
        mask, iou, _ = predictor.predict(
            box=box, mask_input=low[best][None], multimask_output=False
        )
        assert abs(float(out.mask_scores[i]) - float(iou[0])) < 1e-4
        assert (out.pred_masks[i].numpy() != mask[0]).mean() < 1e-5, i
        assert mask[0].any() and not mask[0].all()
    assert torch.equal(out.pred_boxes.tensor, torch.as_tensor(boxes))
    assert torch.equal(out.scores, torch.ones(3)) and torch.equal(out.pred_classes, torch.arange(3))


def test_refine_and_multimask_switches_change_the_procedure():
    torch.manual_seed(0)
    cfg = _cfg("MODEL.SAM_PROMPTED.BOX_SOURCE", "gt")
    model = build_model(cfg).eval()
    image = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    x = _inputs(image, np.array([[10, 10, 150, 100], [50, 20, 190, 110]]))
    with torch.no_grad():
        emb = model.sam.embed_images(model.sam_images([x]))
        boxes = model.to_sam_frame(x["instances"].gt_boxes.tensor, (120, 200), (154, 256))
        results = {}
        for multimask in (False, True):
            for refine in (False, True):
                model.multimask_output, model.refine = multimask, refine
                results[multimask, refine] = model.decode_boxes(emb, boxes)
        # by hand: the single-output mask, and the refinement of the most confident of three
        single, single_iou = model.sam.decode(emb, boxes=boxes, multimask_output=False)
        three, three_iou = model.sam.decode(emb, boxes=boxes, multimask_output=True)
        best = three[torch.arange(2), three_iou.argmax(1)][:, None]
        refined, refined_iou = model.sam.decode(
            emb, boxes=boxes, mask_inputs=best, multimask_output=False
        )
    assert torch.allclose(results[False, False][0], single, atol=1e-5)
    assert torch.allclose(results[True, False][0], best, atol=1e-5)
    assert torch.allclose(results[True, False][1], three_iou.max(1).values, atol=1e-6)
    assert torch.allclose(results[True, True][0], refined, atol=1e-5)
    assert torch.allclose(results[True, True][1], refined_iou[:, 0], atol=1e-6)
    assert not torch.allclose(results[True, True][0], results[True, False][0])


def test_to_sam_frame_maps_and_clips():
    boxes = torch.tensor([[0.0, 0.0, 640.0, 480.0], [-5.0, 10.0, 700.0, 200.0]])
    out = DetectorPromptedSam.to_sam_frame(boxes, (480, 640), (768, 1024))
    assert torch.allclose(out[0], torch.tensor([0.0, 0.0, 1024.0, 768.0]))
    assert torch.allclose(out[1], torch.tensor([0.0, 16.0, 1024.0, 320.0]))


def test_detector_boxes_and_chunking(tmp_path):
    """Detector outputs pass through unchanged (top MAX_BOXES); masks are chunk-size invariant."""
    torch.manual_seed(0)
    cfg = _cfg("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.SAM_PROMPTED.MAX_BOXES", 7)
    model = build_model(cfg).eval()
    assert model.detector is not None and type(model.detector).__name__ == "GeneralizedRCNN"
    image = _rgb(
        "coco_sample", "images", sorted(os.listdir(shared_path("coco_sample", "images")))[0]
    )
    mapper = DetectorPromptedSamMapper(cfg, is_train=False)
    path = tmp_path / "img.jpg"
    Image.fromarray(image).save(path, quality=98)
    x = mapper(
        {"file_name": str(path), "height": image.shape[0], "width": image.shape[1], "image_id": 1}
    )
    assert max(x["image"].shape[1:]) == 256 and max(x["sam_image"].shape[1:]) == 256
    assert x["sam_image"].dtype == torch.uint8 and "instances" not in x
    with torch.no_grad():
        det = model.detector([x])[0]["instances"]
        out = model([x])[0]["instances"]
        model.sam.prompt_chunk_size = 3
        out3 = model([x])[0]["instances"]
    assert len(det) > 7 and len(out) == 7
    order = det.scores.argsort(descending=True, stable=True)[:7]
    assert torch.equal(out.pred_boxes.tensor, det.pred_boxes.tensor[order])
    assert torch.equal(out.scores, det.scores[order])
    assert torch.equal(out.pred_classes, det.pred_classes[order])
    assert out.pred_masks.shape == (7,) + image.shape[:2] and out.pred_masks.dtype == torch.bool
    assert out.image_size == image.shape[:2]
    # other batch sizes round differently: only pixels at the threshold may flip
    assert (out3.pred_masks != out.pred_masks).float().mean() < 1e-4
    assert torch.allclose(out3.mask_scores, out.mask_scores, atol=1e-5)


def test_sam_image_fallback_from_detector_image():
    """Without "sam_image" the SAM input is resampled from "image" (BGR flipped to RGB)."""
    torch.manual_seed(0)
    model = build_model(_cfg("MODEL.SAM_PROMPTED.BOX_SOURCE", "gt", "INPUT.FORMAT", "BGR")).eval()
    image = np.random.default_rng(1).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    bgr = torch.as_tensor(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)))
    (sam_image,) = model.sam_images([{"image": bgr, "height": 300, "width": 200}])
    assert tuple(sam_image.shape) == (3, 256, 171)
    # channel order: the red channel of the original stays the first channel
    red = torch.nn.functional.interpolate(
        torch.as_tensor(image[None, :, :, 0], dtype=torch.float32)[None],
        (256, 171),
        mode="bilinear",
        antialias=True,
    )[0, 0]
    assert (sam_image[0] - red).abs().mean() < 1.0


# ---------------------------------------------------------------------------------------------
# weights and errors
def _sam_state(cfg) -> Dict[str, torch.Tensor]:
    """An official-layout SAM checkpoint (image_encoder./prompt_encoder./mask_decoder.) for cfg."""
    from sam_d2.modeling.meta_arch.promptable import PromptableSam

    sam = PromptableSam(cfg)
    g = torch.Generator().manual_seed(3)
    return {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in sam.state_dict().items()
    }


def test_weights_land_in_detector_and_sam(tmp_path):
    cfg = _cfg()
    torch.manual_seed(0)
    # a detector checkpoint in Detectron2 model-zoo format, from the plain detector of this cfg
    det_cfg = cfg.clone()
    det_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    det_state = {
        k: torch.randn(v.shape) if v.is_floating_point() else v
        for k, v in build_model(det_cfg).state_dict().items()
    }
    det_path = tmp_path / "model_final.pkl"
    with open(det_path, "wb") as f:
        pickle.dump(
            {
                "model": {k: v.numpy() for k, v in det_state.items()},
                "__author__": "Detectron2 Model Zoo",
            },
            f,
        )
    sam_state = _sam_state(cfg)
    sam_path = tmp_path / "sam_tiny.pth"
    torch.save(sam_state, sam_path)

    cfg.MODEL.WEIGHTS, cfg.MODEL.SAM.WEIGHTS = str(det_path), str(sam_path)
    model = build_model(cfg)
    load_weights(model, cfg)
    for k, v in det_state.items():
        assert torch.equal(model.detector.state_dict()[k], v), k
    for k, v in sam_state.items():
        assert torch.equal(model.sam.state_dict()[k], v), k


def test_sam_weights_of_another_variant_fail_loudly(tmp_path):
    other = _cfg("MODEL.SAM.ENCODER.EMBED_DIM", 96)
    path = tmp_path / "sam_other.pth"
    torch.save(_sam_state(other), path)
    cfg = _cfg("MODEL.SAM_PROMPTED.BOX_SOURCE", "gt", "MODEL.SAM.WEIGHTS", str(path))
    with pytest.raises(CheckpointError, match=r"sam_other\.pth: .*do not fit the model"):
        build_model(cfg)  # MODEL.SAM.WEIGHTS is loaded when the model is built


def test_unknown_detector_meta_architecture():
    cfg = _cfg("MODEL.SAM_PROMPTED.DETECTOR_META_ARCHITECTURE", "ViTDetCascadeTypo")
    with pytest.raises(
        ValueError, match="'ViTDetCascadeTypo' is not a registered.*GeneralizedRCNN"
    ):
        build_model(cfg)
    cfg = _cfg("MODEL.SAM_PROMPTED.DETECTOR_META_ARCHITECTURE", "DetectorPromptedSam")
    with pytest.raises(ValueError, match="cannot be 'DetectorPromptedSam'"):
        build_model(cfg)


def test_bad_box_source_missing_gt_and_training():
    with pytest.raises(ValueError, match="BOX_SOURCE must be one of"):
        build_model(_cfg("MODEL.SAM_PROMPTED.BOX_SOURCE", "proposals"))
    model = build_model(_cfg("MODEL.SAM_PROMPTED.BOX_SOURCE", "gt")).eval()
    x = _inputs(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(KeyError, match="needs 'instances' with gt_boxes"):
        model([x])
    model.train()
    with pytest.raises(NotImplementedError, match="evaluation-only"):
        model([x])
    with pytest.raises(ValueError, match="inference only"):
        DetectorPromptedSamMapper(_cfg(), is_train=True)


def test_oracle_uses_every_gt_box_beyond_max_boxes():
    """MAX_BOXES bounds detector boxes only: the ground-truth oracle never drops an object."""
    model = build_model(
        _cfg("MODEL.SAM_PROMPTED.BOX_SOURCE", "gt", "MODEL.SAM_PROMPTED.MAX_BOXES", 2)
    ).eval()
    boxes = np.array([[i * 10, 5, i * 10 + 8, 40] for i in range(5)], np.float32)
    x = _inputs(np.zeros((64, 80, 3), np.uint8), boxes)
    with torch.no_grad():
        out = model([x])[0]["instances"]
    assert len(out) == 5 and torch.equal(out.pred_boxes.tensor, torch.as_tensor(boxes))


def test_empty_gt_gives_empty_instances():
    model = build_model(_cfg("MODEL.SAM_PROMPTED.BOX_SOURCE", "gt")).eval()
    x = _inputs(np.zeros((64, 80, 3), np.uint8), np.zeros((0, 4), np.float32))
    with torch.no_grad():
        out = model([x])[0]["instances"]
    assert len(out) == 0 and out.pred_masks.shape == (0, 64, 80)


# ---------------------------------------------------------------------------------------------
# COCO evaluation
def test_fast_coco_evaluator_matches_pycocotools(tmp_path):
    """Same AP (every metric, both tasks) as Detectron2's COCOEvaluator on pycocotools."""
    name = "sam_d2_test_coco_sample_eval"
    root = shared_path("coco_sample")
    # The sample has an annotation with id 0, which pycocotools reads as "unmatched" (the fast
    # evaluator renumbers it, see test_annotation_id_zero_is_renumbered); compare the engines
    # on ids 1..N.
    data = json.loads((root / "instances_sample.json").read_text())
    for i, a in enumerate(data["annotations"]):
        a["id"] = i + 1
    json_file = tmp_path / "instances_sample_ids1.json"
    json_file.write_text(json.dumps(data))
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(json_file), str(root / "images"))
    dicts = DatasetCatalog.get(name)
    rng = np.random.default_rng(0)
    batches = []
    for d in dicts:
        annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        h, w = d["height"], d["width"]
        masks = np.stack([_decode(a["segmentation"], h, w) for a in annos])
        keep = rng.random(len(annos)) < 0.8  # some misses
        masks = np.roll(masks[keep], shift=(int(rng.integers(-4, 5)), 2), axis=(1, 2))
        inst = Instances((h, w))
        boxes = torch.tensor([a["bbox"] for a, k in zip(annos, keep) if k], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        inst.pred_boxes = Boxes(boxes + torch.as_tensor(rng.normal(0, 3, boxes.shape)).float())
        inst.pred_masks = torch.as_tensor(masks)
        inst.scores = torch.as_tensor(rng.random(len(boxes))).float()
        inst.pred_classes = torch.tensor([a["category_id"] for a, k in zip(annos, keep) if k])
        batches.append(([{"image_id": d["image_id"]}], [{"instances": inst}]))
    results = []
    for cls in (COCOEvaluator, FastCOCOEvaluator):
        ev = cls(
            name, output_dir=str(tmp_path / cls.__name__), use_fast_impl=False, distributed=False
        )
        ev.reset()
        for inputs, outputs in batches:
            ev.process(inputs, outputs)
        results.append(ev.evaluate())
    ref, fast = results
    assert set(ref) == set(fast) == {"bbox", "segm"}
    for task in ref:
        for metric, value in ref[task].items():
            assert fast[task][metric] == pytest.approx(value, abs=1e-6, nan_ok=True), (task, metric)
    assert 10 < ref["segm"]["AP"] < 95


def test_annotation_id_zero_is_renumbered(tmp_path):
    """The real sample has an annotation with id 0: perfect masks still score AP 100."""
    name = "sam_d2_test_coco_sample_id0"
    root = shared_path("coco_sample")
    data = json.loads((root / "instances_sample.json").read_text())
    assert min(a["id"] for a in data["annotations"]) == 0
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, str(root / "instances_sample.json"), str(root / "images"))
    ev = FastCOCOEvaluator(name, tasks=("segm",), distributed=False, output_dir=str(tmp_path))
    ev.reset()
    for d in DatasetCatalog.get(name):
        annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        inst = Instances((d["height"], d["width"]))
        inst.pred_masks = torch.as_tensor(
            np.stack([_decode(a["segmentation"], d["height"], d["width"]) for a in annos])
        )
        inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
        inst.scores = torch.ones(len(annos))
        inst.pred_classes = torch.tensor([a["category_id"] for a in annos])
        ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    assert ev.evaluate()["segm"]["AP"] == pytest.approx(100.0)


def _decode(segm: Any, h: int, w: int) -> np.ndarray:
    """A COCO segmentation (polygons, RLE, or uncompressed RLE) -> (h, w) bool mask."""
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, h, w))
    elif isinstance(segm["counts"], list):
        rle = mask_util.frPyObjects(segm, h, w)
    else:
        rle = segm
    return mask_util.decode(rle).astype(bool)


# ---------------------------------------------------------------------------------------------
# plumbing proof through tools/train_net.py on a real coco_2017_val under DETECTRON2_DATASETS
class OracleDetectorPromptedSam(DetectorPromptedSam):
    """SAM replaced by the ground truth: each box prompt gets the mask of the annotation whose
    box it is (best box IoU), optionally shifted right by ``shift`` pixels. Test only."""

    shift = 0
    _annotations: Dict[int, List[Dict[str, Any]]] = {}

    def predict_masks(self, batched_inputs, boxes) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for x, b in zip(batched_inputs, boxes):
            annos = self._annotations[x["image_id"]]
            h, w = x["height"], x["width"]
            gt = torch.tensor([a["bbox"] for a in annos], dtype=torch.float32)
            gt[:, 2:] += gt[:, :2]
            match = pairwise_iou(Boxes(b.cpu()), Boxes(gt)).argmax(dim=1)
            masks = [
                np.roll(_decode(annos[j]["segmentation"], h, w), self.shift, axis=1)
                for j in match.tolist()
            ]
            masks = torch.as_tensor(np.stack(masks)) if masks else torch.zeros(0, h, w).bool()
            out.append((masks, torch.ones(len(masks))))
        return out


def run_oracle_eval(output_dir: str, shifts: Sequence[int]) -> Dict[str, Any]:
    """In a process whose DETECTRON2_DATASETS was set before importing Detectron2: evaluate the
    oracle on the builtin ``coco_2017_val`` with ``tools/train_net.py --eval-only``."""
    sys.path.insert(0, str(REPO_ROOT / "tools"))
    import train_net

    if "OracleDetectorPromptedSam" not in META_ARCH_REGISTRY:
        META_ARCH_REGISTRY.register(OracleDetectorPromptedSam)
    OracleDetectorPromptedSam._annotations = {
        d["image_id"]: [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        for d in DatasetCatalog.get("coco_2017_val")
    }
    results = {"json_file": MetadataCatalog.get("coco_2017_val").json_file}
    for shift in shifts:
        OracleDetectorPromptedSam.shift = shift
        args = train_net.default_argument_parser().parse_args(
            [
                "--config-file",
                str(TINY_CONFIG),
                "--eval-only",
                "MODEL.META_ARCHITECTURE",
                "OracleDetectorPromptedSam",
                "MODEL.SAM_PROMPTED.BOX_SOURCE",
                "gt",
                # the tiny config's MAX_BOXES (20) is below the sample's GT count (40): the
                # oracle must still use them all
                "DATASETS.TEST",
                '("coco_2017_val",)',
                "OUTPUT_DIR",
                os.path.join(output_dir, f"shift{shift}"),
            ]
        )
        results[shift] = train_net.main(args)
    return results


def test_oracle_through_train_net_reports_ap_100(tmp_path):
    sample = shared_path("coco_sample")
    coco = tmp_path / "datasets" / "coco"
    (coco / "annotations").mkdir(parents=True)
    os.symlink(sample / "images", coco / "val2017")
    os.symlink(sample / "instances_sample.json", coco / "annotations" / "instances_val2017.json")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(Path(__file__).parent)])
    code = (
        "import json, sys\n"
        "from test_prompted import run_oracle_eval\n"
        f"r = run_oracle_eval({str(tmp_path / 'out')!r}, (0, 3))\n"
        "print('RESULTS=' + json.dumps(r))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS=")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads(lines[-1][len("RESULTS=") :])
    # the builtin registration really read DETECTRON2_DATASETS
    assert results["json_file"] == str(coco / "annotations" / "instances_val2017.json")
    exact, shifted = results["0"], results["3"]
    assert exact["segm"]["AP"] == pytest.approx(100.0)
    assert exact["bbox"]["AP"] == pytest.approx(100.0)
    assert shifted["bbox"]["AP"] == pytest.approx(100.0)
    assert shifted["segm"]["AP"] < 99.0 and shifted["segm"]["AP75"] < exact["segm"]["AP75"]
    written = json.loads((tmp_path / "out" / "shift0" / "results.json").read_text())
    assert written["segm"]["AP"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    "name,cascade_classes,sam_width,max_boxes",
    [
        ("sam_vitdet.yaml", 80, 1280, 100),
        ("sam_vitdet_lvis.yaml", 1203, 1280, 300),
        ("sam_vitdet_b_cpu.yaml", 80, 768, 100),
    ],
)
def test_release_configs_build(name, cascade_classes, sam_width, max_boxes):
    """The full-size configs load and build (weights not initialised: structure only)."""
    from test_vitdet import _no_init

    cfg = get_cfg()
    add_sam_config(cfg)
    cfg.merge_from_file(str(REPO_ROOT / "configs" / name))
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.WEIGHTS.endswith(".pkl") and cfg.MODEL.SAM.WEIGHTS.endswith(".pth")
    cfg.MODEL.SAM.WEIGHTS = ""  # no download here: MODEL.SAM.WEIGHTS is loaded at build time
    with _no_init():
        model = build_model(cfg)
    assert type(model) is DetectorPromptedSam and model.max_boxes == max_boxes
    assert type(model.detector.roi_heads).__name__ == "CascadeROIHeads"
    assert model.detector.roi_heads.num_classes == cascade_classes
    assert model.sam.image_encoder.patch_embed.proj.out_channels == sam_width
    assert model.multimask_output and model.refine and model.sam.input_format == "RGB"
