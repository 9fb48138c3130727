-- The fuzzer's fixture: two organizations with a bit of everything, a role
-- with staff level on organization 1 only and a role with no grant.
-- Run as a superuser in an empty database: psql -v ON_ERROR_STOP=1 -f fixture.sql
\set QUIET on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fuzz_staff') THEN CREATE ROLE fuzz_staff; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fuzz_nogrant') THEN CREATE ROLE fuzz_nogrant; END IF;
END $$;
-- the superuser's connection must be able to SET ROLE to them
GRANT fuzz_staff, fuzz_nogrant TO CURRENT_USER;

SELECT prm.create_organization('Fuzz Clinic One', 'Australia/Sydney', '+61 2 9000 0001') AS org1 \gset
SELECT prm.create_organization('Fuzz Clinic Two', 'Europe/Berlin', '+49 30 1234567') AS org2 \gset
SELECT prm.configure(:org1, '{"phone_region": "AU", "accept_url": "https://fuzz.example/a/"}') \g /dev/null
SELECT prm.configure(:org2, '{"phone_region": "DE", "accept_url": "https://fuzz.example/b/"}') \g /dev/null

CREATE TEMP TABLE fx (org_id bigint, region text, tz text);
INSERT INTO fx VALUES (:org1, 'AU', 'Australia/Perth'), (:org2, 'DE', 'Europe/Berlin');

-- locations, providers, patients
SELECT prm.add_location(org_id, 'Site ' || g, tz, g || ' Main Rd') FROM fx, generate_series(1, 2) g \g /dev/null
SELECT prm.add_provider(org_id, 'Dr Fuzz ' || g) FROM fx, generate_series(1, 3) g \g /dev/null
SELECT prm.add_patient(org_id, 'Pat' || g, 'Ient' || org_id,
                       CASE region WHEN 'AU' THEN '+61 412 ' || lpad(g::text, 6, '0')
                                   ELSE '+49 151 ' || lpad(g::text, 8, '0') END,
                       'p' || g || '@example.org', tz)
  FROM fx, generate_series(1, 24) g \g /dev/null

-- appointments far enough ahead that every waitlist patient would take an
-- earlier slot; patients 1-12 booked, 13-24 only on the waitlist
SELECT prm.book_appointment(fx.org_id, p.id, pr.id,
         date_trunc('hour', now()) + (p.rn * 2 + 48 || ' hours')::interval,
         date_trunc('hour', now()) + (p.rn * 2 + 48 || ' hours')::interval + interval '30 minutes')
  FROM fx
  JOIN LATERAL (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM prm.patient WHERE org_id = fx.org_id) p ON p.rn <= 12
  JOIN LATERAL (SELECT id FROM prm.provider WHERE org_id = fx.org_id ORDER BY id LIMIT 1 OFFSET (p.rn % 3)) pr ON true
  \g /dev/null
SELECT prm.book_appointment(fx.org_id, p.id, pr.id, now() + interval '60 days' + p.rn * interval '1 hour',
                            now() + interval '60 days 30 minutes' + p.rn * interval '1 hour')
  FROM fx
  JOIN LATERAL (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM prm.patient WHERE org_id = fx.org_id) p ON p.rn BETWEEN 13 AND 18
  JOIN LATERAL (SELECT id FROM prm.provider WHERE org_id = fx.org_id ORDER BY id LIMIT 1 OFFSET (p.rn % 3)) pr ON true
  \g /dev/null

-- waitlist: every patient from 7 on, some for one provider, some urgent
SELECT prm.join_waitlist(p.org_id, p.id, CASE WHEN p.rn % 4 = 0 THEN pr.id END, p.rn % 5 = 0, ((p.rn * 7) % 41)::int)
  FROM (SELECT org_id, id, row_number() OVER (PARTITION BY org_id ORDER BY id) AS rn FROM prm.patient) p
  JOIN LATERAL (SELECT id FROM prm.provider WHERE org_id = p.org_id ORDER BY id LIMIT 1) pr ON true
 WHERE p.rn >= 7 \g /dev/null

-- cancellations: free slots, offers and queued SMS
SELECT prm.cancel_appointment(a.org_id, a.id, 'fuzz fixture')
  FROM (SELECT org_id, id, row_number() OVER (PARTITION BY org_id ORDER BY id) AS rn
          FROM prm.appointment WHERE status = 'booked') a
 WHERE a.rn <= 4 \g /dev/null

