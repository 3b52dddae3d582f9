"""Alpha-blending a logo onto images: the exact integer rule and its batched twins.

:func:`render_exact` *defines* the stored image. Inside the logo box, with
``a = logo_alpha * opacity`` (``0..65025``)::

    out = (img * (65025 - a) + logo_rgb * a + 32512) // 65025

which is ``round((1 - a') * img + a' * logo)`` with ``a' = a / 255**2``, in integers
only, so every machine stores the same bytes. Bytes outside the box are copied.

The torch functions render many candidates at once (``N`` = images x
candidates) by gathering the logo-sized patch of each candidate, blending it
and scattering it back -- no Python loop over candidates:

* :func:`render_batch` -- integer top-left; ``quantize=True`` reproduces
  :func:`render_exact` bit for bit (on ``uint8 / 255`` inputs), so a candidate
  that fools a model here fools it on the stored bytes;
* :func:`render_soft` -- continuous top-left and opacity, differentiable in both
  (bilinear sub-pixel shift of the premultiplied logo).
"""

from __future__ import annotations

import numpy as np
import torch

from medlocker.watermark.logo import resize_logo
from medlocker.watermark.params import Placement

__all__ = [
    "render_exact",
    "render_batch",
    "render_candidates",
    "render_soft",
    "restore_exact",
    "crop_patch",
    "logo_tensor",
    "FULL",
]

FULL = 255 * 255  # 65025: alpha (0..255) x opacity (0..255)
_HALF = FULL // 2  # 32512: round half up in the integer division


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 image, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")


def _check_box(image_hw: tuple[int, int], p: Placement) -> None:
    H, W = image_hw
    if p.x + p.w > W or p.y + p.h > H:
        raise ValueError(f"placement box {p.box} does not fit in a {H}x{W} image")


def _sized_logo(logo: np.ndarray, p: Placement) -> np.ndarray:
    if logo.shape[0] == p.h and logo.shape[1] == p.w:
        return logo
    return resize_logo(logo, p.w, p.h)


def render_exact(image: np.ndarray, logo: np.ndarray, p: Placement) -> np.ndarray:
    """Blend ``logo`` onto ``image`` at ``p``: the stored watermarked image.

    Args:
        image: ``uint8`` H x W x 3.
        logo: ``uint8`` RGBA; resized to ``p.w x p.h`` with :func:`resize_logo`
            unless it already has that size.
        p: the placement; its box must lie inside the image.

    Returns:
        A new ``uint8`` H x W x 3 array, identical to ``image`` outside ``p.box``.
    """
    _check_image(image)
    _check_box(image.shape[:2], p)
    lg = _sized_logo(logo, p)
    x0, y0, x1, y1 = p.box
    a = lg[..., 3:4].astype(np.int64) * int(p.opacity)
    patch = image[y0:y1, x0:x1].astype(np.int64)
    blended = (patch * (FULL - a) + lg[..., :3].astype(np.int64) * a + _HALF) // FULL
    out = image.copy()
    out[y0:y1, x0:x1] = blended.astype(np.uint8)
    return out


def crop_patch(original: np.ndarray, p: Placement) -> np.ndarray:
    """The original pixels under the logo box (what a licensee needs to restore)."""
    _check_image(original)
    _check_box(original.shape[:2], p)
    x0, y0, x1, y1 = p.box
    return original[y0:y1, x0:x1].copy()


def restore_exact(watermarked: np.ndarray, original_patch: np.ndarray, p: Placement) -> np.ndarray:
    """Paste the original patch back: ``restore_exact(render_exact(x, l, p), crop_patch(x, p), p) == x``."""
    _check_image(watermarked)
    _check_box(watermarked.shape[:2], p)
    if original_patch.dtype != np.uint8 or original_patch.shape != (p.h, p.w, 3):
        raise ValueError(f"patch must be uint8 {(p.h, p.w, 3)} for placement {p.box}, got "
                         f"{original_patch.dtype} {original_patch.shape}")
    x0, y0, x1, y1 = p.box
    out = watermarked.copy()
    out[y0:y1, x0:x1] = original_patch
    return out


