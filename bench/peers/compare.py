#!/usr/bin/env python3
"""One table of our fused kernel against the peers, from the JSON of one device-check run.

  python3 bench/peers/compare.py OURS.json PEERS.json [--markdown out.md]

OURS.json: build-cuda/bin/bench-attention-cuda --json; PEERS.json: bench/peers/peers.py --json,
both measured on the same machine in the same scripts/device-check.sh run. Ratios are peer time /
our time (> 1: we are faster). H100 dense bf16 peak for the fraction column: 989 TFLOP/s (SXM).
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("peers")
    ap.add_argument("--markdown", default=None)
    a = ap.parse_args()
    ours = json.load(open(a.ours))
    peers = json.load(open(a.peers))

    def peer(seq, om, method):
        for r in peers["prefill"]:
            if r["seq"] == seq and abs(r["omega"] - om) < 1e-6 and r["method"] == method:
                return r["ms"]
        return None

    def fmt(x, f="{:.2f}"):
        return "" if x is None else f.format(x)

    lines = [
        f"Device: {ours.get('device')} (ours) / {peers.get('device')} (peers, torch {peers.get('torch')}); "
        f"{ours.get('heads')}/{ours.get('kv_heads')} heads, d {ours.get('head_dim')}, bf16, batch 1, causal.",
        "",
        "| seq | Ω_MSR | ours ms | ours TFLOP/s | of own ideal | FlexAttention ms | serial ms | SDPA flash (dense) | cuDNN (dense) | Flex / ours | serial / ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ours["prefill"]:
        seq, om = r["seq"], r["omega"]
        if om == 0:
            flex = peer(seq, 0.0, "flex-dense")
            serial = None
            flash, cudnn = peer(seq, 0.0, "sdpa-flash"), peer(seq, 0.0, "sdpa-cudnn")
        else:
            flex, serial = peer(seq, om, "flex-hybrid"), peer(seq, om, "serial(flash+flex)")
            flash = cudnn = None
        ms = r["ms_median"]
        lines.append(
            f"| {seq // 1024}K | {om:g} | {ms:.2f} | {r['tflops']:.0f} | {100 * r['fraction_of_ideal']:.0f} % | "
            f"{fmt(flex)}{' (dense)' if om == 0 and flex else ''} | {fmt(serial)} | {fmt(flash)} | {fmt(cudnn)} | "
            f"{fmt(flex / ms if flex else None)} | {fmt(serial / ms if serial else None)} |"
        )
    lines += ["", "| context | config | ours ms | tok/s | GB/s | KV cache MB | SDPA flash dense ms | cuDNN dense ms |", "|---|---|---|---|---|---|---|---|"]
    for r in ours.get("decode", []):
        N = r["context"]
        pf = [p["ms"] for p in peers.get("decode", []) if p["context"] == N and p["method"] == "sdpa-flash"]
        pc = [p["ms"] for p in peers.get("decode", []) if p["context"] == N and p["method"] == "sdpa-cudnn"]
        lines.append(
            f"| {N // 1024}K | {r['config']} | {r['ms_median']:.4f} | {r['tok_per_s']:.0f} | {r['gb_per_s']:.0f} | "
            f"{r['cache_bytes'] / 1e6:.1f} | {fmt(pf[0] if pf else None, '{:.4f}')} | {fmt(pc[0] if pc else None, '{:.4f}')} |"
        )
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
