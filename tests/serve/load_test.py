"""Bounded load test of `elastic serve` (loopback only; stops by itself): N concurrent clients for S
seconds mixing streaming, non-streaming, cancelled and malformed requests (invalid JSON, wrong
types, huge numbers, 10 MB bodies, invalid UTF-8, truncated requests). Passes when the server never
crashes, every valid request gets exactly the answer it gets alone (temperature 0), every malformed
one gets its error, and the server's RSS stays flat after warm-up. Stdlib only.
Run: python3 tests/serve/load_test.py [--elastic BIN] [--clients 32] [--seconds 60] [--json OUT]."""
import argparse
import http.client
import json
import random
import socket
import sys
import threading
import time

from serving import Server, elastic_binary

ap = argparse.ArgumentParser()
ap.add_argument("--elastic")
ap.add_argument("--clients", type=int, default=32)
ap.add_argument("--seconds", type=float, default=60)
ap.add_argument("--json")
ap.add_argument("--rss-slack-mib", type=float, default=16, help="allowed RSS growth after warm-up")
args = ap.parse_args()
elastic = elastic_binary(sys.argv)

PROMPTS = ["What is the capital of France?", "Name three colours.", "What is 2 + 2?", "Say hello in Spanish.",
           "What is the largest planet?", "Write one word that rhymes with cat."]
MAX_TOKENS = 10


def body(prompt, stream):
    return json.dumps({"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": MAX_TOKENS,
                       "stream": stream})


def request(s, raw, timeout=300):
    c = http.client.HTTPConnection(s.host, s.port, timeout=timeout)
    c.request("POST", "/v1/chat/completions", raw, {"Content-Type": "application/json"})
    r = c.getresponse()
    return c, r


def whole(s, prompt):
    c, r = request(s, body(prompt, False))
    data = r.read()
    c.close()
    if r.status != 200:
        return r.status, data.decode(errors="replace")
    return 200, json.loads(data)["choices"][0]["message"]["content"]


def streamed(s, prompt, cancel=False):
    c, r = request(s, body(prompt, True))
    if r.status != 200:
        data = r.read()
        c.close()
        return r.status, data.decode(errors="replace")
    text, done = "", False
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            break
        j = json.loads(line[6:])
        if "error" in j:
            return 500, j["error"]["message"]
        for ch in j["choices"]:
            text += ch.get("delta", {}).get("content") or ""
        if cancel and text:
            c.sock.shutdown(socket.SHUT_RDWR)
            c.close()
            return 200, None
    c.close()
    return (200, text) if done else (0, "stream ended without [DONE]")


def raw_send(s, data, read=True):
    """Sends bytes on a fresh socket; returns the status line's code or None."""
    sock = socket.create_connection((s.host, s.port), timeout=60)
    try:
        sock.sendall(data)
        if not read:
            return None
        resp = b""  # (no half-close: cpp-httplib drops a request whose client shut its side)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            resp += chunk
        return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/") else None
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    finally:
        sock.close()


def post_raw(payload, length=None):
    n = len(payload) if length is None else length
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % n) + payload


MALFORMED = {
    "invalid_json": (b'{"messages": [', 400),
    "wrong_type": (b'{"messages": "hello", "max_tokens": 5}', 400),
    "huge_number": (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e308}', 400),
    "huge_integer": (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 123456789012345678901234567890}', 400),
    "invalid_utf8": (b'{"messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}', 400),
}

with Server(elastic, ["--parallel", "4", "--queue", "64", "--max-tokens", "64"]) as s:
    expected = {}
    for p in PROMPTS:
        st, text = whole(s, p)
        assert st == 200, (p, st, text)
        expected[p] = text
    counts, unexpected = {}, []
    lock = threading.Lock()
    rss = []
    t_start = time.time()
    t_end = t_start + args.seconds

    def note(kind, ok, detail=""):
        with lock:
            counts[kind] = counts.get(kind, 0) + 1
            if not ok:
                unexpected.append((kind, str(detail)[:300]))

    def client(i):
        rng = random.Random(i)
        kinds = ["stream"] * 4 + ["whole"] * 4 + ["cancel"] * 2 + list(MALFORMED) + ["big_body", "truncated"]
        while time.time() < t_end:
            kind = rng.choice(kinds)
            p = rng.choice(PROMPTS)
            try:
                if kind == "stream":
                    st, text = streamed(s, p)
                    note(kind, st == 200 and text == expected[p], (st, text, expected[p]))
                elif kind == "whole":
                    st, text = whole(s, p)
                    note(kind, st == 200 and text == expected[p], (st, text, expected[p]))
                elif kind == "cancel":
                    st, _ = streamed(s, p, cancel=True)
                    note(kind, st == 200, st)
                elif kind == "big_body":
                    payload = b'{"messages": [{"role": "user", "content": "' + b"a" * (10 << 20) + b'"}]}'
                    st = raw_send(s, post_raw(payload))
                    note(kind, st in (413, "reset"), st)  # refused before or while the body is sent
                elif kind == "truncated":
                    raw_send(s, post_raw(b'{"messages": [{"role"', length=500), read=False)
                    note(kind, True)
                else:
                    payload, want = MALFORMED[kind]
                    st = raw_send(s, post_raw(payload))
                    note(kind, st == want, st)
            except Exception as e:  # a transport error on a valid request is a failure
                note(kind, False, repr(e))

    def sample_rss():
        while time.time() < t_end + 1:
            if s.alive():
                rss.append((time.time() - t_start, s.rss_kib()))
            time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sampler.join()
    alive = s.alive()
    _, metrics = s.get("/metrics") if alive else (0, "")
    warm = [kib for t, kib in rss if t >= args.seconds * 0.25]
    report = {
        "clients": args.clients, "seconds": args.seconds, "model": s.model, "alive": alive,
        "requests": counts, "total_requests": sum(counts.values()), "unexpected": unexpected[:20],
        "unexpected_count": len(unexpected),
        "rss_mib": {"first": rss[0][1] / 1024 if rss else 0, "after_warmup": warm[0] / 1024 if warm else 0,
                    "max_after_warmup": max(warm) / 1024 if warm else 0, "last": warm[-1] / 1024 if warm else 0},
        "rss_mib_every_5s": [round(kib / 1024, 1) for t, kib in rss[::10]],
        "completion_tokens": next((float(l.split()[1]) for l in metrics.splitlines()
                                   if l.startswith("elastic_completion_tokens_total ")), 0),
    }
    growth = report["rss_mib"]["max_after_warmup"] - report["rss_mib"]["after_warmup"]
    report["rss_growth_after_warmup_mib"] = growth
    ok = alive and not unexpected and growth <= args.rss_slack_mib
    report["passed"] = ok
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    sys.exit(0 if ok else 1)
