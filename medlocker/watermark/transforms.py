"""Expectation over transformation (EOT): the views a watermark must survive.

Each view maps float ``[N, 3, H, W]`` in ``[0, 1]`` to the same shape and is
differentiable (JPEG through a straight-through estimator: the forward pass is
a real JPEG round trip, the backward pass the identity). Views are
deterministic, so a loss value is reproducible. Names:

``identity``, ``resize0.5`` (down x0.5 then back up; any factor ``resize<f>``),
``blur`` (Gaussian, sigma 1), ``median3`` (3x3 median), ``crop`` (central 90 %
crop resized back), ``jpeg<q>`` (quality ``q``, e.g. ``jpeg75``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["View", "get_view", "VIEW_NAMES", "diverse"]

View = Callable[[torch.Tensor], torch.Tensor]
VIEW_NAMES = ("identity", "resize<f>", "blur", "median3", "crop", "jpeg<q>")


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Down-sample by ``factor`` (antialiased) and back up: what a re-scaled copy keeps."""
    H, W = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(H * factor)), max(1, round(W * factor))),
                          mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return (k / k.sum()).to(dtype=dtype, device=device)


def blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding."""
    k = _gaussian_kernel(sigma, x.dtype, x.device)
    r = k.numel() // 2
    C = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def median3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median filter (unfold + median; gradient flows to the median pixel)."""
    N, C, H, W = x.shape
    patches = F.unfold(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel_size=3)  # [N, C*9, H*W]
    return patches.view(N, C, 9, H * W).median(dim=2).values.view(N, C, H, W)


def crop(x: torch.Tensor, keep: float = 0.9) -> torch.Tensor:
    """Central crop keeping ``keep`` of each side, resized back to the full size."""
    H, W = x.shape[-2:]
    ch, cw = max(1, round(H * keep)), max(1, round(W * keep))
    y0, x0 = (H - ch) // 2, (W - cw) // 2
    return F.interpolate(x[..., y0:y0 + ch, x0:x0 + cw], size=(H, W), mode="bilinear", align_corners=False, antialias=True)


def _jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG encode/decode of each image -> float in [0, 1].

    On CUDA the batch goes through nvJPEG (``torchvision.io``) without leaving the
    device; on CPU (or if nvJPEG is unavailable) through PIL/libjpeg.
    """
    q8 = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8)
    if q8.is_cuda:
        try:
            from torchvision.io import decode_jpeg, encode_jpeg

            data = [d.cpu() for d in encode_jpeg(list(q8), quality=quality)]  # the decoder reads bytes from host
            dec = decode_jpeg(data, device=q8.device)
            return torch.stack(dec).to(x.dtype) / 255.0
        except (RuntimeError, TypeError):  # older torchvision: CPU codec below
            pass
    u8 = q8.permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(u8)
    for i, img in enumerate(u8):  # codec calls are per image by nature
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).to(x.dtype) / 255.0


class _StraightThroughJPEG(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, quality: int) -> torch.Tensor:  # type: ignore[override]
        return _jpeg_roundtrip(x, quality)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def jpeg(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """JPEG at ``quality``; backward is the identity (straight-through)."""
    return _StraightThroughJPEG.apply(x, quality)


def diverse(x: torch.Tensor, step: int, strength: float) -> torch.Tensor:
    """Input diversity (Xie et al., 2019): ``x`` shrunk by a factor in ``[1 - strength, 1]`` and
    zero-padded back to its size at an offset, both drawn from ``step`` alone.

    Every row of a batch gets the same draw at the same step, so a result does not depend
    on which images share a batch; a different draw each step keeps an iterative attack
    from fitting the surrogates at one exact scale and alignment, which is what makes its
    perturbation transfer to other models. Zero padding is the fundus's black surround.
    ``strength`` 0: ``x`` itself.
    """
    if strength <= 0:
        return x
    g = torch.Generator().manual_seed(0x6D6C_0D1 + int(step))
    H, W = x.shape[-2:]
    s = 1.0 - float(strength) * float(torch.rand((), generator=g))
    h, w = max(1, round(H * s)), max(1, round(W * s))
    dy = int(torch.randint(0, H - h + 1, (), generator=g))
    dx = int(torch.randint(0, W - w + 1, (), generator=g))
    small = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(small, (dx, W - w - dx, dy, H - h - dy))


def get_view(name: str) -> View:
    """The view function for a name such as ``"jpeg75"`` or ``"resize0.5"``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    fixed: dict[str, View] = {"identity": identity, "blur": blur, "median3": median3, "crop": crop}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"jpeg(\d{1,3})", name)
    if m and 1 <= int(m.group(1)) <= 100:
        q = int(m.group(1))
        return lambda x: jpeg(x, q)
    m = re.fullmatch(r"resize(0?\.\d+)", name)
    if m and 0.0 < float(m.group(1)) < 1.0:
        f = float(m.group(1))
        return lambda x: resize(x, f)
    raise ValueError(f"unknown EOT view {name!r}; valid: {', '.join(VIEW_NAMES)} "
                     "(e.g. 'jpeg75', 'resize0.5')")
