"""Training recipe: a YAML file per recipe (configs/cpu.yaml, configs/gpu.yaml, configs/tiny.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import List

import yaml

from metaphys.train.pools import PoolSpec


@dataclass
class TrainConfig:
    name: str = "run"
    hidden: int = 12
    # 2: the 2-D Metamizer on [N, C, H, W] pools; 3: the 3-D one (issue #28) on [N, C, D, H, W] pools of
    # the 3-D generators only (configs/cpu3d.yaml). The checkpoint and snapshots record it.
    dims: int = 2
    padding_mode: str = "zeros"
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_final_fraction: float = 0.1   # cosine decay to lr*fraction over decay_steps, then flat
    decay_steps: int = 40000
    warmup_steps: int = 200
    ema_decay: float = 0.999
    clip_value: float = 10.0
    max_steps: int = 10**9
    max_minutes: float = 150.0
    checkpoint_minutes: float = 3.0
    snapshot_minutes: float = 10.0
    eval_iterations: int = 100
    eval_sizes: List[int] = field(default_factory=lambda: [32, 64, 100])
    log_every: int = 50
    # BatchNorm in eval mode with frozen statistics (affine still trained): needed to fine-tune
    # from shipped TorchScript weights, whose BatchNorms are folded into the convolutions
    freeze_batchnorm: bool = False
    pools: List[PoolSpec] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        d["pools"] = [PoolSpec(**p) for p in d.get("pools", [])]
        if not d["pools"]:
            raise ValueError("training config needs at least one entry under 'pools'")
        cfg = cls(**d)
        cfg.check_dims()
        return cfg

    def check_dims(self) -> None:
        """Every pool's generator makes problems of the network's dimension (``dims``)."""
        from metaphys import problems
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims!r}")
        for p in self.pools:
            got = problems.dims_of(problems.get(p.pde))
            if got != self.dims:
                raise ValueError(f"pool {p.pde!r} makes {got}-D problems but the recipe trains a {self.dims}-D "
                                 f"network (dims: {self.dims}); 3-D generators go in a dims: 3 recipe "
                                 "(configs/cpu3d.yaml)")

    @classmethod
    def load(cls, path: str) -> "TrainConfig":
        with open(path) as fh:
            return cls.from_dict(yaml.safe_load(fh) or {})
