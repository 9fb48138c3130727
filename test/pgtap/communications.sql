-- Communications: an organization's own message kinds and their class,
-- scheduled messages at a time and at a local time (across a
-- daylight-saving gap and a repeated hour), cancelling, a patient's
-- communications keyset-paged, promotional frequency caps (capped kept with
-- its reason, exempt never capped), consent (refused without, sent with,
-- withdrawn again refused, in export and erasure), every bad input, and
-- another organization's roles and rows.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(182);
SET LOCAL timezone = 'UTC';

-- the row of a message or consent a call made (the call evaluated once)
CREATE FUNCTION pg_temp.status_of(bigint) RETURNS text LANGUAGE sql AS 'SELECT status FROM prm.outbound_message WHERE id = $1';
CREATE FUNCTION pg_temp.dedup_of(bigint) RETURNS text LANGUAGE sql AS 'SELECT dedup_key FROM prm.outbound_message WHERE id = $1';
CREATE FUNCTION pg_temp.note_of(bigint) RETURNS text LANGUAGE sql AS 'SELECT note FROM prm.patient_consent WHERE id = $1';

CREATE ROLE regress_comms_admin;
CREATE ROLE regress_comms_staff;
CREATE ROLE regress_comms_ro;
CREATE ROLE regress_comms_other;

SELECT prm.create_organization('Clinic M', 'America/New_York', '+15558090000') AS org \gset
SELECT prm.create_organization('Other M', 'UTC', '+15558099999') AS org_b \gset
SELECT prm.grant_access('regress_comms_admin', :org, 'admin');
SELECT prm.grant_access('regress_comms_staff', :org, 'staff');
SELECT prm.grant_access('regress_comms_ro', :org, 'readonly');
SELECT prm.grant_access('regress_comms_other', :org_b, 'admin');
SELECT prm.add_provider(:org, 'Dr M') AS dr \gset
SELECT prm.add_patient(:org, 'Mia', 'Mail', '+15558091001', 'mia@example.org') AS mia \gset
SELECT prm.add_patient(:org, 'Nat', 'Nomail', '+15558091002') AS nat \gset
SELECT prm.add_patient(:org, 'Cap', 'Count', '+15558091003', 'cap@example.org') AS cap \gset
SELECT prm.add_patient(:org, 'Con', 'Sent', '+15558091004', 'con@example.org') AS con \gset
SELECT prm.add_patient(:org, 'Dee', 'Ess', '+15558091005', 'dee@example.org') AS dee \gset
SELECT prm.add_patient(:org_b, 'Bob', 'B', '+15558099001', 'bob@example.org') AS bob \gset

