"""Compile every Triton kernel for an NVIDIA target (default sm_90) without a GPU, through ptxas.

Run as a script with TRITON_INTERPRET unset (the interpreter replaces `triton.jit`). It catches what the CPU
interpreter cannot: code the real compiler rejects. Strides and pointers get the divisibility-by-16 hints the
runtime would give them, and the launch options are the wrappers' own. Prints one line per kernel variant.
"""

import os
import sys
import time

os.environ["TRITON_INTERPRET"] = "0"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.compiler import compile as triton_compile  # noqa: E402

from microturn.kernels import triton_gemm, triton_moe, triton_norms, triton_split_kv  # noqa: E402


def build(fn, types: dict[str, str], constexprs: dict, arch: int, **options) -> None:
    """Compile one specialisation of ``fn``; unlisted ``*_ptr`` args are fp16 pointers, other args i32."""
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        else:
            signature[name] = types.get(name) or ("*fp16" if name.endswith("_ptr") else "i32")
    hinted = {
        (i,): [["tt.divisibility", 16]]
        for i, name in enumerate(fn.arg_names)
        if signature[name].startswith("*") or name.startswith("stride_") or name in ("D", "F")
    }
    start = time.perf_counter()
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=hinted)
    triton_compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    print(f"built {fn.__name__} {types.get('q_ptr') or types.get('x_ptr') or ''} in {time.perf_counter() - start:.1f}s")


def main(arch: int) -> None:
    for dt in ("*bf16", "*fp32"):
        build(triton_norms._rms_norm_kernel, {"x_ptr": dt, "w_ptr": dt, "y_ptr": dt, "eps": "fp32"},
              {"HAS_WEIGHT": True, "BLOCK_D": 1024}, arch)  # fmt: skip
    for dt, key in (("*bf16", "bfloat16"), ("*fp32", "float32")):
        bm, bn, bk = triton_gemm._TILES[getattr(triton_gemm.torch, key)]
        build(triton_gemm._matmul_kernel, {"a_ptr": dt, "b_ptr": dt, "c_ptr": dt},
              {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "IEEE": dt == "*fp32"}, arch)  # fmt: skip
    f_rows, d_cols = triton_moe.GATE_UP_TILE
    d_rows, f_cols = triton_moe.DOWN_TILE
    build(triton_moe._gemv_gate_up_kernel, {"x_ptr": "*bf16", "ids_ptr": "*i32", "w_ptr": "*bf16", "act_ptr": "*fp32"},
          {"BLOCK_F": f_rows, "BLOCK_D": d_cols}, arch)  # fmt: skip
    build(triton_moe._gemv_down_kernel, {"act_ptr": "*fp32", "ids_ptr": "*i32", "w_ptr": "*bf16", "y_ptr": "*fp32"},
          {"BLOCK_N": d_rows, "BLOCK_F": f_cols}, arch)  # fmt: skip
    build(triton_moe._combine_kernel, {"y_ptr": "*fp32", "w_ptr": "*fp32", "out_ptr": "*bf16"}, {"BLOCK": 1024}, arch)
    grouped = {"sorted_ptr": "*i32", "bexp_ptr": "*i32", "npad_ptr": "*i32", "w_ptr": "*bf16"}
    tiles = {"BLOCK_M": 16, "BLOCK_N": triton_moe._GROUPED_BLOCK_N, "BLOCK_K": triton_moe._GROUPED_BLOCK_K}
    build(triton_moe._grouped_gate_up_kernel, {**grouped, "x_ptr": "*bf16", "act_ptr": "*bf16"},
          {**tiles, "IEEE": False}, arch)  # fmt: skip
    build(triton_moe._grouped_down_kernel, {**grouped, "act_ptr": "*bf16", "y_ptr": "*fp32"},
          {**tiles, "IEEE": False}, arch)  # fmt: skip
    for dt, group, window in (("*bf16", 4, False), ("*bf16", 8, True), ("*fp16", 1, False), ("*fp32", 4, False)):
        block_n, warps = triton_split_kv.launch_config(group, 512)
        types = {"q_ptr": dt, "k_ptr": dt, "v_ptr": dt, "bt_ptr": "*i32", "lens_ptr": "*i32", "qs_ptr": "*i32",
                 "o_ptr": "*fp32", "ml_ptr": "*fp32", "range_ptr": "*i32", "scale": "fp32"}  # fmt: skip
        consts = {"GROUP": group, "GROUP_PAD": group, "HEAD_DIM": 128, "DH_PAD": 128, "BLOCK_SIZE": 16, "SPLIT": 512,
                  "BLOCK_M": triton_split_kv.BLOCK_TOKENS, "BLOCK_N": block_n, "CAUSAL": True,
                  "HAS_WINDOW": window, "IEEE": dt == "*fp32"}  # fmt: skip
        build(triton_split_kv._split_partial_kernel, types, consts, arch, num_warps=warps)
    build(triton_split_kv._merge_kernel, {"o_ptr": "*fp32", "ml_ptr": "*fp32", "range_ptr": "*i32", "out_ptr": "*bf16"},
          {"HEAD_DIM": 128, "DH_PAD": 128}, arch)  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
