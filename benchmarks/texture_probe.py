#!/usr/bin/env python
"""Probe (issue 5): how much would per-image logo colours buy over one learned colouring?

Not a packing option yet (the per-image colours would have to join the committed watermark
parameters). On the first N evaluation images of a `benchmarks/report.py --cpu` run, it
searches placements with that run's learned logo (the `ensemble_learned` configuration),
then optimises each image's logo RGB at its placement with
`medlocker.watermark.refine_colors` (logo shape, alpha and opacity fixed; Adam on the
surrogates' margin loss clamped at -MARGIN), and prints and writes
white-box / black-box / robust accuracy for: clean, learned logo, per-image colours.
Synthetic data.

    python benchmarks/texture_probe.py RUN_DIR N STEPS MARGIN [EPOCHS]
    python benchmarks/texture_probe.py runs/full-cpu-e10 200 40 2.0 10
"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
from PIL import Image
from medlocker.models import load_checkpoint
from medlocker.report.pipeline import CPU, _evaluation_images, _search_config, with_overrides
from medlocker.report.metrics import predict, accuracy
from medlocker.report.robustness import apply_batch
from medlocker.watermark import protect, refine_colors, render_exact

torch.set_num_threads(2)
out, N, STEPS, TARGET = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
cfg = with_overrides(CPU, epochs=int(sys.argv[5]) if len(sys.argv) > 5 else CPU.epochs)
imgs, labels, boxes = _evaluation_images(cfg, out)
imgs, labels, boxes = imgs[:N], labels[:N], boxes[:N]
models = {a: load_checkpoint(out / "models" / f"{a}-224px-in64-{cfg.epochs}ep-n600-seed0.pt").eval() for a in cfg.archs}
for m in models.values():
    for p in m.parameters():
        p.requires_grad_(False)
sur = [models[s] for s in cfg.surrogates]
logo = np.asarray(Image.open(out / "ensemble_learned" / "logo.png").convert("RGBA"))
search = _search_config(cfg, "ensemble_learned")
t0 = time.time()
res = protect(imgs, labels.tolist(), boxes, sur, logo=logo, config=search, device="cpu",
              seeds=list(range(cfg.n_train, cfg.n_train + N)))
P = [r.placement for r in res]
base = np.stack([render_exact(im, logo, p) if p is not None else im for im, p in zip(imgs, P)])
print("search", round(time.time() - t0, 1), "s", flush=True)


def accs(x):
    return {m: round(accuracy(predict(c, x, batch_size=50), labels), 4) for m, c in models.items()}


def summary(name, x):
    a = accs(x)
    wb = np.mean([a[s] for s in cfg.surrogates]); bb = np.mean([v for k, v in a.items() if k not in cfg.surrogates])
    rob = np.mean([np.mean(list(accs(apply_batch(t, x)).values())) for t in ("jpeg75", "resize0.5", "median3")])
    row = {"name": name, "white": round(float(wb), 4), "black": round(float(bb), 4), "robust": round(float(rob), 4), "acc": a}
    print(json.dumps(row), flush=True)
    return row


rows = [summary("clean", imgs), summary("learned logo (today's format)", base)]
# per-image colours: each image's logo RGB optimised at its placement (alpha x opacity fixed)
t1 = time.time()
logos = refine_colors(imgs, labels.tolist(), P, sur, logo=logo, config=search, steps=STEPS, target_margin=TARGET,
                      device="cpu")
tex = np.stack([render_exact(im, lg, p) if p is not None else im for im, p, lg in zip(imgs, P, logos)])
print("refine", round(time.time() - t1, 1), "s", flush=True)
rows.append(summary(f"per-image colours ({STEPS} steps, margin {TARGET})", tex))
(out / f"texture_probe_{N}_{STEPS}_{TARGET}.json").write_text(json.dumps(rows, indent=1))
