"""The datarena command: help, generation, and error handling without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "datarena.cli"]


def run(*args, **kw):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300, **kw)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("generate", "demo", "serve", "admin"):
        assert cmd in out.stdout, cmd


def test_error_exits_2_without_traceback(tmp_path):
    out = run("generate", "exercise", "77", "--out", str(tmp_path / "x"))
    assert out.returncode == 2
    assert "unknown exercise id '77'" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "x").exists()


def test_generate_exercise_and_force(tmp_path):
    out_dir = tmp_path / "ex"
    res = run("generate", "exercise", "04", "--out", str(out_dir), "--seed", "3", "--mix-rate", "0.1")
    assert res.returncode == 0, res.stderr
    assert (out_dir / "public" / "04_mnist_uniform_color_random_row" / "X_val.npy").exists()
    again = run("generate", "exercise", "04", "--out", str(out_dir))
    assert again.returncode == 2 and "--force" in again.stderr
    bad = run("generate", "exercise", "04", "--out", str(tmp_path / "y"), "--mix-rate", "-0.2")
    assert bad.returncode == 2 and "[0, 1]" in bad.stderr


@pytest.mark.parametrize("missing", ["--mnist-dir"])
def test_missing_source_option(tmp_path, missing):
    res = run("generate", "exercise", "01", "--out", str(tmp_path / "z"), missing, str(tmp_path / "none"))
    assert res.returncode == 2 and "train-images-idx3-ubyte" in res.stderr


def test_solve_command_local_oracle(suite_dir, tmp_path):
    import json

    res = run("solve", str(suite_dir / "public" / "00_toy_dataset"), "--solver", "divdis", "--oracle", "local", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    labels = (tmp_path / "00_toy_dataset_divdis_labels.csv").read_text().split()
    assert len(labels) == 500 and set(labels) <= {"0", "1"}
    report = json.loads((tmp_path / "00_toy_dataset_divdis_report.json").read_text())
    assert len(report["reveals"]) <= 5 and report["score"]["accuracy"] >= 0.9
    assert (tmp_path / "00_toy_dataset_divdis_saliency.png").exists()
    bad = run("solve", str(suite_dir / "public" / "00_toy_dataset"), "--oracle", "crystal-ball", "--out", str(tmp_path))
    assert bad.returncode == 2 and "unknown oracle" in bad.stderr


def test_help_does_not_import_torch():
    """`datarena --help` stays quick: no command module imports torch until it runs."""
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom datarena.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
