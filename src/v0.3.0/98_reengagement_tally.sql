-- prm reengagement tally (0.3.0): statistics that cost what changed.  The
-- statistics triggers apply deltas to prm.patient_stats instead of
-- recomputing a patient from all their rows; each statistics row stores the
-- level, risk and values it contributes to the organization's summary and
-- the moment those next change with the clock alone (changes_at), which
-- the worker's patient_stats_due step advances; per-organization sums of
-- the stored contributions live in prm.reengagement_tally, one row per
-- backend slot so that concurrent writers of one clinic never wait on each
-- other.  See src/reengagement_tally.c.

ALTER TABLE prm.patient_stats
    ADD COLUMN changes_at timestamptz,
    ADD COLUMN expected_horizon_value numeric NOT NULL DEFAULT 0,
    ADD COLUMN lifetime_value numeric NOT NULL DEFAULT 0;
COMMENT ON COLUMN prm.patient_stats.changes_at IS 'When engagement_level, churn_risk or the upcoming appointment next change with the passage of time alone (no new row): the patient_stats_due job step re-judges the row then. NULL when nothing changes with time.';
COMMENT ON COLUMN prm.patient_stats.expected_horizon_value IS 'As prm.patient_profile.expected_horizon_value, as of computed_at.';
COMMENT ON COLUMN prm.patient_stats.lifetime_value IS 'As prm.patient_profile.estimated_lifetime_value, as of computed_at.';
CREATE INDEX patient_stats_changes_idx ON prm.patient_stats (changes_at) WHERE changes_at IS NOT NULL;
-- rows written before 0.3.0 have no contributions yet: all are due
UPDATE prm.patient_stats SET changes_at = '-infinity';

CREATE TABLE prm.reengagement_tally (
    org_id                  bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    slot                    int NOT NULL,
    patients                bigint NOT NULL DEFAULT 0,
    highly_engaged          bigint NOT NULL DEFAULT 0,
    moderately_engaged      bigint NOT NULL DEFAULT 0,
    low_engagement          bigint NOT NULL DEFAULT 0,
    disengaged              bigint NOT NULL DEFAULT 0,
    risk_low                bigint NOT NULL DEFAULT 0,
    risk_medium             bigint NOT NULL DEFAULT 0,
    risk_high               bigint NOT NULL DEFAULT 0,
    risk_critical           bigint NOT NULL DEFAULT 0,
    no_upcoming             bigint NOT NULL DEFAULT 0,
    value_at_risk           numeric NOT NULL DEFAULT 0,
    lifetime_value          numeric NOT NULL DEFAULT 0,
    revenue                 numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, slot)
);
COMMENT ON TABLE prm.reengagement_tally IS 'Per organization, the sums of what its prm.patient_stats rows contribute to prm.reengagement_summary() (patients per level and risk, no upcoming appointment, value at risk, lifetime value, revenue), kept by adding each write''s difference to the row of the writing backend''s slot: the summary adds the slots up. Derived data like prm.patient_stats: not dumped, rebuilt with it.';
ALTER TABLE prm.reengagement_tally ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.reengagement_tally FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
INSERT INTO prm.reengagement_tally (org_id, slot, patients, highly_engaged, moderately_engaged,
                                    low_engagement, disengaged, risk_low, risk_medium, risk_high,
                                    risk_critical, no_upcoming, value_at_risk, lifetime_value, revenue)
SELECT s.org_id, 0, count(*),
       count(*) FILTER (WHERE s.engagement_level = 'highly_engaged'),
       count(*) FILTER (WHERE s.engagement_level = 'moderately_engaged'),
       count(*) FILTER (WHERE s.engagement_level = 'low_engagement'),
       count(*) FILTER (WHERE s.engagement_level = 'disengaged'),
       count(*) FILTER (WHERE s.churn_risk = 'low'), count(*) FILTER (WHERE s.churn_risk = 'medium'),
       count(*) FILTER (WHERE s.churn_risk = 'high'), count(*) FILTER (WHERE s.churn_risk = 'critical'),
       count(*) FILTER (WHERE s.next_appointment_at IS NULL), 0, 0, sum(s.revenue)
  FROM prm.patient_stats s GROUP BY s.org_id;

