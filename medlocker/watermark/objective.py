"""The attack objective: margin of the true class, over surrogates and EOT views.

For one image, surrogate ``s`` and view ``v`` the margin is
``m_sv = z_true - max_{j != true} z_j`` (negative = misclassified). The loss the
optimizers *minimise* is ``sum_s mean_v max(m_sv, -margin)``: each surrogate
counts until it is fooled by the required margin, so the ensemble is pushed
towards fooling all of them. Success is decided on the identity view of the
quantized render only: ``max_s m_s,identity < -margin``.

One *query* is one image through one surrogate under one view; a
forward+backward counts once. :attr:`Objective.cost` is the number of queries
one evaluated image costs.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from medlocker.watermark.transforms import View, get_view

__all__ = ["Objective", "Evaluation", "margins", "bucket_rows"]

# Padded row counts of CUDA forwards: every new batch size costs cuDNN a new execution
# plan per convolution (tens of ms for a ResNet-50), and a search round's row count
# changes as images succeed, so rows are padded up this ladder (<= 50 % extra rows).
_LADDER = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
_primed: weakref.WeakKeyDictionary[nn.Module, set[tuple]] = weakref.WeakKeyDictionary()


def bucket_rows(n: int, cap: int) -> int:
    """The padded row count for a CUDA forward of ``n <= cap`` rows (``cap`` itself is a bucket)."""
    for b in _LADDER:
        if b >= n:
            return min(b, cap)
    return cap


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_true - max other`` per row, float32."""
    z = logits.float()
    true = z.gather(1, labels.view(-1, 1)).squeeze(1)
    other = z.scatter(1, labels.view(-1, 1), float("-inf")).amax(1)
    return true - other


@dataclass(frozen=True)
class Evaluation:
    """Objective values for ``N`` rendered candidates."""

    loss: torch.Tensor  # [N] float32, lower is better
    worst: torch.Tensor  # [N] max over surrogates of the identity-view margin
    fooled: torch.Tensor  # [N] bool, worst < -margin


