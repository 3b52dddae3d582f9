"""The adversarial layer: a low-amplitude, low-frequency change outside the logo and the lesions.

The logo alone carries no effect once it is painted over, so a protection may add a
*layer*: one signed integer offset per channel at the nodes of a coarse grid (every
``cell`` px), interpolated bilinearly to every pixel by an exact integer rule and added
to the image where its *mask* allows (inside the field of view, off every lesion box and
its margin, off the logo box)::

    i, a = divmod(y, cell); j, b = divmod(x, cell)
    s = G[i,j](c-a)(c-b) + G[i+1,j] a (c-b) + G[i,j+1] (c-a) b + G[i+1,j+1] a b      (c = cell)
    d = floor((s + c*c // 2) / (c*c))                         # round half up, integers only
    out = clip(image + d * mask, 0, 255)

:func:`layer_offsets` is that rule in numpy (int64); :func:`layer_offsets_torch` its batched
twin (float64 matmuls of small integers are exact, so ``exact=True`` gives the same
integers; ``exact=False`` is the differentiable float interpolation the optimiser uses).
A :class:`Layer` (cell, grid, mask) is a watermark parameter: the packer commits to its
:meth:`Layer.to_bytes` and seals it in the restoration payload, where the licensee
subtracts it again (pixels the clip changed are carried as exceptions).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Layer", "grid_shape", "layer_offsets", "layer_offsets_torch", "apply_layer", "layer_exceptions",
           "remove_layer", "fill_box"]

_HEADER = struct.Struct(">4sBBHHHII")  # magic, version, reserved, cell, gh, gw, H, W
_MAGIC = b"MLAY"
_VERSION = 1


def grid_shape(h: int, w: int, cell: int) -> tuple[int, int]:
    """Grid nodes ``(gh, gw)`` covering an ``h x w`` image: node ``i`` sits at pixel row ``i * cell``."""
    if cell < 1 or h < 1 or w < 1:
        raise ValueError(f"need cell >= 1 and a non-empty image, got cell {cell} for {h}x{w}")
    return (h - 1) // cell + 2, (w - 1) // cell + 2


def _weights(n: int, cell: int) -> np.ndarray:
    """``[n, g]`` int64: row ``y`` has ``cell - a`` at node ``y // cell`` and ``a`` at the next (``a = y % cell``)."""
    g = (n - 1) // cell + 2
    y = np.arange(n)
    i, a = np.divmod(y, cell)
    w = np.zeros((n, g), dtype=np.int64)
    w[y, i] = cell - a
    w[y, i + 1] = a
    return w


