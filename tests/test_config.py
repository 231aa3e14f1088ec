"""Config dataclasses, presets and the source recipes shipped in manifests/."""
import pytest
import yaml

from dataengine.config import (SOURCE_FORMATS, AnnotateConfig, available_sources, build_annotate_config,
                               from_dict, load_source, to_dict)
from dataengine.errors import ConfigError


def test_every_shipped_recipe_loads_and_is_valid():
    names = available_sources()
    assert {"local", "panda", "cc3m", "cc12m", "datacomp"} <= set(names)
    for name in names:
        src = load_source(name)
        assert src.name == name and src.format in SOURCE_FORMATS and src.path


def test_a_new_source_is_just_a_yaml_file(tmp_path, monkeypatch):
    (tmp_path / "mysource.yaml").write_text("format: img2dataset\npath: /data/laion\n")
    monkeypatch.setenv("TRAJTOK_MANIFESTS", str(tmp_path))
    src = load_source("mysource")
    assert (src.name, src.format, src.path) == ("mysource", "img2dataset", "/data/laion")
    assert load_source(str(tmp_path / "mysource.yaml"), "/other").path == "/other"


def test_bad_recipes_and_keys_fail_with_clear_messages(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        load_source("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: tiktok\npath: x\n")
    with pytest.raises(ValueError, match="unknown format 'tiktok'"):
        load_source(str(bad))
    bad.write_text("format: folder\npaht: x\n")
    with pytest.raises(ValueError, match="unknown config key 'paht'"):
        load_source(str(bad))
    with pytest.raises(ValueError, match="unknown preset"):
        build_annotate_config("huge")


def test_panda_csv_input_switches_to_the_csv_reader():
    src = load_source("panda", "/data/panda/meta.csv")
    assert (src.format, src.csv, src.path) == ("panda_csv", "/data/panda/meta.csv", "")


def test_config_round_trips_and_hash_ignores_paths():
    cfg = build_annotate_config("gpu", decode={"frames": 8})
    assert cfg.segmenter.name == "directsam" and cfg.decode.frames == 8 and cfg.decode.max_side == 1024
    again = from_dict(AnnotateConfig, to_dict(cfg))
    assert again == cfg and again.model_hash() == cfg.model_hash()
    moved = build_annotate_config("gpu", decode={"frames": 8}, source={"path": "/elsewhere"}, limit=3)
    assert moved.model_hash() == cfg.model_hash()
    assert build_annotate_config("gpu", decode={"frames": 9}).model_hash() != cfg.model_hash()
    # speed-only settings make the same labels: same hash; a tracker setting that labels differently: another
    faster = build_annotate_config("gpu", decode={"frames": 8},
                                   tracker={"object_batch": 8, "feature_batch": 0, "batched_prompts": False})
    assert faster.model_hash() == cfg.model_hash()
    assert build_annotate_config("gpu", decode={"frames": 8}, tracker={"image_size": 512}).model_hash() != cfg.model_hash()


def test_config_file_layers_between_preset_and_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("keyframes: {threshold: 0.5, max_gap: 3}\ndecode: {frames: 4}\n")
    cfg = build_annotate_config("cpu", f, decode={"frames": 8, "max_side": None})
    assert cfg.keyframes.threshold == 0.5 and cfg.keyframes.max_gap == 3
    assert cfg.decode.frames == 8 and cfg.decode.max_side == 384  # flag wins; unset flag keeps default
    f.write_text("keyframes: {treshold: 0.5}\n")
    with pytest.raises(ValueError, match="keyframes.'treshold'|unknown config key keyframes"):
        build_annotate_config("cpu", f)


@pytest.mark.parametrize("output, message", [
    ({"samples_per_shard": 0}, "samples_per_shard must be an integer >= 1"),
    ({"samples_per_shard": 2.5}, "config key output.samples_per_shard must be int, got 2.5"),
    ({"prefix": "a/b"}, "output.prefix must be letters"),
    ({"prefix": ""}, "output.prefix must be letters"),
])
def test_output_settings_that_would_hide_or_break_shards_are_refused(tmp_path, output, message):
    """Given in a config file (the CLI's flag has its own bound): one clear error, not a ZeroDivisionError or
    shards in a subfolder that no reader finds."""
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"output": output}))
    with pytest.raises(ConfigError, match=message):
        build_annotate_config("cpu", f)
    assert build_annotate_config("cpu", output={"prefix": "my-traj_2"}).output.prefix == "my-traj_2"
