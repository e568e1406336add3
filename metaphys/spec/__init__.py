"""Bake specs, below both ``sims`` and ``bake``: the schemas (``schema``), their value types
(``types``) and the validated parameters -> sim keyword arguments (``params``). Imports nothing
above ``numpy``, so a sim can be built from a spec without importing the bake machinery."""
