"""Training loader over trajectory shards (format v1, read with ``dataengine.format.shards``).

A sample becomes a clip: T frames decoded at the ``frame_indices`` of its
``traj.json`` (a uniform subset of the annotated frames, ``T = cfg.frames``;
images give T = 1) and the matching label maps, augmented together.

Order and resumption. Every (rank, worker) pair is one *consumer* reading a
deterministic stream: shards in an order shuffled per epoch (same for all
consumers), split among consumers by shard when there are enough shards and by
sample index otherwise, shuffled through a seeded buffer, grouped into batches
of equal T. Randomness of a batch (frame offsets, augmentation) is seeded by
(seed, consumer, batch number), never by wall-clock state, so skipping the
first n batches without decoding them reproduces exactly what a run that never
stopped would have seen next (DataLoader workers are rotated so its round-robin
order lines up too). ``position`` is the batches one rank has consumed times
``batch_size`` (= steps x batch size, whatever mix of video and image batches
they were); it assumes the same world size, workers and batch sizes. Video and
image batches have their own sizes (``batch_size``, ``image_batch_size``).
Mixtures. ``data`` may be a mixture recipe (YAML, e.g. ``manifests/mixtures/segmenter_pretrain.yaml``):
``datasets: [{path: DIR|TAR|GLOB, weight: W}, ...]``. Each epoch then draws as many shards as the
datasets hold in all, in proportion to weight / samples per shard (a small dataset repeats, a large one
is subsampled, freshly shuffled each epoch), so samples come in about the weights' proportions whatever
the datasets' sizes. Samples per shard come from each dataset's manifest (a filtered dataset keeps
fewer than it was written with); where one has none, shards count as equal. Shards are the unit so
the rest (split among consumers, shuffle buffer, resumption) is unchanged.
Bad samples. A sample whose media or traj.json cannot be read (hostile or broken media is
refused by the engine's guarded decoder, as annotate refuses it) is skipped with one
WARNING line ``skipping sample KEY: REASON`` on the ``trajtok.data`` logger; the epoch goes
on. A batch whose every sample fails to decode is a ``{"skipped": keys}`` item, which training
counts as consumed data without a step, so the order (and a resumed position) does not shift.
"""
from __future__ import annotations

import glob
import logging
import math
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dataengine.errors import ConfigError, InputError, InputNotFound, first_line
from dataengine.format import manifest
from dataengine.format import shards as shard_io
from dataengine.format import trajformat
from dataengine.media.decode import DecodeError, decode_frames

from .augment import AugmentConfig, augment_clip

log = logging.getLogger(__name__)



@dataclass
class DataConfig:
    image_size: int = 224
    frames: int = 16                 # T for video samples; images give T = 1
    batch_size: int = 8              # video clips per batch, per rank
    # Images (T = 1) per batch, per rank. None: batch_size * frames, the frames of one video batch,
    # so a step costs about the same whichever kind of batch it draws.
    image_batch_size: int | None = None
    shuffle_buffer: int = 128        # raw samples held for shuffling (bytes, not decoded)
    seed: int = 0
    epochs: int | None = None        # None: cycle forever (training is bounded by steps)
    target_stride: int = 4           # labels at 1/4 of the input, the segmenter's grid
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def batch_size_for(self, T: int) -> int:
        """Samples per batch of clips with ``T`` frames (videos: ``batch_size``; images: their own)."""
        if T > 1:
            return self.batch_size
        return self.image_batch_size if self.image_batch_size else self.batch_size * self.frames


@dataclass
class MixturePart:
    path: str
    weight: float
    shards: list[Path]
    samples_per_shard: float | None = None    # from the dataset's manifest, where it has one


def samples_per_shard(path: str, shards: list[Any]) -> float | None:
    """Mean samples per shard of a dataset directory (or URL) from its manifest's ``ok`` rows; None without
    one. Filtered datasets hold fewer per shard than they were written with."""
    try:
        table = manifest.read_manifest(path)
    except Exception:     # no readable manifest: shards count as equal
        return None
    ok = sum(1 for s in table.column("status").to_pylist() if s == "ok") if table.num_rows else 0
    return ok / len(shards) if ok and shards else None