-- 1. an organization's own kinds
SELECT is(prm.set_template(:org, 'welcome', '{clinic}: welcome to our practice!') > 0, true, 'an own kind is accepted beside the built-in ones');
SELECT is(prm.message_class(:org, 'welcome'), 'promotional', 'an own kind is promotional unless set');
SELECT lives_ok(format($$SELECT prm.set_template(%s, 'welcome', '{clinic}: welcome! Call {clinic_phone}.', 'email')$$, :org), 'the same kind worded for e-mail');
SELECT is(prm.message_class(:org, 'welcome'), 'promotional', 'a NULL class keeps the kind''s class');
SELECT is(prm.set_template(:org, 'safety', '{clinic}: please check your medication.', 'email', 'en', 'exempt') > 0, true, 'an own kind set exempt');
SELECT is(prm.message_class(:org, 'safety'), 'exempt', 'its class is exempt');
SELECT lives_ok(format($$SELECT prm.set_template(%s, 'safety', '{clinic}: please check your medication.', 'sms')$$, :org), 'a wording for SMS too');
SELECT is(prm.message_class(:org, 'safety'), 'exempt', 'and the class stays exempt');
SELECT prm.set_template(:org, 'safety', '{clinic}: please check your medication.', 'push') IS NOT NULL AS ok \gset
SELECT prm.set_template(:org, 'safety', '{clinic}: please check your medication.', 'whatsapp') IS NOT NULL AS ok \gset
SELECT prm.set_template(:org, 'welcome', '{clinic}: welcome!', 'whatsapp') IS NOT NULL AS ok \gset
SELECT is(prm.message_class(:org, 'offer'), 'exempt', 'built-in kinds are exempt (offers keep their own caps)');
SELECT is(prm.message_class(:org, 'reminder'), 'exempt', 'clinical reminders are exempt');
SELECT is(prm.message_class(:org, 'booked'), 'exempt', 'booking confirmations are exempt');
SELECT lives_ok(format($$SELECT prm.set_template(%s, 'booked', '{clinic}: booked {date} {time}.', 'sms', 'en', 'exempt')$$, :org), 'a built-in kind may be said exempt');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'booked', '{clinic}: booked.', 'sms', 'en', 'promotional')$$, :org), '22023', 'built-in message kind "booked" is exempt', 'a built-in kind cannot be promotional');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'news', 'x', 'sms', 'en', 'spam')$$, :org), '22023', 'message class "spam" is not recognized', 'an unknown class is refused');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'Welcome', 'x')$$, :org), '22023', NULL, 'upper case is not a kind');
SELECT throws_ok(format($$SELECT prm.set_template(%s, '1st', 'x')$$, :org), '22023', NULL, 'a kind starts with a letter');
SELECT throws_ok(format($$SELECT prm.set_template(%s, '', 'x')$$, :org), '22023', NULL, 'an empty kind is refused');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'a'';drop--', 'x')$$, :org), '22023', NULL, 'an injection string is not a kind');
SELECT throws_ok(format($$SELECT prm.set_template(%s, %L, 'x')$$, :org, repeat('k', 31)), '22001', NULL, 'a kind longer than 30 is refused');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'reply', 'x')$$, :org), '22023', 'message kind "reply" is reserved', 'prm''s internal kinds are reserved');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'appointment_reminder', 'x')$$, :org), '22023', NULL, 'appointment_reminder is reserved');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'news', 'Hi {given_name}')$$, :org), '22023', NULL, 'patient details are no placeholder of an own kind either');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'news', 'Open {date')$$, :org), '22023', NULL, 'an unclosed placeholder is refused');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'news', %L)$$, :org, repeat('x', 1601)), '22001', NULL, 'an oversized body is refused');
SELECT throws_ok(format($$SELECT prm.set_template(NULL, 'news', 'x')$$), '22004', NULL, 'a NULL org_id is refused');
SELECT throws_ok(format($$SELECT prm.set_template(%s, NULL, 'x')$$, :org), '22004', NULL, 'a NULL kind is refused');
SELECT is((SELECT count(*)::int FROM prm.message_kind WHERE org_id = :org), 2, 'refused calls recorded no kind');
SELECT is(prm.render_template(:org, 'welcome'), 'Clinic M: welcome to our practice!', 'an own kind renders with the placeholder rules');
SELECT throws_ok(format($$SELECT prm.render_template(%s, 'nosuch')$$, :org), '22023', NULL, 'render_template: a kind the organization does not have');
SELECT throws_ok(format($$SELECT prm.render_template(%s, 'welcome')$$, :org_b), '22023', NULL, 'render_template: another organization''s kind is not this one''s');
SELECT throws_ok(format($$SELECT prm.message_class(%s, 'nosuch')$$, :org), '22023', NULL, 'message_class: an unknown kind');
SELECT throws_ok(format($$SELECT prm.message_class(NULL, 'welcome')$$), '22004', NULL, 'message_class: NULL org_id');

-- 2. a message to a patient, now and at a time
SELECT prm.schedule_message(:org, :mia, 'welcome', 'email') AS m_now \gset
SELECT results_eq(format('SELECT channel, to_address, body, status, message_class, kind, patient_id FROM prm.outbound_message WHERE id = %s', :m_now),
                  format($$VALUES ('email'::text, 'mia@example.org'::text, 'Clinic M: welcome! Call +15558090000.'::text, 'queued'::text, 'promotional'::text, 'welcome'::text, %s::bigint)$$, :mia),
                  'the patient''s e-mail, the e-mail wording, queued, promotional');
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_now), now(), 'send_at defaults to now');
SELECT prm.schedule_message(:org, :mia, 'safety', 'push', now() + interval '2 hours') AS m_push \gset
SELECT results_eq(format('SELECT to_address, not_before FROM prm.outbound_message WHERE id = %s', :m_push),
                  $$VALUES ('patient:$$ || :mia || $$'::text, now() + interval '2 hours')$$,
                  'push goes to the patient''s app, at the time asked (the outbox''s not_before is its deadline)');
SELECT is(prm.next_deadline() <= now() + interval '2 hours', true, 'a scheduled message is a deadline of the worker');
SELECT is(prm.schedule_message(:org, :mia, 'safety', 'push', now() + interval '2 hours', 'push:' || :mia), 
          prm.schedule_message(:org, :mia, 'safety', 'push', now() + interval '3 hours', 'push:' || :mia),
          'a dedup key used before returns that message');
-- quiet hours hold an SMS: 23:00 in New York goes at 08:00
SELECT prm.local_to_utc((current_date + 2) + time '23:00', 'America/New_York') AS late \gset
SELECT prm.schedule_message(:org, :mia, 'safety', 'sms', :'late') AS m_quiet \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_quiet),
          prm.local_to_utc((current_date + 3) + time '08:00', 'America/New_York'), 'an SMS in quiet hours is held until they end');
