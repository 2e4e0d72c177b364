"""Vision Transformers of the transformer zoo, in plain torch with timm's layout and names.

timm is not a dependency, so the models pathologists bring (a timm ``VisionTransformer``, a
Swin) are written here with the module names and call structure a timm model has:
``patch_embed.proj``, ``cls_token``, ``reg_token``, ``pos_embed``, ``blocks.N.{norm1, attn,
norm2, mlp}``, ``norm``, ``head``. As in timm's non-fused attention path, the attention
probabilities pass through ``attn.attn_drop`` (a no-op dropout), so that a forward hook can
read them (what attention rollout needs; `napari_medcam.comparison.attention_rollout`).
"""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens: a strided convolution ``proj``, flattened row by row
    ((B, h·w, C), timm's default) or left channels-last ((B, h, w, C), Swin's)."""

    def __init__(self, patch: int, dim: int, channels_last: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.LayerNorm(dim) if channels_last else nn.Identity()
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        x = x.permute(0, 2, 3, 1) if self.channels_last else x.flatten(2).transpose(1, 2)
        return self.norm(x)


class Attention(nn.Module):
    """Multi-head self-attention over (B, N, C) tokens; probabilities through ``attn_drop``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = self.attn_drop((q * self.scale @ k.transpose(-2, -1)).softmax(-1))
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """timm's Mlp: ``fc1`` → GELU ``act`` → ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm's ``VisionTransformer`` in small: class token and/or register tokens, learned
    position embedding (patches and class token; registers get none, as in timm and DINOv2),
    pre-norm blocks, final ``norm``, then the class token (``global_pool="token"``) or the
    mean of the patch tokens (``"avg"``) into ``head``. ``num_classes=0`` makes ``head`` an
    identity: the backbone returns its pooled features, as ``timm.create_model(...,
    num_classes=0)`` does for a foundation model."""

    def __init__(
        self,
        img_size: int = 128,
        patch_size: int = 16,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        num_classes: int = 2,
        class_token: bool = True,
        reg_tokens: int = 0,
        global_pool: str = "token",
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if global_pool not in ("token", "avg") or (global_pool == "token" and not class_token):
            raise ValueError("global_pool is 'token' (needs a class token) or 'avg'")
        grid = img_size // patch_size
        self.global_pool = global_pool
        self.num_prefix_tokens = int(class_token) + reg_tokens
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.pos_embed = nn.Parameter(
            torch.randn(1, grid * grid + int(class_token), embed_dim) * 0.02
        )
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        for token in (self.cls_token, self.reg_token):
            if token is not None:
                nn.init.normal_(token, std=0.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1)
        x = x + self.pos_embed
        if self.reg_token is not None:  # after the class token, before the patches
            cut = int(self.cls_token is not None)
            reg = self.reg_token.expand(len(x), -1, -1)
            x = torch.cat([x[:, :cut], reg, x[:, cut:]], 1)
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x[:, 0] if self.global_pool == "token" else x[:, self.num_prefix_tokens :].mean(1)
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class WindowAttention(nn.Module):
    """Self-attention inside non-overlapping ``window``×``window`` windows of a channels-last
    (B, H, W, C) map (Swin's W-MSA; no shifted windows, no relative position bias)."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.window = window
        self.attn = Attention(dim, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = min(self.window, h, w)
        win = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        out = self.attn(win).view(b, h // s, w // s, s, s, c)
        return out.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class SwinBlock(nn.Module):
    """Pre-norm block on channels-last maps: window attention, then an MLP."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, num_heads, window)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Swin's down-sampling: each 2×2 neighbourhood concatenated (4C), normed, projected."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim_in)
        self.reduction = nn.Linear(4 * dim_in, dim_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """One stage: an optional ``downsample`` (patch merging), then ``blocks``."""

    def __init__(self, dim_in: int, dim: int, depth: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.downsample = PatchMerging(dim_in, dim) if dim_in != dim else nn.Identity()
        self.blocks = nn.Sequential(*[SwinBlock(dim, num_heads, window) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class SwinLike(nn.Module):
    """A hierarchical transformer in timm's Swin layout: ``patch_embed`` (channels-last
    tokens, normed), ``layers.N`` (stages at halving resolutions, (B, H, W, C) outputs),
    ``norm``, mean over the map, ``head``."""

    def __init__(
        self,
        patch_size: int = 8,
        dims: tuple[int, ...] = (32, 48, 80),
        depths: tuple[int, ...] = (2, 2, 2),
        num_heads: tuple[int, ...] = (2, 4, 4),
        window: int = 4,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, dims[0], channels_last=True)
        ins = (dims[0], *dims[:-1])
        self.layers = nn.Sequential(
            *[SwinStage(i, d, n, h, window) for i, d, n, h in zip(ins, dims, depths, num_heads)]
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.patch_embed(x))
        return self.head(self.norm(x).mean((1, 2)))
