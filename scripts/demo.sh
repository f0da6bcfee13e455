#!/usr/bin/env bash
# `make demo`: the default model answers a question about one fact buried in a long document.
# The document is the GNU GPL v3 text that every Debian system ships (/usr/share/common-licenses),
# with one sentence inserted at about 60 % of its length; the prompt is over 3000 tokens.
# Attention: elastic fa-ssa with the trained router of routers/ (docs/training.md): each KV head
# runs full attention or streaming (sink 128 + local 2048) as the router decides for this prompt;
# the statistics line reports the share of streaming heads it chose (Ω_MSR) and of attention pairs skipped (Ω_ESR),
# and the last line whether the answer holds the password. The question asks for the password only:
# with an open question, the 135M model's greedy answer hinged on a near-tie between "states:" and
# "states that" (1 or 2 threads flipped it), and in the first case it quotes the licence instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin/elastic
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
router=routers/smollm2-135m-fa-ssa.safetensors
doc=/usr/share/common-licenses/GPL-3
[ -f "$doc" ] || { echo "demo: $doc not found (Debian's base-files package provides it)" >&2; exit 1; }
prompt=$(mktemp /tmp/elastic-demo.XXXXXX)
answer=$(mktemp /tmp/elastic-demo-answer.XXXXXX)
trap 'rm -f "$prompt" "$answer"' EXIT
needle="Important note for readers of this copy: the secret password of the archive is BLUE-HARBOR-42."
python3 - "$doc" "$prompt" "$needle" <<'PY'
import sys
text = open(sys.argv[1]).read()[:14000]
cut = text.rfind("\n\n", 0, int(len(text) * 0.6))
doc = text[:cut] + "\n\n" + sys.argv[3] + "\n\n" + text[cut:]
q = ("\n\nQuestion: According to the note in the document above, what is the secret password of the archive? "
     "Answer with the password only.")
open(sys.argv[2], "w").write("Read this document.\n\n" + doc + q)
PY
echo "== elastic run --chat on a long document (question: the archive's secret password; expected BLUE-HARBOR-42)" >&2
echo "== attention: elastic fa-ssa, trained router $router" >&2
"$bin" run -m "$model" --router "$router" --attention fa-ssa --chat -f "$prompt" -n 32 --temp 0 -v | tee "$answer"
if grep -q "BLUE-HARBOR-42" "$answer"; then
  echo "== the answer holds the password: yes" >&2
else
  echo "== the answer holds the password: NO (see docs/results.md for the trained routers' quality)" >&2
fi
