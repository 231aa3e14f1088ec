"""The segmenter's no-object query: label 0 as "no object here" instead of "unknown"."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from dataengine.errors import CheckpointError
from trajtok.augment import AugmentConfig
from trajtok.checkpoint import load_segmenter, read_metadata
from trajtok.data import ShardDataset
from trajtok.losses import segmenter_loss
from trajtok.models import Segmenter, Tokenizer, segment
from trajtok.models.segmenter import SegmenterConfig, assign_queries, compact_ids, soft_masks
from trajtok.train import train_segmenter
from fixtures.trajtok_toy import toy_preset, write_synthetic_dataset

torch.set_num_threads(1)


def blocks_labels(T=2, h=8, w=8):
    lab = torch.ones(T, h, w, dtype=torch.long)
    lab[:, :4, :4] = 2
    lab[:, 4:, 4:] = 3
    lab[:, :2, 6:] = 0          # no object here
    return lab


def logits_for(labels, query_of_id, K, sharp=20.0):
    """Object logits ``[1, K, ...]`` where query ``query_of_id[i]`` owns trajectory i, and a
    no-object channel ``[1, 1, ...]`` that is ``sharp`` where ``void_on`` is set (see callers)."""
    logits = torch.zeros(1, K, *labels.shape)
    for i, q in query_of_id.items():
        logits[0, q][labels == i] = sharp
    return logits


def no_object_channel(mask, sharp=20.0):
    return (mask.float() * sharp)[None, None]


@pytest.fixture(scope="module")
def toy():
    return toy_preset()


def test_label_zero_is_the_no_object_target():
    lab = blocks_labels()
    objects = logits_for(lab, {1: 5, 2: 0, 3: 3}, K=6)
    right = segmenter_loss(objects, lab[None], no_object_logits=no_object_channel(lab == 0))
    # The no-object channel silent on label 0, an object query there instead: no longer ignored.
    spread = logits_for(lab, {1: 5, 2: 0, 3: 3, 0: 5}, K=6)
    wrong = segmenter_loss(spread, lab[None], no_object_logits=no_object_channel(torch.zeros_like(lab)))
    assert float(right["loss"]) < 0.05 < float(wrong["loss"])
    assert float(right["matched"]) == 4            # three trajectories + the no-object channel
    # Without the channel the same object logits are a perfect answer (label 0 ignored).
    assert float(segmenter_loss(spread, lab[None])["loss"]) < 0.05


def test_no_object_gradient_raises_it_on_label_zero_only():
    lab = blocks_labels()
    objects = logits_for(lab, {1: 5, 2: 0, 3: 3}, K=6, sharp=2.0)
    void = torch.zeros(1, 1, *lab.shape, requires_grad=True)
    segmenter_loss(objects, lab[None], no_object_logits=void)["loss"].backward()
    grad = void.grad[0, 0]
    assert (grad[lab == 0] < 0).all() and (grad[lab != 0] > 0).all()   # descent: up on 0, down elsewhere
    with pytest.raises(ValueError, match="no-object"):
        segmenter_loss(objects, lab[None], no_object_logits=torch.zeros(1, 2, *lab.shape))


def test_forward_soft_masks_and_assignment(toy):
    cfg = SegmenterConfig(**{**toy.model.to_dict(), "no_object": True})
    torch.manual_seed(0)
    model = Segmenter(cfg).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 3, 32, 32))
    K = cfg.num_queries
    assert out["logits"].shape == (2, K, 3, 8, 8) and out["no_object_logits"].shape == (2, 1, 3, 8, 8)
    assert out["queries"].shape == (2, K, cfg.dim)
    masks = soft_masks(out)
    both = torch.cat([out["logits"], out["no_object_logits"]], 1).softmax(1)
    assert torch.allclose(masks, both[:, :K]) and (masks.sum(1) < 1).all()
    # Make the no-object channel win on the left half and lose on the right.
    out["no_object_logits"][..., :4] = 1e3
    out["no_object_logits"][..., 4:] = -1e3
    index = assign_queries(out)
    assert (index[..., :4] == -1).all() and (index[..., 4:] >= 0).all()
    assert torch.equal(index[..., 4:], out["logits"].argmax(1)[..., 4:])


def test_compact_ids_leaves_no_object_pixels_at_zero():
    index = torch.tensor([[7, -1, 2], [2, 30, -1]])
    ids, n = compact_ids(index, offset=10)
    assert n == 3 and ids.tolist() == [[12, 0, 11], [11, 13, 0]]


class FixedLogits(nn.Module):
    """Stands in for a trained model in ``segment``: the no-object query wins on the left half."""

    def __init__(self, cfg: SegmenterConfig):
        super().__init__()
        self.cfg = cfg
        self.anchor = nn.Parameter(torch.zeros(1))   # segment() reads the device from a parameter

    def forward(self, video):
        B, T, _, H, W = video.shape
        h, w = H // 4, W // 4
        logits = torch.zeros(B, self.cfg.num_queries, T, h, w)
        logits[:, 1, :, : h // 2] = 5.0               # query 1 owns the top, query 2 the bottom
        logits[:, 2, :, h // 2:] = 5.0
        void = torch.zeros(B, 1, T, h, w)
        void[..., : w // 2] = 50.0
        return {"logits": logits, "no_object_logits": void}


def test_segment_leaves_no_object_pixels_unlabelled(toy):
    cfg = SegmenterConfig(**{**toy.model.to_dict(), "no_object": True})
    labels = segment(FixedLogits(cfg), np.zeros((6, 32, 32, 3), np.uint8))
    assert (labels[..., :14] == 0).all() and (labels[..., 18:] > 0).all()
    # Right half: top and bottom are two trajectories per clip, ids unique across clips (4 frames a clip).
    assert len(np.unique(labels[:4, :, 18:])) == 2 and len(np.unique(labels[4:, :, 18:])) == 2
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3, 4]


class VoidOn(nn.Module):
    """The real segmenter, with its no-object channel forced to win on the columns ``cols``."""

    def __init__(self, segmenter: Segmenter, cols: slice):
        super().__init__()
        self.segmenter, self.cols = segmenter, cols

    def forward(self, video):
        out = self.segmenter(video)
        void = torch.full_like(out["no_object_logits"], -1e3)
        void[..., self.cols] = 1e3
        return {**out, "no_object_logits": void}


def test_tokens_come_only_from_trajectories_that_own_pixels(toy):
    torch.manual_seed(0)
    tok = Tokenizer(SegmenterConfig(**{**toy.model.to_dict(), "no_object": True}), toy.encoder).eval()
    video = torch.rand(1, 4, 3, 32, 32)
    real = tok.segmenter
    with torch.no_grad():
        winners = set(real(video)["logits"].argmax(1)[..., 4:].unique().tolist())   # right half's queries
        tok.segmenter = VoidOn(real, slice(0, 4))
        valid = tok(video, k=1)["valid"][0]
        tok.segmenter = VoidOn(real, slice(0, 8))
        none = tok(video, k=1)["valid"][0]
    assert set(torch.nonzero(valid).flatten().tolist()) == winners
    assert not none.any()                               # no-object everywhere: no valid token


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_synthetic_dataset(out, videos=3, images=2, frames=8, samples_per_shard=2, seed=2)
    return out


def test_train_resume_and_checkpoint_keep_the_choice(data, tmp_path):
    out = tmp_path / "run"
    train_segmenter(data, out, preset=toy_preset(), max_steps=4, stop_after=2, no_object=True)
    assert json.loads(read_metadata(out / "last.safetensors")["config"])["no_object"] is True
    model = load_segmenter(out / "last.safetensors")
    assert model.cfg.no_object and model.no_object_query.shape == (1, model.cfg.dim)
    # Resumed without saying: the checkpoint's choice; saying the opposite is a clear error.
    res = train_segmenter(data, out, preset=toy_preset(), max_steps=4, resume=True)
    assert res["step"] == 4
    with pytest.raises(CheckpointError, match=r"another model config: no_object: True -> False \(--no-object / "
                                              r"--every-pixel must be the run's\)"):
        train_segmenter(data, out, preset=toy_preset(), max_steps=6, resume=True, no_object=False)


def test_a_no_object_model_learns_to_leave_the_background(tmp_path):
    """Overfit one batch whose background is label 0: the no-object query takes the background
    and leaves the objects to the trajectories."""
    toy = toy_preset(image_size=32, frames=4)
    write_synthetic_dataset(tmp_path, videos=2, images=0, frames=8, samples_per_shard=2, seed=3)
    toy.data.augment = AugmentConfig(enabled=False)
    toy.data.epochs = 1
    batch = next(iter(ShardDataset(tmp_path, toy.data)))
    labels = torch.where(batch["labels"] == 1, 0, batch["labels"])   # the fixture's background id 1 -> 0
    assert (labels == 0).float().mean() > 0.3
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig(**{**toy.model.to_dict(), "no_object": True}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(60):
        out = model(batch["frames"])
        loss = segmenter_loss(out["logits"], labels, no_object_logits=out["no_object_logits"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        index = assign_queries(model(batch["frames"]))
    void = index == -1
    assert void[labels == 0].float().mean() > 0.8
    assert void[labels != 0].float().mean() < 0.2


def test_command_line_flag_and_eval(tmp_path):
    """`trajtok train-segmenter --no-object` on `trajdata synth` ground truth (background 0), then
    `eval-segmenter` through the same segment() that leaves no-object pixels unlabelled."""
    from typer.testing import CliRunner

    import cli
    from dataengine.tools.synth import make_corpus
    make_corpus(tmp_path / "syn", videos=2, images=1, seed=3, n_frames=8, width=64, height=48)
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(cli.trajtok_app, ["train-segmenter", "--data", str(tmp_path / "syn" / "gt"), "--output",
                                          str(run), "--preset", "cpu", "--max-steps", "2", "--no-object"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "config.json").read_text())["preset"]["model"]["no_object"] is True
    out = tmp_path / "e.json"
    res = runner.invoke(cli.trajtok_app, ["eval-segmenter", "--checkpoint", str(run / "last.safetensors"),
                                          "--data", str(tmp_path / "syn" / "gt"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["samples"] == 3


@pytest.mark.slow
def test_student_bench_smoke(tmp_path):
    """bench/student.py end to end at toy size: corpora, engine labels, three students, one table."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(root / "bench" / "student.py"), "--work", str(tmp_path / "w"), "--videos", "1",
                    "--images", "1", "--held-videos", "1", "--steps", "2", "--every-pixel-gt", "--paper-loss",
                    "--json", str(out)], check=True, capture_output=True, cwd=str(root))
    result = json.loads(out.read_text())
    assert set(result["scores"]) == {"teacher", "(a) ground truth, --no-object", "(b) engine labels",
                                     "(a0) ground truth, every pixel", "(a) ground truth, paper loss"}
    configs = {key: json.loads((tmp_path / "w" / f"run_{key}" / "config.json").read_text())["preset"]["loss"]
               for key in ("a", "ap")}
    assert configs["ap"]["grouping_weight"] == 0 < configs["a"]["grouping_weight"]
    assert all(row["gt_trajectories"] > 0 for row in result["scores"].values())
    assert set(result["cpu_seconds"]) == set(result["scores"]) - {"teacher"}
    assert result["scores"]["teacher"]["recall_at_0.5"] > 0      # the engine's labels, scored on the same frames


def test_ground_truth_data_without_the_flag_gets_a_hint(tmp_path):
    from dataengine.tools.synth import make_corpus
    from trajtok.train.segmenter import ground_truth_labels
    make_corpus(tmp_path / "syn", videos=1, images=1, seed=3, n_frames=8, width=64, height=48)
    gt = tmp_path / "syn" / "gt"
    assert ground_truth_labels(gt)
    with pytest.warns(UserWarning, match="--no-object"):
        train_segmenter(gt, tmp_path / "a", preset="cpu", max_steps=1, batch_size=1, image_batch_size=1)
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_segmenter(gt, tmp_path / "b", preset="cpu", max_steps=1, batch_size=1, image_batch_size=1,
                        no_object=False)
    assert not [w for w in caught if "--no-object" in str(w.message)]     # said explicitly: no hint
