#!/bin/bash
# prm benchmarks (make bench).  Each benchmark measures prm and, in the same
# run and the same throwaway cluster, a baseline: the bare SQL (or PL/pgSQL)
# that prm replaces, on the same data.  It prints both figures, their ratio
# and the commands that reproduce them.  Nothing here fails on a timing; a
# run fails (exit 1) only when a benchmark errors or a correctness check
# does not hold (a slot booked twice, a queue drained mid-run...).
#
#   bash test/bench/run.sh [durable] [outbox] [storm] [cancel] [recalc] [deadline] [worker] [matching] [reengagement]
#                          [monitor] [inbound] [journeys] [comms] (default: all)
#
#   durable    outbox and storm again in a cluster with fsync = on and
#              synchronous_commit = on (in a full run too; labelled "durable")
#   1. outbox  the sender protocol, claim then ack in two transactions:
#              prm.claim_messages + mark_messages_sent vs pgmq 1.5.1 read +
#              delete (when ../shared/anchors/pgmq or PGMQ_DIR is there) and
#              a bare SKIP LOCKED queue UPDATE, 1/8/32 clients, batch 1/10,
#              then again while another session holds a snapshot open;
#              enqueue_message vs pgmq.send at 1 and 8 clients
#   2. storm   1,000 slots, 3 open offers each, 64 clients replying YES
#              vs bare conditional UPDATEs of a slot table
#   3. cancel  cancel -> first batch of offers queued, p50/p99, with 100,000
#              waiting entries, vs the bare SQL of the same step
#   4. recalc  prm.recalculate_priorities over 1,000,000 entries (C scoring)
#              vs the same UPDATE with the formula in PL/pgSQL; then the
#              steady state: an hour passes, prm's deadline step vs the
#              full PL/pgSQL UPDATE a scheduler would run
#   5. worker  hold deadline -> next batch queued, worker vs a 30-second poller;
#              worker CPU over 60 idle seconds vs a 1-second poller
#   6. matching    ranking 10,000 requests x 2,000 therapists; exact vs greedy
#   7. reengagement  100k patients, 2M appointments, 1M messages
#   8. monitor       heartbeats at 100k monitored patients vs a bare UPDATE + INSERT;
#                    1,000 silent at once -> alerts and first SMS queued
#  10. journeys  100,000 instances whose waits end at once: deadline ->
#              message queued p50/p99 and advances/s vs a bare SQL sweep every
#              30 s; the cost a triggering event adds to book_appointment
#   9. inbound   20,000 inbound WhatsApp messages through handle_inbound_message
#              (threading included) vs a bare INSERT; the staff inbox at
#              100,000 conversations / 2,000,000 messages, p50/p99, vs the
#              same join without the view and a denormalised table
#  11. comms     queueing a message to a patient: enqueue_message (exempt) and
#              schedule_message of a promotional kind (consent and caps
#              checked) vs the bare INSERT of the row
#
# The cluster is pg_virtualenv's (as root), with pg_cron and prm preloaded.
# Benchmarks run in their own database, prm_bench, which is in prm.databases
# as a clinic's database would be, so that its notifier relays the NOTIFYs
# (notify_relay.c); prm.worker_enabled is off, so that no worker runs jobs
# behind the measurements (the worker block turns it on for itself).
# Knobs (environment): BENCH_SECONDS (10), OUTBOX_ROWS (600000),
# CANCEL_N (200), CANCEL_ENTRIES (100000), OUTBOX_HELD ("no yes": the outbox runs without
# and with a held snapshot), PGMQ_DIR (pgmq's SQL, default ../shared/anchors/pgmq).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ -z "${PRM_BENCH_IN_CLUSTER:-}" ]; then
    started=$(date +%s)
    # durable: the outbox and storm blocks again, in a cluster of their own
    # that syncs every commit (pg_virtualenv's clusters run with fsync = off)
    durable=no rest=()
    CLUSTER_OPTS="-o prm.databases=postgres,prm_bench -o prm.worker_enabled=off -o max_worker_processes=16"
    [ $# -eq 0 ] && durable=yes
    for s in "$@"; do if [ "$s" = durable ]; then durable=yes; else rest+=("$s"); fi; done
    rc=0
    if [ $# -eq 0 ] || [ ${#rest[@]} -gt 0 ]; then
        PRM_BENCH_IN_CLUSTER=1 pg_virtualenv -t -o shared_preload_libraries=pg_cron,prm \
            -o max_connections=200 $CLUSTER_OPTS bash "$here/run.sh" "${rest[@]}" || rc=1
    fi
    if [ $durable = yes ]; then
        echo
        echo "== durable: the outbox and storm blocks again with fsync = on, synchronous_commit = on"
        PRM_BENCH_IN_CLUSTER=1 PRM_BENCH_LABEL=durable pg_virtualenv -t -o shared_preload_libraries=pg_cron,prm \
            -o max_connections=200 $CLUSTER_OPTS -o fsync=on -o synchronous_commit=on bash "$here/run.sh" outbox storm || rc=1
    fi
    echo "run time with cluster start and stop (not a figure): $(($(date +%s) - started)) s"
    exit $rc
fi

SECS=${BENCH_SECONDS:-10}
OUTBOX_ROWS=${OUTBOX_ROWS:-600000}
CANCEL_N=${CANCEL_N:-200}
CANCEL_ENTRIES=${CANCEL_ENTRIES:-100000}
export PGDATABASE=prm_bench
B=test/bench                    # how the scripts are named in printed commands
TMP=$(mktemp -d /tmp/prm-bench.XXXXXX)
FAILED=0
HOLDER_PID=
HOLDER_APP=prm_bench_snapshot_$$

want() {                        # is benchmark $1 selected?
    local s
    [ ${#SELECTED[@]} -eq 0 ] && return 0
    for s in "${SELECTED[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}
SELECTED=("$@")
LABEL=${PRM_BENCH_LABEL:-}
for s in "${SELECTED[@]}"; do
    case $s in durable)
        # inside a cluster already (PRM_BENCH_IN_CLUSTER): outbox and storm, labelled
        LABEL=durable SELECTED=(outbox storm) ;;
    esac
done
for s in "${SELECTED[@]}"; do
    case $s in outbox | storm | cancel | recalc | deadline | worker | matching | reengagement | monitor | inbound | journeys | comms) ;;
    *) echo "unknown benchmark \"$s\" (use durable, outbox, storm, cancel, recalc, deadline, worker, matching, reengagement, monitor, inbound, journeys, comms)" >&2; exit 2 ;;
    esac
done

sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
setting() { sql -c "SELECT value FROM bench.setting WHERE name = '$1'"; }
fail() { echo "FAILED: $*"; FAILED=1; }
fmt() { LC_ALL=C awk -v x="$1" 'BEGIN { s = sprintf("%.0f", x); o = "";
    while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
    print s o }'; }
ratio() { LC_ALL=C awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }

# Run pgbench; sets TPS, TXNS (transactions processed) and ELAPSED (their
# seconds, connection time excluded).  Errors are printed and fail the run.
pgb() {
    local out=$TMP/pgbench.out
    TPS=0 TXNS=0 ELAPSED=0
    if ! pgbench "$@" > "$out" 2>&1 || grep -qE 'aborted|ERROR' "$out"; then
        fail "pgbench $*"
        grep -E 'aborted|ERROR|error|FATAL' "$out" | head -5
    fi
    TPS=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out")
    TXNS=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    TPS=${TPS:-0} TXNS=${TXNS:-0}
    ELAPSED=$(LC_ALL=C awk -v n="$TXNS" -v t="$TPS" 'BEGIN { if (t > 0) printf "%.6f", n / t; else print 0 }')
}

# Run SQL (-c or -f) under \timing; sets OUT (its output) and MS (its time).
timed() {
    local out=$TMP/timed.out
    if ! psql -X -q -At -v ON_ERROR_STOP=1 -c '\timing on' "$@" > "$out" 2>&1; then
        fail "psql $*"
        cat "$out"
    fi
    MS=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$out" | tail -1)
    MS=${MS:-0}
    OUT=$(grep -v '^Time:' "$out")
}

# A session that holds a snapshot (and an xid) open until stopped.
hold_snapshot() {
    PGAPPNAME=$HOLDER_APP psql -X -q -c "BEGIN ISOLATION LEVEL REPEATABLE READ" \
        -c "SELECT txid_current()" -c "SELECT pg_sleep(3600)" > /dev/null 2>&1 &
    HOLDER_PID=$!
    for _ in $(seq 100); do
        [ "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$HOLDER_APP'
                      AND backend_xid IS NOT NULL AND query LIKE '%pg_sleep%'")" = 1 ] && return
        sleep 0.1
    done
    fail "the snapshot-holding session did not start"
}
release_snapshot() {
    [ -n "$HOLDER_PID" ] || return 0
    sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = '$HOLDER_APP'" > /dev/null
    wait "$HOLDER_PID" 2> /dev/null
    HOLDER_PID=
}
trap 'release_snapshot; rm -rf "$TMP"' EXIT

cd "$here/../.." || exit 1
bench_started=$(date +%s)
echo "prm benchmarks — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/ { print $2 }') GB"
psql -X -q -c "CREATE DATABASE prm_bench" -d postgres > /dev/null || exit 1
sql -c "SET client_min_messages = warning; CREATE EXTENSION prm CASCADE; CREATE SCHEMA bench;
        CREATE TABLE bench.setting (name text PRIMARY KEY, value text NOT NULL);" || exit 1
echo "server: $(sql -c "SELECT split_part(version(), ' (', 1)"), prm $(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'prm'");" \
    "$(sql -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
               WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'max_wal_size', 'jit', 'work_mem')")"
if [ "$LABEL" = durable ] && [ "$(sql -c "SELECT current_setting('fsync') = 'on' AND current_setting('synchronous_commit') = 'on'")" != t ]; then
    echo "durable: this cluster runs with fsync = $(sql -c "SHOW fsync"), synchronous_commit = $(sql -c "SHOW synchronous_commit"): these figures are not durable ones (the outer run.sh starts a cluster with both on)"
fi
echo "database prm_bench in a pg_virtualenv cluster (shared_preload_libraries=pg_cron,prm, max_connections=200)"
# the launcher starts prm_bench's notifier within its nap (10 s) of the database's creation
for _ in $(seq 300); do
    [ "$(sql -c "SELECT prm.health()->'notifier'->>'running'")" = true ] && break
    sleep 0.1
done
if [ "$(sql -c "SELECT prm.health()->'notifier'->>'running'")" = true ]; then
    echo "notifications: relayed by prm_bench's notifier (prm.notify_relay), pid $(sql -c "SELECT prm.health()->'notifier'->>'pid'")"
else
    echo "notifications: NOTIFY at commit, no notifier runs for prm_bench (prm.databases = $(sql -c "SHOW prm.databases"))"
fi
echo "reproduce one benchmark with its block: bash $B/run.sh outbox|storm|cancel|recalc|deadline|worker|matching|reengagement|monitor|inbound|journeys|comms"

# --------------------------------------------------------------------------
if want outbox; then
    echo
    echo "== 1. Outbox${LABEL:+ ($LABEL)}: claim + ack, prm vs pgmq 1.5.1 and the bare SQL it replaces (messages/s)"
    sql -f $B/outbox_setup.sql > /dev/null || exit 1
    # pgmq, when its SQL is at hand (../shared/anchors/pgmq from the repo root, or PGMQ_DIR)
    pgmq_dir=${PGMQ_DIR:-$(pwd)/../shared/anchors/pgmq}
    PGMQ=
    if [ -f "$pgmq_dir/pgmq.control" ] && [ -f "$pgmq_dir/pgmq--1.5.1.sql" ]; then
        ext_dir="$(${PG_CONFIG:-pg_config} --sharedir)/extension"
        if cp "$pgmq_dir/pgmq.control" "$pgmq_dir/pgmq--1.5.1.sql" "$ext_dir/" 2> "$TMP/pgmq.err" &&
            sql -c "SET client_min_messages = warning; CREATE EXTENSION pgmq VERSION '1.5.1'; SELECT pgmq.create('bench')" > /dev/null 2>> "$TMP/pgmq.err"; then
            PGMQ=yes
            echo "pgmq:     $(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'pgmq'") from $pgmq_dir (PostgreSQL License, its LICENSE there), installed into $ext_dir"
        else
            echo "pgmq comparison skipped: installing pgmq from $pgmq_dir failed: $(head -1 "$TMP/pgmq.err")"
        fi
    else
        echo "pgmq comparison skipped: no pgmq 1.5.1 SQL in $pgmq_dir (set PGMQ_DIR to a folder with pgmq.control and pgmq--1.5.1.sql)"
    fi
    echo "set-up: psql -d prm_bench -f $B/outbox_setup.sql${PGMQ:+; CREATE EXTENSION pgmq; SELECT pgmq.create('bench')}"
    echo "The sender protocol, two transactions per round on both sides (the claim, then the ack of the whole batch):"
    echo "prm:      pgbench -n -c C -j J -T $SECS -M prepared -D batch=N -f $B/outbox_prm.sql prm_bench"
    echo "          (prm.claim_messages('sms', :batch, '60 seconds') \\gset; then prm.mark_messages_sent(ids, provider ids, lease tokens))"
    [ -n "$PGMQ" ] && {
    echo "pgmq:     pgbench -n -c C -j J -T $SECS -M prepared -D batch=N -f $B/outbox_pgmq.sql prm_bench"
    echo "          (pgmq.read('bench', 60, :batch) \\gset; then pgmq.delete('bench', msg_ids))"; }
    echo "baseline: pgbench -n -c C -j J -T $SECS -M prepared -D batch=N -f $B/outbox_bare.sql prm_bench"
    echo "          (one transaction: WITH c AS MATERIALIZED (SELECT ... LIMIT :batch FOR UPDATE SKIP LOCKED) UPDATE ... SET status = 'sent')"
    echo "J = min(C, 2).  Before every run its queue is refilled with $(fmt "$OUTBOX_ROWS") due messages and vacuumed:"
    echo "          psql -d prm_bench -v tbl=prm.outbound_message -v n=$OUTBOX_ROWS -f $B/outbox_refill.sql   (bench.outbound_message for the baseline)"
    [ -n "$PGMQ" ] && echo "          psql -d prm_bench -v n=$OUTBOX_ROWS -f $B/outbox_pgmq_refill.sql   (pgmq's queue table pgmq.q_bench)"
    echo "held snapshot: another session runs BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current(); SELECT pg_sleep(3600)"
    echo "          for the whole run (started after the refill, terminated after the run)."
    echo "msg/s = messages acknowledged / pgbench's run time (connections excluded).  Checked after each run: the queue"
    echo "was not drained, every message sent was claimed once (attempts = 1), none is left claimed but not acknowledged."
    echo
    sides="bare${PGMQ:+ pgmq} prm"
    pgmq_fmt() { if [ -n "$PGMQ" ]; then fmt "$1"; else echo skipped; fi; }
    pgmq_ratio() { if [ -n "$PGMQ" ]; then ratio "$1" "$2"; else echo n/a; fi; }
    printf '%-14s %7s %5s %15s %11s %10s %9s %9s\n' "held snapshot" clients batch "baseline msg/s" "pgmq msg/s" "prm msg/s" "prm/pgmq" "prm/bare"
    for held in ${OUTBOX_HELD:-no yes}; do
        for clients in 1 8 32; do
            for batch in 1 10; do
                declare -A rate=([pgmq]=0)
                for side in $sides; do
                    case $side in
                        prm) sql -v tbl=prm.outbound_message -v n="$OUTBOX_ROWS" -f $B/outbox_refill.sql > /dev/null || fail "refill prm" ;;
                        bare) sql -v tbl=bench.outbound_message -v n="$OUTBOX_ROWS" -f $B/outbox_refill.sql > /dev/null || fail "refill bare" ;;
                        pgmq) sql -v n="$OUTBOX_ROWS" -f $B/outbox_pgmq_refill.sql > /dev/null || fail "refill pgmq" ;;
                    esac
                    [ $held = yes ] && hold_snapshot
                    pgb -n -c $clients -j "$(min "$clients" 2)" -T "$SECS" -M prepared -D batch=$batch \
                        -f $B/outbox_$side.sql prm_bench
                    release_snapshot
                    case $side in
                        pgmq)
                            # left: messages not deleted; read: those read but not deleted
                            read -r left unacked < <(sql -F' ' -c "SELECT count(*), count(*) FILTER (WHERE read_ct > 0) FROM pgmq.q_bench")
                            sent=$((OUTBOX_ROWS - left)) queued=$((left - unacked)) twice=0 ;;
                        *)
                            [ $side = prm ] && tbl=prm.outbound_message || tbl=bench.outbound_message
                            read -r sent queued unacked twice < <(sql -F' ' -c "SELECT count(*) FILTER (WHERE status = 'sent'),
                                count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'sending'),
                                count(*) FILTER (WHERE status = 'sent' AND attempts <> 1) FROM $tbl") ;;
                    esac
                    [ "$queued" -gt 0 ] || fail "$side: the queue drained during the run ($clients clients, batch $batch): raise OUTBOX_ROWS"
                    [ "$unacked" = 0 ] || fail "$side: $unacked messages claimed and not acknowledged after the run ($clients clients, batch $batch)"
                    [ "$twice" = 0 ] || fail "$side: $twice messages sent were claimed more than once ($clients clients, batch $batch)"
                    rate[$side]=$(LC_ALL=C awk -v s="$sent" -v e="$ELAPSED" 'BEGIN { if (e > 0) print s / e; else print 0 }')
                done
                printf '%-14s %7s %5s %15s %11s %10s %9s %9s\n' $held $clients $batch "$(fmt "${rate[bare]}")" \
                    "$(pgmq_fmt "${rate[pgmq]}")" "$(fmt "${rate[prm]}")" \
                    "$(pgmq_ratio "${rate[prm]}" "${rate[pgmq]}")" "$(ratio "${rate[prm]}" "${rate[bare]}")"
            done
        done
    done
    # enqueue: one message per transaction, prm.enqueue_message vs pgmq.send
    org=$(setting outbox_org)
    echo
    echo "enqueue, one message a transaction (messages/s; the queue emptied first):"
    echo "prm:      pgbench -n -c C -j J -T $SECS -M prepared -D org=$org -f $B/outbox_enqueue_prm.sql prm_bench"
    [ -n "$PGMQ" ] && echo "pgmq:     pgbench -n -c C -j J -T $SECS -M prepared -f $B/outbox_enqueue_pgmq.sql prm_bench"
    echo "prm, NOTIFY in the transaction: the same with PGOPTIONS='-c prm.notify_relay=off' (what the notifier saves)"
    printf '%7s %11s %10s %9s %18s\n' clients "pgmq msg/s" "prm msg/s" "prm/pgmq" "prm NOTIFY msg/s"
    relayed0=$(sql -c "SELECT coalesce(prm.health()->'notifier'->>'relayed_commits', '0')")
    rounds0=$(sql -c "SELECT coalesce(prm.health()->'notifier'->>'notify_rounds', '0')")
    for clients in 1 8; do
        declare -A rate=([pgmq]=0)
        for side in ${PGMQ:+pgmq} prm_notify prm; do
            sql -c "TRUNCATE prm.outbound_message${PGMQ:+, pgmq.q_bench}" > /dev/null
            opts=; [ $side = prm_notify ] && opts="-c prm.notify_relay=off"
            PGOPTIONS="$opts" pgb -n -c $clients -j "$(min "$clients" 2)" -T "$SECS" -M prepared -D org="$org" \
                -f $B/outbox_enqueue_${side%_notify}.sql prm_bench
            rate[$side]=$TPS
        done
        queued=$(sql -c "SELECT count(*) FROM prm.outbound_message WHERE status = 'queued'")
        [ "$queued" = "$TXNS" ] || fail "prm enqueue: $TXNS transactions but $queued messages queued"
        printf '%7s %11s %10s %9s %18s\n' $clients "$(pgmq_fmt "${rate[pgmq]}")" "$(fmt "${rate[prm]}")" \
            "$(pgmq_ratio "${rate[prm]}" "${rate[pgmq]}")" "$(fmt "${rate[prm_notify]}")"
    done
    relayed=$(($(sql -c "SELECT coalesce(prm.health()->'notifier'->>'relayed_commits', '0')") - relayed0))
    rounds=$(($(sql -c "SELECT coalesce(prm.health()->'notifier'->>'notify_rounds', '0')") - rounds0))
    [ "$relayed" -gt 0 ] && echo "the notifier relayed $(fmt "$relayed") commits in $(fmt "$rounds") NOTIFY transactions (prm.health()->'notifier')"
    sql -c "TRUNCATE prm.outbound_message, bench.outbound_message${PGMQ:+, pgmq.q_bench}"
