"""The annotation app's HTTP API: prompts equal SamPredictor, storage round-trips, bad input.

A tiny random SAM (tests/conftest.py) and real images from ../shared/data, plus synthetic files
for the formats and failure cases (grayscale, RGBA, 16-bit TIFF, a huge image, a text file, a
corrupt JPEG, a truncated PNG).
"""

import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the annotation app needs fastapi (pip install fastapi)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (pip install httpx)")
from conftest import REPO_ROOT, shared_path, tiny_sam  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from sam_d2 import SamPredictor  # noqa: E402
from sam_d2.annotate.embeddings import (  # noqa: E402
    EmbeddingCache,
    Encoder,
    ModelSlot,
    build_app_model,
)
from sam_d2.annotate.register import ENV_VAR, register_from_env  # noqa: E402
from sam_d2.annotate.server import AppSettings, create_app  # noqa: E402
from sam_d2.annotate.storage import SOURCES, atomic_write_json  # noqa: E402
from sam_d2.automatic.rle import coco_to_mask, mask_to_rle  # noqa: E402
from sam_d2.data.image_io import read_image_rgb  # noqa: E402

FAST_PREFILL = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def model():
    return tiny_sam(seed=3)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Real photos plus every awkward kind of file the folder may hold."""
    d = tmp_path_factory.mktemp("images")
    for name in ("dog.jpg", "groceries.jpg"):
        shutil.copy(shared_path("sam_images", name), d / name)
    rng = np.random.default_rng(0)
    (d / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 60), dtype=np.uint8)).save(d / "sub" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (50, 30, 4), dtype=np.uint8)).save(d / "rgba.png")
    tifffile.imwrite(d / "deep16.tif", rng.integers(0, 65535, (64, 48), dtype=np.uint16))
    Image.new("RGB", (6000, 4000), (90, 120, 30)).save(d / "huge.jpg", quality=50)
    (d / "notes.txt").write_text("not an image")
    (d / "broken.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    cut = d / "truncated.jpg"
    Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(cut, quality=95)
    cut.write_bytes(cut.read_bytes()[:2000])  # header fine, pixel data cut
    return d


def make_client(image_dir, out, model, **settings) -> TestClient:
    settings = dict(dict(prefill=dict(FAST_PREFILL), prefetch=1), **settings)
    app = create_app(AppSettings(images=image_dir, out=out, **settings), ModelSlot(model, "tiny"))
    return TestClient(app)


@pytest.fixture()
def client(image_dir, tmp_path, model):
    with make_client(image_dir, tmp_path / "out", model) as c:
        yield c


def reference(model, image_dir, name, **prompts):
    predictor = SamPredictor(model)
    predictor.set_image(read_image_rgb(image_dir / name))
    return predictor.predict(**prompts)


def dense(rle) -> np.ndarray:
    """A mask the API sent (COCO compressed RLE) as an (H, W) bool array."""
    return coco_to_mask(rle)


def test_state_lists_images_and_reports_skipped_files(client):
    state = client.get("/api/state").json()
    names = [i["name"] for i in state["images"]]
    assert names == [
        "deep16.tif",
        "dog.jpg",
        "groceries.jpg",
        "huge.jpg",
        "rgba.png",
        "sub/gray.png",
        "truncated.jpg",
    ]
    skipped = {s["name"]: s["reason"] for s in state["skipped"]}
    assert skipped["notes.txt"] == "not an image file (suffix)"
    assert skipped["broken.jpg"].startswith("unreadable:")
    assert state["model"]["id"] == "tiny" and state["stats"]["masks"] == 0
    assert client.get("/").status_code == 200 and "canvas" in client.get("/").text


def test_prompts_equal_sam_predictor(client, model, image_dir):
    """One click (3 candidates), then a background click with the chosen logits fed back, and a
    box: the app's masks are exactly SamPredictor's on the same weights."""
    r = client.post("/api/images/dog.jpg/predict", json={"points": [{"x": 400, "y": 300}]})
    assert r.status_code == 200, r.text
    out = r.json()
    masks, scores, logits = reference(
        model, image_dir, "dog.jpg", point_coords=np.array([[400, 300]]), point_labels=[1]
    )
    assert out["multimask"] and len(out["masks"]) == 3
    for got, want in zip(out["masks"], masks):
        np.testing.assert_array_equal(dense(got), want)
    np.testing.assert_allclose(out["scores"], scores, atol=1e-5)
    best = out["best"]
    assert best == int(np.argmax(scores))

    two = {"points": [{"x": 400, "y": 300}, {"x": 100, "y": 50, "label": 0}], "previous": best}
    out2 = client.post("/api/images/dog.jpg/predict", json=two).json()
    masks2, _, _ = reference(
        model,
        image_dir,
        "dog.jpg",
        point_coords=np.array([[400, 300], [100, 50]]),
        point_labels=[1, 0],
        mask_input=logits[best][None],
        multimask_output=False,
    )
    assert len(out2["masks"]) == 1
    np.testing.assert_array_equal(dense(out2["masks"][0]), masks2[0])

    box = [120.5, 80, 600, 500]
    out3 = client.post("/api/images/dog.jpg/predict", json={"box": box}).json()
    masks3, _, _ = reference(model, image_dir, "dog.jpg", box=np.array(box), multimask_output=False)
    np.testing.assert_array_equal(dense(out3["masks"][0]), masks3[0])


@pytest.mark.parametrize("name", ["deep16.tif", "rgba.png", "sub/gray.png", "huge.jpg"])
def test_other_formats_and_sizes(client, model, image_dir, name):
    info = next(i for i in client.get("/api/state").json()["images"] if i["name"] == name)
    w, h = info["width"], info["height"]
    img = client.get(f"/api/images/{name}/file")
    assert img.status_code == 200
    served = np.asarray(Image.open(__import__("io").BytesIO(img.content)))
    assert served.shape == (h, w, 3)
    point = {"x": w / 3, "y": h / 2}
    out = client.post(f"/api/images/{name}/predict", json={"points": [point]}).json()
    want, _, _ = reference(
        model, image_dir, name, point_coords=np.array([[w / 3, h / 2]]), point_labels=[1]
    )
    np.testing.assert_array_equal(dense(out["masks"][out["best"]]), want[out["best"]])


def _mask_with_hole_and_two_parts(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[50:200, 60:300] = True
    m[100:150, 120:200] = False  # a hole
    m[300:380, 500:700] = True  # a separate part
    return m


def test_save_resume_export_round_trip(image_dir, tmp_path, model):
    out = tmp_path / "out"
    with make_client(image_dir, out, model) as c:
        pred = c.post("/api/images/dog.jpg/predict", json={"points": [{"x": 400, "y": 300}]})
        pred = pred.json()
        body = {
            "mask": mask_to_rle(dense(pred["masks"][pred["best"]])),
            "source": "point",
            "category": "dog",
            "time_s": 4.5,
            "prompts": {"points": [{"x": 400, "y": 300, "label": 1}]},
            "predicted_iou": pred["scores"][pred["best"]],
            "stability_score": pred["stability"][pred["best"]],
        }
        a1 = c.post("/api/images/dog.jpg/annotations", json=body)
        assert a1.status_code == 201, a1.text
        a1 = a1.json()
        drawn = _mask_with_hole_and_two_parts(534, 800)
        a2 = c.post(
            "/api/images/dog.jpg/annotations",
            json={"mask": mask_to_rle(drawn), "source": "brush", "time_s": 9.0},
        ).json()
        a3 = c.post(
            "/api/images/groceries.jpg/annotations",
            json={"mask": mask_to_rle(drawn), "source": "brush", "category": "shelf"},
        ).json()
        edited = drawn.copy()
        edited[0:10, 0:10] = True
        upd = c.put(
            f"/api/images/groceries.jpg/annotations/{a3['id']}",
            json={"mask": mask_to_rle(edited), "category": "shelf", "add_time_s": 2},
        ).json()
        assert upd["source"] == "edited" and upd["time_s"] == 2.0
        assert upd["area"] == int(edited.sum()) and upd["bbox"][:2] == [0.0, 0.0]
        gone = c.post(
            "/api/images/groceries.jpg/annotations",
            json={"mask": mask_to_rle(drawn), "source": "brush"},
        ).json()
        assert c.delete(f"/api/images/groceries.jpg/annotations/{gone['id']}").status_code == 200

    # the files on disk: SA-1B keys exactly, plus provenance
    saved = json.loads((out / "dog.jpg.json").read_text())
    assert set(saved["image"]) == {"image_id", "width", "height", "file_name"}
    assert saved["image"]["file_name"] == "dog.jpg"
    sa1b = {"id", "segmentation", "bbox", "area", "predicted_iou", "stability_score"}
    sa1b |= {"crop_box", "point_coords"}
    for ann in saved["annotations"]:
        assert sa1b <= set(ann) and ann["source"] in SOURCES
        assert isinstance(ann["segmentation"]["counts"], str)
    first = saved["annotations"][0]
    assert first["model"]["id"] == "tiny" and first["point_coords"] == [[400.0, 300.0]]
    assert first["time_s"] == 4.5 and first["stage"] == 1 and first["category"] == "dog"
    assert saved["annotations"][1]["model"] is None  # drawn by hand
    np.testing.assert_array_equal(coco_to_mask(saved["annotations"][1]["segmentation"]), drawn)

    # restart: the new server resumes from the files
    with make_client(image_dir, out, model) as c:
        state = c.get("/api/state").json()
        counts = {i["name"]: i["masks"] for i in state["images"]}
        assert counts["dog.jpg"] == 2 and counts["groceries.jpg"] == 1
        assert state["stats"]["stages"]["1"]["masks"] == 3
        assert state["stats"]["stages"]["1"]["total_s"] == pytest.approx(4.5 + 9 + 2)
        rec = c.get("/api/images/dog.jpg").json()
        np.testing.assert_array_equal(dense(rec["annotations"][1]["segmentation"]), drawn)
        result = c.post("/api/export").json()
    assert result == {
        "path": str(tmp_path.resolve() / "out_coco.json"),
        "images": 2,
        "annotations": 3,
        "categories": 3,
    }

    # the folder still reads as SA-1B per-image JSON (the export lies beside it, not in it)
    from sam_d2.data.sa1b import load_sa1b_dicts, read_sa1b_json

    sa1b = load_sa1b_dicts(str(out), str(image_dir))
    assert [Path(d["file_name"]).name for d in sa1b] == ["dog.jpg", "groceries.jpg"]
    dog = read_sa1b_json(sa1b[0]["sa1b_json"])["annotations"]
    np.testing.assert_array_equal(coco_to_mask(dog[1]["segmentation"]), drawn)

    # the export loads in Detectron2 with exactly those masks
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = "annotate_test_export"
    import os

    os.environ[ENV_VAR] = f"{name}={result['path']}"
    try:
        assert register_from_env() == [name]
    finally:
        del os.environ[ENV_VAR]
    dicts = DatasetCatalog.get(name)
    assert MetadataCatalog.get(name).thing_classes == ["dog", "object", "shelf"]
    by_file = {Path(d["file_name"]).name: d for d in dicts}
    assert by_file["dog.jpg"]["file_name"] == str(image_dir.resolve() / "dog.jpg")
    got = [coco_to_mask(a["segmentation"]) for a in by_file["dog.jpg"]["annotations"]]
    np.testing.assert_array_equal(got[0], dense(a1["segmentation"]))
    np.testing.assert_array_equal(got[1], dense(a2["segmentation"]))
    got = coco_to_mask(by_file["groceries.jpg"]["annotations"][0]["segmentation"])
    np.testing.assert_array_equal(got, edited)


def test_prefill_stage_two(client):
    r = client.post("/api/images/groceries.jpg/prefill", json={})
    assert r.status_code == 200, r.text
    pending = r.json()["annotations"]
    assert pending and all(a["source"] == "prefill" and not a["accepted"] for a in pending)
    assert all(a["stage"] == 2 and a["model"]["id"] == "tiny" for a in pending)
    state = client.get("/api/state").json()
    entry = next(i for i in state["images"] if i["name"] == "groceries.jpg")
    assert entry["masks"] == 0 and entry["pending"] == len(pending)
    acc = client.put(
        f"/api/images/groceries.jpg/annotations/{pending[0]['id']}", json={"accepted": True}
    )
    assert acc.json()["accepted"] and acc.json()["source"] == "prefill"
    drawn = mask_to_rle(_mask_with_hole_and_two_parts(534, 800))
    manual = client.post(
        "/api/images/groceries.jpg/annotations",
        json={"mask": drawn, "source": "brush", "time_s": 3},
    ).json()
    assert manual["stage"] == 2  # added after the pre-fill: stage-2 time, kept apart
    again = client.post("/api/images/groceries.jpg/prefill", json={"points_per_side": 2}).json()
    rec = client.get("/api/images/groceries.jpg").json()["annotations"]
    kept = {a["id"] for a in rec}
    assert pending[0]["id"] in kept and manual["id"] in kept  # accepted and manual ones stay
    assert all(p["id"] not in kept for p in pending[1:])  # old pending ones replaced
    assert len(rec) == 2 + len(again["annotations"])
    stats = client.get("/api/state").json()["stats"]
    assert stats["stages"]["2"]["masks"] == 1 and stats["stages"]["2"]["total_s"] == 3
    assert stats["prefilled_accepted"] == 1
    export = client.post("/api/export").json()
    assert export["annotations"] == 2  # pending pre-fills are not exported


def test_prefill_all_images_resumes(image_dir, tmp_path, model):
    """``--prefill``: every image once; undecodable ones are logged, not fatal; a second run
    (a restart) skips the images already pre-filled."""
    small = tmp_path / "small"
    small.mkdir()
    for name in ("dog.jpg", "truncated.jpg", "rgba.png"):
        shutil.copy(image_dir / name, small / name)
    with make_client(small, tmp_path / "out", model) as c:
        annotator = c.app.state.annotator
        annotator.prefill_all()
        assert annotator.prefill_progress == {"running": False, "done": 3, "total": 3}
        state = c.get("/api/state").json()
        pending = {i["name"]: i["pending"] for i in state["images"]}
        assert pending["dog.jpg"] > 0 and pending["rgba.png"] > 0 and pending["truncated.jpg"] == 0
        assert state["images"][2]["error"]  # truncated.jpg, reported
    with make_client(small, tmp_path / "out", model) as c:
        c.app.state.annotator.prefill_all()
        assert c.app.state.annotator.prefill_progress["total"] == 1  # only the failed one again


def test_detector_prefill(image_dir, tmp_path):
    """Stage 2 with a detector: the tiny random ViTDet's boxes prompt SAM through the
    detector-prompted model; the pending masks are exactly that model's."""
    sam, model_id, detector = build_app_model(
        config_file=str(REPO_ROOT / "configs" / "sam_vitdet_tiny_cpu.yaml"),
        opts=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
        random_seed=0,
    )
    assert detector is not None
    direct = [d for d in detector(image_dir / "dog.jpg") if d["predicted_iou"] >= 0.0]
    assert direct, "the random detector found nothing to compare"
    settings = AppSettings(images=image_dir, out=tmp_path / "out", prefetch=0)
    with TestClient(create_app(settings, ModelSlot(sam, model_id, None, detector))) as c:
        assert c.get("/api/state").json()["detector"] is True
        r = c.post("/api/images/dog.jpg/prefill", json={"pred_iou_thresh": 0.0})
        assert r.status_code == 200, r.text
        anns = r.json()["annotations"]
    assert len(anns) == len(direct)
    for a, d in zip(anns, direct):
        assert a["source"] == "prefill" and not a["accepted"] and a["stage"] == 2
        assert a["prompts"]["box"] == d["box"] and a["detector_score"] == d["score"]
        np.testing.assert_array_equal(coco_to_mask(a["segmentation"]), d["mask"])


