-- Webhook signatures: prm.verify_twilio_signature against vectors computed
-- independently (openssl dgst -sha1 -hmac, and Twilio's documented
-- example), every way a request can be changed, the bad inputs, and the
-- auth token that no role but the organization's admin can read.
--
-- The expected signatures were computed at authoring time, e.g.
--   printf '%s' 'https://example.com/sms?x=1BodyYESFrom+15551234567To+15558001111' \
--     | openssl dgst -sha1 -hmac abcdef0123456789abcdef0123456789 -binary | base64
-- The constant-time comparison is reviewed in src/signature.c
-- (SignatureEqual), not timed here.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(98);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_sig_admin;
CREATE ROLE regress_sig_staff;
CREATE ROLE regress_sig_ro;
CREATE ROLE regress_sig_hook;
CREATE ROLE regress_sig_hook_b;
CREATE ROLE regress_sig_admin_b;
CREATE ROLE regress_sig_none;

SELECT prm.create_organization('Sig A', 'UTC', '+15558001111') AS org_a \gset
SELECT prm.create_organization('Sig B', 'UTC', '+15558003333') AS org_b \gset
-- Twilio's documented example is addressed to +18005551212
SELECT prm.create_organization('Sig Doc', 'UTC', '+18005551212') AS org_doc \gset
UPDATE prm.organization SET whatsapp_number = '+15558002222' WHERE id = :org_a;
SELECT prm.grant_access('regress_sig_admin', :org_a, 'admin');
SELECT prm.grant_access('regress_sig_staff', :org_a, 'staff');
SELECT prm.grant_access('regress_sig_ro', :org_a, 'readonly');
SELECT prm.grant_access('regress_sig_hook', :org_a, 'webhook');
SELECT prm.grant_access('regress_sig_hook_b', :org_b, 'webhook');
SELECT prm.grant_access('regress_sig_admin_b', :org_b, 'admin');

\set url '''https://example.com/sms?x=1'''
\set params '''{"To": "+15558001111", "From": "+15551234567", "Body": "YES"}'''
\set sig '''01GIlTUguOfWfwndAJ2//wLd7Q0='''

--
-- the catalog: a dumped table under row-level security, and the levels
--
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'prm.channel_credential'::regclass),
          'channel_credential is under row-level security');
SELECT ok((SELECT 'prm.channel_credential'::regclass = ANY (extconfig) FROM pg_extension WHERE extname = 'prm'),
          'channel_credential is registered with pg_extension_config_dump');
SELECT ok(has_function_privilege('regress_sig_hook', 'prm.verify_twilio_signature(text,jsonb,text,bigint)', 'EXECUTE')
          AND NOT has_function_privilege('regress_sig_hook', 'prm.set_channel_credential(bigint,text,text)', 'EXECUTE')
          AND NOT has_function_privilege('regress_sig_staff', 'prm.set_channel_credential(bigint,text,text)', 'EXECUTE')
          AND NOT has_function_privilege('regress_sig_staff', 'prm.remove_channel_credential(bigint,text)', 'EXECUTE')
          AND has_function_privilege('regress_sig_admin', 'prm.set_channel_credential(bigint,text,text)', 'EXECUTE'),
          'webhook verifies; only admin sets or removes a credential');
SELECT ok(NOT has_function_privilege('regress_sig_none', 'prm.verify_twilio_signature(text,jsonb,text,bigint)', 'EXECUTE'),
          'a role with no grant cannot even call verify');

--
-- no credential yet: a clear error, not a quiet false
--
SET LOCAL ROLE regress_sig_hook;
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, :params, :sig),
                 '55000', 'organization ' || :org_a || ' has no Twilio auth token', 'no token stored: 55000');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, NULL)', :url, :params),
                 '55000', NULL, 'no token stored: 55000 even for an unsigned request');
RESET ROLE;