-- from here on nothing may depend on the hour the file runs at (New York's
-- quiet hours begin at 02:00 UTC): no quiet hours
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS quiet_off \gset
-- no address, opted out, a value the patient does not have: kept as refused
SELECT prm.schedule_message(:org, :nat, 'safety', 'email') AS m_nomail \gset
SELECT results_eq(format('SELECT status, last_error, to_address FROM prm.outbound_message WHERE id = %s', :m_nomail),
                  format($$VALUES ('refused'::text, 'patient %s has no e-mail address'::text, ''::text)$$, :nat),
                  'a patient without an e-mail: refused, with the reason');
UPDATE prm.patient SET sms_opt_out = true WHERE id = :nat;
SELECT prm.schedule_message(:org, :nat, 'safety', 'sms') AS m_opted \gset
SELECT results_eq(format('SELECT status, last_error FROM prm.outbound_message WHERE id = %s', :m_opted),
                  format($$VALUES ('refused'::text, 'patient %s has opted out of SMS'::text)$$, :nat),
                  'an opted-out patient: refused, with the reason');
SELECT is(pg_temp.status_of(prm.schedule_message(:org, :nat, 'safety', 'whatsapp')), 'queued',
          'WhatsApp is not SMS: the opt-out does not hold it');
SELECT prm.set_template(:org, 'see_you', '{clinic}: see you on {date} at {time}.', 'email', 'en', 'exempt') IS NOT NULL AS ok \gset
SELECT prm.schedule_message(:org, :mia, 'see_you', 'email') AS m_nodate \gset
SELECT matches((SELECT status || ': ' || last_error FROM prm.outbound_message WHERE id = :m_nodate),
               '^refused: the template of kind see_you needs \{date\}.*no upcoming appointment', 'a template needing a value the patient lacks: refused, the placeholder named');
SELECT prm.book_appointment(:org, :mia, :dr, date_trunc('hour', now()) + interval '5 days', date_trunc('hour', now()) + interval '5 days 30 minutes') AS appt \gset
SELECT prm.schedule_message(:org, :mia, 'see_you', 'email') AS m_date \gset
SELECT is((SELECT body FROM prm.outbound_message WHERE id = :m_date),
          format('Clinic M: see you on %s at %s.',
                 to_char((date_trunc('hour', now()) + interval '5 days') AT TIME ZONE 'America/New_York', 'Dy FMDD Mon'),
                 to_char((date_trunc('hour', now()) + interval '5 days') AT TIME ZONE 'America/New_York', 'HH24:MI')),
          '{date} and {time}: the next appointment, in the patient''s time zone');
SELECT is((SELECT body FROM prm.outbound_message WHERE id = :m_date) !~ '(Mia|Mail|Dr M)', true, 'no patient or provider name in the text');

-- bad input
SELECT throws_ok(format($$SELECT prm.schedule_message(NULL, %s, 'welcome')$$, :mia), '22004', NULL, 'schedule_message: NULL org_id');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, NULL, 'welcome')$$, :org), '22004', NULL, 'schedule_message: NULL patient_id');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, NULL)$$, :org, :mia), '22004', NULL, 'schedule_message: NULL kind');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome', NULL)$$, :org, :mia), '22004', NULL, 'schedule_message: NULL channel');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome', 'sms', NULL)$$, :org, :mia), '22004', NULL, 'schedule_message: NULL send_at');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, 999999, 'welcome')$$, :org), 'P0002', NULL, 'schedule_message: an unknown patient');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome')$$, :org, :bob), 'P0002', NULL, 'schedule_message: another organization''s patient');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'nosuch')$$, :org, :mia), '22023', NULL, 'schedule_message: an unknown kind');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'Bad Kind')$$, :org, :mia), '22023', NULL, 'schedule_message: a malformed kind');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'see_you', 'sms')$$, :org, :mia), '22023', NULL, 'schedule_message: a kind not worded for the channel');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome', 'pigeon')$$, :org, :mia), '22023', NULL, 'schedule_message: an unknown channel');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome', 'sms', 'infinity')$$, :org, :mia), '22008', NULL, 'schedule_message: an infinite time');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome', 'sms', now() - interval '1 hour')$$, :org, :mia), '22023', 'send_at is in the past', 'schedule_message: a time in the past');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome', 'sms', now() + interval '2 years')$$, :org, :mia), '22023', 'send_at is more than a year ahead', 'schedule_message: an absurd time');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome', 'sms', now(), %L)$$, :org, :mia, repeat('d', 201)), '22001', NULL, 'schedule_message: an oversized dedup key');
SELECT is(pg_temp.dedup_of(prm.schedule_message(:org, :mia, 'safety', 'push', now(), 'x''); DELETE FROM prm.patient; --')),
          'x''); DELETE FROM prm.patient; --', 'an injection string in a dedup key is data');
SELECT is((SELECT count(*)::int FROM prm.patient WHERE org_id = :org), 5, 'and the patients are all there');

