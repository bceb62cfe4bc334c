#!/usr/bin/env bash
# Section 4 of bench/RESULTS.md, chunked hashing against b3sum (issue 14):
# Ark's tree hasher (bench/src/tree_hash.rs) on one thread, fed as a download
# feeds it and in network-sized pieces, and on N threads, beside
# `b3sum --no-mmap --num-threads 1`, `b3sum --num-threads 1` (memory-mapped)
# and `b3sum --num-threads N`, and BLAKE3 alone over the same reads, on the
# same random file in the page cache. Replaces that section (appends it when
# absent); bench/run.sh ends with it.
#
#   bench/hash.sh              # release build, then measure
#   bench/hash.sh --no-build   # reuse the release binaries
#   HASH_MIB=1024 RUNS=5 THREADS=4 bench/hash.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/RESULTS.md"
HEADING="## 4. Chunked hashing"
HASH_MIB="${HASH_MIB:-1024}"
RUNS="${RUNS:-5}"
THREADS="${THREADS:-$(nproc)}"
# One TCP segment's payload: the smallest pieces a download hands over.
PIECE="${PIECE:-1460}"
note() { printf 'bench/hash: %s\n' "$*" >&2; }
# shellcheck source=bench/section.sh
. "$ROOT/bench/section.sh"
bench_setup hash "$@" tree-hash
command -v b3sum >/dev/null || { note "error: b3sum missing (apt-get install b3sum)"; exit 1; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

BLOB="$WORK/blob"
note "$HASH_MIB MiB of random bytes"
head -c "$((HASH_MIB << 20))" /dev/urandom >"$BLOB"
EXPECTED="$(b3sum --no-names "$BLOB")"
cat "$BLOB" >/dev/null # page cache warm: everyone reads from memory

# name → command; each prints its root first (b3sum's line starts with it).
declare -A CMD=(
  [ark_one]="$REL/tree-hash $BLOB $WORK/ob"
  [ark_piece]="$REL/tree-hash --piece $PIECE $BLOB $WORK/ob"
  [ark_n]="$REL/tree-hash --threads $THREADS $BLOB $WORK/ob"
  [plain]="$REL/tree-hash --plain $BLOB"
  [b3_one]="b3sum --no-mmap --num-threads 1 --no-names $BLOB"
  [b3_mmap]="b3sum --num-threads 1 --no-names $BLOB"
  [b3_n]="b3sum --num-threads $THREADS --no-names $BLOB"
)
ORDER=(b3_one ark_one ark_piece plain b3_mmap ark_n b3_n)
# Wall time of the whole process, the same clock for every command; the
# root it printed must be b3sum's.
timed() {
  local t0 t1 out root
  t0=$(date +%s.%N)
  out="$(${CMD[$1]})"
  t1=$(date +%s.%N)
  root="${out%% *}"
  [[ "$root" == "$EXPECTED" ]] || { note "error: $1 gave $root, b3sum $EXPECTED"; exit 1; }
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}
declare -A SAMPLES=()
for run in $(seq 1 "$RUNS"); do
  if ((run % 2)); then order=("${ORDER[@]}"); else order=(); for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do order+=("${ORDER[i]}"); done; fi
  for name in "${order[@]}"; do
    SAMPLES[$name]+="$(timed "$name") "
  done
  note "run $run/$RUNS done"
done
OUTBOARD_BYTES="$(stat -c %s "$WORK/ob")"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
declare -A MED=()
for name in "${ORDER[@]}"; do MED[$name]="$(median "${SAMPLES[$name]}")"; done
# row LABEL NAME [BASE]: wall, rate, ratio to b3sum --no-mmap 1 thread, and
# to b3sum on the same number of threads (BASE) if given.
row() {
  local versus="" t="${MED[$2]}"
  [[ -n "${3:-}" ]] && versus="$(python3 -c "print(f'{$t / ${MED[$3]}:.2f}×')") vs \`b3sum --num-threads $THREADS\`"
  python3 -c "print(f'| $1 | {$t:.3f} s | {$HASH_MIB / $t:.0f} MiB/s | {$t / ${MED[b3_one]}:.2f}× | $versus |')"
}

cat >"$WORK/section.md" <<MD
$HEADING

Measured by \`bench/hash.sh\` (\`HASH_MIB=$HASH_MIB RUNS=$RUNS THREADS=$THREADS PIECE=$PIECE\`) on
$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo);
release binaries; commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown); load average
$LOAD_BEFORE before, $LOAD_AFTER after.

One random $HASH_MIB MiB file in the page cache; each command hashes all of
it, as a whole process timed by the script; the order alternates, median of
$RUNS. Every root is checked equal to b3sum's. Ark's rows write the outboard
($OUTBOARD_BYTES bytes of 16 KiB-group CVs); b3sum and the plain BLAKE3 row
write nothing. \`tree-hash\` (bench/src/tree_hash.rs) is the agent's download
path — \`TreeHasher\` fed 256 KiB reads, or those reads in $PIECE-byte pieces
as a network stream hands them over; \`--threads\` is \`tree::hash_file\`,
the path for a file on disk (each thread \`pread\`s and hashes every N-th
1 MiB batch); \`--plain\` is \`blake3::Hasher::update\` over the same 256 KiB
reads, no tree: the floor. \`b3sum --no-mmap\` reads as the agent does;
without it b3sum maps the file and skips the copy out of the page cache,
and only then does it use more than one thread.

| | wall (median) | rate | vs \`b3sum --no-mmap --num-threads 1\` | vs |
|---|---:|---:|---:|---|
$(row "\`b3sum --no-mmap --num-threads 1\`" b3_one)
$(row "ark \`tree-hash\` (1 thread, 256 KiB reads)" ark_one)
$(row "ark \`tree-hash --piece $PIECE\` (1 thread)" ark_piece)
$(row "BLAKE3 alone, 256 KiB reads (\`tree-hash --plain\`)" plain)
$(row "\`b3sum --num-threads 1\` (mmap)" b3_mmap)
$(row "ark \`tree-hash --threads $THREADS\`" ark_n b3_n)
$(row "\`b3sum --num-threads $THREADS\` (mmap)" b3_n)

Goal (issue 14): one thread within 1.1× of \`b3sum --num-threads 1\`.
Samples (s): $(for name in "${ORDER[@]}"; do printf '%s %s; ' "$name" "${SAMPLES[$name]% }"; done)
MD

replace_section "$RESULTS" "$HEADING" "$WORK/section.md" "$WORK"
note "done: $RESULTS"
