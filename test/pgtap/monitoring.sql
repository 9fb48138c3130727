-- Companion monitoring: the care circle and its preferences, monitoring
-- settings, heartbeats, inactivity alerts and their escalation,
-- acknowledgement and resolution, reminders with their occurrences
-- (daylight saving included), missed reminders, daily summaries, export and
-- erasure, and tenancy.  Time is driven by moving due columns into the past
-- as the superuser and calling prm.run_due_jobs().
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(138);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_mon_a;
CREATE ROLE regress_mon_b;
CREATE ROLE regress_mon_hook;

SELECT prm.create_organization('Companion A', 'America/New_York', '+15558070000') AS org \gset
SELECT prm.create_organization('Companion B', 'UTC', '+15558070001') AS org_b \gset
SELECT prm.configure(:org, '{"phone_region": "US"}') IS NOT NULL AS ok \gset
SELECT prm.add_patient(:org, 'Mia', 'Mills', '+15558071001') AS mia \gset
SELECT prm.add_patient(:org, 'Nils', 'Noor', '+15558071002') AS nils \gset
SELECT prm.add_patient(:org_b, 'Bea', 'Berg', '+15558071003') AS bea \gset

--
-- 1. Caregivers
--
SELECT prm.add_caregiver(:org, 'Carl Mills', '(555) 807-2001', 'carl@example.org') AS carl \gset
SELECT prm.add_caregiver(:org, 'Dora Mills', '+15558072002', NULL, 'Europe/Berlin') AS dora \gset
SELECT prm.add_caregiver(:org, 'Eve Mills', '+15558072003', 'eve@example.org', 'America/New_York') AS eve \gset
SELECT prm.add_caregiver(:org_b, 'Bob Berg', '+15558072004') AS bob \gset
SELECT is((SELECT phone FROM prm.caregiver WHERE id = :carl), '+15558072001', 'a national phone is stored in E.164');
SELECT throws_ok(format('SELECT prm.add_caregiver(%s, %L, %L)', :org, 'X', '12'), '22023', NULL, 'a malformed phone is refused');
SELECT throws_ok(format('SELECT prm.add_caregiver(%s, NULL, %L)', :org, '+15558072009'), '22004', NULL, 'a NULL name is refused');
SELECT throws_ok(format('SELECT prm.add_caregiver(%s, %L, NULL)', :org, 'X'), '22004', NULL, 'a NULL phone is refused');
SELECT throws_ok(format('SELECT prm.add_caregiver(%s, %L, %L, %L)', :org, 'X', '+15558072009', 'not-an-email'), '22023', NULL, 'a malformed e-mail is refused');
SELECT throws_ok(format('SELECT prm.add_caregiver(%s, %L, %L, NULL, %L)', :org, 'X', '+15558072009', 'Mars/Olympus'), '22023', NULL, 'an unknown time zone is refused');
SELECT throws_ok('SELECT prm.add_caregiver(999999, ''X'', ''+15558072009'')', 'P0002', NULL, 'an unknown organization is refused');
SELECT is(prm.set_caregiver_preferences(:org, :dora, '{}'),
          '{"notifications": {"email": true, "sms": true, "push": false}, "alert_threshold": "medium",
            "quiet_hours": {"enabled": false, "start": "22:00", "end": "07:00"}, "daily_summary_time": null}'::jsonb,
          'a caregiver starts with the default preferences');

--
-- 2. The care circle, in escalation order
--
SELECT lives_ok(format('SELECT prm.link_caregiver(%s, %s, %s)', :org, :mia, :carl), 'link Carl');
SELECT lives_ok(format('SELECT prm.link_caregiver(%s, %s, %s)', :org, :mia, :eve), 'link Eve (last)');
SELECT lives_ok(format('SELECT prm.link_caregiver(%s, %s, %s, 1)', :org, :mia, :dora), 'link Dora first');
SELECT results_eq(format('SELECT caregiver_id FROM prm.care_link WHERE org_id = %s AND patient_id = %s ORDER BY position', :org, :mia),
                  format('VALUES (%s::bigint), (%s), (%s)', :dora, :carl, :eve), 'the circle is in escalation order');
