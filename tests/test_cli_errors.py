"""One-line exits for user errors, tracebacks for everything else, and the one version string."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import cli
import dataengine
import trajtok

ROOT = Path(__file__).resolve().parents[1]


def run_cli(app: str, args: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    """The real command line in a fresh interpreter (so an uncaught error prints Python's traceback)."""
    code = f"import sys, cli\n{prelude}\nsys.argv = ['{app}', *sys.argv[1:]]\ncli.{app}_main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_a_user_error_is_one_line_and_exit_2(tmp_path):
    result = run_cli("trajdata", ["annotate", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                                  "--segmenter", "nope"])
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unknown segmenter 'nope'"), result.stderr
    assert not (tmp_path / "o").exists()


def test_a_runtime_error_inside_a_command_keeps_its_traceback(tmp_path):
    # What CUDA running out of memory raises (torch.OutOfMemoryError is a RuntimeError).
    prelude = ("import dataengine.tools.stats as s\n"
               "def collect(d): raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')\n"
               "s.collect = collect")
    result = run_cli("trajdata", ["stats", str(tmp_path)], prelude)
    assert result.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in result.stderr and "in collect" in result.stderr
    assert "RuntimeError: CUDA out of memory" in result.stderr


def test_trajtok_user_errors_are_one_line_too(tmp_path):
    result = CliRunner().invoke(cli.trajtok_app, ["eval-segmenter", "--checkpoint", str(tmp_path / "none.safetensors"),
                                                  "--data", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "error" in line]
    assert errors == [result.output.splitlines()[-1]] and "none.safetensors" in errors[0], result.output


def test_one_version_string():
    assert trajtok.__version__ == dataengine.ENGINE_VERSION == dataengine.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()    # (tomllib is Python 3.11+; the project runs on 3.10)
    assert 'dynamic = ["version"]' in pyproject and 'version = { attr = "dataengine.__version__" }' in pyproject
    assert not any(line.startswith("version = \"") for line in pyproject.splitlines())
    for app, name in ((cli.trajdata, "trajdata"), (cli.trajtok_app, "trajtok")):
        result = CliRunner().invoke(app, ["--version"])
        assert result.exit_code == 0 and result.stdout.strip() == f"{name} {dataengine.__version__}"
