"""Segmenter checkpoints: safetensors weights that carry their own config.

``*.safetensors`` holds the weights plus metadata ``format``, ``config`` (the
``SegmenterConfig`` as JSON) and ``step``, so ``load_segmenter(path)`` rebuilds
the model from that one file. Training state (optimizer, step, data position)
lives next to it in ``*.optim.pt``, written with ``torch.save`` of tensors and
plain values only and read back with ``weights_only=True``.
Every file is written to a temporary name and renamed, so a crash mid-write
never leaves a truncated checkpoint under the final name.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dataengine.errors import CheckpointError, CheckpointNotFound
from dataengine.format import atomic

from .models.segmenter import Segmenter, SegmenterConfig

FORMAT = "trajtok.segmenter"
FORMAT_VERSION = "1"


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors creates 0600 files; checkpoints are meant to be shared
    atomic.write_via(path, write, mode=0o644)


def save_segmenter(model: Segmenter, path: str | Path, step: int = 0, extra: dict[str, str] | None = None) -> Path:
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "config": json.dumps(model.cfg.to_dict(), sort_keys=True), "step": str(int(step))}
    meta.update(extra or {})
    _atomic(path, lambda p: save_file(state, str(p), metadata=meta))
    return path


def _metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except SafetensorError as e:    # a truncated download, or another kind of file under a .safetensors name
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({e})") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"checkpoint not found: {path}")
    meta = _metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a trajtok segmenter checkpoint (format={meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')} "
                              f"unsupported (expected {FORMAT_VERSION})")
    return meta


def load_segmenter(path: str | Path, map_location: str | torch.device = "cpu") -> Segmenter:
    """Rebuild a segmenter from a checkpoint file alone; loud on any key mismatch."""
    from safetensors.torch import load_file
    meta = read_metadata(path)
    cfg = SegmenterConfig.from_dict(json.loads(meta["config"]))
    model = Segmenter(cfg)
    state = load_file(str(path), device=str(map_location))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return model.to(map_location).eval()


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of all parameters and buffers in ``state_dict`` order: equal digests, equal weights."""
    h = hashlib.sha256()
    for name, v in model.state_dict().items():
        h.update(name.encode())
        h.update(v.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_step(path: str | Path) -> int:
    return int(read_metadata(path).get("step", 0))


def save_train_state(path: str | Path, state: dict[str, Any]) -> Path:
    path = Path(path)
    _atomic(path, lambda p: torch.save(state, p))
    return path


def load_train_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"training state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # truncated, or not a torch file
        raise CheckpointError(f"{path} is not a readable training state ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


def previous_state_path(path: str | Path) -> Path:
    """Where the training state of the save before ``path``'s is kept (``last.optim.pt`` ->
    ``last.optim.prev.pt``)."""
    path = Path(path)
    return path.with_name(path.name.replace(".pt", ".prev.pt"))


def save_train_state_pair(path: str | Path, state: dict[str, Any]) -> Path:
    """Write the training state of a save whose weights are written next: the state of the save before moves
    aside first, so a kill between the two writes leaves a matching pair (the old weights, the old state).
    ``state_pair_done`` drops it once the weights are written; ``settle_train_state`` restores the pair on
    resume, so a second kill in the same place finds it again."""
    path = Path(path)
    if path.is_file():
        os.replace(path, previous_state_path(path))
    return save_train_state(path, state)


def state_pair_done(path: str | Path) -> None:
    """The weights of the save are written: the state kept aside is not needed any more."""
    previous_state_path(path).unlink(missing_ok=True)


def settle_train_state(path: str | Path, chosen: Path) -> None:
    """After a resume read ``chosen``: make it ``path`` again and drop the other (one process does this,
    after every process has read its state)."""
    path, prev = Path(path), previous_state_path(path)
    if Path(chosen) == prev:
        os.replace(prev, path)
    else:
        prev.unlink(missing_ok=True)


def matching_train_state(path: str | Path, step: int, weights: str | Path) -> tuple[dict[str, Any], Path]:
    """The training state (``path``, else the one kept beside it) whose step is the weights' ``step``, and
    the file it came from."""
    seen = []
    for candidate in (Path(path), previous_state_path(path)):
        if not candidate.is_file():
            continue
        try:
            state = load_train_state(candidate)
        except CheckpointError as e:
            seen.append(str(e))
            continue
        if int(state["step"]) == step:
            return state, candidate
        seen.append(f"{candidate.name} is at step {state['step']}")
    if not seen:
        raise CheckpointNotFound(f"training state not found: {path}")
    raise CheckpointError(f"no training state matches {weights} (step {step}): {'; '.join(seen)}; "
                          "restore a matching pair")


VIDEO_TEXT_FORMAT = "trajtok.videotext"


def save_video_text(model: torch.nn.Module, path: str | Path, step: int = 0) -> Path:
    """A video-text model (TrajViT2 or ViT3D + text tower) with its full config, tokenizer included."""
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": VIDEO_TEXT_FORMAT, "format_version": FORMAT_VERSION,
            "config": json.dumps(model.cfg.to_dict(), sort_keys=True), "step": str(int(step))}
    _atomic(path, lambda p: save_file(state, str(p), metadata=meta))
    return path


def read_video_text_metadata(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"checkpoint not found: {path}")
    meta = _metadata(path)
    if meta.get("format") != VIDEO_TEXT_FORMAT:
        raise CheckpointError(f"{path} is not a trajtok video-text checkpoint (format={meta.get('format')!r})")
    return meta


def load_video_text(path: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a video-text model from its checkpoint (a ``--text-model`` directory must still exist)."""
    from safetensors.torch import load_file

    from .models.video_text import VideoTextConfig, VideoTextModel
    meta = read_video_text_metadata(path)
    model = VideoTextModel(VideoTextConfig.from_dict(json.loads(meta["config"])), pretrained_text=False)
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return model.to(map_location).eval()
