# Shared by the rootfs scripts (sourced, not run). Cached trees live under $TETHER_CACHE
# (default ${XDG_CACHE_HOME:-~/.cache}/tether/rootfs), one directory per content key, so each
# tree is built once and a changed input builds a new one beside it.

tether_cache_dir() {
  local base="${TETHER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tether}"
  mkdir -p "$base/rootfs"
  (cd "$base/rootfs" && pwd)
}

# sha256 of everything given (files by content, other words as text), first 16 hex digits.
tether_key() {
  local item
  for item in "$@"; do
    if [ -f "$item" ]; then sha256sum < "$item"; else printf '%s\n' "$item"; fi
  done | sha256sum | cut -c1-16
}

# Runs "$@" holding an exclusive lock on FILE, so parallel callers build a tree once.
tether_locked() {
  local file=$1; shift
  exec {lockfd}>"$file"
  flock "$lockfd"
  "$@"
  local status=$?
  exec {lockfd}>&-
  return $status
}

# Copies the agent into TREE/sbin/tether-agent unless it is already identical (cheap, so a
# cached tree always carries the agent that was asked for).
tether_install_agent() {
  local agent=$1 tree=$2
  if ! cmp -s "$agent" "$tree/sbin/tether-agent"; then
    install -D -m 0755 "$agent" "$tree/sbin/tether-agent.new"
    mv -f "$tree/sbin/tether-agent.new" "$tree/sbin/tether-agent"
  fi
}

# The static agent: --agent PATH, else $TETHER_AGENT_STATIC, else build it (release, static).
tether_find_agent() {
  local given=$1 repo=$2
  if [ -n "$given" ]; then echo "$given"; return; fi
  if [ -n "${TETHER_AGENT_STATIC:-}" ]; then echo "$TETHER_AGENT_STATIC"; return; fi
  echo "building the static agent (scripts/build-agent.sh) ..." >&2
  "$repo/scripts/build-agent.sh"
}
