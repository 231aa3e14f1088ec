"""One-line exits for user errors, tracebacks for everything else, and the one version string."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
import dataengine
import trajtok
from dataengine.errors import UserError

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


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small synth corpus, a toy segmenter checkpoint and the wrong things users point commands at."""
    import torch

    from dataengine.tools.synth import make_corpus
    from fixtures.trajtok_toy import toy_preset
    from trajtok.checkpoint import save_segmenter
    from trajtok.models.segmenter import build_segmenter

    d = tmp_path_factory.mktemp("mistakes")
    make_corpus(d / "syn", videos=1, images=1, seed=0, n_frames=4, style="flat")
    torch.manual_seed(0)
    save_segmenter(build_segmenter(toy_preset().model), d / "seg.safetensors")
    (d / "junk.safetensors").write_bytes(b"a download that stopped early")
    (d / "empty.pt").write_bytes(b"")
    (d / "broken.yaml").write_text("keyframes: [\n")
    (d / "badtype.yaml").write_text("keyframes: {max_gap: eight}\n")
    (d / "empty").mkdir()
    (d / "exported").mkdir()
    (d / "annotated" / "manifest").mkdir(parents=True)     # what the writer reads as finished work
    (d / "annotated" / "manifest" / "part-000000.parquet").write_bytes(b"")
    (d / "trained").mkdir()
    (d / "trained" / "last.safetensors").write_bytes(b"")
    # Damaged datasets: a shard cut short, a tar of another kind under a shard's name, a torn manifest part.
    import shutil
    for name in ("broken", "foreign", "torn"):
        shutil.copytree(d / "syn" / "gt", d / name)
    shard = d / "broken" / "gt-000000.tar"
    shard.write_bytes(shard.read_bytes()[:1500])
    (d / "foreign" / "gt-000000.tar").write_bytes(next((d / "syn" / "wds" / "videos").glob("*.tar")).read_bytes())
    part = d / "torn" / "manifest" / "part-000000.parquet"
    part.write_bytes(part.read_bytes()[:100])
    return d


