-- Edges of time: every function of prm that takes a timestamp or an
-- interval, fed 'infinity', '-infinity', the ends of the timestamp range
-- ('294276-12-31', '4713-01-01 BC'), months, huge and negative intervals.
-- Each gives a clean error or the right value; never a value made up by
-- int64 arithmetic that wrapped around.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(69);
SET LOCAL timezone = 'UTC';
-- 'infinity' is an interval from PostgreSQL 17 on; before, it is malformed
SELECT CASE WHEN current_setting('server_version_num')::int >= 170000 THEN '22023' ELSE '22007' END AS inf_iv \gset

-- prm.priority_score, default weights ------------------------------------
SELECT throws_ok($$SELECT prm.priority_score(false, 0, 'infinity', '2031-01-01', '2031-01-01')$$, '22008',
                 'current_appointment_at must be a finite time, not infinity', 'score: appointment at infinity');
SELECT throws_ok($$SELECT prm.priority_score(false, 0, '-infinity', '2031-01-01', '2031-01-01')$$, '22008', NULL, 'score: appointment at -infinity');
SELECT throws_ok($$SELECT prm.priority_score(false, 0, NULL, 'infinity', '2031-01-01')$$, '22008', NULL, 'score: joined at infinity');
SELECT throws_ok($$SELECT prm.priority_score(false, 0, NULL, '-infinity', '2031-01-01')$$, '22008',
                 'joined_at must be a finite time, not -infinity', 'score: joined at -infinity');
SELECT throws_ok($$SELECT prm.priority_score(false, 0, NULL, '2031-01-01', 'infinity')$$, '22008', NULL, 'score: as of infinity');
SELECT throws_ok($$SELECT prm.priority_score(false, 0, NULL, '2031-01-01', '-infinity')$$, '22008', NULL, 'score: as of -infinity');
-- the two ends of the range are 292,000 years apart: more microseconds than int64 holds
SELECT is(prm.priority_score(false, 0, '294276-12-31', '4713-01-01 BC', '4713-01-01 BC'), 20, 'score: appointment at the end of time, as of its start: full wait, no seniority');
SELECT is(prm.priority_score(false, 0, '4713-01-01 BC', '294276-12-31', '294276-12-31'), 0, 'score: appointment long past, joined just now: nothing');
SELECT is(prm.priority_score(false, 0, '4713-01-01 BC', '4713-01-01 BC', '294276-12-31'), 10, 'score: on the list since 4713 BC: full seniority');
SELECT is(prm.priority_score(false, 0, '294276-12-31', '294276-12-31', '4713-01-01 BC'), 20, 'score: joined in the far future: no seniority');
SELECT is(prm.priority_score(true, 40, NULL, '4713-01-01 BC', '294276-12-31'), 100, 'score: every part full at the ends of the range');
SELECT is(prm.priority_score(false, 0, NULL, '2031-01-01', timestamptz '2031-01-01' + interval '1 month'), 23, 'score: a month on the list is 31 calendar days here: 20 + floor(10 * 31 / 90)');
SELECT is(prm.priority_score(false, 0, timestamptz '2031-01-01' + interval '1 month', '2031-01-01', '2031-01-01'), 10, 'score: an appointment a month away: floor(20 * 31 / 60)');
SELECT is(prm.priority_score(false, 0, timestamptz '2031-01-01' - interval '1 second', '2031-01-01', '2031-01-01'), 0, 'score: an appointment a second ago: no wait points');
SELECT is(prm.priority_score(false, 0, NULL, timestamptz '2031-01-01' + interval '1 second', '2031-01-01'), 20, 'score: joined a second from now: no seniority');

-- prm.priority_score, explicit weights -----------------------------------
SELECT throws_ok($$SELECT prm.priority_score(false, 0, 'infinity', '2031-01-01', '2031-01-01', 30, 20, 10, 60, 90)$$, '22008', NULL, 'weighted score: appointment at infinity');
SELECT throws_ok($$SELECT prm.priority_score(false, 0, NULL, '-infinity', '2031-01-01', 30, 20, 10, 60, 90)$$, '22008', NULL, 'weighted score: joined at -infinity');
SELECT throws_ok($$SELECT prm.priority_score(false, 0, NULL, '2031-01-01', 'infinity', 30, 20, 10, 60, 90)$$, '22008', NULL, 'weighted score: as of infinity');
SELECT is(prm.priority_score(false, 0, '294276-12-31', '4713-01-01 BC', '4713-01-01 BC', 30, 20, 10, 60, 90), 20, 'weighted score: the ends of the range');
SELECT is(prm.priority_score(false, 0, '4713-01-01 BC', '4713-01-01 BC', '294276-12-31', 30, 20, 10, 60, 90), 10, 'weighted score: the ends of the range, the other way');
SELECT throws_ok($$SELECT prm.priority_score(true, 40, NULL, '2031-01-01', '2031-01-01', 2147483647, 1, 0, 1, 1)$$, '22003',
                 'priority score out of range', 'weighted score: weights that overflow an int');
