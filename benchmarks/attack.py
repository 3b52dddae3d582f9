#!/usr/bin/env python
"""Watermark search benchmark: success against query budget, queries, throughput, overhead.

On one set of synthetic fundus images and one model, every optimizer
(``gradient``, ``blackbox``) runs side by side with the BHE baseline
(``bhe``, Adv-watermark), each once at the maximum budget. Because an image's
search stops at its first success, the success rate at a smaller budget ``b``
is read from the same run: the share of images fooled with ``queries <= b``
(an "anytime" curve; an optimizer whose schedule depends on the budget, like
``blackbox``'s scan size, may do somewhat better when run at ``b`` itself).

Throughput is put next to the model's own cost: the raw forward rate of the
same model at the same batch size and precision (and the forward+backward
rate the gradient optimizer pays), so that::

    overhead_ratio = protected images/s x mean queries per image / raw forward images/s

is 1 when the search costs exactly its queries' forwards and falls as rendering,
bookkeeping, host syncs and the final PNG check take time. ``model_share``
refines it with the rows the model really saw (counted by a wrapper), split by
forward / forward+backward and precision.

Only ``medlocker.watermark``, ``medlocker.models`` and ``medlocker.data`` are
imported (no webdataset, no cryptography), so the script runs on a bare GPU
image with torch + torchvision + numpy + pillow. All numbers are on
synthetic data.

Examples:
    python benchmarks/attack.py --quick --out runs/attack-quick.json
    python benchmarks/attack.py --summary runs/gpu      # cross-run table of the reports in a folder
    python benchmarks/attack.py --arch resnet50 --size 224 --n 128 --budget 1000 \\
        --amp bf16 --train-seconds 75 --save-checkpoint runs/r50.pt --out runs/attack-bf16.json
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import math
import os
import platform
import pstats
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from medlocker.data import generate_fundus
from medlocker.models import build_classifier, load_checkpoint, save_checkpoint
from medlocker.watermark import (
    PlacementConfig,
    ProtectionConfig,
    boxes_from_masks,
    default_logo,
    protect,
)
from medlocker.watermark.optim import OPTIMIZERS, frozen, register_optimizer

log = logging.getLogger("bench.attack")

FORMAT = "medlocker.bench.attack"
VERSION = 1
BASELINE = "bhe"
CURVE_BUDGETS = (10, 25, 50, 100, 250, 500, 1000, 4000)
CLASSES = ("0", "1", "2", "3", "4")  # synthetic DR grades
TRAIN_SEED, EVAL_SEED = 101, 202  # disjoint synthetic datasets for training and attacking
QUICK = {"arch": "smallcnn", "size": 48, "n": 4, "batch_size": 64, "budget": 100,
         "train_steps": 80, "lr": 4e-3, "train_images": 96, "pool_factor": 2, "threads": 1, "rate_seconds": 0.3}


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Images:
    """Synthetic fundus images with their grades and lesion boxes."""

    pixels: np.ndarray  # uint8 [N, S, S, 3]
    labels: np.ndarray  # int64 [N]
    boxes: list[list[tuple[int, int, int, int]]]

    def take(self, idx: Sequence[int]) -> Images:
        idx = list(idx)
        return Images(self.pixels[idx], self.labels[idx], [self.boxes[i] for i in idx])


def _one(job: tuple[int, int, int, bool]) -> tuple[np.ndarray, int, list[tuple[int, int, int, int]]]:
    seed, index, size, with_boxes = job
    s = generate_fundus(seed, index, size)
    boxes = boxes_from_masks(list(s.masks.values())) if with_boxes else []
    return s.image, int(s.label), boxes


def make_images(seed: int, count: int, size: int, *, boxes: bool, workers: int) -> Images:
    """``count`` images of the synthetic dataset ``seed`` (process pool; call before CUDA is initialised)."""
    jobs = [(seed, i, size, boxes) for i in range(count)]
    if workers > 1 and count >= 4 * workers:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            out = list(pool.map(_one, jobs, chunksize=max(1, count // (4 * workers))))
    else:
        out = [_one(j) for j in jobs]
    return Images(np.stack([o[0] for o in out]), np.array([o[1] for o in out], dtype=np.int64), [o[2] for o in out])


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


# -------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def _timed_rate(step: Callable[[], None], rows: int, device: torch.device, seconds: float, warmup: int = 3) -> float:
    """Rows per second of ``step``: warm-up, one probe, then enough iterations to fill ``seconds``.

    CUDA: timed with events between two synchronisations; CPU: perf_counter.
    """
    for _ in range(warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    step()
    _sync(device)
    iters = max(3, min(500, int(seconds / max(time.perf_counter() - t, 1e-6))))
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        end.synchronize()
        elapsed = start.elapsed_time(end) / 1000.0
    else:
        t = time.perf_counter()
        for _ in range(iters):
            step()
        elapsed = time.perf_counter() - t
    return rows * iters / elapsed


def raw_rates(model: nn.Module, *, batch: int, size: int, device: torch.device, precisions: Sequence[str],
              backward: Sequence[str], channels_last: bool, seconds: float) -> dict[str, dict[str, float]]:
    """The model's own images/s: ``forward`` (no grad) and ``forward_backward`` (grad w.r.t. the input,
    parameters frozen -- what the gradient optimizer does), inside the same :func:`frozen` context as
    :func:`protect` (eval mode, channels-last on CUDA)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    if channels_last or device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    out: dict[str, dict[str, float]] = {"forward": {}, "forward_backward": {}}
    with frozen([model], device):
        for p in precisions:
            def fwd() -> None:
                with torch.no_grad(), _autocast(device, p):
                    model(x)
            out["forward"][p] = _timed_rate(fwd, batch, device, seconds)
        for p in backward:
            def fwd_bwd() -> None:
                xi = x.detach().requires_grad_(True)
                with _autocast(device, p):
                    z = model(xi)
                torch.autograd.grad(z.float().sum(), xi)
            out["forward_backward"][p] = _timed_rate(fwd_bwd, batch, device, seconds)
    return out


