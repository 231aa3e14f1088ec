"""TrajViT2 / ViT3D video-text models: towers, CLIP loss, training command, checkpoints, retrieval."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import cli
from dataengine.format import shards
from dataengine.tools.synth import make_corpus
from trajtok.checkpoint import load_video_text
from trajtok.losses import clip_loss
from trajtok.models.text import TextConfig, build_word_vocab
from trajtok.models.video_text import VideoTextModel
from trajtok.presets import get_video_text_preset
from trajtok.retrieval import _chance, chance_hit, retrieval_metrics
from trajtok.train.trajvit2 import cosine_lr, shuffled_captions, train_video_text

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    make_corpus(out, videos=6, images=2, seed=3, n_frames=8, width=64, height=48)
    return out / "gt"


def tiny_preset(video_model="trajvit2"):
    P = get_video_text_preset("cpu")
    m = P.model
    m.video_model = video_model
    m.segmenter.image_size, m.segmenter.frames, m.segmenter.num_queries = 32, 4, 8
    m.segmenter.backbone_kwargs = {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)}
    m.segmenter.dim = m.encoder.in_dim = m.encoder.dim = 32
    m.encoder.out_dim = m.transformer.width = 48
    m.transformer.depth, m.text.width, m.text.depth = 1, 32, 1
    P.data.batch_size, P.data.image_batch_size, P.data.shuffle_buffer = 4, 2, 8
    m.transformer.tubelet = (2, 16, 16)
    return P.sync()


def _model(video_model="trajvit2"):
    P = tiny_preset(video_model)
    P.model.text.vocab = build_word_vocab(["a red square moves left", "a blue disc"])
    torch.manual_seed(0)
    return VideoTextModel(P.model)


@pytest.mark.parametrize("video_model", ["trajvit2", "vit3d"])
def test_forward_shapes_and_unit_embeddings(video_model):
    model = _model(video_model)
    out = model(torch.rand(2, 4, 3, 32, 32), ["a red square moves left", "an unseen word"], k=2)
    assert out["video"].shape == out["text"].shape == (2, 256)
    assert torch.allclose(out["video"].norm(dim=-1), torch.ones(2), atol=1e-5)
    if video_model == "trajvit2":
        assert out["logits"].shape == (2, 8, 4, 8, 8)
        assert (out["tokens"] <= 8 * 2).all()                       # at most N x K tokens
    else:
        assert int(out["tokens"][0]) == 2 * 2 * 2                   # (4/2) x (32/16)^2 tubelets
    image = model.encode_video(torch.rand(1, 1, 3, 32, 32))["video"]  # images run as T = 1 clips
    assert torch.isfinite(image).all()


def test_clip_loss_joint_positives_and_temperature():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(4, 8), dim=-1)
    t = v.clone()
    t[1] = v[0]                                                     # clips 0 and 1 share a caption
    scale = torch.tensor(20.0)
    # Counted as separate pairs, the two identical captions would each lose half their mass.
    assert clip_loss(v, t, scale, torch.tensor([0, 0, 1, 2])) < clip_loss(v, t, scale)
    assert clip_loss(v, v, scale) < clip_loss(v, v.roll(1, 0), scale)


def test_hf_text_model_from_local_directory(tmp_path, corpus):
    from transformers import BertConfig, BertModel, BertTokenizerFast
    words = sorted({w for s in ["textured objects moving over a panning background ellipses rectangles polygons "
                                "and then hard cut to new shapes on one two three four five six seven eight "
                                "nine ten eleven twelve differently coloured"] for w in s.split()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "(", ")", ",", *words]) + "\n")
    bert_dir = tmp_path / "bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab.read_text().split()), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(bert_dir)
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(bert_dir)
    run = tmp_path / "run"
    train_video_text(corpus, run, preset=tiny_preset(), text_model=bert_dir, max_steps=2, seed=0)
    model = load_video_text(run / "last.safetensors")
    assert model.cfg.text.kind == "hf" and type(model.text.model).__name__ == "BertModel"
    texts = ["six textured objects (ellipses) moving over a panning background"]
    a = model.encode_text(texts)
    b = load_video_text(run / "last.safetensors").encode_text(texts)
    assert torch.allclose(a, b) and a.shape == (1, 256)


def test_train_resume_and_eval_commands(tmp_path, corpus):
    runner = CliRunner()
    P = tiny_preset()
    run = tmp_path / "run"
    summary = train_video_text(corpus, run, preset=P, max_steps=4, stop_after=2, seed=1)
    assert summary["step"] == 2
    summary = train_video_text(corpus, run, preset=P, max_steps=4, resume=True, seed=1)
    assert summary["step"] == 4
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and {r["k"] for r in log} <= {1, 2, 4}
    assert all(np.isfinite(r["loss"]) and r["seg"] > 0 for r in log)
    with pytest.raises(FileExistsError):
        train_video_text(corpus, run, preset=P, max_steps=4)
    out = tmp_path / "ret.json"
    res = runner.invoke(cli.trajtok_app, ["eval-retrieval", "--checkpoint", str(run / "last.safetensors"),
                                          "--data", str(corpus), "--json", str(out), "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    for way in ("t2v", "v2t"):
        assert set(result[way]) == {"R@1", "R@5", "R@10", "MedR", "chance"}
        assert set(result[way]["chance"]) == {"R@1", "R@5", "R@10", "MedR"}
    assert result["samples"] == 8                                   # 6 videos + 2 images, each once
    # The command itself, on the ViT3D baseline (cpu preset, two steps).
    res = runner.invoke(cli.trajtok_app, ["train-trajvit2", "--data", str(corpus), "--output", str(tmp_path / "v3"),
                                          "--preset", "cpu", "--video-model", "vit3d", "--max-steps", "2",
                                          "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    assert load_video_text(tmp_path / "v3" / "last.safetensors").cfg.video_model == "vit3d"
    res = runner.invoke(cli.trajtok_app, ["train-trajvit2", "--data", str(corpus), "--output", str(tmp_path / "x"),
                                          "--video-model", "nope"])
    assert res.exit_code == 2 and "unknown video model" in res.output


def test_retrieval_metrics_with_joint_positives():
    captions = np.array([0, 0, 1, 2])                               # clips 0 and 1 share caption 0
    video = torch.tensor([[1.0, 0, 0], [0.9, 0, 0.1], [0, 1, 0], [0, 0, 1]])
    text = torch.eye(3)
    r = retrieval_metrics(video, text, captions)
    assert r["t2v"]["R@1"] == 1.0 and r["v2t"]["R@1"] == 1.0
    assert r["distinct_captions"] == 3 and r["samples"] == 4
    r = retrieval_metrics(video, text[[1, 2, 0]], captions)         # every caption misplaced
    assert r["t2v"]["R@1"] == 0.0 and r["v2t"]["R@1"] == 0.0


def test_chance_levels_match_random_rankings():
    rng = np.random.default_rng(0)
    n, p, k = 20, 3, 5
    hits = [(rng.permutation(n)[:k] < p).any() for _ in range(20000)]
    assert abs(np.mean(hits) - chance_hit(n, p, k)) < 0.01
    c = _chance(10, [1] * 10)
    # a rank uniform over 1..10: the median of its distribution is 5.5, as np.median takes a model's ranks
    assert c["R@1"] == pytest.approx(0.1) and c["R@5"] == pytest.approx(0.5) and c["MedR"] == 5.5


def test_shuffled_captions_and_schedule():
    caps = [f"caption {i}" for i in range(9)] + ["caption 3"]      # a text may repeat
    sh = shuffled_captions(caps, seed=0)
    assert sorted(sh) == sorted(sh.values()) == sorted(set(caps)) and all(sh[c] != c for c in caps)
    assert cosine_lr(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert cosine_lr(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert cosine_lr(100, 1.0, 10, 100) == pytest.approx(0.0, abs=1e-9)


def test_weight_decay_groups():
    from trajtok.train.trajvit2 import _param_groups
    model = _model()
    decay, plain = (set(map(id, g["params"])) for g in _param_groups(model, 0.01))
    named = dict(model.named_parameters())
    for name in ("video.tokenizer.segmenter.mask_embed.weight", "video_proj.weight", "text.blocks.0.attn.q.weight"):
        assert id(named[name]) in decay, name
    for name in ("text.embed.weight", "text.pos", "video.transformer.cls", "log_scale",
                 "video.tokenizer.segmenter.queries", "video.tokenizer.encoder.sub_queries.2"):
        assert id(named[name]) in plain, name


def test_warm_start_from_a_train_segmenter_checkpoint(tmp_path, corpus):
    from trajtok.checkpoint import load_segmenter
    from trajtok.train import train_segmenter
    seg = tmp_path / "seg"
    train_segmenter(corpus, seg, preset="cpu", max_steps=1, batch_size=2, image_batch_size=2)
    run = tmp_path / "vt"
    train_video_text(corpus, run, preset="cpu", segmenter=seg / "last.safetensors", max_steps=5, stop_after=0,
                     batch_size=4)
    warm = load_segmenter(seg / "last.safetensors").state_dict()
    loaded = load_video_text(run / "last.safetensors").segmenter.state_dict()
    assert warm.keys() == loaded.keys() and all(torch.equal(warm[k], loaded[k]) for k in warm)
    train_segmenter(corpus, tmp_path / "tiny", preset="tiny", max_steps=1, batch_size=2,
                    image_batch_size=2)
    with pytest.raises(ValueError, match="config differs"):
        train_video_text(corpus, tmp_path / "bad", preset="cpu", segmenter=tmp_path / "tiny" / "last.safetensors",
                         max_steps=1)


def test_warm_start_keeps_a_no_object_segmenter(tmp_path, corpus):
    from trajtok.checkpoint import load_segmenter
    from trajtok.train import train_segmenter
    seg = tmp_path / "seg"
    train_segmenter(corpus, seg, preset="cpu", max_steps=1, batch_size=2, image_batch_size=2, no_object=True)
    run = tmp_path / "vt"
    res = train_video_text(corpus, run, preset="cpu", segmenter=seg / "last.safetensors", max_steps=2,
                           batch_size=4)
    assert res["step"] == 2 and all(np.isfinite(res["losses"]))    # the joint loss ran with its channel
    model = load_video_text(run / "last.safetensors")
    assert model.cfg.segmenter.no_object and "no_object_query" in dict(model.segmenter.named_parameters())
    train_video_text(corpus, run, preset="cpu", max_steps=3, batch_size=4, resume=True)   # rebuilt from its config
    assert load_video_text(run / "last.safetensors").cfg.segmenter.no_object


def test_ties_count_against_the_query():
    """A collapsed model (every clip embedded alike) ranks each query last, not first."""
    video = torch.ones(4, 3) / 3 ** 0.5
    r = retrieval_metrics(video, torch.eye(3), np.array([0, 0, 1, 2]))
    assert r["t2v"]["R@1"] == 0.0 and r["v2t"]["R@1"] == 0.0
    assert r["t2v"]["MedR"] > r["t2v"]["chance"]["MedR"]


def test_samples_without_caption_are_left_out_of_a_batch():
    from trajtok.data import captioned
    batch = {"frames": torch.arange(4.0).view(4, 1), "labels": torch.arange(4).view(4, 1), "keys": list("abcd"),
             "captions": ["one", "", "  ", "four"]}
    kept, dropped = captioned(batch)
    assert dropped == 2 and kept["keys"] == ["a", "d"] and kept["captions"] == ["one", "four"]
    assert kept["frames"].flatten().tolist() == [0.0, 3.0] and kept["labels"].flatten().tolist() == [0, 3]
    assert captioned({**batch, "captions": [""] * 4}) == (None, 4)
    assert captioned({**batch, "captions": ["x"] * 4})[0] is not None


def test_each_clip_trains_with_its_own_caption_when_keys_repeat(tmp_path, corpus, monkeypatch):
    """Two datasets of one mixture with the same keys (synth's video_000 ..., img2dataset's numbers):
    the text each clip trains against is the caption its own sample carries."""
    import trajtok.train.trajvit2 as tv
    other = tmp_path / "other"
    make_corpus(other, videos=6, images=2, seed=4, n_frames=8, width=64, height=48)
    own, used = [], []
    real_captioned, real_forward = tv.captioned, VideoTextModel.forward

    def spy_captioned(batch):
        kept, n = real_captioned(batch)
        own.append(list(kept["captions"]))
        return kept, n

    def spy_forward(self, frames, texts, k=None):
        used.append(list(texts))
        return real_forward(self, frames, texts, k=k)

    monkeypatch.setattr(tv, "captioned", spy_captioned)
    monkeypatch.setattr(VideoTextModel, "forward", spy_forward)
    train_video_text([corpus, other / "gt"], tmp_path / "run", preset=tiny_preset(), max_steps=4, seed=0)
    assert own and used == own
    # the two datasets do share keys (so a caption looked up by key would be the other dataset's)
    assert {s.key for s in shards.read_dataset(other / "gt")} & {s.key for s in shards.read_dataset(corpus)}


def test_resume_keeps_the_runs_schedule_and_refuses_another_preset(tmp_path, corpus):
    P = tiny_preset()
    run = tmp_path / "run"
    train_video_text(corpus, run, preset=P, max_steps=6, lr=5e-4, warmup_steps=1, stop_after=3, seed=1)
    train_video_text(corpus, run, preset=tiny_preset(), max_steps=6, resume=True, seed=1)   # no --lr given
    lrs = [json.loads(line)["lr"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([cosine_lr(s, 5e-4, 1, 6) for s in range(6)])
    other = tiny_preset()
    other.name = "paper"
    with pytest.raises(ValueError, match="trained with preset 'cpu'.*--preset cpu"):
        train_video_text(corpus, run, preset=other, max_steps=8, resume=True, seed=1)
    # another video model, or the real captions for a control run: another experiment, refused (both were taken)
    with pytest.raises(ValueError, match="trains trajvit2; resume it without --video-model"):
        train_video_text(corpus, run, preset=tiny_preset(), video_model="vit3d", max_steps=8, resume=True, seed=1)
    with pytest.raises(ValueError, match="is a real-caption run; resume it without --shuffle-captions"):
        train_video_text(corpus, run, preset=tiny_preset(), max_steps=8, resume=True, seed=1, shuffle_captions=True)
    assert json.loads((run / "config.json").read_text())["shuffle_captions"] is False


def test_probe_cache_key_follows_the_backbone_checkpoint(tmp_path, corpus):
    """``trajtok probe --cache`` with ``--backbone vit3d:PATH``: a checkpoint trained further under the
    same path gives another cache key (train and held-out features come from one backbone), and the
    image size is the checkpoint's before any key is made."""
    import dataclasses

    from trajtok.train.probe import PRESETS, backbone_file_signature
    run = tmp_path / "v3"
    train_video_text(corpus, run, preset=tiny_preset("vit3d"), max_steps=2, stop_after=1)
    spec = f"vit3d:{run / 'last.safetensors'}"
    cfg = dataclasses.replace(PRESETS["cpu"], image_size=999)
    before = backbone_file_signature(spec, cfg)
    assert cfg.image_size == 32
    train_video_text(corpus, run, preset=tiny_preset("vit3d"), max_steps=2, resume=True)
    assert backbone_file_signature(spec, cfg) != before
    assert backbone_file_signature("vit3d", cfg) is None


def test_retrieval_reads_each_sample_of_a_mixture_once_and_leaves_out_uncaptioned(tmp_path, corpus):
    import shutil

    import yaml

    from trajtok.retrieval import evaluate_retrieval
    run = tmp_path / "run"
    train_video_text(corpus, run, preset=tiny_preset(), max_steps=2, stop_after=1)
    # a copy of the corpus with every other caption removed
    blank = tmp_path / "blank"
    samples = list(shards.read_dataset(corpus))
    for i, s in enumerate(samples):
        if i % 2:
            s.caption = ""
    shards.write_shard(blank / shards.shard_name("gt", 0), samples)
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(yaml.safe_dump({"datasets": [{"path": str(corpus), "weight": 10},
                                                   {"path": str(blank), "weight": 1}]}))
    r = evaluate_retrieval(run / "last.safetensors", recipe, batch_size=4)
    assert r["samples"] == len(samples) + len(samples) // 2 and r["uncaptioned"] == len(samples) // 2
    shutil.rmtree(blank)