SELECT lives_ok(format('SELECT prm.link_caregiver(%s, %s, %s, 1)', :org, :mia, :carl), 'linking again moves a caregiver');
SELECT results_eq(format('SELECT caregiver_id FROM prm.care_link WHERE org_id = %s AND patient_id = %s ORDER BY position', :org, :mia),
                  format('VALUES (%s::bigint), (%s), (%s)', :carl, :dora, :eve), 'Carl is first now, the others moved down');
SELECT results_eq(format('SELECT position FROM prm.care_link WHERE org_id = %s AND patient_id = %s ORDER BY position', :org, :mia),
                  'VALUES (1), (2), (3)', 'positions have no gaps');
SELECT throws_ok(format('SELECT prm.link_caregiver(%s, %s, %s, 0)', :org, :mia, :carl), '22023', NULL, 'position 0 is refused');
SELECT throws_ok(format('SELECT prm.link_caregiver(%s, %s, %s)', :org, :mia, :bob), 'P0002', NULL, 'another organization''s caregiver is unknown');
SELECT throws_ok(format('SELECT prm.link_caregiver(%s, %s, %s)', :org, :bea, :carl), 'P0002', NULL, 'another organization''s patient is unknown');
SELECT throws_ok(format('SELECT prm.link_caregiver(%s, NULL, %s)', :org, :carl), '22004', NULL, 'a NULL patient is refused');

--
-- 3. Preferences
--
SELECT is(prm.set_caregiver_preferences(:org, :eve, '{"alert_threshold": "high", "notifications": {"push": true}}'),
          '{"notifications": {"email": true, "sms": true, "push": true}, "alert_threshold": "high",
            "quiet_hours": {"enabled": false, "start": "22:00", "end": "07:00"}, "daily_summary_time": null}'::jsonb,
          'keys left out keep their values; the effective preferences are returned');
SELECT is(prm.set_caregiver_preferences(:org, :eve, '{"quiet_hours": {"enabled": true, "start": "23:00", "end": "06:30"}}') -> 'quiet_hours',
          '{"enabled": true, "start": "23:00", "end": "06:30"}'::jsonb, 'quiet hours across midnight are accepted');
SELECT is(prm.set_caregiver_preferences(:org, :eve, '{}') ->> 'alert_threshold', 'high', 'an earlier change stays');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"colour": "blue"}'),
                 '22023', 'unknown key "colour" in preferences', 'an unknown key is refused by name');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"notifications": {"fax": true}}'),
                 '22023', 'unknown key "fax" in notifications', 'an unknown channel is refused by name');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"notifications": {"sms": "yes"}}'),
                 '22023', 'notifications.sms must be true or false', 'a channel must be a boolean');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"notifications": true}'),
                 '22023', 'notifications must be a JSON object', 'notifications must be an object');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"alert_threshold": "urgent"}'),
                 '22023', NULL, 'an unknown threshold is refused');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"alert_threshold": "critical"}'),
                 '22023', NULL, 'critical is not a threshold (critical alerts reach everyone)');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"alert_threshold": 2}'),
                 '22023', 'alert_threshold must be a string', 'a threshold must be a string');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"quiet_hours": {"start": "25:00"}}'),
                 '22023', 'quiet_hours.start "25:00" is not a time of day', '25:00 is refused');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"quiet_hours": {"end": "7:00"}}'),
                 '22023', NULL, 'a time must be HH:MM');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"quiet_hours": {"start": "08:00", "end": "08:00"}}'),
                 '22023', NULL, 'quiet hours with start = end are refused');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '{"daily_summary_time": "20:60"}'),
                 '22023', NULL, 'a malformed summary time is refused');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :eve, '[1]'),
                 '22023', NULL, 'preferences must be an object');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, NULL)', :org, :eve), '22004', NULL, 'NULL preferences are refused');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :bob, '{}'), 'P0002', NULL, 'another organization''s caregiver is unknown');
SELECT is(prm.set_caregiver_preferences(:org, :eve, '{}') -> 'quiet_hours' ->> 'start', '23:00', 'a refused change changed nothing');

