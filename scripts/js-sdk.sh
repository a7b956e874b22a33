#!/usr/bin/env bash
# The TypeScript client SDK (sdk/js): its core tests under Node (no socket), the shared
# scenarios under Node against the real server, and the browser tests in headless Debian
# Chromium (playwright-core) against the real server, some through a loopback proxy that
# cuts connections.
#
#   scripts/js-sdk.sh [all|install|core|browser]      (default: all)
#
# Installs what is missing, idempotently: Debian's chromium, nginx and redis-server (apt-get,
# needs root; the tests run their own nginx and redis, never the system's), the npm dev dependencies (npm ci in sdk/js, npm's cache in $PEREGRINE_CACHE/npm; never a
# downloaded browser). Builds the release `peregrine` binary and the SDK (tsc + esbuild).
# Servers listen on free 127.0.0.1 ports and are stopped by PID by the tests themselves.
# The last line is "js: N passed, M failed".
#
# Environment:
#   PEREGRINE_CACHE   cache root (default ~/.cache/peregrine)
#   JS_SDK_CHROMIUM   browser binary (default /usr/bin/chromium; installed only if missing)
#   JS_SDK_TIMEOUT    seconds allowed for each test run (default 600)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SDK=$ROOT/sdk/js
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=${PEREGRINE_CACHE:-$HOME/.cache/peregrine}
CHROMIUM=${JS_SDK_CHROMIUM:-/usr/bin/chromium}
TIMEOUT=${JS_SDK_TIMEOUT:-600}
# shellcheck source=scripts/chromium.sh
source "$ROOT/scripts/chromium.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0

install_chromium() {
    install_debian_chromium js "$CHROMIUM" "$WORK/apt.log"
}

# The fallback tests start nginx (test/browser/fallback.test.mjs) and redis-server
# (test/node/node-gone.test.mjs) themselves; a policy-rc.d keeps the packages from starting
# the system's own.
install_services() {
    local missing=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v redis-server >/dev/null || missing+=(redis-server)
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || { echo "js: ${missing[*]} missing and we are not root: apt-get install -y ${missing[*]}" >&2; return 1; }
    echo "js: installing ${missing[*]} (apt-get)"
    local policy=/usr/sbin/policy-rc.d placed=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && placed=1
    fi
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; }; } \
        >"$WORK/apt-services.log" 2>&1 || rc=$?
    ((placed)) && rm -f "$policy"
    ((rc == 0)) || { tail -20 "$WORK/apt-services.log"; echo "js: apt-get install ${missing[*]} failed" >&2; }
    return "$rc"
}

install_node() {
    command -v node >/dev/null && command -v npm >/dev/null || { echo "js: node and npm are needed" >&2; return 1; }
    local want stamp=$SDK/node_modules/.peregrine-lock.sha256
    want=$(sha256sum "$SDK/package-lock.json" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        return 0
    fi
    echo "js: npm ci in sdk/js"
    (cd "$SDK" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error \
        --cache "$CACHE/npm") 2>&1 | grep -v 'Unknown user config' || true
    [[ -x $SDK/node_modules/.bin/tsc && -d $SDK/node_modules/playwright-core ]] \
        || { echo "js: npm ci failed" >&2; return 1; }
    printf '%s\n' "$want" >"$stamp"
}

build() {
    (cd "$ROOT" && cargo build --release -p peregrine-cli)
    (cd "$SDK" && node scripts/build.mjs)
}

# run LABEL PATHS...: one `node --test` run; adds its counts (TAP "# pass" / "# fail").
run() {
    local label=$1 rc=0 p f
    shift
    echo "-- js $label"
    (cd "$SDK" && SDK_TEST_SERVER_BIN=$TARGET_DIR/release/peregrine CHROMIUM=$CHROMIUM \
        timeout -k 10 "$TIMEOUT" node --test --test-reporter=tap "$@") >"$WORK/$label.log" 2>&1 || rc=$?
    p=$(awk '/^# pass [0-9]+$/ { print $3 }' "$WORK/$label.log" | tail -1)
    f=$(awk '/^# fail [0-9]+$/ { print $3 }' "$WORK/$label.log" | tail -1)
    p=${p:-0}
    f=${f:-0}
    # A failed run with no failing test (a hook, a crash, the timeout) still fails.
    if [[ $rc != 0 && $f == 0 ]]; then f=1; fi
    if [[ $rc != 0 ]]; then
        grep -vE '^ +(at |stack:|\.\.\.|---)' "$WORK/$label.log" | grep -B2 -A12 '^ *not ok' | head -150 || tail -60 "$WORK/$label.log"
    fi
    grep -E '^ *(ok|not ok) ' "$WORK/$label.log" | sed 's/^/  /' || true
    echo "js $label: $p passed, $f failed"
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
}

main() {
    local what=${1:-all} start=$SECONDS
    case $what in all | install | core | browser) ;; *)
        echo "usage: scripts/js-sdk.sh [all|install|core|browser]" >&2
        exit 2
        ;;
    esac
    if ! { install_node && install_services && case $what in core) true ;; *) install_chromium ;; esac; }; then
        echo "js: installing failed"
        echo "js: 0 passed, 1 failed"
        exit 1
    fi
    [[ $what == install ]] && exit 0
    if ! build; then
        echo "js: build failed"
        echo "js: 0 passed, 1 failed"
        exit 1
    fi
    case $what in all | core) run core test/core/ test/node/ ;; esac
    case $what in all | browser) run chromium test/browser/ ;; esac
    echo "js: took $((SECONDS - start)) s"
    echo "js: $PASSED passed, $FAILED failed"
    [[ $FAILED == 0 ]]
}

main "$@"
