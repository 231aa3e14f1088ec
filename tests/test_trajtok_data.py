"""Shard loader: decoding, augmentation alignment, worker sharding, resumable position."""
import dataclasses

import numpy as np
import pytest
import torch

from dataengine.format import shards as shard_io
from trajtok.augment import AugmentConfig, adjust_hue, augment_clip, crop_box
from trajtok.data import (DataConfig, ShardDataset, batches_for_worker, decode_sample, frame_positions,
                          make_loader, resolve_shards)
from fixtures.trajtok_toy import PALETTE, render_clip, write_synthetic_dataset

torch.set_num_threads(1)
GEOMETRY_ONLY = AugmentConfig(color_jitter=0.0, grayscale=0.0, blur=0.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_synthetic_dataset(out, videos=4, images=3, frames=12, samples_per_shard=3, seed=1)
    return out


def cfg(**kw):
    base = dict(image_size=32, frames=4, batch_size=2, shuffle_buffer=8, epochs=1)
    base.update(kw)
    return DataConfig(**base)


def keys_of(batches):
    return [k for b in batches for k in b["keys"]]


def palette_agreement(frames: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of label cells whose frame block (area mean) is closest in colour to the label's colour."""
    T, _, S, _ = frames.shape
    s = labels.shape[-1]
    blocks = torch.nn.functional.adaptive_avg_pool2d(frames, s) * 255          # [T, 3, s, s]
    dist = ((blocks.permute(0, 2, 3, 1)[..., None, :] - torch.tensor(PALETTE).float()) ** 2).sum(-1)
    return float((dist.argmin(-1) == labels).float().mean())


def test_resolve_shards(dataset):
    assert len(resolve_shards(dataset)) == 3
    assert len(resolve_shards(str(dataset / "*.tar"))) == 3
    assert len(resolve_shards([dataset / "traj-000000.tar"])) == 1
    with pytest.raises(FileNotFoundError):
        resolve_shards(dataset / "missing")


def test_decode_video_and_image(dataset):
    samples = list(shard_io.read_dataset(dataset))
    video = next(s for s in samples if s.media_ext == "mp4")
    image = next(s for s in samples if s.media_ext == "png")
    rgb, lab = decode_sample(video, 5)
    assert rgb.shape == (5, 48, 64, 3) and rgb.dtype == np.uint8 and lab.shape == (5, 48, 64)
    # Decoded frames show the labelled colours (H.264 blurs box edges a little).
    err = np.abs(rgb.astype(int) - PALETTE[lab].astype(int)).max(-1)
    assert (err < 40).mean() > 0.9
    rgb, lab = decode_sample(image, 5)
    assert rgb.shape == (1, 48, 64, 3) and lab.shape == (1, 48, 64)
    assert (rgb == PALETTE[lab]).all()          # PNG is lossless


def test_frame_positions():
    assert frame_positions(16, 4, None).tolist() == [2, 6, 10, 14]
    pos = frame_positions(16, 4, np.random.default_rng(0))
    assert len(set(np.diff(pos))) == 1 and pos.max() < 16
    assert frame_positions(3, 5, None).tolist() == [0, 0, 1, 2, 2]   # short videos repeat frames


def test_batch_shapes_and_bucketing(dataset):
    batches = list(ShardDataset(dataset, cfg()).iter_batches(0, 1))
    assert sorted(keys_of(batches)) == sorted(s.key for s in shard_io.read_dataset(dataset, with_media=False))
    for b in batches:
        B, T = b["frames"].shape[:2]
        assert b["frames"].shape == (B, T, 3, 32, 32) and b["frames"].dtype == torch.float32
        assert b["labels"].shape == (B, T, 8, 8) and b["labels"].dtype == torch.int64
        assert 0 <= float(b["frames"].min()) and float(b["frames"].max()) <= 1
        # Videos give T frames, images T = 1, never mixed in one batch.
        assert T == (4 if b["keys"][0].startswith("vid") else 1)
        assert all(k.startswith(b["keys"][0][:3]) for k in b["keys"])


def test_video_and_image_batches_have_their_own_sizes(dataset):
    # 4 videos, 3 images, one epoch: full batches of each kind, then the remainders
    def sizes(c):   # sorted (T, batch size) of every batch
        return sorted((b["frames"].shape[1], b["frames"].shape[0]) for b in ShardDataset(dataset, c).iter_batches(0, 1))

    assert sizes(cfg(batch_size=2, image_batch_size=2)) == [(1, 1), (1, 2), (4, 2), (4, 2)]
    assert sizes(cfg(batch_size=3, image_batch_size=3)) == [(1, 3), (4, 1), (4, 3)]
    assert sizes(cfg(batch_size=4, image_batch_size=1)) == [(1, 1), (1, 1), (1, 1), (4, 4)]
    assert cfg(batch_size=2).batch_size_for(1) == 2 * 4 and cfg(batch_size=2).batch_size_for(4) == 2


def test_augment_keeps_frames_and_labels_aligned():
    rng = np.random.default_rng(0)
    rgb, lab = render_clip(3, 48, 64, 4, rng)
    frames = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    labels = torch.from_numpy(lab)
    scores, flipped = [], 0
    for seed in range(20):
        f, l = augment_clip(frames, labels, 64, GEOMETRY_ONLY, np.random.default_rng(seed))
        scores.append(palette_agreement(f, l))
        # A deliberately misaligned pair scores far lower: the check has teeth.
        flipped += palette_agreement(f, l.flip(-1)) < scores[-1] - 0.05
    assert min(scores) > 0.85, scores
    assert flipped >= 15


def test_hflip_and_crop_exact():
    labels = torch.arange(8 * 8).view(1, 8, 8) % 5
    frames = torch.from_numpy(PALETTE[labels.numpy()]).permute(0, 3, 1, 2)
    full = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=1.0,
                         color_jitter=0, grayscale=0, blur=0)
    f, l = augment_clip(frames, labels, 8, full, np.random.default_rng(0), target_stride=1)
    assert torch.equal(l, labels.flip(-1))
    assert torch.equal((f * 255).round().byte(), frames.flip(-1))
    top, left, h, w = crop_box(48, 64, (0.2, 1.0), (3 / 4, 4 / 3), np.random.default_rng(3))
    assert 0 <= top and top + h <= 48 and 0 <= left and left + w <= 64
    assert 0.2 * 48 * 64 * 0.9 <= h * w and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_colour_ops_touch_frames_only():
    rng = np.random.default_rng(0)
    rgb, lab = render_clip(2, 48, 64, 3, rng)
    strong = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(4 / 3, 4 / 3), hflip=0.0,
                           color_jitter=1.0, grayscale=1.0, blur=1.0)
    plain = dataclasses.replace(strong, color_jitter=0.0, grayscale=0.0, blur=0.0)
    args = (torch.from_numpy(rgb).permute(0, 3, 1, 2), torch.from_numpy(lab), 32)
    f1, l1 = augment_clip(*args, strong, np.random.default_rng(5))
    f2, l2 = augment_clip(*args, plain, np.random.default_rng(5))
    assert torch.equal(l1, l2) and not torch.allclose(f1, f2)
    assert torch.allclose(f1[:, 0], f1[:, 1])        # grayscale: equal channels


