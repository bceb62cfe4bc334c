#!/usr/bin/env bash
# Section 17 of bench/RESULTS.md, the archive on S3 (issue 16): a
# three-node Garage cluster on loopback (replication factor 3, every node
# on this machine, built by scripts/setup.sh), and
#   - landing one SIZE_MIB file through the commander's receiving side
#     (bench/src/land.rs: every 16 KiB group verified on arrival, the
#     quarantine written and fsynced, the multipart upload to the store
#     hashed again, the ledger committed) against `aws s3 cp` and
#     `rclone copyto` of the same file to the same cluster;
#   - `archive verify` of FILES × FILE_MIB landed versions, every object read
#     back from the store and hashed, against `rclone cat … | b3sum`.
# Replaces that section (appends it when absent).
#
#   bench/s3.sh              # release build, then measure
#   bench/s3.sh --no-build   # reuse the release binaries
#   SIZE_MIB=256 RUNS=5 FILES=4 FILE_MIB=64 bench/s3.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="$ROOT/bench/RESULTS.md"
HEADING="## 17. The archive on S3 (Garage)"
SIZE_MIB="${SIZE_MIB:-512}"
RUNS="${RUNS:-3}"
FILES="${FILES:-8}"
FILE_MIB="${FILE_MIB:-64}"
note() { printf 'bench/s3: %s\n' "$*" >&2; }
# shellcheck source=bench/section.sh
. "$ROOT/bench/section.sh"
bench_setup s3 "$@" ark-commander land garage-cluster
PYENV="${ARK_PYENV:-$HOME/.cache/ark-pyenv}"
AWS="$PYENV/bin/aws"
[[ -x "$AWS" ]] || { note "error: $AWS missing (scripts/setup.sh)"; exit 1; }
command -v rclone >/dev/null || { note "error: rclone missing (scripts/setup.sh)"; exit 1; }
command -v b3sum >/dev/null || { note "error: b3sum missing (scripts/setup.sh)"; exit 1; }
CORES="$(nproc)"

"$REL/garage-cluster" "$WORK/garage" >"$WORK/garage.log" 2>&1 &
GARAGE_PID=$!
trap 'kill "$GARAGE_PID" 2>/dev/null; wait "$GARAGE_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 240); do
  [[ -s "$WORK/garage/cluster.env" ]] && break
  kill -0 "$GARAGE_PID" 2>/dev/null || { note "error: garage-cluster failed: $(tail -n 5 "$WORK/garage.log")"; exit 1; }
  sleep 0.5
done
[[ -s "$WORK/garage/cluster.env" ]] || { note "error: the cluster did not start"; exit 1; }
# shellcheck disable=SC1091
. "$WORK/garage/cluster.env"
note "three Garage nodes up, S3 at $ENDPOINT"

# The AWS CLI and rclone on the same node's endpoint, with the same key.
# Their AWS SDKs refuse the CA bundle this machine exports (plain HTTP here).
unset AWS_CA_BUNDLE
export AWS_ACCESS_KEY_ID="$ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$SECRET_ACCESS_KEY"
export AWS_DEFAULT_REGION="$REGION" AWS_ENDPOINT_URL="$ENDPOINT" AWS_EC2_METADATA_DISABLED=true
export RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other RCLONE_CONFIG_G_ENDPOINT="$ENDPOINT"
export RCLONE_CONFIG_G_REGION="$REGION" RCLONE_CONFIG_G_ACCESS_KEY_ID="$ACCESS_KEY_ID"
export RCLONE_CONFIG_G_SECRET_ACCESS_KEY="$SECRET_ACCESS_KEY" RCLONE_CONFIG_G_FORCE_PATH_STYLE=true

# A data dir whose commander.toml puts the archive at s3://$BUCKET/$1.
s3_data() {
  mkdir -p "$WORK/data-$1"
  cat >"$WORK/data-$1/commander.toml" <<TOML
archive = "s3://$BUCKET/$1"
[s3]
endpoint = "$ENDPOINT"
region = "$REGION"
credentials = "$WORK/garage/credentials"
litestream = "off"
TOML
  printf '%s' "$WORK/data-$1"
}

