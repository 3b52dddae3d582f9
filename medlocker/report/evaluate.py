"""The evaluation core: arrays and records in, a report and its figures out.

:func:`evaluate` knows nothing of shards, owner secrets or training: the caller
(the end-to-end pipeline in :mod:`medlocker.report.pipeline`, or a packed-dataset
reader) hands it the original and protected pixels, the placements, the query
counts and the models, and gets back a plain-JSON-able report dict plus PNG
figures for :func:`medlocker.report.html.write_report`.

Sections of the report (all accuracies are fractions in ``[0, 1]``):

* ``models``: per model clean accuracy, protected accuracy, attack success rate
  and role -- *white-box* if it was a surrogate in the search, else *black-box*.
* ``robustness``: each model's accuracy on protected images after each
  transform of :mod:`~medlocker.report.robustness`, and on clean images after
  the same transform for reference.
* ``removal``: accuracy after each logo-removal attack of
  :mod:`~medlocker.report.removal` and the attacker's PSNR inside the true logo
  box; the licensed path (exact restoration) for comparison.
* ``quality``: PSNR and SSIM of protected vs original, whole image and
  lesion-free region; PSNR outside the logo box (what an adversarial layer
  costs); lesion pixels changed; logo area and opacity.
* ``cost``: model queries per image, wall time per image, device.
* ``suite``: the attacker suite (:mod:`medlocker.report.attacks`): every
  model's accuracy after every attack, the held-out mean per attack, the worst
  case over the suite (the oracle excluded) and the oracle box separately, how
  often template matching found the logo box (IoU >= 0.5) and the attacker's
  PSNR inside the true box;
* ``headline``: white-box accuracy (mean over surrogates), black-box accuracy
  (mean over held-out models), robust accuracy (mean over models of the
  accuracy after jpeg75, resize0.5 and median3), next to the paper's numbers.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from medlocker.report import figures as fig
from medlocker.report.attacks import SUITE, Attacker, attack, box_iou, locate_logo, worst_case_names
from medlocker.report.metrics import (
    accuracy,
    attack_success_rate,
    box_area_fraction,
    boxes_to_mask,
    lesion_pixels_changed,
    predict,
    psnr,
    ssim,
    summarize,
)
from medlocker.report.removal import ATTACKS, BlendEstimate, attacker_psnr, estimate_blend, remove
from medlocker.report.robustness import HEADLINE_TRANSFORMS, TRANSFORMS, apply_batch

__all__ = ["EvalOptions", "PAPER", "TARGETS", "REPORT_FORMAT", "evaluate"]

log = logging.getLogger(__name__)

REPORT_FORMAT = {"name": "medlocker-report", "version": 1}

PAPER = {
    "source": "MIAD-MARK (MedLocker, arXiv 2303.09858 v3)",
    "white_box_acc": 0.0857,
    "black_box_acc": 0.4583,
}
"""The paper's reported accuracies of diagnostic models on protected images."""

TARGETS = {
    "white_box_acc": 0.02,
    "black_box_acc": 0.25,
    "robust_acc": 0.30,
    "worst_case_acc": 0.30,
    "oracle_acc": 0.35,
    "queries_median": 50,
    "lesion_pixels_changed": 0,
}
"""MedLocker's own targets (DESIGN.md, "Numbers the project is measured by")."""


_Accs = Callable[[np.ndarray], tuple[dict[str, float], dict[str, np.ndarray]]]


class _HasBox(Protocol):
    opacity: int

    @property
    def box(self) -> tuple[int, int, int, int]: ...


