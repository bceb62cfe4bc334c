#!/usr/bin/env bash
# Reproduces every figure in bench/RESULTS.md and rewrites that file.
#
#   bench/run.sh              # cross-build the agents, build, measure (the full run)
#   bench/run.sh --no-build   # reuse dist/ark-agent-* instead of cross-building
#   bench/run.sh --kinds-only # only section 7; replaces that section of RESULTS.md
#   bench/surface.sh          # only section 8 (demo, dashboard RSS); a full run ends with it
#   bench/trust.sh            # only section 10 (zero trust's bytes and times); and with this
#   bench/sources.sh          # only section 11 (sources that move); and with this
#   bench/scale.sh            # only section 12 (the scheduler at 1,000 agents); and with this
#   bench/household.sh        # only section 13 (work and yields reach agents at once); and with this
#   bench/whole.sh            # only section 15 (the whole path vs curl -o + rsync over SSH); and with this
#   bench/s3.sh               # only section 17 (the archive on Garage vs aws s3 cp, rclone); and with this
#   bench/hash.sh             # only section 4 (chunked hashing vs b3sum); and with this
#   bench/ingest.sh           # only section 5 (ingest vs curl -o, curl -o + sync); and with this
#
# Measurements (see bench/README.md):
#   1. stripped static agent size per target (dist/ark-agent-<triple>)
#   2. agent idle RSS: a real commander + `ark-agent run`, VmRSS/VmHWM after IDLE_WAIT s
#   3. commander heartbeat latency with 200 simulated agents (bench/src/heartbeat_load.rs)
#   4. chunked hashing vs b3sum, 1 and N threads (bench/hash.sh, bench/src/tree_hash.rs)
#   5. a 2 GiB file from nginx on loopback: Ark's fetch+hash+stage vs curl -o, curl -o +
#      sync FILE and aria2c, with the agent's CPU and peak RSS (bench/ingest.sh)
#   6. verify+land of that file on the commander vs dd conv=fsync (bench/src/land.rs)
#   7. the harvest kinds (bench/src/kinds.rs): git mirror/refetch/bundle/checks vs git,
#      ZIM deep check vs zimcheck -A, a 10,000-item RSS feed parsed and derived
#
# Loopback only; every process it starts is stopped on exit. Apart from the
# cross builds (scripts/build-agents.sh) it runs in about 3 minutes once the
# release build is up to date.
#
# Environment knobs: IDLE_WAIT (seconds, default 10), HB_SECONDS (default 30),
# HASH_MIB (default 1024), INGEST_MIB (default 2048), ZIM_FIXTURES (the valid
# .zim files of zim-testing-suite; default /work/shared/fixtures/zim).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/RESULTS.md"
TRIPLES=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf x86_64-unknown-linux-musl)
IDLE_WAIT="${IDLE_WAIT:-10}"
HB_SECONDS="${HB_SECONDS:-30}"
HASH_MIB="${HASH_MIB:-1024}"
INGEST_MIB="${INGEST_MIB:-2048}"
ZIM_FIXTURES="${ZIM_FIXTURES:-/work/shared/fixtures/zim}"

BUILD_AGENTS=1
KINDS_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --no-build) BUILD_AGENTS=0 ;;
    --kinds-only) KINDS_ONLY=1 ;;
    -h | --help)
      sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bench/run.sh: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

note() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ark-bench.XXXXXX")"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
REL="$TARGET_DIR/release"

# ---------------------------------------------------------------- builds
if ((KINDS_ONLY)); then
  note "cargo build --release -p ark-bench --bin kinds"
  cargo build --release -p ark-bench --bin kinds >&2
  [[ -x "$REL/kinds" ]] || die "missing $REL/kinds after the build"
elif ((BUILD_AGENTS)); then
  [[ -x scripts/build-agents.sh ]] || die "scripts/build-agents.sh is missing; run with --no-build to use dist/"
  note "cross-building the agents: scripts/build-agents.sh ${TRIPLES[*]}"
  scripts/build-agents.sh "${TRIPLES[@]}" >&2
  AGENTS_NOTE="built by this run with \`scripts/build-agents.sh\`"
else
  AGENTS_NOTE="reused from \`dist/\` (\`--no-build\`); rebuild with \`scripts/build-agents.sh\`"
