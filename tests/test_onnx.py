"""ONNX export and the torch-free predictor: onnxruntime vs the torch model on real images.

A tiny SAM (64-d, 2-block encoder at the real 1024 input, the real decoder) with fully random
weights is exported once per module; of ViT-B only the decoder is exported here (its encoder only
by ``tools/benchmark_onnx.py``).
"""

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import REPO_ROOT, shared_path
from PIL import Image

import sam_d2
from sam_d2.export import (
    SamOnnxDecoder,
    export_sam,
    export_sam_decoder,
    export_sam_encoder,
    weights_fingerprint,
)
from sam_d2.utils.random_weights import randomize_state_dict
from sam_d2_onnx import OnnxModelError, PromptError, SamOnnxPredictor

sys.path.insert(0, str(REPO_ROOT / "tools"))
import export_onnx  # noqa: E402

TOL = 1e-3  # fp32 logits, IoUs and embeddings
MIN_AGREEMENT = 0.999  # fraction of mask pixels
TINY = dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=14)


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    with torch.no_grad():
        model.load_state_dict(randomize_state_dict(model.state_dict(), seed))
    return model.eval()


def _image(*parts: str) -> np.ndarray:
    return np.array(Image.open(shared_path(*parts)).convert("RGB"))


@pytest.fixture(scope="module")
def tiny():
    return _randomize(sam_d2.build_sam("custom", **TINY))


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_tiny")
    return export_sam(tiny, out, "custom", quantize=True)


@pytest.fixture(scope="module")
def images():
    return {
        "truck": _image("sam_images", "truck.jpg"),
        "bsds_portrait": _image("bsds500", "images", "test", "101084.jpg"),
    }


@pytest.fixture(scope="module")
def predictors(tiny, exported, images):
    """Per image: (onnx, torch) predictors with the image already embedded."""
    pairs = {}
    for name, image in images.items():
        p_onnx = SamOnnxPredictor(str(exported["encoder"]), str(exported["decoder"]))
        p_torch = sam_d2.SamPredictor(tiny)
        p_onnx.set_image(image)
        p_torch.set_image(image)
        pairs[name] = (p_onnx, p_torch)
    return pairs


def _cases(h: int, w: int, prev: np.ndarray):
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(0, w, 4), rng.uniform(0, h, 4)], axis=1)
    box = np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h])
    return {
        "point": dict(point_coords=pts[:1], point_labels=np.array([1])),
        "points": dict(point_coords=pts, point_labels=np.array([1, 0, 1, 0])),
        "box": dict(box=box),
        "box_points": dict(box=box, point_coords=pts[:2], point_labels=np.array([1, 0])),
        "mask_points": dict(point_coords=pts[:2], point_labels=np.array([1, 1]), mask_input=prev),
        "mask_only": dict(mask_input=prev),
    }


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def test_embeddings_match_torch_on_real_images(predictors):
    for name, (p_onnx, p_torch) in predictors.items():
        assert p_onnx.original_size == p_torch.original_size, name
        assert p_onnx.input_size == p_torch.input_size, name
        emb = np.abs(p_onnx.get_image_embedding() - p_torch.get_image_embedding().numpy()).max()
        assert emb <= TOL, (name, emb)


@pytest.mark.parametrize(
    "case", ["point", "points", "box", "box_points", "mask_points", "mask_only"]
)
def test_predictions_match_torch_on_real_image(predictors, case):
    p_onnx, p_torch = predictors["bsds_portrait"]
    h, w = p_onnx.original_size
    prev = p_torch.predict(box=np.array([0, 0, w / 2, h / 2]))[2][:1]
    prompt = _cases(h, w, prev)[case]
    for multimask in (True, False):
        m1, i1, l1 = p_onnx.predict(**prompt, multimask_output=multimask)
        m2, i2, l2 = p_torch.predict(**prompt, multimask_output=multimask)
        assert m1.shape == m2.shape == ((3 if multimask else 1), h, w), multimask
        assert m1.dtype == np.bool_
        assert np.abs(l1 - l2).max() <= TOL, (multimask, np.abs(l1 - l2).max())
        assert np.abs(i1 - i2).max() <= TOL, (multimask, np.abs(i1 - i2).max())
        assert _agreement(m1, m2) >= MIN_AGREEMENT, (multimask, _agreement(m1, m2))
        assert 0 < m1.mean() < 1  # neither empty nor full: the comparison means something


def test_return_logits_on_large_image(predictors):
    p_onnx, p_torch = predictors["truck"]
    h, w = p_onnx.original_size
    box = np.array([0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h])
    l1 = p_onnx.predict(box=box, multimask_output=False, return_logits=True)[0]
    l2 = p_torch.predict(box=box, multimask_output=False, return_logits=True)[0]
    assert l1.dtype == np.float32 and l1.shape == (1, h, w)
    assert np.abs(l1 - l2).max() <= TOL


