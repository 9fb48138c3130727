-- Baseline: the same step in bare SQL on plain copies of the same rows:
-- cancel, free the slot, choose the 3 best waiting entries (provider
-- matching, reachable, not opted out, no open offer, current appointment
-- later than the slot) with FOR UPDATE SKIP LOCKED, then 3 INSERTs, each an
-- offer with its queued SMS.  Transaction k cancels target k.
\set i :i + 1
BEGIN;
UPDATE bench.c_appointment a SET status = 'cancelled', cancelled_at = now()
 WHERE a.org_id = :org AND a.id = (SELECT t.id FROM bench.cancel_target t WHERE t.n = :i)
   AND a.status IN ('proposed', 'pending', 'booked');
INSERT INTO bench.c_slot (org_id, provider_id, starts_at, ends_at, appointment_id)
SELECT a.org_id, a.provider_id, a.starts_at, a.ends_at, a.id FROM bench.c_appointment a
 WHERE a.org_id = :org AND a.id = (SELECT t.id FROM bench.cancel_target t WHERE t.n = :i)
RETURNING id AS slot, provider_id AS provider, starts_at AS starts \gset
SELECT array_agg(c.id) AS entries, array_agg(c.patient_id) AS patients, array_agg(c.phone) AS phones
  FROM (SELECT w.id, w.patient_id, p.phone
          FROM bench.c_waitlist_entry w
          JOIN bench.c_patient p ON p.org_id = w.org_id AND p.id = w.patient_id
         WHERE w.org_id = :org AND w.status = 'waiting'
           AND (w.provider_id IS NULL OR w.provider_id = :provider)
           AND (w.current_appointment_at IS NULL OR w.current_appointment_at > :starts)
           AND p.phone IS NOT NULL AND NOT p.sms_opt_out
           AND NOT EXISTS (SELECT 1 FROM bench.c_offer o
                            WHERE o.org_id = w.org_id AND o.patient_id = w.patient_id AND o.status = 'open')
         ORDER BY w.priority_score DESC, w.joined_at, w.id
         LIMIT 3 FOR UPDATE OF w SKIP LOCKED) c \gset
WITH o AS (INSERT INTO bench.c_offer (org_id, slot_id, patient_id, waitlist_entry_id, hold_until, batch_no, rank, score_breakdown, token_hash)
           SELECT :org, :slot, (:patients::bigint[])[1], (:entries::bigint[])[1], now() + interval '7 minutes', 1, 1, '{}', pg_catalog.sha256(pg_catalog.uuid_send(t.u))
             FROM (SELECT gen_random_uuid() AS u) t
           RETURNING id, patient_id)
INSERT INTO bench.c_outbound_message (org_id, channel, to_address, body, kind, patient_id, offer_id, dedup_key)
SELECT :org, 'sms', (:phones::text[])[1], 'Bench Cancel: an earlier appointment is free on Mon 3 Mar at 09:00. Reply YES to book it or NO to pass. We hold it for you for 7 min.',
       'offer', o.patient_id, o.id, 'offer:' || o.id FROM o;
WITH o AS (INSERT INTO bench.c_offer (org_id, slot_id, patient_id, waitlist_entry_id, hold_until, batch_no, rank, score_breakdown, token_hash)
           SELECT :org, :slot, (:patients::bigint[])[2], (:entries::bigint[])[2], now() + interval '7 minutes', 1, 2, '{}', pg_catalog.sha256(pg_catalog.uuid_send(t.u))
             FROM (SELECT gen_random_uuid() AS u) t
           RETURNING id, patient_id)
INSERT INTO bench.c_outbound_message (org_id, channel, to_address, body, kind, patient_id, offer_id, dedup_key)
SELECT :org, 'sms', (:phones::text[])[2], 'Bench Cancel: an earlier appointment is free on Mon 3 Mar at 09:00. Reply YES to book it or NO to pass. We hold it for you for 7 min.',
       'offer', o.patient_id, o.id, 'offer:' || o.id FROM o;
WITH o AS (INSERT INTO bench.c_offer (org_id, slot_id, patient_id, waitlist_entry_id, hold_until, batch_no, rank, score_breakdown, token_hash)
           SELECT :org, :slot, (:patients::bigint[])[3], (:entries::bigint[])[3], now() + interval '7 minutes', 1, 3, '{}', pg_catalog.sha256(pg_catalog.uuid_send(t.u))
             FROM (SELECT gen_random_uuid() AS u) t
           RETURNING id, patient_id)
INSERT INTO bench.c_outbound_message (org_id, channel, to_address, body, kind, patient_id, offer_id, dedup_key)
SELECT :org, 'sms', (:phones::text[])[3], 'Bench Cancel: an earlier appointment is free on Mon 3 Mar at 09:00. Reply YES to book it or NO to pass. We hold it for you for 7 min.',
       'offer', o.patient_id, o.id, 'offer:' || o.id FROM o;
COMMIT;