fi

# --------------------------------------------------------------------------
if want storm; then
    echo
    echo "== 2. YES storm: 1,000 slots x 3 open offers, 64 clients replying YES, each patient once"
    sql -f $B/storm_setup.sql > "$TMP/storm_setup.out" || { cat "$TMP/storm_setup.out"; exit 1; }
    read -r free _ offers patients minoffers maxoffers < <(tail -1 "$TMP/storm_setup.out" | tr '|' ' ')
    echo "set-up (psql -d prm_bench -f $B/storm_setup.sql): $free free slots, $offers open offers to $patients patients," \
        "$minoffers-$maxoffers per slot"
    [ "$offers" = 3000 ] && [ "$patients" = 3000 ] && [ "$minoffers" = 3 ] && [ "$maxoffers" = 3 ] ||
        fail "the set-up did not make 3 open offers per slot"
    org=$(setting storm_org)
    clinic=$(setting storm_clinic)
    base=$(setting storm_slot_base)
    cmd_prm="pgbench -n -c 64 -j 2 -t 47 -M prepared -D i=0 -D clients=64 -D clinic=$clinic -f $B/storm_prm.sql prm_bench"
    cmd_bare="pgbench -n -c 64 -j 2 -t 47 -M prepared -D i=0 -D clients=64 -D org=$org -D slot_base=$base -f $B/storm_bare.sql prm_bench"
    # shellcheck disable=SC2086
    pgb ${cmd_prm#pgbench }
    prm_rate=$(LC_ALL=C awk -v e="$ELAPSED" 'BEGIN { if (e > 0) print 3000 / e; else print 0 }')
    IFS='|' read -r minb maxb notonce double replies booked gone other busy < <(sql -f $B/storm_check.sql)
    # the baseline: three runs on the reset slot table, the median reported
    bare_rates=()
    for _ in 1 2 3; do
        sql -c "UPDATE bench.slot SET status = 'free'" -c "VACUUM ANALYZE bench.slot" || fail "reset bench.slot"
        # shellcheck disable=SC2086
        pgb ${cmd_bare#pgbench }
        bare_rates+=("$(LC_ALL=C awk -v e="$ELAPSED" 'BEGIN { if (e > 0) print 3000 / e; else print 0 }')")
        bare_busy=$(sql -c "SELECT count(*) FROM bench.slot WHERE status = 'busy'")
        [ "$bare_busy" = 1000 ] || fail "baseline left $bare_busy of 1000 slots busy"
    done
    bare_rate=$(printf '%s\n' "${bare_rates[@]}" | sort -g | sed -n 2p)
    # for reference: the baseline plus the one NOTIFY per transaction prm sends
    cmd_notify="pgbench -n -c 64 -j 2 -t 47 -M prepared -D i=0 -D clients=64 -D org=$org -D slot_base=$base -f $B/storm_bare_notify.sql prm_bench"
    notify_rates=()
    for _ in 1 2 3; do
        sql -c "UPDATE bench.slot SET status = 'free'" -c "VACUUM ANALYZE bench.slot" || fail "reset bench.slot"
        # shellcheck disable=SC2086
        pgb ${cmd_notify#pgbench }
        notify_rates+=("$(LC_ALL=C awk -v e="$ELAPSED" 'BEGIN { if (e > 0) print 3000 / e; else print 0 }')")
    done
    notify_rate=$(printf '%s\n' "${notify_rates[@]}" | sort -g | sed -n 2p)
    # the design prm replaces: an ORM-backed webhook, one statement per step
    cmd_orm="pgbench -n -c 64 -j 2 -t 47 --max-tries=20 -M prepared -D i=0 -D clients=64 -D org=$org -f $B/storm_orm.sql prm_bench"
    # shellcheck disable=SC2086
    pgb ${cmd_orm#pgbench }
    orm_rate=$(LC_ALL=C awk -v e="$ELAPSED" 'BEGIN { if (e > 0) print 3000 / e; else print 0 }')
    read -r orm_min orm_max orm_replies < <(sql -F' ' -c "
        SELECT min(c), max(c), (SELECT count(*) FROM bench.o_inbound_message WHERE reply IS NOT NULL AND provider_message_id NOT LIKE 'SMhist%')
          FROM (SELECT s.id, count(a.id) AS c FROM bench.o_slot s
                  LEFT JOIN bench.o_appointment a ON a.org_id = s.org_id AND a.slot_id = s.id AND a.status = 'booked'
                 WHERE s.org_id = $org GROUP BY s.id) x")
    [ "$orm_min" = 1 ] && [ "$orm_max" = 1 ] && [ "$orm_replies" = 3000 ] ||
        fail "the ORM baseline booked slots $orm_min..$orm_max times, answered $orm_replies of 3000"
    echo "prm:      $cmd_prm"
    echo "          (SELECT prm.handle_inbound_sms(:clinic, r.phone, 'YES', 'SMyes' || r.n) FROM bench.storm_reply r WHERE r.n = :n;"
    echo "           64 x 47 = 3008 transactions, replies 1..3000 once each in slot order, n > 3000 does nothing)"
    echo "baseline: $cmd_bare"
    echo "          (UPDATE bench.slot SET status = 'busy' WHERE org_id = :org AND id = :slot AND status = 'free';"
    echo "           the same 3000 claims in the same order on a plain copy of the 1,000 slots; median of 3 runs)"
    echo "bookings per slot: min $minb, max $maxb; slots not booked exactly once: $notonce"
    echo "double bookings (overlapping active appointments of one provider): $double"
    echo "replies: $replies YES handled, $booked told booked, $gone told the slot was taken, $other other; busy slots: $busy"
    echo "claims/s = 3000 YES / pgbench's run time (connections excluded)"
    echo "baseline claims/s  $(fmt "$bare_rate")   (runs: $(for r in "${bare_rates[@]}"; do printf '%s ' "$(fmt "$r")"; done | sed 's/ $//'))"
    echo "ORM-style webhook: $cmd_orm"
    echo "          (BEGIN; INSERT inbound; SELECT patient; SELECT offer; SELECT slot FOR UPDATE; SELECT offer FOR UPDATE;"
    echo "           UPDATE slot ... AND status = 'free';"
    echo "           INSERT appointment; UPDATE slot; UPDATE offer accepted; UPDATE other offers withdrawn;"
    echo "           UPDATE old appointment; INSERT reply; UPDATE inbound; COMMIT — one round trip each, on plain copies;"
    echo "           a deadlock would be retried, as a webhook would: --max-tries=20)"
    echo "ORM-style bookings per slot: min $orm_min, max $orm_max; replies $orm_replies"
    echo "ORM-style claims/s $(fmt "$orm_rate")"
    echo "prm claims/s       $(fmt "$prm_rate")   prm / ORM-style webhook $(ratio "$prm_rate" "$orm_rate")"
    echo "ratio prm/baseline $(ratio "$prm_rate" "$bare_rate")"
    echo "for reference, the baseline with one NOTIFY per transaction, as prm's events send (median of 3):"
    echo "          $cmd_notify"
    echo "          $(fmt "$notify_rate") claims/s; prm/that $(ratio "$prm_rate" "$notify_rate")"
    [ "$minb" = 1 ] && [ "$maxb" = 1 ] && [ "$notonce" = 0 ] || fail "a slot was not booked exactly once"
    [ "$double" = 0 ] || fail "double bookings"
    [ "$replies" = 3000 ] && [ "$booked" = 1000 ] && [ "$gone" = 2000 ] || fail "replies are not 1000 booked + 2000 gone"
fi

# --------------------------------------------------------------------------
percentile() {                  # $1 = pgbench log prefix, $2 = percent; ms
    cat "$1".* | awk '{ print $3 }' | sort -n |
        awk -v p="$2" '{ v[NR] = $1 } END { i = int((NR * p + 99) / 100); if (i < 1) i = 1; printf "%.2f", v[i] / 1000 }'
}
if want cancel; then
    echo
    echo "== 3. Cancel -> first batch queued, with $(fmt "$CANCEL_ENTRIES") waiting entries ($CANCEL_N cancellations, one at a time)"
    sql -v targets=$((2 * CANCEL_N)) -v entries="$CANCEL_ENTRIES" -f $B/cancel_setup.sql > "$TMP/cancel_setup.out" ||
        { cat "$TMP/cancel_setup.out"; exit 1; }
    read -r entries minscore maxscore nscores < <(tail -1 "$TMP/cancel_setup.out" | tr '|' ' ')
    echo "set-up (psql -d prm_bench -v targets=$((2 * CANCEL_N)) -v entries=$CANCEL_ENTRIES -f $B/cancel_setup.sql):" \
        "$(fmt "$entries") waiting entries, scores $minscore..$maxscore ($nscores distinct)"
    org=$(setting cancel_org)
    cmd_prm="pgbench -n -c 1 -t $CANCEL_N -M prepared -D i=0 -D org=$org -l --log-prefix=PREFIX -f $B/cancel_prm.sql prm_bench"
    cmd_bare="pgbench -n -c 1 -t $CANCEL_N -M prepared -D i=0 -D org=$org -l --log-prefix=PREFIX -f $B/cancel_bare.sql prm_bench"
    c=${cmd_prm#pgbench }
    # shellcheck disable=SC2086
    pgb ${c/PREFIX/$TMP/cancel_prm}
    c=${cmd_bare#pgbench }
    # shellcheck disable=SC2086
    pgb ${c/PREFIX/$TMP/cancel_bare}
    read -r prm_offers prm_msgs bare_offers bare_msgs < <(sql -F' ' -c "
        SELECT (SELECT count(*) FROM prm.offer WHERE org_id = $org AND status = 'open'),
               (SELECT count(*) FROM prm.outbound_message WHERE org_id = $org AND kind = 'offer'),
               (SELECT count(*) FROM bench.c_offer WHERE status = 'open'),
               (SELECT count(*) FROM bench.c_outbound_message)")
    # for reference: prm again with JIT compilation off, on the next N targets
    cmd_nojit="PGOPTIONS='-c jit=off' pgbench -n -c 1 -t $CANCEL_N -M prepared -D i=$CANCEL_N -D org=$org -l --log-prefix=PREFIX -f $B/cancel_prm.sql prm_bench"
    c=${cmd_nojit#*pgbench }
    export PGOPTIONS='-c jit=off'
    # shellcheck disable=SC2086
    pgb ${c/PREFIX/$TMP/cancel_nojit}
    unset PGOPTIONS
    p50_prm=$(percentile "$TMP/cancel_prm" 50)
    p99_prm=$(percentile "$TMP/cancel_prm" 99)
    p50_bare=$(percentile "$TMP/cancel_bare" 50)
    p99_bare=$(percentile "$TMP/cancel_bare" 99)
    p50_nojit=$(percentile "$TMP/cancel_nojit" 50)
    p99_nojit=$(percentile "$TMP/cancel_nojit" 99)
    echo "prm:      $cmd_prm"
    echo "          (SELECT prm.cancel_appointment(:org, t.id) FROM bench.cancel_target t WHERE t.n = :i)"
    echo "baseline: $cmd_bare"
    echo "          (BEGIN; UPDATE appointment; INSERT slot; SELECT 3 best entries ... ORDER BY priority_score DESC"
    echo "           LIMIT 3 FOR UPDATE SKIP LOCKED; 3 x INSERT offer + its SMS; COMMIT — on plain copies of the same rows)"
    echo "latency per cancellation, client side, from pgbench's per-transaction log (PREFIX.*, 3rd column, µs)"
    echo "offers made: prm $prm_offers ($prm_msgs SMS queued), baseline $bare_offers ($bare_msgs SMS queued)"
    printf '%-10s %14s %14s %14s\n' "" "baseline ms" "prm ms" "prm/baseline"
    printf '%-10s %14s %14s %14s\n' p50 "$p50_bare" "$p50_prm" "$(ratio "$p50_prm" "$p50_bare")"
    printf '%-10s %14s %14s %14s\n' p99 "$p99_bare" "$p99_prm" "$(ratio "$p99_prm" "$p99_bare")"
    echo "for reference, prm with JIT compilation off (jit=off), on the next $CANCEL_N appointments (so with"
    echo "$((3 * CANCEL_N)) more open offers to skip than the run above):"
    echo "          $cmd_nojit"
    printf '%-10s %14s %14s %14s\n' "" "baseline ms" "prm ms" "prm/baseline"
    printf '%-10s %14s %14s %14s\n' p50 "$p50_bare" "$p50_nojit" "$(ratio "$p50_nojit" "$p50_bare")"
    printf '%-10s %14s %14s %14s\n' p99 "$p99_bare" "$p99_nojit" "$(ratio "$p99_nojit" "$p99_bare")"
    [ "$prm_offers" = $((3 * CANCEL_N)) ] && [ "$bare_offers" = $((3 * CANCEL_N)) ] ||
        fail "expected $((3 * CANCEL_N)) offers on each side"
fi

# --------------------------------------------------------------------------
if want recalc; then
    echo
    echo "== 4. Recalculation of 1,000,000 waitlist entries: C scoring vs the same formula in PL/pgSQL"
    sql -f $B/recalc_setup.sql > "$TMP/recalc_setup.out" || { cat "$TMP/recalc_setup.out"; exit 1; }
    org=$(setting recalc_org)
    echo "set-up (psql -d prm_bench -f $B/recalc_setup.sql): $(fmt "$(tail -1 "$TMP/recalc_setup.out")") waiting entries"
    declare -A best=() rows=()
    for round in 1 2; do
        sql -f $B/recalc_reset.sql > /dev/null || fail "reset"
        timed -c "SELECT prm.recalculate_priorities($org)"
        rows[prm]=$OUT ms_prm=$MS
        sql -f $B/recalc_reset.sql > /dev/null || fail "reset"
        timed -v org="$org" -f $B/recalc_plpgsql.sql -c '\echo :ROW_COUNT'
        rows[plpgsql]=$OUT ms_pl=$MS
        echo "round $round: prm $(fmt "$ms_prm") ms (${rows[prm]} rows changed), PL/pgSQL $(fmt "$ms_pl") ms (${rows[plpgsql]} rows changed)"
        if [ -z "${best[prm]:-}" ] || awk -v a="$ms_prm" -v b="${best[prm]}" 'BEGIN { exit !(a < b) }'; then best[prm]=$ms_prm; fi
        if [ -z "${best[pl]:-}" ] || awk -v a="$ms_pl" -v b="${best[pl]}" 'BEGIN { exit !(a < b) }'; then best[pl]=$ms_pl; fi
        [ "${rows[prm]}" = 1000000 ] || fail "recalculate_priorities changed ${rows[prm]} rows, not 1000000"
        [ "${rows[plpgsql]}" = 1000000 ] || fail "the PL/pgSQL UPDATE changed ${rows[plpgsql]} rows, not 1000000"
    done
    echo "prm:      psql -d prm_bench -c \"SELECT prm.recalculate_priorities($org)\""
    echo "baseline: psql -d prm_bench -v org=$org -f $B/recalc_plpgsql.sql   (the same UPDATE, bench.priority_score_plpgsql in place of the C function)"
    echo "before each: psql -d prm_bench -f $B/recalc_reset.sql (every score set to -1, VACUUM ANALYZE, CHECKPOINT); best of 2 rounds"
    echo "baseline ms        $(fmt "${best[pl]}")"
    echo "prm ms             $(fmt "${best[prm]}")"
    echo "ratio prm/baseline $(ratio "${best[prm]}" "${best[pl]}")   (speed-up $(ratio "${best[pl]}" "${best[prm]}")x)"

    # the scoring alone, without the UPDATE: both functions over the same rows
    # at one fixed as_of, and a check that they agree on every row
    asof=$(sql -c "SELECT now()")
    args="w.urgent, w.manual_boost, w.current_appointment_at, w.joined_at, '$asof'::timestamptz, 30, 20, 10, 60, 90"
    q_c="SELECT sum(prm.priority_score($args)) FROM prm.waitlist_entry w WHERE w.org_id = $org AND w.status = 'waiting'"
    q_pl="SELECT sum(bench.priority_score_plpgsql($args)) FROM prm.waitlist_entry w WHERE w.org_id = $org AND w.status = 'waiting'"
    timed -c "$q_c"
    timed -c "$q_c"
    sum_c=$OUT ms_c=$MS
    timed -c "$q_pl"
    sum_pl=$OUT ms_pl=$MS
    differ=$(sql -c "SELECT count(*) FROM prm.waitlist_entry w WHERE w.org_id = $org AND w.status = 'waiting'
                      AND prm.priority_score($args) IS DISTINCT FROM bench.priority_score_plpgsql($args)")
    echo
    echo "-- 4b. the scoring alone (no UPDATE): sum of 1,000,000 scores at one as_of (default weights), warm cache"
    echo "prm:      psql -d prm_bench -c \"$q_c\""
    echo "baseline: psql -d prm_bench -c \"$q_pl\""
    echo "sums: prm $sum_c, PL/pgSQL $sum_pl; rows where the two formulas differ: $differ"
    echo "baseline ms        $(fmt "$ms_pl")"
    echo "prm ms             $(fmt "$ms_c")"
    echo "ratio prm/baseline $(ratio "$ms_c" "$ms_pl")   (speed-up $(ratio "$ms_pl" "$ms_c")x)"
    [ "$differ" = 0 ] && [ "$sum_c" = "$sum_pl" ] || fail "the C and PL/pgSQL formulas disagree"

fi

# the steady state of time-driven scores: an hour passes
if want recalc || want deadline; then
    if [ -z "$(sql -c "SELECT value FROM bench.setting WHERE name = 'recalc_org'" 2>/dev/null)" ]; then
        sql -f $B/recalc_setup.sql > "$TMP/recalc_setup.out" || { cat "$TMP/recalc_setup.out"; exit 1; }
    fi
    org=$(setting recalc_org)
    echo
    echo "== 4c. Steady state: the clock moves one hour; prm's deadline step vs the full PL/pgSQL UPDATE a scheduler runs (bash test/bench/run.sh deadline)"
    # the steady state: an hour passes; prm rescores only the entries whose
    # deadline (score_due_at) came, a scheduler reruns the full UPDATE
    sql -c "SELECT prm.recalculate_priorities($org)" > /dev/null || fail "initial scoring"
    for round in 1 2; do
        sql -f $B/recalc_hour.sql > /dev/null || fail "clock"
        due=$(sql -c "SELECT count(*) FROM prm.waitlist_entry WHERE org_id = $org AND status = 'waiting' AND score_due_at <= now()")
        calls=$(( due / 10000 + 2 ))
        step_start=$(sql -c "SELECT clock_timestamp()")
        timed -c "SELECT sum((prm.run_due_jobs() ->> 'recalculate_priorities')::int) FROM generate_series(1, $calls)"
        done_prm=$OUT ms_prm=$MS
        # entries due when the step began that it left unscored (deadlines
        # that came between the count and the step are rescored too: more
        # than $due is right)
        skipped=$(sql -c "SELECT count(*) FROM prm.waitlist_entry WHERE org_id = $org AND status = 'waiting'
                           AND score_due_at <= '$step_start'::timestamptz")
        # scores equal a recomputation from scratch at the moment of checking,
        # but for entries whose deadline came in the seconds since (still due)
        stale=$(sql -c "SELECT count(*) FROM prm.waitlist_entry w WHERE w.org_id = $org AND w.status = 'waiting'
                         AND (w.score_due_at IS NULL OR w.score_due_at > now())
                         AND w.priority_score <> prm.priority_score(w.urgent, w.manual_boost, w.current_appointment_at, w.joined_at, now())")
        timed -v org="$org" -f $B/recalc_plpgsql.sql -c '\echo :ROW_COUNT'
        rows_pl=$OUT ms_pl=$MS
        echo "round $round: $due of 1,000,000 entries due; prm rescored $done_prm in $(fmt "$ms_prm") ms; PL/pgSQL full UPDATE $(fmt "$ms_pl") ms (it changed $rows_pl more: deadlines that came in the seconds between); due at the step's start and left unscored: $skipped; scores not due that differ from a recomputation: $stale"
        [ "$done_prm" -ge "$due" ] || fail "the deadline step rescored $done_prm entries, $due were due"
        [ "$skipped" = 0 ] || fail "the deadline step left $skipped entries due at its start unscored"
        [ "$stale" = 0 ] || fail "$stale scores differ from a recomputation from scratch"
    done
    echo "prm:      psql -d prm_bench -c \"SELECT sum((prm.run_due_jobs() ->> 'recalculate_priorities')::int) FROM generate_series(1, $calls)\"   (the job step, 10,000 entries a run)"
    echo "baseline: psql -d prm_bench -v org=$org -f $B/recalc_plpgsql.sql   (what a scheduler runs every hour)"
    echo "before each round: psql -d prm_bench -f $B/recalc_hour.sql (every time shifted back one hour, VACUUM ANALYZE, CHECKPOINT)"
    echo "baseline ms        $(fmt "$ms_pl")"
    echo "prm ms             $(fmt "$ms_prm")"
    echo "ratio prm/baseline $(ratio "$ms_prm" "$ms_pl")   (speed-up $(ratio "$ms_pl" "$ms_prm")x)"
fi

# issue 4: the worker's deadlines and idle CPU, in the database it serves
if want worker; then
    echo
    echo "== 5. Worker: hold deadline -> next batch, and idle CPU (bash test/bench/worker.sh)"
    PGDATABASE=postgres bash "$here/worker.sh" || fail "worker benchmark"
fi
# issue 5: ranking and exact assignment against greedy
if want matching; then
    echo
    echo "== 6. Matching (bash test/bench/matching.sh)"
    bash "$here/matching.sh" || fail "matching benchmark"
fi
# issue 6: reengagement at 100k patients (scaled by PATIENTS, APPOINTMENTS, MESSAGES)
if want reengagement; then
    echo
    echo "== 7. Reengagement (bash test/bench/reengagement.sh)"
    bash "$here/reengagement.sh" || fail "reengagement benchmark"
fi
# issue 13: companion monitoring at 100k monitored patients (MONITORED, CLIENTS)
if want monitor; then
    echo
    echo "== 8. Companion monitoring (bash test/bench/monitor.sh)"
    BENCH_SECONDS=$SECS bash "$here/monitor.sh" || fail "monitor benchmark"
fi

# issue 11: conversations, inbound ingest and the staff inbox (scaled by MESSAGES, CONVERSATIONS...)
if want inbound; then
    echo
    echo "== 9. Conversations: inbound ingest and the staff inbox (bash test/bench/inbound.sh)"
    bash "$here/inbound.sh" || fail "inbound benchmark"
fi

# issue 12: journeys (JOURNEY_INSTANCES, BENCH_SECONDS)
if want journeys; then
    echo
    echo "== 10. Journeys: deadlines at 100,000 instances, enrolment cost per booking (bash test/bench/journeys.sh)"
    BENCH_SECONDS=$SECS bash "$here/journeys.sh" | grep -vE '^ |^-|^\(|^$|add_journey_stage' || fail "journeys benchmark"
fi

# issue 12: communications, the cost of the consent and cap checks
if want comms; then
    echo
    echo "== 11. Communications: queueing a message to a patient (bash test/bench/comms.sh)"
    BENCH_SECONDS=$SECS bash "$here/comms.sh" || fail "comms benchmark"
fi

echo
echo "run time of the benchmarks (not a figure): $(($(date +%s) - bench_started)) s"
[ "$FAILED" = 0 ] || { echo "FAILED (see above)"; exit 1; }
