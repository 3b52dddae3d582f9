"""The batched watermark orchestrator: :func:`protect` and :func:`learn_logo`.

``protect`` takes a batch of same-size images and, for each, finds a logo
placement off the lesions that makes every surrogate misclassify it:

1. resize the logo to the configured area (:func:`~medlocker.watermark.logo.logo_size`);
   optionally smaller for images with no room for it (``min_logo_scale``);
2. feasible top-lefts: inside the field of view, ``lesion_margin`` px off every lesion box;
3. search with the configured optimizer (batched over images and candidates, on the device);
4. final check: the stored pixels (the quantized render on the device, bit-identical
   to :func:`~medlocker.watermark.render.render_exact`; PNG is lossless, so they are
   what any reader decodes) -> fp32 forward of every surrogate as given.
   ``Result.success`` is this check.

Every image gets a placement (the best one found) unless no feasible position
exists. All query counts include the final check (one query per surrogate), so
``Result.queries <= config.budget``.

Randomness: each image has its own generator, seeded from
``(config.seed, seeds[i])`` -- or, without ``seeds``, from a hash of the image's
bytes and label -- so an image's placement does not depend on which batch it
is in.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from medlocker.watermark.feasible import feasible_positions, field_of_view, forbidden_mask, sample_feasible
from medlocker.watermark.logo import MAX_LOGO_SCALE, logo_size, resize_logo
from medlocker.watermark.objective import Objective
from medlocker.watermark.optim import OPTIMIZERS, SearchProblem, frozen, make_optimizer
from medlocker.watermark.params import Box, Placement
from medlocker.watermark.render import logo_tensor, render_candidates
from medlocker.watermark.transforms import get_view

__all__ = ["SearchConfig", "Result", "protect", "learn_logo", "refine_colors", "image_generator", "STATUSES"]

log = logging.getLogger(__name__)

STATUSES = ("fooled", "not_fooled", "no_feasible_position")
LOGO_MODES = ("fixed", "learned")


@dataclass(frozen=True)
class SearchConfig:
    """How watermarks are searched.

    Attributes:
        optimizer: ``"bhe"`` | ``"gradient"`` | ``"blackbox"``.
        budget: most model queries per image, the final check included (one query =
            one image through one surrogate under one view; forward+backward = 1).
        logo_scale: logo area as a fraction of the image, ``<= 0.0625``.
        opacity: allowed opacity range on 0..255.
        margin: success needs ``true logit < max other logit - margin`` on every surrogate.
        lesion_margin: px kept between the logo box and any lesion box.
        eot: transform views added to the objective (``"jpeg75"``, ``"resize0.5"``,
            ``"median3"``, ``"blur"``, ``"crop"``).
        logo_mode: ``"fixed"`` or ``"learned"``; with ``"learned"`` the caller runs
            :func:`learn_logo` once per dataset and passes its result as ``logo``.
        seed: mixed into every image's generator.
        amp: bf16 autocast for search forwards on CUDA (successes re-checked in fp32).
        batch_size: most images per forward.
        min_logo_scale: when set, an image with no room for the logo at
            ``logo_scale`` (a lesion-dense fundus) retries with a smaller logo, down
            to this fraction, instead of getting no watermark. Off by default.
        logo_shrink: each retry multiplies the logo area by this factor (0 < f < 1).
            A finer ladder (0.8) gives a lesion-dense image the largest logo that
            fits instead of half of it; every size costs only its feasibility map.
        colour_steps: when > 0, each image's logo colours are then optimised at its
            placement for this many Adam steps (:func:`refine_colors`: an adversarial
            texture inside the logo's shape; alpha and opacity kept). Each step costs one
            forward+backward query per surrogate and view, taken from ``budget``; an image
            stops early once every surrogate is past ``colour_margin``. The
            per-image logo becomes part of the watermark parameters (``Result.logo``;
            the packer commits to it per sample). Off (0) by default.
        colour_margin: how far below zero the colour steps push each surrogate's margin.
        colour_cell: the colour steps optimise one colour offset per ``cell x cell`` px
            block (bilinearly interpolated over the logo, added to its own colours'
            logits): a low-frequency texture, which survives resizing and JPEG and
            transfers better than a per-pixel one. 1 = per pixel.
        colour_eot: the EOT views of the colour steps; None (default) = ``eot``. Views
            here and not in the placement search make the texture survive (and transfer)
            at a fraction of the cost of ``eot``: each step costs one query per
            surrogate and view (the identity included).
    """

    optimizer: str = "gradient"
    budget: int = 1000
    logo_scale: float = 0.04
    opacity: tuple[int, int] = (96, 224)
    margin: float = 0.0
    lesion_margin: int = 4
    eot: tuple[str, ...] = ()
    logo_mode: str = "fixed"
    seed: int = 0
    amp: bool = True
    batch_size: int = 256
    min_logo_scale: float | None = None
    logo_shrink: float = 0.5
    colour_steps: int = 0
    colour_margin: float = 4.0
    colour_eot: tuple[str, ...] | None = None
    colour_cell: int = 1

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1 query, got {self.budget}")
        if not 0.0 < self.logo_scale <= MAX_LOGO_SCALE:
            raise ValueError(f"logo_scale must be in (0, {MAX_LOGO_SCALE}], got {self.logo_scale}")
        lo, hi = self.opacity
        if not 1 <= lo <= hi <= 255:
            raise ValueError(f"opacity range must satisfy 1 <= lo <= hi <= 255, got {self.opacity}")
        if self.margin < 0 or self.lesion_margin < 0:
            raise ValueError("margin and lesion_margin must be >= 0")
        for view in (*self.eot, *(self.colour_eot or ())):
            get_view(view)
        if self.logo_mode not in LOGO_MODES:
            raise ValueError(f"logo_mode must be one of {LOGO_MODES}, got {self.logo_mode!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.min_logo_scale is not None and not 0.0 < self.min_logo_scale <= self.logo_scale:
            raise ValueError(f"min_logo_scale must be in (0, logo_scale], got {self.min_logo_scale}")
        if not 0.0 < self.logo_shrink < 1.0:
            raise ValueError(f"logo_shrink must be in (0, 1), got {self.logo_shrink}")
        if self.colour_steps < 0 or self.colour_margin < 0:
            raise ValueError("colour_steps and colour_margin must be >= 0")
        if self.colour_cell < 1:
            raise ValueError(f"colour_cell must be >= 1 px, got {self.colour_cell}")

    @property
    def colour_views(self) -> tuple[str, ...]:
        """The EOT views of the colour steps (``colour_eot``, else ``eot``)."""
        return self.eot if self.colour_eot is None else tuple(self.colour_eot)


@dataclass(frozen=True)
class Result:
    """Outcome for one image.

    Attributes:
        placement: the watermark (None only when no feasible position exists).
        success: every surrogate misclassifies the stored (PNG round-tripped) bytes.
        queries: model queries spent on this image, final check included.
        margin: max over surrogates of ``true logit - best other`` on the stored bytes.
        status: ``"fooled"`` | ``"not_fooled"`` | ``"no_feasible_position"``.
        logo: with ``SearchConfig.colour_steps``, this image's own ``uint8`` RGBA logo at
            the placement's size (render it with :func:`render_exact`); None: the logo
            passed to :func:`protect`.
    """

    placement: Placement | None
    success: bool
    queries: int
    margin: float
    status: str
    logo: np.ndarray | None = None


def image_generator(seed: int, image_seed: int | str) -> torch.Generator:
    """A CPU generator for one image, from the run seed and the image's own seed."""
    digest = hashlib.sha256(f"medlocker.watermark:{int(seed)}:{image_seed}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return g


def _content_seed(image: np.ndarray, label: int) -> str:
    h = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    h.update(f"|{image.shape}|{int(label)}".encode())
    return h.hexdigest()


def _as_batch(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        batch = images
    else:
        items = list(images)
        if not items:
            return np.zeros((0, 1, 1, 3), dtype=np.uint8)
        shapes = {np.asarray(i).shape for i in items}
        if len(shapes) != 1:
            raise ValueError(f"protect() needs same-size images in one batch, got shapes {sorted(shapes)}")
        batch = np.stack([np.asarray(i) for i in items])
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"images must be uint8 [B, H, W, 3], got {batch.dtype} {batch.shape}")
    return batch


def _default_device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_models(surrogates: Sequence[nn.Module], labels: Sequence[int]) -> None:
    if not surrogates:
        raise ValueError("need at least one surrogate model")
    n = {getattr(m, "num_classes", None) for m in surrogates} - {None}
    if len(n) > 1:
        raise ValueError(f"surrogates disagree on the number of classes: {sorted(n)}")
    if n and labels and not all(0 <= int(l) < next(iter(n)) for l in labels):
        raise ValueError(f"labels must be in 0..{next(iter(n)) - 1}")


def _generators(config: SearchConfig, batch: np.ndarray, labels: Sequence[int], seeds: Sequence[int | str] | None,
                generator: torch.Generator | None) -> list[torch.Generator]:
    if seeds is not None and len(seeds) != len(batch):
        raise ValueError(f"got {len(seeds)} seeds for {len(batch)} images")
    salt = "" if generator is None else f":{int(torch.randint(0, 2**62, (1,), generator=generator))}"
    keys = seeds if seeds is not None else [_content_seed(img, l) for img, l in zip(batch, labels)]
    return [image_generator(config.seed, f"{k}{salt}") for k in keys]


def _scales(config: SearchConfig) -> list[float]:
    """Logo area fractions to try: ``logo_scale``, then shrinking by ``logo_shrink`` down to ``min_logo_scale``."""
    scales = [config.logo_scale]
    if config.min_logo_scale is not None:
        while scales[-1] * config.logo_shrink >= config.min_logo_scale * (1 - 1e-9):
            scales.append(scales[-1] * config.logo_shrink)
    return scales


def _feasible(x: torch.Tensor, boxes: Sequence[Sequence[Box]], w: int, h: int, margin: int) -> torch.Tensor:
    fov = field_of_view(x)
    return feasible_positions(forbidden_mask(boxes, fov, margin=margin), w, h)


def protect(
    images: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int],
    lesion_boxes: Sequence[Sequence[Box]],
    surrogates: Sequence[nn.Module],
    *,
    logo: np.ndarray,
    config: SearchConfig,
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
        config: search settings.
        device: default CUDA when available, else CPU.
        generator: optional; one salt is drawn from it and mixed into every
            image's seed (so results then depend on its state).
        seeds: optional per-image seeds (e.g. sample keys); default: a hash of
            each image's bytes and label. Either way batch-invariant.

    Returns:
        One :class:`Result` per image, in order.

    Raises:
        ValueError: inconsistent inputs, or a budget too small for the final check.
    """
    batch = _as_batch(images)
    B = batch.shape[0]
    if len(labels) != B or len(lesion_boxes) != B:
        raise ValueError(f"got {B} images, {len(labels)} labels and {len(lesion_boxes)} lesion box lists")
    _check_models(surrogates, labels)
    costs = Objective(surrogates, config.eot)  # queries per evaluation and per final check
    step_cost = Objective(surrogates, config.colour_views).cost  # queries per colour step
    checks = 2 if config.colour_steps else 1  # with colours: the plain logo is checked too
    reserved = checks * costs.check_cost + config.colour_steps * step_cost
    if config.budget < reserved:
        raise ValueError(f"budget {config.budget} cannot pay for the final check"
                         + (f" and {config.colour_steps} colour steps" if config.colour_steps else "")
                         + f" ({reserved} queries)")
    if B == 0:
        return []
    dev = _default_device(device)
    H, W = batch.shape[1:3]
    gens = _generators(config, batch, labels, seeds, generator)
    lab = torch.tensor([int(l) for l in labels], dtype=torch.long, device=dev)
    placements: list[Placement | None] = [None] * B
    queries = torch.zeros(B, dtype=torch.long)
    sized: dict[tuple[int, int], np.ndarray] = {}

    with frozen(surrogates, dev), torch.no_grad():
        x = torch.from_numpy(batch).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        fov = field_of_view(x)
        objective = Objective(surrogates, config.eot, margin=config.margin,
                              amp=config.amp and dev.type == "cuda", batch_size=config.batch_size)
        objective.prime(tuple(x.shape[1:]), dev)  # CUDA: every batch shape once per process
        todo = torch.arange(B)
        for scale in _scales(config):
            # Images with no room for the logo at this size try the next, smaller one.
            w, h = logo_size(logo, (H, W), scale=scale)
            small = sized.setdefault((w, h), resize_logo(logo, w, h))
            idx = todo.to(dev)
            feasible = feasible_positions(
                forbidden_mask([lesion_boxes[i] for i in todo.tolist()], fov[idx], margin=config.lesion_margin), w, h)
            has = feasible.flatten(1).any(1).cpu()
            sel = todo[has]
            if sel.numel():
                problem = SearchProblem(
                    images=x[sel.to(dev)], labels=lab[sel.to(dev)], feasible=feasible[has.to(dev)],
                    logo=logo_tensor(small, dev), generators=[gens[i] for i in sel.tolist()],
                    budget=config.budget - reserved, opacity=tuple(config.opacity))
                out = make_optimizer(config.optimizer, objective).run(problem)
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
        if config.colour_steps:
            own, taken = _refine(x, lab, placements, sized, objective, config, dev)
            queries += torch.tensor(taken, dtype=torch.long) * step_cost
            textured = _render_placements(x, placements, sized, own, dev)
            worst_t = objective.check(textured, lab).cpu()
            queries += objective.check_cost
            # Keep the per-image colours unless they lose a success the plain logo had.
            for i in range(B):
                if own[i] is not None and worst[i] < -config.margin <= worst_t[i]:
                    own[i] = None
                elif own[i] is not None:
                    worst[i] = worst_t[i]
        del x
    queries += objective.check_cost
    results = []
    for i in range(B):
        m = float(worst[i])
        ok = m < -config.margin
        status = "no_feasible_position" if placements[i] is None else ("fooled" if ok else "not_fooled")
        results.append(Result(placements[i], bool(ok), int(queries[i]), m, status, own[i]))
    n_ok = sum(r.success for r in results)
    log.info("protect: %d/%d images fooled (%s), median %d queries", n_ok, B, config.optimizer,
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


def _refine(x: torch.Tensor, labels: torch.Tensor, placements: Sequence[Placement | None],
            sized: dict[tuple[int, int], np.ndarray], search: Objective, config: SearchConfig,
            dev: torch.device, lr: float = 0.15) -> tuple[list[np.ndarray | None], list[int]]:
    """Per-image logo RGB at fixed placements (see :func:`refine_colors`); ``x`` float on ``dev``.

    Adam (PyTorch's update rule, per image) on the colours' logits. An image stops as soon
    as every surrogate and view is past ``colour_margin``: the clamped loss has no gradient
    left there, and its remaining steps are not spent. Returns the logos and the steps
    (forward+backward passes) each image took.
    """
    objective = Objective(search.surrogates, config.colour_views, margin=max(config.margin, config.colour_margin),
                          amp=search.amp, batch_size=search.batch_size)
    floor = -objective.margin * len(objective.surrogates)  # the loss once every surrogate is past the margin
    b1, b2, eps = 0.9, 0.999, 1e-8
    out: list[np.ndarray | None] = [None] * len(placements)
    taken = [0] * len(placements)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(placements):
        if p is not None:
            groups.setdefault((p.w, p.h), []).append(i)
    for (w, h), members in groups.items():
        small = sized[(w, h)]
        base = logo_tensor(small, dev)
        for s in range(0, len(members), config.batch_size):
            part = members[s:s + config.batch_size]
            ps = [placements[i] for i in part]
            n = len(part)
            index = torch.tensor(part, device=dev)
            xy = torch.tensor([[p.x, p.y] for p in ps], dtype=torch.long, device=dev)
            op = torch.tensor([p.opacity for p in ps], dtype=torch.float32, device=dev)
            logits = torch.logit(base[:3].clamp(0.02, 0.98)).unsqueeze(0)
            cells = (-(-h // config.colour_cell), -(-w // config.colour_cell))
            theta = torch.zeros(n, 3, *cells, device=dev)  # colour-logit offsets, one per cell
            alpha = base[3:].expand(n, -1, -1, -1)
            m, v = torch.zeros_like(theta), torch.zeros_like(theta)
            t = torch.zeros(n, dtype=torch.float64, device=dev)
            steps = torch.zeros(n, dtype=torch.long, device=dev)
            active = torch.ones(n, dtype=torch.bool, device=dev)
            for _ in range(config.colour_steps):
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                with torch.enable_grad():
                    th = theta[idx].requires_grad_(True)
                    rgba = torch.cat([_texture(logits, th), alpha[: idx.numel()]], dim=1)
                    loss = objective.loss(render_candidates(x, rgba, index[idx], xy[idx], op[idx]),
                                          labels[index[idx]]).loss
                    (g,) = torch.autograd.grad(loss.sum(), th)
                steps[idx] += 1
                done = loss.detach() <= floor + 1e-6  # past the margin everywhere: keep these colours
                active[idx[done]] = False
                idx, g = idx[~done], g[~done]
                t[idx] += 1
                m[idx] = b1 * m[idx] + (1 - b1) * g
                v[idx] = b2 * v[idx] + (1 - b2) * g * g
                bc1 = (1 - b1 ** t[idx]).float().view(-1, 1, 1, 1)
                bc2 = (1 - b2 ** t[idx]).float().view(-1, 1, 1, 1)
                theta[idx] = theta[idx] - (lr / bc1) * m[idx] / (v[idx].sqrt() / bc2.sqrt() + eps)
            rgb = torch.round(_texture(logits, theta) * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()
            for j, (i, k) in enumerate(zip(part, steps.tolist())):
                lg = small.copy()
                lg[..., :3] = rgb[j].transpose(1, 2, 0)
                out[i] = lg
                taken[i] = int(k)
    return out, taken


def _texture(logits: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Colours in ``[0, 1]``: the logo's colour logits ``[1, 3, h, w]`` plus per-cell offsets
    ``[N, 3, ch, cw]``, bilinearly upsampled to ``h x w`` when the cells are coarser than pixels."""
    if offsets.shape[-2:] != logits.shape[-2:]:
        offsets = torch.nn.functional.interpolate(offsets, size=logits.shape[-2:], mode="bilinear", align_corners=False)
    return torch.sigmoid(logits + offsets)


def learn_logo(
    images: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int],
    lesion_boxes: Sequence[Sequence[Box]],
    surrogates: Sequence[nn.Module],
    *,
    logo: np.ndarray,
    config: SearchConfig,
    steps: int = 100,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 16,
    placements: int = 4,
    lr: float = 0.1,
    target_margin: float = 0.0,
) -> np.ndarray:
    """Learn the logo's colours once for a whole dataset ("learned" logo mode).

    The logo keeps its alpha (its shape); its RGB colours are optimised with
    Adam to minimise the ensemble margin loss in expectation over random images,
    random feasible placements at the highest allowed opacity, and the
    configured EOT views -- a universal adversarial colouring.

    Args:
        images, labels, lesion_boxes, surrogates, config: as for :func:`protect`.
        logo: the ``uint8`` RGBA logo to recolour.
        steps: optimisation steps.
        generator: draws images and placements (default: seeded from ``config.seed``).
        batch_size: images per step; ``placements``: random placements per image.
        target_margin: each surrogate's margin is pushed down to ``-target_margin``
            (at least ``config.margin``). On the synthetic benchmark (100 images,
            5 models) 4.0 was no better than 0.0 for transfer, so the default
            stops pushing a surrogate once it is fooled.

    Returns:
        ``uint8`` RGBA logo at the size :func:`protect` uses for these images
        (``logo_size(logo, (H, W), scale=config.logo_scale)``), alpha unchanged.
    """
    batch = _as_batch(images)
    B = batch.shape[0]
    if len(labels) != B or len(lesion_boxes) != B:
        raise ValueError(f"got {B} images, {len(labels)} labels and {len(lesion_boxes)} lesion box lists")
    _check_models(surrogates, labels)
    if B == 0 or steps < 1:
        raise ValueError("learn_logo needs at least one image and one step")
    dev = _default_device(device)
    H, W = batch.shape[1:3]
    w, h = logo_size(logo, (H, W), scale=config.logo_scale)
    small = resize_logo(logo, w, h)
    g = generator if generator is not None else image_generator(config.seed, "learn_logo")
    hi = config.opacity[1]
    with frozen(surrogates, dev):
        objective = Objective(surrogates, config.eot, margin=max(config.margin, target_margin),
                              amp=config.amp and dev.type == "cuda", batch_size=config.batch_size)
        base = logo_tensor(small, dev)
        with torch.no_grad():
            feas = torch.cat([
                _feasible(torch.from_numpy(batch[s:s + 64]).to(dev).permute(0, 3, 1, 2).float().div_(255.0),
                          lesion_boxes[s:s + 64], w, h, config.lesion_margin)
                for s in range(0, B, 64)])
        usable = feas.flatten(1).any(1).nonzero().squeeze(1).cpu()
        if usable.numel() == 0:
            raise ValueError("no image has a feasible logo position")
        theta = torch.logit(base[:3].clamp(0.02, 0.98)).detach().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=lr)
        for _ in range(steps):
            pick = usable[torch.randint(0, usable.numel(), (min(batch_size, usable.numel()),), generator=g)]
            x = torch.from_numpy(batch[pick.numpy()]).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
            xy = sample_feasible(feas[pick.to(dev)], placements, g).reshape(-1, 2)
            index = torch.arange(pick.numel(), device=dev).repeat_interleave(placements)
            rgba = torch.cat([torch.sigmoid(theta), base[3:]], dim=0)
            op = torch.full((index.numel(),), float(hi), device=dev)
            xr = render_candidates(x, rgba, index, xy, op)
            loss = objective.loss(xr, torch.tensor([int(labels[i]) for i in pick.tolist()], device=dev)[index]).loss
            opt.zero_grad(set_to_none=True)
            loss.mean().backward()
            opt.step()
    rgb = torch.round(torch.sigmoid(theta.detach()) * 255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    out = small.copy()
    out[..., :3] = rgb
    return out


def refine_colors(
    images: np.ndarray | Sequence[np.ndarray],
    labels: Sequence[int],
    placements: Sequence[Placement | None],
    surrogates: Sequence[nn.Module],
    *,
    logo: np.ndarray,
    config: SearchConfig,
    steps: int = 40,
    lr: float = 0.15,
    target_margin: float = 2.0,
    device: torch.device | str | None = None,
) -> list[np.ndarray | None]:
    """Per-image logo colours at fixed placements: an adversarial texture inside the logo's shape.

    Each image's logo RGB starts from ``logo`` and is optimised with Adam on the
    surrogates' margin loss (each surrogate pushed down to ``-target_margin``, under
    the configured EOT views) at the image's placement; the logo's alpha (its shape)
    and the placement's opacity stay as they are, so only pixels the logo already
    covers change. :func:`protect` does this itself with ``SearchConfig.colour_steps``.

    Args:
        images, labels, surrogates, config: as for :func:`protect`.
        placements: per image, from :func:`protect` (None: no logo, returns None).
        logo: the ``uint8`` RGBA logo the placements were searched with (any size;
            resized to each placement like :func:`~medlocker.watermark.render.render_exact`).
        steps, lr: Adam steps and learning rate on the colours' logits.
        target_margin: how far below zero each surrogate's margin is pushed.

    Returns:
        Per image, the ``uint8`` RGBA logo at its placement's size (alpha unchanged), or None.
    """
    batch = _as_batch(images)
    if len(labels) != len(batch) or len(placements) != len(batch):
        raise ValueError(f"got {len(batch)} images, {len(labels)} labels and {len(placements)} placements")
    _check_models(surrogates, labels)
    if steps < 0 or target_margin < 0:
        raise ValueError("steps and target_margin must be >= 0")
    dev = _default_device(device)
    cfg = replace(config, colour_steps=int(steps), colour_margin=float(target_margin))
    sized = {(p.w, p.h): (logo if logo.shape[:2] == (p.h, p.w) else resize_logo(logo, p.w, p.h))
             for p in placements if p is not None}
    with frozen(surrogates, dev), torch.no_grad():
        x = torch.from_numpy(batch).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.tensor([int(l) for l in labels], dtype=torch.long, device=dev)
        objective = Objective(surrogates, config.eot, margin=config.margin, amp=config.amp and dev.type == "cuda",
                              batch_size=config.batch_size)
        return _refine(x, y, placements, sized, objective, cfg, dev, lr=lr)[0]