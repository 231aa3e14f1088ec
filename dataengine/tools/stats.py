"""``trajdata stats``: what a dataset directory holds, from its Parquet manifest alone.

Shards are never opened, so this stays fast on millions of samples: only the
needed manifest columns are read. The result is a plain summary (printed as
rich tables by the CLI, JSON-able for scripts) and an optional PNG figure
written for a reader who knows nothing about the engine: every panel says
what it counts and in which unit.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from dataengine.errors import InputError, InputNotFound
from dataengine.format.manifest import STAGES, part_indices, part_name, readable_part
from dataengine.format.outputfs import Output

STATUSES = ("ok", "filtered", "error")
STATUS_COLOURS = {"ok": "#3a9d5d", "filtered": "#e0a030", "error": "#d04040"}
STAGE_WHAT = {"read": "read bytes", "decode": "decode frames", "segment": "masks on keyframes",
              "track": "follow masks", "encode": "write RLE"}
STAGE_COLOURS = dict(zip(STAGES, ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#937860")))
COLUMNS = ["key", "media_type", "status", "reason", "n_annotated", "n_keyframes", "n_trajectories",
           "coverage", "mean_trajectory_length"] + [f"seconds_{s}" for s in STAGES]

# (metric, column, unit, which samples) -- "labelled" = ok + filtered: both went through the
# labeller and carry mask stats; errors have none and would only pile up at zero.
METRICS = (
    ("coverage", "coverage", "share of pixels", "labelled"),
    ("trajectories / sample", "n_trajectories", "trajectories", "labelled"),
    ("keyframes / video", "n_keyframes", "keyframes", "videos"),
    ("mean trajectory length", "mean_trajectory_length", "frames", "videos"),
    ("labelled frames / sample", "n_annotated", "frames", "labelled"),
)


@dataclass
class DatasetStats:
    directory: str
    samples: int
    by_status: dict[str, int]
    by_media: dict[str, dict[str, int]]            # status -> media type -> samples
    reasons: list[dict[str, Any]]                  # most frequent first
    columns: dict[str, np.ndarray] = field(repr=False)
    filter: dict[str, Any] | None = None           # thresholds, when DIR is a `trajdata filter` output

    def values(self, column: str, rows: str, status: str | None = None) -> np.ndarray:
        """A numeric column over ``rows`` ('labelled' | 'videos' | 'all'), optionally one status."""
        st, media = self.columns["status"], self.columns["media_type"]
        mask = np.isin(st, ["ok", "filtered"]) if rows in ("labelled", "videos") else np.ones(len(st), bool)
        if rows == "videos":
            mask &= media == "video"
        if status:
            mask &= st == status
        return self.columns[column][mask].astype(float)

    def distributions(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, col, unit, rows in METRICS:
            v = self.values(col, rows)
            d: dict[str, Any] = {"unit": unit, "samples": rows, "n": int(v.size)}
            if v.size:
                p = np.percentile(v, [0, 10, 50, 90, 100])
                d.update(mean=float(v.mean()), min=float(p[0]), p10=float(p[1]), median=float(p[2]),
                         p90=float(p[3]), max=float(p[4]))
            out[name] = d
        return out

    def seconds(self) -> dict[str, dict[str, float]]:
        """Worker seconds per stage, summed over every sample that reached it (errors included)."""
        totals = {s: float(self.columns[f"seconds_{s}"].sum()) for s in STAGES}
        grand = sum(totals.values()) or 1.0
        return {s: {"total": totals[s], "mean_per_sample": totals[s] / max(1, self.samples),
                    "share": totals[s] / grand} for s in STAGES}

    def summary(self) -> dict[str, Any]:
        """Everything but the raw columns, JSON-able."""
        return {"directory": self.directory, "samples": self.samples, "by_status": self.by_status,
                "by_media": self.by_media, "reasons": self.reasons, "filter": self.filter,
                "distributions": self.distributions(), "seconds": self.seconds()}


def reason_kind(reason: str, key: str = "") -> str:
    """Group reasons that differ only in details: values, paths, exception text, the key itself.

    'coverage 0.62 < 0.80' -> 'coverage < 0.80'; 'media file not found: /a/b.mp4' ->
    'media file not found'; 'not a decodable video (InvalidDataError: ...)' -> 'not a decodable video'.
    """
    r = reason.strip()
    if key and r.startswith(key + ":"):
        r = r[len(key) + 1:].strip()
    r = r.split(" (", 1)[0].split(":", 1)[0]
    r = re.sub(r"(\w) [-+]?\d+(?:\.\d+)? ([<>]=?) ", r"\1 \2 ", r)
    r = re.sub(r"\S*/\S*", "…", r)
    return r.strip() or "(no reason given)"


def _read_columns(directory: Output) -> pa.Table:
    parts = [part_name(i) for i in part_indices(directory)]
    if not parts:
        raise InputError(f"{directory} has no manifest (manifest/part-*.parquet); "
                         f"is it a `trajdata annotate` or `trajdata filter` output?")
    tables = []
    for p in parts:
        with readable_part(p), directory.open_read(p) as f:
            names = set(pq.read_schema(f).names)
            t = pq.read_table(f, columns=[c for c in COLUMNS if c in names])
        for c in COLUMNS:  # an older manifest may lack a column: treat it as zeros / empty
            if c not in names:
                text = c in ("key", "media_type", "status", "reason")
                t = t.append_column(c, pa.array([""] * t.num_rows if text else [0.0] * t.num_rows))
        tables.append(t.select(COLUMNS))
    return pa.concat_tables(tables, promote_options="permissive")


def collect(directory: str | Path, top_reasons: int = 10) -> DatasetStats:
    """Statistics of a dataset's manifest; ``directory`` a path or a URL (as annotate's ``--output``)."""
    d = Output(str(directory))
    if d.fs.get_file_info(d.root).type != FileType.Directory:
        raise InputNotFound(f"no such dataset directory: {directory}")
    table = _read_columns(d)
    cols: dict[str, np.ndarray] = {}
    for c in COLUMNS:
        arr = table.column(c)
        if c in ("status", "media_type"):
            # Few distinct values: dictionary-encode instead of building millions of Python strings.
            enc = arr.fill_null("").combine_chunks().dictionary_encode()
            cols[c] = np.asarray(enc.dictionary.to_pylist() + [""], dtype=object)[
                enc.indices.to_numpy(zero_copy_only=False)]
        elif c not in ("key", "reason"):
            cols[c] = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(float)
    status = cols["status"]
    by_status = {s: int((status == s).sum()) for s in STATUSES}
    by_status.update({s: int(n) for s, n in Counter(status.tolist()).items() if s not in by_status})
    by_media = {s: dict(Counter(cols["media_type"][status == s].tolist())) for s in by_status}

    counts: Counter = Counter()
    example: dict[tuple[str, str], str] = {}
    # Keys and reasons only of the rows that are not ok: usually a small share of a big manifest.
    bad = table.filter(pc.not_equal(table.column("status"), "ok")).select(["key", "status", "reason"])
    for row in bad.to_pylist():
        st, reason, key = row["status"] or "", row["reason"] or "", row["key"] or ""
        # `trajdata filter` joins several failed checks with "; " -- count each check.
        parts = reason.split("; ") if st == "filtered" else [reason]
        for part in parts:
            k = (reason_kind(part, key), st)
            counts[k] += 1
            example.setdefault(k, part)
    reasons = [{"reason": k, "status": st, "samples": n, "example": example[(k, st)]}
               for (k, st), n in counts.most_common(top_reasons)]

    flt = None
    if d.exists("run.json"):
        try:
            flt = json.loads(d.read_bytes("run.json")).get("filter")
        except (OSError, json.JSONDecodeError):
            flt = None
    return DatasetStats(str(directory), int(len(status)), by_status, by_media, reasons, cols, flt)


# ------------------------------------------------------------------ rich tables
def tables(stats: DatasetStats) -> list:
    """The printed report: status counts, top reasons, distributions, time per stage."""
    from rich.table import Table
    from rich.text import Text

    n = max(1, stats.samples)
    out: list = [Text(f"{stats.directory}: {stats.samples} input samples (from the manifest)", style="bold")]
    t = Table(title="Samples by status", title_justify="left")
    for c in ("status", "samples", "share", "videos", "images"):
        t.add_column(c, justify="left" if c == "status" else "right")
    for s, k in stats.by_status.items():
        m = stats.by_media.get(s, {})
        t.add_row(s, str(k), f"{k / n:.1%}", str(m.get("video", 0)), str(m.get("image", 0)))
    out.append(t)

    if stats.reasons:
        t = Table(title="Top reasons (filtered and error samples)", title_justify="left")
        t.add_column("reason", min_width=18)
        t.add_column("status", min_width=8)
        t.add_column("samples", justify="right", min_width=7)
        t.add_column("example")
        for r in stats.reasons:
            ex = r["example"] if len(r["example"]) <= 90 else r["example"][:89] + "…"
            t.add_row(r["reason"], r["status"], str(r["samples"]), ex)
        out.append(t)

    t = Table(title="Distributions (labelled = ok + filtered samples)", title_justify="left")
    for c in ("metric (unit)", "over", "n", "mean", "min", "median", "p90", "max"):
        t.add_column(c, justify="left" if c in ("metric (unit)", "over") else "right")
    for name, d in stats.distributions().items():
        fmt = "{:.3f}" if name == "coverage" else "{:.1f}"
        vals = [fmt.format(d[k]) if d["n"] else "-" for k in ("mean", "min", "median", "p90", "max")]
        t.add_row(name if d["unit"] in name else f"{name} ({d['unit']})", d["samples"], str(d["n"]), *vals)
    out.append(t)

    t = Table(title="Worker seconds per stage (summed over samples; not wall-clock)", title_justify="left")
    for c in ("stage", "total s", "mean s / sample", "share"):
        t.add_column(c, justify="left" if c == "stage" else "right")
    for s, d in stats.seconds().items():
        t.add_row(s, f"{d['total']:.3g}", f"{d['mean_per_sample']:.3g}", f"{d['share']:.1%}")
    out.append(t)
    return out


# ------------------------------------------------------------------ the figure
def plot(stats: DatasetStats, path: str | Path) -> Path:
    """A 3x3 figure: status, reasons, four distributions, time per stage. Agg backend, no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(16, 14.5), dpi=100)
    gs = fig.add_gridspec(3, 3, hspace=0.45, wspace=0.32, top=0.865, bottom=0.055, left=0.075, right=0.98)
    fig.suptitle(f"Dataset statistics — {_short_path(stats.directory)}: {stats.samples:,} input samples",
                 fontsize=18, fontweight="bold", x=0.075, y=0.975, ha="left")
    fig.text(0.075, 0.945,
             "Read from the manifest (one row per input sample). ok = labelled with trajectory masks and kept; "
             "filtered = labelled but dropped by the quality filter;\nerror = could not be processed. "
             "A trajectory is one object's mask followed through the video's labelled frames; "
             "a keyframe is a frame where masks were segmented afresh.",
             fontsize=11.5, color="#444", va="top", linespacing=1.5)

    _status_panel(fig.add_subplot(gs[0, 0]), stats)
    _reasons_panel(fig.add_subplot(gs[0, 1:]), stats)
    flt = stats.filter or {}
    _hist(fig.add_subplot(gs[1, 0]), stats, "coverage", "labelled", np.linspace(0, 1, 21),
          "Mask coverage per sample", "share of pixels inside some trajectory (0–1)", "samples",
          threshold=flt.get("min_coverage"))
    _hist(fig.add_subplot(gs[1, 1]), stats, "n_trajectories", "labelled", None,
          "Trajectories per sample", "trajectories (objects tracked)", "samples",
          threshold=flt.get("min_objects"))
    _hist(fig.add_subplot(gs[1, 2]), stats, "n_keyframes", "videos", None,
          "Keyframes per video", "keyframes (frames segmented afresh)", "videos")
    _hist(fig.add_subplot(gs[2, 0]), stats, "mean_trajectory_length", "videos", None,
          "Mean trajectory length per video", "labelled frames a trajectory spans (mean over its trajectories)",
          "videos")
    _seconds_panel(fig.add_subplot(gs[2, 1:]), stats)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _empty(ax, title: str, note: str) -> None:
    ax.set_title(title, fontsize=13, loc="left")
    ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, color="#777", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def _short_path(directory: str) -> str:
    parts = Path(directory).parts
    return str(Path(*parts[-2:])) if len(parts) > 2 else directory