-- Deleted statistics rows (a patient erased, a rebuild) leave the tally.
CREATE FUNCTION prm.patient_stats_tally_trigger()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_patient_stats_tally_trigger';
COMMENT ON FUNCTION prm.patient_stats_tally_trigger() IS
    'Statement trigger on prm.patient_stats (AFTER DELETE): subtract the deleted rows'' contributions from prm.reengagement_tally.';
CREATE TRIGGER patient_stats_tally_delete AFTER DELETE ON prm.patient_stats
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_tally_trigger();

-- New thresholds re-judge every patient of the organization: their rows
-- become due (the summary computes due rows afresh until the step has).
CREATE FUNCTION prm.reengagement_settings_trigger()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_reengagement_settings_trigger';
COMMENT ON FUNCTION prm.reengagement_settings_trigger() IS
    'Row trigger on prm.organization (AFTER UPDATE OF settings): when a reengagement threshold changed, mark the organization''s statistics rows due for the patient_stats_due job step.';
CREATE TRIGGER reengagement_settings_changed AFTER UPDATE OF settings ON prm.organization
    FOR EACH ROW
    WHEN ((OLD.settings -> 'churn_critical_ratio', OLD.settings -> 'churn_high_ratio',
           OLD.settings -> 'churn_medium_ratio', OLD.settings -> 'default_visit_interval_days',
           OLD.settings -> 'engagement_full_visits', OLD.settings -> 'engagement_high_score',
           OLD.settings -> 'engagement_moderate_score', OLD.settings -> 'engagement_low_score',
           OLD.settings -> 'ltv_horizon_days')
          IS DISTINCT FROM
          (NEW.settings -> 'churn_critical_ratio', NEW.settings -> 'churn_high_ratio',
           NEW.settings -> 'churn_medium_ratio', NEW.settings -> 'default_visit_interval_days',
           NEW.settings -> 'engagement_full_visits', NEW.settings -> 'engagement_high_score',
           NEW.settings -> 'engagement_moderate_score', NEW.settings -> 'engagement_low_score',
           NEW.settings -> 'ltv_horizon_days'))
    EXECUTE FUNCTION prm.reengagement_settings_trigger();

COMMENT ON TABLE prm.patient_stats IS 'Per-patient figures behind prm.patient_profile, kept by statement triggers that apply each statement''s difference (a removed first, last or next visit is looked up again; a patient is recomputed from their own rows only when a message was removed). Derived data: not dumped, rebuilt by those triggers on restore and by prm.rebuild_patient_stats(). engagement_level, churn_risk, expected_horizon_value and lifetime_value are as of computed_at and stay right until changes_at.';

