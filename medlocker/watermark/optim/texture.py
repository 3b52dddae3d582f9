"""The texture attack: per-image logo colours at a fixed placement.

Each image's logo RGB starts from the logo's own colours and is optimised with Adam on
the surrogates' margin loss (:class:`~medlocker.watermark.objective.Objective`, each
surrogate pushed down to ``-TextureConfig.margin`` under the texture's EOT views) at
the image's placement. The logo's alpha (its shape) and the placement's opacity stay as
they are, so only pixels the logo already covers change. The variable is one colour-logit
offset per ``cell x cell`` block, bilinearly upsampled over the logo and added to the
logo's own colour logits: a low-frequency texture survives resizing and JPEG and
transfers better than a per-pixel one. This is a PGD-style attack restricted to the
mark (Madry et al., 2018), with Adam as the step rule (Kingma & Ba, 2015).

With a layer (``LayerConfig.amplitude > 0``) the same steps also shape the image's
adversarial layer outside the logo and the lesions (:mod:`medlocker.watermark.layer`:
``amplitude * tanh`` of one variable per grid node and channel), and each step adds the
loss of the render with the logo box filled from its surroundings
(:func:`~medlocker.watermark.layer.fill_box`), a stand-in for an attacker who paints
the mark over.

An image stops as soon as every surrogate and view is past the margin: the clamped
loss has no gradient left, and its remaining steps are not spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from medlocker.watermark.inputs import as_batch, check_models, default_device, to_float
from medlocker.watermark.layer import fill_box, grid_shape, layer_offsets_torch
from medlocker.watermark.logo import resize_logo
from medlocker.watermark.objective import Objective
from medlocker.watermark.optim.base import frozen
from medlocker.watermark.params import Placement
from medlocker.watermark.render import logo_tensor, render_candidates
from medlocker.watermark.transforms import diverse

if TYPE_CHECKING:
    from medlocker.watermark.config import ProtectionConfig

__all__ = ["BatchedAdam", "texture_colours", "refine_textures", "refine_colors"]


class BatchedAdam:
    """Adam on ``N`` independent problems stacked in one tensor, each with its own step count.

    ``torch.optim.Adam`` keeps one step count per parameter tensor and moves every row on
    each step (its moments keep decaying). Here an image leaves the optimisation at its
    own step, and the others must behave exactly as if it had never been in the batch,
    so the moments and the bias correction are kept per row; the update rule is
    PyTorch's (``amsgrad=False``, no weight decay).
    """

    def __init__(self, param: torch.Tensor, *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.param, self.lr, self.eps = param, float(lr), float(eps)
        self.b1, self.b2 = betas
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = torch.zeros(param.shape[0], dtype=torch.float64, device=param.device)

    def step(self, idx: torch.Tensor, grad: torch.Tensor) -> None:
        """One Adam step of the rows ``idx`` with their gradient ``grad``."""
        b1, b2 = self.b1, self.b2
        shape = (-1,) + (1,) * (self.param.dim() - 1)
        self.t[idx] += 1
        self.m[idx] = b1 * self.m[idx] + (1 - b1) * grad
        self.v[idx] = b2 * self.v[idx] + (1 - b2) * grad * grad
        bc1 = (1 - b1 ** self.t[idx]).float().view(shape)
        bc2 = (1 - b2 ** self.t[idx]).float().view(shape)
        self.param[idx] = self.param[idx] - (self.lr / bc1) * self.m[idx] / (self.v[idx].sqrt() / bc2.sqrt() + self.eps)


def texture_colours(base: torch.Tensor, offsets: torch.Tensor, max_change: int | None = None) -> torch.Tensor:
    """Colours in ``[0, 1]`` from the logo's own colours ``base`` ``[1, 3, h, w]`` and per-cell offsets
    ``[N, 3, ch, cw]`` (bilinearly upsampled to ``h x w`` when the cells are coarser than pixels).

    ``max_change`` None: ``sigmoid(logit(base) + offset)``, any colour reachable. Else
    ``base + max_change / 255 * tanh(offset)``: every channel stays within ``max_change`` of the
    logo's own colour, so the mark keeps its light and dark parts (its text stays readable)."""
    if offsets.shape[-2:] != base.shape[-2:]:
        offsets = torch.nn.functional.interpolate(offsets, size=base.shape[-2:], mode="bilinear", align_corners=False)
    if max_change is None:
        return torch.sigmoid(torch.logit(base.clamp(0.02, 0.98)) + offsets)
    return (base + (max_change / 255.0) * torch.tanh(offsets)).clamp(0.0, 1.0)


