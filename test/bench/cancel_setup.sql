-- Benchmark 3 set-up: an organization with :entries waiting entries and
-- :targets booked appointments of a "canceller" patient (20 providers, slots the day
-- after tomorrow from 09:00, 30 minutes each), and a history of 20,000 closed
-- offers; default settings.
-- Patients and waitlist entries are bulk-inserted as superuser (the score
-- trigger computes every entry's priority_score on insert).  Scores vary:
-- 10% urgent, 20% with a manual boost, joined up to 180 days ago, 70% with a
-- current appointment 1-120 days away, 30% waiting for one provider.
-- Then plain copies of the tables the baseline reads and writes.
\set ON_ERROR_STOP 1
\set QUIET on
SELECT setseed(0.3);
SELECT prm.create_organization('Bench Cancel', 'UTC', '+15558000003') AS org \gset
INSERT INTO bench.setting VALUES ('cancel_org', :'org');
CREATE TABLE bench.cancel_provider AS
SELECT g AS n, prm.add_provider(:org, 'Provider ' || g) AS id FROM generate_series(1, 20) g;
SELECT prm.add_patient(:org, 'Carl', 'Canceller', '+15553000000') AS canceller \gset
-- patients in transactions of 5,000 (\gexec runs each row on its own): prm's
-- statistics trigger takes one advisory lock per patient and transaction
SELECT format('INSERT INTO prm.patient (org_id, given_name, family_name, phone)'
              ' SELECT %s, ''Pat'', ''Wait'' || g, ''+1556'' || lpad(g::text, 7, ''0'')'
              '   FROM generate_series(%s, %s) g', :org, b, least(b + 4999, :entries))
  FROM generate_series(1, :entries, 5000) b \gexec
INSERT INTO prm.waitlist_entry (org_id, patient_id, provider_id, urgent, manual_boost, joined_at,
                                current_appointment_at)
SELECT :org, p.id,
       CASE WHEN random() < 0.3 THEN (SELECT id FROM bench.cancel_provider
                                       WHERE n = 1 + (p.id % 20)) END,
       random() < 0.1,
       CASE WHEN random() < 0.2 THEN 1 + floor(random() * 40)::int ELSE 0 END,
       now() - random() * interval '180 days',
       CASE WHEN random() < 0.7 THEN now() + interval '1 day' + random() * interval '119 days' END
  FROM prm.patient p WHERE p.org_id = :org AND p.id <> :canceller;
CREATE TABLE bench.cancel_target AS
SELECT g AS n, prm.book_appointment(:org, :canceller, pr.id,
         date_trunc('day', now()) + interval '2 days 9 hours' + ((g - 1) / 20) * interval '30 minutes',
         date_trunc('day', now()) + interval '2 days 9 hours 30 minutes' + ((g - 1) / 20) * interval '30 minutes') AS id
  FROM generate_series(1, :targets) g JOIN bench.cancel_provider pr ON pr.n = 1 + (g - 1) % 20;
ALTER TABLE bench.cancel_target ADD PRIMARY KEY (n);
-- offer history: 20,000 offers closed a month ago (100 past slots), as a
-- clinic that has been filling slots for a while has, so the planner sees
-- prm.offer with rows and statistics; they are outside every cap and
-- recent-offer window and change no patient's eligibility
INSERT INTO prm.slot (org_id, provider_id, starts_at, ends_at, status, fill_status, batches_sent)
SELECT :org, pr.id,
       date_trunc('day', now()) - interval '30 days' + ((g - 1) / 20) * interval '30 minutes',
       date_trunc('day', now()) - interval '30 days' + ((g - 1) / 20) * interval '30 minutes' + interval '30 minutes',
       'busy', 'exhausted', 10
  FROM generate_series(1, 100) g JOIN bench.cancel_provider pr ON pr.n = 1 + (g - 1) % 20;
CREATE TEMP TABLE past_slot AS
SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM prm.slot WHERE org_id = :org;
INSERT INTO prm.offer (org_id, slot_id, patient_id, waitlist_entry_id, status, hold_until, batch_no,
                       rank, score_breakdown, created_at, responded_at, token_hash)
SELECT :org, s.id, w.patient_id, w.id, CASE WHEN w.k % 3 = 0 THEN 'declined' ELSE 'expired' END,
       now() - interval '30 days' + interval '7 minutes', 1 + w.k % 10, w.priority_score, '{}',
       now() - interval '30 days', CASE WHEN w.k % 3 = 0 THEN now() - interval '30 days' + interval '2 minutes' END,
       pg_catalog.sha256(pg_catalog.uuid_send(t.token))
  FROM (SELECT x.id, x.patient_id, x.priority_score, row_number() OVER (ORDER BY random()) AS k
          FROM prm.waitlist_entry x WHERE x.org_id = :org) w
  JOIN past_slot s ON s.k = w.k % 100
  CROSS JOIN LATERAL (SELECT gen_random_uuid() AS token, w.k AS for_row) t
 WHERE w.k <= 20000;

-- the baseline's plain tables: same columns and indexes, same rows
CREATE TABLE bench.c_patient (LIKE prm.patient INCLUDING ALL);
INSERT INTO bench.c_patient OVERRIDING SYSTEM VALUE SELECT * FROM prm.patient WHERE org_id = :org;
CREATE TABLE bench.c_waitlist_entry (LIKE prm.waitlist_entry INCLUDING ALL);
INSERT INTO bench.c_waitlist_entry OVERRIDING SYSTEM VALUE SELECT * FROM prm.waitlist_entry WHERE org_id = :org;
CREATE TABLE bench.c_appointment (LIKE prm.appointment INCLUDING ALL);
INSERT INTO bench.c_appointment OVERRIDING SYSTEM VALUE SELECT * FROM prm.appointment WHERE org_id = :org;
CREATE TABLE bench.c_slot (LIKE prm.slot INCLUDING ALL);
INSERT INTO bench.c_slot OVERRIDING SYSTEM VALUE SELECT * FROM prm.slot WHERE org_id = :org;
CREATE TABLE bench.c_offer (LIKE prm.offer INCLUDING ALL);
INSERT INTO bench.c_offer OVERRIDING SYSTEM VALUE SELECT * FROM prm.offer WHERE org_id = :org;
CREATE TABLE bench.c_outbound_message (LIKE prm.outbound_message INCLUDING ALL);
SELECT setval(pg_get_serial_sequence('bench.c_slot', 'id'), (SELECT max(id) FROM bench.c_slot)),
       setval(pg_get_serial_sequence('bench.c_offer', 'id'), (SELECT max(id) FROM bench.c_offer)) \gset x_
ALTER TABLE bench.c_outbound_message SET (fillfactor = 70);
VACUUM ANALYZE;
\set QUIET off
SELECT count(*) AS waiting_entries, min(priority_score) AS min_score, max(priority_score) AS max_score,
       count(DISTINCT priority_score) AS distinct_scores
  FROM prm.waitlist_entry WHERE org_id = :org AND status = 'waiting';
