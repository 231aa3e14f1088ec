"""The two command-line apps, ``trajdata`` and ``trajtok``: parse, call, print. Nothing else."""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dataengine import __version__
from dataengine.backends import table as backends
from dataengine.errors import UserError

console = Console(stderr=True)
trajdata = typer.Typer(help="Trajectory pseudo-label data engine.", no_args_is_help=True,
                       pretty_exceptions_enable=False, add_completion=False)
trajtok_app = typer.Typer(help="Train and evaluate TrajTok segmenters and TrajViT2 video-text models.", no_args_is_help=True,
                          pretty_exceptions_enable=False, add_completion=False)

# Errors a user can fix: one line, exit code 2, no traceback. The project raises UserError (dataengine/errors.py)
# for every mistake in a command's options or input. The operating system's refusals of a path the command was
# given (no such file, permission denied, not a directory, no space left) are the user's to fix too, and they
# name the path; any other exception (a ValueError from a bug, CUDA out of memory) keeps its traceback.
# TRAJTOK_DEBUG=1 shows the traceback for these as well.
PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def one_line_error(e: BaseException) -> str | None:
    """The one-line message for an error the user can fix, None for one that deserves its traceback."""
    if isinstance(e, UserError):
        text = str(e)
        if "Original Traceback" in text:   # raised in a DataLoader worker: torch re-raises it with its traceback
            last = [line for line in text.splitlines() if line.strip()][-1]
            return re.sub(r"^[\w.]+: ", "", last)
        return text
    if isinstance(e, OSError) and e.filename is not None and (isinstance(e, PATH_ERRORS)
                                                             or e.errno == errno.ENOSPC):
        return f"{e.strerror}: {e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
    return None


def friendly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            message = one_line_error(e)
            if message is None or os.environ.get("TRAJTOK_DEBUG"):
                raise
            # soft_wrap: one line, however long
            console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
    return wrapper


# The project's own warnings (a hint, a resume notice) print like its errors: one line, no source line. Those of
# the libraries it uses keep Python's format, which says where they come from.
PACKAGES = tuple(str(Path(__file__).resolve().parent / p) + os.sep for p in ("dataengine", "trajtok", "pipelines"))
_python_showwarning = warnings.showwarning


def show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(PACKAGES):
        console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def version_option(name: str):
    """``--version``: print the one version string of the project and exit."""
    def show(value: bool) -> None:
        if value:
            print(f"{name} {__version__}")
            raise typer.Exit()
    return typer.Option(False, "--version", callback=show, is_eager=True, help="Print the version and exit.")


@trajdata.callback()
def trajdata_options(version: bool = version_option("trajdata")):
    pass


@trajtok_app.callback()
def trajtok_options(version: bool = version_option("trajtok")):
    pass


