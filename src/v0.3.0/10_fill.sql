-- prm 0.3.0, fill engine: a slot that fails in a sweep backs off alone.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

ALTER TABLE prm.slot
    ADD COLUMN sweep_failures int NOT NULL DEFAULT 0 CHECK (sweep_failures >= 0),
    ADD COLUMN sweep_retry_at timestamptz;
COMMENT ON COLUMN prm.slot.sweep_failures IS 'Sweeps in a row in which this slot failed (its error is in prm.job_run and the server log); reset by the next success.';
COMMENT ON COLUMN prm.slot.sweep_retry_at IS 'A slot that failed in a sweep is passed over until then (5 s, doubling per failure in a row, at most 1 h).';

-- next_deadline() passes over slots locked by others (it takes row locks
-- with SKIP LOCKED), so it is not STABLE.
ALTER FUNCTION prm.next_deadline() VOLATILE PARALLEL UNSAFE;

-- One-time accept tokens are bearer capabilities: store only their SHA-256.
-- The token itself leaves in the offer's SMS and is never kept.
ALTER TABLE prm.offer ADD COLUMN token_hash bytea;
UPDATE prm.offer SET token_hash = pg_catalog.sha256(pg_catalog.uuid_send(token));
ALTER TABLE prm.offer ALTER COLUMN token_hash SET NOT NULL;
DROP INDEX prm.offer_token_idx;
ALTER TABLE prm.offer DROP COLUMN token;
CREATE UNIQUE INDEX offer_token_hash_idx ON prm.offer (token_hash);
COMMENT ON COLUMN prm.offer.token_hash IS 'SHA-256 of the offer''s one-time accept token (prm.accept_offer); the token itself is only in the SMS.';

-- The appointment whose wait the score counted: the one released when the
-- offer is accepted (exactly that one, and only if it did not change).
ALTER TABLE prm.offer ADD COLUMN scored_appointment_id bigint;
COMMENT ON COLUMN prm.offer.scored_appointment_id IS 'The appointment the patient was waiting to bring forward when the offer was scored; accepting releases exactly it (an event release_skipped says when it changed meanwhile).';
COMMENT ON TABLE prm.offer IS 'A freed slot offered to one waiting patient, held for them until hold_until. score_breakdown keeps the score parts and rank the patient was chosen with, scored_appointment_id the appointment it counted. token_hash is the hash of the one-time link token (prm.accept_offer).';

-- Cancelling starts the first batch in the same call, and the ranking
-- query over a long waitlist is costed above jit_above_cost: compiling it
-- took longer than the whole cancellation (bench cancel: p50 2.0x the bare
-- SQL with JIT, 1.2x without).  As the fill engine's other entry points.
ALTER FUNCTION prm.cancel_appointment(bigint, bigint, text) SET jit = off;

-- The webhook's entry points run every statement on a generic plan: each
-- is a lookup or change by key (the foreign-key checks they fire too), and
-- a webhook's backend often lives for a few dozen requests, while a custom
-- plan is made for each of the first five runs of every statement (bench
-- storm, 64 backends of 47 YES each: 15% less CPU per YES, 18% more claims/s).
ALTER FUNCTION prm.handle_inbound_sms(text, text, text, text) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION prm.accept_offer(uuid) SET plan_cache_mode = force_generic_plan;

-- Closing a slot's offers cancels their unsent SMS: find them by offer, not
-- by scanning every queued message of the organization (bench storm: that
-- scan was the largest CPU cost of a YES, 14 ms each with 3,000 queued).
CREATE INDEX outbound_message_offer_idx ON prm.outbound_message (org_id, offer_id)
    WHERE offer_id IS NOT NULL;

-- Offers go first to patients reachable now (offer_reachable_first): the
-- fill engine reads an organization's distinct patient time zones by a
-- skip scan of this index, a few probes however many patients there are.
CREATE INDEX patient_timezone_idx ON prm.patient (org_id, timezone);