def is_mixture(data: Any) -> bool:
    return isinstance(data, (str, Path)) and Path(data).suffix in (".yaml", ".yml") and Path(data).is_file()


def read_mixture(path: str | Path) -> list[MixturePart]:
    """The datasets of a mixture recipe with their weights (relative paths are relative to the current
    directory, as ``--data`` is); a malformed recipe is a one-line ConfigError."""
    try:
        recipe = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"mixture {path} is not valid YAML: {first_line(e)}") from None
    datasets = recipe.get("datasets") if isinstance(recipe, dict) else None
    if not isinstance(datasets, list) or not datasets:
        raise ConfigError(f"mixture {path} needs a non-empty list 'datasets' of {{path, weight}}")
    parts = []
    for i, d in enumerate(datasets):
        if not isinstance(d, dict) or not isinstance(d.get("path"), str):
            raise ConfigError(f"mixture {path}: datasets[{i}] needs a 'path' (a shard directory, tar or glob)")
        weight = d.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"mixture {path}: datasets[{i}] weight must be a number >= 0, got {weight!r}")
        if is_mixture(d["path"]):
            raise ConfigError(f"mixture {path}: datasets[{i}] names another mixture ({d['path']}); list its datasets")
        shards = resolve_shards(d["path"])
        parts.append(MixturePart(d["path"], float(weight), shards, samples_per_shard(d["path"], shards)))
    if sum(p.weight for p in parts) <= 0:
        raise ConfigError(f"mixture {path}: every weight is 0")
    return parts


def resolve_parts(data: Any) -> list[MixturePart]:
    """``data`` as weighted datasets: a mixture recipe's, or one dataset of weight 1."""
    if is_mixture(data):
        return read_mixture(data)
    return [MixturePart(str(data), 1.0, resolve_shards(data))]


