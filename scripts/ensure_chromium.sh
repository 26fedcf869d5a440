#!/usr/bin/env bash
# The console's browser tests drive Debian's Chromium (Playwright's own browser download is
# not reachable here). Install it when it is missing.
set -eu
CHROMIUM=${HEDDLE_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then exit 0; fi
echo "ensure_chromium: installing Debian's chromium"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends chromium >/dev/null \
  || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends chromium >/dev/null; }
[ -x "$CHROMIUM" ] || { echo "ensure_chromium: $CHROMIUM is still missing" >&2; exit 1; }
