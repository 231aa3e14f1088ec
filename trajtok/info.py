"""Parameter and FLOP accounting of the tokenizer (segmenter + trajectory encoder) of a preset."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .models.trajectory_encoder import Tokenizer
from .presets import Preset, get_preset

# Parameter name prefix -> reported module; checked in order, first match wins.
MODULE_GROUPS = [
    ("segmenter.backbone.", "segmenter.backbone"),
    ("segmenter.lateral.", "segmenter.pixel_fusion"),
    ("segmenter.pixel_norm.", "segmenter.pixel_fusion"),
    ("segmenter.queries", "segmenter.queries"),
    ("segmenter.perceiver.", "segmenter.perceiver"),
    ("segmenter.", "segmenter.mask_head"),          # query_norm, mask_embed, temperature
    ("encoder.", "trajectory_encoder"),
]


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        group = next((g for prefix, g in MODULE_GROUPS if name.startswith(prefix)), "other")
        counts[group] = counts.get(group, 0) + p.numel()
    return counts


def clip_flops(model: Tokenizer, frames: int, size: int) -> dict[str, int]:
    """FLOPs (multiply-add = 2) of one forward pass over a ``frames``-frame clip, by module."""
    device = next(model.parameters()).device
    video = torch.zeros(1, frames, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:   # not under no_grad: the module tracker needs autograd views
        model(video)
    per_module = {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    seg = per_module.get(f"{root}.segmenter", 0)
    backbone = per_module.get(f"{root}.segmenter.backbone", 0)
    # ModuleList children are tracked one by one ("...perceiver.0", "...perceiver.1").
    perceiver = sum(v for k, v in per_module.items()
                    if k.startswith(f"{root}.segmenter.perceiver.") and k.count(".") == 3)
    return {"total": int(counter.get_total_flops()), "segmenter.backbone": backbone,
            "segmenter.perceiver": perceiver, "segmenter.other": seg - backbone - perceiver,
            "trajectory_encoder": per_module.get(f"{root}.encoder", 0)}


def model_info(preset: str | Preset = "paper", frames: int = 16, flops: bool = True) -> dict[str, Any]:
    """``{"preset", "modules": {name: params}, "total", "flops_per_clip", "clip"}``.

    The model is built on the ``meta`` device: shapes and FLOPs without
    allocating or computing anything, so the paper preset costs well under a second.
    """
    P = get_preset(preset)
    with torch.device("meta"):
        model = Tokenizer(P.model, P.encoder)
    counts = count_parameters(model)
    order = list(dict.fromkeys(g for _, g in MODULE_GROUPS)) + ["other"]
    modules = {g: counts[g] for g in order if g in counts}
    info: dict[str, Any] = {
        "preset": P.name,
        "modules": modules,
        "total": sum(p.numel() for p in model.parameters()),
        "segmenter_total": sum(p.numel() for p in model.segmenter.parameters()),
        "clip": {"frames": frames, "height": P.model.image_size, "width": P.model.image_size},
    }
    if flops:
        info["flops_per_clip"] = clip_flops(model, frames, P.model.image_size)
    return info


def format_info(info: dict[str, Any]) -> str:
    """Human-readable table of ``model_info`` output (for the CLI)."""
    lines = [f"preset {info['preset']}: {info['total'] / 1e6:.2f} M parameters"]
    for name, n in info["modules"].items():
        lines.append(f"  {name:<28} {n / 1e6:8.2f} M")
    if "flops_per_clip" in info:
        c = info["clip"]
        lines.append(f"FLOPs per {c['frames']}x{c['height']}x{c['width']} clip: "
                     f"{info['flops_per_clip']['total'] / 1e9:.1f} G")
    return "\n".join(lines)
