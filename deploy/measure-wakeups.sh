#!/bin/sh
# What one wake-up of the agent's sweep thread costs on this host, and the
# floor under it: run as root, from the repository, after
# `cargo build --release`:
#
#     deploy/measure-wakeups.sh [target/release/hb]
#
# 1. The floor: a 20-line C program (needs cc) that does nothing but sleep
#    until an absolute CLOCK_MONOTONIC deadline every 1 ms, 10,000 times,
#    with clock_nanosleep and with the futex wait the sweep thread uses.
# 2. The agent: 1,000 configured nodes (max_nodes 1024), the socket
#    datapath on lo, no traffic, sweep_period 1ms (so 1,000 wake-ups a
#    second), the HTTP API on 127.0.0.1:19097. CPU per wake-up is the
#    agent's utime + stime over 10 s divided by the sweeps done (the
#    hb_sweep_duration_seconds histogram's count in /metrics), and perf's
#    task-clock if perf is installed; then `strace -c -f` for 5 s.
set -eu
HB=${1:-target/release/hb}
WORK=$(mktemp -d /tmp/hb-wakeups.XXXXXX)
AGENT=
cleanup() {
    if [ -n "$AGENT" ]; then kill -INT "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

if command -v cc >/dev/null; then
    cat >"$WORK/floor.c" <<'EOF'
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]), futex = argv[2][0] == 'f';
    uint32_t word = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (int i = 0; i < n; i++) {
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) { next.tv_nsec -= 1000000000; next.tv_sec++; }
        if (futex)
            syscall(SYS_futex, &word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0, &next, NULL,
                    FUTEX_BITSET_MATCH_ANY);
        else
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double us = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
    printf("floor, %s: utime+stime %.1f us per wake-up\n", futex ? "futex wait" : "clock_nanosleep", us / n);
    return 0;
}
EOF
    cc -O2 -o "$WORK/floor" "$WORK/floor.c"
    for kind in n f; do
        if command -v perf >/dev/null; then
            perf stat -x, -e task-clock -o "$WORK/floor.perf" "$WORK/floor" 10000 $kind
            awk -F, '/task-clock/ {printf "       perf task-clock %.1f us per wake-up\n", $1 * 1000 / 10000}' "$WORK/floor.perf"
        else
            "$WORK/floor" 10000 $kind
        fi
    done
else
    echo "no cc: the floor is not measured"
fi

cat >"$WORK/hb.toml" <<EOF
interfaces = ["lo"]
port = 17997
datapath = "socket"
max_nodes = 1024
status_socket = "$WORK/hb.sock"
state_file = "$WORK/state"

[defaults]
interval = "1s"
sweep_period = "1ms"

[http]
listen = "127.0.0.1:19097"

[[node_ranges]]
first_id = 1
count = 1000
name_prefix = "n"
EOF
"$HB" agent --config "$WORK/hb.toml" >"$WORK/agent.log" 2>&1 &
AGENT=$!
sleep 3
sweeps() { curl -s http://127.0.0.1:19097/metrics | awk '/^hb_sweep_duration_seconds_count/ {print $2}'; }
ticks() { awk '{print $14 + $15}' "/proc/$AGENT/stat"; }
HZ=$(getconf CLK_TCK)
s0=$(sweeps); t0=$(ticks)
if command -v perf >/dev/null; then
    perf stat -x, -e task-clock -p "$AGENT" -o "$WORK/agent.perf" -- sleep 10
else
    sleep 10
fi
s1=$(sweeps); t1=$(ticks)
echo "agent: $((s1 - s0)) sweeps in 10 s"
awk -v t="$((t1 - t0))" -v hz="$HZ" -v s="$((s1 - s0))" \
    'BEGIN {printf "agent: utime+stime %.1f us per wake-up\n", t * 1e6 / hz / s}'
if [ -f "$WORK/agent.perf" ]; then
    awk -F, -v s="$((s1 - s0))" '/task-clock/ {printf "agent: perf task-clock %.1f us per wake-up\n", $1 * 1000 / s}' "$WORK/agent.perf"
fi
curl -s http://127.0.0.1:19097/metrics |
    awk '/^hb_sweep_duration_seconds_sum/ {sum = $2} /^hb_sweep_duration_seconds_count/ {n = $2}
         END {printf "agent: the sweep itself %.2f us on average\n", sum * 1e6 / n}'
if command -v strace >/dev/null; then
    s2=$(sweeps)
    timeout -s INT 5 strace -c -f -p "$AGENT" -o "$WORK/strace.txt" 2>/dev/null || true
    s3=$(sweeps)
    echo "agent: syscalls in 5 s ($((s3 - s2)) sweeps meanwhile), strace -c -f:"
    cat "$WORK/strace.txt"
fi