def _decoder_feed(p_onnx: SamOnnxPredictor, n: int, with_box: bool) -> dict:
    """N prompts in the official layout: 3 points, then 2 box corners (labels 2, 3) or one
    padding point (label -1); with a box also a mask input."""
    rng = np.random.default_rng(n)
    h, w = p_onnx.input_size
    k = 5 if with_box else 4
    coords = np.stack([rng.uniform(0, w / 2, (n, k)), rng.uniform(0, h / 2, (n, k))], -1)
    labels = np.concatenate([rng.integers(0, 2, (n, 3)), np.zeros((n, k - 3))], 1)
    if with_box:
        coords[:, 4] += (w / 2, h / 2)  # bottom-right corner below and right of the top-left
        labels[:, 3:] = (2, 3)
    else:
        labels[:, 3] = -1
    return {
        "image_embeddings": p_onnx.get_image_embedding(),
        "point_coords": coords.astype(np.float32),
        "point_labels": labels.astype(np.float32),
        "mask_input": rng.normal(0, 3, (n, 1, 256, 256)).astype(np.float32),
        "has_mask_input": np.array([float(with_box)], np.float32),
        "orig_im_size": np.array(p_onnx.original_size, np.float32),
    }


def test_decoder_batched_prompts_match_torch(tiny, predictors):
    """N prompts per call with the official inputs (corners 2/3, padding -1) vs Sam.decode."""
    p_onnx, _ = predictors["bsds_portrait"]
    for n, with_box in ((1, False), (5, True)):
        feed = _decoder_feed(p_onnx, n, with_box)
        masks, iou, low_res = p_onnx.decoder.run(None, feed)
        assert masks.shape == (n, 4) + p_onnx.original_size
        t = {k: torch.from_numpy(v) for k, v in feed.items()}
        prompt = dict(
            point_coords=t["point_coords"][:, :3],
            point_labels=t["point_labels"][:, :3],
            boxes=t["point_coords"][:, 3:].reshape(n, 4) if with_box else None,
            mask_inputs=t["mask_input"] if with_box else None,
        )
        for multimask, keep in ((True, slice(1, None)), (False, slice(0, 1))):
            with torch.no_grad():
                ref_low, ref_iou = tiny.decode(
                    t["image_embeddings"], **prompt, multimask_output=multimask
                )
            tag = (n, with_box, multimask)
            assert np.abs(low_res[:, keep] - ref_low.numpy()).max() <= TOL, tag
            assert np.abs(iou[:, keep] - ref_iou.numpy()).max() <= TOL, tag


def test_int8_decoder_accuracy_loss(exported, predictors):
    """Dynamic int8 quantisation: smaller file, logits off by a bounded amount (figures printed;
    ViT-B's are in the README, from tools/benchmark_onnx.py)."""
    assert exported["decoder_int8"].stat().st_size < 0.5 * exported["decoder"].stat().st_size
    p_fp32, _ = predictors["bsds_portrait"]
    p_int8 = SamOnnxPredictor(str(exported["encoder"]), str(exported["decoder_int8"]))
    p_int8.set_image(_image("bsds500", "images", "test", "101084.jpg"))
    h, w = p_fp32.original_size
    agree, dlogit, diou = [], [], []
    for prompt in list(_cases(h, w, None).values())[:4]:
        m1, i1, l1 = p_fp32.predict(**prompt)
        m2, i2, l2 = p_int8.predict(**prompt)
        agree.append(_agreement(m1, m2))
        dlogit.append(np.abs(l1 - l2).max() / np.abs(l1).max())
        diou.append(np.abs(i1 - i2).max())
    print(
        f"int8 decoder vs fp32: mask pixels agreeing {min(agree):.4f} (worst prompt), "
        f"max |d logit| / max |logit| {max(dlogit):.4f}, max |d IoU| {max(diou):.4f}"
    )
    assert min(agree) >= 0.95 and max(dlogit) < 0.2
    assert max(dlogit) > 0  # it is really the quantised graph