# --------------------------------------------------------------------------- model
class CountingModel(nn.Module):
    """Wraps a classifier to count the rows it sees, by (grad, precision); optionally runs it under
    fp16 autocast, channels-last or ``torch.compile``. Counting costs no host sync."""

    def __init__(self, clf: nn.Module, *, fp16: bool = False, channels_last: bool = False, compile: bool = False) -> None:
        super().__init__()
        self.clf = clf
        self.fp16 = fp16
        self.channels_last = channels_last
        self.rows: Counter[str] = Counter()
        fn = torch.compile(clf, dynamic=True) if compile else clf
        object.__setattr__(self, "_fn", fn)  # not a second registered submodule

    @property
    def num_classes(self) -> int:
        return int(self.clf.num_classes)

    def _precision(self, x: torch.Tensor) -> str:
        if self.fp16 and x.is_cuda:
            return "fp16"
        if torch.is_autocast_enabled(x.device.type):
            return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(torch.get_autocast_dtype(x.device.type), "fp32")
        return "fp32"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "forward_backward" if torch.is_grad_enabled() and x.requires_grad else "forward"
        p = self._precision(x)
        self.rows[f"{mode}/{p}"] += int(x.shape[0])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(x.device, "fp16") if p == "fp16" and self.fp16 else contextlib.nullcontext():
            return self._fn(x)


