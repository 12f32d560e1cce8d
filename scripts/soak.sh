#!/usr/bin/env bash
# One command for the soak: build ferry, then hand over to soak.py, which
# runs many clients and a killer against one server and checks the result.
#
#   scripts/soak.sh [--workers N] [--seconds S] [--seed SEED] [--max-size SIZE] [--tls]
#
# Plain TCP by default, as in earlier runs; --tls soaks the TLS path.
#
# FERRY_BIN=/path/to/ferry skips the build and soaks that binary instead.
# Every argument is passed on to soak.py; see `python3 scripts/soak.py --help`.
# Needs only python3 and the Rust toolchain.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

for arg in "$@"; do
    case "$arg" in
        # Help needs no build.
        -h | --help) exec python3 "$repo_root/scripts/soak.py" --help ;;
    esac
done

log() { printf 'soak.sh: %s\n' "$*" >&2; }

source "$repo_root/scripts/ferry-bin.sh"

exec python3 "$repo_root/scripts/soak.py" --ferry-bin "$ferry_bin" "$@"
