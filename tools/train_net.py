#!/usr/bin/env python
"""Train or evaluate sam_d2 models with Detectron2 (single or multi GPU / machine).

    python tools/train_net.py --config-file configs/sam_vitdet.yaml --eval-only \\
        MODEL.WEIGHTS det.pkl MODEL.SAM.WEIGHTS sam_vit_h_4b8939.pth
    python tools/train_net.py --config-file configs/sam_vit_b.yaml --num-gpus 8

Problems with the command line or the config (missing config file, unknown key, wrong value type,
unknown dataset, missing weights file, nothing to train or evaluate, CUDA asked for but absent)
are reported before anything starts, in one line, with exit status 2. A failure during the run
is reported in one line with exit status 1; its full traceback goes to ``OUTPUT_DIR/log.txt``
(``--debug`` prints tracebacks instead).
"""

import argparse
import difflib
import os
import sys
import traceback
from typing import List, Optional, Sequence

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import sam_d2  # noqa: F401  (registers meta-architectures, backbones, datasets)
from sam_d2 import add_sam_config
from sam_d2.engine import Trainer, load_weights
from sam_d2.utils.cli import HelpFormatter

PROG = "train_net.py"
#: Metadata entries naming a dataset's files, checked before the run.
DATASET_PATH_KEYS = ("json_file", "image_root", "dataset_root")
#: Longest error line printed (the rest is in the log file / with --debug).
MAX_MESSAGE = 400

EXAMPLES = """
examples:
  evaluate ViTDet boxes -> SAM on COCO val2017 (paper Table 5):
    python tools/train_net.py --config-file configs/sam_vitdet.yaml --eval-only \\
        MODEL.WEIGHTS /path/to/model_final_f05665.pkl \\
        MODEL.SAM.WEIGHTS /path/to/sam_vit_h_4b8939.pth
  fine-tune promptable SAM ViT-B on 8 GPUs:
    python tools/train_net.py --config-file configs/sam_vit_b.yaml --num-gpus 8
  on a machine without a GPU, add:  MODEL.DEVICE cpu
"""


class UsageError(Exception):
    """A problem with the command line or the config, found before the run starts."""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Detectron2's standard arguments plus ``--debug``; ``--help`` shows defaults."""
    parser = default_argument_parser(epilog=EXAMPLES)
    parser.prog = "python tools/train_net.py"
    parser.description = "Train or evaluate a sam_d2 / Detectron2 model from a yacs config."
    parser.formatter_class = HelpFormatter
    parser.add_argument(
        "--debug", action="store_true", help="print full tracebacks instead of one-line errors"
    )
    return parser.parse_args(argv)


def _one_line(text: str) -> str:
    """Whitespace collapsed to single spaces, cut at MAX_MESSAGE characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def build_config(args: argparse.Namespace) -> CfgNode:
    """The merged, frozen config; UsageError naming the file or override that is wrong."""
    if not args.config_file:
        raise UsageError("--config-file is required, e.g. --config-file configs/sam_vit_b.yaml")
    if not os.path.isfile(args.config_file):
        raise UsageError(f"config file not found: {args.config_file}")
    cfg = get_cfg()
    add_sam_config(cfg)
    for where, merge, what in (
        (args.config_file, cfg.merge_from_file, args.config_file),
        ("command-line options", cfg.merge_from_list, args.opts),
    ):
        try:
            merge(what)
        except (KeyError, ValueError, TypeError, AssertionError, yaml.YAMLError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise UsageError(f"{where}: {_one_line(message)}") from e
    cfg.freeze()
    return cfg


def _check_datasets(cfg: CfgNode, split: str) -> None:
    """Every name of DATASETS.<split> is registered and its files / folders exist."""
    registered = DatasetCatalog.list()
    for name in getattr(cfg.DATASETS, split):
        if name not in registered:
            close = difflib.get_close_matches(name, registered, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UsageError(
                f"unknown dataset {name!r} in DATASETS.{split}; {hint}(datasets/README.md lists "
                "the registered names and their expected folders)"
            )
        meta = MetadataCatalog.get(name)
        root = os.environ.get("DETECTRON2_DATASETS", "./datasets")
        for key in DATASET_PATH_KEYS:
            path = meta.get(key, None)
            if path and not os.path.exists(path):
                raise UsageError(
                    f"dataset {name!r}: {key} {path} does not exist (datasets are found under "
                    f"$DETECTRON2_DATASETS, now {root}; see datasets/README.md)"
                )


def check_config(cfg: CfgNode, args: argparse.Namespace) -> None:
    """Fail before the run on problems that would otherwise surface minutes into it."""
    if args.eval_only and not cfg.DATASETS.TEST:
        raise UsageError("--eval-only but DATASETS.TEST is empty: nothing to evaluate")
    if not args.eval_only and not cfg.DATASETS.TRAIN:
        raise UsageError(
            "DATASETS.TRAIN is empty: name the training datasets, e.g. "
            "DATASETS.TRAIN '(\"coco_2017_train\",)', or pass --eval-only to evaluate"
        )
    _check_datasets(cfg, "TEST")
    if not args.eval_only:
        _check_datasets(cfg, "TRAIN")
    resuming = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    for key, path in (
        ("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS),
        ("MODEL.SAM.WEIGHTS", cfg.MODEL.SAM.WEIGHTS),
    ):
        if path and "://" not in path and not os.path.isfile(path) and not resuming:
            raise UsageError(f"{key}: weights file not found: {path}")
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but CUDA is not available; add MODEL.DEVICE cpu"
        )
    if cfg.MODEL.DEVICE.startswith("cuda") and args.num_gpus > torch.cuda.device_count():
        raise UsageError(
            f"--num-gpus {args.num_gpus} but only {torch.cuda.device_count()} GPU(s) are visible"
        )


def setup(args: argparse.Namespace) -> CfgNode:
    """Config plus Detectron2's per-process setup (logging to OUTPUT_DIR/log.txt, seeds)."""
    cfg = build_config(args)
    default_setup(cfg, args)
    # sam_d2's own messages (resumed images, results files) beside Detectron2's
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sam_d2")
    return cfg


def main(args: argparse.Namespace):
    """Runs in every process started by ``launch``."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_weights(model, cfg, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def _failure_message(error: BaseException) -> str:
    """'Type: message' of an error; for a failed worker process, the worker's last line."""
    text = str(error)
    if isinstance(error, torch.multiprocessing.ProcessRaisedException):
        lines = [line for line in text.splitlines() if line.strip()]
        return _one_line(lines[-1] if lines else text)
    return _one_line(f"{type(error).__name__}: {text}")


def _log_traceback(cfg: CfgNode) -> Optional[str]:
    """Append the current traceback to OUTPUT_DIR/log.txt if that folder exists; its path."""
    if not cfg.OUTPUT_DIR or not os.path.isdir(cfg.OUTPUT_DIR):
        return None
    path = os.path.join(cfg.OUTPUT_DIR, "log.txt")
    with open(path, "a") as f:
        f.write(traceback.format_exc())
    return path


def cli(argv: Optional[List[str]] = None) -> int:
    """Check the config, launch the run, turn errors into one line; the exit status."""
    args = parse_args(argv)
    print("Command Line Args:", args)
    try:
        cfg = build_config(args)
        check_config(cfg, args)
    except UsageError as e:
        if args.debug:
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except Exception as e:
        if args.debug:
            raise
        log = _log_traceback(cfg)
        where = f"full traceback in {log}" if log else "rerun with --debug for the traceback"
        print(f"{PROG}: error: {_failure_message(e)} ({where})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