SELECT ok(obj_description('prm.priority_score(boolean,int,timestamptz,timestamptz,timestamptz)'::regprocedure, 'pg_proc') LIKE '%22008 for an infinite timestamp%',
          'the COMMENT says what infinity does');

-- a clinic to run the engine with -----------------------------------------
SELECT prm.create_organization('Edge Clinic', 'UTC', '+15558080000') AS org \gset
SELECT prm.add_provider(:org, 'Dr Edge') AS dr \gset
SELECT prm.add_patient(:org, 'Eve', 'Edge', '+15558081001') AS pat \gset
SELECT prm.add_patient(:org, 'Ed', 'Edge', '+15558081002') AS pat2 \gset

-- prm.configure: interval settings ----------------------------------------
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"offer_hold": "infinity"}')$$, :org), :'inf_iv', NULL, 'configure: offer_hold infinity');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"offer_hold": "-infinity"}')$$, :org), :'inf_iv', NULL, 'configure: offer_hold -infinity');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"offer_hold": "1 month"}')$$, :org), '22023',
                 'invalid value for setting "offer_hold": "1 month"', 'configure: a month is 30 days, longer than a hold may be');
SELECT is(prm.configure(:org, '{"late_accept_window": "1 month"}') ->> 'late_accept_window', '30 days', 'configure: a month counts 30 days');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"late_accept_window": "100000000 years"}')$$, :org), '22023', NULL, 'configure: 100000000 years');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"recent_offer_window": "-100000000 years"}')$$, :org), '22023', NULL, 'configure: -100000000 years');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"first_batch_delay": "-1 second"}')$$, :org), '22023', NULL, 'configure: -1 second');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"min_notice": "213503983 days"}')$$, :org), '22023', NULL, 'configure: more days than int64 microseconds hold');
SELECT is(prm.configure(:org, '{"late_accept_window": null}') ->> 'late_accept_window', '1 day', 'configure: back to the default');

-- prm.claim_messages: the lease ----------------------------------------------
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1, 'infinity')$$, :'inf_iv', NULL, 'claim: lease infinity');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1, '-infinity')$$, :'inf_iv', NULL, 'claim: lease -infinity');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1, '1 month')$$, '22023', 'lease is out of range', 'claim: lease of a month');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1, '100000000 years')$$, '22023', 'lease is out of range', 'claim: lease of 100000000 years');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1, '-1 second')$$, '22023', 'lease is out of range', 'claim: negative lease');
-- 213503983 days is 2^64 + 57490448384 microseconds: wrapped, this lease was 60 seconds
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1, '213503983 days -57430.448384 seconds')$$, '22023', 'lease is out of range',
                 'claim: a lease of 584,000 years is not 60 seconds');

-- prm.enqueue_message: not_before ------------------------------------------
SELECT throws_ok(format($$SELECT prm.enqueue_message(%s, 'sms', '+15558081001', 'hi', %s, NULL, 'infinity')$$, :org, :pat), '22008',
                 'not_before must be a finite time, not infinity', 'enqueue: not_before infinity');
SELECT throws_ok(format($$SELECT prm.enqueue_message(%s, 'email', 'a@example.org', 'hi', NULL, NULL, '-infinity')$$, :org), '22008', NULL,
                 'enqueue: not_before -infinity, no patient');
SELECT prm.enqueue_message(:org, 'sms', '+15558081001', 'late', :pat, NULL, '294276-12-31 12:00+00') AS m_late \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_late), '294276-12-31 12:00+00'::timestamptz, 'enqueue: noon of the last day is outside quiet hours: as is');
SELECT throws_ok(format($$SELECT prm.enqueue_message(%s, 'sms', '+15558081001', 'too late', %s, NULL, '294276-12-31 22:00+00')$$, :org, :pat), '22008',
                 'timestamp out of range', 'enqueue: quiet hours would end after the last timestamp');
SELECT prm.enqueue_message(:org, 'sms', '+15558081001', 'early', :pat, NULL, '4713-01-01 BC') AS m_early \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_early), '4713-01-01 08:00+00 BC'::timestamptz, 'enqueue: midnight in 4713 BC is held to 08:00 that day');
SELECT prm.enqueue_message(:org, 'email', 'b@example.org', 'old', NULL, NULL, '4713-01-01 BC') AS m_email \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_email), '4713-01-01 BC'::timestamptz, 'enqueue: an e-mail is not held');
SELECT prm.enqueue_message(:org, 'email', 'c@example.org', 'month', NULL, NULL, now() + interval '1 month') AS m_month \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_month), now() + interval '1 month', 'enqueue: a month from now');
SELECT prm.enqueue_message(:org, 'email', 'd@example.org', 'second', NULL, NULL, now() - interval '1 second') AS m_sec \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :m_sec), now() - interval '1 second', 'enqueue: a second ago is due now');
SELECT is((SELECT count(*)::int FROM prm.claim_messages('email', 10)), 2, 'claim: the e-mails due (4713 BC and a second ago), not the one in a month');

