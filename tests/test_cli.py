"""The ``medlocker`` command: dispatch, help, version, the tools/ entry points, and a wheel install."""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from medlocker.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's --help / --version / usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command_and_version_comes_from_the_distribution(capsys) -> None:
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and out.startswith("usage: medlocker")
    for name in ("demo", "synth", "train", "keygen", "pack", "license", "verify", "evaluate", "report"):
        assert f"\n  {name} " in out
    assert _run(capsys, "--version")[:2] == (0, f"medlocker {VERSION}\n")
    code, _, err = _run(capsys)  # no command: the help, and a usage exit code
    assert code == 2 and "COMMAND" in err
    code, _, err = _run(capsys, "unpack")
    assert code == 2 and "invalid choice: 'unpack'" in err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_explains_itself_under_its_own_name(capsys, name: str) -> None:
    assert importlib.import_module(f"medlocker.cli.{name}").build_parser().prog == f"medlocker {name}"
    code, out, _ = _run(capsys, name, "--help")
    assert code == 0 and out.startswith(f"usage: medlocker {name}") and len(out.splitlines()) > 5


def test_tools_are_thin_entry_points_over_the_same_functions() -> None:
    tools = sorted(p for p in (ROOT / "tools").glob("*.py") if p.stem != "make_logo")
    assert {p.stem for p in tools} == set(COMMANDS) - {"demo", "report"}
    for p in tools:
        text = p.read_text()
        assert len(text.splitlines()) <= 8 and f"from medlocker.cli.{p.stem} import main" in text
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "license.py"), "--help"], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.startswith("usage: medlocker license")
    out = subprocess.run([sys.executable, "-m", "medlocker", "--version"], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out == f"medlocker {VERSION}\n"


def test_errors_are_one_line_with_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = _run(capsys, "verify", "dataset", str(tmp_path), "--owner", str(tmp_path / "missing.pub"))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "missing.pub" in err
    code, _, err = _run(capsys, "report", "--summarize")
    assert code == 2 and "--summarize needs" in err


def test_store_errors_name_the_url_and_what_to_do(capsys, tmp_path: Path) -> None:
    """Without a server: an unknown protocol, a back end that is not installed (S3 cases: test_s3.py)."""
    from shardkit import OWNER
    from medlocker.cli.remote import urls_in

    OWNER.save(tmp_path / "owner")
    code, _, err = _run(capsys, "verify", "dataset", "nosuch://bucket/ds", "--owner", str(tmp_path / "owner.pub"))
    assert code == 2 and err.startswith("error: nosuch://bucket/ds: Protocol not known") and err.count("\n") == 1
    if importlib.util.find_spec("gcsfs") is None:
        code, _, err = _run(capsys, "verify", "dataset", "gs://bucket/ds", "--owner", str(tmp_path / "owner.pub"))
        assert code == 2 and err.startswith("error: gs://bucket/ds:") and "gcsfs" in err and err.count("\n") == 1
    argv = ["x", "s3://b/ds", "--storage-option", "endpoint_url=http://h:1", "--out=ftp://user:pw@host/x", "local"]
    assert urls_in(argv) == ["s3://b/ds", "ftp://***@host/x"]


def _chain(medlocker: list[str], tmp: Path, run) -> None:
    """synth -> train -> keygen x2 -> pack -> license -> verify, through ``run(argv)``."""
    src, keys = tmp / "src", tmp / "keys"
    run([*medlocker, "synth", "--out", str(src), "--n", "8", "--size", "48", "--no-progress"])
    run([*medlocker, "train", "--data", str(src), "--arch", "smallcnn", "--epochs", "1", "--size", "48",
         "--batch-size", "8", "--device", "cpu", "--out", str(tmp / "m.pt")])
    for who in ("owner", "alice"):
        run([*medlocker, "keygen", "--out", str(keys / who), "--name", who])
    run([*medlocker, "pack", "--input", str(src), "--out", str(tmp / "ds"), "--secrets", str(tmp / "secrets"),
         "--owner", str(keys / "owner.key"), "--model", str(tmp / "m.pt"), "--optimizer", "blackbox",
         "--budget", "8", "--logo-scale", "0.02", "--lesion-margin", "1", "--shard-size", "4", "--device", "cpu",
         "--workers", "1", "--read-processes", "0", "--allow-rejects"])
    run([*medlocker, "license", "--owner", str(keys / "owner.key"), "--secrets", str(tmp / "secrets"),
         "--dataset", str(tmp / "ds"), "--to", str(keys / "alice.pub"), "--expires", "2099-01-01",
         "--out", str(tmp / "alice.license")])
    run([*medlocker, "verify", "dataset", str(tmp / "ds"), "--owner", str(keys / "owner.pub"), "--quiet"])


def _check_licensed_read(tmp: Path) -> None:
    """Alice reads every published sample (pack may reject an image with no lesion-free room)."""
    from medlocker.crypto import Identity, PublicIdentity
    from medlocker.dataset import LicensedDataset
    from medlocker.shards import read_manifest

    owner = PublicIdentity.load(tmp / "keys" / "owner.pub")
    ds = LicensedDataset(str(tmp / "ds"), license=tmp / "alice.license", identity=Identity.load(tmp / "keys" / "alice.key"),
                         owner=owner)
    assert sum(1 for _ in ds) == read_manifest(str(tmp / "ds"), owner).num_samples > 0


def test_the_whole_flow_through_the_command(tmp_path: Path, capsys) -> None:
    def run(argv: list[str]) -> None:
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"medlocker {' '.join(argv)}: exit {code}\n{out}\n{err}"
        if argv[0] == "verify":
            assert out.startswith("OK: ")

    _chain([], tmp_path, run)
    published = {p.name for p in (tmp_path / "ds").iterdir()}
    assert {"README.md", "shardindex.json", "manifest.dsse.json"} <= published  # the catalog, pinned
    _check_licensed_read(tmp_path)


def _venv_from_wheel(tmp: Path) -> Path:
    """Build a wheel from a copy of the checkout, install it alone into a fresh virtual environment.

    The environment sees this interpreter's packages (torch, ...) through a ``.pth`` file:
    ``--system-site-packages`` would not, when this interpreter is itself a venv. The
    checkout's own ``medlocker`` (editable install, PYTHONPATH) stays out of sight.
    """
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "tests", "benchmarks", "runs", "out", ".*"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "wheel"), str(src)], env=env, check=True, capture_output=True, timeout=300)
    (wheel,) = glob.glob(str(tmp / "wheel" / "medlocker-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site_dir,) = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
    Path(site_dir, "parent-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
                   env=env, check=True, capture_output=True, timeout=300)
    return venv


@pytest.mark.slow
def test_a_wheel_built_from_the_checkout_runs_every_command(tmp_path: Path) -> None:
    venv = _venv_from_wheel(tmp_path)
    work = tmp_path / "work"  # not the checkout: nothing can import medlocker from the current folder
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(argv: list[str]) -> str:
        p = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"{' '.join(argv)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    medlocker = str(venv / "bin" / "medlocker")
    assert run([medlocker, "--version"]) == f"medlocker {VERSION}\n"
    where = run([str(venv / "bin" / "python"), "-c", "import medlocker, medlocker.watermark as w; "
                 "print(medlocker.__file__); print(w.default_logo().shape)"]).split()
    assert where[0].startswith(str(venv)) and where[1].startswith("(")  # the installed copy, logo asset included
    progs = run([str(venv / "bin" / "python"), "-c", "import importlib; from medlocker.cli.main import COMMANDS; "
                 "print(*(importlib.import_module(f'medlocker.cli.{n}').build_parser().prog for n in COMMANDS), sep=',')"])
    assert progs.strip().split(",") == [f"medlocker {name}" for name in COMMANDS]  # every module is in the wheel
    assert run([medlocker, "report", "--help"]).startswith("usage: medlocker report")
    assert run([str(venv / "bin" / "python"), "-m", "medlocker", "--help"]).startswith("usage: medlocker")
    _chain([medlocker], tmp_path, run)
    _check_licensed_read(tmp_path)