@contextlib.contextmanager
def progress(disable: bool = False) -> Iterator[Progress]:
    """Bars that stay on screen when the work is done, and vanish when it fails: a user error is then the one line
    left on the terminal. ``disable``: no bar (e.g. on the other ranks of a torchrun job)."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=False, disable=disable)
    with bar:
        try:
            yield bar
        except BaseException:
            bar.live.transient = True
            raise


def table_console() -> Console:
    """Wide enough for every column of a score table when printed to a file or CI log."""
    return Console(width=None if sys.stdout.isatty() else 160)


def check_writable(path: Optional[Path]) -> None:
    """A --json / --out file whose folder does not exist fails before the work, not after it."""
    if path is not None and not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path.parent))


# ------------------------------------------------------------------ trajdata
@trajdata.command()
@friendly
def synth(out: Path = typer.Argument(..., help="Output directory (media/, wds/, gt/)."),
          videos: int = typer.Option(6, help="Number of videos."),
          images: int = typer.Option(4, help="Number of still images."),
          seed: int = typer.Option(0, help="Random seed; same seed, same bytes."),
          style: str = typer.Option("photo", help="photo: pieces of real photographs over a photograph, moving "
                                                  "camera, web-quality H.264/JPEG; flat: coloured shapes over a "
                                                  "smooth background."),
          photos: str = typer.Option("all", help="Photo pool (photo style): all, or one of the disjoint halves "
                                                 "a / b, to check tuning on photographs it never saw."),
          frames: int = typer.Option(48, help="Frames per video."),
          overwrite: bool = typer.Option(False, help="Replace an existing corpus in OUT.")):
    """Write a sample corpus with ground-truth trajectories."""
    from dataengine.tools.synth import make_corpus

    with console.status(f"writing synthetic corpus ({style} style)"):
        summary = make_corpus(out, videos=videos, images=images, seed=seed, n_frames=frames, overwrite=overwrite,
                              style=style, photos=photos)
    console.print(f"wrote {videos} videos and {images} images ({style} style) to {out} (media/, wds/, gt/)")
    return summary


@trajdata.command()
@friendly
def annotate(source: str = typer.Option("local", help="Source recipe name in manifests/ (or a recipe .yaml path)."),
             input: Optional[str] = typer.Option(None, "--input", help="Override the recipe's input path."),
             output: str = typer.Option(..., help="Output directory for shards and manifest: a path or a "
                                                  "filesystem URL (file://, s3://, gs://, any fsspec URL); on a "
                                                  "cluster, storage every node can write."),
             gpus: float = typer.Option(0, help="GPUs for the labelling stage."),
             gpu_fraction: float = typer.Option(1.0, help="GPUs per labelling actor (0.5 packs two per GPU)."),
             label_actors: Optional[int] = typer.Option(None, help="CPU-only: labelling actors (default: one per "
                                                                     "CPU; fewer caps memory of heavy models)."),
             cpus: Optional[int] = typer.Option(None, help="CPUs of the local Ray (default: all)."),
             address: Optional[str] = typer.Option(None, help="Join this Ray cluster (HOST:PORT of its head, or "
                                                              "'auto' on a cluster node) instead of starting one."),
             segmenter: Optional[str] = typer.Option(None, help=backends.choices("segmenter")),
             tracker: Optional[str] = typer.Option(None, help=backends.choices("tracker")),
             checkpoint: Optional[str] = typer.Option(None, help="Segmenter checkpoint (directory or file)."),
             resolution: Optional[int] = typer.Option(None, help="Segmenter model input side (DirectSAM, SAM 2) "
                                                                 "(default: 1024)."),
             sam_type: Optional[str] = typer.Option(None, help="sam segmenter: auto (from the checkpoint) | "
                                                               "vit_b | vit_l | vit_h | sam2."),
             sam2_config: Optional[str] = typer.Option(None, help="SAM 2 config in the sam2 package, e.g. "
                                                                  "configs/sam2.1/sam2.1_hiera_l.yaml (the default)."),
             sam2_checkpoint: Optional[str] = typer.Option(None, help="SAM 2 tracker checkpoint ({'model': state_dict})."),
             sam2_image_size: Optional[int] = typer.Option(None, help="SAM 2 tracker input side, a multiple of 32 "
                                                                      "(default: 1024)."),
             frames: Optional[int] = typer.Option(None, min=0, help="Frames sampled uniformly per video (default: 16); "
                                                             "with --frame-stride the most frames (0 = no cap)."),
             frame_stride: Optional[int] = typer.Option(None, min=1, help="Annotate every K-th source frame from frame 0 "
                                                                   "instead of uniform sampling, so exported frame "
                                                                   "numbers are source frame numbers."),
             max_side: Optional[int] = typer.Option(None, min=1, help="Working resolution: longest side in pixels "
                                                                      "(default: 384)."),
             samples_per_shard: Optional[int] = typer.Option(None, min=1, help="Input samples per output shard "
                                                                               "(default: 64)."),
             limit: Optional[int] = typer.Option(None, min=1, help="Stop after this many input samples."),
             resume: bool = typer.Option(False, help="Skip finished shards, retry errors."),
             ray: bool = typer.Option(True, help="--no-ray runs in-process (debugging)."),
             preset: str = typer.Option("cpu", help="Config preset (cpu | gpu)."),
             config: Optional[Path] = typer.Option(None, help="YAML of config overrides (any AnnotateConfig key, "
                                                                 "e.g. keyframes: {threshold: 0.3}); flags win.")):
    """Label videos and images with trajectory masks and write shards + manifest."""
    from dataengine.config import build_annotate_config, load_source
    from pipelines.annotate import Resources, annotate as run

    cfg = build_annotate_config(
        preset, config, source=vars(load_source(source, input)), limit=limit,
        decode={"frames": frames, "max_side": max_side, "frame_stride": frame_stride},
        segmenter={"name": segmenter, "checkpoint": checkpoint, "resolution": resolution, "sam_type": sam_type,
                   "sam2_config": sam2_config},
        tracker={"name": tracker, "checkpoint": sam2_checkpoint, "sam2_config": sam2_config,
                 "image_size": sam2_image_size},
        output={"samples_per_shard": samples_per_shard})
    backends.check(cfg.segmenter, cfg.tracker)
    res = Resources(cpus=cpus, gpus=gpus, gpu_fraction=gpu_fraction, label_actors=label_actors, address=address)
    with progress() as bar:
        task = bar.add_task("annotating", total=limit)
        totals = run(cfg, output, res, resume=resume, use_ray=ray,
                     on_progress=lambda n, total: bar.update(task, completed=n, total=total))
    by = ", ".join(f"{v} {k}" for k, v in sorted(totals["by_status"].items()))
    console.print(f"annotated {totals['samples']} samples ({by}) -> {output}")


@trajdata.command()
@friendly
def models(checkpoint: Optional[str] = typer.Option(None, help="Segmenter checkpoint to check (directory, file "
                                                                "or cached Hugging Face id)."),
           sam2_checkpoint: Optional[str] = typer.Option(None, help="SAM 2 tracker checkpoint to check."),
           sam2_config: str = typer.Option("configs/sam2.1/sam2.1_hiera_l.yaml", help="SAM 2 config whose "
                                                                                      "official weights to look for."),
           sam_type: str = typer.Option("auto", help="sam segmenter type whose weights to look for."),
           json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List the backends, whether they can run here, the checkpoints they would load, and devices."""
    from rich.markup import escape
    from rich.table import Table

    from dataengine.backends.models import CHECKPOINT_ENV

    info = backends.describe(checkpoint, sam2_checkpoint, sam_type=sam_type, sam2_config=sam2_config)
    if json_out:
        print(json.dumps(info, indent=2))
        return info
    table = Table("backend", "role", "ready", "packages", "checkpoint", "what it is")
    for row in info["backends"]:
        pkgs = ", ".join(f"{k} {v['detail']}" if v["ok"] else f"[red]{k} missing[/red]" for k, v in row["packages"].items())
        ck = row["checkpoint"]
        where = (f"[red]{escape(ck['error'])}[/red]" if "error" in ck else
                 ck["where"] if ck["path"] is None else escape(f"{ck['path']} ({ck['where']})"))
        table.add_row(row["name"], row["role"], "yes" if row["ready"] else "[red]no[/red]", pkgs, where,
                      escape(row["summary"]))
    out = Console()
    out.print(table)
    dev = info["devices"]
    gpus = ", ".join(dev.get("gpus", [])) or "none"
    out.print(f"torch {dev.get('torch')}; CUDA GPUs: {gpus}; CPU threads: {dev.get('cpu_threads')}")
    dirs = ", ".join(info["search"][CHECKPOINT_ENV]) or "(unset)"
    out.print(f"checkpoint search: ${CHECKPOINT_ENV} = {dirs}; Hugging Face cache = {info['search']['hf_cache']}")
    return info


