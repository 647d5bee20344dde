#!/usr/bin/env bash
# Builds (once, then cached) a Debian tree with a real init system, for the init hand-off:
#   rootfs/debootstrap.sh [--agent PATH] systemd|openrc
# prints the tree's path on stdout. The tree is Debian's minbase variant plus the init system
# and procps; the agent is copied to /sbin/tether-agent on every call (a cheap cmp first), so
# the cached tree always carries the agent asked for (--agent, else $TETHER_AGENT_STATIC, else
# scripts/build-agent.sh builds it).
#
# Packages come from the mirror this machine's apt already uses (its sources for the suite),
# or $TETHER_DEBIAN_MIRROR. The cache key covers this script, the flavor, suite and mirror;
# building again means deleting the directory (or changing an input). Needs root.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
. "$repo/rootfs/common.sh"

agent=""
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) agent=$2; shift 2 ;;
    --agent=*) agent=${1#--agent=}; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
flavor=${1:?usage: rootfs/debootstrap.sh [--agent PATH] systemd|openrc}
suite=${TETHER_DEBIAN_SUITE:-bookworm}

case "$flavor" in
  # systemd-sysv makes /sbin/init systemd; dbus lets systemctl talk to it (poweroff, is-system-running).
  systemd) include="systemd,systemd-sysv,dbus,procps" ;;
  # Debian's openrc ships /sbin/openrc-init and /sbin/openrc-shutdown; no sysvinit-core, whose
  # dependency on sysv-rc conflicts with openrc (and whose /sbin/init would be a different init).
  openrc) include="openrc,procps" ;;
  *) echo "unknown flavor '$flavor' (expected systemd or openrc)" >&2; exit 2 ;;
esac

# The first deb URI this machine's apt lists for the suite (deb822 or one-line format).
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '
      /^[[:space:]]*$/ { if (deb && uri && hit) { print uri; exit } deb=0; uri=""; hit=0; next }
      /^Types:/ { for (i=2;i<=NF;i++) if ($i=="deb") deb=1 }
      /^URIs:/ { uri=$2 }
      /^Suites:/ { for (i=2;i<=NF;i++) if ($i==suite) hit=1 }
      END { if (deb && uri && hit) print uri }' "$f" | head -n1
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$suite" '$1=="deb" && $0 !~ /^#/ { u=$2; if ($2 ~ /^\[/) u=$3; for (i=2;i<=NF;i++) if ($i==suite) { print u; exit } }' "$f"
  done
}
mirror=${TETHER_DEBIAN_MIRROR:-$(host_mirror | head -n1)}
[ -n "$mirror" ] || { echo "no apt source for '$suite' on this machine; set TETHER_DEBIAN_MIRROR" >&2; exit 1; }

cache="$(tether_cache_dir)"
key="$(tether_key "$repo/rootfs/debootstrap.sh" "$flavor" "$suite" "$mirror" "$include")"
tree="$cache/debian-$suite-$flavor-$key"

build() {
  [ -d "$tree" ] && return 0
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (scripts/deps.sh installs it)" >&2; return 1; }
  local tmp="$tree.tmp"
  rm -rf "$tmp"
  echo "debootstrap $suite ($flavor) into $tree ..." >&2
  local started=$SECONDS
  debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" >"$cache/debian-$suite-$flavor.log" 2>&1 || {
    echo "debootstrap failed; the last lines of $cache/debian-$suite-$flavor.log:" >&2
    tail -n 20 "$cache/debian-$suite-$flavor.log" >&2
    return 1
  }
  # OpenRC mounts cgroup v1 hierarchies unless told otherwise; the sandbox gives it cgroup2 only.
  if [ "$flavor" = openrc ]; then
    sed -i 's/^#\?rc_cgroup_mode=.*/rc_cgroup_mode="unified"/' "$tmp/etc/rc.conf"
    grep -q '^rc_cgroup_mode="unified"' "$tmp/etc/rc.conf" || echo 'rc_cgroup_mode="unified"' >> "$tmp/etc/rc.conf"
  fi
  # No login prompts: a sandbox is reached through the agent, and in a PID namespace
  # /dev/console is the host's console device (a getty there would be the host's).
  if [ "$flavor" = systemd ]; then
    ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
    ln -sf /dev/null "$tmp/etc/systemd/system/getty@.service"
  fi
  # The guest's identity and an unprivileged user, as in the busybox tree.
  echo "tether" > "$tmp/etc/hostname"
  chroot "$tmp" /usr/sbin/useradd --uid 1000 --user-group --create-home --shell /bin/sh sandbox
  # No apt caches in a cached tree; they are large and the guest has no use for them.
  rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*_Packages
  mv "$tmp" "$tree"
  echo "built $tree in $((SECONDS - started)) s ($(du -sh "$tree" | cut -f1))" >&2
}

tether_locked "$cache/.debian-$suite-$flavor.lock" build
tether_install_agent "$(tether_find_agent "$agent" "$repo")" "$tree"
echo "$tree"
