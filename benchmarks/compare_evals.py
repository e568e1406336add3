"""Two full evaluations side by side (the shipping rule's last check, issue #29): the shipped weights'
`eval.json` against a candidate's, row by row, for the network alone (plain rows) and the product's
accelerated iteration (`_acc` rows) separately, with how many rows each wins by more than a factor.

Why: new weights ship only when the held-out eval says they are better, for the network alone as well as
for the accelerated iteration, "and by how much". Counting rows by hand from two markdown tables is
where that judgement went wrong before; this prints it.

    python benchmarks/compare_evals.py BASE_eval.json CAND_eval.json [--factor 2] [--out results/x.md]

Per row, the figure compared: stationary rows (a convergence curve) the residual after 50 iterations
and the iterations to 1e-20; time-dependent rows the mean residual over the steps (`mean`, the Table-1
figure; Burgers: over the solvable steps). Residuals below FLOOR (round-off) count as FLOOR, so two
runs at round-off tie. A row missing or diverged in one file is listed, never silently dropped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from metaphys.io.atomic import atomic_write_text  # noqa: E402

FLOOR = 1e-30        # residuals below this are round-off for every case of the eval
AT = 50              # stationary rows: the residual after this many iterations
LEVEL = 1e-20        # ... and the iterations to this level


def family(name: str) -> str:
    """'accelerated' for the product's iteration (`_acc`, `_acc_smoke`), else 'alone'."""
    return "accelerated" if "_acc" in name else "alone"


def figure(row: dict) -> dict:
    """The figures a row is judged on: {'at50': residual} and, for curves, {'to1e-20': iterations or inf}."""
    if "curve" in row:
        curve = [float("inf") if c is None or not math.isfinite(c) else c for c in row["curve"]]
        out = {"at50": curve[min(AT, len(curve) - 1)] if curve else float("inf")}
        hit = next((k for k, c in enumerate(curve) if c <= LEVEL), None)
        out["to1e-20"] = float("inf") if hit is None else float(hit)
        return out
    value = row.get("mean_solvable", row.get("mean"))
    return {"mean": float("inf") if value is None or not math.isfinite(value) else float(value)}


def dlog(base: float, cand: float) -> float:
    """log10(cand / base) with both clamped at FLOOR (negative: the candidate is better)."""
    b, c = (min(max(x, FLOOR), 1e30) for x in (base, cand))
    return math.log10(c) - math.log10(b)


def compare(base: dict, cand: dict, factor: float = 2.0) -> dict:
    """Per row the base and candidate figures and the verdict; per family the counts."""
    limit = math.log10(factor)
    rows, missing = [], sorted(set(base) ^ set(cand))
    for name in base:
        if name not in cand:
            continue
        fb, fc = figure(base[name]), figure(cand[name])
        key = "at50" if "at50" in fb else "mean"
        d = dlog(fb[key], fc[key])
        verdict = "better" if d < -limit else "worse" if d > limit else "same"
        entry = {"row": name, "family": family(name), "figure": key, "base": fb[key], "cand": fc[key],
                 "dlog10": d, "verdict": verdict}
        if "to1e-20" in fb:
            entry["base_to1e-20"], entry["cand_to1e-20"] = fb["to1e-20"], fc["to1e-20"]
        rows.append(entry)
    counts = {}
    for fam in ("alone", "accelerated"):
        rs = [r for r in rows if r["family"] == fam]
        if not rs:
            continue
        worst = max(rs, key=lambda r: r["dlog10"])
        counts[fam] = {"rows": len(rs), "better": sum(r["verdict"] == "better" for r in rs),
                       "worse": sum(r["verdict"] == "worse" for r in rs),
                       "mean_dlog10": sum(r["dlog10"] for r in rs) / len(rs),
                       "worst_row": worst["row"], "worst_dlog10": worst["dlog10"]}
    return {"factor": factor, "rows": rows, "counts": counts, "missing": missing}


def _its(x: float) -> str:
    return "–" if not math.isfinite(x) else str(int(x))


def markdown(result: dict, base_name: str, cand_name: str) -> str:
    f = result["factor"]
    lines = [f"# Full evaluation: {cand_name} against {base_name} (benchmarks/compare_evals.py)", "",
             f"Per row: stationary problems the residual after {AT} iterations (and the iterations to {LEVEL:g}), "
             "time-dependent ones the mean residual over the steps; residuals below "
             f"{FLOOR:g} count as {FLOOR:g}. `Δlog10` < 0: the candidate is better. A row counts as better or "
             f"worse where it moved by more than {f:g}×.", "",
             "| rows | count | better | worse | mean Δlog10 | worst row (Δlog10) |", "|---|---|---|---|---|---|"]
    for fam, c in result["counts"].items():
        label = "network alone (plain)" if fam == "alone" else "accelerated (the product's iteration)"
        lines.append(f"| {label} | {c['rows']} | {c['better']} | {c['worse']} | {c['mean_dlog10']:+.2f} | "
                     f"{c['worst_row']} ({c['worst_dlog10']:+.2f}) |")
    if result["missing"]:
        lines += ["", "Rows in only one file: " + ", ".join(result["missing"])]
    lines += ["", f"| row | figure | {base_name} | {cand_name} | Δlog10 | verdict | it. to {LEVEL:g} |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        its = f"{_its(r['base_to1e-20'])} → {_its(r['cand_to1e-20'])}" if "base_to1e-20" in r else ""
        lines.append(f"| {r['row']} | {r['figure']} | {r['base']:.2e} | {r['cand']:.2e} | {r['dlog10']:+.2f} | "
                     f"{r['verdict']} | {its} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base", help="eval.json of the shipped weights")
    ap.add_argument("cand", help="eval.json of the candidate")
    ap.add_argument("--factor", type=float, default=2.0, help="a row counts as better/worse beyond this factor")
    ap.add_argument("--names", nargs=2, default=None, help="column names (default: the files' folder names)")
    ap.add_argument("--out", default=None, help="markdown file (its data: the same name, .json)")
    args = ap.parse_args(argv)
    if args.factor <= 1:
        ap.error(f"--factor must be > 1, got {args.factor}")
    data = []
    for path in (args.base, args.cand):
        try:
            with open(path, encoding="utf-8") as fh:
                data.append(json.load(fh))
        except (OSError, ValueError) as exc:
            ap.error(f"cannot read the eval results {path!r}: {exc}")
    names = args.names or [os.path.basename(os.path.dirname(os.path.abspath(p))) or p for p in (args.base, args.cand)]
    result = compare(data[0], data[1], args.factor)
    text = markdown(result, *names)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
        atomic_write_text(os.path.splitext(args.out)[0] + ".json", json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
