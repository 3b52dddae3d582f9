"""The universal-logo attack: the logo's colours learned once for a whole dataset.

The logo keeps its alpha (its shape); its RGB colours are optimised with
``torch.optim.Adam`` to minimise the ensemble margin loss in expectation over random
training images, random feasible placements at the highest allowed opacity and the
placement search's EOT views -- a universal adversarial perturbation (Moosavi-Dezfooli
et al., CVPR 2017) restricted to the mark. The result is the run's logo ("learned"
mode): it is stamped on every image and committed once per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from medlocker.watermark.feasible import (
    feasible_positions,
    field_of_view,
    forbidden_mask,
    sample_feasible,
)
from medlocker.watermark.inputs import (
    as_batch,
    check_models,
    default_device,
    image_generator,
    to_float,
)
from medlocker.watermark.logo import logo_size, resize_logo
from medlocker.watermark.objective import Objective
from medlocker.watermark.optim.base import frozen
from medlocker.watermark.params import Box
from medlocker.watermark.render import logo_tensor, render_candidates

if TYPE_CHECKING:
    from medlocker.watermark.config import ProtectionConfig

__all__ = ["learn_logo"]


def learn_logo(
    images: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int],
    lesion_boxes: Sequence[Sequence[Box]],
    surrogates: Sequence[nn.Module],
    *,
    logo: np.ndarray,
    config: ProtectionConfig,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Learn the logo's colours once for a whole dataset (``config.universal``).

    Args:
        images, labels, lesion_boxes, surrogates: training images, as for
            :func:`~medlocker.watermark.protect` (never the images to be evaluated).
        logo: the ``uint8`` RGBA logo to recolour.
        config: ``universal`` gives the steps, images per step, placements per image,
            learning rate and margin; ``placement`` the logo size, opacity, lesion margin
            and views.
        generator: draws images and placements (default: seeded from ``config.seed``).

    Returns:
        ``uint8`` RGBA logo at the size :func:`~medlocker.watermark.protect` uses for these
        images (``logo_size(logo, (H, W), scale=config.placement.logo_scale)``), alpha unchanged.
    """
    batch = as_batch(images)
    B = batch.shape[0]
    if len(labels) != B or len(lesion_boxes) != B:
        raise ValueError(f"got {B} images, {len(labels)} labels and {len(lesion_boxes)} lesion box lists")
    check_models(surrogates, labels)
    if B == 0:
        raise ValueError("learn_logo needs at least one image")
    uni, place = config.universal, config.placement
    dev = default_device(device)
    H, W = batch.shape[1:3]
    w, h = logo_size(logo, (H, W), scale=place.logo_scale)
    small = resize_logo(logo, w, h)
    g = generator if generator is not None else image_generator(config.seed, "learn_logo")
    with frozen(surrogates, dev):
        objective = Objective(surrogates, place.eot, margin=max(place.margin, uni.margin),
                              amp=config.amp and dev.type == "cuda", batch_size=config.batch_size)
        base = logo_tensor(small, dev)
        with torch.no_grad():
            feas = torch.cat([
                feasible_positions(forbidden_mask(lesion_boxes[s:s + 64], field_of_view(xs), margin=place.lesion_margin),
                                   w, h)
                for s in range(0, B, 64) for xs in (to_float(batch[s:s + 64], dev),)])
        usable = feas.flatten(1).any(1).nonzero().squeeze(1).cpu()
        if usable.numel() == 0:
            raise ValueError("no image has a feasible logo position")
        theta = torch.logit(base[:3].clamp(0.02, 0.98)).detach().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=uni.lr)
        for _ in range(uni.steps):
            pick = usable[torch.randint(0, usable.numel(), (min(uni.batch_size, usable.numel()),), generator=g)]
            x = to_float(batch[pick.numpy()], dev)
            xy = sample_feasible(feas[pick.to(dev)], uni.placements, g).reshape(-1, 2)
            index = torch.arange(pick.numel(), device=dev).repeat_interleave(uni.placements)
            rgba = torch.cat([torch.sigmoid(theta), base[3:]], dim=0)
            op = torch.full((index.numel(),), float(place.opacity[1]), device=dev)
            loss = objective.loss(render_candidates(x, rgba, index, xy, op),
                                  torch.tensor([int(labels[i]) for i in pick.tolist()], device=dev)[index]).loss
            opt.zero_grad(set_to_none=True)
            loss.mean().backward()
            opt.step()
    rgb = torch.round(torch.sigmoid(theta.detach()) * 255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    out = small.copy()
    out[..., :3] = rgb
    return out
