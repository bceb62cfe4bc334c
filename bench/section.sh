# Sourced by the bench scripts that each own one section of RESULTS.md
# (bench/surface.sh, bench/trust.sh, bench/sources.sh, bench/scale.sh,
# bench/household.sh, bench/verify.sh, bench/hash.sh, bench/whole.sh,
# bench/gitpack.sh).

# bench_setup NAME [--no-build] BIN...: REL (the release dir) and WORK (a
# scratch dir nginx's workers can read, removed on exit); builds the
# commander, the agent and the bench binaries unless --no-build, then checks
# that every BIN is there.
bench_setup() {
  local name="$1" build=1 bin
  shift
  if [[ "${1:-}" == "--no-build" ]]; then build=0; shift; fi
  cd "$ROOT"
  TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  REL="$TARGET_DIR/release"
  if ((build)); then
    printf 'bench/%s: cargo build --release -p ark-commander -p ark-agent -p ark-bench --bins\n' "$name" >&2
    cargo build --release -p ark-commander -p ark-agent -p ark-bench --bins >&2
  fi
  for bin in "$@"; do
    [[ -x "$REL/$bin" ]] || { printf 'bench/%s: error: %s missing (run without --no-build)\n' "$name" "$REL/$bin" >&2; exit 1; }
  done
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/ark-$name.XXXXXX")"
  # nginx's workers (nobody) must reach the origin's files below it.
  chmod 755 "$WORK"
  trap 'rm -rf "$WORK"' EXIT
}

# timed CMD: the wall seconds of CMD (a function), after `sync` so it does
# not pay for the previous command's write-back.
timed() {
  sync
  local t0 t1
  t0=$(date +%s.%N)
  "$1"
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}

# median "T1 T2 …": the middle of the (odd number of) samples.
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# replace_section RESULTS HEADING FILE WORK: the sections before HEADING,
# FILE's text in place of HEADING's section (appended when absent), then the
# sections after it.
replace_section() {
  local results="$1" heading="$2" file="$3" work="$4"
  : >"$work/after.md"
  if grep -q "^$heading" "$results"; then
    awk -v h="$heading" 'index($0, h) == 1 { exit } { print }' "$results" >"$work/results.md"
    awk -v h="$heading" 'index($0, h) == 1 { s = 1; next } s && /^## / { a = 1 } a { print }' \
      "$results" >"$work/after.md"
  else
    cp "$results" "$work/results.md"
    printf '\n' >>"$work/results.md"
  fi
  cat "$file" >>"$work/results.md"
  if [[ -s "$work/after.md" ]]; then
    printf '\n' >>"$work/results.md"
    cat "$work/after.md" >>"$work/results.md"
  fi
  mv "$work/results.md" "$results"
}