def test_hue_shift_equals_torchvisions():
    """The OpenCV hue rotation used by the colour jitter gives torchvision's adjust_hue, across the wrap."""
    import torchvision.transforms.functional as TF

    frames = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    frames[0, :, :4] = 0.5                    # grey pixels: no hue at all
    for shift in (-0.5, -0.1, 0.0, 0.05, 0.37):
        ours = adjust_hue(frames, shift)
        assert ours.shape == frames.shape and ours.dtype == torch.float32
        assert torch.allclose(ours, TF.adjust_hue(frames, shift), atol=1e-5), shift
    assert not torch.allclose(adjust_hue(frames, 0.2), frames, atol=0.05)


def test_dataset_alignment_on_lossless_images(dataset):
    batches = ShardDataset(dataset, cfg(augment=GEOMETRY_ONLY, image_size=64)).iter_batches(0, 1)
    images = [b for b in batches if b["frames"].shape[1] == 1]
    assert images
    for b in images:
        for f, l in zip(b["frames"], b["labels"]):
            assert palette_agreement(f, l) > 0.85


@pytest.mark.parametrize("n_consumers", [2, 4])   # 3 shards: split by shard, then by sample
def test_consumers_partition_the_data(dataset, n_consumers):
    ds = ShardDataset(dataset, cfg(augment=AugmentConfig(enabled=False)))
    parts = [keys_of(ds.iter_batches(c, n_consumers)) for c in range(n_consumers)]
    flat = [k for p in parts for k in p]
    assert len(flat) == len(set(flat)) == 7
    assert all(parts)


