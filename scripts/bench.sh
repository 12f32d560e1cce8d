#!/usr/bin/env bash
# One command for the whole benchmark: install the peer tools that are
# missing, build ferry, then hand over to bench.py, which runs every case and
# prints the results table.
#
#   scripts/bench.sh [--reps N] [--quick] [--only ferry,socat,...] [--dufs] [--concurrent N]
#                    [--baseline-bin PATH] [--s3]
#
# --s3 (or --only s3) adds ferry on an S3 store against rclone, both to a
# moto server on 127.0.0.1; it installs rclone and moto (target/s3-venv).
#
# --only ferry runs both ferry modes; ferry-plain or ferry-tls runs one.
# With both, a table gives TLS MB/s / plain MB/s for each size and direction.
# --only idle-memory holds 1,000 idle connections on a plain server, then on
# a TLS one (TLS and ferry handshakes done, no request).
# --only trees runs put -r and get -r of whole trees (10,000 x 4 KiB and
# 100 x 10 MiB; --quick scales them down) against rsync -r, tar + socat and
# scp -r; ferry rows say "not supported by this build" for a ferry without -r.
# Beside the 100 x 10 MiB tree ferry also puts and gets one 1 GiB file (with
# --quick, 200 MiB: the scaled tree's bytes), turn by turn with the tree, to
# judge the tree against the single file's MB/s.
# --only resume cuts a 1 GiB ferry put and get (plain and TLS) with SIGINT
# once the receiver's partial passes 512 MiB, runs the same command again,
# and holds that run against a fresh transfer of the same bytes (issue 14).
# --only rate puts and gets 100 MiB (plain and TLS) with the client's
# --limit-rate 20M and holds the MB/s against 20 MB/s (issue 16: within 5%).
#
# FERRY_BIN=/path/to/ferry skips the build and benchmarks that binary instead.
# FERRY_BASELINE_BIN=/path/to/old/ferry, like --baseline-bin, also runs the
# ferry rows of that binary, rep by rep with ferry's, and compares the two; a
# --baseline-bin argument wins over it. Before and after, ferry rows only:
#
#   scripts/bench.sh --only ferry --baseline-bin /path/to/old/ferry
#
# Every argument is passed on to bench.py; see `python3 scripts/bench.py --help`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

want_dufs=false
want_s3=false
previous=""
for arg in "$@"; do
    case "$arg" in
        --dufs) want_dufs=true ;;
        --s3) want_s3=true ;;
        --only=*s3*) want_s3=true ;;
        *s3*) [[ "$previous" == "--only" ]] && want_s3=true ;;
        # Help needs neither the peers nor a build.
        -h | --help) exec python3 "$repo_root/scripts/bench.py" --help ;;
    esac
    previous="$arg"
done

log() { printf 'bench.sh: %s\n' "$*" >&2; }

# apt-get needs root; use sudo only when we are not root already.
as_root=()
if [[ "$(id -u)" -ne 0 ]]; then
    as_root=(sudo)
fi

# Debian packages of the peers we compare against. openssh-client brings scp
# and sftp, openssh-server sshd. time brings /usr/bin/time, which measures a
# client's peak memory without counting the Python process that spawned it.
packages=(socat netcat-openbsd openssh-server openssh-client rsync iperf3 curl time)
if $want_s3; then
    packages+=(rclone)
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# True when apt knows an installable version of the package; false when the
# package lists are missing or stale, which is when an update is needed.
has_candidate() {
    local candidate
    candidate="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
    [[ -n "$candidate" && "$candidate" != "(none)" ]]
}

missing=()
for package in "${packages[@]}"; do
    if ! is_installed "$package"; then
        missing+=("$package")
    fi
done

install_missing() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

if ((${#missing[@]} > 0)); then
    updated=false
    for package in "${missing[@]}"; do
        if ! has_candidate "$package"; then
            log "package lists do not know $package; running apt-get update"
            "${as_root[@]}" apt-get update -qq
            updated=true
            break
        fi
    done
    log "installing ${missing[*]}"
    # Lists that know a package can still be too old for the mirror.
    if ! install_missing; then
        if $updated; then
            exit 1
        fi
        log "install failed; running apt-get update and trying again"
        "${as_root[@]}" apt-get update -qq
        install_missing
    fi
else
    log "peer tools already installed"
fi

bench_args=()
if $want_dufs; then
    # Installed under target/ so nothing outside the clone changes; cargo
    # install is slow, so an existing binary is reused.
    dufs_root="$repo_root/target/bench-tools"
    if [[ ! -x "$dufs_root/bin/dufs" ]]; then
        log "installing dufs into $dufs_root"
        cargo install dufs --locked --root "$dufs_root" >&2
    fi
    bench_args+=(--dufs-bin "$dufs_root/bin/dufs")
fi

if $want_s3 && [[ ! -x "$repo_root/target/s3-venv/bin/python" ]]; then
    # The S3 server the tests use (tests/common/s3.rs makes the same venv).
    log "installing moto into target/s3-venv"
    rm -rf "$repo_root/target/s3-venv.making"
    python3 -m venv "$repo_root/target/s3-venv.making"
    "$repo_root/target/s3-venv.making/bin/pip" install --quiet --disable-pip-version-check \
        'moto[server]==5.2.5' >&2
    mv "$repo_root/target/s3-venv.making" "$repo_root/target/s3-venv"
fi

if [[ -n "${FERRY_BASELINE_BIN:-}" ]]; then
    # Before "$@" on the command line, so that --baseline-bin there wins.
    bench_args+=(--baseline-bin "$FERRY_BASELINE_BIN")
fi

source "$repo_root/scripts/ferry-bin.sh"

exec python3 "$repo_root/scripts/bench.py" --ferry-bin "$ferry_bin" "${bench_args[@]}" "$@"
