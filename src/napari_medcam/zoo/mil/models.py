"""The slide zoo's models: a frozen zoo encoder and three MIL aggregators.

Every aggregator maps an (N, D) bag and the tiles' (N, 2) grid positions to slide logits
(1, K) and a weight per tile (N,): attention for the attention models, the instance
score for max-pooling (the score the max ranks tiles by).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PooledFeatures(nn.Module):
    """A zoo tile classifier up to its global average pooling: (B, 3, h, w) → (B, C).

    ``blocks`` are the classifier's own conv blocks (shared, frozen); the head is left
    out, as a foundation model's embedding leaves out any task head.
    """

    def __init__(self, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x.mean((2, 3))


class GatedAttentionMIL(nn.Module):
    """Gated attention MIL (Ilse, Tomczak & Welling 2018): a = w·(tanh(Vh) ⊙ σ(Uh))."""

    def __init__(self, dim: int = 64, hidden: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.v, self.u = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.w = nn.Linear(hidden, 1)
        self.head = nn.Linear(hidden, classes)

    def forward(self, bag: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(bag)
        a = torch.softmax(self.w(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h)))[:, 0], 0)
        return self.head((a[:, None] * h).sum(0, keepdim=True)), a


class MaxPoolMIL(nn.Module):
    """Max-pooling MIL: an instance classifier scores every tile; the highest score is
    the slide's positive logit (the negative logit is 0)."""

    def __init__(self, dim: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.instance = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, bag: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.instance(bag)[:, 0]
        return torch.stack([torch.zeros((), dtype=s.dtype), s.max()])[None], s


def _pinv(x: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """Moore-Penrose inverse by Newton-Schulz iterations, as in Nyströmformer."""
    z = x.transpose(-1, -2) / (x.abs().sum(-1).max() * x.abs().sum(-2).max())
    eye = torch.eye(x.shape[-1], dtype=x.dtype)
    for _ in range(iters):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Multi-head self-attention approximated with ``landmarks`` segment means (Xiong et
    al. 2021), linear in the number of tiles; exact for bags up to ``landmarks`` tokens."""

    def __init__(self, dim: int, heads: int = 2, landmarks: int = 32) -> None:
        super().__init__()
        self.heads, self.landmarks = heads, landmarks
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, dim) → (N, dim), and the first token's attention over all tokens (N,)."""
        n, d = x.shape
        q, k, v = self.qkv(x).view(n, 3, self.heads, d // self.heads).permute(1, 2, 0, 3)
        q = q / math.sqrt(d // self.heads)
        first = torch.softmax(q[:, :1] @ k.transpose(-1, -2), -1).mean(0)[0]
        if n <= self.landmarks:
            y = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
        else:
            pad = (-n) % self.landmarks
            seg = (n + pad) // self.landmarks
            ql = F.pad(q, (0, 0, pad, 0)).reshape(self.heads, self.landmarks, seg, -1)
            kl = F.pad(k, (0, 0, pad, 0)).reshape(self.heads, self.landmarks, seg, -1)
            ql, kl = ql.sum(2) / seg, kl.sum(2) / seg
            k1 = torch.softmax(q @ kl.transpose(-1, -2), -1)
            k2 = torch.softmax(ql @ kl.transpose(-1, -2), -1)
            k3 = torch.softmax(ql @ k.transpose(-1, -2), -1)
            y = (k1 @ _pinv(k2)) @ (k3 @ v)
        return self.out(y.permute(1, 0, 2).reshape(n, d)), first


class PPEG(nn.Module):
    """TransMIL's pyramid position encoding: depthwise 7/5/3 convolutions of the tokens
    placed at their tiles' positions on the slide's grid (glass cells are zero)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(dim, dim, s, padding=s // 2, groups=dim) for s in (7, 5, 3)
        )

    def forward(self, tokens: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        rc = coords.long()
        rc = rc - rc.min(0).values
        h, w = int(rc[:, 0].max()) + 1, int(rc[:, 1].max()) + 1
        c, where = tokens.shape[1], rc[:, 0] * w + rc[:, 1]
        grid = tokens.new_zeros((c, h * w)).index_copy(1, where, tokens.T).view(1, c, h, w)
        mixed = grid + sum(conv(grid) for conv in self.convs)
        return mixed.view(c, -1)[:, where].T


class TransMILLike(nn.Module):
    """TransMIL-like (Shao et al. 2021): a class token and the tiles through Nyström
    self-attention, PPEG positions on the tile grid, a second attention layer; the class
    token classifies. Attention: the class token's, in the last layer, over the tiles."""

    def __init__(self, dim: int = 64, width: int = 64, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim, width), nn.ReLU())
        self.cls = nn.Parameter(torch.zeros(1, width))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))
        self.layers = nn.ModuleList(NystromAttention(width) for _ in range(2))
        self.ppeg = PPEG(width)
        self.head = nn.Linear(width, classes)

    def forward(self, bag: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(bag)
        x = torch.cat([self.cls, h])
        x = x + self.layers[0](self.norms[0](x))[0]
        x = torch.cat([x[:1], self.ppeg(x[1:], coords)])
        y, first = self.layers[1](self.norms[1](x))
        x = x + y
        return self.head(self.norms[2](x[:1])), first[1:]
