#!/usr/bin/env bash
# Installs what idx needs on a fresh Debian machine (as root, non-interactive,
# safe to run again) and builds idx in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

# libcurl4: nightly downloads (loaded with dlopen only when one runs); libcurl4-openssl-dev: the
# curl.h that Sources/CCurl takes curl's constants and prototypes from.
# hyperfine: scripts/bench-search times `idx search` end to end with it.
# wrk: scripts/bench-serve's load generator (the tests' HTTP client is Foundation's, over libcurl4).
packages=(libopenblas-dev libzstd-dev libcsv-dev libxxhash-dev openmpi-bin libopenmpi-dev libcurl4 libcurl4-openssl-dev zstd pkg-config time hyperfine wrk)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "setup: system packages already installed" >&2
fi

command -v swift >/dev/null || { echo "setup: swift is not on PATH; install Swift 6.x first (https://swift.org/install)" >&2; exit 1; }
swift build -c release --product idx
echo "setup: built $(swift build -c release --show-bin-path)/idx" >&2