--
-- 4. Monitoring settings
--
SELECT is(prm.set_monitoring(:org, :mia, '{"inactivity_threshold": "2 hours", "escalation_wait": "10 minutes"}'),
          '{"enabled": true, "inactivity_threshold": "02:00:00", "active_hours": null, "escalation_wait": "00:10:00",
            "escalation_loop": false, "severity": "high", "nudge_before": "00:00:00", "nudge_channel": "push"}'::jsonb,
          'monitoring starts with the effective settings');
SELECT ok((SELECT next_due_at BETWEEN now() AND now() + interval '2 hours' FROM prm.monitoring WHERE patient_id = :mia),
          'the inactivity deadline is set');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"inactivity_threshold": "-5 minutes"}'),
                 '22023', NULL, 'a negative threshold is refused');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"inactivity_threshold": "0 seconds"}'),
                 '22023', NULL, 'a zero threshold is refused');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"inactivity_threshold": "90 days"}'),
                 '22023', NULL, 'a threshold beyond 30 days is refused');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"inactivity_threshold": 60}'),
                 '22023', NULL, 'a threshold must be an interval string');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"inactivity_threshold": "soon"}'),
                 '22007', NULL, 'a malformed interval is refused');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"escalation_wait": "-1 minute"}'),
                 '22023', NULL, 'a negative escalation wait is refused');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"severity": "dire"}'),
                 '22023', NULL, 'an unknown severity is refused');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"active_hours": {"start": "07:00"}}'),
                 '22023', NULL, 'active hours need an end');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"threshold": "1 hour"}'),
                 '22023', 'unknown key "threshold" in monitoring settings', 'an unknown monitoring key is refused by name');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :bea, '{}'), 'P0002', NULL, 'another organization''s patient is unknown');
SELECT is(prm.set_monitoring(:org, :nils, '{"active_hours": {"start": "22:00", "end": "06:00"}}') -> 'active_hours',
          '{"start": "22:00", "end": "06:00"}'::jsonb, 'active hours across midnight are accepted');

SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"nudge_before": "3 hours"}'),
                 '22023', 'nudge_before must be shorter than inactivity_threshold', 'a nudge must come before the deadline');
SELECT throws_ok(format('SELECT prm.set_monitoring(%s, %s, %L)', :org, :mia, '{"nudge_channel": "fax"}'),
                 '22023', NULL, 'an unknown nudge channel is refused');
-- Nils is nudged 10 minutes before his deadline, by SMS
SELECT prm.set_monitoring(:org, :nils, '{"active_hours": null, "inactivity_threshold": "1 hour", "nudge_before": "10 minutes", "nudge_channel": "sms"}') IS NOT NULL AS ok \gset
SELECT is((SELECT next_due_at FROM prm.monitoring WHERE patient_id = :nils), now() + interval '50 minutes', 'the first wake-up is the nudge');
UPDATE prm.patient SET last_heartbeat_at = now() - interval '55 minutes' WHERE id = :nils;
UPDATE prm.monitoring SET next_due_at = now() - interval '1 second', started_at = now() - interval '55 minutes' WHERE patient_id = :nils;
SELECT is((prm.run_due_jobs() ->> 'monitor_alerts')::int, 0, 'five minutes before the deadline: no alert yet');
SELECT is((SELECT channel || ' ' || to_address FROM prm.outbound_message WHERE kind = 'check_in' AND patient_id = :nils),
          'sms +15558071002', 'the patient is nudged by SMS');
SELECT is((SELECT next_due_at FROM prm.monitoring WHERE patient_id = :nils), now() + interval '5 minutes', 'then the deadline itself');
UPDATE prm.monitoring SET next_due_at = now() - interval '1 second' WHERE patient_id = :nils;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE kind = 'check_in' AND patient_id = :nils), 1, 'one nudge per silence');
SELECT prm.set_monitoring(:org, :nils, '{"enabled": false}') IS NOT NULL AS ok \gset
SELECT is((SELECT next_due_at FROM prm.monitoring WHERE patient_id = :nils), NULL, 'disabled monitoring has no deadline');
-- active hours: silence counts only within them (a window from two hours from now, local, for an hour)
SELECT to_char(now() AT TIME ZONE 'America/New_York' + interval '2 hours', 'HH24:MI') AS w_start,
       to_char(now() AT TIME ZONE 'America/New_York' + interval '3 hours', 'HH24:MI') AS w_end \gset
