"""`python -m metaphys.train --config configs/cpu.yaml --out runs/cpu [--resume]` (also `metaphys train`).

Works under torchrun for multi-process training (gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import torch


def build_parser(p=None):
    p = p or argparse.ArgumentParser(prog="metaphys train", description=__doc__)
    p.add_argument("--config", required=True, help="training recipe YAML (configs/*.yaml)")
    p.add_argument("--out", required=True, help="run directory (checkpoint.pt, snapshots, log.csv)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    p.add_argument("--init", default=None, help="start from these weights (fine-tuning), e.g. a snapshot")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--quiet", action="store_true")
    return p


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args) -> int:
    from metaphys.optim.weights_file import WeightsError
    from metaphys.train.config import TrainConfig
    from metaphys.train.loop import Trainer
    from metaphys.train.select import SnapshotJudge

    cfg = TrainConfig.load(args.config)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        import torch.distributed as dist
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
    try:
        trainer = Trainer(cfg, args.out, init_weights=args.init)
        resumed = args.resume and trainer.load_checkpoint()
    except WeightsError as exc:  # a damaged or foreign checkpoint / --init file: the message names it
        print(f"metaphys train: error: {exc}", file=sys.stderr)
        return 2
    if resumed:
        print(f"resumed from {trainer.checkpoint_path()} at step {trainer.step}", file=sys.stderr)
    elif args.resume and args.init is None:
        print("no checkpoint to resume from; starting fresh", file=sys.stderr)
    judge = SnapshotJudge(cfg, args.out)
    # SIGTERM (and SIGINT, which background jobs ignore by default) -> save a checkpoint and exit
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        trainer.run(max_steps=args.max_steps, max_minutes=args.max_minutes, progress=not args.quiet,
                    evaluate=judge)
    except KeyboardInterrupt:
        print(f"interrupted at step {trainer.step}; checkpoint saved to {trainer.checkpoint_path()}",
              file=sys.stderr)
        return 130
    return 0


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