note "landing: $SIZE_MIB MiB, $RUNS runs each"
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$WORK/big.bin"
ark_core_outboard() { "$REL/land" "$WORK/big.bin" "$(s3_data warmup)" warmup >/dev/null; }
ark_core_outboard # makes big.bin.outboard (the agent's), untimed
n=0
ark() { "$REL/land" "$WORK/big.bin" "$(s3_data "land-$n")" big >/dev/null; }
aws_cp() { "$AWS" s3 cp --quiet "$WORK/big.bin" "s3://$BUCKET/aws-$n/big.bin"; }
rclone_cp() { rclone copyto "$WORK/big.bin" "g:$BUCKET/rclone-$n/big.bin"; }
declare -A SAMPLES=([ark]="" [aws_cp]="" [rclone_cp]="" [verify]="" [rclone_cat]="")
for run in $(seq 1 "$RUNS"); do
  if ((run % 2)); then order=(ark aws_cp rclone_cp); else order=(rclone_cp aws_cp ark); fi
  for cmd in "${order[@]}"; do
    n=$((n + 1))
    SAMPLES[$cmd]+="$(timed "$cmd") "
    note "run $run: $cmd done"
  done
done

note "verify: $FILES files of $FILE_MIB MiB"
VDATA="$(s3_data verify)"
for i in $(seq 1 "$FILES"); do
  head -c "$((FILE_MIB << 20))" /dev/urandom >"$WORK/f$i.bin"
  "$REL/land" "$WORK/f$i.bin" "$VDATA" "f$i" >/dev/null
  rm -f "$WORK/f$i.bin" "$WORK/f$i.bin.outboard"
done
verify() { "$REL/ark-commander" --data "$VDATA" archive verify >/dev/null; }
rclone_cat() { rclone cat "g:$BUCKET/verify" --include '*.bin' | b3sum >/dev/null; }
for run in $(seq 1 "$RUNS"); do
  if ((run % 2)); then order=(verify rclone_cat); else order=(rclone_cat verify); fi
  for cmd in "${order[@]}"; do
    SAMPLES[$cmd]+="$(timed "$cmd") "
    note "run $run: $cmd done"
  done
done

A="$(median "${SAMPLES[ark]}")"
W="$(median "${SAMPLES[aws_cp]}")"
R="$(median "${SAMPLES[rclone_cp]}")"
V="$(median "${SAMPLES[verify]}")"
C="$(median "${SAMPLES[rclone_cat]}")"
TOTAL_MIB=$((FILES * FILE_MIB))
row() { python3 -c "print(f'| $1 | {$2:.2f} s | {$3 / $2:.0f} MiB/s | {$2 / $4:.2f}× |')"; }

cat >"$WORK/section.md" <<MD
$HEADING

Measured by \`bench/s3.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); $CORES cores,
$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); release binaries; commit
$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown). A three-node Garage
2.5.0 cluster on loopback (replication factor 3: every byte is written by
three nodes), all on this machine's $CORES cores with the client; the AWS CLI
$("$AWS" --version 2>&1 | cut -d' ' -f1 | cut -d/ -f2) and rclone $(rclone version | head -n1 | cut -d' ' -f2) against the same node. Every timed
command starts after \`sync\`, the order alternates, median of $RUNS.

**Landing** one $SIZE_MIB MiB file. Ark's figure is the whole landing on
the commander (\`bench/src/land.rs\`, no network transport): the outboard
checked against the root, every 16 KiB group verified as it arrives, the
quarantine written and fsynced, then the multipart upload to the store (8 MiB
parts, 4 in flight, every byte hashed again and the root compared before the
upload is completed), and the ledger row committed. The others only upload.

| | wall (median) | rate | vs \`aws s3 cp\` |
|---|---:|---:|---:|
$(row "Ark: verify + quarantine + upload + commit" "$A" "$SIZE_MIB" "$W")
$(row "\`aws s3 cp\`" "$W" "$SIZE_MIB" "$W")
$(row "\`rclone copyto\`" "$R" "$SIZE_MIB" "$W")

**\`archive verify\`** of $FILES versions of $FILE_MIB MiB ($TOTAL_MIB MiB) in the store:
every object streamed back ($(grep -o 'STORE_READERS: usize = [0-9]*' "$ROOT/commander/src/verify.rs" | awk '{print $4}') at a time) and hashed, every manifest
read and compared, the store listed for strays; against reading the same
objects back with \`rclone cat\` into \`b3sum\` (hashing only).

| | wall (median) | rate | vs \`rclone cat\` into \`b3sum\` |
|---|---:|---:|---:|
$(row "\`ark-commander archive verify\`" "$V" "$TOTAL_MIB" "$C")
$(row "\`rclone cat\` into \`b3sum\`" "$C" "$TOTAL_MIB" "$C")

Samples (s): Ark ${SAMPLES[ark]}; aws s3 cp ${SAMPLES[aws_cp]}; rclone copyto ${SAMPLES[rclone_cp]};
verify ${SAMPLES[verify]}; rclone cat into b3sum ${SAMPLES[rclone_cat]}.
MD

replace_section "$RESULTS" "$HEADING" "$WORK/section.md" "$WORK"
note "done: $RESULTS"
