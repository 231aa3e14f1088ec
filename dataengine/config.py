"""Typed configuration of the engine: dataclasses, presets and source recipes.

Every output directory gets the resolved config (``run.json``) so a shard can
always be traced back to the exact settings that made it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from dataengine.errors import ConfigError


@dataclass
class DecodeConfig:
    frames: int = 16              # frames sampled uniformly over each video
    frame_stride: int = 0         # > 0: every K-th source frame from frame 0 instead (at most `frames`; 0 = no cap)
    max_side: int = 384           # working resolution: longest side, pixels
    max_source_pixels: int = 64_000_000   # decompression-bomb guard (per image / frame)
    max_media_bytes: int = 2_000_000_000  # larger files are refused, not read
    min_side: int = 16            # smaller media are refused as degenerate


@dataclass
class KeyframeConfig:
    hue_bins: int = 16
    sat_bins: int = 4
    luma_bins: int = 16
    threshold: float = 0.30       # histogram distance that starts a new clip
    cut_threshold: float = 0.60   # distance of a hard scene cut: tracks never cross it
    max_gap: int = 4              # force a keyframe after this many frames (tracks drift; merging keeps ids)
    # The labeller segments a frame again where the carried tracks cover less than this share
    # of what they covered at the last keyframe (0: off), at least min_keyframe_gap frames after it.
    min_coverage: float = 0.9
    min_keyframe_gap: int = 2
    # ... and treats a frame as a scene cut when the share of its pixels passing the tracker's
    # forward-backward flow check from the frame before is below this fraction of the video's median.
    cut_consistency: float = 0.35


@dataclass
class SegmenterConfig:
    name: str = "classical"       # a segmenter of dataengine.backends.table
    checkpoint: str | None = None
    # classical, directsam, sam (a trained trajtok segmenter's regions are its queries' masks; it reads neither)
    min_area: float = 0.0015      # regions smaller than this share of the frame are absorbed
    max_regions: int = 128
    # classical: superpixels merged by colour similarity
    superpixels: int = 250
    compactness: float = 20.0
    merge_threshold: float = 14.0  # mean-colour distance (Lab) below which regions merge
    # classical, single-frame samples (images): no motion layer or common fate joins an object's pieces
    # later, so stills are cut coarser (fewer, larger superpixels; see bench/REPORT.md, issue 10 eighth pass)
    still_superpixels: int = 80
    still_merge_threshold: float = 12.0
    motion_weight: float = 0.0    # video keyframes: merge distance x (1 + this x flow difference beyond
    motion_floor: float = 1.0     # this many px/frame, the flow's noise on texture)
    motion_layers: bool = True    # video keyframes: flow minus the camera's motion splits moving from static
    layer_min_speed: float = 2.5  # px/frame of residual flow above which a superpixel moves on its own
    layer_split: float = 4.0      # px/frame of residual difference beyond which two regions never merge
    layer_tolerance: float = 1.0  # px/frame: moving superpixels whose residuals differ less merge
    layer_join: float = 0.5       # their colour distance is scaled by this (0: they merge whatever the colour)
    layer_min_texture: float = 3.0  # grey-level std (7x7) below which a pixel's flow is not evidence (0: off)
    layer_consistency: float = 1.5  # px forward-backward flow error beyond which a pixel's motion is unknown
    smooth: str = "bilateral"     # edge-preserving smoothing of the keyframe before SLIC and the merge: bilateral | none
    smooth_radius: int = 3        # bilateral: spatial sigma (px); window 2 x this + 1
    smooth_colour: float = 10.0   # bilateral: colour sigma (grey levels)
    boundary_refine: int = 3      # passes moving outline pixels to the neighbour region whose local colour they match
    boundary_radius: int = 3      # ... within a window of this radius (px); 0 passes: off
    # model segmenters (directsam, sam)
    resolution: int = 1024        # model input side: DirectSAM square input, SAM 2 image_size (trajtok: its own)
    batch: int = 4                # keyframes per forward pass (DirectSAM)
    boundary_threshold: float = 0.5   # DirectSAM: boundary probability that separates regions
    sam_type: str = "auto"        # sam: auto (read from the checkpoint) | vit_b | vit_l | vit_h | sam2
    sam2_config: str = "configs/sam2.1/sam2.1_hiera_l.yaml"  # sam with sam_type sam2
    points_per_side: int = 32     # sam: point grid of the automatic mask generator
    pred_iou_thresh: float = 0.88     # sam: masks with a lower predicted IoU are discarded
    stability_thresh: float = 0.95    # sam: masks with a lower stability score are discarded

    def for_stills(self) -> "SegmenterConfig":
        """This config as it segments a single-frame sample: the ``still_*`` values in place of their video
        ones (read by segmenters whose table entry says ``stills``)."""
        return replace(self, superpixels=self.still_superpixels, merge_threshold=self.still_merge_threshold)


@dataclass
class TrackerConfig:
    name: str = "flow"            # a tracker of dataengine.backends.table
    checkpoint: str | None = None
    consistency: float = 1.5      # forward-backward flow error (px) that marks occlusion
    min_area: float = 0.0005      # tracked masks smaller than this share are dropped
    fill_colour_distance: float = 20.0  # Lab distance for filling a hole from the nearest track (0: off)
    # sam2: a config name inside the sam2 package and its checkpoint ({"model": state_dict})
    sam2_config: str = "configs/sam2.1/sam2.1_hiera_l.yaml"
    image_size: int = 1024        # SAM 2 input side (a multiple of 32)
    object_batch: int = 64        # objects tracked together in one batched forward pass
    # sam2: each frame of a video goes through the image encoder once, this many frames per pass
    # (0: sam2's own way, one frame at a time inside every clip and object batch)
    feature_batch: int = 16
    batched_prompts: bool = True  # sam2: a keyframe's objects enter in one pass (False: add_new_mask each)


@dataclass
class MergeConfig:
    # Keyframe reconciliation (dataengine.stages.merge): shares of a fresh region's pixels
    continue_share: float = 0.5   # covered by one carried track -> the region continues it
    new_share: float = 0.5        # covered by carried tracks below this -> new content, a new id
    keep_share: float = 0.0       # a track that would keep less of its carried pixels keeps them all (0: off)
    revive_share: float = 0.3     # a new region holding this share of an ending track's pixels continues it (0: off)
    # A region one track dominates keeps the carried ids when a second track covers this share of it (0: off) and
    # the region holds two_tracks_hold of that track's carried pixels: two tracked objects joined by colour stay two.
    two_tracks_share: float = 0.25
    two_tracks_hold: float = 0.5
    # Common fate (dataengine.stages.grouping): adjacent tracks that one affine flow model explains within this
    # many px/frame of their separate models, in every frame where they touch (>= fate_min_frames), join.
    fate_tolerance: float = 0.2   # 0: off
    fate_min_frames: int = 2
    fate_max_share: float = 0.1   # a joined group stays below this share of the frame (not background, nor
                                  # slow objects joined with background pieces: bench/REPORT.md)
    # Tracks that both move apart from the camera (median residual flow above this many px/frame; 0: off)
    # join when they agree in this share of the frames where they touch (the rest: in every frame).
    fate_moving_speed: float = 3.0
    fate_moving_share: float = 0.66
    fate_moving_tolerance: float = 0.03   # ... and a frame agrees within this x the slower one's speed too
    min_track_frames: int = 3     # shorter trajectories give their pixels to the nearest neighbour (1: off)


@dataclass
class OutputConfig:
    samples_per_shard: int = 64
    prefix: str = "traj"


@dataclass
class FilterConfig:
    min_coverage: float = 0.8
    min_objects: int = 10


@dataclass
class SourceConfig:
    name: str = "local"
    format: str = "folder"        # folder | video2dataset | img2dataset | panda_csv
    path: str = ""
    csv: str | None = None        # panda_csv: metadata CSV beside a folder of clips
    description: str = ""


@dataclass
class AnnotateConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    limit: int | None = None

    def labelling_settings(self) -> dict[str, Any]:
        """The settings that make the labels (``labelling_part`` of this config)."""
        return labelling_part(to_dict(self))

    def model_hash(self) -> str:
        """Hash of everything that changes the labels (``labelling_settings``): a run resumes only under the
        same hash."""
        return _hash(self.labelling_settings())


# Settings that change the speed of labelling, never the labels (tests/test_backends.py checks each: the
# tracked labels are equal for any object batch, and the batched, encode-once SAM 2 path equals the library's
# per-object path): a run may be resumed with other values, e.g. on GPUs with less memory.
SPEED_ONLY: dict[str, tuple[str, ...]] = {"tracker": ("object_batch", "feature_batch", "batched_prompts")}


def labelling_part(config: dict[str, Any]) -> dict[str, Any]:
    """Of a config dict (``to_dict`` of an AnnotateConfig, or the config a run.json recorded), the settings that
    make the labels: not the input, the output or a limit, and not the settings that only change how fast the
    same labels are made (``SPEED_ONLY``). The given dict is left as it is."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items() if k not in ("source", "limit", "output")}
    for section, keys in SPEED_ONLY.items():
        if isinstance(d.get(section), dict):
            for k in keys:
                d[section].pop(k, None)
    return d