def logo_tensor(logo: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """``uint8`` h x w x 4 RGBA -> float ``[4, h, w]`` in ``[0, 1]`` (exactly ``k / 255``)."""
    t = torch.from_numpy(np.array(logo, dtype=np.uint8, copy=True)).to(device=device)
    return t.permute(2, 0, 1).float().div_(255.0)


def _patch_index(xy: torch.Tensor, h: int, w: int, W: int) -> torch.Tensor:
    """Flat pixel indices ``[N, h*w]`` of each candidate's box (top-left ``xy[n] = (x, y)``)."""
    dev = xy.device
    rows = xy[:, 1:2] + torch.arange(h, device=dev)  # [N, h]
    cols = xy[:, 0:1] + torch.arange(w, device=dev)  # [N, w]
    return (rows[:, :, None] * W + cols[:, None, :]).reshape(xy.shape[0], h * w)


def render_candidates(
    images: torch.Tensor,
    logo_rgba: torch.Tensor,
    index: torch.Tensor,
    xy: torch.Tensor,
    opacity: torch.Tensor,
    *,
    quantize: bool = False,
) -> torch.Tensor:
    """Render ``N`` candidates, candidate ``n`` being ``images[index[n]]`` with the logo at ``xy[n]``.

    Args:
        images: float ``[B, 3, H, W]`` in ``[0, 1]``.
        logo_rgba: float ``[4, h, w]`` in ``[0, 1]``, the already-resized logo, or
            ``[N, 4, h, w]``: one logo per candidate.
        index: long ``[N]``, which image each candidate is drawn on.
        xy: long ``[N, 2]`` top-left ``(x, y)``; the caller guarantees
            ``0 <= x <= W - w`` and ``0 <= y <= H - h`` (see ``feasible.py``).
        opacity: ``[N]`` on the 0..255 scale.
        quantize: round like :func:`render_exact` (inputs must be ``uint8 / 255``).

    Returns:
        float ``[N, 3, H, W]``; differentiable in ``images`` and ``logo_rgba`` when
        ``quantize`` is False.
    """
    _, C, H, W = images.shape
    h, w = logo_rgba.shape[-2:]
    N = index.shape[0]
    out = images.index_select(0, index).reshape(N, C, H * W)
    lin = _patch_index(xy.long(), h, w, W)[:, None, :].expand(N, C, h * w)
    patch = out.gather(2, lin)
    rows = N if logo_rgba.dim() == 4 else 1
    rgb = logo_rgba[..., :3, :, :].reshape(rows, 3, h * w)
    alpha = logo_rgba[..., 3, :, :].reshape(rows, 1, h * w)
    if quantize:
        u = torch.round(patch * 255.0).to(torch.int32)
        lg = torch.round(rgb * 255.0).to(torch.int32)
        a = torch.round(alpha * 255.0).to(torch.int32) * torch.round(opacity.float()).to(torch.int32).view(N, 1, 1)
        q = torch.div(u * (FULL - a) + lg * a + _HALF, FULL, rounding_mode="floor")
        new = q.to(images.dtype) / 255.0
    else:
        wt = alpha * (opacity.to(images.dtype).view(N, 1, 1) / 255.0)
        new = patch + wt * (rgb.to(images.dtype) - patch)
    return out.scatter(2, lin, new).reshape(N, C, H, W)


def _grid_index(B: int, K: int, device: torch.device) -> torch.Tensor:
    return torch.arange(B, device=device).repeat_interleave(K)


def render_batch(
    images: torch.Tensor,
    logo_rgba: torch.Tensor,
    xy: torch.Tensor,
    opacity: torch.Tensor,
    *,
    quantize: bool = False,
) -> torch.Tensor:
    """Render ``K`` integer placements on each of ``B`` images: ``[B, K, 3, H, W]``.

    ``quantize=True`` equals ``render_exact(...) / 255`` exactly (for ``uint8 / 255``
    images and logo); otherwise it equals it up to the final rounding.
    """
    B, K = xy.shape[:2]
    _, C, H, W = images.shape
    index = _grid_index(B, K, images.device)
    out = render_candidates(images, logo_rgba, index, xy.reshape(B * K, 2), opacity.reshape(B * K), quantize=quantize)
    return out.view(B, K, C, H, W)


def render_soft(
    images: torch.Tensor,
    logo_rgba: torch.Tensor,
    xy: torch.Tensor,
    opacity: torch.Tensor,
) -> torch.Tensor:
    """Differentiable render at continuous top-left ``xy`` ``[B, K, 2]`` and opacity ``[B, K]`` (0..255).

    The premultiplied logo is shifted by the fractional part of ``xy`` with
    bilinear weights (a ``(h+1) x (w+1)`` window at ``floor(xy)``), so gradients
    reach ``xy`` and ``opacity``. At integer ``xy`` it equals
    :func:`render_batch` (``quantize=False``) up to float rounding. ``xy`` is
    clamped to the valid range ``[0, W-w] x [0, H-h]``.

    Returns:
        float ``[B, K, 3, H, W]``.
    """
    B, K = xy.shape[:2]
    _, C, H, W = images.shape
    _, h, w = logo_rgba.shape
    N = B * K
    dt = images.dtype
    xy = xy.reshape(N, 2).to(dt)
    hi = torch.tensor([W - w, H - h], device=xy.device, dtype=dt)
    xy = torch.minimum(torch.clamp(xy, min=0.0), hi)
    base = torch.floor(xy.detach())
    frac = xy - base  # in [0, 1), carries the gradient
    fx = frac[:, 0].view(N, 1, 1, 1)
    fy = frac[:, 1].view(N, 1, 1, 1)
    premul = torch.cat([logo_rgba[:3] * logo_rgba[3:4], logo_rgba[3:4]], 0).to(dt)
    P = torch.nn.functional.pad(premul, (1, 1, 1, 1))  # [4, h+2, w+2]
    t00, t01 = P[:, 1:, 1:], P[:, 1:, :-1]  # L[i, j], L[i, j-1]
    t10, t11 = P[:, :-1, 1:], P[:, :-1, :-1]  # L[i-1, j], L[i-1, j-1]
    win = (1 - fy) * ((1 - fx) * t00 + fx * t01) + fy * ((1 - fx) * t10 + fx * t11)  # [N, 4, h+1, w+1]
    o = (opacity.reshape(N).to(dt) / 255.0).view(N, 1, 1)
    color = win[:, :3].reshape(N, 3, -1) * o
    cover = win[:, 3:].reshape(N, 1, -1) * o
    padded = torch.nn.functional.pad(images, (0, 1, 0, 1))  # room for the extra window row/col
    Wp = W + 1
    index = _grid_index(B, K, images.device)
    canvas = padded.index_select(0, index).reshape(N, C, (H + 1) * Wp)
    lin = _patch_index(base.long(), h + 1, w + 1, Wp)[:, None, :].expand(N, C, (h + 1) * (w + 1))
    patch = canvas.gather(2, lin)
    new = patch * (1 - cover) + color
    out = canvas.scatter(2, lin, new).reshape(N, C, H + 1, Wp)[:, :, :H, :W]
    return out.reshape(B, K, C, H, W)
