"""Bakes: run a simulation frame by frame and write its files (see docs/bake-spec.md)."""
from metaphys.bake.driver import BakeError, run_bake

__all__ = ["BakeError", "run_bake"]
