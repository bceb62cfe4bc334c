#!/usr/bin/env bash
# Section 5 of bench/RESULTS.md, ingest (issue 14): a random INGEST_MIB file
# served by nginx on loopback, fetched by the agent's own fetch path
# (bench/src/fetch_file.rs: receive, BLAKE3 tree + outboard, write, durable
# checkpoints, fsync at the end) against `curl -o`, `curl -o` followed by
# `sync FILE` (what a user who needs the bytes on disk does) and aria2c.
# Replaces that section (appends it when absent); bench/run.sh ends with it.
#
# The method, so that no command pays for another's work: before every timed
# command the outputs are removed, the source is read into the page cache
# and `sync` flushes every dirty page (the previous command's write-back and
# the removal); the order alternates from run to run; each figure is the
# median of RUNS. Each command runs under GNU time: wall, CPU (user + sys,
# children included) and peak RSS.
#
#   bench/ingest.sh              # release build, then measure
#   bench/ingest.sh --no-build   # reuse the release binaries
#   INGEST_MIB=2048 RUNS=5 bench/ingest.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/RESULTS.md"
HEADING="## 5. Ingest"
INGEST_MIB="${INGEST_MIB:-2048}"
RUNS="${RUNS:-5}"
note() { printf 'bench/ingest: %s\n' "$*" >&2; }
# shellcheck source=bench/section.sh
. "$ROOT/bench/section.sh"
bench_setup ingest "$@" fetch-file
for tool in curl aria2c b3sum; do
  command -v "$tool" >/dev/null || { note "error: $tool missing (scripts/setup.sh)"; exit 1; }
done
[[ -x /usr/bin/time ]] || { note "error: GNU time missing (apt-get install time)"; exit 1; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x "$NGINX" ]] || { note "error: nginx missing (apt-get install nginx-light)"; exit 1; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

WWW="$WORK/www"; NG="$WORK/nginx"; OUT="$WORK/out"
mkdir -p "$WWW" "$NG" "$OUT"
note "$INGEST_MIB MiB of random bytes"
head -c "$((INGEST_MIB << 20))" /dev/urandom >"$WWW/big.bin"
chmod 755 "$WWW"
chmod 644 "$WWW/big.bin"
EXPECTED="$(b3sum --no-names "$WWW/big.bin")"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$NG/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $NG/body; proxy_temp_path $NG/proxy; fastcgi_temp_path $NG/fastcgi;
  uwsgi_temp_path $NG/uwsgi; scgi_temp_path $NG/scgi;
  default_type application/octet-stream;
  sendfile on;
  server { listen 127.0.0.1:$PORT; root $WWW; }
}
NGINX
"$NGINX" -p "$NG" -c "$NG/nginx.conf" >"$NG/stderr.log" 2>&1 &
NGINX_PID=$!
trap 'kill "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
URL="http://127.0.0.1:$PORT/big.bin"
for _ in $(seq 50); do
  curl -sf -o /dev/null -r 0-0 "$URL" && break
  sleep 0.1
done

# name → command (run by bash -c, so `curl_sync` is timed as one command).
declare -A CMD=(
  [curl]="curl -fsS -o $OUT/curl.bin $URL"
  [curl_sync]="curl -fsS -o $OUT/curl.bin $URL && sync $OUT/curl.bin"
  [aria2c]="aria2c -q --allow-overwrite=true --file-allocation=none -d $OUT -o aria.bin $URL"
  [ark]="$REL/fetch-file $URL $OUT/ark.bin"
)
ORDER=(curl ark curl_sync aria2c)
# The file each command leaves, checked after it: size, and for Ark the root.
declare -A LEFT=([curl]=curl.bin [curl_sync]=curl.bin [aria2c]=aria.bin [ark]=ark.bin)

