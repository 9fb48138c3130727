-- Psychotherapy placement: profiles and their validation, ranking with an
-- index-backed distance filter, the exact assignment against greedy,
-- contact e-mails (one a week per therapist, de-identified), answers,
-- follow-up calls in phone hours across daylight-saving changes, evidence,
-- tenancy, a simulated 8 weeks, and the time of record of the evidence.
-- The suite runs as a superuser, which may state times (as_of) as an
-- administrator does: they are kept as *_override beside the time of record.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(161);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_match_a;
CREATE ROLE regress_match_b;

SELECT prm.create_organization('Praxisnetz A', 'Europe/Berlin') AS org \gset
SELECT prm.create_organization('Praxisnetz B', 'Europe/Berlin') AS other \gset
SELECT prm.add_patient(:org, 'Anna', 'Zimmermann', '+4930111111') AS p1,
       prm.add_patient(:org, 'Bernd', 'Yilmaz', '+4930111112') AS p2,
       prm.add_patient(:org, 'Clara', 'Xaver', '+4930111113') AS p3 \gset
SELECT prm.add_patient(:other, 'Olga', 'Other', '+4930222222') AS op \gset

-- Berlin Mitte and around
SELECT prm.add_therapist(:org, 'Dr. Weiss', 'weiss@example.org', 52.5200, 13.4050, '{de,en}', '{cbt,systemic}', 2, 'female') AS t1 \gset
SELECT prm.add_therapist(:org, 'Dr. Schwarz', 'schwarz@example.org', 52.5400, 13.4200, '{de}', '{cbt}', 1, 'male') AS t2 \gset
-- Potsdam, ~27 km
SELECT prm.add_therapist(:org, 'Dr. Roth', 'roth@example.org', 52.4000, 13.0600, '{de,tr}', '{cbt}', 1, 'female') AS t3 \gset
-- wrong type
SELECT prm.add_therapist(:org, 'Dr. Gruen', 'gruen@example.org', 52.5210, 13.4100, '{de}', '{analytic}', 3, 'female') AS t4 \gset
-- no shared language
SELECT prm.add_therapist(:org, 'Dr. Blau', 'blau@example.org', 52.5220, 13.4000, '{fr}', '{cbt}', 3, 'male') AS t5 \gset
-- no places
SELECT prm.add_therapist(:org, 'Dr. Gelb', 'gelb@example.org', 52.5230, 13.4010, '{de}', '{cbt}', 0, 'male') AS t6 \gset
-- no contact
SELECT prm.add_therapist(:org, 'Dr. Lila', 'lila@example.org', 52.5240, 13.4020, '{de}', '{cbt}', 2, 'female', NULL, false) AS t7 \gset
SELECT prm.add_therapist(:other, 'Dr. Fremd', 'fremd@example.org', 52.5200, 13.4050, '{de}', '{cbt}', 5) AS ot \gset