def _status_panel(ax, stats: DatasetStats) -> None:
    names = list(stats.by_status)
    colours = [STATUS_COLOURS.get(s, "#888") for s in names]
    bottom = np.zeros(len(names))
    # Videos solid, images hatched: the same colour still says the outcome.
    for m, hatch in (("video", None), ("image", "//")):
        v = np.array([stats.by_media.get(s, {}).get(m, 0) for s in names], float)
        ax.bar(names, v, bottom=bottom, color=colours, hatch=hatch, edgecolor="white", linewidth=1)
        for x, (b, n) in enumerate(zip(bottom, v)):
            if n and n >= 0.08 * max(1, stats.samples):
                ax.text(x, b + n / 2, f"{_count(n)}\n{m}{'s' if n != 1 else ''}", ha="center", va="center",
                        color="white", fontsize=9.5, fontweight="bold")
        bottom += v
    other = np.array([stats.by_status[s] for s in names], float) - bottom  # unknown media types
    ax.bar(names, other, bottom=bottom, color=colours, alpha=0.5)
    totals = np.array([stats.by_status[s] for s in names], float)
    for x, total in enumerate(totals):
        ax.text(x, total, f"{_count(total)} ({total / max(1, stats.samples):.0%})", ha="center", va="bottom",
                fontsize=11)
    ax.set_ylim(0, max(1, totals.max()) * 1.15)
    ax.set_title("Samples by outcome", fontsize=13, loc="left")
    ax.set_ylabel("input samples")
    ax.yaxis.get_major_locator().set_params(integer=True)
    _thousands(ax)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor="#999", label="videos"), Patch(facecolor="#999", hatch="//",
                                                                      edgecolor="white", label="images")],
              fontsize=9, loc="upper right")


