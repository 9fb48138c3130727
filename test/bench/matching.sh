#!/bin/bash
# Matching benchmark: ranking and assignment over German cities, each printed
# against a baseline, with the ratio.
#
#   PGHOST=... PGPORT=... PGUSER=... bash test/bench/matching.sh
#   (e.g. pg_virtualenv -t bash test/bench/matching.sh after make install)
#
# Needs a running server reachable through the usual PG* variables, a role
# that may create databases, and prm installed.  It creates a scratch
# database prm_bench_matching_<pid>, loads one organization with THERAPISTS
# therapists and REQUESTS open placement requests scattered (random jitter of
# about +-15 km) around 30 German cities, with phone hours, stated times,
# languages, therapy types and 10-40 km maximum distances, then measures:
#
#   1. rank:   prm.rank_therapists(top 10) for every request (C: index
#              bounding box + haversine + score) vs the same hard filters and
#              a haversine ORDER BY ... LIMIT 10 in plain SQL, on SAMPLE
#              requests, per request;
#   2. assign: prm.assign_placements exact (min-cost max-flow) vs greedy
#              (registration order), time, matched requests and total score.
#
# Defaults: 2,000 therapists, 10,000 requests, SAMPLE 500; the database is
# dropped at the end (KEEP=1 keeps it).  setseed makes the data repeatable.
set -eu
THERAPISTS=${THERAPISTS:-2000}
REQUESTS=${REQUESTS:-10000}
SAMPLE=${SAMPLE:-500}
DB=prm_bench_matching_$$
export PGDATABASE=$DB

createdb "$DB"
trap '[ "${KEEP:-0}" = 1 ] || dropdb --if-exists "$DB"' EXIT
P="psql -X -q -v ON_ERROR_STOP=1 -v therapists=$THERAPISTS -v requests=$REQUESTS -v sample=$SAMPLE"

echo "== load: $THERAPISTS therapists, $REQUESTS requests around 30 German cities"
$P <<'SQL'
CREATE EXTENSION prm CASCADE;
SELECT prm.create_organization('Bench placement', 'Europe/Berlin') AS org \gset
SELECT prm.add_patient(:org, 'Bench', 'Patient', '+4930555555') AS pat \gset
CREATE TABLE city (n int, name text, lat float8, lon float8);
INSERT INTO city VALUES
 (1,'Berlin',52.520,13.405),(2,'Hamburg',53.551,9.994),(3,'Muenchen',48.137,11.575),
 (4,'Koeln',50.938,6.960),(5,'Frankfurt',50.110,8.682),(6,'Stuttgart',48.776,9.183),
 (7,'Duesseldorf',51.227,6.773),(8,'Leipzig',51.340,12.375),(9,'Dortmund',51.514,7.468),
 (10,'Essen',51.456,7.012),(11,'Bremen',53.079,8.802),(12,'Dresden',51.050,13.738),
 (13,'Hannover',52.376,9.732),(14,'Nuernberg',49.452,11.077),(15,'Duisburg',51.435,6.763),
 (16,'Bochum',51.482,7.216),(17,'Wuppertal',51.256,7.151),(18,'Bielefeld',52.030,8.532),
 (19,'Bonn',50.737,7.098),(20,'Muenster',51.961,7.626),(21,'Mannheim',49.488,8.466),
 (22,'Karlsruhe',49.007,8.404),(23,'Augsburg',48.371,10.898),(24,'Wiesbaden',50.078,8.240),
 (25,'Kiel',54.323,10.123),(26,'Freiburg',47.999,7.842),(27,'Rostock',54.092,12.099),
 (28,'Erfurt',50.985,11.030),(29,'Kassel',51.312,9.480),(30,'Magdeburg',52.121,11.628);
SELECT setseed(0.2031) \gset
INSERT INTO prm.therapist (org_id, name, email, latitude, longitude, languages, therapy_types,
                           gender, open_places, accepts_contact, timezone, contacts_total, answers_total)
