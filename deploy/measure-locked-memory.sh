#!/bin/sh
# What `defaults.lock_memory` costs: the agent's resident and locked memory
# with and without it, at NODES configured nodes (default a million; socket
# datapath on lo, no traffic), 6 s after the start. Run as root, from the
# repository, after `cargo build --release`:
#
#     deploy/measure-locked-memory.sh [target/release/hb] [NODES]
set -eu
HB=${1:-target/release/hb}
NODES=${2:-1000000}
WORK=$(mktemp -d /tmp/hb-locked.XXXXXX)
AGENT=
cleanup() {
    if [ -n "$AGENT" ]; then kill -INT "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

for lock in false true; do
    rm -f "$WORK"/state*
    cat >"$WORK/hb.toml" <<EOF
interfaces = ["lo"]
port = 17998
datapath = "socket"
max_nodes = $((NODES + 1))
status_socket = "$WORK/hb.sock"
state_file = "$WORK/state"

[defaults]
interval = "1s"
lock_memory = $lock

[http]
listen = ""

[[node_ranges]]
first_id = 1
count = $NODES
name_prefix = "n"
EOF
    "$HB" agent --config "$WORK/hb.toml" >"$WORK/agent.log" 2>&1 &
    AGENT=$!
    sleep 6
    printf 'lock_memory = %s, %s nodes:' "$lock" "$NODES"
    awk '/^(VmRSS|VmLck|RssAnon|RssFile|RssShmem):/ {printf " %s %d MB", $1, $2 / 1024}' "/proc/$AGENT/status"
    echo
    kill -INT "$AGENT"
    wait "$AGENT" || true
    AGENT=
done
