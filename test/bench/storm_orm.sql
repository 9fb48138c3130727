-- Baseline: the design prm's YES replaces, a webhook service with an ORM.
-- The same steps as prm.handle_inbound_sms, issued by the client as
-- separate statements in one transaction, on plain copies of the same rows
-- (bench.o_*, made by storm_setup.sql): record the inbound message, find
-- the patient's open offer, claim the slot (conditional UPDATE), book the
-- appointment, accept the offer and withdraw the slot's other offers,
-- release the patient's old appointment, queue the reply, mark the inbound
-- message answered.  A YES whose slot is taken marks its offer declined and
-- queues the "taken" reply.  Same reply order as storm_prm.sql (replies
-- 3s-2..3s race for slot s).  pgbench retries a deadlock (--max-tries).
\set i :i + 1
\set n (:i - 1) * :clients + :client_id + 1
SELECT max(phone) AS phone FROM bench.storm_reply WHERE n = :n \gset
\if :n <= 3000
BEGIN;
INSERT INTO bench.o_inbound_message (org_id, provider_message_id, from_address, body, keyword)
VALUES (:org, 'SMorm' || :n, :phone, 'YES', 'yes') RETURNING id AS inbound \gset
SELECT p.id AS patient FROM bench.o_patient p WHERE p.org_id = :org AND p.phone = :phone \gset
SELECT o.id AS offer, o.slot_id AS slot FROM bench.o_offer o
 WHERE o.org_id = :org AND o.patient_id = :patient
 ORDER BY o.id DESC LIMIT 1 \gset
-- lock the slot, then the offer: the lock order that keeps two YES of one
-- slot from deadlocking
SELECT s.id AS locked FROM bench.o_slot s WHERE s.org_id = :org AND s.id = :slot FOR UPDATE \gset
SELECT o.status AS offer_status FROM bench.o_offer o WHERE o.org_id = :org AND o.id = :offer FOR UPDATE \gset
WITH c AS (UPDATE bench.o_slot SET status = 'busy', filled_at = now()
            WHERE org_id = :org AND id = :slot AND status = 'free'
           RETURNING provider_id, starts_at, ends_at)
SELECT count(*) AS claimed, max(provider_id) AS provider, max(starts_at) AS starts, max(ends_at) AS ends FROM c \gset
\if :claimed
INSERT INTO bench.o_appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, slot_id)
VALUES (:org, :patient, :provider, :starts, :ends, 'booked', :slot) RETURNING id AS booked \gset
UPDATE bench.o_slot SET booked_appointment_id = :booked WHERE org_id = :org AND id = :slot;
UPDATE bench.o_offer SET status = 'accepted', responded_at = now() WHERE org_id = :org AND id = :offer;
UPDATE bench.o_offer SET status = 'withdrawn' WHERE org_id = :org AND slot_id = :slot AND status = 'open';
UPDATE bench.o_appointment SET status = 'cancelled', cancelled_at = now()
 WHERE org_id = :org AND patient_id = :patient AND id <> :booked AND status = 'booked' AND starts_at > :starts;
INSERT INTO bench.o_outbound_message (org_id, channel, to_address, body, kind, patient_id)
VALUES (:org, 'sms', :phone, 'Bench Storm: you are booked.', 'other', :patient);
UPDATE bench.o_inbound_message SET patient_id = :patient, reply = 'you are booked' WHERE org_id = :org AND id = :inbound;
\else
UPDATE bench.o_offer SET status = 'declined', responded_at = now() WHERE org_id = :org AND id = :offer;
INSERT INTO bench.o_outbound_message (org_id, channel, to_address, body, kind, patient_id)
VALUES (:org, 'sms', :phone, 'Bench Storm: sorry, that time has just been taken.', 'other', :patient);
UPDATE bench.o_inbound_message SET patient_id = :patient, reply = 'has just been taken' WHERE org_id = :org AND id = :inbound;
\endif
COMMIT;
\endif
