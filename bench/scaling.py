"""Ray scaling: does annotate go faster with more cores and nodes, and is the driver ever the limit?

Part 1, throughput on the synthetic corpus (each setting a fresh process; actor
start-up included, Ray start-up excluded; samples/s over the 1-CPU run):

* local Ray with 1 CPU, and with 2 CPUs (one label actor per CPU), every process of
  the run pinned to that many cores (``sched_setaffinity``);
* a loopback cluster started with ``ray start`` as separate processes (own temp
  dirs): one node with 1 CPU, then a head plus a second node, 1 CPU each, node i
  pinned to core i; the driver (pinned beside the head) joins with ``--address``.
  The run.json of the two-node run says how many chunks each node labelled.

For the local runs every process under the driver is sampled (psutil) for its
CPU seconds, by role (label actors, driver, raylet + GCS, the rest): where the
second core goes is measured, not guessed.

Part 2, the driver alone, with the no-op labeller (``segmenter: none``): 1k and 10k
listed inputs (tiny images) at 64 inputs per chunk, then 1k and 10k chunks of one
input each (what grows with the number of chunks: Ray Data's bookkeeping per
block); the driver's peak RSS (``VmHWM``) and CPU seconds (``getrusage`` of its own
process, Ray's processes excluded).

The machine must have 2 free cores for part 1's ratios to mean anything;
the load average before and after each run is recorded beside it.

Usage: python bench/scaling.py [--videos 24] [--images 8] [--samples-per-shard 2] [--media DIR]
       [--driver-inputs 1000 10000] [--driver-chunks 1000 10000] [--skip-throughput] [--skip-cluster]
       [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, resource, sys, threading, time
spec = json.loads(sys.argv[2])
if spec.get("cores"):  # the whole local Ray (driver, raylet, workers inherit it) on these cores
    os.sched_setaffinity(0, spec["cores"])
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import psutil
from dataengine.config import build_annotate_config, load_source
from pipelines.annotate import Resources, annotate
from pipelines.runtime import init_ray, shutdown_ray

res = Resources(cpus=spec["cpus"], address=spec["address"], object_store_mb=256)
cfg = build_annotate_config(source=vars(load_source("local", spec["media"])),
                            output={"samples_per_shard": spec["per_shard"]}, segmenter={"name": spec["segmenter"]})
t0 = time.perf_counter()
init_ray(res.address, res.cpus, 0, res.object_store_mb)
t1 = time.perf_counter()
seen, stop = {}, threading.Event()

def peak_rss_mb():
    # VmHWM, not getrusage's ru_maxrss: that one survives exec, so a child forked from a big
    # parent reports the parent's size (this benchmark's parent holds the corpus: ~880 MB)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024

def role(title):
    if "LabelActor" in title: return "label actors"
    if "raylet" in title or "gcs_server" in title: return "raylet + gcs"
    return "other Ray processes"

def sample():  # CPU seconds of every process under this driver (local Ray only), by role
    me = psutil.Process()
    while not stop.is_set():
        for p in me.children(recursive=True):
            try:
                t = p.cpu_times()
                title = " ".join(p.cmdline())[:200]
            except psutil.Error:
                continue
            old = seen.get(p.pid, (0.0, ""))
            seen[p.pid] = (max(old[0], t.user + t.system), title if "LabelActor" in title else old[1] or title)
        stop.wait(0.25)

sampler = threading.Thread(target=sample, daemon=True)
if not spec["address"]:
    sampler.start()
ru0 = resource.getrusage(resource.RUSAGE_SELF)
totals = annotate(cfg, spec["out"], res)
ru1 = resource.getrusage(resource.RUSAGE_SELF)
t2 = time.perf_counter()
stop.set()
roles = {}
for cpu, title in seen.values():
    roles[role(title)] = roles.get(role(title), 0.0) + cpu
roles["driver"] = ru1.ru_utime + ru1.ru_stime
others = sorted(((round(c, 2), t[:90]) for c, t in seen.values() if role(t) == "other Ray processes"), reverse=True)
shutdown_ray()
run = json.loads(open(os.path.join(spec["out"], "run.json")).read())
print(json.dumps({"ray_start_s": t1 - t0, "annotate_s": t2 - t1, "samples": totals["samples"],
                  "by_status": totals["by_status"], "nodes": run.get("nodes", {}),
                  "cpu_s_by_role": {k: round(v, 2) for k, v in sorted(roles.items())},
                  "cpu_s_other_top": others[:6],
                  "driver_cpu_s_annotate": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
                  "driver_peak_rss_mb": peak_rss_mb()}))
"""