--
-- setting the credential
--
SET LOCAL ROLE regress_sig_admin;
SELECT lives_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', 'abcdef0123456789abcdef0123456789')$$, :org_a),
                'admin stores the auth token');
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', 'abcdef0123456789abcdef0123456789')$$, :org_b),
                 '42501', NULL, 'admin of A cannot set B''s token');
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, 'vonage', 'abcdef0123456789')$$, :org_a),
                 '22023', 'unknown provider "vonage"', 'unknown provider');
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', '')$$, :org_a), '22023', NULL, 'empty token');
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', '   ')$$, :org_a), '22023', NULL, 'blank token');
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', %L)$$, :org_a, 'abcdef0123456789' || E'\n'),
                 '22023', 'auth_token contains a character that is not printable ASCII', 'a token with a line break');
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', %L)$$, :org_a, 'abc def'),
                 '22023', NULL, 'a token with a space');
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', %L)$$, :org_a, repeat('a', 129)),
                 '22001', NULL, 'a token longer than 128 characters');
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', NULL)$$, :org_a), '22004', NULL, 'NULL token');
SELECT throws_ok($$SELECT prm.set_channel_credential(NULL, 'twilio', 'abcdef0123456789')$$, '22004', NULL, 'NULL org_id');
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, NULL, 'abcdef0123456789')$$, :org_a), '22004', NULL, 'NULL provider');
RESET ROLE;
SET LOCAL ROLE regress_sig_staff;
SELECT throws_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', 'x0123456789abcdef')$$, :org_a),
                 '42501', NULL, 'staff cannot set the token');
RESET ROLE;
SELECT is((SELECT payload FROM prm.event WHERE org_id = :org_a AND kind = 'channel_credential_set'),
          '{"provider": "twilio"}'::jsonb, 'the event names the provider');
SELECT is_empty($$SELECT 1 FROM prm.event WHERE payload::text LIKE '%abcdef0123456789%'$$,
                'no event carries the token');
