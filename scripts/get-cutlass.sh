#!/usr/bin/env bash
# CUTLASS/CuTe headers for the Hopper (sm_90a) prefill kernel, from the PyPI wheel
# nvidia-cutlass==4.2.0.0 (it carries the C++ headers under cutlass_library/source/include).
# Unpacks them into third_party/cutlass/include (gitignored). The wheel comes from .carry/cutlass/
# when it was carried there (the GPU machine has no network), else from PyPI. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.2.0.0
WHEEL=nvidia_cutlass-$VERSION-py3-none-any.whl
SHA256=f9599ada45c7bcb6bf53f7d3f0a7d154183e53451c01bfa59eecd37dd4a693f6
DEST=third_party/cutlass
if [ -f "$DEST/include/cute/tensor.hpp" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
mkdir -p third_party
src=""
for c in ".carry/cutlass/$WHEEL" "third_party/$WHEEL"; do
  [ -f "$c" ] && src=$c && break
done
if [ -z "$src" ]; then
  echo "get-cutlass: downloading nvidia-cutlass==$VERSION from PyPI (6.4 MB)" >&2
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    "nvidia-cutlass==$VERSION" -d third_party
  src=third_party/$WHEEL
fi
echo "$SHA256  $src" | sha256sum -c --quiet || { echo "get-cutlass: checksum mismatch for $src" >&2; exit 1; }
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
python3 - "$src" "$DEST.tmp/include" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "cutlass_library/source/include/"
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if n.startswith(prefix) and not n.endswith("/"):
            out = os.path.join(dest, n[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(n) as f, open(out, "wb") as g:
                g.write(f.read())
PY
echo "$VERSION" > "$DEST.tmp/VERSION"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "get-cutlass: headers in $DEST/include" >&2
