"""TrajVLM connector: a tiny local transformers LM, answer-only loss, generation, token budget."""
import pytest
import torch

from trajtok.models.segmenter import Segmenter
from trajtok.models.video import TransformerConfig, ViT3DVideo
from trajtok.models.vlm import MAX_TOKENS_PER_CLIP, TrajVLM, VLMConfig, load_lm, window_grid, window_masks, write_tiny_lm
from fixtures.trajtok_toy import toy_preset

torch.set_num_threads(1)
WORDS = "which way do the objects move ? left right up down how many".split()


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return write_tiny_lm(tmp_path_factory.mktemp("lm"), WORDS, hidden=32, layers=1, heads=2)


def make_vlm(lm_dir, connector="trajectory", k=2, clip_frames=4):
    lm, tok = load_lm(lm_dir)
    P = toy_preset(image_size=32, frames=4)
    torch.manual_seed(0)
    seg = Segmenter(P.model)
    backbone = ViT3DVideo(TransformerConfig(width=32, depth=1, heads=2, tubelet=(2, 8, 8)), 32)
    cfg = VLMConfig(connector=connector, clip_frames=clip_frames, k=k, dim=32, heads=2, image_size=32)
    return TrajVLM(lm, tok, backbone, seg, cfg, feature_dim=32)


def test_tokenizer_and_lm_load_back_from_a_local_directory(lm_dir):
    lm, tok = load_lm(lm_dir)
    ids = tok("which way do the objects move ?", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and tok.decode(ids) == "which way do the objects move ?"
    assert lm.config.hidden_size == 32
    with pytest.raises(FileNotFoundError):
        load_lm(lm_dir / "missing")


@pytest.mark.parametrize("connector", ["trajectory", "patch"])
def test_answer_only_loss_reaches_the_connector_not_the_frozen_towers(lm_dir, connector):
    vlm = make_vlm(lm_dir, connector)
    videos = [torch.rand(6, 3, 40, 48), torch.rand(4, 3, 32, 32)]   # 6 frames -> two 4-frame clips
    samples = [["which way do", v, "the objects move ?"] for v in videos]
    out = vlm(samples, ["left", "up down"])
    labels = out["labels"]
    answer_ids = {vlm.tokenizer.convert_tokens_to_ids(w) for w in ("left", "up", "down")} | {vlm.tokenizer.eos_token_id}
    kept = labels[labels != -100].tolist()
    assert sorted(kept) == sorted([vlm.tokenizer.convert_tokens_to_ids("left"), vlm.tokenizer.eos_token_id,
                                   vlm.tokenizer.convert_tokens_to_ids("up"), vlm.tokenizer.convert_tokens_to_ids("down"),
                                   vlm.tokenizer.eos_token_id])
    assert set(kept) <= answer_ids
    out["loss"].backward()
    grads = [p.grad for p in vlm.connector.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in vlm.lm.parameters())          # frozen LM (LLaVA stage 1)
    assert all(p.grad is None for p in vlm.segmenter.parameters())
    assert all(p.grad is None for p in vlm.backbone.parameters())


def test_generate_from_interleaved_text_and_video(lm_dir):
    vlm = make_vlm(lm_dir)
    samples = [["which way", torch.rand(4, 3, 32, 32), "do the objects move ?"], ["how many", torch.rand(8, 3, 32, 32)]]
    answers = vlm.generate(samples, max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert all(w in WORDS for a in answers for w in a.split())


@pytest.mark.parametrize("connector", ["trajectory", "patch"])
def test_visual_tokens_per_clip_within_budget(lm_dir, connector):
    vlm = make_vlm(lm_dir, connector, k=2)
    assert vlm.tokens_per_clip == 8 * 2 <= MAX_TOKENS_PER_CLIP
    tokens = vlm.video_embeds(torch.rand(12, 3, 32, 32))               # 3 clips of 4 frames
    assert tokens.shape[1] == vlm.lm.config.hidden_size
    if connector == "patch":
        assert tokens.shape[0] == 3 * vlm.tokens_per_clip
    else:   # empty trajectories dropped
        assert 3 <= tokens.shape[0] <= 3 * vlm.tokens_per_clip
    with pytest.raises(ValueError, match="at most 128"):
        make_vlm(lm_dir, connector, k=32)   # 8 trajectories x 32 sub-tokens


def test_patch_windows_tile_the_grid():
    masks, ids = window_masks(128, (8, 14, 14))
    assert masks.shape == (128, 8, 14, 14) and torch.equal(masks.argmax(0), ids)
    assert set(ids.unique().tolist()) == set(range(128))              # every window owns patches
    assert masks.sum(0).eq(1).all()
    assert window_grid(32, (8, 8, 8)) == (2, 4, 4)
    with pytest.raises(ValueError):
        window_grid(7, (2, 2, 2))
