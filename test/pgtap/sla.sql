-- SLA clocks: business hours and holidays (validated precisely), due times
-- across business-hour boundaries and daylight-saving changes in the
-- organization's time zone, pause and resume, priority resets, breaches
-- and auto-close raised by the deadline step, and tenancy of the policies.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(59);

SELECT prm.create_organization('SLA Berlin', 'Europe/Berlin', '+4930555000') AS org \gset
SELECT prm.create_organization('SLA Round the clock', 'UTC', '+15558080001') AS org24 \gset
SELECT prm.create_organization('SLA Other', 'UTC', '+15558080002') AS org_b \gset

-- business hours: bad input
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''[]'')', :org), '22023', 'business hours must be a JSON object, not array', 'hours: not an object');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{"monday": [["09:00", "17:00"]]}'')', :org), '22023', 'unknown day "monday" in business hours', 'hours: unknown day');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{"mon": [["9:00", "17:00"]]}'')', :org), '22023', 'business hours of "mon": "9:00" is not a time', 'hours: malformed time');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{"mon": [["09:00", "24:30"]]}'')', :org), '22023', NULL, 'hours: out of range');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{"mon": [["24:00", "24:00"]]}'')', :org), '22023', NULL, 'hours: 24:00 cannot start');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{"mon": [["17:00", "09:00"]]}'')', :org), '22023', NULL, 'hours: end before start');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{"mon": [["09:00", "13:00"], ["12:00", "17:00"]]}'')', :org), '22023', NULL, 'hours: overlapping ranges');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{"mon": [["09:00"]]}'')', :org), '22023', NULL, 'hours: not a pair');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{"mon": [[9, 17]]}'')', :org), '22023', NULL, 'hours: numbers, not strings');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{"mon": "09:00-17:00"}'')', :org), '22023', NULL, 'hours: a day is an array');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, ''{}'')', :org), '22023', 'business hours must have at least one range', 'hours: never open');
SELECT throws_ok('SELECT prm.set_business_hours(NULL, ''{}'')', '22004', NULL, 'hours: NULL org');
SELECT lives_ok(format($$SELECT prm.set_business_hours(%s, '{"mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]],
    "wed": [["09:00", "17:00"]], "thu": [["09:00", "17:00"]], "fri": [["09:00", "17:00"]], "sat": []}')$$, :org),
                'hours: Monday to Friday 9 to 5');

-- SLA policies and holidays: bad input
SELECT throws_ok(format('SELECT prm.set_sla_policy(%s, ''soon'', ''1 hour'', ''1 day'')', :org), '22023', NULL, 'policy: unknown priority');
SELECT throws_ok(format('SELECT prm.set_sla_policy(%s, NULL, ''1 hour'', ''1 day'')', :org), '22004', NULL, 'policy: NULL priority');
SELECT throws_ok(format('SELECT prm.set_sla_policy(%s, ''high'', ''-1 hour'', ''1 day'')', :org), '22023', NULL, 'policy: negative interval');
SELECT throws_ok(format('SELECT prm.set_sla_policy(%s, ''high'', ''0'', ''1 day'')', :org), '22023', NULL, 'policy: zero interval');
SELECT throws_ok(format('SELECT prm.set_sla_policy(%s, ''high'', ''1 hour'', ''1 month'')', :org), '22023', NULL, 'policy: months');
SELECT throws_ok(format('SELECT prm.add_holiday(%s, NULL)', :org), '22004', NULL, 'holiday: NULL day');
SELECT throws_ok(format('SELECT prm.add_holiday(%s, ''infinity'')', :org), '22023', NULL, 'holiday: infinite day');
SELECT throws_ok(format('SELECT prm.add_holiday(%s, ''2031-01-01'', %L)', :org, repeat('h', 201)), '22001', NULL, 'holiday: oversized name');
SELECT throws_ok(format('SELECT prm.add_business_time(%s, now(), ''-1 hour'')', :org), '22023', NULL, 'add_business_time: negative');

-- business-hour arithmetic in Europe/Berlin
SELECT is(prm.add_business_time(:org, '2031-03-07 16:30 Europe/Berlin', '1 hour'), '2031-03-10 09:30 Europe/Berlin'::timestamptz,
          'Friday 16:30 plus 1 business hour is Monday 09:30');
SELECT is(prm.add_business_time(:org, '2031-03-10 08:00 Europe/Berlin', '8 hours'), '2031-03-10 17:00 Europe/Berlin'::timestamptz,
          'a start before opening counts from opening; a target ending at closing ends then');
SELECT is(prm.add_business_time(:org, '2031-03-10 16:59 Europe/Berlin', '2 minutes'), '2031-03-11 09:01 Europe/Berlin'::timestamptz,
          'the remainder carries over night');
SELECT prm.add_holiday(:org, '2031-03-10', 'Closed; DROP TABLE prm.holiday; --');
SELECT is((SELECT name FROM prm.holiday WHERE org_id = :org), 'Closed; DROP TABLE prm.holiday; --', 'holiday: name stored verbatim');
SELECT is(prm.add_business_time(:org, '2031-03-07 16:30 Europe/Berlin', '1 hour'), '2031-03-11 09:30 Europe/Berlin'::timestamptz,
          'a holiday Monday moves the due time to Tuesday');
SELECT is(prm.business_time_between(:org, '2031-03-07 16:30 Europe/Berlin', '2031-03-11 09:30 Europe/Berlin'), '01:00:00'::interval,
          'business_time_between is the inverse of add_business_time');
-- a night shift on Sundays only, to cross the daylight-saving changes
SELECT prm.set_business_hours(:org, '{"sun": [["01:00", "04:00"]]}');
SELECT is(prm.add_business_time(:org, '2031-03-08 12:00 Europe/Berlin', '30 minutes'), '2031-03-09 01:30 Europe/Berlin'::timestamptz,
          'a Saturday start waits for the next range (Sunday 01:00)');
-- daylight saving: Sunday 30 March 2031 loses 02:00-03:00, Sunday 26 October 2031 repeats it
SELECT is(prm.business_time_between(:org, '2031-03-30 00:00 Europe/Berlin', '2031-03-30 12:00 Europe/Berlin'), '02:00:00'::interval,
          'DST spring: the 01:00-04:00 shift is 2 hours long');
SELECT is(prm.add_business_time(:org, '2031-03-30 00:00 Europe/Berlin', '90 minutes'), '2031-03-30 03:30 Europe/Berlin'::timestamptz,
          'DST spring: 90 minutes from opening at 01:00 is 03:30 summer time');
SELECT is(prm.business_time_between(:org, '2031-10-26 00:00 Europe/Berlin', '2031-10-26 12:00 Europe/Berlin'), '04:00:00'::interval,
          'DST autumn: the 01:00-04:00 shift is 4 hours long');
SELECT is(prm.add_business_time(:org24, '2031-03-07 16:30 UTC', '1 hour'), '2031-03-07 17:30 UTC'::timestamptz,
          'no business hours: around the clock');
-- bounded: an organization closed for years
SELECT prm.set_business_hours(:org_b, '{"mon": [["09:00", "10:00"]]}');
INSERT INTO prm.holiday (org_id, day) SELECT :org_b, d::date FROM generate_series(date '2031-01-01', date '2034-12-31', '1 day') d;
SELECT throws_ok(format('SELECT prm.add_business_time(%s, ''2031-01-01'', ''1 hour'')', :org_b), '54000', NULL,
                 'a calendar without business time stops after a bounded walk');
DELETE FROM prm.holiday WHERE org_id = :org_b;

-- tickets: due times, pause and resume, priority resets
SELECT prm.set_sla_policy(:org24, 'normal', '1 hour', '8 hours');
SELECT prm.set_sla_policy(:org24, 'urgent', '15 minutes', '2 hours');
SELECT prm.add_staff(:org24, 'Sam') AS sam \gset
SELECT prm.open_ticket(:org24, 'Clock') AS t \gset
SELECT is((SELECT ARRAY[first_reply_due_at, resolution_due_at, sla_next_due_at] FROM prm.ticket WHERE id = :t),
          ARRAY[now() + interval '1 hour', now() + interval '8 hours', now() + interval '1 hour'], 'open_ticket: due times from the policy');
SELECT prm.open_ticket(:org, 'Berlin') AS tberlin \gset
SELECT is((SELECT first_reply_due_at FROM prm.ticket WHERE id = :tberlin), NULL, 'no policy for a priority: no due time');
SELECT prm.set_sla_policy(:org, 'high', '1 hour', NULL);
SELECT prm.set_ticket_priority(:org, :tberlin, 'high');
SELECT is((SELECT first_reply_due_at FROM prm.ticket WHERE id = :tberlin), prm.add_business_time(:org, now(), '1 hour'),
          'a priority change restarts the clocks in business hours');
-- as if 30 minutes had passed
UPDATE prm.ticket SET first_reply_due_at = now() + interval '30 minutes' WHERE id = :t;
SELECT prm.set_ticket_status(:org24, :t, 'pending');
SELECT is((SELECT ROW(first_reply_due_at, first_reply_left, resolution_left, sla_next_due_at)::text FROM prm.ticket WHERE id = :t),
          ROW(NULL::timestamptz, interval '30 minutes', interval '8 hours', NULL::timestamptz)::text, 'pending pauses: the time left is kept');
SELECT prm.set_ticket_status(:org24, :t, 'on_hold');
SELECT is((SELECT first_reply_left FROM prm.ticket WHERE id = :t), interval '30 minutes', 'on_hold keeps it paused');
SELECT prm.set_ticket_status(:org24, :t, 'open');
SELECT is((SELECT ARRAY[first_reply_due_at, resolution_due_at] FROM prm.ticket WHERE id = :t),
          ARRAY[now() + interval '30 minutes', now() + interval '8 hours'], 'open resumes from now with the time left');
SELECT prm.set_ticket_priority(:org24, :t, 'urgent');
SELECT is((SELECT first_reply_due_at FROM prm.ticket WHERE id = :t), now() + interval '15 minutes', 'urgent: 15 minutes');
SELECT ok(prm.next_deadline() <= now() + interval '15 minutes', 'the worker''s deadline knows the ticket');

-- breaches by the deadline step, once per target
UPDATE prm.ticket SET first_reply_due_at = now() - interval '1 minute' WHERE id = :t;
SELECT ok(prm.next_deadline() <= now(), 'a due ticket makes the deadline due');
SELECT ok((prm.run_due_jobs() ->> 'ticket_deadlines')::int >= 1, 'run_due_jobs runs the ticket step');
SELECT is((SELECT payload ->> 'target' FROM prm.event WHERE entity = 'ticket' AND entity_id = :t AND kind = 'ticket_sla_breached'),
          'first_reply', 'the first-reply breach is an event');
SELECT ok((SELECT first_reply_breached_at IS NOT NULL AND sla_next_due_at = resolution_due_at FROM prm.ticket WHERE id = :t),
          'the breached clock no longer drives the deadline');
UPDATE prm.ticket SET resolution_due_at = now() - interval '1 minute' WHERE id = :t;
SELECT prm.run_due_jobs();
SELECT prm.run_due_jobs();
SELECT is((SELECT array_agg(payload ->> 'target' ORDER BY id) FROM prm.event WHERE entity_id = :t AND kind = 'ticket_sla_breached'),
          ARRAY['first_reply', 'resolution'], 'each target breaches once');
SELECT is((SELECT sla_next_due_at FROM prm.ticket WHERE id = :t), NULL, 'nothing left to wait for');
-- a first reply stops its clock: no breach
SELECT prm.open_ticket(:org24, 'Answered') AS t2 \gset
SELECT prm.add_ticket_comment(:org24, :t2, 'internal only');
UPDATE prm.ticket SET first_reply_due_at = now() - interval '1 minute' WHERE id = :t2;
SELECT prm.add_patient(:org24, 'Pat', 'Reply', '+15558081001') AS pat \gset
UPDATE prm.ticket SET patient_id = :pat WHERE id = :t2;
SELECT prm.add_ticket_comment(:org24, :t2, 'We are on it', true);
SELECT prm.run_due_jobs();
SELECT is((SELECT count(*)::int FROM prm.event WHERE entity_id = :t2 AND kind = 'ticket_sla_breached'), 0, 'a first reply in time: no breach');

-- auto-close of a solved ticket
SELECT prm.set_ticket_status(:org24, :t2, 'solved');
SELECT is((SELECT sla_next_due_at FROM prm.ticket WHERE id = :t2), now() + interval '4 days', 'solved: the deadline is the auto-close');
UPDATE prm.ticket SET autoclose_at = now() - interval '1 second' WHERE id = :t2;
SELECT prm.run_due_jobs();
SELECT is((SELECT status FROM prm.ticket WHERE id = :t2), 'closed', 'a solved ticket closes by itself');
SELECT ok(EXISTS (SELECT 1 FROM prm.event WHERE entity_id = :t2 AND kind = 'ticket_status_changed' AND payload ->> 'reason' = 'auto_close'),
          'the auto-close is an event');

-- tenancy
CREATE ROLE regress_sla_b;
SELECT prm.grant_access('regress_sla_b', :org_b, 'admin');
SET LOCAL ROLE regress_sla_b;
SELECT is((SELECT count(*)::int FROM prm.sla_policy WHERE org_id = :org24), 0, 'tenancy: B reads none of A''s policies');
SELECT is((SELECT count(*)::int FROM prm.business_hours WHERE org_id = :org), 0, 'tenancy: B reads none of A''s hours');
SELECT is((SELECT count(*)::int FROM prm.holiday WHERE org_id = :org), 0, 'tenancy: B reads none of A''s holidays');
SELECT throws_ok(format('SELECT prm.set_sla_policy(%s, ''low'', ''1 hour'', NULL)', :org), '42501', NULL, 'tenancy: B cannot set A''s policy');
SELECT throws_ok(format('SELECT prm.set_business_hours(%s, NULL)', :org), '42501', NULL, 'tenancy: B cannot set A''s hours');
SELECT throws_ok(format('SELECT prm.add_holiday(%s, ''2031-12-25'')', :org), '42501', NULL, 'tenancy: B cannot add A''s holidays');
SELECT throws_ok(format('SELECT prm.add_business_time(%s, now(), ''1 hour'')', :org), '42501', NULL, 'tenancy: B cannot read A''s calendar');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
