-- Waitlist and priority scoring: the formula, its triggers, recalculation,
-- explanations, and bad input.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(42);

-- the formula, with default weights
SELECT is(prm.priority_score(false, 0, '2031-03-02 00:00+00', '2031-01-01 00:00+00', '2031-01-01 00:00+00'), 20,
          'wait 60 days or more: full 20 wait points, no seniority');
SELECT is(prm.priority_score(true, 40, '2031-01-31 00:00+00', '2030-11-17 00:00+00', '2031-01-01 00:00+00'), 85,
          'urgent 30 + boost 40 + wait 30/60 of 20 (10) + seniority 45/90 of 10 (5)');
SELECT is(prm.priority_score(false, 0, '2030-12-31 00:00+00', '2030-06-01 00:00+00', '2031-01-01 00:00+00'), 10,
          'appointment already due: no wait points; seniority capped at 10');
SELECT is(prm.priority_score(false, 0, '2031-01-02 12:00+00', '2031-01-01 00:00+00', '2031-01-01 00:00+00'), 0,
          'a day and a half to wait is floor(20 * 1.5 / 60) = 0 points');
SELECT is(prm.priority_score(false, 7, '2031-01-16 00:00+00', '2030-12-23 00:00+00', '2031-01-01 00:00+00'), 13,
          'boost 7 + wait 15 days (5) + seniority 9 days (1)');
SELECT is(prm.priority_score(false, 0, '2031-03-02 00:00+00', '2031-01-02 00:00+00', '2031-01-01 00:00+00'), 20,
          'joined in the future counts no seniority');
SELECT ok(prm.priority_score(true, 0, '2040-01-01', '2000-01-01', '2031-01-01') <= 100, 'default score is at most 100');
SELECT is(prm.priority_score(NULL, 0, now(), now(), now()), NULL, 'a NULL input other than the appointment: NULL out');
SELECT is(prm.priority_score(false, 0, NULL, '2030-12-23 00:00+00', '2031-01-01 00:00+00'), 21, 'no appointment at all: full 20 wait points, plus seniority');
SELECT is((SELECT provolatile FROM pg_proc WHERE oid = 'prm.priority_score(boolean,int,timestamptz,timestamptz,timestamptz)'::regprocedure), 'i', 'priority_score is IMMUTABLE');
SELECT throws_ok($$SELECT prm.priority_score(false, 41, now(), now(), now())$$, '22023', 'manual boost 41 is out of range', 'boost above 40 refused, not clamped');
SELECT throws_ok($$SELECT prm.priority_score(false, -1, now(), now(), now())$$, '22023', NULL, 'negative boost refused');
SELECT is(prm.priority_score(false, 0, NULL, '2031-01-01', '2031-01-01', 30, 20, 10, 60, 90), 20, 'no appointment at all: the full wait points');
SELECT is(prm.priority_score(true, 0, NULL, '2031-01-01', '2031-01-01', 50, 10, 10, 60, 90), 60, 'weights apply');
SELECT throws_ok($$SELECT prm.priority_score(false, 0, NULL, now(), now(), 30, 20, 10, 0, 90)$$, '22023', NULL, 'zero full-days refused');

