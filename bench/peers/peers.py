#!/usr/bin/env python3
"""Peer attention timings on the GPU machine, same shapes as `elastic bench attention --backend cuda` (DESIGN.md §4).

Measures in one run, bf16, batch 1, 32 query / 8 KV heads, d 128, causal:
  - SDPA flash backend, SDPA cuDNN backend (dense causal);
  - FlexAttention dense causal, and with a per-head hybrid mask: a block mask built from a mask_mod
    that reads a per-head mode tensor (1 = streaming: sink + local window, 0 = dense);
  - serial dispatch: SDPA flash on the dense heads + FlexAttention (sliding mask) on the streaming
    heads, outputs written into one tensor (the copies count, as in a real layer);
  - decode (one query token at context N): SDPA flash and cuDNN over the full cache.
Median of triton.testing.do_bench. Prints a table, writes JSON (--json).
Needs torch (2.5+ for enable_gqa and FlexAttention) and triton; no network.

  python3 bench/peers/peers.py --seqs 8192,32768,131072 --omegas 0,0.25,0.5,0.75,1 --json peers.json
"""
import argparse
import json
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from triton.testing import do_bench

# One compiled graph per shape and mask: raise dynamo's recompile limit, or after 8 shapes it
# silently falls back to eager flex_attention, which materialises the full score matrix.
torch._dynamo.config.cache_size_limit = 256
if hasattr(torch._dynamo.config, "recompile_limit"):
    torch._dynamo.config.recompile_limit = 256
if hasattr(torch._dynamo.config, "accumulated_recompile_limit"):
    torch._dynamo.config.accumulated_recompile_limit = 4096
torch.set_grad_enabled(False)
flex = torch.compile(flex_attention, dynamic=False)


def sdpa(q, k, v, backend, causal=True):
    """SDPA on one backend; GQA natively when the backend takes enable_gqa, else K/V repeated
    outside the timed call (reported in the 'gqa' column)."""
    G = q.shape[1] // k.shape[1]
    with sdpa_kernel(backend):
        try:
            fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            fn()
            return fn, "native"
        except RuntimeError:
            kr, vr = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
            fn = lambda: F.scaled_dot_product_attention(q, kr, vr, is_causal=causal)
            fn()
            return fn, "repeated"


def ssa_pairs(T, sink, local):
    n = 0
    # Rows i < local see i + 1 keys; later rows see local + min(sink, i - local + 1) keys.
    first = min(T, local)
    n += first * (first + 1) // 2
    for_rows = T - first
    if for_rows > 0:
        # rows i in [local, T): win_begin = i - local + 1 >= 1; extra sink keys = min(sink, win_begin)
        # sum over i of min(sink, i - local + 1)
        m = min(for_rows, sink)
        extra = m * (m + 1) // 2 + (for_rows - m) * sink
        n += for_rows * local + extra
    return n


_cbm_compiled = torch.compile(create_block_mask)


def block_mask(mask_mod, H, T, dev):
    """Block mask without materialising the [H, T, T] boolean mask (at 128K it would not fit):
    the compiled create_block_mask evaluates the mask_mod block by block."""
    return _cbm_compiled(mask_mod, B=None, H=H, Q_LEN=T, KV_LEN=T, device=dev)