-- 1. validation: nothing stored on bad input
SELECT is((SELECT timezone FROM prm.therapist WHERE id = :t1), 'Europe/Berlin', 'therapist time zone defaults to the organization''s');
SELECT is((SELECT languages FROM prm.therapist WHERE id = :t1), '{de,en}'::text[], 'languages stored in vocabulary order');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 91, 13, '{de}', '{cbt}', 1)$$, :org), '22023', 'latitude 91 is out of range', 'latitude above 90 refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 52, -180.5, '{de}', '{cbt}', 1)$$, :org), '22023', NULL, 'longitude below -180 refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 'NaN', 13, '{de}', '{cbt}', 1)$$, :org), '22023', NULL, 'NaN latitude refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 52, 13, '{de}', '{cbt}', -1)$$, :org), '22023', 'open places -1 is out of range', 'negative open places refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 52, 13, '{de}', '{hypnosis}', 1)$$, :org), '22023', 'therapy types contains "hypnosis", which is not recognized', 'unknown therapy type refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 52, 13, '{german}', '{cbt}', 1)$$, :org), '22023', NULL, 'unknown language refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 52, 13, '{}', '{cbt}', 1)$$, :org), '22023', 'languages must not be empty', 'empty language list refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 52, 13, '{de,NULL}', '{cbt}', 1)$$, :org), '22004', NULL, 'NULL language refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 52, 13, '{de}', '{cbt}', 1, 'robot')$$, :org), '22023', NULL, 'unknown gender refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', 52, 13, '{de}', '{cbt}', 1, NULL, 'Mars/Olympus')$$, :org), '22023', NULL, 'unknown time zone refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'not-an-address', 52, 13, '{de}', '{cbt}', 1)$$, :org), '22023', NULL, 'bad e-mail address refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, %L, 'x@example.org', 52, 13, '{de}', '{cbt}', 1)$$, :org, repeat('x', 201)), '22001', NULL, 'oversized name refused');
SELECT throws_ok($$SELECT prm.add_therapist(NULL, 'X', 'x@example.org', 52, 13, '{de}', '{cbt}', 1)$$, '22004', NULL, 'NULL org_id refused');
SELECT throws_ok(format($$SELECT prm.add_therapist(%s, 'X', 'x@example.org', NULL, 13, '{de}', '{cbt}', 1)$$, :org), '22004', NULL, 'NULL latitude refused');
SELECT throws_ok($$SELECT prm.add_therapist(999999, 'X', 'x@example.org', 52, 13, '{de}', '{cbt}', 1)$$, 'P0002', NULL, 'unknown organization');
SELECT is((SELECT count(*)::int FROM prm.therapist WHERE org_id = :org), 7, 'no therapist stored by the refused calls');
SELECT lives_ok(format($$SELECT prm.add_therapist(%s, %L, 'inj@example.org', 52.1, 13.1, '{de}', '{cbt}', 0)$$, :org, $i$Robert'); DROP TABLE prm.therapist; --$i$), 'injection string stored as a name');
SELECT is((SELECT name FROM prm.therapist WHERE email = 'inj@example.org'), $i$Robert'); DROP TABLE prm.therapist; --$i$, 'verbatim, table intact');

SELECT throws_ok(format($$SELECT prm.set_phone_hours(%s, %s, '[{"day": 8, "from": "09:00", "to": "10:00"}]')$$, :org, :t1), '22023', NULL, 'day 8 refused');
SELECT throws_ok(format($$SELECT prm.set_phone_hours(%s, %s, '[{"day": 1, "from": "10:00", "to": "09:00"}]')$$, :org, :t1), '22023', NULL, 'window ending before it starts refused');
SELECT throws_ok(format($$SELECT prm.set_phone_hours(%s, %s, '[{"day": 1, "from": "9 o''clock", "to": "10:00"}]')$$, :org, :t1), '22023', NULL, 'bad time refused');
SELECT throws_ok(format($$SELECT prm.set_phone_hours(%s, %s, '{"day": 1}')$$, :org, :t1), '22023', NULL, 'object instead of array refused');
SELECT throws_ok(format($$SELECT prm.set_phone_hours(%s, %s, '[{"day": 1, "from": "09:00", "to": "10:00"}]')$$, :org, :ot), 'P0002', NULL, 'another organization''s therapist is not there');
SELECT is(prm.set_phone_hours(:org, :t1, '[{"day": 1, "from": "09:00", "to": "10:00"}, {"day": 3, "from": "14:00", "to": "15:30"}]'), 2, 'phone hours set');
SELECT is(prm.set_phone_hours(:org, :t2, '[{"day": 2, "from": "08:00", "to": "09:00"}]'), 1, 'phone hours of t2');
SELECT is(prm.set_phone_hours(:org, :t3, '[{"day": 5, "from": "12:00", "to": "13:00"}]'), 1, 'phone hours of t3');

SELECT throws_ok(format($$SELECT prm.add_placement_request(%s, %s, 52.5, 13.4, 0, '{de}', 'cbt')$$, :org, :p1), '22023', NULL, 'zero max distance refused');
SELECT throws_ok(format($$SELECT prm.add_placement_request(%s, %s, 52.5, 13.4, 1001, '{de}', 'cbt')$$, :org, :p1), '22023', NULL, 'max distance above 1000 km refused');
SELECT throws_ok(format($$SELECT prm.add_placement_request(%s, %s, -90.5, 13.4, 10, '{de}', 'cbt')$$, :org, :p1), '22023', NULL, 'latitude below -90 refused');
SELECT throws_ok(format($$SELECT prm.add_placement_request(%s, %s, 52.5, 13.4, 10, '{de}', 'yoga')$$, :org, :p1), '22023', 'therapy type "yoga" is not recognized', 'unknown therapy type refused');
SELECT throws_ok(format($$SELECT prm.add_placement_request(%s, %s, 52.5, 13.4, 10, '{xx}', 'cbt')$$, :org, :p1), '22023', NULL, 'unknown language refused');
SELECT throws_ok(format($$SELECT prm.add_placement_request(%s, %s, 52.5, 13.4, 10, '{de}', 'cbt')$$, :org, :op), 'P0002', NULL, 'another organization''s patient is not there');
SELECT throws_ok(format($$SELECT prm.add_placement_request(%s, %s, 52.5, 13.4, 10, '{de}', 'cbt', NULL, '[{"day": 0, "from": "09:00", "to": "10:00"}]')$$, :org, :p1), '22023', NULL, 'bad available time refused');
SELECT throws_ok(format($$SELECT prm.add_placement_request(%s, NULL, 52.5, 13.4, 10, '{de}', 'cbt')$$, :org), '22004', NULL, 'NULL patient refused');
SELECT is((SELECT count(*)::int FROM prm.placement_request), 0, 'no request stored by the refused calls');

-- 2. ranking
SELECT prm.add_placement_request(:org, :p1, 52.5200, 13.4050, 30, '{de}', 'cbt', 'female',
                                 '[{"day": 1, "from": "08:00", "to": "12:00"}]', 1990, '2031-01-05 09:00+00') AS r1 \gset
SELECT results_eq(format('SELECT therapist_id FROM prm.rank_therapists(%s, %s)', :org, :r1),
                  ARRAY[:t1, :t2, :t3]::bigint[], 'hard filters keep t1, t2, t3 (type, language, places, contact, distance); best first');
SELECT ok((SELECT score FROM prm.rank_therapists(:org, :r1) WHERE therapist_id = :t1) >
          (SELECT score FROM prm.rank_therapists(:org, :r1) WHERE therapist_id = :t2), 'nearer, preferred gender and phone-hour overlap rank first');
SELECT is((SELECT reasons ->> 'gender' FROM prm.rank_therapists(:org, :r1) WHERE therapist_id = :t2), 'not as preferred', 'reasons explain the gender part');
SELECT is((SELECT (reasons ->> 'overlap_minutes')::int FROM prm.rank_therapists(:org, :r1) WHERE therapist_id = :t1), 60, 'one hour of phone hours overlaps the patient''s times');
SELECT ok(abs((SELECT distance_km FROM prm.rank_therapists(:org, :r1) WHERE therapist_id = :t3) - prm.therapist_distance_km(52.52, 13.405, 52.40, 13.06)) < 0.01, 'distance is the haversine distance');
SELECT ok(abs(prm.therapist_distance_km(52.5200, 13.4050, 48.1351, 11.5820) - 504.2) < 1.0, 'Berlin-Munich is about 504 km');
SELECT is((SELECT count(*)::int FROM prm.rank_therapists(:org, :r1, 1)), 1, 'max_results limits the list');
SELECT prm.add_placement_request(:org, :p2, 52.5200, 13.4050, 10, '{de}', 'cbt', NULL, NULL, NULL, '2031-01-06 09:00+00') AS r2 \gset
SELECT results_eq(format('SELECT therapist_id FROM prm.rank_therapists(%s, %s)', :org, :r2),
                  ARRAY[:t1, :t2]::bigint[], '10 km excludes Potsdam');
SELECT throws_ok(format('SELECT * FROM prm.rank_therapists(%s, %s, 0)', :org, :r1), '22023', NULL, 'max_results 0 refused');
SELECT throws_ok(format('SELECT * FROM prm.rank_therapists(%s, 999999)', :org), 'P0002', NULL, 'unknown request');
SELECT throws_ok(format('SELECT * FROM prm.rank_therapists(%s, NULL)', :org), '22004', NULL, 'NULL request refused');

-- 3. the assignment: greedy serves r1 first with its favourite and strands
--    r2; exact sends r1 to Potsdam so that both are placed
SELECT prm.update_therapist(:org, :t1, 0) \gset
SELECT results_eq(format($$SELECT request_id, therapist_id FROM prm.assign_placements(%s, 'greedy')$$, :org),
                  format('VALUES (%s::bigint, %s::bigint)', :r1, :t2), 'greedy: r1 takes t2, r2 has nothing left in 10 km');
SELECT results_eq(format($$SELECT request_id, therapist_id FROM prm.assign_placements(%s, 'exact') ORDER BY 1$$, :org),
                  format('VALUES (%s::bigint, %s::bigint), (%s, %s)', :r1, :t3, :r2, :t2), 'exact: r1 goes to Potsdam, r2 gets t2: both placed');
SELECT ok((SELECT sum(score) FROM prm.assign_placements(:org, 'exact')) > (SELECT sum(score) FROM prm.assign_placements(:org, 'greedy')),
          'and the total score is higher');
SELECT throws_ok(format($$SELECT * FROM prm.assign_placements(%s, 'magic')$$, :org), '22023', NULL, 'unknown method refused');
SELECT throws_ok(format($$SELECT * FROM prm.assign_placements(%s, 'exact', NULL)$$, :org), '22004', NULL, 'NULL persist refused');
-- ties go to the earlier registration, not the lower id
SELECT prm.update_therapist(:other, :ot, 1) \gset
SELECT prm.add_placement_request(:other, :op, 52.52, 13.405, 10, '{de}', 'cbt', NULL, NULL, NULL, '2031-01-02 09:00+00') AS late \gset
SELECT prm.add_placement_request(:other, :op, 52.52, 13.405, 10, '{de}', 'cbt', NULL, NULL, NULL, '2031-01-01 09:00+00') AS early \gset
SELECT is((SELECT request_id FROM prm.assign_placements(:other, 'exact')), :'early'::bigint, 'exact: equal scores, the earlier registration wins');
SELECT is((SELECT request_id FROM prm.assign_placements(:other, 'greedy')), :'early'::bigint, 'greedy too');
SELECT prm.withdraw_placement_request(:other, :late) AS w1, prm.withdraw_placement_request(:other, :early) AS w2 \gset
SELECT throws_ok(format('SELECT * FROM prm.rank_therapists(%s, %s)', :other, :late), '55000', NULL, 'a withdrawn request is not ranked');
SELECT prm.add_placement_request(:org, :p3, 52.40, 13.06, 5, '{de,tr}', 'cbt', NULL, NULL, 1960, '2031-01-07 09:00+00') AS r3 \gset

-- persist, e-mail, answers
SELECT results_eq(format($$SELECT request_id, therapist_id FROM prm.assign_placements(%s, 'exact', true) ORDER BY 1$$, :org),
                  format('VALUES (%s::bigint, %s::bigint), (%s, %s)', :r2, :t2, :r3, :t3), 'r3 next to Potsdam outscores r1 there: r1 waits; proposals persisted');
SELECT is((SELECT count(*)::int FROM prm.placement_contact WHERE org_id = :org AND status = 'proposed'), 2, 'two proposed contacts');
SELECT is((SELECT count(*)::int FROM prm.assign_placements(:org, 'exact')), 0, 'nothing left to propose: pending contacts hold the places');
SELECT is(prm.plan_contact_batches(:org, '2031-01-08 10:00+00'), 2, 'two therapists, two e-mails');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE org_id = :org AND kind = 'contact_batch' AND channel = 'email'), 2, 'queued in the outbox as e-mails');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE org_id = :org AND kind = 'contact_batch'
            AND (body LIKE '%Zimmermann%' OR body LIKE '%Anna%' OR body LIKE '%Xaver%' OR body LIKE '%Clara%')), 0, 'no patient name in any e-mail');
