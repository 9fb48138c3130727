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

-- The profile as in 0.2.0, with the next appointment computed once per row
-- (OFFSET 0 keeps the planner from copying its look-up into every column
-- that reads it: planning a single profile took most of its time).
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
       n.next_at AS next_appointment_time,
       n.next_at IS NOT NULL AS has_upcoming_appointment,
       d.days_since_last_visit,
       round((extract(epoch FROM n.next_at - now()) / 86400)::numeric, 1) AS days_until_next_appointment,
       s.avg_days_between_visits AS average_days_between_visits,
       round(d.rhythm::numeric, 1) AS visit_rhythm_days,
       round((d.days_since_last_visit / d.rhythm)::numeric, 2) AS visit_rhythm_ratio,
       CASE WHEN s.total_appointments > 0 THEN round(s.cancellations::numeric / s.total_appointments, 3) END AS cancellation_rate,
       CASE WHEN s.total_appointments > 0 THEN round(s.no_shows::numeric / s.total_appointments, 3) END AS no_show_rate,
       CASE WHEN s.completed_visits + s.no_shows + s.cancellations > 0
            THEN round(s.completed_visits::numeric / (s.completed_visits + s.no_shows + s.cancellations), 3) END AS attendance_rate,
       coalesce(s.revenue, 0) AS total_revenue,
       CASE WHEN s.completed_visits > 0 THEN round(s.revenue / s.completed_visits, 2) END AS average_visit_value,
       round(CASE WHEN s.completed_visits > 0 THEN s.revenue / s.completed_visits ELSE 0 END
             * (t.ltv_horizon_days / d.rhythm)::numeric, 2) AS expected_horizon_value,
       prm.lifetime_value(coalesce(s.revenue, 0), coalesce(s.completed_visits, 0),
                          s.avg_days_between_visits::float8, r.churn_risk,
                          t.ltv_horizon_days, t.default_visit_interval_days) AS estimated_lifetime_value,
       coalesce(s.messages_out, 0) AS messages_out_count,
       coalesce(s.messages_in, 0) AS messages_in_count,
       coalesce(s.replied_out, 0) AS replied_message_count,
       s.last_outbound_at AS last_outbound_message_time,
       s.last_inbound_at AS last_inbound_message_time,
       round(d.response_rate::numeric, 3) AS response_rate,
       round((extract(epoch FROM now() - greatest(s.last_outbound_at, s.last_inbound_at)) / 86400)::numeric, 1) AS days_since_last_contact,
       round(prm.engagement_score(coalesce(s.completed_visits, 0), d.days_since_last_visit,
                                  s.avg_days_between_visits::float8, n.next_at IS NOT NULL,
                                  d.missed_rate, d.response_rate, t.churn_critical_ratio,
                                  t.default_visit_interval_days, t.engagement_full_visits)::numeric, 1) AS engagement_score,
       prm.engagement_level(coalesce(s.completed_visits, 0), d.days_since_last_visit,
                            s.avg_days_between_visits::float8, n.next_at IS NOT NULL,
                            d.missed_rate, d.response_rate, t.churn_critical_ratio,
                            t.default_visit_interval_days, t.engagement_full_visits,
                            t.engagement_high_score, t.engagement_moderate_score,
                            t.engagement_low_score) AS engagement_level,
       r.churn_risk,
       s.engagement_level AS stored_engagement_level,
       s.churn_risk AS stored_churn_risk,
       s.computed_at AS stats_computed_at,
       now() AS view_generated_at
  FROM prm.patient p
  JOIN prm.reengagement_settings t ON t.org_id = p.org_id
  LEFT JOIN prm.patient_stats s ON s.org_id = p.org_id AND s.patient_id = p.id
  CROSS JOIN LATERAL (
       -- the stored next appointment, unless it has passed since
       SELECT CASE WHEN s.next_appointment_at IS NULL OR s.next_appointment_at > now()
                   THEN s.next_appointment_at
                   ELSE (SELECT min(a.starts_at) FROM prm.appointment a
                          WHERE a.org_id = p.org_id AND a.patient_id = p.id
                            AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in')
                            AND a.starts_at > now()) END AS next_at
        OFFSET 0) n
  CROSS JOIN LATERAL (
       SELECT date_part('epoch', now() - s.last_visit_at) / 86400 AS days_since_last_visit,
              prm.visit_rhythm_days(coalesce(s.completed_visits, 0), s.avg_days_between_visits::float8,
                                    t.default_visit_interval_days) AS rhythm,
              CASE WHEN s.total_appointments >= 3
                   THEN (s.cancellations + s.no_shows)::float8 / s.total_appointments END AS missed_rate,
              CASE WHEN s.messages_out > 0 THEN s.replied_out::float8 / s.messages_out END AS response_rate) d
  CROSS JOIN LATERAL (
       SELECT prm.churn_risk(coalesce(s.completed_visits, 0), d.days_since_last_visit,
                             s.avg_days_between_visits::float8, n.next_at IS NOT NULL, d.missed_rate,
                             t.churn_critical_ratio, t.churn_high_ratio, t.churn_medium_ratio,
                             t.default_visit_interval_days) AS churn_risk) r;
INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.patient_stats_tally_trigger()', 'none'),
    ('prm.reengagement_settings_trigger()', 'none');
