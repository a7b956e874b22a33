#!/usr/bin/env bash
# Autobahn|Testsuite conformance run for Peregrine.
#
#   scripts/autobahn.sh [server|client|all]      (default: all)
#   scripts/autobahn.sh install                  (only install/verify the suite)
#
#   server  wstest -m fuzzingclient  -> our echo_server example on 127.0.0.1:9001
#   client  wstest -m fuzzingserver on 127.0.0.1:9002 <- our autobahn_client example
#
# Installs autobahntestsuite (Python 2.7 only) into a virtualenv cached outside the
# clone, builds the examples in release mode, runs the suite, and leaves the reports
# in autobahn/reports/{servers,clients}. It does not judge the verdicts: run
# scripts/autobahn_check.py for that (scripts/test-all does both).
#
# Environment:
#   PEREGRINE_CACHE      cache root (default ~/.cache/peregrine); venv in $PEREGRINE_CACHE/autobahn-venv
#   AUTOBAHN_PYTHON2     python2.7 to use (default: pyenv's 2.7.18)
#   AUTOBAHN_CASES       JSON list overriding "cases" of both specs, e.g. '["1.*","2.*"]'
#   AUTOBAHN_EXCLUDE     JSON list overriding "exclude-cases" of both specs, e.g. '[]'
#                        (default: what autobahn/*.json say, i.e. '[]': every case)
#   AUTOBAHN_TIMEOUT     seconds allowed for each side's test run (default 1500)
#   AUTOBAHN_VERBOSE=1   stream wstest (server side) / autobahn_client (client side) output
#                        instead of only logging it to autobahn/reports/logs/
#   AUTOBAHN_REINSTALL=1 throw the cached venv away and install again
#
# See docs/autobahn.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AB_DIR=$ROOT/autobahn
REPORTS=$AB_DIR/reports
LOGS=$REPORTS/logs
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
EXAMPLES=$TARGET_DIR/release/examples

CACHE=${PEREGRINE_CACHE:-$HOME/.cache/peregrine}
VENV=$CACHE/autobahn-venv
BOOTSTRAP=$CACHE/virtualenv-py27   # virtualenv itself, installed with pip --target

SUITE_VERSION=25.10.1
VIRTUALENV_VERSION=16.7.12         # last virtualenv that runs on and creates Python 2.7 envs simply
TIMEOUT=${AUTOBAHN_TIMEOUT:-1500}

# Must match the URLs in autobahn/fuzzingclient.json and autobahn/fuzzingserver.json.
HOST=127.0.0.1
SERVER_PORT=9001
CLIENT_PORT=9002
AGENT=peregrine

# autobahntestsuite 25.10.1 pins its direct dependencies itself (Twisted 19.10.0,
# pyOpenSSL 19.1.0, cryptography 3.3.2, ...). These constraints also pin the
# transitive ones to the last releases that still work on Python 2.7, so that a
# later release missing its python_requires cannot break the install.
CONSTRAINTS='autobahntestsuite==25.10.1
autobahn==0.10.9
Twisted==19.10.0
pyOpenSSL==19.1.0
cryptography==3.3.2
service-identity==18.1.0
zope.interface==4.6.0
txaio==2.1.0
incremental==16.10.1
klein==17.10.0
Werkzeug==1.0.1
Jinja2==2.11.3
MarkupSafe==1.1.1
six==1.16.0
unittest2==1.1.0
setuptools==44.0.0
attrs==21.4.0
Automat==22.10.0
cffi==1.15.1
constantly==15.1.0
enum34==1.1.10
hyperlink==21.0.0
idna==2.10
ipaddress==1.0.23
linecache2==1.0.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
pycparser==2.21
PyHamcrest==1.10.1
traceback2==1.4.0
typing==3.10.0.0
ujson==2.0.3
wsaccel==0.6.6'
STAMP="autobahntestsuite==$SUITE_VERSION virtualenv==$VIRTUALENV_VERSION $(printf '%s' "$CONSTRAINTS" | cksum | cut -d' ' -f1)"

# wstest, with its listening sockets bound to 127.0.0.1 (the suite binds to all
# interfaces otherwise). Arguments are passed through to wstest.
WSTEST_LAUNCHER='
import sys
import autobahn.twisted.websocket as ws
import autobahntestsuite.fuzzing as fuzzing
_listen = ws.listenWS
def listen_loopback(factory, contextFactory=None, backlog=50, interface="127.0.0.1"):
    return _listen(factory, contextFactory, backlog, interface)
fuzzing.listenWS = listen_loopback
from autobahntestsuite.wstest import run
sys.argv[0] = "wstest"
run()
'

