#!/bin/bash
# make fuzz: a bounded, typed fuzzer of every public prm function, then
# sqlsmith, then the booking and outbox invariants (see test/fuzz/fuzz.js).
#
#   FUZZ_SECONDS           total budget, default 240 (a third to sqlsmith)
#   FUZZ_CALL_SECONDS      time for the direct calls (default: the rest)
#   FUZZ_SQLSMITH_SECONDS  time for sqlsmith (default FUZZ_SECONDS/3; 0 skips it)
#   FUZZ_SEED              seed of the argument choices (default: the clock)
#   FUZZ_STATEMENT_TIMEOUT_MS  per call, default 2000
#   FUZZ_DB                database to (re)create, default prm_fuzz
#   FUZZ_SERVER_LOG        server log to scan for crashes and internal errors
#
# By default it runs in a throwaway cluster (pg_virtualenv) with prm and
# pg_cron preloaded, using the installed extension.  With PGHOST or PGPORT
# set it uses that running server instead (as a superuser, PGUSER), drops
# and recreates FUZZ_DB there, and leaves it behind for inspection.
# Installs what it needs: sqlsmith (Debian), node and the npm package pg.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
FZ=$ROOT/test/fuzz

if [ "${1:-}" != --inner ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v sqlsmith > /dev/null || ! command -v node > /dev/null || ! command -v npm > /dev/null; then
        apt-get update -qq > /dev/null && apt-get install -y -qq sqlsmith nodejs npm > /dev/null \
            || { echo "fuzz: could not install sqlsmith/nodejs/npm" >&2; exit 2; }
    fi
    if [ ! -d "$FZ/node_modules/pg" ]; then
        ( cd "$FZ" && npm install --no-audit --no-fund --no-package-lock --loglevel=error > /dev/null ) \
            || { echo "fuzz: npm install pg failed" >&2; exit 2; }
    fi
    OUT=$(mktemp -d /tmp/prm-fuzz.XXXXXX); chmod 777 "$OUT"
    export FUZZ_OUT=$OUT
    if [ -n "${PGHOST:-}${PGPORT:-}" ]; then
        echo "fuzz: using the running server at ${PGHOST:-localhost}:${PGPORT:-5432}"
        exec bash "$0" --inner
    fi
    # a throwaway cluster; its log is found from its data directory
    pg_virtualenv -t -o "shared_preload_libraries=pg_cron,prm" -o "cron.database_name=postgres" \
        -o "max_worker_processes=32" bash "$0" --inner
    exit $?
fi

DB=${FUZZ_DB:-prm_fuzz}
export FUZZ_DB=$DB
if [ -z "${FUZZ_SERVER_LOG:-}" ]; then
    # pg_virtualenv -t: <workdir>/data/15/regress is the data, <workdir>/log/*.log the log
    dd=$(psql -X -At -d postgres -c 'SHOW data_directory' 2>/dev/null)
    lf=$(psql -X -At -d postgres -c 'SELECT pg_current_logfile()' 2>/dev/null)
    if [ -n "$lf" ]; then
        case $lf in /*) ;; *) lf=$dd/$lf ;; esac
        [ -r "$lf" ] && FUZZ_SERVER_LOG=$lf
    elif [ -n "$dd" ]; then
        for f in "$dd"/../../../log/*.log; do [ -r "$f" ] && FUZZ_SERVER_LOG=$(readlink -f "$f"); done
    fi
fi
export FUZZ_SERVER_LOG=${FUZZ_SERVER_LOG:-}
[ -n "$FUZZ_SERVER_LOG" ] && echo "fuzz: server log $FUZZ_SERVER_LOG" || echo "fuzz: server log not found (set FUZZ_SERVER_LOG)"

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" > /dev/null || exit 2
psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$FZ/fixture.sql" || { echo "fuzz: fixture failed" >&2; exit 2; }
node "$FZ/fuzz.js"