def test_embeddings_cached_on_disk_and_prefetched(image_dir, tmp_path, model):
    out = tmp_path / "out"
    with make_client(image_dir, out, model) as c:
        first = c.post("/api/images/dog.jpg/embed").json()
        assert first["encode_s"] > 0
        files = lambda: sorted(p.name for p in (out / ".embeddings").rglob("*.pt"))  # noqa: E731
        deadline = time.time() + 30
        while len(files()) < 2 and time.time() < deadline:  # the next image, in the background
            time.sleep(0.1)
        assert len(files()) == 2
    with make_client(image_dir, out, model) as c:  # restarted: loaded, not encoded again
        assert c.post("/api/images/dog.jpg/embed").json()["encode_s"] == 0
        assert c.post("/api/images/groceries.jpg/embed").json()["encode_s"] == 0


def test_encoder_reprioritised_request_keeps_the_worker_alive(image_dir, tmp_path, model):
    """An image queued in the background then opened is queued twice; the stale entry must not
    break the worker."""
    encoder = Encoder(ModelSlot(model, "tiny"), EmbeddingCache(tmp_path / "cache"))
    done = []
    encoder.on_encoded = lambda path, seconds: done.append(path.name)
    queued = [encoder.request(image_dir / n, Encoder.BACKGROUND) for n in ("dog.jpg", "rgba.png")]
    urgent = encoder.request(image_dir / "rgba.png")  # already queued: moved ahead
    assert urgent is queued[1]
    for f in queued:
        f.result(timeout=60)
    assert sorted(done) == ["dog.jpg", "rgba.png"]  # each encoded once
    later = encoder.request(image_dir / "sub" / "gray.png")  # the worker is still alive
    assert later.result(timeout=60).original_size == (40, 60)
    encoder.stop()


