"""The cyclic training pool (paper: "training pool"): ask -> network step -> tell.

A ``Pool`` holds P environments of one PDE at one grid size and one iterations-per-time-step
(ipt) setting, all zero-initialized. ``ask`` samples B environments without replacement and
returns their (split-channel) gradients and optimizer states; ``tell`` applies the network's
steps, returns the per-sample loss *after* the step (with autograd back to the step: the
greedy one-step meta-loss), advances environments whose counter hits a multiple of ipt, resets
diverged ones, and resets one environment round-robin every A*ipt sampled iterations (integer
accumulator), so episodes average A time steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from metaphys.optim.metamizer import MetamizerState, split_channels, merge_channels
from metaphys import problems


@dataclass
class PoolSpec:
    pde: str
    size: int = 32
    width: Optional[int] = None
    depth: Optional[int] = None   # 3-D generators only: the grid is depth x size x width (default size)
    pool: int = 32
    batch: int = 4
    ipt: int = 1
    episode: int = 200  # A: time steps per episode (iterations for stationary problems)
    # train on this pool every ``every``-th step only: its share of the training signal below one
    # sample per step. (A loss weight would do nothing: the gradient normalizer gives every sample
    # an equal-sized signal whatever its loss, so a recipe is balanced by sample counts.)
    every: int = 1

    def __post_init__(self):
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"pool {self.pde} {self.size}: every must be a whole number of steps >= 1, "
                             f"got {self.every!r}")

    @property
    def shape(self):
        return self.size, (self.width or self.size)

    def spatial(self, dims: int):
        """The grid of this pool's problems: (H, W), or (D, H, W) for a 3-D generator."""
        h, w = self.shape
        return (h, w) if dims == 2 else ((self.depth or self.size), h, w)


@dataclass
class Asked:
    idx: torch.Tensor
    sub: object
    u: torch.Tensor
    grad: torch.Tensor        # [B*C,1,H,W]
    state: MetamizerState     # for the B*C channel samples


class Pool:
    def __init__(self, spec: PoolSpec, seed: int, device=None):
        self.spec = spec
        self.device = device
        self.make = problems.get(spec.pde)
        self.dims = problems.dims_of(self.make)
        self.gen = torch.Generator().manual_seed(seed)
        self.problem = self._make(spec.pool)
        self.channels = self.problem.channels
        self.u = self.problem.initial_guess()
        self.state = MetamizerState.fresh(spec.pool * self.channels, *spec.spatial(self.dims), device=device)
        self.iters = torch.zeros(spec.pool, dtype=torch.long)
        self.time = torch.zeros(spec.pool, dtype=torch.long)
        self.accumulator = 0
        self.next_reset = 0
        self.stats = {"divergence_resets": 0, "scheduled_resets": 0}

    def _make(self, n: int):
        h, w = self.spec.shape
        if self.dims == 3:
            return self.make(n, h, w, self.gen, device=self.device, depth=self.spec.spatial(3)[0])
        return self.make(n, h, w, self.gen, device=self.device)

    @property
    def name(self) -> str:
        return f"{self.spec.pde}{'x'.join(map(str, self.spec.spatial(self.dims)))}_ipt{self.spec.ipt}"

    def _channel_index(self, idx: torch.Tensor) -> torch.Tensor:
        c = self.channels
        return (idx.view(-1, 1) * c + torch.arange(c).view(1, -1)).reshape(-1)

    def ask(self) -> Asked:
        idx = torch.randperm(self.spec.pool, generator=self.gen)[: self.spec.batch]
        sub = self.problem.select(idx)
        u = self.u[idx]
        _, grad = sub.loss_and_grad(u)
        return Asked(idx, sub, u, split_channels(grad), self.state.select(self._channel_index(idx)))

    def tell(self, asked: Asked, step: torch.Tensor, new_state: MetamizerState) -> torch.Tensor:
        """Apply ``step`` [B*C,1,H,W] (with graph); returns per-sample loss after it (with graph)."""
        sub, idx = asked.sub, asked.idx
        step = merge_channels(step, self.channels)
        loss = sub.loss(asked.u + step)
        u_new = sub.apply(asked.u, step.detach())
        self.u[idx] = u_new
        self.state.assign(self._channel_index(idx), new_state.detached())
        self.iters[idx] += 1
        lossd = loss.detach()
        if self.problem.time_dependent:
            due = (self.iters[idx] % self.spec.ipt) == 0
            if bool(due.any()):
                sel = due.nonzero().view(-1)
                adv = sub.select(sel)
                self.time[idx[sel]] += 1
                warm = adv.advance(u_new[sel])
                hook = getattr(self.make, "on_advance", None)
                if hook is not None:
                    hook(adv, self.time[idx[sel]], self.gen)
                self.problem.assign(idx[sel], adv)
                self.u[idx[sel]] = warm
        bad = ~torch.isfinite(lossd) | (lossd > self.problem.divergence_threshold)
        if hasattr(self.problem, "diverged"):
            bad |= self.problem.diverged(self.u[idx])
        if bool(bad.any()):
            self.reset(idx[bad])
            self.stats["divergence_resets"] += int(bad.sum())
        self._scheduled_reset()
        return loss

    def _scheduled_reset(self) -> None:
        period = self.spec.episode * (self.spec.ipt if self.problem.time_dependent else 1)
        self.accumulator += self.spec.batch
        while self.accumulator >= period:
            self.accumulator -= period
            self.reset(torch.tensor([self.next_reset]))
            self.next_reset = (self.next_reset + 1) % self.spec.pool
            self.stats["scheduled_resets"] += 1

    def reset(self, ids: torch.Tensor) -> None:
        ids = torch.as_tensor(ids, dtype=torch.long).view(-1)
        fresh = self._make(len(ids))
        self.problem.assign(ids, fresh)
        self.u[ids] = fresh.initial_guess()
        self.state.reset(self._channel_index(ids))
        self.iters[ids] = 0
        self.time[ids] = 0

    # --- checkpointing: the whole pool, so a resumed run continues bit-identically ----------
    def state_dict(self) -> dict:
        return {"fields": dict(self.problem.fields), "u": self.u, "prev_grad": self.state.prev_grad,
                "prev_step": self.state.prev_step, "scale": self.state.scale, "iters": self.iters,
                "time": self.time, "accumulator": self.accumulator, "next_reset": self.next_reset,
                "gen": self.gen.get_state(), "stats": dict(self.stats)}

    def load_state_dict(self, sd: dict) -> None:
        self.problem.fields = {k: v.clone() for k, v in sd["fields"].items()}
        self.u = sd["u"].clone()
        self.state = MetamizerState(sd["prev_grad"].clone(), sd["prev_step"].clone(), sd["scale"].clone())
        self.iters, self.time = sd["iters"].clone(), sd["time"].clone()
        self.accumulator, self.next_reset = int(sd["accumulator"]), int(sd["next_reset"])
        self.gen.set_state(sd["gen"])
        self.stats = dict(sd["stats"])
