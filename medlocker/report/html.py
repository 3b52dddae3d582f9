"""One self-contained HTML page (and a JSON twin) from an evaluation report.

The page embeds every figure as a ``data:image/png;base64`` URI and carries its
CSS inline: no external URL, font or script, so it can be mailed, archived or
opened offline. Numbers measured on synthetic data are labelled as such.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

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
    """Render the report as one self-contained HTML page.

    Args:
        report: the dict from :func:`medlocker.report.evaluate.evaluate`
            (optionally with a ``comparison`` section added by the pipeline).
        figures: figure name -> PNG bytes; known names get their caption from
            :data:`FIGURE_CAPTIONS`, others are shown with their name.
    """
    synthetic = bool(report.get("synthetic", True))
    title = str(report.get("title", "MedLocker evaluation"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(title)}{_badge(synthetic)}</h1>",
        f'<p class="sub">{escape(_subtitle(report))}</p>',
        _nav(report, figures),
        _summary(report, synthetic),
    ]
    if report.get("comparison"):
        parts.append(_comparison(report["comparison"], synthetic))
    parts += [
        _models_section(report, figures),
        _robustness_section(report, figures),
        _removal_section(report, figures),
        _quality_section(report, figures),
        _cost_section(report, figures),
        _samples_section(figures),
    ]
    extra = [k for k in figures if k not in FIGURE_CAPTIONS]
    if extra:
        parts.append('<h2 id="more">More figures</h2>' + "".join(_figure(figures, k) for k in extra))
    if report.get("meta"):
        parts.append('<h2 id="meta">Run</h2>' + _kv_table(report["meta"]))
    parts.append("</main></body></html>")
    return "\n".join(p for p in parts if p)


# ----------------------------------------------------------------------------- sections


def _summary(report: Mapping[str, Any], synthetic: bool) -> str:
    h = report.get("headline", {})
    paper = h.get("paper", {})
    targets = h.get("targets", {})
    models = report.get("models", {})
    data_label = "synthetic data" if synthetic else "real data"

    def clean_of(names: Sequence[str]) -> str:
        accs = [_finite(models.get(m, {}).get("clean_acc")) for m in names]
        accs = [a for a in accs if a is not None]
        return _pct(sum(accs) / len(accs)) if accs else "&mdash;"

    def who(names: Sequence[str]) -> str:
        return ", ".join(escape(m) + (" <span class='bad'>(near chance)</span>"
                                      if models.get(m, {}).get("near_chance") else "") for m in names) or "none"

    white, black = h.get("white_box_models", []), h.get("black_box_models", [])
    rows = [
        ("White-box accuracy on protected images", _pct(h.get("white_box_acc")), clean_of(white),
         _pct(paper.get("white_box_acc")), "&le; " + _pct(targets.get("white_box_acc")),
         _ok(h.get("white_box_acc"), targets.get("white_box_acc")), who(white)),
        ("Black-box accuracy (held-out models)", _pct(h.get("black_box_acc")), clean_of(black),
         _pct(paper.get("black_box_acc")), "&le; " + _pct(targets.get("black_box_acc")),
         _ok(h.get("black_box_acc"), targets.get("black_box_acc")), who(black)),
        ("After JPEG q75 / resize &times;0.5 / median 3&times;3", _pct(h.get("robust_acc")), clean_of(list(models)),
         "not reported", "&le; " + _pct(targets.get("robust_acc")),
         _ok(h.get("robust_acc"), targets.get("robust_acc")), "all models, mean of the three"),
        ("Lesion-box pixels changed", _int(h.get("lesion_pixels_changed")), "", "&mdash;", "0",
         _ok(h.get("lesion_pixels_changed"), targets.get("lesion_pixels_changed")), "all images"),
        ("Model queries per image (median)", _num(h.get("queries_median"), 1), "", "up to ~4,000 (BHE)",
         "&le; " + _int(targets.get("queries_median")), _ok(h.get("queries_median"), targets.get("queries_median")),
         "the search"),
    ]
    body = "".join(
        f"<tr><td>{name}</td><td><b>{ours}</b></td><td>{clean}</td><td>{p}</td><td>{t}</td><td>{ok}</td>"
        f"<td class='who'>{over}</td></tr>"
        for name, ours, clean, p, t, ok, over in rows
    )
    warn = (f'<p class="note"><b>All MedLocker numbers on this page are measured on synthetic data</b> '
            f"(the project's synthetic fundus generator); the paper's numbers are on real fundus datasets, so "
            f"the two columns are not a like-for-like comparison.</p>" if synthetic else "")
    chance = _finite(report.get("data", {}).get("chance_acc"))
    near = [m for m, r in models.items() if r.get("near_chance")]
    chance_note = (f'<p class="note bad">{", ".join(escape(m) for m in near)}: clean accuracy within 5 points of '
                   f"chance ({_pct(chance)}, the majority-class rate); a low protected accuracy of such a model "
                   f"says nothing about the watermark.</p>" if near else "")
    return (
        f'<section class="summary" id="summary"><h3 style="margin-top:0">Headline</h3>'
        f"<table class='headline'><tr><th>metric</th><th>MedLocker<br>({data_label})</th>"
        f"<th>same models,<br>clean images</th><th>paper<br>(MIAD-MARK)</th><th>target</th><th></th>"
        f"<th style='text-align:left'>over</th></tr>{body}</table>"
        f'<p class="note">Lower accuracy on protected images means stronger protection. Paper: '
        f"{escape(str(paper.get('source', 'MIAD-MARK')))}.</p>{chance_note}{warn}</section>"
    )


def _comparison(rows: Sequence[Mapping[str, Any]], synthetic: bool) -> str:
    cols = [("config", "configuration"), ("surrogates", "surrogates"), ("white_box_acc", "white-box acc"),
            ("black_box_acc", "black-box acc"), ("robust_acc", "robust acc"), ("queries_median", "queries (median)"),
            ("wall_time_per_image_s", "s / image"), ("lesion_pixels_changed", "lesion px changed")]
    head = "".join(f"<th>{escape(label)}</th>" for _, label in cols)
    body = ""
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r.get(key)
            if key.endswith("_acc"):
                cells.append(_pct(v))
            elif key == "queries_median" or key == "wall_time_per_image_s":
                cells.append(_num(v, 2 if key.startswith("wall") else 1))
            elif isinstance(v, (list, tuple)):
                cells.append(escape(", ".join(map(str, v))))
            else:
                cells.append(escape(str(v)) if v is not None else "&mdash;")
        body += "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    label = " (synthetic data)" if synthetic else ""
    return (f'<h2 id="comparison">Search configurations compared{label}</h2>'
            f"<table><tr>{head}</tr>{body}</table>"
            f'<p class="note">Each configuration protected the same images; the sections below detail the '
            f"configuration named in the title.</p>")


def _models_section(report: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    rows = ""
    for name, r in report.get("models", {}).items():
        role = r.get("role", "")
        cls = "wb" if role == "white-box" else "bb"
        flag = " <span class='bad' title='clean accuracy near chance'>(near chance)</span>" if r.get("near_chance") else ""
        rows += (f"<tr><td>{escape(name)}</td><td class='{cls}'>{escape(role)}</td><td>{_pct(r.get('clean_acc'))}{flag}</td>"
                 f"<td><b>{_pct(r.get('protected_acc'))}</b></td><td>{_pct(r.get('asr'))}</td>"
                 f"<td>{_int(r.get('n_clean_correct'))}</td></tr>")
    table = ("<table><tr><th>model</th><th>role</th><th>clean acc</th><th>protected acc</th>"
             "<th>attack success</th><th>clean-correct images</th></tr>" + rows + "</table>")
    note = ('<p class="note"><i>white-box</i>: used as a surrogate in the watermark search; <i>black-box</i>: held '
            "out, measures transfer. Attack success = share of the images a model gets right when clean that it "
            "gets wrong once protected.</p>")
    return '<h2 id="models">Models</h2>' + table + note + _figure(figures, "transfer")


def _robustness_section(report: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    rob = report.get("robustness", {})
    ts = list(rob.get("transforms", []))
    if not ts:
        return ""
    models = report.get("models", {})
    head = "<tr><th>model</th><th>none</th>" + "".join(f"<th>{escape(t)}</th>" for t in ts) + "</tr>"

    def table(kind: str) -> str:
        body = ""
        for m in rob.get(kind, {}):
            base = models.get(m, {}).get("protected_acc" if kind == "protected" else "clean_acc")
            body += (f"<tr><td>{escape(m)}</td><td>{_pct(base)}</td>"
                     + "".join(f"<td>{_pct(rob[kind][m].get(t))}</td>" for t in ts) + "</tr>")
        return "<table>" + head + body + "</table>"

    return ('<h2 id="robustness">Robustness to everyday transforms</h2>'
            "<h3>Accuracy on protected images after each transform</h3>" + table("protected")
            + "<h3>Reference: accuracy on clean images after the same transform</h3>" + table("clean")
            + '<p class="note">jpeg<i>Q</i>: JPEG at quality <i>Q</i>; resize0.5: down &times;0.5 and back, '
              "bilinear; median3: 3&times;3 median; blur: Gaussian &sigma;=1; crop: central 90 % resized back; "
              "rotate / rotate-5: &plusmn;5&deg;, black fill. A transform that also drags the clean accuracy "
              "down to chance destroys the diagnosis itself, so it is no use to someone removing the watermark.</p>"
            + _figure(figures, "robustness"))


def _removal_section(report: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    rem = report.get("removal", {})
    acc = rem.get("accuracy", {})
    if not acc:
        return ""
    conds: list[str] = []
    for m in acc:
        conds += [c for c in acc[m] if c not in conds]
    head = "<tr><th>model</th>" + "".join(f"<th>{escape(c)}</th>" for c in conds) + "</tr>"
    body = "".join(
        f"<tr><td>{escape(m)}</td>" + "".join(f"<td>{_pct(acc[m].get(c))}</td>" for c in conds) + "</tr>" for m in acc
    )
    lic = rem.get("licensed", {})
    psnr_rows = f"<tr><td>protected (no removal)</td>{_stats_cells(rem.get('protected_psnr_in_box'), 1)}</tr>"
    for a, s in rem.get("attacker_psnr", {}).items():
        psnr_rows += f"<tr><td>{escape(a)}</td>{_stats_cells(s, 1)}</tr>"
    lic_psnr = "&infin; (bit-exact)" if lic.get("exact_fraction") == 1 else _num(lic.get("psnr", {}).get("median"), 1)
    psnr_rows += (f"<tr><td>licensed restoration</td><td colspan=3>{lic_psnr}"
                  f"{' &mdash; assumed, not measured here' if lic.get('assumed_exact') else ''}</td>"
                  f"<td>{_pct(lic.get('exact_fraction'))} exact</td></tr>")
    est = rem.get("estimate")
    est_note = ""
    if est:
        est_note = (f'<p class="note">Attacker\'s estimate from the public image: logo box exactly right on '
                    f"{_pct(est.get('box_exact_fraction'))} of {_int(est.get('n'))} images "
                    f"(median IoU {_num(est.get('box_iou', {}).get('median'), 2)}); opacity off by "
                    f"{_num(est.get('opacity_abs_error', {}).get('median'), 1)} / 255 (median, where the box was "
                    f"right).</p>")
    return ('<h2 id="removal">Logo-removal attacks (no licence)</h2>'
            "<h3>Accuracy after removal</h3><table>" + head + body + "</table>"
            + '<p class="note">inpaint_telea / inpaint_ns: OpenCV inpainting of the logo found by template matching; '
              "inverse_blend: the blend undone with box and opacity estimated from the public image; "
              "<code>*_oracle</code>: given the true placement (upper bound); none: the protected image as "
              "published; licensed: exact restoration.</p>"
            + "<h3>Attacker PSNR inside the true logo box (dB)</h3><table><tr><th>attack</th><th>median</th>"
              "<th>mean</th><th>p95</th><th>images</th></tr>" + psnr_rows + "</table>" + est_note
            + _figure(figures, "removal") + _figure(figures, "removal_examples"))


def _quality_section(report: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    q = report.get("quality", {})
    if not q:
        return ""
    rows = [("PSNR, whole image (dB)", q.get("psnr"), 2), ("PSNR, lesion-free region (dB)", q.get("psnr_lesion_free"), 2),
            ("SSIM, whole image", q.get("ssim"), 4), ("SSIM, lesion-free region", q.get("ssim_lesion_free"), 4),
            ("logo area (% of image)", q.get("logo_area_pct"), 2), ("opacity (fraction of 255)", q.get("opacity"), 3)]
    body = "".join(f"<tr><td>{name}</td>{_stats_cells(s, d)}</tr>" for name, s, d in rows)
    lp = q.get("lesion_pixels_changed", {})
    cls = "good" if lp.get("total") == 0 else "bad"
    return ('<h2 id="quality">Image quality</h2><table><tr><th>protected vs original</th><th>median</th><th>mean</th>'
            "<th>p95</th><th>images</th></tr>" + body + "</table>"
            + f'<p>Lesion-box pixels changed: <span class="{cls}">{_int(lp.get("total"))}</span> in total, '
              f"{_int(lp.get('images_with_changes'))} images with any change (max {_int(lp.get('max'))} px). "
              f"Images without a logo: {_int(q.get('n_without_logo'))}.</p>"
            + '<p class="note">PSNR of an image with no change is infinite and is counted apart '
              "(&ldquo;images&rdquo; = finite / all). SSIM: Gaussian window 11&times;11, &sigma;=1.5, on luminance "
              "(Wang et al. 2004).</p>")


def _cost_section(report: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    c = report.get("cost", {})
    if not c:
        return ""
    return ('<h2 id="cost">Cost</h2><table><tr><th></th><th>median</th><th>mean</th><th>p95</th><th>images</th></tr>'
            f"<tr><td>model queries per image</td>{_stats_cells(c.get('queries'), 1)}</tr></table>"
            f"<p>Wall time: {_num(c.get('wall_time_s'), 1)} s in total, "
            f"{_num(c.get('wall_time_per_image_s'), 3)} s per image, on <code>{escape(str(c.get('device')))}</code>."
            "</p>" + _figure(figures, "distributions"))


def _samples_section(figures: Mapping[str, bytes]) -> str:
    return '<h2 id="samples">Samples</h2>' + _figure(figures, "grid") if "grid" in figures else ""


# ----------------------------------------------------------------------------- helpers


def _subtitle(report: Mapping[str, Any]) -> str:
    d = report.get("data", {})
    size = d.get("image_size") or ["?", "?"]
    models = report.get("models", {})
    return (f"{d.get('n_images', '?')} images of {size[0]}×{size[1]} px, {len(models)} models "
            f"({sum(r.get('role') == 'white-box' for r in models.values())} white-box), "
            f"device {report.get('cost', {}).get('device', '?')}.")


def _nav(report: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    links = [("summary", "Headline")]
    if report.get("comparison"):
        links.append(("comparison", "Configurations"))
    links += [("models", "Models"), ("robustness", "Robustness"), ("removal", "Removal"), ("quality", "Quality"),
              ("cost", "Cost")]
    if "grid" in figures:
        links.append(("samples", "Samples"))
    return "<nav>" + "".join(f'<a href="#{i}">{t}</a>' for i, t in links) + "</nav>"


def _badge(synthetic: bool) -> str:
    return ('<span class="badge synthetic">synthetic data</span>' if synthetic
            else '<span class="badge real">real data</span>')


def _figure(figures: Mapping[str, bytes], name: str) -> str:
    png = figures.get(name)
    if not png:
        return ""
    caption = FIGURE_CAPTIONS.get(name, name)
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _kv_table(d: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td style='text-align:left;white-space:normal'>"
                   f"{escape(json.dumps(to_jsonable(v)))}</td></tr>" for k, v in d.items())
    return f"<table>{rows}</table>"


def _stats_cells(s: Mapping[str, Any] | None, digits: int) -> str:
    if not s:
        return "<td>&mdash;</td>" * 4
    n, nonfinite = s.get("n", 0), s.get("n_nonfinite", 0)
    count = f"{n - nonfinite} / {n}" if nonfinite else f"{n}"
    return (f"<td>{_num(s.get('median'), digits)}</td><td>{_num(s.get('mean'), digits)}</td>"
            f"<td>{_num(s.get('p95'), digits)}</td><td>{count}</td>")


def _finite(v: Any) -> float | None:
    if isinstance(v, str) and v in ("inf", "-inf"):
        return float(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
        return float(v)
    return None


def _pct(v: Any) -> str:
    f = _finite(v)
    return "&mdash;" if f is None else f"{100.0 * f:.2f} %"


def _num(v: Any, digits: int) -> str:
    f = _finite(v)
    if f is None:
        return "&mdash;"
    if math.isinf(f):
        return "&infin;" if f > 0 else "&minus;&infin;"
    return f"{f:,.{digits}f}"


def _int(v: Any) -> str:
    f = _finite(v)
    return "&mdash;" if f is None else f"{int(f):,}"


def _ok(value: Any, target: Any) -> str:
    v, t = _finite(value), _finite(target)
    if v is None or t is None:
        return ""
    return '<span class="good">meets target</span>' if v <= t else '<span class="bad">misses target</span>'


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "figure"