def test_switch_checkpoint_without_restart(image_dir, tmp_path, model):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    other = tiny_sam(seed=11)
    torch.save(other.state_dict(), ckpts / "round1.pth")

    def load(path):
        m = tiny_sam(seed=0)
        m.load_state_dict(torch.load(path, map_location="cpu"))
        return m, "tiny-round1", None

    with make_client(
        image_dir, tmp_path / "out", model, checkpoint_dir=ckpts, load_checkpoint=load
    ) as c:
        assert c.get("/api/model").json()["checkpoints"] == ["round1.pth"]
        r = c.post("/api/model", json={"checkpoint": "round1.pth"})
        assert r.status_code == 200 and r.json()["current"]["id"] == "tiny-round1"
        out = c.post("/api/images/dog.jpg/predict", json={"points": [{"x": 10, "y": 10}]}).json()
        assert out["model"] == "tiny-round1"
        want, _, _ = reference(
            other, image_dir, "dog.jpg", point_coords=np.array([[10, 10]]), point_labels=[1]
        )
        np.testing.assert_array_equal(dense(out["masks"][0]), want[0])
        ann = c.post(
            "/api/images/dog.jpg/annotations",
            json={"mask": mask_to_rle(dense(out["masks"][0])), "source": "point"},
        ).json()
        assert ann["model"]["id"] == "tiny-round1"
        bad = c.post("/api/model", json={"checkpoint": "../round1.pth"})
        assert bad.status_code == 404 and "no checkpoint" in bad.json()["detail"]


