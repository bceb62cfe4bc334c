#!/usr/bin/env bash
# Cross-builds the `ark-agent` binary for every device class in targets/*.toml
# (or only the triples given as arguments) with cargo-zigbuild, checks each
# result is statically linked, and copies it to dist/ark-agent-<triple>.
#
#   scripts/build-agents.sh                              # every target
#   scripts/build-agents.sh aarch64-unknown-linux-musl   # only these triples
#
# Needs: rustup, cargo-zigbuild, zig, python3 >= 3.11, file.
#   pip install ziglang cargo-zigbuild
# Respects CARGO_TARGET_DIR. Per-target rustflags go through
# CARGO_TARGET_<TRIPLE>_RUSTFLAGS, so host builds keep their cache.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGETS_DIR="$ROOT/targets"
DIST_DIR="$ROOT/dist"
PACKAGE="ark-agent"
BIN="ark-agent"

die() { printf 'build-agents: error: %s\n' "$*" >&2; exit 1; }
note() { printf 'build-agents: %s\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust with rustup (https://rustup.rs)"
command -v python3 >/dev/null 2>&1 || die "python3 (>= 3.11, for tomllib) not found"
python3 -c 'import tomllib' 2>/dev/null || die "python3 >= 3.11 is needed (tomllib); found $(python3 --version 2>&1)"
command -v file >/dev/null 2>&1 || die "'file' not found; install it (apt-get install file)"
command -v cargo-zigbuild >/dev/null 2>&1 \
  || die "cargo-zigbuild not found. Fix: pip install ziglang cargo-zigbuild"
# cargo-zigbuild looks for zig in \$ZIG_PATH, then 'zig' on PATH, then 'python3 -m ziglang'.
if [[ -n "${ZIG_PATH:-}" ]]; then
  zig_version="$("$ZIG_PATH" version 2>/dev/null)" || die "ZIG_PATH=$ZIG_PATH does not run. Fix: pip install ziglang cargo-zigbuild"
elif command -v zig >/dev/null 2>&1; then
  zig_version="$(zig version)"
elif zig_version="$(python3 -m ziglang version 2>/dev/null)"; then
  :
else
  die "zig not found. Fix: pip install ziglang cargo-zigbuild"
fi
note "cargo-zigbuild $(cargo-zigbuild --version | awk '{print $2}'), zig $zig_version"

if [[ -n "${RUSTFLAGS:-}" || -n "${CARGO_ENCODED_RUSTFLAGS:-}" ]]; then
  note "warning: RUSTFLAGS/CARGO_ENCODED_RUSTFLAGS is set; cargo then ignores the per-target rustflags from targets/*.toml"
fi

# --- targets ---------------------------------------------------------------
# One line per target file:
#   <triple> TAB <linker> TAB <toolchain or -> TAB <rustflags, space-separated>
target_lines="$(python3 - "$TARGETS_DIR" <<'PY'
import pathlib, sys, tomllib
d = pathlib.Path(sys.argv[1])
files = sorted(d.glob("*.toml"))
if not files:
    sys.exit(f"no target files in {d}")
for f in files:
    try:
        t = tomllib.loads(f.read_text())
    except tomllib.TOMLDecodeError as e:
        sys.exit(f"{f}: {e}")
    triple = t.get("triple")
    if not isinstance(triple, str) or not triple:
        sys.exit(f"{f}: missing 'triple'")
    if f.stem != triple:
        sys.exit(f"{f}: file name must be <triple>.toml (triple is {triple!r})")
    flags = t.get("rustflags", [])
    if not isinstance(flags, list) or not all(isinstance(x, str) for x in flags):
        sys.exit(f"{f}: 'rustflags' must be a list of strings")
    if any(not x or any(c.isspace() for c in x) for x in flags):
        sys.exit(f"{f}: each rustflags entry must be one word without spaces, e.g. [\"-C\", \"target-cpu=cortex-a7\"]")
    tc = t.get("toolchain", "")
    if not isinstance(tc, str) or any(c.isspace() for c in tc):
        sys.exit(f"{f}: 'toolchain' must be a rustup toolchain name such as \"1.93.0\"")
    print(f"{triple}\t{t.get('linker', 'cargo-zigbuild')}\t{tc or '-'}\t{' '.join(flags)}")
PY
)" || die "could not read $TARGETS_DIR/*.toml"

declare -A LINKER=() FLAGS=() TOOLCHAIN=()
ALL=()
while IFS=$'\t' read -r triple linker toolchain flags; do
  ALL+=("$triple"); LINKER[$triple]="$linker"; FLAGS[$triple]="$flags"
  [[ "$toolchain" == "-" ]] && toolchain=""
  TOOLCHAIN[$triple]="$toolchain"
done <<<"$target_lines"

if (($# > 0)); then
  SELECTED=()
  for t in "$@"; do
    [[ -n "${LINKER[$t]+x}" ]] || die "unknown target '$t'; known: ${ALL[*]} (add targets/$t.toml)"
    SELECTED+=("$t")
  done
else
  SELECTED=("${ALL[@]}")
fi

# Where cargo puts artifacts (honours CARGO_TARGET_DIR and .cargo/config).
TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

HAVE_RUSTUP=0
if command -v rustup >/dev/null 2>&1; then
  HAVE_RUSTUP=1
else
  note "warning: rustup not found; assuming the Rust std for each target is installed"
fi

mkdir -p "$DIST_DIR"
ROWS=()
for triple in "${SELECTED[@]}"; do
  [[ "${LINKER[$triple]}" == "cargo-zigbuild" ]] \
    || die "targets/$triple.toml: linker '${LINKER[$triple]}' is not supported (only \"cargo-zigbuild\")"

  # A target file may pin a toolchain (`toolchain = "1.93.0"`) when the
  # default one ships no Rust std for that triple.
  toolchain="${TOOLCHAIN[$triple]}"
  cargo_cmd=(cargo)
  if [[ -n "$toolchain" ]]; then
    ((HAVE_RUSTUP)) || die "targets/$triple.toml pins toolchain $toolchain, which needs rustup"
    cargo_cmd=(cargo "+$toolchain")
    if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
      note "rustup toolchain install $toolchain --profile minimal --target $triple"
      rustup toolchain install "$toolchain" --profile minimal --target "$triple" \
        || die "could not install toolchain $toolchain for $triple"
    fi
  fi
  if ((HAVE_RUSTUP)); then
    tc_args=()
    [[ -n "$toolchain" ]] && tc_args=(--toolchain "$toolchain")
    installed="$(rustup target list --installed "${tc_args[@]}")"
    if ! grep -qxF "$triple" <<<"$installed"; then
      note "rustup target add ${tc_args[*]} $triple"
      rustup target add "${tc_args[@]}" "$triple" \
        || die "rustup has no Rust std for $triple on this toolchain; pin one that has it with toolchain = \"<version>\" in targets/$triple.toml"
    fi
  fi

  env_name="CARGO_TARGET_$(tr 'a-z.-' 'A-Z__' <<<"$triple")_RUSTFLAGS"
  flags="${FLAGS[$triple]}"
  note "building $BIN for $triple with ${cargo_cmd[*]} zigbuild${flags:+ ($env_name=\"$flags\")}"
  start=$SECONDS
  build_env=()
  [[ -n "$flags" ]] && build_env=("$env_name=$flags")
  (cd "$ROOT" && env "${build_env[@]}" "${cargo_cmd[@]}" zigbuild --release -p "$PACKAGE" --bin "$BIN" --target "$triple") \
    || die "build failed for $triple"
  secs=$((SECONDS - start))

  out="$TARGET_DIR/$triple/release/$BIN"
  [[ -f "$out" ]] || die "expected binary not found: $out"
  desc="$(file -b "$out")"
  if [[ "$desc" != *"statically linked"* && "$desc" != *"static-pie linked"* ]]; then
    die "$out is not statically linked: $desc"
  fi
  if [[ "$desc" == *"not stripped"* ]]; then stripped=no; else stripped=yes; fi

  cp -f "$out" "$DIST_DIR/$BIN-$triple"
  size="$(stat -c %s "$DIST_DIR/$BIN-$triple")"
  note "$triple: $desc"
  ROWS+=("$triple"$'\t'"$size"$'\t'"$stripped"$'\t'"$secs")
done

printf '\n%-34s %12s %9s %8s\n' "triple" "size (B)" "stripped" "build s"
for row in "${ROWS[@]}"; do
  IFS=$'\t' read -r t s st secs <<<"$row"
  printf '%-34s %12s %9s %8s\n' "$t" "$s" "$st" "$secs"
done
printf '\nbinaries in %s\n' "$DIST_DIR"
