"""GPU throughput: labelled frames/s per GPU and segmenter training step time, in one command.

Runs unattended on any CUDA machine (no hub access needed: every model gets random weights in
its published architecture, written to a temp dir in its real checkpoint format and loaded
through the engine's own loaders), in about 9-10 minutes on an H200 (``--budget`` fits it to a limit):

  * labeller, DirectSAM (Segformer-B5) + SAM 2.1 (hiera-L) at model inputs 512 and 1024
    (frames decoded at that size), with 1, 2, 4 (and 8, 16 at 512) label processes packed on one GPU: the
    same packing as ``trajdata annotate --gpu-fraction 1/N`` (one model per process). Each
    process builds its labeller, labels one warm-up clip (timed and reported apart), waits at
    a barrier, then labels ``--clips`` clips; frames/s = all frames / the slowest process's
    wall time. DirectSAM's boundary threshold is set at the quantile of the boundary probability of
    the first keyframe whose regions come closest to ``--objects`` (24), so random weights yield a
    realistic tens of objects to track (the count reached is printed);
  * the same labeller with the keyframes planned by the decode stage only (every 4 frames and at
    histogram changes; ``keyframes.min_coverage=0``: no keyframe placed where the tracks lose
    coverage), at the largest packing: the workload the issue's first figures were measured on. With
    random weights SAM 2 loses its tracks within a frame or two, so the labeller's own rule places a
    keyframe every 2 frames, about twice what tracks that hold need;
  * the same labeller through sam2's own per-object API (``add_new_mask`` per object, each frame
    encoded inside every clip: ``batched_prompts=False, feature_batch=0``), one process at the
    smallest size: today's path against the old one in one run, with the share of pixels on which
    the two agree, in the final labels and in SAM 2's tracks from one keyframe segmentation (equal
    on a CPU; bench/REPORT.md has what a GPU gave);
  * the trained-TrajTok labeller (paper preset, random weights) the same way;
  * ``train-segmenter`` with the paper preset on photo-style ground truth: step time median
    and mean (``log_every=1``: the log's per-step seconds), the loader's samples/s on its own
    with the same workers, and the samples/s the steps consume;
  * peak GPU memory of each.
Each label row also gives the labeller's own split (segment / track seconds per clip) and the
host CPU seconds per clip (a packed GPU runs out of CPU before it runs out of GPU). Prints a table
and writes JSON (``--json``) after every row, so a section that fails (its error is in the JSON)
loses nothing measured before it. ``--smoke`` shrinks everything (tiny models and clips, a few
steps) so the test suite runs the whole script on a CPU and it cannot rot.

Usage: python bench/gpu.py [--json FILE] [--smoke] [--device cuda|cpu] [--sizes 512 1024]
                           [--packing 1 2 4 8 16] [--clips 4] [--steps 40] [--objects 24] [--profile]
                           [--skip api planned trajtok training] [--blocking-sync [N ...]] [--budget SECONDS]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAM2_SMOKE = "configs/sam2.1/sam2.1_hiera_t.yaml"


# ------------------------------------------------------------------ random checkpoints
def write_checkpoints(d: Path, smoke: bool) -> dict[str, str]:
    if not smoke:   # the published architectures, written as bench/backends.py writes them
        from backends import SAM2_CONFIG, write_checkpoints as write_published

        return {**write_published(d), "sam2_config": SAM2_CONFIG}
    import torch
    from sam2.build_sam import build_sam2_video_predictor
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    seg = SegformerConfig(num_labels=1, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32],
                          num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16)
    SegformerForSemanticSegmentation(seg).save_pretrained(d / "directsam")
    sam2 = build_sam2_video_predictor(SAM2_SMOKE, None, device="cpu", hydra_overrides_extra=["++model.image_size=64"])
    torch.save({"model": sam2.state_dict()}, d / "sam2.pt")
    return {"directsam": str(d / "directsam"), "sam2": str(d / "sam2.pt"), "sam2_config": SAM2_SMOKE}


def write_trajtok_checkpoint(d: Path, smoke: bool) -> str:
    import torch

    from trajtok.checkpoint import save_segmenter
    from trajtok.models.segmenter import build_segmenter
    from trajtok.presets import get_preset

    torch.manual_seed(0)
    P = get_preset("tiny" if smoke else "paper")
    return str(save_segmenter(build_segmenter(P.model), d / "trajtok.safetensors"))


LIBRARY_PATH = {"batched_prompts": False, "feature_batch": 0}   # sam2's own per-object API, per-clip encoding


def label_config(method: str, size: int, ck: dict[str, str], frames: int):
    from dataengine.config import build_annotate_config

    decode = {"frames": frames, "max_side": size}
    if method == "trajtok":
        return build_annotate_config(decode=decode, segmenter={"name": "trajtok", "checkpoint": ck["trajtok"]})
    tracker = {"name": "sam2", "checkpoint": ck["sam2"], "sam2_config": ck["sam2_config"], "image_size": size}
    if method.endswith("(sam2 API)"):
        tracker.update(LIBRARY_PATH)
    # keyframes from the decode stage only: none placed where random-weight tracks lose coverage
    keyframes = {"min_coverage": 0.0} if method.endswith("(planned keyframes)") else {}
    return build_annotate_config(decode=decode, keyframes=keyframes,
                                 segmenter={"name": "directsam", "checkpoint": ck["directsam"], "resolution": size},
                                 tracker=tracker)


# ------------------------------------------------------------------ one label process
def decoded_clips(videos: list[str], cfg) -> list[tuple]:
    from dataengine.media.decode import decode_media
    from dataengine.stages.keyframes import detect_keyframes

    clips = []
    for v in videos:
        media = decode_media(Path(v).read_bytes(), "video", cfg.decode)
        keyframes, cuts = detect_keyframes(media.frames, cfg.keyframes)
        clips.append((media.frames, keyframes, cuts))
    return clips


def calibrate(labeller, keyframe, objects: int) -> int:
    """Random weights give no meaningful boundaries: DirectSAM's threshold is set at the quantile of the
    keyframe's boundary probability whose regions come closest to ``objects`` (the count SAM 2 then
    tracks). Returns the count reached."""
    import numpy as np

    seg = labeller.segmenter
    probability = seg.boundary_probability(keyframe)
    best = None
    for q in np.arange(0.05, 0.96, 0.05):
        seg.cfg.boundary_threshold = float(np.quantile(probability, q))
        n = len(np.unique(seg.segment(keyframe)[0]))
        if best is None or abs(n - objects) < abs(best[1] - objects):
            best = (seg.cfg.boundary_threshold, n)
    seg.cfg.boundary_threshold = best[0]
    return best[1]


def blocking_sync() -> bool:
    """Have this process sleep, not spin, while it waits for the GPU: the driver's primary-context flag
    CU_CTX_SCHED_BLOCKING_SYNC, set before the process first uses CUDA. By default the driver spins
    while there are no more CUDA processes than CPUs, so 16 packed processes on 16 CPUs burn a core
    each while waiting, next to the ones doing host work. False where no CUDA driver is found."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    device = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return False
    set_flags = getattr(cuda, "cuDevicePrimaryCtxSetFlags_v2", None) or cuda.cuDevicePrimaryCtxSetFlags
    return set_flags(device, 0x04) == 0   # CU_CTX_SCHED_BLOCKING_SYNC