# Mistakes a user makes, across both command lines: (app, arguments, the start of the one error line).
MISTAKES = [
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/missing", "--output", "{o}"], "source 'local': input path not found"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "{d}/annotated"], "{d}/annotated already holds"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "{o}", "--segmenter", "nope"], "unknown segmenter 'nope'"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "{o}", "--preset", "nope"], "unknown preset 'nope'"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "{o}", "--config", "{d}/none.yaml"],
     "No such file or directory: {d}/none.yaml"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "{o}", "--segmenter", "trajtok",
                  "--checkpoint", "{d}/junk.safetensors"], "{d}/junk.safetensors is not a readable safetensors checkpoint"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/empty", "--output", "{o}"], "no samples found in {d}/empty"),
    ("trajdata", ["annotate", "--source", "panda", "--input", "{d}/syn/wds", "--output", "{o}"],
     "no samples found in {d}/syn/wds (source 'panda', format video2dataset); give the folder that holds its .tar"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "{d}/junk.safetensors"],
     "--output {d}/junk.safetensors is a file, not a directory"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "nosuchscheme://x"],
     "cannot open nosuchscheme://x"),
    ("trajdata", ["filter", "{d}/syn/gt", "--output", "{d}/syn/gt/"], "--output must differ"),
    ("trajdata", ["show", "{d}/syn/gt", "nokey", "--out", "{d}/x.png"], "no sample 'nokey'"),
    ("trajdata", ["show", "{d}/missing", "video_000", "--out", "{d}/x.png"], "no such dataset"),
    ("trajdata", ["show", "{d}/syn/gt", "video_000", "--out", "{d}/x.txt"], "--out must end in .png, .gif or .mp4"),
    ("trajdata", ["eval", "--pred", "{d}/syn/gt", "--gt", "{d}/syn/wds/videos"], "ground truth {d}/syn/wds/videos holds neither"),
    ("trajdata", ["eval", "--pred", "{d}/missing", "--gt", "{d}/syn/gt"], "no such dataset"),
    ("trajdata", ["stats", "{d}/empty"], "{d}/empty has no manifest"),
    ("trajdata", ["stats", "{d}/torn"], "manifest/part-000000.parquet: unreadable manifest part"),
    ("trajdata", ["stats", "{d}/annotated"], "manifest/part-000000.parquet: unreadable manifest part"),
    ("trajdata", ["show", "{d}/torn", "video_000", "--out", "{d}/x.png"], "manifest/part-000000.parquet: unreadable"),
    ("trajdata", ["show", "{d}/broken", "video_000", "--out", "{d}/x.png"], "gt-000000.tar: unreadable tar"),
    ("trajdata", ["eval", "--pred", "{d}/broken", "--gt", "{d}/syn/gt"], "gt-000000.tar: unreadable tar"),
    ("trajdata", ["eval", "--pred", "{d}/syn/gt", "--gt", "{d}/foreign"],
     "gt-000000.tar: sample 00000000_00000: no traj.json.gz (or traj.json) member"),
    ("trajdata", ["export", "{d}/broken", "{o}"], "gt-000000.tar: unreadable tar"),
    ("trajdata", ["export", "{d}/torn", "{o}"], "manifest/part-000000.parquet: unreadable manifest part"),
    ("trajdata", ["stats", "{d}/syn/gt", "--json", "{d}/no/such/dir/s.json"], "No such file or directory: {d}/no/such/dir"),
    ("trajdata", ["filter", "{d}/syn/gt", "--output", "{d}/syn/gt"], "--output must differ"),
    ("trajdata", ["export", "{d}/syn/gt", "{d}/exported"], "{d}/exported exists"),
    ("trajdata", ["export", "{d}/syn/gt", "{o}", "--format", "nope"], "unknown export format 'nope'"),
    ("trajdata", ["synth", "{d}/syn", "--videos", "1", "--images", "0"], "{d}/syn/media is not empty"),
    ("trajdata", ["synth", "{o}", "--style", "nope"], "style must be one of"),
    ("trajtok", ["train-segmenter", "--data", "{d}/syn/gt", "--output", "{o}", "--preset", "nope"], "unknown preset 'nope'"),
    ("trajtok", ["train-segmenter", "--data", "{d}/missing", "--output", "{o}"], "no such shard dataset"),
    ("trajtok", ["train-segmenter", "--data", "{d}/empty", "--output", "{o}"], "no shards found"),
    ("trajtok", ["train-segmenter", "--data", "{d}/syn/gt", "--output", "{d}/trained"], "{d}/trained already holds a checkpoint"),
    ("trajtok", ["eval-segmenter", "--checkpoint", "{d}/junk.safetensors", "--data", "{d}/syn/gt"], "{d}/junk.safetensors is not"),
    ("trajtok", ["train-trajvit2", "--data", "{d}/syn/gt", "--output", "{o}", "--video-model", "nope"], "unknown video model"),
    ("trajtok", ["train-trajvit2", "--data", "{d}/syn/gt", "--output", "{o}", "--text-model", "{d}/missing"],
     "text model directory not found"),
    ("trajtok", ["eval-retrieval", "--checkpoint", "{d}/seg.safetensors", "--data", "{d}/syn/gt"],
     "{d}/seg.safetensors is not a trajtok video-text checkpoint"),
    ("trajtok", ["probe", "--data", "{d}/syn/gt", "--eval-data", "{d}/syn/gt", "--label-key", "motion",
                 "--segmenter", "{d}/none.safetensors"], "segmenter checkpoint not found"),
    ("trajtok", ["probe", "--data", "{d}/syn/gt", "--eval-data", "{d}/syn/gt", "--label-key", "motion",
                 "--segmenter", "{d}/seg.safetensors", "--backbone", "resnet"], "unknown backbone 'resnet'"),
    ("trajtok", ["info", "--preset", "nope"], "unknown preset 'nope'"),
    # found by a new-user walk-through: these wrote into the wrong place, scored a typo as zeros, lost the sample,
    # hung, or printed a traceback (or only "Aborted.")
    ("trajdata", ["filter", "{d}/syn/gt", "--output", "{d}/trained"], "--output {d}/trained is not empty"),
    ("trajdata", ["eval", "--pred", "{d}/syn/gt", "--gt", "{d}/syn/gt", "--json", "{d}/no/such/dir/e.json"],
     "No such file or directory: {d}/no/such/dir"),
    ("trajdata", ["filter", "{d}/syn/gt", "--output", "{o}", "--min-coverage", "80"], "--min-coverage is a share"),
    ("trajdata", ["eval", "--pred", "{d}/empty", "--gt", "{d}/syn/gt"], "predictions {d}/empty holds neither"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/junk.safetensors", "--output", "{o}"],
     "source 'local': --input must be a folder of media; {d}/junk.safetensors is a file"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "{o}", "--config", "{d}/broken.yaml"],
     "config file {d}/broken.yaml is not valid YAML"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "{o}", "--config", "{d}/badtype.yaml"],
     "config key keyframes.max_gap must be int, got 'eight'"),
    ("trajdata", ["annotate", "--input", "{d}/syn/media", "--output", "{o}", "--address", "127.0.0.1:1"],
     "--address 127.0.0.1:1: no Ray head answers there"),
    ("trajdata", ["annotate", "--no-ray", "--input", "{d}/syn/media", "--output", "{o}", "--segmenter", "trajtok",
                  "--checkpoint", "{d}/empty"], "trajtok checkpoint not found: {d}/empty is a folder without"),
    ("trajdata", ["export", "{d}/syn/gt", "{d}/syn", "--overwrite"], "--output {d}/syn would replace the dataset"),
    ("trajtok", ["train-segmenter", "--data", "{d}/syn/gt", "--output", "{o}", "--backbone-checkpoint", "{d}/empty.pt"],
     "checkpoint {d}/empty.pt cannot be read: EOFError"),
    ("trajtok", ["train-segmenter", "--data", "{d}/syn/gt", "--output", "{o}", "--backbone-checkpoint",
                 "{d}/junk.safetensors"], "checkpoint {d}/junk.safetensors cannot be read"),
    ("trajtok", ["train-trajvit2", "--data", "{d}/syn/gt", "--output", "{o}", "--text-model", "{d}/syn"],
     "text model {d}/syn cannot be loaded as a transformers model"),
]


