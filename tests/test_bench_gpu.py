"""bench/gpu.py runs end to end on a CPU in --smoke mode, so the GPU benchmark cannot rot unseen."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_matched_agreement_pairs_ids_one_to_one():
    sys.path.insert(0, str(ROOT / "bench"))
    import numpy as np
    from gpu import matched_agreement

    a = np.array([[1, 1, 2, 2], [3, 3, 0, 0]])
    assert matched_agreement(a, a) == 1.0
    assert matched_agreement(a, np.array([[5, 5, 7, 7], [6, 6, 0, 0]])) == 1.0     # same partition, other ids
    assert matched_agreement(a, np.array([[5, 5, 5, 5], [6, 6, 0, 0]])) == 6 / 8   # two regions joined: one pair left


def test_gpu_benchmark_smoke_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--device", "cpu",
                           "--profile", "--blocking-sync", "1", "--json", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    runs = {(r["method"], r["size"], r["processes"]) for r in result["label"]}
    # Packing: one and two label processes for the model labeller, and the trained-TrajTok labeller.
    assert runs == {("directsam+sam2", 64, 1), ("directsam+sam2", 64, 2), ("directsam+sam2 (sam2 API)", 64, 1),
                    ("directsam+sam2 (blocking sync)", 64, 1), ("directsam+sam2 (planned keyframes)", 64, 1),
                    ("trajtok", 64, 1)}
    # The decode stage's keyframes only: never more keyframes than the labeller places with its coverage rule.
    by_method = {(r["method"], r["processes"]): r for r in result["label"]}
    assert by_method[("directsam+sam2 (planned keyframes)", 1)]["keyframes_per_clip"] <= \
        by_method[("directsam+sam2", 1)]["keyframes_per_clip"]
    assert "with the decode stage's keyframes only" in proc.stdout
    # No CUDA driver here: the blocking-sync row runs and says the flag was not applied.
    assert [r["blocking_sync"] for r in result["label"] if "blocking" in r["method"]] == [False]
    for row in result["label"]:
        assert row["frames"] == row["processes"] * 4 and row["frames_per_s"] > 0
        assert row["seconds_warmup_clip"] > 0 and row["seconds_build"] > 0
        assert 0 < row["segment_s_per_clip"] and 0 <= row["track_s_per_clip"] and row["cpu_s_per_clip"] > 0
        assert "labels_file" not in row
    # Today's sam2 path against sam2's per-object API: fp32 on a CPU, the same labels.
    paths = result["label_paths"]
    assert paths["pixel_agreement"] == paths["pixel_agreement_matched"] == 1.0
    assert paths["ids_today"] == paths["ids_api"] and paths["speedup"] > 0
    assert paths["track_agreement"] == 1.0 and 0 <= paths["track_claimed"] <= 1
    assert "label paths at 64 px" in proc.stdout
    # --profile: one labeller's phases on one clip, each frame encoded once, and the host's hot functions.
    prof = result["profile"]
    assert {"segment", "prepare_video", "track", "join_common_fate"} <= set(prof["phases"])
    assert prof["phases"]["prepare_video"]["calls"] == 1 and prof["phases"]["track"]["calls"] >= 1
    # the host post-processing inside the phases, apart: DirectSAM's regions, join_common_fate's parts
    inner = {"directsam forward", "directsam post-processing", "dis flow", "common fate fits", "absorb short"}
    assert inner <= set(prof["phases"]) and all(v["cpu_seconds"] >= 0 for v in prof["phases"].values())
    assert prof["phases"]["directsam post-processing"]["calls"] >= len(prof["keyframes"])
    assert prof["phases"]["absorb short"]["calls"] == prof["phases"]["join_common_fate"]["calls"] == 1
    assert "tottime" in prof["top_functions"] and prof["wall_s"] > 0
    train = result["training"]
    assert train["steps"] == 3 and train["step_median_s"] > 0 and train["loader_samples_per_s"] > 0
    assert abs(train["mean_over_median"] - train["step_mean_s"] / train["step_median_s"]) < 1e-9
    assert "summary: directsam+sam2 at 64 px" in proc.stdout


def test_gpu_benchmark_budget_skips_sections_and_still_ends_cleanly(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--device", "cpu",
                           "--packing", "1", "--skip", "api", "trajtok", "--budget", "0.01", "--json", str(out)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    # the set-up alone takes longer than the budget: every section is listed as skipped, none half-run
    assert [r["method"] for r in result["label"]] == ["directsam+sam2", "directsam+sam2 (planned keyframes)"]
    assert all(r["skipped"] == "time budget" for r in result["label"])
    assert result["training"] == {"skipped": "time budget"}
    assert proc.stdout.count("skipped") == 3
