"""Starting or joining Ray with settings that work on a laptop and on a cluster."""
from __future__ import annotations

import logging
import math
import os


def init_ray(address: str | None = None, cpus: int | None = None, gpus: float | None = None,
             object_store_mb: int = 1024) -> None:
    # Ray 2.60 refuses to start here without these; neither affects a cluster that is joined.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import ray.data

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            # A local Ray: capped object store (by default it takes 30 % of RAM), no dashboard,
            # bound to loopback.
            # Whole GPUs: --gpus 0.5 still needs one device for its half-GPU actors to land on.
            ray.init(num_cpus=cpus or os.cpu_count(), num_gpus=math.ceil(gpus or 0),
                     object_store_memory=object_store_mb * 2**20, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING, _node_ip_address="127.0.0.1")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False       # the CLI draws its own bar
    ctx.print_on_execution_start = False
    # Each row is a whole chunk already written by its worker: the driver keeps no buffer,
    # so rows may come back in any order and a slow chunk never stalls the others.
    ctx.execution_options.preserve_order = False


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