@trajdata.command("filter")
@friendly
def filter_cmd(input: str = typer.Argument(..., help="An annotate output: a directory or a URL (s3://, gs://, "
                                                   "file://, ...), as annotate's --output takes."),
               output: str = typer.Option(..., help="Where kept samples go: a directory or a URL."),
               min_coverage: float = typer.Option(0.8, help="Minimum mean mask coverage."),
               min_objects: int = typer.Option(10, help="Minimum number of trajectories."),
               workers: int = typer.Option(8, min=1, help="Manifest parts filtered at once (threads: the work "
                                                          "is reading and writing shards).")):
    """Keep samples with enough coverage and trajectories (no model runs)."""
    from dataengine.config import FilterConfig
    from dataengine.tools.filtering import filter_dataset

    with progress() as bar:
        task = bar.add_task("filtering", total=None)
        totals = filter_dataset(input, output, FilterConfig(min_coverage, min_objects),
                                on_part=lambda n, total: bar.update(task, completed=n, total=total),
                                workers=workers)
    by = ", ".join(f"{v} {k}" for k, v in sorted(totals["by_status"].items()) if v)
    console.print(f"filtered {totals['samples']} samples ({by}) -> {output}")


@trajdata.command()
@friendly
def stats(directory: str = typer.Argument(..., help="An annotate or filter output: a directory or a URL."),
          plot: Optional[Path] = typer.Option(None, help="Also write a figure of the statistics (.png)."),
          json_out: Optional[Path] = typer.Option(None, "--json", help="Write the summary as JSON.")):
    """Counts by status and reason, distributions and stage times, from the manifest alone."""
    from dataengine.tools.stats import collect, plot as plot_stats, tables

    result = collect(directory)
    for table in tables(result):
        Console().print(table)
    note = unfinished_note(directory)
    if note:
        console.print(f"note: {note}")
    if plot:
        plot_stats(result, plot)
        console.print(f"wrote {plot}")
    if json_out:
        json_out.write_text(json.dumps(result.summary(), indent=2))
        console.print(f"wrote {json_out}")


