#!/bin/bash
# Run every prm test suite and end with one line "N passed, N failed".
#
#   pg_regress (sql/ + expected/) and isolation specs (test/specs/) through
#   PGXS's installcheck, and pgTAP suites (test/pgtap/) through pg_prove, all
#   in one throwaway cluster (pg_virtualenv) with prm and pg_cron preloaded;
#   then TAP tests (test/t/), which start their own clusters, as the postgres
#   user on a copy of the tree that user can write.  First of all, the unit
#   test of the assignment solver (make unit), which needs no server.  Last,
#   the reference clients (test/clients/run.sh, a cluster of its own) and the
#   PGXN metadata (test/package/meta.pl).
# The extension must be installed already (make test does that first).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
LOG=$(mktemp -d /tmp/prm-test.XXXXXX)
chmod 755 "$LOG"
passed=0
failed=0

count_regress() {   # $1: log of a pg_regress run, $2: its exit code
    local ok bad
    ok=$(grep -cE '^(test |     |ok )?.* \.\.\. ok|^ok [0-9]+' "$1" || true)
    bad=$(grep -cE '\.\.\. FAILED|^not ok [0-9]+' "$1" || true)
    if [ "$2" != 0 ] && [ "$bad" = 0 ]; then bad=1; fi
    passed=$((passed + ok)); failed=$((failed + bad))
}
count_tap() {       # $1: verbose TAP log, $2: its exit code
    local ok bad
    ok=$(grep -cE '^\s*ok [0-9]+' "$1" || true)
    bad=$(grep -cE '^\s*not ok [0-9]+' "$1" || true)
    if [ "$2" != 0 ] && [ "$bad" = 0 ]; then bad=1; fi
    passed=$((passed + ok)); failed=$((failed + bad))
}
run_tap() {         # $1: name of its log, then a command printing TAP: run, show, count
    local log=$LOG/$1.log rc
    shift
    "$@" > "$log" 2>&1
    rc=$?
    cat "$log"
    count_tap "$log" "$rc"
}

# 0. the solver's unit test (test/unit/), built and run without a server
echo "== unit =="
run_tap unit make -s unit

# 1. pg_regress, isolation and pgTAP in one preloaded throwaway cluster
cat > "$LOG/in-cluster.sh" <<'INNER'
set -u
cd "$1"
make -s installcheck > "$2/regress.log" 2>&1; echo $? > "$2/regress.rc"
psql -X -q -c 'CREATE DATABASE prm_tap' > /dev/null
if ls test/pgtap/*.sql > /dev/null 2>&1; then
    pg_prove --verbose -d prm_tap test/pgtap/*.sql > "$2/pgtap.log" 2>&1; echo $? > "$2/pgtap.rc"
else
    : > "$2/pgtap.log"; echo 0 > "$2/pgtap.rc"
fi
INNER
pg_virtualenv -t -o "shared_preload_libraries=pg_cron,prm" -o "cron.database_name=postgres" \
    -o "max_worker_processes=32" \
    bash "$LOG/in-cluster.sh" "$ROOT" "$LOG" > "$LOG/virtualenv.log" 2>&1 || true

echo "== pg_regress and isolation =="
cat "$LOG/regress.log" 2>/dev/null
rc=$(cat "$LOG/regress.rc" 2>/dev/null || echo 1)
count_regress "$LOG/regress.log" "$rc"
for d in regression.diffs output_iso/regression.diffs; do
    if [ -s "$d" ]; then echo "---- $d"; cat "$d"; fi
done
if [ ! -f "$LOG/regress.rc" ]; then cat "$LOG/virtualenv.log"; fi

echo "== pgTAP =="
cat "$LOG/pgtap.log" 2>/dev/null
rc=$(cat "$LOG/pgtap.rc" 2>/dev/null || echo 1)
count_tap "$LOG/pgtap.log" "$rc"

# 2. TAP tests, as postgres, on a copy of the tree
echo "== TAP =="
if ls test/t/*.pl > /dev/null 2>&1; then
    TAPDIR="$LOG/tap"
    mkdir -p "$TAPDIR"
    cp -r Makefile prm.control src test sql expected "$TAPDIR"/
    chown -R postgres "$LOG"
    PGBIN=$(pg_config --bindir)
    PGXSDIR=$(dirname "$(pg_config --pgxs)")/..
    ( cd "$TAPDIR" && runuser -u postgres -- env PATH="$PGBIN:$PATH" \
        TESTDIR="$TAPDIR" PG_REGRESS="$PGXSDIR/test/regress/pg_regress" \
        PGPORT=65432 prove --verbose -I "$PGXSDIR/test/perl/" -I . test/t/*.pl ) \
        > "$LOG/tap.log" 2>&1
    rc=$?
    cat "$LOG/tap.log"
    count_tap "$LOG/tap.log" "$rc"
    if [ "$rc" != 0 ]; then
        for f in "$TAPDIR"/tmp_check/log/*; do echo "---- $f"; tail -n 40 "$f"; done
    fi
fi

# 3. the reference clients (clients/) against a throwaway cluster, and the
#    PGXN metadata; the Debian package is make package-test (slow), not here
echo "== clients =="
if [ -d clients ]; then
    run_tap clients bash test/clients/run.sh
else
    echo "skipped: no clients/ (a make dist tree)"
fi
echo "== package metadata =="
run_tap meta perl test/package/meta.pl

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
