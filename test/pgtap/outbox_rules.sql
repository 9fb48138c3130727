-- The rules of an outbound message's columns (src/outbox_rules.c): one
-- CHECK constraint on prm.outbound_message and one on its history, each a
-- call of prm.outbound_message_check(), refuse what the eight CHECK
-- expressions of 0.2.0 refused, with 23514 and a message naming the column
-- and its rule, and leave the row as it was.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(29);

SELECT is((SELECT pg_catalog.string_agg(k.conname || ': ' || pg_catalog.pg_get_constraintdef(k.oid), '; ')
             FROM pg_catalog.pg_constraint k
            WHERE k.conrelid = 'prm.outbound_message'::regclass AND k.contype = 'c'),
          'outbound_message_check: CHECK (prm.outbound_message_check(channel, to_address, body, status, dedup_key, provider_message_id, campaign, message_class))',
          'the outbox has one CHECK constraint, the call of prm.outbound_message_check');
SELECT is((SELECT pg_catalog.string_agg(k.conname || ': ' || pg_catalog.pg_get_constraintdef(k.oid), '; ')
             FROM pg_catalog.pg_constraint k
            WHERE k.conrelid = 'prm.outbound_message_history'::regclass AND k.contype = 'c'),
          'outbound_message_check: CHECK (prm.outbound_message_check(channel, to_address, body, status, dedup_key, provider_message_id, campaign, message_class))',
          'and so has its history');
SELECT is((SELECT p.provolatile::text || p.proisstrict::text FROM pg_catalog.pg_proc p
            WHERE p.oid = 'prm.outbound_message_check(text,text,text,text,text,text,text,text)'::regprocedure),
          'ifalse', 'the check is IMMUTABLE and not strict (a NULL column passes)');
SELECT is(prm.outbound_message_check(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), true, 'NULLs pass');
SELECT is(prm.outbound_message_check('push', 'patient:1', 'hi', 'refused', 'k', 'SM1', 'spring', 'promotional'),
          true, 'a row within every rule passes');

SELECT prm.create_organization('Rules', 'UTC', '+15558019000') AS org \gset
SELECT prm.enqueue_message(:org, 'sms', '+15558019001', 'hi') AS msg \gset
CREATE TEMP TABLE before_ AS SELECT * FROM prm.outbound_message WHERE id = :msg;

-- each rule, by an UPDATE of the message
SELECT throws_ok(format($$UPDATE prm.outbound_message SET channel = 'fax' WHERE id = %s$$, :msg), '23514',
                 'the channel of an outbound message must be sms, whatsapp, email, voice or push',
                 'a channel outside the list is refused');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET status = 'bogus' WHERE id = %s$$, :msg), '23514',
                 'the status of an outbound message must be queued, sending, sent, delivered, undelivered, failed, read, dead, cancelled, capped or refused',
                 'a status outside the list is refused');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET status = 'Queued' WHERE id = %s$$, :msg), '23514', NULL,
                 'the list is matched exactly (case)');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET status = 'queued ' WHERE id = %s$$, :msg), '23514', NULL,
                 'and whole (a trailing space)');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET status = %L WHERE id = %s$$, 'sent'' OR true --', :msg), '23514', NULL,
                 'an injection string is just a value outside the list');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET status = 'queuedx' WHERE id = %s$$, :msg), '23514', NULL,
                 'a value that starts with a status is not one');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET message_class = 'marketing' WHERE id = %s$$, :msg), '23514',
                 'the message_class of an outbound message must be promotional or exempt',
                 'a class outside the list is refused');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET to_address = repeat('1', 321) WHERE id = %s$$, :msg), '23514',
                 'the to_address of an outbound message is too long', 'an address of 321 characters is refused');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET body = repeat('b', 1601) WHERE id = %s$$, :msg), '23514',
                 'the body of an outbound message is too long', 'a body of 1601 characters is refused');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET dedup_key = repeat('k', 201) WHERE id = %s$$, :msg), '23514',
                 'the dedup_key of an outbound message is too long', 'a dedup key of 201 characters is refused');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET provider_message_id = repeat('p', 201) WHERE id = %s$$, :msg), '23514',
                 'the provider_message_id of an outbound message is too long', 'a provider id of 201 characters is refused');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET campaign = repeat('c', 101) WHERE id = %s$$, :msg), '23514',
                 'the campaign of an outbound message is too long', 'a campaign of 101 characters is refused');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET body = repeat('é', 1601) WHERE id = %s$$, :msg), '23514', NULL,
                 '1601 two-byte characters are refused too');
SELECT results_eq($$SELECT * FROM prm.outbound_message WHERE id = $$ || :msg, 'SELECT * FROM before_',
                  'every refused change left the message as it was');

-- the limits are characters, not bytes, and a value at the limit passes
SELECT lives_ok(format($$UPDATE prm.outbound_message SET body = repeat('é', 1600), to_address = repeat('ü', 320),
                          dedup_key = repeat('ß', 200), provider_message_id = repeat('p', 200),
                          campaign = repeat('ç', 100) WHERE id = %s$$, :msg),
                'values at every limit pass, counted in characters (two bytes each here)');
SELECT lives_ok(format($$UPDATE prm.outbound_message SET dedup_key = NULL, provider_message_id = NULL, campaign = NULL WHERE id = %s$$, :msg),
                'the optional columns may be NULL');
SELECT is((SELECT pg_catalog.count(*)::int FROM pg_catalog.unnest(
              '{queued,sending,sent,delivered,undelivered,failed,read,dead,cancelled,capped,refused}'::text[]) s
            WHERE prm.outbound_message_check('sms', '+1', 'b', s, NULL, NULL, NULL, 'exempt')),
          11, 'each of the eleven statuses passes');
SELECT is((SELECT pg_catalog.count(*)::int FROM pg_catalog.unnest('{sms,whatsapp,email,voice,push}'::text[]) c
            WHERE prm.outbound_message_check(c, '+1', 'b', 'queued', NULL, NULL, NULL, 'exempt')),
          5, 'each of the five channels passes');

-- the history: the same rule
SELECT throws_ok(format($$INSERT INTO prm.outbound_message_history (org_id, id, channel, to_address, body, status)
                          VALUES (%s, 999999, 'sms', '+15558019001', 'hi', 'bogus')$$, :org), '23514', NULL,
                 'the history refuses a status outside the list');
SELECT throws_ok(format($$INSERT INTO prm.outbound_message_history (org_id, id, channel, to_address, body, status)
                          VALUES (%s, 999999, 'pigeon', '+15558019001', 'hi', 'sent')$$, :org), '23514', NULL,
                 'and a channel outside it');
SELECT is((SELECT pg_catalog.count(*)::int FROM prm.outbound_message_history WHERE id = 999999), 0,
          'nothing refused reached the history');

-- the functions taking a channel check it against the same list (22023: an argument)
SELECT throws_ok(format($$SELECT prm.enqueue_message(%s, 'fax', '+15558019001', 'hi')$$, :org), '22023',
                 'channel "fax" is not recognized', 'enqueue_message refuses a channel outside the list');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('pigeon', 1)$$, '22023', NULL,
                 'claim_messages too');
SELECT throws_ok(format($$SELECT prm.enqueue_message(%s, 'sms', '+15558019001', repeat('b', 1601))$$, :org), '22001', NULL,
                 'enqueue_message refuses a body over the limit before it reaches the table');

SELECT * FROM finish();
ROLLBACK;