SELECT ok((SELECT body FROM prm.outbound_message m JOIN prm.contact_batch b ON b.message_id = m.id WHERE b.therapist_id = :t3) LIKE '%C.X., 65 or older, cbt%',
          'initials, age band and therapy type only');
SELECT is((SELECT template FROM prm.contact_batch WHERE therapist_id = :t3), 'contact_single', 'one patient: single template');
SELECT is(prm.plan_contact_batches(:org, '2031-01-09 10:00+00'), 0, 'nothing proposed, nothing sent');

SELECT throws_ok(format($$SELECT prm.record_contact_answer(%s, %s, %s, 'maybe')$$, :org, :r1, :t2), '22023', NULL, 'unknown answer refused');
SELECT throws_ok(format($$SELECT prm.record_contact_answer(%s, %s, %s, 'accepted', -2)$$, :org, :r1, :t2), '22023', NULL, 'negative waiting time refused');
SELECT throws_ok(format($$SELECT prm.record_contact_answer(%s, %s, %s, 'accepted')$$, :org, :r1, :t2), 'P0002', NULL, 'a therapist not asked cannot answer');
SELECT throws_ok(format($$SELECT prm.record_contact_answer(%s, %s, %s, 'accepted')$$, :org, :r1, :ot), 'P0002', NULL, 'another organization''s therapist');
SELECT is(prm.record_contact_answer(:org, :r3, :t3, 'declined', 12, 'email', '2031-01-10 10:00+00'), false, 'a decline matches nothing');
SELECT is(prm.record_contact_answer(:org, :r2, :t2, 'accepted', 4, 'email', '2031-01-10 11:00+00'), true, 'an acceptance matches the request');
SELECT is((SELECT status FROM prm.placement_request WHERE id = :r2), 'matched', 'request matched');
SELECT is((SELECT open_places FROM prm.therapist WHERE id = :t2), 0, 'the therapist lost a place');
SELECT is((SELECT (answers_total, accepted_total, contacts_total) FROM prm.therapist WHERE id = :t2), (1, 1, 1), 'reply history counted');
SELECT throws_ok(format($$SELECT prm.record_contact_answer(%s, %s, %s, 'declined')$$, :org, :r2, :t2), '55000', NULL, 'a second answer is refused');