SELECT prm.set_channel_credential(:org_doc, 'twilio', '12345');
SELECT prm.set_channel_credential(:org_b, 'twilio', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb');

--
-- known-good vectors
--
SELECT is(prm.verify_twilio_signature('https://mycompany.com/myapp.php?foo=1&bar=2',
          '{"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
            "From": "+12349013030", "To": "+18005551212"}', '0/KCTR6DLpKmkAf8muzZqo1nDgQ='),
          true, 'Twilio''s documented example, routed by To');
SET LOCAL ROLE regress_sig_hook;
SELECT is(prm.verify_twilio_signature(:url, :params, :sig), true, 'an SMS webhook, routed by To');
SELECT is(prm.verify_twilio_signature(:url, :params, :sig, :org_a), true, 'the same with org_id');
SELECT is(prm.verify_twilio_signature(url => :url, params => :params, signature => :sig, org_id => NULL), true,
          'named arguments, org_id NULL: routed by To');
SELECT is(prm.verify_twilio_signature(:url, '{"Body": "YES", "To": "+15558001111", "From": "+15551234567"}', :sig), true,
          'the order of the keys in params is irrelevant');
SELECT is(prm.verify_twilio_signature('https://example.com/sms?x=1',
          '{"To": "+15558001111", "From": "+15551234567", "Body": "YES", "Tag": ["zeta", "alpha", "zeta"]}',
          'muCh3cNyEFwwv0Udp8fDhL5i3aM='), true, 'a repeated name: its distinct values in byte order');
SELECT is(prm.verify_twilio_signature('https://example.com/sms?x=1',
          '{"To": "+15558001111", "From": "+15551234567", "Body": "YES", "Tag": ["alpha", "zeta"]}',
          'muCh3cNyEFwwv0Udp8fDhL5i3aM='), true, 'the order the values arrive in is irrelevant');
SELECT is(prm.verify_twilio_signature('https://example.com/sms?x=1',
          '{"To": "+15558001111", "From": "+15551234567", "Body": "YES", "Tag": ["alpha"]}',
          'muCh3cNyEFwwv0Udp8fDhL5i3aM='), false, 'a value of a repeated name missing');
SELECT is(prm.verify_twilio_signature('https://example.com/sms',
          '{"To": "+15558001111", "From": "+15551234567", "Body": "Grüße ✓ naïve"}',
          'svG3P3iU/Xavgml1kFog+29558I='), true, 'UTF-8 values are signed as their bytes');
SELECT is(prm.verify_twilio_signature('https://example.com/sms',
          '{"body": "x", "To": "+15558001111", "FromCity": "BOSTON", "From": "+15551234567"}',
          'lGtqJ8aOPKRvliX6mAukLJHDzLE='), true, 'names in byte order: From < FromCity < To < body');
SELECT is(prm.verify_twilio_signature('https://example.com/wa',
          '{"To": "whatsapp:+15558002222", "From": "whatsapp:+15551234567", "Body": "hello"}',
          'lP6NAxEiTEMITbEUMC6MpjBzMfU='), true, 'WhatsApp, routed by whatsapp_number');
SELECT is(prm.verify_twilio_signature('https://example.com/status?MessageSid=SM1&MessageStatus=delivered', '{}',
          'uDYfevdx74gQuaD8p2ULeEXaM6k=', :org_a), true, 'a GET: the URL alone, with org_id');
SELECT is(prm.verify_twilio_signature(:url, '{"To": "+1 (555) 800-1111", "From": "+15551234567", "Body": "YES"}', :sig, NULL),
          false, 'To in another format still routes to A (then the signature does not match)');

--
-- every change makes it false
--
SELECT is(prm.verify_twilio_signature(:url, '{"To": "+15558001111", "From": "+15551234567", "Body": "NO"}', :sig),
          false, 'a changed parameter');
SELECT is(prm.verify_twilio_signature(:url, '{"To": "+15558001111", "From": "+15551234567", "Body": "YES "}', :sig),
          false, 'a parameter with a trailing space');
SELECT is(prm.verify_twilio_signature(:url, '{"To": "+15558001111", "From": "+15551234567", "Body": "YES", "X": ""}', :sig),
          false, 'an added parameter, even empty');
SELECT is(prm.verify_twilio_signature(:url, '{"To": "+15558001111", "From": "+15551234567"}', :sig),
          false, 'a parameter left out');
SELECT is(prm.verify_twilio_signature(:url, '{"To": "+15558001111", "From": "+15551234567", "body": "YES"}', :sig),
          false, 'a name in another case');
SELECT is(prm.verify_twilio_signature('http://example.com/sms?x=1', :params, :sig), false, 'http instead of https');
SELECT is(prm.verify_twilio_signature('https://example.com/sms/?x=1', :params, :sig), false, 'a trailing slash');
SELECT is(prm.verify_twilio_signature('https://example.com/sms?x=2', :params, :sig), false, 'a changed query string');
SELECT is(prm.verify_twilio_signature('https://example.com:443/sms?x=1', :params, :sig), false, 'a port added');
SELECT is(prm.verify_twilio_signature(:url, :params, '01GIlTUguOfWfwndAJ2//wLd7QB='), false, 'one character of the signature');
SELECT is(prm.verify_twilio_signature(:url, :params, '01gIlTUguOfWfwndAJ2//wLd7Q0='), false, 'the signature in another case');
SELECT is(prm.verify_twilio_signature(:url, :params, '01GIlTUguOfWfwndAJ2//wLd7Q0'), false, 'a signature one character short');
SELECT is(prm.verify_twilio_signature(:url, :params, '01GIlTUguOfWfwndAJ2//wLd7Q0=A'), false, 'a signature one character long');
SELECT is(prm.verify_twilio_signature(:url, :params, ''), false, 'an empty signature');
SELECT is(prm.verify_twilio_signature(:url, :params, ' 01GIlTUguOfWfwndAJ2//wLd7Q0='), false, 'a signature with a space');
SELECT is(prm.verify_twilio_signature(:url, :params, NULL), false, 'no signature (NULL): false');
SELECT is(prm.verify_twilio_signature(:url, :params, '1s0n8q4LctvhVEzqocO4tMRUzb4='), false,
          'the signature under another token');
RESET ROLE;
SET LOCAL ROLE regress_sig_admin;
SELECT lives_ok(format($$SELECT prm.set_channel_credential(%s, 'twilio', '0123456789abcdef0123456789abcdef')$$, :org_a),
                'admin replaces the token');
RESET ROLE;
SET LOCAL ROLE regress_sig_hook;
SELECT is(prm.verify_twilio_signature(:url, :params, :sig), false, 'the old token''s signature is refused');
SELECT is(prm.verify_twilio_signature(:url, :params, '1s0n8q4LctvhVEzqocO4tMRUzb4='), true, 'the new token''s is accepted');
RESET ROLE;
SELECT is((SELECT count(*) FROM prm.channel_credential WHERE org_id = :org_a)::int, 1, 'replaced, not added');
SELECT is((SELECT count(*) FROM prm.event WHERE org_id = :org_a AND kind = 'channel_credential_set')::int, 2,
          'each setting is an event');
SET LOCAL ROLE regress_sig_hook;
\set sig '''1s0n8q4LctvhVEzqocO4tMRUzb4='''

--
-- bad input
--
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(NULL, %L, %L)', :params, :sig), '22004', NULL, 'NULL url');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, NULL, %L)', :url, :sig), '22004', NULL, 'NULL params');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', '', :params, :sig), '22023', NULL, 'empty url');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', 'ftp://example.com/sms', :params, :sig),
                 '22023', 'url must be an http or https URL', 'a URL that is not http(s)');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', 'https://example.com/' || repeat('a', 2030), :params, :sig),
                 '22001', NULL, 'a URL longer than 2048 characters');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '[]', :sig),
                 '22023', 'params must be a JSON object', 'params an array');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '"To"', :sig),
                 '22023', 'params must be a JSON object', 'params a string');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": "+15558001111", "Body": {"a": "b"}}', :sig),
                 '22023', 'parameter "Body" of params is an object', 'a nested object');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": "+15558001111", "NumMedia": 0}', :sig),
                 '22023', 'parameter "NumMedia" of params is not a string', 'a number');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": "+15558001111", "Body": null}', :sig),
                 '22023', NULL, 'a JSON null');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": "+15558001111", "Ok": true}', :sig),
                 '22023', NULL, 'a boolean');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": "+15558001111", "Tag": ["a", 1]}', :sig),
                 '22023', NULL, 'a number in an array');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": "+15558001111", "Tag": [["a"]]}', :sig),
                 '22023', NULL, 'an array in an array');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url,
                        jsonb_build_object('To', '+15558001111', 'Body', repeat('x', 300000)), :sig),
                 '22001', 'params is too large', 'oversized params');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url,
                        jsonb_build_object('To', '+15558001111', 'Tag', (SELECT jsonb_agg(i::text) FROM generate_series(1, 1000) i)), :sig),
                 '22023', 'params has more than 1000 values', 'too many values');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"From": "+15551234567"}', :sig),
                 '22023', 'params has no "To" string to find the organization by', 'no To and no org_id');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": ["+15558001111"]}', :sig),
                 '22023', NULL, 'To not a string');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": "+15557770000"}', :sig),
                 'P0002', 'no organization has the SMS number +15557770000', 'a number no organization owns');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": "whatsapp:+15558001111"}', :sig),
                 'P0002', 'no organization has the WhatsApp number +15558001111', 'A''s SMS number is not its WhatsApp number');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, '{"To": "not a number"}', :sig),
                 'P0002', NULL, 'a To that is no number');