@trajdata.command()
@friendly
def show(directory: Path = typer.Argument(..., help="A shard + manifest directory (or one shard .tar)."),
         key: str = typer.Argument(..., help="Sample key, e.g. video_001 (the manifest's `key` column)."),
         out: Optional[Path] = typer.Option(None, help="Output .png (frame grid), .gif or .mp4; KEY.png when omitted."),
         gt: Optional[Path] = typer.Option(None, help="Ground-truth shards (e.g. synth OUT/gt): drawn beside."),
         fps: float = typer.Option(4.0, help="Frames per second of a .gif / .mp4."),
         max_frames: int = typer.Option(16, help="Most frames in a .png grid; keyframes and cuts always kept (0 = all)."),
         columns: int = typer.Option(0, help="Columns of a .png grid (0 = about square)."),
         scale: int = typer.Option(0, help="Integer upscaling of the masks for display (0 = auto).")):
    """Draw one sample's trajectories over its frames."""
    from dataengine.tools.visualize import show as render

    out = out or Path(f"{key}.png")
    with console.status(f"rendering {key}"):
        info = render(directory, key, out, gt=gt, fps=fps, max_frames=max_frames, columns=columns, scale=scale)
    anim = f", {info['frames']} frames at {fps:g} fps" if out.suffix.lower() in (".gif", ".mp4") else ""
    console.print(f"wrote {out} ({info['width']}x{info['height']} px{anim}): {info['trajectories']} "
                  f"trajectories over {info['labelled_frames']} labelled frames")


