#!/usr/bin/env bash
# Section 10 of bench/RESULTS.md, what zero trust costs (issue 11): bytes
# the agents send the NAS and bytes the origin sends the agents for one file
# at quorum 1, 2 and 3, the cost of a K = 8 spot check, the time from the
# last confirmation to landed, and --quorum adaptive against --quorum 2
# (bench/src/quorum.rs). Replaces that section (appends it when absent).
#
#   bench/trust.sh               # release build, then measure (1024 MiB, 30 harvests)
#   bench/trust.sh --no-build    # reuse target/release binaries
#   SIZE_MIB=256 HARVESTS=20 bench/trust.sh
#
# Needs nginx (scripts/setup.sh). Loopback only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/RESULTS.md"
HEADING="## 10. Zero trust"
SIZE_MIB="${SIZE_MIB:-1024}"
HARVESTS="${HARVESTS:-30}"
note() { printf 'bench/trust: %s\n' "$*" >&2; }
# shellcheck source=bench/section.sh
. "$ROOT/bench/section.sh"
bench_setup trust "$@" ark-commander ark-agent quorum

note "quorum $SIZE_MIB $HARVESTS (a few minutes)"
TABLES="$(TMPDIR="$WORK" ARK_COMMANDER_BIN="$REL/ark-commander" ARK_AGENT_BIN="$REL/ark-agent" \
  "$REL/quorum" "$SIZE_MIB" "$HARVESTS")" || { note "error: quorum failed"; exit 1; }

cat >"$WORK/section.md" <<MD
$HEADING

Measured by \`bench/trust.sh\` (bench/src/quorum.rs) on $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores,
$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); release binaries; commit
$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown).

A real commander and N real agents on loopback harvest one ${SIZE_MIB} MiB file from
nginx. **agents → NAS** is every byte the agents sent the commander through a
counting TCP relay (gRPC over mTLS: manifests, the upload, heartbeats and
progress while the run lasted); **origin → agents** is what nginx's access log
says it sent the agents (each member fetches on its own: that is the
confirmation). **last confirmation → landed** is from the last member's
\`voted\` event to the landed run's finish. The spot check's bytes are the
commander's own range requests in nginx's log.

$TABLES

Goal (issue 11): the NAS receives the file once whatever the quorum; each
extra confirmation costs a manifest and its heartbeats, not the file. The
difference between the quorum rows (a few MiB at most) is the heartbeats and
progress reports of the runs' different lengths, not a second copy.

Adaptive quorum against \`--quorum 2\`: every harvest is confirmed until an
agent has 10 confirmed in a row for the kind, then 1 in 10 (secretly drawn).
The saving is in the confirmations, i.e. the second fetch from the origin
(the NAS receives each version once either way); it grows with the run: in the
long run an adaptive target costs about 1.1 fetches a harvest against 2.
MD

replace_section "$RESULTS" "$HEADING" "$WORK/section.md" "$WORK"
note "done: $RESULTS"