SELECT :org, 'Therapist ' || g, 't' || g || '@example.org',
       c.lat + (random() - 0.5) * 0.27, c.lon + (random() - 0.5) * 0.43,
       CASE WHEN random() < 0.3 THEN '{de,en}' WHEN random() < 0.1 THEN '{de,tr}' ELSE '{de}' END::text[],
       (ARRAY['{cbt}', '{cbt,systemic}', '{psychodynamic}', '{analytic,psychodynamic}', '{cbt,humanistic}'])[1 + (g % 5)]::text[],
       (ARRAY['female', 'male', 'female'])[1 + (g % 3)], (random() * 3)::int, random() < 0.9, 'Europe/Berlin',
       c2, (c2 * random())::int
  FROM generate_series(1, :therapists) g
  JOIN city c ON c.n = 1 + (g % 30), LATERAL (SELECT (random() * 20)::int AS c2 OFFSET 0) x;
INSERT INTO prm.therapist_phone_hours (org_id, therapist_id, day_of_week, starts, ends)
SELECT t.org_id, t.id, 1 + ((t.id + k) % 5), time '08:00' + ((t.id * 7 + k) % 8) * interval '1 hour',
       time '08:50' + ((t.id * 7 + k) % 8) * interval '1 hour'
  FROM prm.therapist t, generate_series(0, 1) k;
INSERT INTO prm.placement_request (org_id, patient_id, latitude, longitude, max_distance_km, languages,
                                   therapy_type, gender_preference, birth_year, registered_at)
SELECT :org, :pat, c.lat + (random() - 0.5) * 0.27, c.lon + (random() - 0.5) * 0.43, 10 + 30 * random(),
       CASE WHEN random() < 0.1 THEN '{tr}' WHEN random() < 0.2 THEN '{en}' ELSE '{de}' END::text[],
       (ARRAY['cbt', 'cbt', 'psychodynamic', 'systemic', 'analytic'])[1 + (g % 5)],
       CASE WHEN random() < 0.3 THEN 'female' END, 1950 + (random() * 55)::int,
       '2031-01-01'::timestamptz + g * interval '17 minutes'
  FROM generate_series(1, :requests) g
  JOIN city c ON c.n = 1 + ((g * 7) % 30);
INSERT INTO prm.placement_request_time (org_id, request_id, day_of_week, starts, ends)
SELECT r.org_id, r.id, 1 + (r.id % 5), '09:00', '13:00' FROM prm.placement_request r WHERE r.id % 2 = 0;
ANALYZE;
SQL

echo
echo "== 1. rank the top 10 for every request"
$P <<'SQL'
SELECT id AS org FROM prm.organization \gset
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE ranked AS
SELECT r.id AS request_id, x.* FROM prm.placement_request r, LATERAL prm.rank_therapists(r.org_id, r.id, 10) x;
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS c_secs \gset
SELECT count(*) AS c_rows, count(DISTINCT request_id) AS c_reqs FROM ranked \gset
-- baseline: the same hard filters, haversine in SQL over every therapist
SELECT clock_timestamp() AS t1 \gset
CREATE TEMP TABLE ranked_sql AS
SELECT r.id AS request_id, x.*
  FROM (SELECT * FROM prm.placement_request ORDER BY id LIMIT :sample) r,
  LATERAL (SELECT t.id, d.km
             FROM prm.therapist t,
             LATERAL (SELECT 2 * 6371.0088 * asin(sqrt(power(sin(radians(t.latitude - r.latitude) / 2), 2)
                        + cos(radians(r.latitude)) * cos(radians(t.latitude))
                          * power(sin(radians(t.longitude - r.longitude) / 2), 2))) AS km) d
            WHERE t.org_id = r.org_id AND t.accepts_contact AND t.open_places > 0
              AND r.therapy_type = ANY (t.therapy_types) AND t.languages && r.languages
              AND d.km <= r.max_distance_km
            ORDER BY d.km LIMIT 10) x;
