# Sourced by the scripts that drive a release build of ferry (bench.sh,
# soak.sh): sets ferry_bin to $FERRY_BIN if given, otherwise builds release.
# Needs repo_root and log() from the caller.

if [[ -n "${FERRY_BIN:-}" ]]; then
    log "using FERRY_BIN=$FERRY_BIN, not building"
    ferry_bin="$FERRY_BIN"
else
    log "building ferry (cargo build --release)"
    cargo build --release >&2
    ferry_bin="${CARGO_TARGET_DIR:-$repo_root/target}/release/ferry"
fi
if [[ ! -x "$ferry_bin" ]]; then
    log "no ferry binary at $ferry_bin"
    exit 1
fi
