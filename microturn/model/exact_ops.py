"""Lean order-fixed ops for the model's exact path (sessions): few torch calls per decode step.

Every helper here is bitwise batch- and chunking-invariant by construction, like the `microturn.kernels`
references it stands beside, but built for the one-token decode step, where the cost is Python and dispatch
overhead per torch call, not arithmetic. A row's bits come from one of two arguments:

* **fixed-block products** (`linear`, `rms_norm`'s mean of squares): ``ROW_BLOCK``-row zero-padded blocks,
  exactly `kernels.blocked_mm`'s arithmetic (a row's bits do not depend on its neighbours in the block);
* **one call per row** (`window_attention` on local layers, `moe`): each row (or token-slot pair) goes through
  its own ``torch.mm`` of a fixed shape on 64-byte-aligned operands that hold only that row's data, so the
  call is the same whatever the batch;

and everything else is elementwise (`exp`: +, -, *, floor and bit operations only, so vectorised and scalar
tails agree), an exact max, or a fixed pairwise `tree_sum`. Global layers (frames that grow with the
history) use elementwise products and trees over absolute key slots, where zero padding is exact.
These ops define the exact path's numbers (they are not bitwise equal to the kernels' references): stepping a
session and one teacher-forced pass both run them, so the two still agree bit for bit.

On the CPU the elementwise steps of the hottest paths (`exp`, one row of local attention, the MoE's gates and
slot sum) run in numpy on views of the same buffers: +, -, *, /, floor, max and integer bit operations are
rounded once by IEEE in both libraries (neither fuses a multiply-add), so the bits are the same, at a fraction
of torch's per-call cost. Products stay torch's, on torch-allocated (64-byte-aligned) operands. Not every op
carries over: torch's vectorised float32 sqrt differs from numpy's in the last bit, so `rms_norm` stays torch.
"""

from __future__ import annotations

import numpy as np
import torch

from microturn.kernels import ROW_BLOCK, blocked_mm, tree_sum

__all__ = ["exp", "kv_write", "linear", "moe", "rms_norm", "rope", "rotary_factors", "silu", "window_attention"]

# Rows per chunk of the global layers' broadcast attention products in a long prefill: bounds the temporaries'
# memory; each row's arithmetic does not depend on it.
_ATTN_ROWS = 32

# Cephes expf (as in `kernels.invariant`).
_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375
_LN2_LO = -2.12194440e-4
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)