-- 3. a local time of day, by DESIGN.md's daylight-saving rules (America/New_York:
-- the next second Sunday of March, 02:00-03:00 missing; the next first Sunday
-- of November, 01:00-02:00 twice)
SELECT min(d) AS gap_day FROM (SELECT make_date(y, 3, 1) + (7 - extract(dow FROM make_date(y, 3, 1))::int) % 7 + 7 AS d
                                 FROM generate_series(extract(year FROM now())::int, extract(year FROM now())::int + 1) y) x
 WHERE d > current_date + 1 \gset
SELECT min(d) AS repeat_day FROM (SELECT make_date(y, 11, 1) + (7 - extract(dow FROM make_date(y, 11, 1))::int) % 7 AS d
                                    FROM generate_series(extract(year FROM now())::int, extract(year FROM now())::int + 1) y) x
 WHERE d > current_date + 1 \gset
SELECT prm.configure(:org, '{"promotional_daily_cap": 20, "promotional_weekly_cap": 100}') IS NOT NULL AS ok \gset
SELECT prm.schedule_message_local(:org, :dee, 'welcome', 'email', '02:30', :'gap_day') AS m_gap \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_gap), (:'gap_day'::date + time '07:00') AT TIME ZONE 'UTC',
          '02:30 in the spring gap is 03:00 EDT, the first valid minute after it');
SELECT prm.schedule_message_local(:org, :dee, 'welcome', 'email', '01:30', :'repeat_day') AS m_rep \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_rep), (:'repeat_day'::date + time '05:30') AT TIME ZONE 'UTC',
          '01:30 of the repeated hour is its first occurrence (01:30 EDT), once');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE patient_id = :dee AND not_before::date = :'repeat_day'::date), 1, 'the repeated hour queues one message');
SELECT prm.schedule_message_local(:org, :dee, 'welcome', 'email', '09:15', :'gap_day'::date - 1) AS m_before \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_before), (:'gap_day'::date - 1 + time '14:15') AT TIME ZONE 'UTC',
          'the day before the gap, 09:15 is EST');
SELECT prm.schedule_message_local(:org, :dee, 'safety', 'email', '09:00') AS m_next \gset
SELECT ok((SELECT not_before > now() AND not_before <= now() + interval '25 hours'
                  AND (not_before AT TIME ZONE 'America/New_York')::time IN ('09:00', '10:00')
             FROM prm.outbound_message WHERE id = :m_next), 'without a date: the next 09:00 in the patient''s time zone');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(%s, %s, 'welcome', 'email', '24:00')$$, :org, :dee), '22023', NULL, 'schedule_message_local: 24:00 is not a time of day');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(%s, %s, 'welcome', 'email', NULL)$$, :org, :dee), '22004', NULL, 'schedule_message_local: NULL local_time');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(%s, %s, 'welcome', 'email', '09:00', 'infinity')$$, :org, :dee), '22008', NULL, 'schedule_message_local: an infinite date');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(%s, %s, 'welcome', 'email', '09:00', current_date - 10)$$, :org, :dee), '22023', NULL, 'schedule_message_local: a date in the past');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(%s, %s, 'welcome', 'email', '09:00', current_date + 400)$$, :org, :dee), '22023', NULL, 'schedule_message_local: more than a year ahead');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(%s, %s, 'welcome', 'email', '09:00', '5874897-12-31')$$, :org, :dee), '22023', NULL, 'schedule_message_local: an absurd date');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(%s, %s, 'welcome', 'email', '00:00', current_date - 1)$$, :org, :dee), '22023', NULL, 'schedule_message_local: a time that has passed');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(%s, %s, 'welcome', 'email', '09:00')$$, :org, :bob), 'P0002', NULL, 'schedule_message_local: another organization''s patient');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(NULL, %s, 'welcome', 'email', '09:00')$$, :dee), '22004', NULL, 'schedule_message_local: NULL org_id');

-- 4. cancelling
SELECT lives_ok(format('SELECT prm.cancel_message(%s, %s)', :org, :m_gap), 'a queued message is cancelled');
SELECT results_eq(format('SELECT status, last_error FROM prm.outbound_message WHERE id = %s', :m_gap),
                  $$VALUES ('cancelled'::text, 'cancelled by postgres'::text)$$, 'cancelled, and by whom');