-- entries and their triggers
SELECT prm.create_organization('Score Clinic', 'UTC', '+15558010000') AS org \gset
SELECT prm.create_organization('Other Clinic', 'UTC', '+15558010001') AS other \gset
SELECT prm.add_provider(:org, 'Dr S') AS prov \gset
SELECT prm.add_provider(:other, 'Dr O') AS other_prov \gset
SELECT prm.add_patient(:org, 'Sam', 'S', '+15558011001') AS pat \gset
SELECT prm.add_patient(:other, 'Oli', 'O', '+15558011002') AS other_pat \gset
SELECT prm.join_waitlist(:org, :pat) AS entry \gset
SELECT is((SELECT priority_score FROM prm.waitlist_entry WHERE id = :entry), 20, 'no appointment: 20 on joining');
SELECT is(prm.join_waitlist(:org, :pat, NULL, true, 5), :'entry'::bigint, 'joining again updates the same entry');
SELECT is((SELECT priority_score FROM prm.waitlist_entry WHERE id = :entry), 55, 'urgent and boost applied by the trigger');
SELECT prm.book_appointment(:org, :pat, :prov, now() + interval '6 days 1 minute', now() + interval '6 days 31 minutes') AS appt \gset
SELECT is((SELECT priority_score FROM prm.waitlist_entry WHERE id = :entry), 37, 'booking an appointment in 6 days: wait drops to 2 points');
SELECT ok((SELECT current_appointment_at IS NOT NULL FROM prm.waitlist_entry WHERE id = :entry), 'current appointment recorded');
SELECT prm.cancel_appointment(:org, :appt);
SELECT is((SELECT priority_score FROM prm.waitlist_entry WHERE id = :entry), 55, 'cancelling it restores the full wait points');
SELECT prm.configure(:org, '{"weight_urgent": 50}');
SELECT is(prm.recalculate_priorities(:org), 1::bigint, 'recalculation rescored the entry with the new weight');
SELECT is((SELECT priority_score FROM prm.waitlist_entry WHERE id = :entry), 75, 'urgent now worth 50');
SELECT is(prm.recalculate_priorities(:org), 0::bigint, 'a second recalculation changes nothing');
UPDATE prm.waitlist_entry SET priority_score = 0 WHERE id = :entry;
SELECT is(prm.recalculate_priorities(NULL), 1::bigint, 'recalculation over every organization');

-- explanations
SELECT is((prm.explain_priority(:org, :entry) ->> 'score')::int, 75, 'explain: total');
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,urgent,points}')::int, 50, 'explain: urgent part');
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,wait,points}')::int, 20, 'explain: wait part');
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,manual_boost,points}')::int, 5, 'explain: boost part');
SELECT ok(prm.explain_priority(:org, :entry) ? 'recent_offer_penalty', 'explain: recent offer penalty shown');

-- preferences
SELECT lives_ok(format($$SELECT prm.set_waitlist_preferences(%s, %s, '{"days_of_week": [1, 3, 5], "earliest_time": "08:00", "latest_time": "12:00", "expires_at": "2040-01-01T00:00:00Z"}')$$, :org, :entry), 'preferences set');
SELECT is((SELECT days_of_week FROM prm.waitlist_entry WHERE id = :entry), ARRAY[1, 3, 5], 'days stored');
SELECT throws_ok(format($$SELECT prm.set_waitlist_preferences(%s, %s, '{"days_of_week": [0, 8]}')$$, :org, :entry), '22023', NULL, 'days outside 1..7 refused');
SELECT throws_ok(format($$SELECT prm.set_waitlist_preferences(%s, %s, '{"location_ids": [424242]}')$$, :org, :entry), 'P0002', NULL, 'unknown location refused');
SELECT throws_ok(format($$SELECT prm.set_waitlist_preferences(%s, %s, '{"colour": "blue"}')$$, :org, :entry), '22023', NULL, 'unknown preference refused');
SELECT throws_ok(format($$SELECT prm.set_waitlist_preferences(%s, %s, '{"earliest_time": "25:99"}')$$, :org, :entry), '22008', NULL, 'malformed time refused');
SELECT throws_ok(format($$SELECT prm.set_waitlist_preferences(%s, %s, '{"manual_boost": 99}')$$, :org, :entry), '22023', NULL, 'boost out of range in preferences');

-- bad input to join_waitlist: nothing stored
SELECT throws_ok(format('SELECT prm.join_waitlist(%s, %s, NULL, false, 41)', :org, :pat), '22023', NULL, 'boost 41 refused');
SELECT throws_ok(format('SELECT prm.join_waitlist(%s, %s, NULL, NULL, 0)', :org, :pat), '22004', NULL, 'NULL urgent refused');
SELECT throws_ok(format('SELECT prm.join_waitlist(%s, %s)', :org, :other_pat), 'P0002', NULL, 'another organization''s patient');
SELECT throws_ok(format('SELECT prm.join_waitlist(%s, %s, %s)', :org, :pat, :other_prov), 'P0002', NULL, 'another organization''s provider');
SELECT is((SELECT count(*)::int FROM prm.waitlist_entry), 1, 'refused calls stored nothing');

SELECT * FROM finish();
ROLLBACK;
