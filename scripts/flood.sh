#!/usr/bin/env bash
# One command for the floods of issue 12: build ferry, then hand over to
# flood.py, which runs each attack against a fresh server, one at a time,
# and prints the table (also saved to target/flood/results.md).
#
#   scripts/flood.sh [--quick] [--only ROW,ROW]
#
# Full size takes about 10 minutes on a 2-core machine, --quick about 3.
# Run it as root: row 3 mounts a small tmpfs (it is skipped, saying why,
# where mounting fails). All traffic stays on 127.0.0.0/8.
#
# FERRY_BIN=/path/to/ferry skips the build and floods that binary instead.
# Every argument is passed on to flood.py; see `python3 scripts/flood.py --help`.
# Needs only python3 and the Rust toolchain.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

for arg in "$@"; do
    case "$arg" in
        # Help needs no build.
        -h | --help) exec python3 "$repo_root/scripts/flood.py" --ferry-bin /dev/null --help ;;
    esac
done

log() { printf 'flood.sh: %s\n' "$*" >&2; }

source "$repo_root/scripts/ferry-bin.sh"

exec python3 "$repo_root/scripts/flood.py" --ferry-bin "$ferry_bin" "$@"