SELECT throws_ok(format('SELECT prm.cancel_message(%s, %s)', :org, :m_gap), '55000', NULL, 'cancelling twice is refused');
SELECT throws_ok(format('SELECT prm.cancel_message(%s, %s)', :org, :m_nomail), '55000', NULL, 'a refused message was never queued');
SELECT throws_ok(format('SELECT prm.cancel_message(%s, 999999)', :org), 'P0002', NULL, 'an unknown message');
SELECT prm.schedule_message(:org_b, :bob, 'booked', 'sms') IS NOT NULL AS ok \gset
SELECT prm.enqueue_message(:org_b, 'sms', '+15558099001', 'hi', :bob) AS m_b \gset
SELECT throws_ok(format('SELECT prm.cancel_message(%s, %s)', :org, :m_b), 'P0002', NULL, 'another organization''s message is unknown here');
SELECT throws_ok(format('SELECT prm.cancel_message(NULL, %s)', :m_b), '22004', NULL, 'cancel_message: NULL org_id');
SELECT throws_ok(format('SELECT prm.cancel_message(%s, NULL)', :org), '22004', NULL, 'cancel_message: NULL message_id');
SELECT prm.enqueue_message(:org, 'sms', '+15558091001', 'claimed soon', :mia) AS m_claimed \gset
SELECT is((SELECT count(*)::int FROM prm.claim_messages('sms', 1000) WHERE id = :m_claimed), 1, 'a sender claims a message');
SELECT throws_ok(format('SELECT prm.cancel_message(%s, %s)', :org, :m_claimed), '55000', NULL, 'a claimed message is past recall');
SELECT prm.configure(:org, '{"appointment_reminders": true, "reminder_offsets": "2 days"}') IS NOT NULL AS ok \gset
SELECT prm.schedule_reminders(:org, :appt) AS queued \gset
SELECT throws_ok(format('SELECT prm.cancel_message(%s, (SELECT message_id FROM prm.appointment_reminder WHERE appointment_id = %s))', :org, :appt),
                 '55000', NULL, 'an appointment reminder is withdrawn with its appointment, not cancelled');

-- 5. caps: at most 1 promotional message a local day and 2 a week (Monday to Sunday)
SELECT prm.configure(:org, '{"promotional_daily_cap": 1, "promotional_weekly_cap": 2}') IS NOT NULL AS ok \gset
SELECT current_date + (8 - extract(isodow FROM current_date)::int) AS monday \gset
SELECT prm.schedule_message(:org, :cap, 'welcome', 'email', prm.local_to_utc(:'monday'::date + time '10:00', 'America/New_York')) AS c1 \gset
SELECT prm.schedule_message(:org, :cap, 'welcome', 'email', prm.local_to_utc(:'monday'::date + time '23:30', 'America/New_York')) AS c2 \gset
SELECT prm.schedule_message(:org, :cap, 'welcome', 'email', prm.local_to_utc(:'monday'::date + 1 + time '00:30', 'America/New_York')) AS c3 \gset
SELECT prm.schedule_message(:org, :cap, 'welcome', 'email', prm.local_to_utc(:'monday'::date + 6 + time '10:00', 'America/New_York')) AS c4 \gset
SELECT prm.schedule_message(:org, :cap, 'welcome', 'email', prm.local_to_utc(:'monday'::date + 7 + time '10:00', 'America/New_York')) AS c5 \gset
SELECT results_eq(format('SELECT id, status FROM prm.outbound_message WHERE id IN (%s, %s, %s, %s, %s) ORDER BY not_before', :c1, :c2, :c3, :c4, :c5),
                  format($$VALUES (%s::bigint, 'queued'::text), (%s, 'capped'), (%s, 'queued'), (%s, 'capped'), (%s, 'queued')$$, :c1, :c2, :c3, :c4, :c5),
                  'caps by the patient''s local day and week: a second message on Monday capped, Tuesday 00:30 is another day, Sunday the third of the week, next Monday a new week');
SELECT is((SELECT last_error FROM prm.outbound_message WHERE id = :c2),
          format('daily cap: 1 promotional message already goes to patient %s on %s, their local day (promotional_daily_cap 1)', :cap, :'monday'),
          'a capped message says why');
SELECT matches((SELECT last_error FROM prm.outbound_message WHERE id = :c4), '^weekly cap: 2 promotional messages already go to patient \d+ in the week of ' || :'monday', 'the weekly cap says why');
SELECT is((SELECT count(*)::int FROM prm.event WHERE kind = 'message_capped' AND entity_id IN (:c2, :c4)), 2, 'each capped message is an event');
SELECT is((SELECT count(*)::int FROM prm.conversation_message WHERE outbound_message_id IN (:c2, :c4)), 0, 'a capped message is not threaded as sent');
SELECT is((SELECT count(*)::int FROM prm.patient_communications(:org, :cap, status => 'capped')), 2, 'capped messages are listed with their reason');
SELECT count(prm.schedule_message(:org, :cap, 'safety', 'email',
                                  prm.local_to_utc(:'monday'::date + time '12:00', 'America/New_York') + g * interval '1 minute'))
  FROM generate_series(1, 4) g \gset
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE patient_id = :cap AND kind = 'safety' AND status = 'queued'), 4,
          'exempt messages are never capped');
SELECT lives_ok(format('SELECT prm.cancel_message(%s, %s)', :org, :c1), 'the Monday message is cancelled');
SELECT is(pg_temp.status_of(prm.schedule_message(:org, :cap, 'welcome', 'email',
             prm.local_to_utc(:'monday'::date + time '15:00', 'America/New_York'))), 'queued', 'a cancelled message no longer counts');