@pytest.mark.parametrize("app, args, message", MISTAKES, ids=[f"{a} {' '.join(x[:1])} {i}" for i, (a, x, _) in
                                                              enumerate(MISTAKES)])
def test_user_mistakes_are_one_line_and_exit_2(inputs, app, args, message, monkeypatch, tmp_path):
    monkeypatch.delenv("TRAJTOK_DEBUG", raising=False)
    args = [a.format(d=inputs, o=tmp_path / "out") for a in args]
    result = CliRunner().invoke(cli.trajdata if app == "trajdata" else cli.trajtok_app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]   # a failed command's bars vanish
    assert len(lines) == 1 and lines[0].startswith("error: " + message.format(d=inputs)), result.stderr
    if args[0] == "annotate" and "missing" in " ".join(args):
        assert not (tmp_path / "out").exists()          # a missing input leaves no output folder behind
    # and it is a UserError (or the operating system refusing a path the user gave), not a built-in let through
    monkeypatch.setenv("TRAJTOK_DEBUG", "1")
    raised = CliRunner().invoke(cli.trajdata if app == "trajdata" else cli.trajtok_app, args).exception
    assert isinstance(raised, UserError) or (isinstance(raised, OSError) and raised.filename), repr(raised)


@pytest.mark.parametrize("app, prelude, args, where", [
    ("trajdata", "import dataengine.tools.stats as m\ndef collect(d): raise ValueError('boom')\nm.collect = collect",
     ["stats", "{d}"], "in collect"),
    ("trajtok", "import trajtok.info as m\ndef model_info(p, frames): raise ValueError('boom')\nm.model_info = model_info",
     ["info"], "in model_info"),
    # a FileNotFoundError the code raises itself names no path the user gave: a bug, so a traceback too
    ("trajdata", "import dataengine.tools.stats as m\ndef collect(d): raise FileNotFoundError('boom')\nm.collect = collect",
     ["stats", "{d}"], "in collect"),
])
def test_a_builtin_error_that_is_not_a_user_error_keeps_its_traceback(tmp_path, app, prelude, args, where):
    result = run_cli(app, [a.format(d=tmp_path) for a in args], prelude)
    assert result.returncode not in (0, 2), result.stderr
    assert "Traceback (most recent call last)" in result.stderr and where in result.stderr, result.stderr
    assert result.stderr.rstrip().splitlines()[-1].endswith("Error: boom"), result.stderr


