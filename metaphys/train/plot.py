"""Training curves: per-pool loss after the step (rolling median, log scale) and the held-out
snapshot score, from a run folder's log.csv and snapshots.jsonl, written as one PNG."""
from __future__ import annotations

import csv
import json
import os
from collections import defaultdict

from metaphys.io.atomic import atomic_path


def plot_training(run_dir: str, out_png: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    series = defaultdict(lambda: ([], []))
    with open(os.path.join(run_dir, "log.csv")) as fh:
        for row in csv.DictReader(fh):
            try:
                step, loss = int(row["step"]), float(row["loss"])
            except (ValueError, KeyError):
                continue
            if np.isfinite(loss) and loss > 0:
                series[row["pool"]][0].append(step)
                series[row["pool"]][1].append(loss)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    ax = axes[0]
    for name, (steps, losses) in sorted(series.items()):
        order = np.argsort(steps)
        s, l = np.asarray(steps)[order], np.log10(np.asarray(losses)[order])
        k = max(1, len(l) // 40)
        med = [np.median(l[max(0, i - k):i + 1]) for i in range(len(l))]
        ax.plot(s, med, label=name, lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("log10 loss after the step (rolling median)")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    ax = axes[1]
    path = os.path.join(run_dir, "snapshots.jsonl")
    if os.path.exists(path):
        with open(path) as fh:
            recs = [json.loads(line) for line in fh]
        recs = [r for r in recs if r.get("scheme") == recs[-1].get("scheme")]
        ax.plot([r["step"] for r in recs], [r["score"] for r in recs], "o-")
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out score (mean log10 error, lower is better)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return out_png
