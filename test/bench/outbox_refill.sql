-- Empty one queue table (:tbl, prm.outbound_message or bench.outbound_message)
-- and queue :n fresh SMS in it, all due now; then VACUUM ANALYZE, so every
-- run starts from the same state.
\set ON_ERROR_STOP 1
SELECT value AS org FROM bench.setting WHERE name = 'outbox_org' \gset
TRUNCATE :tbl;
INSERT INTO :tbl (org_id, channel, to_address, body)
SELECT :org, 'sms', '+1555' || lpad(g::text, 7, '0'),
       'Harbour Physio: an earlier appointment is free on Mon 3 Mar at 09:00. Reply YES to book it or NO to pass.'
  FROM generate_series(1, :n) g;
VACUUM ANALYZE :tbl;
