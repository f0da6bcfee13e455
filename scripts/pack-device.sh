#!/usr/bin/env bash
# Packs what the GPU machine lacks to build and test Elastic: the Debian packages of our build
# dependencies (that machine has nvcc, cmake, ninja and python but none of these, and no network).
# Run here, from the repository root; writes .carry/debs/*.deb (gitignored) for scripts/device-check.sh,
# which unpacks them with `dpkg -x` under /tmp/deps on the GPU machine (never into /).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.carry/debs
# Build dependencies: headers, CMake/pkg-config files and the .so files we link.
pkgs=(
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3   # PCRE2 (tokenizer regexes)
  nlohmann-json3-dev libcli11-dev                                        # header-only
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread            # CPU backend GEMMs
  zlib1g                                                                  # runtime, used only where absent
  googletest libgtest-dev libgmock-dev                                    # tests (built from source there)
  pkgconf pkgconf-bin libpkgconf3                                         # in case pkg-config is missing
  libgfortran5 libquadmath0 libgomp1                                      # runtimes, used only where absent
)
rm -rf "$dest"
mkdir -p "$dest"
( cd "$dest" && apt-get download "${pkgs[@]}" >/dev/null )
n=$(ls "$dest"/*.deb | wc -l)
bytes=$(du -cb "$dest"/*.deb | tail -1 | cut -f1)
awk -v n="$n" -v d="$dest" -v b="$bytes" 'BEGIN { printf "pack-device: %d packages in %s, %.1f MB\n", n, d, b / 1e6 }'
if [ "$bytes" -gt 40000000 ]; then
  echo "pack-device: over the 40 MB budget" >&2
  exit 1
fi