def train_surrogate(clf: nn.Module, data: Images, *, seconds: float, steps: int, device: torch.device,
                    batch_size: int, seed: int, lr: float = 2e-3) -> dict[str, Any]:
    """Train ``clf`` for ``steps`` steps, or (``steps == 0``) for ``seconds`` of wall time.

    AdamW with a short warm-up and a cosine decay over the steps (or the time),
    random flips, bf16 autocast on CUDA. A step count makes the model
    reproducible; a time limit makes the run's length predictable.
    """
    if steps <= 0 and seconds <= 0:
        raise ValueError("train for some steps or some seconds")
    x_all = torch.from_numpy(data.pixels).to(device).permute(0, 3, 1, 2)  # uint8, stays on the device
    y_all = torch.from_numpy(data.labels).to(device)
    n = x_all.shape[0]
    g = torch.Generator().manual_seed(seed)
    clf.to(device).train()
    if device.type == "cuda":
        clf.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=0.05)
    done, seen, losses, t0 = 0, 0, [], time.perf_counter()

    def progress() -> float:
        return done / steps if steps > 0 else (time.perf_counter() - t0) / seconds

    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        while (frac := progress()) < 1.0:
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (done + 1) / 20) * 0.5 * (1 + math.cos(math.pi * frac))
            idx = torch.randint(0, n, (min(batch_size, n),), generator=g)
            flip = torch.rand(len(idx), 2, generator=g) < 0.5
            xb = x_all[idx.to(device)].float().div_(255.0)
            xb = torch.where(flip[:, 0].to(device)[:, None, None, None], xb.flip(-1), xb)
            xb = torch.where(flip[:, 1].to(device)[:, None, None, None], xb.flip(-2), xb)
            if device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with _autocast(device, "bf16"):
                loss = F.cross_entropy(clf(xb).float(), y_all[idx.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            seen += len(idx)
            losses.append(loss.detach())
            if done % 25 == 0:
                log.info("train step %d loss %.3f (%.0f s)", done, float(losses[-1]), time.perf_counter() - t0)
    clf.eval()
    tail = torch.stack(losses[-25:]).float().mean() if losses else torch.tensor(float("nan"))
    return {"seconds": round(time.perf_counter() - t0, 2), "steps": done, "samples_seen": seen,
            "train_images": int(n), "final_loss": round(float(tail), 4), "batch_size": batch_size, "lr": lr,
            "limit": f"{steps} steps" if steps > 0 else f"{seconds} s"}


@torch.no_grad()
def predict(clf: nn.Module, pixels: np.ndarray, device: torch.device, batch: int) -> np.ndarray:
    """fp32 predictions of ``clf`` on uint8 images (the same input path as :func:`protect`)."""
    out = []
    with frozen([clf], device):
        for s in range(0, len(pixels), batch):
            x = torch.from_numpy(pixels[s:s + batch]).to(device).permute(0, 3, 1, 2).float().div_(255.0)
            out.append(clf(x).argmax(1).cpu())
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------- profiling
_SYNCING = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero",
            "argwhere", "masked_select", "unique", "equal", "allclose"}


class SyncAudit(TorchFunctionMode):
    """Counts torch calls that synchronise host and device on CUDA (``.item()``, ``.tolist()``,
    ``bool(t)``, ``nonzero``, boolean-mask indexing, ...) and host->device copies, keyed by the
    innermost ``medlocker`` source line. Works on CPU too: the same lines would sync on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter[str] = Counter()

    @staticmethod
    def _where() -> str:
        f = sys._getframe(2)
        while f is not None:
            name = f.f_code.co_filename
            if f"{os.sep}medlocker{os.sep}" in name:
                return f"{name[name.rindex(os.sep + 'medlocker' + os.sep) + 1:]}:{f.f_lineno}"
            f = f.f_back
        return "<outside medlocker>"

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        kind = None
        if name in _SYNCING:
            kind = name
        elif name in ("__getitem__", "__setitem__", "index_put_", "index_put") and any(
                isinstance(a, torch.Tensor) and a.dtype == torch.bool
                for a in (args[1] if isinstance(args[1], tuple) else (args[1],))):
            kind = f"bool-mask {name}"
        elif name in ("to", "cuda") and args and isinstance(args[0], torch.Tensor) and args[0].device.type == "cpu" and (
                "cuda" in str(args[1:]) or "cuda" in str(kwargs.get("device", "")) or name == "cuda"):
            kind = "h2d copy"
        if kind is not None:
            self.hits[f"{kind} @ {self._where()}"] += 1
        return func(*args, **kwargs)


def profile_protect(run: Callable[[], Any], out_dir: Path, tag: str, device: torch.device) -> dict[str, Any]:
    """cProfile + torch.profiler + :class:`SyncAudit` (+ CUDA sync debug warnings) of one ``run()``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    audit = SyncAudit()
    with audit:
        run()
    report["sync_points"] = dict(audit.hits.most_common())
    if device.type == "cuda":  # the device's own view: every synchronising call, by Python line
        found: Counter[str] = Counter()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        for w in caught:
            if "synchroniz" in str(w.message):
                found[f"{Path(w.filename).name}:{w.lineno}"] += 1
        report["cuda_sync_warnings"] = dict(found.most_common())
    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(40)
    (out_dir / f"{tag}.cprofile.txt").write_text(s.getvalue())
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as tp:
        run()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    (out_dir / f"{tag}.torch.txt").write_text(tp.key_averages().table(sort_by=sort, row_limit=40))
    return report


# ------------------------------------------------------------------------- metrics
def summarise(results: Sequence[Any], wall: float, budgets: Sequence[int]) -> dict[str, Any]:
    """Success-vs-budget curve and query statistics from one run's :class:`Result` list.

    Rates are over all images (an image without a feasible position counts as a
    failure) and, as ``*_feasible``, over the images that had one; query
    statistics are over the images that were searched.
    """
    n = len(results)
    q = np.array([r.queries for r in results], dtype=np.float64)
    ok = np.array([r.success for r in results], dtype=bool)
    searched = np.array([r.status != "no_feasible_position" for r in results], dtype=bool)
    to_success = np.where(ok, q, np.inf)
    qs, m = q[searched], int(searched.sum())

    def rate(mask: np.ndarray, of: int) -> float:
        return float(mask.sum() / of) if of else 0.0

    return {
        "images": n,
        "feasible_images": m,
        "success_rate": rate(ok, n),
        "success_rate_feasible": rate(ok, m),
        "curve": {str(b): rate(to_success <= b, n) for b in budgets},
        "curve_feasible": {str(b): rate(to_success <= b, m) for b in budgets},
        "median_queries": float(np.median(qs)) if m else None,
        "median_queries_to_success": float(np.median(q[ok])) if ok.any() else None,
        "mean_queries": float(q.mean()) if n else 0.0,
        "max_queries": int(q.max()) if n else 0,
        "statuses": dict(Counter(r.status for r in results)),
        "mean_final_margin": float(np.mean([r.margin for r in results])) if n else 0.0,
        "wall_s": round(wall, 4),
        "protected_images_per_s": n / wall if wall > 0 else None,
        "queries_per_s": float(q.sum()) / wall if wall > 0 else None,
        "per_image": [[int(r.queries), r.status, round(float(r.margin), 4)] for r in results],
    }


def model_seconds(rows: Counter[str], rates: dict[str, dict[str, float]]) -> float | None:
    """Seconds the counted rows cost at the raw rates (None if a needed rate was not measured)."""
    total = 0.0
    for key, count in rows.items():
        mode, p = key.split("/")
        rate = rates[mode].get(p)
        if rate is None:
            return None
        total += count / rate
    return total


# ---------------------------------------------------------------------------- main
def _env(device: torch.device) -> dict[str, Any]:
    import torchvision

    env: dict[str, Any] = {
        "device": str(device), "device_name": platform.processor() or platform.machine(),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "medlocker": str(Path(sys.modules["medlocker.watermark"].__file__).parent.parent),
    }
    if device.type == "cuda":
        env.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), cudnn_benchmark=torch.backends.cudnn.benchmark,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet50", help="model architecture (medlocker.models registry)")
    p.add_argument("--size", type=int, default=224, help="image side = model input side, px")
    p.add_argument("--n", type=int, default=64, help="images attacked (the same ones for every optimizer)")
    p.add_argument("--batch-size", type=int, default=256, help="rows per model forward (search and raw rate)")
    p.add_argument("--budget", type=int, default=1000, help="max queries per image (one run per optimizer)")
    p.add_argument("--large-n", type=int, default=0,
                   help="also time the gradient optimizer on this many images in one protect() call (the packer's "
                        "GPU batch), reported as gradient@N: the search's fixed costs and its tail of small "
                        "late rounds are shared by more images")
    p.add_argument("--gradient-k", default="",
                   help="comma-separated k values: also time the gradient optimizer with k candidates per "
                        "gradient (half of them local moves), reported as gradient_kK (default k is 8)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True (autotuned convolutions; the search primes "
                        "every padded batch shape once, so tuning happens before the timed run)")
    p.add_argument("--optimizers", default="gradient,blackbox,bhe",
                   help=f"comma list of {sorted(OPTIMIZERS)}, or 'none' for the raw rate only")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="bf16",
                   help="bf16: the engine's autocast for search forwards (fp32 checks); fp16: every forward "
                        "under fp16 autocast (wrapper); none: fp32. CUDA only; fp32 on CPU")
    p.add_argument("--channels-last", action="store_true", help="channels-last on CPU too (always on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile(dynamic=True) the model")
    p.add_argument("--checkpoint", default=None, help="load this medlocker checkpoint instead of training")
    p.add_argument("--save-checkpoint", default=None, help="write the trained surrogate here")
    p.add_argument("--train-seconds", type=float, default=60.0,
                   help="train the model this long, wall clock (0 and no --train-steps: untrained)")
    p.add_argument("--train-steps", type=int, default=0,
                   help="train this many steps instead (reproducible; overrides --train-seconds)")
    p.add_argument("--train-images", type=int, default=2000, help="synthetic training images")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate for the surrogate")
    p.add_argument("--pool-factor", type=int, default=3,
                   help="generate n x this candidates and attack the first n the model classifies correctly")
    p.add_argument("--rate-seconds", type=float, default=2.0, help="timed seconds per raw-rate measurement")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="search seed (SearchConfig.seed)")
    p.add_argument("--profile", default=None, metavar="DIR", help="also profile each optimizer into DIR")
    p.add_argument("--profile-n", type=int, default=8, help="images per profiled run")
    p.add_argument("--quick", action="store_true", help=f"CPU smoke test: {QUICK}")
    p.add_argument("--out", default=None, help="JSON results file (rewritten after each optimizer)")
    args = p.parse_args(argv)
    if args.quick:
        defaults = {a.dest: a.default for a in p._actions}
        for k, v in QUICK.items():
            if getattr(args, k) == defaults[k]:
                setattr(args, k, v)
    names = [] if args.optimizers.strip() in ("", "none") else [s.strip() for s in args.optimizers.split(",")]
    for k in filter(None, (v.strip() for v in args.gradient_k.split(","))):
        if not k.isdigit() or int(k) < 2:
            p.error(f"--gradient-k takes integers >= 2, got {k!r}")
        names.append(register_gradient_variant(int(k)))
    bad = [s for s in names if s not in OPTIMIZERS]
    if bad:
        p.error(f"unknown optimizer(s) {bad}; valid: {sorted(OPTIMIZERS)}")
    args.optimizer_list = names
    if args.n < 1 or args.budget < 1 or args.batch_size < 1 or args.large_n < 0:
        p.error("--n, --budget and --batch-size must be >= 1 (--large-n >= 0)")
    return args


