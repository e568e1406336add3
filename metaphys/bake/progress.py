"""Progress reporting for bakes: a tqdm bar, a JSON-lines stream (for the Blender worker), or none."""
from __future__ import annotations

import json
import sys
import time


class Progress:
    def __init__(self, mode: str, total: int, kind: str, initial: int = 0):
        if mode not in ("bar", "json", "none"):
            raise ValueError(f"progress must be 'bar', 'json' or 'none', got {mode!r}")
        self.mode, self.total, self.kind = mode, total, kind
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="frame", desc=f"bake {kind}", file=sys.stderr)

    def emit(self, event: str, **data) -> None:
        if self.mode == "json":
            sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
            sys.stdout.flush()

    def inner(self, data: dict, every: float = 1.0) -> None:
        """Progress inside a frame (a solver iteration), at most once per ``every`` seconds: a long
        frame shows it is alive and how far its residual has come."""
        now = time.monotonic()
        if now - getattr(self, "_last_inner", 0.0) < every:
            return
        self._last_inner = now
        if self.bar is not None:
            self.bar.set_postfix(frame=data.get("frame"), newton_it=data.get("newton_iteration"),
                                 residual=f"{data.get('relative_residual', 0):.1e}")
        self.emit("iteration", **data)

    def frame(self, **data) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(residual=f"{data.get('residual', 0):.1e}", it=data.get("iterations"))
        self.emit("frame", **data)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
