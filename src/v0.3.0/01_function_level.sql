-- prm 0.3.0, the function level registry: the level each prm function needs.
-- Every release piece that adds a function adds its row here (INSERT INTO
-- prm.function_level) beside the function itself; 99_access.sql then
-- revokes EXECUTE from PUBLIC and grants each role what its levels need.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- The level each function needs: the same level its own check asks for, so
-- a role without it is stopped by EXECUTE before the function runs at all.
-- 'any': pure functions, for every role with a level; 'relay': sender or
-- webhook (delivery statuses come from either); 'none': superusers and the
-- extension owner only (cluster-wide jobs, trigger functions).
CREATE TABLE prm.function_level (
    signature   text PRIMARY KEY,
    level       text NOT NULL CHECK (level IN ('any', 'relay', 'sender', 'webhook', 'readonly', 'staff', 'admin', 'none'))
);
COMMENT ON TABLE prm.function_level IS 'The access level each prm function needs; prm.grant_access() grants EXECUTE on the functions a role''s levels satisfy (staff and admin also satisfy sender and webhook).';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.normalize_phone(text,text)', 'any'),
    ('prm.priority_score(boolean,integer,timestamp with time zone,timestamp with time zone,timestamp with time zone)', 'any'),
    ('prm.priority_score(boolean,integer,timestamp with time zone,timestamp with time zone,timestamp with time zone,integer,integer,integer,integer,integer)', 'any'),
    ('prm.visit_rhythm_days(integer,double precision,double precision)', 'any'),
    ('prm.churn_risk(integer,double precision,double precision,boolean,double precision,double precision,double precision,double precision,double precision)', 'any'),
    ('prm.engagement_score(integer,double precision,double precision,boolean,double precision,double precision,double precision,double precision,double precision)', 'any'),
    ('prm.engagement_level(integer,double precision,double precision,boolean,double precision,double precision,double precision,double precision,double precision,double precision,double precision,double precision)', 'any'),
    ('prm.lifetime_value(numeric,integer,double precision,text,double precision,double precision)', 'any'),
    ('prm.therapist_distance_km(double precision,double precision,double precision,double precision)', 'any'),
    ('prm.claim_messages(text,integer,interval)', 'sender'),
    ('prm.mark_message_sent(bigint,text,uuid)', 'sender'),
    ('prm.mark_message_failed(bigint,text,boolean,uuid)', 'sender'),
    ('prm.handle_inbound_sms(text,text,text,text)', 'webhook'),
    ('prm.accept_offer(uuid)', 'webhook'),
    ('prm.record_delivery_status(text,text)', 'relay'),
    ('prm.settings(bigint)', 'readonly'),
    ('prm.explain_priority(bigint,bigint)', 'readonly'),
    ('prm.render_template(bigint,text,jsonb,text,text)', 'readonly'),
    ('prm.fill_stats(bigint,timestamp with time zone,timestamp with time zone)', 'readonly'),
    ('prm.rank_therapists(bigint,bigint,integer)', 'readonly'),
    ('prm.assign_placements(bigint,text,boolean)', 'readonly'),
    ('prm.reengagement_summary(bigint)', 'readonly'),
    ('prm.outreach_performance(bigint,timestamp with time zone,interval)', 'readonly'),
    ('prm.search_patients(bigint,text,integer,text)', 'readonly'),
    ('prm.placement_evidence(bigint,bigint)', 'readonly'),
    ('prm.add_location(bigint,text,text,text)', 'staff'),
    ('prm.add_provider(bigint,text)', 'staff'),
    ('prm.add_patient(bigint,text,text,text,text,text)', 'staff'),
    ('prm.book_appointment(bigint,bigint,bigint,timestamp with time zone,timestamp with time zone)', 'staff'),
    ('prm.cancel_appointment(bigint,bigint,text)', 'staff'),
    ('prm.set_appointment_status(bigint,bigint,text)', 'staff'),
    ('prm.join_waitlist(bigint,bigint,bigint,boolean,integer)', 'staff'),
    ('prm.set_waitlist_preferences(bigint,bigint,jsonb)', 'staff'),
    ('prm.leave_waitlist(bigint,bigint)', 'staff'),
    ('prm.recalculate_priorities(bigint)', 'staff'),
    ('prm.enqueue_message(bigint,text,text,text,bigint,text,timestamp with time zone)', 'staff'),
    ('prm.redrive_message(bigint,bigint)', 'staff'),
    ('prm.fill_slot(bigint,bigint)', 'staff'),
    ('prm.undo_cancellation(bigint,bigint)', 'staff'),
    ('prm.expire_offers(timestamp with time zone)', 'staff'),
    ('prm.sync_patients(bigint,text,jsonb)', 'staff'),
    ('prm.sync_appointments(bigint,text,jsonb)', 'staff'),
    ('prm.rebuild_patient_stats(bigint)', 'staff'),
    ('prm.add_therapist(bigint,text,text,double precision,double precision,text[],text[],integer,text,text,boolean)', 'staff'),
    ('prm.update_therapist(bigint,bigint,integer,boolean)', 'staff'),
    ('prm.set_phone_hours(bigint,bigint,jsonb)', 'staff'),
    ('prm.add_placement_request(bigint,bigint,double precision,double precision,double precision,text[],text,text,jsonb,integer,timestamp with time zone)', 'staff'),
    ('prm.withdraw_placement_request(bigint,bigint)', 'staff'),
    ('prm.plan_contact_batches(bigint,timestamp with time zone,integer)', 'staff'),
    ('prm.record_contact_answer(bigint,bigint,bigint,text,integer,text,timestamp with time zone)', 'staff'),
    ('prm.run_matching_follow_ups(bigint,timestamp with time zone,integer)', 'staff'),
    ('prm.record_call_outcome(bigint,bigint,text,text,timestamp with time zone)', 'staff'),
    ('prm.export_patient(bigint,bigint)', 'staff'),
    ('prm.grant_access(regrole,bigint,text)', 'admin'),
    ('prm.revoke_access(regrole,bigint)', 'admin'),
    ('prm.configure(bigint,jsonb)', 'admin'),
    ('prm.set_template(bigint,text,text,text,text)', 'admin'),
    ('prm.erase_patient(bigint,bigint)', 'admin'),
    ('prm.create_organization(text,text,text)', 'none'),
    ('prm.run_due_jobs()', 'none'),
    ('prm.next_deadline()', 'none'),
    ('prm.health()', 'none'),
    ('prm.schedule_with_pg_cron(text)', 'none'),
    ('prm.sync_access_privileges()', 'none'),
    ('prm.waitlist_entry_score_trigger()', 'none'),
    ('prm.appointment_waitlist_trigger()', 'none'),
    ('prm.patient_stats_trigger()', 'none');
ALTER TABLE prm.function_level ENABLE ROW LEVEL SECURITY;
CREATE POLICY function_level_read ON prm.function_level FOR SELECT USING (true);
GRANT SELECT ON prm.function_level TO PUBLIC;
