-- Benchmark 4 set-up: an organization with 1,000,000 waiting entries
-- (100,000 patients, each waiting for each of 10 providers), and the
-- priority formula of src/scoring.c written in PL/pgSQL.
-- The entries are bulk-inserted as superuser with session_replication_role
-- = replica (no foreign-key or score triggers: the rows are valid by
-- construction and every score is recomputed by the benchmark anyway).
\set ON_ERROR_STOP 1
\set QUIET on
SELECT setseed(0.4);
SELECT prm.create_organization('Bench Recalc', 'UTC', '+15558000004') AS org \gset
INSERT INTO bench.setting VALUES ('recalc_org', :'org');
CREATE TABLE bench.recalc_provider AS
SELECT g AS n, prm.add_provider(:org, 'Provider ' || g) AS id FROM generate_series(1, 10) g;
-- patients in transactions of 5,000 (\gexec runs each row on its own): prm's
-- statistics trigger takes one advisory lock per patient and transaction
SELECT format('INSERT INTO prm.patient (org_id, given_name, family_name, phone)'
              ' SELECT %s, ''Pat'', ''Recalc'' || g, ''+1557'' || lpad(g::text, 7, ''0'')'
              '   FROM generate_series(%s, %s) g', :org, b, b + 4999)
  FROM generate_series(1, 100000, 5000) b \gexec
SET session_replication_role = replica;
INSERT INTO prm.waitlist_entry (org_id, patient_id, provider_id, urgent, manual_boost, joined_at,
                                current_appointment_at)
SELECT :org, p.id, pr.id,
       random() < 0.1,
       CASE WHEN random() < 0.2 THEN 1 + floor(random() * 40)::int ELSE 0 END,
       now() - random() * interval '180 days',
       CASE WHEN random() < 0.7 THEN now() + random() * interval '120 days' END
  FROM prm.patient p CROSS JOIN bench.recalc_provider pr
 WHERE p.org_id = :org;
RESET session_replication_role;
VACUUM ANALYZE prm.waitlist_entry;

-- The formula documented at the top of src/scoring.c, in PL/pgSQL: what prm
-- would run if its scoring were not C.  Same arithmetic (double precision
-- days, floor, caps), same signature as prm.priority_score's weighted form.
CREATE FUNCTION bench.priority_score_plpgsql(urgent boolean, manual_boost int,
        current_appointment_at timestamptz, joined_at timestamptz, as_of timestamptz,
        weight_urgent int, weight_wait int, weight_seniority int,
        wait_full_days int, seniority_full_days int)
RETURNS int LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    days_to_wait  double precision;
    days_on_list  double precision;
    wait_points   int;
    senior_points int;
BEGIN
    IF urgent IS NULL OR manual_boost IS NULL OR joined_at IS NULL OR as_of IS NULL
       OR weight_urgent IS NULL OR weight_wait IS NULL OR weight_seniority IS NULL
       OR wait_full_days IS NULL OR seniority_full_days IS NULL THEN
        RETURN NULL;
    END IF;
    IF manual_boost < 0 OR manual_boost > 40 THEN
        RAISE EXCEPTION 'manual boost % is out of range', manual_boost
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- wait: full points without an appointment, else grows with the days to wait
    IF current_appointment_at IS NULL THEN
        wait_points := weight_wait;
    ELSE
        days_to_wait := (extract(epoch FROM current_appointment_at - as_of) * 1000000)::bigint
                        / 86400000000.0::double precision;
        IF days_to_wait <= 0 THEN
            wait_points := 0;
        ELSIF days_to_wait >= wait_full_days THEN
            wait_points := weight_wait;
        ELSE
            wait_points := floor(weight_wait * days_to_wait / wait_full_days);
        END IF;
    END IF;
    -- seniority: grows with the days on the list
    days_on_list := (extract(epoch FROM as_of - joined_at) * 1000000)::bigint
                    / 86400000000.0::double precision;
    IF days_on_list <= 0 THEN
        senior_points := 0;
    ELSIF days_on_list >= seniority_full_days THEN
        senior_points := weight_seniority;
    ELSE
        senior_points := floor(weight_seniority * days_on_list / seniority_full_days);
    END IF;
    RETURN CASE WHEN urgent THEN weight_urgent ELSE 0 END + manual_boost + wait_points + senior_points;
END;
$$;
\set QUIET off
SELECT count(*) AS waiting_entries FROM prm.waitlist_entry WHERE org_id = :org AND status = 'waiting';