def register_gradient_variant(k: int) -> str:
    """Register ``gradient_k{k}``: the gradient optimizer with ``k`` candidates per gradient, ``k // 2``
    of them local moves (the default is k=8, local=4). Returns its name."""
    name = f"gradient_k{k}"
    if name not in OPTIMIZERS:
        base = OPTIMIZERS["gradient"]

        def __init__(self, objective, **kwargs):  # noqa: ANN001, N807
            kwargs.setdefault("k", k)
            kwargs.setdefault("local", k // 2)
            base.__init__(self, objective, **kwargs)

        register_optimizer(name, type(f"GradientK{k}", (base,), {"name": name, "__init__": __init__}))
    return name


def _write(path: str | None, report: dict[str, Any]) -> None:
    if path:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        os.replace(tmp, dest)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and writes to ``--out``) the JSON report."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"format": FORMAT, "version": VERSION, "synthetic_data": True, "complete": False,
                              "args": {k: v for k, v in vars(args).items() if k != "optimizer_list"},
                              "optimizers": {}, "errors": {}}
    try:
        _measure_all(args, report)
        report["versus_baseline"] = versus_baseline(report["optimizers"])
        report["complete"] = True
    except KeyboardInterrupt:  # `timeout` (TERM) or Ctrl-C: keep what was measured
        report["interrupted"] = True
        log.warning("interrupted: writing partial results")
    _write(args.out, report)
    print(format_table(report))
    return report


