"""Training loop: logs, checkpoints that rebuild the model alone, exact resume, DDP."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dataengine.errors import CheckpointError
from trajtok.checkpoint import load_segmenter, save_segmenter, weights_digest
from fixtures.trajtok_toy import toy_preset, write_synthetic_dataset
from trajtok.train import lr_at, train_segmenter

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_synthetic_dataset(out, videos=3, images=2, frames=8, samples_per_shard=2, seed=2)
    return out


def log_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_lr_schedule():
    lrs = [lr_at(s, 1.0, 4, 12) for s in range(12)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and all(a > b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] > 0
    assert lr_at(12, 1.0, 4, 12) == 0.0


def test_train_outputs_and_checkpoint_roundtrip(data, tmp_path):
    out = tmp_path / "run"
    res = train_segmenter(data, out, preset=toy_preset(), max_steps=3, save_every=2)
    assert res["step"] == 3 and len(res["losses"]) == 3
    assert log_steps(out) == [1, 2, 3]
    rec = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert {"loss", "focal", "dice", "empty", "lr", "grad_norm", "temperature"} <= set(rec)
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "step-0000002.safetensors").exists() and (out / "last.optim.pt").exists()
    assert json.loads((out / "config.json").read_text())["preset"]["name"] == "toy"

    model = load_segmenter(out / "last.safetensors")      # rebuilt from the file alone
    assert weights_digest(model) == res["weights_sha256"]
    again = load_segmenter(save_segmenter(model, tmp_path / "copy.safetensors", step=3))
    video = torch.rand(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(video)["logits"], again(video)["logits"])


def test_resume_continues_exactly(data, tmp_path):
    straight = train_segmenter(data, tmp_path / "a", preset=toy_preset(), max_steps=4)
    first = train_segmenter(data, tmp_path / "b", preset=toy_preset(), max_steps=4, stop_after=2)
    assert first["step"] == 2
    resumed = train_segmenter(data, tmp_path / "b", preset=toy_preset(), max_steps=4, resume=True)
    assert resumed["step"] == 4 and resumed["steps_run"] == 2
    assert log_steps(tmp_path / "b") == [1, 2, 3, 4]
    assert resumed["losses"] == straight["losses"][2:]
    assert resumed["weights_sha256"] == straight["weights_sha256"]


def test_a_kill_between_the_state_and_the_weights_still_resumes_exactly(data, tmp_path):
    """The state of step 3 written, the weights not (killed in between): --resume takes the kept state of
    step 2, the pair of the weights on disk, and ends as a run that never stopped; an unreadable state file
    is one clear error."""
    from trajtok.checkpoint import load_train_state, previous_state_path, save_train_state_pair
    straight = train_segmenter(data, tmp_path / "a", preset=toy_preset(), max_steps=4)
    out = tmp_path / "b"
    train_segmenter(data, out, preset=toy_preset(), max_steps=4, stop_after=2)
    ahead = load_train_state(out / "last.optim.pt")
    ahead["step"] = 3
    save_train_state_pair(out / "last.optim.pt", ahead)          # ... and then the process died
    assert load_train_state(previous_state_path(out / "last.optim.pt"))["step"] == 2
    resumed = train_segmenter(data, out, preset=toy_preset(), max_steps=4, stop_after=0, resume=True)
    assert resumed["steps_run"] == 0                              # resumed, then "killed" again before a save:
    assert not previous_state_path(out / "last.optim.pt").exists()    # the matching pair was settled
    resumed = train_segmenter(data, out, preset=toy_preset(), max_steps=4, resume=True)
    assert resumed["weights_sha256"] == straight["weights_sha256"] and resumed["losses"] == straight["losses"][2:]
    assert not previous_state_path(out / "last.optim.pt").exists()    # dropped once the weights are written
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 5, "lo')                                 # a line torn by the kill
    train_segmenter(data, out, preset=toy_preset(), max_steps=5, resume=True)
    assert log_steps(out) == [1, 2, 3, 4, 5]
    (out / "last.optim.pt").write_bytes(b"cut short")
    previous_state_path(out / "last.optim.pt").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=r"no training state matches .*last.optim.pt is not a readable"):
        train_segmenter(data, out, preset=toy_preset(), max_steps=6, resume=True)


def test_loud_failures(data, tmp_path):
    with pytest.raises(FileNotFoundError):
        train_segmenter(data, tmp_path / "none", preset=toy_preset(), max_steps=1, resume=True)
    train_segmenter(data, tmp_path / "once", preset=toy_preset(), max_steps=1)
    with pytest.raises(FileExistsError):
        train_segmenter(data, tmp_path / "once", preset=toy_preset(), max_steps=1)
    other = toy_preset()
    other.model.num_queries = 4
    with pytest.raises(ValueError, match="another model config: num_queries: [0-9]+ -> 4"):
        train_segmenter(data, tmp_path / "once", preset=other, max_steps=2, resume=True)
    with pytest.raises(FileNotFoundError):
        load_segmenter(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="not a trajtok"):
        load_segmenter(tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="unknown preset"):
        train_segmenter(data, tmp_path / "x", preset="huge")


DDP_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from fixtures.trajtok_toy import toy_preset
from trajtok.train import train_segmenter
res = train_segmenter(sys.argv[1], sys.argv[2], preset=toy_preset(), max_steps=3)
Path = __import__("pathlib").Path
Path(sys.argv[2], f"rank{res['rank']}.json").write_text(json.dumps(res))
"""