@trajdata.command()
@friendly
def validate(directory: str = typer.Argument(..., help="A shard + manifest directory or URL (s3://, ...).")):
    """Check every shard, member, RLE mask and manifest row; exit 1 on problems."""
    from dataengine.format.validate import validate_dataset

    with progress() as bar:
        task = bar.add_task("validating", total=None)
        problems = validate_dataset(directory, on_shard=lambda n, t: bar.update(task, completed=n, total=t))
    for p in problems[:200]:
        console.print(f"[red]problem:[/red] {p}", highlight=False)
    if problems:
        console.print(f"{len(problems)} problems in {directory}")
        raise typer.Exit(1)
    note = unfinished_note(directory)
    console.print(f"{directory}: valid" + (f" ({note}; what is there is sound)" if note else ""))


def unfinished_note(directory: str) -> str:
    """'' unless the output's run.json says its annotate run has not finished (valid, but not all inputs yet)."""
    from dataengine.format.outputfs import Output

    try:
        run = json.loads(Output(str(directory)).read_bytes("run.json"))
    except (OSError, ValueError):
        return ""
    if isinstance(run, dict) and run.get("status") == "running":
        return "run.json: the annotate run has not finished, so not every input is there yet; continue it with --resume"
    return ""


@trajdata.command()
@friendly
def export(directory: Path = typer.Argument(..., help="A shard + manifest directory (annotate, filter or synth gt/)."),
           out: Path = typer.Argument(..., help="Output directory (created; must not exist unless --overwrite)."),
           format: str = typer.Option("sav", "--format", help="sav: SA-V for videos + SA-1B for images (SAM 2's "
                                      "training code) | sa1b: every annotated frame as an SA-1B image | png: "
                                      "JPEG frames + per-frame PNG id maps (DAVIS / MOSE style)."),
           ann_every: Optional[int] = typer.Option(None, min=1, help="sav: masklet row of frame f is f // ann_every "
                                                   "(default: the annotation's --frame-stride, else 1)."),
           min_frames: Optional[int] = typer.Option(None, min=1, help="Skip video pieces (between scene cuts) with "
                                                    "fewer annotated frames (default: 8 for sav, SAM 2's sampler)."),
           resolution: str = typer.Option("mask", help="mask: frames at the mask size (what the labeller saw) | "
                                           "source: frames at the media's size, masks scaled up (nearest)."),
           frame_names: str = typer.Option("source", help="sav: source (frame f is f.jpg, SA-V's way) | position "
                                            "(i-th frame of a piece is i * ann_every: no null masklet rows for "
                                            "sparsely annotated long videos)."),
           overwrite: bool = typer.Option(False, help="Replace an existing OUT.")):
    """Write the labels in layouts other tools train on unchanged (SAM 2's SA-V / SA-1B readers, PNG id maps)."""
    from dataengine.tools.export import ExportConfig, export_dataset

    with progress() as bar:
        task = bar.add_task("exporting", total=None)
        summary = export_dataset(directory, out, ExportConfig(format=format, ann_every=ann_every,
                                                              min_frames=min_frames, frame_names=frame_names,
                                                              resolution=resolution),
                                 overwrite=overwrite,
                                 on_sample=lambda n, total: bar.update(task, completed=n, total=total))
    c = summary["counts"]
    every = f", ann_every {summary['ann_every']}" if summary["ann_every"] else ""
    console.print(f"exported {c['samples']} samples as {c['videos']} videos and {c['images']} images "
                  f"({c['skipped']} skipped, see export.json{every}) -> {out}")