fi
if ((!KINDS_ONLY)); then
  note "cargo build --release -p ark-agent -p ark-commander -p ark-bench"
  cargo build --release -p ark-agent -p ark-commander -p ark-bench >&2
  for bin in ark-agent ark-commander heartbeat-load tree-hash fetch-file land kinds quorum sources; do
    [[ -x "$REL/$bin" ]] || die "missing $REL/$bin after the build"
  done
fi

# ---------------------------------------------------------------- machine
human_mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
[[ -n "$CPU_MODEL" ]] || CPU_MODEL="$(awk -F': ' '/^(Hardware|Model|CPU part)/ { print $2; exit }' /proc/cpuinfo)"
NPROC="$(nproc)"
MEM_MIB="$(awk '/^MemTotal/ { printf "%d", $2 / 1024 }' /proc/meminfo)"
KERNEL="$(uname -sr)"
RUSTC="$(rustc --version)"
REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"

# ---------------------------------------------------------------- 7. kinds
# Defined here and run last (or alone, with --kinds-only): sets KINDS_MD to
# the markdown of RESULTS.md's section 7, headed by its own date, machine
# and command so that --kinds-only can replace it on its own.
KINDS_HEADING="## 7. Harvest kinds"
kinds_section() {
  local zims=() f largest="" size=0 zdir="$WORK/zim" out="$WORK/kinds.log" kv
  note "7/7 harvest kinds (bench/src/kinds.rs)"
  command -v zimcheck >/dev/null || die "zimcheck not found (apt-get install zim-tools)"
  # The largest valid fixture (zim-testing-suite; invalid.* are broken on purpose).
  for f in "$ZIM_FIXTURES"/*.zim; do
    [[ -f "$f" && "$(basename "$f")" != invalid.* ]] || continue
    if (($(stat -c %s "$f") > size)); then size="$(stat -c %s "$f")"; largest="$f"; fi
  done
  [[ -n "$largest" ]] && zims+=(--zim "$largest")
  # A bigger one made with zimwriterfs: 2,000 small HTML pages and the 48x48
  # illustration a ZIM must have. Skipped if zim-tools' writer is missing.
  if command -v zimwriterfs >/dev/null; then
    mkdir -p "$zdir/html"
    python3 - "$zdir/html" <<'PY'
import random, struct, sys, zlib
d = sys.argv[1]
def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)
raw = b"".join(b"\0" + bytes(v for x in range(48) for v in (x * 5, y * 5, 128)) for y in range(48))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 48, 48, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(f"{d}/illustration.png", "wb").write(png)
rnd = random.Random(7)
words = "ark harvest swarm edge mirror feed archive verify land commander agent chunk bundle pack".split()
for i in range(2000):
    body = " ".join(rnd.choice(words) for _ in range(300))
    links = " ".join(f'<a href="page{rnd.randrange(2000)}.html">p</a>' for _ in range(5))
    open(f"{d}/page{i}.html", "w").write(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Page {i}</title></head>'
        f"<body><h1>Page {i}</h1><p>{body}</p>{links}</body></html>")
open(f"{d}/index.html", "w").write(
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Index</title></head><body>'
    + "".join(f'<a href="page{i}.html">{i}</a> ' for i in range(2000)) + "</body></html>")
PY
    if zimwriterfs -w index.html -I illustration.png -l eng -t "Ark bench" -d "2000 generated pages" \
      -c Ark -p Ark -n ark_bench_2000 -J 2 "$zdir/html" "$zdir/ark_bench_2000.zim" >"$zdir/writer.log" 2>&1; then
      zims+=(--zim "$zdir/ark_bench_2000.zim")
    else
      note "warning: zimwriterfs failed, measuring the fixtures only: $(tail -n 3 "$zdir/writer.log")"
    fi
  fi
  "$REL/kinds" "${zims[@]}" >"$out" || die "kinds failed (output: $(cat "$out"))"
  local git_rows="" zim_rows="" feed_rows=""
  local line
  while read -r line; do
    [[ "$line" == KIND\ * ]] || continue
    local -A r=()
    # shellcheck disable=SC2086 # word splitting of key=value pairs is intended
    for kv in ${line#KIND * }; do r[${kv%%=*}]="${kv#*=}"; done
    case "$line" in
      "KIND git_clone "*)
        git_rows+="| first mirror over smart HTTP | \`git clone --mirror -q URL\` | ${r[git_s]} s (${r[git_requests]} requests) | \`git::mirror\` (gix) | ${r[ark_s]} s (${r[ark_requests]} requests) | **${r[ratio]}×** (goal ≤ 1.2×) |"$'\n'
        KINDS_REPO="${r[commits]} commits, ${r[objects]} objects, ${r[refs]} refs, $(human_mib "${r[pack_bytes]}") MiB packed"
        ;;
      "KIND git_fetch "*)
        git_rows+="| refetch, upstream unchanged | \`git fetch -q --prune origin '+refs/*:refs/*'\` | ${r[git_s]} s (${r[git_requests]} requests) | \`git::mirror\` again | ${r[ark_s]} s (${r[ark_requests]} requests) | ${r[ratio]}× |"$'\n'
        ;;
      "KIND git_check "*)
        git_rows+="| agent: bundle of every ref (${r[bundle_objects]} objects, $(human_mib "${r[bundle_bytes]}") MiB, undeltified) | — | — | \`git::write_bundle\` | ${r[write_bundle_s]} s | — |"$'\n'
        git_rows+="| commander: check that bundle (no mirror yet) | \`git fsck --full\` of the git-cloned mirror | ${r[fsck_s]} s | \`git_check::check_bundle\` | ${r[check_bundle_s]} s | ${r[ratio_check_bundle]}× |"$'\n'
        git_rows+="| commander: check the landed mirror | \`git fsck --full\` of the git-cloned mirror | ${r[fsck_s]} s | \`git_check::check_repo\` | ${r[check_repo_s]} s | **${r[ratio_check_repo]}×** |"$'\n'
        git_rows+="| same, both on the landed mirror | \`git fsck --full\` of the landed mirror | ${r[fsck_landed_s]} s | \`git_check::check_repo\` | ${r[check_repo_s]} s | ${r[ratio_check_repo_same_repo]}× |"$'\n'
        ;;
      "KIND zim "*)
        zim_rows+="| \`${r[file]}\` | $(human_mib "${r[bytes]}") MiB | ${r[entries]} | ${r[zimcheck_s]} s (pass: ${r[zimcheck_pass]}) | ${r[ark_s]} s (pass: ${r[ark_pass]}) | **${r[ratio]}×** |"$'\n'
        ;;
      "KIND feed "*)
        feed_rows+="| parse (feed-rs + Ark's checks), ${r[items]} items, $(human_mib "${r[bytes]}") MiB | ${r[parse_s]} s | ${r[parse_per_s]} entries/s | python3 \`xml.etree.ElementTree\` parse + field walk: ${r[python_s]} s (${r[python_per_s]} entries/s); Ark ${r[ratio_parse_python]}× |"$'\n'
        feed_rows+="| \`feed::sync\`: parse + ${r[items]} entry files written atomically + ledger rows + ${r[media_queued]} media runs queued | ${r[sync_s]} s | ${r[sync_per_s]} entries/s | — |"$'\n'
        feed_rows+="| \`feed::sync\` again on the same snapshot (nothing new) | ${r[resync_s]} s | — | — |"$'\n'
        feed_rows+="| floor: ${r[floor_files]} files of 1 KiB, each \`write_atomic\` (temp, fsync, rename) and nothing else | — | ${r[floor_per_s]} files/s | what durability alone costs per entry file on this disk |"$'\n'
        ;;
    esac
  done <"$out"
  KINDS_MD="$KINDS_HEADING

Measured by \`bench/run.sh$( ((KINDS_ONLY)) && printf ' --kinds-only')\` (bench/src/kinds.rs) on $DATE;
$NPROC × $CPU_MODEL, $MEM_MIB MiB RAM, $KERNEL; $RUSTC; commit $REV plus any
uncommitted changes. Each pair runs alternately in the same process on the
same input; figures are medians of 5 runs (3 for the first mirror, 1 for
\`feed::sync\`). Ratio = Ark ÷ the other tool: below 1 is faster.

### Git (issue #4)

Upstream: a bare repository generated with \`git fast-import\` and \`git gc\`
(${KINDS_REPO:-?}: 300 text files edited over the history, a binary asset of 128–640 KiB every 100 commits, a 50-commit release branch, an annotated tag every 200 commits),
served by \`git http-backend\` behind the tests' \`GitHttp\` origin on
127.0.0.1 (one CGI per request, so each request costs a process start).
Both sides' refs are checked equal.

| step | tool a user would run | time | Ark | time | ratio |
|---|---|---:|---|---:|---:|
${git_rows}
### ZIM deep check vs \`zimcheck -A\`

The largest valid zim-testing-suite fixture, and a ZIM generated by
\`zimwriterfs\` (2,000 small HTML pages, full-text index). Both tools must
pass each file.

| file | size | entries | \`zimcheck -A\` | \`zim_check::check\` | ratio |
|---|---:|---:|---:|---:|---:|
${zim_rows}
### RSS: a 10,000-item feed

A generated RSS 2.0 feed (guid, title, link, pubDate, ~300-byte description and
one enclosure per item). \`feed::sync\` runs on a real \`Store\` with the feed
landed as a version (\`Archive::land\`), as the commander does after an
upload; each entry file is fsynced and renamed, each entry commits its own
ledger transaction.

| step | time | throughput | baseline |
|---|---:|---:|---|
${feed_rows}"
}

if ((KINDS_ONLY)); then
  kinds_section
  [[ -f "$RESULTS" ]] || die "$RESULTS is missing: run bench/run.sh once in full first"
  note "replacing section 7 of $RESULTS"
  # Everything before the old section 7, then the new one, then what
  # follows it (section 8, bench/surface.sh's).
  awk -v h="$KINDS_HEADING" 'index($0, h) == 1 { exit } { print }' "$RESULTS" >"$WORK/results.md"
  # Exactly one blank line between the sections.
  sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$WORK/results.md"
  printf '\n%s' "$KINDS_MD" >>"$WORK/results.md"
  awk '/^## 8\./ { keep = 1 } keep { print }' "$RESULTS" >"$WORK/after.md"
  if [[ -s "$WORK/after.md" ]]; then printf '\n' >>"$WORK/results.md"; cat "$WORK/after.md" >>"$WORK/results.md"; fi
  mv "$WORK/results.md" "$RESULTS"
  note "done: $RESULTS"
  exit 0
fi

# ---------------------------------------------------------------- 1. sizes
note "1/7 agent sizes"
SIZE_ROWS=""
for triple in "${TRIPLES[@]}"; do
  f="dist/ark-agent-$triple"
  if [[ -f "$f" ]]; then
    bytes="$(stat -c %s "$f")"
    desc="$(file -b "$f" 2>/dev/null | sed 's/, BuildID\[[^]]*\]=[0-9a-f]*//' || echo "?")"
    built="$(date -u -r "$f" '+%Y-%m-%d %H:%M')"
    SIZE_ROWS+="| \`$triple\` | $bytes | $(human_mib "$bytes") | $desc | $built |"$'\n'
  else
    SIZE_ROWS+="| \`$triple\` | — | — | not built (\`$f\` missing) | — |"$'\n'
  fi
done
host_bytes="$(stat -c %s "$REL/ark-agent")"
SIZE_ROWS+="| host release build (glibc, for reference) | $host_bytes | $(human_mib "$host_bytes") | $(file -b "$REL/ark-agent" | sed 's/, BuildID\[[^]]*\]=[0-9a-f]*//') | $(date -u -r "$REL/ark-agent" '+%Y-%m-%d %H:%M') |"$'\n'

# ---------------------------------------------------------------- 2. idle RSS
note "2/7 agent idle RSS (${IDLE_WAIT}s per agent)"
CDATA="$WORK/commander"
"$REL/ark-commander" serve --data "$CDATA" --listen 127.0.0.1:0 --heartbeat 1s --lease-ttl 5s \
  >"$WORK/commander.log" 2>&1 &
CPID=$!
PIDS+=("$CPID")
for _ in $(seq 100); do
  [[ -s "$CDATA/endpoint" ]] && break
  kill -0 "$CPID" 2>/dev/null || die "the commander exited: $(cat "$WORK/commander.log")"
  sleep 0.1
done
[[ -s "$CDATA/endpoint" ]] || die "the commander did not write $CDATA/endpoint within 10 s"
URL="$(cat "$CDATA/endpoint")"

# status_kib PID FIELD -> the value in KiB of FIELD in /proc/PID/status
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

RSS_ROWS=""
measure_idle() { # label binary name
  local label="$1" bin="$2" name="$3" adata="$WORK/agent-$3" token apid link rss hwm threads crss
  token="$("$REL/ark-commander" --data "$CDATA" enroll "$name" 2>/dev/null | head -n1)"
  [[ "$token" == ark1-* ]] || die "could not issue a token for $name"
  "$bin" --data "$adata" enroll --commander "$URL" --token "$token" >"$WORK/$name.enroll.log" 2>&1 \
    || die "enrolment of $name failed: $(cat "$WORK/$name.enroll.log")"
  "$bin" --data "$adata" run >"$WORK/$name.log" 2>&1 &
  apid=$!
  PIDS+=("$apid")
  sleep "$IDLE_WAIT"
  kill -0 "$apid" 2>/dev/null || die "$name exited early: $(cat "$WORK/$name.log")"
  rss="$(status_kib "$apid" VmRSS)"
  hwm="$(status_kib "$apid" VmHWM)"
  threads="$(status_kib "$apid" Threads)"
  crss="$(status_kib "$CPID" VmRSS)"
  link="$("$bin" --data "$adata" status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["link"])' || echo "?")"
  kill "$apid" 2>/dev/null || true
  wait "$apid" 2>/dev/null || true
  [[ "$link" == connected ]] || note "warning: $name reports link '$link' (see its log)"
  RSS_ROWS+="| $label | $rss ($(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}') MiB) | $hwm ($(awk -v k="$hwm" 'BEGIN{printf "%.1f", k/1024}') MiB) | $threads | $link | $crss |"$'\n'
}
# Baseline: what a hand-rolled harvester script costs just to sit there — a
# python3 interpreter with the modules such a script imports, sleeping.
PY_ROW=""
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import ssl, json, sqlite3, urllib.request, time; time.sleep(3600)' &
  PYPID=$!
  PIDS+=("$PYPID")
fi
measure_idle "host release build (glibc, \`target/release/ark-agent\`)" "$REL/ark-agent" idle-glibc
if [[ -n "${PYPID:-}" ]] && kill -0 "$PYPID" 2>/dev/null; then
  py_rss="$(status_kib "$PYPID" VmRSS)"
  py_hwm="$(status_kib "$PYPID" VmHWM)"
  PY_ROW="| baseline: $(python3 --version 2>&1), idle, \`ssl json sqlite3 urllib.request\` imported | $py_rss ($(awk -v k="$py_rss" 'BEGIN{printf "%.1f", k/1024}') MiB) | $py_hwm ($(awk -v k="$py_hwm" 'BEGIN{printf "%.1f", k/1024}') MiB) | $(status_kib "$PYPID" Threads) | — | — |"$'\n'
  kill "$PYPID" 2>/dev/null || true
  wait "$PYPID" 2>/dev/null || true
fi
HOST_TRIPLE="$(uname -m)-unknown-linux-musl"
if [[ -x "dist/ark-agent-$HOST_TRIPLE" ]]; then
  measure_idle "static musl (\`dist/ark-agent-$HOST_TRIPLE\`)" "$ROOT/dist/ark-agent-$HOST_TRIPLE" idle-musl
else
  RSS_ROWS+="| static musl (\`dist/ark-agent-$HOST_TRIPLE\`) | not measured: file missing | | | | |"$'\n'
fi
RSS_ROWS+="$PY_ROW"
kill "$CPID" 2>/dev/null || true
wait "$CPID" 2>/dev/null || true

# ---------------------------------------------------------------- 3. heartbeats
note "3/7 commander heartbeat latency (${HB_SECONDS}s per scenario)"
HB_ROWS=""
HB_LOGS=""
run_load() { # label args...
  local label="$1" out result
  shift
  out="$WORK/load-$#-$RANDOM.log"
  note "  heartbeat-load $*"
  if ! "$REL/heartbeat-load" "$@" >"$out" 2>&1; then
    note "warning: heartbeat-load $* reported a failure (see RESULTS.md)"
  fi
  result="$(grep '^RESULT ' "$out" | tail -n1 || true)"
  HB_LOGS+=$'\n'"\`heartbeat-load $*\`"$'\n\n```text\n'"$(cat "$out")"$'\n```\n'
  if [[ -z "$result" ]]; then
    HB_ROWS+="| $label | failed, see the log below | | | | | | | | | |"$'\n'
    return
  fi
  # shellcheck disable=SC2086 # word splitting of key=value pairs is intended
  local -A r=()
  local kv
  for kv in ${result#RESULT }; do r[${kv%%=*}]="${kv#*=}"; done
  HB_ROWS+="| $label | ${r[agents]} | ${r[interval_ms]} | ${r[calls_per_s]} | ${r[p50_ms]} | ${r[p90_ms]} | ${r[p99_ms]} | ${r[max_ms]} | ${r[errors]} / ${r[calls]} | ${r[agents_online]} | ${r[register_p50_ms]} / ${r[register_max_ms]} (${r[register_slow]} ≥ 0.9 s; overflows ${r[register_listen_overflows]}) |"$'\n'
}
run_load "**production default**" --agents 200 --interval-ms 5000 --seconds "$HB_SECONDS"
run_load "5x production rate" --agents 200 --interval-ms 1000 --seconds "$HB_SECONDS"
run_load "1000 agents" --agents 1000 --interval-ms 5000 --seconds "$HB_SECONDS"

# ---------------------------------------------------------------- 4. hashing
# bench/hash.sh's: it runs last and fills the section in.

# ---------------------------------------------------------------- 5. ingest
# bench/ingest.sh's: it runs last and fills the section in.

# ---------------------------------------------------------------- 6. landing
note "6/7 verify+land vs dd conv=fsync (best of 2)"
OUT="$WORK/out"
mkdir -p "$OUT"
head -c "$((INGEST_MIB * 1048576))" /dev/urandom >"$OUT/ark.bin"
SRC_ROOT="$(b3sum --no-names "$OUT/ark.bin")"
timed() { # command... -> wall seconds on stdout
  local start end
  start=$(date +%s.%N)
  "$@" >"$WORK/timed.log" 2>&1 || die "failed: $* -> $(tail -n 20 "$WORK/timed.log")"
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }'
}
best() { sort -n | head -n1; } # the fastest of the samples, one per line
mibps() { awk -v m="$INGEST_MIB" -v t="$1" 'BEGIN { printf "%.0f", m / t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
DD_TIMES=""; LAND_TIMES=""
for i in 1 2; do
  rm -f "$OUT/dd.bin"
  DD_TIMES+="$(timed dd if="$OUT/ark.bin" of="$OUT/dd.bin" bs=1M conv=fsync)"$'\n'
  rm -f "$OUT/dd.bin"
  read -r LANDED t < <("$REL/land" "$OUT/ark.bin" "$WORK/land-$i")
  LAND_TIMES+="$t"$'\n'
  [[ "$(b3sum --no-names "$WORK/land-$i/archive/$LANDED")" == "$SRC_ROOT" ]] || die "landed file differs"
  rm -rf "$WORK/land-$i"
done
DD_BEST="$(printf '%s' "$DD_TIMES" | best)"
LAND_BEST="$(printf '%s' "$LAND_TIMES" | best)"
LAND_ROWS="| \`dd bs=1M conv=fsync\` (plain copy) | $DD_BEST s ($(mibps "$DD_BEST") MiB/s) | 1.00× |"$'\n'
LAND_ROWS+="| **ark verify (every group) + quarantine + fsync + rename + ledger** | $LAND_BEST s ($(mibps "$LAND_BEST") MiB/s) | $(ratio "$LAND_BEST" "$DD_BEST")× |"
rm -rf "$OUT"

kinds_section

# ---------------------------------------------------------------- report
note "writing $RESULTS"
# Sections 9 on are other scripts' (bench/shape.sh, bench/trust.sh): kept.
LATER=""
[[ -f "$RESULTS" ]] && LATER="$(awk '/^## (9|[1-9][0-9])\./ { k = 1 } k { print }' "$RESULTS")"
cat >"$RESULTS" <<EOF
# Ark benchmark results

Generated by \`bench/run.sh$( ((BUILD_AGENTS)) || printf ' --no-build')\` — do not edit by hand; rerun the script.
What each figure means and what to compare it with: [README.md](README.md).

- Date: $DATE
- Machine: $NPROC × $CPU_MODEL, $MEM_MIB MiB RAM, $KERNEL
- Toolchain: $RUSTC (release profile: fat LTO, 1 codegen unit, stripped)
- Source: commit $REV plus any uncommitted changes in the work tree

## 1. Agent binary size (stripped, static)

Agents $AGENTS_NOTE.

| target | bytes | MiB | \`file\` says | built (UTC) |
|---|---:|---:|---|---|
$SIZE_ROWS
## 2. Agent idle memory

One commander (\`ark-commander serve --heartbeat 1s --lease-ttl 5s\`) on
loopback, one enrolled agent running \`ark-agent run\` with no work, read from
\`/proc/PID/status\` after ${IDLE_WAIT} s (≈${IDLE_WAIT} heartbeats, telemetry
sampled each time). The last column is the commander's own RSS at that moment
(one or two agents enrolled, no targets).

| agent binary | VmRSS KiB | VmHWM KiB (peak) | threads | link | commander VmRSS KiB |
|---|---:|---:|---:|---|---:|
$RSS_ROWS
## 3. Commander heartbeat latency

\`heartbeat-load\` (bench/src/heartbeat_load.rs): a commander in-process, N
agents enrolled through the real token + CSR path, each on its own mutual-TLS
connection, heartbeating concurrently for ${HB_SECONDS} s with first beats spread
over one interval. Latency is measured by the client, per call, over loopback;
the simulated agents share the CPU with the commander, so these are upper bounds.
The last column is the set-up step where all N agents open a TCP + TLS 1.3
connection and register at the same instant (a swarm reconnecting after a
commander restart): its p50 / max, how many took ≥ 0.9 s, and how many SYNs the
host dropped meanwhile because a listener's accept queue was full
(\`ListenOverflows\` in /proc/net/netstat, host-wide; each costs a client a 1 s
SYN retransmit).

| scenario | agents | interval ms | calls/s | p50 ms | p90 ms | p99 ms | max ms | errors / calls | online at end | register burst p50 / max ms |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
$HB_ROWS
<details><summary>Full output of each run</summary>
$HB_LOGS
</details>

## 4. Chunked hashing

Written by \`bench/hash.sh\`, which this run ends with.

## 5. Ingest

Written by \`bench/ingest.sh\`, which this run ends with.

## 6. Landing: verify + land vs a plain copy

The commander's receiving side (bench/src/land.rs → \`upload::receive\`) on
a random ${INGEST_MIB} MiB file: the outboard checked against the root, every 16 KiB
group verified as 256 KiB pieces arrive, written to quarantine, fsynced,
renamed into \`archive/file/<target>/<version>/\`, directory fsynced, ledger row
committed. The landed file's BLAKE3 is checked by the script. Against \`dd
bs=1M conv=fsync\` of the same file on the same disk. The gRPC/TLS transfer is
not in this figure. Target: within 1.5× of dd.

| step | wall | ratio |
|---|---:|---:|
$LAND_ROWS

$KINDS_MD
EOF
[[ -n "$LATER" ]] && printf '\n%s\n' "$LATER" >>"$RESULTS"
note "section 4 (chunked hashing): bench/hash.sh --no-build"
HASH_MIB="$HASH_MIB" "$ROOT/bench/hash.sh" --no-build
note "section 5 (ingest): bench/ingest.sh --no-build"
INGEST_MIB="$INGEST_MIB" "$ROOT/bench/ingest.sh" --no-build
note "section 8 (operator surface): bench/surface.sh --no-build"
"$ROOT/bench/surface.sh" --no-build
note "section 10 (zero trust): bench/trust.sh --no-build"
"$ROOT/bench/trust.sh" --no-build
note "section 11 (sources that move): bench/sources.sh --no-build"
"$ROOT/bench/sources.sh" --no-build
note "section 12 (scheduler scale): bench/scale.sh --no-build"
"$ROOT/bench/scale.sh" --no-build
note "section 13 (reacting at once): bench/household.sh --no-build"
"$ROOT/bench/household.sh" --no-build
note "section 15 (the whole path): bench/whole.sh --no-build"
SIZE_MIB="$INGEST_MIB" "$ROOT/bench/whole.sh" --no-build
note "section 16 (git mirrors at upstream's size): bench/gitpack.sh --no-build"
"$ROOT/bench/gitpack.sh" --no-build
note "section 17 (the archive on S3): bench/s3.sh --no-build"
"$ROOT/bench/s3.sh" --no-build
note "done: $RESULTS"