def test_decoder_wrapper_matches_official_onnx_model():
    """Our export wrapper and segment_anything's SamOnnxModel agree in eager mode, for the
    default (all masks) and the single-mask rule, on identical random weights."""
    from sam_reference import matched_models
    from segment_anything.utils.onnx import SamOnnxModel

    ours, ref = matched_models(
        "custom", embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,)
    )
    rng = np.random.default_rng(0)
    for single in (False, True):
        # One click + padding (the single-mask rule picks a multimask output) and points + box
        # (it picks the single-mask output).
        for k, labels in ((2, [1, -1]), (4, [0, 1, 2, 3]))[int(not single) :]:
            feed = (
                torch.randn(1, 256, 64, 64),
                torch.from_numpy(rng.uniform(0, 1024, (1, k, 2)).astype(np.float32)),
                torch.tensor([labels], dtype=torch.float32),
                torch.randn(1, 1, 256, 256),
                torch.tensor([float(k == 4)]),
                torch.tensor([321.0, 481.0]),
            )
            with torch.no_grad():
                a = SamOnnxDecoder(ours, single)(*feed)
                b = SamOnnxModel(ref, return_single_mask=single)(*feed)
            for x, y, name in zip(a, b, ("masks", "iou_predictions", "low_res_masks")):
                assert x.shape == y.shape, (single, labels, name)
                assert (x - y).abs().max() <= 1e-4, (single, labels, name)


@pytest.fixture(scope="module")
def vit_b_single_decoder(tmp_path_factory):
    """A real ViT-B model's decoder, exported with the single-mask rule (another variant and
    other weights than the tiny export)."""
    model = sam_d2.build_sam("vit_b").eval()
    state = model.state_dict()
    decoder = {k: v for k, v in state.items() if not k.startswith("image_encoder.")}
    with torch.no_grad():  # randomising ViT-B's encoder too would only cost time
        model.load_state_dict({**state, **randomize_state_dict(decoder, seed=1)})
    path = tmp_path_factory.mktemp("onnx_vit_b") / "decoder.onnx"
    export_sam_decoder(model, path, "vit_b", weights_fingerprint(model), return_single_mask=True)
    return model, path