@trajdata.command("eval")
@friendly
def eval_cmd(pred: str = typer.Option(..., help="Predicted trajectory shards (annotate output): a directory "
                                                 "or URL."),
             gt: str = typer.Option(..., help="Ground-truth trajectory shards (e.g. synth OUT/gt): a directory or URL."),
             json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full result as JSON.")):
    """Class-agnostic STQ / VEQ / VPQ, strict trajectory recall and fragmentation (ids per GT trajectory,
    length ratio) of predictions against ground truth."""
    from dataengine.tools.evaluate import evaluate_dirs, format_table, json_safe

    check_writable(json_out)
    with console.status("evaluating"):
        result = evaluate_dirs(pred, gt)
    table_console().print(format_table(result))
    if json_out:
        json_out.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
        console.print(f"wrote {json_out}")


# ------------------------------------------------------------------ trajtok
@trajtok_app.command("train-segmenter")
@friendly
def train_segmenter_cmd(data: str = typer.Option(..., help="Trajectory shards: directory, tar, glob, URL "
                                                          "(s3://, gs://, ...), or a mixture recipe .yaml (datasets "
                                                          "with weights)."),
                        output: Path = typer.Option(..., help="Run directory (checkpoints, log.jsonl, tb/)."),
                        preset: str = typer.Option("tiny", help="tiny (one CPU, minutes) | cpu (the segmenter of "
                                                                "train-trajvit2's cpu preset) | paper (224 px, 16 frames)."),
                        resume: bool = typer.Option(False, help="Continue from OUTPUT/last.safetensors."),
                        max_steps: Optional[int] = typer.Option(None, help="Schedule length (default: the preset's)."),
                        batch_size: Optional[int] = typer.Option(None, min=1, help="Video clips per batch, per process."),
                        image_batch_size: Optional[int] = typer.Option(
                            None, min=1, help="Images per batch, per process (default: batch size x frames)."),
                        lr: Optional[float] = typer.Option(None, help="Peak learning rate (default 1e-3)."),
                        workers: Optional[int] = typer.Option(None, help="Data loader workers per process."),
                        backbone_checkpoint: Optional[Path] = typer.Option(
                            None, help="Local ConvNeXt weights (safetensors / torch file) for the patch encoder."),
                        no_object: Optional[bool] = typer.Option(
                            None, "--no-object/--every-pixel",
                            help="Label 0 means 'no object' (ground truth of objects only, e.g. `trajdata synth`'s "
                                 "gt/): learn a no-object query and leave those pixels unlabelled. Default: every "
                                 "pixel goes to a trajectory, label 0 is ignored as unknown (the engine's labels); "
                                 "on --resume, the checkpoint's choice."),
                        grouping_weight: Optional[float] = typer.Option(
                            None, min=0.0, help="Weight of the pixel-grouping loss term (not in the paper; "
                                                "default: the preset's, 1 for tiny, 0 for paper and cpu)."),
                        seed: int = typer.Option(0, min=0, help="Random seed.")):
    """Train the TrajTok segmenter on trajectory shards (CPU, or GPUs under torchrun)."""
    from trajtok.train import train_segmenter

    # one bar, from rank 0 (under torchrun every rank runs this command)
    with progress(disable=int(os.environ.get("RANK", "0")) != 0) as bar:
        task = bar.add_task("training segmenter", total=max_steps)
        summary = train_segmenter(data, output, preset=preset, resume=resume, max_steps=max_steps,
                                  batch_size=batch_size, image_batch_size=image_batch_size, lr=lr,
                                  num_workers=workers, seed=seed,
                                  backbone_checkpoint=backbone_checkpoint, no_object=no_object,
                                  grouping_weight=grouping_weight,
                                  on_step=lambda n, total: bar.update(task, completed=n, total=total))
    if summary.get("rank", 0) == 0:
        console.print(f"trained to step {summary['step']} -> {summary['checkpoint']}")


@trajtok_app.command("eval-segmenter")
@friendly
def eval_segmenter_cmd(checkpoint: Path = typer.Option(..., help="A segmenter .safetensors checkpoint."),
                       data: str = typer.Option(..., help="Trajectory shards with reference masks."),
                       limit: Optional[int] = typer.Option(None, min=1, help="Evaluate at most this many samples."),
                       json_out: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON.")):
    """Score a trained segmenter against the shards' masks (same metrics as `trajdata eval`)."""
    from dataengine.tools.evaluate import format_table, json_safe
    from trajtok.evaluate import score_segmenter

    check_writable(json_out)
    with progress() as bar:
        task = bar.add_task("segmenting", total=limit)
        result = score_segmenter(checkpoint, data, limit=limit, on_sample=lambda: bar.advance(task))
    # trajdata eval's table: every sample has its prediction here (the model's own)
    view = {**result, "per_sample": [{**r, "matched_by": "model", "scored": True} for r in result["per_sample"]]}
    table_console().print(format_table(view, title=f"trajtok eval-segmenter: {result['samples']} samples scored, "
                                                  f"{result['errors']} not decodable"))
    Console().print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in result["summary"].items()), soft_wrap=True)
    if json_out:
        json_out.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))   # NaN -> null: strict JSON
    return result


