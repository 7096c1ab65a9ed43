#!/usr/bin/env python
"""Start the annotation app (data engine stages 1-2) on a folder of images.

    python tools/annotate.py --images DIR --out ANNOT_DIR --variant vit_b \
        --checkpoint sam_vit_b_01ec64.pth
    python tools/annotate.py --images DIR --out ANNOT_DIR --config-file configs/sam_vit_b.yaml \
        MODEL.WEIGHTS output/retrain1/model_final.pth
    python tools/annotate.py --images DIR --out ANNOT_DIR --export-only   # write the COCO JSON

Open the printed address in a browser. The server binds 127.0.0.1 unless --host says otherwise.
"""

import argparse
import logging
import sys
import threading
from pathlib import Path

from sam_d2.annotate.embeddings import ModelSlot, build_app_model
from sam_d2.annotate.storage import (
    AnnotationStore,
    ImageFolder,
    default_export_path,
    export_coco,
)
from sam_d2.utils.cli import HelpFormatter


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--images", required=True, help="folder of images to annotate (recursive)")
    p.add_argument("--out", required=True, help="folder of the per-image SA-1B JSON files")
    p.add_argument("--config-file", help="sam_d2 config (its model is or holds a SAM)")
    p.add_argument("--variant", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    p.add_argument("--checkpoint", help="SAM checkpoint (official or sam_d2 / train_net output)")
    p.add_argument(
        "--checkpoint-dir",
        help="folder whose *.pth files the app may switch to while running "
        "(default: the folder of --checkpoint)",
    )
    p.add_argument(
        "--random-weights", action="store_true", help="random weights (demo/benchmark only)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--categories", help="comma-separated fixed labels (default: free text)")
    p.add_argument("--default-category", default="object")
    p.add_argument("--prefetch", type=int, default=2, help="images pre-encoded ahead")
    p.add_argument("--prefill", action="store_true", help="pre-fill every image (stage 2)")
    p.add_argument("--points-per-side", type=int, default=32, help="pre-fill point grid")
    p.add_argument("--pred-iou-thresh", type=float, default=0.88, help="pre-fill filter")
    p.add_argument("--stability-score-thresh", type=float, default=0.95, help="pre-fill filter")
    p.add_argument(
        "--export", help="COCO export file of the Export button (default: <out>_coco.json)"
    )
    p.add_argument("--export-only", action="store_true", help="write the COCO export and exit")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        folder = ImageFolder.scan(args.images)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.export_only:
        store = AnnotationStore(folder, args.out)
        result = export_coco(store, args.export or default_export_path(args.out))
        n, m = result["annotations"], result["images"]
        print(f"exported {n} masks of {m} images to {result['path']}")
        return 0

    from sam_d2.annotate.server import AppSettings, bind_socket, create_app, serve

    try:
        sock = bind_socket(args.host, args.port)
    except OSError as e:
        print(f"error: {e} (is another server running? pick another --port)", file=sys.stderr)
        return 2

    def load(checkpoint):
        return build_app_model(args.variant, checkpoint, args.config_file, args.opts, args.device)

    try:
        model, model_id, detector = build_app_model(
            args.variant,
            args.checkpoint,
            args.config_file,
            args.opts,
            args.device,
            random_seed=0 if args.random_weights else None,
        )
    except (ValueError, RuntimeError, OSError) as e:
        sock.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt_dir = args.checkpoint_dir or (
        str(Path(args.checkpoint).parent) if args.checkpoint else None
    )
    settings = AppSettings(
        images=Path(args.images),
        out=Path(args.out),
        export=Path(args.export) if args.export else None,
        categories=[c.strip() for c in args.categories.split(",") if c.strip()]
        if args.categories
        else (),
        default_category=args.default_category,
        prefetch=args.prefetch,
        prefill=dict(
            points_per_side=args.points_per_side,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
        ),
        checkpoint_dir=Path(ckpt_dir) if ckpt_dir else None,
        load_checkpoint=load,
    )
    app = create_app(settings, ModelSlot(model, model_id, args.checkpoint, detector))
    annotator = app.state.annotator
    print(
        f"{len(folder.images)} images, {len(folder.skipped)} skipped files; model {model_id}\n"
        f"annotation app at http://{args.host}:{sock.getsockname()[1]}/  (Ctrl+C to stop)",
        flush=True,
    )
    if args.prefill:
        threading.Thread(target=annotator.prefill_all, name="prefill", daemon=True).start()
    serve(app, sock, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
