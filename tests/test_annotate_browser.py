"""The annotation app in a real browser: headless Debian Chromium driven by Playwright.

Opens the page on real photos from ../shared/data with a tiny random SAM, clicks an object, sees
the mask drawn, adds a background click, accepts; drags a box, paints with the brush, undoes and
redoes the stroke, accepts; deletes an object and undoes that; pre-fills another image and
accepts its masks, exports, and checks that the exported COCO JSON loads in Detectron2 with
exactly those masks (the clicked one equal to SamPredictor's for the same clicks). A screenshot
of the page is kept as ``output/test_artifacts/annotate_browser.png``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the annotation app needs fastapi (pip install fastapi)")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs playwright (pip install playwright)"
)

from conftest import REPO_ROOT, shared_path, tiny_sam  # noqa: E402

from sam_d2 import SamPredictor  # noqa: E402
from sam_d2.annotate.embeddings import ModelSlot  # noqa: E402
from sam_d2.annotate.register import register_export  # noqa: E402
from sam_d2.annotate.server import AppSettings, ServerThread, create_app  # noqa: E402
from sam_d2.automatic.rle import coco_to_mask  # noqa: E402
from sam_d2.data.image_io import read_image_rgb  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACT = REPO_ROOT / "output" / "test_artifacts" / "annotate_browser.png"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium (scripts/install.sh does)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def _click_point(page, x: float, y: float) -> dict:
    """CSS position on the canvas of image pixel (x, y)."""
    box = page.locator("#canvas").bounding_box()
    w, h = page.evaluate("[app.width, app.height]")
    return {"x": x * box["width"] / w, "y": y * box["height"] / h}


def _painted(page, layer: str) -> int:
    """Pixels with paint on one of the page's overlay canvases ("editLayer" or "annLayer")."""
    return page.evaluate(
        f"(() => {{ const d = app.{layer}.getContext('2d')"
        ".getImageData(0, 0, app.width, app.height).data; let n = 0;"
        " for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; })()"
    )


def _wait_predictions(page, n: int) -> None:
    page.wait_for_function(f"document.body.dataset.predictions === '{n}'", timeout=60_000)