SELECT extract(epoch FROM clock_timestamp() - :'t1'::timestamptz) AS b_secs \gset
SELECT count(*) AS same FROM (SELECT request_id, count(*) FROM ranked WHERE request_id IN (SELECT request_id FROM ranked_sql) GROUP BY 1) a
  JOIN (SELECT request_id, count(*) FROM ranked_sql GROUP BY 1) b USING (request_id, count) \gset
\echo prm.rank_therapists: :c_rows rows for :c_reqs requests with candidates
SELECT format('  prm (C, index box + haversine + score): %s requests in %s s = %s ms/request',
              (SELECT count(*) FROM prm.placement_request), round(:c_secs::numeric, 2),
              round(1000 * :c_secs::numeric / (SELECT count(*) FROM prm.placement_request), 3)) AS line
\gset
\echo :line
SELECT format('  baseline (SQL haversine, full scan, distance order): %s requests in %s s = %s ms/request',
              :sample, round(:b_secs::numeric, 2), round(1000 * :b_secs::numeric / :sample, 3)) AS line \gset
\echo :line
SELECT format('  ratio baseline/prm per request: %sx   (candidate counts agree on %s of %s sampled requests with candidates)',
              round((:b_secs::numeric / :sample) / (:c_secs::numeric / (SELECT count(*) FROM prm.placement_request)), 1),
              :same, (SELECT count(DISTINCT request_id) FROM ranked_sql)) AS line \gset
\echo :line
SQL

echo
echo "== 2. assignment: exact (min-cost max-flow) vs greedy (registration order)"
$P <<'SQL'
SELECT id AS org FROM prm.organization \gset
SELECT sum(open_places) AS places FROM prm.therapist WHERE accepts_contact \gset
SELECT clock_timestamp() AS t0 \gset
CREATE TEMP TABLE ex AS SELECT * FROM prm.assign_placements(:org, 'exact');
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS e_secs \gset
SELECT clock_timestamp() AS t1 \gset
CREATE TEMP TABLE gr AS SELECT * FROM prm.assign_placements(:org, 'greedy');
SELECT extract(epoch FROM clock_timestamp() - :'t1'::timestamptz) AS g_secs \gset
SELECT count(*) AS e_n, round(sum(score)::numeric, 2) AS e_s FROM ex \gset
SELECT count(*) AS g_n, round(sum(score)::numeric, 2) AS g_s FROM gr \gset
SELECT count(*) AS over FROM (SELECT therapist_id, count(*) FROM ex GROUP BY 1) x
  JOIN prm.therapist t ON t.id = x.therapist_id WHERE x.count > t.open_places \gset
\echo free places (accepting therapists): :places
SELECT format('  exact:  %s matched, total score %s, %s s', :e_n, :e_s, round(:e_secs::numeric, 2)) AS line \gset
\echo :line
SELECT format('  greedy: %s matched, total score %s, %s s   (baseline)', :g_n, :g_s, round(:g_secs::numeric, 2)) AS line \gset
\echo :line
SELECT format('  exact/greedy: matched %s (+%s), score %s, time %sx', round(:e_n::numeric / :g_n, 4), :e_n - :g_n,
              round(:e_s::numeric / :g_s, 4), round(:e_secs::numeric / nullif(:g_secs::numeric, 0), 1)) AS line \gset
\echo :line
\echo therapists over capacity in the exact result: :over
SELECT CASE WHEN :e_n >= :g_n AND :over = 0 THEN 'ok' ELSE 'FAILED' END AS verdict \gset
\echo check (exact matches at least as many as greedy, capacity kept): :verdict
SQL
echo
echo "reproduce: THERAPISTS=$THERAPISTS REQUESTS=$REQUESTS SAMPLE=$SAMPLE bash test/bench/matching.sh"