@trajtok_app.command("train-trajvit2")
@friendly
def train_trajvit2_cmd(data: str = typer.Option(..., help="Captioned trajectory shards: directory, tar, glob, "
                                                         "URL, or a mixture recipe .yaml."),
                       output: Path = typer.Option(..., help="Run directory (checkpoints, log.jsonl, config.json)."),
                       preset: str = typer.Option("cpu", help="cpu (one CPU core, minutes) | paper (ViT-L, 224 px, 16 frames)."),
                       video_model: Optional[str] = typer.Option(None, help="trajvit2 (trajectory tokens, the "
                                                                                "default) | vit3d (2x16x16 tubelets, "
                                                                                "the baseline); --resume: the run's."),
                       segmenter: Optional[Path] = typer.Option(None, help="Warm-start TrajViT2's segmenter from a "
                                                                          "train-segmenter RUN/last.safetensors."),
                       text_model: Optional[Path] = typer.Option(None, help="Local transformers encoder directory "
                                                                           "(e.g. BERT) instead of the built-in text tower."),
                       resume: bool = typer.Option(False, help="Continue from OUTPUT/last.safetensors."),
                       max_steps: Optional[int] = typer.Option(None, help="Schedule length (default: the preset's)."),
                       batch_size: Optional[int] = typer.Option(None, min=1, help="Clips per batch, per process."),
                       lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: the preset's)."),
                       workers: Optional[int] = typer.Option(None, help="Data loader workers per process."),
                       shuffle_captions: bool = typer.Option(False, help="Control run: pair every clip with another "
                                                                        "clip's caption (must stay at chance)."),
                       seed: int = typer.Option(0, min=0, help="Random seed.")):
    """Train TrajViT2 (or ViT3D) with a CLIP loss on captioned shards (CPU, or GPUs under torchrun)."""
    from trajtok.train import train_video_text

    with progress() as bar:
        task = bar.add_task(f"training {video_model or ('the run' if resume else 'trajvit2')}", total=max_steps)
        summary = train_video_text(data, output, preset=preset, video_model=video_model, text_model=text_model,
                                   segmenter=segmenter, resume=resume, max_steps=max_steps, batch_size=batch_size,
                                   lr=lr, num_workers=workers, seed=seed, shuffle_captions=shuffle_captions,
                                   on_step=lambda n, total: bar.update(task, completed=n, total=total))
    if summary.get("rank", 0) == 0:
        console.print(f"trained {summary['video_model']} to step {summary['step']} "
                      f"({summary['cpu_seconds']:.0f} CPU s) -> {summary['checkpoint']}")


@trajtok_app.command("eval-retrieval")
@friendly
def eval_retrieval_cmd(checkpoint: Path = typer.Option(..., help="A train-trajvit2 .safetensors checkpoint."),
                       data: str = typer.Option(..., help="Captioned trajectory shards to retrieve among."),
                       json_out: Optional[Path] = typer.Option(None, "--json", help="Write t2v / v2t metrics as JSON."),
                       k: Optional[int] = typer.Option(None, help="Sub-tokens per trajectory (default: the model's)."),
                       batch_size: int = typer.Option(16, min=1, help="Clips per forward pass."),
                       limit: Optional[int] = typer.Option(None, min=1, help="Use at most this many samples.")):
    """Text-to-video and video-to-text R@1/5/10 and median rank, chance levels beside them."""
    from trajtok.retrieval import evaluate_retrieval, format_retrieval

    with progress() as bar:
        task = bar.add_task("embedding", total=limit)
        result = evaluate_retrieval(checkpoint, data, batch_size=batch_size, k=k, limit=limit,
                                    on_batch=lambda n: bar.advance(task, n))
    Console().print(format_retrieval(result), highlight=False)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {json_out}")
    return result