def test_epochs_and_determinism(dataset):
    ds = ShardDataset(dataset, cfg(epochs=2))
    first = list(ds.iter_batches(0, 1))
    assert sorted(keys_of(first)) == sorted(2 * [f"vid{i:04d}" for i in range(4)] + 2 * [f"img{i:04d}" for i in range(3)])
    again = list(ds.iter_batches(0, 1))
    assert keys_of(first) == keys_of(again)
    assert all(torch.equal(a["frames"], b["frames"]) for a, b in zip(first, again))


def test_batches_for_worker():
    assert [batches_for_worker(5, w, 2) for w in range(2)] == [3, 2]
    assert [batches_for_worker(0, w, 3) for w in range(3)] == [0, 0, 0]
    assert sum(batches_for_worker(7, w, 3) for w in range(3)) == 7


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_position_matches_uninterrupted_stream(dataset, workers):
    c = cfg(epochs=None)
    ref = []
    for b in make_loader(dataset, c, num_workers=workers):
        ref.append(b)
        if len(ref) == 6:
            break
    resumed = []
    for b in make_loader(dataset, c, num_workers=workers, position=3 * c.batch_size):
        resumed.append(b)
        if len(resumed) == 3:
            break
    assert [b["keys"] for b in resumed] == [b["keys"] for b in ref[3:]]
    assert all(torch.equal(a["frames"], b["frames"]) for a, b in zip(resumed, ref[3:]))
    with pytest.raises(ValueError):
        ShardDataset(dataset, c, position=3)


def test_batches_carry_each_samples_caption(dataset):
    stored = {s.key: s.caption for s in shard_io.read_dataset(dataset, with_media=False)}
    assert len(set(stored.values())) > 1 and all(stored.values())
    batches = list(ShardDataset(dataset, cfg()).iter_batches(0, 1))
    seen = {"vid": 0, "img": 0}
    for b in batches:
        assert len(b["captions"]) == len(b["keys"]) == b["frames"].shape[0]
        for key, caption in zip(b["keys"], b["captions"]):
            assert caption == stored[key]
            seen[key[:3]] += 1
    assert seen["vid"] and seen["img"]            # video and image samples both bring their text


