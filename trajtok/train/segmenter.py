"""Segmenter training loop: one function, readable top to bottom.

Single process, or DDP under ``torchrun`` (detected from ``RANK`` /
``WORLD_SIZE``; gloo on CPU, nccl on GPU). Rank 0 writes everything in
``output/``:

    config.json          resolved preset of the run
    log.jsonl            one line per logged step (loss parts, lr, grad norm, ...)
    tb/                  TensorBoard scalars
    last.safetensors     weights + config (``load_segmenter`` rebuilds from it)
    last.optim.pt        optimizer state, step, data position (for ``resume``)
    step-XXXXXXX.safetensors   periodic snapshots

A resumed run continues from the saved step *and* the saved data position, so
with the same settings it sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dataengine.errors import CheckpointError, CheckpointNotFound, ConfigError, OutputExists
from dataengine.format import shards as shard_io
from ..checkpoint import (load_segmenter, matching_train_state, read_metadata, save_segmenter, save_train_state_pair,
                         settle_train_state, state_pair_done, weights_digest)
from ..data import make_loader, resolve_shards
from ..losses import segmenter_loss
from ..models.segmenter import Segmenter, build_segmenter
from ..presets import Preset, get_preset

__all__ = ["train_segmenter", "load_segmenter", "lr_at"]


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * max(0.0, (total - step) / max(1, total - warmup))


def apply_train_overrides(P: Any, *, max_steps: int | None, warmup_steps: int | None, lr: float | None,
                          num_workers: int | None, save_every: int | None, log_every: int | None,
                          batch_size: int | None, seed: int) -> None:
    """Command-line overrides of a preset's ``train`` and ``data`` sections (both training loops)."""
    t = P.train
    if max_steps is not None:
        t.max_steps = max_steps
    if warmup_steps is not None:
        t.warmup_steps = warmup_steps
    elif t.warmup_steps >= t.max_steps:   # a short smoke run must still reach the peak lr
        t.warmup_steps = max(1, t.max_steps // 10)
    t.lr = lr if lr is not None else t.lr
    t.num_workers = num_workers if num_workers is not None else t.num_workers
    if t.num_workers < 0:
        t.num_workers = auto_workers()
    t.save_every = save_every or t.save_every
    t.log_every = log_every or t.log_every
    if batch_size is not None:
        P.data.batch_size = batch_size
    P.data.seed = seed


def restore_train_settings(P: Any, out: Path, *, lr: float | None, warmup_steps: int | None,
                           max_steps: int | None, grouping_weight: float | None = None) -> None:
    """On ``--resume``: the run's own preset, schedule and grouping-term weight (from its
    ``config.json``), not the command line's defaults. A different preset is refused (its data and
    augmentation settings would change silently); an lr / warm-up / length / weight the command gives
    that differs from the run's is taken, with a warning. Call before ``apply_train_overrides``."""
    path = out / "config.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text()).get("preset") or {}
    except (OSError, ValueError):
        return          # a torn config.json: the checks of the checkpoint itself still apply
    name = saved.get("name")
    if name and name != P.name:
        raise ConfigError(f"{out} was trained with preset {name!r}, not {P.name!r}; resume it with --preset {name}")
    train, loss = saved.get("train") or {}, saved.get("loss") or {}
    for section, part, key, given in ((P.train, train, "lr", lr), (P.train, train, "warmup_steps", warmup_steps),
                                      (P.train, train, "max_steps", max_steps),
                                      (P.loss, loss, "grouping_weight", grouping_weight)):
        if key not in part:
            continue
        if given is None:
            setattr(section, key, part[key])
        elif given != part[key]:
            warnings.warn(f"{key} changed since the checkpoint ({part[key]} -> {given}): the training from here "
                          "differs from the run's")


def config_changes(saved: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    """``key: saved -> mine`` for each model setting that differs (compared as JSON holds them: tuples as lists)."""
    mine = json.loads(json.dumps(mine))
    return [f"{k}: {saved.get(k, '(absent)')!r} -> {mine.get(k, '(absent)')!r}"
            for k in sorted(set(saved) | set(mine)) if saved.get(k) != mine.get(k)]


def auto_workers() -> int:
    """Loader workers for one training process: the CPUs it may use, shared with the other processes
    torchrun started on this node, less one for the process itself. A GPU step is far faster than
    decoding its batch on one core, so the loader takes every core the node can give."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, per_process - 1)


class Checkpointer:
    """Rank 0 writes ``last.safetensors`` + ``last.optim.pt`` (and ``step-N`` every ``save_every``
    steps), at most once per step; both training loops save through it."""

    def __init__(self, out: Path, save_model: Any, save_every: int, rank: int, saved_at: int = -1):
        self.out, self.save_model, self.save_every, self.rank, self.saved_at = out, save_model, save_every, rank, saved_at

    def __call__(self, model: torch.nn.Module, step: int, train_state: dict[str, Any]) -> None:
        if self.rank != 0 or self.saved_at == step:
            return
        self.saved_at = step
        # the state first (the one before kept aside), then the weights: killed between the two, a
        # matching pair is still there for --resume
        save_train_state_pair(self.out / "last.optim.pt", {"step": step, **train_state})
        self.save_model(model, self.out / "last.safetensors", step=step)
        state_pair_done(self.out / "last.optim.pt")
        if step % self.save_every == 0:
            self.save_model(model, self.out / f"step-{step:07d}.safetensors", step=step)


def bf16_autocast(device: torch.device):
    """bf16 autocast on CUDA only; CPU runs stay in fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _setup_distributed() -> tuple[int, int, torch.device, bool]:
    """-> (rank, world_size, device, created_group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    return rank, world, device, created


def data_positions(consumed: int, batch_size: int, world: int, device: torch.device) -> list[int]:
    """Every rank's data position (loader items it consumed x batch size; an item whose samples all failed
    to decode counts, without a step): called by all ranks at a save, which only rank 0 writes."""
    if world == 1:
        return [consumed * batch_size]
    mine = torch.tensor([consumed], device=device)
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    return [int(x.item()) * batch_size for x in every]


def resume_position(state: dict[str, Any], step: int, batch_size: int, rank: int, world: int) -> int:
    """This rank's data position from a saved training state. With another batch size (or world size, or a
    state that predates per-rank positions) the order differs anyway (the caller warns): one step, one batch."""
    per_rank = state.get("data_positions")
    if isinstance(per_rank, list) and len(per_rank) == world and state.get("batch_size") == batch_size:
        return int(per_rank[rank])
    return step * batch_size


def _param_groups(model: Segmenter, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices and conv kernels only: decaying norms, biases, the query
    # slots or the temperature shrinks them toward 0 for no regularising benefit.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and name not in ("queries", "no_object_query") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def ground_truth_labels(data: Any) -> bool:
    """Whether the data's first sample carries ground truth (its metadata's ``backends`` say
    ``ground_truth``, as ``trajdata synth`` writes), where label 0 means "no object"."""
    try:
        first = next(shard_io.read_shard(resolve_shards(data)[0], with_media=False), None)
    except Exception:   # unreadable data is the loader's to report, with its own message
        return False
    return first is not None and (first.meta.get("backends") or {}).get("segmenter") == "ground_truth"


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step``: they came from work the checkpoint does not hold."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):   # a line torn by a kill or a full disk: not a record
            continue
    path.write_text("".join(line + "\n" for line in keep))


def train_segmenter(data: Any, output: str | Path, preset: str | Preset = "tiny", resume: bool = False,
                    max_steps: int | None = None, batch_size: int | None = None,
                    image_batch_size: int | None = None, lr: float | None = None,
                    warmup_steps: int | None = None, num_workers: int | None = None,
                    save_every: int | None = None, log_every: int | None = None, seed: int = 0,
                    backbone_checkpoint: str | Path | None = None, stop_after: int | None = None,
                    no_object: bool | None = None, grouping_weight: float | None = None,
                    on_step: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train the TrajTok segmenter on trajectory shards; returns a summary dict.

    ``data``: dataset dir, tar, glob or list. ``max_steps`` sets the schedule
    length (default: the preset's). ``stop_after`` ends this call after that
    many steps (e.g. a time-sliced job) without changing the schedule; a later
    ``resume=True`` call continues. ``backbone_checkpoint``: optional local
    timm ConvNeXt weights to start from. ``no_object``: give the model a no-object query
    (``SegmenterConfig.no_object``; None: the preset's, or on ``resume`` the checkpoint's), for
    labels whose 0 means "no object here" (ground truth of objects only), not "unknown".
    ``grouping_weight``: weight of the pixel-grouping term (``LossConfig.grouping_weight``; None: the
    preset's, 0: the paper's loss alone). ``on_step(step, max_steps)``: called on rank 0 after every step
    (and once at the start), for a progress bar.
    """
    P = get_preset(preset)
    t = P.train
    out = Path(output)
    last, last_state = out / "last.safetensors", out / "last.optim.pt"
    if resume and last.exists():
        restore_train_settings(P, out, lr=lr, warmup_steps=warmup_steps, max_steps=max_steps,
                               grouping_weight=grouping_weight)
    apply_train_overrides(P, max_steps=max_steps, warmup_steps=warmup_steps, lr=lr, num_workers=num_workers,
                          save_every=save_every, log_every=log_every, batch_size=batch_size, seed=seed)
    if image_batch_size is not None:
        P.data.image_batch_size = image_batch_size
    if grouping_weight is not None:
        P.loss.grouping_weight = grouping_weight
    if no_object is not None:
        P.model.no_object = no_object
    elif resume and last.exists():
        P.model.no_object = bool(json.loads(read_metadata(last)["config"]).get("no_object", False))
    elif not P.model.no_object and ground_truth_labels(data):
        warnings.warn(f"{data} holds ground truth, whose label 0 means 'no object': --no-object (no_object=True) "
                      "trains the model to leave those pixels out; without it they are ignored and the "
                      "trajectories' masks spread over them (--every-pixel silences this)")
    P.sync()

    rank, world, device, created_group = _setup_distributed()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if last.exists() and not resume:
        raise OutputExists(f"{out} already holds a checkpoint; continue it with --resume or choose a new --output")

    torch.manual_seed(seed)   # identical init on every rank (DDP also broadcasts rank 0's)
    model = build_segmenter(P.model, backbone_checkpoint).to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, t.weight_decay), lr=t.lr, betas=tuple(t.betas))
    step = 0
    if resume:
        if not last.exists():
            raise CheckpointNotFound(f"resume requested but {last} does not exist")
        saved_cfg = json.loads(read_metadata(last)["config"])
        changed = config_changes(saved_cfg, P.model.to_dict())
        if changed:
            hint = (" (--no-object / --every-pixel must be the run's)"
                    if any(c.startswith("no_object") for c in changed) else "")
            raise CheckpointError(f"{last} was trained with another model config: {'; '.join(changed[:6])}{hint}")
        model.load_state_dict(load_segmenter(last).state_dict())
        state, chosen = matching_train_state(last_state, int(read_metadata(last)["step"]), last)
        if world > 1:
            dist.barrier()            # every rank has read its state before rank 0 settles the files
        if rank == 0:
            settle_train_state(last_state, chosen)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        for key, now in (("world_size", world), ("batch_size", P.data.batch_size),
                         ("image_batch_size", P.data.batch_size_for(1)), ("num_workers", t.num_workers),
                         ("seed", seed), ("shards", len(resolve_shards(data)))):
            if state.get(key, now) != now:   # a key the checkpoint predates is not a change
                warnings.warn(f"{key} changed since the checkpoint ({state.get(key)} -> {now}): "
                              "training continues, but the data order differs from an uninterrupted run")
        if rank == 0:
            _truncate_log(out / "log.jsonl", step)

    if world > 1:
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp = model
    position = resume_position(state, step, P.data.batch_size, rank, world) if resume else 0
    loader = make_loader(data, P.data, rank=rank, world_size=world, position=position, num_workers=t.num_workers)
    consumed = position // P.data.batch_size     # loader items this rank has taken
    n_shards = len(loader.dataset.shards)

    writer = None
    if rank == 0:
        (out / "config.json").write_text(json.dumps({"preset": P.to_dict(), "world_size": world},
                                                    indent=2))
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"))

    checkpoint = Checkpointer(out, save_segmenter, t.save_every, rank, saved_at=step if resume else -1)

    def save() -> None:
        positions = data_positions(consumed, P.data.batch_size, world, device)
        checkpoint(model, step, {"optimizer": optimizer.state_dict(), "data_position": positions[0],
                                 "data_positions": positions,
                                 "world_size": world, "batch_size": P.data.batch_size,
                                 "image_batch_size": P.data.batch_size_for(1), "num_workers": t.num_workers,
                                 "seed": seed, "shards": n_shards})

    losses: list[float] = []
    start_step, t0 = step, time.time()
    if on_step is not None and rank == 0:
        on_step(step, t.max_steps)
    model.train()
    for batch in loader:
        if step >= t.max_steps or (stop_after is not None and step - start_step >= stop_after):
            break
        consumed += 1
        if "frames" not in batch:       # none of its samples decoded: data consumed, no step
            continue
        lr_now = lr_at(step, t.lr, t.warmup_steps, t.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        frames = batch["frames"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with bf16_autocast(device):
            res = ddp(frames)
        void = res.get("no_object_logits")
        parts = segmenter_loss(res["logits"].float(), labels, P.loss,
                               no_object_logits=None if void is None else void.float(), features=res["features"])
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
        optimizer.step()
        step += 1

        stats = torch.stack([parts[k].detach().float().cpu()
                             for k in ("loss", "focal", "dice", "empty", "grouping", "matched")])
        if world > 1:   # log the mean over ranks, not rank 0's batch alone
            stats = stats.to(device)
            dist.all_reduce(stats)
            stats = stats.cpu() / world
        losses.append(float(stats[0]))
        if rank == 0 and (step % t.log_every == 0 or step == t.max_steps):
            rec = {"step": step, "loss": float(stats[0]), "focal": float(stats[1]), "dice": float(stats[2]),
                   "empty": float(stats[3]), "grouping": float(stats[4]), "matched": float(stats[5]), "lr": lr_now,
                   "grad_norm": float(grad_norm), "temperature": float(1.0 / model.scale().detach()),
                   "seconds": round(time.time() - t0, 3)}
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            for k in ("loss", "focal", "dice", "empty", "grouping", "lr", "grad_norm", "temperature"):
                writer.add_scalar(f"train/{k}", rec[k], step)
        if on_step is not None and rank == 0:
            on_step(step, t.max_steps)
        if step % t.save_every == 0:
            save()
    save()
    del loader   # stop persistent workers before tearing down the process group
    if writer is not None:
        writer.close()
    if world > 1:
        dist.barrier()
    if created_group:
        dist.destroy_process_group()
    return {"step": step, "steps_run": step - start_step, "checkpoint": str(last), "output": str(out),
            "losses": losses, "rank": rank, "world_size": world, "seconds": round(time.time() - t0, 3),
            "preset": P.name, "weights_sha256": weights_digest(model)}


def _main() -> None:
    """``torchrun -m trajtok.train DATA OUTPUT [PRESET] [MAX_STEPS]`` (the CLI lives in cli.py)."""
    import sys
    args = sys.argv[1:]
    torch.set_num_threads(int(os.environ.get("TRAJTOK_THREADS", "1")))
    result = train_segmenter(args[0], args[1], preset=args[2] if len(args) > 2 else "tiny",
                             max_steps=int(args[3]) if len(args) > 3 else None,
                             resume=Path(args[1], "last.safetensors").exists())
    print(json.dumps({k: v for k, v in result.items() if k != "losses"}))


if __name__ == "__main__":
    _main()
