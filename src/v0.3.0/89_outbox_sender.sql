-- prm 0.3.0, what a sender needs: the From address in the row it claims,
-- and the acknowledgement of a whole claimed batch in one call.

-- The address to send from, written by prm.claim_messages when it hands
-- the message to a sender (src/outbox.c explains why then, not at enqueue).
ALTER TABLE prm.outbound_message ADD COLUMN from_address text;
ALTER TABLE prm.outbound_message_history ADD COLUMN from_address text;
COMMENT ON COLUMN prm.outbound_message.from_address IS 'The organization''s address to send from, set when the message is claimed: sms_number for sms and voice, whatsapp_number for whatsapp, email_address for email (NULL for push, or when the organization has none). A sender role reads it here, not in prm.organization.';
COMMENT ON COLUMN prm.outbound_message_history.from_address IS 'As prm.outbound_message.from_address.';

-- Fewer index entries per claim and acknowledgement.  Each writes a new
-- version of the row (its status is in the partial indexes' predicates, so
-- neither is a HOT update), and every index gets an entry for it: the
-- dedup key and patient indexes now hold only the messages that have one
-- (ON CONFLICT (org_id, dedup_key) WHERE dedup_key IS NOT NULL infers the
-- partial index; lookups by a patient or a key imply the predicate).
ALTER TABLE prm.outbound_message DROP CONSTRAINT outbound_message_org_id_dedup_key_key;
CREATE UNIQUE INDEX outbound_message_dedup_idx ON prm.outbound_message (org_id, dedup_key)
    WHERE dedup_key IS NOT NULL;
DROP INDEX prm.outbound_message_patient_idx;
CREATE INDEX outbound_message_patient_idx ON prm.outbound_message (org_id, patient_id, created_at)
    WHERE patient_id IS NOT NULL;

-- Archiving is a deadline: a finished message moves to the history a day
-- after its last change, and this index holds exactly the finished ones by
-- that time.  Without it the archive step, which every run_due_jobs runs,
-- read the whole queue to find none due (100,000 queued: 49 ms a run).
CREATE INDEX outbound_message_finished_idx ON prm.outbound_message (updated_at)
    WHERE status IN ('delivered', 'undelivered', 'failed', 'read', 'cancelled', 'sent',
                     'capped', 'refused');

CREATE FUNCTION prm.mark_messages_sent(message_ids bigint[], provider_message_ids text[],
                                       lease_tokens uuid[])
RETURNS SETOF bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_mark_messages_sent';
COMMENT ON FUNCTION prm.mark_messages_sent(bigint[], text[], uuid[]) IS
    'Acknowledge a claimed batch as sent in one call: element i of each array is about the same message (at most 1000). A message is acknowledged only while its lease_token is still its lease; the ids returned are those refused because the lease is no longer held (ran out, claimed again), every other one is now sent. NULL arrays or elements (22004), arrays of different lengths, an id twice (22023), a provider id over 200 characters (22001), an unknown id (P0002) or a message of an organization where the role is not a sender (42501) refuse the whole batch. Needs sender.';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.mark_messages_sent(bigint[],text[],uuid[])', 'sender');
