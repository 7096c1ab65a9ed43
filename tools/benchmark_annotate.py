#!/usr/bin/env python
"""Latency of the annotation app as an annotator feels it (a benchmark, not a test).

    python tools/benchmark_annotate.py --variant vit_b --clicks 30 \
        [--checkpoint sam_vit_b_01ec64.pth] [--screenshot docs/annotate.png]

Starts the app on ``--images`` (default ``../shared/data/sam_images``), opens it in headless
Debian Chromium (Playwright), and measures

* encode time per image: the server's ``POST /embed`` on each image, first one = warm-up;
* click -> mask drawn: from the canvas ``mousedown`` to the first animation frame after the mask
  was painted, for ``--clicks`` single clicks at random points of the first image whose
  embedding is cached (background pre-encoding off, so nothing else competes for the CPU);
  also the server's own time per prediction.

Without ``--checkpoint`` the weights are random (same cost, meaningless masks; printed).
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sam_d2.annotate.embeddings import ModelSlot, build_app_model
from sam_d2.annotate.server import AppSettings, ServerThread, create_app
from sam_d2.utils.cli import HelpFormatter

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sam_images"


def percentiles(values):
    v = np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "n": len(v)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--variant", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    p.add_argument("--checkpoint")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clicks", type=int, default=30)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--screenshot", type=Path, help="save a screenshot of the page here")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    model, model_id, _ = build_app_model(
        args.variant,
        args.checkpoint,
        device=args.device,
        random_seed=None if args.checkpoint else 0,
    )
    work = Path(tempfile.mkdtemp(prefix="annotate_bench_"))
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    settings = AppSettings(images=args.images, out=work / "out", prefetch=0)
    app = create_app(settings, ModelSlot(model, model_id, args.checkpoint))
    rng = np.random.default_rng(0)
    try:
        with ServerThread(app) as url, sync_playwright() as pw:
            import httpx

            encode = []
            for path in images:
                r = httpx.post(f"{url}/api/images/{path.name}/embed", timeout=600).json()
                encode.append((path.name, r["encode_s"]))
                print(f"encode {path.name} ({r['width']}x{r['height']}): {r['encode_s']:.2f} s")
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            target = images[-1].name
            page.goto(url)
            page.wait_for_selector("#images li")
            page.click(f"#images li[data-name='{target}']")
            page.wait_for_function(
                f"document.body.dataset.ready === '1' && app.current === '{target}'"
            )
            box = page.locator("#canvas").bounding_box()
            for i in range(args.clicks):
                page.keyboard.press("Escape")
                x, y = rng.uniform(0.1, 0.9) * box["width"], rng.uniform(0.1, 0.9) * box["height"]
                page.locator("#canvas").click(position={"x": x, "y": y})
                page.wait_for_function(
                    f"document.body.dataset.predictions === '{i + 1}'", timeout=120_000
                )
            latencies = page.evaluate("window.samLatencies")
            server_ms = page.evaluate("window.samServerMs")
            if args.screenshot:
                _screenshot(page, box, args.screenshot)
            browser.close()
    finally:
        app.state.annotator.encoder.stop()
        shutil.rmtree(work, ignore_errors=True)

    steady = [s for _, s in encode[1:]] or [encode[0][1]]
    result = {
        "model": model_id,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "encode_s": dict(encode),
        "encode_s_after_warmup_mean": float(np.mean(steady)),
        "click_to_mask_drawn_ms": percentiles(latencies),
        "server_predict_ms": percentiles(server_ms),
        "image": target,
    }
    print(json.dumps(result, indent=2))
    if args.checkpoint is None:
        print("note: random weights (no checkpoint): timings are real, masks are meaningless")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def _screenshot(page, box, path: Path) -> None:
    """Two accepted objects and a current one with an object and a background point."""
    for fx, fy in ((0.35, 0.55), (0.75, 0.4)):
        page.keyboard.press("Escape")
        n = page.evaluate("window.samLatencies.length")
        page.locator("#canvas").click(position={"x": fx * box["width"], "y": fy * box["height"]})
        page.wait_for_function(f"window.samLatencies.length === {n + 1}")
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('#status').textContent.includes('saved')")
        time.sleep(0.2)
    for fx, fy, button in ((0.5, 0.5, "left"), (0.15, 0.2, "right")):
        n = page.evaluate("window.samLatencies.length")
        page.locator("#canvas").click(
            button=button, position={"x": fx * box["width"], "y": fy * box["height"]}
        )
        page.wait_for_function(f"window.samLatencies.length === {n + 1}")
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    small = Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    small.save(path, optimize=True)  # a palette PNG: a quarter of the size, colours kept
    print(f"screenshot: {path}")


if __name__ == "__main__":
    main()
