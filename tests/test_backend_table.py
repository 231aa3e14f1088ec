"""The one backend table drives building, `trajdata models`, the CLI help and the name check.

Adding a backend is one entry in ``dataengine.backends.table.BACKENDS`` plus its module: a fake
entry monkeypatched into the table is built, listed, accepted by the config and used by annotate
with nothing else touched. (Every real entry is built in tests/test_backends.py.)
"""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import cli
from dataengine.backends import table
from dataengine.backends.segmenters import build_segmenter
from dataengine.backends.trackers import build_tracker
from dataengine.config import SegmenterConfig, TrackerConfig, build_annotate_config, load_source
from dataengine.errors import ConfigError, UserError
from dataengine.format.shards import read_dataset
from dataengine.format.validate import validate_dataset
from dataengine.stages.labeller import Labeller
from dataengine.tools.synth import encode_jpeg, render_image
from pipelines.annotate import annotate


def option_help(command: str, option: str) -> str:
    click_app = typer.main.get_command(cli.trajdata)
    [param] = [p for p in click_app.commands[command].params if option in p.opts]
    return param.help


def test_cli_help_and_models_list_exactly_the_table():
    for kind in table.KINDS:
        listed = [n.removesuffix(" (default)") for n in option_help("annotate", f"--{kind}").split(" | ")]
        assert listed == list(table.names(kind))
        assert f"{table.DEFAULTS[kind]} (default)" in option_help("annotate", f"--{kind}")
    result = CliRunner().invoke(cli.trajdata, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["backends"]
    assert [(r["name"], r["role"]) for r in rows] == [(b.name, b.kind) for b in table.BACKENDS.values()]
    # The backends without weights are ready wherever the package's own dependencies are installed.
    ready = {r["name"]: r["ready"] for r in rows}
    assert ready["classical"] and ready["flow"]


def test_capabilities_come_from_the_table_not_the_classes():
    assert table.get("trajtok", "segmenter").tracks and not table.get("classical", "segmenter").tracks
    cfg = build_annotate_config(segmenter={"name": "classical"})
    lab = Labeller(cfg)
    assert not lab.joint and lab.uses_motion and lab.backends == {"segmenter": "classical", "tracker": "flow"}


def test_unknown_names_are_one_line_config_errors():
    for build, kind in ((lambda: build_segmenter(SegmenterConfig(name="nope")), "segmenter"),
                        (lambda: build_tracker(TrackerConfig(name="nope")), "tracker"),
                        (lambda: build_segmenter(SegmenterConfig(name="flow")), "segmenter")):  # a tracker's name
        with pytest.raises(ConfigError) as e:
            build()
        assert isinstance(e.value, (UserError, ValueError)) and "\n" not in str(e.value)
        assert str(e.value).endswith(f"(choose from {', '.join(table.names(kind))})")


# ---------------------------------------------------------------- adding a backend = one entry
class HalvesSegmenter:
    """Left and right half of every frame: a backend that exists only in this test."""
    name = "halves"

    def __init__(self, cfg, device="cpu"):
        self.cfg, self.device = cfg, device

    def segment(self, frames: np.ndarray) -> list[np.ndarray]:
        out = []
        for f in frames:
            labels = np.ones(f.shape[:2], np.int32)
            labels[:, f.shape[1] // 2:] = 2
            out.append(labels)
        return out


class StillTracker:
    """Carries the first frame's labels unchanged: the tracker of a static camera."""
    name = "still"

    def __init__(self, cfg):
        self.cfg = cfg

    def track(self, frames: np.ndarray, labels0: np.ndarray) -> np.ndarray:
        return np.repeat(labels0[None], len(frames), axis=0)


@pytest.fixture
def new_backends(monkeypatch):
    module = types.ModuleType("halves_backend")
    module.HalvesSegmenter, module.StillTracker = HalvesSegmenter, StillTracker
    monkeypatch.setitem(sys.modules, "halves_backend", module)
    entries = {
        "halves": table.Backend("halves", "segmenter", "halves_backend:HalvesSegmenter", "two halves",
                                ("numpy",), uses_device=True),
        "still": table.Backend("still", "tracker", "halves_backend:StillTracker", "no motion", ("numpy",)),
    }
    monkeypatch.setattr(table, "BACKENDS", {**table.BACKENDS, **entries})
    return entries


def test_a_new_table_entry_is_built_listed_checked_and_used(new_backends, tmp_path):
    assert isinstance(build_segmenter(SegmenterConfig(name="halves"), "cpu"), HalvesSegmenter)
    assert isinstance(build_tracker(TrackerConfig(name="still")), StillTracker)
    assert "halves" in table.names("segmenter") and "still" in table.names("tracker")
    with pytest.raises(ConfigError, match="halves"):           # the name check lists it among the choices
        build_segmenter(SegmenterConfig(name="nope"))

    rows = {r["name"]: r for r in table.describe()["backends"]}
    assert rows["halves"]["ready"] and rows["halves"]["role"] == "segmenter"
    assert rows["still"]["checkpoint"] == {"path": None, "where": "no weights needed"}
    result = CliRunner().invoke(cli.trajdata, ["models", "--json"])
    assert {"halves", "still"} <= {r["name"] for r in json.loads(result.stdout)["backends"]}

    media = tmp_path / "media"
    media.mkdir()
    (media / "a.jpg").write_bytes(encode_jpeg(render_image(0, 96, 64)[0]))
    cfg = build_annotate_config(source=vars(load_source("local", str(media))),
                                segmenter={"name": "halves"}, tracker={"name": "still"})
    totals = annotate(cfg, str(tmp_path / "out"), use_ray=False)
    assert totals["by_status"] == {"ok": 1} and validate_dataset(tmp_path / "out") == []
    [sample] = read_dataset(tmp_path / "out", with_media=False)
    assert sample.meta["backends"] == {"segmenter": "halves", "tracker": "still"}
    assert len(sample.traj["masklet"][0]) == 2          # the two halves