-- a later proposal for r3 is withdrawn when r3 is matched elsewhere
SELECT prm.update_therapist(:org, :t1, 1) \gset
SELECT prm.update_therapist(:org, :t2, 1) \gset
SELECT prm.add_therapist(:org, 'Dr. Potsdam Zwei', 'pz@example.org', 52.401, 13.061, '{tr}', '{cbt}', 1) AS t8 \gset
SELECT results_eq(format($$SELECT request_id, therapist_id FROM prm.assign_placements(%s, 'exact', true) ORDER BY 1$$, :org),
                  format('VALUES (%s::bigint, %s::bigint), (%s, %s)', :r1, :t1, :r3, :t8), 'r1 and r3 proposed, r3 to a therapist not yet asked');
SELECT lives_ok(format($$SELECT prm.set_template(%s, 'contact_single', 'Hallo {therapist}, ein Platz gesucht: {patients} Danke, {clinic}', 'email', 'en')$$, :org), 'the organization words its therapist e-mails');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'contact_single', 'Patient {family_name}', 'email')$$, :org), '22023', NULL, 'patient names are no placeholder in therapist e-mails either');
SELECT is(prm.plan_contact_batches(:org, '2031-01-12 10:00+00'), 2, 'e-mails to the two new therapists');
SELECT ok((SELECT bool_and(m.body LIKE 'Hallo Dr. %, ein Platz gesucht: - Ref. P%') FROM prm.outbound_message m JOIN prm.contact_batch b ON b.message_id = m.id
            WHERE b.sent_at_override = '2031-01-12 10:00+00' AND b.template = 'contact_single'), 'the single-patient e-mail uses the organization''s wording');

-- 4. follow-up: unanswered for 7 days -> call in phone hours, across DST
SELECT prm.set_phone_hours(:org, :t8, '[{"day": 1, "from": "09:00", "to": "10:00"}]') \gset
SELECT is(prm.run_matching_follow_ups(:org, '2031-01-18 10:00+00')::int, 0, 'six days: no call yet');
UPDATE prm.contact_batch SET sent_at_override = '2031-03-21 12:00+00', follow_up_at = '2031-03-28 12:00+00' WHERE therapist_id = :t8;
UPDATE prm.contact_batch SET sent_at_override = '2031-03-24 07:00+00', follow_up_at = '2031-03-31 07:00+00' WHERE therapist_id = :t1;
SELECT is(prm.run_matching_follow_ups(:org, '2031-03-29 12:00+00')::int, 1, 'a call task after seven days');
SELECT is((SELECT window_starts_at FROM prm.call_task WHERE therapist_id = :t8), '2031-03-31 07:00+00'::timestamptz,
          'Monday 09:00 in Berlin is 07:00 UTC after the change to summer time (08:00 before)');
SELECT is((SELECT window_ends_at FROM prm.call_task WHERE therapist_id = :t8), '2031-03-31 08:00+00'::timestamptz, 'window ends at 10:00 local');
SELECT is(prm.run_matching_follow_ups(:org, '2031-03-30 12:00+00')::int, 0, 'one call task per e-mail');
SELECT call_task.id AS task FROM prm.call_task WHERE therapist_id = :t8 \gset
SELECT throws_ok(format($$SELECT prm.record_call_outcome(%s, %s, 'shouted')$$, :org, :task), '22023', NULL, 'unknown outcome refused');
SELECT throws_ok(format($$SELECT prm.record_call_outcome(%s, %s, 'reached', %L)$$, :org, :task, repeat('n', 2001)), '22001', NULL, 'oversized note refused');
SELECT lives_ok(format($$SELECT prm.record_call_outcome(%s, %s, 'reached', 'will call back', '2031-03-31 07:30+00')$$, :org, :task), 'call outcome recorded');
SELECT throws_ok(format($$SELECT prm.record_call_outcome(%s, %s, 'reached')$$, :org, :task), '55000', NULL, 'a done task cannot be done again');
SELECT is(prm.record_contact_answer(:org, :r3, :t8, 'accepted', 6, 'phone', '2031-03-31 07:35+00'), true, 'accepted on the phone');

-- a call is due at once when the e-mail comes due inside phone hours
SELECT prm.set_phone_hours(:org, :t1, '[{"day": 1, "from": "09:00", "to": "10:00"}]') \gset
SELECT is(prm.run_matching_follow_ups(:org, '2031-03-31 07:15+00')::int, 1, 'due inside a window');
SELECT is((SELECT window_starts_at FROM prm.call_task WHERE therapist_id = :t1), '2031-03-31 07:15+00'::timestamptz, 'the call can be made now');

