-- Benchmark 2 set-up: 1,000 free slots with 3 open offers each.
-- One organization (batch_size 3, no quiet hours, caps high enough), 1,000
-- providers, one "canceller" patient booked with each of them the day after
-- tomorrow, 3,000 patients on the waitlist (no appointment, so each is
-- eligible for every slot), then the 1,000 appointments are cancelled one
-- transaction each: each cancellation offers its slot to the next 3 patients
-- without an open offer.  ANALYZE runs every 100 cancellations (what
-- autovacuum does between real cancellations; see the run's notes).
\set ON_ERROR_STOP 1
\set QUIET on
SELECT prm.create_organization('Bench Storm', 'UTC', '+15558000002') AS org \gset
INSERT INTO bench.setting VALUES ('storm_org', :'org'), ('storm_clinic', '+15558000002');
SELECT prm.configure(:org, '{"batch_size": 3, "quiet_hours": false, "offer_daily_cap": 10, "offer_weekly_cap": 50}') IS NOT NULL AS configured \gset
CREATE TABLE bench.storm_provider AS
SELECT g AS n, prm.add_provider(:org, 'Provider ' || g) AS id FROM generate_series(1, 1000) g;
SELECT prm.add_patient(:org, 'Carl', 'Canceller', '+15559000000') AS canceller \gset
CREATE TABLE bench.storm_appointment AS
SELECT p.n, prm.book_appointment(:org, :canceller, p.id,
         date_trunc('day', now()) + interval '2 days 9 hours',
         date_trunc('day', now()) + interval '2 days 9 hours 30 minutes') AS id
  FROM bench.storm_provider p;
CREATE TABLE bench.storm_patient AS
SELECT g AS n, prm.add_patient(:org, 'Pat', 'Storm' || g, '+15552' || lpad(g::text, 6, '0')) AS id
  FROM generate_series(1, 3000) g;
SELECT count(prm.join_waitlist(:org, p.id)) AS joined FROM bench.storm_patient p \gset
ANALYZE;
-- one cancellation per transaction (\gexec sends each row on its own)
SELECT q FROM (
  SELECT a.n, 1 AS k, format('SELECT prm.cancel_appointment(%s, %s)', :org, a.id) AS q
    FROM bench.storm_appointment a
  UNION ALL
  SELECT a.n, 2, 'ANALYZE prm.offer' FROM bench.storm_appointment a WHERE a.n % 100 = 0) x
 ORDER BY n, k \gexec
-- a running clinic's history: each patient texted once a week ago, so the
-- inbound table is planned with statistics of rows, not analysed empty (a
-- plan cached on an analysed-empty table scans it as the storm fills it;
-- the ORM baseline's copy gets the same rows below)
INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, patient_id, reply, received_at)
SELECT :org, 'SMhist' || p.n, '+15552' || lpad(p.n::text, 6, '0'), 'Thanks', 'THANKS', p.id, 'ok',
       now() - interval '7 days'
  FROM bench.storm_patient p;
ANALYZE;
-- who replies: every patient holding an open offer, ordered by slot, so the
-- 3 patients of a slot reply at about the same time (replies n = 3s-2..3s)
CREATE TABLE bench.storm_reply AS
SELECT row_number() OVER (ORDER BY o.slot_id, o.id) AS n, p.phone, o.slot_id, o.patient_id
  FROM prm.offer o JOIN prm.patient p ON p.org_id = o.org_id AND p.id = o.patient_id
 WHERE o.org_id = :org AND o.status = 'open';
ALTER TABLE bench.storm_reply ADD PRIMARY KEY (n);
-- the baseline's plain slot table: a copy of the 1,000 free slots
CREATE TABLE bench.slot (LIKE prm.slot INCLUDING ALL);
INSERT INTO bench.slot OVERRIDING SYSTEM VALUE SELECT * FROM prm.slot WHERE org_id = :org;
INSERT INTO bench.setting
SELECT 'storm_slot_base', min(id)::text FROM prm.slot WHERE org_id = :org;
-- the ORM baseline's plain tables (storm_orm.sql): copies of the same rows
CREATE TABLE bench.o_slot (LIKE prm.slot INCLUDING ALL);
INSERT INTO bench.o_slot OVERRIDING SYSTEM VALUE SELECT * FROM prm.slot WHERE org_id = :org;
CREATE TABLE bench.o_offer (LIKE prm.offer INCLUDING ALL);
INSERT INTO bench.o_offer OVERRIDING SYSTEM VALUE SELECT * FROM prm.offer WHERE org_id = :org;
CREATE TABLE bench.o_patient (LIKE prm.patient INCLUDING ALL);
INSERT INTO bench.o_patient OVERRIDING SYSTEM VALUE SELECT * FROM prm.patient WHERE org_id = :org;
CREATE TABLE bench.o_appointment (LIKE prm.appointment INCLUDING ALL);
INSERT INTO bench.o_appointment OVERRIDING SYSTEM VALUE SELECT * FROM prm.appointment WHERE org_id = :org;
SELECT setval(pg_get_serial_sequence('bench.o_appointment', 'id'), (SELECT max(id) FROM bench.o_appointment)) AS o_appt \gset
CREATE TABLE bench.o_inbound_message (LIKE prm.inbound_message INCLUDING ALL);
INSERT INTO bench.o_inbound_message OVERRIDING SYSTEM VALUE SELECT * FROM prm.inbound_message WHERE org_id = :org;
SELECT setval(pg_get_serial_sequence('bench.o_inbound_message', 'id'), (SELECT max(id) FROM bench.o_inbound_message)) AS o_inbound \gset
CREATE TABLE bench.o_outbound_message (LIKE prm.outbound_message INCLUDING ALL);
ANALYZE bench.o_slot; ANALYZE bench.o_offer; ANALYZE bench.o_patient; ANALYZE bench.o_appointment;
ANALYZE bench.storm_reply; ANALYZE bench.slot; ANALYZE bench.o_inbound_message;
\set QUIET off
SELECT (SELECT count(*) FROM prm.slot WHERE org_id = :org AND status = 'free') AS free_slots,
       (SELECT max(id) - min(id) + 1 FROM prm.slot WHERE org_id = :org) AS slot_id_span,
       (SELECT count(*) FROM prm.offer WHERE org_id = :org AND status = 'open') AS open_offers,
       (SELECT count(DISTINCT patient_id) FROM prm.offer WHERE org_id = :org AND status = 'open') AS patients_offered,
       (SELECT min(c) FROM (SELECT count(*) c FROM prm.offer WHERE org_id = :org AND status = 'open' GROUP BY slot_id) x) AS min_offers_per_slot,
       (SELECT max(c) FROM (SELECT count(*) c FROM prm.offer WHERE org_id = :org AND status = 'open' GROUP BY slot_id) x) AS max_offers_per_slot;
