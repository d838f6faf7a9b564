"""A plain-torch vision transformer (the ViT-S/16 class of model) as a backbone of 5 coarse blocks.

Fine blocks: 0 = patch embedding (a stride-`patch_size` convolution plus learned position embeddings),
1..depth = the transformer blocks (pre-norm attention and MLP, each with a residual), and a last one for
the final LayerNorm. Coarse blocks: B0 = the patch embedding, B1..B4 = the transformer blocks in four
equal groups (depth 12: blocks 1-3, 4-6, 7-9, 10-12 + the final norm), so every layout, branch point and
TreeMTL index of the CNN backbones applies unchanged.

Between fine blocks the tokens travel as a feature map [N, C, H/p, W/p] (the backbone contract passes one
tensor, and the map keeps the grid shape that the tokens alone would lose); each transformer block
flattens it to tokens and back. There is no class token: dense heads read the patch tokens only (DPT's
"ignore" readout), so a checkpoint's class token is reported as unused when weights are loaded.

Position embeddings are learned for a reference grid (`img_size / patch_size`, 14 x 14 for 224) and
resized bicubically to the grid of the input at hand, so any input size works (sizes that are not a
multiple of the patch size lose the remainder, as a stride-p convolution does).

Attention is written out (softmax(q k^T / sqrt(d)) v) rather than through the fused kernels, so the input
gradients that attacks take are deterministic on CUDA too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone_contract import NUM_COARSE_BLOCKS, Backbone

__all__ = ["PatchEmbed", "TransformerBlock", "FinalNorm", "vit_small", "vision_transformer"]


class PatchEmbed(nn.Module):
    """Image [N, 3, H, W] -> patch tokens as a map [N, C, H/p, W/p], position embeddings added."""

    def __init__(self, patch_size: int, embed_dim: int, grid: int, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.proj = nn.Conv2d(in_channels, embed_dim, self.patch_size, stride=self.patch_size)
        self.grid = int(grid)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, embed_dim))

    def position_map(self, h: int, w: int) -> Tensor:
        """Position embeddings [1, C, h, w], resized from the reference grid when the grid differs."""
        c = self.pos_embed.shape[-1]
        ref = self.pos_embed.transpose(1, 2).reshape(1, c, self.grid, self.grid)
        if (h, w) == (self.grid, self.grid):
            return ref
        return F.interpolate(ref, size=(h, w), mode="bicubic", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] < self.patch_size or x.shape[-1] < self.patch_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than one {self.patch_size}-pixel patch")
        x = self.proj(x)
        return x + self.position_map(*x.shape[-2:]).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)


def _feature_map(tokens: Tensor, h: int, w: int) -> Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x)), on a feature map [N, C, h, w]."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        t = _tokens(x)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return _feature_map(t, h, w)


class FinalNorm(nn.Module):
    """The LayerNorm after the last block, on a feature map."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return _feature_map(self.norm(_tokens(x)), h, w)


def _init_vit(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights and position embeddings, zero biases, as ViTs start."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            nn.init.trunc_normal_(m.pos_embed, std=0.02)
            fan_in = m.proj.in_channels * m.patch_size**2  # as a linear layer over the flattened patch
            nn.init.trunc_normal_(m.proj.weight, std=math.sqrt(1.0 / fan_in))
            nn.init.zeros_(m.proj.bias)


def vision_transformer(
    embed_dim: int = 384,
    depth: int = 12,
    num_heads: int = 6,
    patch_size: int = 16,
    mlp_ratio: float = 4.0,
    img_size: int = 224,
    in_channels: int = 3,
    name: str = "vision_transformer",
) -> Backbone:
    """A ViT of any width and depth (depth >= 4, so each of B1..B4 holds at least one block)."""
    groups_of_blocks = NUM_COARSE_BLOCKS - 1
    if depth < groups_of_blocks:
        raise ValueError(
            f"depth must be >= {groups_of_blocks} (one block per coarse block B1..B4), got {depth}"
        )
    if img_size < patch_size:
        raise ValueError(f"img_size {img_size} is smaller than patch_size {patch_size}")
    blocks: list[nn.Module] = [PatchEmbed(patch_size, embed_dim, img_size // patch_size, in_channels)]
    blocks += [TransformerBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth)]
    blocks.append(FinalNorm(embed_dim))
    # Transformer block i (1-based fine index) goes to coarse block 1 + (i - 1) * 4 // depth; the final
    # norm joins the last group.
    coarse: list[list[int]] = [[0]] + [[] for _ in range(groups_of_blocks)]
    for i in range(1, depth + 1):
        coarse[1 + (i - 1) * groups_of_blocks // depth].append(i)
    coarse[-1].append(depth + 1)
    backbone = Backbone(blocks, coarse, embed_dim, patch_size, name)
    _init_vit(backbone)
    return backbone


def vit_small(
    patch_size: int = 16,
    img_size: int = 224,
    embed_dim: int = 384,
    depth: int = 12,
    num_heads: int = 6,
    mlp_ratio: float = 4.0,
    in_channels: int = 3,
) -> Backbone:
    """ViT-S/16 (22 M parameters, 384-d tokens at 1/16 resolution); smaller widths/depths for CPU runs."""
    return vision_transformer(
        embed_dim, depth, num_heads, patch_size, mlp_ratio, img_size, in_channels, name="vit_small"
    )