def test_data_that_never_decodes_ends_the_run_with_the_reason(dataset, tmp_path):
    """Every sample undecodable: an endless loader would skip samples forever; it stops after one
    whole pass with the last reason. One bad sample among good ones still costs only itself."""
    import io
    import tarfile

    from dataengine.errors import InputError

    def copy_with_broken_media(out, broken):
        out.mkdir()
        for path in resolve_shards(dataset):
            with tarfile.open(path) as tin, tarfile.open(out / path.name, "w") as tout:
                for m in tin:
                    data = tin.extractfile(m).read()
                    if m.name.endswith((".mp4", ".png")) and broken(m.name):
                        data = b"not media at all"
                    info = tarfile.TarInfo(m.name)
                    info.size = len(data)
                    tout.addfile(info, io.BytesIO(data))
        return out

    bad = copy_with_broken_media(tmp_path / "bad", lambda name: True)
    stream = ShardDataset(bad, cfg(epochs=None)).iter_batches(0, 1)
    with pytest.raises(InputError, match=r"could be decoded in a whole pass .*not a decodable"):
        for item in stream:                 # batches none of whose samples decode, then the end
            assert set(item) == {"skipped"}
    with pytest.raises(InputError, match=r"loader stream 1 of 2 decoded none"):   # one worker's share
        list(ShardDataset(bad, cfg(epochs=None)).iter_batches(1, 2))
    one_bad = copy_with_broken_media(tmp_path / "one", lambda name: name.startswith("vid0000."))
    stream = ShardDataset(one_bad, cfg(epochs=None)).iter_batches(0, 1)
    keys = [k for _, b in zip(range(12), stream) for k in b.get("keys", [])]    # three epochs' worth, no error
    assert "vid0000" not in keys and len(set(keys)) == 6


def test_a_mixture_recipe_draws_its_datasets_by_weight(tmp_path):
    """Two datasets of 4 shards each (images only / videos only), weights 3 : 1: an epoch reads 8 shards, 6 from
    the first (each at least once) and 2 from the second, so 18 images and 6 videos; a plain dataset's order is
    what it always was."""
    import yaml
    from trajtok.data import read_mixture, resolve_parts
    a = write_synthetic_dataset(tmp_path / "a", videos=0, images=12, samples_per_shard=3, seed=2)
    b = write_synthetic_dataset(tmp_path / "b", videos=12, images=0, frames=6, samples_per_shard=3, seed=3)
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(yaml.safe_dump({"name": "mix", "datasets": [{"path": str(tmp_path / "a"), "weight": 3},
                                                                 {"path": str(tmp_path / "b"), "weight": 1}]}))
    assert sorted(resolve_shards(recipe)) == sorted(a + b)
    ds = ShardDataset(recipe, cfg(epochs=2))
    for epoch in (0, 1):
        order = ds.epoch_shards(epoch)
        assert len(order) == 8 and sum(p in a for p in order) == 6 and set(a) <= set(order)
    assert ds.epoch_shards(0) != ds.epoch_shards(1)                     # reshuffled every epoch
    batches = list(ShardDataset(recipe, cfg(epochs=1, batch_size=2, image_batch_size=3)).iter_batches(0, 1))
    kinds = [b["frames"].shape[1] for b in batches for _ in b["keys"]]
    assert kinds.count(1) == 18 and kinds.count(4) == 6
    # one dataset: the shard order it always had
    plain = ShardDataset(tmp_path / "a", cfg())
    old = list(resolve_shards(tmp_path / "a"))
    np.random.default_rng([plain.cfg.seed, 3]).shuffle(old)
    assert plain.epoch_shards(3) == old and len(resolve_parts(tmp_path / "a")) == 1
    assert [p.weight for p in read_mixture(recipe)] == [3.0, 1.0]


@pytest.mark.parametrize("recipe, message", [
    ({"name": "x"}, "non-empty list 'datasets'"),
    ({"datasets": [{"weight": 1}]}, "needs a 'path'"),
    ({"datasets": [{"path": "A", "weight": -1}]}, "weight must be a number >= 0"),
    ({"datasets": [{"path": "A", "weight": 0}]}, "every weight is 0"),
    ({"datasets": [{"path": "NESTED", "weight": 1}]}, "names another mixture"),
    ({"datasets": [{"path": "MISSING", "weight": 1}]}, "no such shard dataset"),
])
def test_a_bad_mixture_recipe_is_one_clear_error(tmp_path, dataset, recipe, message):
    import yaml
    from dataengine.errors import UserError
    (tmp_path / "nested.yaml").write_text(yaml.safe_dump({"datasets": [{"path": str(dataset)}]}))
    paths = {"A": str(dataset), "NESTED": str(tmp_path / "nested.yaml"), "MISSING": str(tmp_path / "nope")}
    for d in recipe.get("datasets", []):
        if "path" in d:
            d["path"] = paths[d["path"]]
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(UserError, match=message):
        ShardDataset(tmp_path / "mix.yaml", cfg())