-- 5. evidence
SELECT is(jsonb_array_length(prm.placement_evidence(:org, :r3) -> 'contacts'), 2, 'r3 evidence: two therapists contacted');
SELECT is(prm.placement_evidence(:org, :r3) #>> '{contacts,0,stated_waiting_weeks}', '12', 'first: declined, 12 weeks stated');
SELECT is(prm.placement_evidence(:org, :r3) #>> '{contacts,1,calls,0,outcome}', 'reached', 'second: the follow-up call');
SELECT is((SELECT count(*)::int FROM prm.placement_contact_history WHERE request_id = :r3), 2, 'the view shows the same contacts');
SELECT throws_ok(format('SELECT prm.placement_evidence(%s, %s)', :other, :r3), 'P0002', NULL, 'r3 is not in the other organization');

-- 6. the bounding box uses the index (2000 therapists, statistics, no planner switches)
INSERT INTO prm.therapist (org_id, name, email, latitude, longitude, languages, therapy_types, open_places, timezone)
SELECT :other, 'T' || g, 't' || g || '@example.org', 47.5 + 7.5 * random(), 6.0 + 9.0 * random(), '{de}', '{cbt}', 1, 'Europe/Berlin'
  FROM generate_series(1, 2000) g;
ANALYZE prm.therapist;
SELECT prm.add_placement_request(:other, :op, 50.1109, 8.6821, 25, '{de}', 'cbt') AS orq \gset
SELECT pg_stat_get_xact_numscans('prm.therapist_geo_idx'::regclass) AS idx_before,
       pg_stat_get_xact_numscans('prm.therapist'::regclass) AS seq_before \gset
SELECT ok((SELECT count(*) FROM prm.rank_therapists(:other, :orq, 1000)) > 0, 'Frankfurt has therapists within 25 km');
SELECT ok(pg_stat_get_xact_numscans('prm.therapist_geo_idx'::regclass) > :idx_before, 'rank_therapists scanned therapist_geo_idx');
SELECT is(pg_stat_get_xact_numscans('prm.therapist'::regclass), :'seq_before'::bigint, 'and did not scan the therapist table sequentially');
SELECT set_config('prm_test.other', :'other', true) \gset
CREATE TEMP TABLE explain_out (line text);
DO $$
DECLARE l text;
BEGIN
  FOR l IN EXECUTE format('EXPLAIN SELECT t.id FROM prm.therapist t WHERE t.org_id = %s'
                          ' AND t.latitude BETWEEN 49.886 AND 50.336 AND t.longitude BETWEEN 8.331 AND 9.033'
                          ' AND t.accepts_contact AND t.open_places > 0',
                          current_setting('prm_test.other'))
  LOOP INSERT INTO explain_out VALUES (l); END LOOP;
END $$;
SELECT ok(EXISTS (SELECT 1 FROM explain_out WHERE line LIKE '%therapist_geo_idx%'), 'EXPLAIN of the bounding-box query uses therapist_geo_idx');

-- 7. exact vs greedy on random instances: never fewer matches; never less score when as many
SELECT setseed(0.17) \gset
CREATE TEMP TABLE cmp (round int, exact_n int, exact_s float8, greedy_n int, greedy_s float8);
DO $$
DECLARE
  o bigint; pat bigint; k int; i int;
BEGIN
  FOR k IN 1..6 LOOP
    o := prm.create_organization('Random ' || k, 'Europe/Berlin');
    pat := prm.add_patient(o, 'R', 'R', '+49301' || lpad(k::text, 6, '0'));
    FOR i IN 1..25 LOOP
      PERFORM prm.add_therapist(o, 'T' || i, 't' || i || '@example.org', 52.3 + 0.4 * random(), 13.1 + 0.6 * random(),
                                '{de}', '{cbt}', (random() * 2)::int, (ARRAY['female', 'male'])[1 + (random() * 1)::int]);
    END LOOP;
    FOR i IN 1..60 LOOP
      PERFORM prm.add_placement_request(o, pat, 52.3 + 0.4 * random(), 13.1 + 0.6 * random(), 3 + 12 * random(),
                                        '{de}', 'cbt', CASE WHEN random() < 0.5 THEN 'female' END, NULL, NULL,
                                        '2031-01-01'::timestamptz + i * interval '1 hour');
    END LOOP;
    INSERT INTO cmp SELECT k, e.n, e.s, g.n, g.s
      FROM (SELECT count(*)::int n, coalesce(sum(score), 0) s FROM prm.assign_placements(o, 'exact')) e,
           (SELECT count(*)::int n, coalesce(sum(score), 0) s FROM prm.assign_placements(o, 'greedy')) g;
  END LOOP;
END $$;
SELECT is((SELECT count(*)::int FROM cmp WHERE exact_n < greedy_n), 0, 'exact never matches fewer requests than greedy');
SELECT is((SELECT count(*)::int FROM cmp WHERE exact_n = greedy_n AND exact_s < greedy_s - 1e-9), 0, 'with as many matched, exact never scores less');
SELECT ok((SELECT bool_or(exact_n > greedy_n OR exact_s > greedy_s + 1e-9) FROM cmp), 'and on some instance it does strictly better');

-- 8. eight simulated weeks: the e-mail limit holds and calls lie in phone hours
SELECT setseed(0.42) \gset
SELECT prm.create_organization('Simulation', 'Europe/Berlin') AS sim \gset
SELECT set_config('prm_test.sim', :'sim', true) \gset
DO $$
DECLARE
  o bigint := current_setting('prm_test.sim')::bigint; pat bigint; i int; d int; t bigint;
  as_of timestamptz; c record;
  tzs text[] := ARRAY['Europe/Berlin', 'Europe/London', 'America/New_York'];
BEGIN
  pat := prm.add_patient(o, 'Sim', 'Patient', '+4930999999');
  FOR i IN 1..40 LOOP
    t := prm.add_therapist(o, 'Sim T' || i, 's' || i || '@example.org', 52.3 + 0.4 * random(), 13.1 + 0.6 * random(),
                           '{de}', '{cbt}', 1 + (random() * 2)::int, NULL, tzs[1 + (i % 3)]);
    PERFORM prm.set_phone_hours(o, t, jsonb_build_array(
      jsonb_build_object('day', 1 + (i % 5), 'from', '08:00', 'to', '09:00'),
      jsonb_build_object('day', 1 + ((i + 2) % 5), 'from', '13:30', 'to', '14:15')));
  END LOOP;
  FOR d IN 0..55 LOOP
    as_of := '2031-03-01 09:00+00'::timestamptz + d * interval '1 day';
    FOR i IN 1..3 LOOP   -- three new patients a day
      PERFORM prm.add_placement_request(o, pat, 52.3 + 0.4 * random(), 13.1 + 0.6 * random(), 15 + 15 * random(),
                                        '{de}', 'cbt', NULL, NULL, 1950 + (random() * 50)::int, as_of + i * interval '1 minute');
    END LOOP;
    PERFORM * FROM prm.assign_placements(o, 'exact', true);
    PERFORM prm.plan_contact_batches(o, as_of);
    FOR c IN SELECT request_id, therapist_id FROM prm.placement_contact
              WHERE org_id = o AND status = 'sent' AND coalesce(sent_at_override, sent_at) < as_of ORDER BY id LOOP
      IF random() < 0.15 THEN
        PERFORM prm.record_contact_answer(o, c.request_id, c.therapist_id,
                  (ARRAY['accepted', 'declined', 'no_place'])[1 + (random() * 2)::int], (random() * 20)::int, 'email', as_of);
      END IF;
    END LOOP;
    PERFORM prm.run_matching_follow_ups(o, as_of, 1000);
    FOR c IN SELECT id FROM prm.call_task WHERE org_id = o AND status = 'open' AND window_starts_at < as_of LOOP
      PERFORM prm.record_call_outcome(o, c.id, 'no_answer', NULL, as_of);
    END LOOP;
    -- therapists free places again now and then
    UPDATE prm.therapist SET open_places = 1 + (random() * 2)::int WHERE org_id = o AND open_places = 0 AND random() < 0.1;
  END LOOP;
END $$;
SELECT ok((SELECT count(*) FROM prm.contact_batch WHERE org_id = :sim) > 40, 'the simulation sent many e-mails');
SELECT is((SELECT count(*)::int FROM prm.contact_batch a JOIN prm.contact_batch b
             ON b.org_id = a.org_id AND b.therapist_id = a.therapist_id AND b.id > a.id
            WHERE a.org_id = :sim AND abs(extract(epoch FROM coalesce(b.sent_at_override, b.sent_at) - coalesce(a.sent_at_override, a.sent_at))) < 7 * 86400), 0,
          'never two e-mails to a therapist within 7 days');
SELECT ok((SELECT count(*) FROM prm.contact_batch WHERE org_id = :sim AND template = 'contact_several') > 0, 'some e-mails ask about several patients');
SELECT ok((SELECT count(*) FROM prm.call_task WHERE org_id = :sim) > 10, 'unanswered e-mails led to call tasks');
SELECT is((SELECT count(*)::int FROM prm.call_task k JOIN prm.therapist t ON t.org_id = k.org_id AND t.id = k.therapist_id
            WHERE k.org_id = :sim AND NOT EXISTS (
              SELECT 1 FROM prm.therapist_phone_hours h
               WHERE h.org_id = k.org_id AND h.therapist_id = k.therapist_id
                 AND h.day_of_week = extract(isodow FROM k.window_starts_at AT TIME ZONE t.timezone)
                 AND (k.window_starts_at AT TIME ZONE t.timezone)::time >= h.starts
                 AND (k.window_starts_at AT TIME ZONE t.timezone)::time < h.ends
                 AND (k.window_ends_at AT TIME ZONE t.timezone)::time = h.ends)), 0,
          'every call task lies in the therapist''s phone hours, in local time');
SELECT is((SELECT count(*)::int FROM prm.call_task k JOIN prm.contact_batch b ON b.org_id = k.org_id AND b.id = k.batch_id
            WHERE k.org_id = :sim AND k.window_starts_at < coalesce(b.sent_at_override, b.sent_at) + interval '7 days'), 0, 'no call before 7 days');
SELECT is((SELECT count(*)::int FROM prm.placement_request r WHERE r.org_id = :sim AND r.status = 'matched'
              AND (SELECT count(*) FROM prm.placement_contact c WHERE c.org_id = r.org_id AND c.request_id = r.id AND c.answer = 'accepted'
                      AND c.therapist_id = r.matched_therapist_id) <> 1), 0, 'every match rests on one acceptance');
SELECT is((SELECT count(*)::int FROM prm.placement_contact c JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id
            WHERE c.org_id = :sim AND r.status = 'matched' AND c.status IN ('proposed', 'sent')), 0, 'matched requests have no pending contacts');
SELECT is((SELECT count(*)::int FROM (SELECT request_id, therapist_id FROM prm.placement_contact WHERE org_id = :sim
                                       GROUP BY 1, 2 HAVING count(*) > 1) x), 0, 'no therapist asked twice about a request');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE org_id = :sim AND body LIKE '%Patient%'), 0, 'no patient name in the simulation''s e-mails');

