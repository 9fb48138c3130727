#!/bin/bash
# The reference clients' test (test/clients/test.js, TAP): the sender and the
# webhook of clients/ as child processes against a real prm.  Run by
# test/run.sh (make test).  Installs what it needs without asking
# (test/clients/deps.sh: node, npm, npm ci in clients/).
#
# By default in a throwaway cluster (pg_virtualenv) with prm preloaded, using
# the installed extension.  With PGHOST or PGPORT set it uses that running
# server instead (as a superuser), in database prm_clients, dropped and made
# again (and left behind for inspection).
set -u
cd "$(dirname "$0")/../.."
if [ "${1:-}" != --inner ]; then
    bash test/clients/deps.sh || { echo "Bail out! could not install the clients' dependencies"; exit 2; }
    if [ -n "${PGHOST:-}${PGPORT:-}" ]; then
        exec bash "$0" --inner
    fi
    pg_virtualenv -t -o "shared_preload_libraries=prm" bash "$0" --inner
    exit $?
fi
PGOPTIONS=--client-min-messages=warning psql -X -q -d postgres -c 'DROP DATABASE IF EXISTS prm_clients' -c 'CREATE DATABASE prm_clients' > /dev/null \
    || { echo "Bail out! could not make database prm_clients"; exit 2; }
PGDATABASE=prm_clients node test/clients/test.js
