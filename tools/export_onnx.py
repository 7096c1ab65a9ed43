#!/usr/bin/env python
"""Export SAM (image encoder; prompt encoder + mask decoder) or a ViTDet backbone to ONNX.

    python tools/export_onnx.py --variant vit_h --checkpoint sam_vit_h_4b8939.pth --out onnx/
    python tools/export_onnx.py --config-file configs/sam_vit_b.yaml --out onnx/ --quantize \\
        --opts MODEL.WEIGHTS sam_vit_b_01ec64.pth
    python tools/export_onnx.py --config-file configs/sam_vitdet.yaml --part vitdet-backbone \\
        --checkpoint model_final_61ccd1.pkl --out onnx/

Writes into the existing folder ``--out``:

- ``encoder.onnx``: ``image`` (h, w, 3) uint8, the RGB image resized so that its longest side is
  1024 (normalisation and padding inside) -> ``image_embeddings`` (1, 256, 64, 64);
- ``decoder.onnx``: the official segment_anything decoder interface (``image_embeddings``,
  ``point_coords``, ``point_labels``, ``mask_input``, ``has_mask_input``, ``orig_im_size`` ->
  ``masks``, ``iou_predictions``, ``low_res_masks``), dynamic numbers of prompts and points;
  all 4 mask outputs, or one with ``--return-single-mask``;
- ``decoder_int8.onnx`` with ``--quantize`` (dynamic int8 quantisation of the decoder);
- ``vitdet_backbone.onnx`` with ``--part vitdet-backbone`` (normalised, padded images -> p2..p6).

Files larger than 2 GB (ViT-H's encoder) keep their weights in ``<file>.data`` beside them. Run
them without torch through ``sam_d2_onnx.SamOnnxPredictor``. Bad input (unknown variant, missing
or mismatched checkpoint, missing output folder) ends with one ``error:`` line and exit status 2.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from sam_d2.utils.cli import HelpFormatter

logger = logging.getLogger("export_onnx")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, help="existing output folder")
    p.add_argument("--config-file", default="", help="sam_d2 yacs config of the model")
    p.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides KEY VALUE ... (last on the command line)",
    )
    p.add_argument("--variant", default="", help="vit_b | vit_l | vit_h (without a config)")
    p.add_argument("--checkpoint", default="", help="weights (official .pth / .pkl or sam_d2)")
    p.add_argument(
        "--random-weights",
        type=int,
        metavar="SEED",
        default=None,
        help="no checkpoint: fully random weights from SEED (tests and benchmarks only)",
    )
    p.add_argument(
        "--part",
        choices=("sam", "vitdet-backbone"),
        default="sam",
        help="sam: encoder.onnx + decoder.onnx; vitdet-backbone: the config's ViTDet backbone",
    )
    p.add_argument("--decoder-only", action="store_true", help="skip encoder.onnx")
    p.add_argument(
        "--return-single-mask",
        action="store_true",
        help="decoder outputs one mask per prompt (official rule) instead of all four",
    )
    p.add_argument("--quantize", action="store_true", help="also write decoder_int8.onnx")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18)")
    return p.parse_args(argv)


def build_model(args: argparse.Namespace):
    """(model, variant) from ``--config-file`` or ``--variant``, with the requested weights."""
    import torch

    from sam_d2.checkpoint import SamCheckpointer
    from sam_d2.utils.random_weights import randomize_state_dict

    if args.checkpoint and args.random_weights is not None:
        raise ValueError("give either --checkpoint or --random-weights, not both")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"{args.checkpoint}: checkpoint file not found")
    if not (args.checkpoint or args.config_file or args.random_weights is not None):
        raise ValueError("no weights: give --checkpoint (or MODEL.WEIGHTS), or --random-weights")
    if args.config_file:
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model as d2_build_model

        import sam_d2  # noqa: F401  (registers the meta-architectures)
        from sam_d2.config import add_sam_config

        if not Path(args.config_file).is_file():
            raise FileNotFoundError(f"{args.config_file}: config file not found")
        cfg = get_cfg()
        add_sam_config(cfg)
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
        model = d2_build_model(cfg)
        weights = args.checkpoint or cfg.MODEL.WEIGHTS
        variant = cfg.MODEL.SAM.VARIANT
        # MODEL.SAM.WEIGHTS is loaded into the SAM part while the model is built.
        preloaded = bool(cfg.MODEL.SAM.WEIGHTS) and args.part == "sam"
    else:
        from sam_d2 import build_sam

        if not args.variant:
            raise ValueError("give --variant (vit_b, vit_l, vit_h) or --config-file")
        if args.part != "sam":
            raise ValueError("--part vitdet-backbone needs --config-file (a ViTDet config)")
        model = build_sam(args.variant)
        weights, variant, preloaded = args.checkpoint, args.variant, False
    if args.random_weights is not None:
        with torch.no_grad():
            model.load_state_dict(randomize_state_dict(model.state_dict(), args.random_weights))
        logger.warning("random weights (seed %d): the export is meaningless", args.random_weights)
    elif weights:
        SamCheckpointer(model).load(weights)
    elif not preloaded:
        raise ValueError("no weights: give --checkpoint (or MODEL.WEIGHTS), or --random-weights")
    return model.eval(), variant


def _sam_of(model):
    from sam_d2.modeling.sam import Sam

    if isinstance(model, Sam):
        return model
    sam = getattr(model, "sam", None)
    if isinstance(sam, Sam):
        return sam
    raise ValueError(f"the config's model ({type(model).__name__}) holds no SAM to export")


def _backbone_of(model):
    for owner in (model, getattr(model, "detector", None)):
        backbone = getattr(owner, "backbone", None)
        if backbone is not None and hasattr(backbone, "net"):
            return backbone
    raise ValueError(f"the config's model ({type(model).__name__}) has no ViTDet backbone")


def main(argv: Optional[Sequence[str]] = None) -> int:
    # INFO for our own loggers only: the exporter and the quantiser log every tensor at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("export_onnx", "sam_d2.export"):
        logging.getLogger(name).setLevel(logging.INFO)
    args = parse_args(argv)
    out = Path(args.out)
    from sam_d2.checkpoint import CheckpointError
    from sam_d2.export import OPSET, ExportError, export_sam, export_vitdet_backbone

    try:
        if not out.is_dir():
            raise ExportError(f"output folder {out} does not exist (create it first)")
        opset = args.opset or OPSET
        model, variant = build_model(args)
        if args.part == "vitdet-backbone":
            backbone = _backbone_of(model)
            size = backbone.padding_constraints["square_size"]
            if not size:
                raise ValueError("the ViTDet backbone needs MODEL.VIT.SQUARE_PAD > 0 to export")
            paths = {
                "vitdet_backbone": export_vitdet_backbone(
                    backbone, out / "vitdet_backbone.onnx", size, opset=opset
                )
            }
        else:
            paths = export_sam(
                _sam_of(model),
                out,
                variant,
                return_single_mask=args.return_single_mask,
                quantize=args.quantize,
                encoder=not args.decoder_only,
                opset=opset,
            )
    except (CheckpointError, ExportError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        logger.info("%s: %s", name, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