-- The profile as in 0.2.0, planned as two index lookups and one call: the
-- derived columns come from prm.patient_judgement() (the same arithmetic
-- as 0.2.0's expressions, in C), which looks the next appointment up again
-- only when the stored one has passed, and reads the organization's
-- thresholds itself.  Planning 0.2.0's view for one patient cost several
-- times executing it.
CREATE TYPE prm.patient_judgement_row AS (
    next_appointment_time timestamptz,
    days_since_last_visit float8, days_until_next_appointment numeric,
    visit_rhythm_days numeric, visit_rhythm_ratio numeric,
    cancellation_rate numeric, no_show_rate numeric, attendance_rate numeric,
    average_visit_value numeric, expected_horizon_value numeric,
    estimated_lifetime_value numeric, response_rate numeric,
    days_since_last_contact numeric, engagement_score numeric,
    engagement_level text, churn_risk text);
COMMENT ON TYPE prm.patient_judgement_row IS 'What prm.patient_judgement() returns: the columns prm.patient_profile derives.';
CREATE FUNCTION prm.patient_judgement(
    org_id bigint, patient_id bigint, completed_visits int, total_appointments int, cancellations int, no_shows int,
    last_visit_at timestamptz, avg_days_between_visits numeric, revenue numeric,
    messages_out int, replied_out int, last_outbound_at timestamptz, last_inbound_at timestamptz,
    next_appointment_at timestamptz, as_of timestamptz)
RETURNS prm.patient_judgement_row
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_patient_judgement';
COMMENT ON FUNCTION prm.patient_judgement(bigint, bigint, int, int, int, int, timestamptz, numeric, numeric, int, int, timestamptz, timestamptz, timestamptz, timestamptz) IS
    'The columns prm.patient_profile derives from a patient''s statistics (NULLs: no statistics row) and stored next appointment, with the organization''s thresholds (prm.reengagement_settings, read as the caller), judged at as_of: the next appointment (the stored one, or when it has passed the next active one the caller may see), days since the last visit and until the next, rhythm and its ratio, cancellation, no-show and attendance rates, average visit value, expected horizon value, lifetime value, response rate, days since the last contact, engagement score and level, churn risk.';

CREATE OR REPLACE VIEW prm.patient_profile WITH (security_invoker = true) AS
SELECT p.org_id,
       p.id AS patient_id,
       p.given_name,
       p.family_name,
       p.given_name || ' ' || p.family_name AS full_name,
       p.email,
       p.phone,
       p.language,
       p.timezone,
       p.sms_opt_out,
       p.external_source,
       p.external_id,
       p.created_at AS patient_since,
       p.last_synced_at,
       coalesce(s.total_appointments, 0) AS total_appointment_count,
       coalesce(s.completed_visits, 0) AS completed_visit_count,
       coalesce(s.cancellations, 0) AS cancellation_count,
       coalesce(s.no_shows, 0) AS no_show_count,
       s.first_visit_at AS first_visit_time,
       s.last_visit_at AS last_visit_time,
       j.next_appointment_time,
       j.next_appointment_time IS NOT NULL AS has_upcoming_appointment,
       j.days_since_last_visit,
       j.days_until_next_appointment,
       s.avg_days_between_visits AS average_days_between_visits,
       j.visit_rhythm_days,
       j.visit_rhythm_ratio,
       j.cancellation_rate,
       j.no_show_rate,
       j.attendance_rate,
       coalesce(s.revenue, 0) AS total_revenue,
       j.average_visit_value,
       j.expected_horizon_value,
       j.estimated_lifetime_value,
       coalesce(s.messages_out, 0) AS messages_out_count,
       coalesce(s.messages_in, 0) AS messages_in_count,
       coalesce(s.replied_out, 0) AS replied_message_count,
       s.last_outbound_at AS last_outbound_message_time,
       s.last_inbound_at AS last_inbound_message_time,
       j.response_rate,
       j.days_since_last_contact,
       j.engagement_score,
       j.engagement_level,
       j.churn_risk,
       s.engagement_level AS stored_engagement_level,
       s.churn_risk AS stored_churn_risk,
       s.computed_at AS stats_computed_at,
       now() AS view_generated_at
  FROM prm.patient p
  LEFT JOIN prm.patient_stats s ON s.org_id = p.org_id AND s.patient_id = p.id
  CROSS JOIN LATERAL prm.patient_judgement(
       p.org_id, p.id, s.completed_visits, s.total_appointments, s.cancellations, s.no_shows,
       s.last_visit_at, s.avg_days_between_visits, s.revenue, s.messages_out, s.replied_out,
       s.last_outbound_at, s.last_inbound_at, s.next_appointment_at, now()) j;
INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.patient_judgement(bigint,bigint,integer,integer,integer,integer,timestamp with time zone,numeric,numeric,integer,integer,timestamp with time zone,timestamp with time zone,timestamp with time zone,timestamp with time zone)', 'any'),
    ('prm.patient_stats_tally_trigger()', 'none'),
    ('prm.reengagement_settings_trigger()', 'none');
