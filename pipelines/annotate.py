"""``trajdata annotate``: list -> chunk tasks -> one actor pool that labels and writes whole shards.

The driver lists the source lazily, groups it into chunk tasks
(``samples_per_shard`` consecutive inputs: one output shard per media series)
and spills them to ``OUTPUT/.listing/``; Ray Data then streams one small row
per chunk through a single dataset and a single actor pool that lives for the
whole run. Each ``LabelActor`` builds its models once, runs decode -> label ->
encode on every sample of a chunk and writes the chunk's shards and manifest
part to the output (a path or a filesystem URL) itself; the driver receives a
one-line summary per chunk and keeps the totals. Backpressure is Ray Data's
streaming executor: no waves, no barrier, nothing buffered on the driver.

``--gpus``: ``gpus / gpu_fraction`` actors, each decoding the next samples
in a thread while its GPU labels. CPU only: one actor per CPU of the
(possibly joined) cluster, each confined to one core (see ``_one_core``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from dataengine.config import AnnotateConfig
from dataengine.errors import DeviceError
from dataengine.format.outputfs import Output
from dataengine.sources import list_samples
from dataengine.stages.labeller import Labeller
from dataengine.stages.writer import ChunkListing, annotate_chunk, finish_run, open_run, plan_chunks

from .runtime import without_known_ray_noise


@dataclass
class Resources:
    cpus: int | None = None          # local Ray only; None = all cores
    gpus: float = 0.0                # GPUs for the label stage
    gpu_fraction: float = 1.0        # GPUs per label actor (0.5 packs two per GPU)
    label_actors: int | None = None  # CPU-only: number of label actors
    address: str | None = None
    object_store_mb: int = 1024
    decode_ahead: int = 2            # GPU actors: samples decoded ahead of the labeller


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
    """One segmenter + tracker per actor, built once; each call labels and writes one whole chunk."""

    def __init__(self, cfg: AnnotateConfig, device: str, output: str, listing: ChunkListing,
                 threads: int, decode_ahead: int = 0):
        import ray

        self.cfg, self.listing, self.decode_ahead = cfg, listing, decode_ahead
        self.out = Output(output)
        self.labeller = Labeller(cfg, device)
        _one_core(threads)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        summary = annotate_chunk(self.listing.task(int(row["position"])), self.cfg, self.labeller, self.out,
                                 self.decode_ahead)
        return {**summary, "node": self.node}


def _ray_stream(n_tasks: int, cfg: AnnotateConfig, out: Output, listing: ChunkListing, res: Resources):
    import ray.data

    # One chunk per block: a slow chunk never holds up another. An actor that dies is restarted
    # and its chunk retried (Ray Data's defaults); the chunk's files are then written again,
    # byte for byte the same. The driver holds one integer per chunk (plus Ray Data's ~7.5 KB of
    # bookkeeping per block, measured); the chunk tasks themselves are on the output.
    ds = ray.data.from_items([{"position": i} for i in range(n_tasks)], override_num_blocks=max(1, n_tasks))
    # A chunk is seconds to minutes of work: an actor takes the next one only when it is free,
    # so no chunk waits queued behind a busy actor while another actor idles at the end.
    pool = {"max_tasks_in_flight_per_actor": 1}
    kwargs = {"cfg": cfg, "output": out.uri, "listing": listing}
    if res.gpus > 0:
        fraction = min(res.gpu_fraction, res.gpus)  # --gpus 0.5 with the default fraction: one half-GPU actor
        actors = max(1, int(res.gpus / fraction))
        ds = ds.map(LabelActor, fn_constructor_kwargs={**kwargs, "device": "cuda", "threads": 1,
                                                       "decode_ahead": res.decode_ahead},
                    compute=ray.data.ActorPoolStrategy(size=actors, **pool), num_gpus=fraction, num_cpus=1)
    else:
        # --cpus of a local Ray, else every CPU of the (possibly joined) cluster.
        cpus = res.cpus or int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, min(res.label_actors or cpus, n_tasks))
        ds = ds.map(LabelActor, fn_constructor_kwargs={**kwargs, "device": "cpu", "threads": 1},
                    compute=ray.data.ActorPoolStrategy(size=actors, **pool), num_cpus=1)
    with without_known_ray_noise():    # Ray Data's own actor-argument warning, see runtime.py
        yield from ds.iter_rows()


def annotate(cfg: AnnotateConfig, output: str, resources: Resources | None = None, resume: bool = False,
             use_ray: bool = True, on_progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
    """Run the whole annotate job; returns totals (also written to ``OUTPUT/run.json``)."""
    res = resources or Resources()
    started = time.time()
    # Fail before any work is scheduled when a backend cannot be built (e.g. missing checkpoint).
    labeller = Labeller(cfg)
    if use_ray and res.gpus > 0 and not res.address:
        import torch  # a local Ray would otherwise start GPU actors that cannot build their models

        if not torch.cuda.is_available():
            raise DeviceError(f"--gpus {res.gpus:g} given but torch sees no CUDA device on this machine")
    out = Output(output)
    refs = list_samples(cfg.source, limit=cfg.limit)   # a missing input fails here, before the output is touched
    done_before = open_run(out, cfg, resume)
    tasks = plan_chunks(refs, out, done_before, cfg.output.samples_per_shard)
    samples = 0
    nodes: dict[str, dict[str, int]] = {}
    if use_ray:
        from .runtime import init_ray
        listing = ChunkListing(out)
        n_tasks, total = listing.spill(tasks)
        del labeller  # actors build their own
        stream = None
        if n_tasks:
            init_ray(res.address, res.cpus, res.gpus, res.object_store_mb)
            stream = _ray_stream(n_tasks, cfg, out, listing, res)
    else:
        n_tasks, total = None, None
        stream = ({**annotate_chunk(t, cfg, labeller, out), "node": "local"} for t in tasks)
    finished = 0
    for summary in stream or ():
        finished += 1
        samples += summary["samples"]
        node = nodes.setdefault(summary["node"], {"chunks": 0, "samples": 0})
        node["chunks"] += 1
        node["samples"] += summary["samples"]
        if on_progress:
            on_progress(samples, total)
    if n_tasks is not None and finished != n_tasks:
        raise RuntimeError(f"{n_tasks - finished} of {n_tasks} chunks came back without a result; "
                           f"rerun with --resume")
    # which node labelled how much of this run (a resumed run counts only its own chunks)
    return finish_run(out, cfg, started, extra={"nodes": dict(sorted(nodes.items()))})
