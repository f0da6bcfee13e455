#!/usr/bin/env python3
"""PyTorch peers of our decode kernels on the GPU machine (issue 12), same shapes and timing method
as `elastic bench attention --decode-ctx` and `elastic bench gemv`: 50 back-to-back calls on one
stream between two CUDA events (mean per call), median of 7 reps, each call on a different copy of
its inputs, enough copies to pass 256 MiB, so no call finds the previous one's bytes in the L2.
(triton.testing.do_bench instead zeroes a 256 MB buffer before every call and puts events around
each single call, mean of the calls; where triton is installed its decode-attention figure is
printed too, as "do_bench", for comparison with numbers taken that way.)

  - copy: a device-to-device copy of 1 GiB (read + write bytes / time), the bandwidth ceiling the
    issue's fractions are taken of;
  - decode attention: one query token, 32 query / 8 KV heads, d 128, bf16, contexts 32K and 128K:
    SDPA (enable_gqa, else K/V repeated, which reads G times the bytes; both are named) with the
    flash, cuDNN and efficient backends, GB/s of the native K+V bytes, K/V copies past 256 MiB;
  - GEMV: y = W x for the Qwen3-8B layer shapes and LM head, bf16 (F.linear of one row), GB/s of W,
    each call on a different copy of W past 256 MB so the L2 holds none of it.

  python3 bench/peers/decode_peer.py --json decode-peer.json
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(fn, iters=50, reps=7):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ms = []
    for _ in range(reps):
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b) / iters)
    return sorted(ms)[len(ms) // 2]


def do_bench_ms(fn):
    """triton.testing.do_bench (L2 flushed by a 256 MB write before each call, events around each
    call, mean), or None without triton."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    try:
        return float(do_bench(fn, warmup=25, rep=100))
    except Exception:  # an older or newer signature: the figure is only for comparison
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--decode-ctx", default="32768,131072")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--shapes", default="4096x4096,4096x1024,4096x12288,12288x4096,4096x151936")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dev, dt = "cuda", torch.bfloat16
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "copy": {}, "decode": [], "gemv": []}
    print(f"device {out['device']}, torch {torch.__version__}")

    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), iters=10)
    out["copy"] = {"bytes": 2 * src.numel(), "ms": ms, "gb_per_s": 2 * src.numel() / ms * 1e-6}
    print(f"copy 1 GiB: {ms:.3f} ms, {out['copy']['gb_per_s']:.0f} GB/s (read + write)")
    del src, dst
    torch.cuda.empty_cache()

    Hq, Hkv, d = a.heads, a.kv_heads, a.head_dim
    G = Hq // Hkv
    print(f"\ndecode attention, {Hq}/{Hkv} heads, d {d}, bf16")
    print(f"{'context':>8} {'method':>12} {'ms':>9} {'GB/s (K+V)':>11}")
    for N in [int(x) for x in a.decode_ctx.split(",")]:
        q = torch.randn(1, Hq, 1, d, device=dev, dtype=dt)
        kv_bytes = 2 * Hkv * N * d * 2
        copies = max(1, -(-(256 << 20) // kv_bytes))  # together past 256 MiB: the L2 (~50 MB) holds none
        kvs = [(torch.randn(1, Hkv, N, d, device=dev, dtype=dt), torch.randn(1, Hkv, N, d, device=dev, dtype=dt))
               for _ in range(copies)]
        nxt = [0]

        def kv():
            nxt[0] = (nxt[0] + 1) % copies
            return kvs[nxt[0]]
        for name, be in [("sdpa-flash", SDPBackend.FLASH_ATTENTION), ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION),
                         ("sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION)]:
            fn, how = None, None
            for gqa in (True, False):
                try:
                    if gqa:
                        f = lambda: F.scaled_dot_product_attention(q, *kv(), enable_gqa=True)
                    else:
                        reps = [(k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)) for k, v in kvs]

                        def f():
                            kv()
                            return F.scaled_dot_product_attention(q, *reps[nxt[0]])
                    with sdpa_kernel(be):
                        f()
                    fn, how = f, "enable_gqa" if gqa else "repeated K/V"
                    break
                except (RuntimeError, TypeError):
                    continue
            if fn is None:
                print(f"{N:8d} {name:>12} unavailable")
                continue
            with sdpa_kernel(be):
                ms = time_ms(fn)
                dob = do_bench_ms(fn)
            gbs = kv_bytes / ms * 1e-6
            out["decode"].append({"context": N, "method": name, "ms": ms, "gb_per_s": gbs, "kv_bytes": kv_bytes, "gqa": how,
                                  "kv_copies": copies, "do_bench_ms": dob})
            extra = f", do_bench {dob:.4f} ms" if dob is not None else ""
            print(f"{N:8d} {name:>12} {ms:9.4f} {gbs:11.0f}  ({how}, {copies} K/V copies{extra})")
        del q, kvs
        torch.cuda.empty_cache()

    print("\ngemv (torch F.linear, bf16, one token)")
    print(f"{'in -> out':>16} {'MB':>7} {'ms':>8} {'GB/s':>6}")
    for s in a.shapes.split(","):
        i, o = (int(t) for t in s.split("x"))
        wbytes = i * o * 2
        copies = max(1, (256 << 20) // wbytes + 1)
        Ws = [torch.full((o, i), 0.011, device=dev, dtype=dt) for _ in range(copies)]
        x = torch.randn(1, i, device=dev, dtype=dt)
        n = [0]

        def call():
            n[0] += 1
            return F.linear(x, Ws[n[0] % copies])

        ms = time_ms(call)
        gbs = wbytes / ms * 1e-6
        out["gemv"].append({"in": i, "out": o, "ms": ms, "gb_per_s": gbs, "weight_bytes": wbytes})
        print(f"{i:>7} -> {o:<6} {wbytes * 1e-6:7.1f} {ms:8.4f} {gbs:6.0f}")
        del Ws
        torch.cuda.empty_cache()

    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
