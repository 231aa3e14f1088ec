"""Text towers for video-text training: a small transformer with an offline word tokenizer,
or any local Hugging Face transformers encoder (``--text-model DIR``; the paper uses BERT-base).

The word tokenizer is a ``tokenizers`` WordLevel model built from the training captions
(lower-cased, split on whitespace and punctuation). Its JSON travels inside the checkpoint,
so a trained model needs no file besides its ``.safetensors``. Nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from dataengine.errors import CheckpointError, CheckpointNotFound, ConfigError, described
from .layers import check_config_keys
from .video import Block

PAD, UNK = "[PAD]", "[UNK]"


@dataclass
class TextConfig:
    kind: str = "word"            # word (built-in transformer) | hf (local transformers encoder)
    width: int = 512
    depth: int = 4
    heads: int = 8
    mlp_ratio: float = 4.0
    context_length: int = 64
    model_dir: str | None = None  # kind=hf: a local directory with config, weights and tokenizer
    vocab: str | None = None      # kind=word: the tokenizers JSON (filled in from the captions)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextConfig":
        check_config_keys(cls, d)
        return cls(**d)


def build_word_vocab(captions: Iterable[str], min_count: int = 1) -> str:
    """A WordLevel tokenizer over the words of ``captions``; returns its JSON."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok.train_from_iterator(list(captions), WordLevelTrainer(special_tokens=[PAD, UNK], min_frequency=min_count))
    return tok.to_str()


class WordTextTower(nn.Module):
    """Token + position embeddings, pre-norm transformer blocks, mean over the caption's tokens."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        if not cfg.vocab:
            raise ValueError("word text tower needs a vocabulary (build_word_vocab over the captions)")
        from tokenizers import Tokenizer
        self.cfg = cfg
        self.tokenizer = Tokenizer.from_str(cfg.vocab)
        self.pad_id = self.tokenizer.token_to_id(PAD)
        self.embed = nn.Embedding(self.tokenizer.get_vocab_size(), cfg.width)
        self.pos = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.width = cfg.width

    def tokenize(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        L = self.cfg.context_length
        ids = [e.ids[:L] or [self.tokenizer.token_to_id(UNK)] for e in self.tokenizer.encode_batch(texts)]
        n = max(len(i) for i in ids)
        out = torch.full((len(ids), n), self.pad_id, dtype=torch.long)
        for row, i in enumerate(ids):
            out[row, :len(i)] = torch.tensor(i)
        return out.to(device), (out != self.pad_id).to(device)

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids, keep = self.tokenize(texts, self.pos.device)
        x = self.embed(ids) + self.pos[:ids.shape[1]]
        for block in self.blocks:
            x = block(x, key_padding=~keep)
        x = self.norm(x)
        w = keep.unsqueeze(-1).to(x.dtype)
        return (x * w).sum(1) / w.sum(1)


class HFTextTower(nn.Module):
    """A local transformers encoder (e.g. BERT); mean of its last hidden states over real tokens."""

    def __init__(self, cfg: TextConfig, pretrained: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        if not cfg.model_dir or not Path(cfg.model_dir).is_dir():
            raise CheckpointNotFound(f"text model directory not found: {cfg.model_dir}")
        self.cfg = cfg
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir, local_files_only=True)
            if pretrained:
                self.model = AutoModel.from_pretrained(cfg.model_dir, local_files_only=True)
            else:   # a checkpoint supplies the weights
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(cfg.model_dir, local_files_only=True))
        except Exception as e:    # a folder that is not a saved transformers model (and tokenizer)
            raise CheckpointError(f"text model {cfg.model_dir} cannot be loaded as a transformers model and "
                                  f"tokenizer: {described(e)}") from None
        self.width = int(self.model.config.hidden_size)

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.context_length,
                             return_tensors="pt").to(device)
        hidden = self.model(**enc).last_hidden_state
        w = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * w).sum(1) / w.sum(1).clamp_min(1)


def build_text_tower(cfg: TextConfig, pretrained: bool = True) -> nn.Module:
    if cfg.kind == "word":
        return WordTextTower(cfg)
    if cfg.kind == "hf":
        return HFTextTower(cfg, pretrained=pretrained)
    raise ConfigError(f"unknown text tower kind {cfg.kind!r}; choose word or hf")
