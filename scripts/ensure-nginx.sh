#!/usr/bin/env bash
# Makes sure nginx is installed: the cluster test (tests/cluster/) runs real sift replicas behind the shipped
# deploy/nginx/ configuration. On Debian/Ubuntu it installs the distribution's `nginx` package, without starting
# it (and, where systemd runs, without enabling it): the test starts its own nginx on a loopback port with its own
# prefix, so nothing listens on port 80 because of this script. Idempotent: quick when nginx is present.
# Skips when SIFT_SKIP_NGINX=1 (the cluster test then fails and says why).
set -euo pipefail

have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }

if [ "${SIFT_SKIP_NGINX:-0}" = 1 ]; then exit 0; fi
if have_nginx; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "sift: nginx is missing and this is not a Debian/Ubuntu machine: install nginx (>= 1.18) for the cluster test." >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "sift: nginx is missing; run as root (or: sudo bash scripts/ensure-nginx.sh)." >&2
  exit 1
fi
echo "sift: installing nginx from the distribution's packages (not started) ..." >&2
export DEBIAN_FRONTEND=noninteractive
# Debian starts a service its package installs unless /usr/sbin/policy-rc.d says no (exit 101). Put one in place
# for the install only, unless the machine already has its own.
policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# sift: installing nginx without starting it (scripts/ensure-nginx.sh)\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  ours=1
fi
cleanup() { if [ "$ours" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
# Quiet `apt-get update` only when the package is unknown (fresh machine, empty lists).
if ! apt-cache show nginx >/dev/null 2>&1; then apt-get update -qq >&2; fi
if ! apt-get install -y -qq --no-install-recommends nginx >&2; then
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends nginx >&2
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable nginx >/dev/null 2>&1 || true
fi
have_nginx || { echo "sift: nginx install did not give an nginx binary" >&2; exit 1; }
echo "sift: nginx installed: $(/usr/sbin/nginx -v 2>&1)" >&2
