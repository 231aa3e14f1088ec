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