def bench_ms(fn):
    return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", default="8192,32768,131072")
    ap.add_argument("--omegas", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--sink", type=int, default=128)
    ap.add_argument("--local", type=int, default=2048)
    ap.add_argument("--decode-ctx", default="32768,131072")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    Hq, Hkv, d, sink, local = a.heads, a.kv_heads, a.head_dim, a.sink, a.local
    G = Hq // Hkv
    dev = "cuda"
    dt = torch.bfloat16
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "prefill": [], "decode": []}
    print(f"device {out['device']}, torch {torch.__version__}; {Hq}/{Hkv} heads, d {d}, bf16, sink {sink} local {local}")
    hdr = f"{'seq':>7} {'Ω':>5} {'method':>22} {'ms':>9} {'TFLOP/s':>8} {'ideal(cuDNN)':>13}"
    print(hdr)
    for T in [int(x) for x in a.seqs.split(",")]:
        torch.manual_seed(0)
        q = torch.randn(1, Hq, T, d, device=dev, dtype=dt)
        k = torch.randn(1, Hkv, T, d, device=dev, dtype=dt)
        v = torch.randn(1, Hkv, T, d, device=dev, dtype=dt)
        pairs_fa = T * (T + 1) // 2
        dens = ssa_pairs(T, sink, local) / pairs_fa

        def rec(om, method, ms, pairs_total, extra=None):
            tf = 4.0 * d * pairs_total / (ms * 1e-3) / 1e12
            r = {"seq": T, "omega": om, "method": method, "ms": ms, "tflops": tf}
            if extra:
                r.update(extra)
            out["prefill"].append(r)
            ideal = r.get("ideal_ms")
            print(f"{T:7d} {om:5.2f} {method:>22} {ms:9.3f} {tf:8.1f} {'' if ideal is None else f'{ideal:13.3f}'}")

        fn, g1 = sdpa(q, k, v, SDPBackend.FLASH_ATTENTION)
        rec(0.0, "sdpa-flash", bench_ms(fn), pairs_fa * Hq, {"gqa": g1})
        try:
            fn, g2 = sdpa(q, k, v, SDPBackend.CUDNN_ATTENTION)
            t_cudnn = bench_ms(fn)
            rec(0.0, "sdpa-cudnn", t_cudnn, pairs_fa * Hq, {"gqa": g2})
        except RuntimeError as e:
            print(f"  cuDNN backend unavailable: {e}")
            t_cudnn = None
        torch.cuda.empty_cache()

        causal = lambda b, h, qi, ki: qi >= ki
        bm_dense = block_mask(causal, None, T, dev)
        fn = lambda: flex(q, k, v, block_mask=bm_dense, enable_gqa=True)
        fn()
        rec(0.0, "flex-dense", bench_ms(fn), pairs_fa * Hq)

        for om in [float(x) for x in a.omegas.split(",")]:
            n_ssa = round(om * Hkv)
            n_fa = Hkv - n_ssa
            if n_ssa == 0:
                continue
            ideal = t_cudnn * ((1 - om) + om * dens) if t_cudnn else None
            pairs = (n_fa * pairs_fa + n_ssa * dens * pairs_fa) * G
            # Per-query-head mode tensor: KV heads [n_fa, Hkv) stream.
            mode = torch.tensor([1 if h // G >= n_fa else 0 for h in range(Hq)], device=dev, dtype=torch.int32)

            def hybrid(b, h, qi, ki):
                stream_ok = (ki < sink) | (qi - ki < local)
                return (qi >= ki) & ((mode[h] == 0) | stream_ok)

            bm_h = block_mask(hybrid, Hq, T, dev)
            fn = lambda: flex(q, k, v, block_mask=bm_h, enable_gqa=True)
            fn()
            rec(om, "flex-hybrid", bench_ms(fn), pairs, {"ideal_ms": ideal})

            # Serial dispatch: dense heads by SDPA flash, streaming heads by Flex; one output tensor.
            def sliding(b, h, qi, ki):
                return (qi >= ki) & ((ki < sink) | (qi - ki < local))

            bm_s = block_mask(sliding, None, T, dev)
            o = torch.empty_like(q)
            qf, kf, vf = q[:, : n_fa * G], k[:, :n_fa], v[:, :n_fa]
            qs, ks, vs = q[:, n_fa * G :], k[:, n_fa:], v[:, n_fa:]
            fa_fn = sdpa(qf, kf, vf, SDPBackend.FLASH_ATTENTION)[0] if n_fa else None

            def serial():
                if fa_fn is not None:
                    o[:, : n_fa * G].copy_(fa_fn())
                o[:, n_fa * G :].copy_(flex(qs, ks, vs, block_mask=bm_s, enable_gqa=True))
                return o

            serial()
            rec(om, "serial(flash+flex)", bench_ms(serial), pairs, {"ideal_ms": ideal})
            del bm_h, bm_s
            torch.cuda.empty_cache()
        del q, k, v
        torch.cuda.empty_cache()

    print(f"\n{'context':>8} {'method':>12} {'ms':>9} {'GB/s (K+V)':>11}")
    for N in [int(x) for x in a.decode_ctx.split(",")]:
        q = torch.randn(1, Hq, 1, d, device=dev, dtype=dt)
        k = torch.randn(1, Hkv, N, d, device=dev, dtype=dt)
        v = torch.randn(1, Hkv, N, d, device=dev, dtype=dt)
        kv_bytes = 2 * Hkv * N * d * 2
        for name, be in [("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)]:
            try:
                fn, g = sdpa(q, k, v, be, causal=False)
            except RuntimeError as e:
                print(f"  {name} decode unavailable: {e}")
                continue
            ms = bench_ms(fn)
            # With repeated K/V the bytes read grow by G; report the native-layout bytes either way.
            gbs = kv_bytes / (ms * 1e-3) / 1e9
            out["decode"].append({"context": N, "method": name, "ms": ms, "gb_per_s": gbs, "kv_bytes": kv_bytes, "gqa": g})
            print(f"{N:8d} {name:>12} {ms:9.4f} {gbs:11.0f}  ({g})")
        del q, k, v
        torch.cuda.empty_cache()

    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