-- 9. tenancy
SELECT prm.grant_access('regress_match_a', :org, 'staff') \gset
SELECT prm.grant_access('regress_match_b', :other, 'staff') \gset
SET LOCAL ROLE regress_match_b;
SELECT is_empty(format('SELECT 1 FROM prm.therapist WHERE org_id = %s', :org), 'B cannot read A''s therapists');
SELECT is_empty(format('SELECT 1 FROM prm.placement_request WHERE org_id = %s', :org), 'nor A''s requests');
SELECT is_empty(format('SELECT 1 FROM prm.placement_contact_history WHERE org_id = %s', :org), 'nor A''s contact history view');
SELECT throws_ok(format('SELECT * FROM prm.rank_therapists(%s, %s)', :org, :r2), '42501', NULL, 'B cannot rank for A');
SELECT throws_ok(format('SELECT * FROM prm.assign_placements(%s)', :org), '42501', NULL, 'B cannot assign A''s requests');
SELECT throws_ok(format('SELECT prm.placement_evidence(%s, %s)', :org, :r3), '42501', NULL, 'B cannot read A''s evidence');
SELECT throws_ok(format($$SELECT prm.record_contact_answer(%s, %s, %s, 'accepted')$$, :org, :r2, :t1), '42501', NULL, 'B cannot answer for A');
SELECT throws_ok(format($$SELECT prm.update_therapist(%s, %s, 9)$$, :other, :t1), 'P0002', NULL, 'A''s therapist is not there through B');
SELECT throws_ok('SELECT prm.run_matching_follow_ups(NULL)', '42501', NULL, 'follow-ups of every organization are for the owner');
SELECT throws_ok(format('UPDATE prm.therapist SET open_places = 9 WHERE org_id = %s', :org), '42501', NULL, 'no direct writes');
RESET ROLE;
SET LOCAL ROLE regress_match_a;
SELECT ok((SELECT count(*) FROM prm.therapist) > 0 AND NOT EXISTS (SELECT 1 FROM prm.therapist WHERE org_id <> :org), 'A reads its own therapists only');
SELECT throws_ok(format($$SELECT prm.add_placement_request(%s, %s, 52.5, 13.4, 10, '{de}', 'cbt', NULL, NULL, NULL, '2020-01-01')$$, :org, :p3),
                 '42501', NULL, 'staff cannot backdate a registration to jump the queue');
