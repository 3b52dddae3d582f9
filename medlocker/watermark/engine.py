"""The batched watermark orchestrator: :func:`protect`.

``protect`` takes a batch of same-size images and, for each, finds a logo
placement off the lesions that makes every surrogate misclassify it
(configured by a :class:`~medlocker.watermark.config.ProtectionConfig`):

1. resize the logo to the configured area (:func:`~medlocker.watermark.logo.logo_size`);
   optionally smaller for images with no room for it (``placement.min_logo_scale``);
2. feasible top-lefts: inside the field of view, ``placement.lesion_margin`` px off every lesion box;
3. search with the configured optimizer (batched over images and candidates, on the device);
4. final check: the stored pixels (the quantized render on the device, bit-identical
   to :func:`~medlocker.watermark.render.render_exact`; PNG is lossless, so they are
   what any reader decodes) -> fp32 forward of every surrogate as given.
   ``Result.success`` is this check;
5. with ``texture.steps``: the texture attack (:mod:`.optim.texture`) gives each image
   its own logo colours at its placement (and, with ``layer.amplitude``, its adversarial
   layer outside the logo and the lesions), kept unless it loses a success the plain logo had.

Every image gets a placement (the best one found) unless no feasible position
exists. All query counts include the final checks (one query per surrogate), so
``Result.queries <= config.queries(len(surrogates))``.

Randomness: each image has its own generator, seeded from
``(config.seed, seeds[i])`` -- or, without ``seeds``, from a hash of the image's
bytes and label -- so an image's placement does not depend on which batch it
is in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medlocker.watermark.config import ProtectionConfig
from medlocker.watermark.feasible import (
    FOV_INSET,
    feasible_positions,
    field_of_view,
    forbidden_mask,
)
from medlocker.watermark.inputs import (
    as_batch,
    check_models,
    content_seed,
    default_device,
    image_generator,
    to_float,
)
from medlocker.watermark.layer import Layer, apply_layer, layer_offsets_torch
from medlocker.watermark.logo import logo_size, resize_logo
from medlocker.watermark.objective import Objective
from medlocker.watermark.optim import SearchProblem, frozen, make_optimizer
from medlocker.watermark.optim.texture import refine_textures
from medlocker.watermark.params import Box, Placement
from medlocker.watermark.render import logo_tensor, render_candidates, render_exact

__all__ = ["STATUSES", "Result", "image_generator", "protect"]

log = logging.getLogger(__name__)

STATUSES = ("fooled", "not_fooled", "no_feasible_position")


@dataclass(frozen=True)
class Result:
    """Outcome for one image.

    Attributes:
        placement: the watermark (None only when no feasible position exists).
        success: every surrogate misclassifies the stored (PNG round-tripped) bytes.
        queries: model queries spent on this image, final checks included.
        margin: max over surrogates of ``true logit - best other`` on the stored bytes.
        status: ``"fooled"`` | ``"not_fooled"`` | ``"no_feasible_position"``.
        logo: with ``texture.steps``, this image's own ``uint8`` RGBA logo at the
            placement's size (render it with :func:`render_exact`); None: the logo
            passed to :func:`protect`.
        layer: with ``layer.amplitude``, this image's adversarial layer (stored image =
            ``render_exact(apply_layer(image, layer), logo, placement)``); None: no layer.
    """

    placement: Placement | None
    success: bool
    queries: int
    margin: float
    status: str
    logo: np.ndarray | None = None
    layer: Layer | None = None

    def stored_image(self, image: np.ndarray, logo: np.ndarray) -> np.ndarray:
        """The pixels the packer publishes for ``image``: its layer applied, then its own logo
        (else ``logo``, the one passed to :func:`protect`, resized to the placement) rendered
        exactly. ``image`` unchanged (a copy) when there is no placement."""
        if self.placement is None:
            return image.copy()
        base = image if self.layer is None else apply_layer(image, self.layer)
        return render_exact(base, logo if self.logo is None else self.logo, self.placement)


def _generators(config: ProtectionConfig, batch: np.ndarray, labels: Sequence[int],
                seeds: Sequence[int | str] | None, generator: torch.Generator | None) -> list[torch.Generator]:
    if seeds is not None and len(seeds) != len(batch):
        raise ValueError(f"got {len(seeds)} seeds for {len(batch)} images")
    salt = "" if generator is None else f":{int(torch.randint(0, 2**62, (1,), generator=generator))}"
    keys = seeds if seeds is not None else [content_seed(img, l) for img, l in zip(batch, labels)]
    return [image_generator(config.seed, f"{k}{salt}") for k in keys]


def protect(
    images: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int],
    lesion_boxes: Sequence[Sequence[Box]],
    surrogates: Sequence[nn.Module],
    *,
    logo: np.ndarray,
    config: ProtectionConfig,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seeds: Sequence[int | str] | None = None,
) -> list[Result]:
    """Find a watermark placement for each image of a batch.

    Args:
        images: ``uint8 [B, H, W, 3]`` or a list of same-size ``H x W x 3`` arrays.
        labels: true class per image.
        lesion_boxes: per image, half-open ``(x0, y0, x1, y1)`` boxes the logo must stay off.
        surrogates: classifiers (``[N, 3, H, W]`` in ``[0, 1]`` -> logits). They are
            used in eval mode on ``device`` and restored afterwards.
        logo: ``uint8`` RGBA logo (full size; resized here).
        config: the protection (placement search, texture, seed, batching).
        device: default CUDA when available, else CPU.
        generator: optional; one salt is drawn from it and mixed into every
            image's seed (so results then depend on its state).
        seeds: optional per-image seeds (e.g. sample keys); default: a hash of
            each image's bytes and label. Either way batch-invariant.

    Returns:
        One :class:`Result` per image, in order.

    Raises:
        ValueError: inconsistent inputs, or a placement budget too small for the final check.
    """
    batch = as_batch(images)
    B = batch.shape[0]
    if len(labels) != B or len(lesion_boxes) != B:
        raise ValueError(f"got {B} images, {len(labels)} labels and {len(lesion_boxes)} lesion box lists")
    check_models(surrogates, labels)
    if not isinstance(config, ProtectionConfig):
        raise TypeError(f"config must be a ProtectionConfig, got {type(config).__name__}")
    place, tex = config.placement, config.texture
    costs = Objective(surrogates, place.eot)  # queries per evaluation and per final check
    if place.budget < costs.check_cost:
        raise ValueError(f"placement budget {place.budget} cannot pay for the final check ({costs.check_cost} queries)")
    if B == 0:
        return []
    dev = default_device(device)
    H, W = batch.shape[1:3]
    gens = _generators(config, batch, labels, seeds, generator)
    lab = torch.tensor([int(l) for l in labels], dtype=torch.long, device=dev)
    placements: list[Placement | None] = [None] * B
    queries = torch.zeros(B, dtype=torch.long)
    sized: dict[tuple[int, int], np.ndarray] = {}

    with frozen(surrogates, dev), torch.no_grad():
        x = to_float(batch, dev)
        fov = field_of_view(x)
        # Logos go inside 90 % of the fitted field of view, at any size of the ladder; only an
        # image with no room there even for the smallest logo falls back to the whole field.
        inner = field_of_view(x, inset=FOV_INSET)
        objective = Objective(surrogates, place.eot, margin=place.margin,
                              amp=config.amp and dev.type == "cuda", batch_size=config.batch_size)
        objective.prime(tuple(x.shape[1:]), dev)  # CUDA: every batch shape once per process
        todo = torch.arange(B)
        for region, scale in [(r, s) for r in (inner, fov) for s in place.scales]:
            # Images with no room for the logo at this size try the next, smaller one.
            w, h = logo_size(logo, (H, W), scale=scale)
            small = sized.setdefault((w, h), resize_logo(logo, w, h))
            idx = todo.to(dev)
            feasible = feasible_positions(
                forbidden_mask([lesion_boxes[i] for i in todo.tolist()], region[idx], margin=place.lesion_margin), w, h)
            has = feasible.flatten(1).any(1).cpu()
            sel = todo[has]
            if sel.numel():
                problem = SearchProblem(
                    images=x[sel.to(dev)], labels=lab[sel.to(dev)], feasible=feasible[has.to(dev)],
                    logo=logo_tensor(small, dev), generators=[gens[i] for i in sel.tolist()],
                    budget=place.budget - costs.check_cost, opacity=tuple(place.opacity))
                out = make_optimizer(place.optimizer, objective).run(problem)
                queries[sel] = out.queries.cpu()
                for i, (px, py), op in zip(sel.tolist(), out.xy.cpu().tolist(), out.opacity.cpu().tolist()):
                    placements[i] = Placement(int(px), int(py), w, h, int(op))
            todo = todo[~has]
            if todo.numel() == 0:
                break
        # The stored pixels, rendered on the device: the quantized render is bit-identical to
        # render_exact, which the packer encodes (tests/test_render.py), and PNG is lossless
        # (tests/test_engine.py re-checks every success flag on PNG-decoded render_exact bytes).
        final = _render_placements(x, placements, sized, None, dev)
        worst = objective.check(final, lab).cpu()
        own: list[np.ndarray | None] = [None] * B
        layers: list[Layer | None] = [None] * B
        if tex.steps:
            texture_objective = Objective(surrogates, tex.views(place), margin=max(place.margin, tex.margin),
                                          amp=objective.amp, batch_size=config.batch_size)
            masks = _layer_masks(fov, lesion_boxes, placements, config) if config.layer.on else None
            own, taken, grids = refine_textures(
                x, lab, placements, sized, texture_objective, steps=tex.steps, cell=tex.cell, lr=tex.lr,
                batch_size=config.batch_size, max_change=tex.max_change, layer_masks=masks,
                layer_amplitude=config.layer.amplitude, layer_cell=config.layer.cell, diversity=tex.diversity)
            per_step = texture_objective.cost + (len(surrogates) if masks is not None else 0)
            queries += torch.tensor(taken, dtype=torch.long) * per_step
            if masks is not None:
                mask_np = masks.cpu().numpy()
                layers = [None if g is None else Layer(config.layer.cell, g, mask_np[i]) for i, g in enumerate(grids)]
            textured = _render_placements(_layered(x, layers), placements, sized, own, dev)
            worst_t = objective.check(textured, lab).cpu()
            queries += objective.check_cost
            # Keep the per-image colours (and layer) unless they lose a success the plain logo had.
            for i in range(B):
                if own[i] is not None and worst[i] < -place.margin <= worst_t[i]:
                    own[i], layers[i] = None, None
                elif own[i] is not None:
                    worst[i] = worst_t[i]
        del x
    queries += objective.check_cost
    results = []
    for i in range(B):
        m = float(worst[i])
        ok = m < -place.margin
        status = "no_feasible_position" if placements[i] is None else ("fooled" if ok else "not_fooled")
        results.append(Result(placements[i], bool(ok), int(queries[i]), m, status, own[i], layers[i]))
    n_ok = sum(r.success for r in results)
    log.info("protect: %d/%d images fooled (%s), median %d queries", n_ok, B, place.optimizer,
             int(np.median([r.queries for r in results])))
    return results


def _render_placements(x: torch.Tensor, placements: Sequence[Placement | None], sized: dict[tuple[int, int], np.ndarray],
                       own: Sequence[np.ndarray | None] | None, dev: torch.device) -> torch.Tensor:
    """Quantized renders of every image with its placement (and its own logo where ``own`` has one)."""
    final = x
    groups: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(placements):
        if p is not None:
            groups.setdefault((p.w, p.h), []).append(i)
    for (w, h), members in groups.items():
        ps = [placements[i] for i in members]
        index = torch.tensor(members, device=dev)
        xy = torch.tensor([[p.x, p.y] for p in ps], dtype=torch.long, device=dev)
        op = torch.tensor([p.opacity for p in ps], dtype=torch.long, device=dev)
        if own is None:
            lg = logo_tensor(sized[(w, h)], dev)
        else:
            lg = torch.stack([logo_tensor(sized[(w, h)] if own[i] is None else own[i], dev) for i in members])
        final = final.index_copy(0, index, render_candidates(x, lg, index, xy, op, quantize=True))
    return final


def _layer_masks(fov: torch.Tensor, lesion_boxes: Sequence[Sequence[Box]], placements: Sequence[Placement | None],
                 config: ProtectionConfig) -> torch.Tensor:
    """bool ``[B, H, W]``: where each image's layer may change pixels -- inside the field of view, off
    every lesion box and its margin, off the logo box (nothing for an image without a placement)."""
    margin = config.placement.lesion_margin if config.layer.lesion_margin is None else config.layer.lesion_margin
    allowed = ~forbidden_mask(lesion_boxes, fov, margin=margin)
    for i, p in enumerate(placements):
        if p is None:
            allowed[i] = False
        else:
            x0, y0, x1, y1 = p.box
            allowed[i, y0:y1, x0:x1] = False
    return allowed


def _layered(x: torch.Tensor, layers: Sequence[Layer | None]) -> torch.Tensor:
    """The images with their layers applied exactly (``apply_layer`` on ``uint8 / 255`` inputs)."""
    if all(layer is None for layer in layers):
        return x
    out = x.clone()
    H, W = x.shape[-2:]
    for i, layer in enumerate(layers):
        if layer is not None:
            g = torch.from_numpy(layer.grid.astype(np.float32)).to(x.device)[None]
            d = layer_offsets_torch(g, layer.cell, H, W, exact=True)[0]
            d = d * torch.from_numpy(layer.mask).to(x.device)
            out[i] = (torch.round(x[i] * 255.0) + d).clamp(0, 255) / 255.0
    return out
