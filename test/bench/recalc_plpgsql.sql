-- Baseline: prm.recalculate_priorities' UPDATE (src/scoring.c), the same
-- statement with the PL/pgSQL formula in place of the C function.
WITH weights AS (
  SELECT o.id AS org_id, s.weight_urgent, s.weight_wait, s.weight_seniority,
         s.wait_full_days, s.seniority_full_days
    FROM prm.organization o,
         jsonb_to_record(prm.settings(o.id))
           AS s(weight_urgent int, weight_wait int, weight_seniority int,
                wait_full_days int, seniority_full_days int)
   WHERE o.id = :org)
UPDATE prm.waitlist_entry w
   SET priority_score = bench.priority_score_plpgsql(w.urgent, w.manual_boost,
         w.current_appointment_at, w.joined_at, now(),
         s.weight_urgent, s.weight_wait, s.weight_seniority,
         s.wait_full_days, s.seniority_full_days)
  FROM weights s
 WHERE w.org_id = s.org_id AND w.status = 'waiting'
   AND w.priority_score IS DISTINCT FROM bench.priority_score_plpgsql(w.urgent, w.manual_boost,
         w.current_appointment_at, w.joined_at, now(),
         s.weight_urgent, s.weight_wait, s.weight_seniority,
         s.wait_full_days, s.seniority_full_days);
