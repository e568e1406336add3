"""Seeds of the held-out problems, in one place (imports nothing, so benchmarks can read it before
numpy). Each use draws its own streams (base + an offset per size or case); all lie far above the
training pools' seeds (``train/loop.py``: config seed * 7919 + 104729 * rank + 31 * pool), so no
held-out problem is ever a training problem."""

EVAL = 2 * 10**9 + 11       # `metaphys eval` (eval/cases.py): + grid size, or + a case's own seed
QUICK = 10**9 + 7           # checkpoint selection while training (eval/quick.py): + 1000 * k + grid size
BENCHMARK = 2025_0009       # benchmarks/common.py: + grid size

HELD_OUT = {"eval": EVAL, "quick": QUICK, "benchmark": BENCHMARK}
