#!/usr/bin/env bash
# Section 11 of bench/RESULTS.md, what following sources that move costs
# (issue 12): the requests and bytes of a check that finds nothing new, per
# source (a Kiwix book from a mirror directory and from an OPDS catalog, a
# feed, a git repository, a forge account), and the time to list an account
# of 1,000 repositories and bring up mirrors of 100 of them on three agents
# (bench/src/sources.rs). Replaces that section (appends it when absent).
#
#   bench/sources.sh              # release build, then measure
#   bench/sources.sh --no-build   # reuse target/release binaries
#   LISTED=1000 MIRRORED=100 bench/sources.sh
#
# Needs nginx, git and the ZIM fixtures (scripts/setup.sh). Loopback only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/RESULTS.md"
HEADING="## 11. Sources that move"
LISTED="${LISTED:-1000}"
MIRRORED="${MIRRORED:-100}"
note() { printf 'bench/sources: %s\n' "$*" >&2; }
# shellcheck source=bench/section.sh
. "$ROOT/bench/section.sh"
bench_setup sources "$@" ark-commander ark-agent sources

note "sources $LISTED $MIRRORED (a few minutes)"
TABLES="$(TMPDIR="$WORK" ARK_COMMANDER_BIN="$REL/ark-commander" ARK_AGENT_BIN="$REL/ark-agent" \
  "$REL/sources" "$LISTED" "$MIRRORED")" || { note "error: sources failed"; exit 1; }

cat >"$WORK/section.md" <<MD
$HEADING

Measured by \`bench/sources.sh\` (bench/src/sources.rs) on $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores,
$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); release binaries; commit
$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown).

A real commander and real agents on loopback. The first table is what the
origin served for one check that found nothing new (nginx's access log, the
git server's and the fake forge's request logs), after a first harvest of
each source. The second is a forge account served by the fake forge (the
JSON and pagination of Gitea's API), its chosen repositories by
\`git http-backend\`.

$TABLES
MD

replace_section "$RESULTS" "$HEADING" "$WORK/section.md" "$WORK"
note "done: $RESULTS"
