#!/usr/bin/env bash
# Puts an Ark agent on a device over SSH, enrols it and starts it.
#
#   scripts/flash-agent.sh USER@HOST TARGET COMMANDER_URL [options]
#
#   TARGET          a device class from targets/ (e.g. aarch64-unknown-linux-musl);
#                   its static binary is dist/ark-agent-TARGET, built with
#                   scripts/build-agents.sh TARGET when missing
#   COMMANDER_URL   the commander as the device reaches it, e.g. https://nas.lan:8443
#
# Options:
#   --name NAME       the agent's name (default: the host part of USER@HOST)
#   --port N          SSH port (default 22)
#   --identity FILE   SSH private key
#   --binary FILE     use this agent binary instead of dist/ark-agent-TARGET
#   --data DIR        the commander's data dir, for `ark-commander enroll` (default: $ARK_DATA or ark-commander-data)
#   --root DIR        install under DIR on the device instead of / (tests; chroot-style images)
#   --no-wait         do not wait for the agent to show up in `ark-commander agents`
#
# On the device: /usr/local/bin/ark-agent, state in /var/lib/ark-agent (the
# agent's identity: kept on re-runs, so flashing again upgrades in place),
# a system user `ark-agent` when the device has useradd and we are root, and
# a hardened systemd unit /etc/systemd/system/ark-agent.service (dedicated
# user, ProtectSystem=strict, the state dir its only writable path). Where
# systemd is not running (containers, tests) the unit is still checked with
# systemd-analyze when present, and the agent is started in the background.
# Needs on this machine: ssh, ark-commander (on PATH or built in target/).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { printf 'flash-agent: error: %s\n' "$*" >&2; exit 1; }
note() { printf 'flash-agent: %s\n' "$*" >&2; }

[[ $# -ge 3 ]] || { sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
DEST="$1" TARGET="$2" COMMANDER="$3"
shift 3
NAME="" PORT=22 IDENTITY="" BINARY="" DATA="${ARK_DATA:-ark-commander-data}" PREFIX="" WAIT=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --identity) IDENTITY="$2"; shift 2 ;;
    --binary) BINARY="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --root) PREFIX="${2%/}"; shift 2 ;;
    --no-wait) WAIT=0; shift ;;
    *) die "unknown option $1 (see the top of this script)" ;;
  esac
done
[[ -n "$NAME" ]] || NAME="${DEST#*@}"
[[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]] || die "agent name '$NAME' is not a plain name: give --name"
[[ -f "$ROOT/targets/$TARGET.toml" ]] || die "no device class '$TARGET' in targets/ (have: $(cd "$ROOT/targets" && ls ./*.toml | sed 's|./||; s|.toml||' | tr '\n' ' '))"
command -v ssh >/dev/null || die "ssh not found (apt-get install openssh-client)"

COMMANDER_BIN="$(command -v ark-commander || true)"
for candidate in "${CARGO_TARGET_DIR:-$ROOT/target}/release/ark-commander" "${CARGO_TARGET_DIR:-$ROOT/target}/debug/ark-commander"; do
  [[ -n "$COMMANDER_BIN" ]] || { [[ -x "$candidate" ]] && COMMANDER_BIN="$candidate"; }
done
[[ -n "$COMMANDER_BIN" ]] || die "ark-commander not found: cargo build -p ark-commander, or put it on PATH"

if [[ -z "$BINARY" ]]; then
  BINARY="$ROOT/dist/ark-agent-$TARGET"
  [[ -f "$BINARY" ]] || { note "building $BINARY"; "$ROOT/scripts/build-agents.sh" "$TARGET"; }
fi
[[ -f "$BINARY" ]] || die "agent binary $BINARY not found"

SSH=(ssh -p "$PORT" -o BatchMode=yes -o ConnectTimeout=10)
[[ -n "$IDENTITY" ]] && SSH+=(-i "$IDENTITY")
[[ -n "${ARK_SSH_OPTS:-}" ]] && read -r -a extra <<<"$ARK_SSH_OPTS" && SSH+=("${extra[@]}")
remote() { "${SSH[@]}" "$DEST" "$@"; }