SELECT prm.resolve_alert(:org, id) FROM prm.alert WHERE patient_id = :nils AND status <> 'resolved';
SELECT prm.set_monitoring(:org, :nils, format('{"enabled": true, "inactivity_threshold": "30 minutes", "nudge_before": "0",
         "active_hours": {"start": "%s", "end": "%s"}}', :'w_start', :'w_end')::jsonb) IS NOT NULL AS ok \gset
UPDATE prm.patient SET last_heartbeat_at = now() - interval '3 hours' WHERE id = :nils;
UPDATE prm.monitoring SET next_due_at = now() - interval '1 second', started_at = now() - interval '3 hours' WHERE patient_id = :nils;
SELECT is((prm.run_due_jobs() ->> 'monitor_alerts')::int, 0, 'silence outside the active hours does not count');
SELECT is((SELECT next_due_at FROM prm.monitoring WHERE patient_id = :nils),
          prm.local_to_utc(date_trunc('minute', now() AT TIME ZONE 'America/New_York' + interval '2 hours'), 'America/New_York')
            + interval '30 minutes',
          'the deadline is 30 minutes into the next active window');

--
-- 5. Heartbeats
--
SELECT lives_ok(format('SELECT prm.record_heartbeat(%s, %s, %L, %L)', :org, :mia, 'app', '{"app_version": "2.4.1", "battery": 80}'), 'a heartbeat');
SELECT is((SELECT app_version FROM prm.patient WHERE id = :mia), '2.4.1', 'the app version comes from the heartbeat');
SELECT is((SELECT last_heartbeat_at FROM prm.patient WHERE id = :mia), now(), 'last_heartbeat_at is set');
SELECT is((SELECT count(*)::int FROM prm.patient_activity(:org, :mia, now() - interval '1 hour')), 1, 'the heartbeat is in the activity log');
SELECT throws_ok(format('SELECT prm.record_heartbeat(%s, %s, %L, %L)', :org, :mia, 'app', '[1, 2]'), '22023', NULL, 'details must be an object');
SELECT throws_ok(format('SELECT prm.record_heartbeat(%s, %s, %L, %L)', :org, :mia, 'app', '{"app_version": 3}'), '22023', NULL, 'app_version must be a string');
SELECT throws_ok(format('SELECT prm.record_heartbeat(%s, NULL)', :org), '22004', NULL, 'a NULL patient is refused');
SELECT throws_ok(format('SELECT prm.record_heartbeat(%s, %s)', :org, :bea), 'P0002', NULL, 'another organization''s patient is unknown');

--
-- 6. Inactivity: deadline, alert, escalation, acknowledgement, resolution
--
-- Carl (first) takes only high alerts, Dora (second) medium, Eve (third) high.
SELECT prm.set_caregiver_preferences(:org, :carl, '{"alert_threshold": "high"}') IS NOT NULL AS ok \gset
-- Mia's alert is medium: Carl is passed over, Dora is asked first
SELECT prm.set_monitoring(:org, :mia, '{"severity": "medium"}') IS NOT NULL AS ok \gset
-- the deadline comes with a heartbeat since: the step only moves it on
UPDATE prm.monitoring SET next_due_at = now() - interval '1 second' WHERE patient_id = :mia;
SELECT is((prm.run_due_jobs() ->> 'monitor_alerts')::int, 0, 'a deadline with a heartbeat since opens nothing');
SELECT is((SELECT next_due_at FROM prm.monitoring WHERE patient_id = :mia), now() + interval '2 hours', 'the deadline moved to the last heartbeat''s');
-- now silence
UPDATE prm.patient SET last_heartbeat_at = now() - interval '3 hours' WHERE id = :mia;
UPDATE prm.monitoring SET next_due_at = now() - interval '1 second', started_at = now() - interval '3 hours' WHERE patient_id = :mia;
SELECT is((prm.run_due_jobs() ->> 'monitor_alerts')::int, 1, 'silence past the threshold opens an alert');
SELECT id AS a1 FROM prm.alert WHERE patient_id = :mia AND kind = 'inactivity' \gset
SELECT is((SELECT status || '/' || severity FROM prm.alert WHERE id = :a1), 'open/medium', 'the alert is open, medium');
SELECT is((SELECT next_due_at FROM prm.monitoring WHERE patient_id = :mia), NULL, 'no deadline while the alert is open');
SELECT results_eq(format('SELECT caregiver_id, purpose FROM prm.alert_notification WHERE alert_id = %s ORDER BY id', :a1),
                  format('VALUES (%s::bigint, ''skipped''::text), (%s, ''alert'')', :carl, :dora),
                  'Carl is passed over (threshold high), Dora is asked');
SELECT is((SELECT body FROM prm.outbound_message WHERE to_address = '+15558072002' AND kind = 'caregiver_alert'),
          'Companion A: we have had no sign of activity from Mia for a while. Please check on them and reply OK to take responsibility.',
          'the SMS names the patient, no clinical details');
-- a repeat counts on the open alert
SELECT is(prm.run_due_jobs() ->> 'monitor_alerts', '0', 'nothing more is due');
UPDATE prm.alert SET next_escalation_at = now() - interval '1 second' WHERE id = :a1;
SELECT is((prm.run_due_jobs() ->> 'monitor_alerts')::int, 1, 'the escalation step comes');
SELECT is((SELECT count(*)::int FROM prm.alert_notification WHERE alert_id = :a1 AND purpose = 'alert'), 1,
          'Eve (high) is not told of a medium alert, so nobody new');
SELECT is((SELECT next_escalation_at FROM prm.alert WHERE id = :a1), NULL, 'the circle is exhausted without a loop');
-- one open alert per patient and kind
SELECT is((SELECT count(*)::int FROM prm.alert WHERE patient_id = :mia AND status <> 'resolved'), 1, 'one open alert per patient and kind');
-- acknowledgement: by a caregiver of the circle only
SELECT throws_ok(format('SELECT prm.acknowledge_alert(%s, %s, %s)', :org, :a1, :bob), 'P0002', NULL, 'another organization''s caregiver is unknown');
SELECT throws_ok(format('SELECT prm.acknowledge_alert(%s, %s)', :org_b, :a1), 'P0002', NULL, 'the alert is unknown in another organization');
SELECT throws_ok(format('SELECT prm.acknowledge_alert(%s, NULL)', :org), '22004', NULL, 'a NULL alert is refused');
SELECT lives_ok(format('SELECT prm.acknowledge_alert(%s, %s, %s)', :org, :a1, :dora), 'Dora acknowledges');
SELECT is((SELECT status || '/' || acknowledged_by FROM prm.alert WHERE id = :a1), 'acknowledged/' || :dora, 'acknowledged by Dora');
SELECT lives_ok(format('SELECT prm.acknowledge_alert(%s, %s)', :org, :a1), 'a second acknowledgement changes nothing');
-- a heartbeat resolves it and tells Dora
SELECT lives_ok(format('SELECT prm.record_heartbeat(%s, %s)', :org, :mia), 'Mia''s app beats again');
SELECT is((SELECT status FROM prm.alert WHERE id = :a1), 'resolved', 'the heartbeat resolved the alert');
SELECT is((SELECT count(*)::int FROM prm.alert_notification WHERE alert_id = :a1 AND purpose = 'resolved' AND caregiver_id = :dora), 1,
          'whoever was alerted is told');
SELECT ok((SELECT next_due_at > now() FROM prm.monitoring WHERE patient_id = :mia), 'the deadline is armed again');
SELECT throws_ok(format('SELECT prm.acknowledge_alert(%s, %s)', :org, :a1), '55000', NULL, 'a resolved alert cannot be acknowledged');

-- Escalation order with a high alert: Carl, then Dora, then Eve; quiet hours
-- hold Eve's message (not critical); OK from Eve acknowledges.
SELECT prm.set_monitoring(:org, :mia, '{"severity": "high"}') IS NOT NULL AS ok \gset
SELECT prm.set_caregiver_preferences(:org, :eve, format('{"quiet_hours": {"enabled": true, "start": "%s", "end": "%s"}}',
           to_char(now() AT TIME ZONE 'America/New_York' - interval '1 hour', 'HH24:MI'),
           to_char(now() AT TIME ZONE 'America/New_York' + interval '1 hour', 'HH24:MI'))::jsonb) IS NOT NULL AS ok \gset
UPDATE prm.patient SET last_heartbeat_at = now() - interval '3 hours' WHERE id = :mia;
UPDATE prm.monitoring SET next_due_at = now() - interval '1 second' WHERE patient_id = :mia;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT id AS a2 FROM prm.alert WHERE patient_id = :mia AND kind = 'inactivity' AND status = 'open' \gset
UPDATE prm.alert SET next_escalation_at = now() - interval '1 second' WHERE id = :a2;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
UPDATE prm.alert SET next_escalation_at = now() - interval '1 second' WHERE id = :a2;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT results_eq(format('SELECT caregiver_id FROM prm.alert_notification WHERE alert_id = %s AND purpose = ''alert'' GROUP BY caregiver_id ORDER BY min(id)', :a2),
                  format('VALUES (%s::bigint), (%s), (%s)', :carl, :dora, :eve), 'a high alert goes down the circle in order');
SELECT ok((SELECT bool_and(not_before > now()) FROM prm.alert_notification WHERE alert_id = :a2 AND caregiver_id = :eve),
          'quiet hours hold Eve''s message');
SELECT ok((SELECT bool_and(not_before = now()) FROM prm.alert_notification WHERE alert_id = :a2 AND caregiver_id = :carl),
          'Carl''s went at once');
SELECT is(prm.handle_inbound_sms('+15558070000', '(555) 807-2003', 'ok!', 'caregiver-ok-1'),
          'Thank you. You have taken responsibility for this alert; the others will not be asked.', 'Eve answers OK by SMS to the clinic''s number');
SELECT is((SELECT status || '/' || acknowledged_by FROM prm.alert WHERE id = :a2), 'acknowledged/' || :eve, 'the OK acknowledged the alert');
SELECT is(prm.caregiver_reply(:org, '+15558072003', 'ok'), NULL, 'a second OK is not an alert reply any more');
SELECT is(prm.caregiver_reply(:org, '+15558071001', 'ok'), NULL, 'a patient''s OK is not a caregiver reply');
UPDATE prm.alert SET next_escalation_at = now() - interval '1 second' WHERE id = :a2;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT is((SELECT count(DISTINCT caregiver_id)::int FROM prm.alert_notification WHERE alert_id = :a2 AND purpose = 'alert'), 3,
          'an acknowledged alert escalates no further');

--
-- 7. Reminders
--
SELECT throws_ok(format('SELECT prm.add_reminder(%s, %s, %L, %L)', :org, :mia, 'Pills', '{"times": []}'), '22023', NULL, 'a schedule needs times');
SELECT throws_ok(format('SELECT prm.add_reminder(%s, %s, %L, %L)', :org, :mia, 'Pills', '{"times": ["25:00"]}'), '22023', NULL, '25:00 is not a time');
SELECT throws_ok(format('SELECT prm.add_reminder(%s, %s, %L, %L)', :org, :mia, 'Pills', '{"times": ["08:00"], "days_of_week": [0]}'), '22023', NULL, 'day 0 is refused');
SELECT throws_ok(format('SELECT prm.add_reminder(%s, %s, %L, %L)', :org, :mia, 'Pills', '{"times": ["08:00"], "every": 2}'), '22023', NULL, 'an unknown schedule key is refused');
SELECT throws_ok(format('SELECT prm.add_reminder(%s, %s, %L, %L)', :org, :mia, 'Pills', '{"times": ["08:00"], "starts": "2031-02-01", "ends": "2031-01-01"}'), '22023', NULL, 'ends before starts is refused');
SELECT throws_ok(format('SELECT prm.add_reminder(%s, %s, %L, %L)', :org, :bea, 'Pills', '{"times": ["08:00"]}'), 'P0002', NULL, 'another organization''s patient is unknown');
-- a reminder every day at the next two full hours (local), so occurrences are created today
SELECT to_char(now() AT TIME ZONE 'America/New_York' + interval '1 hour', 'HH24:00') AS t1,
       to_char(now() AT TIME ZONE 'America/New_York' + interval '2 hours', 'HH24:00') AS t2 \gset
SELECT prm.add_reminder(:org, :mia, 'Morning pills', format('{"times": ["%s", "%s"]}', :'t1', :'t2')::jsonb) AS rem \gset
SELECT ok((SELECT count(*) >= 2 FROM prm.reminder_occurrence WHERE reminder_id = :rem AND status = 'scheduled'), 'occurrences are created ahead');
SELECT id AS occ FROM prm.reminder_occurrence WHERE reminder_id = :rem ORDER BY due_at LIMIT 1 \gset
UPDATE prm.reminder_occurrence SET next_due_at = now() - interval '1 second' WHERE id = :occ;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT is((SELECT status FROM prm.reminder_occurrence WHERE id = :occ), 'sent', 'a due occurrence is sent to the patient');
SELECT is((SELECT channel || ' ' || to_address FROM prm.outbound_message WHERE kind = 'reminder' AND dedup_key = 'reminder:' || :occ),
          'push patient:' || :mia, 'on the companion app');
SELECT ok((SELECT count(*) >= 1 FROM prm.claim_messages('push', 10)), 'a sender claims push messages');
-- not confirmed in time: missed, and the circle is alerted
UPDATE prm.reminder_occurrence SET next_due_at = now() - interval '1 second' WHERE id = :occ;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT is((SELECT status FROM prm.reminder_occurrence WHERE id = :occ), 'missed', 'an unconfirmed occurrence is missed');
SELECT is((SELECT severity || '/' || status FROM prm.alert WHERE patient_id = :mia AND kind = 'missed_reminder'), 'medium/open',
          'a missed reminder opens an alert');
SELECT lives_ok(format('SELECT prm.confirm_reminder(%s, %s)', :org, :occ), 'a missed one can be confirmed late');
SELECT throws_ok(format('SELECT prm.confirm_reminder(%s, %s)', :org_b, :occ), 'P0002', NULL, 'another organization''s occurrence is unknown');
-- rescheduling moves the future occurrences; deleting withdraws them
SELECT prm.reschedule_reminder(:org, :rem, '{"times": ["03:00"]}') IS NOT NULL AS ok \gset
SELECT is((SELECT count(*)::int FROM prm.reminder_occurrence WHERE reminder_id = :rem AND status = 'scheduled' AND local_time <> '03:00'), 0,
          'rescheduling withdrew the old times');
SELECT ok((SELECT count(*) >= 1 FROM prm.reminder_occurrence WHERE reminder_id = :rem AND status = 'scheduled' AND local_time = '03:00'),
          'and created the new ones');
SELECT ok(prm.delete_reminder(:org, :rem) >= 1, 'deleting withdraws the rest');
SELECT throws_ok(format('SELECT prm.confirm_reminder(%s, (SELECT max(id) FROM prm.reminder_occurrence WHERE reminder_id = %s))', :org, :rem),
                 '55000', NULL, 'a withdrawn occurrence cannot be confirmed');

-- daylight saving: a gap moves to the first valid minute, a repeated hour is its first occurrence
SELECT is(prm.local_to_utc('2031-03-09 02:30', 'America/New_York'), '2031-03-09 07:00+00'::timestamptz,
          '02:30 in the spring gap is 03:00 EDT');
SELECT is(prm.local_to_utc('2031-11-02 01:30', 'America/New_York'), '2031-11-02 05:30+00'::timestamptz,
          '01:30 of the repeated hour is the first (EDT)');
SELECT is(prm.local_to_utc('2031-03-09 08:00', 'America/New_York'), '2031-03-09 12:00+00'::timestamptz,
          'an ordinary time is itself');

--
-- 8. Daily summary
--
SELECT prm.set_caregiver_preferences(:org, :dora, '{"daily_summary_time": "20:00"}') IS NOT NULL AS ok \gset
SELECT is((SELECT summary_due_at FROM prm.caregiver WHERE id = :dora),
          (SELECT prm.local_to_utc(((now() AT TIME ZONE 'Europe/Berlin')::date
                    + CASE WHEN (now() AT TIME ZONE 'Europe/Berlin')::time >= '20:00' THEN 1 ELSE 0 END) + time '20:00', 'Europe/Berlin')),
          'the summary is due at 20:00 in Dora''s zone');
UPDATE prm.caregiver SET summary_due_at = now() - interval '1 second' WHERE id = :dora;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT ok((SELECT body LIKE 'Companion A daily summary: % check-ins, % reminders taken, % missed, % alerts for the 1 people in your care today.'
             FROM prm.outbound_message WHERE kind = 'caregiver_summary' AND to_address = '+15558072002'),
          'the summary goes out by SMS, counts only');
SELECT ok((SELECT summary_due_at > now() FROM prm.caregiver WHERE id = :dora), 'the next summary is set');

--
-- 9. Tenancy
--
SELECT prm.grant_access('regress_mon_a', :org, 'staff') IS NULL AS ok \gset
SELECT prm.grant_access('regress_mon_b', :org_b, 'admin') IS NULL AS ok \gset
SELECT prm.grant_access('regress_mon_hook', :org, 'webhook') IS NULL AS ok \gset
SET LOCAL ROLE regress_mon_b;
SELECT is_empty('SELECT 1 FROM prm.caregiver WHERE org_id <> ' || :org_b, 'B reads none of A''s caregivers');
SELECT is_empty('SELECT 1 FROM prm.alert', 'B reads none of A''s alerts');
SELECT is_empty('SELECT 1 FROM prm.care_link UNION ALL SELECT 1 FROM prm.patient_activity UNION ALL SELECT 1 FROM prm.reminder_occurrence',
                'B reads none of A''s links, activity or occurrences');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org, :carl, '{}'), '42501', NULL, 'B cannot change A''s caregivers');
