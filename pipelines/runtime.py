"""Starting or joining Ray with settings that work on a laptop and on a cluster."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from typing import Iterator


def init_ray(address: str | None = None, cpus: int | None = None, gpus: float | None = None,
             object_store_mb: int = 1024) -> None:
    # A local Ray does not start without token authentication set up unless it is switched off, and
    # usage statistics would phone home; neither setting affects a cluster that is joined.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import ray.data

    if not ray.is_initialized():
        if address:
            check_reachable(address)
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
    # ... so Ray Data's notice that its bars are off, and its per-dataset "execution finished" line,
    # are not news to the user; its real warnings (e.g. resources it cannot get) still show.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)
    ctx.print_on_execution_start = False
    # Each row is a whole chunk already written by its worker: the driver keeps no buffer,
    # so rows may come back in any order and a slow chunk never stalls the others.
    ctx.execution_options.preserve_order = False


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) head that nothing answers on is one line here: Ray itself retries
    the connection for many minutes, printing only C++ warnings (``auto`` and other forms are Ray's to resolve)."""
    import socket

    from dataengine.errors import UserError

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"--address {address}: no Ray head answers there ({e.strerror or e}); start one with "
                        f"`ray start --head`, or give its HOST:PORT (`--address auto` on a node of the cluster)"
                        ) from None


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


# Ray core logs this at ERROR level (core_worker.cc) for every Ray Data actor pool: Ray Data itself
# passes the map function and its DataContext to each actor's constructor as object-store
# references and asks for unlimited actor restarts. It is not caused by the size of our config and
# cannot be avoided short of turning actor restarts off (ray-project/ray issues 53727, 57733).
KNOWN_RAY_NOISE = (b"core_worker.cc", b"has constructor arguments in the object store")


@contextlib.contextmanager
def without_known_ray_noise() -> Iterator[None]:
    """Drop the one known, harmless Ray core line from this process's stderr while the block runs.

    Ray's C++ logger writes straight to file descriptor 2, so the descriptor is pointed at a pipe
    whose reader forwards every other byte unchanged. Python's ``sys.stderr`` (the progress bar)
    keeps writing to the original stream, so terminals stay terminals.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (an embedding host): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    original_stderr = sys.stderr

    def forward() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                kept = [line for line in lines if not all(part in line for part in KNOWN_RAY_NOISE)]
                if kept:
                    os.write(saved, b"\n".join(kept) + b"\n")
        if pending:
            os.write(saved, pending)

    reader = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    if hasattr(original_stderr, "fileno"):
        try:
            if original_stderr.fileno() == 2:
                sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(
                    original_stderr, "encoding", None) or "utf-8", errors="backslashreplace")
        except (OSError, ValueError):
            pass
    try:
        yield
    finally:
        if sys.stderr is not original_stderr:
            sys.stderr.close()
            sys.stderr = original_stderr
        os.dup2(saved, 2)       # closes the pipe's last write end: the reader drains and stops
        reader.join(timeout=5)
        os.close(saved)


class LoopbackCluster:
    """A Ray cluster of ``nodes`` nodes on this machine for tests and benchmarks: ``ray start --head``
    then ``ray start --address`` per extra node, separate processes with their own temp dirs.

    Stopped by the ids of the processes whose command line carries those temp dirs (and their
    children), never ``ray stop``: that would also stop every other Ray on the machine.
    """

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, object_store_mb: int = 200,
                 cores: list[list[int]] | None = None):
        """``cores``: per node, the cores its processes are pinned to (benchmarks)."""
        import socket
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        # A short path of its own: Ray's Unix sockets live under the temp dir (at most 107 bytes)
        self.root = Path(tempfile.mkdtemp(prefix="ray-"))
        self.dirs = [self.root / f"n{i}" for i in range(nodes)]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        ray_bin = str(Path(sys.executable).parent / "ray")
        env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
        common = ["--num-cpus", str(cpus_per_node), "--object-store-memory", str(object_store_mb * 2**20),
                  "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        try:
            for i, d in enumerate(self.dirs):
                d.mkdir(parents=True, exist_ok=True)
                where = (["--head", "--port", str(port), "--include-dashboard", "false"] if i == 0
                         else ["--address", self.address])
                pin = (lambda c=cores[i]: os.sched_setaffinity(0, c)) if cores else None  # inherited
                proc = subprocess.run([ray_bin, "start", *where, "--temp-dir", str(d), *common], env=env,
                                      capture_output=True, text=True, timeout=180, preexec_fn=pin)
                if proc.returncode:
                    raise RuntimeError(f"ray start failed: {proc.stderr.strip()[-2000:]}")
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> "LoopbackCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def processes(self) -> list:
        import psutil

        found = {}
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                line = " ".join(p.info["cmdline"] or [])
                if any(str(d) in line for d in self.dirs):
                    for q in [p, *p.children(recursive=True)]:
                        found[q.pid] = q
            except psutil.Error:
                continue
        return list(found.values())

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        import shutil
        shutil.rmtree(self.root, ignore_errors=True)
