#!/usr/bin/env bash
# Assembles the default guest tree: Debian's busybox-static plus the Tether agent.
#   rootfs/build.sh [--agent PATH] [--out DIR]
# prints the tree's path on stdout.
#
# - busybox-static comes from apt (`apt-get download`, unpacked with `dpkg -x`): no other network.
#   The .deb is kept in the cache, so a second build needs no network at all.
# - /bin/busybox with a symlink for every applet it lists; /sbin/tether-agent, the static agent
#   (--agent, else $TETHER_AGENT_STATIC, else scripts/build-agent.sh builds it); /init -> the agent.
# - /etc/passwd and /etc/group with root and the unprivileged `sandbox` (uid/gid 1000), hostname,
#   hosts, an inittab for busybox init hand-offs; empty mount points the agent mounts over as PID 1.
#
# Idempotent and cached: without --out the tree goes to $TETHER_CACHE/rootfs/busybox-KEY, where
# KEY hashes this script, the .deb and the agent; an existing tree is reused as it is. Every file
# gets the same owner, mode and mtime on every build, so equal inputs give equal trees.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
. "$repo/rootfs/common.sh"

agent="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) agent=$2; shift 2 ;;
    --agent=*) agent=${1#--agent=}; shift ;;
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

cache="$(tether_cache_dir)"
debs="$cache/debs"
mkdir -p "$debs"

# The busybox-static .deb: the version apt would install, downloaded once.
fetch_busybox() {
  local arch version file
  arch="$(dpkg --print-architecture)"
  version="$(apt-cache show --no-all-versions busybox-static 2>/dev/null | sed -n 's/^Version: //p' | head -n1)"
  if [ -n "$version" ]; then
    # Debian file names spell an epoch's colon as %3a.
    file="$debs/busybox-static_${version//:/%3a}_${arch}.deb"
    if [ ! -s "$file" ]; then
      echo "apt-get download busybox-static=$version ..." >&2
      (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "busybox-static=$version" >&2)
    fi
  else
    # No apt lists (apt-get update never ran): a .deb fetched earlier still does.
    file="$(ls -1 "$debs"/busybox-static_*_"$arch".deb 2>/dev/null | sort -V | tail -n1 || true)"
    [ -n "$file" ] || { echo "apt knows no busybox-static package: run apt-get update" >&2; return 1; }
  fi
  [ -s "$file" ] || { echo "apt-get download left no $file" >&2; return 1; }
  echo "$file"
}

assemble() {
  local deb=$1 agentbin=$2 dest=$3
  local stage="$dest.tmp"
  rm -rf "$stage" "$dest"
  mkdir -p "$stage"
  local unpack="$stage.deb"
  rm -rf "$unpack"
  dpkg -x "$deb" "$unpack"
  install -D -m 0755 "$unpack/bin/busybox" "$stage/bin/busybox"
  rm -rf "$unpack"

  # Applet links: busybox --list-full prints paths such as usr/bin/awk. Absolute targets are
  # resolved inside the guest, whose root is this tree.
  local applet
  "$stage/bin/busybox" --list-full | sort | while read -r applet; do
    [ -n "$applet" ] && [ "$applet" != bin/busybox ] || continue
    mkdir -p "$stage/$(dirname "$applet")"
    [ -e "$stage/$applet" ] || [ -L "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
  done

  install -D -m 0755 "$agentbin" "$stage/sbin/tether-agent"
  ln -s sbin/tether-agent "$stage/init"

  # Mount points: the agent mounts proc, sysfs, a tmpfs /dev, /run and /tmp over these as PID 1.
  mkdir -p "$stage"/{proc,sys,dev,run,tmp,root,etc,mnt,var/log,var/tmp,home/sandbox}
  chmod 1777 "$stage/tmp" "$stage/var/tmp"
  chmod 0700 "$stage/root"

  cat > "$stage/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
  cat > "$stage/etc/group" <<'GROUP'
root:x:0:
sandbox:x:1000:
nogroup:x:65534:
GROUP
  cat > "$stage/etc/shadow" <<'SHADOW'
root:*:19000:0:99999:7:::
sandbox:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
SHADOW
  chmod 0640 "$stage/etc/shadow"
  echo tether > "$stage/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$stage/etc/hosts"
  printf '/bin/sh\n/bin/ash\n' > "$stage/etc/shells"
  # For `--init /sbin/init` (busybox init): nothing to start; sync when asked to power off.
  printf '::shutdown:/bin/sync\n' > "$stage/etc/inittab"
  cat > "$stage/etc/os-release" <<OSRELEASE
NAME="Tether busybox"
ID=tether-busybox
PRETTY_NAME="Tether busybox rootfs ($(basename "$deb" .deb))"
OSRELEASE

  # Same owner and mtime everywhere, so equal inputs give equal trees. Rootless the tree stays
  # the user's own: a sandbox maps that uid to its root, so the files look owned by root inside.
  if [ "$(id -u)" -eq 0 ]; then
    chown -R -h 0:0 "$stage"
    chown 1000:1000 "$stage/home/sandbox"
  fi
  find "$stage" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
  mv "$stage" "$dest"
}

deb="$(fetch_busybox)"
agentbin="$(tether_find_agent "$agent" "$repo")"
[ -x "$agentbin" ] || { echo "the agent $agentbin is not an executable file" >&2; exit 1; }

if [ -n "$out" ]; then
  mkdir -p "$(dirname "$out")"
  out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
  assemble "$deb" "$agentbin" "$out"
  echo "$out"
  exit 0
fi

key="$(tether_key "$repo/rootfs/build.sh" "$deb" "$agentbin")"
tree="$cache/busybox-$key"
build() {
  [ -d "$tree" ] && return 0
  assemble "$deb" "$agentbin" "$tree"
  # Keep the three most recently built busybox trees (the .built stamps beside them say when);
  # older ones were built for agents since replaced. Never the one just built.
  touch "$tree.built"
  ls -1t "$cache"/busybox-*.built 2>/dev/null | tail -n +4 | while read -r stamp; do
    [ "${stamp%.built}" = "$tree" ] || rm -rf "${stamp%.built}" "$stamp"
  done
}
tether_locked "$cache/.busybox.lock" build
echo "$tree"