RESET ROLE;

-- 10. the time of record: the evidence carries the transaction time and the
--     role that recorded it; a stated time is an administrator's override,
--     refused to staff (who could backdate the evidence, or move the rule of
--     one e-mail per therapist in 7 days)
CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
  EXECUTE q;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
  RETURN SQLSTATE || ': ' || h;
END $$;
CREATE ROLE regress_match_admin;
SELECT prm.create_organization('Praxisnetz Zeit', 'Europe/Berlin') AS ev \gset
SELECT prm.add_patient(:ev, 'Eva', 'Evidenz', '+4930333331') AS ep1, prm.add_patient(:ev, 'Emil', 'Evidenz', '+4930333332') AS ep2 \gset
SELECT prm.add_therapist(:ev, 'Dr. Zeit', 'zeit@example.org', 52.5200, 13.4050, '{de}', '{cbt}', 1) AS et1 \gset
SELECT prm.add_therapist(:ev, 'Dr. Uhr', 'uhr@example.org', 52.5210, 13.4060, '{de}', '{cbt}', 1) AS et2 \gset
SELECT prm.add_placement_request(:ev, :ep1, 52.5200, 13.4050, 10, '{de}', 'cbt') AS er1 \gset
SELECT prm.add_placement_request(:ev, :ep2, 52.5200, 13.4050, 10, '{de}', 'cbt') AS er2 \gset
SELECT prm.grant_access('regress_match_a', :ev, 'staff') \gset
SELECT prm.grant_access('regress_match_admin', :ev, 'admin') \gset

SET LOCAL ROLE regress_match_a;
SELECT is((SELECT count(*)::int FROM prm.assign_placements(:ev, 'exact', true)), 2, 'staff proposes both requests');
SELECT throws_ok(format($$SELECT prm.plan_contact_batches(%s, now() - interval '8 days')$$, :ev), '42501',
                 'permission denied to record a time other than now', 'staff cannot backdate contact e-mails');
SELECT is(prm.plan_contact_batches(:ev, now()), 2, 'as_of equal to now is no override: two e-mails');
SELECT is((SELECT count(*)::int FROM prm.contact_batch WHERE org_id = :ev AND sent_at = now() AND sent_at_override IS NULL
              AND follow_up_at = now() + interval '7 days' AND recorded_by = 'regress_match_a'), 2,
          'e-mails recorded at the transaction time, by the staff role, followed up 7 days later');
SELECT prm.update_therapist(:ev, :et1, 2) \gset
SELECT prm.add_placement_request(:ev, :ep1, 52.5200, 13.4050, 10, '{de}', 'cbt') AS er3 \gset
SELECT results_eq(format($$SELECT request_id, therapist_id FROM prm.assign_placements(%s, 'exact', true)$$, :ev),
                  format('VALUES (%s::bigint, %s::bigint)', :er3, :et1), 'a third request is proposed to a therapist e-mailed today');
SELECT is(prm.plan_contact_batches(:ev), 0, 'the 7-day rule holds: no second e-mail to that therapist');
SELECT is(pg_temp.hint_of(format($$SELECT prm.plan_contact_batches(%s, now() + interval '8 days')$$, :ev)),
          format('42501: Leave out as_of, or ask an administrator of organization %s to record the time it happened.', :ev),
          'staff cannot move the rule by dating the e-mail ahead; the error says what to do');
SELECT is((SELECT count(*)::int FROM prm.contact_batch WHERE org_id = :ev), 2, 'still two e-mails');
RESET ROLE;
-- an administrator's backdated e-mail does not open the week to staff
SELECT prm.add_therapist(:ev, 'Dr. Frueh', 'frueh@example.org', 52.5220, 13.4070, '{de}', '{cbt}', 2) AS et3 \gset
SELECT prm.add_placement_request(:ev, :ep2, 52.5220, 13.4070, 10, '{de}', 'cbt') AS er4 \gset
SET LOCAL ROLE regress_match_admin;
SELECT results_eq(format($$SELECT request_id, therapist_id FROM prm.assign_placements(%s, 'exact', true)$$, :ev),
                  format('VALUES (%s::bigint, %s::bigint)', :er4, :et3), 'a fourth request is proposed to a new therapist');
SELECT is(prm.plan_contact_batches(:ev, now() - interval '30 days'), 1, 'an administrator records an e-mail as sent 30 days ago');
SELECT is((SELECT (sent_at = now(), sent_at_override = now() - interval '30 days', recorded_by) FROM prm.contact_batch WHERE therapist_id = :et3),
          (true, true, 'regress_match_admin'::text), 'kept as an override beside the time of record, with who');
