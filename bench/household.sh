#!/usr/bin/env bash
# Section 13 of bench/RESULTS.md, how fast the swarm reacts (issues 13 and
# 14): a `run-now` reaching an idle agent (heartbeat 5 s), and a household
# pause rule taking a running transfer to the floor rate and back
# (bench/src/household.rs). Replaces that section (appends it when absent).
#
#   bench/household.sh              # release build, then measure (1024 MiB)
#   bench/household.sh --no-build   # reuse the release binaries
#   SIZE_MIB=256 bench/household.sh
#
# Needs nginx (scripts/setup.sh). Loopback only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/RESULTS.md"
HEADING="## 13. Reacting at once"
SIZE_MIB="${SIZE_MIB:-1024}"
note() { printf 'bench/household: %s\n' "$*" >&2; }
# shellcheck source=bench/section.sh
. "$ROOT/bench/section.sh"
bench_setup household "$@" ark-commander ark-agent household

note "household $SIZE_MIB (about a minute)"
TABLES="$(TMPDIR="$WORK" ARK_COMMANDER_BIN="$REL/ark-commander" ARK_AGENT_BIN="$REL/ark-agent" \
  "$REL/household" "$SIZE_MIB")" || { note "error: household failed"; exit 1; }

cat >"$WORK/section.md" <<MD
$HEADING

Measured by \`bench/household.sh\` (bench/src/household.rs) on $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores,
$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); release binaries; commit
$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown).

A real commander with the production heartbeat (5 s) and one real agent on
loopback. Each registered agent holds a \`Watch\` stream open; the commander
wakes the best placed agent of a run the moment it is queued, and every agent
when a pause or a household yield starts or ends. The wake is only a hint:
the agent heartbeats at once and the lease (or the floor) comes in that
heartbeat's answer, as before.

$TABLES

The yield: the agent harvests a ${SIZE_MIB} MiB file from nginx capped at 16
MiB/s (a household's WAN), through a counting TCP relay in front of nginx,
sampled every 20 ms. A \`[[pause_when]]\` command rule evaluated every second
(\`pause-check = "1s"\`, \`hold_down = "2s"\`) starts to hold; how long the rule
takes to be seen is the evaluation interval (up to 1 s), and the transfer is
at the floor within milliseconds of that. On the wire nothing moves at first:
the agent drains what its socket buffers already hold at the floor rate before
it asks the origin for more. The release comes after the hold-down, counted
from the last evaluation that saw the rule hold.
MD

replace_section "$RESULTS" "$HEADING" "$WORK/section.md" "$WORK"
note "done: $RESULTS"