# Writes the effective spec (argv[2]) from the checked-in one (argv[1]), with the
# env overrides and an absolute outdir, and the list of case ids it selects (argv[3]),
# resolved by the suite itself, so the checker can tell missing cases.
SPEC_TOOL='
import json, os, sys
from autobahntestsuite.case import Cases, CaseSetname, CaseBasename, CaseCategories, CaseSubCategories
from autobahntestsuite.caseset import CaseSet
src, dst, expected, outdir = sys.argv[1:5]
spec = json.load(open(src))
for var, key in (("AUTOBAHN_CASES", "cases"), ("AUTOBAHN_EXCLUDE", "exclude-cases")):
    raw = os.environ.get(var, "").strip()
    if raw:
        value = json.loads(raw)
        if not isinstance(value, list):
            sys.exit("%s must be a JSON list, got %r" % (var, raw))
        spec[key] = value
spec["outdir"] = outdir
json.dump(spec, open(dst, "w"), indent=2)
cases = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories).parseSpecCases(spec)
json.dump(cases, open(expected, "w"))
print("%d cases selected (cases=%s, exclude-cases=%s)" % (len(cases), json.dumps(spec["cases"]), json.dumps(spec.get("exclude-cases", []))))
'

SERVER_PID=
WSTEST_PID=
FG_PID=
SIDE_PIDS=
declare -a TIMINGS=()

log() { printf '[autobahn] %s\n' "$*"; }
die() { printf '[autobahn] error: %s\n' "$*" >&2; exit 1; }

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
record() { # record NAME START
    local took
    took=$(elapsed "$2")
    TIMINGS+=("$1 $took")
    log "$1 took $took"
}