-- injection: names and values are data, signed and compared as bytes
SELECT is(prm.verify_twilio_signature($$https://example.com/sms?x=1'; DROP TABLE prm.channel_credential; --$$,
          jsonb_build_object('To', '+15558001111', $$'; DELETE FROM prm.channel_credential; --$$, $$' OR '1'='1$$,
                             'Body', E'\\"); SELECT pg_sleep(10); --\x01'),
          $$' OR '1'='1$$), false, 'injection strings in url, names, values and signature: just false');
RESET ROLE;
SELECT is((SELECT count(*) FROM prm.channel_credential)::int, 3, 'and every credential is still there');

--
-- tenancy: another organization's webhook
--
SET LOCAL ROLE regress_sig_hook_b;
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L, %s)', :url, :params, :sig, :org_a),
                 '42501', NULL, 'B''s webhook cannot verify with A''s token by org_id');
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, :params, :sig),
                 '42501', 'permission denied for SMS number +15558001111', 'B''s webhook cannot verify a request to A''s number');
SELECT throws_ok('SELECT auth_token FROM prm.channel_credential', '42501', NULL, 'B''s webhook cannot read the table');
RESET ROLE;

--
-- nobody but the admin reads the token
--
SELECT ok(NOT has_table_privilege('regress_sig_staff', 'prm.channel_credential', 'SELECT')
          AND NOT has_table_privilege('regress_sig_ro', 'prm.channel_credential', 'SELECT')
          AND NOT has_table_privilege('regress_sig_hook', 'prm.channel_credential', 'SELECT')
          AND has_table_privilege('regress_sig_ro', 'prm.patient', 'SELECT'),
          'staff, readonly and webhook have no SELECT on channel_credential (readonly still reads patients)');