def ready_labeller(job: dict, videos: list[str]):
    """A label process's set-up: its CPU share, the decoded clips, the labeller (and the seconds its build
    took), DirectSAM's threshold calibrated (the object count reached; None for the TrajTok labeller)."""
    import cv2
    import torch

    from dataengine.stages.labeller import Labeller

    # The engine's label actors confine torch and OpenCV to their CPU share (pipelines/annotate.py _one_core);
    # OpenCV would otherwise start a thread per core in every packed process.
    torch.set_num_threads(job["threads"])
    cv2.setNumThreads(job["threads"])
    cfg = label_config(job["method"], job["size"], job["checkpoints"], job["frames"])
    clips = decoded_clips(videos, cfg)
    t0 = time.perf_counter()
    labeller = Labeller(cfg, device=job["device"])
    seconds_build = time.perf_counter() - t0
    keyframe = clips[0][0][clips[0][1][0]][None]
    objects = calibrate(labeller, keyframe, job["objects"]) if job["method"] != "trajtok" else None
    return labeller, clips, seconds_build, objects


def label_process(rank: int, job: dict, barrier, results) -> None:
    """One packed label process: build, warm up, wait for the others, label ``job['clips']`` clips."""
    import numpy as np
    import torch

    blocking = blocking_sync() if job.get("blocking_sync") else None
    labeller, clips, seconds_build, keyframe_objects = ready_labeller(job, job["videos"])
    cuda = job["device"] == "cuda"
    t0 = time.perf_counter()
    first = labeller.label(*clips[0])
    seconds_warmup = time.perf_counter() - t0
    if rank == 0 and job.get("labels_out"):     # the first clip's labels, for comparing two label paths
        np.save(job["labels_out"], first.labels)
        # and SAM 2's tracks from one keyframe segmentation, before the labeller's own decisions
        frames0, keyframes0, cuts0 = clips[0]
        k = keyframes0[0]
        segmentation = labeller.segment(frames0, [k], cuts0)[0]
        labeller.tracker.prepare_video(frames0)
        np.save(job["labels_out"].replace(".npy", "-tracks.npy"),
                labeller.tracker.track(frames0[k:k + 5], segmentation, start=k))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    barrier.wait()
    start, cpu0 = time.perf_counter(), time.process_time()
    frames = objects = keyframes = 0
    segment = track = 0.0
    for i in range(job["clips"]):
        res = labeller.label(*clips[i % len(clips)])
        frames += len(res.labels)
        keyframes += len(res.keyframes)
        objects += int(np.count_nonzero(np.unique(res.labels[0])))
        segment, track = segment + res.seconds_segment, track + res.seconds_track
    if cuda:
        torch.cuda.synchronize()
    n = job["clips"]
    results.put({"rank": rank, "start": start, "end": time.perf_counter(), "frames": frames,
                 "objects_per_clip": objects / n, "keyframe_objects": keyframe_objects,
                 "keyframes_per_clip": keyframes / n, "seconds_build": seconds_build, "blocking_sync": blocking,
                 "seconds_warmup_clip": seconds_warmup, "segment_s_per_clip": segment / n,
                 "track_s_per_clip": track / n, "cpu_s_per_clip": (time.process_time() - cpu0) / n,
                 "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None})


def packed_run(job: dict, processes: int) -> dict:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")   # CUDA cannot be used in forked children
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=label_process, args=(r, job, barrier, results)) for r in range(processes)]
    for p in procs:
        p.start()
    rows = [results.get(timeout=job["timeout"]) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a label process exited with {p.exitcode}")
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    frames = sum(r["frames"] for r in rows)
    peaks = [r["peak_gib"] for r in rows if r["peak_gib"] is not None]
    return {"processes": processes, "frames_per_s": frames / wall, "seconds": wall, "frames": frames,
            "objects_per_clip": statistics.mean(r["objects_per_clip"] for r in rows),
            "keyframe_objects": rows[0]["keyframe_objects"],
            "blocking_sync": rows[0]["blocking_sync"],
            "keyframes_per_clip": statistics.mean(r["keyframes_per_clip"] for r in rows),
            "seconds_build": max(r["seconds_build"] for r in rows),
            "seconds_warmup_clip": max(r["seconds_warmup_clip"] for r in rows),
            **{k: statistics.mean(r[k] for r in rows) for k in ("segment_s_per_clip", "track_s_per_clip",
                                                                "cpu_s_per_clip")},
            "peak_gib_per_process": max(peaks) if peaks else None}


def profile_labeller(job: dict, top: int = 25) -> dict:
    """One labeller in this process: each phase of one clip timed with the device synchronised (wall and this
    process's CPU seconds), the host post-processing inside the phases apart (DirectSAM's regions from its
    boundary map, the DIS flows, common-fate fits and short-track absorption of ``join_common_fate``), the
    calls it makes, and the functions that take the host's time (cProfile)."""
    import cProfile
    import io
    import pstats

    import numpy as np
    import torch

    import dataengine.backends.segmenters.directsam as directsam
    import dataengine.backends.trackers.flow as flow
    from dataengine.stages import grouping

    labeller, (clip,), _, _ = ready_labeller(job, job["videos"][:1])
    sync = torch.cuda.synchronize if job["device"] == "cuda" else (lambda: None)
    phases: dict[str, list[tuple[float, float]]] = {}

    def timed(name, fn):
        def run(*a, **k):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn(*a, **k)
            sync()
            phases.setdefault(name, []).append((time.perf_counter() - t0, time.process_time() - c0))
            return out
        return run

    labeller.label(*clip)                   # warm-up
    labeller.segment = timed("segment", labeller.segment)
    labeller.join_common_fate = timed("join_common_fate", labeller.join_common_fate)
    if labeller.tracker is not None:
        labeller.tracker.track = timed("track", labeller.tracker.track)
        if hasattr(labeller.tracker, "prepare_video"):
            labeller.tracker.prepare_video = timed("prepare_video", labeller.tracker.prepare_video)
    if hasattr(labeller.segmenter, "boundary_probability"):
        labeller.segmenter.boundary_probability = timed("directsam forward", labeller.segmenter.boundary_probability)
    # module functions the phases look up when called: timed here, put back after the clip
    inner = [(directsam, "regions_from_boundary", "directsam post-processing"), (flow, "frame_motion", "dis flow"),
             (grouping, "common_fate_lut", "common fate fits"), (grouping, "absorb_short", "absorb short")]
    saved = [(module, name, getattr(module, name)) for module, name, _ in inner]
    for module, name, phase in inner:
        setattr(module, name, timed(phase, getattr(module, name)))
    profiler = cProfile.Profile()
    try:
        sync()
        t0 = time.perf_counter()
        profiler.enable()
        res = labeller.label(*clip)
        sync()
        profiler.disable()
        wall = time.perf_counter() - t0
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return {"method": job["method"], "size": job["size"], "wall_s": wall, "keyframes": res.keyframes,
            "objects_first_keyframe": int(len(np.unique(res.labels[0]))),
            "phases": {k: {"calls": len(v), "seconds": sum(w for w, _ in v), "cpu_seconds": sum(c for _, c in v)}
                       for k, v in phases.items()},
            "top_functions": text.getvalue()}


# ------------------------------------------------------------------ training
def training(data: Path, out: Path, smoke: bool, steps: int, device: str) -> dict:
    import torch

    from trajtok.data import make_loader
    from trajtok.presets import get_preset
    from trajtok.train.segmenter import auto_workers, train_segmenter

    preset = "tiny" if smoke else "paper"
    P = get_preset(preset)
    if smoke:
        P.data.batch_size = 2
    workers = 0 if smoke else (P.train.num_workers if P.train.num_workers >= 0 else auto_workers())
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    summary = train_segmenter(str(data), out, preset=preset, max_steps=steps, warmup_steps=1, log_every=1,
                              save_every=10 * steps, num_workers=workers,
                              batch_size=P.data.batch_size)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    seconds = [b["seconds"] - a["seconds"] for a, b in zip(log, log[1:])]
    steady = seconds[min(2, len(seconds) - 1):]   # the first steps include worker start and cudnn autotune
    batch = P.data.batch_size
    loader = make_loader(str(data), P.data, num_workers=workers)
    n, t0 = 0, None
    for i, b in enumerate(b for b in loader if "frames" in b):    # (batches none of whose samples decode: none here)
        if i == 1:
            t0 = time.perf_counter()   # excludes worker start-up
        elif i > 1:
            n += len(b["frames"])
        if i >= max(3, steps // 2):
            break
    loader_rate = n / (time.perf_counter() - t0) if t0 and n else float("nan")
    median, mean = statistics.median(steady), statistics.mean(steady)
    return {"preset": preset, "steps": summary["steps_run"], "loader_workers": workers, "batch_size": batch,
            "step_median_s": median, "step_mean_s": mean, "mean_over_median": mean / median,
            "loader_samples_per_s": loader_rate, "steps_consume_samples_per_s": batch / median,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny models, clips and steps (CPU, seconds)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="model input sizes (default 512 1024)")
    ap.add_argument("--packing", type=int, nargs="+", default=None,
                    help="label processes per GPU at the smallest size (default 1 2 4 8 16); larger sizes run "
                         "those up to 4")
    ap.add_argument("--clips", type=int, default=None, help="clips each label process labels after warm-up")
    ap.add_argument("--steps", type=int, default=None, help="train-segmenter steps")
    ap.add_argument("--skip", nargs="+", default=[], choices=["api", "planned", "trajtok", "training"],
                    help="sections to leave out (the sam2-API baseline, the planned-keyframes row, the TrajTok "
                         "labeller, training)")
    ap.add_argument("--profile", action="store_true",
                    help="first profile one directsam+sam2 labeller at the smallest size (phases, calls, hot functions)")
    ap.add_argument("--blocking-sync", type=int, nargs="*", default=None, metavar="N",
                    help="also run N packed processes (default: the largest packing) that sleep instead of "
                         "spinning while they wait for the GPU (A/B rows at the smallest size)")
    ap.add_argument("--objects", type=int, default=24,
                    help="regions DirectSAM's threshold is calibrated to on the first keyframe (default 24)")
    ap.add_argument("--budget", type=float, default=0,
                    help="seconds: sections that would likely end later are skipped (and listed), so a run under a "
                         "time limit still ends with its summary (default: no budget)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    longest: list[float] = []      # seconds of each section run so far: the estimate of the next one
    import torch

    from dataengine.tools.synth import make_corpus, write_video

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = args.sizes or ([64] if args.smoke else [512, 1024])
    packing = args.packing or ([1, 2] if args.smoke else [1, 2, 4, 8, 16])
    # a 1024 px process holds ~10 GB of GPU memory (and 4 of them already saturate the 16-CPU H200 machine):
    # larger sizes stop at 4
    packing_large = [n for n in packing if n <= 4]
    clips = args.clips or (1 if args.smoke else 4)
    steps = args.steps or (3 if args.smoke else 40)
    frames = 4 if args.smoke else 16
    cpus = os.cpu_count() or 1
    result: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "cpus": cpus,
                    "smoke": args.smoke, "torch": torch.__version__, "label": [], "training": None}
    print(f"device {result['device']}, {cpus} CPUs, torch {torch.__version__}"
          + (" (smoke: tiny models, numbers mean nothing)" if args.smoke else ""), flush=True)

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=float))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        side = 96 if args.smoke else 640
        videos = [str(work / f"clip{i}.mp4") for i in range(2)]
        for i, v in enumerate(videos):   # longer sources than the sampled frames, as real clips are
            write_video(v, seed=300 + i, n_frames=frames * 3, width=side, height=side * 9 // 16 // 2 * 2)
        ck = write_checkpoints(work, args.smoke)
        ck["trajtok"] = write_trajtok_checkpoint(work, args.smoke)
        base = {"videos": videos, "checkpoints": ck, "frames": frames, "clips": clips, "device": device,
                "objects": args.objects,
                "timeout": 600 if args.smoke else 900}
        size0 = min(sizes)
        # The smallest size (the target's) first, then training, then the larger sizes: a run cut short
        # by a time limit loses the least important rows.
        if args.profile:
            result["profile"] = profile_labeller({**base, "method": "directsam+sam2", "size": size0,
                                                  "threads": cpus if device == "cuda" else 1})
            prof = result["profile"]
            print(f"profile directsam+sam2 {size0} px, one clip: {prof['wall_s']:.2f} s, keyframes {prof['keyframes']}, "
                  + ", ".join(f"{k} {v['calls']} calls {v['seconds']:.3f} s ({v['cpu_seconds']:.3f} CPU s)"
                              for k, v in prof["phases"].items()),
                  flush=True)
            print(prof["top_functions"], flush=True)
            save()
        blocking_rows = [] if args.blocking_sync is None else (args.blocking_sync or [max(packing)])
        packing_planned = packing[0] if args.smoke else max(packing)
        first_runs = [("directsam+sam2", size0, n) for n in packing] + \
                     ([] if "planned" in args.skip else [("directsam+sam2 (planned keyframes)", size0, packing_planned)]) + \
                     [("directsam+sam2 (blocking sync)", size0, n) for n in blocking_rows] + \
                     ([] if "api" in args.skip else [("directsam+sam2 (sam2 API)", size0, 1)]) + \
                     ([] if "trajtok" in args.skip else [("trajtok", size0, n) for n in packing[:1 if args.smoke else 2]])
        later_runs = [("directsam+sam2", size, n) for size in sorted(sizes) if size != size0 for n in packing_large]

        def out_of_time(what: str) -> bool:
            """With --budget: True (and says so) when ``what`` would likely end past the budget (the longest
            section so far as its estimate), so a run under a time limit ends with its summary."""
            if not args.budget:
                return False
            elapsed = time.perf_counter() - started
            if elapsed + max(longest, default=0.0) <= args.budget:
                return False
            print(f"{what}: skipped, {elapsed:.0f} s of the {args.budget:.0f} s budget used", flush=True)
            return True

        def label_rows(runs) -> None:
            for method, size, n in runs:
                if out_of_time(f"label {method} {size} px x{n}"):
                    result["label"].append({"method": method, "size": size, "processes": n, "skipped": "time budget"})
                    save()
                    continue
                t_row = time.perf_counter()
                threads = max(1, cpus // n) if device == "cuda" else 1
                job = {**base, "method": method, "size": size, "threads": threads,
                       "blocking_sync": method.endswith("(blocking sync)")}
                if n == 1 and size == size0 and method.startswith("directsam"):
                    job["labels_out"] = str(work / f"labels-{len(result['label'])}.npy")
                try:
                    row = {"method": method, "size": size, **packed_run(job, n)}
                    longest.append(time.perf_counter() - t_row)
                except Exception as e:     # keep going: the other rows still say something
                    row = {"method": method, "size": size, "processes": n, "error": f"{type(e).__name__}: {e}"}
                    print(f"label {method} {size} px x{n}: FAILED {row['error']}", flush=True)
                    result["label"].append(row)
                    save()
                    continue
                if "labels_out" in job:
                    row["labels_file"] = job["labels_out"]
                result["label"].append(row)
                peak = f"{row['peak_gib_per_process']:.1f} GiB" if row["peak_gib_per_process"] is not None else "-"
                print(f"label {method:26s} {size:5d} px x{n}: {row['frames_per_s']:7.1f} frames/s "
                      f"({row['keyframe_objects'] or '-'} objects on the first keyframe, {row['objects_per_clip']:.0f} "
                      f"after grouping, {row['keyframes_per_clip']:.1f} keyframes/clip; per clip segment "
                      f"{row['segment_s_per_clip']:.2f} s, "
                      f"track {row['track_s_per_clip']:.2f} s, host CPU {row['cpu_s_per_clip']:.2f} s; "
                      f"warm-up clip {row['seconds_warmup_clip']:.1f} s, build {row['seconds_build']:.1f} s; "
                      f"peak {peak}/process)", flush=True)
                save()

        label_rows(first_runs)
        result["label_paths"] = compare_label_paths(result["label"])
        for row in result["label"]:
            row.pop("labels_file", None)    # a temporary file, gone with this run
        if result["label_paths"]:
            c = result["label_paths"]
            print(f"label paths at {size0} px: today's path {c['speedup']:.2f}x the frames/s of sam2's per-object "
                  f"API; labels agree on {c['pixel_agreement']:.4f} of pixels ({c['pixel_agreement_matched']:.4f} "
                  f"with ids paired one-to-one) "
                  f"({c['ids_today']} vs {c['ids_api']} trajectories in the first clip); SAM 2's tracks from one "
                  f"keyframe agree on {c['track_agreement']:.4f} of pixels ({c['track_claimed']:.2f} of them "
                  f"claimed by an object)", flush=True)
        save()

        def train_section() -> None:
            try:
                make_corpus(work / "corpus", videos=2 if args.smoke else 16, images=2 if args.smoke else 8,
                            seed=100, n_frames=16 if args.smoke else 48)
                t = training(work / "corpus" / "gt", work / "train", args.smoke, steps, device)
                result["training"] = t
                peak = f"{t['peak_gib']:.1f} GiB" if t["peak_gib"] is not None else "-"
                print(f"train-segmenter {t['preset']}: step median {t['step_median_s']:.3f} s, mean "
                      f"{t['step_mean_s']:.3f} s (mean/median {t['mean_over_median']:.2f}); loader "
                      f"{t['loader_samples_per_s']:.1f} samples/s with {t['loader_workers']} workers vs "
                      f"{t['steps_consume_samples_per_s']:.1f} consumed; peak {peak}", flush=True)
            except Exception as e:
                result["training"] = {"error": f"{type(e).__name__}: {e}"}
                print(f"train-segmenter: FAILED {result['training']['error']}", flush=True)

        if "training" in args.skip:
            result["training"] = {"skipped": True}
        elif out_of_time("train-segmenter"):
            result["training"] = {"skipped": "time budget"}
        else:
            t_train = time.perf_counter()
            train_section()
            longest.append(time.perf_counter() - t_train)
        save()
        label_rows(later_runs)
    ok = [r for r in result["label"] if r["method"] == "directsam+sam2" and r["size"] == size0
          and "error" not in r and "skipped" not in r]
    train = result["training"] or {}
    if ok:
        best = max(ok, key=lambda r: r["frames_per_s"])
        result["summary"] = {"directsam+sam2_best_frames_per_s_per_gpu": best["frames_per_s"],
                             "best_packing": best["processes"], "size": best["size"],
                             "train_mean_over_median": train.get("mean_over_median")}
        print(f"summary: directsam+sam2 at {best['size']} px, best {best['frames_per_s']:.1f} frames/s per GPU "
              f"with {best['processes']} processes ({best['keyframes_per_clip']:.1f} keyframes/clip; target >= 50); "
              f"training mean/median {train.get('mean_over_median', float('nan')):.2f} (target <= 1.2)")
        planned = [r for r in result["label"] if r["method"] == "directsam+sam2 (planned keyframes)"
                   and "error" not in r and "skipped" not in r]
        if planned:
            p = planned[0]
            result["summary"]["planned_keyframes_frames_per_s_per_gpu"] = p["frames_per_s"]
            print(f"summary: with the decode stage's keyframes only ({p['keyframes_per_clip']:.1f} keyframes/clip), "
                  f"{p['frames_per_s']:.1f} frames/s per GPU with {p['processes']} processes")
    save()
    failed = [r for r in result["label"] if "error" in r] + ([train] if "error" in train else [])
    if failed:
        raise SystemExit(f"{len(failed)} section(s) failed; their errors are in the output above")
    return result


def matched_agreement(a, b) -> float:
    """Share of pixels on which two label maps agree once their ids are paired one-to-one (scipy's Hungarian
    matching on the overlap counts): the same partition under other ids counts as agreement."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    p, q = int(a.max()) + 1, int(b.max()) + 1
    overlap = np.bincount(a.astype(np.int64).ravel() * q + b.astype(np.int64).ravel(), minlength=p * q).reshape(p, q)
    rows, cols = linear_sum_assignment(-overlap)
    return float(overlap[rows, cols].sum() / a.size)


def compare_label_paths(rows: list[dict]) -> dict | None:
    """Frames/s and first-clip labels of today's sam2 path against sam2's per-object API (one process)."""
    import numpy as np

    today = next((r for r in rows if r["method"] == "directsam+sam2" and "labels_file" in r), None)
    api = next((r for r in rows if r["method"].endswith("(sam2 API)") and "labels_file" in r), None)
    if today is None or api is None:
        return None
    a, b = np.load(today["labels_file"]), np.load(api["labels_file"])
    ta, tb = (np.load(r["labels_file"].replace(".npy", "-tracks.npy"))[1:] for r in (today, api))
    return {"speedup": today["frames_per_s"] / api["frames_per_s"], "pixel_agreement": float((a == b).mean()),
            "pixel_agreement_matched": matched_agreement(a, b),
            "ids_today": int(len(np.unique(a[a != 0]))), "ids_api": int(len(np.unique(b[b != 0]))),
            "track_agreement": float((ta == tb).mean()), "track_claimed": float((tb != 0).mean())}


if __name__ == "__main__":
    main()