# ---------------------------------------------------------------------- bad input and safety
@pytest.mark.parametrize(
    "body, message",
    [
        ({"points": [{"x": 801, "y": 10}]}, "point 0 (801, 10) lies outside the 800x534 image"),
        ({"points": [{"x": -1, "y": 10}]}, "lies outside"),
        ({"points": [{"x": 5, "y": 5, "label": 2}]}, "label must be 1 (object) or 0"),
        ({"box": [100, 100, 50, 200]}, "box [100.0, 100.0, 50.0, 200.0] must satisfy"),
        ({"box": [0, 0, 900, 100]}, "must satisfy 0 <= x0 < x1 <= 800"),
        ({}, "give at least one point or a box"),
        ({"points": [{"x": 5, "y": 5}], "previous": 0, "session": "new"}, "no previous"),
    ],
)
def test_bad_prompts_get_4xx_with_a_clear_message(client, body, message):
    r = client.post("/api/images/dog.jpg/predict", json=body)
    assert 400 <= r.status_code < 500
    assert message in r.json()["detail"]


def test_non_finite_prompt_is_rejected(client):
    r = client.post(
        "/api/images/dog.jpg/predict",
        content='{"points": [{"x": NaN, "y": 3}]}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422 and "non-finite" in json.dumps(r.json())


@pytest.mark.parametrize(
    "path",
    [
        "/api/images/..%2Fsecret.txt/file",
        "/api/images/%2E%2E/%2E%2E/etc/passwd/file",
        "/api/images/%2Fetc%2Fpasswd/file",
        "/api/images/notes.txt/file",
        "/api/images/sub%2F..%2Fdog.jpg/file",
    ],
)
def test_image_names_cannot_escape_the_folder(client, image_dir, path):
    (image_dir.parent / "secret.txt").write_text("secret")
    r = client.get(path)
    assert r.status_code == 404 and "no image" in r.json()["detail"]


def test_bad_masks_and_labels(image_dir, tmp_path, model):
    with make_client(image_dir, tmp_path / "out", model, categories=["cat", "dog"]) as c:
        good = mask_to_rle(np.ones((534, 800), bool))
        cases = [
            ({"mask": mask_to_rle(np.ones((10, 10), bool)), "source": "brush"}, "does not match"),
            ({"mask": {"size": [534, 800], "counts": [5, 5]}, "source": "brush"}, "sum to 10"),
            ({"mask": {"size": [534, 800], "counts": [-1, 1]}, "source": "brush"}, "non-negative"),
            ({"mask": good, "source": "brush", "category": "bird"}, "not one of ['cat', 'dog']"),
        ]
        for body, message in cases:
            r = c.post("/api/images/dog.jpg/annotations", json=body)
            assert r.status_code == 422 and message in r.json()["detail"], r.text
        r = c.post("/api/images/dog.jpg/annotations", json={"mask": good, "source": "magic"})
        assert r.status_code == 422
        assert c.delete("/api/images/dog.jpg/annotations/99").status_code == 404
        assert c.put("/api/images/dog.jpg/annotations/99", json={}).status_code == 404
        assert c.post("/api/model", json={"checkpoint": "x.pth"}).status_code == 400
        r = c.post("/api/images/dog.jpg/prefill", json={"source": "detector"})
        assert r.status_code == 400 and "no detector loaded" in r.json()["detail"]


def test_undecodable_image_is_reported_not_fatal(client):
    r = client.post("/api/images/truncated.jpg/embed")
    assert r.status_code == 422 and "truncated.jpg" in r.json()["detail"]
    state = client.get("/api/state").json()
    entry = next(i for i in state["images"] if i["name"] == "truncated.jpg")
    assert entry["error"]
    assert client.post("/api/images/dog.jpg/embed").status_code == 200  # the app goes on


def test_corrupt_annotation_file_is_kept_aside(image_dir, tmp_path, model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dog.jpg.json").write_text('{"image": {"width": 800, "height"')
    with make_client(image_dir, out, model) as c:
        state = c.get("/api/state").json()
        assert len(state["problems"]) == 1 and "dog.jpg.json" in state["problems"][0]["error"]
        ok = c.post(
            "/api/images/dog.jpg/annotations",
            json={"mask": mask_to_rle(np.ones((534, 800), bool)), "source": "brush"},
        )
        assert ok.status_code == 201
    aside = list(out.glob("dog.jpg.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"image": {"width": 800, "height"'
    assert json.loads((out / "dog.jpg.json").read_text())["annotations"][0]["id"] == 1
    with make_client(image_dir, out, model) as c:  # still reported after a restart
        assert len(c.get("/api/state").json()["problems"]) == 1


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"annotations": [1]})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"annotations": [object()]})  # fails half-way through dumping
    assert json.loads(path.read_text()) == {"annotations": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


def test_port_in_use_is_one_line(image_dir, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "annotate_tool", Path(__file__).parents[1] / "tools" / "annotate.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        argv = ["--images", str(image_dir), "--out", str(tmp_path), "--random-weights"]
        assert tool.main(argv + ["--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot listen on 127.0.0.1:{port}" in err
