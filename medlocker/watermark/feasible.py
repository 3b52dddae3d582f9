"""Where a logo may go: field of view, lesion boxes, and the feasible top-left map.

Everything is batched over images (``[B, ...]`` tensors, any device) and made of
per-image operations, so an image's result never depends on the rest of the
batch. A top-left ``(x, y)`` is *feasible* when the whole ``w x h`` logo box lies
inside the image and inside the field of view, and keeps ``margin`` pixels
away from every lesion box. Positions are ``(x, y)`` pairs throughout
(``xy[..., 0]`` is the column).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medlocker.watermark.params import Box

__all__ = [
    "DARK_THRESHOLD",
    "FOV_INSET",
    "feasible_positions",
    "field_of_view",
    "forbidden_mask",
    "project",
    "sample_feasible",
    "sample_stratified",
    "uniform",
]

DARK_THRESHOLD = 20.0 / 255.0  # fundus background is black up to sensor/JPEG noise
_MIN_BACKGROUND = 0.02  # below this dark-border fraction the image is not a fundus photo
_MIN_FOV = 0.05  # a "field of view" smaller than this is a mis-detection: use the whole image
_MAX_FILL_PASSES = 64
FOV_INSET = 0.9  # logo pixels stay inside this fraction of the fitted field-of-view radius

Generators = torch.Generator | Sequence[torch.Generator]


def _spread_runs(bg: torch.Tensor, dark: torch.Tensor) -> torch.Tensor:
    """One pass: a run of dark pixels along the last axis becomes background if any of it is."""
    B, H, W = dark.shape
    prev = torch.nn.functional.pad(dark[:, :, :-1], (1, 0), value=False)
    start = (dark & ~prev).reshape(B, H * W)
    run = torch.cumsum(start, dim=1) * dark.reshape(B, H * W)  # 0 = not dark, runs 1..R
    hit = torch.zeros(B, H * W + 1, dtype=torch.int32, device=dark.device)
    hit.scatter_reduce_(1, run, bg.reshape(B, H * W).to(torch.int32), reduce="amax")
    return (hit.gather(1, run) > 0).reshape(B, H, W) & dark


def _inset_ellipse(disc: torch.Tensor, inset: float) -> torch.Tensor:
    """Pixels wholly inside ``inset`` times the axis-aligned ellipse fitted to each ``disc`` mask.

    The ellipse comes from the mask's centroid and second moments (a filled ellipse of
    semi-axis ``a`` has variance ``a**2 / 4``), so a rim cut by the image edge, a dark
    red rim or border noise only shrink it; a pixel is kept when its four corners are
    inside (the ellipse is convex, so then the whole pixel is).
    """
    B, H, W = disc.shape
    m = disc.to(torch.float64)
    n = m.flatten(1).sum(1).clamp(min=1.0)
    ys = torch.arange(H, dtype=torch.float64, device=disc.device).view(1, H, 1)
    xs = torch.arange(W, dtype=torch.float64, device=disc.device).view(1, 1, W)
    cx = (m * xs).flatten(1).sum(1) / n
    cy = (m * ys).flatten(1).sum(1) / n
    vx = (m * (xs - cx.view(B, 1, 1)) ** 2).flatten(1).sum(1) / n
    vy = (m * (ys - cy.view(B, 1, 1)) ** 2).flatten(1).sum(1) / n
    rx = (inset * (2.0 * vx.sqrt() - 2.0)).clamp(min=1e-6).view(B, 1, 1)
    ry = (inset * (2.0 * vy.sqrt() - 2.0)).clamp(min=1e-6).view(B, 1, 1)
    inside = torch.ones_like(disc)
    for ox in (-0.5, 0.5):
        for oy in (-0.5, 0.5):
            d = ((xs + ox - cx.view(B, 1, 1)) / rx) ** 2 + ((ys + oy - cy.view(B, 1, 1)) / ry) ** 2
            inside &= d <= 1.0
    return inside


def field_of_view(images: torch.Tensor, *, threshold: float = DARK_THRESHOLD, inset: float = 1.0) -> torch.Tensor:
    """Boolean ``[B, H, W]`` field of view of fundus photographs.

    The background is the dark region (max channel < ``threshold``) connected to
    the image border; everything else, including dark lesions and vessels
    inside the disc, is in view (the "fill"). Images with (almost) no dark
    border, or that are almost entirely dark, are not fundus photos: their
    field of view is the whole image. With ``inset`` < 1 (the placement search
    asks for :data:`FOV_INSET`) the field of view of a fundus photo is then limited
    to ``inset`` times the ellipse fitted to the disc
    (:func:`_inset_ellipse`), so a logo never reaches the rim, where a dark red
    edge, JPEG noise or rotation corners make the dark border unreliable.

    Args:
        images: float ``[B, 3, H, W]`` in ``[0, 1]``.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images shaped [B, 3, H, W], got {tuple(images.shape)}")
    dark = images.amax(dim=1) < threshold
    border = torch.zeros_like(dark)
    border[:, 0, :] = border[:, -1, :] = True
    border[:, :, 0] = border[:, :, -1] = True
    bg = dark & border
    # Scanline flood fill: alternate row and column run propagation; a fundus
    # background (four corners) converges in a few passes.
    for i in range(_MAX_FILL_PASSES // 2):
        before = bg
        bg = _spread_runs(bg, dark)
        bg = _spread_runs(bg.transpose(1, 2), dark.transpose(1, 2)).transpose(1, 2)
        if i % 2 == 1 and torch.equal(before, bg):  # one host sync every two rounds
            break
    frac_bg = bg.flatten(1).float().mean(1)
    is_fundus = (frac_bg >= _MIN_BACKGROUND) & (frac_bg <= 1.0 - _MIN_FOV)
    disc = ~bg
    if inset < 1.0:
        disc = disc & _inset_ellipse(disc, inset)
    return torch.where(is_fundus[:, None, None], disc, torch.ones_like(bg))


def forbidden_mask(boxes: Sequence[Sequence[Box]], fov: torch.Tensor, *, margin: int) -> torch.Tensor:
    """Pixels no logo pixel may cover: outside the field of view, or within ``margin`` px of a lesion box.

    Args:
        boxes: per image, a list of half-open ``(x0, y0, x1, y1)`` lesion boxes.
        fov: bool ``[B, H, W]`` from :func:`field_of_view`.
        margin: pixels added on every side of each box (>= 0).
    """
    B, H, W = fov.shape
    if len(boxes) != B:
        raise ValueError(f"got lesion boxes for {len(boxes)} images but {B} fields of view")
    if margin < 0:
        raise ValueError(f"lesion margin must be >= 0, got {margin}")
    flat = [(b, *map(int, box)) for b, image_boxes in enumerate(boxes) for box in image_boxes]
    covered = torch.zeros(B, H + 1, W + 1, dtype=torch.int32, device=fov.device)
    if flat:
        t = torch.tensor(flat, dtype=torch.long).to(fov.device)
        b = t[:, 0]
        x0 = (t[:, 1] - margin).clamp(0, W)
        y0 = (t[:, 2] - margin).clamp(0, H)
        x1 = (t[:, 3] + margin).clamp(0, W)
        y1 = (t[:, 4] + margin).clamp(0, H)
        ok = ((x1 > x0) & (y1 > y0)).to(torch.int32)  # empty boxes add nothing
        # 2-D difference array: +1/-1 at the corners, then two prefix sums.
        for ys, xs, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
            covered.index_put_((b, ys, xs), sign * ok, accumulate=True)
        covered = covered.cumsum(1).cumsum(2)
    return (~fov) | (covered[:, :H, :W] > 0)


def feasible_positions(forbidden: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Bool ``[B, H-h+1, W-w+1]``: top-lefts whose ``w x h`` box holds no forbidden pixel (integral image)."""
    B, H, W = forbidden.shape
    if w < 1 or h < 1:
        raise ValueError(f"logo size must be >= 1x1, got {w}x{h}")
    if w > W or h > H:
        return torch.zeros(B, max(H - h + 1, 0), max(W - w + 1, 0), dtype=torch.bool, device=forbidden.device)
    s = forbidden.to(torch.int32).cumsum(1).cumsum(2)
    s = torch.nn.functional.pad(s, (1, 0, 1, 0))
    inside = s[:, h:, w:] - s[:, :-h, w:] - s[:, h:, :-w] + s[:, :-h, :-w]
    return inside == 0


def _position_grid(feasible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, Hp, Wp = feasible.shape
    ys = torch.arange(Hp, device=feasible.device).repeat_interleave(Wp)
    xs = torch.arange(Wp, device=feasible.device).repeat(Hp)
    return xs, ys


def project(xy: torch.Tensor, feasible: torch.Tensor, *, chunk_elems: int = 1 << 24) -> torch.Tensor:
    """Nearest feasible top-left (Euclidean; ties -> lowest ``(y, x)``) for each ``xy`` ``[B, K, 2]``.

    Returns:
        long ``[B, K, 2]``; ``-1`` for images that have no feasible position.
    """
    B, K = xy.shape[:2]
    _, Hp, Wp = feasible.shape
    P = Hp * Wp
    out = torch.full((B, K, 2), -1, dtype=torch.long, device=feasible.device)
    if P == 0 or B == 0 or K == 0:
        return out
    xs, ys = (g.float() for g in _position_grid(feasible))
    flat = feasible.reshape(B, P)
    xy = xy.to(device=feasible.device, dtype=torch.float32)
    step = max(1, chunk_elems // (K * P))
    for s in range(0, B, step):  # chunks bound the [b, K, P] distance tensor
        q = xy[s:s + step]
        d = (q[..., 0:1] - xs) ** 2 + (q[..., 1:2] - ys) ** 2
        d = d.masked_fill(~flat[s:s + step, None, :], float("inf"))
        best = d.argmin(dim=2)
        found = flat[s:s + step].any(1, keepdim=True)
        out[s:s + step, :, 0] = torch.where(found, best % Wp, -1)
        out[s:s + step, :, 1] = torch.where(found, best // Wp, -1)
    return out


def uniform(generators: Generators, n_images: int, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """``U[0, 1)`` float64 ``[n_images, *shape]`` drawn on CPU.

    With one generator per image, row ``i`` comes from ``generators[i]`` only,
    so an image's random choices do not depend on the batch it is in; drawing
    on CPU makes them identical on every device.
    """
    if isinstance(generators, torch.Generator):
        u = torch.rand((n_images, *shape), generator=generators, dtype=torch.float64)
    else:
        if len(generators) != n_images:
            raise ValueError(f"need one generator per image: {len(generators)} for {n_images}")
        u = torch.stack([torch.rand(tuple(shape), generator=g, dtype=torch.float64) for g in generators]) if n_images else (
            torch.empty((0, *shape), dtype=torch.float64))
    return u.to(device)


def sample_feasible(feasible: torch.Tensor, k: int, generator: Generators) -> torch.Tensor:
    """``k`` feasible top-lefts per image, uniformly at random (with replacement).

    Args:
        feasible: bool ``[B, Hp, Wp]``.
        generator: one generator, or one per image (batch-invariant draws).

    Returns:
        long ``[B, k, 2]`` ``(x, y)``; ``-1`` for images without a feasible position.
    """
    B, Hp, Wp = feasible.shape
    u = uniform(generator, B, (k,), feasible.device)
    flat = feasible.reshape(B, Hp * Wp)
    out = torch.full((B, k, 2), -1, dtype=torch.long, device=feasible.device)
    if Hp * Wp == 0:
        return out
    cum = flat.to(torch.int64).cumsum(1)
    count = cum[:, -1:]
    target = torch.minimum((u * count).floor().long(), (count - 1).clamp(min=0)) + 1
    idx = torch.searchsorted(cum, target).clamp(max=Hp * Wp - 1)
    ok = count > 0
    out[..., 0] = torch.where(ok, idx % Wp, -1)
    out[..., 1] = torch.where(ok, idx // Wp, -1)
    return out


def sample_stratified(feasible: torch.Tensor, cells: tuple[int, int], generator: Generators) -> torch.Tensor:
    """One random feasible top-left per cell of a ``gy x gx`` grid laid over the position map.

    Returns:
        long ``[B, gy * gx, 2]``; ``-1`` rows for cells without a feasible position.
    """
    B, Hp, Wp = feasible.shape
    gy, gx = cells
    G = gy * gx
    out = torch.full((B, G, 2), -1, dtype=torch.long, device=feasible.device)
    P = Hp * Wp
    if P == 0:
        return out
    xs, ys = _position_grid(feasible)
    cell = torch.clamp(ys * gy // Hp, max=gy - 1) * gx + torch.clamp(xs * gx // Wp, max=gx - 1)  # [P]
    key = uniform(generator, B, (P,), feasible.device)
    key = torch.where(feasible.reshape(B, P), key, -1.0)
    best = torch.full((B, G), -1.0, dtype=key.dtype, device=key.device)
    best.scatter_reduce_(1, cell.expand(B, P), key, reduce="amax")
    chosen = (key == best.gather(1, cell.expand(B, P))) & (key >= 0)
    pos = torch.full((B, G), -1, dtype=torch.long, device=key.device)
    pos.scatter_reduce_(1, cell.expand(B, P), torch.where(chosen, torch.arange(P, device=key.device), -1), reduce="amax")
    ok = pos >= 0
    out[..., 0] = torch.where(ok, pos % Wp, -1)
    out[..., 1] = torch.where(ok, pos // Wp, -1)
    return out
