-- Deadlines for time-driven state: each waiting entry stores when its score
-- next changes by the passage of time alone (score_due_at); the job step
-- rescores only the entries whose deadline came, and the result equals a
-- recomputation from scratch.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(9);
SET LOCAL timezone = 'UTC';
SELECT setseed(0.25);

SELECT prm.create_organization('Deadlines') AS org \gset
SELECT prm.add_provider(:org, 'Dr Due') AS dr \gset
INSERT INTO prm.patient (org_id, given_name, family_name, phone)
SELECT :org, 'P' || g, 'Due', '+1556' || lpad(g::text, 7, '0') FROM generate_series(1, 500) g;
-- 500 entries through the score trigger, with random ages and appointments
INSERT INTO prm.waitlist_entry (org_id, patient_id, urgent, manual_boost, joined_at, current_appointment_at)
SELECT :org, p.id, random() < 0.2, (random() * 40)::int,
       now() - random() * interval '120 days',
       CASE WHEN random() < 0.8 THEN now() + random() * interval '90 days' END
  FROM prm.patient p WHERE p.org_id = :org;

SELECT is((SELECT count(*)::int FROM prm.waitlist_entry WHERE org_id = :org AND score_due_at <= now()), 0,
          'no deadline is in the past right after scoring');
-- the deadline is exactly the first instant the score changes: unchanged a
-- microsecond before, changed at it (a property over 500 random entries)
SELECT is((SELECT count(*)::int FROM prm.waitlist_entry w
            WHERE w.org_id = :org AND w.score_due_at IS NOT NULL
              AND prm.priority_score(w.urgent, w.manual_boost, w.current_appointment_at, w.joined_at,
                                     w.score_due_at - interval '1 microsecond') <> w.priority_score), 0,
          'the score is unchanged until its deadline');
SELECT is((SELECT count(*)::int FROM prm.waitlist_entry w
            WHERE w.org_id = :org AND w.score_due_at IS NOT NULL
              AND prm.priority_score(w.urgent, w.manual_boost, w.current_appointment_at, w.joined_at,
                                     w.score_due_at) = w.priority_score), 0,
          'and changes at it');
-- an entry with no deadline never changes (full seniority, wait part at its end)
SELECT is((SELECT count(*)::int FROM prm.waitlist_entry w
            WHERE w.org_id = :org AND w.score_due_at IS NULL
              AND prm.priority_score(w.urgent, w.manual_boost, w.current_appointment_at, w.joined_at,
                                     now() + interval '1000 days') <> w.priority_score), 0,
          'only entries whose score can no longer change have no deadline');
SELECT ok(prm.next_deadline() <= (SELECT min(score_due_at) FROM prm.waitlist_entry WHERE status = 'waiting') + interval '1 minute',
          'the worker''s next deadline includes the earliest score deadline (to the minute)');

-- the clock moves 10 days: shift every time back instead (no triggers)
SET LOCAL session_replication_role = replica;
UPDATE prm.waitlist_entry SET joined_at = joined_at - interval '10 days',
       current_appointment_at = current_appointment_at - interval '10 days',
       score_due_at = score_due_at - interval '10 days'
 WHERE org_id = :org;
SET LOCAL session_replication_role = origin;
SELECT count(*) AS due FROM prm.waitlist_entry WHERE org_id = :org AND score_due_at <= now() \gset
SELECT cmp_ok(:due, '>', 0, 'some deadlines came');
SELECT cmp_ok(:due, '<', 500, 'but not all: the step will not touch every entry');
SELECT is((prm.run_due_jobs() ->> 'recalculate_priorities')::int, :due::int, 'the step rescored exactly the due entries');
SELECT is((SELECT count(*)::int FROM prm.waitlist_entry w
            WHERE w.org_id = :org AND w.status = 'waiting'
              AND w.priority_score <> prm.priority_score(w.urgent, w.manual_boost, w.current_appointment_at,
                                                         w.joined_at, now())), 0,
          'every stored score equals a recomputation from scratch');

SELECT * FROM finish();
ROLLBACK;
