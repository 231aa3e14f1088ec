"""Trajectory encoder: masked refinement, K sub-tokens, Fourier sub-queries, gradient into the masks."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from trajtok.losses import clip_loss
from trajtok.models import Tokenizer, TrajectoryEncoder, TrajectoryEncoderConfig
from trajtok.models import trajectory_encoder
from trajtok.models.trajectory_encoder import fourier_queries, segment_attention
from fixtures.trajtok_toy import toy_preset

torch.set_num_threads(1)


def _encoder(**kw) -> TrajectoryEncoder:
    torch.manual_seed(0)
    return TrajectoryEncoder(TrajectoryEncoderConfig(in_dim=16, dim=32, out_dim=24, depth=2, heads=4, **kw)).eval()


def _scene(N=5, T=2, h=6, w=6, C=16):
    """Features, soft masks whose argmax is a known label map (trajectory 4 owns no pixel)."""
    torch.manual_seed(1)
    assign = torch.randint(0, N - 1, (1, T, h, w))
    logits = F.one_hot(assign, N).permute(0, 4, 1, 2, 3).float() * 3 + torch.randn(1, N, T, h, w) * 0.1
    return torch.randn(1, T, C, h, w), logits.softmax(1), assign


@pytest.fixture(params=["dense", "segment"])
def attention_path(request, monkeypatch):
    """Both implementations of the masked cross-attention (dense masked matmul, per-pixel segments)."""
    monkeypatch.setattr(trajectory_encoder, "DENSE_MAX_TOKENS", 10**9 if request.param == "dense" else 0)
    return request.param


def test_token_sees_only_its_trajectory(attention_path):
    enc = _encoder()
    feats, masks, assign = _scene()
    outside = (assign != 0).unsqueeze(2).expand_as(feats)          # pixels not of trajectory 0
    changed = feats.clone()
    changed[outside] = torch.randn(int(outside.sum()))
    with torch.no_grad():
        a = enc(feats, masks, k=2)["tokens"].view(1, 5, 2, -1)
        b = enc(changed, masks, k=2)["tokens"].view(1, 5, 2, -1)
        assert torch.allclose(a[:, 0], b[:, 0], atol=1e-5)         # trajectory 0's tokens unchanged
        assert not torch.allclose(a[:, 1], b[:, 1], atol=1e-3)     # the others did see the change
        # The unmasked Perceiver reads every pixel: the same change moves trajectory 0's tokens.
        c = enc(feats, masks, k=2, masked=False)["tokens"].view(1, 5, 2, -1)
        d = enc(changed, masks, k=2, masked=False)["tokens"].view(1, 5, 2, -1)
        assert not torch.allclose(c[:, 0], d[:, 0], atol=1e-3)


def test_segment_attention_equals_masked_dense_attention():
    torch.manual_seed(0)
    S, K, H, d, P = 4, 2, 2, 8, 30
    q, k, v = torch.randn(S, K, H, d), torch.randn(P, H, d), torch.randn(P, H, d)
    seg = torch.randint(0, S - 1, (P,))                            # segment 3 is empty
    out = segment_attention(q, k, v, seg, S)
    mask = (seg[None, :] == torch.arange(S)[:, None])              # [S, P]
    dense = F.scaled_dot_product_attention(q.permute(2, 0, 1, 3).reshape(H, S * K, d), k.transpose(0, 1),
                                           v.transpose(0, 1),
                                           attn_mask=mask.repeat_interleave(K, 0)[None].expand(H, -1, -1))
    dense = dense.view(H, S, K, d).permute(1, 2, 0, 3)
    assert torch.allclose(out[:3], dense[:3], atol=1e-5)
    assert torch.equal(out[3], torch.zeros_like(out[3]))           # empty segment: zeros, not NaN


@pytest.mark.parametrize("k", [1, 2, 4])
def test_k_tokens_per_valid_trajectory(k, attention_path):
    enc = _encoder()
    feats, masks, assign = _scene()
    out = enc(feats, masks, k=k)
    assert out["tokens"].shape == (1, 5 * k, 24)
    assert int(out["valid"].sum()) == k * len(torch.unique(assign))
    assert out["valid"].view(5, k)[4].logical_not().all()          # trajectory 4 owns no pixel
    assert torch.isfinite(out["tokens"]).all()
    with pytest.raises(ValueError, match="not trained"):
        enc(feats, masks, k=3)


def test_empty_trajectories_give_no_nan_and_gradients_stay_finite(attention_path):
    enc = _encoder()
    enc.train()
    feats, masks, _ = _scene()
    feats.requires_grad_(True)
    assign = torch.full((1, 2, 6, 6), 2)                            # one trajectory owns everything
    assign[0, 0, 0, 0] = -1                                         # and one pixel nobody's
    out = enc(feats, masks, assign=assign, k=4)
    assert torch.isfinite(out["tokens"]).all() and int(out["valid"].sum()) == 4
    out["tokens"].sum().backward()
    assert torch.isfinite(feats.grad).all()


def test_fourier_subqueries_pairwise_non_positive():
    for k in (2, 3, 4, 8):
        e = F.normalize(fourier_queries(k, 64), dim=-1)
        cos = e @ e.T
        for i, j in itertools.combinations(range(k), 2):
            if k in (2, 4):
                assert cos[i, j] <= 1e-5
        assert torch.allclose(cos.diagonal(), torch.ones(k))
    enc = _encoder()
    for k in enc.cfg.sub_tokens:                                    # the encoder's own initial queries
        e = F.normalize(enc.sub_queries[str(k)].detach(), dim=-1)
        off = (e @ e.T)[~torch.eye(k, dtype=torch.bool)]
        assert (off <= 1e-5).all()


def test_features_of_any_grid_are_resized_to_the_masks():
    enc = _encoder()
    _, masks, _ = _scene()
    feats = torch.randn(1, 1, 16, 3, 3)                             # one tubelet, coarser grid
    assert enc(feats, masks, k=1)["tokens"].shape == (1, 5, 24)


def test_clip_loss_on_tokens_reaches_mask_logits():
    toy = toy_preset()
    torch.manual_seed(0)
    tok = Tokenizer(toy.model, toy.encoder)
    seg = tok.segmenter
    video = torch.rand(3, 2, 3, 32, 32)
    out = seg(video)
    logits = out["logits"]
    logits.retain_grad()
    enc = tok.encoder(out["features"], logits.softmax(1), k=2)
    valid = enc["valid"].float().unsqueeze(-1)
    video_emb = (enc["tokens"] * valid).sum(1) / valid.sum(1)
    text_emb = torch.randn(3, video_emb.shape[1])
    loss = clip_loss(F.normalize(video_emb, dim=-1), F.normalize(text_emb, dim=-1), torch.tensor(10.0))
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # The segmenter's Perceiver reads detached features, so its queries learn only through the masks.
    assert seg.queries.grad is not None and seg.queries.grad.abs().sum() > 0