-- 6. consent: required for promotional messages on every channel, and for any e-mail
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"consent_required": "fax:promotional"}')$$, :org), '22023', NULL, 'consent_required: an unknown channel');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"consent_required": "email:marketing"}')$$, :org), '22023', NULL, 'consent_required: an unknown purpose');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"consent_required": "email"}')$$, :org), '22023', NULL, 'consent_required: a pair without a purpose');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"consent_required": "email:*,"}')$$, :org), '22023', NULL, 'consent_required: a trailing comma');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"promotional_daily_cap": -1}')$$, :org), '22023', NULL, 'promotional_daily_cap: negative');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"promotional_weekly_cap": 100000}')$$, :org), '22023', NULL, 'promotional_weekly_cap: absurd');
SELECT is(prm.configure(:org, '{"consent_required": "*:promotional,email:*", "promotional_daily_cap": 10, "promotional_weekly_cap": 50}') ->> 'consent_required',
          '*:promotional,email:*', 'consent required for promotional messages and any e-mail');
SELECT prm.schedule_message(:org, :con, 'welcome', 'sms') AS k1 \gset
SELECT results_eq(format('SELECT status, last_error FROM prm.outbound_message WHERE id = %s', :k1),
                  format($$VALUES ('refused'::text, 'no consent: the organization requires consent for promotional messages on sms (consent_required) and patient %s has given none'::text)$$, :con),
                  'without consent: refused, with the reason');
SELECT is(pg_temp.status_of(prm.schedule_message(:org, :con, 'safety', 'sms')), 'queued', 'an exempt SMS needs no consent here');
SELECT is(pg_temp.status_of(prm.schedule_message(:org, :con, 'safety', 'email')), 'refused', 'no e-mail at all without e-mail consent');
SELECT is(pg_temp.status_of(prm.enqueue_message(:org, 'email', 'con@example.org', 'Your invoice', :con)), 'refused',
          'enqueue_message to a patient passes the same check (the one place)');
SELECT prm.set_consent(:org, :con, 'sms', 'promotional', true, 'written', 'signed form 12') AS given \gset
SELECT is(pg_temp.status_of(prm.schedule_message(:org, :con, 'welcome', 'sms')), 'queued', 'with consent: queued');
SELECT is(pg_temp.status_of(prm.schedule_message(:org, :con, 'welcome', 'whatsapp')), 'refused', 'consent is per channel');
SELECT prm.set_consent(:org, :con, 'sms', 'promotional', false, 'sms') AS withdrawn \gset
SELECT prm.schedule_message(:org, :con, 'welcome', 'sms', now() + interval '1 day') AS k2 \gset
SELECT matches((SELECT status || ': ' || last_error FROM prm.outbound_message WHERE id = :k2),
               '^refused: no consent: patient \d+ withdrew consent for promotional messages on sms at ', 'withdrawn: refused again, when it was withdrawn');
SELECT results_eq(format('SELECT granted, method, recorded_by, note FROM prm.patient_consent WHERE patient_id = %s ORDER BY id', :con),
                  $$VALUES (true, 'written'::text, 'postgres'::text, 'signed form 12'::text), (false, 'sms', 'postgres', NULL)$$,
                  'the history keeps both decisions: how, by whom, the note');
SELECT results_eq(format('SELECT channel, purpose, granted, consent_id FROM prm.patient_consents WHERE patient_id = %s', :con),
                  format($$VALUES ('sms'::text, 'promotional'::text, false, %s::bigint)$$, :withdrawn), 'the view shows the decision in force');
