#!/bin/bash
# Conversations benchmark: inbound ingest (threading included) against a
# bare INSERT of the same rows, and a staff inbox query at 100,000
# conversations / 2,000,000 messages against the same query without prm's
# view and on a denormalised table.
#
#   PGHOST=... PGPORT=... PGUSER=... bash test/bench/inbound.sh
#
# Needs a running server reachable through the usual PG* variables, a
# superuser (the inbox data is loaded directly into prm's tables), and prm
# installed.  It creates a scratch database prm_bench_inbound_<pid> and
# drops it at the end (KEEP=1 keeps it).  Knobs: INBOUND_MESSAGES (20000), SENDERS
# (2000), CLIENTS (4), CONVERSATIONS (100000), PER_CONVERSATION (20), ORGS
# (50), INBOX_SECONDS (8), INBOX_CLIENTS (1), INBOX_ROUNDS (2).  Fails (exit 1) only when a
# step errors or a correctness check does not hold.
set -eu
INBOUND_MESSAGES=${INBOUND_MESSAGES:-20000}
SENDERS=${SENDERS:-2000}
CLIENTS=${CLIENTS:-4}
CONVERSATIONS=${CONVERSATIONS:-100000}
PER_CONVERSATION=${PER_CONVERSATION:-20}
ORGS=${ORGS:-50}
INBOX_SECONDS=${INBOX_SECONDS:-8}
INBOX_CLIENTS=${INBOX_CLIENTS:-1}
INBOX_ROUNDS=${INBOX_ROUNDS:-2}
DB=prm_bench_inbound_$$
export PGDATABASE=$DB
here=$(cd "$(dirname "$0")" && pwd)
B=test/bench
TMP=$(mktemp -d /tmp/prm-bench-inbound.XXXXXX)
FAILED=0

createdb "$DB"
trap '[ "${KEEP:-0}" = 1 ] || dropdb --if-exists "$DB"; rm -rf "$TMP"' EXIT
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "FAILED: $*"; FAILED=1; }
fmt() { LC_ALL=C awk -v x="$1" 'BEGIN { s = sprintf("%.0f", x); o = "";
    while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
    print s o }'; }
ratio() { LC_ALL=C awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# pgbench; sets RATE (transactions / pgbench's run time, connections excluded)
pgb() {
    local out=$TMP/pgbench.out
    if ! pgbench "$@" > "$out" 2>&1 || grep -qE 'aborted|ERROR' "$out"; then
        fail "pgbench $*"
        grep -E 'aborted|ERROR|error|FATAL' "$out" | head -5
    fi
    RATE=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out")
    RATE=${RATE:-0}
}
percentile() {                  # $1 = pgbench log prefix, $2 = percent; ms
    cat "$1"* | awk '{ print $3 }' | sort -n |
        awk -v p="$2" '{ v[NR] = $1 } END { i = int((NR * p + 99) / 100); if (i < 1) i = 1; printf "%.3f", v[i] / 1000 }'
}
started=$(date +%s)

# --------------------------------------------------------------------------
echo "-- 8a. Inbound ingest: $(fmt "$INBOUND_MESSAGES") WhatsApp messages from $(fmt "$SENDERS") senders (patients), $CLIENTS clients"
sql -v senders="$SENDERS" <<'SQL' > /dev/null
SET client_min_messages = warning;
CREATE EXTENSION prm CASCADE;
CREATE SCHEMA bench;
SELECT prm.create_organization('Ingest clinic', 'UTC', '+15558000001') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false}');
SELECT prm.set_inbound_address(:org, 'whatsapp', '+15558000001');
INSERT INTO prm.patient (org_id, given_name, family_name, phone)
SELECT :org, 'Sender', 'No ' || i, '+15552' || lpad(i::text, 6, '0') FROM generate_series(1, :senders) i;
-- the unique provider ids of both runs
CREATE SEQUENCE bench.pmid;
-- the baseline: the same rows into a plain table (identity key, unique provider id)
CREATE TABLE bench.inbound_message (
    org_id bigint NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider_message_id text NOT NULL, channel text NOT NULL, from_address text NOT NULL,
    body text NOT NULL, received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, provider_message_id));
