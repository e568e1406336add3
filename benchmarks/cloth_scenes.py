"""Cloth in real scenes (issue #26): a cape on a walking character, a cloth on a rotated slope with
and without friction, a cloth falling onto itself. Each scene reports ms/frame (median and worst),
frames within tolerance, penetration of colliders and layer crossings per frame.

    python benchmarks/cloth_scenes.py [--size 48] [--frames 48] [--scenes cape slope fold]
writes benchmarks/results/cloth_scenes.md (+ .json, + a PNG of each scene's last frame). Threads: 1.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from metaphys.sims.cloth import ClothSim, flat_cloth  # noqa: E402
from metaphys.sims.mesh_collider import MeshCollider, euler_xyz_degrees, grid_self_intersections  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def walking_body(frames: int, fps: float = 24.0):
    """A 1.7 m capsule 'body' (about 2,000 triangles) that walks along +y and sways: its vertices
    bend sideways with height, a deforming mesh, given per frame."""
    import trimesh
    body = trimesh.creation.capsule(height=1.2, radius=0.18, count=[32, 32])
    V0 = np.asarray(body.vertices, dtype=np.float64) + [0.0, 0.0, 0.78]       # feet at z = 0
    F = np.asarray(body.faces, dtype=np.int64)
    track = []
    for k in range(frames + 1):
        t = k / fps
        V = V0.copy()
        V[:, 0] += 0.06 * np.sin(2 * np.pi * 1.0 * t) * (V0[:, 2] / 1.7) ** 2   # sway: bends with height
        V[:, 1] += 0.5 * t                                                    # walks at 0.5 m/s
        track.append(V)
    return np.stack(track), F


def fold_scene(n: int, size: float = 0.8, gap: float = 0.12) -> dict:
    """A U-folded sheet: a lower layer hanging between two pinned rods (its first and last row), a
    wall of rows rising ``gap`` at the second rod, and the rest of the sheet lying flat ``gap`` above
    the lower layer, ready to fall onto it. Every edge keeps the rest length (no stretched crease)."""
    L = size / (n - 1)
    k = max(1, int(round(gap / L)))                 # rows in the wall
    lower = (n - k) // 2
    pos = np.zeros((n, n, 3))
    for i in range(n):
        if i < lower:
            y, z = i * L, 0.5
        elif i < lower + k:
            y, z = (lower - 1) * L, 0.5 + (i - lower + 1) * L
        else:
            y, z = (lower - 1 - (i - lower - k + 1)) * L, 0.5 + k * L
        pos[i, :, 0] = np.arange(n) * L - size / 2
        pos[i, :, 1], pos[i, :, 2] = y, z
    pins = np.zeros((n, n))
    pins[0, :] = pins[lower - 1, :] = 1.0
    return dict(rest_positions=pos.reshape(-1, 3), pin_weights=pins.reshape(-1))


def scene(name: str, n: int, frames: int, **kw) -> dict:
    if name == "cape":
        V, F = walking_body(frames)
        w = 0.5
        # a cape hanging behind the shoulders (z 1.5 m), pinned at two shoulder points that walk along
        rest = flat_cloth(n, n, w, height=1.5, plane="xz") + [0.0, -0.22, 0.0]
        pins = np.zeros(n * n)
        pins[n // 4] = pins[3 * n // 4] = 1.0
        targets = np.stack([rest + [0.0, 0.5 * k / 24.0, 0.0] for k in range(frames + 1)])
        return dict(rest_positions=rest, pin_weights=pins, pin_targets=targets, self_collision=True,
                    colliders=[{"type": "mesh", "center": [0, 0, 0], "vertices": V, "faces": F, "friction": 0.3}],
                    check=("mesh", V, F))
    if name.startswith("slope"):
        mu = float(name.split("_mu")[1]) if "_mu" in name else 0.5
        R = euler_xyz_degrees([30, 0, 0])
        rest = flat_cloth(n, n, 0.6, height=0.0) @ R.T + R[:, 2] * 0.21
        box = {"type": "box", "center": [0, 0, 0], "half_extents": [1.0, 1.5, 0.2], "rotation": [30, 0, 0],
               "friction": mu}
        return dict(rest_positions=rest, pin_weights=np.zeros(n * n), colliders=[box], check=("slope", R))
    if name == "fold":
        return dict(fold_scene(n), self_collision=True, check=("fold",))
    raise ValueError(f"unknown scene {name!r}")


def run(name: str, n: int, frames: int) -> dict:
    kw = scene(name, n, frames)
    check = kw.pop("check")
    sim = ClothSim(n, n, threads=1, **kw)
    times, crossings, inside, along = [], 0, 0.0, []
    for k in range(frames):
        t0 = time.perf_counter()
        sim.step()
        times.append(time.perf_counter() - t0)
        P = sim.positions.reshape(-1, 3)
        if check[0] == "mesh":
            import igl
            mesh = MeshCollider(check[1], check[2], center=[0, 0, 0])
            S, _, _, _ = igl.signed_distance(P, mesh.world_vertices(k + 1), check[2])
            inside = min(inside, float(S.min()))
        elif check[0] == "slope":
            along.append(float(P.mean(0) @ check[1][:, 1]))
        if check[0] == "fold" or name == "cape":
            crossings += grid_self_intersections(P, n, n) > 0
    recs = sim.records
    out = dict(scene=name, size=n, frames=frames, ms=1000 * statistics.median(times), ms_max=1000 * max(times),
               converged=sum(bool(r.converged) for r in recs), budget_hit=sum(bool(r.budget_hit) for r in recs),
               newton_median=float(np.median([r.newton_iterations for r in recs])),
               max_strain=max(r.max_strain for r in recs), frames_with_crossings=crossings,
               deepest_inside_mm=abs(1000 * inside), margin_mm=1000 * float(sim.problem.fields["margin"][0]) * sim.length_unit)
    if along:
        v = np.diff(along) * sim.fps
        out["slide_m"] = along[-1] - along[0]
        out["accel_m_s2"] = float((v[-1] - v[len(v) // 2]) / ((len(v) - 1 - len(v) // 2) / sim.fps)) if len(v) > 2 else 0.0
    out["positions"] = sim.positions.reshape(-1, 3).tolist()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--scenes", nargs="+", default=["cape", "slope_mu0.7", "slope_mu0.5", "slope_mu0", "fold"])
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.scenes:
        rows.append(run(name, args.size, args.frames))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "positions"}), flush=True)
    blender = blender_times(args.size, args.frames, [r["scene"] for r in rows if r["scene"] != "cape"])
    for r in rows:
        r["blender_ms"] = blender.get(r["scene"])
    write(args, rows)


def blender_times(n, frames, scenes) -> dict:
    """Blender 5.0's own cloth on the same scenes (quality 5), timed in this run: {scene: (median,
    worst) ms}; empty where bpy is missing (it is installed by make test-blender)."""
    import subprocess
    if not scenes:
        return {}
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_cloth.py")
    r = subprocess.run([sys.executable, script, "--size", str(n), "--frames", str(frames), "--scenes", *scenes],
                       capture_output=True, text=True, timeout=3600)
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            b = json.loads(line)
            out[b["scene"]] = (b["ms"], b.get("ms_max", float("nan")))
    if not out:
        print(f"Blender cloth not timed: {r.stderr.strip()[-300:]}", flush=True)
    return out


def write(args, rows):
    os.makedirs(args.out, exist_ok=True)
    lines = ["# Cloth in real scenes (benchmarks/cloth_scenes.py)", "",
             f"{args.size}² cloth, {args.frames} frames at 24 fps, 1 thread, default solver (Newton-Krylov, tol 1e-5). "
             "cape: pinned at two shoulder points on a walking, swaying capsule body (a deforming mesh, "
             "2,000+ triangles, friction 0.3), self-collision on; slope_muX: a 0.6 m cloth on a box rotated 30° with Coulomb "
             "friction X (it holds only for X > tan 30° = 0.577; sliding, a = g (sin 30° - X cos 30°)); fold: "
             "a U-folded sheet whose upper layer falls 12 cm onto its lower layer, a hammock between two "
             "rods, self-collision on. Crossings: frames "
             "whose mesh has an edge through a triangle (edge-triangle test).", "",
             "| scene | ms/frame median / worst | Blender's cloth median / worst (× median) | within tol | "
             "at budget | Newton it/frame | max strain | deepest inside collider (mm) | frames with crossings | "
             "slide (m) / accel (m/s²) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        slide = f"{r['slide_m']:+.3f} / {r['accel_m_s2']:+.2f}" if "slide_m" in r else "-"
        b = r.get("blender_ms")
        bl = "-" if not b else f"{b[0]:.0f} / {b[1]:.0f} ({r['ms'] / b[0]:.1f}×)"
        lines.append(f"| {r['scene']} | {r['ms']:.0f} / {r['ms_max']:.0f} | {bl} | {r['converged']}/{r['frames']} | "
                     f"{r['budget_hit']} | {r['newton_median']:.0f} | {100 * r['max_strain']:.1f} % | "
                     f"{r['deepest_inside_mm']:.1f} (margin {r['margin_mm']:.1f}) | {r['frames_with_crossings']} | {slide} |")
    with open(os.path.join(args.out, "cloth_scenes.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "cloth_scenes.json"), "w") as fh:
        json.dump([{k: v for k, v in r.items() if k != "positions"} for r in rows], fh, indent=1)
    if not any(r.get("blender_ms") for r in rows):
        with open(os.path.join(args.out, "cloth_scenes.md"), "a") as fh:
            fh.write("\nBlender's cloth was not timed in this run (bpy is installed by `make test-blender`).\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=(4 * len(rows), 4))
        for k, r in enumerate(rows):
            ax = fig.add_subplot(1, len(rows), k + 1, projection="3d")
            P = np.array(r["positions"])
            ax.scatter(P[:, 0], P[:, 1], P[:, 2], s=1)
            ax.set_title(r["scene"])
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "cloth_scenes.png"), dpi=80)
    except Exception as exc:  # the table is the result
        print(f"plot skipped: {exc}")


if __name__ == "__main__":
    main()