def test_single_mask_decoder_runs_in_onnxruntime(vit_b_single_decoder, predictors):
    model, path = vit_b_single_decoder
    p_onnx, _ = predictors["bsds_portrait"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for with_box in (False, True):
        feed = _decoder_feed(p_onnx, 3, with_box)
        out = session.run(None, feed)
        with torch.no_grad():
            ref = SamOnnxDecoder(model, True)(*(torch.from_numpy(v) for v in feed.values()))
        assert out[0].shape == (3, 1) + p_onnx.original_size
        for x, y in zip(out, ref):
            assert np.abs(x - y.numpy()).max() <= TOL


def test_predictor_rejects_files_of_another_model(exported, vit_b_single_decoder):
    enc, dec = str(exported["encoder"]), str(exported["decoder"])
    other = str(vit_b_single_decoder[1])
    bad = {
        "is a vit_b decoder but": (enc, other, None),
        "expected a sam_d2 image encoder": (dec, dec, None),
        "not a SAM decoder": (enc, enc, None),
        "ONNX file not found": (enc, dec + ".missing", None),
        "but vit_h was requested": (enc, dec, "vit_h"),
    }
    for message, (e, d, variant) in bad.items():
        with pytest.raises(OnnxModelError, match=message) as info:
            SamOnnxPredictor(e, d, variant=variant)
        assert "\n" not in str(info.value)


def test_predictor_prompt_errors(exported, images):
    p = SamOnnxPredictor(str(exported["encoder"]), str(exported["decoder"]))
    with pytest.raises(RuntimeError, match="call set_image"):
        p.predict(box=np.array([0, 0, 10, 10]))
    p.set_image(images["bsds_portrait"][:, :, ::-1], image_format="BGR")
    h, w = p.original_size
    bad = {
        "lies outside": dict(point_coords=np.array([[w + 5, 1]]), point_labels=np.array([1])),
        "point_labels must be 1": dict(point_coords=np.array([[1, 1]]), point_labels=np.array([2])),
        "without point_coords": dict(point_labels=np.array([1])),
        "not XYXY": dict(box=np.array([50, 50, 10, 60])),
        "mask_input must be": dict(mask_input=np.zeros((1, 64, 64))),
        "no prompt given": {},
    }
    for message, prompt in bad.items():
        with pytest.raises(PromptError, match=message):
            p.predict(**prompt)
    with pytest.raises(ValueError, match="uint8"):
        p.set_image(images["truck"].astype(np.float32))


def _run_cli(capsys, *argv: str) -> tuple:
    rc = export_onnx.main(list(argv))
    return rc, capsys.readouterr().err.strip().splitlines()


def test_export_cli_bad_input_one_line_errors(capsys, tmp_path, tiny):
    tiny_ckpt = tmp_path / "tiny_sam.pth"
    torch.save(tiny.state_dict(), tiny_ckpt)
    out = tmp_path / "out"
    out.mkdir()
    cases = {
        "unknown SAM variant 'vit_x'": ("--variant", "vit_x", "--random-weights", "0"),
        "tiny_sam.pth": ("--variant", "vit_b", "--checkpoint", str(tiny_ckpt)),
        "nothere.pth": ("--variant", "vit_b", "--checkpoint", str(tmp_path / "nothere.pth")),
        "no weights": ("--variant", "vit_b"),
    }
    for message, argv in cases.items():
        rc, err = _run_cli(capsys, *argv, "--out", str(out))
        errors = [line for line in err if line.startswith("error:")]
        assert rc == 2 and len(errors) == 1 and message in errors[0], (message, err)
    rc, err = _run_cli(
        capsys, "--variant", "vit_b", "--random-weights", "0", "--out", str(tmp_path / "missing")
    )
    assert (
        rc == 2
        and err[-1]
        == f"error: output folder {tmp_path / 'missing'} does not exist (create it first)"
    )
    assert list(out.iterdir()) == []  # nothing half-written


def test_vitdet_backbone_export_matches_torch(capsys, tmp_path):
    """The ViTDet backbone (tiny config, random weights) through the CLI, vs torch on a real
    image normalised and padded as Detectron2 does."""
    argv = [
        "--config-file",
        str(REPO_ROOT / "configs" / "sam_vitdet_tiny_cpu.yaml"),
        "--part",
        "vitdet-backbone",
        "--random-weights",
        "0",
        "--out",
        str(tmp_path),
    ]
    assert export_onnx.main(argv) == 0, capsys.readouterr().err
    model, _ = export_onnx.build_model(export_onnx.parse_args(argv))
    backbone = model.backbone if hasattr(model, "backbone") else model.detector.backbone
    image = _image("bsds500", "images", "test", "100007.jpg")  # 321 x 481
    x = torch.from_numpy(np.ascontiguousarray(image[:256, :256])).permute(2, 0, 1).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    batch = torch.stack([(x - mean) / std, (x.flip(-1) - mean) / std])  # B = 2
    with torch.no_grad():
        ref = backbone(batch)
    session = ort.InferenceSession(str(tmp_path / "vitdet_backbone.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert names == list(ref.keys())
    for name, out in zip(names, session.run(None, {"images": batch.numpy()})):
        assert np.abs(out - ref[name].numpy()).max() <= TOL, name


_TORCH_FREE_SCRIPT = """
import importlib.abc, json, sys

class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "detectron2", "sam_d2"):
            raise ImportError(f"{name} is blocked: this process must run without torch")
        return None

sys.meta_path.insert(0, _Blocker())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the blocker failed: torch was imported")

import numpy as np
from PIL import Image
from sam_d2_onnx import SamOnnxPredictor

enc, dec, image, out = sys.argv[1:5]
p = SamOnnxPredictor(enc, dec)
p.set_image(np.array(Image.open(image).convert("RGB")))
masks, iou, low = p.predict(point_coords=np.array([[100.0, 200.0]]), point_labels=np.array([1]),
                            box=np.array([20.0, 50.0, 300.0, 400.0]))
np.savez(out, masks=masks, iou=iou, low=low, emb=p.get_image_embedding())
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_torch_free_predictor_in_a_process_without_torch(exported, predictors, tmp_path):
    image = shared_path("bsds500", "images", "test", "101084.jpg")
    out = tmp_path / "out.npz"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _TORCH_FREE_SCRIPT,
            str(exported["encoder"]),
            str(exported["decoder"]),
            str(image),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "sam_d2_onnx" in loaded and "onnxruntime" in loaded
    assert not loaded & {"torch", "torchvision", "detectron2", "sam_d2"}
    res = np.load(out)
    _, p_torch = predictors["bsds_portrait"]
    masks, iou, low = p_torch.predict(
        point_coords=np.array([[100.0, 200.0]]),
        point_labels=np.array([1]),
        box=np.array([20.0, 50.0, 300.0, 400.0]),
    )
    assert np.abs(res["emb"] - p_torch.get_image_embedding().numpy()).max() <= TOL
    assert np.abs(res["low"] - low).max() <= TOL and np.abs(res["iou"] - iou).max() <= TOL
    assert _agreement(res["masks"], masks) >= MIN_AGREEMENT


def test_encoder_with_external_weights_file(tiny, exported, predictors, tmp_path):
    """ViT-H's encoder exceeds protobuf's 2 GB: its weights go to encoder.onnx.data, which must
    travel with the graph (moved into place together) and load from beside it."""
    path = export_sam_encoder(
        tiny, tmp_path / "encoder.onnx", "custom", weights_fingerprint(tiny), external_data=True
    )
    data = tmp_path / "encoder.onnx.data"
    assert data.stat().st_size > path.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.onnx", "encoder.onnx.data"]
    p = SamOnnxPredictor(str(path), str(exported["decoder"]))
    p.set_image(_image("bsds500", "images", "test", "101084.jpg"))
    ref = predictors["bsds_portrait"][1].get_image_embedding().numpy()
    assert np.abs(p.get_image_embedding() - ref).max() <= TOL