def _measure_all(args: argparse.Namespace, report: dict[str, Any]) -> None:
    device = _resolve_device(args.device)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    precision = args.amp if device.type == "cuda" else "fp32"
    precision = "fp32" if precision == "none" else precision

    # Data first: the process pool forks before CUDA is initialised.
    workers = _workers()
    t = time.perf_counter()
    need_training = args.checkpoint is None and (args.train_seconds > 0 or args.train_steps > 0)
    train = make_images(TRAIN_SEED, args.train_images, args.size, boxes=False, workers=workers) if need_training else None
    n_max = max(args.n, args.large_n)
    pool = make_images(EVAL_SEED, n_max * max(1, args.pool_factor), args.size, boxes=True, workers=workers)
    log.info("generated %d + %d images in %.1f s", 0 if train is None else len(train.labels), len(pool.labels),
             time.perf_counter() - t)

    report["env"] = _env(device)
    model_info: dict[str, Any] = {"arch": args.arch, "input_size": args.size}
    if args.checkpoint:
        clf = load_checkpoint(args.checkpoint)
        model_info.update(source="checkpoint", checkpoint=str(args.checkpoint), arch=clf.arch,
                          input_size=clf.input_size)
    else:
        clf = build_classifier(args.arch, CLASSES, input_size=args.size, seed=args.seed)
        if train is not None:
            model_info.update(source="trained", train=train_surrogate(
                clf, train, seconds=args.train_seconds, steps=args.train_steps, device=device,
                batch_size=min(64, args.batch_size), seed=args.seed, lr=args.lr))
            if args.save_checkpoint:
                save_checkpoint(clf, args.save_checkpoint, meta={"bench": "attack", "train": model_info["train"]})
                model_info["saved_to"] = str(args.save_checkpoint)
        else:
            model_info["source"] = "untrained"
    clf.to(device).eval()
    if args.channels_last or device.type == "cuda":
        clf.to(memory_format=torch.channels_last)

    pred = predict(clf, pool.pixels, device, args.batch_size)
    correct = np.flatnonzero(pred == pool.labels)
    model_info["clean_accuracy"] = float((pred == pool.labels).mean())
    model_info["pool"] = int(len(pool.labels))
    if model_info["source"] == "untrained":
        everyone = np.arange(min(n_max, len(pool.labels)))
        report["warning"] = "untrained model: success rates are not meaningful, throughput is"
    else:
        everyone = correct[:n_max]
        if len(everyone) < n_max:
            report["warning"] = f"only {len(everyone)} of {len(pool.labels)} pool images are classified correctly"
    chosen = everyone[: args.n]
    images = pool.take(chosen)
    model_info["params_m"] = round(sum(p.numel() for p in clf.parameters()) / 1e6, 3)
    report["model"] = model_info
    report["images"] = {"n": int(len(chosen)), "size": args.size, "dataset_seed": EVAL_SEED,
                        "only_correctly_classified": model_info["source"] != "untrained",
                        "mean_lesion_boxes": float(np.mean([len(b) for b in images.boxes])) if len(chosen) else 0.0,
                        "labels": dict(Counter(str(int(v)) for v in images.labels))}
    report["precision"] = {"requested": args.amp, "search": precision,
                           "checks": "fp16" if precision == "fp16" else "fp32"}

    # Raw model rates at the same batch size and precisions.
    fwd_p = sorted({precision, report["precision"]["checks"]})
    rates = raw_rates(clf, batch=args.batch_size, size=args.size, device=device, precisions=fwd_p,
                      backward=[precision] if any(o.startswith("gradient") for o in args.optimizer_list) else [],
                      channels_last=args.channels_last, seconds=args.rate_seconds)
    report["raw"] = {"batch_size": args.batch_size, **rates}
    raw_fwd = rates["forward"][precision]
    log.info("raw forward %.1f images/s (%s, batch %d)", raw_fwd, precision, args.batch_size)
    _write(args.out, report)

    wrapped = CountingModel(clf, fp16=precision == "fp16", channels_last=args.channels_last, compile=args.compile)
    logo = default_logo()
    budgets = sorted({b for b in CURVE_BUDGETS if b < args.budget} | {args.budget})
    report["curve_budgets"] = budgets

    def run(name: str, subset: Images, budget: int) -> list[Any]:
        cfg = ProtectionConfig(placement=PlacementConfig(optimizer=name, budget=budget), amp=precision == "bf16",
                               batch_size=args.batch_size, seed=args.seed)
        return protect(subset.pixels, subset.labels.tolist(), subset.boxes, [wrapped], logo=logo, config=cfg,
                       device=device, seeds=[f"bench{i}" for i in range(len(subset.labels))])

    def measure(name: str, images: Images = images) -> dict[str, Any]:
        wrapped.rows.clear()
        _sync(device)
        t0 = time.perf_counter()
        results = run(name, images, args.budget)
        _sync(device)
        wall = time.perf_counter() - t0
        entry = summarise(results, wall, budgets)
        rows = Counter(wrapped.rows)
        entry["model_rows"] = dict(rows)
        entry["overhead_ratio"] = (entry["protected_images_per_s"] * entry["mean_queries"] / raw_fwd
                                   if entry["protected_images_per_s"] else None)
        est = model_seconds(rows, rates)
        entry["model_share"] = est / wall if est is not None and wall > 0 else None
        log.info("%s: %.0f%% fooled, median %s queries, %.1f images/s", name, 100 * entry["success_rate"],
                 entry["median_queries"], entry["protected_images_per_s"] or 0)
        if args.profile and len(images.labels) == len(chosen):
            sub = images.take(range(min(args.profile_n, len(chosen))))
            entry["profile"] = profile_protect(lambda: run(name, sub, args.budget), Path(args.profile), name, device)
        return entry

    if len(chosen) and args.optimizer_list:
        warm = images.take(range(min(2, len(chosen))))
        for name in args.optimizer_list:  # kernels, cuDNN handles, autocast caches, compilation
            with contextlib.suppress(Exception):  # a failure is reported by the timed run
                run(name, warm, min(args.budget, 40))
    for name in args.optimizer_list:
        if not len(chosen):
            break
        try:
            report["optimizers"][name] = measure(name)
        except Exception as exc:  # one broken optimizer must not cost the others' numbers
            log.exception("%s failed", name)
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
        _write(args.out, report)
    for opt in [o for o in args.optimizer_list if o.startswith("gradient")]:
        if not args.large_n or len(everyone) <= len(chosen):
            break
        name = f"{opt}@{len(everyone)}"
        try:
            report["optimizers"][name] = measure(opt, pool.take(everyone))
        except Exception as exc:
            log.exception("%s failed", name)
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
        _write(args.out, report)


