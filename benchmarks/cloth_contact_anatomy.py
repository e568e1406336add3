"""Where a cloth frame's Newton iterations go (issue #24): for every frame of a scene at ClothSim's
defaults (1 thread), how far the step's answer lies from Newton's warm start, how concentrated the
residual is over the vertices, how many iterations the relative residual spends between 1e-3 and the
tolerance, and how far the iterate where the frame stopped is from the minimum that a continued solve
reaches (the same step solved again to 1e-10, starting at the stopped iterate).

Why: contact frames take 20-50 Newton iterations where frames without contact take 3-8. This script
measures the anatomy behind the README's reading ("the path, not the local convergence, costs")
instead of asserting it, so that a change to the solver can be judged on the same numbers.

    python benchmarks/cloth_contact_anatomy.py [--scenes drape moving_collider curtain] [--size 32]
                                               [--frames 12] [--quick] [--out results/cloth_contact_anatomy.md]

Where a crawl step's quadratic model fails, by energy term: for every step taken in the crawl band, the
energy change the step's Newton model predicted (gradient and exact Hessian at its start) against the
change it got, and that model's error split over the energy's terms (stretch, shear, bend, contact; the
rest -- inertia, gravity, wind, damping, soft pins -- is quadratic in the acceleration, so its error is
round-off), with the step's largest edge rotation.

Writes the table (markdown) and its data (json, same name). Distances are in rest edge lengths (the
cloth's model unit). The continued solve is a diagnostic, not part of the frame: where a step's energy
has several minima or a saddle near the stopped iterate, the continuation may travel far from it.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from cloth_accuracy import scene  # noqa: E402
from metaphys.sims.cloth import ClothSim  # noqa: E402
from metaphys.io.atomic import atomic_write_text  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
CRAWL_ABOVE = 1e-3       # the band (tol, CRAWL_ABOVE] of the relative residual: "crawl" iterations
CONTINUE_TOL = 1e-10     # the continued solve's tolerance


def residual_shares(grad: torch.Tensor) -> tuple:
    """Percent of the vertices that hold 90 % and 99 % of |g|^2 (sample 0 of a [N,3,H,W] gradient)."""
    per_vertex = grad[0].pow(2).sum(0).flatten()
    total = float(per_vertex.sum())
    if total <= 0:
        return 0.0, 0.0
    share = per_vertex.sort(descending=True).values.cumsum(0) / total
    n = per_vertex.numel()
    return tuple(100.0 * (int((share < q).sum()) + 1) / n for q in (0.9, 0.99))


# the energy terms whose quadratic model can fail, each by the stiffness that scales it (the loss is linear in each)
MODEL_TERMS = {"stretch": "k_stretch", "shear": "k_shear", "bend": "k_bend", "contact": "k_contact"}


def _with_stiffness(problem, keep):
    """A shallow copy of a cloth problem whose stiffnesses of MODEL_TERMS are zero except ``keep``."""
    out = copy.copy(problem)
    out.fields = dict(problem.fields)
    for name in MODEL_TERMS.values():
        if name != keep:
            out.fields[name] = torch.zeros_like(problem.fields[name])
    return out


def _quadratic_model_error(problem, u0, u1) -> tuple:
    """(actual energy change, the change predicted by the exact second-order model at u0) of the step u0 -> u1."""
    loss0, grad0 = problem.loss_and_grad(u0)
    d = (u1 - u0)[0].flatten()
    H = problem.hessian_matrix(u0, project=False)
    dn = d.cpu().numpy()
    predicted = float(grad0[0].flatten() @ d) + 0.5 * float(dn @ (H @ dn))
    return float(problem.loss_and_grad(u1)[0][0] - loss0[0]), predicted


def model_error_by_term(problem, u0, u1) -> dict:
    """The step u0 -> u1 of sample 0 against its Newton model: ``actual`` and ``predicted`` energy change of
    the whole energy, and per term of MODEL_TERMS (plus ``other``: the rest) the model's error, actual minus
    predicted change of that term alone."""
    actual, predicted = _quadratic_model_error(problem, u0, u1)
    base_actual, base_pred = _quadratic_model_error(_with_stiffness(problem, None), u0, u1)
    out = {"actual": actual, "predicted": predicted, "other": base_actual - base_pred}
    for term, name in MODEL_TERMS.items():
        a, p = _quadratic_model_error(_with_stiffness(problem, name), u0, u1)
        out[term] = (a - p) - (base_actual - base_pred)
    return out


def max_edge_rotation_deg(problem, u0, u1) -> float:
    """The largest angle (degrees) by which an edge of the grid turns in the step u0 -> u1 (sample 0)."""
    x0, x1 = problem.state(u0[:1])[0][0], problem.state(u1[:1])[0][0]
    worst = 0.0
    for axis in (1, 2):
        if x0.shape[axis] < 2:
            continue
        e0, e1 = torch.diff(x0, dim=axis), torch.diff(x1, dim=axis)
        cos = (e0 * e1).sum(0) / (e0.norm(dim=0) * e1.norm(dim=0)).clamp_min(1e-300)
        worst = max(worst, math.degrees(float(torch.acos(cos.clamp(-1.0, 1.0)).max())))
    return worst


class FrameProbe:
    """Records, inside one ClothSim's frames, the warm start and every Newton iterate's residual
    share (through the sim's own hooks: ``_warm_start`` and the Newton progress callback)."""

    def __init__(self, sim: ClothSim):
        self.sim = sim
        self.start_x = None
        self.rels, self.shares = [], []
        self.last_u, self.crawl_steps = None, []   # the last iterate; model errors of the crawl band's steps
        warm, progress = sim._warm_start, sim._newton_progress

        def warm_start():
            a = warm()
            self.start_x = sim.problem.state(a)[0][0].clone()
            self.last_u = a.clone()
            return a

        def newton_progress(iteration, u, rel):
            tol = sim.tol or 0.0
            # a step taken from an iterate inside the crawl band (the start's residual is not known here)
            if self.rels and tol < self.rels[-1] <= CRAWL_ABOVE and self.last_u is not None:
                step = model_error_by_term(sim.problem, self.last_u, u)
                step["rotation_deg"] = max_edge_rotation_deg(sim.problem, self.last_u, u)
                self.crawl_steps.append(step)
            self.last_u = u.detach().clone()
            self.rels.append(float(rel))
            self.shares.append(residual_shares(sim.problem.loss_and_grad(u)[1]))
            progress(iteration, u, rel)

        sim._warm_start, sim._newton_progress = warm_start, newton_progress

    def reset(self):
        self.start_x, self.rels, self.shares = None, [], []
        self.last_u, self.crawl_steps = None, []


def in_contact(sim: ClothSim) -> bool:
    """Whether any vertex ends the frame within the contact margin of a collider."""
    p = sim.problem
    dist, _ = p.collider_distances(p.fields["x_old"])
    return bool((dist < p.fields["margin"].view(-1, 1, 1, 1)).any())


def crawl_model_summary(steps: list) -> dict:
    """A frame's crawl steps summarized: how many, the median ratio of the energy change they got to the
    one their Newton model predicted, each term's share of the model's error (sum of |error| over the
    steps), and the median of each step's largest edge rotation."""
    if not steps:
        return {"crawl_steps": 0, "realized_over_predicted": None, "error_share": {}, "rotation_deg_median": None}
    terms = list(MODEL_TERMS) + ["other"]
    total = {t: sum(abs(s[t]) for s in steps) for t in terms}
    whole = sum(total.values())
    ratios = [s["actual"] / s["predicted"] for s in steps if s["predicted"] < 0]
    return {"crawl_steps": len(steps),
            "realized_over_predicted": float(np.median(ratios)) if ratios else None,
            "error_share": {t: (total[t] / whole if whole > 0 else 0.0) for t in terms},
            "rotation_deg_median": float(np.median([s["rotation_deg"] for s in steps]))}


def run_scene(name: str, n: int, frames: int) -> list:
    sim = ClothSim(n, n, threads=1, **scene(name, n, frames))
    probe = FrameProbe(sim)
    # the continuation: the same step from the same state, Newton to CONTINUE_TOL from where the frame stopped
    ref = ClothSim(n, n, threads=1, tol=CONTINUE_TOL, step_tol=None, frame_time_budget=None,
                   newton_max_iterations=400, **scene(name, n, frames))
    rows = []
    for k in range(frames):
        before = sim.state_dict()
        probe.reset()
        t0 = time.process_time()
        rec = sim.step()
        cpu = time.process_time() - t0
        x_end = sim.problem.fields["x_old"][0].clone()
        ref.load_state_dict(before)
        stopped = sim.a_prev.clone()
        ref._warm_start = lambda a=stopped: ref.problem.impose(a)
        ref.step()
        x_cont = ref.problem.fields["x_old"][0]
        path = (x_end - probe.start_x).norm(dim=0)
        tol = sim.tol or 0.0
        shares = np.array(probe.shares) if probe.shares else np.zeros((1, 2))
        rows.append({
            "scene": name, "size": n, "frame": k + 1, "newton_iterations": rec.newton_iterations,
            "converged": rec.converged, "contact": in_contact(sim),
            "crawl_iterations": sum(tol < r <= CRAWL_ABOVE for r in probe.rels),
            "start_to_answer_max": float(path.max()), "start_to_answer_rms": float(path.pow(2).mean().sqrt()),
            "share90_median_pct": float(np.median(shares[:, 0])), "share99_median_pct": float(np.median(shares[:, 1])),
            "stopped_to_continued": float((x_cont - x_end).norm(dim=0).max()),
            "continued_iterations": ref.records[-1].newton_iterations,
            "cpu_s_with_probe": cpu,
            **crawl_model_summary(probe.crawl_steps),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def pooled_model_error(rows: list) -> dict:
    """The crawl steps of several frames together: their count, the median realized / predicted ratio of
    the frames, each term's error share weighted by the frames' crawl steps, the median rotation."""
    with_steps = [r for r in rows if r["crawl_steps"]]
    steps = sum(r["crawl_steps"] for r in with_steps)
    if not steps:
        return {"crawl_steps": 0, "realized_over_predicted": None, "error_share": {}, "rotation_deg_median": None}
    terms = list(MODEL_TERMS) + ["other"]
    ratios = [r["realized_over_predicted"] for r in with_steps if r["realized_over_predicted"] is not None]
    return {"crawl_steps": steps,
            "realized_over_predicted": float(np.median(ratios)) if ratios else None,
            "error_share": {t: sum(r["error_share"][t] * r["crawl_steps"] for r in with_steps) / steps for t in terms},
            "rotation_deg_median": float(np.median([r["rotation_deg_median"] for r in with_steps]))}


def _model_cells(r: dict) -> str:
    """Markdown cells: crawl steps | got / predicted | error share stretch / shear / bend / contact | rotation."""
    if not r["crawl_steps"]:
        return "0 | - | - | -"
    share = " / ".join(f"{100 * r['error_share'][t]:.0f}" for t in MODEL_TERMS)
    ratio = "-" if r["realized_over_predicted"] is None else f"{r['realized_over_predicted']:.2f}"
    return f"{r['crawl_steps']} | {ratio} | {share} % | {r['rotation_deg_median']:.1f}°"


def summarize(rows: list) -> list:
    out = []
    for name in dict.fromkeys(r["scene"] for r in rows):
        for contact in (True, False):
            sel = [r for r in rows if r["scene"] == name and r["contact"] == contact]
            if not sel:
                continue
            med = lambda key: float(np.median([r[key] for r in sel]))
            out.append({"scene": name, "size": sel[0]["size"], "contact": contact, "frames": len(sel),
                        "newton_iterations": med("newton_iterations"), "crawl_iterations": med("crawl_iterations"),
                        "start_to_answer_max": med("start_to_answer_max"),
                        "share90_median_pct": med("share90_median_pct"),
                        "stopped_to_continued_median": med("stopped_to_continued"),
                        "stopped_to_continued_max": max(r["stopped_to_continued"] for r in sel),
                        "frames_above_1e-3": sum(r["stopped_to_continued"] > 1e-3 for r in sel),
                        **pooled_model_error(sel)})
    return out


def write(path: str, rows: list, summary: list, args) -> None:
    lines = [
        "# Where a cloth frame's Newton iterations go (benchmarks/cloth_contact_anatomy.py)", "",
        f"ClothSim defaults (tol {ClothSim.__init__.__kwdefaults__['tol']:g}, Newton-Krylov), 1 thread, "
        f"{args.frames} frames, {platform.machine()}, torch {torch.__version__}, run "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Distances in rest edge lengths. `crawl`: iterations whose relative "
        f"residual lies in (tol, {CRAWL_ABOVE:g}]. `residual share`: the percent of vertices holding 90 % of "
        "|g|^2, median over the frame's iterations. `stopped -> continued`: the largest vertex distance between "
        f"where the frame stopped and where the same step, solved on to {CONTINUE_TOL:g} from there, ends. "
        "Crawl steps' model: `got / predicted` = the energy change a crawl step got over the one its Newton model "
        "(gradient and exact Hessian at the step's start) predicted (median; 1 = the quadratic model holds); "
        "`model error share` = each term's share of that model's error (sum of |error| over the crawl steps; "
        "stretch / shear / bend / contact, the quadratic rest takes the remainder); `rotation` = the median over "
        "crawl steps of the step's largest edge rotation.", "",
        "## Per scene (medians over frames; contact = a vertex ends the frame within the contact margin)", "",
        "| scene | size | contact | frames | Newton it | crawl it | warm start -> answer (max) | residual share 90 % "
        "| stopped -> continued median / max | frames > 1e-3 | crawl steps | got / predicted "
        "| model error share stretch / shear / bend / contact | rotation |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['scene']} | {s['size']}² | {'yes' if s['contact'] else 'no'} | {s['frames']} | "
                     f"{s['newton_iterations']:.0f} | {s['crawl_iterations']:.0f} | {s['start_to_answer_max']:.2f} | "
                     f"{s['share90_median_pct']:.1f} % | {s['stopped_to_continued_median']:.1e} / "
                     f"{s['stopped_to_continued_max']:.1e} | {s['frames_above_1e-3']} | {_model_cells(s)} |")
    lines += ["", "## Every frame", "",
              "| scene | frame | contact | Newton it | crawl it | warm start -> answer max / rms | share 90 % / 99 % "
              "| stopped -> continued (continued it) | crawl steps | got / predicted "
              "| model error share stretch / shear / bend / contact | rotation |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scene']} {r['size']}² | {r['frame']} | {'yes' if r['contact'] else 'no'} | "
                     f"{r['newton_iterations']} | {r['crawl_iterations']} | {r['start_to_answer_max']:.2f} / "
                     f"{r['start_to_answer_rms']:.2f} | {r['share90_median_pct']:.1f} / {r['share99_median_pct']:.1f} % | "
                     f"{r['stopped_to_continued']:.1e} ({r['continued_iterations']}) | {_model_cells(r)} |")
    atomic_write_text(path, "\n".join(lines) + "\n")
    atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps({"rows": rows, "summary": summary}, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", nargs="+", default=["drape", "moving_collider", "curtain"])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="the drape at 16², 6 frames (the test's size)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "cloth_contact_anatomy.md"))
    args = ap.parse_args(argv)
    if args.quick:
        args.scenes, args.size, args.frames = ["drape"], 16, 6
    torch.set_num_threads(1)
    rows = [r for name in args.scenes for r in run_scene(name, args.size, args.frames)]
    write(args.out, rows, summarize(rows), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
