"""Kernel benchmark: gather + GEMV MoE vs the grouped-GEMM baseline, split-KV attention vs SDPA.

On CUDA it times the Triton kernels (torch.cuda.Event timing after warm-up) at decode-sized batches and reports
speedups, achieved HBM bandwidth as a fraction of the device's peak, and attention overhead against
torch.nn.functional.scaled_dot_product_attention. On the CPU it times the torch references at small sizes and
says that the GPU figures need a GPU. The last line printed is one JSON object with the named figures.

On CUDA every op is timed twice: per call (events around one Python call: launch and wrapper overhead
included, what an eager decode loop pays) and as CUDA-graph replays (the same calls captured once, so the
figure is the device's time alone). It also measures the device's copy bandwidth (bytes read plus written by a
large device-to-device copy) as a measured ceiling beside the datasheet peak.

    python benchmarks/kernels.py [--peak-gbps 3350] [--topk 8] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812

from microturn.kernels import (
    DECODE_SPLIT_SIZE,
    PREFILL_SPLIT_SIZE,
    attention,
    kv_cache_write,
    matmul,
    moe_align_block_size,
    moe_gemv,
    moe_grouped_gemm,
    moe_grouped_gemm_triton,
    rms_norm,
)

TOKENS = (1, 2, 4, 8, 16)

# Peak HBM bandwidth (GB/s) by device name; the first substring that matches wins, so specific names come first.
PEAK_GBPS = (
    ("GH200", 4000.0),
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H800", 3350.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100-PCIE-80GB", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
)


def peak_gbps(name: str) -> float | None:
    """The table's peak bandwidth for a CUDA device name, or None when it is not listed."""
    for key, value in PEAK_GBPS:
        if key.lower() in name.lower():
            return value
    return None


def cuda_time_ms(fn: Callable[[int], object], warmup: int = 10, iters: int = 100) -> float:
    """Median milliseconds of ``fn(i)`` over ``iters`` calls, each bracketed by CUDA events."""
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def cuda_graph_time_ms(fn: Callable[[int], object], calls: int = 8, replays: int = 50) -> float | None:
    """Median milliseconds per call of ``fn(0..calls-1)`` captured in one CUDA graph and replayed.

    Launch gaps and Python overhead drop out, so this is the device's time. None when ``fn`` cannot be captured
    (it reads something back from the device, say).
    """
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(calls):
                fn(i)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(calls):
                fn(i)
        graph.replay()
        torch.cuda.synchronize()
    except RuntimeError as exc:
        torch.cuda.synchronize()
        print(f"  (no CUDA graph: {str(exc).splitlines()[0][:120]})")
        return None
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    del graph
    return statistics.median(times)


def copy_gbps(gib: float = 1.0) -> float:
    """Measured device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    n = int(gib * 2**30) // 4
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda i: dst.copy_(src), warmup=3, iters=20)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def cpu_time_ms(fn: Callable[[int], object], warmup: int = 2, iters: int = 10) -> float:
    """Median wall-clock milliseconds of ``fn(i)`` on the CPU."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def make_moe(t: int, d: int, f: int, e: int, k: int, dtype: torch.dtype, device: str, routings: int, seed: int = 0):
    """Weights, inputs and several routings (cycled so that timed runs do not replay one routing from L2)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    w_gate_up = (torch.randn(e, 2 * f, d, generator=g) / d**0.5).to(dtype).to(device)
    w_down = (torch.randn(e, d, f, generator=g) / f**0.5).to(dtype).to(device)
    cases = []
    for _ in range(routings):
        x = torch.randn(t, d, generator=g).to(dtype).to(device)
        ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)]).to(torch.int32).to(device)
        weights = torch.softmax(torch.randn(t, k, generator=g), dim=-1).to(device)
        cases.append((x, ids, weights))
    return w_gate_up, w_down, cases


def moe_bytes(ids: torch.Tensor, d: int, f: int, elem: int, t: int) -> int:
    """Bytes the MoE step must move at least: each touched expert's weights once, plus the activations."""
    experts = int(torch.unique(ids).numel())
    return experts * 3 * f * d * elem + 2 * t * d * elem


