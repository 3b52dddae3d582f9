"""Smoke test of benchmarks/attack.py: the --quick CPU run and the shape of its JSON (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "attack.py"
OPTIMIZERS = ("gradient", "blackbox", "bhe")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_attack", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def attack() -> ModuleType:
    return _load()


@pytest.fixture(scope="module")
def quick(attack: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "attack_quick.json"
    attack.main(["--quick", "--device", "cpu", "--optimizers", ",".join(OPTIMIZERS), "--out", str(out)])
    return json.loads(out.read_text()), out


def test_quick_report_header(quick: tuple[dict, Path]) -> None:
    report, _ = quick
    assert report["format"] == "medlocker.bench.attack" and report["version"] == 1
    assert report["complete"] is True and report["synthetic_data"] is True
    assert report["env"]["device"] == "cpu" and report["env"]["torch"]
    assert report["precision"] == {"requested": "bf16", "search": "fp32", "checks": "fp32"}
    model = report["model"]
    assert model["source"] == "trained" and model["arch"] == "smallcnn" and model["train"]["steps"] == 80
    assert 0.0 <= model["clean_accuracy"] <= 1.0
    assert report["raw"]["forward"]["fp32"] > 0 and report["raw"]["forward_backward"]["fp32"] > 0
    assert report["curve_budgets"] == sorted(report["curve_budgets"])
    assert report["curve_budgets"][-1] == report["args"]["budget"]


def test_quick_report_optimizers(quick: tuple[dict, Path]) -> None:
    report, _ = quick
    measured, errors = report["optimizers"], report["errors"]
    assert set(measured) | set(errors) == set(OPTIMIZERS)
    assert measured, errors
    budget = report["args"]["budget"]
    n = report["images"]["n"]
    for name, e in measured.items():
        assert e["images"] == n >= 1, name
        curve = [e["curve"][str(b)] for b in report["curve_budgets"]]
        assert all(0.0 <= c <= 1.0 for c in curve) and curve == sorted(curve), (name, curve)
        assert curve[-1] == pytest.approx(e["success_rate"])
        assert 1 <= e["max_queries"] <= budget
        assert e["protected_images_per_s"] > 0 and e["overhead_ratio"] > 0 and e["model_share"] > 0
        assert sum(e["statuses"].values()) == n
        # One surrogate, no EOT views, no fp32 confirmations on CPU: every query is one model row.
        assert sum(e["model_rows"].values()) == round(e["mean_queries"] * n), (name, e["model_rows"])
    if "bhe" in measured:
        assert set(report["versus_baseline"]) == set(measured) - {"bhe"}


def test_summary_table(attack: ModuleType, quick: tuple[dict, Path], capsys: pytest.CaptureFixture[str]) -> None:
    report, path = quick
    out = attack.summary(path.parent)
    assert {r["optimizer"] for r in out["rows"]} == set(OPTIMIZERS)
    assert json.loads((path.parent / "summary.json").read_text())["rows"] == json.loads(json.dumps(out["rows"]))
    assert "attack_quick" in capsys.readouterr().out


def test_summarise_curve(attack: ModuleType) -> None:
    r = lambda ok, q, status="fooled": SimpleNamespace(success=ok, queries=q, status=status, margin=-1.0)  # noqa: E731
    results = [r(True, 8), r(True, 40), r(False, 100, "not_fooled"), r(False, 1, "no_feasible_position")]
    s = attack.summarise(results, 2.0, [10, 50, 100])
    assert s["curve"] == {"10": 0.25, "50": 0.5, "100": 0.5}
    assert s["curve_feasible"]["100"] == pytest.approx(2 / 3)
    assert s["median_queries"] == 40 and s["median_queries_to_success"] == 24
    assert s["protected_images_per_s"] == 2.0 and s["feasible_images"] == 3


def test_imports_neither_webdataset_nor_cryptography() -> None:
    # The GPU image has neither: the benchmark must import without them.
    code = ("import sys, runpy; sys.modules['webdataset'] = None; sys.modules['cryptography'] = None; "
            f"runpy.run_path({str(SCRIPT)!r}); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