SET LOCAL ROLE regress_sig_staff;
SELECT throws_ok('SELECT auth_token FROM prm.channel_credential', '42501', NULL, 'staff: permission denied');
RESET ROLE;
SET LOCAL ROLE regress_sig_ro;
SELECT throws_ok('SELECT auth_token FROM prm.channel_credential', '42501', NULL, 'readonly: permission denied');
RESET ROLE;
SET LOCAL ROLE regress_sig_hook;
SELECT throws_ok('SELECT auth_token FROM prm.channel_credential', '42501', NULL, 'webhook: permission denied');
RESET ROLE;
SET LOCAL ROLE regress_sig_admin;
SELECT results_eq('SELECT org_id, auth_token FROM prm.channel_credential',
                  format($$VALUES (%s::bigint, '0123456789abcdef0123456789abcdef'::text)$$, :org_a),
                  'A''s admin reads A''s token, and no other');
RESET ROLE;
SET LOCAL ROLE regress_sig_admin_b;
SELECT results_eq('SELECT org_id FROM prm.channel_credential', ARRAY[:org_b::bigint], 'B''s admin reads only B''s');
RESET ROLE;
-- defence in depth: SELECT granted by hand still shows a staff role no row,
-- and pg_dump's row_security = off is refused rather than filtered
GRANT SELECT ON prm.channel_credential TO regress_sig_staff;
SET LOCAL ROLE regress_sig_staff;
SELECT is_empty('SELECT 1 FROM prm.channel_credential', 'staff with a hand-made GRANT: row-level security shows no row');
SET LOCAL row_security = off;
SELECT throws_ok('SELECT 1 FROM prm.channel_credential', '42501', NULL, 'staff, as pg_dump does it (row_security off): refused');
RESET row_security;
RESET ROLE;
REVOKE SELECT ON prm.channel_credential FROM regress_sig_staff;
-- an admin moved down to staff loses the table
SELECT prm.grant_access('regress_sig_admin_b', :org_b, 'staff');
SELECT ok(NOT has_table_privilege('regress_sig_admin_b', 'prm.channel_credential', 'SELECT'),
          'an admin made staff loses SELECT on channel_credential');
SET LOCAL ROLE regress_sig_admin_b;
SELECT throws_ok('SELECT 1 FROM prm.channel_credential', '42501', NULL, 'and cannot read it any more');
RESET ROLE;

--
-- removing the credential
--
SET LOCAL ROLE regress_sig_admin;
SELECT is(prm.remove_channel_credential(:org_a, 'twilio'), true, 'admin removes the token');
SELECT is(prm.remove_channel_credential(:org_a, 'twilio'), false, 'removing again: there was none');
SELECT throws_ok(format($$SELECT prm.remove_channel_credential(%s, 'twilio')$$, :org_b), '42501', NULL, 'not B''s');
SELECT throws_ok(format($$SELECT prm.remove_channel_credential(%s, 'sms')$$, :org_a), '22023', NULL, 'unknown provider');
RESET ROLE;
SET LOCAL ROLE regress_sig_hook;
SELECT throws_ok(format('SELECT prm.verify_twilio_signature(%L, %L, %L)', :url, :params, :sig),
                 '55000', NULL, 'after removal: 55000 again');
RESET ROLE;
SELECT is((SELECT count(*) FROM prm.event WHERE org_id = :org_a AND kind = 'channel_credential_removed')::int, 1,
          'the removal is an event');
SELECT lives_ok(format('DELETE FROM prm.organization WHERE id = %s', :org_doc), 'an organization can be deleted');
SELECT is((SELECT count(*) FROM prm.channel_credential WHERE org_id = :org_doc)::int, 0, 'and its credential goes with it');

SELECT * FROM finish();
ROLLBACK;
