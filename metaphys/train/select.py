"""Checkpoint selection during training: score every EMA snapshot on held-out problems and keep
the best as OUT/best.pt (never "the last one"). Scores go to OUT/snapshots.jsonl.

2-D snapshots are also gated (issue #29): one whose network alone (the plain iteration on the score's
32 paired guard layouts per size) is worse than the shipped weights' at any guard size -- by more than
GUARD_MEAN_DEX on the layouts' mean log10 MSR, or by more than GUARD_WORST_DEX on the worst layout --
never becomes best, however good its mean score: the mean let accelerated rows at the floor hide a
network-alone regression of 2-3 decades at 100^2."""
from __future__ import annotations

import json
import os
import shutil

from metaphys.io.atomic import atomic_path
from metaphys.eval.quick import (GUARD_MEAN_DEX, GUARD_SIZES, GUARD_WORST_DEX, evaluate_snapshot,
                                  evaluate_snapshot3d, guard_mean_regression, guard_regression, laplace_guard_case,
                                  smoke3d_cases, smoke_guard_passed)
from metaphys.optim.weights import (DEFAULT_WEIGHTS, DEFAULT_WEIGHTS_3D, WeightsError, load_torchscript,
                                    model_from_snapshot)


SCHEME = "quick-v5"  # bump when the score's definition changes: older records are not comparable
# (v4: + the network-alone guard on validation Laplace layouts at 64^2-128^2, eval/quick.py; v5: 32 guard
# layouts instead of 6, gated on their mean as well as the worst)
SCHEME_3D = "quick3d-v3"  # the 3-D network's score (eval/quick.py evaluate_snapshot3d; v2: gated on the
# product's 32^3 smoke against the shipped 3-D weights, smoke3d_case / smoke_guard_passed; v3: and on 64^3)


class SnapshotJudge:
    def __init__(self, cfg, out_dir: str, reference_weights: str = None):
        self.cfg = cfg
        three_d = getattr(cfg, "dims", 2) == 3
        self.reference_weights = reference_weights or (DEFAULT_WEIGHTS_3D if three_d else DEFAULT_WEIGHTS)
        self._reference_guard = None   # the reference weights' guard cases, measured on first use
        self.out_dir = out_dir
        self.best_path = os.path.join(out_dir, "best.pt")
        self.best_score = float("inf")
        self.scheme = SCHEME_3D if getattr(cfg, "dims", 2) == 3 else SCHEME
        log = os.path.join(out_dir, "snapshots.jsonl")
        if os.path.exists(log):
            with open(log) as fh:
                for line in fh:
                    rec = json.loads(line)
                    # a snapshot the gate refused never was best: its score must not bar later ones
                    if rec.get("scheme") == self.scheme and rec.get("guard_passed", True):
                        self.best_score = min(self.best_score, rec.get("score", float("inf")))

    def __call__(self, snapshot_path: str, trainer) -> dict:
        model = model_from_snapshot(snapshot_path)
        if self.scheme == SCHEME_3D:
            reference = self.reference_guard()
            result = evaluate_snapshot3d(model, sizes=tuple(self.cfg.eval_sizes), iterations=self.cfg.eval_iterations,
                                         smoke=bool(reference))
        else:
            reference = self.reference_guard()
            result = evaluate_snapshot(model, sizes=tuple(self.cfg.eval_sizes), iterations=self.cfg.eval_iterations)
        result.update(snapshot=os.path.basename(snapshot_path), step=trainer.step, elapsed=trainer.elapsed,
                      scheme=self.scheme)
        eligible = True
        if reference and self.scheme == SCHEME_3D:
            eligible = all(smoke_guard_passed(result["cases"][k], reference[k]) for k in reference)
            result["guard_passed"] = eligible
        elif reference:
            result["guard_regression_dex"] = guard_regression(result["cases"], reference)
            result["guard_mean_regression_dex"] = guard_mean_regression(result["cases"], reference)
            eligible = (result["guard_mean_regression_dex"] <= GUARD_MEAN_DEX
                        and result["guard_regression_dex"] <= GUARD_WORST_DEX)
            result["guard_passed"] = eligible
        if eligible and result["score"] < self.best_score:
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
        if "guard_regression_dex" in result:
            gate = (f", network alone {result['guard_mean_regression_dex']:+.1f} dex on the mean, "
                    f"{result['guard_regression_dex']:+.1f} on the worst layout vs the shipped weights"
                    + ("" if result["guard_passed"] else " (refused)"))
        elif "smoke3d_guard" in result["cases"]:
            parts = []
            for k in reference:
                mine, theirs = result["cases"][k], reference[k]
                parts.append(f"{mine.get('size', '?')}^3 smoke: {mine.get('iterations', '-')} fluid iterations, "
                             f"{mine.get('capped', '-')} at the cap, worst MSR {mine.get('worst', float('nan')):.1e} "
                             f"(shipped: {theirs['iterations']}, {theirs['capped']}, {theirs['worst']:.1e})")
            gate = ", " + "; ".join(parts) + ("" if result["guard_passed"] else " (refused)")
        else:
            gate = ""
        print(f"snapshot {result['snapshot']}: score {result['score']:.2f}{gate}"
              + (" (best)" if result.get("best") else ""), flush=True)
        return result

    def reference_guard(self):
        """The reference (shipped) weights' guard cases, or {} when there are none to compare with."""
        if self._reference_guard is None:
            self._reference_guard = {}
            if self.reference_weights and os.path.exists(self.reference_weights):
                try:
                    model = load_torchscript(self.reference_weights)
                except (WeightsError, RuntimeError, ValueError) as exc:
                    print(f"network-alone gate off: {self.reference_weights} not loaded ({exc})", flush=True)
                else:
                    if self.scheme == SCHEME_3D:
                        self._reference_guard = smoke3d_cases(model)
                    else:
                        self._reference_guard = {f"guard_laplace{s}": laplace_guard_case(model, s)
                                                 for s in GUARD_SIZES}
        return self._reference_guard
