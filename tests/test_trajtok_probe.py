"""TrajAdapter probing: mask resampling to the backbone grid, the probes, the `trajtok probe` command."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cli
from dataengine.tools.synth import make_corpus
from trajtok.checkpoint import save_segmenter
from trajtok.models.adapter import METHODS, build_probe, resample_masks, vit3d_patch_features
from trajtok.models.segmenter import Segmenter
from trajtok.models.video import TransformerConfig, ViT3DVideo
from fixtures.trajtok_toy import toy_preset

torch.set_num_threads(1)


def brute_majority(assign: np.ndarray, tubelet: tuple[int, int, int]) -> np.ndarray:
    """Majority id of the pixels under each tubelet, by counting (ties: lower id; -1 if none has an id)."""
    T, H, W = assign.shape
    t, ph, pw = tubelet
    out = np.full((T // t, H // ph, W // pw), -1)
    for i in range(T // t):
        for y in range(H // ph):
            for x in range(W // pw):
                cell = assign[i * t:(i + 1) * t, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].ravel()
                cell = cell[cell >= 0]
                if cell.size:
                    out[i, y, x] = np.bincount(cell).argmax()
    return out


@pytest.mark.parametrize("tubelet", [(2, 4, 4), (1, 2, 2), (4, 8, 4)])
def test_pooled_masks_are_the_majority_vote_under_each_patch(tubelet):
    rng = np.random.default_rng(sum(tubelet))
    T, H, W, n = 8, 16, 16, 6
    # Blobby segments (a coarse map upsampled) plus salt noise and some unowned pixels,
    # so that most patches are mixed and the vote is not trivial.
    coarse = rng.integers(0, n, (T, 4, 4))
    assign = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
    noise = rng.random(assign.shape) < 0.3
    assign[noise] = rng.integers(-1, n, int(noise.sum()))
    assign[:, :8, :8] = -1   # whole patches with no trajectory
    grid = (T // tubelet[0], H // tubelet[1], W // tubelet[2])
    fractions, majority = resample_masks(torch.from_numpy(assign)[None], grid, n)
    assert fractions.shape == (1, n, *grid) and majority.shape == (1, *grid)
    np.testing.assert_array_equal(majority[0].numpy(), brute_majority(assign, tubelet))
    # Shares are the owned-pixel counts over the cell size.
    cell = tubelet[0] * tubelet[1] * tubelet[2]
    counts = np.stack([(assign == j).reshape(grid[0], tubelet[0], grid[1], tubelet[1], grid[2], tubelet[2])
                       .sum(axis=(1, 3, 5)) for j in range(n)])
    np.testing.assert_allclose(fractions[0].numpy(), counts / cell, atol=1e-6)
    assert (majority[0] >= 0).any() and (majority[0] == -1).any()


def test_vit3d_patch_features_grid_and_input_dependence():
    torch.manual_seed(0)
    model = ViT3DVideo(TransformerConfig(width=32, depth=2, heads=2, tubelet=(2, 8, 8)), 32).eval()
    video = torch.rand(2, 4, 3, 32, 32)
    feats = vit3d_patch_features(model, video)
    assert feats.shape == (2, 2, 4, 4, 32)
    assert torch.isfinite(feats).all() and feats.std() > 0.1
    assert not torch.allclose(feats, vit3d_patch_features(model, torch.rand(2, 4, 3, 32, 32)))


def test_trajadapter_reads_which_trajectory_moves():
    """Features are pure noise; only the masks say where the object goes. The TrajAdapter must learn it."""
    torch.manual_seed(0)
    B, T, h, w, C, n = 64, 4, 6, 6, 16, 3
    assign = torch.zeros(B, T, h, w, dtype=torch.long)
    labels = torch.randint(0, 2, (B,))
    for b in range(B):
        for t in range(T):
            x = 1 + t if labels[b] else 4 - t        # the object moves right (1) or left (0)
            assign[b, t, 2:4, x:x + 1] = 1
    fractions, majority = resample_masks(assign, (T, h, w), n)
    feats = torch.randn(B, T, h, w, C)
    model = build_probe("trajadapter_k2", C, 2, dim=32, heads=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(feats, fractions=fractions, majority=majority), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (model(feats, fractions=fractions, majority=majority).argmax(-1) == labels).float().mean()
    assert acc > 0.9


def test_every_method_builds_and_gives_class_logits():
    feats = torch.randn(2, 2, 3, 3, 16)
    fractions, majority = resample_masks(torch.randint(0, 4, (2, 4, 6, 6)), (2, 3, 3), 4)
    for m in METHODS:
        out = build_probe(m, 16, 5, dim=16, heads=2, latents=4)(feats, fractions=fractions, majority=majority)
        assert out.shape == (2, 5)
    with pytest.raises(ValueError, match="unknown probe method"):
        build_probe("nearest", 16, 5)


def test_probe_command_reports_every_method_and_chance(tmp_path):
    train, held = tmp_path / "train", tmp_path / "held"
    make_corpus(train, videos=6, images=1, seed=1, n_frames=6, width=64, height=48, style="flat")
    make_corpus(held, videos=4, images=0, seed=2, n_frames=6, width=64, height=48, style="flat")
    P = toy_preset(image_size=32, frames=4)
    torch.manual_seed(0)
    seg = save_segmenter(Segmenter(P.model), tmp_path / "seg.safetensors")
    out = tmp_path / "probe.json"
    args = ["probe", "--data", str(train / "gt"), "--eval-data", str(held / "gt"), "--label-key", "motion",
            "--segmenter", str(seg), "--preset", "test", "--seed", "0", "--seed", "1",
            "--cache", str(tmp_path / "cache"), "--json", str(out)]
    res = CliRunner().invoke(cli.trajtok_app, args)
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    for m in METHODS:
        assert 0.0 <= result[m] <= 1.0 and len(result["per_seed"][m]) == 2
    assert result["chance"] == pytest.approx(1 / len(result["classes"]))
    assert result["n_train"] == 6 and result["n_held_out"] == 4 and result["skipped"]["train"] == 1
    assert result["feature_grid"] == [2, 2, 2] and result["trajectories"] == 8
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2   # features + masks cached per dataset
    assert result["config"]["velocity_gain"] == 8.0 and result["config"]["appearance_dropout"] == 0.5
    # --velocity-gain and --appearance-dropout reach the TrajAdapter's config; the cache is reused.
    res = CliRunner().invoke(cli.trajtok_app, args[:-1] + [str(tmp_path / "g1.json"), "--velocity-gain", "1",
                                                           "--appearance-dropout", "0", "--method", "trajadapter_k1"])
    assert res.exit_code == 0, res.output
    g1 = json.loads((tmp_path / "g1.json").read_text())
    assert g1["config"]["velocity_gain"] == 1.0 and g1["config"]["appearance_dropout"] == 0.0
    assert list(g1["per_seed"]) == ["trajadapter_k1"]
    # Bad input: a label no sample carries is one clear line.
    res = CliRunner().invoke(cli.trajtok_app, args[:5] + ["--label-key", "colour"] + args[7:])
    assert res.exit_code == 2 and "no video sample" in res.output


def small_motion_clips(n_clips: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Trajectory maps ``[B, 4, 16, 16]``: background (id 0), two still squares and one square that drifts
    2 px over the clip (a quarter of a 8 x 8 backbone cell per frame) left, right, up or down: the label."""
    T, S = 4, 16
    labels = torch.randint(0, 4, (n_clips,), generator=gen)
    step = torch.tensor([[0, -1], [0, 1], [-1, 0], [1, 0]])          # (dy, dx) per class over the clip: 2 px
    assign = torch.zeros(n_clips, T, S, S, dtype=torch.long)
    for b in range(n_clips):
        ids = torch.randperm(3, generator=gen) + 1                   # which id is the mover varies
        corners = torch.randint(2, S - 6, (3, 2), generator=gen)
        for j, (oid, (y, x)) in enumerate(zip(ids.tolist(), corners.tolist())):
            for t in range(T):
                dy, dx = (step[labels[b]] * round(2 * t / (T - 1))).tolist() if j == 0 else (0, 0)
                assign[b, t, y + dy:y + dy + 4, x + dx:x + dx + 4] = oid
    return assign, labels


