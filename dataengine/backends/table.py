"""The one table of labelling backends: adding a backend is one entry here plus its module.

Everything that needs to know the backends reads this table: building them
(the labeller), ``trajdata models``, the ``--segmenter`` / ``--tracker`` help
of the command line, and the check of a config's backend names. Entries name
their class as ``"module:Class"`` and import it only when built, so listing the
table (the CLI's help) costs no torch import.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from dataengine.config import SegmenterConfig, TrackerConfig
from dataengine.errors import ConfigError, UserError

from . import models

KINDS = ("segmenter", "tracker")


@dataclass(frozen=True)
class Backend:
    name: str
    kind: str                     # segmenter | tracker
    builder: str                  # "module:Class"; Class(cfg) or Class(cfg, device) with uses_device
    summary: str                  # one line for `trajdata models`
    packages: tuple[str, ...]     # modules it imports
    # The checkpoint it would load, from its config (models.Found); None: no weights.
    locate: Callable[[Any], models.Found] | None = None
    checkpoint_is: str = ""       # "dir" | "file": which of a shared --checkpoint is this backend's
    uses_device: bool = False     # runs on the labeller's device (cuda / cpu); else CPU code
    tracks: bool = False          # a segmenter that also tracks: labels whole clips, no tracker is built
    uses_motion: bool = False     # a segmenter that takes each keyframe's optical flow
    stills: bool = False          # a segmenter whose config has ``still_*`` settings for single-frame samples
    # Extra modules needed for some settings of its config (sam with sam_type sam2 needs sam2).
    needs: Callable[[Any], tuple[str, ...]] | None = None

    def required(self, cfg: Any) -> tuple[str, ...]:
        return self.packages + (self.needs(cfg) if self.needs else ())


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("classical", "segmenter", "dataengine.backends.segmenters.classical:ClassicalSegmenter",
            "colour superpixels merged under motion layers; no weights", ("skimage",), uses_motion=True,
            stills=True),
    Backend("directsam", "segmenter", "dataengine.backends.segmenters.directsam:DirectSamSegmenter",
            "DirectSAM boundary model (Segformer); GPU, bf16 autocast on CUDA", ("torch", "transformers"),
            locate=models.directsam_checkpoint, checkpoint_is="dir", uses_device=True),
    Backend("sam", "segmenter", "dataengine.backends.segmenters.sam:SamSegmenter",
            "SAM / SAM 2 automatic mask generator; GPU", ("torch", "segment_anything"),
            locate=models.sam_checkpoint, checkpoint_is="file", uses_device=True,
            needs=lambda cfg: ("sam2",) if cfg.sam_type == "sam2" else ()),
    Backend("trajtok", "segmenter", "dataengine.backends.segmenters.learned:TrajTokSegmenter",
            "a `trajtok train-segmenter` model: segments and tracks whole clips", ("torch", "trajtok"),
            locate=models.trajtok_checkpoint, checkpoint_is="file", uses_device=True, tracks=True),
    Backend("none", "segmenter", "dataengine.backends.segmenters.none:NoSegmenter",
            "labels nothing (all background): measures the pipeline around the labeller", (), tracks=True),
    Backend("flow", "tracker", "dataengine.backends.trackers.flow:FlowTracker",
            "DIS optical flow with a forward-backward check; CPU, no weights", ("cv2",)),
    Backend("sam2", "tracker", "dataengine.backends.trackers.sam2:Sam2Tracker",
            "SAM 2 video predictor, objects batched; GPU", ("torch", "sam2"),
            locate=models.sam2_checkpoint, checkpoint_is="file", uses_device=True),
)}

DEFAULTS = {"segmenter": SegmenterConfig().name, "tracker": TrackerConfig().name}


def kind_of(cfg: SegmenterConfig | TrackerConfig) -> str:
    return "tracker" if isinstance(cfg, TrackerConfig) else "segmenter"


def names(kind: str) -> tuple[str, ...]:
    return tuple(b.name for b in BACKENDS.values() if b.kind == kind)


def get(name: str, kind: str) -> Backend:
    """The entry of backend ``name``; an unknown name (or one of the other kind) is a one-line ConfigError."""
    entry = BACKENDS.get(name)
    if entry is None or entry.kind != kind:
        raise ConfigError(f"unknown {kind} {name!r} (choose from {', '.join(names(kind))})")
    return entry


def choices(kind: str) -> str:
    """``classical (default) | directsam | ...``: the command line's help for --segmenter / --tracker."""
    return " | ".join(f"{n} (default)" if n == DEFAULTS[kind] else n for n in names(kind))


def check(segmenter: SegmenterConfig, tracker: TrackerConfig) -> tuple[Backend, Backend | None]:
    """Both entries of a config; the tracker's is None when the segmenter tracks by itself."""
    seg = get(segmenter.name, "segmenter")
    return seg, None if seg.tracks else get(tracker.name, "tracker")


def build(cfg: SegmenterConfig | TrackerConfig, device: str = "cpu") -> Any:
    """The backend ``cfg.name`` of the config's kind, built (weights located and loaded)."""
    entry = get(cfg.name, kind_of(cfg))
    module, _, attr = entry.builder.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(cfg, device) if entry.uses_device else cls(cfg)


def locate(cfg: SegmenterConfig | TrackerConfig) -> models.Found | None:
    """The checkpoint backend ``cfg.name`` would load; None for a backend without weights."""
    entry = get(cfg.name, kind_of(cfg))
    return entry.locate(cfg) if entry.locate else None


# ---------------------------------------------------------------- `trajdata models`
def describe(checkpoint: str | None = None, sam2_checkpoint: str | None = None, sam_type: str = "auto",
             sam2_config: str = SegmenterConfig.sam2_config) -> dict[str, Any]:
    """Every backend: whether its packages import, which checkpoint it would load; devices seen."""
    rows = []
    for entry in BACKENDS.values():
        given = sam2_checkpoint if entry.kind == "tracker" else checkpoint
        # One --checkpoint serves every segmenter: a folder is for those that load folders, a file for the rest.
        if given and Path(given).exists() and Path(given).is_dir() != (entry.checkpoint_is == "dir"):
            given = None
        cfg = (TrackerConfig(name=entry.name, checkpoint=given, sam2_config=sam2_config) if entry.kind == "tracker"
               else SegmenterConfig(name=entry.name, checkpoint=given, sam_type=sam_type, sam2_config=sam2_config))
        pkgs = {p: models.package_status(p) for p in entry.packages + (entry.needs(cfg) if entry.needs else ())}
        row: dict[str, Any] = {"name": entry.name, "role": entry.kind, "summary": entry.summary,
                               "tracks": entry.tracks, "packages": pkgs,
                               "ready": all(pkgs[p]["ok"] for p in entry.required(cfg))}
        if entry.locate is None:
            row["checkpoint"] = {"path": None, "where": "no weights needed"}
        else:
            try:
                row["checkpoint"] = asdict(entry.locate(cfg))
            except (UserError, ValueError, FileNotFoundError) as e:
                row["checkpoint"] = {"error": str(e)}
                row["ready"] = False
        rows.append(row)
    return {"backends": rows, "devices": models.devices(),
            "search": {models.CHECKPOINT_ENV: [str(d) for d in models.checkpoint_dirs()],
                       "hf_cache": models.hf_cache_dir()}}
