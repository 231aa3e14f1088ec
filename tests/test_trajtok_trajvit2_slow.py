"""Slow checks of the video-text training: DDP under torchrun, and that the cpu preset learns.

Opt-in (``make test-slow``): the quality run trains two models for minutes each.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataengine.tools.synth import make_corpus

ROOT = Path(__file__).resolve().parent.parent

DDP_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[3])
from test_trajtok_trajvit2 import tiny_preset
from trajtok.train.trajvit2 import train_video_text
P = tiny_preset()
P.data.image_batch_size = 3        # ranks may draw a video batch (2) and an image batch (3) in one step
res = train_video_text(sys.argv[1], sys.argv[2], preset=P, max_steps=4, batch_size=2)
import pathlib
pathlib.Path(sys.argv[2], f"rank{res['rank']}.json").write_text(json.dumps(res))
"""


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    make_corpus(tmp_path / "c", videos=6, images=9, seed=5, n_frames=8, width=64, height=48)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "c" / "gt"), str(out), str(ROOT / "tests")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [4, 4]
    assert ranks[0]["losses"] == ranks[1]["losses"]          # loss over the gathered batch, all-reduced


@pytest.mark.slow
def test_cpu_preset_learns_retrieval_and_shuffled_captions_stay_at_chance(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import retrieval
    result = retrieval.main(["--videos", "300", "--jobs", "2", "--work", str(tmp_path),
                             "--only", "trajvit2_seed0", "trajvit2_seed0_shuffled"])
    real = next(r for r in result["runs"] if not r["shuffled_captions"])
    shuffled = next(r for r in result["runs"] if r["shuffled_captions"])
    assert real["t2v_R@5_over_chance"] >= 3, real["t2v"]
    assert shuffled["t2v_R@5_over_chance"] < 2, shuffled["t2v"]