def child(spec: dict) -> dict:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"benchmark run {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tiny_images(folder: Path, n: int) -> Path:
    """``n`` 16x16 JPEGs (same bytes, different names): listing and bookkeeping, no labelling cost."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    blob = data.tobytes()
    for i in range(n):
        (folder / f"img_{i:06d}.jpg").write_bytes(blob)
    return folder


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 32 samples: every label actor costs ~3 CPU s before its first sample (worker start, imports,
    # first-call warm-up; measured), which 16 samples (~8 CPU s of labelling) could not amortise
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--samples-per-shard", type=int, default=2,
                    help="chunk size: a chunk is one actor call, so the corpus needs several")
    ap.add_argument("--media", type=Path, help="annotate this folder instead of a fresh synthetic corpus")
    ap.add_argument("--driver-inputs", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--driver-chunks", type=int, nargs="*", default=[1000, 10000],
                    help="driver runs with 1 input per chunk: this many chunks")
    ap.add_argument("--skip-throughput", action="store_true", help="only the driver measurements")
    ap.add_argument("--skip-cluster", action="store_true", help="no ray-start loopback cluster runs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from dataengine.tools.synth import make_corpus
    from pipelines.runtime import LoopbackCluster

    rows, driver_rows, chunk_rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        media = args.media
        if media is None:
            make_corpus(work / "corpus", videos=args.videos, images=args.images, seed=0)
            media = work / "corpus" / "media"
        base = {"media": str(media), "per_shard": args.samples_per_shard, "segmenter": "classical"}
        # "N CPUs": Ray's N logical CPUs (N label actors) AND every process of that run pinned to N
        # cores. Unpinned, the 1-CPU run got the second core for free (driver, Ray's agents and
        # idle workers: ~6 CPU s of a ~15 s run, measured) and the ratio measured Ray's overhead.
        cores = sorted(os.sched_getaffinity(0))
        settings = [("local Ray, 1 CPU", 1, 0), ("local Ray, 2 CPUs", 2, 0)]
        if args.skip_throughput:
            settings = []
        elif not args.skip_cluster:
            settings += [("ray start: 1 node x 1 CPU", 0, 1), ("ray start: 2 nodes x 1 CPU", 0, 2)]
        for name, cpus, nodes in settings:
            out = str(work / f"out-{len(rows)}")
            before = loadavg()
            if nodes:
                # pinned like the local runs: node i on core i, the driver beside the head
                with LoopbackCluster(nodes, cores=[[c] for c in cores[:nodes]]) as cluster:
                    r = child({**base, "out": out, "cpus": None, "address": cluster.address, "cores": cores[:1]})
            else:
                r = child({**base, "out": out, "cpus": cpus, "address": None, "cores": cores[:cpus]})
            rows.append({"setting": name, "cpus": cpus or nodes, "nodes": nodes or 1, **r,
                         "samples_per_s": r["samples"] / r["annotate_s"], "load_before": before,
                         "load_after": loadavg()})
        # the driver alone: 64 inputs per chunk (the default), then 1 input per chunk (every chunk a
        # chunk task of its own: what grows with the number of chunks, not of inputs)
        for per_shard, sizes, into in ((64, args.driver_inputs, driver_rows), (1, args.driver_chunks, chunk_rows)):
            for n in sizes:
                folder = work / f"tiny-{n}"
                if not folder.exists():
                    tiny_images(folder, n)
                before = loadavg()
                r = child({"media": str(folder), "per_shard": per_shard, "segmenter": "none",
                           "out": str(work / f"drv-{n}-{per_shard}"), "cpus": 2, "address": None})
                into.append({"inputs": n, "chunks": -(-n // per_shard), **{k: r[k] for k in (
                    "samples", "annotate_s", "driver_cpu_s_annotate", "driver_peak_rss_mb", "cpu_s_by_role")},
                    "load_before": before, "load_after": loadavg()})
    result = {"cpu_count": os.cpu_count(), "settings": rows, "driver": driver_rows, "driver_chunks": chunk_rows}
    if rows:
        base_rate = rows[0]["samples_per_s"]
        for r in rows:
            r["ratio_vs_1cpu"] = r["samples_per_s"] / base_rate
        by = {r["setting"]: r for r in rows}
        one, two = by["local Ray, 1 CPU"], by["local Ray, 2 CPUs"]
        cpu_total = {k: sum(r["cpu_s_by_role"].values()) for k, r in (("one", one), ("two", two))}
        result.update(ratio_2cpu_vs_1cpu=two["samples_per_s"] / base_rate,
                      # What two cores would give if they were ours alone: all CPU seconds of the 1-CPU
                      # run (one core, pinned) over half of those of the 2-CPU run. Other users' load
                      # inflates wall times, hardly CPU seconds; chunk imbalance at the end is not in it.
                      ratio_2cpu_vs_1cpu_from_cpu_s=cpu_total["one"] / (cpu_total["two"] / 2), cpu_s_total=cpu_total)
        if not args.skip_cluster:
            one, two = by["ray start: 1 node x 1 CPU"], by["ray start: 2 nodes x 1 CPU"]
            result["ratio_2nodes_vs_1node"] = two["samples_per_s"] / one["samples_per_s"]
            result["nodes_that_labelled"] = len(two["nodes"])
        print(f"machine: {os.cpu_count()} CPUs; corpus: {rows[0]['samples']} samples, "
              f"{args.samples_per_shard} per chunk")
        for r in rows:
            roles = ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_s_by_role"].items())
            print(f"{r['setting']:>28s}: {r['annotate_s']:6.1f} s, {r['samples_per_s']:.2f} samples/s, "
                  f"x{r['ratio_vs_1cpu']:.2f} vs 1 CPU (load {r['load_before']}->{r['load_after']}); "
                  f"CPU s: {roles}; nodes {len(r['nodes'])}")
        print(f"2 CPUs vs 1: x{result['ratio_2cpu_vs_1cpu']:.2f} wall; x{result['ratio_2cpu_vs_1cpu_from_cpu_s']:.2f} "
              f"from CPU seconds ({cpu_total['one']:.1f} s on one core vs {cpu_total['two']:.1f} s over two)")
    if len(driver_rows) >= 2:
        lo, hi = driver_rows[0], driver_rows[-1]
        per_sample = (hi["driver_cpu_s_annotate"] - lo["driver_cpu_s_annotate"]) / max(1, hi["inputs"] - lo["inputs"])
        result.update(driver_rss_ratio=hi["driver_peak_rss_mb"] / lo["driver_peak_rss_mb"],
                      driver_cpu_s_per_sample=per_sample,
                      driver_cpu_s_per_sample_total=hi["driver_cpu_s_annotate"] / hi["inputs"],
                      driver_samples_per_cpu_s=1 / max(per_sample, 1e-9))
    for d in driver_rows:
        print(f"driver, {d['inputs']:>6d} inputs (no-op labeller): peak RSS {d['driver_peak_rss_mb']:.0f} MB, "
              f"CPU {d['driver_cpu_s_annotate']:.2f} s for annotate ({d['annotate_s']:.1f} s wall)")
    if "driver_rss_ratio" in result:
        print(f"driver: RSS ratio {result['driver_rss_ratio']:.3f}; "
              f"{result['driver_cpu_s_per_sample'] * 1e3:.3f} ms CPU per extra input "
              f"(= {result['driver_samples_per_cpu_s']:.0f} inputs per driver CPU second)")
    if len(chunk_rows) >= 2:
        lo, hi = chunk_rows[0], chunk_rows[-1]
        result.update(chunks_rss_ratio=hi["driver_peak_rss_mb"] / lo["driver_peak_rss_mb"],
                      chunks_cpu_ms_per_chunk=1e3 * hi["driver_cpu_s_annotate"] / hi["chunks"],
                      chunks_cpu_ms_per_extra_chunk=1e3 * (hi["driver_cpu_s_annotate"] - lo["driver_cpu_s_annotate"])
                      / max(1, hi["chunks"] - lo["chunks"]))
    for d in chunk_rows:
        print(f"driver, {d['chunks']:>6d} chunks of 1 input (no-op labeller): peak RSS {d['driver_peak_rss_mb']:.0f} MB, "
              f"CPU {d['driver_cpu_s_annotate']:.2f} s for annotate ({d['annotate_s']:.1f} s wall)")
    if "chunks_rss_ratio" in result:
        print(f"driver per chunk: RSS ratio {result['chunks_rss_ratio']:.3f}; {result['chunks_cpu_ms_per_chunk']:.3f} ms "
              f"CPU per chunk at {chunk_rows[-1]['chunks']} chunks, {result['chunks_cpu_ms_per_extra_chunk']:.3f} ms "
              f"per extra chunk")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
