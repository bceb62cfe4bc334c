#!/usr/bin/env bash
# Ark's test command (the one the README names and CI runs):
#   formatting and lints, the whole workspace test suite with the real
#   binaries, then the aarch64 agent (static, cross-built) under qemu-user
#   against this machine's commander.
# Set ARK_SKIP_EDGE=1 to skip the cross-build and emulated run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "build the binaries the swarm tests run"
cargo build --workspace --bins
step "test suite"
cargo nextest run --workspace --no-fail-fast

if [ "${ARK_SKIP_EDGE:-0}" != 1 ]; then
  step "aarch64 agent under qemu-user"
  scripts/build-agents.sh aarch64-unknown-linux-musl
  ARK_AGENT_BIN="$PWD/dist/ark-agent-aarch64-unknown-linux-musl" \
  ARK_AGENT_RUNNER=qemu-aarch64-static \
    cargo nextest run -p ark-tests --test swarm --run-ignored only aarch64
fi