def bench_moe_triton(
    args: argparse.Namespace,
    dtype: torch.dtype,
    peak: float | None,
    device: str = "cuda",
    timer=None,
    measured_gbps: float | None = None,
) -> list[dict]:
    """Gather + GEMV vs grouped GEMM, both Triton, at every T in TOKENS (per call and as graph replays)."""
    timer = timer or cuda_time_ms
    d, f, e, k = args.hidden, args.ffn, args.experts, args.topk
    rows = []
    for t in TOKENS:
        w_gate_up, w_down, cases = make_moe(t, d, f, e, k, dtype, device, routings=8, seed=t)
        aligned = [moe_align_block_size(ids, e) for _, ids, _ in cases]
        for x, ids, w in cases[:1]:
            ref = moe_grouped_gemm(x, ids, w, w_gate_up, w_down, backend="triton").float()
            got = moe_gemv(x, ids, w, w_gate_up, w_down, backend="triton").float()
            max_err = float((ref - got).abs().max())

        def gemv(i, cases=cases, w_gate_up=w_gate_up, w_down=w_down):
            x, ids, w = cases[i % len(cases)]
            return moe_gemv(x, ids, w, w_gate_up, w_down, backend="triton")

        def grouped(i, cases=cases, w_gate_up=w_gate_up, w_down=w_down):
            x, ids, w = cases[i % len(cases)]
            return moe_grouped_gemm(x, ids, w, w_gate_up, w_down, backend="triton")

        def grouped_kernels(i, cases=cases, aligned=aligned, w_gate_up=w_gate_up, w_down=w_down):
            x, ids, w = cases[i % len(cases)]
            return moe_grouped_gemm_triton(x, ids, w, w_gate_up, w_down, aligned=aligned[i % len(cases)])

        gemv_ms = timer(gemv)
        grouped_ms = timer(grouped)
        kernels_ms = timer(grouped_kernels)
        gemv_g = cuda_graph_time_ms(gemv, len(cases))
        kernels_g = cuda_graph_time_ms(grouped_kernels, len(cases))
        moved = statistics.mean(moe_bytes(ids, d, f, w_gate_up.element_size(), t) for _, ids, _ in cases)
        gbps = moved / (gemv_ms * 1e-3) / 1e9
        gbps_g = moved / (gemv_g * 1e-3) / 1e9 if gemv_g else None
        rows.append(
            {
                "T": t,
                "gemv_ms": round(gemv_ms, 4),
                "grouped_gemm_ms": round(grouped_ms, 4),
                "grouped_gemm_kernels_only_ms": round(kernels_ms, 4),
                "speedup": round(grouped_ms / gemv_ms, 2),
                "speedup_vs_kernels_only": round(kernels_ms / gemv_ms, 2),
                "achieved_gbps": round(gbps, 1),
                "fraction_of_peak": round(gbps / peak, 3) if peak else None,
                "max_abs_diff_vs_grouped": max_err,
                "min_bytes": int(moved),
                "gemv_graph_ms": _r(gemv_g, 4),
                "grouped_gemm_kernels_graph_ms": _r(kernels_g, 4),
                "speedup_graph": _r(_ratio(kernels_g, gemv_g), 2),
                "achieved_gbps_graph": _r(gbps_g, 1),
                "fraction_of_peak_graph": _r(_ratio(gbps_g, peak), 3),
                "fraction_of_measured_copy_graph": _r(_ratio(gbps_g, measured_gbps), 3),
            }
        )
        print(
            f"moe T={t:2d}: gather+GEMV {gemv_ms:.3f} ms | grouped GEMM {grouped_ms:.3f} ms "
            f"(kernels only {kernels_ms:.3f}) | speedup {grouped_ms / gemv_ms:.2f}x | {gbps:.0f} GB/s"
            + (f" = {gbps / peak:.0%} of peak" if peak else "")
        )
        if gemv_g and kernels_g:
            print(
                f"        graph: gather+GEMV {gemv_g:.4f} ms | grouped kernels {kernels_g:.4f} ms | "
                f"speedup {kernels_g / gemv_g:.2f}x | {gbps_g:.0f} GB/s"
                + (f" = {gbps_g / peak:.0%} of peak" if peak else "")
                + (f", {gbps_g / measured_gbps:.0%} of measured copy" if measured_gbps else "")
            )
    return rows


