"""TrajVLM: trajectory tokens as the visual input of a causal language model (LLaVA style).

    video ──16-frame clips──► frozen backbone features + frozen segmenter masks (per clip)
          ──connector──► <= 128 visual tokens per clip in the LM's embedding space
    [text, video, text, ...] ──embeddings, interleaved──► causal LM ──► answer

Connectors (the same token budget, ``num_queries x K`` per clip):
* ``trajectory``: the masked Perceiver (``TrajectoryEncoder``) seeded by the segmenter's
  trajectories, then an MLP projector. Tokens of empty trajectories are dropped.
* ``patch``: attention pooling over fixed space-time windows of patches, as many windows as the
  budget; built from the same encoder with the window grid in place of the trajectories, so the
  two differ only in what a token covers.

The LM comes from a local transformers directory (``local_files_only``: nothing is downloaded).
Training loss is on answer tokens only (labels -100 on prompt, video and padding).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import nn

from dataengine.errors import CheckpointNotFound, ConfigError
from .adapter import frozen_clip_inputs
from .trajectory_encoder import TrajectoryEncoder, TrajectoryEncoderConfig

CONNECTORS = ("trajectory", "patch")
MAX_TOKENS_PER_CLIP = 128
# A video segment: raw frames [T, 3, H, W] in [0, 1], or its precomputed clip inputs
# ({"features": [n, T', h, w, C], "fractions": [n, N, T', h, w], "majority": [n, T', h, w]}).
Segment = Union[str, torch.Tensor, dict]


@dataclass
class VLMConfig:
    connector: str = "trajectory"     # trajectory | patch
    clip_frames: int = 16             # long videos are cut into clips of this many frames
    k: int = 1                        # sub-tokens per trajectory
    dim: int = 256                    # connector (Perceiver) width
    depth: int = 1
    heads: int = 4
    image_size: int = 128             # backbone input size
    freeze_lm: bool = True            # LLaVA stage 1: only the connector trains

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def window_grid(budget: int, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """Windows ``(a, b, c)`` per (time, height, width) with ``a * b * c == budget`` that fit ``grid``,
    the most even split of the cells (cells as cube-like as the grid allows)."""
    best, best_score = None, math.inf
    for a in range(1, min(budget, grid[0]) + 1):
        for b in range(1, min(budget, grid[1]) + 1):
            if budget % (a * b) or budget // (a * b) > grid[2]:
                continue
            c = budget // (a * b)
            sizes = [grid[0] / a, grid[1] / b, grid[2] / c]
            score = max(sizes) / min(sizes)
            if score < best_score:
                best, best_score = (a, b, c), score
    if best is None:
        raise ConfigError(f"a budget of {budget} windows does not tile a {grid} patch grid")
    return best


def window_masks(budget: int, grid: tuple[int, int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot window masks ``[budget, T', h, w]`` and the window id per patch ``[T', h, w]``."""
    a, b, c = window_grid(budget, grid)
    t, y, x = (torch.arange(n, device=device) * m // n for n, m in zip(grid, (a, b, c)))
    ids = (t[:, None, None] * b + y[None, :, None]) * c + x[None, None, :]
    return F.one_hot(ids, budget).permute(3, 0, 1, 2).float(), ids


class Connector(nn.Module):
    """Clip inputs -> visual tokens ``[B, budget, lm_dim]`` and ``valid`` ``[B, budget]``."""

    def __init__(self, kind: str, in_dim: int, lm_dim: int, n_trajectories: int, cfg: VLMConfig):
        super().__init__()
        if kind not in CONNECTORS:
            raise ConfigError(f"unknown connector {kind!r}; choose from {', '.join(CONNECTORS)}")
        self.kind, self.k = kind, cfg.k if kind == "trajectory" else 1
        self.budget = n_trajectories * cfg.k
        if self.budget > MAX_TOKENS_PER_CLIP:
            raise ConfigError(f"{n_trajectories} trajectories x K={cfg.k} = {self.budget} tokens per clip; "
                              f"the VLM takes at most {MAX_TOKENS_PER_CLIP}")
        self.encoder = TrajectoryEncoder(TrajectoryEncoderConfig(in_dim=in_dim, dim=cfg.dim, out_dim=cfg.dim,
                                                                 depth=cfg.depth, heads=cfg.heads, sub_tokens=[self.k]))
        self.projector = nn.Sequential(nn.Linear(cfg.dim, lm_dim), nn.GELU(), nn.Linear(lm_dim, lm_dim))

    def forward(self, features: torch.Tensor, fractions: torch.Tensor, majority: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        B = features.shape[0]
        if self.kind == "patch":
            masks, ids = window_masks(self.budget, tuple(features.shape[1:4]), features.device)
            fractions, majority = masks.expand(B, -1, -1, -1, -1), ids.expand(B, -1, -1, -1)
        enc = self.encoder(features.permute(0, 1, 4, 2, 3).float(), fractions.float(), assign=majority.long(), k=self.k)
        return self.projector(enc["tokens"]), enc["valid"]


def load_lm(path: str | Path):
    """A causal LM and its tokenizer from a local transformers directory (never downloads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointNotFound(f"no transformers model directory at {path} (config.json missing)")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    lm = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return lm, tok


class TrajVLM(nn.Module):
    def __init__(self, lm: nn.Module, tokenizer: Any, backbone: nn.Module, segmenter: nn.Module, cfg: VLMConfig,
                 feature_dim: int):
        super().__init__()
        self.cfg, self.lm, self.tokenizer = cfg, lm, tokenizer
        self.backbone, self.segmenter = backbone.eval(), segmenter.eval()
        for p in itertools.chain(backbone.parameters(), segmenter.parameters()):
            p.requires_grad_(False)
        if cfg.freeze_lm:
            for p in lm.parameters():
                p.requires_grad_(False)
        self.connector = Connector(cfg.connector, feature_dim, lm.config.hidden_size, segmenter.cfg.num_queries, cfg)

    @property
    def tokens_per_clip(self) -> int:
        return self.connector.budget

    def train(self, mode: bool = True) -> "TrajVLM":   # the frozen towers stay in eval mode
        super().train(mode)
        self.backbone.eval()
        self.segmenter.eval()
        return self

    def clip_inputs(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frames ``[T, 3, H, W]`` -> frozen inputs of its ``clip_frames``-frame clips (a short tail is
        padded by repeating its last frame)."""
        if video.dim() != 4 or video.shape[1] != 3:
            raise ValueError(f"expected a video [T, 3, H, W], got {tuple(video.shape)}")
        n = self.cfg.clip_frames
        pad = -video.shape[0] % n
        if pad:
            video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
        return frozen_clip_inputs(self.backbone, self.segmenter, video.view(-1, n, *video.shape[1:]),
                                  self.cfg.image_size)

    def video_embeds(self, segment: torch.Tensor | dict) -> torch.Tensor:
        inputs = self.clip_inputs(segment) if isinstance(segment, torch.Tensor) else segment
        tokens, valid = self.connector(inputs["features"], inputs["fractions"], inputs["majority"])
        return tokens[valid]                                   # clips in order, empty trajectories dropped

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _sequence(self, segments: list[Segment], answer: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        embed = self.lm.get_input_embeddings()
        dev = embed.weight.device
        parts, labels = [], []
        for seg in segments:
            if isinstance(seg, str):
                ids = torch.tensor(self._text_ids(seg), dtype=torch.long, device=dev)
                parts.append(embed(ids))
            else:
                parts.append(self.video_embeds(seg).to(embed.weight.dtype))
            labels.append(torch.full((parts[-1].shape[0],), -100, dtype=torch.long, device=dev))
        if answer is not None:
            ids = torch.tensor(self._text_ids(answer) + [self.tokenizer.eos_token_id], dtype=torch.long, device=dev)
            parts.append(embed(ids))
            labels.append(ids)
        return torch.cat(parts), torch.cat(labels)

    def _batch(self, samples: list[list[Segment]], answers: list[str] | None, left: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seqs = [self._sequence(s, a) for s, a in zip(samples, answers or [None] * len(samples))]
        L = max(e.shape[0] for e, _ in seqs)
        embeds, mask, labels = [], [], []
        for e, lab in seqs:
            pad = L - e.shape[0]
            z = e.new_zeros(pad, e.shape[1])
            embeds.append(torch.cat([z, e] if left else [e, z]))
            m = torch.cat([torch.zeros(pad), torch.ones(e.shape[0])] if left else [torch.ones(e.shape[0]), torch.zeros(pad)])
            mask.append(m.to(e.device, torch.long))
            lp = lab.new_full((pad,), -100)
            labels.append(torch.cat([lp, lab] if left else [lab, lp]))
        return torch.stack(embeds), torch.stack(mask), torch.stack(labels)

    def forward(self, samples: list[list[Segment]], answers: list[str]) -> dict[str, torch.Tensor]:
        """Interleaved prompts and their answers -> ``loss`` (answer tokens only) and ``labels``."""
        embeds, mask, labels = self._batch(samples, answers, left=False)
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        return {"loss": out.loss, "logits": out.logits, "labels": labels}

    @torch.no_grad()
    def generate(self, samples: list[list[Segment]], max_new_tokens: int = 8) -> list[str]:
        """Greedy answers to interleaved text-and-video prompts."""
        embeds, mask, _ = self._batch(samples, None, left=True)
        out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
                               eos_token_id=self.tokenizer.eos_token_id)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def write_tiny_lm(directory: str | Path, words: list[str], hidden: int = 64, layers: int = 2, heads: int = 4,
                  seed: int = 0) -> Path:
    """A randomly initialised Llama-architecture causal LM and a word-level tokenizer over ``words``,
    saved as a transformers directory (tests and CPU benches; built offline, nothing downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    directory = Path(directory)
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(specials + sorted(set(words))))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)   # joins word tokens with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>", clean_up_tokenization_spaces=False)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=1024, pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"],
                      eos_token_id=vocab["</s>"], tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
