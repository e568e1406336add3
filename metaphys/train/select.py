"""Checkpoint selection during training: score every EMA snapshot on held-out problems and keep
the best as OUT/best.pt (never "the last one"). Scores go to OUT/snapshots.jsonl."""
from __future__ import annotations

import json
import os
import shutil

from metaphys.io.atomic import atomic_path
from metaphys.eval.quick import evaluate_snapshot, evaluate_snapshot3d
from metaphys.optim.weights import model_from_snapshot


SCHEME = "quick-v3"  # bump when the score's definition changes: older records are not comparable
SCHEME_3D = "quick3d-v1"  # the 3-D network's score (eval/quick.py evaluate_snapshot3d)


class SnapshotJudge:
    def __init__(self, cfg, out_dir: str):
        self.cfg = cfg
        self.out_dir = out_dir
        self.best_path = os.path.join(out_dir, "best.pt")
        self.best_score = float("inf")
        self.scheme = SCHEME_3D if getattr(cfg, "dims", 2) == 3 else SCHEME
        log = os.path.join(out_dir, "snapshots.jsonl")
        if os.path.exists(log):
            with open(log) as fh:
                for line in fh:
                    rec = json.loads(line)
                    if rec.get("scheme") == self.scheme:
                        self.best_score = min(self.best_score, rec.get("score", float("inf")))

    def __call__(self, snapshot_path: str, trainer) -> dict:
        evaluate = evaluate_snapshot3d if self.scheme == SCHEME_3D else evaluate_snapshot
        result = evaluate(model_from_snapshot(snapshot_path), sizes=tuple(self.cfg.eval_sizes),
                          iterations=self.cfg.eval_iterations)
        result.update(snapshot=os.path.basename(snapshot_path), step=trainer.step, elapsed=trainer.elapsed,
                      scheme=self.scheme)
        if result["score"] < self.best_score:
            self.best_score = result["score"]
            with atomic_path(self.best_path) as tmp:
                shutil.copyfile(snapshot_path, tmp)
            result["best"] = True
        with open(os.path.join(self.out_dir, "snapshots.jsonl"), "a") as fh:
            fh.write(json.dumps(result) + "\n")
        try:  # a PNG of the training curves beside the run
            from metaphys.train.plot import plot_training
            plot_training(self.out_dir, os.path.join(self.out_dir, "curves.png"))
        except Exception as exc:  # plotting must never stop training
            print(f"training curves not plotted: {exc}", flush=True)
        print(f"snapshot {result['snapshot']}: score {result['score']:.2f}"
              + (" (best)" if result.get("best") else ""), flush=True)
        return result
