"""The reference interaction model (torch): early-fusion decoder-only MoE transformer over the stream layout.

* Inputs: token embeddings for text bytes, control and structure tokens; a dMel frame's embedding is the SUM over
  its 80 bands of a learned (band, level) embedding; a 40x40 patch goes through an hMLP stem (4x4 px sub-patches
  -> 8x8 -> the whole patch, each stage linear + RMSNorm + GELU).
* Trunk: pre-norm blocks (RMSNorm, grouped-query attention with rotary positions, top-k MoE MLP with SwiGLU
  experts). Local layers attend to the last ``window`` positions; ``global_layers`` to everything.
* Heads: one output head over the unified vocabulary (text bytes + control + ARG/END tokens: the text and
  control heads share the softmax so one decode step picks either); a flow head (small MLP conditioned on the
  trunk state) for audio frames, trained by flow matching and sampled with a few Euler steps.

Two execution paths share the weights:

* **exact** (:meth:`InteractionModel.forward_cached`, used by sessions): every op of the trunk goes through the
  lean order-fixed helpers of :mod:`microturn.model.exact_ops` (fixed 16-row block products, one fixed-shape
  product per row for local attention and per token-slot for the experts, an elementwise-deterministic exp,
  exact max, fixed pairwise trees), so a position's bits do not depend on how the sequence was chunked:
  stepping a session tick by tick gives bit-identical logits to one pass. They keep a decode step to a few
  hundred small torch calls. Embeddings (and the hMLP stem) use the kernels' references and ``det_exp`` /
  ``tree_sum``. Plain torch here only where it is exact anyway: embedding lookups, `topk`, `argmax`,
  element-wise + and *.
* **fast** (:meth:`InteractionModel.forward`, for training): plain torch (F.linear, scaled_dot_product_attention
  with a window mask, a per-expert loop), batched [B, T], differentiable. Agrees with exact to float tolerance.

The flow head is plain torch (it is sampled, not part of the bit-exact decode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from microturn.kernels import det_exp, matmul, moe_gemv, rms_norm, tree_sum

from . import exact_ops as xo
from .config import ModelConfig
from .kv_cache import LayerCache
from .layout import DMEL, PATCH

__all__ = ["FlowHead", "HMLPStem", "InteractionModel", "MoE", "ModelOutput", "parameter_count", "rope_tables"]

_ROPE_CHUNK = 256


def _linear(x: torch.Tensor, w: torch.Tensor, exact: bool) -> torch.Tensor:
    return matmul(x, w.t()) if exact else F.linear(x, w)


def _norm(x: torch.Tensor, w: torch.Tensor, eps: float, exact: bool) -> torch.Tensor:
    if exact:
        return rms_norm(x, w, eps)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _gelu(x: torch.Tensor, exact: bool) -> torch.Tensor:
    """GELU's sigmoid form x·σ(1.702x); exact mode builds σ from det_exp (torch's sigmoid is not batch-invariant)."""
    if exact:
        return x / (det_exp(-1.702 * x) + 1.0)
    return x * torch.sigmoid(1.702 * x)


_rope_cache: dict[tuple[int, float, int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _rope_chunk(head_dim: int, theta: float, chunk: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Computed on the CPU in float64 on a fixed-size chunk of positions, so a position's value never depends on
    # which other positions were computed with it, nor on the device (transcendentals are not batch-invariant).
    key = (head_dim, theta, chunk, str(device))
    if key not in _rope_cache:
        with torch.inference_mode(False):  # cached for every caller, also those outside inference mode
            half = head_dim // 2
            inv = 1.0 / theta ** (torch.arange(half, dtype=torch.float64) / half)
            pos = torch.arange(chunk * _ROPE_CHUNK, (chunk + 1) * _ROPE_CHUNK, dtype=torch.float64)
            ang = pos[:, None] * inv[None, :]
            _rope_cache[key] = (torch.cos(ang).float().to(device), torch.sin(ang).float().to(device))
    return _rope_cache[key]


def rope_tables(head_dim: int, theta: float, start: int, n: int,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [n, head_dim/2] for positions start .. start+n-1, on ``device``."""
    device = torch.device(device)
    chunks = range(start // _ROPE_CHUNK, (start + n - 1) // _ROPE_CHUNK + 1) if n else range(0)
    parts = [_rope_chunk(head_dim, theta, c, device) for c in chunks]
    if not parts:
        return torch.zeros(0, head_dim // 2, device=device), torch.zeros(0, head_dim // 2, device=device)
    cos = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    sin = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    off = start - chunks[0] * _ROPE_CHUNK
    return cos[off:off + n], sin[off:off + n]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions for x [..., n, H, Dh] with cos/sin [n, Dh/2] (element-wise * and ±: exact)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


class HMLPStem(nn.Module):
    """hMLP stem: a 40x40x3 patch -> 10x10 sub-patches of 4x4 px -> 5x5 of 8x8 -> one vector (d_model)."""

    def __init__(self, dims: tuple[int, int, int], d_model: int, eps: float) -> None:
        super().__init__()
        c1, c2, c3 = dims
        self.eps = eps
        self.w1 = nn.Parameter(torch.randn(c1, 48) * 48**-0.5)
        self.w2 = nn.Parameter(torch.randn(c2, 4 * c1) * (4 * c1) ** -0.5)
        self.w3 = nn.Parameter(torch.randn(c3, 25 * c2) * (25 * c2) ** -0.5)
        self.n1 = nn.Parameter(torch.ones(c1))
        self.n2 = nn.Parameter(torch.ones(c2))
        self.n3 = nn.Parameter(torch.ones(c3))
        self.proj = nn.Parameter(torch.randn(d_model, c3) * c3**-0.5)

    def forward(self, patches: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """patches uint8 (or float in [0, 1]) [n, 40, 40, 3] -> [n, d_model]."""
        n = patches.shape[0]
        x = patches.float() / 255.0 if patches.dtype == torch.uint8 else patches.float()
        # stage 1: 4x4 px sub-patches (row, col, channel flattened)
        x = x.reshape(n, 10, 4, 10, 4, 3).permute(0, 1, 3, 2, 4, 5).reshape(n, 10, 10, 48)
        x = _gelu(_norm(_linear(x, self.w1, exact), self.n1, self.eps, exact), exact)
        # stage 2: merge 2x2 neighbours -> 5x5 grid of 8x8 px
        c1 = x.shape[-1]
        x = x.reshape(n, 5, 2, 5, 2, c1).permute(0, 1, 3, 2, 4, 5).reshape(n, 5, 5, 4 * c1)
        x = _gelu(_norm(_linear(x, self.w2, exact), self.n2, self.eps, exact), exact)
        # stage 3: merge the 5x5 grid -> the whole patch
        x = x.reshape(n, -1)
        x = _gelu(_norm(_linear(x, self.w3, exact), self.n3, self.eps, exact), exact)
        return _linear(x, self.proj, exact)


class MoE(nn.Module):
    """Top-k routed SwiGLU experts (weights in the `moe_gemv` layout: w_gate_up [E, 2F, D], w_down [E, D, F])."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, f, e = cfg.d_model, cfg.d_expert, cfg.n_experts
        self.top_k = cfg.top_k
        self.router = nn.Parameter(torch.randn(e, d) * d**-0.5)
        self.w_gate_up = nn.Parameter(torch.randn(e, 2 * f, d) * d**-0.5)
        self.w_down = nn.Parameter(torch.randn(e, d, f) * f**-0.5 / math.sqrt(2 * cfg.n_layers))

    def route(self, x: torch.Tensor, exact: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router logits [N, E], top-k ids [N, k], top-k weights [N, k] renormalised over the k picked)."""
        logits = _linear(x, self.router, exact)
        top_v, top_i = torch.topk(logits, self.top_k, dim=-1)  # sorted: column 0 is the max
        if exact:
            e = det_exp(top_v - top_v[:, :1])
            weights = e / tree_sum(e)[:, None]
        else:
            weights = torch.softmax(top_v, dim=-1)
        return logits, top_i, weights

    def forward(self, x: torch.Tensor, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D] -> (output [N, D], load-balance loss (a scalar; zero in exact mode))."""
        logits, top_i, weights = self.route(x, exact)
        if exact:
            return moe_gemv(x, top_i, weights, self.w_gate_up, self.w_down), x.new_zeros(())
        n_exp = self.router.shape[0]
        f = self.w_down.shape[2]
        out = torch.zeros_like(x)
        flat = top_i.reshape(-1)
        tok = torch.arange(x.shape[0], device=x.device).repeat_interleave(self.top_k)
        w = weights.reshape(-1)
        for e in range(n_exp):
            sel = (flat == e).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            h = F.linear(x[tok[sel]], self.w_gate_up[e])
            y = F.linear(F.silu(h[:, :f]) * h[:, f:], self.w_down[e])
            out = out.index_add(0, tok[sel], y * w[sel, None])
        return out, load_balance_loss(logits, top_i, n_exp)


def load_balance_loss(logits: torch.Tensor, top_i: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch-style balance loss E · Σ_e f_e · P_e (f_e: share of routed slots, P_e: mean router probability);
    1.0 when routing is perfectly uniform."""
    probs = torch.softmax(logits.float(), dim=-1).reshape(-1, n_experts)
    counts = torch.bincount(top_i.reshape(-1), minlength=n_experts).float()
    frac = counts / counts.sum().clamp(min=1)
    return n_experts * (frac * probs.mean(0)).sum()


class Block(nn.Module):
    """One pre-norm transformer block: grouped-query attention with rotary positions, then the MoE MLP."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        d, hq, hkv, dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.cfg = cfg
        self.window = None if cfg.is_global(layer) else cfg.window
        self.attn_norm = nn.Parameter(torch.ones(d))
        self.mlp_norm = nn.Parameter(torch.ones(d))
        self.wq = nn.Parameter(torch.randn(hq * dh, d) * d**-0.5)
        self.wk = nn.Parameter(torch.randn(hkv * dh, d) * d**-0.5)
        self.wv = nn.Parameter(torch.randn(hkv * dh, d) * d**-0.5)
        self.wo = nn.Parameter(torch.randn(d, hq * dh) * (hq * dh) ** -0.5 / math.sqrt(2 * cfg.n_layers))
        self.moe = MoE(cfg)

    def _qkv(self, h: torch.Tensor, exact: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.cfg
        lead = h.shape[:-1]
        q = _linear(h, self.wq, exact).reshape(*lead, c.n_heads, c.head_dim)
        k = _linear(h, self.wk, exact).reshape(*lead, c.n_kv_heads, c.head_dim)
        v = _linear(h, self.wv, exact).reshape(*lead, c.n_kv_heads, c.head_dim)
        return q, k, v

    def _qkv_t(self) -> torch.Tensor:
        """[wq; wk; wv].t() [D, (Hq + 2·Hkv)·Dh] for the exact path's one fused projection, rebuilt whenever a
        weight changes (in-place updates bump ``_version``)."""
        key = tuple((w.data_ptr(), w._version) for w in (self.wq, self.wk, self.wv))
        cached = self.__dict__.get("_qkv_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad(), torch.inference_mode(False):  # kept across calls, in and out of inference mode
                fused = torch.cat([self.wq, self.wk, self.wv]).t()
            self.__dict__["_qkv_cache"] = cached = (key, fused)
        return cached[1]

    def forward_cached(self, x: torch.Tensor, cache: LayerCache, start: int,
                       rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Exact path: x [n, D] at positions start.., written into ``cache`` before attending. ``rotary``:
        `exact_ops.rotary_factors` for those positions, when the caller made them once for all layers."""
        c = self.cfg
        n = x.shape[0]
        hq, hkv, dh = c.n_heads, c.n_kv_heads, c.head_dim
        h = xo.rms_norm(x, self.attn_norm, c.norm_eps)
        qkv = xo.linear(h, self._qkv_t()).reshape(n, hq + 2 * hkv, dh)
        if rotary is None:
            rotary = xo.rotary_factors(*rope_tables(dh, c.rope_theta, start, n, x.device))
        qk = xo.rope(qkv[:, :hq + hkv], *rotary)
        q, k, v = qk[:, :hq], qk[:, hq:], qkv[:, hq + hkv:]
        xo.kv_write(cache.k, cache.v, cache.table, start, k, v)
        o = xo.window_attention(q, cache.k, cache.v, cache.table, start, self.window, dh**-0.5)
        x = x + xo.linear(o.reshape(n, -1), self.wo.t())
        return x + xo.moe(xo.rms_norm(x, self.mlp_norm, c.norm_eps), self.moe.router, self.moe.w_gate_up,
                          self.moe.w_down, self.moe.top_k)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path: x [B, T, D] -> (x, load-balance loss)."""
        c = self.cfg
        b, t, _ = x.shape
        h = _norm(x, self.attn_norm, c.norm_eps, False)
        q, k, v = self._qkv(h, False)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        group = c.n_heads // c.n_kv_heads
        k = k.repeat_interleave(group, dim=2)
        v = v.repeat_interleave(group, dim=2)
        i = torch.arange(t, device=x.device)
        mask = i[None, :] <= i[:, None]
        if self.window is not None:
            mask = mask & (i[None, :] > i[:, None] - self.window)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        x = x + F.linear(o.transpose(1, 2).reshape(b, t, -1), self.wo)
        m, lb = self.moe(_norm(x, self.mlp_norm, c.norm_eps, False).reshape(b * t, -1), exact=False)
        return x + m.reshape(b, t, -1), lb


class FlowHead(nn.Module):
    """Audio-frame generator: a small MLP v(x_t, t | trunk state) trained by flow matching (plain torch)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dim, self.steps = cfg.flow_dim, cfg.flow_steps
        self.net = nn.Sequential(
            nn.Linear(cfg.flow_dim + cfg.d_model + 16, cfg.flow_hidden), nn.SiLU(),
            nn.Linear(cfg.flow_hidden, cfg.flow_hidden), nn.SiLU(),
            nn.Linear(cfg.flow_hidden, cfg.flow_dim),
        )

    @staticmethod
    def _time(t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(torch.arange(8, dtype=torch.float32, device=t.device) * -math.log(1000.0) / 8)
        ang = t[:, None] * freqs[None, :] * 100.0
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The predicted velocity at (x_t, t) given the trunk state ``cond`` [N, D]."""
        return self.net(torch.cat([x, cond, self._time(t)], dim=-1))

    def loss(self, cond: torch.Tensor, data: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow matching: x_t = (1-t)·noise + t·data; regress the velocity data - noise (MSE)."""
        noise = torch.randn(data.shape, generator=generator, device=data.device)
        t = torch.rand(data.shape[0], generator=generator, device=data.device)
        x_t = (1 - t[:, None]) * noise + t[:, None] * data
        return F.mse_loss(self.velocity(x_t, t, cond), data - noise)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Euler integration from noise (t=0) to data (t=1) in ``steps`` steps: [N, flow_dim]."""
        steps = steps or self.steps
        x = torch.randn(cond.shape[0], self.dim, generator=generator, device=cond.device)
        for i in range(steps):
            t = torch.full((cond.shape[0],), i / steps, device=cond.device)
            x = x + self.velocity(x, t, cond) / steps
        return x


@dataclass
class ModelOutput:
    """The fast path's result: logits [B, T, V], final hidden states [B, T, D], mean load-balance loss."""

    logits: torch.Tensor
    hidden: torch.Tensor
    lb_loss: torch.Tensor


class InteractionModel(nn.Module):
    """The interaction model (see the module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.tok_emb = nn.Parameter(torch.randn(cfg.vocab_size, d) * 0.5)
        # Summed over 80 bands: scale so the sum has roughly unit variance.
        self.dmel_emb = nn.Parameter(torch.randn(cfg.dmel_bands * cfg.dmel_levels, d) * cfg.dmel_bands**-0.5)
        self.stem = HMLPStem(cfg.stem_dims, d, cfg.norm_eps)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = nn.Parameter(torch.ones(d))
        self.head = nn.Parameter(torch.randn(cfg.vocab_size, d) * d**-0.5)
        self.flow = FlowHead(cfg)

    # --- embeddings ------------------------------------------------------------------------------------------

    def embed_dmel(self, levels: torch.Tensor) -> torch.Tensor:
        """dMel frames [n, 80] of levels 0..15 -> [n, D]: the sum over bands of emb[band, level] (a fixed
        pairwise tree, so a frame's bits never depend on the other frames). Levels are clamped to 0..15."""
        c = self.cfg
        lv = levels.long().clamp(0, c.dmel_levels - 1)
        idx = torch.arange(c.dmel_bands, device=lv.device) * c.dmel_levels + lv
        return tree_sum(self.dmel_emb[idx].transpose(-1, -2))

    def embed(self, tokens: torch.Tensor, dmel: torch.Tensor | None, patches: torch.Tensor | None,
              exact: bool = False) -> torch.Tensor:
        """tokens [...] -> [..., D]; DMEL / PATCH positions (row-major) take the given frames / patches."""
        if dmel is None and patches is None and tokens.numel() == 1 and int(tokens) not in (DMEL, PATCH):
            return self.tok_emb[tokens]  # a decoded token: nothing to count or place
        x = self.tok_emb[tokens]
        is_dmel, is_patch = tokens == DMEL, tokens == PATCH
        n_dmel, n_patch = int(is_dmel.sum()), int(is_patch.sum())
        got_dmel = 0 if dmel is None else dmel.shape[0]
        got_patch = 0 if patches is None else patches.shape[0]
        if got_dmel != n_dmel or got_patch != n_patch:
            raise ValueError(f"embed: tokens have {n_dmel} DMEL and {n_patch} PATCH positions, "
                             f"got dmel with {got_dmel} frames and patches with {got_patch}")
        if n_dmel:
            x = x.index_put((is_dmel,), self.embed_dmel(dmel))
        if n_patch:
            x = x.index_put((is_patch,), self.stem(patches, exact=exact))
        return x

    # --- fast path (training) --------------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, dmel: torch.Tensor | None = None,
                patches: torch.Tensor | None = None) -> ModelOutput:
        """Teacher-forced pass over a batch tokens [B, T] in plain torch (differentiable)."""
        c = self.cfg
        x = self.embed(tokens, dmel, patches)
        cos, sin = rope_tables(c.head_dim, c.rope_theta, 0, tokens.shape[1], tokens.device)
        lbs = []
        for block in self.blocks:
            x, lb = block(x, cos, sin)
            lbs.append(lb)
        h = _norm(x, self.final_norm, c.norm_eps, False)
        return ModelOutput(F.linear(h, self.head), h, torch.stack(lbs).mean())

    def loss(self, tokens: torch.Tensor, target_mask: torch.Tensor, dmel: torch.Tensor | None = None,
             patches: torch.Tensor | None = None, targets: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss: next-token cross-entropy on positions where ``target_mask`` [B, T] is True (the
        output tokens, predicted from the position before), plus ``lb_coef`` times the load-balance loss.
        ``targets`` [B, T] (default ``tokens``) are the tokens to predict when the input ``tokens`` were
        perturbed (context noise: the model learns to recover from its own earlier mistakes)."""
        out = self(tokens, dmel, patches)
        logits = out.logits[:, :-1]
        targets = (tokens if targets is None else targets)[:, 1:]
        mask = target_mask[:, 1:]
        ce = F.cross_entropy(logits[mask], targets[mask]) if mask.any() else logits.sum() * 0
        total = ce + self.cfg.lb_coef * out.lb_loss
        return total, {"ce": float(ce.detach()), "lb": float(out.lb_loss.detach())}

    # --- exact path (sessions) -------------------------------------------------------------------------------

    @torch.inference_mode()
    def forward_cached(self, tokens: torch.Tensor, dmel: torch.Tensor | None, patches: torch.Tensor | None,
                       caches: list[LayerCache], start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Append tokens [n] at positions start.. to the per-layer caches; (hidden [n, D], logits [n, V]).

        Bitwise chunking-invariant: the same positions give the same bits however the sequence is split.
        Runs in inference mode (a decode step is hundreds of tiny calls, and skipping autograd's version and
        view tracking is a sixth of their cost): the outputs are inference tensors, to read or clone."""
        c = self.cfg
        x = self.embed(tokens, dmel, patches, exact=True)
        rotary = xo.rotary_factors(*rope_tables(c.head_dim, c.rope_theta, start, tokens.shape[0], x.device))
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block.forward_cached(x, cache, start, rotary)
        h = xo.rms_norm(x, self.final_norm, c.norm_eps)
        return h, xo.linear(h, self.head.t())


def parameter_count(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
