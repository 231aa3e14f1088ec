"""``trajdata annotate``: sources -> decode (CPU tasks) -> label (actor pool) -> encode -> shards.

The driver lists the source lazily, feeds Ray Data one wave of samples at a
time (bounded driver memory for any dataset size), and writes shards as their
chunks complete. The label stage is an actor pool: one model set per actor,
``--gpus`` GPUs split into ``gpus / gpu_fraction`` actors, decode and encode
running as CPU tasks beside them. Without GPUs each actor runs the whole
sample (decode -> label -> encode), one actor per CPU: as separate stages Ray
Data fuses decode into the actor anyway, and encode tasks would wait for a CPU
the actors hold, so two CPUs labelled no faster than one.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable

from dataengine.stages.annotate import encode_row, label_row, read_and_decode, ref_to_row, run_local, sample_meta
from dataengine.config import AnnotateConfig
from dataengine.errors import DeviceError
from dataengine.stages.labeller import Labeller
from dataengine.sources import list_samples
from dataengine.stages.writer import DatasetWriter

from .runtime import without_known_ray_noise


@dataclass
class Resources:
    cpus: int | None = None          # local Ray only; None = all cores
    gpus: float = 0.0                # GPUs for the label stage
    gpu_fraction: float = 1.0        # GPUs per label actor (0.5 packs two per GPU)
    label_actors: int | None = None  # CPU-only: number of label actors
    address: str | None = None
    object_store_mb: int = 1024
    wave: int = 2048                 # samples handed to Ray Data at a time


class LabelActor:
    """One segmenter + tracker per actor, built once and reused for every sample.

    ``whole_sample``: also decode before and encode after labelling (CPU-only runs).
    """

    def __init__(self, cfg: AnnotateConfig, device: str, whole_sample: bool = False):
        self.cfg = cfg
        self.whole_sample = whole_sample
        self.labeller = Labeller(cfg, device)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if not self.whole_sample:
            return label_row(row, self.labeller)
        return encode_row(label_row(read_and_decode(row, self.cfg), self.labeller), self.cfg)


def _ray_stream(rows: list[dict[str, Any]], cfg: AnnotateConfig, res: Resources):
    import ray.data

    # One row per block: a slow or failed sample never holds up a whole block. A worker
    # that dies is retried by Ray Data's defaults (tasks and actors retry without limit);
    # a sample that fails by itself comes back as an error row.
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    if res.gpus > 0:
        fraction = min(res.gpu_fraction, res.gpus)  # --gpus 0.5 with the default fraction: one half-GPU actor
        actors = max(1, int(res.gpus / fraction))
        ds = ds.map(read_and_decode, fn_kwargs={"cfg": cfg}, num_cpus=1)
        ds = ds.map(LabelActor, fn_constructor_kwargs={"cfg": cfg, "device": "cuda"},
                    compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=fraction, num_cpus=1)
        ds = ds.map(encode_row, fn_kwargs={"cfg": cfg}, num_cpus=1)
    else:
        # --cpus of a local Ray, else every CPU of the (possibly joined) cluster.
        cpus = res.cpus or int(ray.cluster_resources().get("CPU", 1))
        actors = res.label_actors or max(1, cpus)
        ds = ds.map(LabelActor, fn_constructor_kwargs={"cfg": cfg, "device": "cpu", "whole_sample": True},
                    compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
    with without_known_ray_noise():    # Ray Data's own actor-argument warning, see runtime.py
        yield from ds.iter_rows()


def annotate(cfg: AnnotateConfig, output: str, resources: Resources | None = None, resume: bool = False,
             use_ray: bool = True, on_progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
    """Run the whole annotate job; returns totals (also written to ``OUTPUT/run.json``)."""
    res = resources or Resources()
    # Fail before any work is scheduled when a backend cannot be built (e.g. missing checkpoint).
    labeller = Labeller(cfg)
    if use_ray and res.gpus > 0 and not res.address:
        import torch  # a local Ray would otherwise start GPU actors that cannot build their models

        if not torch.cuda.is_available():
            raise DeviceError(f"--gpus {res.gpus:g} given but torch sees no CUDA device on this machine")
    writer = DatasetWriter(output, cfg, resume=resume, meta_fn=lambda row: sample_meta(row, cfg))
    refs = writer.plan(list_samples(cfg.source, limit=cfg.limit))
    done = 0
    if use_ray:
        from .runtime import init_ray
        init_ray(res.address, res.cpus, res.gpus, res.object_store_mb)
        del labeller  # actors build their own
    while True:
        wave = list(itertools.islice(refs, res.wave))
        if not wave:
            break
        stream = (_ray_stream([ref_to_row(r) for r in wave], cfg, res) if use_ray
                  else run_local(wave, cfg, labeller))
        for row in stream:
            writer.add(row)
            done += 1
            if on_progress:
                on_progress(done, None if not writer.listing_done else sum(writer.expected.values()))
    return writer.close()
