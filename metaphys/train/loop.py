"""Meta-training loop: pools -> network -> tell -> AdamW, with EMA, checkpoints and resume.

One step: every pool is asked; samples are grouped by grid size and pushed through the network in
train mode (BatchNorm statistics over the mixed group); each pool's tell returns the per-sample
loss after the step; the sum of pool means is backpropagated (the backward-only gradient
normalizer makes every sample's signal equally sized), gradients are value-clipped, AdamW steps.
Multi-process (torchrun): gradients are all-reduced by hand (gloo on CPU, nccl on GPU), so the
model can be called several times per step; each rank owns differently seeded pools.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import sys
import time
from collections import defaultdict
from typing import List, Optional

import torch
import torch.distributed as dist

from metaphys.optim.metamizer import MetamizerNet, MetamizerState
from metaphys.optim.weights_file import WeightsError, load_plain
from metaphys.train.config import TrainConfig
from metaphys.train.pools import Pool


def _rank_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str, init_weights: Optional[str] = None):
        self.cfg = cfg
        self.out_dir = out_dir
        self.rank, self.world = _rank_world()
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + 1000 * self.rank)
        self.device = torch.device(cfg.device)
        self.model = MetamizerNet(hidden=cfg.hidden, padding_mode=cfg.padding_mode, dims=cfg.dims).to(self.device)
        if init_weights:
            self._init_from(init_weights)
        self.model.normalize_head_gradients = True
        if self.world > 1:  # every rank starts from rank 0's weights; all-reduced gradients keep them equal
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                dist.broadcast(t.data, 0)
        self.ema = copy.deepcopy(self.model).eval()
        self.ema.normalize_head_gradients = False
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.pools: List[Pool] = [Pool(spec, seed=cfg.seed * 7919 + 104729 * self.rank + 31 * k, device=self.device)
                                  for k, spec in enumerate(cfg.pools)]
        self.step = 0
        self.elapsed = 0.0
        self.history: list = []
        os.makedirs(out_dir, exist_ok=True)

    def _init_from(self, path: str) -> None:
        from metaphys.optim.weights import load_state_dict_any
        self.model.load_state_dict(load_state_dict_any(path), strict=True)

    # --- schedule ---------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        t = min(1.0, (step - c.warmup_steps) / max(1, c.decay_steps))
        return c.lr * (c.lr_final_fraction + (1 - c.lr_final_fraction) * 0.5 * (1 + math.cos(math.pi * t)))

    # --- one meta-training step -------------------------------------------------------------
    def _train_mode(self) -> None:
        self.model.train()
        if self.cfg.freeze_batchnorm:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def train_step(self) -> dict:
        self._train_mode()
        asked = [p.ask() if self.step % p.spec.every == 0 else None for p in self.pools]
        groups = defaultdict(list)
        for k, a in enumerate(asked):
            if a is None:
                continue   # this pool sits out this step (PoolSpec.every)
            groups[tuple(a.grad.shape[2:])].append(k)   # by grid: (H, W) or (D, H, W)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        per_pool = {}
        for _, ks in groups.items():
            g = torch.cat([asked[k].grad for k in ks])
            st = [asked[k].state for k in ks]
            prev_g = torch.cat([s.prev_grad for s in st])
            prev_s = torch.cat([s.prev_step for s in st])
            scale = torch.cat([s.scale for s in st])
            step, new_scale = self.model(g, prev_g, prev_s, scale)
            off = 0
            for k in ks:
                m = asked[k].grad.shape[0]
                sl = slice(off, off + m)
                off += m
                new_state = MetamizerState(g[sl], step[sl], new_scale[sl])
                loss = self.pools[k].tell(asked[k], step[sl], new_state)
                total = total + loss.mean()
                per_pool[self.pools[k].name] = float(loss.detach().mean())
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.world > 1:
            for p in self.model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
        torch.nn.utils.clip_grad_value_(self.model.parameters(), self.cfg.clip_value)
        self.opt.step()
        self._update_ema()
        self.step += 1
        return per_pool

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
            pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        for be, bm in zip(self.ema.buffers(), self.model.buffers()):
            if be.dtype.is_floating_point:
                be.mul_(d).add_(bm, alpha=1 - d)
            else:
                be.copy_(bm)

    # --- checkpoints ------------------------------------------------------------------------
    def checkpoint_path(self) -> str:
        return os.path.join(self.out_dir, "checkpoint.pt")

    def pools_path(self) -> str:
        return os.path.join(self.out_dir, "pools.pt")

    def state_dict(self) -> dict:
        """The small part worth committing (network, EMA, optimizer, counters: a few MB)."""
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "elapsed": self.elapsed,
                "config": self.cfg.__dict__ | {"pools": [vars(s) for s in self.cfg.pools]},
                "history": self.history}

    def pools_state_dict(self) -> dict:
        """The large, local part (pool environments, RNG): a resume with it is bit-exact."""
        return {"step": self.step, "pools": [p.state_dict() for p in self.pools], "torch_rng": torch.get_rng_state()}

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        from metaphys.io.atomic import atomic_path
        for path, sd in ((self.pools_path(), self.pools_state_dict()), (self.checkpoint_path(), self.state_dict())):
            with atomic_path(path) as tmp:  # a killed save never leaves a half-written checkpoint
                torch.save(sd, tmp)

    def load_checkpoint(self, path: Optional[str] = None) -> bool:
        path = path or self.checkpoint_path()
        if not os.path.exists(path):
            return False
        sd = load_plain(path, "training checkpoint", map_location=self.device)  # never unpickles objects
        if not isinstance(sd, dict) or not {"model", "ema", "opt", "step", "elapsed"} <= set(sd):
            raise WeightsError(f"{path} is not a metaphys training checkpoint (expected a dict with model, "
                               "ema, opt, step and elapsed)")
        self.model.load_state_dict(sd["model"])
        self.ema.load_state_dict(sd["ema"])
        self.opt.load_state_dict(sd["opt"])
        self.step, self.elapsed = int(sd["step"]), float(sd["elapsed"])
        self.history = list(sd.get("history", []))
        pools_file = os.path.join(os.path.dirname(path), "pools.pt")
        pools = None
        if "pools" in sd:  # older single-file checkpoints
            pools = sd
        elif os.path.exists(pools_file):
            pools = load_plain(pools_file, "pool state", map_location=self.device)
            if not isinstance(pools, dict) or pools.get("step") != self.step:  # another run or step: not this state
                pools = None
        if pools is not None and len(pools["pools"]) == len(self.pools) and all(
                self._pool_state_fits(p, q) for p, q in zip(self.pools, pools["pools"])):
            for p, q in zip(self.pools, pools["pools"]):
                p.load_state_dict(q)
            torch.set_rng_state(pools["torch_rng"])
        else:  # a fresh machine or a changed recipe: keep network + optimizer, start fresh pools
            print("resume: no matching pool state; continuing with fresh pools", file=sys.stderr)
        return True

    @staticmethod
    def _pool_state_fits(pool: Pool, saved: dict) -> bool:
        """Whether a saved pool state can stand in for ``pool``'s: the same unknowns' shape and the same
        problem fields (a pool saved before a problem's fields changed -- the cloth's collider table
        replaced its sphere and box lists -- is not resumed: its problems would miss a field)."""
        mine = pool.state_dict()
        return (isinstance(saved, dict) and isinstance(saved.get("fields"), dict)
                and mine["u"].shape == saved["u"].shape and set(mine["fields"]) == set(saved["fields"]))

    def save_snapshot(self) -> str:
        path = os.path.join(self.out_dir, f"ema_step{self.step:07d}.pt")
        if self.rank == 0:
            torch.save({"ema": self.ema.state_dict(), "step": self.step, "elapsed": self.elapsed,
                        "hidden": self.cfg.hidden, "padding_mode": self.cfg.padding_mode, "dims": self.cfg.dims},
                       path)
        return path

    # --- main loop --------------------------------------------------------------------------
    def run(self, max_steps: Optional[int] = None, max_minutes: Optional[float] = None,
            progress: bool = True, evaluate=None) -> None:
        cfg = self.cfg
        max_steps = cfg.max_steps if max_steps is None else max_steps
        budget = 60 * (cfg.max_minutes if max_minutes is None else max_minutes)
        start = time.time()
        base_elapsed = self.elapsed
        last_ckpt = last_snap = time.time()
        log_path = os.path.join(self.out_dir, "log.csv")
        new_log = not os.path.exists(log_path)
        logf = open(log_path, "a", newline="") if self.rank == 0 else None
        writer = csv.writer(logf) if logf else None
        if writer and new_log:
            writer.writerow(["step", "elapsed_s", "lr", "pool", "loss", "divergence_resets"])
        t_last, s_last = time.time(), self.step
        try:
            while self.step < max_steps and time.time() - start < budget:
                per_pool = self.train_step()
                self.elapsed = base_elapsed + time.time() - start
                if self.step % cfg.log_every == 0 and writer:
                    for p in self.pools:
                        writer.writerow([self.step, f"{self.elapsed:.1f}", f"{self.lr_at(self.step):.3g}", p.name,
                                         f"{per_pool.get(p.name, float('nan')):.4g}", p.stats["divergence_resets"]])
                    logf.flush()
                    if progress:
                        rate = (self.step - s_last) / max(1e-9, time.time() - t_last)
                        t_last, s_last = time.time(), self.step
                        print(f"step {self.step} | {self.elapsed / 60:.1f} min | {rate:.2f} steps/s | "
                              f"lr {self.lr_at(self.step):.2g}", flush=True)
                now = time.time()
                if now - last_ckpt > 60 * cfg.checkpoint_minutes:
                    self.save_checkpoint()
                    last_ckpt = now
                if now - last_snap > 60 * cfg.snapshot_minutes:
                    snap = self.save_snapshot()
                    last_snap = now
                    if evaluate is not None and self.rank == 0:
                        self.history.append(evaluate(snap, self))
        finally:
            self.save_checkpoint()
            if logf:
                logf.close()
