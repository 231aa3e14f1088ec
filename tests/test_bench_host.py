"""bench/host.py (host CPU of the model labeller's post-processing) runs end to end at a tiny size, so it
cannot rot: its workload, both workers, and the comparison of their outputs."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_host_benchmark_compares_two_trees_and_their_outputs(tmp_path):
    out = tmp_path / "host.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # this tree against itself: every phase's outputs must hash the same
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "host.py"), "--size", "128", "--rounds", "1",
                           "--repeat", "1", "--baseline", str(ROOT), "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["identical"]) == {"post random", "post edges", "flows", "flows 1 DIS", "fate model",
                                        "fate classical", "absorb model", "absorb classical"}
    assert all(result["identical"].values())
    w = result["workload"]
    assert w["frames"][1:3] == [72, 128] and w["model_ids"] > w["model_short"] > 0
    for tree in result["trees"].values():
        seconds = tree["cpu_s_per_clip"]
        assert all(seconds[p] > 0 for p in result["identical"])
        assert seconds["random weights (the H200 runs)"] > seconds["flows"]
        assert tree["stable_hash"]
    assert "outputs identical: post random yes" in proc.stdout


def test_loader_benchmark_runs_with_the_tiny_presets_loss(tmp_path):
    """bench/loader.py times a train step with the preset's own loss (the tiny preset's grouping term needs the
    pixel features: the benchmark failed once it was on), so it runs here at its smallest."""
    out = tmp_path / "loader.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "loader.py"), "--presets", "tiny", "--batches", "1",
                           "--steps", "1", "--decode-reps", "1", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    (row,) = result["presets"]
    assert row["preset"] == "tiny" and row["loader_samples_per_s"] > 0 and row["step_seconds"] > 0
    assert result["decode"]["area_cpu_s"] > 0 and result["decode"]["decoder_cpu_s"] > 0