def _hash(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def setting_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``section.key: old -> new`` for every leaf that differs between two config dicts (a key only one of
    them has shows as ``(absent)`` on the other side)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "(absent)"), new.get(k, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += setting_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


PRESETS: dict[str, dict[str, Any]] = {
    # CPU, no weights: runs anywhere.
    "cpu": {},
    # The papers' labeller: DirectSAM keyframes tracked by SAM2, at full model resolution.
    "gpu": {"decode": {"max_side": 1024}, "segmenter": {"name": "directsam"},
            "tracker": {"name": "sam2"}},
}


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _update(obj: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for k, v in values.items():
        if k not in names:
            raise ConfigError(f"unknown config key {where}{k!r} (expected one of {sorted(names)})")
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise ConfigError(f"config key {where}{k} must be a mapping")
            _update(cur, v, f"{where}{k}.")
        else:
            setattr(obj, k, _typed(v, hints[k], f"{where}{k}"))


def _typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the config field's type (int, float, bool, str, or one of them or None): a YAML value of another
    type is one clear line here, not a TypeError in every sample (``max_gap: eight``)."""
    kinds = [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]
    if value is None and len(kinds) < len(typing.get_args(hint) or (hint,)):
        return None
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
        if kind not in (bool, int, float, str):
            return value
    expected = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise ConfigError(f"config key {name} must be {expected}, got {value!r}")


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    obj = cls()
    _update(obj, values, "")
    return obj


def _prune_none(values: dict[str, Any]) -> dict[str, Any]:
    """Drop unset (None) options, recursively: an option not given keeps the lower layer's value."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            v = _prune_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def build_annotate_config(preset: str = "cpu", config_file: str | Path | None = None,
                          **overrides: Any) -> AnnotateConfig:
    """Layers, lowest first: dataclass defaults, the preset, a YAML file, explicit overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} (choose from {sorted(PRESETS)})")
    cfg = from_dict(AnnotateConfig, PRESETS[preset])
    if config_file:
        try:
            data = yaml.safe_load(Path(config_file).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {config_file} is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {config_file} is not a mapping")
        _update(cfg, data, "")
    _update(cfg, _prune_none(overrides), "")
    check_output(cfg.output)
    check_counts(cfg)
    return cfg


# Counts that mean nothing below 1: at 0 a step or a batch never advances (min_keyframe_gap 0 re-segmented the
# same keyframe forever once a keyframe had no regions; batch 0 failed every sample).
AT_LEAST_ONE: dict[str, tuple[str, ...]] = {
    "decode": ("max_side", "min_side"),
    "keyframes": ("min_keyframe_gap",),
    "segmenter": ("batch", "max_regions", "superpixels", "still_superpixels", "resolution", "points_per_side"),
    "tracker": ("object_batch", "image_size"),
}


def check_counts(cfg: AnnotateConfig) -> None:
    for section, keys in AT_LEAST_ONE.items():
        for key in keys:
            value = getattr(getattr(cfg, section), key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{section}.{key} must be an integer >= 1, got {value!r}")


def check_output(out: OutputConfig) -> None:
    """Shard names are ``PREFIX-SERIES-CHUNK.tar`` files at the top of the output, found again by their
    pattern: a prefix with a path separator (or other punctuation) would put them out of sight."""
    if isinstance(out.samples_per_shard, bool) or not isinstance(out.samples_per_shard, int) or out.samples_per_shard < 1:
        raise ConfigError(f"output.samples_per_shard must be an integer >= 1, got {out.samples_per_shard!r}")
    if not isinstance(out.prefix, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", out.prefix):
        raise ConfigError(f"output.prefix must be letters, digits, '_' or '-', got {out.prefix!r}")


# ---------------------------------------------------------------- recipes
def manifest_dirs() -> list[Path]:
    """Where source recipes live: $TRAJTOK_MANIFESTS, the source tree, the install prefix."""
    dirs = []
    if os.environ.get("TRAJTOK_MANIFESTS"):
        dirs.append(Path(os.environ["TRAJTOK_MANIFESTS"]))
    dirs.append(Path(__file__).resolve().parent.parent / "manifests")
    dirs.append(Path(sys.prefix) / "share" / "trajtok" / "manifests")
    return [d for d in dirs if d.is_dir()]


def available_sources() -> list[str]:
    return sorted({p.stem for d in manifest_dirs() for p in d.glob("*.yaml")})


def load_source(name_or_path: str, input_path: str | None = None) -> SourceConfig:
    """A recipe by name (``manifests/NAME.yaml``) or by path; ``input_path`` overrides its path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        found = [d / f"{name_or_path}.yaml" for d in manifest_dirs() if (d / f"{name_or_path}.yaml").is_file()]
        if not found:
            raise ConfigError(f"unknown source {name_or_path!r} (available: {', '.join(available_sources())})")
        path = found[0]
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} is not a mapping")
    data.setdefault("name", path.stem)
    src = from_dict(SourceConfig, data)
    if input_path and str(input_path).lower().endswith(".csv") and src.format in ("video2dataset", "panda_csv"):
        # A Panda-70M metadata CSV: clips are looked up in the CSV's own folder.
        src.format, src.csv, src.path = "panda_csv", str(input_path), ""
    elif input_path:
        src.path = str(input_path)
    if src.format not in SOURCE_FORMATS:
        raise ConfigError(f"recipe {path}: unknown format {src.format!r} (expected one of {SOURCE_FORMATS})")
    return src


SOURCE_FORMATS = ("folder", "video2dataset", "img2dataset", "panda_csv")
