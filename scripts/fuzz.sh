#!/usr/bin/env bash
# Fuzzes ferry with the cargo-fuzz targets in fuzz/, one at a time:
#
#   decode   protocol::decode on any bytes
#   name     RemoteName::parse on any string
#   session  a whole server session fed any bytes, against a live server
#   manifest protocol::ManifestOrder over the tree entries of any frames
#
# Usage:
#
#   scripts/fuzz.sh [--seconds N] [--sanitizer none|address] [TARGET...]
#
# Runs each TARGET named (all four by default) for N seconds (default 60),
# then prints one line per target: runs, executions per second, corpus size
# (units/bytes libFuzzer keeps, and files on disk) and crashes found.
# Exits 1 if any target crashed or failed to run, 2 on bad usage.
# Installs cargo-fuzz first if it is missing.
#
# Toolchain: stable. With the default sanitizer, none, cargo-fuzz gives rustc
# only stable flags (SanitizerCoverage through -Cpasses and -Cllvm-args,
# --cfg fuzzing, debug assertions and overflow checks), so nothing else is
# needed. `--sanitizer address` adds -Zsanitizer=address, a nightly flag:
# stable rustc takes it under RUSTC_BOOTSTRAP=1, which this script then
# sets, and stable ships the ASan runtime.
#
# Why none by default: ferry has no unsafe code, so AddressSanitizer would
# only watch its dependencies (tokio, rustix, cap-std), at about half the
# speed on a 2-core machine; the checks in fuzz/checks/ and the overflow
# checks find what safe Rust gets wrong: panics, wrong answers, hangs,
# leftover files. Use `--sanitizer address` for an occasional long run.
#
# Files:
#   fuzz/corpus/TARGET/       the growing corpus (not committed); the seeds of
#                             fuzz/checks/seeds.rs are (re)written into it first
#   fuzz/regressions/TARGET/  inputs that once failed: read as corpus here, and
#                             replayed by `cargo test --test fuzz_regressions`
#   fuzz/artifacts/TARGET/    inputs libFuzzer saved as crashes (not committed)
#   fuzz/target/fuzz-logs/TARGET.log   libFuzzer's output of the last run
#
# After a crash:
#   cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...   # reproduce
#   cargo fuzz tmin -s none TARGET fuzz/artifacts/TARGET/crash-...  # minimize
# then copy the minimized input to fuzz/regressions/TARGET/ under a name that
# says what it is.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

all_targets=(decode name session manifest)

usage() {
    sed -n '/^# Usage:/,/^# Installs cargo-fuzz/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

log() { printf 'fuzz.sh: %s\n' "$*" >&2; }

seconds=60
sanitizer=none
targets=()
while (($# > 0)); do
    case "$1" in
        --seconds) seconds="${2:-}"; shift 2 || usage ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        --sanitizer) sanitizer="${2:-}"; shift 2 || usage ;;
        --sanitizer=*) sanitizer="${1#*=}"; shift ;;
        -h | --help) usage ;;
        -*) log "unknown option $1"; usage ;;
        *) targets+=("$1"); shift ;;
    esac
done
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    log "--seconds needs a positive whole number, not '$seconds'"
    usage
fi
case "$sanitizer" in
    none) ;;
    address) export RUSTC_BOOTSTRAP=1 ;;
    *) log "--sanitizer is none or address, not '$sanitizer'"; usage ;;
esac
if ((${#targets[@]} == 0)); then
    targets=("${all_targets[@]}")
fi
for target in "${targets[@]}"; do
    if [[ ! " ${all_targets[*]} " =~ " $target " ]]; then
        log "no fuzz target named '$target' (there are: ${all_targets[*]})"
        usage
    fi
done

# Longest input per target: a whole frame of the largest size, a name just
# past the 4096-byte limit, a session of many small requests, and a
# manifest of a few dozen entries.
max_len() {
    case "$1" in
        decode) echo 16400 ;;
        name) echo 4400 ;;
        session) echo 4096 ;;
        manifest) echo 4096 ;;
    esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

log "building ${targets[*]} with sanitizer $sanitizer on $(rustc --version)"
for target in "${targets[@]}"; do
    cargo fuzz build -s "$sanitizer" "$target"
done

log "writing the seed corpora"
cargo run --quiet --manifest-path fuzz/Cargo.toml --example write_seeds -- \
    fuzz/corpus "${targets[@]}"

# Crashing inputs libFuzzer has saved for a target (slow units are not
# crashes).
artifacts() {
    if [[ -d "fuzz/artifacts/$1" ]]; then
        find "fuzz/artifacts/$1" -maxdepth 1 -type f \
            \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) |
            sort
    fi
}

final_stat() {
    # libFuzzer's final statistics: `stat::NAME: VALUE`.
    awk -v key="stat::$1:" '$1 == key { print $2 }' "$2" | tail -n 1
}

last_corpus() {
    # libFuzzer's last status line says `corp: UNITS/BYTES`: the corpus it
    # keeps in memory, without the inputs it has since replaced by smaller
    # ones (those stay on disk).
    awk '{ for (i = 1; i < NF; i++) if ($i == "corp:") c = $(i + 1) } END { print c }' "$1"
}

log_dir=fuzz/target/fuzz-logs
mkdir -p "$log_dir"
rows=()
new_crashes=()
failed=false
for target in "${targets[@]}"; do
    log "fuzzing $target for ${seconds}s (log: $log_dir/$target.log)"
    before="$(artifacts "$target")"
    status=ok
    # The regressions are read as corpus too; new inputs go to the first
    # directory only. -timeout is per input and a backstop: the session
    # checks report a hang after 5 s with a clearer message.
    if ! cargo fuzz run -s "$sanitizer" "$target" \
        "fuzz/corpus/$target" "fuzz/regressions/$target" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$target")" \
        -timeout=30 -print_final_stats=1 >"$log_dir/$target.log" 2>&1; then
        status=failed
        failed=true
    fi
    found="$(comm -13 <(echo "$before") <(artifacts "$target") | sed '/^$/d')"
    crashes=0
    if [[ -n "$found" ]]; then
        crashes="$(wc -l <<<"$found")"
        status=crashed
        new_crashes+=("$found")
    fi
    files="$(find "fuzz/corpus/$target" -maxdepth 1 -type f | wc -l)"
    corpus="$(last_corpus "$log_dir/$target.log")"
    runs="$(final_stat number_of_executed_units "$log_dir/$target.log")"
    speed="$(final_stat average_exec_per_sec "$log_dir/$target.log")"
    rows+=("$(printf '%-8s %12s %8s %13s %7s %8s  %s' "$target" "${runs:--}" "${speed:--}" \
        "${corpus:--}" "$files" "$crashes" "$status")")
done

printf '\n%-8s %12s %8s %13s %7s %8s  %s\n' \
    target runs exec/s corpus files crashes result
printf '%s\n' "${rows[@]}"
if ((${#new_crashes[@]} > 0)); then
    printf '\nnew crashing inputs:\n'
    printf '%s\n' "${new_crashes[@]}"
fi
if $failed; then
    printf '\nsee %s/TARGET.log for what libFuzzer said.\n' "$log_dir"
    exit 1
fi