@trajtok_app.command("probe")
@friendly
def probe_cmd(data: str = typer.Option(..., help="Labelled training shards (e.g. trajdata synth's gt/)."),
              eval_data: str = typer.Option(..., help="Held-out labelled shards (e.g. a corpus of another seed)."),
              label_key: str = typer.Option(..., help="Key of each sample's json to classify (motion, count)."),
              segmenter: Path = typer.Option(..., help="Frozen TrajTok segmenter checkpoint (.safetensors)."),
              backbone: str = typer.Option("vit3d", help="Frozen backbone: vit3d (random init) or vit3d:PATH "
                                                         "(a train-trajvit2 --video-model vit3d checkpoint)."),
              preset: str = typer.Option("cpu", help="cpu (lr 1e-3) | paper (lr 1e-4) | test."),
              seed: List[int] = typer.Option([0], help="Probe training seed; repeat for several."),
              method: Optional[List[str]] = typer.Option(None, help="Methods to run (default: all six)."),
              epochs: Optional[int] = typer.Option(None, help="Override the preset's epochs."),
              velocity_gain: Optional[float] = typer.Option(None, help="Override the TrajAdapter's scale on its "
                                                                       "trajectories' velocity feature (1 = raw)."),
              appearance_dropout: Optional[float] = typer.Option(
                  None, help="Override the TrajAdapter's dropout on the backbone features it reads (0 = off)."),
              cache: Optional[Path] = typer.Option(None, help="Directory caching features and masks per dataset."),
              json_out: Optional[Path] = typer.Option(None, "--json", help="Write held-out top-1 per method as JSON.")):
    """TrajAdapter probing: held-out top-1 of linear, attentive, Perceiver and TrajAdapter (K = 1, 2, 4) probes."""
    from trajtok.train.probe import run_probe

    overrides = {k: v for k, v in (("epochs", epochs), ("velocity_gain", velocity_gain),
                                   ("appearance_dropout", appearance_dropout)) if v is not None} or None
    with progress() as bar:
        clips = bar.add_task("features + masks", total=None)
        probes = bar.add_task("probes", total=len(method or []) or 6)
        result = run_probe(data, eval_data, label_key, segmenter, backbone=backbone, preset=preset, seeds=seed,
                           cache=cache, methods=method, on_clip=lambda: bar.advance(clips),
                           on_method=lambda m: bar.advance(probes), overrides=overrides)
    from trajtok.models.adapter import METHODS
    Console().print("  ".join(f"{m} {result[m]:.3f}" for m in METHODS if m in result)
                    + f"  chance {result['chance']:.3f}  majority {result['majority']:.3f}", highlight=False)
    if json_out:
        json_out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {json_out}")
    return result


@trajtok_app.command()
@friendly
def info(preset: str = typer.Option("paper", help="tiny | cpu | paper"),
         frames: int = typer.Option(16, min=1, help="Clip length for the FLOP count."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON (modules, total, flops).")):
    """Parameter counts per module and FLOPs per clip of a preset's tokenizer."""
    from trajtok.info import format_info, model_info

    result = model_info(preset, frames=frames)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(format_info(result))


def trajdata_main() -> None:
    warnings.showwarning = show_warning
    trajdata()


def trajtok_main() -> None:
    warnings.showwarning = show_warning
    trajtok_app()


if __name__ == "__main__":
    sys.exit(trajdata_main())
