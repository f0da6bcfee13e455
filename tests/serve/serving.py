"""Starts `elastic serve` for the Python tests (tests/serve/*.py): the real SmolLM2 when it is
fetched (`make model`), else a tiny random Qwen3 with the real Qwen3 tokenizer, on a free loopback
port. Stdlib only, so that every test can import it."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
DEFAULT_MODEL = os.environ.get("ELASTIC_MODEL", os.path.join(SOURCE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
ROUTER = os.path.join(SOURCE, "routers", "smollm2-135m-fa-ssa.safetensors")


def real_model():
    return os.path.exists(DEFAULT_MODEL)


def tiny_model(elastic, workdir):
    """A tiny random Qwen3 (with the Qwen3 chat template), written once into workdir."""
    out = os.path.join(workdir, "tiny-qwen3")
    if not os.path.exists(os.path.join(out, "config.json")):
        tok = os.path.join(SOURCE, "..", "shared", "fixtures", "tokenizers", "qwen3")
        subprocess.run([elastic, "random-model", "--arch", "tiny-qwen3", "--tokenizer", tok, "-o", out],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return out


class Server:
    """`elastic serve` on a free port; use as a context manager. args: extra flags."""

    def __init__(self, elastic, args=(), model=None, log=None):
        self.elastic = elastic
        self.workdir = tempfile.mkdtemp(prefix="elastic-serve-py-")
        if model is None:
            if real_model():
                model, extra = DEFAULT_MODEL, ["--router", ROUTER]
            else:
                model, extra = tiny_model(elastic, self.workdir), ["--attention", "full"]
        else:
            extra = []
        self.model = model
        self.real = model == DEFAULT_MODEL
        self.cmd = [elastic, "serve", "-m", model, "--port", "0"] + extra + list(args)
        self.log_path = log or os.path.join(self.workdir, "serve.log")

    def __enter__(self):
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            self.log.seek(0)
            m = re.search(r"http://([0-9.]+):(\d+)", self.log.read())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                self.url = "http://%s:%d" % (self.host, self.port)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.log.seek(0)
        raise RuntimeError("elastic serve did not start: " + self.log.read())

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def get(self, path, timeout=30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.status, r.read().decode()


def elastic_binary(argv):
    for i, a in enumerate(argv):
        if a == "--elastic" and i + 1 < len(argv):
            return os.path.abspath(argv[i + 1])
    return os.path.join(SOURCE, "build", "bin", "elastic")


def check(cond, what):
    if not cond:
        print("FAIL:", what, file=sys.stderr)
        sys.exit(1)
    print("ok:", what)
