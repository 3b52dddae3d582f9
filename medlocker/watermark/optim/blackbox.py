"""Black-box placement search that uses few queries: scan, then local search.

Scores only (no gradients), like BHE, but shaped by what a logo placement
landscape looks like: a watermark's effect varies smoothly with its position
and is strongest at the highest opacity, so

1. **scan** -- a stratified coarse scan: one random feasible top-left per cell
   of a grid over the feasible map, all at the highest allowed opacity
   (about a third of the budget, at most ``max_cells`` cells), evaluated in a
   random order so an early success costs little;
2. **local search** -- the ``parents`` best scan points each run a (1+lambda)
   search: ``lam`` children uniformly within ``radius`` of the parent; the
   parent moves to its best child when that is better, otherwise the radius
   halves;
3. **opacity last** -- a parent whose radius fell below one pixel tries
   ``lam`` random opacities in the allowed range once, then restarts from the
   next-best unexplored scan point (or a random feasible point).

Everything runs in lockstep for the whole batch with per-image state, so there
is no per-image Python loop, and each image draws only from its own generator.
"""

from __future__ import annotations

import math

import torch

from medlocker.watermark.feasible import project, sample_feasible, sample_stratified
from medlocker.watermark.optim.base import Optimizer

__all__ = ["ScanLocalSearch"]


class ScanLocalSearch(Optimizer):
    """Stratified scan + parallel (1+lambda) local searches with restarts.

    Args:
        objective: see :class:`~medlocker.watermark.optim.base.Optimizer`.
        scan_fraction: share of the budget (in evaluations) for the scan.
        max_cells: most scan cells.
        parents: local searches run side by side per image.
        lam: children per parent per round.
        round_size: candidates per image per forward sub-round.
    """

    name = "blackbox"

    def __init__(self, objective, *, scan_fraction: float = 0.3, max_cells: int = 48, parents: int = 3,
                 lam: int = 3, round_size: int = 4) -> None:
        super().__init__(objective, round_size=round_size)
        if not 0.0 < scan_fraction <= 1.0 or max_cells < 1 or parents < 1 or lam < 1:
            raise ValueError("need 0 < scan_fraction <= 1, max_cells >= 1, parents >= 1, lam >= 1")
        self.scan_fraction, self.max_cells, self.parents, self.lam = float(scan_fraction), int(max_cells), int(parents), int(lam)

    def _grid(self, n_evals: int) -> tuple[int, int]:
        _, Hp, Wp = self.problem.feasible.shape
        cells = max(self.parents, min(self.max_cells, int(n_evals * self.scan_fraction)))
        gx = max(1, round(math.sqrt(cells * Wp / max(Hp, 1))))
        gy = max(1, cells // gx)
        return gy, gx

    def search(self) -> None:
        p = self.problem
        B = p.images.shape[0]
        dev = p.images.device
        lo, hi = p.opacity
        _, Hp, Wp = p.feasible.shape
        everyone = torch.arange(B, device=dev)
        gy, gx = self._grid(p.budget // self.eval_cost)
        G = gy * gx
        scan = sample_stratified(p.feasible, (gy, gx), list(p.generators))
        order = self.uniform(everyone, G).argsort(dim=1)
        scan = scan.gather(1, order[..., None].expand(B, G, 2))
        top = torch.full((B, G), hi, dtype=torch.long, device=dev)
        scan_loss, _ = self.evaluate_grid(everyone, scan, top)

        # Parents: the best scan points; the rest is the restart queue.
        rank = scan_loss.argsort(dim=1, stable=True)
        queue = scan.gather(1, rank[..., None].expand(B, G, 2))
        queue_loss = scan_loss.gather(1, rank)
        m = min(self.parents, G)
        r0 = max(Hp / gy, Wp / gx) / 2.0
        par_xy = queue[:, :m].clone()
        par_loss = queue_loss[:, :m].clone()
        par_op = torch.full((B, m), hi, dtype=torch.long, device=dev)
        radius = torch.full((B, m), r0, dtype=torch.float64, device=dev)
        nxt = torch.full((B,), m, dtype=torch.long, device=dev)
        # Parents on empty scan cells start from random feasible points.
        radius = torch.where(torch.isfinite(par_loss), radius, r0)
        L = self.lam
        while True:
            idx = self.alive()
            if idx.numel() == 0:
                return
            A = idx.numel()
            u = self.uniform(idx, m, L, 3)
            moving = radius[idx] >= 1.0  # [A, m]; otherwise the opacity round
            off = (u[..., :2] * 2 - 1) * radius[idx][..., None, None]
            child = par_xy[idx][:, :, None, :].double() + off.round()
            child_xy = torch.where(moving[..., None, None], child, par_xy[idx][:, :, None, :].double())
            child_xy = project(child_xy.reshape(A, m * L, 2), p.feasible[idx]).view(A, m, L, 2)
            rand_op = (lo + (hi - lo + 1) * u[..., 2]).floor().clamp(lo, hi).long()
            child_op = torch.where(moving[..., None], par_op[idx][..., None].expand(A, m, L), rand_op)
            loss, _ = self.evaluate_grid(idx, child_xy.view(A, m * L, 2), child_op.reshape(A, m * L))
            loss = loss.view(A, m, L)
            best, j = loss.min(dim=2)
            better = best < par_loss[idx]
            pick = j[..., None, None].expand(A, m, 1, 2)
            par_xy[idx] = torch.where(better[..., None], child_xy.gather(2, pick)[:, :, 0], par_xy[idx])
            par_op[idx] = torch.where(better, child_op.gather(2, j[..., None])[..., 0], par_op[idx])
            par_loss[idx] = torch.where(better, best, par_loss[idx])
            radius[idx] = torch.where(moving & ~better, radius[idx] / 2, radius[idx])
            self._restart(idx, ~moving, queue, queue_loss, nxt, par_xy, par_op, par_loss, radius, r0 / 2)

    def _restart(self, idx, done, queue, queue_loss, nxt, par_xy, par_op, par_loss, radius, r) -> None:
        """Parents that finished their opacity round restart from the next queued scan point."""
        A, m = done.shape
        G = queue.shape[1]
        slot = nxt[idx][:, None] + torch.cumsum(done.long(), dim=1) - 1  # [A, m]
        from_queue = done & (slot < G)
        s = slot.clamp(max=G - 1)
        q_xy = queue[idx].gather(1, s[..., None].expand(A, m, 2))
        q_loss = queue_loss[idx].gather(1, s)
        from_queue &= torch.isfinite(q_loss)
        rnd = sample_feasible(self.problem.feasible[idx], m, [self.problem.generators[i] for i in idx.tolist()])
        new_xy = torch.where(from_queue[..., None], q_xy, rnd)
        new_loss = torch.where(from_queue, q_loss, float("inf"))
        par_xy[idx] = torch.where(done[..., None], new_xy, par_xy[idx])
        par_loss[idx] = torch.where(done, new_loss, par_loss[idx])
        par_op[idx] = torch.where(done, self.problem.opacity[1], par_op[idx])
        radius[idx] = torch.where(done, r, radius[idx])
        nxt[idx] = nxt[idx] + done.long().sum(1)
