\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- prm 0.3.0, matching: the time of record of the contact evidence
-- (section 13(3) SGB V).  sent_at, answered_at, created_at and completed_at
-- are now always the time prm recorded the event (the transaction time).
-- A time the caller states instead (as_of) is accepted from an
-- administrator only and kept beside it, in the *_override columns, with
-- the role that recorded it; the rules (one e-mail per therapist in 7 days,
-- follow-up after 7 days) run on the override when there is one, and an
-- e-mail sent now is checked against the times of record as well.  Staff
-- passing a time other than now get 42501.

ALTER TABLE prm.contact_batch
    ADD COLUMN sent_at_override timestamptz,
    ADD COLUMN recorded_by text;
COMMENT ON COLUMN prm.contact_batch.sent_at IS 'When prm queued the e-mail (the time of record).';
COMMENT ON COLUMN prm.contact_batch.sent_at_override IS 'The time an administrator stated for the e-mail instead (as_of of prm.plan_contact_batches); NULL when none. The 7-day rules use it when set.';
COMMENT ON COLUMN prm.contact_batch.recorded_by IS 'The role that planned the e-mail.';
COMMENT ON TABLE prm.contact_batch IS 'One e-mail to a therapist asking about one or several placement requests (never more than one per therapist in any 7 days). message_id is the outbox message (prm.outbound_message, kind contact_batch); it carries no patient names. sent_at is the time of record, sent_at_override a time an administrator stated instead. follow_up_at (the e-mail''s time + 7 days) is when the follow-up step checks for unanswered requests; it is cleared once checked.';

ALTER TABLE prm.placement_contact
    ADD COLUMN sent_at_override timestamptz,
    ADD COLUMN answered_at_override timestamptz,
    ADD COLUMN answer_recorded_by text;
COMMENT ON COLUMN prm.placement_contact.sent_at IS 'When prm recorded that the therapist was asked: the contact e-mail, or the answer of a therapist asked another way (the time of record).';
COMMENT ON COLUMN prm.placement_contact.sent_at_override IS 'The time an administrator stated for the contact instead; NULL when none.';
COMMENT ON COLUMN prm.placement_contact.answered_at IS 'When prm recorded the answer (the time of record).';
COMMENT ON COLUMN prm.placement_contact.answered_at_override IS 'The time an administrator stated for the answer instead (as_of of prm.record_contact_answer); NULL when none.';
COMMENT ON COLUMN prm.placement_contact.answer_recorded_by IS 'The role that recorded the answer.';

ALTER TABLE prm.call_task
    ADD COLUMN created_at_override timestamptz,
    ADD COLUMN completed_at_override timestamptz,
    ADD COLUMN outcome_recorded_by text;
COMMENT ON COLUMN prm.call_task.created_at IS 'When prm created the task (the time of record).';
COMMENT ON COLUMN prm.call_task.created_at_override IS 'The time an administrator ran the follow-up step as of instead (as_of of prm.run_matching_follow_ups); the window was computed from it. NULL when none.';
COMMENT ON COLUMN prm.call_task.completed_at IS 'When prm recorded the outcome or the cancellation (the time of record).';
COMMENT ON COLUMN prm.call_task.completed_at_override IS 'The time an administrator stated for the call instead (as_of of prm.record_call_outcome); NULL when none.';
COMMENT ON COLUMN prm.call_task.outcome_recorded_by IS 'The role that recorded the outcome.';

COMMENT ON FUNCTION prm.plan_contact_batches(bigint, timestamptz, int) IS
    'Send each therapist their proposed requests in one e-mail (at most 10 patients, earliest registrations first; template contact_single or contact_several), never more than one e-mail per therapist in any 7 days, through the outbox. The e-mail names no patient: reference, initials, age band and therapy type only. Returns the number of e-mails queued. The e-mails are recorded as sent now; an as_of other than now is an administrator''s override, kept beside the time of record (staff get 42501). Needs staff.';
COMMENT ON FUNCTION prm.record_contact_answer(bigint, bigint, bigint, text, int, text, timestamptz) IS
    'Record a therapist''s answer about a request: accepted (the request is matched, the therapist loses a place, the request''s other pending contacts are withdrawn), declined, or no_place (the therapist''s open places become 0). Returns true when this answer matched the request. The answer is recorded as given now, by the calling role; an as_of other than now is an administrator''s override, kept beside the time of record (staff get 42501). Needs staff.';
COMMENT ON FUNCTION prm.run_matching_follow_ups(bigint, timestamptz, int) IS
    'Create a call task for every contact e-mail left unanswered for 7 days, in the therapist''s next phone-hours window; returns the number created (at most max_tasks). org_id NULL: every organization (superuser or extension owner; run_due_jobs does this). An as_of other than now is an administrator''s override, kept beside the time of record (staff get 42501). Needs staff.';
COMMENT ON FUNCTION prm.record_call_outcome(bigint, bigint, text, text, timestamptz) IS
    'Record how a follow-up call went (reached, no_answer, voicemail, wrong_number); the task is done, recorded now by the calling role. An as_of other than now is an administrator''s override, kept beside the time of record (staff get 42501). Answers given on the phone are recorded with record_contact_answer(..., channel => ''phone''). Needs staff.';
COMMENT ON FUNCTION prm.placement_evidence(bigint, bigint) IS
    'The contact history of a placement request for cost reimbursement (section 13(3) SGB V): each therapist asked, when, by which channel, the answer, when, the stated waiting time, and the follow-up calls. Every time is the time prm recorded it; a time an administrator stated instead is shown beside it (*_override), with the role that recorded it. Needs readonly.';

CREATE OR REPLACE VIEW prm.placement_contact_history WITH (security_invoker = true) AS
SELECT c.org_id, c.request_id, r.patient_id, c.therapist_id, t.name AS therapist_name,
       t.email AS therapist_email, c.channel, c.sent_at AS contacted_at, c.status, c.answer,
       c.answer_channel, c.answered_at, c.stated_waiting_weeks,
       (SELECT pg_catalog.count(*) FROM prm.call_task k
         WHERE k.org_id = c.org_id AND k.batch_id = c.batch_id AND k.status = 'done') AS calls_made,
       c.sent_at_override AS contacted_at_override, c.answered_at_override, c.answer_recorded_by
  FROM prm.placement_contact c
  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id
  JOIN prm.therapist t ON t.org_id = c.org_id AND t.id = c.therapist_id
 WHERE c.sent_at IS NOT NULL;
COMMENT ON VIEW prm.placement_contact_history IS 'Every therapist contacted about a placement request, with channel, time, answer and stated waiting time: the evidence of section 13(3) SGB V, one row per contact. contacted_at and answered_at are the times of record; the *_override columns hold a time an administrator stated instead. Row-level security of the underlying tables applies.';
