"""metaphys: physics simulation driven by a learned scale-invariant neural optimizer (Metamizer)."""
from metaphys.version import __version__

__all__ = ["__version__"]