class Objective:
    """Ensemble margin loss under EOT views.

    Args:
        surrogates: classifiers taking ``[N, 3, H, W]`` in ``[0, 1]``; already on
            the device and in eval mode (see :class:`~medlocker.watermark.optim.base.frozen`).
        views: EOT view names; ``"identity"`` is always the first view.
        margin: success margin (>= 0).
        amp: run search forwards under bf16 autocast (CUDA only); decisions
            are confirmed in fp32 by the optimizer base class.
        batch_size: most rows per forward.
        pad_rows: pad each forward to :func:`bucket_rows` rows; default (None): on CUDA only.
    """

    def __init__(
        self,
        surrogates: Sequence[nn.Module],
        views: Sequence[str] = (),
        *,
        margin: float = 0.0,
        amp: bool = False,
        batch_size: int = 256,
        pad_rows: bool | None = None,
    ) -> None:
        if not surrogates:
            raise ValueError("need at least one surrogate model")
        if margin < 0:
            raise ValueError(f"success margin must be >= 0, got {margin}")
        names = ["identity"] + [v for v in views if v != "identity"]
        self.surrogates = list(surrogates)
        self.view_names = tuple(names)
        self.views: list[View] = [get_view(v) for v in names]
        self.margin = float(margin)
        self.amp = bool(amp)
        self.batch_size = int(batch_size)
        self.pad_rows = pad_rows

    @property
    def cost(self) -> int:
        """Queries per evaluated image (surrogates x views)."""
        return len(self.surrogates) * len(self.views)

    @property
    def check_cost(self) -> int:
        """Queries per image of an identity-only check (one per surrogate)."""
        return len(self.surrogates)

    def _autocast(self, x: torch.Tensor, fp32: bool) -> contextlib.AbstractContextManager[None]:
        if self.amp and not fp32 and x.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, x: torch.Tensor, labels: torch.Tensor, *, views: Sequence[View], fp32: bool) -> torch.Tensor:
        """Margins ``[N, S, V]``. On CUDA the rows are padded (with copies of the last row,
        which get no gradient) to :func:`bucket_rows`, so only a few batch shapes ever reach cuDNN."""
        n = x.shape[0]
        if (x.is_cuda if self.pad_rows is None else self.pad_rows) and n:
            m = bucket_rows(n, max(self.batch_size, n))
            if m > n:
                x = torch.cat([x, x[-1:].expand(m - n, *x.shape[1:])])
                labels = torch.cat([labels, labels[-1:].expand(m - n)])
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        out = []
        with self._autocast(x, fp32):
            for model in self.surrogates:
                out.append(torch.stack([margins(model(view(x)), labels) for view in views], dim=1))
        return torch.stack(out, dim=1)[:n]

    def prime(self, shape: tuple[int, int, int], device: torch.device | str) -> None:
        """Run every padded batch shape once (search forward, fp32 check, forward+backward) on CUDA,
        so no cuDNN plan is built inside a timed search. Once per model, shape and precision; no-op on CPU."""
        dev = torch.device(device)
        if dev.type != "cuda":
            return
        key = (tuple(shape), str(dev), self.amp, self.view_names, self.batch_size)
        todo = [m for m in self.surrogates if key not in _primed.get(m, set())]
        if not todo:
            return
        sizes = sorted({bucket_rows(n, self.batch_size) for n in _LADDER if n <= self.batch_size} | {self.batch_size})
        for size in sizes:
            x = torch.full((size, *shape), 0.5, device=dev)
            y = torch.zeros(size, dtype=torch.long, device=dev)
            self.evaluate(x, y)
            self.check(x, y)
            self.gradient(x, y)
        for m in self.surrogates:
            _primed.setdefault(m, set()).add(key)

    def _reduce(self, m: torch.Tensor) -> Evaluation:
        loss = m.clamp(min=-self.margin).mean(2).sum(1)
        worst = m[:, :, 0].amax(1)
        return Evaluation(loss=loss, worst=worst, fooled=worst < -self.margin)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, labels: torch.Tensor) -> Evaluation:
        """Loss and success of ``N`` images (no gradient). Costs :attr:`cost` queries per row."""
        parts = [self._forward(x[s:s + self.batch_size], labels[s:s + self.batch_size], views=self.views, fp32=False)
                 for s in range(0, x.shape[0], self.batch_size)]
        return self._reduce(torch.cat(parts) if parts else x.new_zeros(0, len(self.surrogates), len(self.views)))

    @torch.no_grad()
    def check(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """fp32 identity-view worst margin ``[N]``. Costs :attr:`check_cost` queries per row."""
        parts = [self._forward(x[s:s + self.batch_size], labels[s:s + self.batch_size], views=self.views[:1], fp32=True)
                 for s in range(0, x.shape[0], self.batch_size)]
        if not parts:
            return x.new_zeros(0)
        return torch.cat(parts)[:, :, 0].amax(1)

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> Evaluation:
        """Differentiable evaluation (grad enabled, one chunk): ``loss`` carries the graph."""
        with torch.enable_grad():
            return self._reduce(self._forward(x, labels, views=self.views, fp32=False))

    def gradient(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[Evaluation, torch.Tensor]:
        """Loss, success and ``d loss / d x`` ``[N, 3, H, W]`` (float32). Costs :attr:`cost` queries per row."""
        evals, grads = [], []
        for s in range(0, x.shape[0], self.batch_size):
            with torch.enable_grad():
                xs = x[s:s + self.batch_size].detach().clone().requires_grad_(True)
                ev = self.loss(xs, labels[s:s + self.batch_size])
                (g,) = torch.autograd.grad(ev.loss.sum(), xs)
            evals.append(Evaluation(ev.loss.detach(), ev.worst.detach(), ev.fooled))
            grads.append(g.float())
        if not evals:
            z = x.new_zeros(0)
            return Evaluation(z, z, z.bool()), x.new_zeros(x.shape)
        return (Evaluation(torch.cat([e.loss for e in evals]), torch.cat([e.worst for e in evals]),
                           torch.cat([e.fooled for e in evals])), torch.cat(grads))
