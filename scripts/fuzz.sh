#!/usr/bin/env bash
# Bounded fuzzing with cargo-fuzz (libFuzzer): peregrine-proto (frames, masking, assembly,
# UTF-8, handshakes), peregrine-wire (command and message codecs) and the server's session
# command handling (fuzz/README.md lists the targets).
#
#   scripts/fuzz.sh                 every target, FUZZ_SECONDS each
#   scripts/fuzz.sh assemble mask   only those targets
#   scripts/fuzz.sh --list          the targets and exit
#
# Installs cargo-fuzz (cached in ~/.cargo/bin) when it is missing. Only a
# stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it accept the nightly
# flags cargo-fuzz passes (-Zsanitizer=address, -Cpasses=sancov-module...).
# Each run starts from fuzz/corpus/<target>/ (kept between runs, gitignored)
# plus the committed seeds in fuzz/seeds/<target>/. A crash leaves its input in
# fuzz/artifacts/<target>/; the script goes on with the other targets, prints
# every artifact found and exits 1. Inputs kept in fuzz/regressions/<target>/
# (past crashes) are replayed before each target is fuzzed.
#
# Environment:
#   FUZZ_SECONDS      seconds per target (default 60)
#   FUZZ_JOBS         libFuzzer processes per target (default 1; >1 uses -fork=N)
#   FUZZ_SANITIZER    address (default) or none (faster, finds less)
#   FUZZ_ARGS         extra libFuzzer flags, e.g. "-max_len=65536"
#   FUZZ_OUT          where corpus/ and artifacts/ go (default fuzz/); give runs
#                     that share the checkout at the same time their own
#   CARGO_FUZZ_VERSION  version to install when missing (default 0.13.2)
#
# Reproduce a crash:  RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>   (from fuzz/)
# Minimize it:        RUSTC_BOOTSTRAP=1 cargo fuzz tmin <target> <artifact>
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ_DIR=$ROOT/fuzz
FUZZ_OUT=${FUZZ_OUT:-$FUZZ_DIR}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

all_targets() {
    local f
    for f in "$FUZZ_DIR"/fuzz_targets/*.rs; do
        basename "$f" .rs
    done
}

if [[ ${1:-} == --list ]]; then
    all_targets
    exit 0
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
    for t in "${targets[@]}"; do
        if [[ ! -f $FUZZ_DIR/fuzz_targets/$t.rs ]]; then
            echo "fuzz.sh: no target '$t' (have: $(all_targets | tr '\n' ' '))" >&2
            exit 2
        fi
    done
else
    mapfile -t targets < <(all_targets)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

cd "$FUZZ_DIR"
build_flags=(--sanitizer "$FUZZ_SANITIZER")
echo "==> building ${targets[*]} ($(cargo fuzz --version), sanitizer $FUZZ_SANITIZER)"
for t in "${targets[@]}"; do
    cargo fuzz build "${build_flags[@]}" "$t"
done

mkdir -p "$FUZZ_OUT/artifacts"
failed=()
for t in "${targets[@]}"; do
    # Inputs that once crashed a target replay first, as regression tests.
    if compgen -G "$FUZZ_DIR/regressions/$t/*" >/dev/null; then
        echo "==> replaying $(find "$FUZZ_DIR/regressions/$t" -type f | wc -l) regression input(s) of $t"
        if ! cargo fuzz run "${build_flags[@]}" "$t" "$FUZZ_DIR"/regressions/"$t"/* \
            >"$FUZZ_OUT/artifacts/$t.regressions.log" 2>&1; then
            echo "!!> $t fails on a regression input; see $FUZZ_OUT/artifacts/$t.regressions.log"
            grep -a -E -A4 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$FUZZ_OUT/artifacts/$t.regressions.log" |
                head -n 20 | sed 's/^/    /'
            failed+=("$t")
            continue
        fi
    fi
    corpus=$FUZZ_OUT/corpus/$t
    artifacts=$FUZZ_OUT/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    if [[ -d $FUZZ_DIR/seeds/$t ]]; then
        cp -n "$FUZZ_DIR"/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    fi
    # Artifacts from earlier runs are not this run's findings.
    before=$(find "$artifacts" -type f | sort)
    log=$FUZZ_OUT/artifacts/$t.log
    echo "==> fuzzing $t for ${FUZZ_SECONDS}s (corpus $(find "$corpus" -type f | wc -l) inputs, log $log)"
    extra=()
    if [[ $FUZZ_JOBS -gt 1 ]]; then
        extra+=(-fork="$FUZZ_JOBS" -ignore_crashes=0)
    fi
    # HTTP tokens help the handshake parsers past the request line; command keys (JSON and
    # MessagePack) help the wire decoder into the commands.
    if [[ $t == handshake_* ]]; then
        extra+=(-dict="$FUZZ_DIR/dicts/http.dict")
    elif [[ $t == wire_decode ]]; then
        extra+=(-dict="$FUZZ_DIR/dicts/wire.dict")
    fi
    # session_commands reads a script from its input: long inputs from the start (not
    # libFuzzer's slowly growing length) reach deep sessions in a 20 s run (coverage 12.8k
    # against 8.7k edges after 45 s, fuzz/README.md).
    if [[ $t == session_commands ]]; then
        extra+=(-len_control=0 -max_len=4096)
    fi
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run "${build_flags[@]}" "$t" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" -artifact_prefix="$artifacts/" -print_final_stats=1 \
        "${extra[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | sed '/^$/d')
    grep -a -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+.*DONE' "$log" | sed 's/^/    /' || true
    if [[ $status -ne 0 || -n $new ]]; then
        echo "!!> $t FAILED (exit $status); from $log:"
        # The panic message (or sanitizer report) and libFuzzer's summary.
        grep -a -E -A4 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" | head -n 30 | sed 's/^/    /'
        grep -a -E '^SUMMARY' "$log" | sed 's/^/    /' || true
        for a in $new; do
            echo "!!> artifact: $a"
            echo "    reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t $a)"
        done
        failed+=("$t")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "==> crashes in: ${failed[*]}"
    exit 1
fi
echo "==> no crash in ${targets[*]} (${FUZZ_SECONDS}s each)"