# Stop a process we started, by PID: TERM, then KILL after 5 s.
stop_pid() {
    local pid=$1 name=$2 _
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in ${SIDE_PIDS:-}; do stop_pid "$pid" "autobahn side"; done
    SIDE_PIDS=
    stop_pid "$FG_PID" "${FG_NAME:-foreground command}"
    FG_PID=
    stop_pid "$SERVER_PID" echo_server
    SERVER_PID=
    stop_pid "$WSTEST_PID" "wstest fuzzingserver"
    WSTEST_PID=
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# wait_port PORT PID NAME LOGFILE: until PORT accepts, or fail if PID died or 60 s passed.
wait_port() {
    local port=$1 pid=$2 name=$3 logfile=$4 _
    for _ in $(seq 600); do
        if port_open "$port"; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$logfile" >&2 || true
            die "$name exited before listening on $HOST:$port (log: $logfile)"
        fi
        sleep 0.1
    done
    tail -n 40 "$logfile" >&2 || true
    die "$name did not listen on $HOST:$port within 60 s (log: $logfile)"
}

ensure_port_free() {
    if port_open "$1"; then
        die "$HOST:$1 is already in use by another process; stop it first (this script only stops what it started)"
    fi
}

# run_logged LOGFILE CMD...: run CMD with output to LOGFILE (and to the terminal if
# AUTOBAHN_VERBOSE=1). CMD runs in the background and is waited for, so that a signal
# to this script is handled at once (bash runs traps only between commands) and the
# cleanup trap can stop CMD by its PID.
run_logged() {
    local logfile=$1 rc=0
    shift
    if [[ ${AUTOBAHN_VERBOSE:-0} == 1 ]]; then
        "$@" > >(tee "$logfile") 2>&1 &
    else
        "$@" >"$logfile" 2>&1 &
    fi
    FG_PID=$!
    wait "$FG_PID" || rc=$?
    FG_PID=
    return "$rc"
}

find_python2() {
    local root candidates=() c
    if [[ -n ${AUTOBAHN_PYTHON2:-} ]]; then
        candidates+=("$AUTOBAHN_PYTHON2")
    fi
    if command -v pyenv >/dev/null 2>&1 && root=$(pyenv root 2>/dev/null); then
        candidates+=("$root/versions/2.7.18/bin/python2.7")
    fi
    candidates+=("${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python2.7" "$HOME/.pyenv/versions/2.7.18/bin/python2.7")
    if c=$(command -v python2.7 2>/dev/null); then candidates+=("$c"); fi
    for c in "${candidates[@]}"; do
        if [[ -x $c ]] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1; then
            printf '%s' "$c"
            return 0
        fi
    done
    die "no Python 2.7 found (tried: ${candidates[*]}); set AUTOBAHN_PYTHON2"
}

venv_ok() {
    [[ -f $VENV/.peregrine-stamp && $(cat "$VENV/.peregrine-stamp") == "$STAMP" ]] || return 1
    "$VENV/bin/python" -c 'import autobahntestsuite.fuzzing, autobahntestsuite.wstest, OpenSSL.SSL' >/dev/null 2>&1 || return 1
    "$VENV/bin/wstest" -a 2>/dev/null | grep -q "AutobahnTestSuite $SUITE_VERSION"
}

install_suite() {
    mkdir -p "$CACHE"
    # One installer at a time per cache (flock is in util-linux; skip if absent).
    # The lock fd is closed again so that the processes started later do not hold it.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$CACHE/autobahn-venv.lock"
        flock 9
        local rc=0
        install_suite_locked || rc=$?
        exec 9>&-
        return "$rc"
    fi
    install_suite_locked
}

install_suite_locked() {
    local py installlog=$CACHE/autobahn-install.log
    if [[ ${AUTOBAHN_REINSTALL:-0} != 1 ]] && venv_ok; then
        log "autobahntestsuite $SUITE_VERSION already installed in $VENV"
        return 0
    fi
    py=$(find_python2) || exit 1
    log "installing autobahntestsuite $SUITE_VERSION into $VENV with $py (log: $installlog)"
    : >"$installlog"
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS=ignore
    if ! PYTHONPATH=$BOOTSTRAP "$py" -m virtualenv --version 2>/dev/null | grep -qx "$VIRTUALENV_VERSION"; then
        rm -rf "$BOOTSTRAP"
        "$py" -m pip install --quiet --target "$BOOTSTRAP" "virtualenv==$VIRTUALENV_VERSION" >>"$installlog" 2>&1 \
            || { tail -n 30 "$installlog" >&2; die "pip install virtualenv==$VIRTUALENV_VERSION failed"; }
    fi
    rm -rf "$VENV"
    PYTHONPATH=$BOOTSTRAP "$py" -m virtualenv --no-download "$VENV" >>"$installlog" 2>&1 \
        || { tail -n 30 "$installlog" >&2; die "virtualenv creation failed"; }
    printf '%s\n' "$CONSTRAINTS" >"$VENV/constraints.txt"
    if ! "$VENV/bin/pip" install -c "$VENV/constraints.txt" "autobahntestsuite==$SUITE_VERSION" >>"$installlog" 2>&1; then
        tail -n 40 "$installlog" >&2
        rm -rf "$VENV"
        die "pip install autobahntestsuite==$SUITE_VERSION failed"
    fi
    printf '%s' "$STAMP" >"$VENV/.peregrine-stamp"
    if ! venv_ok; then
        "$VENV/bin/wstest" -a >&2 || true
        rm -rf "$VENV"
        die "autobahntestsuite installed but wstest does not run"
    fi
    log "installed: $("$VENV/bin/wstest" -a 2>/dev/null | tr '\n' ' ')"
}

# prepare_spec NAME SIDE: effective spec in $LOGS, expected case list in the side's report dir.
prepare_spec() {
    local name=$1 side=$2
    rm -rf "${REPORTS:?}/$side"
    mkdir -p "$REPORTS/$side" "$LOGS"
    "$VENV/bin/python" -c "$SPEC_TOOL" "$AB_DIR/$name.json" "$LOGS/$name.json" \
        "$REPORTS/$side/expected-cases.json" "$REPORTS/$side" \
        | sed 's/^/[autobahn] /' || die "could not prepare $name spec (check AUTOBAHN_CASES / AUTOBAHN_EXCLUDE)"
}

# build_examples NAME...: one cargo invocation for all of them (the release profile
# uses fat LTO, so building both examples at once saves a lot on 2 cores).
build_examples() {
    local t args=() name
    for name in "$@"; do args+=(--example "$name"); done
    t=$(now)
    log "cargo build --release -p peregrine ${args[*]}"
    (cd "$ROOT" && cargo build --release -p peregrine "${args[@]}") || die "cargo build of the examples failed"
    for name in "$@"; do
        [[ -x $EXAMPLES/$name ]] || die "$EXAMPLES/$name missing after build"
    done
    record build "$t"
}

check_reports() { # check_reports SIDE
    [[ -s $REPORTS/$1/index.json ]] || die "no report written to $REPORTS/$1/index.json"
    log "reports: $REPORTS/$1/index.html"
}

run_server_side() {
    local t rc=0 serverlog=$LOGS/echo_server.log wslog=$LOGS/wstest-fuzzingclient.log
    prepare_spec fuzzingclient servers
    ensure_port_free "$SERVER_PORT"
    t=$(now)
    log "server testing: wstest -m fuzzingclient -> $EXAMPLES/echo_server $HOST:$SERVER_PORT"
    "$EXAMPLES/echo_server" "$HOST:$SERVER_PORT" >"$serverlog" 2>&1 &
    SERVER_PID=$!
    wait_port "$SERVER_PORT" "$SERVER_PID" echo_server "$serverlog"
    FG_NAME="wstest fuzzingclient"
    run_logged "$wslog" timeout "$TIMEOUT" \
        "$VENV/bin/python" -c "$WSTEST_LAUNCHER" -m fuzzingclient -s "$LOGS/fuzzingclient.json" || rc=$?
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 40 "$serverlog" >&2 || true
        log "echo_server exited during the run (log: $serverlog)"
        if [[ $rc == 0 ]]; then rc=1; fi
    fi
    stop_pid "$SERVER_PID" echo_server
    SERVER_PID=
    record "server run" "$t"
    if [[ $rc != 0 ]]; then
        tail -n 30 "$wslog" >&2 || true
        [[ $rc == 124 ]] && die "wstest fuzzingclient timed out after ${TIMEOUT}s (log: $wslog)"
        die "server testing failed (exit $rc; logs: $wslog, $serverlog)"
    fi
    check_reports servers
}

run_client_side() {
    local t rc=0 wslog=$LOGS/wstest-fuzzingserver.log clientlog=$LOGS/autobahn_client.log
    prepare_spec fuzzingserver clients
    ensure_port_free "$CLIENT_PORT"
    t=$(now)
    log "client testing: $EXAMPLES/autobahn_client -> wstest -m fuzzingserver on $HOST:$CLIENT_PORT"
    "$VENV/bin/python" -c "$WSTEST_LAUNCHER" -m fuzzingserver -u 0 -s "$LOGS/fuzzingserver.json" >"$wslog" 2>&1 &
    WSTEST_PID=$!
    wait_port "$CLIENT_PORT" "$WSTEST_PID" "wstest fuzzingserver" "$wslog"
    FG_NAME=autobahn_client
    run_logged "$clientlog" timeout "$TIMEOUT" \
        "$EXAMPLES/autobahn_client" "ws://$HOST:$CLIENT_PORT" "$AGENT" || rc=$?
    if ! kill -0 "$WSTEST_PID" 2>/dev/null; then
        tail -n 40 "$wslog" >&2 || true
        log "wstest fuzzingserver exited during the run (log: $wslog)"
        if [[ $rc == 0 ]]; then rc=1; fi
    fi
    stop_pid "$WSTEST_PID" "wstest fuzzingserver"
    WSTEST_PID=
    record "client run" "$t"
    if [[ $rc != 0 ]]; then
        tail -n 30 "$clientlog" >&2 || true
        [[ $rc == 124 ]] && die "autobahn_client timed out after ${TIMEOUT}s (log: $clientlog)"
        die "client testing failed (exit $rc; logs: $clientlog, $wslog)"
    fi
    check_reports clients
}

# Both sides at once: each is a single-threaded Python wstest (12.* and 13.*
# spend minutes compressing in Python), so on two cores this halves the time.
run_both_sides() {
    local server_pid client_pid rc=0
    run_side_in_background run_server_side
    server_pid=$!
    run_side_in_background run_client_side
    client_pid=$!
    SIDE_PIDS="$server_pid $client_pid"
    wait "$server_pid" || rc=1
    wait "$client_pid" || rc=1
    SIDE_PIDS=
    [[ $rc == 0 ]] || die "a side failed (see above; logs in $LOGS)"
}

# A side in a subshell of its own, which cleans up its own processes.
run_side_in_background() {
    (
        trap cleanup EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        "$1"
    ) &
}

main() {
    local mode=${1:-all} t
    case $mode in
        server | client | all | install) ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            return 0
            ;;
        *) die "usage: $0 [server|client|all|install]" ;;
    esac
    # Stale reports must never be judged: drop those of the sides about to run first,
    # so that a failed install or build leaves no index.json behind.
    if [[ $mode == server || $mode == all ]]; then rm -rf "${REPORTS:?}/servers"; fi
    if [[ $mode == client || $mode == all ]]; then rm -rf "${REPORTS:?}/clients"; fi
    t=$(now)
    install_suite
    record install "$t"
    case $mode in
        server) build_examples echo_server ;;
        client) build_examples autobahn_client ;;
        all) build_examples echo_server autobahn_client ;;
    esac
    case $mode in
        server) run_server_side ;;
        client) run_client_side ;;
        all) run_both_sides ;;
    esac
    log "timings: $(IFS=,; printf '%s' "${TIMINGS[*]}" | sed 's/,/, /g')"
}

main "$@"