def test_click_accept_prefill_export_in_chromium(browser, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("dog.jpg", "truck.jpg"):
        shutil.copy(shared_path("sam_images", name), images / name)
    model = tiny_sam(seed=5)
    settings = AppSettings(
        images=images,
        out=tmp_path / "out",
        prefill=dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0),
        prefetch=1,
    )
    app = create_app(settings, ModelSlot(model, "tiny-seed5"))
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with ServerThread(app) as url:
        page.goto(url)
        page.wait_for_selector("#images li")
        page.click("#images li[data-name='truck.jpg']")
        page.wait_for_function("document.body.dataset.ready === '1' && app.current === 'truck.jpg'")

        # a click on the truck: the mask is drawn on the canvas
        page.locator("#canvas").click(position=_click_point(page, 700, 550))
        _wait_predictions(page, 1)
        drawn = _painted(page, "editLayer")
        shown = page.evaluate("edit.mask.reduce((a, b) => a + b, 0)")
        assert drawn == shown > 0
        n_candidates = page.evaluate("edit.candidates.length")
        assert n_candidates == 3
        # a background click, then accept
        page.locator("#canvas").click(button="right", position=_click_point(page, 100, 100))
        _wait_predictions(page, 2)
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelectorAll('#objects li').length === 1")
        page.wait_for_function("document.querySelector('#status').textContent.includes('saved')")
        painted = _painted(page, "annLayer")
        assert painted == page.evaluate("app.anns[0].area") > 0  # the accepted object, drawn

        # a dragged box, a brush stroke, undo / redo of the stroke, accept (source "edited")
        canvas = page.locator("#canvas").bounding_box()
        p0, p1 = _click_point(page, 300, 300), _click_point(page, 1200, 900)
        page.mouse.move(canvas["x"] + p0["x"], canvas["y"] + p0["y"])
        page.mouse.down()
        page.mouse.move(canvas["x"] + p1["x"], canvas["y"] + p1["y"], steps=5)
        page.mouse.up()
        _wait_predictions(page, 3)
        assert page.evaluate("edit.box !== null && edit.candidates.length === 1")
        count = "edit.mask.reduce((a, b) => a + b, 0)"
        before = page.evaluate(count)
        page.keyboard.press("b")
        page.evaluate("edit.mask.fill(0, 0, app.width * 50)")  # room for the stroke: rows 0-49
        cleared = page.evaluate(count)
        page.mouse.click(canvas["x"] + 20, canvas["y"] + 5)
        painted = page.evaluate(count)
        assert painted > cleared
        page.keyboard.press("Control+z")
        assert page.evaluate(count) == cleared
        page.keyboard.press("Control+y")
        assert page.evaluate(count) == painted and before > 0
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelectorAll('#objects li').length === 2")
        page.keyboard.press("p")
        # delete the first object, then undo the deletion
        page.click("#objects li[data-id='1']")
        page.keyboard.press("Delete")
        page.wait_for_function("document.querySelectorAll('#objects li').length === 1")
        page.keyboard.press("Control+z")
        page.wait_for_function("document.querySelectorAll('#objects li').length === 2")

        # stage 2 on the other image: pre-fill, accept all
        page.click("#images li[data-name='dog.jpg']")
        page.wait_for_function("document.body.dataset.ready === '1' && app.current === 'dog.jpg'")
        page.click("#prefill")
        page.wait_for_function("document.querySelectorAll('#objects li.pending').length > 0")
        n_prefilled = page.evaluate("document.querySelectorAll('#objects li.pending').length")
        page.keyboard.press("Shift+A")
        page.wait_for_function("document.querySelectorAll('#objects li.pending').length === 0")
        page.click("#export")
        page.wait_for_function("document.querySelector('#export-result').textContent !== ''")
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(tmp_path / "page.png"))
        shutil.copy(tmp_path / "page.png", ARTIFACT)
        latencies = page.evaluate("window.samLatencies")
    assert not errors, errors
    assert len(latencies) == 3

    # the clicked truck mask (deleted, then restored by undo) is SamPredictor's for the same two
    # clicks with the logits fed back; the boxed one was edited with the brush
    truck = json.loads((tmp_path / "out" / "truck.jpg.json").read_text())["annotations"]
    assert [a["source"] for a in truck] == ["edited", "point"]
    assert [a["id"] for a in truck] == [2, 3] and all(a["accepted"] for a in truck)
    assert truck[0]["prompts"]["box"] is not None
    clicked = truck[1]
    pts = clicked["prompts"]["points"]
    assert [p["label"] for p in pts] == [1, 0]
    predictor = SamPredictor(model)
    predictor.set_image(read_image_rgb(images / "truck.jpg"))
    first, scores, logits = predictor.predict(np.array([[pts[0]["x"], pts[0]["y"]]]), [1])
    second, _, _ = predictor.predict(
        np.array([[p["x"], p["y"]] for p in pts]),
        [1, 0],
        mask_input=logits[np.argmax(scores)][None],
        multimask_output=False,
    )
    np.testing.assert_array_equal(coco_to_mask(clicked["segmentation"]), second[0])

    # the export holds exactly the accepted masks of both images
    dog = json.loads((tmp_path / "out" / "dog.jpg.json").read_text())["annotations"]
    assert len(dog) == n_prefilled and all(a["accepted"] for a in dog)
    from detectron2.data import DatasetCatalog

    register_export("annotate_browser_test", str(tmp_path / "out_coco.json"))
    exported = {Path(d["file_name"]).name: d for d in DatasetCatalog.get("annotate_browser_test")}
    for name, saved in (("truck.jpg", truck), ("dog.jpg", dog)):
        got = [coco_to_mask(a["segmentation"]) for a in exported[name]["annotations"]]
        assert len(got) == len(saved)
        for g, s in zip(got, saved):
            np.testing.assert_array_equal(g, coco_to_mask(s["segmentation"]))