def test_which_errors_are_one_line():
    import errno

    from dataengine.errors import ConfigError, OutputExists
    assert cli.one_line_error(ConfigError("unknown preset 'x'")) == "unknown preset 'x'"
    assert cli.one_line_error(OutputExists("out exists")) == "out exists"
    # the operating system refusing a path the user gave (here: an output folder they may not write)
    assert cli.one_line_error(PermissionError(errno.EACCES, "Permission denied", "/data/out")) == \
        "Permission denied: /data/out"
    assert cli.one_line_error(OSError(errno.ENOSPC, "No space left on device", "/data/out/x.tar")) == \
        "No space left on device: /data/out/x.tar"
    # the same built-in types raised by code, naming no path, and anything else: tracebacks
    for e in (PermissionError("no file named"), FileNotFoundError("boom"), ValueError("boom"),
              OSError(errno.EIO, "Input/output error", "/dev/sda"), RuntimeError("CUDA out of memory")):
        assert cli.one_line_error(e) is None, e


def test_trajtok_user_error_in_a_real_process(tmp_path):
    result = run_cli("trajtok", ["probe", "--data", str(tmp_path), "--eval-data", str(tmp_path), "--label-key",
                                 "motion", "--segmenter", str(tmp_path / "none.safetensors")])
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: segmenter checkpoint not found: {tmp_path / 'none.safetensors'}"], result.stderr


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


def test_the_projects_warnings_print_as_one_line(tmp_path):
    """A hint of the project (train-segmenter on ground truth without --no-object) prints like its errors."""
    from dataengine.tools.synth import make_corpus
    make_corpus(tmp_path / "syn", videos=1, images=1, seed=3, n_frames=8, width=64, height=48)
    result = run_cli("trajtok", ["train-segmenter", "--data", str(tmp_path / "syn" / "gt"), "--output",
                                 str(tmp_path / "run"), "--preset", "cpu", "--max-steps", "1"])
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "--no-object" in line]
    assert len(said) == 1 and said[0].startswith("warning: ") and "UserWarning" not in result.stderr, result.stderr


def test_a_librarys_warning_keeps_pythons_format(capsys, monkeypatch):
    passed_on = []
    monkeypatch.setattr(cli, "_python_showwarning", lambda *a: passed_on.append(a))
    cli.show_warning(UserWarning("from a library"), UserWarning, "/x/site-packages/lib.py", 7)
    cli.show_warning(DeprecationWarning("old"), DeprecationWarning, dataengine.__file__, 1)
    cli.show_warning(UserWarning("from the project"), UserWarning, dataengine.__file__, 1)
    assert [a[2:4] for a in passed_on] == [("/x/site-packages/lib.py", 7), (dataengine.__file__, 1)]
    assert capsys.readouterr().err == "warning: from the project\n"


def test_a_user_error_from_a_loader_worker_is_its_own_line():
    """torch re-raises a DataLoader worker's exception with the worker's traceback in its message."""
    from dataengine.errors import InputError
    e = InputError("Caught InputError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
                   '  File "x.py", line 1, in <module>\ndataengine.errors.InputError: no shards found in d\n')
    assert cli.one_line_error(e) == "no shards found in d"
