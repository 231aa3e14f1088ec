"""``trajdata annotate``: a streamed listing -> blocks of chunk tasks -> one actor pool that labels and writes.

The listing is the dataset's read side (``ChunkSource``): one read task lists
the source, groups it into chunk tasks (``samples_per_shard`` consecutive
inputs: one output shard per media series), skips what a resumed run already
has, and yields blocks of chunk tasks as it goes, so labelling starts with the
first chunk while listing goes on, and Ray Data's backpressure pauses the
listing when the labellers are behind. One dataset and one actor pool live for
the whole run. Each ``LabelActor`` builds its models once, runs decode ->
label -> encode on every sample of a chunk and writes the chunk's shards and
manifest part to the output (a path or a filesystem URL) itself; the driver
receives one small row per block and keeps the totals.

Blocks: the scheduler costs the driver a few ms of CPU and a few KB of memory
per block for the whole run (bench/REPORT.md), so blocks hold one chunk at
first (small runs: a slow chunk never holds up another, results show at once)
and then grow to ``BLOCKS["max_chunks"]`` chunks / ``BLOCKS["max_samples"]``
samples (``chunk_blocks``). A block retried after its worker died redoes only
its chunks that have no manifest part yet.

``--gpus``: ``gpus / gpu_fraction`` actors, each decoding the next samples
in a thread while its GPU labels. CPU only: one actor per CPU of the
(possibly joined) cluster, each confined to one core (see ``_one_core``).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from dataengine.config import AnnotateConfig
from dataengine.errors import DeviceError, InputError, UserError
from dataengine.format import manifest
from dataengine.format.shards import MEDIA_EXTS
from dataengine.format.outputfs import Output
from dataengine.sources import list_samples
from dataengine.stages.labeller import Labeller
from dataengine.stages.writer import (ChunkTask, annotate_chunk, chunk_blocks, finish_run, open_run,
                                      plan_chunks, tasks_from_text, tasks_to_text)

from .runtime import without_known_ray_noise


class ListingRefused(UserError, RuntimeError):
    """The listing side stopped the run with a reason the user can act on (said on the read side)."""


@dataclass
class Resources:
    cpus: int | None = None          # local Ray only; None = all cores
    gpus: float = 0.0                # GPUs for the label stage
    gpu_fraction: float = 1.0        # GPUs per label actor (0.5 packs two per GPU)
    label_actors: int | None = None  # CPU-only: number of label actors
    address: str | None = None
    object_store_mb: int = 1024
    decode_ahead: int = 2            # GPU actors: samples decoded ahead of the labeller


# How chunks are grouped into blocks (``chunk_blocks``): the first 256 chunks one per block, then
# doubling up to 64 chunks or 1024 samples. The driver's cost per block is Ray Data's (bench/REPORT.md).
BLOCKS = {"single": 256, "max_chunks": 64, "max_samples": 1024}


def _one_core(threads: int) -> None:
    """Confine a worker's native thread pools to the CPUs Ray gave it. OpenCV ignores
    OMP_NUM_THREADS (which Ray sets) and starts a thread per core: one actor then borrows the
    other actors' cores, and N actors on N cores fight over N*N threads. torch only where a
    backend imported it (importing it costs ~1 CPU s per actor)."""
    import sys

    import cv2

    cv2.setNumThreads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class LabelActor:
    """One segmenter + tracker per actor, built once; each call labels and writes a block of whole chunks."""

    def __init__(self, cfg: AnnotateConfig, device: str, output: str, threads: int, decode_ahead: int = 0):
        import ray

        self.cfg, self.decode_ahead = cfg, decode_ahead
        self.out = Output(output)
        self.labeller = Labeller(cfg, device)
        _one_core(threads)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        done = {"samples": 0, "ok": 0, "error": 0}
        for task in tasks_from_text(row["tasks"]):
            summary = annotate_chunk(task, self.cfg, self.labeller, self.out, self.decode_ahead)
            done["samples"] += summary["samples"]
            if not task.retry:  # a new chunk's statuses are its whole part's (run.json totals)
                done["ok"] += summary["ok"]
                done["error"] += summary["error"]
        return {"chunks": row["chunks"], **done, "node": self.node, "last": row["last"],
                "listed_chunks": row["listed_chunks"], "listed_samples": row["listed_samples"], "fatal": row["fatal"]}


def _block_row(tasks: list[ChunkTask], listed_chunks: int, listed_samples: int, last: bool, fatal: str = ""):
    import pyarrow as pa

    return pa.table({"tasks": [tasks_to_text(tasks)], "chunks": [len(tasks)], "last": [last],
                     "listed_chunks": [listed_chunks], "listed_samples": [listed_samples], "fatal": [fatal]})


def _chunk_source(cfg: AnnotateConfig, output: str, blocks: dict[str, int]):
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def read() -> Iterator[Any]:
        """Runs in a Ray worker: list, plan and yield one row (= one block) per block of chunks,
        then a row with no chunks that says the listing is complete."""
        out = Output(output)
        refs = list_samples(cfg.source, limit=cfg.limit)
        tasks = plan_chunks(refs, out, manifest.done_parts(out), cfg.output.samples_per_shard)
        chunks = samples = 0
        try:
            for block in chunk_blocks(tasks, **blocks):
                chunks += len(block)
                samples += sum(len(t.refs) for t in block)
                yield _block_row(block, chunks, samples, last=False)
        except UserError as e:   # e.g. a resume whose input changed: the driver says it, in one line
            yield _block_row([], chunks, samples, last=True, fatal=str(e))
            return
        yield _block_row([], chunks, samples, last=True)

    class ChunkSource(Datasource):
        """The listing as the dataset's read side: one read task, streamed."""

        def estimate_inmemory_data_size(self) -> None:
            return None

        def get_name(self) -> str:
            return "ChunkListing"

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(read, meta)]

    return ChunkSource()