@pytest.mark.slow
def test_torchrun_two_processes_gloo(data, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    # the ranks import the toy preset from tests/fixtures, as pytest's own process does
    tests_dir = str(Path(__file__).resolve().parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(data), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [3, 3]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]      # DDP kept the ranks in sync
    assert ranks[0]["losses"] == ranks[1]["losses"]                      # logged loss is the all-reduced mean
    assert weights_digest(load_segmenter(out / "last.safetensors")) == ranks[0]["weights_sha256"]
    assert log_steps(out) == [1, 2, 3]


def test_evaluate(data, tmp_path):
    import numpy as np
    from dataengine.metrics.matching import matched_ious
    from trajtok.evaluate import evaluate_segmenter
    gt = np.array([[[1, 1, 2], [0, 3, 3]]])
    assert matched_ious(gt * 7, gt).tolist() == [1.0, 1.0, 1.0]         # ids need not agree
    assert matched_ious(np.ones_like(gt), gt).tolist() == [0.4, 0.0, 0.0]
    train_segmenter(data, tmp_path / "ev", preset=toy_preset(), max_steps=1)
    res = evaluate_segmenter(tmp_path / "ev" / "last.safetensors", data, limit=3)
    assert res["samples"] == 3 and res["errors"] == 0 and 0 <= res["matched_iou"] <= 1
    assert 0 <= res["matched_recall@0.5"] <= 1


def test_gpu_presets_take_loader_workers_from_the_cpus_of_each_process(monkeypatch):
    from trajtok.presets import get_preset
    from trajtok.train.segmenter import apply_train_overrides

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    for world, expected in (("1", 15), ("8", 1), ("4", 3)):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", world)
        P = get_preset("paper")
        apply_train_overrides(P, max_steps=None, warmup_steps=None, lr=None, num_workers=None, save_every=None,
                              log_every=None, batch_size=None, seed=0)
        assert P.train.num_workers == expected
    P = get_preset("paper")      # an explicit --workers wins
    apply_train_overrides(P, max_steps=None, warmup_steps=None, lr=None, num_workers=2, save_every=None,
                          log_every=None, batch_size=None, seed=0)
    assert P.train.num_workers == 2
    assert get_preset("tiny").train.num_workers == 0    # CPU presets load in the training process


def test_resume_is_exact_when_a_batch_never_decodes(tmp_path):
    """One image that never decodes, image batches of one: that batch is data consumed without a step, so a
    run stopped and resumed anywhere (before it, just after it, later) ends with the weights of a run that
    never stopped."""
    import io
    import tarfile
    paths = write_synthetic_dataset(tmp_path / "d", videos=2, images=4, frames=6, samples_per_shard=6, seed=7)
    with tarfile.open(paths[0]) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m, data in members:
            if m.name == "img0001.png":
                data = b"\x00" * len(data)                      # not an image any more
            tf.addfile(m, io.BytesIO(data))
    paths[0].write_bytes(buf.getvalue())
    kw = dict(preset=toy_preset(), max_steps=8, image_batch_size=1)
    straight = train_segmenter(tmp_path / "d", tmp_path / "a", **kw)
    for split in (2, 5):
        run = tmp_path / f"s{split}"
        train_segmenter(tmp_path / "d", run, stop_after=split, **kw)
        resumed = train_segmenter(tmp_path / "d", run, resume=True, **kw)
        assert resumed["weights_sha256"] == straight["weights_sha256"], split


def test_resume_says_when_the_seed_or_the_data_changed(data, tmp_path):
    import shutil
    train_segmenter(data, tmp_path / "r", preset=toy_preset(), max_steps=4, stop_after=1)
    with pytest.warns(UserWarning, match=r"seed changed since the checkpoint \(0 -> 3\)"):
        train_segmenter(data, tmp_path / "r", preset=toy_preset(), max_steps=4, stop_after=1, resume=True, seed=3)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for p in sorted(data.glob("*.tar"))[:-1]:
        shutil.copy(p, fewer / p.name)
    with pytest.warns(UserWarning, match=r"shards changed since the checkpoint"):
        train_segmenter(fewer, tmp_path / "r", preset=toy_preset(), max_steps=4, stop_after=1, resume=True, seed=3)
    with pytest.warns(UserWarning, match=r"batch_size changed since the checkpoint \(2 -> 3\)"):   # and it trains on
        assert train_segmenter(data, tmp_path / "r", preset=toy_preset(), max_steps=4, resume=True, seed=3,
                               batch_size=3)["step"] == 4


def test_a_short_video_is_scored_on_each_of_its_frames_once(tmp_path):
    """The model's clip is 4 frames; a 2-frame video is fed as [0, 0, 1, 1] and scored on frames 0 and 1."""
    import numpy as np
    from trajtok.evaluate import predict_samples
    from trajtok.data import decode_sample
    from dataengine.format import shards as shard_io
    write_synthetic_dataset(tmp_path / "d", videos=2, images=1, frames=2, samples_per_shard=3, seed=9)
    train_segmenter(tmp_path / "d", tmp_path / "m", preset=toy_preset(frames=4), max_steps=1)
    got = {k: (g, p) for k, g, p in predict_samples(tmp_path / "m" / "last.safetensors", tmp_path / "d")}
    for s in shard_io.read_dataset(tmp_path / "d"):
        g, p = got[s.key]
        T = 2 if s.key.startswith("vid") else 1
        assert g.shape[0] == p.shape[0] == T
        assert np.array_equal(g, decode_sample(s, T)[1])     # the labels of those frames, once each


def test_resume_keeps_the_runs_grouping_weight_and_schedule(data, tmp_path):
    """A run trained with --grouping-weight 0 and --lr 5e-4, resumed without either flag, keeps both
    (before, the preset's defaults came back silently); the resumed run equals one that never stopped."""
    straight = train_segmenter(data, tmp_path / "a", preset=toy_preset(), max_steps=4, grouping_weight=0.0, lr=5e-4)
    train_segmenter(data, tmp_path / "b", preset=toy_preset(), max_steps=4, stop_after=2, grouping_weight=0.0,
                    lr=5e-4)
    resumed = train_segmenter(data, tmp_path / "b", preset=toy_preset(), max_steps=4, resume=True)
    config = json.loads((tmp_path / "b" / "config.json").read_text())["preset"]
    assert config["loss"]["grouping_weight"] == 0.0 and config["train"]["lr"] == 5e-4
    assert resumed["weights_sha256"] == straight["weights_sha256"]
    other = toy_preset()
    other.name = "paper"
    with pytest.raises(ValueError, match="--preset"):
        train_segmenter(data, tmp_path / "b", preset=other, max_steps=6, resume=True)
