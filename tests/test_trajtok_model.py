"""Segmenter, trajectory encoder and tokenizer: shapes, gradient paths, inference helper."""
import numpy as np
import pytest
import timm
import torch

from trajtok.models import Segmenter, Tokenizer, build_segmenter, segment
from trajtok.models.layers import apply_rope, rope_angles
from trajtok.models.segmenter import compact_ids
from fixtures.trajtok_toy import toy_preset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def toy():
    return toy_preset()


@pytest.fixture(scope="module")
def model(toy):
    torch.manual_seed(0)
    return Segmenter(toy.model).eval()


def test_forward_shapes(model, toy):
    video = torch.rand(2, 3, 3, 32, 32)
    out = model(video)
    K, D = toy.model.num_queries, toy.model.dim
    assert out["logits"].shape == (2, K, 3, 8, 8)
    assert out["queries"].shape == (2, K, D)
    assert out["features"].shape == (2, 3, D, 8, 8)
    with pytest.raises(ValueError):
        model(torch.rand(3, 3, 32, 32))


def test_perceiver_reads_detached_features(toy):
    torch.manual_seed(0)
    m = Segmenter(toy.model)
    out = m(torch.rand(1, 2, 3, 32, 32))
    out["queries"].sum().backward()            # the query path alone ...
    assert all(p.grad is None or not p.grad.any() for p in m.backbone.parameters())
    assert m.queries.grad is not None and m.queries.grad.any()
    m.zero_grad(set_to_none=True)
    out = m(torch.rand(1, 2, 3, 32, 32))
    out["logits"].softmax(1)[:, 0].sum().backward()   # ... while the masks train the encoder
    assert any(p.grad is not None and p.grad.any() for p in m.backbone.parameters())


def test_rope_is_relative():
    cos, sin = rope_angles(torch.arange(64), 16, 10000.0)
    q, k = torch.randn(16), torch.randn(16)
    rq = lambda m: apply_rope(q[None], cos[m:m + 1], sin[m:m + 1])[0]  # noqa: E731
    rk = lambda n: apply_rope(k[None], cos[n:n + 1], sin[n:n + 1])[0]  # noqa: E731
    assert torch.allclose(rq(5) @ rk(3), rq(40) @ rk(38), atol=1e-4)
    assert not torch.allclose(rq(5) @ rk(3), rq(5) @ rk(30), atol=1e-4)


def test_temperature_learnable_or_fixed(toy):
    cfg = toy.model
    assert any(n == "log_scale" for n, _ in Segmenter(cfg).named_parameters())
    fixed = Segmenter(type(cfg)(**{**cfg.to_dict(), "learnable_temperature": False}))
    assert not any(n == "log_scale" for n, _ in fixed.named_parameters())
    assert torch.isclose(fixed.scale(), torch.tensor(1 / cfg.temperature))


def test_compact_ids_drops_empty_queries():
    index = torch.tensor([[7, 7, 2], [2, 30, 7]])
    ids, n = compact_ids(index, offset=10)
    assert n == 3 and ids.tolist() == [[12, 12, 11], [11, 13, 12]]   # 2 -> 11, 7 -> 12, 30 -> 13


def test_segment_video_in_clips(model, toy):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (10, 24, 40, 3), dtype=np.uint8)   # 10 frames, clips of 4
    labels = segment(model, video)
    assert labels.shape == (10, 24, 40) and labels.dtype == np.int32
    assert labels.min() >= 1
    clips = [labels[0:4], labels[4:8], labels[8:10]]
    ids = [set(np.unique(c).tolist()) for c in clips]
    # Ids start at 1, are dense, and no id is shared between clips.
    assert sorted(set().union(*ids)) == list(range(1, labels.max() + 1))
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    assert all(len(i) <= toy.model.num_queries for i in ids)
    # Float input in [0, 1] gives the same answer as uint8.
    assert np.array_equal(segment(model, video.astype(np.float32) / 255.0), labels)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        segment(model, video.astype(np.float32))
    assert model.training is False


def test_tokenizer_tokens(toy):
    torch.manual_seed(0)
    tok = Tokenizer(toy.model, toy.encoder)
    out = tok(torch.rand(2, 4, 3, 32, 32))
    assert out["tokens"].shape == (2, toy.model.num_queries * 4, toy.encoder.out_dim)
    assert out["valid"].dtype == torch.bool and out["valid"].any(1).all()
    out["tokens"].sum().backward()              # pooled with soft masks: differentiable end to end
    assert tok.segmenter.queries.grad is not None


def test_backbone_init_from_local_checkpoint(tmp_path, toy):
    from safetensors.torch import save_file
    kwargs = toy.model.backbone_kwargs
    clf = timm.create_model("convnext_atto", pretrained=False, **kwargs)
    path = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, str(path))
    m = build_segmenter(toy.model, backbone_checkpoint=path)
    assert torch.equal(m.backbone.state_dict()["stem_0.weight"], clf.state_dict()["stem.0.weight"])
    torch.save(clf.state_dict(), tmp_path / "convnext.pt")
    build_segmenter(toy.model, backbone_checkpoint=tmp_path / "convnext.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        build_segmenter(toy.model, backbone_checkpoint=tmp_path / "missing.safetensors")
    save_file({"stem.0.weight": clf.state_dict()["stem.0.weight"]}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        build_segmenter(toy.model, backbone_checkpoint=tmp_path / "partial.safetensors")
