-- Baseline: the bare SQL a queue is usually built with, on a plain table
-- with the same columns and indexes: pick :batch due rows with SKIP LOCKED
-- in a materialised step on the partial index (channel, not_before, id)
-- WHERE status = 'queued', and mark them sent (one transaction).
WITH c AS MATERIALIZED (
  SELECT m.org_id, m.id FROM bench.outbound_message m
   WHERE m.status = 'queued' AND m.channel = 'sms' AND m.not_before <= now()
   ORDER BY m.not_before, m.id
   LIMIT :batch FOR UPDATE SKIP LOCKED)
UPDATE bench.outbound_message m
   SET status = 'sent', attempts = m.attempts + 1, provider_message_id = 'SM' || m.id,
       sent_at = now(), updated_at = now()
  FROM c WHERE m.org_id = c.org_id AND m.id = c.id;