def layer_offsets(grid: np.ndarray, cell: int, h: int, w: int) -> np.ndarray:
    """The exact integer offsets ``int64 [h, w, 3]`` of an integer ``grid`` ``[3, gh, gw]``."""
    gh, gw = grid_shape(h, w, cell)
    if grid.shape != (3, gh, gw):
        raise ValueError(f"a layer grid for {h}x{w} at cell {cell} has shape {(3, gh, gw)}, got {grid.shape}")
    wy, wx = _weights(h, cell), _weights(w, cell)
    s = np.einsum("yi,cij,xj->yxc", wy, grid.astype(np.int64), wx)
    return np.floor_divide(s + (cell * cell) // 2, cell * cell)


def layer_offsets_torch(grid: torch.Tensor, cell: int, h: int, w: int, *, exact: bool) -> torch.Tensor:
    """Batched twin of :func:`layer_offsets`: ``grid`` ``[N, 3, gh, gw]`` -> ``[N, 3, h, w]``.

    ``exact=True`` (integer-valued grid): the same integers as :func:`layer_offsets`, as float.
    ``exact=False``: the bilinear interpolation ``s / cell**2`` without rounding, differentiable in ``grid``.
    """
    dt = torch.float64 if exact else grid.dtype
    wy = torch.from_numpy(_weights(h, cell)).to(device=grid.device, dtype=dt)
    wx = torch.from_numpy(_weights(w, cell)).to(device=grid.device, dtype=dt)
    s = torch.einsum("yi,ncij,xj->ncyx", wy, grid.to(dt), wx)
    if exact:
        return torch.floor((s + (cell * cell) // 2) / (cell * cell)).to(grid.dtype)
    return s / (cell * cell)


@dataclass(frozen=True, eq=False)
class Layer:
    """One image's layer: ``cell``, an ``int8 [3, gh, gw]`` grid and the ``bool [H, W]`` mask it may change."""

    cell: int
    grid: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        if self.mask.dtype != np.bool_ or self.mask.ndim != 2:
            raise ValueError(f"a layer mask is bool [H, W], got {self.mask.dtype} {self.mask.shape}")
        if self.grid.dtype != np.int8 or self.grid.shape != (3, *grid_shape(*self.mask.shape, self.cell)):
            raise ValueError(f"a layer grid is int8 {(3, *grid_shape(*self.mask.shape, self.cell))}, got "
                             f"{self.grid.dtype} {self.grid.shape}")

    def offsets(self) -> np.ndarray:
        """``int64 [H, W, 3]``: the change before clipping (zero outside the mask)."""
        return layer_offsets(self.grid, self.cell, *self.mask.shape) * self.mask[..., None]

    def to_bytes(self) -> bytes:
        """Canonical encoding (what the commitment and the restoration payload carry)::

            "MLAY" | version 1 | 0 | cell u16 | gh u16 | gw u16 | H u32 | W u32   (big-endian)
            grid int8 [3, gh, gw] C order | zlib(packbits(mask, C order))
        """
        h, w = self.mask.shape
        _, gh, gw = self.grid.shape
        return (_HEADER.pack(_MAGIC, _VERSION, 0, self.cell, gh, gw, h, w) + self.grid.tobytes()
                + zlib.compress(np.packbits(self.mask).tobytes(), 9))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> tuple[Layer, int]:
        """Parse :meth:`to_bytes` at the start of ``data``; returns the layer and the bytes it used.

        Raises:
            ValueError: malformed (callers wrap it in their own format error).
        """
        data = memoryview(data)
        if len(data) < _HEADER.size:
            raise ValueError("layer is truncated")
        magic, version, zero, cell, gh, gw, h, w = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION or zero != 0 or cell < 1 or not h or not w:
            raise ValueError("layer header is malformed or of an unknown version")
        if (gh, gw) != grid_shape(h, w, cell) or h * w > 1 << 28:
            raise ValueError("layer grid does not fit its image")
        n = 3 * gh * gw
        end = _HEADER.size + n
        if len(data) < end:
            raise ValueError("layer grid is truncated")
        grid = np.frombuffer(data[_HEADER.size:end], dtype=np.int8).reshape(3, gh, gw).copy()
        d = zlib.decompressobj()
        bits_len = (h * w + 7) // 8
        try:
            bits = d.decompress(data[end:], bits_len + 1)
        except zlib.error as exc:
            raise ValueError(f"layer mask is corrupt: {exc}") from None
        if len(bits) != bits_len or not d.eof:
            raise ValueError("layer mask has the wrong length")
        used = len(data) - len(d.unused_data) - len(d.unconsumed_tail)
        mask = np.unpackbits(np.frombuffer(bits, np.uint8), count=h * w).reshape(h, w).astype(bool)
        return cls(int(cell), grid, mask), used


def apply_layer(image: np.ndarray, layer: Layer) -> np.ndarray:
    """``clip(image + offsets, 0, 255)`` as ``uint8`` (unchanged outside the mask)."""
    if image.shape[:2] != layer.mask.shape:
        raise ValueError(f"layer is for a {layer.mask.shape} image, got {image.shape[:2]}")
    return np.clip(image.astype(np.int64) + layer.offsets(), 0, 255).astype(np.uint8)


def layer_exceptions(original: np.ndarray, layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """Where the clip lost information: flat indices into ``original`` (C order, uint32) and their values."""
    raw = original.astype(np.int64) + layer.offsets()
    lost = ((raw < 0) | (raw > 255)).reshape(-1)
    idx = np.flatnonzero(lost).astype(np.uint32)
    return idx, original.reshape(-1)[idx].astype(np.uint8)


def remove_layer(published: np.ndarray, layer: Layer, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`apply_layer` given its :func:`layer_exceptions`: the exact original pixels."""
    out = (published.astype(np.int64) - layer.offsets())
    flat = out.reshape(-1)
    flat[index.astype(np.int64)] = values
    if flat.min(initial=0) < 0 or flat.max(initial=0) > 255:
        raise ValueError("layer does not match these pixels")
    return out.astype(np.uint8)


def fill_box(x: torch.Tensor, xy: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """Each image's ``w x h`` box at ``xy[n]`` filled from its surroundings (differentiable).

    A diffusion fill: the box starts at the mean of the rest of the image and is replaced ``max(w, h)``
    times by the 3x3 average of itself and its border, the way inpainting propagates the
    surroundings inwards. It stands in for a remover that paints the logo over, so an
    objective that includes it rewards what survives outside the box.
    """
    N, _, H, W = x.shape
    ys = torch.arange(H, device=x.device).view(1, H, 1)
    xs = torch.arange(W, device=x.device).view(1, 1, W)
    x0, y0 = xy[:, 0].view(N, 1, 1), xy[:, 1].view(N, 1, 1)
    m = ((ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)).unsqueeze(1).to(x.dtype)
    keep = x * (1 - m)
    mean = keep.sum(dim=(2, 3), keepdim=True) / (1 - m).sum(dim=(2, 3), keepdim=True).clamp(min=1)
    z = keep + mean * m  # the box's own pixels never reach the fill
    for _ in range(max(w, h)):
        z = keep + torch.nn.functional.avg_pool2d(z, 3, stride=1, padding=1, count_include_pad=False) * m
    return z
