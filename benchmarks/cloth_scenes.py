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


# variants of a scene run in the same loop, frame by frame (interleaved: the shared machine's load
# falls on all of them alike): "no_self" = the scene with self-collision off (its cost), "reference"
# = the scene converged (Newton, tol 1e-10, a factorization per iteration, no frame budget)
VARIANTS = {"no_self": dict(self_collision=False),
            "reference": dict(tol=1e-10, step_tol=None, newton_linear="direct", frame_time_budget=None, newton_max_iterations=400)}


def variants_of(name: str, kw: dict, reference: bool) -> list:
    out = [""]
    if kw.get("self_collision"):
        out.append("no_self")
    if reference and name == "fold":
        out.append("reference")
    return out


def run(name: str, n: int, frames: int, reference: bool = True) -> list:
    """The scene's rows: the default run first, then its variants (``variants_of``), all stepped in one
    loop. The default row gets ``ref_*`` (the reference's strain and per-frame max vertex distance)."""
    base = scene(name, n, frames)
    check = base.pop("check")
    names = variants_of(name, base, reference)
    sims = [ClothSim(n, n, threads=1, **{**base, **VARIANTS.get(v, {})}) for v in names]
    stats = [dict(times=[], cpu=[], crossings=0, inside=0.0, along=[]) for _ in sims]
    ref_dist = []
    mesh = MeshCollider(check[1], check[2], center=[0, 0, 0]) if check[0] == "mesh" else None
    for k in range(frames):
        for sim, st in zip(sims, stats):
            t0, c0 = time.perf_counter(), time.process_time()
            sim.step()
            st["times"].append(time.perf_counter() - t0)
            st["cpu"].append(time.process_time() - c0)   # this process's CPU time: what the load does not inflate
            P = sim.positions.reshape(-1, 3)
            if mesh is not None:
                import igl
                S, _, _, _ = igl.signed_distance(P, mesh.world_vertices(k + 1), check[2])
                st["inside"] = min(st["inside"], float(S.min()))
            elif check[0] == "slope":
                st["along"].append(float(P.mean(0) @ check[1][:, 1]))
            if check[0] == "fold" or name == "cape":
                st["crossings"] += grid_self_intersections(P, n, n) > 0
        if "reference" in names:
            ref = sims[names.index("reference")].positions.reshape(-1, 3)
            ref_dist.append(float(np.linalg.norm(sims[0].positions.reshape(-1, 3) - ref, axis=1).max()))
    rows = [row(name, v, n, frames, sim, st) for v, sim, st in zip(names, sims, stats)]
    if ref_dist:
        rows[0]["ref_max_strain"] = rows[names.index("reference")]["max_strain"]
        rows[0]["ref_distance_cm"] = [100 * d for d in ref_dist]
    for r in rows[1:]:
        r["positions"] = None
    return rows


def row(name, variant, n, frames, sim, st) -> dict:
    recs, times = sim.records, st["times"]
    out = dict(scene=name + (f":{variant}" if variant else ""), variant=variant, size=n, frames=frames,
               ms=1000 * statistics.median(times), ms_max=1000 * max(times), ms_frames=[1000 * t for t in times],
               cpu_ms=1000 * statistics.median(st["cpu"]), cpu_ms_max=1000 * max(st["cpu"]),
               cpu_ms_frames=[1000 * t for t in st["cpu"]],
               converged=sum(bool(r.converged) for r in recs), budget_hit=sum(bool(r.budget_hit) for r in recs),
               newton_median=float(np.median([r.newton_iterations for r in recs])),
               newton_total=int(sum(r.newton_iterations for r in recs)),
               max_strain=max(r.max_strain for r in recs), frames_with_crossings=st["crossings"],
               deepest_inside_mm=abs(1000 * st["inside"]),
               margin_mm=1000 * float(sim.problem.fields["margin"][0]) * sim.length_unit)
    along = st["along"]
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
    ap.add_argument("--no-reference", action="store_true", help="skip the fold's converged reference run")
    ap.add_argument("--no-blender", action="store_true", help="skip Blender's cloth")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = [os.getloadavg()]
    args.code = code_version()   # at the start: the modules are imported now
    rows = []
    for name in args.scenes:
        group = run(name, args.size, args.frames, reference=not args.no_reference)
        rows.extend(group)
        for r in group:
            print(json.dumps({k: v for k, v in r.items() if k not in ("positions", "ms_frames", "cpu_ms_frames",
                                                                     "ref_distance_cm")}),
                  flush=True)
    # Blender: each scene as run here, and with its self-collision off where it has it
    wanted = [r["scene"] for r in rows if r["variant"] in ("", "no_self")]
    blender = {} if args.no_blender else blender_times(args.size, args.frames, wanted)
    for r in rows:
        r["blender_ms"] = blender.get(r["scene"])
    load.append(os.getloadavg())
    write(args, rows, load)


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