VACUUM ANALYZE;
SQL
org=$(sql -c "SELECT id FROM prm.organization WHERE name = 'Ingest clinic'")
cat > "$TMP/ingest_prm.sql" <<'PGB'
\set s random(1, :senders)
SELECT prm.handle_inbound_message('whatsapp', 'whatsapp:+15558000001', 'whatsapp:+1555' || lpad(:s::text, 7, '0'),
                                  'Hello, is my appointment on Tuesday still on?', 'WA' || nextval('bench.pmid'));
PGB
cat > "$TMP/ingest_bare.sql" <<'PGB'
\set s random(1, :senders)
INSERT INTO bench.inbound_message (org_id, provider_message_id, channel, from_address, body)
VALUES (:org, 'WA' || nextval('bench.pmid'), 'whatsapp', '+15552' || lpad(:s::text, 6, '0'),
        'Hello, is my appointment on Tuesday still on?');
PGB
per=$((INBOUND_MESSAGES / CLIENTS))
j=$(( CLIENTS < 2 ? CLIENTS : 2 ))
cmd_prm="pgbench -n -c $CLIENTS -j $j -t $per -M prepared -D senders=$SENDERS -f ingest_prm.sql $DB"
cmd_bare="pgbench -n -c $CLIENTS -j $j -t $per -M prepared -D senders=$SENDERS -D org=$org -f ingest_bare.sql $DB"
pgb -n -c "$CLIENTS" -j $j -t $per -M prepared -D senders="$SENDERS" -D org="$org" -f "$TMP/ingest_bare.sql"
rate_bare=$RATE
pgb -n -c "$CLIENTS" -j $j -t $per -M prepared -D senders="$SENDERS" -f "$TMP/ingest_prm.sql"
rate_prm=$RATE
IFS='|' read -r n_in n_conv n_msg unread doubly unthreaded senders_seen < <(sql -c "
    SELECT (SELECT count(*) FROM prm.inbound_message WHERE org_id = $org),
           (SELECT count(*) FROM prm.conversation WHERE org_id = $org),
           (SELECT count(*) FROM prm.conversation_message WHERE org_id = $org),
           (SELECT sum(unread_count) FROM prm.conversation WHERE org_id = $org),
           (SELECT count(*) FROM (SELECT 1 FROM prm.conversation WHERE state <> 'closed'
                                   GROUP BY org_id, channel, address HAVING count(*) > 1) x),
           (SELECT count(*) FROM prm.inbound_message WHERE org_id = $org AND conversation_id IS NULL),
           (SELECT count(DISTINCT from_address) FROM bench.inbound_message)")
echo "prm:      $cmd_prm"
echo "          (SELECT prm.handle_inbound_message('whatsapp', 'whatsapp:+15558000001', 'whatsapp:+1555' || lpad(:s, 7, '0'),"
echo "                   '<45 characters>', 'WA' || nextval('bench.pmid')), :s = random(1, :senders))"
echo "baseline: $cmd_bare"
echo "          (INSERT INTO bench.inbound_message (org_id, provider_message_id, channel, from_address, body) VALUES (...):"
echo "           the same rows into a plain table with an identity key and a unique (org_id, provider_message_id))"
echo "          (the scripts are written by $B/inbound.sh; the baseline runs first)"
echo "prm stored $n_in inbound messages in $n_conv conversations ($n_msg conversation messages, $unread unread);"
echo "  conversations open twice: $doubly; messages not threaded: $unthreaded  (baseline senders: $senders_seen)"
echo "msg/s = messages / pgbench's run time (connections excluded)"
echo "baseline msg/s     $(fmt "$rate_bare")"
echo "prm msg/s          $(fmt "$rate_prm")"
echo "ratio prm/baseline $(ratio "$rate_prm" "$rate_bare")"
[ "$n_in" = "$INBOUND_MESSAGES" ] && [ "$n_msg" = "$INBOUND_MESSAGES" ] && [ "$unread" = "$INBOUND_MESSAGES" ] || fail "not every message was stored, threaded and unread once"
[ "$doubly" = 0 ] && [ "$unthreaded" = 0 ] || fail "a conversation open twice or a message not threaded"
[ "$n_conv" -le "$SENDERS" ] || fail "more conversations than senders"
# for reference: the same with prm.inbound_message's patient-statistics
# triggers (reengagement) disabled, on the next messages
sql -c "ALTER TABLE prm.inbound_message DISABLE TRIGGER patient_stats_insert, DISABLE TRIGGER patient_stats_update" 2>/dev/null ||
    sql -c "ALTER TABLE prm.inbound_message DISABLE TRIGGER patient_stats_insert" -c "ALTER TABLE prm.inbound_message DISABLE TRIGGER patient_stats_update"
pgb -n -c "$CLIENTS" -j $j -t $per -M prepared -D senders="$SENDERS" -f "$TMP/ingest_prm.sql"
rate_nostats=$RATE
sql -c "ALTER TABLE prm.inbound_message ENABLE TRIGGER patient_stats_insert" -c "ALTER TABLE prm.inbound_message ENABLE TRIGGER patient_stats_update"
echo "for reference, prm with prm.inbound_message's patient-statistics triggers (patient_stats_insert,"
echo "patient_stats_update) disabled, the same command on the next $(fmt "$INBOUND_MESSAGES") messages:"
echo "          $(fmt "$rate_nostats") msg/s; ratio to the baseline $(ratio "$rate_nostats" "$rate_bare")"

# --------------------------------------------------------------------------
echo
echo "-- 8b. Staff inbox at $(fmt "$CONVERSATIONS") conversations / $(fmt "$((CONVERSATIONS * PER_CONVERSATION))") messages over $ORGS organizations"
t0=$(date +%s)
sql -v convs="$CONVERSATIONS" -v per="$PER_CONVERSATION" -v orgs="$ORGS" <<'SQL' > /dev/null
SET client_min_messages = warning;
SELECT prm.create_organization('Inbox clinic ' || g, 'UTC') FROM generate_series(1, :orgs) g;
-- rows consistent by construction: no foreign-key checks per row while loading
SET session_replication_role = replica;
CREATE TEMP TABLE o AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, id FROM prm.organization WHERE name LIKE 'Inbox clinic %';
-- last messages spread uniformly over 120 days: older than 30 days closed
-- (3 in 4), older than 1 day inactive, the rest active
INSERT INTO prm.conversation (org_id, id, channel, address, state, created_at, last_message_at, last_inbound_at,
                              unread_count, state_due_at, closed_at) OVERRIDING SYSTEM VALUE
SELECT o.id, i, 'whatsapp', '+1666' || lpad(i::text, 7, '0'), st, t - interval '20 hours', t, t - interval '1 hour',
       (hashint4(i + 3) & 2147483647) % 4,
       CASE st WHEN 'active' THEN t + interval '1 day' WHEN 'inactive' THEN t + interval '30 days' END,
       CASE st WHEN 'closed' THEN t + interval '30 days' END
  FROM generate_series(1, :convs) i
  JOIN o ON o.n = i % :orgs,
  LATERAL (SELECT now() - ((hashint4(i) & 2147483647) % (120 * 86400)) * interval '1 second' AS t) x,
  LATERAL (SELECT CASE WHEN t < now() - interval '30 days' THEN 'closed'
                       WHEN t < now() - interval '1 day' THEN 'inactive' ELSE 'active' END AS st) y;
SELECT setval('prm.conversation_id_seq', :convs);
-- per conversation, one message an hour up to its last message (the newest has the highest id)
INSERT INTO prm.conversation_message (org_id, id, conversation_id, direction, body, created_at) OVERRIDING SYSTEM VALUE
SELECT c.org_id, (c.id - 1) * :per + k, c.id, CASE WHEN k % 2 = 1 THEN 'inbound' ELSE 'outbound' END,
       'Message ' || k || ' of conversation ' || c.id || ': about the appointment',
       c.last_message_at - (:per - k) * interval '1 hour'
  FROM prm.conversation c, generate_series(1, :per) k
 WHERE c.address LIKE '+1666%';
SELECT setval('prm.conversation_message_id_seq', (SELECT max(id) FROM prm.conversation_message));
-- the denormalised baseline: the conversation row carries its last message
CREATE TABLE bench.inbox AS
SELECT c.org_id, c.id AS conversation_id, c.patient_id, c.channel, c.address, c.state, c.last_message_at,
       c.unread_count, c.assignee_id, l.direction AS last_direction, l.body AS last_body
  FROM prm.conversation c
  CROSS JOIN LATERAL (SELECT m.direction, m.body FROM prm.conversation_message m
                       WHERE m.org_id = c.org_id AND m.conversation_id = c.id ORDER BY m.id DESC LIMIT 1) l
 WHERE c.address LIKE '+1666%';
ALTER TABLE bench.inbox ADD PRIMARY KEY (org_id, conversation_id);
CREATE INDEX ON bench.inbox (org_id, last_message_at DESC) WHERE state <> 'closed';
RESET session_replication_role;
VACUUM ANALYZE;
SQL
load_s=$(( $(date +%s) - t0 ))
read -r lo hi < <(sql -F' ' -c "SELECT min(id), max(id) FROM prm.organization WHERE name LIKE 'Inbox clinic %'")
IFS='|' read -r n_conv n_open n_msg < <(sql -c "
    SELECT count(*), count(*) FILTER (WHERE state <> 'closed'),
           (SELECT count(*) FROM prm.conversation_message WHERE org_id BETWEEN $lo AND $hi)
      FROM prm.conversation WHERE org_id BETWEEN $lo AND $hi")
echo "loaded in $load_s s: $(fmt "$n_conv") conversations ($(fmt "$n_open") not closed), $(fmt "$n_msg") messages, organizations $lo..$hi"
q_prm="SELECT * FROM prm.conversation_inbox WHERE org_id = :org ORDER BY last_message_at DESC LIMIT 50;"
q_join="SELECT c.org_id, c.id AS conversation_id, c.patient_id, c.channel, c.address, c.state, c.last_message_at, c.unread_count, c.assignee_id, l.direction AS last_direction, l.body AS last_body FROM prm.conversation c CROSS JOIN LATERAL (SELECT m.direction, m.body FROM prm.conversation_message m WHERE m.org_id = c.org_id AND m.conversation_id = c.id ORDER BY m.id DESC LIMIT 1) l WHERE c.org_id = :org AND c.state <> 'closed' ORDER BY c.last_message_at DESC LIMIT 50;"
q_denorm="SELECT * FROM bench.inbox WHERE org_id = :org AND state <> 'closed' ORDER BY last_message_at DESC LIMIT 50;"
declare -A p50 p99 tps
for side in prm join denorm; do
    q=q_$side
    printf '\\set org random(%s, %s)\n%s\n' "$lo" "$hi" "${!q}" > "$TMP/inbox_$side.sql"
    tps[$side]=0
done
# rounds interleaved, every round's log pooled: a busy host slows all three alike
for round in $(seq "$INBOX_ROUNDS"); do
    for side in prm join denorm; do
        pgb -n -c "$INBOX_CLIENTS" -j "$INBOX_CLIENTS" -T "$INBOX_SECONDS" -M prepared -l \
            --log-prefix="$TMP/log_${side}_$round" -f "$TMP/inbox_$side.sql"
        tps[$side]=$(LC_ALL=C awk -v a="${tps[$side]}" -v b="$RATE" -v n="$INBOX_ROUNDS" 'BEGIN { print a + b / n }')
    done
done
for side in prm join denorm; do
    p50[$side]=$(percentile "$TMP/log_${side}_" 50)
    p99[$side]=$(percentile "$TMP/log_${side}_" 99)
done
rows=$(sql -c "SELECT count(*) FROM prm.conversation_inbox WHERE org_id = $lo")
same=$(sql -c "SELECT count(*) FROM ((SELECT * FROM prm.conversation_inbox WHERE org_id = $lo ORDER BY last_message_at DESC LIMIT 50)
                                    EXCEPT (SELECT * FROM bench.inbox WHERE org_id = $lo AND state <> 'closed' ORDER BY last_message_at DESC LIMIT 50)) x")
echo "prm:      pgbench -n -c $INBOX_CLIENTS -j $INBOX_CLIENTS -T $INBOX_SECONDS -M prepared -l -f inbox_prm.sql $DB"
echo "          ($INBOX_ROUNDS rounds, interleaved with the two baselines; the rounds' logs pooled)"
echo "          (\\set org random($lo, $hi); $q_prm)"
echo "baseline: the same with inbox_join.sql, the view's join written out:"
echo "          (SELECT c.*, l.direction, l.body FROM prm.conversation c CROSS JOIN LATERAL (SELECT ... FROM prm.conversation_message m"
echo "           WHERE m.org_id = c.org_id AND m.conversation_id = c.id ORDER BY m.id DESC LIMIT 1) l"
echo "           WHERE c.org_id = :org AND c.state <> 'closed' ORDER BY c.last_message_at DESC LIMIT 50)"
echo "and with inbox_denorm.sql, a denormalised table carrying each conversation's last message"
echo "          (bench.inbox, index (org_id, last_message_at DESC) WHERE state <> 'closed'):"
echo "          ($q_denorm)"
echo "latency per query, client side, from pgbench's per-transaction log (-l, 3rd column, µs); an organization has"
echo "$(fmt "$rows") conversations not closed; rows of the first page that differ between prm and the denormalised table: $same"
printf '%-26s %10s %10s %10s %14s\n' "" "p50 ms" "p99 ms" "queries/s" "p50 vs prm"
printf '%-26s %10s %10s %10s %14s\n' "prm.conversation_inbox" "${p50[prm]}" "${p99[prm]}" "$(fmt "${tps[prm]}")" 1.00
printf '%-26s %10s %10s %10s %14s\n' "same join, no view" "${p50[join]}" "${p99[join]}" "$(fmt "${tps[join]}")" "$(ratio "${p50[join]}" "${p50[prm]}")"
printf '%-26s %10s %10s %10s %14s\n' "denormalised table" "${p50[denorm]}" "${p99[denorm]}" "$(fmt "${tps[denorm]}")" "$(ratio "${p50[denorm]}" "${p50[prm]}")"
echo "ratio prm/denormalised: p50 $(ratio "${p50[prm]}" "${p50[denorm]}"), p99 $(ratio "${p99[prm]}" "${p99[denorm]}")"
echo "the plan (EXPLAIN (ANALYZE, BUFFERS) of the view query, organization $lo):"
sql -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM prm.conversation_inbox WHERE org_id = $lo ORDER BY last_message_at DESC LIMIT 50" | sed 's/^/    /'
[ "$same" = 0 ] || fail "the inbox view and the denormalised table disagree"

echo "-- total $(( $(date +%s) - started )) s; reproduce: bash $B/inbound.sh (INBOUND_MESSAGES=$INBOUND_MESSAGES SENDERS=$SENDERS CLIENTS=$CLIENTS CONVERSATIONS=$CONVERSATIONS PER_CONVERSATION=$PER_CONVERSATION ORGS=$ORGS)"
[ "$FAILED" = 0 ] || exit 1
