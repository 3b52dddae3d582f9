"""What every watermark optimizer shares: model mode, budget, query counting, best-so-far.

An optimizer gets a :class:`SearchProblem` (images, feasible top-left maps,
the resized logo, one random generator per image, a query budget) and returns a
:class:`SearchOutcome` (one placement per image). The base class owns the
bookkeeping so the optimizers stay thin:

* :meth:`Optimizer.evaluate_grid` renders candidates on the uint8 grid
  (:func:`~medlocker.watermark.render.render_candidates` with ``quantize=True``),
  runs the objective in sub-rounds, charges :attr:`Objective.cost` queries per
  candidate to its image, never lets an image exceed its budget, and stops an
  image at its first success (it drops out of the next sub-round);
* :meth:`Optimizer.gradient_at` charges one query per image, surrogate and view;
* the best candidate of every image is tracked (fooled first, then lowest loss),
  so every image gets a placement even when it is not fooled;
* :meth:`Optimizer.run` puts the surrogates in eval mode with frozen weights and
  restores the caller's training flags, ``requires_grad`` and device afterwards.

Control flow never depends on other images of the batch, and all randomness
comes from the image's own generator, so an image's result does not depend on
the batch it is in (up to the batch-invariance of the models' kernels).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from medlocker.watermark.feasible import sample_feasible
from medlocker.watermark.objective import Evaluation, Objective
from medlocker.watermark.render import render_candidates

__all__ = ["frozen", "SearchProblem", "SearchOutcome", "Optimizer"]


def _module_device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def _is_channels_last(model: nn.Module) -> bool:
    weights = [p for p in model.parameters() if p.dim() == 4]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


@contextlib.contextmanager
def frozen(models: Sequence[nn.Module], device: torch.device | str | None = None) -> Iterator[None]:
    """Use ``models`` as fixed functions inside the block, then put everything back.

    Inside: every module in eval mode, no parameter requires grad, models on
    ``device`` (channels-last on CUDA). Afterwards each module's own training
    flag, each parameter's ``requires_grad``, the device and the memory format
    are restored (torchattacks issues #21 and #95 are about forgetting this).
    """
    dev = torch.device(device) if device is not None else None
    saved = [([(m, m.training) for m in model.modules()], [(p, p.requires_grad) for p in model.parameters()],
              _module_device(model), _is_channels_last(model)) for model in models]
    try:
        for model in models:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            if dev is not None:
                model.to(dev)
                if dev.type == "cuda":
                    model.to(memory_format=torch.channels_last)
        yield
    finally:
        for model, (flags, grads, old_dev, was_cl) in zip(models, saved):
            if dev is not None and dev.type == "cuda" and not was_cl:
                model.to(memory_format=torch.contiguous_format)
            if dev is not None and old_dev is not None and old_dev != dev:
                model.to(old_dev)
            for m, flag in flags:
                m.training = flag
            for p, flag in grads:
                p.requires_grad_(flag)


@dataclass(frozen=True)
class SearchProblem:
    """Inputs of one search; tensors on the search device.

    Attributes:
        images: float ``[B, 3, H, W]``, exactly ``uint8 / 255``.
        labels: long ``[B]``.
        feasible: bool ``[B, H-h+1, W-w+1]`` feasible top-lefts (every image has one).
        logo: float ``[4, h, w]``, the resized logo.
        generators: one CPU generator per image.
        budget: queries each image may spend in the search.
        opacity: allowed opacity range ``(lo, hi)`` on 0..255.
    """

    images: torch.Tensor
    labels: torch.Tensor
    feasible: torch.Tensor
    logo: torch.Tensor
    generators: Sequence[torch.Generator]
    budget: int
    opacity: tuple[int, int]


@dataclass(frozen=True)
class SearchOutcome:
    """Best placement per image: ``xy`` long ``[B, 2]``, ``opacity`` long ``[B]``,
    ``loss``/``worst`` float ``[B]``, ``fooled`` bool ``[B]``, ``queries`` long ``[B]``."""

    xy: torch.Tensor
    opacity: torch.Tensor
    loss: torch.Tensor
    worst: torch.Tensor
    fooled: torch.Tensor
    queries: torch.Tensor


_FOOLED_BONUS = 1e12  # fooled candidates rank before any unfooled one


class Optimizer(ABC):
    """Base class: subclasses implement :meth:`search` using the helpers below.

    Args:
        objective: the loss and success rule (holds the surrogates and views).
        round_size: candidates per image evaluated in one sub-round; an image
            that succeeds stops after its sub-round, so at most
            ``round_size - 1`` queries x cost are spent past the first success.
    """

    name: ClassVar[str] = "base"

    def __init__(self, objective: Objective, *, round_size: int = 8) -> None:
        if round_size < 1:
            raise ValueError(f"round_size must be >= 1, got {round_size}")
        self.objective = objective
        self.round_size = int(round_size)

    # ----------------------------------------------------------------- API
    def run(self, problem: SearchProblem) -> SearchOutcome:
        """Search placements for every image of ``problem``.

        The surrogates are used in eval mode with frozen weights on the images'
        device for the duration of the call (see :func:`frozen`); the caller's
        training flags, ``requires_grad`` and device are restored afterwards.
        """
        B = problem.images.shape[0]
        if problem.feasible.shape[0] != B or len(problem.generators) != B or problem.labels.shape[0] != B:
            raise ValueError("images, labels, feasible maps and generators must have one entry per image")
        lo, hi = problem.opacity
        if not 1 <= lo <= hi <= 255:
            raise ValueError(f"opacity range must satisfy 1 <= lo <= hi <= 255, got {problem.opacity}")
        dev = problem.images.device
        self.problem = problem
        self.queries = torch.zeros(B, dtype=torch.long, device=dev)
        self.best_xy = torch.full((B, 2), -1, dtype=torch.long, device=dev)
        self.best_opacity = torch.full((B,), hi, dtype=torch.long, device=dev)
        self.best_loss = torch.full((B,), float("inf"), device=dev)
        self.best_worst = torch.full((B,), float("inf"), device=dev)
        self.best_key = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
        self.fooled = torch.zeros(B, dtype=torch.bool, device=dev)
        with frozen(self.objective.surrogates, dev), torch.no_grad():
            self.search()
            self._fallback()
        return SearchOutcome(self.best_xy, self.best_opacity, self.best_loss, self.best_worst, self.fooled, self.queries)

    @abstractmethod
    def search(self) -> None:
        """Spend the budget; results go through :meth:`evaluate_grid` (tracked automatically)."""

    # ------------------------------------------------------------- helpers
    @property
    def confirm(self) -> bool:
        """Successes found under autocast are re-checked in fp32 (and charged)."""
        return self.objective.amp and self.problem.images.is_cuda

    @property
    def eval_cost(self) -> int:
        """Queries one candidate evaluation may cost (worst case, including the fp32 confirmation)."""
        return self.objective.cost + (self.objective.check_cost if self.confirm else 0)

    def remaining(self, idx: torch.Tensor) -> torch.Tensor:
        return self.problem.budget - self.queries[idx]

    def alive(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Images (indices) not yet fooled that can still pay for one evaluation."""
        idx = torch.arange(self.queries.shape[0], device=self.queries.device) if idx is None else idx
        ok = ~self.fooled[idx] & (self.remaining(idx) >= self.eval_cost)
        return idx[ok]

    def uniform(self, idx: torch.Tensor, *shape: int, host_idx: Sequence[int] | None = None) -> torch.Tensor:
        """``U[0,1)`` float64 ``[len(idx), *shape]`` on the device, row ``i`` from image ``idx[i]``'s generator.

        ``host_idx`` (``idx`` as a list, when the caller has it) avoids reading ``idx`` back from
        the device; the draws go up through pinned memory without a stream synchronisation, so
        on CUDA the CPU draws while the device still works on what was queued before.
        """
        gens = self.problem.generators
        rows = [torch.rand(shape, generator=gens[i], dtype=torch.float64)
                for i in (idx.tolist() if host_idx is None else host_idx)]
        u = torch.stack(rows) if rows else torch.empty((0, *shape), dtype=torch.float64)
        dev = self.problem.images.device
        if dev.type == "cuda":
            return u.pin_memory().to(dev, non_blocking=True)
        return u.to(dev)

    def _render(self, owners: torch.Tensor, xy: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
        p = self.problem
        return render_candidates(p.images, p.logo, owners, xy, opacity, quantize=True)

    def _evaluate_rows(self, owners: torch.Tensor, xy: torch.Tensor, opacity: torch.Tensor) -> Evaluation:
        """Evaluate explicit rows (the caller checked the budget), charge, track."""
        obj = self.objective
        bs = obj.batch_size
        evs = []
        for s in range(0, owners.shape[0], bs):
            o, q, a = owners[s:s + bs], xy[s:s + bs], opacity[s:s + bs]
            ev = obj.evaluate(self._render(o, q, a), self.problem.labels[o])
            sel = ev.fooled.nonzero().squeeze(1) if self.confirm else None
            if sel is not None and sel.numel():
                worst = obj.check(self._render(o[sel], q[sel], a[sel]), self.problem.labels[o[sel]])
                self.queries.index_add_(0, o[sel], torch.full_like(sel, obj.check_cost))
                w = ev.worst.clone()
                w[sel] = worst
                ev = Evaluation(ev.loss, w, w < -obj.margin)
            evs.append(ev)
        self.queries.index_add_(0, owners, torch.full_like(owners, obj.cost))
        ev = Evaluation(*(torch.cat([getattr(e, f) for e in evs]) for f in ("loss", "worst", "fooled")))
        self._track(owners, xy, opacity, ev)
        return ev

    def _track(self, owners: torch.Tensor, xy: torch.Tensor, opacity: torch.Tensor, ev: Evaluation) -> None:
        """Keep each image's best evaluated candidate (fooled first, then lowest loss; ties: first row).
        Masked updates over all images, so no host synchronisation."""
        if owners.numel() == 0:
            return
        n = owners.shape[0]
        key = ev.loss.double() - _FOOLED_BONUS * ev.fooled.double()
        best = self.best_key.clone()
        best.scatter_reduce_(0, owners, key, reduce="amin")
        row = torch.arange(n, device=owners.device)
        wins = (key == best[owners]) & (key < self.best_key[owners])
        first = torch.full_like(self.best_opacity, n)
        first.scatter_reduce_(0, owners, torch.where(wins, row, n), reduce="amin")
        upd = first < n
        r = first.clamp(max=n - 1)
        self.best_key = torch.where(upd, key[r], self.best_key)
        self.best_loss = torch.where(upd, ev.loss[r], self.best_loss)
        self.best_worst = torch.where(upd, ev.worst[r], self.best_worst)
        self.fooled = torch.where(upd, ev.fooled[r], self.fooled)
        self.best_xy = torch.where(upd[:, None], xy[r], self.best_xy)
        self.best_opacity = torch.where(upd, opacity[r].long(), self.best_opacity)

    def evaluate_grid(self, idx: torch.Tensor, xy: torch.Tensor, opacity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate ``K`` candidates of each image ``idx`` (``xy`` ``[A, K, 2]``, ``opacity`` ``[A, K]``).

        Candidates go in order ``k = 0, 1, ...`` in sub-rounds of
        :attr:`round_size`; an image stops at its first success or when its
        budget cannot pay for the next candidate. Candidates with ``x < 0`` are
        skipped.

        Returns:
            ``loss`` ``[A, K]`` (``inf`` where not evaluated) and ``fooled`` ``[A, K]``.
        """
        A, K = xy.shape[:2]
        dev = xy.device
        loss = torch.full((A, K), float("inf"), device=dev)
        fooled = torch.zeros((A, K), dtype=torch.bool, device=dev)
        for s in range(0, K, self.round_size):
            e = min(K, s + self.round_size)
            can = (~self.fooled[idx]) & (self.remaining(idx) >= self.eval_cost)
            valid = (xy[:, s:e, 0] >= 0) & can[:, None]
            afford = (self.remaining(idx) // self.eval_cost)[:, None]
            valid &= torch.cumsum(valid.long(), dim=1) <= afford
            a, k = valid.nonzero(as_tuple=True)
            if a.numel() == 0:
                continue
            ev = self._evaluate_rows(idx[a], xy[a, s + k], opacity[a, s + k])
            loss[a, s + k] = ev.loss
            fooled[a, s + k] = ev.fooled
        return loss, fooled

    def gradient_at(self, idx: torch.Tensor, xy: torch.Tensor | None = None,
                    opacity: torch.Tensor | None = None) -> tuple[Evaluation, torch.Tensor]:
        """Loss and image gradient at the clean images ``idx`` (``xy`` None or rows with ``x < 0``)
        or at their render with a placement; charged :attr:`Objective.cost` per image."""
        p = self.problem
        x = p.images.index_select(0, idx)
        if xy is not None and idx.numel():
            # Render every row (unplaced ones at a dummy position) and keep the clean image where
            # there is no placement: a masked select instead of a data-dependent index (no sync).
            placed = xy[:, 0] >= 0
            drawn = self._render(idx, xy.clamp(min=0), torch.where(placed, opacity, 1))
            x = torch.where(placed[:, None, None, None], drawn, x)
        ev, grad = self.objective.gradient(x, p.labels[idx])
        self.queries.index_add_(0, idx, torch.full_like(idx, self.objective.cost))
        return ev, grad

    def _fallback(self) -> None:
        """Images never evaluated (budget too small) get a random feasible position at top opacity."""
        missing = (self.best_xy[:, 0] < 0).nonzero().squeeze(1)
        if missing.numel() == 0:
            return
        gens = [self.problem.generators[i] for i in missing.tolist()]
        xy = sample_feasible(self.problem.feasible[missing], 1, gens)[:, 0]
        self.best_xy[missing] = xy
        self.best_opacity[missing] = self.problem.opacity[1]