SELECT throws_ok(format('SELECT prm.acknowledge_alert(%s, %s)', :org, :a2), '42501', NULL, 'B cannot acknowledge A''s alerts');
SELECT throws_ok(format('SELECT prm.set_caregiver_preferences(%s, %s, %L)', :org_b, :carl, '{}'), 'P0002', NULL, 'A''s caregiver is unknown in B');
SELECT throws_ok(format($$SELECT * FROM prm.patient_activity(%s, %s, now() - interval '1 day')$$, :org, :mia), '42501', NULL,
                 'B asking for A''s activity gets 42501, not an empty page');
RESET ROLE;
SET LOCAL ROLE regress_mon_hook;
SELECT lives_ok(format('SELECT prm.record_heartbeat(%s, %s)', :org, :nils), 'the webhook level records heartbeats');
SELECT throws_ok(format('SELECT prm.add_caregiver(%s, %L, %L)', :org, 'X', '+15558072009'), '42501', NULL, 'but cannot add caregivers');
RESET ROLE;

--
-- 10. Privacy
--
SELECT ok(prm.export_patient(:org, :mia) ?& ARRAY['care_circle', 'monitoring', 'activity', 'alerts', 'reminders', 'reminder_occurrences'],
          'the export covers monitoring');
SELECT ok((prm.erase_patient(:org, :mia) ->> 'alerts_deleted')::int >= 2, 'erasure deletes the alerts');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE kind LIKE 'caregiver_%' AND body LIKE '%Mia%'), 0,
          'no caregiver message names the erased patient');
SELECT is((SELECT count(*)::int FROM prm.caregiver WHERE org_id = :org), 3, 'the caregivers stay');
SELECT is(prm.remove_caregiver(:org, :carl) ->> 'caregiver', '1', 'a caregiver can be removed');
SELECT is((SELECT count(*)::int FROM prm.patient WHERE org_id = :org), 2, 'without touching the patients');

SELECT * FROM finish();
ROLLBACK;