def paged_session(length: int, hkv: int, dh: int, block: int, dtype: torch.dtype, device: str, seed: int):
    """A KV cache holding one session of ``length`` tokens in shuffled blocks, and the same K/V contiguous."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    blocks = (length + block - 1) // block
    k = torch.randn(length, hkv, dh, generator=g).to(dtype).to(device)
    v = torch.randn(length, hkv, dh, generator=g).to(dtype).to(device)
    k_cache = torch.zeros(blocks, block, hkv, dh, dtype=dtype, device=device)
    v_cache = torch.zeros_like(k_cache)
    table = torch.randperm(blocks, generator=g).to(torch.int32).to(device)
    kv_cache_write(k_cache, v_cache, table, 0, k, v)
    return k_cache, v_cache, table, k, v


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """SDPA on [B, H, T, Dh] tensors with grouped KV heads expanded by SDPA itself when it can."""
    try:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    except TypeError:  # torch without enable_gqa
        group = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(
            q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), is_causal=causal
        )


def attention_cases(device: str, dtype: torch.dtype, full: bool):
    """(name, sessions, new tokens per session, context, split) cases for the comparison."""
    hq, hkv, dh, block = (32, 8, 128, 16) if full else (8, 2, 64, 16)
    if full:
        cases = [
            ("decode B=1 L=8192", 1, 1, 8192, DECODE_SPLIT_SIZE),
            ("decode B=16 L=4096", 16, 1, 4096, DECODE_SPLIT_SIZE),
            ("decode B=64 L=2048", 64, 1, 2048, DECODE_SPLIT_SIZE),
            ("prefill B=1 T=L=4096", 1, 4096, 4096, PREFILL_SPLIT_SIZE),
        ]
    else:
        cases = [("decode B=1 L=1024", 1, 1, 1024, DECODE_SPLIT_SIZE), ("prefill B=1 T=L=256", 1, 256, 256, 4096)]
    return (hq, hkv, dh, block), cases


def bench_attention(device: str, dtype: torch.dtype, timer, backend: str, full: bool) -> list[dict]:
    """Split-KV attention on a paged cache vs SDPA on the same K/V laid out contiguously."""
    (hq, hkv, dh, block), cases = attention_cases(device, dtype, full)
    rows = []
    for name, sessions, new, length, split in cases:
        k_caches, v_caches, tables, ks, vs = [], [], [], [], []
        # All sessions share one cache (their block tables index disjoint blocks), as a server's pool would.
        per = (length + block - 1) // block
        for b in range(sessions):
            kc, vc, table, k, v = paged_session(length, hkv, dh, block, dtype, device, seed=b)
            k_caches.append(kc)
            v_caches.append(vc)
            tables.append(table + b * per)
            ks.append(k)
            vs.append(v)
        k_cache, v_cache = torch.cat(k_caches), torch.cat(v_caches)
        block_table = torch.stack(tables)
        seq_lens = torch.full((sessions,), length, dtype=torch.int32, device=device)
        query_start = torch.arange(0, sessions * new + 1, new, dtype=torch.int32, device=device)
        q = torch.randn(sessions * new, hq, dh, device=device).to(dtype)
        q4 = q.view(sessions, new, hq, dh).transpose(1, 2)
        k4 = torch.stack(ks).transpose(1, 2)
        v4 = torch.stack(vs).transpose(1, 2)

        def ours(i, args=(q, k_cache, v_cache, block_table, seq_lens), query_start=query_start, split=split):
            return attention(*args, query_start=query_start, split_size=split, backend=backend)

        def theirs(i, args=(q4, k4, v4, new > 1)):
            return sdpa(*args)

        diff = float((ours(0).float() - theirs(0).transpose(1, 2).reshape(q.shape).float()).abs().max())
        ours_ms, sdpa_ms = timer(ours), timer(theirs)
        overhead = (ours_ms - sdpa_ms) / sdpa_ms * 100
        ours_g = sdpa_g = overhead_g = None
        if device == "cuda":
            ours_g, sdpa_g = cuda_graph_time_ms(ours), cuda_graph_time_ms(theirs)
            if ours_g and sdpa_g:
                overhead_g = (ours_g - sdpa_g) / sdpa_g * 100
        rows.append(
            {
                "case": name,
                "split_size": split,
                "ours_ms": round(ours_ms, 4),
                "sdpa_ms": round(sdpa_ms, 4),
                "overhead_pct": round(overhead, 1),
                "max_abs_diff_vs_sdpa": diff,
            }
        )
        if device == "cuda":
            rows[-1].update(
                ours_graph_ms=_r(ours_g, 4), sdpa_graph_ms=_r(sdpa_g, 4), overhead_graph_pct=_r(overhead_g, 1)
            )
        print(f"attention {name}: split-KV {ours_ms:.3f} ms | SDPA {sdpa_ms:.3f} ms | overhead {overhead:+.1f}%")
        if overhead_g is not None:
            print(f"        graph: split-KV {ours_g:.4f} ms | SDPA {sdpa_g:.4f} ms | overhead {overhead_g:+.1f}%")
    return rows


def run_cuda(args: argparse.Namespace) -> dict:
    """Every GPU figure; needs CUDA and triton."""
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name()
    peak = args.peak_gbps or peak_gbps(name)
    print(f"device: {name}; peak bandwidth: {peak or 'unknown (pass --peak-gbps)'} GB/s; dtype {args.dtype}")
    measured = copy_gbps()
    print(f"measured device-to-device copy: {measured:.0f} GB/s (read + write)")
    print(f"moe: D={args.hidden} F={args.ffn} E={args.experts} k={args.topk}")
    moe_rows = bench_moe_triton(args, dtype, peak, measured_gbps=measured)
    attn_rows = bench_attention("cuda", dtype, cuda_time_ms, "triton", full=True)
    small = [r for r in moe_rows if r["T"] <= 4]
    decode = [r for r in attn_rows if r["case"].startswith("decode")]
    small_graph = [r["speedup_graph"] for r in small if r["speedup_graph"] is not None]
    decode_graph = [r["overhead_graph_pct"] for r in decode if r["overhead_graph_pct"] is not None]
    return {
        "device": name,
        "gpu_figures": True,
        "dtype": args.dtype,
        "peak_gbps": peak,
        "measured_copy_gbps": round(measured, 1),
        "triton": _triton_version(),
        "torch": torch.__version__,
        "moe_shape": {"D": args.hidden, "F": args.ffn, "E": args.experts, "k": args.topk},
        "moe": moe_rows,
        "moe_min_speedup_T_le_4": min(r["speedup"] for r in small),
        "moe_target_3x_met": all(r["speedup"] >= 3 for r in small),
        "attention": attn_rows,
        "attention_max_decode_overhead_pct": max(r["overhead_pct"] for r in decode),
        "attention_target_10pct_met": all(r["overhead_pct"] <= 10 for r in decode),
        "moe_min_speedup_graph_T_le_4": min(small_graph) if small_graph else None,
        "moe_target_3x_met_graph": all(x >= 3 for x in small_graph) if small_graph else None,
        "attention_max_decode_overhead_graph_pct": max(decode_graph) if decode_graph else None,
        "attention_target_10pct_met_graph": all(x <= 10 for x in decode_graph) if decode_graph else None,
    }


def _triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


def run_cpu(args: argparse.Namespace) -> dict:
    """The torch references' timings on the CPU, with a plain note that the GPU figures need a GPU."""
    print("No CUDA device: GPU figures (Triton kernel timings, speedups, bandwidth, SDPA overhead) need a GPU.")
    print("Timing the torch references on the CPU instead (they are what the model runs here).")
    d, f, e, k = 512, 352, 16, 4
    moe_rows = []
    for t in TOKENS:
        w_gate_up, w_down, cases = make_moe(t, d, f, e, k, torch.float32, "cpu", routings=2, seed=t)

        def gemv(i, cases=cases, w_gate_up=w_gate_up, w_down=w_down):
            x, ids, w = cases[i % len(cases)]
            return moe_gemv(x, ids, w, w_gate_up, w_down, backend="torch")

        def grouped(i, cases=cases, w_gate_up=w_gate_up, w_down=w_down):
            x, ids, w = cases[i % len(cases)]
            return moe_grouped_gemm(x, ids, w, w_gate_up, w_down, backend="torch")

        gemv_ms, grouped_ms = cpu_time_ms(gemv), cpu_time_ms(grouped)
        moe_rows.append({"T": t, "gemv_reference_ms": round(gemv_ms, 3), "grouped_reference_ms": round(grouped_ms, 3)})
        print(f"moe reference T={t:2d}: gather+GEMV {gemv_ms:.2f} ms | grouped GEMM {grouped_ms:.2f} ms")
    attn_rows = bench_attention("cpu", torch.float32, cpu_time_ms, "torch", full=False)
    x = torch.randn(16, 2048)
    w = torch.randn(2048, 2048)
    norm_ms = cpu_time_ms(lambda i: rms_norm(x, w[0], backend="torch"))
    mm_ms = cpu_time_ms(lambda i: matmul(x, w, backend="torch"))
    print(
        f"rms_norm reference [16, 2048]: {norm_ms:.3f} ms | matmul reference [16, 2048] x [2048, 2048]: {mm_ms:.3f} ms"
    )
    return {
        "device": "cpu",
        "gpu_figures": None,
        "note": "GPU figures need a CUDA GPU; these are torch-reference timings on the CPU",
        "torch_threads": torch.get_num_threads(),
        "moe_shape": {"D": d, "F": f, "E": e, "k": k},
        "moe_reference": moe_rows,
        "attention_reference": attn_rows,
        "rms_norm_reference_ms": round(norm_ms, 3),
        "matmul_reference_ms": round(mm_ms, 3),
    }


def main() -> None:
    """Parse the options, run the GPU or the CPU figures, print the JSON line last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-gbps", type=float, default=None, help="peak HBM bandwidth, overriding the table")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--ffn", type=int, default=1408)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--topk", type=int, default=8)
    args = parser.parse_args()
    figures = run_cuda(args) if torch.cuda.is_available() else run_cpu(args)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
