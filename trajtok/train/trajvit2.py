"""Video-text training of TrajViT2 (or the ViT3D baseline): CLIP loss + joint segmentation loss.

Same shape as the segmenter loop: single process, or DDP under ``torchrun`` (gloo on CPU,
nccl on GPU); rank 0 writes ``output/``:

    config.json        resolved preset (the word vocabulary included)
    log.jsonl          one line per logged step (clip, seg, loss, lr, temperature, K, cpu seconds)
    last.safetensors   weights + full config (``load_video_text`` rebuilds the model from it)
    last.optim.pt      optimizer state, step, data position (``resume``)

Per batch, K (sub-tokens per trajectory) is drawn from the encoder's choices, so one model
serves every K at inference. Clips with identical captions are joint positives of the CLIP
loss; under DDP the embeddings of all ranks are gathered (with gradient) before the loss.
``shuffle_captions`` pairs every clip with another clip's caption (a fixed permutation):
the control run that must stay at chance.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dataengine.errors import CheckpointError, CheckpointNotFound, ConfigError, InputError, OutputExists
from dataengine.format import shards as shard_io

from ..checkpoint import (load_segmenter, matching_train_state, read_video_text_metadata, save_video_text,
                          settle_train_state)
from ..data import captioned, make_loader, resolve_shards
from ..losses import clip_loss, segmenter_loss
from ..models.text import build_word_vocab
from ..models.video_text import VideoTextConfig, VideoTextModel
from ..presets import VideoTextPreset, get_video_text_preset
from .segmenter import (Checkpointer, _setup_distributed, _truncate_log, apply_train_overrides, bf16_autocast,
                        config_changes, data_positions, restore_train_settings, resume_position)

# Module/parameter names kept out of weight decay: position tables, learned slots and queries,
# the temperature and the word embedding (decay would pull them toward 0 for no regularising gain).
NO_DECAY = {"cls", "pos", "spatial", "queries", "sub_queries", "no_object_query", "log_scale", "embed"}


def cosine_lr(step: int, peak: float, warmup: int, total: int, floor: float = 0.0) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then half a cosine down to ``floor``."""
    if step < warmup:
        return peak * (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def caption_ids(captions: list[str]) -> torch.Tensor:
    """Stable 63-bit id per caption text (equal on every rank): equal ids = joint positives."""
    return torch.tensor([int.from_bytes(hashlib.sha1(c.encode()).digest()[:8], "little") >> 1
                         for c in captions], dtype=torch.long)


def read_captions(data: Any) -> list[str]:
    """The captions of the shards' captioned samples, in order (media not loaded; samples without one
    train on nothing, see ``captioned``). A list, not a dict by key: keys repeat across the datasets
    of a mixture (synth's ``video_000``, img2dataset's numbers)."""
    return [s.caption for path in resolve_shards(data) for s in shard_io.read_shard(path, with_media=False)
            if s.caption.strip()]


def shuffled_captions(captions: list[str], seed: int) -> dict[str, str]:
    """The shuffled-caption control: a fixed derangement of the distinct caption texts (text -> another
    text), so every clip trains against a caption that is not its own, whatever its key."""
    texts = sorted(set(captions))
    order = np.random.default_rng([seed, 99]).permutation(len(texts))
    if len(texts) > 1:   # a permutation may keep some pairs; rotate those away
        order = np.where(order == np.arange(len(texts)), np.roll(order, 1), order)
    return {c: texts[j] for c, j in zip(texts, order)}



def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or bool(NO_DECAY & set(name.split(".")))
        (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _gather(x: torch.Tensor, world: int) -> torch.Tensor:
    """Rows of every rank, with gradient to this rank's. Ranks may hold different row counts
    (a video batch on one, an image batch on another), so rows are padded to the largest."""
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    most = int(max(int(s) for s in sizes))
    padded = torch.cat([x, x.new_zeros((most - x.shape[0], *x.shape[1:]))]) if x.shape[0] < most else x
    return torch.cat([g[:int(s)] for g, s in zip(all_gather(padded), sizes)], dim=0)


def resolve_preset(preset: str | VideoTextPreset, video_model: str | None, text_model: str | Path | None,
                   captions: list[str]) -> VideoTextPreset:
    P = get_video_text_preset(preset)
    if video_model:
        P.model.video_model = video_model
    if text_model:
        P.model.text.kind, P.model.text.model_dir, P.model.text.vocab = "hf", str(Path(text_model).resolve()), None
    elif P.model.text.kind == "word" and not P.model.text.vocab:
        P.model.text.vocab = build_word_vocab(captions)
    return P.sync()


def refuse_another_run(out: Path, run_model: str, video_model: str | None, shuffle_captions: bool) -> None:
    """On ``--resume``: another video model, or the real captions for a shuffled-caption control run (or the
    reverse), would be another experiment under the run's name (config.json then said the control run was
    one, after it had trained on real captions)."""
    if video_model and video_model != run_model:
        raise ConfigError(f"{out} trains {run_model}; resume it without --video-model (or start a new --output)")
    try:
        saved = json.loads((out / "config.json").read_text()).get("shuffle_captions")
    except (OSError, ValueError):
        return
    if isinstance(saved, bool) and saved != shuffle_captions:
        raise ConfigError(f"{out} is a {'shuffled-caption control' if saved else 'real-caption'} run; resume it "
                          f"{'with' if saved else 'without'} --shuffle-captions")


def train_video_text(data: Any, output: str | Path, preset: str | VideoTextPreset = "cpu",
                     video_model: str | None = None, text_model: str | Path | None = None,
                     segmenter: str | Path | None = None, resume: bool = False, max_steps: int | None = None,
                     batch_size: int | None = None, lr: float | None = None, warmup_steps: int | None = None,
                     num_workers: int | None = None, save_every: int | None = None, log_every: int | None = None,
                     seed: int = 0, shuffle_captions: bool = False, stop_after: int | None = None,
                     on_step=None) -> dict[str, Any]:
    """Train a video-text model on captioned trajectory shards; returns a summary dict.

    ``segmenter``: a ``train-segmenter`` checkpoint to warm-start TrajViT2's segmenter (its
    config must equal the preset's, but for ``no_object``, which TrajViT2 takes from it). ``text_model``: a local transformers directory.
    """
    out = Path(output)
    last, last_state = out / "last.safetensors", out / "last.optim.pt"
    if last.exists() and not resume:
        raise OutputExists(f"{out} already holds a checkpoint; continue it with --resume or choose a new --output")
    captions = read_captions(data)
    if not captions:
        raise InputError(f"{data}: no captioned samples (video-text training needs the shards' txt members)")
    if resume:
        if not last.exists():
            raise CheckpointNotFound(f"resume requested but {last} does not exist")
        P = get_video_text_preset(preset)
        P.model = VideoTextConfig.from_dict(json.loads(read_video_text_metadata(last)["config"]))
        P.sync()
        restore_train_settings(P, out, lr=lr, warmup_steps=warmup_steps, max_steps=max_steps)
        refuse_another_run(out, P.model.video_model, video_model, shuffle_captions)
    else:
        P = resolve_preset(preset, video_model, text_model, captions)
    t = P.train
    apply_train_overrides(P, max_steps=max_steps, warmup_steps=warmup_steps, lr=lr, num_workers=num_workers,
                          save_every=save_every, log_every=log_every, batch_size=batch_size, seed=seed)
    P.sync()
    pairing = shuffled_captions(captions, seed) if shuffle_captions else {}

    rank, world, device, created_group = _setup_distributed()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    warm = None
    if segmenter and not resume:
        warm = load_segmenter(segmenter)
        # A segmenter trained with a no-object query keeps it: its pixels of no trajectory give no token.
        P.model.segmenter.no_object = warm.cfg.no_object
    torch.manual_seed(seed)
    model = VideoTextModel(P.model).to(device)
    if warm is not None:
        if model.segmenter is None:
            raise ConfigError("--segmenter warm-starts TrajViT2's tokenizer; vit3d has no segmenter")
        changed = config_changes(json.loads(json.dumps(warm.cfg.to_dict())), P.model.segmenter.to_dict())
        if changed:
            raise CheckpointError(f"{segmenter}: segmenter config differs from preset {P.name}'s: "
                                  f"{'; '.join(changed[:6])}")
        model.segmenter.load_state_dict(warm.state_dict())
    optimizer = torch.optim.AdamW(_param_groups(model, t.weight_decay), lr=t.lr, betas=tuple(t.betas))
    step = 0
    if resume:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(str(last)))
        state, chosen = matching_train_state(last_state, int(read_video_text_metadata(last)["step"]), last)
        if world > 1:
            dist.barrier()            # every rank has read its state before rank 0 settles the files
        if rank == 0:
            settle_train_state(last_state, chosen)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        for key, now in (("world_size", world), ("batch_size", P.data.batch_size), ("num_workers", t.num_workers),
                         ("seed", seed), ("shuffle_captions", shuffle_captions), ("shards", len(resolve_shards(data)))):
            if state.get(key, now) != now:
                warnings.warn(f"{key} changed since the checkpoint ({state.get(key)} -> {now}): the data order "
                              "differs from an uninterrupted run")
        if rank == 0:
            _truncate_log(out / "log.jsonl", step)
    trajvit = P.model.video_model == "trajvit2"
    ddp = model
    if world > 1:   # only one K's sub-queries take part in a step
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=trajvit)
    position = resume_position(state, step, P.data.batch_size, rank, world) if resume else 0
    loader = make_loader(data, P.data, rank=rank, world_size=world, position=position, num_workers=t.num_workers)
    consumed = position // P.data.batch_size     # loader items this rank has taken
    n_shards = len(loader.dataset.shards)
    if rank == 0:
        (out / "config.json").write_text(json.dumps({"preset": P.to_dict(), "world_size": world,
                                                    "shuffle_captions": shuffle_captions, "seed": seed}, indent=2))

    checkpoint = Checkpointer(out, save_video_text, t.save_every, rank, saved_at=step if resume else -1)

    def save() -> None:
        positions = data_positions(consumed, P.data.batch_size, world, device)
        checkpoint(model, step, {"optimizer": optimizer.state_dict(), "world_size": world,
                                 "batch_size": P.data.batch_size, "num_workers": t.num_workers,
                                 "data_position": positions[0], "data_positions": positions, "seed": seed,
                                 "shuffle_captions": shuffle_captions, "shards": n_shards})

    choices = list(P.model.encoder.sub_tokens)
    uncaptioned = 0
    losses: list[float] = []
    start_step, t0 = step, time.time()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    model.train()
    for batch in loader:
        if step >= t.max_steps or (stop_after is not None and step - start_step >= stop_after):
            break
        consumed += 1
        if "frames" not in batch:       # none of its samples decoded: data consumed, no step
            continue
        batch, dropped = captioned(batch)
        uncaptioned += dropped
        if batch is None:               # no sample of it has a caption: data consumed, no step
            continue
        lr_now = cosine_lr(step, t.lr, t.warmup_steps, t.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        k = choices[int(np.random.default_rng([seed, step, 5]).integers(len(choices)))]
        texts = [pairing.get(c, c) for c in batch["captions"]]    # the clip's own caption (or the control's)
        frames = batch["frames"].to(device, non_blocking=True)
        with bf16_autocast(device):
            res = ddp(frames, texts, k=k)
        video = _gather(res["video"].float(), world)
        text = _gather(res["text"].float(), world)
        groups = _gather(caption_ids(texts).to(device), world)
        clip = clip_loss(video, text, res["scale"].float(), groups)
        loss = clip
        seg = torch.zeros((), device=device)
        if trajvit and P.seg_weight > 0:
            void = res.get("no_object_logits")
            seg = segmenter_loss(res["logits"].float(), batch["labels"].to(device), P.loss,
                                 no_object_logits=None if void is None else void.float(),
                                 features=res.get("features"))["loss"]
            loss = loss + P.seg_weight * seg
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
        optimizer.step()
        step += 1
        stats = torch.stack([loss.detach().float().cpu(), clip.detach().float().cpu(), seg.detach().float().cpu()])
        if world > 1:
            stats = stats.to(device)
            dist.all_reduce(stats)
            stats = stats.cpu() / world
        losses.append(float(stats[0]))
        if rank == 0 and (step % t.log_every == 0 or step == t.max_steps):
            ru = resource.getrusage(resource.RUSAGE_SELF)
            rec = {"step": step, "loss": float(stats[0]), "clip": float(stats[1]), "seg": float(stats[2]),
                   "k": k, "lr": lr_now, "grad_norm": float(grad_norm),
                   "temperature": float(1.0 / model.scale().detach()), "seconds": round(time.time() - t0, 3),
                   "cpu_seconds": round(ru.ru_utime + ru.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3)}
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
        if on_step is not None:
            on_step(step, t.max_steps)
        if step % t.save_every == 0:
            save()
    save()
    del loader
    if world > 1:
        dist.barrier()
    if created_group:
        dist.destroy_process_group()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"step": step, "steps_run": step - start_step, "checkpoint": str(last), "output": str(out),
            "losses": losses, "rank": rank, "world_size": world, "seconds": round(time.time() - t0, 3),
            "cpu_seconds": round(ru.ru_utime + ru.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3),
            "preset": P.name, "video_model": P.model.video_model, "uncaptioned": uncaptioned}


def _main() -> None:
    """``torchrun -m trajtok.train.trajvit2 DATA OUTPUT [PRESET] [VIDEO_MODEL] [MAX_STEPS]``."""
    import sys
    args = sys.argv[1:]
    torch.set_num_threads(int(os.environ.get("TRAJTOK_THREADS", "1")))
    result = train_video_text(args[0], args[1], preset=args[2] if len(args) > 2 else "cpu",
                              video_model=args[3] if len(args) > 3 else None,
                              max_steps=int(args[4]) if len(args) > 4 else None,
                              resume=Path(args[1], "last.safetensors").exists())
    print(json.dumps({k: v for k, v in result.items() if k != "losses"}))


if __name__ == "__main__":
    _main()