def _reasons_panel(ax, stats: DatasetStats) -> None:
    title = "Top reasons a sample was filtered or failed"
    if not stats.reasons:
        _empty(ax, title, "no filtered or failed samples")
        return
    rs = stats.reasons[::-1]  # largest on top
    ax.barh(range(len(rs)), [r["samples"] for r in rs], height=0.6,
            color=[STATUS_COLOURS.get(r["status"], "#888") for r in rs])
    # Reasons are written beside their bars, not as tick labels: they are long and would run
    # into the neighbouring panel.
    ax.set_yticks([])
    ax.set_ylim(len(rs) - 0.3 - max(len(rs), 5), len(rs) - 0.3)  # fixed bar thickness, top-aligned
    ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
    top = max(r["samples"] for r in rs)
    for y, r in enumerate(rs):
        reason = r["reason"] if len(r["reason"]) <= 70 else r["reason"][:69] + "…"
        ax.text(r["samples"] + top * 0.01, y, f"{reason}   ({r['samples']:,} {r['status']})", va="center",
                fontsize=10.5)
    ax.set_xlim(0, top * 1.9)
    _thousands(ax, "x")
    ax.set_xlabel("samples (a sample failing two checks counts once for each)")
    ax.set_title(title, fontsize=13, loc="left")


def _hist(ax, stats: DatasetStats, column: str, rows: str, bins, title: str, xlabel: str, ylabel: str,
          threshold: float | None = None) -> None:
    per_status = {s: stats.values(column, rows, s) for s in ("ok", "filtered")}
    everything = np.concatenate(list(per_status.values()))
    if everything.size == 0:
        _empty(ax, title, f"no {'videos' if rows == 'videos' else 'labelled samples'}")
        return
    if bins is None:
        lo, hi = float(everything.min()), float(everything.max())
        if column == "mean_trajectory_length":  # real-valued: about 20 bins over the range
            bins = np.linspace(np.floor(lo), np.ceil(hi) + 1e-9, 21) if hi > lo else np.array([lo - 0.5, lo + 0.5])
        else:  # counts: one bar per integer, or integer-wide groups when the range is large
            width = max(1, int(np.ceil((hi - lo + 1) / 40)))
            bins = np.arange(np.floor(lo) - 0.5, np.ceil(hi) + width + 0.5, width)
    shown = {s: v for s, v in per_status.items() if v.size}
    ax.hist(list(shown.values()), bins=bins, stacked=True, color=[STATUS_COLOURS[s] for s in shown],
            label=list(shown), edgecolor="white", linewidth=0.5)
    med = float(np.median(everything))
    ax.axvline(med, color="#222", linestyle=":", linewidth=1.5,
               label=f"median {med:.2f}" if column == "coverage" else f"median {med:.1f}")
    if threshold is not None:
        ax.axvline(threshold, color=STATUS_COLOURS["filtered"], linestyle="--", linewidth=2,
                   label=f"filter threshold {threshold:g}")
    ax.set_title(f"{title}  (n={everything.size:,})", fontsize=13, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.yaxis.get_major_locator().set_params(integer=True)
    _thousands(ax)
    if column != "mean_trajectory_length" and column != "coverage":
        ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
    ax.legend(fontsize=9, loc="best")


def _fmt_s(x: float) -> str:
    if x >= 3600:
        return f"{x / 3600:.1f} h"
    if x >= 120:
        return f"{x / 60:.1f} min"
    return f"{x:.1f} s" if x >= 10 else f"{x:.3g} s"


def _count(n: float) -> str:
    """Compact counts for labels inside bars: 950, 12.3k, 1.2M."""
    n = int(n)
    return f"{n}" if n < 10_000 else f"{n / 1000:.1f}k" if n < 1_000_000 else f"{n / 1e6:.2f}M"


def _thousands(ax, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def _seconds_panel(ax, stats: DatasetStats) -> None:
    """One histogram row per stage on a shared log axis (a ridgeline): stages differ by orders of
    magnitude (reading bytes vs segmenting), so overlaid histograms would hide each other."""
    title = "Time per sample in each stage"
    secs = stats.seconds()
    data = {s: stats.columns[f"seconds_{s}"] for s in STAGES}
    positive = np.concatenate([v[v > 0] for v in data.values()])
    if positive.size == 0:
        _empty(ax, title, "no timings recorded")
        return
    edges = np.logspace(np.log10(positive.min()) - 0.05, np.log10(positive.max()) + 0.05, 41)
    rows = list(STAGES)[::-1]  # pipeline order, top to bottom
    for y, s in enumerate(rows):
        v = data[s][data[s] > 0]
        counts, _ = np.histogram(v, bins=edges)
        if counts.max(initial=0):
            ax.bar(edges[:-1], counts / counts.max() * 0.8, width=np.diff(edges), bottom=y, align="edge",
                   color=STAGE_COLOURS[s], edgecolor="white", linewidth=0.4)
        ax.text(0.99, y + 0.35, f"{STAGE_WHAT[s]}: {_fmt_s(secs[s]['total'])} in all, "
                f"{secs[s]['share']:.0%} of the time",
                transform=ax.get_yaxis_transform(), va="center", ha="right", fontsize=10)
    ax.set_xscale("log")
    ax.set_xlim(edges[0], edges[-1] * 10 ** (0.6 * np.log10(edges[-1] / edges[0])))  # room for the totals
    ax.set_yticks([y + 0.35 for y in range(len(rows))], rows, fontsize=11)
    ax.set_ylim(-0.15, len(rows))
    ax.set_xlabel("seconds spent on one sample in the stage (log scale); bar height = samples (scaled per stage)")
    total = sum(d["total"] for d in secs.values())
    ax.set_title(f"{title}  (worker time, {_fmt_s(total)} in all; not wall-clock)", fontsize=13, loc="left")
    ax.grid(axis="x", which="major", color="#ddd")
    ax.set_axisbelow(True)