SELECT is((SELECT count(*)::int FROM prm.event WHERE kind IN ('consent_given', 'consent_withdrawn') AND entity_id = :con), 2, 'each decision is an event');
SELECT prm.set_consent(:org, :con, 'email', 'exempt', true, 'electronic', NULL, now() - interval '3 days') AS given_mail \gset
SELECT is((SELECT decided_at FROM prm.patient_consent WHERE id = :given_mail), now() - interval '3 days', 'when it was given is kept');
SELECT is(pg_temp.status_of(prm.schedule_message(:org, :con, 'safety', 'email')), 'queued', 'exempt e-mail with e-mail consent: queued');
-- bad input
SELECT throws_ok(format($$SELECT prm.set_consent(NULL, %s, 'sms', 'promotional', true)$$, :con), '22004', NULL, 'set_consent: NULL org_id');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, NULL, 'sms', 'promotional', true)$$, :org), '22004', NULL, 'set_consent: NULL patient_id');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, NULL, 'promotional', true)$$, :org, :con), '22004', NULL, 'set_consent: NULL channel');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', NULL, true)$$, :org, :con), '22004', NULL, 'set_consent: NULL purpose');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', NULL)$$, :org, :con), '22004', NULL, 'set_consent: NULL granted');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true, NULL)$$, :org, :con), '22004', NULL, 'set_consent: NULL method');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'fax', 'promotional', true)$$, :org, :con), '22023', NULL, 'set_consent: an unknown channel');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'marketing', true)$$, :org, :con), '22023', NULL, 'set_consent: an unknown purpose');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true, 'telepathy')$$, :org, :con), '22023', NULL, 'set_consent: an unknown method');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true, 'erasure')$$, :org, :con), '22023', NULL, 'set_consent: erasure is prm''s own method');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true, 'other', %L)$$, :org, :con, repeat('n', 501)), '22001', NULL, 'set_consent: an oversized note');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true, 'other', NULL, now() + interval '1 day')$$, :org, :con), '22023', NULL, 'set_consent: a decision in the future');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true, 'other', NULL, '1800-01-01')$$, :org, :con), '22023', NULL, 'set_consent: an absurd time');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true, 'other', NULL, '-infinity')$$, :org, :con), '22008', NULL, 'set_consent: an infinite time');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, 999999, 'sms', 'promotional', true)$$, :org), 'P0002', NULL, 'set_consent: an unknown patient');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true)$$, :org, :bob), 'P0002', NULL, 'set_consent: another organization''s patient');
SELECT is(pg_temp.note_of(prm.set_consent(:org, :con, 'push', 'promotional', true, 'app', 'x''); DROP TABLE prm.patient; --')),
          'x''); DROP TABLE prm.patient; --', 'an injection string in a note is data');
SELECT is((SELECT count(*)::int FROM prm.patient_consent WHERE patient_id = :con), 4, 'refused calls recorded nothing');

-- 7. a patient's communications, both ways, filtered and keyset-paged
SELECT prm.handle_inbound_sms('+15558090000', '+15558091004', 'Thanks, see you', 'SMcomms1') IS NOT NULL AS ok \gset
SELECT results_eq(format($$SELECT direction, status, body FROM prm.patient_communications(%s, %s, status => 'received')$$, :org, :con),
                  $$VALUES ('inbound'::text, 'received'::text, 'Thanks, see you'::text)$$, 'inbound messages are listed too');
SELECT is((SELECT count(*)::int FROM prm.patient_communications(:org, :con, page_size => 1000)),
          (SELECT count(*)::int FROM prm.outbound_message WHERE patient_id = :con) + 1, 'every message of the patient, out and in');
SELECT is((SELECT bool_and(channel = 'email') FROM prm.patient_communications(:org, :con, channel => 'email', page_size => 1000)), true, 'filtered by channel');
SELECT is((SELECT count(*)::int FROM prm.patient_communications(:org, :con, channel => 'email', page_size => 1000)), 3, 'and all of that channel');
SELECT is((SELECT count(*)::int FROM prm.patient_communications(:org, :con, page_size => 1000, status => 'refused')), 5, 'filtered by status');
SELECT is((SELECT count(*)::int FROM prm.patient_communications(:org, :con, page_size => 1000, since => now() + interval '1 hour')), 1, 'filtered by period: the one due tomorrow');
SELECT is((SELECT count(*)::int FROM prm.patient_communications(:org, :con, page_size => 1000, until => now() + interval '1 hour')),
          (SELECT count(*)::int FROM prm.patient_communications(:org, :con, page_size => 1000)) - 1, 'until excludes it');
SELECT cursor AS page1_last FROM prm.patient_communications(:org, :con, page_size => 3) OFFSET 2 \gset
SELECT is(ARRAY(SELECT message_id FROM prm.patient_communications(:org, :con, page_size => 3)) ||
          ARRAY(SELECT message_id FROM prm.patient_communications(:org, :con, page_size => 1000, after => :'page1_last')),
          ARRAY(SELECT message_id FROM prm.patient_communications(:org, :con, page_size => 1000)),
          'page after page: every row once, newest first');
SELECT is((SELECT at FROM prm.patient_communications(:org, :con, page_size => 1)), (SELECT max(at) FROM prm.patient_communications(:org, :con, page_size => 1000)), 'newest first');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s, after => 'garbage')$$, :org, :con), '22023', NULL, 'a malformed cursor');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s, after => '1:7:1')$$, :org, :con), '22023', NULL, 'a cursor with a bad direction');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s, page_size => 0)$$, :org, :con), '22023', NULL, 'page_size 0');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s, page_size => 1001)$$, :org, :con), '22023', NULL, 'page_size over 1000');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s, page_size => NULL)$$, :org, :con), '22004', NULL, 'page_size NULL');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s, status => 'lost')$$, :org, :con), '22023', NULL, 'an unknown status');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s, 'pigeon')$$, :org, :con), '22023', NULL, 'an unknown channel');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s, since => now(), until => now() - interval '1 day')$$, :org, :con), '22023', NULL, 'since after until');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s, since => 'infinity')$$, :org, :con), '22008', NULL, 'an infinite period');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s)$$, :org, :bob), 'P0002', NULL, 'another organization''s patient');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(NULL, %s)$$, :con), '22004', NULL, 'NULL org_id');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, NULL)$$, :org), '22004', NULL, 'NULL patient_id');