def linear(x: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    """``x [m, K] @ w_t [K, N]`` on fixed ``ROW_BLOCK``-row zero-padded blocks (`blocked_mm`'s bits)."""
    m, k = x.shape
    if m > ROW_BLOCK:
        return blocked_mm(x, w_t)
    block = torch.cat([x, _zeros(ROW_BLOCK - m, k, x.device)])  # fresh, zero-padded: one call
    return torch.mm(block, w_t)[:m]


def _zeros(m: int, k: int, device: torch.device) -> torch.Tensor:
    """A cached [m, k] block of zeros (the padding of `linear`'s block; never written)."""
    key = (m, k, str(device))
    t = _zeros_cache.get(key)
    if t is None:
        with _outside_inference():
            t = torch.zeros(m, k, device=device)
        if len(_zeros_cache) < 256:
            _zeros_cache[key] = t
    return t


_zeros_cache: dict[tuple[int, int, str], torch.Tensor] = {}


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of float32 ``x [n, D]``; the mean of squares is a `linear` against a column of 1/D (fixed
    16-row blocks, like every dense product here)."""
    c = _consts(x.device)
    eps_t = c.get(("eps", eps))
    if eps_t is None:
        with _outside_inference():
            eps_t = c[("eps", eps)] = torch.tensor(eps, dtype=torch.float32, device=x.device)
    m, d = x.shape
    if m > ROW_BLOCK:
        mean_sq = linear(x * x, _ones(d, x.device))
    else:  # `linear`'s zero-padded block, the squares written straight into it
        block = x.new_zeros(ROW_BLOCK, d)
        torch.mul(x, x, out=block[:m])
        mean_sq = torch.mm(block, _ones(d, x.device))[:m]  # [n, 1]: the mean (the column holds 1/D)
    return (x * (mean_sq + eps_t).sqrt_().reciprocal_()).mul_(w)


def exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) for float32 x, elementwise-deterministic (only +, -, *, floor and exact bit operations, like
    `kernels.det_exp`, whose Cephes polynomial it uses). Inputs are clamped to [-87, 88] so that 2**n is one
    normal float: exp(-inf) gives ~1.6e-38 rather than 0 (mask after, where it matters)."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return _exp_numpy(x)
    c = _consts(x.device)
    x = x.clamp(-87.0, 88.0)
    n = torch.floor(x * c["log2e"] + c["half"])
    r = x - n * c["ln2_hi"] - n * c["ln2_lo"]
    poly = c["poly"]
    p = r * poly[0] + poly[1]
    for k in poly[2:]:
        p = p * r + k
    y = p * (r * r) + r + c["one"]
    return y * ((n.to(torch.int32) + 127) << 23).view(torch.float32)


_NP_LOG2E, _NP_HALF, _NP_ONE = np.float32(_LOG2E), np.float32(0.5), np.float32(1.0)
_NP_LN2_HI, _NP_LN2_LO = np.float32(_LN2_HI), np.float32(_LN2_LO)
_NP_POLY = tuple(np.float32(v) for v in _EXP_POLY)
_NP_LO, _NP_HI = np.float32(-87.0), np.float32(88.0)


def _exp_numpy(x: torch.Tensor) -> torch.Tensor:
    """`exp` on the CPU, step for step the same float32 operations, each rounded once (IEEE, no fused
    multiply-add in either library), so the bits are torch's; numpy's per-call cost on these small arrays is a
    fraction of torch's, and exp is ~25 elementwise calls. The result is a torch allocation (64-byte aligned)
    because it is often the operand of a product whose bits depend on alignment."""
    out = torch.empty(x.shape, dtype=torch.float32)
    _np_exp(x.detach().numpy(), out.numpy())
    return out


def _np_exp(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`exp` of a float32 array into ``out`` (see `_exp_numpy`)."""
    v = np.maximum(x, _NP_LO)  # np.clip is the same bits at twice the cost
    np.minimum(v, _NP_HI, out=v)
    n = v * _NP_LOG2E
    n += _NP_HALF
    np.floor(n, out=n)
    t = n * _NP_LN2_HI
    r = np.subtract(v, t, out=v)  # r = x - n·ln2_hi - n·ln2_lo, over x's copy
    np.multiply(n, _NP_LN2_LO, out=t)
    r -= t
    p = r * _NP_POLY[0]
    p += _NP_POLY[1]
    for k in _NP_POLY[2:]:
        p *= r
        p += k
    np.multiply(r, r, out=t)
    p *= t
    p += r
    p += _NP_ONE
    scale = n.astype(np.int32)
    scale += 127
    scale <<= 23
    return np.multiply(p, scale.view(np.float32), out=out)


def silu(x: torch.Tensor) -> torch.Tensor:
    """silu(x) = x / (1 + exp(-x)) with `exp`."""
    return x / (exp(-x) + _consts(x.device)["one"])


_const_cache: dict[str, dict] = {}


def _outside_inference() -> torch.inference_mode:
    """Where the module's cached constants are built: they outlive the call that first asks (often
    `InteractionModel.forward_cached`, in inference mode) and must stay normal tensors for any later caller."""
    return torch.inference_mode(False)


def _consts(device: torch.device) -> dict:
    """The float32 constants as 0-d tensors (an op with a Python float costs twice one with a 0-d tensor; the
    value, rounded to float32 either way, is the same)."""
    key = str(device)
    c = _const_cache.get(key)
    if c is None:
        def t(v: float) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.float32, device=device)
        with _outside_inference():
            c = _const_cache[key] = {
                "log2e": t(_LOG2E), "half": t(0.5), "ln2_hi": t(_LN2_HI), "ln2_lo": t(_LN2_LO), "one": t(1.0),
                "poly": tuple(t(v) for v in _EXP_POLY),
            }
    return c


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions for x [n, H, Dh] with the full-width factors of `rotary_factors` [n, Dh]:
    x·[cos, cos] + [x2, x1]·[-sin, sin]. Element-wise and exact: x1·cos - x2·sin is x1·cos + (-(x2·sin)) in
    IEEE arithmetic, so this is bit for bit the textbook form, in a third of its torch calls."""
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
    out = x * cos[:, None, :]
    out += swapped * sin[:, None, :]
    return out


def rotary_factors(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`rope`'s factors [n, Dh] from the tables cos, sin [n, Dh/2]: ([cos, cos], [-sin, sin])."""
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


