#!/usr/bin/env bash
# Makes sure a WebGPU adapter can exist on this machine.
# On a CPU-only Debian 12 machine that means Mesa's lavapipe >= 25 from bookworm-backports (Dawn refuses
# Debian 12's own Mesa 22) plus the Vulkan loader. Idempotent: quick when already installed.
# Skips installation when an NVIDIA Vulkan ICD is present or SIFT_SKIP_LAVAPIPE=1.
set -euo pipefail

need_mesa_major=25
have_lavapipe() {
  local v
  v=$(dpkg-query -W -f='${Status} ${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  [[ "$v" == "install ok installed "* ]] || return 1
  v=${v#install ok installed }
  v=${v#*:}                     # strip an epoch
  [ "${v%%.*}" -ge "$need_mesa_major" ] 2>/dev/null || return 1
  dpkg-query -W -f='${Status}' libvulkan1 2>/dev/null | grep -q 'install ok installed'
}

if [ "${SIFT_SKIP_LAVAPIPE:-0}" = 1 ]; then exit 0; fi
if ls /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json >/dev/null 2>&1; then exit 0; fi
if have_lavapipe; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "sift: no WebGPU-capable Vulkan driver found and this is not a Debian/Ubuntu machine." >&2
  echo "      Install a Vulkan driver (GPU vendor driver, or Mesa >= $need_mesa_major lavapipe) and the Vulkan loader." >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "sift: Mesa lavapipe >= $need_mesa_major is missing; run as root (or: sudo bash scripts/ensure-webgpu.sh)." >&2
  exit 1
fi
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
echo "sift: installing Mesa lavapipe (software Vulkan) from ${codename}-backports ..." >&2
src=/etc/apt/sources.list.d/debian.sources
bp=/etc/apt/sources.list.d/sift-backports.sources
if [ "$codename" = bookworm ] && [ ! -f "$bp" ]; then
  if [ -f "$src" ]; then
    # Reuse the main entry's URIs and Signed-By rather than hard-coding a mirror.
    uris=$(awk '/^URIs:/{print $2; exit}' "$src")
    key=$(awk '/^Signed-By:/{print $2; exit}' "$src")
  fi
  uris=${uris:-http://deb.debian.org/debian}
  key=${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$uris" "$key" > "$bp.tmp"
  mv "$bp.tmp" "$bp"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
if [ "$codename" = bookworm ]; then
  apt-get install -y -qq --no-install-recommends -t bookworm-backports libvulkan1 mesa-vulkan-drivers >&2
else
  apt-get install -y -qq --no-install-recommends libvulkan1 mesa-vulkan-drivers >&2
fi
have_lavapipe || { echo "sift: lavapipe install did not give Mesa >= $need_mesa_major" >&2; exit 1; }
echo "sift: lavapipe installed: $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)" >&2
