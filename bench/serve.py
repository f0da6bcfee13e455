"""Throughput of `elastic serve`: C concurrent streaming clients (C in --clients, default 1,4,16),
each sending chat requests back to back for --seconds; reports aggregate decode tokens/s (all
completion tokens over the wall time of the level) and time to first token (p50 / p99, from sending
the request to its first content chunk). One server per level with --parallel C. Stdlib only.
Run: python3 bench/serve.py [--elastic build/bin/elastic] [-m MODEL] [--backend cpu|cuda]
     [--clients 1,4,16] [--seconds 30] [--max-tokens 64] [--json OUT] [-- extra serve flags]"""
import argparse
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "serve"))
from serving import Server  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--elastic", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "bin", "elastic"))
ap.add_argument("-m", "--model")
ap.add_argument("--backend", default="cpu")
ap.add_argument("--clients", default="1,4,16")
ap.add_argument("--seconds", type=float, default=30)
ap.add_argument("--max-tokens", type=int, default=64)
ap.add_argument("--json")
ap.add_argument("extra", nargs="*")
a = ap.parse_args()

TOPICS = ["the history of Rome", "how a bicycle works", "why the sky is blue", "the water cycle", "black holes",
          "the rules of chess", "photosynthesis", "the printing press", "volcanoes", "the moon landing",
          "honey bees", "the internet", "glaciers", "the violin", "coffee", "lighthouses"]


def one(s, i, ttfts, tokens):
    body = json.dumps({"messages": [{"role": "user", "content": "Tell me about %s." % TOPICS[i % len(TOPICS)]}],
                       "temperature": 0, "max_tokens": a.max_tokens, "stream": True,
                       "stream_options": {"include_usage": True}})
    c = http.client.HTTPConnection(s.host, s.port, timeout=600)
    t0 = time.time()
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    first = None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        j = json.loads(line[6:])
        if first is None and any(ch.get("delta", {}).get("content") for ch in j.get("choices", [])):
            first = time.time() - t0
        if j.get("usage"):
            tokens.append(j["usage"]["completion_tokens"])
    c.close()
    if first is not None:
        ttfts.append(first)


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


rows = []
for C in [int(x) for x in a.clients.split(",")]:
    flags = ["--parallel", str(C), "--backend", a.backend] + a.extra
    with Server(a.elastic, flags, model=a.model) as s:
        one(s, 0, [], [])  # warm-up
        ttfts, tokens = [], []
        t_end = time.time() + a.seconds

        def client(k):
            i = k
            while time.time() < t_end:
                one(s, i, ttfts, tokens)
                i += C

        t0 = time.time()
        th = [threading.Thread(target=client, args=(k,)) for k in range(C)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        wall = time.time() - t0
        row = {"clients": C, "requests": len(tokens), "completion_tokens": sum(tokens), "wall_s": round(wall, 2),
               "decode_tok_s": round(sum(tokens) / wall, 2), "ttft_p50_s": round(pct(ttfts, 0.5), 3),
               "ttft_p99_s": round(pct(ttfts, 0.99), 3), "model": os.path.basename(s.model.rstrip("/"))}
        rows.append(row)
        print(json.dumps(row), flush=True)
print("| clients | requests | completion tokens | aggregate decode tok/s | TTFT p50 | TTFT p99 |")
print("|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %d | %d | %d | %.1f | %.2f s | %.2f s |" % (r["clients"], r["requests"], r["completion_tokens"],
                                                       r["decode_tok_s"], r["ttft_p50_s"], r["ttft_p99_s"]))
if a.json:
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)