def test_trajadapter_learns_slow_motion_direction_in_few_steps():
    """Four directions, a small drift (what synth objects do at a backbone's patch grid) among still objects,
    constant features: only the trajectories' velocity carries the label, and 180 AdamW steps at the probe's
    lr and weight decay must read it (at the raw velocity scale, velocity_gain=1, this stays near chance)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    C, n = 16, 4
    data = {}
    for split, count in (("train", 96), ("test", 64)):
        assign, labels = small_motion_clips(count, gen)
        fractions, majority = resample_masks(assign, (4, 8, 8), n)
        data[split] = (torch.zeros(count, 4, 8, 8, C), fractions, majority, labels)
    feats, fractions, majority, labels = data["train"]
    model = build_probe("trajadapter_k1", C, 4, dim=32, heads=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.5)
    for _ in range(30):
        for idx in torch.randperm(len(labels), generator=gen).split(16):
            loss = torch.nn.functional.cross_entropy(
                model(feats[idx], fractions=fractions[idx], majority=majority[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    feats, fractions, majority, labels = data["test"]
    with torch.no_grad():
        acc = (model(feats, fractions=fractions, majority=majority).argmax(-1) == labels).float().mean()
    assert acc > 0.6   # chance 0.25


def test_appearance_dropout_drops_features_not_geometry():
    """The TrajAdapter's appearance dropout is noise on the backbone features in training only: with features
    the encoder's training-mode output varies from call to call; with no features (geometry alone) or in eval
    mode it does not; at 0 it is off."""
    torch.manual_seed(0)
    feats = torch.randn(2, 2, 3, 3, 16)
    fractions, majority = resample_masks(torch.randint(0, 4, (2, 4, 6, 6)), (2, 3, 3), 4)
    model = build_probe("trajadapter_k2", 16, 4, dim=16, heads=2, appearance_dropout=0.5)
    assert model.encoder.cfg.appearance_dropout == 0.5

    def twice(features):
        return [model(features, fractions=fractions, majority=majority) for _ in range(2)]

    model.train()
    a, b = twice(feats)
    assert not torch.allclose(a, b)
    a, b = twice(torch.zeros_like(feats))
    torch.testing.assert_close(a, b)
    model.eval()
    a, b = twice(feats)
    torch.testing.assert_close(a, b)
    off = build_probe("trajadapter_k2", 16, 4, dim=16, heads=2, appearance_dropout=0.0).train()
    torch.testing.assert_close(off(feats, fractions=fractions, majority=majority),
                               off(feats, fractions=fractions, majority=majority))
