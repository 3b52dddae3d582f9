"""A learned remover the attacker trains themselves, in the spirit of WDNet and SLBR.

SLBR (Liang et al., ACM MM 2021) and WDNet (Liu et al., WACV 2021) train an
encoder-decoder on images with watermarks pasted on them: one branch predicts
the watermark's mask, another the background under it, the two are composited
(``mask * background + (1 - mask) * input``) and a refinement stage cleans the
composite. :class:`Remover` is that shape at toy size -- a shared 3-level U-Net
encoder, one decoder with a mask head and a background head, and a small
refinement block fed the composite and the mask -- small enough to train in a
few CPU minutes on 64-128 px crops.

The attacker's training data is free: any clean fundus photographs (the
report uses training images never evaluated) with the *public* logo pasted at
random places, sizes (1 % to 6.25 % of the image), rotations and opacities, its
colours jittered half the time (:func:`paste_logo`). The remover is fully
convolutional: trained on crops, it runs on whole images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medlocker.report.attacks.locate import warp_logo
from medlocker.report.metrics import check_image, psnr
from medlocker.watermark.logo import MAX_LOGO_SCALE, logo_size

__all__ = ["Remover", "RemoverConfig", "paste_logo", "remove_learned", "remover_loss", "remover_psnr", "train_remover"]


@dataclass(frozen=True)
class RemoverConfig:
    """How the attacker trains the remover.

    Attributes:
        steps: Adam steps.
        batch_size: crops per step.
        crop: crop side in px (trained on crops, applied to whole images).
        width: channels of the first encoder level (then x2, x4).
        lr: Adam learning rate.
        mask_weight: weight of the mask's binary cross-entropy next to the L1 of the output.
        seed: pastes, crops and initialisation.
    """

    steps: int = 400
    batch_size: int = 8
    crop: int = 96
    width: int = 16
    lr: float = 2e-3
    mask_weight: float = 0.5
    seed: int = 0


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class Remover(nn.Module):
    """Mask + background U-Net with a refinement block; float RGB ``[B, 3, H, W]`` in ``[0, 1]`` in and out."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc = nn.ModuleList([_block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w)])
        self.mid = _block(4 * w, 4 * w)
        self.up = nn.ModuleList([_block(8 * w, 2 * w), _block(4 * w, w), _block(2 * w, w)])
        self.mask_head = nn.Conv2d(w, 1, 1)
        self.background_head = nn.Conv2d(w, 3, 1)
        self.refine = nn.Sequential(_block(4, w), nn.Conv2d(w, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(restored image, mask logits)``; sides must be multiples of 8."""
        skips, h = [], x
        for enc in self.enc:
            h = enc(h)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.mid(h)
        for up, skip in zip(self.up, reversed(skips)):
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        logits = self.mask_head(h)
        m = torch.sigmoid(logits)
        composite = m * torch.sigmoid(self.background_head(h)) + (1 - m) * x
        refined = composite + m * self.refine(torch.cat([composite, m], 1))  # refine only where the mark is
        return refined.clamp(0, 1), logits


def paste_logo(
    img: np.ndarray, logo: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """``img`` with the logo pasted at a random place, size, rotation and opacity (colours jittered half the time).

    Returns:
        ``(pasted uint8 [H, W, 3], mask bool [H, W] where the logo changed the blend, box)``.
    """
    img = check_image(img)
    h, w = img.shape[:2]
    size = logo_size(logo, (h, w), scale=float(rng.uniform(0.01, MAX_LOGO_SCALE)))
    angle = 0.0 if rng.random() < 0.5 else float(rng.uniform(-180, 180))
    tpl = warp_logo(logo, size, angle).astype(np.float64)
    if rng.random() < 0.5:  # a recoloured (textured) logo: the attacker does not trust the public colours
        cells = rng.normal(0, 60, size=(4, 4, 3))
        jitter = np.stack([np.kron(cells[..., c], np.ones((math.ceil(tpl.shape[0] / 4), math.ceil(tpl.shape[1] / 4))))
                           [: tpl.shape[0], : tpl.shape[1]] for c in range(3)], axis=-1)
        tpl[..., :3] = np.clip(tpl[..., :3] + jitter, 0, 255)
    th, tw = min(tpl.shape[0], h), min(tpl.shape[1], w)
    x, y = int(rng.integers(0, w - tw + 1)), int(rng.integers(0, h - th + 1))
    a = tpl[:th, :tw, 3:] / 255.0 * float(rng.uniform(0.3, 1.0))
    out = img.astype(np.float64)
    out[y : y + th, x : x + tw] = (1 - a) * out[y : y + th, x : x + tw] + a * tpl[:th, :tw, :3]
    mask = np.zeros((h, w), bool)
    mask[y : y + th, x : x + tw] = a[..., 0] > 0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), mask, (x, y, x + tw, y + th)


def _crop_batch(
    images: np.ndarray, logo: np.ndarray, rng: np.random.Generator, n: int, crop: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ys, ms = [], [], []
    for _ in range(n):
        clean = images[int(rng.integers(len(images)))]
        pasted, mask, (x0, y0, x1, y1) = paste_logo(clean, logo, rng)
        h, w = clean.shape[:2]
        c = min(crop, h, w)
        cx, cy = (x0 + x1) // 2 + int(rng.integers(-c // 4, c // 4 + 1)), (y0 + y1) // 2 + int(rng.integers(-c // 4, c // 4 + 1))
        left, top = int(np.clip(cx - c // 2, 0, w - c)), int(np.clip(cy - c // 2, 0, h - c))
        sl = np.s_[top : top + c, left : left + c]
        xs.append(pasted[sl])
        ys.append(clean[sl])
        ms.append(mask[sl])
    def t(a: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float().div(255)
    return t(xs), t(ys), torch.from_numpy(np.stack(ms)).float()[:, None]


def remover_loss(model: Remover, x: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, *,
                 mask_weight: float = 0.5) -> torch.Tensor:
    """L1 of the restored image against the clean one plus ``mask_weight`` x the mask's binary cross-entropy."""
    out, logits = model(x)
    return F.l1_loss(out, clean) + mask_weight * F.binary_cross_entropy_with_logits(logits, mask)


def train_remover(
    clean: np.ndarray,
    logo: np.ndarray,
    *,
    config: RemoverConfig = RemoverConfig(),
    device: str | torch.device = "cpu",
) -> tuple[Remover, list[float]]:
    """Train a :class:`Remover` on ``clean`` uint8 ``[N, H, W, 3]`` images with the public logo pasted on them.

    Returns:
        ``(remover in eval mode, per-step training loss)``.
    """
    if len(clean) == 0:
        raise ValueError("train_remover needs clean images")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)  # the remover's own initialisation; the attacker's run, not the library's state
    model = Remover(config.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    crop = config.crop - config.crop % 8
    losses: list[float] = []
    model.train()
    for _ in range(config.steps):
        x, y, m = (t.to(device) for t in _crop_batch(clean, logo, rng, config.batch_size, crop))
        loss = remover_loss(model, x, y, m, mask_weight=config.mask_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, losses


@torch.no_grad()
def remove_learned(model: Remover, img: np.ndarray) -> np.ndarray:
    """Run the remover on one whole uint8 ``[H, W, 3]`` image (padded to a multiple of 8 by reflection)."""
    img = check_image(img)
    h, w = img.shape[:2]
    p = next(model.parameters())
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(p.device)
    x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode="reflect")
    training = model.training
    model.eval()
    out, _ = model(x)
    model.train(training)
    return out[0, :, :h, :w].mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def remover_psnr(model: Remover, clean: Sequence[np.ndarray], logo: np.ndarray, *, seed: int = 1) -> dict[str, float]:
    """Median PSNR (dB) inside the pasted logo's box on held-out pasted images: before and after the remover."""
    rng = np.random.default_rng(seed)
    before, after = [], []
    for img in clean:
        pasted, _, (x0, y0, x1, y1) = paste_logo(img, logo, rng)
        box = np.zeros(img.shape[:2], bool)
        box[y0:y1, x0:x1] = True
        before.append(psnr(pasted, img, box))
        after.append(psnr(remove_learned(model, pasted), img, box))
    return {"n": len(before), "pasted_db": float(np.median(before)), "removed_db": float(np.median(after))}