-- prm.mark_message_failed: the retry delay ---------------------------------
SELECT m.id AS m_retry, m.lease_token AS lease FROM prm.outbound_message m WHERE m.id = :m_sec \gset
SELECT lives_ok(format($$SELECT prm.mark_message_failed(%s, 'busy', true, %L)$$, :m_retry, :'lease'), 'retry: a failure');
SELECT ok((SELECT not_before BETWEEN now() + interval '22.5 seconds' AND now() + interval '37.5 seconds' FROM prm.outbound_message WHERE id = :m_retry),
          'retry: 30 seconds +-25% after the first attempt');

-- prm.outreach_performance: since and rebook_window ------------------------
SELECT throws_ok(format($$SELECT prm.outreach_performance(%s, now(), '100000000 years')$$, :org), '22023', NULL, 'outreach: rebook_window 100000000 years');
SELECT throws_ok(format($$SELECT prm.outreach_performance(%s, now(), '213503983 days')$$, :org), '22023',
                 'interval "213503983 days" is out of range', 'outreach: 584,000 years is not 16 hours');
SELECT lives_ok(format($$SELECT prm.outreach_performance(%s, now(), '1 month')$$, :org), 'outreach: a rebook_window of a month');
SELECT throws_ok(format($$SELECT prm.outreach_performance(%s, now(), '-1 second')$$, :org), '22023', NULL, 'outreach: negative rebook_window');
SELECT throws_ok(format($$SELECT prm.outreach_performance(%s, now(), 'infinity')$$, :org), :'inf_iv', NULL, 'outreach: rebook_window infinity');
SELECT is(prm.outreach_performance(:org, 'infinity', '1 month') -> 'campaigns', '[]'::jsonb, 'outreach: nothing was sent after infinity');
SELECT is((prm.outreach_performance(:org, '-infinity', '1 month') #>> '{campaigns,0,messages}')::int, 5, 'outreach: since -infinity counts every message');
SELECT is((prm.outreach_performance(:org, '4713-01-01 BC', '1 month') #>> '{campaigns,0,messages}')::int, 5, 'outreach: since 4713 BC counts every message');
SELECT is(prm.outreach_performance(:org, '294276-12-31', '1 month') -> 'campaigns', '[]'::jsonb, 'outreach: nothing since 294276');

-- the score of a stored entry, through its trigger and explain_priority ----
SELECT prm.book_appointment(:org, :pat2, :dr, '294276-12-30 10:00+00', '294276-12-30 10:30+00') AS far \gset
SELECT prm.join_waitlist(:org, :pat2) AS entry \gset
SELECT is((SELECT priority_score FROM prm.waitlist_entry WHERE id = :entry), 20, 'trigger: an appointment in 294276 earns the full wait');
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,wait,points}')::int, 20, 'explain: the same');
SELECT ok((prm.explain_priority(:org, :entry) #>> '{components,wait,days_to_wait}')::float8 > 1e8, 'explain: over a hundred million days to wait');
SELECT is(prm.explain_priority(:org, :entry) #>> '{recent_offer_penalty,window}', '7 days', 'explain: the window through the one interval conversion');
SELECT is(prm.recalculate_priorities(:org), 0::bigint, 'recalculation agrees with the trigger');

-- prm.set_waitlist_preferences: expires_at is stored as given ---------------
SELECT lives_ok(format($$SELECT prm.set_waitlist_preferences(%s, %s, '{"expires_at": "infinity"}')$$, :org, :entry), 'preferences: never expires');
SELECT is((SELECT expires_at FROM prm.waitlist_entry WHERE id = :entry), 'infinity'::timestamptz, 'preferences: infinity stored');
SELECT lives_ok(format($$SELECT prm.set_waitlist_preferences(%s, %s, '{"expires_at": "294276-12-31"}')$$, :org, :entry), 'preferences: the last day');

-- bookings: infinite times are refused (22023, as since 0.1.0); an appointment across the whole
-- timestamp range is refused (its length used to wrap to a short one)
SELECT throws_ok(format($$SELECT prm.book_appointment(%s, %s, %s, 'infinity', 'infinity')$$, :org, :pat, :dr),
                 '22023', 'appointment times must be finite', 'book_appointment: infinity');
SELECT throws_ok(format($$SELECT prm.book_appointment(%s, %s, %s, '-infinity', '2031-01-01 10:00+00')$$, :org, :pat, :dr),
                 '22023', 'appointment times must be finite', 'book_appointment: -infinity');
SELECT throws_ok(format($$SELECT prm.book_appointment(%s, %s, %s, '4713-01-01 00:00+00 BC', '294276-12-31 00:00+00')$$, :org, :pat, :dr),
                 '22023', 'an appointment cannot last longer than a day', 'book_appointment: the whole range is not a short appointment');
SELECT is((SELECT count(*)::int FROM prm.appointment WHERE org_id = :org AND starts_at < '1000-01-01'), 0, 'and nothing was booked');

SELECT * FROM finish();
ROLLBACK;