@dataclass(frozen=True)
class EvalOptions:
    """What :func:`evaluate` measures and how.

    Attributes:
        transforms: names from :data:`~medlocker.report.robustness.TRANSFORMS`.
        attacks: names from :data:`~medlocker.report.removal.ATTACKS` (the older
            removal section; the suite below is the headline).
        suite: attacks of the attacker suite, names from
            :data:`~medlocker.report.attacks.SUITE`.
        batch_size: images per model forward pass.
        grid_per_grade: sample rows per grade in the figure grid.
        title: report title.
        meta: free-form run description copied into ``report["meta"]`` (config,
            architectures, seeds).
        prediction_cache: optional dict shared between :func:`evaluate` calls on
            the same models (e.g. several search configurations of one run):
            predictions are memoized by model name and the SHA-256 of the image
            batch, so the clean and clean-after-transform passes run once.
    """

    transforms: tuple[str, ...] = tuple(TRANSFORMS)
    attacks: tuple[str, ...] = ATTACKS
    suite: tuple[str, ...] = tuple(SUITE)
    batch_size: int = 32
    grid_per_grade: int = 2
    title: str = "MedLocker evaluation"
    meta: Mapping[str, Any] = field(default_factory=dict)
    prediction_cache: dict[tuple[str, str], np.ndarray] | None = field(default=None, compare=False, repr=False)


