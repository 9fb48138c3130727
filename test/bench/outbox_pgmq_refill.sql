-- Empty pgmq's queue "bench" and queue :n fresh messages in it, all visible
-- now, with the same address and text as prm's; then VACUUM ANALYZE.
\set ON_ERROR_STOP 1
TRUNCATE pgmq.q_bench;
INSERT INTO pgmq.q_bench (vt, message)
SELECT clock_timestamp(), jsonb_build_object('to', '+1555' || lpad(g::text, 7, '0'),
       'body', 'Harbour Physio: an earlier appointment is free on Mon 3 Mar at 09:00. Reply YES to book it or NO to pass.')
  FROM generate_series(1, :n) g;
VACUUM ANALYZE pgmq.q_bench;
