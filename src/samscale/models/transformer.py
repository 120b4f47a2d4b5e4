"""Transformer encoder tagger (part-of-speech panel): one label per token of a padded sentence.

Token embedding (id 0 pads) plus a learned position embedding → `depth` (6) pre-LN encoder layers → LayerNorm → a
Linear head applied to every position. Each layer is x + SelfAttention(LN(x)) then x + FeedForward(LN(x)), with a
GELU feed-forward of 4·d_model and d_model/64 heads (head width 64, as in BERT and the original Transformer; at
least one head, so d_model 32 or 64 has one); padding keys are masked out of the attention, so a sentence's outputs
do not depend on how much padding follows it (outputs at padding positions are computed and ignored by the loss).
Pre-LN rather than the original post-LN because it trains stably with Adam at a constant rate, without the warm-up
post-LN needs (Xiong et al. 2020); no dropout, as in every family here. The paper does not publish its model
beyond "6-layer Transformer encoder, d_model 128…640".

Parameters: (V + L)·d (token and position embeddings) + depth·(12d² + 13d) + 2d (final norm) + (d + 1)·C, for a
vocabulary of V ids, L positions and C tags. Kernels follow the Flax LeCun-normal rule like every model here, token
embeddings Flax's `nn.Embed` default N(0, 1/d) (padding row 0), position embeddings N(0, 0.02²) as in the ViT; all
drawn from the given generator (or torch's global RNG).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from samscale.models.init import LAYER_NORM_EPS, flax_init_, require_positive_int
from samscale.models.vit import POSITION_EMBEDDING_STD, FeedForward

HEAD_WIDTH = 64
"""Per-head width when the number of heads is not given: heads = max(1, d_model // 64)."""

FF_RATIO = 4
"""Feed-forward hidden width as a multiple of d_model."""


class MaskedSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over the real tokens only (a key padding mask).

    Written out as softmax(QKᵀ/√d_head) V rather than torch's fused kernel, whose CPU backward has no derivative of
    its own: the Hessian analyses differentiate the backward pass. At sentence lengths it costs the same on a CPU.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, real: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * (width // self.heads) ** -0.5
        scores = scores.masked_fill(~real[:, None, None, :], float("-inf"))
        y = scores.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(batch, tokens, width))


class TaggerLayer(nn.Module):
    """Pre-LN encoder layer: x + Attn(LN(x)) over real tokens, then x + FeedForward(LN(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = MaskedSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = FeedForward(width, FF_RATIO * width)

    def forward(self, x: Tensor, real: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), real)
        return x + self.mlp(self.norm2(x))


class TransformerTagger(nn.Module):
    """Embedding(vocab, d, padding 0) + positions → pre-LN encoder layers → LayerNorm → per-token Linear(d, tags)."""

    def __init__(self, width: int, depth: int, heads: int, vocab_size: int, max_len: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(max_len, width))
        self.layers = nn.ModuleList(TaggerLayer(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(width, num_classes)

    def init_custom_parameters_(self, generator: torch.Generator | None) -> None:
        """Token embeddings N(0, 1/d) with the padding row 0 (Flax's Embed default), positions N(0, 0.02²)."""
        nn.init.normal_(self.embed.weight, std=self.embed.embedding_dim ** -0.5, generator=generator)
        self.embed.weight[0].zero_()
        nn.init.normal_(self.position, std=POSITION_EMBEDDING_STD, generator=generator)

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.int64 or tokens.shape[1] > self.position.shape[0]:
            raise ValueError(f"TransformerTagger expects (batch, length ≤ {self.position.shape[0]}) int64 token ids, "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")
        real = tokens != 0
        real = real | ~real.any(dim=1, keepdim=True)  # an all-padding row attends everywhere rather than to nothing
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        for layer in self.layers:
            x = layer(x, real)
        return self.head(self.norm(x))


def default_heads(width: int) -> int:
    """Heads of a tagger of `width` when not given: max(1, width // 64)."""
    return max(1, width // HEAD_WIDTH)


def _checked(width: int, depth: int, heads: int | None, vocab_size: int, max_len: int, num_classes: int) -> int:
    """Validate the arguments; the number of heads to use."""
    for name, value in (("width", width), ("depth", depth), ("vocab_size", vocab_size), ("max_len", max_len),
                        ("num_classes", num_classes)):
        require_positive_int(name, value)
    heads = default_heads(width) if heads is None else require_positive_int("heads", heads)
    if width % heads:
        raise ValueError(f"width {width} is not divisible by {heads} heads; pass heads= among the divisors of width")
    return heads


def transformer_tagger(
    width: int = 128, depth: int = 6, heads: int | None = None, vocab_size: int = 33_502, max_len: int = 128,
    num_classes: int = 17, *, generator: torch.Generator | None = None,
) -> TransformerTagger:
    """Build a Transformer tagger of d_model `width` over `vocab_size` token ids (0 = padding), `max_len` positions."""
    heads = _checked(width, depth, heads, vocab_size, max_len, num_classes)
    model = TransformerTagger(width, depth, heads, vocab_size, max_len, num_classes)
    with torch.no_grad():
        return flax_init_(model, generator)


def transformer_param_count(
    width: int = 128, depth: int = 6, heads: int | None = None, vocab_size: int = 33_502, max_len: int = 128,
    num_classes: int = 17,
) -> int:
    """Number of parameters of `transformer_tagger(...)` with the same arguments, without building it."""
    _checked(width, depth, heads, vocab_size, max_len, num_classes)
    d = width
    return (vocab_size + max_len) * d + depth * (12 * d * d + 13 * d) + 2 * d + (d + 1) * num_classes
