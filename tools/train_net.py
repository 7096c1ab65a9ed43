#!/usr/bin/env python
"""Train or evaluate sam_d2 models with Detectron2 (single or multi GPU / machine).

    tools/train_net.py --config-file configs/sam_vitdet.yaml --eval-only MODEL.WEIGHTS det.pkl \
        MODEL.SAM.WEIGHTS sam_vit_h_4b8939.pth
    tools/train_net.py --config-file configs/sam_vit_b.yaml --num-gpus 8
"""

from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import sam_d2  # noqa: F401  (registers meta-architectures, backbones, datasets)
from sam_d2 import add_sam_config
from sam_d2.engine import Trainer, load_weights


def setup(args) -> CfgNode:
    cfg = get_cfg()
    add_sam_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
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


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
