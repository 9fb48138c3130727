#!/bin/bash
# What the reference clients need, installed without asking (make test, make
# demo): node and npm from Debian when missing, then clients/node_modules
# with npm ci, exactly as clients/package-lock.json says.
set -u
cd "$(dirname "$0")/../.."
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq > /dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm < /dev/null > /dev/null \
        || { echo "could not install nodejs and npm" >&2; exit 2; }
fi
( cd clients && npm ci --no-audit --no-fund --loglevel=error > /dev/null ) \
    || { echo "npm ci in clients/ failed" >&2; exit 2; }