RESET ROLE;
SELECT prm.add_placement_request(:ev, :ep1, 52.5220, 13.4070, 10, '{de}', 'cbt') AS er5 \gset
SET LOCAL ROLE regress_match_a;
SELECT results_eq(format($$SELECT request_id, therapist_id FROM prm.assign_placements(%s, 'exact', true)$$, :ev),
                  format('VALUES (%s::bigint, %s::bigint)', :er5, :et3), 'a fifth request is proposed to that therapist');
SELECT is(prm.plan_contact_batches(:ev), 0, 'staff cannot e-mail them again this week: the time of record counts too');
SELECT throws_ok(format($$SELECT prm.run_matching_follow_ups(%s, now() + interval '8 days')$$, :ev), '42501', NULL,
                 'staff cannot run the follow-ups as of another time');
RESET ROLE;
SELECT c.therapist_id AS er1t FROM prm.placement_contact c WHERE c.request_id = :er1 \gset
SELECT c.therapist_id AS er2t FROM prm.placement_contact c WHERE c.request_id = :er2 \gset

SET LOCAL ROLE regress_match_admin;
SELECT is(prm.run_matching_follow_ups(:ev, now() + interval '8 days')::int, 3, 'an administrator runs the follow-ups as of 8 days later');
SELECT is((SELECT count(*)::int FROM prm.call_task WHERE org_id = :ev AND created_at = now()
              AND created_at_override = now() + interval '8 days' AND window_starts_at >= now() + interval '8 days'), 3,
          'the call tasks: created now, as of the stated time, with windows from it');
RESET ROLE;
SELECT k.id AS ek1 FROM prm.call_task k WHERE k.org_id = :ev AND k.therapist_id = :er1t \gset
SELECT k.id AS ek2 FROM prm.call_task k WHERE k.org_id = :ev AND k.therapist_id = :er2t \gset

SET LOCAL ROLE regress_match_a;
SELECT throws_ok(format($$SELECT prm.record_call_outcome(%s, %s, 'reached', NULL, now() - interval '1 day')$$, :ev, :ek1), '42501', NULL,
                 'staff cannot backdate a call');
SELECT lives_ok(format($$SELECT prm.record_call_outcome(%s, %s, 'reached')$$, :ev, :ek1), 'staff records a call now');
SELECT is((SELECT (completed_at = now(), completed_at_override IS NULL, outcome_recorded_by) FROM prm.call_task WHERE id = :ek1),
          (true, true, 'regress_match_a'::text), 'the call: done at the time of record, by staff');
SELECT throws_ok(format($$SELECT prm.record_contact_answer(%s, %s, %s, 'declined', 3, 'email', now() - interval '3 days')$$, :ev, :er1, :er1t),
                 '42501', 'permission denied to record a time other than now', 'staff cannot backdate an answer');
SELECT is((SELECT status FROM prm.placement_contact WHERE request_id = :er1), 'sent', 'and the refused answer left nothing behind');
SELECT is(prm.record_contact_answer(:ev, :er1, :er1t, 'declined', 3), false, 'staff records an answer without a time');
SELECT is((SELECT (answered_at = now(), answered_at_override IS NULL, answer_recorded_by) FROM prm.placement_contact WHERE request_id = :er1),
          (true, true, 'regress_match_a'::text), 'answered at the time of record, by staff');
RESET ROLE;

SET LOCAL ROLE regress_match_admin;
SELECT lives_ok(format($$SELECT prm.record_call_outcome(%s, %s, 'voicemail', 'left a message', '2031-05-03 10:00+00')$$, :ev, :ek2),
                'an administrator states when a call was made');
SELECT is(prm.record_contact_answer(:ev, :er2, :er2t, 'no_place', NULL, 'letter', '2031-05-04 09:00+00'), false,
          'and when a letter came');
SELECT is((SELECT (answered_at = now(), answered_at_override, answer_recorded_by) FROM prm.placement_contact WHERE request_id = :er2),
          (true, '2031-05-04 09:00+00'::timestamptz, 'regress_match_admin'::text), 'the stated time is kept beside the time of record, with who');
SELECT is((prm.placement_evidence(:ev, :er2) #>> '{contacts,0,answered_at_override}')::timestamptz, '2031-05-04 09:00+00'::timestamptz,
          'the evidence shows the override');
SELECT is((prm.placement_evidence(:ev, :er2) #>> '{contacts,0,answered_at}')::timestamptz, now(), 'beside the time of record');
SELECT is(prm.placement_evidence(:ev, :er2) #>> '{contacts,0,answer_recorded_by}', 'regress_match_admin', 'and who recorded it');
SELECT is(prm.placement_evidence(:ev, :er2) #>> '{contacts,0,contact_recorded_by}', 'regress_match_a', 'and who sent the e-mail');
SELECT is((prm.placement_evidence(:ev, :er2) #>> '{contacts,0,calls,0,completed_at_override}')::timestamptz, '2031-05-03 10:00+00'::timestamptz,
          'the call''s stated time too');
SELECT is(jsonb_typeof(prm.placement_evidence(:ev, :er1) #> '{contacts,0,answered_at_override}'), 'null', 'a staff answer has no override');
SELECT is((SELECT answered_at_override FROM prm.placement_contact_history WHERE request_id = :er2), '2031-05-04 09:00+00'::timestamptz,
          'the contact history view shows the override');
SELECT is((SELECT payload ->> 'answered_at_override' FROM prm.event WHERE org_id = :ev AND kind = 'contact_answered' AND entity_id =
             (SELECT id FROM prm.placement_contact WHERE request_id = :er2))::timestamptz, '2031-05-04 09:00+00'::timestamptz,
          'and so does the event, whose actor is the administrator');
RESET ROLE;
SELECT throws_ok(format($$SELECT prm.record_contact_answer(%s, %s, %s, 'declined', NULL, 'email', 'infinity')$$, :ev, :er1, :er1t),
                 '22023', 'as_of must be a finite time', 'an infinite time is refused');

SELECT * FROM finish();
ROLLBACK;
