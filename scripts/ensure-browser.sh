#!/usr/bin/env bash
# Debian's chromium for the chat page's browser test (tests/browser/, driven by playwright-core), installed like
# lavapipe: only where apt-get is and we are root; quick when present. SIFT_SKIP_BROWSER=1 skips it (the browser
# test then fails, saying how to install it).
set -euo pipefail
if [ "${SIFT_SKIP_BROWSER:-0}" = 1 ] || [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "sift: /usr/bin/chromium is missing (the browser test needs it): install Debian's chromium package" >&2
  exit 0
fi
echo "sift: installing Debian's chromium for the browser test ..." >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } > "$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "sift: $(/usr/bin/chromium --version 2>/dev/null) installed" >&2
