"""Ray scaling: annotate throughput of a local Ray with 2 CPUs vs 1 CPU.

Each setting runs in a fresh process: start a local Ray with N CPUs, then time
``pipelines.annotate.annotate`` over the same synthetic corpus (actor start-up
included, Ray start-up excluded). Settings: 1 CPU (one label actor), 2 CPUs
with the default actor count (one per CPU), and 2 CPUs with one label actor. The ratio is
samples/s of each setting over the 1-CPU run. The machine must have at least
2 free cores for the ratio to mean anything.

Usage: python bench/scaling.py [--videos 12] [--images 4] [--media DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
from dataengine.config import build_annotate_config, load_source
from pipelines.annotate import Resources, annotate
from pipelines.runtime import init_ray, shutdown_ray
media, out, cpus, actors = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) or None
res = Resources(cpus=cpus, label_actors=actors, object_store_mb=256)
t0 = time.perf_counter()
init_ray(None, cpus, 0, res.object_store_mb)
t1 = time.perf_counter()
totals = annotate(build_annotate_config(source=vars(load_source("local", media))), out, res)
t2 = time.perf_counter()
shutdown_ray()
print(json.dumps({"ray_start_s": t1 - t0, "annotate_s": t2 - t1, "samples": totals["samples"],
                  "by_status": totals["by_status"]}))
"""

SETTINGS = [("1 CPU", 1, 0), ("2 CPUs (default: 2 actors)", 2, 0), ("2 CPUs, 1 label actor", 2, 1)]


def run_setting(media: Path, work: Path, cpus: int, actors: int) -> dict:
    out = work / f"out-{cpus}-{actors}"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(media), str(out), str(cpus), str(actors)],
                          check=True, capture_output=True, text=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--media", type=Path, help="annotate this folder instead of a fresh synthetic corpus")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from dataengine.tools.synth import make_corpus

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        media = args.media
        if media is None:
            make_corpus(work / "corpus", videos=args.videos, images=args.images, seed=0)
            media = work / "corpus" / "media"
        rows = []
        for name, cpus, actors in SETTINGS:
            r = run_setting(media, work, cpus, actors)
            rows.append({"setting": name, "cpus": cpus, "label_actors": actors or None, **r,
                         "samples_per_s": r["samples"] / r["annotate_s"]})
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["ratio_vs_1cpu"] = r["samples_per_s"] / base
    result = {"cpu_count": os.cpu_count(), "settings": rows,
              "ratio_2cpu_vs_1cpu": max(r["ratio_vs_1cpu"] for r in rows if r["cpus"] == 2)}
    print(f"machine: {os.cpu_count()} CPUs; corpus: {rows[0]['samples']} samples")
    for r in rows:
        print(f"{r['setting']:>26s}: annotate {r['annotate_s']:6.1f} s ({r['samples_per_s']:.2f} samples/s, "
              f"Ray start {r['ray_start_s']:.1f} s)   ratio vs 1 CPU = {r['ratio_vs_1cpu']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