def test_the_shipped_pretraining_mixture_trains(tmp_path, monkeypatch):
    """manifests/mixtures/segmenter_pretrain.yaml as a user runs it: its datasets where it says (relative to
    the working directory), `trajtok train-segmenter --data` on it for one step."""
    from pathlib import Path
    from typer.testing import CliRunner
    import cli
    from trajtok.data import read_mixture
    recipe = Path(__file__).resolve().parents[1] / "manifests" / "mixtures" / "segmenter_pretrain.yaml"
    monkeypatch.chdir(tmp_path)
    names = ["runs/panda/kept", "runs/cc3m/kept", "runs/cc12m/kept", "runs/datacomp/kept"]
    for i, name in enumerate(names):
        Path(name).mkdir(parents=True)
        write_synthetic_dataset(name, videos=3 if i == 0 else 0, images=0 if i == 0 else 3, samples_per_shard=3,
                                seed=i)
    parts = read_mixture(recipe)
    assert [p.path for p in parts] == names and sum(p.weight for p in parts) == pytest.approx(1.0)
    result = CliRunner().invoke(cli.trajtok_app, ["train-segmenter", "--data", str(recipe), "--output", "run",
                                                  "--preset", "cpu", "--max-steps", "1", "--batch-size", "1",
                                                  "--image-batch-size", "1", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_shards_at_a_url_are_listed_and_read_where_they_are(dataset, tmp_path):
    """Training data on object storage: a URL dataset (fsspec memory://, and file://) gives the loader the same
    batches as the local directory; a URL of one tar is that tar."""
    from dataengine.format.outputfs import Output
    local = resolve_shards(dataset)
    mem = Output("memory://trajtok-loader/shards")
    for p in local:
        mem.write_bytes(p.name, p.read_bytes())
    mem.write_bytes("README.md", b"not a shard")
    for url in (mem.uri, dataset.as_uri()):
        assert [u.rsplit("/", 1)[1] for u in resolve_shards(url)] == [p.name for p in local]
        got = list(ShardDataset(url, cfg()).iter_batches(0, 1))
        want = list(ShardDataset(dataset, cfg()).iter_batches(0, 1))
        assert [b["keys"] for b in got] == [b["keys"] for b in want]
        assert all(torch.equal(a["frames"], b["frames"]) and torch.equal(a["labels"], b["labels"])
                   for a, b in zip(got, want))
    assert resolve_shards(f"{mem.uri}/{local[0].name}") == [f"{mem.uri}/{local[0].name}"]
    with pytest.raises(FileNotFoundError, match="no shards found"):
        resolve_shards("memory://trajtok-loader/empty")


def test_broken_members_and_a_cut_shard_cost_only_their_samples(tmp_path, caplog):
    """A sample without its traj.json, one whose JSON is not JSON, and a shard cut off in the middle: the
    loader skips those samples with a warning each and keeps the rest."""
    import io
    import tarfile
    paths = write_synthetic_dataset(tmp_path, videos=0, images=9, samples_per_shard=3, seed=4)
    everything = {s.key for p in paths for s in shard_io.read_shard(p, with_media=False)}
    with tarfile.open(paths[0]) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    first_key = members[0][0].name.split(".", 1)[0]
    second_key = next(m.name.split(".", 1)[0] for m, _ in members if not m.name.startswith(first_key))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m, data in members:
            if m.name.startswith(first_key) and ".traj." in m.name:
                continue                                            # no traj.json
            if m.name == f"{second_key}.json":
                data = b"{not json"
            m.size = len(data)
            tf.addfile(m, io.BytesIO(data))
    paths[0].write_bytes(buf.getvalue())
    paths[2].write_bytes(paths[2].read_bytes()[:3000])              # cut inside a member: the tar raises there
    with pytest.raises(Exception, match="unexpected end of data"):
        list(shard_io.group_members(shard_io.iter_tar_members(paths[2])))
    got = {k for b in ShardDataset(tmp_path, cfg(batch_size=1, image_batch_size=1)).iter_batches(0, 1)
           for k in b.get("keys", [])}
    lost = everything - got
    assert first_key in lost and second_key in lost
    cut_keys = {s.key for s in shard_io.read_shard(paths[1], with_media=False)}     # an intact shard
    assert cut_keys <= got and len(got) >= 9 - 2 - 3      # the cut shard costs at most its own three
    said = caplog.text
    assert "skipping sample " + first_key in said and "skipping sample " + second_key in said
    assert "skipping the rest of shard" in said


def test_more_consumers_than_samples_each_gets_one(tmp_path):
    """A one-sample dataset read by two loader workers: the second repeats it instead of ending the run."""
    write_synthetic_dataset(tmp_path, videos=0, images=1, samples_per_shard=1, seed=5)
    ds = ShardDataset(tmp_path, cfg(batch_size=1, image_batch_size=1, epochs=2))
    assert [b["keys"] for b in ds.iter_batches(1, 2)] == [b["keys"] for b in ds.iter_batches(0, 1)]


def test_a_good_sample_waiting_in_a_batch_across_epochs_is_not_a_hopeless_pass(tmp_path):
    """One broken image (batches of one) and one good video (batches of two: it fills every second pass):
    the passes between the video's batches decode nothing, yet the data is not hopeless."""
    import io
    import tarfile
    paths = write_synthetic_dataset(tmp_path, videos=1, images=1, samples_per_shard=2, seed=8)
    with tarfile.open(paths[0]) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(b"\x00" * len(data) if m.name.endswith(".png") else data))
    paths[0].write_bytes(buf.getvalue())
    stream = ShardDataset(tmp_path, cfg(batch_size=2, image_batch_size=1, epochs=None)).iter_batches(0, 1)
    items = [next(stream) for _ in range(8)]
    assert sum("frames" in b for b in items) >= 3 and all(set(b) == {"skipped"} for b in items if "frames" not in b)


def test_mixture_weights_are_shares_of_samples_when_manifests_say_how_many(tmp_path):
    """Dataset a holds 3 samples a shard, b 1 (as a filter leaves it); weights 1 : 1 give equal samples."""
    import yaml
    from dataengine.format import manifest
    from trajtok.data import read_mixture
    a = write_synthetic_dataset(tmp_path / "a", videos=0, images=12, samples_per_shard=3, seed=2)
    b = write_synthetic_dataset(tmp_path / "b", videos=0, images=4, samples_per_shard=1, seed=3)
    for d, paths in (("a", a), ("b", b)):
        rows = [{"key": s.key, "status": "ok", "shard": p.name} for p in paths
                for s in shard_io.read_shard(p, with_media=False)]
        manifest.write_part(tmp_path / d, 0, rows)
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(yaml.safe_dump({"datasets": [{"path": str(tmp_path / "a"), "weight": 1},
                                                   {"path": str(tmp_path / "b"), "weight": 1}]}))
    assert [p.samples_per_shard for p in read_mixture(recipe)] == [3.0, 1.0]
    order = ShardDataset(recipe, cfg()).epoch_shards(0)
    samples_a = 3 * sum(p in a for p in order)
    samples_b = sum(p in b for p in order)
    assert samples_a == samples_b == 6


def test_a_storage_error_ends_the_stream_loudly(dataset, monkeypatch):
    """Only tar damage costs a shard quietly; a storage service failing (an OSError) is the run's to report,
    so --resume continues where it stopped instead of training on with shards silently missing."""
    from trajtok import data as loader_module

    def failing(path):
        raise ConnectionResetError("connection reset by peer")
        yield  # pragma: no cover

    monkeypatch.setattr(loader_module.shard_io, "iter_tar_members", failing)
    with pytest.raises(ConnectionResetError):
        next(ShardDataset(dataset, cfg(epochs=None)).iter_batches(0, 1))
