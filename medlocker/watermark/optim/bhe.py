"""Basin Hopping Evolution (BHE): the Adv-watermark search, as a baseline.

Jia, Ma, Chen, Hu, Wu, Li. "Adv-watermark: A Novel Watermark Perturbation for
Adversarial Examples". ACM Multimedia 2020, pp. 1579-1587
(arXiv:2008.01919). The paper searches a watermark's transparency and
position with BHE, a black-box optimizer that uses only the model's scores:
basin-hopping local moves combined with a differential-evolution population.

This reconstruction follows the published settings: individuals
``(opacity on 0..255, x, y)``; a population of 50; 3 generations; in each
generation every individual makes ``hops`` basin-hopping steps (a uniform
perturbation of up to +-20 opacity and +-50 px, accepted when the loss does not
get worse), then DE/rand/1 mutation (``F = 0.5``) with binomial crossover
(``CR = 0.9``) and greedy selection. Positions are projected onto the feasible
set; the search stops at the first misclassification. Worst case
``50 + 3 * 50 * (hops + 1) = 3950`` evaluations (about 4,000, as in the
paper), capped by the query budget.
"""

from __future__ import annotations

import torch

from medlocker.watermark.feasible import project, sample_feasible
from medlocker.watermark.optim.base import Optimizer

__all__ = ["BasinHoppingEvolution"]


class BasinHoppingEvolution(Optimizer):
    """BHE over ``(opacity, x, y)``.

    Args:
        objective: see :class:`~medlocker.watermark.optim.base.Optimizer`.
        population: individuals per image (50 in the paper).
        generations: evolution rounds (3).
        hops: basin-hopping steps per individual and generation (25 -> ~4,000 worst case).
        step_opacity, step_xy: half-widths of the basin-hopping moves (20, 50 px).
        f, cr: DE scale factor and binomial crossover rate (0.5, 0.9).
        round_size: candidates per image per forward sub-round.
    """

    name = "bhe"

    def __init__(self, objective, *, population: int = 50, generations: int = 3, hops: int = 25,
                 step_opacity: float = 20.0, step_xy: float = 50.0, f: float = 0.5, cr: float = 0.9,
                 round_size: int = 5) -> None:
        super().__init__(objective, round_size=round_size)
        if population < 4:
            raise ValueError("DE needs a population of at least 4")
        self.population, self.generations, self.hops = int(population), int(generations), int(hops)
        self.step_opacity, self.step_xy, self.f, self.cr = float(step_opacity), float(step_xy), float(f), float(cr)

    def _clip(self, op: torch.Tensor) -> torch.Tensor:
        lo, hi = self.problem.opacity
        return op.round().clamp(lo, hi).long()

    def _step(self, idx: torch.Tensor, pop_xy: torch.Tensor, pop_op: torch.Tensor, fit: torch.Tensor,
              cand_xy: torch.Tensor, cand_op: torch.Tensor) -> None:
        """Project, evaluate, greedy-accept (in place) for the images ``idx``."""
        cand_xy = project(cand_xy.float(), self.problem.feasible[idx])
        loss, _ = self.evaluate_grid(idx, cand_xy, cand_op)
        better = (loss <= fit[idx]) & torch.isfinite(loss)  # sideways moves are accepted; unevaluated never
        pop_xy[idx] = torch.where(better[..., None], cand_xy, pop_xy[idx])
        pop_op[idx] = torch.where(better, cand_op, pop_op[idx])
        fit[idx] = torch.where(better, loss, fit[idx])

    def search(self) -> None:
        p = self.problem
        B, P = p.images.shape[0], self.population
        dev = p.images.device
        lo, hi = p.opacity
        everyone = torch.arange(B, device=dev)
        gens = list(p.generators)
        pop_xy = sample_feasible(p.feasible, P, gens)
        pop_op = self._clip(lo + (hi - lo) * self.uniform(everyone, P))
        fit = torch.full((B, P), float("inf"), device=dev)
        fit[:], _ = self.evaluate_grid(everyone, pop_xy, pop_op)
        for _ in range(self.generations):
            for _ in range(self.hops):
                idx = self.alive()
                if idx.numel() == 0:
                    return
                u = self.uniform(idx, P, 3) * 2 - 1
                cand_op = self._clip(pop_op[idx] + self.step_opacity * u[..., 0])
                cand_xy = pop_xy[idx].double() + self.step_xy * u[..., 1:]
                self._step(idx, pop_xy, pop_op, fit, cand_xy, cand_op)
            idx = self.alive()
            if idx.numel() == 0:
                return
            self._evolve(idx, pop_xy, pop_op, fit)

    def _evolve(self, idx: torch.Tensor, pop_xy: torch.Tensor, pop_op: torch.Tensor, fit: torch.Tensor) -> None:
        """DE/rand/1/bin: mutant = a + F (b - c) from three distinct others, crossover, greedy selection."""
        A, P = idx.numel(), self.population
        u = self.uniform(idx, P, 7)
        # Three distinct partners != i: draw offsets without replacement from 1..P-1.
        r1 = (u[..., 0] * (P - 1)).long() + 1
        r2 = (u[..., 1] * (P - 2)).long() + 1
        r2 = r2 + (r2 >= r1).long()
        lo_, hi_ = torch.minimum(r1, r2), torch.maximum(r1, r2)
        r3 = (u[..., 2] * (P - 3)).long() + 1
        r3 = r3 + (r3 >= lo_).long()
        r3 = r3 + (r3 >= hi_).long()
        i = torch.arange(P, device=idx.device)
        genes = torch.cat([pop_op[idx, :, None].double(), pop_xy[idx].double()], dim=2)  # [A, P, 3]

        def pick(r: torch.Tensor) -> torch.Tensor:
            return genes.gather(1, ((i + r) % P)[..., None].expand(A, P, 3))

        mutant = pick(r1) + self.f * (pick(r2) - pick(r3))
        cross = u[..., 3:6] < self.cr
        forced = (u[..., 6:7] * 3).long().clamp(max=2) == torch.arange(3, device=idx.device)  # j_rand
        trial = torch.where(cross | forced, mutant, genes)
        self._step(idx, pop_xy, pop_op, fit, trial[..., 1:], self._clip(trial[..., 0]))
