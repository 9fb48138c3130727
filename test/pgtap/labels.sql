-- Honest catalog labels: the functions prm declares STABLE or IMMUTABLE are
-- exactly the reviewed read-only ones below, each of them really runs in a
-- read-only transaction and in a parallel worker, and every other prm
-- function is VOLATILE PARALLEL UNSAFE.  A new function labelled STABLE or
-- IMMUTABLE fails the first test until it is reviewed and added here with a
-- call that proves it.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(11);

SELECT prm.create_organization('Labels Clinic', 'UTC', '+15558060000') AS org \gset
SELECT prm.add_provider(:org, 'Dr L') AS dr \gset
SELECT prm.add_patient(:org, 'Lena', 'Label', '+15558061001') AS patient \gset
SELECT prm.join_waitlist(:org, :patient) AS entry \gset
SELECT prm.add_therapist(:org, 'Dr T', 't@example.de', 52.52, 13.40, ARRAY['de'], ARRAY['cbt'], 1) AS therapist \gset
SELECT prm.add_placement_request(:org, :patient, 52.5, 13.4, 20, ARRAY['de'], 'cbt') AS request \gset

-- The read-only functions, reviewed against their C: what each may be
-- labelled and a call that exercises it.
CREATE TEMP TABLE readonly_function (signature text PRIMARY KEY, volatility "char", call text);
INSERT INTO readonly_function VALUES
    ('prm.priority_score(boolean,integer,timestamp with time zone,timestamp with time zone,timestamp with time zone)', 'i',
     $$SELECT prm.priority_score(true, 10, now() + interval '30 days', now() - interval '9 days', now())$$),
    ('prm.priority_score(boolean,integer,timestamp with time zone,timestamp with time zone,timestamp with time zone,integer,integer,integer,integer,integer)', 'i',
     $$SELECT prm.priority_score(true, 10, NULL, now() - interval '9 days', now(), 30, 20, 10, 60, 90)$$),
    ('prm.visit_rhythm_days(integer,double precision,double precision)', 'i', $$SELECT prm.visit_rhythm_days(4, 30, 180)$$),
    ('prm.churn_risk(integer,double precision,double precision,boolean,double precision,double precision,double precision,double precision,double precision)', 'i',
     $$SELECT prm.churn_risk(4, 70, 30, false, 0.1)$$),
    ('prm.engagement_score(integer,double precision,double precision,boolean,double precision,double precision,double precision,double precision,double precision)', 'i',
     $$SELECT prm.engagement_score(4, 70, 30, false, 0.1, 0.5)$$),
    ('prm.engagement_level(integer,double precision,double precision,boolean,double precision,double precision,double precision,double precision,double precision,double precision,double precision,double precision)', 'i',
     $$SELECT prm.engagement_level(4, 70, 30, false, 0.1, 0.5)$$),
    ('prm.lifetime_value(numeric,integer,double precision,text,double precision,double precision)', 'i',
     $$SELECT prm.lifetime_value(400, 4, 30, 'medium')$$),
    -- the outbox's CHECK: its arguments only, in C (src/outbox_rules.c)
    ('prm.outbound_message_check(text,text,text,text,text,text,text,text)', 'i',
     $$SELECT prm.outbound_message_check('sms', '+15558061001', 'hi', 'queued', NULL, NULL, NULL, 'exempt')$$),
    ('prm.therapist_distance_km(double precision,double precision,double precision,double precision)', 'i',
     $$SELECT prm.therapist_distance_km(52.52, 13.40, 48.14, 11.58)$$),
    -- reads prm.default_region when no region is given
    ('prm.normalize_phone(text,text)', 's', $$SELECT prm.normalize_phone('(212) 555-0100')$$),
    ('prm.settings(bigint)', 's', format('SELECT prm.settings(%s)', :org)),
    ('prm.explain_priority(bigint,bigint)', 's', format('SELECT prm.explain_priority(%s, %s)', :org, :entry)),
    ('prm.render_template(bigint,text,jsonb,text,text)', 's', format($$SELECT prm.render_template(%s, 'help')$$, :org)),
    ('prm.fill_stats(bigint,timestamp with time zone,timestamp with time zone)', 's', format('SELECT prm.fill_stats(%s)', :org)),
    ('prm.rank_therapists(bigint,bigint,integer)', 's', format('SELECT * FROM prm.rank_therapists(%s, %s)', :org, :request)),
    ('prm.reengagement_summary(bigint)', 's', format('SELECT prm.reengagement_summary(%s)', :org)),
    ('prm.outreach_performance(bigint,timestamp with time zone,interval)', 's', format('SELECT prm.outreach_performance(%s)', :org)),
    -- sets pg_trgm.word_similarity_threshold for its own query only (GUC_ACTION_SAVE)
    ('prm.search_patients(bigint,text,integer,text)', 's', format($$SELECT prm.search_patients(%s, 'Lena Labl')$$, :org)),
    ('prm.placement_evidence(bigint,bigint)', 's', format('SELECT prm.placement_evidence(%s, %s)', :org, :request)),
    ('prm.fhir_resource(bigint,text,text)', 's', format($$SELECT prm.fhir_resource(%s, 'Patient', '1')$$, :org)),
    -- companion monitoring: pure local time, and a read of the activity log as the caller
    ('prm.local_to_utc(timestamp without time zone,text)', 's', $$SELECT prm.local_to_utc('2031-03-09 02:30', 'America/New_York')$$),
    ('prm.patient_activity(bigint,bigint,timestamp with time zone,timestamp with time zone,integer,timestamp with time zone)', 's',
     format($$SELECT * FROM prm.patient_activity(%s, %s, now() - interval '1 day')$$, :org, :patient)),
    -- the profile's derived columns; with a passed next appointment it looks the next one up as the caller
    ('prm.patient_judgement(bigint,bigint,integer,integer,integer,integer,timestamp with time zone,numeric,numeric,integer,integer,timestamp with time zone,timestamp with time zone,timestamp with time zone,timestamp with time zone)', 's',
     format($$SELECT prm.patient_judgement(%s, %s, 1, 1, 0, 0, now() - interval '10 days', NULL, 50, 0, 0, NULL, NULL, now() - interval '1 day', now())$$, :org, :patient)),
    -- communications: a kind's class, and a patient's messages both ways
    ('prm.message_class(bigint,text)', 's', format($$SELECT prm.message_class(%s, 'help')$$, :org)),
    ('prm.patient_communications(bigint,bigint,text,text,timestamp with time zone,timestamp with time zone,integer,text)', 's',
     format($$SELECT * FROM prm.patient_communications(%s, %s)$$, :org, :patient));

