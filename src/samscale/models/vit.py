"""Small Vision Transformer for 32×32 images, trained from scratch in the paper's regularization experiment.

The paper does not publish its ViT; this is the standard design (Dosovitskiy et al. 2021) at small scale:
non-overlapping patches (default 4×4) linearly embedded, a learned class token (or mean pooling) and learned position
embeddings, pre-norm encoder blocks (LayerNorm → multi-head self-attention → residual; LayerNorm → GELU MLP with
hidden = mlp_ratio × width → residual), a final LayerNorm and a Linear head. No dropout. Kernels follow the Flax
LeCun-normal rule like every model here; position embeddings are N(0, 0.02²) and the class token starts at 0, as in
the Flax reference ViT. Size is scaled by `width` (and optionally `depth`); parameters grow as ≈ depth·(4 + 2r)·width².
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from samscale.models.init import LAYER_NORM_EPS, flax_init_, require_positive_int

POOLS = ("cls", "mean")
"""How the encoder output is reduced to one vector: the class token, or the mean over patch tokens."""

POSITION_EMBEDDING_STD = 0.02


class PatchEmbedding(nn.Module):
    """Cut an image into non-overlapping patches, project each to `width` features: (B, C, H, W) → (B, N, width)."""

    def __init__(self, in_channels: int, width: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with a fused query/key/value projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(batch, tokens, width))


class FeedForward(nn.Module):
    """Linear → GELU → Linear, the MLP half of an encoder block."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = FeedForward(width, mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision Transformer classifier: patch embedding → encoder blocks → LayerNorm → pool → Linear."""

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp_hidden: int,
        patch_size: int,
        image_size: tuple[int, int],
        in_channels: int,
        num_classes: int,
        pool: str,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.patch_embed = PatchEmbedding(in_channels, width, patch_size)
        num_patches = (image_size[0] // patch_size) * (image_size[1] // patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.pos_embedding = nn.Parameter(torch.zeros(1, num_patches + (pool == "cls"), width))
        self.blocks = nn.Sequential(*(EncoderBlock(width, heads, mlp_hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(width, num_classes)

    def init_custom_parameters_(self, generator: torch.Generator | None) -> None:
        """Position embeddings ~ N(0, 0.02²), class token 0 (the Flax ViT's choices)."""
        nn.init.normal_(self.pos_embedding, std=POSITION_EMBEDDING_STD, generator=generator)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(tokens + self.pos_embedding))
        features = tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)
        return self.head(features)


def _config(
    width: int,
    depth: int,
    heads: int,
    mlp_ratio: float,
    patch_size: int,
    image_size: int | tuple[int, int],
    in_channels: int,
    num_classes: int,
    pool: str,
) -> dict:
    """Validate the arguments of `vit` and resolve them to `ViT`'s constructor arguments."""
    for name, value in (("width", width), ("depth", depth), ("heads", heads), ("patch_size", patch_size)):
        require_positive_int(name, value)
    require_positive_int("in_channels", in_channels)
    require_positive_int("num_classes", num_classes)
    if width % heads:
        raise ValueError(f"width {width} is not divisible by heads {heads}; pick heads among the divisors of width")
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(require_positive_int("image_size", s) % patch_size for s in size):
        raise ValueError(f"image_size {image_size!r} must be (height, width) divisible by patch_size {patch_size}")
    mlp_hidden = max(1, round(mlp_ratio * width))
    return dict(width=width, depth=depth, heads=heads, mlp_hidden=mlp_hidden, patch_size=patch_size,
                image_size=size, in_channels=in_channels, num_classes=num_classes, pool=pool)


def vit(
    width: int = 64,
    depth: int = 6,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    patch_size: int = 4,
    image_size: int | tuple[int, int] = 32,
    in_channels: int = 3,
    num_classes: int = 10,
    pool: str = "cls",
    *,
    generator: torch.Generator | None = None,
) -> ViT:
    """Build a Flax-initialized ViT; the defaults (width 64, depth 6, MLP ratio 2) have 208,970 parameters on CIFAR."""
    config = _config(width, depth, heads, mlp_ratio, patch_size, image_size, in_channels, num_classes, pool)
    return flax_init_(ViT(**config), generator)


def vit_param_count(
    width: int = 64,
    depth: int = 6,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    patch_size: int = 4,
    image_size: int | tuple[int, int] = 32,
    in_channels: int = 3,
    num_classes: int = 10,
    pool: str = "cls",
) -> int:
    """Number of parameters of `vit(...)` with the same arguments, without building it."""
    c = _config(width, depth, heads, mlp_ratio, patch_size, image_size, in_channels, num_classes, pool)
    d, hidden, p = c["width"], c["mlp_hidden"], c["patch_size"]
    tokens = (c["image_size"][0] // p) * (c["image_size"][1] // p) + (pool == "cls")
    embedding = p * p * in_channels * d + d + tokens * d + (d if pool == "cls" else 0)
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * hidden + hidden) + (hidden * d + d)
    return embedding + depth * block + 2 * d + d * num_classes + num_classes
