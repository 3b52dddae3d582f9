"""One self-contained HTML page (and a JSON twin) from an evaluation report.

The page embeds every figure as a ``data:image/png;base64`` URI and carries its
CSS inline: no external URL, font or script, so it can be mailed, archived or
opened offline. Numbers measured on synthetic data are labelled as such.

The page is a jinja2 template (:data:`_TEMPLATE`) rendered with autoescape on:
every value from the report -- model names, configuration names, free-form
meta -- is escaped by jinja2, and the Python side only formats numbers.
"""

from __future__ import annotations

import base64
import json
import math
import os
from functools import cache
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

__all__ = ["build_html", "write_report", "to_jsonable", "FIGURE_CAPTIONS"]

FIGURE_CAPTIONS: dict[str, str] = {
    "grid": "Samples per grade: the original, the protected image as published, the lesion boxes (green, "
            "the watermark semantic mask) with the logo box (magenta) -- the logo never overlaps a lesion box -- "
            "and the licensee's restored image. Row labels give the white-box model's prediction "
            "clean -> protected.",
    "transfer": "Accuracy (%) of each target model (columns) on images protected with each watermark source "
                "(rows: a surrogate model or ensemble configuration; 'clean' = unprotected). Low is better for "
                "protection.",
    "robustness": "Accuracy on protected images after everyday transforms; black ticks are the clean accuracy. "
                  "A transform that lifts the bars back towards the ticks weakens the protection.",
    "suite_table": "Held-out accuracy (%) of every configuration (rows) after every attack of the suite "
                   "(columns): the attacker's own preprocessed models for graham / clahe, the logo found by "
                   "template matching for the removal attacks, the true box for oracle_inpaint.",
    "suite": "Accuracy of each model after each attack of the suite; black ticks are the clean accuracy.",
    "removal": "Accuracy after logo-removal attacks from the public image alone (estimated box/opacity) and with "
               "oracle parameters (upper bound); 'licensed' is the exact restoration.",
    "removal_examples": "What a removal attacker recovers from the public image alone (one sample per grade).",
    "distributions": "Distributions over protected images: logo area, opacity and model queries spent by the "
                     "search.",
}

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1080px;margin:0 auto;padding:24px 28px 60px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.7em;margin:.2em 0 .1em}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:2px solid #e3e6eb;
padding-bottom:.2em}h3{font-size:1.02em;margin:1.2em 0 .4em}
.sub{color:#5b6475;margin:0 0 1em}.badge{display:inline-block;padding:2px 9px;border-radius:10px;font-size:.8em;
font-weight:600;vertical-align:middle;margin-left:8px}.synthetic{background:#fff1c2;color:#7a5300;border:1px solid #e8c65a}
.real{background:#dff3e4;color:#1b5e20;border:1px solid #9ccc9f}
.summary{border:1px solid #cfd6e0;background:#f3f7fc;border-radius:8px;padding:12px 16px;margin:12px 0 8px}
.summary table{margin:0}.note{font-size:.85em;color:#5b6475;margin:.4em 0}
table{border-collapse:collapse;margin:8px 0 14px;font-size:.9em}th,td{padding:4px 10px;border-bottom:1px solid #e3e6eb;
text-align:right;white-space:nowrap}th{background:#f0f2f5;font-weight:600}td:first-child,th:first-child{text-align:left}
tr:hover td{background:#fafbfc}.headline td.who{white-space:normal;text-align:left;font-size:.9em}
.headline td:first-child{white-space:normal}.good{color:#1b7a2c;font-weight:600}.bad{color:#b3261e;font-weight:600}
.wb{color:#7b1fa2}.bb{color:#1565c0}figure{margin:14px 0 22px}figure img{max-width:100%;border:1px solid #e3e6eb}
figcaption{font-size:.85em;color:#444c5a;margin-top:4px}code{background:#f0f2f5;padding:0 3px;border-radius:3px}
nav{font-size:.85em;margin:6px 0 0}nav a{margin-right:12px;color:#1565c0;text-decoration:none}
"""


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN -> None, +/-inf -> ``"inf"`` / ``"-inf"``, numpy and tuples unwrapped."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def write_report(out_dir: str | os.PathLike[str], report: Mapping[str, Any], figures: Mapping[str, bytes]) -> Path:
    """Write ``report.json``, ``report.html`` and one ``<name>.png`` per figure into ``out_dir``.

    Returns:
        The path of ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(report), indent=2, sort_keys=False, allow_nan=False)
    (out / "report.json").write_text(text + "\n", encoding="utf-8")
    for name, png in figures.items():
        (out / f"{_safe_name(name)}.png").write_bytes(png)
    path = out / "report.html"
    path.write_text(build_html(report, figures), encoding="utf-8")
    return path


def build_html(report: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    """Render the report as one self-contained HTML page (jinja2, autoescaped).

    Args:
        report: the dict from :func:`medlocker.report.evaluate.evaluate`
            (optionally with ``comparison`` and ``suite_table`` sections added by
            the pipeline).
        figures: figure name -> PNG bytes; known names get their caption from
            :data:`FIGURE_CAPTIONS`, others are shown with their name.
    """
    synthetic = bool(report.get("synthetic", True))
    shown = {"grid", "transfer", "robustness", "removal", "removal_examples", "distributions", "suite_table", "suite"}
    context = {
        "css": _CSS,
        "title": str(report.get("title", "MedLocker evaluation")),
        "synthetic": synthetic,
        "subtitle": _subtitle(report),
        "headline": _headline_rows(report),
        "paper_source": str(report.get("headline", {}).get("paper", {}).get("source", "MIAD-MARK")),
        "near_chance": [m for m, r in report.get("models", {}).items() if r.get("near_chance")],
        "chance": _pct(report.get("data", {}).get("chance_acc")),
        "comparison": _comparison_rows(report.get("comparison") or []),
        "suite_table": _suite_table(report),
        "suite": _suite_rows(report),
        "models": [
            {"name": m, "role": r.get("role", ""), "clean": _pct(r.get("clean_acc")), "near": bool(r.get("near_chance")),
             "protected": _pct(r.get("protected_acc")), "asr": _pct(r.get("asr")), "correct": _int(r.get("n_clean_correct"))}
            for m, r in report.get("models", {}).items()
        ],
        "robustness": _robustness_tables(report),
        "removal": _removal_tables(report),
        "quality": _quality_rows(report),
        "cost": report.get("cost") and {
            "queries": _stats(report["cost"].get("queries"), 1),
            "wall": _num(report["cost"].get("wall_time_s"), 1),
            "per_image": _num(report["cost"].get("wall_time_per_image_s"), 3),
            "device": str(report["cost"].get("device")),
        },
        "figures": {k: _figure(figures, k) for k in figures},
        "extra_figures": [_figure(figures, k) for k in figures if k not in shown],
        "meta": [(str(k), json.dumps(to_jsonable(v))) for k, v in (report.get("meta") or {}).items()],
    }
    return _template().render(**context)


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(_TEMPLATE)


# ----------------------------------------------------------------------------- sections (plain values)

_DASH = "\u2014"


def _headline_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    h = report.get("headline", {})
    paper, targets, models = h.get("paper", {}), h.get("targets", {}), report.get("models", {})

    def clean_of(names: Sequence[str]) -> str:
        accs = [a for a in (_finite(models.get(m, {}).get("clean_acc")) for m in names) if a is not None]
        return _pct(sum(accs) / len(accs)) if accs else _DASH

    def row(name: str, key: str, clean: str, paper_v: str, over: str, fmt: Any = None) -> dict[str, Any]:
        fmt = fmt or _pct
        return {"name": name, "ours": fmt(h.get(key)), "clean": clean, "paper": paper_v,
                "target": "\u2264 " + fmt(targets.get(key)), "ok": _ok(h.get(key), targets.get(key)), "over": over}

    white, black = h.get("white_box_models", []), h.get("black_box_models", [])
    rows = [
        row("White-box accuracy on protected images", "white_box_acc", clean_of(white), _pct(paper.get("white_box_acc")),
            ", ".join(white) or "none"),
        row("Black-box accuracy (held-out models)", "black_box_acc", clean_of(black), _pct(paper.get("black_box_acc")),
            ", ".join(black) or "none"),
    ]
    if "worst_case_acc" in h:
        rows += [
            row("Worst case over the attacker suite (held-out, oracle excluded)", "worst_case_acc", clean_of(black),
                "not reported", f"worst: {h.get('worst_case_attack') or _DASH}"),
            row("Oracle-box inpainting (held-out, upper bound)", "oracle_acc", clean_of(black), "not reported",
                "the true logo box inpainted"),
        ]
    rows += [
        row("After JPEG q75 / resize \u00d70.5 / median 3\u00d73", "robust_acc", clean_of(list(models)), "not reported",
            "all models, mean of the three"),
        row("Lesion-box pixels changed", "lesion_pixels_changed", "", _DASH, "all images", _int),
        row("Model queries per image (median)", "queries_median", "", "up to ~4,000 (BHE)", "the search",
            lambda v: _num(v, 1)),
    ]
    return rows


def _comparison_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        out.append([str(r.get("config")), ", ".join(map(str, r.get("surrogates") or [])), _pct(r.get("white_box_acc")),
                    _pct(r.get("black_box_acc")), _pct(r.get("worst_case_acc")),
                    str(r.get("worst_case_attack") or _DASH), _pct(r.get("oracle_acc")), _pct(r.get("robust_acc")),
                    _num(r.get("queries_median"), 1), _num(r.get("wall_time_per_image_s"), 2),
                    _int(r.get("lesion_pixels_changed"))])
    return out


def _suite_table(report: Mapping[str, Any]) -> dict[str, Any] | None:
    table = report.get("suite_table") or {}
    if not any(table.values()):
        return None
    attacks: list[str] = []
    for accs in table.values():
        attacks += [a for a in accs if a not in attacks]
    rows = {r.get("config"): r for r in report.get("comparison") or []}
    return {"attacks": attacks, "rows": [
        {"config": c, "cells": [_pct(accs.get(a)) for a in attacks],
         "worst": _pct(rows.get(c, {}).get("worst_case_acc")), "oracle": _pct(rows.get(c, {}).get("oracle_acc"))}
        for c, accs in table.items()]}


def _suite_rows(report: Mapping[str, Any]) -> dict[str, Any] | None:
    s = report.get("suite")
    if not s or not s.get("attacks"):
        return None
    attacks = list(s["attacks"])
    found = s.get("box_found") or {}
    remover = (s.get("remover") or {}).get("held_out_pasted") or {}
    return {
        "attacks": attacks,
        "kinds": [s["kinds"][a] for a in attacks],
        "rows": [{"model": m, "cells": [_pct(accs.get(a)) for a in attacks]} for m, accs in s["accuracy"].items()],
        "held_out": [_pct(s["held_out"].get(a)) for a in attacks],
        "held_out_label": "all models (no held-out model)" if s.get("held_out_is_all_models") else
                          "held-out mean (" + ", ".join(s.get("held_out_models", [])) + ")",
        "clean": [{"model": m, "cells": [_pct(accs.get(a)) for a in attacks]}
                  for m, accs in (s.get("clean_after_attack") or {}).items()],
        "psnr": [(a, _stats(v, 1)) for a, v in (s.get("attacker_psnr") or {}).items()],
        "worst": s.get("worst_case") and {"attack": s["worst_case"]["attack"], "acc": _pct(s["worst_case"]["acc"])},
        "oracle": s.get("oracle") and _pct(s["oracle"]["acc"]),
        "box_found": found and {"rate": _pct(found.get("rate")), "n": _int(found.get("n")),
                                "iou": _num((found.get("iou") or {}).get("median"), 2)},
        "remover": remover and {"before": _num(remover.get("pasted_db"), 1), "after": _num(remover.get("removed_db"), 1),
                                "n": _int(remover.get("n"))},
        "own_models": [(a, ", ".join(ms)) for a, ms in (s.get("attacker_trained_models") or {}).items()],
        "skipped": list((s.get("skipped") or {}).items()),
    }


def _robustness_tables(report: Mapping[str, Any]) -> dict[str, Any] | None:
    rob = report.get("robustness", {})
    ts = list(rob.get("transforms", []))
    if not ts:
        return None
    models = report.get("models", {})

    def rows(kind: str) -> list[dict[str, Any]]:
        base_key = "protected_acc" if kind == "protected" else "clean_acc"
        return [{"model": m, "base": _pct(models.get(m, {}).get(base_key)),
                 "cells": [_pct(rob[kind][m].get(t)) for t in ts]} for m in rob.get(kind, {})]

    return {"transforms": ts, "protected": rows("protected"), "clean": rows("clean")}


def _removal_tables(report: Mapping[str, Any]) -> dict[str, Any] | None:
    rem = report.get("removal", {})
    acc = rem.get("accuracy", {})
    if not acc:
        return None
    conds: list[str] = []
    for m in acc:
        conds += [c for c in acc[m] if c not in conds]
    lic = rem.get("licensed", {})
    est = rem.get("estimate")
    return {
        "conds": conds,
        "rows": [{"model": m, "cells": [_pct(acc[m].get(c)) for c in conds]} for m in acc],
        "psnr": [("protected (no removal)", _stats(rem.get("protected_psnr_in_box"), 1))]
                + [(a, _stats(v, 1)) for a, v in rem.get("attacker_psnr", {}).items()],
        "licensed_psnr": "\u221e (bit-exact)" if lic.get("exact_fraction") == 1
                         else _num((lic.get("psnr") or {}).get("median"), 1),
        "licensed_assumed": bool(lic.get("assumed_exact")),
        "licensed_exact": _pct(lic.get("exact_fraction")),
        "estimate": est and {"exact": _pct(est.get("box_exact_fraction")), "n": _int(est.get("n")),
                             "iou": _num((est.get("box_iou") or {}).get("median"), 2),
                             "opacity": _num((est.get("opacity_abs_error") or {}).get("median"), 1)},
    }


def _quality_rows(report: Mapping[str, Any]) -> dict[str, Any] | None:
    q = report.get("quality", {})
    if not q:
        return None
    rows = [("PSNR, whole image (dB)", q.get("psnr"), 2), ("PSNR, lesion-free region (dB)", q.get("psnr_lesion_free"), 2),
            ("PSNR outside the logo box (dB)", q.get("psnr_outside_logo"), 2),
            ("SSIM, whole image", q.get("ssim"), 4), ("SSIM, lesion-free region", q.get("ssim_lesion_free"), 4),
            ("logo area (% of image)", q.get("logo_area_pct"), 2), ("opacity (fraction of 255)", q.get("opacity"), 3)]
    lp = q.get("lesion_pixels_changed", {})
    return {"rows": [(name, _stats(s, d)) for name, s, d in rows], "lesion_total": _int(lp.get("total")),
            "lesion_ok": lp.get("total") == 0, "lesion_images": _int(lp.get("images_with_changes")),
            "lesion_max": _int(lp.get("max")), "without_logo": _int(q.get("n_without_logo"))}


# ----------------------------------------------------------------------------- helpers


def _subtitle(report: Mapping[str, Any]) -> str:
    d = report.get("data", {})
    size = d.get("image_size") or ["?", "?"]
    models = report.get("models", {})
    return (f"{d.get('n_images', '?')} images of {size[0]}\u00d7{size[1]} px, {len(models)} models "
            f"({sum(r.get('role') == 'white-box' for r in models.values())} white-box), "
            f"device {report.get('cost', {}).get('device', '?')}.")


def _figure(figures: Mapping[str, bytes], name: str) -> dict[str, str] | None:
    png = figures.get(name)
    if not png:
        return None
    return {"name": name, "caption": FIGURE_CAPTIONS.get(name, name),
            "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}


def _stats(s: Mapping[str, Any] | None, digits: int) -> list[str]:
    if not s:
        return [_DASH] * 4
    n, nonfinite = s.get("n", 0), s.get("n_nonfinite", 0)
    count = f"{n - nonfinite} / {n}" if nonfinite else f"{n}"
    return [_num(s.get("median"), digits), _num(s.get("mean"), digits), _num(s.get("p95"), digits), count]


def _finite(v: Any) -> float | None:
    if isinstance(v, str) and v in ("inf", "-inf"):
        return float(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
        return float(v)
    return None


def _pct(v: Any) -> str:
    f = _finite(v)
    return _DASH if f is None else f"{100.0 * f:.2f} %"


def _num(v: Any, digits: int) -> str:
    f = _finite(v)
    if f is None:
        return _DASH
    if math.isinf(f):
        return "\u221e" if f > 0 else "\u2212\u221e"
    return f"{f:,.{digits}f}"


def _int(v: Any) -> str:
    f = _finite(v)
    return _DASH if f is None else f"{int(f):,}"


def _ok(value: Any, target: Any) -> bool | None:
    v, t = _finite(value), _finite(target)
    return None if v is None or t is None else v <= t


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "figure"


_TEMPLATE = """\
{%- macro fig(f) %}{% if f %}<figure><img alt="{{ f.name }}" src="{{ f.src }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endif %}{% endmacro -%}
{%- macro verdict(ok) %}{% if ok is true %}<span class="good">meets target</span>{% elif ok is false %}<span class="bad">misses target</span>{% endif %}{% endmacro -%}
{%- macro stats(cells) %}{% for c in cells %}<td>{{ c }}</td>{% endfor %}{% endmacro -%}
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ css | safe }}</style></head><body><main>
<h1>{{ title }}{% if synthetic %}<span class="badge synthetic">synthetic data</span>{% else %}<span class="badge real">real data</span>{% endif %}</h1>
<p class="sub">{{ subtitle }}</p>
<nav><a href="#summary">Headline</a>{% if comparison %}<a href="#comparison">Configurations</a>{% endif %}{% if suite %}<a href="#suite">Attacker suite</a>{% endif %}<a href="#models">Models</a>{% if robustness %}<a href="#robustness">Robustness</a>{% endif %}{% if removal %}<a href="#removal">Removal</a>{% endif %}<a href="#quality">Quality</a><a href="#cost">Cost</a>{% if figures.grid %}<a href="#samples">Samples</a>{% endif %}</nav>
<section class="summary" id="summary"><h3 style="margin-top:0">Headline</h3>
<table class="headline"><tr><th>metric</th><th>MedLocker<br>({{ "synthetic data" if synthetic else "real data" }})</th><th>same models,<br>clean images</th><th>paper<br>(MIAD-MARK)</th><th>target</th><th></th><th style="text-align:left">over</th></tr>
{% for r in headline %}<tr><td>{{ r.name }}</td><td><b>{{ r.ours }}</b></td><td>{{ r.clean }}</td><td>{{ r.paper }}</td><td>{{ r.target }}</td><td>{{ verdict(r.ok) }}</td><td class="who">{{ r.over }}</td></tr>
{% endfor %}</table>
<p class="note">Lower accuracy on protected images means stronger protection. Paper: {{ paper_source }}.</p>
{% if near_chance %}<p class="note bad">{{ near_chance | join(", ") }}: clean accuracy within 5 points of chance ({{ chance }}, the majority-class rate); a low protected accuracy of such a model says nothing about the watermark.</p>{% endif %}
{% if synthetic %}<p class="note"><b>All MedLocker numbers on this page are measured on synthetic data</b> (the project's synthetic fundus generator); the paper's numbers are on real fundus datasets, so the two columns are not a like-for-like comparison.</p>{% endif %}
</section>
{% if comparison %}
<h2 id="comparison">Configurations compared{{ " (synthetic data)" if synthetic }}</h2>
<table><tr><th>configuration</th><th>surrogates</th><th>white-box acc</th><th>black-box acc</th><th>worst case (suite)</th><th>worst attack</th><th>oracle box</th><th>robust acc</th><th>queries (median)</th><th>s / image</th><th>lesion px changed</th></tr>
{% for row in comparison %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
<p class="note">Each configuration protected the same images; the sections below detail the configuration named in the title.</p>
{% endif %}
{% if suite_table %}
<h3>Held-out accuracy: configuration &times; attack</h3>
<table><tr><th>configuration</th>{% for a in suite_table.attacks %}<th>{{ a }}</th>{% endfor %}<th>worst case</th><th>oracle</th></tr>
{% for r in suite_table.rows %}<tr><td>{{ r.config }}</td>{% for c in r.cells %}<td>{{ c }}</td>{% endfor %}<td><b>{{ r.worst }}</b></td><td>{{ r.oracle }}</td></tr>
{% endfor %}</table>
{{ fig(figures.suite_table) }}
{% endif %}
{% if suite %}
<h2 id="suite">Attacker suite (public image, public logo, the attacker's own models)</h2>
<p>Worst case over the suite, held-out, oracle excluded: <b>{{ suite.worst.acc if suite.worst else "\u2014" }}</b>{% if suite.worst %} ({{ suite.worst.attack }}){% endif %}; oracle-box inpainting: <b>{{ suite.oracle or "\u2014" }}</b>.
{% if suite.box_found %} Template matching found the logo box (IoU &ge; 0.5) on {{ suite.box_found.rate }} of {{ suite.box_found.n }} marked images (median IoU {{ suite.box_found.iou }}).{% endif %}
{% if suite.remover %} The attacker's learned remover: {{ suite.remover.before }} dB &rarr; {{ suite.remover.after }} dB inside the box on {{ suite.remover.n }} held-out pasted images.{% endif %}</p>
<table><tr><th>model</th>{% for a in suite.attacks %}<th>{{ a }}<br><span class="note">{{ suite.kinds[loop.index0] }}</span></th>{% endfor %}</tr>
{% for r in suite.rows %}<tr><td>{{ r.model }}</td>{% for c in r.cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}<tr><td><b>{{ suite.held_out_label }}</b></td>{% for c in suite.held_out %}<td><b>{{ c }}</b></td>{% endfor %}</tr></table>
{% if suite.clean %}<h3>Reference: the same preprocessing / purification on clean images</h3>
<table><tr><th>model</th>{% for a in suite.attacks %}<th>{{ a }}</th>{% endfor %}</tr>
{% for r in suite.clean %}<tr><td>{{ r.model }}</td>{% for c in r.cells %}<td>{{ c if c != "\u2014" else "" }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{% if suite.psnr %}<h3>Attacker PSNR inside the true logo box (dB)</h3>
<table><tr><th>attack</th><th>median</th><th>mean</th><th>p95</th><th>images</th></tr>
{% for a, cells in suite.psnr %}<tr><td>{{ a }}</td>{{ stats(cells) }}</tr>
{% endfor %}</table>{% endif %}
<p class="note">graham: 4&middot;I &minus; 4&middot;Gauss(I, R/30) + 128 and a circular crop at 90 % of the field-of-view radius; clahe: CLAHE on L*a*b* L and the same crop{% for a, ms in suite.own_models %}; {{ a }} is measured on the attacker's own {{ ms }} trained on {{ a }}-preprocessed clean images{% endfor %}. inpaint_*: the public logo found by template matching over sizes and rotations, its dilated mask inpainted; learned_remover: a small mask + background U-Net the attacker trained on clean images with the public logo pasted on them; inverse_blend: the blend inverted at the found logo with the smoothest opacity; jpeg50/jpeg30/blur/bits4: purification; oracle_inpaint: the true box inpainted (an upper bound, not in the worst case).{% for a, why in suite.skipped %} Not run: {{ a }} ({{ why }}).{% endfor %}</p>
{{ fig(figures.suite) }}
{% endif %}
<h2 id="models">Models</h2>
<table><tr><th>model</th><th>role</th><th>clean acc</th><th>protected acc</th><th>attack success</th><th>clean-correct images</th></tr>
{% for m in models %}<tr><td>{{ m.name }}</td><td class="{{ 'wb' if m.role == 'white-box' else 'bb' }}">{{ m.role }}</td><td>{{ m.clean }}{% if m.near %} <span class="bad" title="clean accuracy near chance">(near chance)</span>{% endif %}</td><td><b>{{ m.protected }}</b></td><td>{{ m.asr }}</td><td>{{ m.correct }}</td></tr>
{% endfor %}</table>
<p class="note"><i>white-box</i>: used as a surrogate in the watermark search; <i>black-box</i>: held out, measures transfer. Attack success = share of the images a model gets right when clean that it gets wrong once protected.</p>
{{ fig(figures.transfer) }}
{% if robustness %}
<h2 id="robustness">Robustness to everyday transforms</h2>
{% for kind, label in [("protected", "Accuracy on protected images after each transform"), ("clean", "Reference: accuracy on clean images after the same transform")] %}
<h3>{{ label }}</h3><table><tr><th>model</th><th>none</th>{% for t in robustness.transforms %}<th>{{ t }}</th>{% endfor %}</tr>
{% for r in robustness[kind] %}<tr><td>{{ r.model }}</td><td>{{ r.base }}</td>{% for c in r.cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
<p class="note">jpeg<i>Q</i>: JPEG at quality <i>Q</i>; resize0.5: down &times;0.5 and back, bilinear; median3: 3&times;3 median; blur: Gaussian &sigma;=1; crop: central 90 % resized back; rotate / rotate-5: &plusmn;5&deg;, black fill. A transform that also drags the clean accuracy down to chance destroys the diagnosis itself, so it is no use to someone removing the watermark.</p>
{{ fig(figures.robustness) }}
{% endif %}
{% if removal %}
<h2 id="removal">Logo-removal attacks (no licence)</h2>
<h3>Accuracy after removal</h3><table><tr><th>model</th>{% for c in removal.conds %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in removal.rows %}<tr><td>{{ r.model }}</td>{% for c in r.cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</table>
<p class="note">inpaint_telea / inpaint_ns: OpenCV inpainting of the logo found by template matching; inverse_blend: the blend undone with box and opacity estimated from the public image; <code>*_oracle</code>: given the true placement (upper bound); none: the protected image as published; licensed: exact restoration.</p>
<h3>Attacker PSNR inside the true logo box (dB)</h3><table><tr><th>attack</th><th>median</th><th>mean</th><th>p95</th><th>images</th></tr>
{% for a, cells in removal.psnr %}<tr><td>{{ a }}</td>{{ stats(cells) }}</tr>
{% endfor %}<tr><td>licensed restoration</td><td colspan=3>{{ removal.licensed_psnr }}{% if removal.licensed_assumed %} &mdash; assumed, not measured here{% endif %}</td><td>{{ removal.licensed_exact }} exact</td></tr></table>
{% if removal.estimate %}<p class="note">Attacker's estimate from the public image: logo box exactly right on {{ removal.estimate.exact }} of {{ removal.estimate.n }} images (median IoU {{ removal.estimate.iou }}); opacity off by {{ removal.estimate.opacity }} / 255 (median, where the box was right).</p>{% endif %}
{{ fig(figures.removal) }}{{ fig(figures.removal_examples) }}
{% endif %}
{% if quality %}
<h2 id="quality">Image quality</h2><table><tr><th>protected vs original</th><th>median</th><th>mean</th><th>p95</th><th>images</th></tr>
{% for name, cells in quality.rows %}<tr><td>{{ name }}</td>{{ stats(cells) }}</tr>
{% endfor %}</table>
<p>Lesion-box pixels changed: <span class="{{ 'good' if quality.lesion_ok else 'bad' }}">{{ quality.lesion_total }}</span> in total, {{ quality.lesion_images }} images with any change (max {{ quality.lesion_max }} px). Images without a logo: {{ quality.without_logo }}.</p>
<p class="note">PSNR of an image with no change is infinite and is counted apart (&ldquo;images&rdquo; = finite / all). SSIM: Gaussian window 11&times;11, &sigma;=1.5, on luminance (Wang et al. 2004).</p>
{% endif %}
{% if cost %}
<h2 id="cost">Cost</h2><table><tr><th></th><th>median</th><th>mean</th><th>p95</th><th>images</th></tr>
<tr><td>model queries per image</td>{{ stats(cost.queries) }}</tr></table>
<p>Wall time: {{ cost.wall }} s in total, {{ cost.per_image }} s per image, on <code>{{ cost.device }}</code>.</p>
{{ fig(figures.distributions) }}
{% endif %}
{% if figures.grid %}<h2 id="samples">Samples</h2>{{ fig(figures.grid) }}{% endif %}
{% if extra_figures %}<h2 id="more">More figures</h2>{% for f in extra_figures %}{{ fig(f) }}{% endfor %}{% endif %}
{% if meta %}<h2 id="meta">Run</h2><table>{% for k, v in meta %}<tr><td>{{ k }}</td><td style="text-align:left;white-space:normal">{{ v }}</td></tr>{% endfor %}</table>{% endif %}
</main></body></html>
"""
