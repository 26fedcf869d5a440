#!/usr/bin/env bash
# Code nodes run under bubblewrap (Debian package bubblewrap); without it the node service
# refuses them (services/node/README.md, "Sandbox"). Install it when it is missing.
set -eu
BWRAP=${HEDDLE_CODE_BWRAP_PATH:-/usr/bin/bwrap}
if [ -x "$BWRAP" ]; then exit 0; fi
echo "ensure_sandbox: installing Debian's bubblewrap"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends bubblewrap >/dev/null \
  || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends bubblewrap >/dev/null; }
[ -x "$BWRAP" ] || { echo "ensure_sandbox: $BWRAP is still missing" >&2; exit 1; }