def code_version() -> str:
    """The commit this ran on, and the package's files that differed from it (others edit the tree)."""
    import subprocess
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--name-only", "HEAD", "--", "metaphys", "csrc"], cwd=root,
                               capture_output=True, text=True).stdout.split()
    except OSError:
        return "unknown (no git)"
    return f"commit {head}" + (f" with uncommitted changes in {', '.join(dirty)}" if dirty else "")


def per_it(r) -> float:
    """CPU ms per Newton iteration over the run: the self-collision machinery's own cost, apart from
    the extra iterations its contacts take."""
    return sum(r["cpu_ms_frames"]) / max(1, r["newton_total"])


def label(r) -> str:
    base = r["scene"].split(":")[0]
    return {"": base, "no_self": f"{base} (self-collision off)",
            "reference": f"{base} (converged reference)"}[r["variant"]]


def write(args, rows, load):
    os.makedirs(args.out, exist_ok=True)
    lines = ["# Cloth in real scenes (benchmarks/cloth_scenes.py)", "",
             f"{args.size}² cloth, {args.frames} frames at 24 fps, 1 thread, default solver (Newton-Krylov, tol 1e-5). "
             "cape: pinned at two shoulder points on a walking, swaying capsule body (a deforming mesh, "
             "2,000+ triangles, friction 0.3), self-collision on; slope_muX: a 0.6 m cloth on a box rotated 30° with Coulomb "
             "friction X (it holds only for X > tan 30° = 0.577; sliding, a = g (sin 30° - X cos 30°)); fold: "
             "a U-folded sheet whose upper layer falls 12 cm onto its lower layer, a hammock between two "
             "rods, self-collision on. Crossings: frames "
             "whose mesh has an edge through a triangle (edge-triangle test). A scene's variants (self-collision "
             "off; the converged reference: Newton, tol 1e-10, a factorization per iteration, no frame budget) "
             "run in the same loop as the scene, frame by frame, so the machine's load falls on them alike. "
             "Blender's cloth (quality 5, its default collision settings: self-collision distance 15 mm, more than "
             "the 48² cape's 10.6 mm edge; friction in its own unit, left at its default) is timed after them "
             "in the same run, wall time, on the same scenes: the cape's body is a shape key per frame, its "
             "pins follow the cloth object's keyed motion.", "",
             f"Machine: {os.cpu_count()} cores shared with other jobs; load average (1 min) "
             f"{load[0][0]:.2f} at the start, {load[-1][0]:.2f} at the end. Code: {args.code}.", "",
             "| scene | ms/frame median / worst | CPU ms/frame median / worst | Blender's cloth median / worst "
             "(× median) | within tol | at budget | Newton it/frame | max strain | deepest inside collider (mm) | "
             "frames with crossings | slide (m) / accel (m/s²) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        slide = f"{r['slide_m']:+.3f} / {r['accel_m_s2']:+.2f}" if "slide_m" in r else "-"
        b = r.get("blender_ms")
        bl = "-" if not b else f"{b[0]:.0f} / {b[1]:.0f} ({r['ms'] / b[0]:.1f}×)"
        lines.append(f"| {label(r)} | {r['ms']:.0f} / {r['ms_max']:.0f} | {r['cpu_ms']:.0f} / {r['cpu_ms_max']:.0f} | "
                     f"{bl} | {r['converged']}/{r['frames']} | "
                     f"{r['budget_hit']} | {r['newton_median']:.0f} | {100 * r['max_strain']:.1f} % | "
                     f"{r['deepest_inside_mm']:.1f} (margin {r['margin_mm']:.1f}) | {r['frames_with_crossings']} | {slide} |")
    by = {r["scene"]: r for r in rows}
    cost = [(r, by[r["scene"] + ":no_self"]) for r in rows if r["scene"] + ":no_self" in by]
    if cost:
        lines += ["", "## Self-collision's cost (target: ≤ 2× the frame time without it)", "",
                  "The same scene with self-collision off, stepped in the same loop (its layers may pass through "
                  "each other: see its crossings above). Wall and CPU time (this process's; the shared machine's "
                  "load inflates the wall time, not the CPU time).", "",
                  "| scene | on: median / worst ms | off: median / worst ms | on/off median | on/off worst | "
                  "on/off total | CPU on/off median / worst / total | Newton it on / off (total) | "
                  "CPU ms per Newton it on / off (×) | Blender on / off median ms (×) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for on, off in cost:
            bon, boff = on.get("blender_ms"), off.get("blender_ms")
            bl = "-" if not (bon and boff) else f"{bon[0]:.0f} / {boff[0]:.0f} ({bon[0] / boff[0]:.1f}×)"
            lines.append(f"| {on['scene']} | {on['ms']:.0f} / {on['ms_max']:.0f} | {off['ms']:.0f} / {off['ms_max']:.0f} | "
                         f"{on['ms'] / off['ms']:.2f}× | {on['ms_max'] / off['ms_max']:.2f}× | "
                         f"{sum(on['ms_frames']) / sum(off['ms_frames']):.2f}× | "
                         f"{on['cpu_ms'] / off['cpu_ms']:.2f}× / {on['cpu_ms_max'] / off['cpu_ms_max']:.2f}× / "
                         f"{sum(on['cpu_ms_frames']) / sum(off['cpu_ms_frames']):.2f}× | "
                         f"{on['newton_total']} / {off['newton_total']} | "
                         f"{per_it(on):.0f} / {per_it(off):.0f} ({per_it(on) / per_it(off):.2f}×) | {bl} |")
    for r in rows:
        if "ref_max_strain" not in r:
            continue
        s, s_ref = r["max_strain"], r["ref_max_strain"]
        d = np.array(r["ref_distance_cm"])
        lines += ["", f"## {r['scene']}: the default run against its converged reference (target: strain within 10 %)",
                  "", "| max strain default | max strain reference | relative difference | max vertex distance "
                  "per frame (cm): median / worst (frame) |", "|---|---|---|---|",
                  f"| {100 * s:.2f} % | {100 * s_ref:.2f} % | {100 * abs(s - s_ref) / s_ref:.1f} % | "
                  f"{np.median(d):.2f} / {d.max():.2f} (frame {int(d.argmax()) + 1}) |", "",
                  "Per frame (cm): " + ", ".join(f"{v:.2f}" for v in d) + "."]
    with open(os.path.join(args.out, "cloth_scenes.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "cloth_scenes.json"), "w") as fh:
        json.dump([{k: v for k, v in r.items() if k != "positions"} for r in rows], fh, indent=1)
    if not any(r.get("blender_ms") for r in rows):
        with open(os.path.join(args.out, "cloth_scenes.md"), "a") as fh:
            fh.write("\nBlender's cloth was not timed in this run (bpy is installed by `make test-blender`).\n")
    shown = [r for r in rows if r.get("positions")]
    if not shown:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=(4 * len(shown), 4))
        for k, r in enumerate(shown):
            ax = fig.add_subplot(1, len(shown), k + 1, projection="3d")
            P = np.array(r["positions"])
            ax.scatter(P[:, 0], P[:, 1], P[:, 2], s=1)
            ax.set_title(r["scene"])
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "cloth_scenes.png"), dpi=80)
    except Exception as exc:  # the table is the result
        print(f"plot skipped: {exc}")


if __name__ == "__main__":
    main()
