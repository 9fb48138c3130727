#!/bin/bash
# Install what building and testing prm needs from Debian's packages, once.
# Runs unattended (CI has no standard input); a no-op when all is present.
set -euo pipefail
pkgs="make gcc postgresql-15 postgresql-contrib postgresql-server-dev-15
      postgresql-15-cron postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
      libipc-run-perl"
missing=()
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi
