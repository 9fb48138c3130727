-- prm 0.3.0, the outbox's column rules in one CHECK: the channels,
-- statuses, classes and lengths of an outbound message, checked by one C
-- function (src/outbox_rules.c says why: PostgreSQL reads every CHECK
-- expression back in every statement that writes the table, and the eight
-- of these cost almost as much as the rest of a one-row insert).  The rules are
-- the same; a violation is still 23514 and names the column and its rule.
-- Adding the constraint checks the rows once, during the update.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

CREATE FUNCTION prm.outbound_message_check(channel text, to_address text, body text, status text,
                                           dedup_key text, provider_message_id text, campaign text,
                                           message_class text)
RETURNS boolean
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_outbound_message_check';
COMMENT ON FUNCTION prm.outbound_message_check(text, text, text, text, text, text, text, text) IS
    'The CHECK of prm.outbound_message and its history: true, or 23514 naming the column and its rule. channel sms, whatsapp, email, voice or push; to_address at most 320 characters; body at most 1600; status queued, sending, sent, delivered, undelivered, failed, read, dead, cancelled, capped or refused; dedup_key and provider_message_id at most 200; campaign at most 100; message_class promotional or exempt. A NULL passes.';
INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.outbound_message_check(text,text,text,text,text,text,text,text)', 'any');

-- Every CHECK of the two tables is one of the eight rules (0.2.0 and 87):
-- all of them go, and the call comes in their place.
DO $$
DECLARE
    tab regclass;
    con name;
BEGIN
    FOREACH tab IN ARRAY ARRAY['prm.outbound_message'::regclass, 'prm.outbound_message_history'::regclass]
    LOOP
        FOR con IN SELECT k.conname FROM pg_catalog.pg_constraint k
                    WHERE k.conrelid = tab AND k.contype = 'c' ORDER BY 1
        LOOP
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', tab, con);
        END LOOP;
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT outbound_message_check'
                       ' CHECK (prm.outbound_message_check(channel, to_address, body, status, dedup_key,'
                       ' provider_message_id, campaign, message_class))', tab);
    END LOOP;
END
$$;
