#!/usr/bin/env python3
"""One table of our fused kernel against the peers, from the JSON of one device-check run.

  python3 bench/peers/compare.py OURS.json PEERS.json [--markdown out.md]

OURS.json: elastic bench attention --backend cuda --json; PEERS.json: bench/peers/peers.py --json,
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
    rows = json.load(open(a.ours))  # `elastic bench attention --backend cuda --json`: one object per row
    prefill = [r for r in rows if "seq" in r]
    decode = [r for r in rows if "decode_ctx" in r]
    head = prefill[0] if prefill else {}
    ours = {"device": head.get("backend"), "heads": head.get("q_heads"), "kv_heads": head.get("kv_heads"),
            "head_dim": head.get("head_dim")}
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
    for r in prefill:
        seq, om = r["seq"], r["msr"]
        if om == 0:
            flex = peer(seq, 0.0, "flex-dense")
            serial = None
            flash, cudnn = peer(seq, 0.0, "sdpa-flash"), peer(seq, 0.0, "sdpa-cudnn")
        else:
            flex, serial = peer(seq, om, "flex-hybrid"), peer(seq, om, "serial(flash+flex)")
            flash = cudnn = None
        ms = r["time_ms"]["median"]
        lines.append(
            f"| {seq // 1024}K | {om:g} | {ms:.2f} | {r['tflops']:.0f} | {100 * r['fraction_of_ideal']:.0f} % | "
            f"{fmt(flex)}{' (dense)' if om == 0 and flex else ''} | {fmt(serial)} | {fmt(flash)} | {fmt(cudnn)} | "
            f"{fmt(flex / ms if flex else None)} | {fmt(serial / ms if serial else None)} |"
        )
    lines += ["", "| context | config | ours ms | GB/s | KV cache MB | SDPA flash dense ms | cuDNN dense ms |", "|---|---|---|---|---|---|---|"]
    for r in decode:
        N = r["decode_ctx"]
        pf = [p["ms"] for p in peers.get("decode", []) if p["context"] == N and p["method"] == "sdpa-flash"]
        pc = [p["ms"] for p in peers.get("decode", []) if p["context"] == N and p["method"] == "sdpa-cudnn"]
        for cfg, ms, gbs, kv in (("full", r["full_ms"], r["full_gbs"], r["full_kv_bytes"]),
                                 (f"{r['config']} Ω {r['msr']:g}", r["ms"], r["gbs"], r["kv_bytes"])):
            lines.append(
                f"| {N // 1024}K | {cfg} | {ms:.4f} | {gbs:.0f} | {kv / 1e6:.1f} | "
                f"{fmt(pf[0] if pf else None, '{:.4f}')} | {fmt(pc[0] if pc else None, '{:.4f}')} |"
            )
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
