#!/bin/bash
# test/memory/sync_patients.sh [N]: the peak anonymous memory (RssAnon, so
# shared buffers do not count) of the backend that runs prm.sync_patients
# with N records (default 10,000, the most one call takes), sampled every
# 5 ms from /proc by this script, against a baseline in the same run: the
# same records built and counted without a sync.  The growth over the
# baseline is what the sync itself holds.  Needs a running server on this
# machine (PGHOST/PGPORT/PGUSER of a superuser); makes and keeps database
# prm_memory.  Not part of make test: it prints figures, it asserts nothing.
set -u
N=${1:-10000}
DB=prm_memory
psql -X -q postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1
psql -X -q postgres -c "CREATE DATABASE $DB" >/dev/null
psql -X -q $DB -c "CREATE EXTENSION prm CASCADE" >/dev/null 2>&1
psql -X -q $DB -c "SELECT prm.create_organization('Memory', 'UTC', '+15558069000')" >/dev/null
out=$(mktemp)
peak_of() { # label sql: prints the growth of RssAnon in kB
  psql -X -At $DB -c "SELECT pg_backend_pid()" -c "SELECT pg_sleep(0.5)" -c "$2" > $out 2>&1 &
  local ps=$! pid="" base peak v
  while [ -z "$pid" ]; do sleep 0.05; pid=$(head -1 $out 2>/dev/null | grep -E '^[0-9]+$'); done
  base=$(awk '/RssAnon/ {print $2}' /proc/$pid/status); peak=$base
  while kill -0 $ps 2>/dev/null; do
    v=$(awk '/RssAnon/ {print $2}' /proc/$pid/status 2>/dev/null)
    [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
    sleep 0.005
  done
  echo $((peak - base))
}
REC="(SELECT jsonb_agg(jsonb_build_object('external_id', 'm' || g, 'given_name', 'Given' || g, 'family_name', 'Family' || g, 'phone', '+15552' || lpad(g::text, 6, '0'), 'email', 'p' || g || '@memory.example')) FROM generate_series(1, $N) g)"
UPD="(SELECT jsonb_agg(e || jsonb_build_object('given_name', 'G2')) FROM jsonb_array_elements($REC) e)"
b1=$(peak_of base1 "SELECT jsonb_array_length($REC)")
s1=$(peak_of sync1 "SELECT prm.sync_patients(1, 'csv', $REC) ->> 'inserted'")
b2=$(peak_of base2 "SELECT jsonb_array_length($UPD)")
s2=$(peak_of sync2 "SELECT prm.sync_patients(1, 'csv', $UPD) ->> 'updated'")
echo "sync_patients, $N records, peak RssAnon growth of the backend:"
echo "  inserts: $((s1 / 1024)) MB (baseline, the records alone: $((b1 / 1024)) MB; the sync holds $(((s1 - b1) / 1024)) MB, $(((s1 - b1) * 1024 / N)) bytes a record)"
echo "  updates: $((s2 / 1024)) MB (baseline, the records alone: $((b2 / 1024)) MB; the sync holds $(((s2 - b2) / 1024)) MB, $(((s2 - b2) * 1024 / N)) bytes a record)"
rm -f $out