def kv_write(k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor, start: int,
             k: torch.Tensor, v: torch.Tensor) -> None:
    """Write k, v [n, Hkv, Dh] at positions start.. of a paged cache (what `kernels.kv_cache_write` does)."""
    bs = k_cache.shape[1]
    n = k.shape[0]
    if n == 1:
        phys, off = int(table[start // bs]), start % bs
        k_cache[phys, off] = k[0]
        v_cache[phys, off] = v[0]
        return
    pos = torch.arange(start, start + n, device=k_cache.device)
    phys = table[pos // bs].long()
    off = pos % bs
    k_cache[phys, off] = k
    v_cache[phys, off] = v


_arange_cache: dict[tuple[int, str], torch.Tensor] = {}
_ones_cache: dict[tuple[int, str], torch.Tensor] = {}


def _ones(n: int, device: torch.device) -> torch.Tensor:
    """A [n, 1] column of 1/n."""
    key = (n, str(device))
    t = _ones_cache.get(key)
    if t is None:
        with _outside_inference():
            t = _ones_cache[key] = torch.full((n, 1), 1.0 / n, device=device)
    return t


def _arange(n: int, device: torch.device) -> torch.Tensor:
    key = (n, str(device))
    t = _arange_cache.get(key)
    if t is None:
        with _outside_inference():
            t = _arange_cache[key] = torch.arange(n, device=device)
    return t


def window_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                     start: int, window: int | None, scale: float) -> torch.Tensor:
    """Causal (optionally sliding-window) attention of q [n, Hq, Dh] at positions start.. over a paged cache
    that already holds them; [n, Hq, Dh]. See the module docstring for why each row's bits are its own."""
    n = q.shape[0]
    if window is None:
        if n > _ATTN_ROWS:
            return torch.cat([
                _global_attention(q[r:r + _ATTN_ROWS], k_cache, v_cache, table, start + r, scale)
                for r in range(0, n, _ATTN_ROWS)
            ])
        return _global_attention(q, k_cache, v_cache, table, start, scale)
    return _local_attention(q, k_cache, v_cache, table, start, window, scale)


def _gather(cache: torch.Tensor, table: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """cache rows at key positions ``keys`` [...] (all < the written length): [..., Hkv, Dh]."""
    bs, hkv, dh = cache.shape[1:]
    return cache.view(-1, hkv, dh)[table[keys // bs].long() * bs + keys % bs]


def _local_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                     start: int, window: int, scale: float) -> torch.Tensor:
    """Sliding-window attention: each row's frame is the ``window`` positions ending at the row (positions < 0
    read position 0's key and are masked out). The chunk's keys are gathered once; row r's frame is rows
    r .. r+window-1 of that buffer. Per row, scores and the probability-weighted values (a ones column appended
    to the values gives the softmax sum in the same product) are one [Hq, Hkv·Dh] x [Hkv·Dh, window] and one
    [Hq, window] x [window, Hkv·Dh + pad] product, the query heads spread block-diagonally so every kv head's
    keys go through one call. Same call, shape and alignment for every row in every batch: a row's bits are
    its own."""
    n, hq, dh = q.shape
    hkv = k_cache.shape[2]
    dev = q.device
    first = start - window + 1
    masked = first < 0
    kf, vf = _frame(k_cache, v_cache, table, first, window + n - 1)
    if n == 1 and dev.type == "cpu":
        return _local_row_numpy(q, kf, vf, first, scale)
    a = (q.reshape(n, hkv, hq // hkv, 1, dh) * _eye(hkv, scale, dev)).reshape(n, hq, hkv * dh)  # scaled
    if n == 1:  # a decoded token off the CPU: the one row's products on the operands, nothing to stack
        s = torch.mm(a[0], (kf if _rows(kf) else kf.clone()).t())
        p = exp(s - s.amax(dim=-1, keepdim=True))  # [Hq, window]; position 0 is in every masked frame
        if masked:
            p = torch.where(_arange(window, dev) >= -first, p, 0.0)
        o = torch.mm(p, vf)[None]  # [1, Hq, width]
    else:
        if _rows(a) and _rows(kf):  # row r's operands are views: a[r] and kf[r:r+window].t()
            s = torch.stack([torch.mm(ar, kr) for ar, kr in zip(a.unbind(0), kf.unfold(0, window, 1).unbind(0))])
        else:
            s = torch.stack([torch.mm(a[r].clone(), kf[r:r + window].clone().t()) for r in range(n)])
        p = exp(s - s.amax(dim=-1, keepdim=True))  # [n, Hq, window]; position 0 is in every masked frame
        if masked:
            valid = (_arange(window, dev)[None, :] + (_arange(n, dev)[:, None] + first)) >= 0  # [n, window]
            p = torch.where(valid[:, None, :], p, 0.0)
        if _rows(p) and _rows(vf):  # p[r] and vf[r:r+window]
            frames = vf.unfold(0, window, 1).transpose(1, 2).unbind(0)
            o = torch.stack([torch.mm(pr, vr) for pr, vr in zip(p.unbind(0), frames)])  # [n, Hq, width]
        else:
            o = torch.stack([torch.mm(p[r].clone(), vf[r:r + window].clone()) for r in range(n)])
    l_sum = o[..., hkv * dh:hkv * dh + 1]
    o = o[..., :hkv * dh].reshape(n, hkv, hq // hkv, hkv, dh)
    o = torch.diagonal(o, dim1=1, dim2=3).permute(0, 3, 1, 2).reshape(n, hq, dh)  # head h's own kv block
    return o / l_sum


def _local_row_numpy(q: torch.Tensor, kf: torch.Tensor, vf: torch.Tensor, first: int,
                     scale: float) -> torch.Tensor:
    """`_local_attention` of one query row [1, Hq, Dh] on the CPU, frame ``kf``, ``vf`` from `_frame`: the
    same two products on operands of the same shape and alignment, the elementwise steps around them in numpy
    (the same float32 operations, as in `_exp_numpy`)."""
    _, hq, dh = q.shape
    hkv = kf.shape[1] // dh
    g = hq // hkv
    a = torch.empty(hq, hkv * dh, dtype=torch.float32)  # the query heads spread block-diagonally, scaled
    np.multiply(q.detach().numpy().reshape(hkv, g, 1, dh), _eye(hkv, scale, q.device).numpy()[0],
                out=a.numpy().reshape(hkv, g, hkv, dh))
    s = torch.mm(a, (kf if _rows(kf) else kf.clone()).t()).numpy()  # [Hq, window], fresh
    s -= s.max(axis=-1, keepdims=True)  # position 0 is in every masked frame
    p = torch.empty(s.shape, dtype=torch.float32)
    pn = _np_exp(s, p.numpy())
    if first < 0:
        pn[:, :-first] = 0.0  # positions before 0
    o = torch.mm(p, vf).numpy()  # [Hq, width]: values, then the softmax sum
    out = torch.empty(1, hq, dh, dtype=torch.float32)
    own = np.diagonal(o[:, :hkv * dh].reshape(hkv, g, hkv, dh), axis1=0, axis2=2)  # head h's own kv block
    np.divide(own.transpose(2, 0, 1), o[:, hkv * dh:hkv * dh + 1].reshape(hkv, g, 1),
              out=out.numpy().reshape(hkv, g, dh))
    return out


def _frame(k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor, first: int,
           rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys [rows, Hkv·Dh] and the values with their ones column [rows, width] at positions first ..
    first+rows-1 (positions < 0 read position 0), each in a fresh tensor at a 64-byte-aligned start whenever
    a row's bytes are a multiple of 64 (what `_rows` asks), so the products that read them take the same path
    whichever way they were gathered."""
    _, bs, hkv, dh = k_cache.shape
    width = -(-(hkv * dh + 1) // 16) * 16
    ones = _ones_cols(rows, width - hkv * dh, k_cache.device)
    if first < 0:
        keys = (_arange(rows, k_cache.device) + first).clamp(min=0)
        flat = table[keys // bs].long() * bs + keys % bs
        kf = k_cache.view(-1, hkv * dh)[flat]
        return kf, torch.cat([v_cache.view(-1, hkv * dh)[flat], ones], dim=1)
    # whole blocks through the table (one copy each), then the positions' rows: a view at a multiple of a
    # row's bytes into a fresh tensor, aligned wherever a row's bytes are (which `_rows` asks anyway)
    b0 = first // bs
    blocks = table[b0:(first + rows - 1) // bs + 1]
    off = first - b0 * bs
    kf = k_cache.index_select(0, blocks).view(-1, hkv * dh)[off:off + rows]
    vf = v_cache.index_select(0, blocks).view(-1, hkv * dh)[off:off + rows]
    return kf, torch.cat([vf, ones], dim=1)


def _ones_cols(n: int, width: int, device: torch.device) -> torch.Tensor:
    """A [n, width] block of zeros with ones in column 0: what follows the values in the frame (the softmax
    sum's column, then padding to a multiple of 16 columns)."""
    key = (n, width, str(device))
    t = _pad_cache.get(key)
    if t is None:
        with _outside_inference():
            t = torch.zeros(n, width, device=device)
            t[:, 0] = 1.0
        if len(_pad_cache) < 256:
            _pad_cache[key] = t
    return t


_pad_cache: dict[tuple[int, int, str], torch.Tensor] = {}


_eye_cache: dict[tuple[int, float, str], torch.Tensor] = {}


def _eye(n: int, scale: float, device: torch.device) -> torch.Tensor:
    """scale · I_n shaped [1, n, 1, n, 1], to spread query heads block-diagonally over the kv heads."""
    key = (n, scale, str(device))
    t = _eye_cache.get(key)
    if t is None:
        with _outside_inference():
            t = _eye_cache[key] = (torch.eye(n, device=device) * scale)[None, :, None, :, None]
    return t


def _global_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                      start: int, scale: float) -> torch.Tensor:
    """Full causal attention: each row's frame is positions 0 .. end-1 in absolute slots, keys after the row
    masked to exact zeros, everything elementwise or a fixed pairwise tree — so the frame's length (padding at
    the end of the trees) never changes a row's bits."""
    n, hq, dh = q.shape
    hkv = k_cache.shape[2]
    dev = q.device
    end = start + n
    keys = _arange(end, dev)
    valid = keys[None, :] <= (_arange(n, dev)[:, None] + start)  # [n, end]
    kf = _gather(k_cache, table, keys)  # [end, Hkv, Dh]
    vf = _gather(v_cache, table, keys)
    qg = q.reshape(n, hkv, hq // hkv, 1, dh)
    s = tree_sum(qg * kf.permute(1, 0, 2)[None, :, None]) * scale  # [n, Hkv, G, end]
    s = torch.where(valid[:, None, None, :], s, float("-inf"))
    p = torch.where(valid[:, None, None, :], exp(s - s.amax(dim=-1, keepdim=True)), 0.0)
    l_sum = tree_sum(p)  # [n, Hkv, G]
    o = tree_sum(p[:, :, :, None, :] * vf.permute(1, 2, 0)[None, :, None])  # [n, Hkv, G, Dh]
    return (o / l_sum[..., None]).reshape(n, hq, dh)


def _rows(t: torch.Tensor) -> bool:
    """Whether every row view ``t[i]`` of a contiguous tensor starts 64-byte aligned like a fresh tensor (so a
    product on a row view runs exactly as on a copy of it)."""
    return t.is_contiguous() and (t.stride(0) * t.element_size()) % 64 == 0 and t.data_ptr() % 64 == 0


def moe(x: torch.Tensor, router: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor,
        top_k: int) -> torch.Tensor:
    """Top-k routed SwiGLU experts on float32 x [n, D] (renormalised softmax over the k picked); [n, D].

    Each (token, slot) pair is one [1, D] x [D, 2F] and one [1, F] x [F, D] product with that expert's weights:
    the same call, shape and alignment whatever the batch, so a pair's bits are its own. Slots are combined in
    slot order 0..k-1."""
    n = x.shape[0]
    logits = linear(x, router.t())
    top_v, top_i = torch.topk(logits, top_k, dim=-1)  # sorted: column 0 is the max
    ids = top_i.reshape(-1).tolist()
    wgu_t, wd_t = w_gate_up.transpose(1, 2), w_down.transpose(1, 2)  # wgu_t[e] is w[e].t()
    if len(ids) > w_gate_up.shape[0] // 2:  # many pairs: one unbind is cheaper than a select per pair
        wgu_t, wd_t = wgu_t.unbind(0), wd_t.unbind(0)
    xs = x.unsqueeze(1).unbind(0) if n > 1 else (x,)  # x[t][None] views
    if not _rows(x):
        xs = [r.clone() for r in xs]
    h = torch.cat([torch.mm(xs[i // top_k], wgu_t[ex]) for i, ex in enumerate(ids)])
    cpu = x.device.type == "cpu"
    act, weights = _gates_numpy(h, top_v) if cpu else _gates_torch(h, top_v)
    acts = act.unsqueeze(1).unbind(0)
    if not _rows(act):
        acts = [r.clone() for r in acts]
    y = torch.cat([torch.mm(acts[i], wd_t[ex]) for i, ex in enumerate(ids)]).view(n, top_k, -1)
    if cpu:  # y is fresh: weighted in place, then the slots summed in order, in numpy
        yn = y.detach().numpy()
        yn *= weights.numpy()[..., None]
        out = yn[:, 0].copy()
        for j in range(1, top_k):
            out += yn[:, j]
        return torch.from_numpy(out)
    y = y * weights[..., None]
    out = y[:, 0]
    for j in range(1, top_k):
        out = out + y[:, j]
    return out


def _gates_torch(h: torch.Tensor, top_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`moe`'s elementwise middle: (the SwiGLU activations gate·sigmoid(gate)·up [n·k, F], fresh since they
    are the down products' operands; the routing weights [n, k], a softmax renormalised over the k picked,
    ``top_v`` [n, k] being the router's sorted top logits). One exp serves both."""
    nk, f = h.shape[0], h.shape[1] // 2
    gate = h[:, :f]
    ex_all = exp(torch.cat([(top_v - top_v[:, :1]).view(-1), gate.neg().view(-1)]))
    e = ex_all[:nk].view(top_v.shape)
    weights = e / tree_sum(e)[:, None]
    act = ex_all[nk:].view_as(gate) + _consts(h.device)["one"]  # fresh: row views are aligned
    return torch.div(gate, act, out=act).mul_(h[:, f:]), weights


def _gates_numpy(h: torch.Tensor, top_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_gates_torch` on the CPU in numpy, like `_exp_numpy`: the same float32 operations in the same order,
    at a fraction of torch's per-call cost."""
    hn, tv = h.detach().numpy(), top_v.detach().numpy()
    nk, f = hn.shape[0], hn.shape[1] // 2
    gate = hn[:, :f]
    z = np.concatenate(((tv - tv[:, :1]).reshape(-1), np.negative(gate).reshape(-1)))
    ex = _np_exp(z, z)  # exp's first step copies its input, so it may write over it
    e = ex[:nk].reshape(tv.shape)
    weights = e / _np_tree_sum(e)[:, None]
    act = torch.empty(nk, f, dtype=torch.float32)
    an = act.numpy()
    np.add(ex[nk:].reshape(nk, f), _NP_ONE, out=an)
    np.divide(gate, an, out=an)
    an *= hn[:, f:]
    return act, torch.from_numpy(weights)


def _np_tree_sum(x: np.ndarray) -> np.ndarray:
    """`kernels.tree_sum` in numpy: the last dimension summed by the same zero-padded pairwise tree."""
    width = x.shape[-1]
    size = 1 << (width - 1).bit_length()
    if size != width:
        x = np.concatenate([x, np.zeros((*x.shape[:-1], size - width), x.dtype)], axis=-1)
    while size > 1:
        size //= 2
        x = x[..., :size] + x[..., size:]
    return x[..., 0]