BIN_PATH="$PREFIX/usr/local/bin/ark-agent"
STATE="$PREFIX/var/lib/ark-agent"
UNIT_DIR="$PREFIX/etc/systemd/system"

note "copying $(basename "$BINARY") to $DEST:$BIN_PATH"
remote "mkdir -p '$(dirname "$BIN_PATH")' '$STATE' '$UNIT_DIR' && cat > '$BIN_PATH.new' && chmod 755 '$BIN_PATH.new' && mv '$BIN_PATH.new' '$BIN_PATH'" <"$BINARY" \
  || die "could not copy the binary over SSH to $DEST (port $PORT): check the key and that the user may write $(dirname "$BIN_PATH")"
remote "'$BIN_PATH' --version" >/dev/null || die "the agent binary does not run on $DEST: wrong TARGET for this device? (uname -m: $(remote uname -m))"

# Enrol once; a re-flash keeps the identity (and so the name and history).
if remote "test -d '$STATE/identity'"; then
  note "$NAME is enrolled already: upgrading in place, identity kept"
else
  TOKEN="$("$COMMANDER_BIN" --data "$DATA" enroll "$NAME")" || die "ark-commander enroll $NAME failed (is the commander running with --data $DATA?)"
  remote "'$BIN_PATH' --data '$STATE' enroll --commander '$COMMANDER' --token '$TOKEN'" >/dev/null \
    || die "enrolment of $NAME against $COMMANDER failed: can the device reach the commander at that URL?"
  note "$NAME enrolled (one-time token)"
fi

# A dedicated system user owns the state dir (on an image under --root,
# the user is created when the device first boots the unit's owner: skip).
if [[ -z "$PREFIX" ]] && remote "test \"\$(id -u)\" = 0 && command -v useradd >/dev/null"; then
  remote "id ark-agent >/dev/null 2>&1 || useradd --system --home-dir /var/lib/ark-agent --shell /usr/sbin/nologin ark-agent"
  remote "chown -R ark-agent: '$STATE' && chmod 700 '$STATE'"
fi

UNIT="[Unit]
Description=Ark harvester agent
Documentation=https://example.invalid/ark
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$BIN_PATH --data $STATE run
User=ark-agent
Restart=always
RestartSec=5
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
ReadWritePaths=$STATE

[Install]
WantedBy=multi-user.target"
printf '%s\n' "$UNIT" | remote "cat > '$UNIT_DIR/ark-agent.service'"

if [[ -z "$PREFIX" ]] && remote "test -d /run/systemd/system"; then
  remote "systemctl daemon-reload && systemctl enable ark-agent.service >/dev/null 2>&1 && systemctl restart ark-agent.service" \
    || die "systemctl could not start ark-agent on $DEST: see 'journalctl -u ark-agent' there"
  note "systemd unit ark-agent.service enabled and (re)started"
else
  if remote "command -v systemd-analyze >/dev/null"; then
    remote "systemd-analyze verify '$UNIT_DIR/ark-agent.service'" || die "the unit file does not verify (systemd-analyze verify)"
    note "systemd not running on $DEST: unit checked with systemd-analyze; starting the agent in the background"
  else
    note "systemd not running on $DEST: starting the agent in the background"
  fi
  remote "if [ -f '$STATE/agent.pid' ]; then kill \$(cat '$STATE/agent.pid') 2>/dev/null || true; sleep 1; fi; \
    nohup '$BIN_PATH' --data '$STATE' run >'$STATE/agent.log' 2>&1 </dev/null & echo \$! > '$STATE/agent.pid'"
fi

if [[ $WAIT -eq 1 ]]; then
  for _ in $(seq 1 60); do
    if "$COMMANDER_BIN" --data "$DATA" agents --json 2>/dev/null \
      | python3 -c "import json,sys; sys.exit(0 if any(a['name']=='$NAME' and a['state']=='online' for a in json.load(sys.stdin)) else 1)"; then
      note "$NAME is online: see \`ark-commander agents\`"
      exit 0
    fi
    sleep 1
  done
  die "$NAME did not come online within 60 s: look at $STATE/agent.log or journalctl -u ark-agent on $DEST"
fi