def resolve_shards(data: str | Path | Sequence[str | Path]) -> list[Path]:
    """A dataset directory, one tar, a glob of tars, a mixture recipe (all its datasets' shards), a URL
    (``s3://``, ``gs://``, ``file://``, ...: shards are listed and read there), or a list of any of those."""
    if isinstance(data, (list, tuple)):
        return [p for d in data for p in resolve_shards(d)]
    if is_mixture(data):
        return [p for part in read_mixture(data) for p in part.shards]
    text = str(data)
    if shard_io.is_url(text):                # a dataset (or one tar) on object storage: read where it is
        paths = shard_io.list_shards(text)
        if not paths:
            raise InputNotFound(f"no shards found at {text}")
        return paths
    if any(ch in text for ch in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
    elif Path(text).is_dir() or Path(text).is_file():
        paths = shard_io.list_shards(text)
    else:
        raise InputNotFound(f"no such shard dataset: {text}")
    if not paths:
        raise InputNotFound(f"no shards found in {text}")
    return paths


def is_video(sample: Any) -> bool:
    return (sample.media_ext or "").lower() in shard_io.VIDEO_EXTS


def captioned(batch: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """The batch without its samples that have no caption (they have nothing to be paired with; an
    empty text would make all of them joint positives of each other), and how many were left out."""
    keep = [i for i, c in enumerate(batch["captions"]) if c.strip()]
    dropped = len(batch["captions"]) - len(keep)
    if not dropped:
        return batch, 0
    if not keep:
        return None, dropped
    pick = lambda v: v[keep] if isinstance(v, torch.Tensor) else [v[i] for i in keep]   # noqa: E731
    return {k: pick(v) if isinstance(v, (torch.Tensor, list)) else v for k, v in batch.items()}, dropped


@dataclass
class RawSample:
    """A sample's tar members as read, not yet parsed: what the shuffle buffer and the batch plans hold, so
    a sample whose JSON or traj.json is broken fails when its batch is loaded (costing itself), not while
    the shard is read (which would end the stream)."""
    key: str
    group: dict[str, bytes]

    @property
    def media_ext(self) -> str | None:
        return shard_io.media_ext_of(self.group)

    def parse(self) -> shard_io.ShardSample:
        return shard_io.sample_from_group(self.key, self.group)


def frame_positions(n_annotated: int, frames: int, rng: np.random.Generator | None) -> np.ndarray:
    """``frames`` evenly spaced positions in ``range(n_annotated)``; random phase if ``rng``.

    Fewer annotated frames than ``frames`` repeat frames (a slower clip), so
    every video sample still has exactly T frames and batches stack.
    """
    if n_annotated >= frames:
        step = n_annotated / frames
        offset = rng.uniform(0, step) if rng is not None else step / 2
        return np.minimum((np.arange(frames) * step + offset).astype(np.int64), n_annotated - 1)
    return np.round(np.linspace(0, n_annotated - 1, frames)).astype(np.int64)


def decode_sample(sample: shard_io.ShardSample, frames: int,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> frames uint8 ``[T, H, W, 3]`` and labels int32 ``[T, H, W]`` at the mask resolution.

    The media goes through the engine's guarded decoder (``dataengine.media``): shards come
    from elsewhere, so hostile media is refused here exactly as annotate refuses it, and
    the decoder scales the frames to the masks' size as it decodes (cheaper than annotate's area
    resize of full frames; same geometry, interpolation differs by a few grey levels). Any problem
    is a ``ValueError`` (for the media a ``DecodeError``) with a one-line message that does
    not repeat the key (callers name the sample).
    """
    if sample.media is None:
        raise InputError("the shard holds no media for it")
    traj = sample.traj
    H, W = int(traj["height"]), int(traj["width"])
    indices = list(traj["frame_indices"])
    if not indices:
        raise InputError("its traj.json has no annotated frames")
    video = is_video(sample)
    pos = frame_positions(len(indices), frames, rng) if video else np.zeros(1, dtype=np.int64)
    wanted = [int(indices[p]) for p in pos]
    try:
        # The decoder scales while decoding: less CPU per frame than full frames + an area resize.
        rgb = decode_frames(sample.media, "video" if video else "image", wanted, (W, H), scaler="decoder")
    except DecodeError as e:
        raise DecodeError(f"cannot decode its {sample.media_ext} member: {e}") from None
    # Decode only the rows we need: RLE decoding is the expensive part of labels.
    labels = trajformat.labels_at(traj, [int(p) for p in pos])
    return rgb, labels


def batches_for_worker(batches: int, worker: int, num_workers: int) -> int:
    """Batches stream ``worker`` delivered when a rank has consumed ``batches``.

    DataLoader takes batches from its workers round-robin, in order, so batch n
    came from stream ``n % num_workers``.
    """
    return max(0, -(-(batches - worker) // num_workers))


class ShardDataset(IterableDataset):
    """Batches ``{"frames": [B,T,3,S,S] float, "labels": [B,T,S/4,S/4] int64, "keys": [...], "captions": [...]}``.

    Use with ``DataLoader(dataset, batch_size=None, num_workers=...)`` (see ``make_loader``).
    """

    def __init__(self, data: Any, cfg: DataConfig, rank: int = 0, world_size: int = 1,
                 position: int = 0):
        self.parts = resolve_parts(data)
        self.shards = [p for part in self.parts for p in part.shards]
        self.cfg = cfg
        self.rank, self.world_size = rank, world_size
        if position % cfg.batch_size:
            raise ValueError(f"position {position} is not a multiple of batch size {cfg.batch_size}")
        self.start_batch = position // cfg.batch_size
        self.last_error = ""
        self.pass_keys: set[str] = set()

    # -- the deterministic raw stream of one consumer ---------------------------
    def epoch_shards(self, epoch: int) -> list[Path]:
        """The shards of one epoch, in reading order (the same for every consumer)."""
        if len(self.parts) == 1:
            order = list(self.shards)
            np.random.default_rng([self.cfg.seed, epoch]).shuffle(order)
            return order
        # a mixture: len(self.shards) draws, each dataset's share of *samples* by its weight: shards in
        # proportion to weight / samples per shard where every dataset's manifest says it (at least one if > 0)
        rng = np.random.default_rng([self.cfg.seed, epoch, 5])
        per_shard = [p.samples_per_shard for p in self.parts]
        draw = [p.weight / (sps if all(per_shard) else 1.0) for p, sps in zip(self.parts, per_shard)]
        total, weights = len(self.shards), sum(draw)
        order = []
        for part, w in zip(self.parts, draw):
            k = 0 if part.weight == 0 else max(1, round(total * w / weights))
            n = len(part.shards)
            picks = np.concatenate([rng.permutation(n) for _ in range(-(-k // n))])[:k] if k else []
            order += [part.shards[int(i)] for i in picks]
        rng.shuffle(order)
        return order

    def _read(self, path: Any) -> Iterator[RawSample]:
        """The samples of one shard; a shard that breaks off (truncated, unreadable) gives what it has."""
        try:
            for key, group in shard_io.group_members(shard_io.iter_tar_members(path)):
                yield RawSample(key, group)
        except (tarfile.TarError, EOFError, zlib.error) as e:  # a broken shard costs its own samples
            # (an OSError, e.g. a storage service failing, ends the run loudly instead: --resume continues)
            self.last_error = f"{path}: {first_line(e)}"
            log.warning("skipping the rest of shard %s", self.last_error)

    def _raw(self, epoch: int, consumer: int, n_consumers: int) -> Iterator[RawSample]:
        order = self.epoch_shards(epoch)
        if len(order) >= n_consumers:
            for path in order[consumer::n_consumers]:
                yield from self._read(path)
        else:
            i = mine = 0
            for path in order:
                for s in self._read(path):
                    if i % n_consumers == consumer:
                        mine += 1
                        yield s
                    i += 1
            if i and not mine:   # fewer samples than consumers: this one repeats one of them, not none
                j = 0
                for path in order:
                    for s in self._read(path):
                        if j == consumer % i:
                            yield s
                            return
                        j += 1

    def _shuffled(self, epoch: int, consumer: int, n_consumers: int) -> Iterator[RawSample]:
        rng = np.random.default_rng([self.cfg.seed, epoch, consumer, 7])
        buf: list[RawSample] = []
        for s in self._raw(epoch, consumer, n_consumers):
            if len(buf) < max(1, self.cfg.shuffle_buffer):
                buf.append(s)
                continue
            j = int(rng.integers(len(buf)))
            buf[j], s = s, buf[j]
            yield s
        rng.shuffle(buf)
        yield from buf

    def plans(self, consumer: int, n_consumers: int) -> Iterator[list[RawSample]]:
        """Raw samples of each batch, in order, before any decoding."""
        for _, plan in self.epoch_plans(consumer, n_consumers):
            yield plan

    def epoch_plans(self, consumer: int, n_consumers: int) -> Iterator[tuple[int, list[RawSample]]]:
        """``plans`` with the epoch each batch was completed in."""
        buckets: dict[int, list[RawSample]] = {}
        epoch = 0
        while self.cfg.epochs is None or epoch < self.cfg.epochs:
            seen, keys = 0, set()
            for s in self._shuffled(epoch, consumer, n_consumers):
                seen += 1
                keys.add(s.key)
                T = self.cfg.frames if is_video(s) else 1
                bucket = buckets.setdefault(T, [])
                bucket.append(s)
                if len(bucket) == self.cfg.batch_size_for(T):
                    yield epoch, bucket
                    buckets[T] = []
            if seen == 0:
                if self.cfg.epochs is None:   # an endless stream with nothing to read: never a quiet end
                    raise InputError(f"consumer {consumer}/{n_consumers} got no samples from "
                                     f"{len(self.shards)} shard(s)"
                                     + (f" (last: {self.last_error})" if self.last_error else ""))
                break
            self.pass_keys = keys          # the keys of one whole pass of this consumer's stream
            epoch += 1
        for bucket in buckets.values():   # finite epochs: the remainder forms smaller batches
            if bucket:
                yield epoch, bucket

    def load(self, plan: list[RawSample], rng: np.random.Generator) -> dict[str, Any] | None:
        frames, labels, keys, captions = [], [], [], []
        aug = self.cfg.augment
        for raw in plan:
            T = self.cfg.frames if is_video(raw) else 1
            try:
                s = raw.parse() if isinstance(raw, RawSample) else raw
                rgb, lab = decode_sample(s, T, rng if aug.enabled else None)
            except Exception as e:  # a bad sample (media, JSON, traj.json) costs one sample, never the run
                self.last_error = f"{raw.key}: {first_line(e)}"
                log.warning("skipping sample %s", self.last_error)
                continue
            f, l = augment_clip(torch.from_numpy(rgb).permute(0, 3, 1, 2), torch.from_numpy(lab),
                                self.cfg.image_size, aug, rng, self.cfg.target_stride)
            frames.append(f)
            labels.append(l)
            keys.append(s.key)
            captions.append(s.caption)
        if not frames:
            return None
        return {"frames": torch.stack(frames), "labels": torch.stack(labels), "keys": keys, "captions": captions}

    def iter_batches(self, consumer: int, n_consumers: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        """One item per batch plan: the batch, or ``{"skipped": keys}`` when none of its samples decodes (the
        training loops count it as consumed data without a step, so resumed positions stay those of the
        plans, and DataLoader workers stay in turn)."""
        # A whole pass over this consumer's samples that decodes none of them would repeat forever: that is
        # bad data, not bad luck, and ends the run with the last reason: nothing decoded since the stream
        # started and every key of one complete epoch failed (keys, not epochs: batches straddle epochs).
        failed: set[str] = set()
        decoded = False                   # since this stream (or its resumption) started
        for n, (epoch, plan) in enumerate(self.epoch_plans(consumer, n_consumers)):
            if n < skip:
                continue
            batch = self.load(plan, np.random.default_rng([self.cfg.seed, consumer, n, 11]))
            if batch is not None:
                decoded = True
                yield batch
                continue
            failed.update(s.key for s in plan)
            if not decoded and self.pass_keys and failed >= self.pass_keys:
                if n_consumers == 1:
                    raise InputError(f"no sample of {len(self.shards)} shard(s) could be decoded in a whole pass "
                                     f"over them (last: {self.last_error})")
                raise InputError(f"loader stream {consumer} of {n_consumers} decoded none of its samples of "
                                 f"{len(self.shards)} shard(s) in a whole pass (last: {self.last_error}); "
                                 "remove or repair the bad shards")
            yield {"skipped": [s.key for s in plan]}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader always asks worker 0 first, but in the uninterrupted run
        # batch ``start_batch`` came from stream ``start_batch % n_workers``: rotate
        # the worker -> stream roles so the resumed sequence continues exactly.
        stream = (worker + self.start_batch) % n_workers
        skip = batches_for_worker(self.start_batch, stream, n_workers)
        return self.iter_batches(self.rank * n_workers + stream, self.world_size * n_workers, skip)


def make_loader(data: Any, cfg: DataConfig, rank: int = 0, world_size: int = 1, position: int = 0,
                num_workers: int = 0) -> DataLoader:
    ds = ShardDataset(data, cfg, rank=rank, world_size=world_size, position=position)
    return DataLoader(ds, batch_size=None, num_workers=num_workers,
                      persistent_workers=num_workers > 0, prefetch_factor=2 if num_workers else None)
