-- Regressions found by make fuzz (test/fuzz/): each a precise error, no
-- oversized argument echoed back whole.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(14);

-- the error a statement raises: message and detail
CREATE FUNCTION pg_temp.error_of(sql text, OUT state text, OUT message text, OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
END $$;

-- normalize_phone used to copy a whole oversized region into its message
SELECT throws_ok($$SELECT prm.normalize_phone('0412 345 678', repeat('x', 1048576))$$, '22023', NULL,
                 'normalize_phone: a 1 MB region is refused with 22023');
SELECT is((pg_temp.error_of($$SELECT prm.normalize_phone('0412 345 678', repeat('x', 1048576))$$)).message,
          'phone region "xxxxxxxxxxxxxxxxxxxx..." is not supported',
          'normalize_phone: the message shows the first 20 characters of an oversized region');
SELECT cmp_ok(length((pg_temp.error_of($$SELECT prm.normalize_phone('0412 345 678', repeat('x', 1048576))$$)).detail), '<', 200,
              'normalize_phone: the detail is short too');
SELECT is((pg_temp.error_of($$SELECT prm.normalize_phone('0412 345 678', repeat('€', 100000))$$)).message,
          'phone region "' || repeat('€', 20) || '..." is not supported',
          'normalize_phone: multibyte regions are cut at a character boundary');
SELECT is((pg_temp.error_of($$SELECT prm.normalize_phone('0412 345 678', 'XX')$$)).message,
          'phone region "XX" is not supported', 'normalize_phone: a short unknown region is shown whole');
SELECT is((pg_temp.error_of($$SELECT prm.normalize_phone('0412 345 678', repeat('y', 20))$$)).message,
          'phone region "' || repeat('y', 20) || '" is not supported', 'normalize_phone: 20 characters are still shown whole');
SELECT is(prm.normalize_phone('0412 345 678', 'au'), '+61412345678', 'normalize_phone: a known region still works');

-- the organization setting refuses it as briefly
SELECT prm.create_organization('Fuzz Regression Clinic', 'UTC') AS org \gset
SELECT ok((pg_temp.error_of(format($$SELECT prm.configure(%s, jsonb_build_object('phone_region', repeat('z', 1048576)))$$, :org))).state
           IN ('22001', '22023'), 'configure: a 1 MB phone_region is refused (22001 or 22023)');
SELECT cmp_ok(length((pg_temp.error_of(format($$SELECT prm.configure(%s, jsonb_build_object('phone_region', repeat('z', 1048576)))$$, :org))).message),
              '<', 200, 'configure: the message does not echo the whole region');

-- make fuzz, 2026-12-02: start_journey with journey 0 crashed the server
-- (0 was taken for "the journeys of an event", whose kind was NULL)
SELECT prm.add_patient(:org, 'Fuzz', 'Zero', '+15558099001') AS fz_pat \gset
SELECT throws_ok(format('SELECT prm.start_journey(%s, 0, %s)', :org, :fz_pat), 'P0002', NULL,
                 'start_journey: journey 0 is an unknown journey');
SELECT throws_ok(format('SELECT prm.start_journey(%s, -1, %s)', :org, :fz_pat), 'P0002', NULL,
                 'start_journey: a negative journey id is an unknown journey');
SELECT throws_ok(format('SELECT prm.start_journey_segment(%s, 0, ARRAY[%s]::bigint[])', :org, :fz_pat), 'P0002', NULL,
                 'start_journey_segment: journey 0 is an unknown journey');
-- the fixed three-argument reply_in_conversation read a fourth argument
-- that was not there (garbage: a crash, or a "give either body or template")
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS quiet_off \gset
SELECT prm.create_organization('Fuzz Reply Clinic', 'UTC', '+15558099000') AS org_r \gset
SELECT prm.add_patient(:org_r, 'Fuzz', 'Reply', '+15558099002') AS r_pat \gset
SELECT prm.handle_inbound_sms('+15558099000', '+15558099002', 'hello there', 'fz-sm1') IS NOT NULL AS threaded \gset
SELECT lives_ok(format($$SELECT prm.reply_in_conversation(%s, (SELECT id FROM prm.conversation WHERE org_id = %s), 'N')$$, :org_r, :org_r),
                'reply_in_conversation: the three-argument form with a one-letter body');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE org_id = :org_r AND kind = 'reply' AND body = 'N'), 1,
          'reply_in_conversation: the reply is queued');

SELECT * FROM finish();
ROLLBACK;
