#!/usr/bin/env bash
# Installs what building and testing Tether needs on a fresh Debian 12 machine (as root, or
# through sudo). Safe to run again: it installs only what is missing.
set -euo pipefail
packages=(
  libseccomp-dev      # CSeccomp: relay self-confinement and the restricted guest profile
  python3-cbor2       # CBOR interop tests against an independent implementation
  python3-venv        # scripts/python-tests.sh: the Python client's tests in a virtual environment
  busybox-static      # the bundled guest rootfs and the agent's PID 1 tests
  debootstrap         # Debian guest trees with systemd / OpenRC for the init hand-off tests
  tmux                # drives the CLI in a real terminal in the PTY tests
  util-linux procps   # unshare, nsenter, ps, setpriv (the rootless tests)
  e2fsprogs           # mkfs.ext4: a persistent sandbox's writable layer is a sized ext4 image
  passt               # pasta: --network egress carries the guest's TCP, UDP and DNS out (user-mode, rootless too)
  nftables            # nft: --network egress installs its destination rules in the sandbox's network namespace
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v swift >/dev/null 2>&1 || [ -x /opt/swift/usr/bin/swift ] || {
  echo "Swift 6 toolchain not found (expected on PATH or at /opt/swift/usr/bin)" >&2; exit 1; }