-- 8. export and erasure
SELECT is(jsonb_array_length(prm.export_patient(:org, :con) -> 'consents'), 4, 'the export holds the consent history');
SELECT is(prm.erase_patient(:org, :con) ->> 'consents_withdrawn', '2', 'erasure withdraws every consent in force');
SELECT is((SELECT bool_and(NOT granted) FROM prm.patient_consents WHERE patient_id = :con), true, 'an erased patient has consented to nothing');
SELECT is((SELECT count(*)::int FROM prm.patient_consent WHERE patient_id = :con AND note IS NOT NULL AND note <> '[erased]'), 0, 'notes are blanked');
SELECT is((SELECT count(*)::int FROM prm.patient_consent WHERE patient_id = :con AND method = 'erasure'), 2, 'the history shows the erasure');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true)$$, :org, :con), '55000', NULL, 'an erased patient can give no consent');
SELECT is(pg_temp.status_of(prm.schedule_message(:org, :con, 'safety', 'push')), 'refused', 'an erased patient gets no message');

-- 9. another organization's roles, rows and ids
SELECT prm.set_template(:org_b, 'b_news', 'B news') IS NOT NULL AS ok \gset
SELECT prm.set_consent(:org_b, :bob, 'sms', 'promotional', true) IS NOT NULL AS ok \gset
SET LOCAL ROLE regress_comms_other;
SELECT is((SELECT count(*)::int FROM prm.message_kind WHERE org_id = :org), 0, 'B''s admin reads none of A''s kinds');
SELECT is((SELECT count(*)::int FROM prm.patient_consent WHERE org_id = :org), 0, 'B''s admin reads none of A''s consent history');
SELECT is((SELECT count(*)::int FROM prm.patient_consents WHERE org_id = :org), 0, 'nor A''s consents in force');
SELECT is((SELECT count(*)::int FROM prm.patient_consents WHERE org_id = :org_b), 1, 'but its own');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'news', 'x')$$, :org), '42501', NULL, 'B''s admin sets no template of A');
SELECT throws_ok(format($$SELECT prm.message_class(%s, 'welcome')$$, :org), '42501', NULL, 'nor reads A''s classes');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome')$$, :org, :mia), '42501', NULL, 'nor schedules A''s messages');
SELECT throws_ok(format($$SELECT prm.schedule_message_local(%s, %s, 'welcome', 'email', '09:00')$$, :org, :mia), '42501', NULL, 'nor at a local time');
SELECT throws_ok(format($$SELECT prm.cancel_message(%s, %s)$$, :org, :m_push), '42501', NULL, 'nor cancels them');
SELECT throws_ok(format($$SELECT prm.cancel_message(%s, %s)$$, :org_b, :m_push), 'P0002', NULL, 'nor, through its own organization, A''s message');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s)$$, :org, :mia), '42501', NULL, 'nor lists A''s communications');
SELECT throws_ok(format($$SELECT * FROM prm.patient_communications(%s, %s)$$, :org_b, :mia), 'P0002', NULL, 'nor A''s patient through its own organization');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true)$$, :org, :mia), '42501', NULL, 'nor records A''s consents');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true)$$, :org_b, :mia), 'P0002', NULL, 'nor A''s patient''s consent through its own organization');
RESET ROLE;
SET LOCAL ROLE regress_comms_ro;
SELECT is((SELECT count(*)::int FROM prm.patient_communications(:org, :mia)) > 0, true, 'readonly lists communications');
SELECT is((SELECT count(*)::int FROM prm.patient_consents WHERE org_id = :org_b), 0, 'readonly of A reads none of B''s consents');
SELECT throws_ok(format($$SELECT prm.schedule_message(%s, %s, 'welcome')$$, :org, :mia), '42501', NULL, 'readonly schedules nothing');
SELECT throws_ok(format($$SELECT prm.set_consent(%s, %s, 'sms', 'promotional', true)$$, :org, :mia), '42501', NULL, 'readonly records no consent');
RESET ROLE;
SET LOCAL ROLE regress_comms_staff;
SELECT is(pg_temp.status_of(prm.schedule_message(:org, :mia, 'safety', 'push')), 'queued', 'staff schedules');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'news', 'x')$$, :org), '42501', NULL, 'staff sets no template (admin)');
SELECT is(prm.set_consent(:org, :mia, 'sms', 'promotional', true, 'verbal') > 0, true, 'staff records a consent');
SELECT is((SELECT recorded_by FROM prm.patient_consents WHERE patient_id = :mia AND channel = 'sms'), 'regress_comms_staff', 'recorded by the calling role');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
