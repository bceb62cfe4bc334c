#!/usr/bin/env bash
# Section 8 of bench/RESULTS.md, the operator surface (issue #5): the time
# from `ark-demo` start to its first landed file, and the
# commander's RSS with and without the dashboard open in headless Chromium.
# Replaces that section of RESULTS.md (appends it when absent).
#
#   bench/surface.sh             # release build, then measure
#   bench/surface.sh --no-build  # reuse target/release binaries
#
# Needs what the tests need (scripts/setup.sh): zim-tools, git, chromium +
# chromium-driver. Loopback only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/RESULTS.md"
HEADING="## 8. Operator surface"
RUNS="${RUNS:-3}"
die() { printf 'bench/surface: error: %s\n' "$*" >&2; exit 1; }
note() { printf 'bench/surface: %s\n' "$*" >&2; }

cd "$ROOT"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
REL="$TARGET_DIR/release"
if [[ "${1:-}" != "--no-build" ]]; then
  note "cargo build --release -p ark-commander -p ark-agent -p ark-demo --bins"
  cargo build --release -p ark-commander -p ark-agent -p ark-demo --bins >&2
fi
[[ -x "$REL/ark-commander" && -x "$REL/ark-agent" ]] || die "release binaries missing in $REL"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ark-surface.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

firsts=() alls=()
for i in $(seq 1 "$RUNS"); do
  out="$("$REL/ark-demo" --once --dir "$WORK/demo-$i" 2>&1)" || die "demo failed: $out"
  line="$(grep 'harvested, verified and landed in' <<<"$out")" || die "no summary in: $out"
  grep -q '^skipped' <<<"$out" && die "the demo skipped a kind (install zim-tools and git): $out"
  # "... landed in 1.3s (first file after 513.5ms):"
  alls+=("$(sed -E 's/.*landed in ([0-9.]+m?s).*/\1/' <<<"$line")")
  firsts+=("$(sed -E 's/.*first file after ([0-9.]+m?s).*/\1/' <<<"$line")")
done
median() { printf '%s\n' "$@" | python3 -c '
import sys
v=[]
for t in sys.stdin.read().split():
    v.append(float(t[:-2])/1000 if t.endswith("ms") else float(t[:-1]))
v.sort(); print(f"{v[len(v)//2]:.2f} s")'; }

note "commander RSS with the dashboard (an ignored test: real commander, agent, Chromium)"
rss="$(ARK_COMMANDER_BIN="$REL/ark-commander" ARK_AGENT_BIN="$REL/ark-agent" \
  cargo nextest run -p ark-tests --test dashboard --run-ignored only --no-capture commander_rss 2>&1 \
  | grep 'commander VmRSS')" || die "the RSS measurement printed nothing"
idle="$(sed -E 's/.*VmRSS: ([0-9]+) KiB without.*/\1/' <<<"$rss")"
open="$(sed -E 's/.* KiB without the dashboard, ([0-9]+) KiB after.*/\1/' <<<"$rss")"

SECTION="$HEADING

Measured by \`bench/surface.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores,
$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); release binaries; commit
$(git rev-parse --short HEAD 2>/dev/null || echo unknown).

| what | figure |
|---|---:|
| \`ark-commander demo --once\` (3 agents; a file, a ZIM, a feed with 2 enclosures, a git repo): start to the first landed file | **$(median "${firsts[@]}")** (median of ${RUNS}: ${firsts[*]}) |
| the same: start to all 6 runs landed | $(median "${alls[@]}") (${alls[*]}) |
| commander VmRSS, 1 agent, 20 landed runs, idle 10 s | **$idle KiB** |
| the same after 10 s with the dashboard open in headless Chromium, polling \`/api/state\` every second | **$open KiB** ($((open - idle)) KiB more) |
"
printf '%s' "$SECTION" >"$WORK/section.md"
# shellcheck source=bench/section.sh
. "$ROOT/bench/section.sh"
replace_section "$RESULTS" "$HEADING" "$WORK/section.md" "$WORK"
note "done: $RESULTS"
