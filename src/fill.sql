-- prm fill engine (0.2.0): offers of freed slots, holds, replies, claiming.

ALTER TABLE prm.slot
    ADD COLUMN fill_status text NOT NULL DEFAULT 'idle'
        CHECK (fill_status IN ('idle', 'pending', 'offering', 'filled', 'exhausted', 'too_late', 'withdrawn')),
    ADD COLUMN batches_sent int NOT NULL DEFAULT 0,
    ADD COLUMN next_batch_at timestamptz;
CREATE INDEX slot_next_batch_idx ON prm.slot (next_batch_at) WHERE fill_status = 'pending';
COMMENT ON COLUMN prm.slot.fill_status IS 'Where filling the slot stands: pending (first batch delayed until next_batch_at), offering, filled, exhausted (no one left to offer, or max_batches reached), too_late (starts too soon to offer), withdrawn (cancellation undone).';

CREATE TABLE prm.offer (
    org_id            bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id                bigint GENERATED ALWAYS AS IDENTITY,
    slot_id           bigint NOT NULL,
    patient_id        bigint NOT NULL,
    waitlist_entry_id bigint NOT NULL,
    status            text NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'accepted', 'declined', 'expired', 'withdrawn')),
    hold_until        timestamptz NOT NULL,
    batch_no          int NOT NULL,
    rank              int NOT NULL,
    score_breakdown   jsonb NOT NULL,
    token             uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    responded_at      timestamptz,
    response_channel  text,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, slot_id) REFERENCES prm.slot (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id),
    FOREIGN KEY (org_id, waitlist_entry_id) REFERENCES prm.waitlist_entry (org_id, id)
);
-- one open offer per patient, whatever the concurrency
CREATE UNIQUE INDEX offer_one_open_per_patient ON prm.offer (org_id, patient_id) WHERE status = 'open';
CREATE UNIQUE INDEX offer_token_idx ON prm.offer (token);
CREATE INDEX offer_slot_idx ON prm.offer (org_id, slot_id, status);
CREATE INDEX offer_patient_idx ON prm.offer (org_id, patient_id, created_at);
CREATE INDEX offer_hold_idx ON prm.offer (hold_until) WHERE status = 'open';
COMMENT ON TABLE prm.offer IS 'A freed slot offered to one waiting patient, held for them until hold_until. score_breakdown keeps the score parts and rank the patient was chosen with. token accepts the offer by link (prm.accept_offer).';

SELECT pg_catalog.pg_extension_config_dump('prm.offer', '');
SELECT pg_catalog.pg_extension_config_dump('prm.offer_id_seq', '');
ALTER TABLE prm.offer ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.offer FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

CREATE FUNCTION prm.fill_slot(org_id bigint, slot_id bigint)
RETURNS int
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_fill_slot';
COMMENT ON FUNCTION prm.fill_slot(bigint, bigint) IS
    'Offer a free slot to the next batch of best eligible waiting patients now; returns the number of offers sent (0 when the slot is not free, already has open offers, or no one is eligible). Needs staff.';

CREATE FUNCTION prm.handle_inbound_sms(to_number text, from_number text, body text,
                                       provider_message_id text)
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_handle_inbound_sms';
COMMENT ON FUNCTION prm.handle_inbound_sms(text, text, text, text) IS
    'Process an inbound SMS for the clinic owning to_number: YES/NO to an offer, STOP/START, HELP; returns the reply to send (NULL for none). Idempotent on provider_message_id. Never raises for what the patient wrote. Needs webhook.';

CREATE FUNCTION prm.accept_offer(token uuid)
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_accept_offer';
COMMENT ON FUNCTION prm.accept_offer(uuid) IS
    'Accept an offer by its one-time link token, with the same rules as a YES reply; returns the text to show. Needs webhook.';

CREATE FUNCTION prm.undo_cancellation(org_id bigint, appointment_id bigint)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_undo_cancellation';
COMMENT ON FUNCTION prm.undo_cancellation(bigint, bigint) IS
    'Put a cancelled appointment back while its slot is still free: the slot is withdrawn with any open offers. With first_batch_delay set, an undo within the delay sends nothing at all. Needs staff.';

CREATE FUNCTION prm.expire_offers(as_of timestamptz DEFAULT now())
RETURNS int
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_expire_offers';
COMMENT ON FUNCTION prm.expire_offers(timestamptz) IS
    'Expire open offers whose hold ended by as_of and send the next batch for slots left without open offers; returns the number expired. Runs by itself through run_due_jobs.';

CREATE FUNCTION prm.fill_stats(org_id bigint, period_start timestamptz DEFAULT now() - interval '30 days',
                               period_end timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_fill_stats';
COMMENT ON FUNCTION prm.fill_stats(bigint, timestamptz, timestamptz) IS
    'Fill analytics for slots freed in a period: slots, filled, fill rate, median time to fill, offers per fill, median reply latency, opt-out rate. Needs readonly.';
