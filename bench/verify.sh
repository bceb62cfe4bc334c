#!/usr/bin/env bash
# Section 14 of bench/RESULTS.md, `archive verify` at disk speed (issue 14):
# an archive of FILES landed files (default 32 × 64 MiB, landed through the
# commander's own receiving side by bench/src/land.rs) re-hashed by
# `ark-commander archive verify`, against `b3sum` over the same files with
# one thread and with every core. Replaces that section (appends it when
# absent).
#
#   bench/verify.sh              # release build, then measure
#   bench/verify.sh --no-build   # reuse the release binaries
#   FILES=64 SIZE_MIB=32 RUNS=5 bench/verify.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/RESULTS.md"
HEADING="## 14. Archive verify"
FILES="${FILES:-32}"
SIZE_MIB="${SIZE_MIB:-64}"
RUNS="${RUNS:-3}"
note() { printf 'bench/verify: %s\n' "$*" >&2; }
# shellcheck source=bench/section.sh
. "$ROOT/bench/section.sh"
bench_setup verify "$@" ark-commander land
command -v b3sum >/dev/null || { note "error: b3sum missing (scripts/setup.sh)"; exit 1; }
CORES="$(nproc)"

note "landing $FILES files of $SIZE_MIB MiB"
mkdir -p "$WORK/src" "$WORK/data"
for i in $(seq 1 "$FILES"); do
  head -c "$((SIZE_MIB << 20))" /dev/urandom >"$WORK/src/f$i.bin"
  "$REL/land" "$WORK/src/f$i.bin" "$WORK/data" "f$i" >/dev/null
  rm -f "$WORK/src/f$i.bin" "$WORK/src/f$i.bin.outboard"
done
mapfile -t LANDED < <(find "$WORK/data/archive" -name 'f*.bin' | sort)
((${#LANDED[@]} == FILES)) || { note "error: ${#LANDED[@]} landed files, expected $FILES"; exit 1; }
TOTAL_MIB=$((FILES * SIZE_MIB))

verify() { "$REL/ark-commander" --data "$WORK/data" archive verify >/dev/null; }
b3_one() { b3sum --num-threads 1 "${LANDED[@]}" >/dev/null; }
b3_all() { b3sum --num-threads "$CORES" "${LANDED[@]}" >/dev/null; }

# Every timed command starts from the same state: the archive in the page
# cache (read once before), no dirty pages (sync), order alternated.
cat "${LANDED[@]}" >/dev/null
declare -A SAMPLES=([verify]="" [b3_one]="" [b3_all]="")
for run in $(seq 1 "$RUNS"); do
  if ((run % 2)); then order=(verify b3_one b3_all); else order=(b3_all b3_one verify); fi
  for cmd in "${order[@]}"; do
    SAMPLES[$cmd]+="$(timed "$cmd") "
    note "run $run: $cmd done"
  done
done
V="$(median "${SAMPLES[verify]}")"
B1="$(median "${SAMPLES[b3_one]}")"
BN="$(median "${SAMPLES[b3_all]}")"
row() { python3 -c "print(f'| $1 | {$2:.2f} s | {$TOTAL_MIB / $2:.0f} MiB/s | {$2 / $BN:.2f}× |')"; }

cat >"$WORK/section.md" <<MD
$HEADING

Measured by \`bench/verify.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); $CORES cores,
$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); release binaries; commit
$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown).

An archive of $FILES versions of $SIZE_MIB MiB ($TOTAL_MIB MiB), landed through the
commander's receiving side (bench/src/land.rs), in the page cache; every
timed command starts after \`sync\`, the order alternates, median of $RUNS.
\`archive verify\` re-hashes every landed file (each inode once, on every
core, checked in ledger order as the hashes come), compares each with the
ledger and its manifest, and looks for strays; \`b3sum\` only hashes.

| | wall (median) | rate | vs \`b3sum --num-threads $CORES\` |
|---|---:|---:|---:|
$(row "\`ark-commander archive verify\`" "$V")
$(row "\`b3sum --num-threads 1\`" "$B1")
$(row "\`b3sum --num-threads $CORES\`" "$BN")

Goal (issue 14): \`archive verify\` within 1.2× of \`b3sum --num-threads N\`.
Samples (s): verify ${SAMPLES[verify]}; b3sum 1 thread ${SAMPLES[b3_one]}; b3sum $CORES threads ${SAMPLES[b3_all]}.
MD

replace_section "$RESULTS" "$HEADING" "$WORK/section.md" "$WORK"
note "done: $RESULTS"
