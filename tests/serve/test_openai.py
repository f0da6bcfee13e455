"""`elastic serve` through the official `openai` Python client (installed by `make setup` into
.venv): models, chat and completions, streaming and not, the elastic usage fields, errors as the
client's exception types, and the API key. Run: .venv/bin/python tests/serve/test_openai.py
[--elastic build/bin/elastic]."""
import sys

import openai

from serving import Server, check, elastic_binary

elastic = elastic_binary(sys.argv)

with Server(elastic, ["--parallel", "2", "--max-tokens", "64", "--ctx", "2048"]) as s:
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    models = client.models.list()
    check(len(models.data) == 1 and models.data[0].id, "models.list names the served model (%s)" % models.data[0].id)
    mid = models.data[0].id

    q = [{"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(model=mid, messages=q, temperature=0, max_tokens=24)
    text = chat.choices[0].message.content
    check(chat.object == "chat.completion" and chat.choices[0].message.role == "assistant" and text,
          "chat.completions.create answers: %r" % text)
    if s.real:
        check("Paris" in text, "SmolLM2 knows the capital of France")
    check(chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0, "usage counts tokens")
    el = chat.usage.model_extra["elastic"]
    check(el["heads_full"] + el["heads_sparse"] == len(el["routing"]) * len(el["routing"][0]),
          "usage.elastic: Ω_MSR %.3f, %d full / %d sparse heads, KV %d bytes" %
          (el["omega_msr"], el["heads_full"], el["heads_sparse"], el["kv_bytes"]))

    stream = client.chat.completions.create(model=mid, messages=q, temperature=0, max_tokens=24, stream=True,
                                            stream_options={"include_usage": True})
    parts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    check("".join(parts) == text, "streamed chat equals the whole answer (%d chunks)" % len(parts))
    check(finish in ("stop", "length") and usage is not None and usage.completion_tokens == chat.usage.completion_tokens,
          "stream ends with finish_reason %s and a usage chunk" % finish)

    # A byte-level token may hold part of a character (emoji): chunks carry whole characters only.
    emoji_q = [{"role": "user", "content": "Say hello in Spanish."}]
    alone = client.chat.completions.create(model=mid, messages=emoji_q, temperature=0, max_tokens=10).choices[0].message.content
    chunks = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=mid, messages=emoji_q, temperature=0, max_tokens=10, stream=True) if c.choices]
    check("".join(chunks) == alone and all("\ufffd" not in c for c in chunks),
          "streamed characters are whole (%r in %d chunks)" % (alone, len(chunks)))

    comp = client.completions.create(model=mid, prompt="The capital of France is", temperature=0, max_tokens=8, stop=["\n"])
    check(comp.object == "text_completion" and "\n" not in comp.choices[0].text,
          "completions.create with a stop string: %r (%s)" % (comp.choices[0].text, comp.choices[0].finish_reason))

    seeded = [client.completions.create(model=mid, prompt="Once upon a time", temperature=0.9, seed=7, max_tokens=12)
              .choices[0].text for _ in range(2)]
    check(seeded[0] == seeded[1], "the same seed gives the same sampled text")

    full = client.completions.create(model=mid, prompt="Hello", max_tokens=2, extra_body={"elastic": {"attention": "full"}})
    check(full.usage.model_extra["elastic"]["omega_msr"] == 0, "a request may ask for full attention")

    try:
        client.completions.create(model=mid, prompt="x", max_tokens=1000)
        check(False, "max_tokens above the limit is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "limit" in str(e), "max_tokens above the limit: BadRequestError")
    try:
        client.chat.completions.create(model=mid, messages=[{"role": "user", "content": "x" * 100000}], max_tokens=4)
        check(False, "an oversized prompt is refused")
    except openai.BadRequestError as e:
        check("context" in str(e), "an oversized prompt: BadRequestError (context_length_exceeded)")

with Server(elastic, ["--api-key", "k-123"]) as s:
    bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
    try:
        bad.models.list()
        check(False, "a wrong API key is refused")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, "a wrong API key: AuthenticationError")
    good = openai.OpenAI(base_url=s.url + "/v1", api_key="k-123", max_retries=0)
    check(len(good.models.list().data) == 1, "the right API key is accepted")
# SIGTERM drains: a request in flight finishes, then the process exits 0.
import json, signal, threading, time, urllib.request  # noqa: E401,E402
with Server(elastic, ["--drain", "60"]) as s:
    result = {}

    def inflight():
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        r = c.completions.create(model="m", prompt="Once upon a time", temperature=0, max_tokens=40)
        result["text"], result["reason"] = r.choices[0].text, r.choices[0].finish_reason

    t = threading.Thread(target=inflight)
    t.start()
    deadline = time.time() + 60
    while json.loads(s.get("/health")[1])["running"] == 0 and time.time() < deadline:
        time.sleep(0.01)
    s.proc.send_signal(signal.SIGTERM)
    t.join(120)
    code = s.proc.wait(120)
    s.log.seek(0)
    check(result.get("text") and result.get("reason") in ("length", "stop"),
          "SIGTERM: the request in flight completed (%s)" % result.get("reason"))
    check(code == 0 and "draining" in s.log.read(), "SIGTERM: the server drained and exited 0")
print("test_openai: all passed")
