"""Model backends: where their checkpoints are, how they load, what this machine can run.

Every model backend finds its weights through its locator here (named in its
entry of ``dataengine.backends.table``) and loads them strictly, so ``trajdata
models`` reports exactly what ``trajdata annotate`` would load, and a missing or
mismatched checkpoint is one line at start-up.
Nothing here downloads: a checkpoint is a local path, a file or folder in
``$TRAJTOK_CHECKPOINTS``, or a model already in the local Hugging Face cache.
"""
from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataengine.errors import CheckpointError, CheckpointNotFound, ConfigError, DeviceError

CHECKPOINT_ENV = "TRAJTOK_CHECKPOINTS"
DIRECTSAM_DEFAULT = "chendelong/DirectSAM-1800px-0424"
# The official SAM (v1) file names; "auto" looks for them in this order.
SAM_FILES = {"vit_h": "sam_vit_h_4b8939.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_b": "sam_vit_b_01ec64.pth"}


@dataclass
class Found:
    path: str       # a local file or directory
    where: str      # given | $TRAJTOK_CHECKPOINTS | Hugging Face cache


# ---------------------------------------------------------------- finding checkpoints
def checkpoint_dirs() -> list[Path]:
    raw = os.environ.get(CHECKPOINT_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants
        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return "(huggingface_hub not installed)"


def _hf_cached(repo_id: str, filename: str) -> str | None:
    """A file of a model repo if it is already in the local cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        path = try_to_load_from_cache(repo_id, filename)
    except Exception:  # not a valid repo id, no hub library: simply not cached
        return None
    return path if isinstance(path, str) else None


def _search(names: list[str], hf: list[tuple[str, str]] = ()) -> Found | None:
    for d in checkpoint_dirs():
        for name in names:
            if (d / name).exists():
                return Found(str(d / name), f"${CHECKPOINT_ENV}")
    for repo_id, filename in hf:
        path = _hf_cached(repo_id, filename)
        if path:
            # A file of the repo: DirectSAM wants the snapshot folder, SAM 2 the file itself.
            return Found(path if filename.endswith(".pt") else str(Path(path).parent), "Hugging Face cache")
    return None


def sam2_config_name(name: str) -> str:
    """A config name inside the sam2 package (``configs/sam2.1/sam2.1_hiera_l.yaml``); a bare file name is looked up."""
    from importlib.resources import files

    root = files("sam2")
    if (root / name).is_file():
        return name
    available = sorted(str(p.relative_to(Path(str(root)))) for p in Path(str(root)).glob("configs/**/*.yaml"))
    matches = [a for a in available if Path(a).name == Path(name).name]
    if len(matches) == 1:
        return matches[0]
    raise ConfigError(f"unknown SAM 2 config {name!r} (available: {', '.join(available)})")


def sam2_official(config: str) -> tuple[str, str] | None:
    """(Hugging Face model id, checkpoint file name) of the official weights for a sam2 config."""
    try:
        from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES
    except Exception:
        return None
    for model_id, (cfg_name, filename) in HF_MODEL_ID_TO_FILENAMES.items():
        if cfg_name == config or Path(cfg_name).name == Path(config).name:
            return model_id, filename
    return None


def directsam_checkpoint(cfg) -> Found:
    """The Segformer folder segmenter 'directsam' would load (``cfg``: a SegmenterConfig)."""
    given = cfg.checkpoint
    if given:
        if Path(given).is_dir():
            return Found(given, "given")
        cached = _hf_cached(given, "config.json") if given.count("/") == 1 else None
        if cached:
            return Found(str(Path(cached).parent), "Hugging Face cache")
        raise CheckpointNotFound(f"DirectSAM checkpoint {given!r} is neither a local directory nor a model "
                                 f"in the local Hugging Face cache ({hf_cache_dir()})")
    found = _search([DIRECTSAM_DEFAULT.split("/")[1]], [(DIRECTSAM_DEFAULT, "config.json")])
    if found:
        return found
    raise CheckpointError(f"segmenter 'directsam' needs a checkpoint: pass --checkpoint DIR (a Segformer "
                          f"save_pretrained folder) or a model id in the local Hugging Face cache "
                          f"such as {DIRECTSAM_DEFAULT}")


def sam_checkpoint(cfg) -> Found:
    """The SAM (v1, or SAM 2 with ``sam_type`` sam2) file segmenter 'sam' would load."""
    return _sam_family("segmenter 'sam'", "--checkpoint", cfg.checkpoint,
                       None if cfg.sam_type == "sam2" else cfg.sam_type, cfg.sam2_config)


def sam2_checkpoint(cfg) -> Found:
    """The SAM 2 file tracker 'sam2' would load (``cfg``: a TrackerConfig)."""
    return _sam_family("tracker 'sam2'", "--sam2-checkpoint", cfg.checkpoint, None, cfg.sam2_config)


def _sam_family(what: str, option: str, given: str | None, sam_type: str | None, sam2_config: str) -> Found:
    """``sam_type`` None: SAM 2 weights of ``sam2_config``; else SAM v1 weights of that type (or any)."""
    if given:
        if Path(given).is_file():
            return Found(given, "given")
        raise CheckpointNotFound(f"{what} checkpoint not found: {given}")
    if sam_type is not None:
        names = [SAM_FILES[sam_type]] if sam_type in SAM_FILES else list(SAM_FILES.values())
        hf: list[tuple[str, str]] = []
    else:
        official = sam2_official(sam2_config)
        names = [official[1]] if official else []
        hf = [official] if official else []
    found = _search(names, hf)
    if found:
        return found
    hint = f" or put {names[0]} in ${CHECKPOINT_ENV}" if names else ""
    raise CheckpointError(f"{what} needs a checkpoint: pass {option} FILE{hint}")


def trajtok_checkpoint(cfg) -> Found:
    """The ``trajtok train-segmenter`` safetensors file segmenter 'trajtok' would load."""
    if not cfg.checkpoint:
        raise CheckpointError("segmenter 'trajtok' needs --checkpoint PATH (a `trajtok train-segmenter` "
                              ".safetensors)")
    path = Path(cfg.checkpoint)
    if path.is_dir():           # a train-segmenter run folder: its last checkpoint
        if not (path / "last.safetensors").is_file():
            raise CheckpointNotFound(f"trajtok checkpoint not found: {cfg.checkpoint} is a folder without "
                                     f"last.safetensors (give a `trajtok train-segmenter` run folder or its file)")
        return Found(str(path / "last.safetensors"), "given (the run folder's last.safetensors)")
    if not path.is_file():
        raise CheckpointNotFound(f"trajtok checkpoint not found: {cfg.checkpoint}")
    if not cfg.checkpoint.endswith(".safetensors"):
        raise CheckpointError(f"trajtok checkpoint {cfg.checkpoint} is not a `trajtok train-segmenter` .safetensors")
    return Found(cfg.checkpoint, "given")


# ---------------------------------------------------------------- loading
def torch_device(device: str):
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but torch sees no CUDA device")
    return dev


def autocast(device):
    """bf16 autocast on CUDA (the models were trained for it); plain fp32 on CPU."""
    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def read_state_dict(path: str, what: str, key: str | None = None) -> dict[str, Any]:
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{what} checkpoint {path} cannot be read: {type(e).__name__}: {first}") from None
    if key is not None:
        if not (isinstance(sd, dict) and isinstance(sd.get(key), dict)):
            raise CheckpointError(f"{what} checkpoint {path} has no {key!r} state dict (expected {{{key!r}: state_dict}})")
        sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{what} checkpoint {path} is not a state dict")
    return sd


def load_strict(model, state_dict: dict[str, Any], what: str, path: str, target: str = "the model") -> None:
    """``load_state_dict(strict=True)``, but a mismatch is named in one line instead of a dump of every key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [k for k in own if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != tuple(own[k].shape)]
    problems = [f"{len(keys)} {label} (e.g. {keys[0]})" for keys, label in
                ((missing, "missing keys"), (unexpected, "unexpected keys"), (reshaped, "keys of another shape"))
                if keys]
    if problems:
        raise CheckpointError(f"{what} checkpoint {path} does not fit {target}: {', '.join(problems)}")
    model.load_state_dict(state_dict, strict=True)


def build_sam2(config: str, checkpoint: str, device, image_size: int, video: bool,
               extra_overrides: list[str] | None = None):
    """A SAM 2 model through sam2's own factories (hydra config + overrides), weights loaded strictly.

    sam2's ``_load_checkpoint`` has the same semantics (fail on any missing or
    unexpected key) but raises an empty RuntimeError after logging the key
    lists, so the weights are loaded here with a readable one-line error.
    """
    from sam2.build_sam import build_sam2 as image_factory
    from sam2.build_sam import build_sam2_video_predictor as video_factory

    if image_size < 64 or image_size % 32:
        raise ConfigError(f"SAM 2 image size must be a multiple of 32 and at least 64, got {image_size}")
    config = sam2_config_name(config)
    state = read_state_dict(checkpoint, "SAM 2", key="model")
    overrides = [f"++model.image_size={image_size}"] + list(extra_overrides or [])
    factory = video_factory if video else image_factory
    model = factory(config, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides)
    load_strict(model, state, "SAM 2", checkpoint, target=f"{config} (choose the config with --sam2-config)")
    return model.to(device).eval()


# ---------------------------------------------------------------- what can run here
def package_status(name: str) -> dict[str, Any]:
    try:
        module = importlib.import_module(name)
    except Exception as e:  # an import that fails for any reason means the backend cannot run
        return {"ok": False, "detail": f"{type(e).__name__}: {e}"}
    return {"ok": True, "detail": str(getattr(module, "__version__", "installed"))}


def devices() -> dict[str, Any]:
    try:
        import torch
    except Exception as e:
        return {"torch": None, "cuda": False, "gpus": [], "detail": f"torch does not import: {e}"}
    gpus = []
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"torch": torch.__version__, "cuda": bool(gpus), "gpus": gpus,
            "bf16": bool(gpus) and torch.cuda.is_bf16_supported(), "cpu_threads": torch.get_num_threads()}