def refine_textures(x: torch.Tensor, labels: torch.Tensor, placements: Sequence[Placement | None],
                    sized: dict[tuple[int, int], np.ndarray], objective: Objective, *, steps: int, cell: int,
                    lr: float, batch_size: int, max_change: int | None = None,
                    layer_masks: torch.Tensor | None = None, layer_amplitude: int = 0, layer_cell: int = 8,
                    diversity: float = 0.0) -> tuple[list[np.ndarray | None], list[int], list[np.ndarray | None]]:
    """Per-image logo RGB at fixed placements; ``x`` float ``[B, 3, H, W]`` on the device.

    Args:
        x, labels: the images and their classes.
        placements: per image (None: skipped).
        sized: the logo at each placement size ``(w, h)``.
        objective: the texture's objective (its views and margin).
        steps, cell, lr, batch_size, max_change, diversity: see :class:`~medlocker.watermark.config.TextureConfig`.
        layer_masks: bool ``[B, H, W]``, where each image's layer may change pixels (None: no layer).
        layer_amplitude, layer_cell: see :class:`~medlocker.watermark.config.LayerConfig`.

    Returns:
        Per image the ``uint8`` RGBA logo at its placement's size (alpha unchanged) or None,
        the steps (forward+backward passes, each with its filled-box view when there is a
        layer) each image took, and its ``int8 [3, gh, gw]`` layer grid (or None).
    """
    dev = x.device
    layered = layer_masks is not None and layer_amplitude > 0
    floor = -objective.margin * len(objective.surrogates)  # the loss once every surrogate is past the margin
    floor *= 2 if layered else 1  # ... on the render and on its filled-box view
    H, W = x.shape[-2:]
    gh, gw = grid_shape(H, W, layer_cell)
    out: list[np.ndarray | None] = [None] * len(placements)
    grids: list[np.ndarray | None] = [None] * len(placements)
    taken = [0] * len(placements)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(placements):
        if p is not None:
            groups.setdefault((p.w, p.h), []).append(i)
    for (w, h), members in groups.items():
        small = sized[(w, h)]
        base = logo_tensor(small, dev)
        for s in range(0, len(members), batch_size):
            part = members[s:s + batch_size]
            ps = [placements[i] for i in part]
            n = len(part)
            index = torch.tensor(part, device=dev)
            xy = torch.tensor([[p.x, p.y] for p in ps], dtype=torch.long, device=dev)
            op = torch.tensor([p.opacity for p in ps], dtype=torch.float32, device=dev)
            colours = base[:3].unsqueeze(0)
            cells = (-(-h // cell), -(-w // cell))
            theta = torch.zeros(n, 3, *cells, device=dev)  # colour-logit offsets, one per cell
            alpha = base[3:].expand(n, -1, -1, -1)
            lay = torch.zeros(n, 3, gh, gw, device=dev) if layered else None
            adam = BatchedAdam(theta, lr=lr)
            adam_layer = BatchedAdam(lay, lr=lr) if layered else None
            masks = layer_masks[index].unsqueeze(1).to(x.dtype) if layered else None
            done_steps = torch.zeros(n, dtype=torch.long, device=dev)
            active = torch.ones(n, dtype=torch.bool, device=dev)
            for k in range(steps):
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                with torch.enable_grad():
                    th = theta[idx].requires_grad_(True)
                    rgba = torch.cat([texture_colours(colours, th, max_change), alpha[: idx.numel()]], dim=1)
                    if layered:
                        la = lay[idx].requires_grad_(True)
                        d = layer_offsets_torch(layer_amplitude * torch.tanh(la), layer_cell, H, W, exact=False)
                        xl = (x[index[idx]] + d * masks[idx] / 255.0).clamp(0.0, 1.0)
                        rows = torch.arange(idx.numel(), device=dev)
                        rendered = render_candidates(xl, rgba, rows, xy[idx], op[idx])
                        filled = fill_box(rendered, xy[idx], w, h)
                        loss = objective.loss(diverse(rendered, k, diversity), labels[index[idx]]).loss
                        loss = loss + objective.loss(diverse(filled, k, diversity), labels[index[idx]]).loss
                        g, g_layer = torch.autograd.grad(loss.sum(), (th, la))
                    else:
                        rendered = render_candidates(x, rgba, index[idx], xy[idx], op[idx])
                        loss = objective.loss(diverse(rendered, k, diversity), labels[index[idx]]).loss
                        (g,) = torch.autograd.grad(loss.sum(), th)
                done_steps[idx] += 1
                done = loss.detach() <= floor + 1e-6  # past the margin everywhere: keep these colours
                active[idx[done]] = False
                adam.step(idx[~done], g[~done])
                if layered:
                    adam_layer.step(idx[~done], g_layer[~done])
            rgb = torch.round(texture_colours(colours, theta, max_change) * 255).clamp(0, 255).to(torch.uint8)
            rgb = rgb.cpu().numpy()
            if layered:
                q = torch.round(layer_amplitude * torch.tanh(lay)).clamp(-layer_amplitude, layer_amplitude)
                q = q.to(torch.int8).cpu().numpy()
            for j, (i, k) in enumerate(zip(part, done_steps.tolist())):
                lg = small.copy()
                lg[..., :3] = rgb[j].transpose(1, 2, 0)
                out[i] = lg
                taken[i] = int(k)
                if layered:
                    grids[i] = q[j]
    return out, taken, grids


def refine_colors(
    images: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int],
    placements: Sequence[Placement | None],
    surrogates: Sequence[nn.Module],
    *,
    logo: np.ndarray,
    config: ProtectionConfig,
    steps: int | None = None,
    lr: float | None = None,
    target_margin: float | None = None,
    device: torch.device | str | None = None,
) -> list[np.ndarray | None]:
    """Per-image logo colours at given placements (what :func:`~medlocker.watermark.protect` does
    with ``config.texture.steps``), for placements found elsewhere.

    Args:
        images, labels, surrogates, config: as for :func:`~medlocker.watermark.protect`.
        placements: per image (None: no logo, returns None).
        logo: the ``uint8`` RGBA logo the placements were searched with (any size; resized
            to each placement like :func:`~medlocker.watermark.render.render_exact`).
        steps, lr, target_margin: override ``config.texture``'s steps, lr and margin.

    Returns:
        Per image, the ``uint8`` RGBA logo at its placement's size (alpha unchanged), or None.
    """
    batch = as_batch(images)
    if len(labels) != len(batch) or len(placements) != len(batch):
        raise ValueError(f"got {len(batch)} images, {len(labels)} labels and {len(placements)} placements")
    check_models(surrogates, labels)
    tex = config.texture
    steps = tex.steps if steps is None else int(steps)
    margin = tex.margin if target_margin is None else float(target_margin)
    if steps < 0 or margin < 0:
        raise ValueError("steps and target_margin must be >= 0")
    dev = default_device(device)
    sized = {(p.w, p.h): (logo if logo.shape[:2] == (p.h, p.w) else resize_logo(logo, p.w, p.h))
             for p in placements if p is not None}
    with frozen(surrogates, dev), torch.no_grad():
        x = to_float(batch, dev)
        y = torch.tensor([int(l) for l in labels], dtype=torch.long, device=dev)
        objective = Objective(surrogates, tex.views(config.placement), margin=max(config.placement.margin, margin),
                              amp=config.amp and dev.type == "cuda", batch_size=config.batch_size)
        return refine_textures(x, y, placements, sized, objective, steps=steps, cell=tex.cell,
                               lr=tex.lr if lr is None else float(lr), batch_size=config.batch_size,
                               max_change=tex.max_change, diversity=tex.diversity)[0]