CREATE TEMP VIEW prm_function AS
SELECT p.oid::regprocedure::text AS signature, p.provolatile, p.proparallel, p.prosecdef, p.proconfig
  FROM pg_proc p WHERE p.pronamespace = 'prm'::regnamespace;

-- Run call with setting = value for the call only (in a subtransaction that
-- is always rolled back); NULL when it succeeds, else SQLSTATE and message.
CREATE FUNCTION pg_temp.run_with(call text, setting text, value text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM set_config(setting, value, true);
        EXECUTE call;
        RAISE EXCEPTION USING ERRCODE = 'PRMOK';
    EXCEPTION
        WHEN SQLSTATE 'PRMOK' THEN RETURN NULL;
        WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM;
    END;
END $$;

-- The workers an EXPLAIN ANALYZE of call launched with parallel query
-- forced on (-1 with the error when it failed).
CREATE FUNCTION pg_temp.workers_launched(call text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    plan json;
BEGIN
    BEGIN
        PERFORM set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
                                THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', true);
        EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF, FORMAT JSON) ' || call INTO plan;
        RAISE EXCEPTION USING ERRCODE = 'PRMOK', MESSAGE = coalesce(plan -> 0 -> 'Plan' ->> 'Workers Launched', '0');
    EXCEPTION
        WHEN SQLSTATE 'PRMOK' THEN RETURN SQLERRM;
        WHEN OTHERS THEN RETURN '-1 ' || SQLSTATE || ' ' || SQLERRM;
    END;
END $$;

SELECT set_eq($$SELECT signature FROM prm_function WHERE provolatile <> 'v'$$,
              $$SELECT signature FROM readonly_function$$,
              'the STABLE and IMMUTABLE prm functions are exactly the reviewed read-only ones');
SELECT is_empty($$SELECT f.signature FROM prm_function f JOIN readonly_function r USING (signature)
                   WHERE f.provolatile <> r.volatility OR f.proparallel <> 's'$$,
                'each read-only function has its reviewed volatility and is PARALLEL SAFE');
SELECT is_empty($$SELECT signature FROM prm_function
                   WHERE signature NOT IN (SELECT signature FROM readonly_function)
                     AND (provolatile <> 'v' OR proparallel <> 'u')$$,
                'every other prm function (they write, lock or notify) is VOLATILE PARALLEL UNSAFE');
SELECT is_empty($$SELECT signature FROM prm_function WHERE provolatile = 'i' AND prosecdef$$,
                'no IMMUTABLE function is SECURITY DEFINER (pure functions read no table)');
SELECT is_empty($$SELECT signature FROM prm_function
                   WHERE prosecdef AND NOT coalesce(proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
                'every SECURITY DEFINER function pins search_path');
SELECT is((SELECT provolatile::text || proparallel::text FROM prm_function WHERE signature = 'prm.export_patient(bigint,bigint)'), 'vu',
          'export_patient (writes an audit event, notifies, logs) is VOLATILE PARALLEL UNSAFE');

-- the read-only ones really are: in a read-only transaction nothing fails
SELECT alike(pg_temp.run_with(format('SELECT prm.export_patient(%s, %s)', :org, :patient), 'transaction_read_only', 'on'),
            '25006 %', 'a function that writes fails in a read-only transaction (the check can fail)');
SELECT is(ARRAY(SELECT signature || ': ' || e FROM readonly_function,
                LATERAL pg_temp.run_with(call, 'transaction_read_only', 'on') e WHERE e IS NOT NULL ORDER BY 1),
          '{}'::text[], 'every read-only function runs in a read-only transaction');
-- and each call works as written (so the checks above are not vacuous)
SELECT is(ARRAY(SELECT signature || ': ' || e FROM readonly_function,
                LATERAL pg_temp.run_with(call, 'application_name', 'labels') e WHERE e IS NOT NULL ORDER BY 1),
          '{}'::text[], 'every call of the list succeeds');

-- PARALLEL SAFE is true of them: forced into a parallel worker, they run
SELECT is(ARRAY(SELECT signature || ': ' || w FROM readonly_function,
                LATERAL pg_temp.workers_launched(call) w WHERE w LIKE '-1%' ORDER BY 1),
          '{}'::text[], 'every read-only function runs in a parallel worker');
SELECT ok((SELECT count(*) FROM readonly_function, LATERAL pg_temp.workers_launched(call) w WHERE w::int > 0) > 0,
          'at least one of them was run by a launched worker (the check can fail)');

SELECT * FROM finish();
ROLLBACK;
