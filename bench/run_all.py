"""Run every benchmark in ``bench/`` and write ``bench/REPORT.md``.

Each benchmark runs in its own process and hands back JSON; a benchmark that
fails (or whose code is not there yet) becomes a row marked as such instead of
stopping the others. Every figure in the summary table is measured within one
run, as a ratio of two numbers taken on the same machine minutes apart; the
load average before and after each benchmark is recorded beside it, because a
busy machine skews every throughput.

Usage: python bench/run_all.py [--out bench/REPORT.md] [--only NAME ...] [--quick]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

THROUGHPUT_CHILD = r"""
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/bench")
import annotate as bench_annotate          # bench/annotate.py
from dataengine.tools.synth import make_corpus
with tempfile.TemporaryDirectory() as tmp:
    make_corpus(Path(tmp) / "corpus", videos=int(sys.argv[3]), images=0, seed=0)
    result = bench_annotate.throughput(Path(tmp) / "corpus" / "media", int(sys.argv[4]))
Path(sys.argv[2]).write_text(json.dumps(result))
print(f"corpus: {result['samples']} videos, {result['frames']} sampled frames, {result['errors']} errors")
print(f"decode-only {result['decode_fps']:8.1f} frames/s (read + decode + keyframes)")
print(f"annotate    {result['annotate_fps']:8.1f} frames/s   ratio annotate/decode = {result['ratio_annotate_vs_decode']:.3f}")
"""

# name -> (command after the interpreter, quick variant)
def commands(json_path: Path, quick: bool) -> dict[str, list[str]]:
    j = str(json_path)
    return {
        "throughput": ["-c", THROUGHPUT_CHILD, str(ROOT), j, "3" if quick else "6", "16"],
        "scaling": [str(BENCH / "scaling.py"), "--json", j] + (["--videos", "4", "--images", "2", "--driver-inputs", "500", "2000",
                                                             "--driver-chunks", "500", "2000"] if quick else []),
        "loader": [str(BENCH / "loader.py"), "--json", j] + (["--presets", "tiny"] if quick else []),
        "storage": [str(BENCH / "storage.py"), "--json", j],
        "backends": [str(BENCH / "backends.py"), "--json", j],
        "segmenter": [str(BENCH / "segmenter.py"), "--json", j],
        "memory": [str(BENCH / "memory.py"), "--json", j] + (["--frames", "16"] if quick else []),
        "quality": [str(BENCH / "quality.py"), "--json", j] + (["--seeds", "200", "--videos", "4"] if quick else []),
        "host": [str(BENCH / "host.py"), "--json", j] + (["--rounds", "2", "--repeat", "1"] if quick else []),
        "tokens": [str(BENCH / "tokens.py"), "--json", j] + (["--frames", "16", "32", "--steps", "4"] if quick else []),
        "retrieval": [str(BENCH / "retrieval.py"), "--json", j, "--jobs", "2"]
                     + (["--videos", "40", "--steps", "20", "--only", "trajvit2_seed0"] if quick else []),
    }


SCRIPTS = {"throughput": "annotate.py", "scaling": "scaling.py", "loader": "loader.py", "storage": "storage.py",
           "backends": "backends.py", "segmenter": "segmenter.py", "memory": "memory.py", "quality": "quality.py",
           "host": "host.py", "tokens": "tokens.py", "retrieval": "retrieval.py"}


def run_one(name: str, quick: bool, work: Path) -> dict:
    out = work / f"{name}.json"
    script = BENCH / SCRIPTS[name]
    rec: dict = {"name": name, "load_before": os.getloadavg()[0]}
    if not script.is_file():
        rec.update(status="missing", error=f"bench/{SCRIPTS[name]} does not exist yet")
        return rec
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    t0 = time.time()
    proc = subprocess.run([sys.executable, *commands(out, quick)[name]], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    rec.update(seconds=round(time.time() - t0, 1), load_after=os.getloadavg()[0],
               stdout=proc.stdout.strip())
    if proc.returncode != 0 or not out.is_file():
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-3:]
        missing_pkg = "ModuleNotFoundError" in proc.stderr or "ImportError" in proc.stderr
        rec.update(status="not yet measured" if missing_pkg and name == "loader" else "failed",
                   error=" | ".join(tail)[-400:] or f"exit code {proc.returncode}")
        return rec
    rec.update(status="ok", result=json.loads(out.read_text()))
    return rec


# ------------------------------------------------------------------ report
def _f(x: float, digits: int = 2) -> str:
    return f"{x:,.{digits}f}"


def summary_rows(recs: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """(measure, numerator, denominator, ratio) for the summary table."""
    rows = []

    def failed(name: str, what: str) -> None:
        r = recs.get(name)
        if r is not None and r["status"] != "ok":
            rows.append((what, f"**{r['status']}**", r.get("error", "")[:120], "—"))

    r = recs.get("throughput")
    if r and r["status"] == "ok":
        x = r["result"]
        rows.append(("annotate vs decode-only (frames/s, 1 core, in-process)",
                     f"annotate {_f(x['annotate_fps'], 1)}", f"decode-only {_f(x['decode_fps'], 1)}",
                     _f(x["ratio_annotate_vs_decode"], 3)))
    failed("throughput", "annotate vs decode-only")
    r = recs.get("scaling")
    if r and r["status"] == "ok":
        s = {row["setting"]: row for row in r["result"]["settings"]}
        one = r["result"]["settings"][0]
        for row in r["result"]["settings"][1:]:
            rows.append((f"Ray {row['setting']} vs 1 CPU (samples/s)", f"{_f(row['samples_per_s'], 3)}",
                         f"{_f(one['samples_per_s'], 3)}", _f(row["ratio_vs_1cpu"], 2)))
        x = r["result"]
        if "ratio_2cpu_vs_1cpu_from_cpu_s" in x:
            rows.append(("Ray 2 CPUs vs 1 from CPU seconds (all processes; 1 CPU run / half the 2 CPU run)",
                         _f(x["cpu_s_total"]["one"], 1), _f(x["cpu_s_total"]["two"] / 2, 1),
                         _f(x["ratio_2cpu_vs_1cpu_from_cpu_s"], 2)))
        if "ratio_2nodes_vs_1node" in x:
            two, single = s["ray start: 2 nodes x 1 CPU"], s["ray start: 1 node x 1 CPU"]
            rows.append((f"two-node loopback cluster vs one node, 1 CPU each (samples/s; "
                         f"{x['nodes_that_labelled']} nodes labelled)", _f(two["samples_per_s"], 3),
                         _f(single["samples_per_s"], 3), _f(x["ratio_2nodes_vs_1node"], 2)))
        if "driver_rss_ratio" in x:
            lo, hi = x["driver"][0], x["driver"][-1]
            rows.append((f"driver peak RSS, {hi['inputs']} vs {lo['inputs']} inputs (MB, no-op labeller)",
                         _f(hi["driver_peak_rss_mb"], 0), _f(lo["driver_peak_rss_mb"], 0),
                         _f(x["driver_rss_ratio"], 3)))
            rows.append((f"driver CPU per input, {hi['inputs']} inputs, no-op labeller, vs the budget of "
                         f"500 inputs/s (target <= 1)", f"{_f(x['driver_cpu_s_per_sample_total'] * 1e3, 3)} ms",
                         "2.000 ms", _f(x["driver_cpu_s_per_sample_total"] / 0.002, 3)))
        if "chunks_rss_ratio" in x:
            lo, hi = x["driver_chunks"][0], x["driver_chunks"][-1]
            rows.append((f"driver peak RSS, {hi['chunks']} vs {lo['chunks']} chunks of 1 input (MB, no-op labeller)",
                         _f(hi["driver_peak_rss_mb"], 0), _f(lo["driver_peak_rss_mb"], 0),
                         _f(x["chunks_rss_ratio"], 3)))
            rows.append((f"driver CPU per chunk, {hi['chunks']} chunks of 1 input, vs the 5 ms per block of "
                         f"one chunk per block (target << 1)", f"{_f(x['chunks_cpu_ms_per_chunk'], 3)} ms",
                         "5.000 ms", _f(x["chunks_cpu_ms_per_chunk"] / 5, 3)))
        del s
    failed("scaling", "Ray 2 CPUs vs 1")
    r = recs.get("loader")
    if r and r["status"] == "ok":
        for p in r["result"]["presets"]:
            rows.append((f"training loader vs train-segmenter step, preset {p['preset']} "
                         f"(samples/s, batch {p['batch_size']})",
                         f"loader {_f(p['loader_samples_per_s'], 2)}", f"step {_f(p['train_samples_per_s'], 3)}",
                         _f(p["ratio_loader_vs_train"], 2)))
        d = r["result"].get("decode")
        if d:
            rows.append((f"decode {d['frames']} frames of a {d['clip']} to {d['size'][0]}x{d['size'][1]} "
                         f"(CPU s): full frames + area resize vs decoder scaling (the loader's)",
                         f"area {_f(d['area_cpu_s'], 3)}", f"decoder {_f(d['decoder_cpu_s'], 3)}",
                         _f(d["ratio_area_vs_decoder"], 2)))
    failed("loader", "training loader vs train-segmenter step")
    r = recs.get("storage")
    if r and r["status"] == "ok":
        for d in r["result"]["datasets"]:
            label = "ground truth" if d["dataset"].rstrip("/").endswith("gt") else "engine output"
            rows.append((f"traj.json vs PNG id maps (bytes / annotated frame, {label})",
                         f"traj.json {_f(d['traj_json_bytes_per_frame'], 0)}",
                         f"PNG {_f(d['png_bytes_per_frame'], 0)}", _f(d["ratio_traj_vs_png"], 3)))
    failed("storage", "shard bytes vs PNG id maps")
    seen: set[str] = set()
    for bench in ("backends", "segmenter"):  # segmenter.py adds the trained TrajTok labeller
        r = recs.get(bench)
        if r and r["status"] == "ok":
            res = r["result"]
            base = res.get("classical+flow", {}).get("seconds_clip")
            for name, v in res.items():
                if name in seen or not (isinstance(v, dict) and ("seconds_clip" in v or "seconds_clip_estimate" in v)):
                    continue
                seen.add(name)
                sec = v.get("seconds_clip", v.get("seconds_clip_estimate"))
                est = " (estimate)" if "seconds_clip" not in v else ""
                rows.append((f"labelling backend {name}: seconds per {res['clip']['frames']}-frame clip{est}",
                             f"{_f(sec, 2)} s", f"classical+flow {_f(base, 2)} s" if base else "—",
                             _f(sec / base, 2) if base else "—"))
        failed(bench, "labelling backends, seconds per clip")
    r = recs.get("memory")
    if r and r["status"] == "ok":
        for c in r["result"]["cases"]:
            rows.append((f"peak RSS, {c['video']} video 480 vs 48 frames, --frames {c['frames']} "
                         f"(target <= {r['result']['target']})",
                         f"{_f(c['long_peak_mb'], 0)} MB", f"{_f(c['short_peak_mb'], 0)} MB", _f(c["ratio"], 3)))
    failed("memory", "peak RSS long vs short video")
    r = recs.get("quality")
    if r and r["status"] == "ok":
        res = r["result"]
        for style, e in res["styles"].items():
            cur, base = e["current"], e.get("baseline")
            where = (f"{style} style, held-out seeds {', '.join(map(str, res['seeds']))}, "
                     f"{cur['n_trajectories']} GT trajectories")
            for key, what in (("recall_at_0.5", "strict trajectory recall@0.5"), ("mean_best_iou", "mean best IoU"),
                              ("ids_per_gt_trajectory", "predicted ids per GT trajectory"),
                              ("length_ratio", "mean trajectory length, predicted / GT"),
                              ("cpu_seconds_clip", "CPU seconds per clip, classical+flow")):
                rows.append((f"label quality: {what} ({where}), this tree vs baseline {res.get('baseline')}",
                             _f(cur[key], 3), _f(base[key], 3) if base else "—",
                             _f(cur[key] / base[key], 2) if base and base[key] else "—"))
            rows.append((f"label quality: trajectories across a scene cut ({style})", str(cur["cut_crossings"]),
                         str(base["cut_crossings"]) if base else "—", "—"))
            if "images" in cur:
                ci, bi = cur["images"], (base or {}).get("images")
                where = (f"{style} style images, held-out seeds {', '.join(map(str, res['seeds']))}, "
                         f"{ci['n_trajectories']} GT objects")
                for key, what in (("recall_at_0.5", "strict recall@0.5"), ("mean_best_iou", "mean best IoU"),
                                  ("ids_per_gt_trajectory", "predicted ids per GT object")):
                    rows.append((f"label quality: {what} ({where}), this tree vs baseline {res.get('baseline')}",
                                 _f(ci[key], 3), _f(bi[key], 3) if bi else "—",
                                 _f(ci[key] / bi[key], 2) if bi and bi[key] else "—"))
    failed("quality", "label quality")
    r = recs.get("host")
    if r and r["status"] == "ok" and "ratio_baseline_over_current" in r["result"]:
        res = r["result"]
        (old, a), (_, b) = res["trees"].items()
        same = all(res["identical"].values())
        for key in [k for k in b["cpu_s_per_clip"] if k.startswith(("random weights", "thin boundaries"))]:
            rows.append((f"model labeller host CPU s per clip, {key} (one thread; outputs "
                         f"{'identical' if same else 'DIFFER'}), this tree vs {old}",
                         _f(b["cpu_s_per_clip"][key], 3), _f(a["cpu_s_per_clip"][key], 3),
                         _f(b["cpu_s_per_clip"][key] / a["cpu_s_per_clip"][key], 2)))
    failed("host", "model labeller host CPU per clip")
    r = recs.get("tokens")
    if r and r["status"] == "ok":
        x = r["result"]
        first, last = x["rows"][0], x["rows"][-1]
        span = f"{last['frames']} vs {first['frames']} frames"
        for name, label in (("vit3d", "ViT3D"), ("trajvit2_k4", "TrajViT2 K=4"), ("trajvit2_k1", "TrajViT2 K=1"),
                            ("trajvit2_chunk16_k4", "TrajViT2 K=4, 16-frame chunks")):
            rows.append((f"forward GFLOPs per video, {label}, {span} (linear = x{x['frame_ratio']:g})",
                         _f(last[f"{name}_gflops"], 0), _f(first[f"{name}_gflops"], 0), _f(x["growth"][name], 2)))
        rows.append((f"tokens per {first['frames']}-frame clip, TrajViT2 K=4 (bound) vs ViT3D",
                     str(first["trajvit2_k4_tokens"]), str(first["vit3d_tokens"]),
                     _f(first["trajvit2_k4_tokens"] / first["vit3d_tokens"], 3)))
        step = x.get("train_step", {})
        if "trajvit2" in step and "vit3d" in step:
            rows.append(("CPU seconds per training step, cpu preset, TrajViT2 vs ViT3D (1 thread)",
                         _f(step["trajvit2"]["cpu_seconds_per_step"], 3), _f(step["vit3d"]["cpu_seconds_per_step"], 3),
                         _f(step["trajvit2"]["cpu_seconds_per_step"] / step["vit3d"]["cpu_seconds_per_step"], 2)))
    failed("tokens", "tokens and FLOPs per video")
    r = recs.get("retrieval")
    if r and r["status"] == "ok":
        for run in r["result"]["runs"]:
            rows.append((f"held-out t2v R@5 vs chance, {run['name']} ({run['steps']} steps, "
                         f"{_f(run['train_cpu_seconds'], 0)} CPU s)", _f(run["t2v"]["R@5"], 3),
                         _f(run["t2v"]["chance"]["R@5"], 3), _f(run["t2v_R@5_over_chance"], 2)))
    failed("retrieval", "held-out retrieval vs chance")
    return rows


def render(recs: dict[str, dict], started: str, quick: bool) -> str:
    import numpy

    versions = {"python": platform.python_version(), "numpy": numpy.__version__}
    for mod in ("torch", "ray", "av", "cv2"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    lines = [
        "# Benchmark report",
        "",
        f"Written by `bench/run_all.py`{' --quick' if quick else ''} (started {started}). "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}. "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
        "Each ratio is numerator / denominator, both measured in the same run. Throughputs are "
        "wall-clock on a shared machine: compare the load averages below before trusting a small difference.",
        "",
        "| measure | numerator | denominator | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(recs)]
    lines += ["", "## Runs", "", "| benchmark | status | seconds | load avg before → after |", "|---|---|---|---|"]
    for name, r in recs.items():
        load = f"{r['load_before']:.1f} → {r.get('load_after', r['load_before']):.1f}"
        lines.append(f"| `bench/{SCRIPTS[name]}` ({name}) | {r['status']} | {r.get('seconds', '—')} | {load} |")
    lines += ["", "## Output of each benchmark", ""]
    for name, r in recs.items():
        lines += [f"### {name} (`bench/{SCRIPTS[name]}`)", ""]
        if r.get("stdout"):
            lines += ["```", r["stdout"], "```"]
        if r["status"] != "ok":
            lines += ["", f"**{r['status']}**: {r.get('error', '')}"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=BENCH / "REPORT.md")
    ap.add_argument("--only", nargs="+", choices=list(SCRIPTS), help="run only these benchmarks")
    ap.add_argument("--quick", action="store_true", help="smaller corpora and fewer cases (a smoke run)")
    args = ap.parse_args(argv)
    started = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    recs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(SCRIPTS):
            print(f"[run_all] {name} ...", flush=True)
            recs[name] = run_one(name, args.quick, Path(tmp))
            r = recs[name]
            print(f"[run_all] {name}: {r['status']}" + (f" in {r['seconds']} s" if "seconds" in r else "")
                  + (f" ({r['error']})" if r["status"] != "ok" else ""), flush=True)
    args.out.write_text(render(recs, started, args.quick))
    print(f"[run_all] wrote {args.out}")
    for a, b, c, d in summary_rows(recs):
        print(f"  {a}: {b} / {c} = {d}")
    return 0 if all(r["status"] == "ok" for r in recs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