def _ray_stream(cfg: AnnotateConfig, out: Output, res: Resources, actors: int, blocks: dict[str, int]):
    import ray.data
    from ray.util.annotations import RayDeprecationWarning

    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_max_block_size
    # Every row the listing yields is a block of its own: Ray Data would otherwise pack the listing's
    # rows into blocks of up to 128 MiB, i.e. hold the listing back until that much is listed.
    ctx.target_max_block_size = 1
    try:
        # The listing needs no CPU of its own: it must never wait for a label actor's slot. It is not
        # retried: a rerun would plan again from the parts written meanwhile, and its rows would not
        # line up with those the first attempt returned (a retried generator's returns count by
        # position). If the listing's worker dies the run fails, and --resume continues it.
        # Ray 2.60 has no named parameter for a read task's retries; its warning that ray_remote_args
        # goes away in 2.64 is not the user's business (pyproject.toml keeps ray below 2.64).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RayDeprecationWarning)
            ds = ray.data.read_datasource(_chunk_source(cfg, out.uri, blocks), override_num_blocks=1, num_cpus=0,
                                          ray_remote_args={"max_retries": 0})
    finally:
        ctx.target_max_block_size = saved
    # A block is seconds to hours of work: an actor takes the next one only when it is free, so no
    # block waits queued behind a busy actor while another actor idles at the end. An actor that dies
    # is restarted and its block retried (Ray Data's defaults); chunks it had finished are skipped.
    pool = {"max_tasks_in_flight_per_actor": 1}
    kwargs = {"cfg": cfg, "output": out.uri}
    if res.gpus > 0:
        ds = ds.map(LabelActor, fn_constructor_kwargs={**kwargs, "device": "cuda", "threads": 1,
                                                       "decode_ahead": res.decode_ahead},
                    compute=ray.data.ActorPoolStrategy(size=actors, **pool),
                    num_gpus=min(res.gpu_fraction, res.gpus), num_cpus=1)
    else:
        ds = ds.map(LabelActor, fn_constructor_kwargs={**kwargs, "device": "cpu", "threads": 1},
                    compute=ray.data.ActorPoolStrategy(size=actors, **pool), num_cpus=1)
    with without_known_ray_noise(), warnings.catch_warnings():  # Ray Data's actor-argument line, see runtime.py
        # and its warning that the pool got fewer blocks than actors: a resume with little (or nothing) left
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
        yield from ds.iter_rows()


def _actor_count(cfg: AnnotateConfig, res: Resources, listing: Iterator[Any]) -> int:
    if res.gpus > 0:
        fraction = min(res.gpu_fraction, res.gpus)  # --gpus 0.5 with the default fraction: one half-GPU actor
        wanted = max(1, int(res.gpus / fraction))
    else:
        import ray

        # --cpus of a local Ray, else every CPU of the (possibly joined) cluster.
        wanted = max(1, res.label_actors or res.cpus or int(ray.cluster_resources().get("CPU", 1)))
    # No more actors than the input has chunks (each costs seconds to start): the driver reads only
    # the head of ``listing`` for that, never the whole of it.
    per_shard = cfg.output.samples_per_shard
    head = sum(1 for _ in itertools.islice(listing, wanted * per_shard))
    return max(1, min(wanted, math.ceil(head / per_shard)))