# One timed run of NAME from the common state; appends "wall cpu rss" to
# the samples.
declare -A WALL=() CPU=() RSS=()
timed() {
  local name="$1" wall user sys rss
  rm -f "$OUT"/*
  cat "$WWW/big.bin" >/dev/null
  sync
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" bash -c "${CMD[$name]}" >"$WORK/out.log" 2>&1 \
    || { note "error: $name failed: $(tail -n 5 "$WORK/out.log")"; exit 1; }
  read -r wall user sys rss <"$WORK/time"
  [[ "$(stat -c %s "$OUT/${LEFT[$name]}")" == "$((INGEST_MIB << 20))" ]] \
    || { note "error: $name left a short file"; exit 1; }
  if [[ "$name" == ark ]]; then
    local root
    read -r root _ <"$WORK/out.log"
    [[ "$root" == "$EXPECTED" ]] || { note "error: fetch-file root $root, b3sum $EXPECTED"; exit 1; }
  fi
  WALL[$name]+="$wall "
  CPU[$name]+="$(python3 -c "print(f'{$user + $sys:.2f}')") "
  RSS[$name]+="$rss "
}
for run in $(seq 1 "$RUNS"); do
  if ((run % 2)); then order=("${ORDER[@]}"); else order=(); for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do order+=("${ORDER[i]}"); done; fi
  for name in "${order[@]}"; do timed "$name"; done
  note "run $run/$RUNS done"
done
rm -f "$OUT"/*
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

declare -A MED=()
for name in "${ORDER[@]}"; do MED[$name]="$(median "${WALL[$name]}")"; done
# row LABEL NAME INCLUDES: median wall and rate, the fastest run (what the
# command does when nothing else disturbs it), median CPU, peak RSS (the
# largest of the runs), ratios of the medians to curl -o and to curl -o +
# sync FILE.
row() {
  local t="${MED[$2]}" cpu rss best
  cpu="$(median "${CPU[$2]}")"
  rss="$(tr ' ' '\n' <<<"${RSS[$2]}" | grep . | sort -n | tail -n1)"
  best="$(tr ' ' '\n' <<<"${WALL[$2]}" | grep . | sort -n | head -n1)"
  python3 -c "print(f'| $1 | $3 | {$t:.2f} s | {$INGEST_MIB / $t:.0f} MiB/s | {$best:.2f} s | {$cpu:.2f} s | {$rss / 1024:.1f} MiB | {$t / ${MED[curl]}:.2f}× | {$t / ${MED[curl_sync]}:.2f}× |')"
}

cat >"$WORK/section.md" <<MD
$HEADING: ${INGEST_MIB} MiB from nginx on loopback

Measured by \`bench/ingest.sh\` (\`INGEST_MIB=$INGEST_MIB RUNS=$RUNS\`) on
$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo),
$(awk '/^MemTotal/ { printf "%d", $2 / 1024 }' /proc/meminfo) MiB RAM; release binaries; commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown); load average
$LOAD_BEFORE before, $LOAD_AFTER after.

A random ${INGEST_MIB} MiB file served by Debian's nginx (sendfile) on
127.0.0.1, fetched into a file on the same disk. Before every timed command
the outputs are removed, the source is read into the page cache and \`sync\`
flushes every dirty page, so that no command pays for another's write-back;
the order alternates; each figure is the median of $RUNS runs, the whole
process under GNU time (CPU = user + sys, children included; peak RSS =
VmHWM, the largest of the runs). Ark's row is \`fetch-file\`
(bench/src/fetch_file.rs), the agent's own fetch path: reqwest streaming
into the ingest pipeline (a hasher thread building the BLAKE3 tree and its
outboard, a writer thread, a syncer thread starting write-back every 16 MiB
and recording durable checkpoints), then data and outboard fsynced. Its root
is checked equal to b3sum's.

| command | includes | wall (median) | rate | fastest run | CPU (median) | peak RSS | vs \`curl -o\` | vs \`curl -o\` + \`sync FILE\` |
|---|---|---:|---:|---:|---:|---:|---:|---:|
$(row "\`curl -o\`" curl "receive, write; no fsync")
$(row "\`curl -o\` + \`sync FILE\`" curl_sync "receive, write, fsync")
$(row "\`aria2c\` (--file-allocation=none)" aria2c "receive, write; no fsync")
$(row "**ark \`fetch-file\`**" ark "receive, BLAKE3 tree + outboard, write, checkpoints, fsync of both")

Goals (issue 14): Ark ≤ 1.2× \`curl -o\` and ≤ 0.7× \`curl -o\` + \`sync FILE\`,
peak RSS ≤ 24 MiB. The machine is shared: the load average above and the
spread of the samples below say how much other work disturbed the runs.
Samples, wall (s): $(for name in "${ORDER[@]}"; do printf '%s %s; ' "$name" "${WALL[$name]% }"; done)
CPU (s): $(for name in "${ORDER[@]}"; do printf '%s %s; ' "$name" "${CPU[$name]% }"; done)
MD

replace_section "$RESULTS" "$HEADING" "$WORK/section.md" "$WORK"
note "done: $RESULTS"