-- replies: one YES and one NO per organization
SELECT prm.handle_inbound_sms(o.sms_number, p.phone, 'YES', 'fx-yes-' || o.id)
  FROM prm.organization o
  JOIN LATERAL (SELECT pa.phone FROM prm.offer f JOIN prm.patient pa ON pa.org_id = f.org_id AND pa.id = f.patient_id
                 WHERE f.org_id = o.id AND f.status = 'open' ORDER BY f.id LIMIT 1) p ON true \g /dev/null
SELECT prm.handle_inbound_sms(o.sms_number, p.phone, 'no thanks', 'fx-no-' || o.id)
  FROM prm.organization o
  JOIN LATERAL (SELECT pa.phone FROM prm.offer f JOIN prm.patient pa ON pa.org_id = f.org_id AND pa.id = f.patient_id
                 WHERE f.org_id = o.id AND f.status = 'open' ORDER BY f.id LIMIT 1) p ON true \g /dev/null

-- outbox: queued messages of each channel, some claimed (leased), one sent
SELECT prm.enqueue_message(fx.org_id, ch, CASE ch WHEN 'email' THEN 'fx' || g || '@example.org'
                                                  ELSE CASE fx.region WHEN 'AU' THEN '+61 412 999 ' || lpad(g::text, 3, '0')
                                                                      ELSE '+49 151 9999' || lpad(g::text, 4, '0') END END,
                           'fixture message ' || g, NULL, 'fx:' || ch || ':' || g)
  FROM fx, unnest(ARRAY['sms', 'email', 'voice']) ch, generate_series(1, 4) g \g /dev/null
SELECT count(*) FROM prm.claim_messages('email', 3, '1 hour') \g /dev/null
SELECT count(*) FROM prm.claim_messages('voice', 2, '1 hour') \g /dev/null
SELECT prm.mark_message_sent(id, 'fx-sent-' || id, lease_token) FROM prm.claim_messages('voice', 1, '1 hour') \g /dev/null

-- matching: therapists with phone hours, placement requests, contact batches
SELECT prm.add_therapist(fx.org_id, 'Dr Couch ' || g, 'couch' || g || '@example.org',
                         52.50 + g / 100.0, 13.40 + g / 100.0, ARRAY['de', 'en'],
                         ARRAY['cbt', 'systemic'], g % 3, CASE g % 2 WHEN 0 THEN 'female' ELSE 'male' END, 'Europe/Berlin')
  FROM fx, generate_series(1, 5) g \g /dev/null
SELECT prm.set_phone_hours(t.org_id, t.id, '[{"day": 1, "from": "09:00", "to": "11:00"}, {"day": 4, "from": "14:00", "to": "15:30"}]')
  FROM prm.therapist t \g /dev/null
SELECT prm.add_placement_request(p.org_id, p.id, 52.51, 13.39, 25, ARRAY['de'], 'cbt')
  FROM (SELECT org_id, id, row_number() OVER (PARTITION BY org_id ORDER BY id) AS rn FROM prm.patient) p
 WHERE p.rn BETWEEN 19 AND 23 \g /dev/null
SELECT count(*) FROM fx, prm.assign_placements(fx.org_id, 'exact', true) \g /dev/null
SELECT prm.plan_contact_batches(org_id) FROM fx \g /dev/null
SELECT prm.record_contact_answer(c.org_id, c.request_id, c.therapist_id, 'declined')
  FROM (SELECT DISTINCT ON (org_id) org_id, request_id, therapist_id FROM prm.placement_contact ORDER BY org_id, id) c \g /dev/null
SELECT prm.run_matching_follow_ups(NULL, now() + interval '8 days') \g /dev/null

-- access
SELECT prm.grant_access('fuzz_staff', :org1, 'staff') \g /dev/null
\unset QUIET
SELECT (SELECT count(*) FROM prm.patient) AS patients, (SELECT count(*) FROM prm.appointment) AS appointments,
       (SELECT count(*) FROM prm.slot) AS slots, (SELECT count(*) FROM prm.offer) AS offers,
       (SELECT count(*) FROM prm.waitlist_entry) AS waitlist, (SELECT count(*) FROM prm.outbound_message) AS messages,
       (SELECT count(*) FROM prm.placement_request) AS requests, (SELECT count(*) FROM prm.call_task) AS call_tasks;
