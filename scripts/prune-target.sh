#!/usr/bin/env bash
# Removes what a persistent cargo target dir accumulates and never reuses:
# every older build of the workspace's own crates and test binaries (a new
# one is made at each change; each is hundreds of MiB with debug info), and
# incremental caches. Dependencies stay, so the next build is still warm.
# Usage: scripts/prune-target.sh [TARGET_DIR]   (default $CARGO_TARGET_DIR)
set -euo pipefail
dir="${1:-${CARGO_TARGET_DIR:-target}}"
[ -d "$dir" ] || exit 0
for profile in "$dir"/debug "$dir"/release "$dir"/*/release; do
  [ -d "$profile/deps" ] || continue
  rm -rf "$profile/incremental"
  python3 - "$profile/deps" <<'PY'
import os, re, sys, collections
deps = sys.argv[1]
groups = collections.defaultdict(list)
for f in os.listdir(deps):
    path = os.path.join(deps, f)
    m = re.match(r'^(.*?)-([0-9a-f]{16})(\..*)?$', f)
    if m and os.path.isfile(path):
        groups[(m.group(1), m.group(3) or '')].append((os.path.getmtime(path), path))
# The workspace's crates, and every extension-less file: those are test and
# bench binaries (dependencies only leave .rlib/.rmeta/.so/.d files here).
ours = re.compile(r'^(lib)?ark_')
for (name, ext), builds in groups.items():
    if len(builds) > 1 and (ours.match(name) or ext == ''):
        for _, path in sorted(builds)[:-1]:
            os.remove(path)
PY
done
