#!/usr/bin/env bash
# The shape of the code before and after a change (issue 10): bench/shape.py
# on both trees, then a clean release build of each binary from each tree,
# one after another (CPU seconds, wall seconds, stripped x86_64 size).
#   bench/shape.sh BEFORE_REV [AFTER_REV]     (AFTER_REV defaults to HEAD)
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=${2:-HEAD}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for rev in "$before" "$after"; do
  mkdir -p "$work/$rev" && git archive "$rev" | tar -x -C "$work/$rev"
  python3 bench/shape.py "$work/$rev" > "$work/shape-$rev.md"
  echo "== shape of $rev: $work/shape-$rev.md"; sed -n '/Import circles/,$p' "$work/shape-$rev.md"
done
for rev in "$before" "$after"; do
  for pkg in ark-agent ark-commander; do
    sync
    t="$work/target-$rev-$pkg"
    ( cd "$work/$rev" && /usr/bin/time -f "%e %U %S" -o "$work/time" env CARGO_TARGET_DIR="$t" CARGO_INCREMENTAL=0 \
        cargo build --release -p "$pkg" --bin "$pkg" >/dev/null 2>&1 )
    read -r wall user sys < "$work/time"
    echo "$rev $pkg wall=${wall}s cpu=$(echo "$user + $sys" | bc)s size=$(stat -c %s "$t/release/$pkg")"
    rm -rf "$t"
  done
done