def versus_baseline(opts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per optimizer: success-rate difference to BHE at each curve budget (positive = better)."""
    if BASELINE not in opts:
        return {}
    base = opts[BASELINE]["curve"]
    out = {}
    for name, e in opts.items():
        if name == BASELINE:
            continue
        diff = {b: round(e["curve"][b] - base[b], 4) for b in base}
        out[name] = {"success_minus_bhe": diff, "never_worse": all(d >= 0 for d in diff.values())}
    return out


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of the report."""
    env, model, raw = report.get("env", {}), report.get("model", {}), report.get("raw", {})
    prec = report.get("precision", {}).get("search", "?")
    lines = [
        f"attack benchmark -- {env.get('device_name', '?')} | torch {env.get('torch', '?')} | {prec} | "
        f"{model.get('arch', '?')} @{model.get('input_size', '?')} ({model.get('source', '?')}, clean acc "
        f"{model.get('clean_accuracy', float('nan')):.2f}) | {report.get('images', {}).get('n', 0)} synthetic images",
        "raw model rate, batch {}: forward {} | forward+backward {}".format(
            raw.get("batch_size"),
            ", ".join(f"{k} {v:.1f}/s" for k, v in raw.get("forward", {}).items()) or "-",
            ", ".join(f"{k} {v:.1f}/s" for k, v in raw.get("forward_backward", {}).items()) or "-"),
    ]
    opts = report.get("optimizers", {})
    budgets = [str(b) for b in report.get("curve_budgets", [])]
    head = f"{'optimizer':<13} {'success':>7} {'med q':>6} {'med q ok':>8} {'mean q':>7} {'img/s':>8} " \
           f"{'overhead':>8} {'model%':>6} | " + " ".join(f"@{b:>4}" for b in budgets)
    lines += [head, "-" * len(head)]
    for name, e in opts.items():
        lines.append(
            f"{name:<13} {_fmt(e['success_rate'], '.2f'):>7} {_fmt(e['median_queries'], '.0f'):>6} "
            f"{_fmt(e['median_queries_to_success'], '.0f'):>8} {_fmt(e['mean_queries'], '.1f'):>7} "
            f"{_fmt(e['protected_images_per_s'], '.2f'):>8} {_fmt(e['overhead_ratio'], '.3f'):>8} "
            f"{_fmt(e.get('model_share'), '.0%'):>6} | " + " ".join(f"{e['curve'][b]:>5.2f}" for b in budgets))
    for name, err in report.get("errors", {}).items():
        lines.append(f"{name:<13} FAILED: {err}")
    if report.get("warning"):
        lines.append(f"warning: {report['warning']}")
    if report.get("interrupted"):
        lines.append("interrupted: partial results")
    return "\n".join(lines)


def summary(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """One cross-run table over every attack report (``*.json`` with this format) in ``folder``;
    also written to ``folder/summary.json``."""
    root = Path(folder)
    rows, reports = [], {}
    for path in sorted(root.glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(r, dict) or r.get("format") != FORMAT:
            continue
        reports[path.name] = r
        prec = r.get("precision", {}).get("search", "?")
        fwd = r.get("raw", {}).get("forward", {}).get(prec)
        for name, e in r.get("optimizers", {}).items():
            rows.append({"run": path.stem, "device": r.get("env", {}).get("device_name"), "precision": prec,
                         "arch": r.get("model", {}).get("arch"), "size": r.get("images", {}).get("size"),
                         "model": r.get("model", {}).get("source"), "images": e["images"], "optimizer": name,
                         "success_rate": e["success_rate"], "curve": e["curve"],
                         "median_queries": e["median_queries"], "mean_queries": e["mean_queries"],
                         "protected_images_per_s": e["protected_images_per_s"], "raw_forward_images_per_s": fwd,
                         "overhead_ratio": e["overhead_ratio"], "model_share": e.get("model_share"),
                         "complete": r.get("complete", False)})
        for name, err in r.get("errors", {}).items():
            rows.append({"run": path.stem, "optimizer": name, "error": err})
    out = {"format": FORMAT + ".summary", "version": VERSION, "synthetic_data": True, "rows": rows}
    (root / "summary.json").write_text(json.dumps(out, indent=2, default=str))
    head = f"{'run':<20} {'prec':<4} {'optimizer':<13} {'n':>4} {'success':>7} {'@50':>5} {'med q':>6} {'mean q':>7} " \
           f"{'img/s':>8} {'raw fwd/s':>9} {'overhead':>8} {'model%':>6}"
    lines = [f"summary of {len(reports)} attack report(s) in {root} (synthetic data)", head, "-" * len(head)]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['run']:<20} {'':<4} {row['optimizer']:<13} FAILED: {row['error']}")
            continue
        lines.append(
            f"{row['run']:<20} {row['precision']:<4} {row['optimizer']:<13} {row['images']:>4} "
            f"{_fmt(row['success_rate'], '.2f'):>7} {_fmt(row['curve'].get('50'), '.2f'):>5} "
            f"{_fmt(row['median_queries'], '.0f'):>6} {_fmt(row['mean_queries'], '.1f'):>7} "
            f"{_fmt(row['protected_images_per_s'], '.1f'):>8} {_fmt(row['raw_forward_images_per_s'], '.0f'):>9} "
            f"{_fmt(row['overhead_ratio'], '.3f'):>8} {_fmt(row['model_share'], '.0%'):>6}"
            + ("" if row["complete"] else "  (partial)"))
    print("\n".join(lines))
    return out


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    warnings.filterwarnings("ignore", message=".*TF32.*")
    signal.signal(signal.SIGTERM, _interrupt)  # `timeout` sends TERM: partial results are still written
    signal.signal(signal.SIGINT, _interrupt)
    if len(sys.argv) == 3 and sys.argv[1] == "--summary":
        summary(sys.argv[2])
    else:
        main()