def evaluate(
    *,
    originals: np.ndarray,
    protected: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    lesion_boxes: Sequence[Sequence[Sequence[int]]],
    placements: Sequence[_HasBox | None],
    queries: Sequence[int],
    models: Mapping[str, nn.Module],
    surrogates: set[str] | frozenset[str],
    logo: np.ndarray,
    synthetic: bool,
    grades: Sequence[int] | None = None,
    restored: np.ndarray | None = None,
    transfer_matrix: Mapping[str, Mapping[str, float]] | None = None,
    wall_time_s: float | None = None,
    device: str | torch.device = "cpu",
    options: EvalOptions = EvalOptions(),
    attacker: Attacker | None = None,
    attacker_models: Mapping[str, Mapping[str, nn.Module]] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Measure a protected image set against the models and build the report.

    Args:
        originals: uint8 ``[N, H, W, 3]`` source pixels.
        protected: uint8 ``[N, H, W, 3]`` published (watermarked) pixels.
        labels: ``[N]`` true class indices.
        lesion_boxes: per image, its lesion boxes ``(x0, y0, x1, y1)`` (the WSM).
        placements: per image, its :class:`~medlocker.watermark.Placement`
            (anything with ``.box`` and an integer ``.opacity`` in 1..255), or
            None where no logo was placed.
        queries: per image, the model queries the search spent.
        models: name -> classifier taking float RGB ``[B, 3, H, W]`` in ``[0, 1]``.
        surrogates: names of the models used in the search (white-box); the
            other models are held out (black-box).
        logo: the public RGBA logo (the removal attacks know it).
        synthetic: whether the images are synthetic (the report says so).
        grades: per image, the row group of the figure grid (default: labels).
        restored: the licensee's restored pixels, if measured; otherwise the
            licensed row assumes bit-exact restoration (the report says so).
        transfer_matrix: source -> target model -> accuracy, for the heat map
            (for example one row per surrogate set); default: a clean row and
            a protected row.
        wall_time_s: wall time the protection took for these N images.
        device: where the models run.
        options: what to measure (:class:`EvalOptions`).
        attacker: what the suite's attacker holds (default: the public ``logo``
            and no learned remover, so ``learned_remover`` is skipped).
        attacker_models: preprocessing attack name -> model name -> the
            attacker's model of that architecture trained on clean images
            preprocessed that way; a model without one is measured as it is
            (the report says which).

    Returns:
        ``(report, figures)``: a dict of plain values (NaN where undefined;
        :func:`~medlocker.report.html.write_report` writes it as JSON without
        NaN) and PNG bytes by figure name.

    Raises:
        ValueError: inconsistent lengths or shapes, or unknown names.
    """
    originals, protected = np.asarray(originals), np.asarray(protected)
    labels = np.asarray(labels, dtype=np.int64).ravel()
    _check_inputs(originals, protected, labels, lesion_boxes, placements, queries, models, restored, options)
    d = _Data(
        originals=originals, protected=protected, labels=labels, lesion_boxes=list(lesion_boxes),
        placements=list(placements), boxes=[None if p is None else tuple(int(v) for v in p.box) for p in placements],
        grades=labels if grades is None else np.asarray(grades).ravel(),
    )
    surrogates = frozenset(surrogates)
    device = torch.device(device)
    licensed_images = originals if restored is None else np.asarray(restored)

    cache = options.prediction_cache

    def _predict(m: str, clf: nn.Module, images: np.ndarray) -> np.ndarray:
        if cache is None:
            return predict(clf, images, batch_size=options.batch_size, device=device)
        digest = hashlib.sha256(np.ascontiguousarray(images).data).hexdigest() + str(images.shape)
        if (m, digest) not in cache:
            cache[(m, digest)] = predict(clf, images, batch_size=options.batch_size, device=device)
        return cache[(m, digest)]

    with _on_device(models, device):
        def accs(images: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
            preds = {m: _predict(m, clf, images) for m, clf in models.items()}
            return {m: accuracy(p, labels) for m, p in preds.items()}, preds

        log.info("predicting clean and protected images (%d images, %d models)", d.n, len(models))
        clean_acc, clean_pred = accs(originals)
        prot_acc, prot_pred = accs(protected)
        robustness = _robustness(d, options.transforms, accs)
        removal, removed = _removal(d, logo, options.attacks, accs)
        suite = _suite(d, options.suite, attacker or Attacker(logo=logo), dict(attacker_models or {}), models,
                       surrogates, _predict, device)
        # without a measured restoration the licensed images are the originals: no second pass
        licensed_acc = clean_acc if restored is None else accs(licensed_images)[0]

    chance = float(np.unique(labels, return_counts=True)[1].max() / d.n)
    model_rows = {
        m: {
            "role": "white-box" if m in surrogates else "black-box",
            "arch": str(getattr(clf, "arch", m)),
            "clean_acc": clean_acc[m],
            "protected_acc": prot_acc[m],
            "asr": attack_success_rate(clean_pred[m], prot_pred[m], labels),
            "n_clean_correct": int((clean_pred[m] == labels).sum()),
            "near_chance": bool(clean_acc[m] <= chance + 0.05),
        }
        for m, clf in models.items()
    }
    for m in models:
        removal["accuracy"][m] = {"none": prot_acc[m], **removal["accuracy"].get(m, {}), "licensed": licensed_acc[m]}
    removal["licensed"] = _licensed(originals, licensed_images, assumed=restored is None)
    quality = _quality(d)
    q = np.asarray(queries, dtype=np.float64)
    cost = {
        "queries": summarize(q),
        "queries_total": float(q.sum()),
        "wall_time_s": None if wall_time_s is None else float(wall_time_s),
        "wall_time_per_image_s": None if wall_time_s is None else float(wall_time_s) / d.n,
        "device": str(device),
    }
    transfer = transfer_matrix or {
        "clean": dict(clean_acc),
        f"protected ({'+'.join(sorted(surrogates)) or 'no surrogate'})": dict(prot_acc),
    }
    report: dict[str, Any] = {
        "format": dict(REPORT_FORMAT),
        "title": options.title,
        "synthetic": bool(synthetic),
        "data": {
            "n_images": d.n,
            "image_size": [int(v) for v in originals.shape[1:3]],
            "label_counts": {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))},
            "n_with_logo": int(sum(b is not None for b in d.boxes)),
            "chance_acc": chance,
        },
        "meta": dict(options.meta),
        "headline": {**_headline(model_rows, robustness["protected"], quality, cost), **_suite_headline(suite)},
        "models": model_rows,
        "robustness": robustness,
        "removal": removal,
        "suite": suite,
        "quality": quality,
        "cost": cost,
        "transfer": {str(r): {str(c): float(v) for c, v in row.items()} for r, row in transfer.items()},
    }
    shown = next((m for m in models if m in surrogates), next(iter(models)))
    row_titles = [f"grade {d.grades[i]} (#{i})\n{shown}: {clean_pred[shown][i]} -> {prot_pred[shown][i]}"
                  for i in range(d.n)]
    figures = _figures(report, d, licensed_images, restored is None, removed, row_titles,
                       [float(v) for v in queries], options.grid_per_grade)
    return report, figures


@dataclass(frozen=True)
class _Data:
    """The per-image inputs of one evaluation, validated."""

    originals: np.ndarray
    protected: np.ndarray
    labels: np.ndarray
    lesion_boxes: list[Sequence[Sequence[int]]]
    placements: list[_HasBox | None]
    boxes: list[tuple[int, ...] | None]
    grades: np.ndarray

    @property
    def n(self) -> int:
        return len(self.originals)


def _check_inputs(
    originals: np.ndarray,
    protected: np.ndarray,
    labels: np.ndarray,
    lesion_boxes: Sequence[Any],
    placements: Sequence[Any],
    queries: Sequence[int],
    models: Mapping[str, nn.Module],
    restored: np.ndarray | None,
    options: EvalOptions,
) -> None:
    if originals.dtype != np.uint8 or originals.ndim != 4 or originals.shape[-1] != 3:
        raise ValueError(f"originals must be uint8 [N, H, W, 3], got {originals.dtype} {originals.shape}")
    if protected.shape != originals.shape or protected.dtype != np.uint8:
        raise ValueError(f"protected must match originals {originals.shape}, got {protected.dtype} {protected.shape}")
    if restored is not None and (restored.shape != originals.shape or restored.dtype != np.uint8):
        raise ValueError(f"restored must match originals {originals.shape}, got {restored.dtype} {restored.shape}")
    n = len(originals)
    lengths = {"labels": len(labels), "lesion_boxes": len(lesion_boxes), "placements": len(placements),
               "queries": len(queries)}
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise ValueError(f"{n} images but lengths {bad}")
    if n == 0 or not models:
        raise ValueError("evaluate needs at least one image and one model")
    unknown_t = [t for t in options.transforms if t not in TRANSFORMS]
    unknown_a = [a for a in options.attacks if a not in ATTACKS]
    unknown_s = [a for a in options.suite if a not in SUITE]
    if unknown_s:
        raise ValueError(f"unknown suite attacks {unknown_s}; the suite has: {', '.join(SUITE)}")
    if unknown_t or unknown_a:
        raise ValueError(f"unknown transforms {unknown_t} / attacks {unknown_a}; known: "
                         f"{', '.join(TRANSFORMS)} / {', '.join(ATTACKS)}")


class _on_device:
    """Move the models to ``device`` in eval mode for the block; restore device and mode after."""

    def __init__(self, models: Mapping[str, nn.Module], device: torch.device) -> None:
        self.models, self.device, self.saved = models, device, {}

    def __enter__(self) -> None:
        for name, clf in self.models.items():
            p = next(iter(clf.parameters()), None)
            self.saved[name] = (p.device if p is not None else None, clf.training)
            if p is not None and p.device != self.device:
                clf.to(self.device)

    def __exit__(self, *exc: object) -> None:
        for name, (dev, training) in self.saved.items():
            clf = self.models[name]
            if dev is not None and dev != self.device:
                clf.to(dev)
            clf.train(training)


def _robustness(d: _Data, transforms: Sequence[str], accs: _Accs) -> dict[str, Any]:
    prot: dict[str, dict[str, float]] = {}
    clean: dict[str, dict[str, float]] = {}
    for t in transforms:
        log.info("robustness: %s", t)
        for m, v in accs(apply_batch(t, d.protected))[0].items():
            prot.setdefault(m, {})[t] = v
        for m, v in accs(apply_batch(t, d.originals))[0].items():
            clean.setdefault(m, {})[t] = v
    return {"transforms": list(transforms), "protected": prot, "clean": clean}


def _removal(d: _Data, logo: np.ndarray, attacks: Sequence[str], accs: _Accs) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    estimates: list[BlendEstimate | None] = [None] * d.n
    if any(not a.endswith("_oracle") for a in attacks):
        log.info("removal: estimating logo box and opacity from the public images")
        estimates = [estimate_blend(img, logo) for img in d.protected]
    acc: dict[str, dict[str, float]] = {}
    psnrs: dict[str, dict[str, Any]] = {}
    removed: dict[str, np.ndarray] = {}
    marked = [i for i in range(d.n) if d.boxes[i] is not None]
    example = "inverse_blend" if "inverse_blend" in attacks else next(iter(attacks), None)
    for a in attacks:
        log.info("removal: %s", a)
        out = np.stack([
            remove(a, d.protected[i], logo, estimate=estimates[i], oracle_box=d.boxes[i],
                   oracle_opacity=None if d.placements[i] is None else int(d.placements[i].opacity))
            for i in range(d.n)
        ])
        for m, v in accs(out)[0].items():
            acc.setdefault(m, {})[a] = v
        psnrs[a] = summarize(attacker_psnr(out[i], d.originals[i], d.boxes[i]) for i in marked)
        if a == example:  # keep one attack's images for the figure, not all of them
            removed[a] = out
    estimate_quality = None
    if marked and estimates[0] is not None:
        right = [i for i in marked if estimates[i].box == d.boxes[i]]
        estimate_quality = {
            "n": len(marked),
            "box_exact_fraction": len(right) / len(marked),
            "box_iou": summarize(box_iou(estimates[i].box, d.boxes[i]) for i in marked),
            "opacity_abs_error": summarize(abs(estimates[i].opacity - int(d.placements[i].opacity)) for i in right),
        }
    return {
        "attacks": list(attacks),
        "accuracy": acc,
        "attacker_psnr": psnrs,
        "protected_psnr_in_box": summarize(attacker_psnr(d.protected[i], d.originals[i], d.boxes[i]) for i in marked),
        "estimate": estimate_quality,
    }, removed


def _suite(
    d: _Data,
    names: Sequence[str],
    attacker: Attacker,
    attacker_models: Mapping[str, Mapping[str, nn.Module]],
    models: Mapping[str, nn.Module],
    surrogates: frozenset[str],
    predict_fn: Callable[[str, nn.Module, np.ndarray], np.ndarray],
    device: torch.device,
) -> dict[str, Any]:
    """Every model against every attack of the suite; held-out means, the worst case and the oracle."""
    names = list(names)
    skipped: dict[str, str] = {}
    if "learned_remover" in names and attacker.remover is None:
        skipped["learned_remover"] = "no learned remover was given (Attacker.remover is None)"
        names.remove("learned_remover")
    marked = [i for i in range(d.n) if d.boxes[i] is not None]
    located: list[Any] = [None] * d.n
    if any(SUITE[n] == "removal" and n != "learned_remover" for n in names):
        log.info("suite: locating the logo by template matching (%d images)", d.n)
        located = [_locate_or_none(img, attacker.logo) for img in d.protected]
    acc: dict[str, dict[str, float]] = {m: {} for m in models}
    clean: dict[str, dict[str, float]] = {m: {} for m in models}
    psnrs: dict[str, dict[str, Any]] = {}
    own_models: dict[str, list[str]] = {}
    flat = {f"{m}@{p}": clf for p, ms in attacker_models.items() for m, clf in ms.items()}
    with _on_device(flat, device):
        for n in names:
            log.info("suite: %s", n)
            out = np.stack([attack(n, d.protected[i], attacker, located=located[i], true_box=d.boxes[i])
                            for i in range(d.n)])
            ref = None
            if SUITE[n] in ("preprocess", "purify"):  # the same kernel on clean images: the attacker's own baseline
                ref = np.stack([attack(n, o, attacker) for o in d.originals])
            own = attacker_models.get(n, {}) if SUITE[n] == "preprocess" else {}
            if own:
                own_models[n] = sorted(m for m in own if m in models)
            for m, clf in models.items():
                key, model = (f"{m}@{n}", own[m]) if m in own else (m, clf)
                acc[m][n] = accuracy(predict_fn(key, model, out), d.labels)
                if ref is not None:
                    clean[m][n] = accuracy(predict_fn(key, model, ref), d.labels)
            if SUITE[n] in ("removal", "oracle"):
                psnrs[n] = summarize(attacker_psnr(out[i], d.originals[i], d.boxes[i]) for i in marked)
    black = [m for m in models if m not in surrogates]
    pool = black or list(models)
    held_out = {n: float(np.mean([acc[m][n] for m in pool])) for n in names}
    counted = [n for n in worst_case_names(names) if n in held_out]
    worst = max(counted, key=lambda n: held_out[n]) if counted else None
    found = None
    if marked and any(located[i] is not None for i in marked):
        ious = [0.0 if located[i] is None else box_iou(located[i].box, d.boxes[i]) for i in marked]
        found = {"n": len(marked), "rate": float(np.mean([v >= 0.5 for v in ious])), "iou": summarize(ious)}
    return {
        "attacks": names,
        "kinds": {n: SUITE[n] for n in names},
        "skipped": skipped,
        "accuracy": acc,
        "clean_after_attack": {m: v for m, v in clean.items() if v},
        "held_out": held_out,
        "held_out_models": pool,
        "held_out_is_all_models": not black,
        "attacker_trained_models": own_models,
        "worst_case": None if worst is None else {"attack": worst, "acc": held_out[worst]},
        "oracle": None if "oracle_inpaint" not in held_out else {"attack": "oracle_inpaint",
                                                                 "acc": held_out["oracle_inpaint"]},
        "box_found": found,
        "attacker_psnr": psnrs,
        "remover": dict(attacker.remover_info),
    }


def _locate_or_none(img: np.ndarray, logo: np.ndarray) -> Any:
    try:
        return locate_logo(img, logo)
    except ValueError:  # the image is too small for any logo size of the pyramid
        return None


def _suite_headline(suite: Mapping[str, Any]) -> dict[str, Any]:
    worst, oracle, found = suite["worst_case"], suite["oracle"], suite["box_found"]
    return {
        "worst_case_acc": math.nan if worst is None else worst["acc"],
        "worst_case_attack": None if worst is None else worst["attack"],
        "oracle_acc": math.nan if oracle is None else oracle["acc"],
        "box_found_rate": math.nan if found is None else found["rate"],
    }


def _licensed(originals: np.ndarray, restored: np.ndarray, *, assumed: bool) -> dict[str, Any]:
    exact = [bool(np.array_equal(o, r)) for o, r in zip(originals, restored)]
    return {
        "assumed_exact": assumed,
        "exact_fraction": float(np.mean(exact)) if exact else math.nan,
        "psnr": summarize(psnr(r, o) for o, r in zip(originals, restored)),
    }


def _quality(d: _Data) -> dict[str, Any]:
    psnr_all, psnr_free, psnr_out, ssim_all, ssim_free, changed = [], [], [], [], [], []
    for o, p, lesions, box in zip(d.originals, d.protected, d.lesion_boxes, d.boxes):
        free = ~boxes_to_mask(lesions, o.shape)
        psnr_all.append(psnr(p, o))
        if box is not None:  # what the protection changed outside its mark (an adversarial layer)
            psnr_out.append(psnr(p, o, ~boxes_to_mask([box], o.shape)))
        psnr_free.append(psnr(p, o, free))
        ssim_all.append(ssim(p, o))
        ssim_free.append(ssim(p, o, free))
        changed.append(lesion_pixels_changed(o, p, lesions))
    return {
        "psnr": summarize(psnr_all),
        "psnr_lesion_free": summarize(psnr_free),
        "psnr_outside_logo": summarize(psnr_out),
        "ssim": summarize(ssim_all),
        "ssim_lesion_free": summarize(ssim_free),
        "lesion_pixels_changed": {
            "total": int(sum(changed)),
            "images_with_changes": int(sum(c > 0 for c in changed)),
            "max": int(max(changed, default=0)),
        },
        "logo_area_pct": summarize(_logo_area_pct(d)),
        "opacity": summarize(_opacities(d)),
        "n_without_logo": int(sum(b is None for b in d.boxes)),
    }


def _logo_area_pct(d: _Data) -> list[float]:
    return [100.0 * box_area_fraction(b, d.originals.shape[1:3]) for b in d.boxes if b is not None]


def _opacities(d: _Data) -> list[float]:
    """Opacity as a fraction of 255 (the renderer's scale)."""
    return [int(p.opacity) / 255.0 for p in d.placements if p is not None]


def _headline(
    model_rows: Mapping[str, Mapping[str, Any]],
    robust: Mapping[str, Mapping[str, float]],
    quality: Mapping[str, Any],
    cost: Mapping[str, Any],
) -> dict[str, Any]:
    white = [m for m, r in model_rows.items() if r["role"] == "white-box"]
    black = [m for m, r in model_rows.items() if r["role"] == "black-box"]

    def mean(values: Sequence[float]) -> float:
        v = [x for x in values if not math.isnan(x)]
        return float(np.mean(v)) if v else math.nan

    by_t = {t: mean([robust[m][t] for m in model_rows]) for t in HEADLINE_TRANSFORMS if all(t in robust[m] for m in model_rows)}
    return {
        "white_box_acc": mean([model_rows[m]["protected_acc"] for m in white]),
        "black_box_acc": mean([model_rows[m]["protected_acc"] for m in black]),
        "clean_acc": mean([r["clean_acc"] for r in model_rows.values()]),
        "robust_acc": mean(list(by_t.values())),
        "robust_acc_by_transform": by_t,
        "robust_acc_black_box": mean([robust[m][t] for m in black for t in by_t]),
        "white_box_models": white,
        "black_box_models": black,
        "lesion_pixels_changed": quality["lesion_pixels_changed"]["total"],
        "queries_median": cost["queries"]["median"],
        "paper": dict(PAPER),
        "targets": dict(TARGETS),
    }


def _figures(
    report: Mapping[str, Any],
    d: _Data,
    restored: np.ndarray,
    restored_assumed: bool,
    removed: Mapping[str, np.ndarray],
    row_titles: Sequence[str],
    queries: Sequence[float],
    per_grade: int,
) -> dict[str, bytes]:
    by_grade: dict[int, list[int]] = {}
    for i in sorted(range(d.n), key=lambda i: (d.boxes[i] is None, i)):  # images carrying a logo first
        by_grade.setdefault(int(d.grades[i]), []).append(i)
    rows = [i for g in sorted(by_grade) for i in by_grade[g][:per_grade]]
    few = [by_grade[g][0] for g in sorted(by_grade)]

    def grid(idx: list[int], last: np.ndarray, title: str) -> bytes:
        return fig.sample_grid(d.originals[idx], d.protected[idx], last[idx], [d.lesion_boxes[i] for i in idx],
                               [d.boxes[i] for i in idx], [row_titles[i] for i in idx], restored_title=title)

    clean = {m: r["clean_acc"] for m, r in report["models"].items()}
    out = {
        "grid": grid(rows, restored, "restored (licensed, assumed exact)" if restored_assumed else "restored (licensed)"),
        "transfer": fig.accuracy_heatmap(report["transfer"], title="Accuracy (%): watermark source x target model"),
        "robustness": fig.grouped_bars(
            {m: {"no transform": r["protected_acc"], **report["robustness"]["protected"].get(m, {})}
             for m, r in report["models"].items()},
            title="Accuracy on protected images after each transform",
            reference=clean, reference_label="clean accuracy", target=TARGETS["robust_acc"],
        ),
        "removal": fig.grouped_bars(
            report["removal"]["accuracy"],
            title="Accuracy after logo-removal attacks (none = protected as published)",
            reference=clean, reference_label="clean accuracy",
        ),
        "distributions": fig.distributions({
            "logo area (% of image)": _logo_area_pct(d),
            "opacity (fraction of 255)": _opacities(d),
            "model queries per image": list(queries),
        }),
    }
    for a, images in removed.items():
        out["removal_examples"] = grid(few, images, f"attacker: {a}")
    return out
