"""Bake specs, below both ``sims`` and ``bake``: the schemas (``schema``), their value types
(``types``) and the validated parameters -> sim keyword arguments (``params``). Only numpy (and
``io.atomic`` for the docs writer) below it, so a sim can be built from a spec without the bakes."""