def nothing_listed(src) -> str:
    where = src.csv if src.format == "panda_csv" else src.path
    hint = {"video2dataset": "the folder that holds its .tar shards (or their unpacked files), not a parent of it",
            "img2dataset": "the folder that holds its .tar shards (or their unpacked files), not a parent of it",
            "folder": "a folder with media files (" + ", ".join(sorted(MEDIA_EXTS)) + ")",
            "panda_csv": "a Panda-70M metadata CSV with rows"}.get(src.format, "")
    return f"no samples found in {where} (source {src.name!r}, format {src.format})" + (f"; give {hint}" if hint else "")


def annotate(cfg: AnnotateConfig, output: str, resources: Resources | None = None, resume: bool = False,
             use_ray: bool = True, on_progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
    """Run the whole annotate job; returns totals (also written to ``OUTPUT/run.json``)."""
    res = resources or Resources()
    started = time.time()
    # Workers on other nodes (and the listing's worker) do not share the driver's working directory.
    absolute = lambda p: os.path.abspath(p) if p else p  # noqa: E731
    cfg = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, path=absolute(cfg.source.path),
                                                              csv=absolute(cfg.source.csv)))
    # Fail before any work is scheduled when a backend cannot be built (e.g. missing checkpoint).
    labeller = Labeller(cfg)
    if use_ray and res.gpus > 0 and not res.address:
        import torch  # a local Ray would otherwise start GPU actors that cannot build their models

        if not torch.cuda.is_available():
            raise DeviceError(f"--gpus {res.gpus:g} given but torch sees no CUDA device on this machine")
    out = Output(output)
    refs = list_samples(cfg.source, limit=cfg.limit)   # a missing input fails here, before the output is touched
    # and so does a source that cannot be listed at all (a CSV without its columns), or that lists nothing
    first = next(refs, None)
    if first is None and cfg.limit != 0:
        raise InputError(nothing_listed(cfg.source))
    refs = itertools.chain([] if first is None else [first], refs)
    done_before = open_run(out, cfg, resume)
    samples = finished = 0
    new: Counter[str] = Counter()      # statuses of the chunks this run writes from scratch
    nodes: dict[str, dict[str, int]] = {}
    if use_ray:
        from .runtime import init_ray

        del labeller  # actors build their own
        init_ray(res.address, res.cpus, res.gpus, res.object_store_mb)
        actors = _actor_count(cfg, res, refs)
        del refs      # the whole listing runs on the dataset's read side
        listed = {"chunks": 0, "samples": 0, "complete": False}
        for row in _ray_stream(cfg, out, res, actors, BLOCKS):
            if row["fatal"]:
                raise ListingRefused(row["fatal"])
            finished += row["chunks"]
            samples += row["samples"]
            new.update(ok=row["ok"], error=row["error"])
            # rows carry the listing's running totals: the bar's total grows until the listing ends
            listed["chunks"] = max(listed["chunks"], row["listed_chunks"])
            listed["samples"] = max(listed["samples"], row["listed_samples"])
            listed["complete"] |= bool(row["last"])
            if row["chunks"]:
                node = nodes.setdefault(row["node"], {"chunks": 0, "samples": 0})
                node["chunks"] += row["chunks"]
                node["samples"] += row["samples"]
            if on_progress:
                on_progress(samples, listed["samples"])
        if not listed["complete"] or finished != listed["chunks"]:
            raise RuntimeError(f"{listed['chunks'] - finished} of {listed['chunks']} listed chunks came back "
                               f"without a result{'' if listed['complete'] else ' and the listing did not end'}; "
                               f"rerun with --resume")
    else:
        tasks = plan_chunks(refs, out, done_before, cfg.output.samples_per_shard)
        for t in tasks:
            summary = annotate_chunk(t, cfg, labeller, out)
            finished += 1
            samples += summary["samples"]
            if not t.retry:
                new.update(ok=summary["ok"], error=summary["error"])
            node = nodes.setdefault("local", {"chunks": 0, "samples": 0})
            node["chunks"] += 1
            node["samples"] += summary["samples"]
            if on_progress:
                on_progress(samples, None)
    # which node labelled how much of this run (a resumed run counts only its own chunks)
    return finish_run(out, cfg, started, extra={"nodes": dict(sorted(nodes.items()))}, new=new,
                      done_before=done_before)
