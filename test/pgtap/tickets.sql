-- Staff and tickets: bad input of every function, Zendesk's lifecycle,
-- round robin skipping unavailable and capped staff, comments (public ones
-- queued in the outbox), merging, the entry points for conversations, and
-- tenancy (organization B cannot read or change organization A's tickets).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(70);

SELECT prm.create_organization('Ticket Clinic A', 'UTC', '+15558070000') AS org \gset
SELECT prm.create_organization('Ticket Clinic B', 'UTC', '+15558070001') AS org_b \gset
SELECT prm.add_patient(:org, 'Tia', 'Ticket', '+15558071001') AS pat \gset
SELECT prm.add_patient(:org, 'Nox', 'Nophone', '+15558071003', 'nox@example.com') AS nophone \gset
UPDATE prm.patient SET phone = NULL WHERE id = :nophone;  -- a patient known by e-mail only
SELECT prm.add_patient(:org_b, 'Bea', 'Other', '+15558071002') AS pat_b \gset

-- staff
SELECT prm.add_staff(:org, 'Sam') AS s1 \gset
SELECT prm.add_staff(:org, 'Kim', 'kim@example.com') AS s2 \gset
SELECT prm.add_staff(:org, 'Lou') AS s3 \gset
SELECT prm.add_staff(:org_b, 'Bob') AS sb \gset
SELECT throws_ok(format('SELECT prm.add_staff(%s, NULL)', :org), '22004', NULL, 'add_staff: NULL name');
SELECT throws_ok('SELECT prm.add_staff(NULL, ''X'')', '22004', NULL, 'add_staff: NULL org');
SELECT throws_ok(format('SELECT prm.add_staff(%s, %L)', :org, repeat('x', 201)), '22001', NULL, 'add_staff: oversized name');
SELECT throws_ok(format('SELECT prm.add_staff(%s, ''X'', ''not-an-email'')', :org), '22023', NULL, 'add_staff: bad e-mail');
SELECT throws_ok('SELECT prm.add_staff(999999, ''X'')', NULL, NULL, 'add_staff: unknown organization');
SELECT prm.add_staff(:org, 'Rob''); DROP TABLE prm.ticket; --') AS rob \gset
SELECT is((SELECT name FROM prm.staff WHERE id = :rob),
          'Rob''); DROP TABLE prm.ticket; --', 'add_staff: an injection string is stored verbatim');
SELECT throws_ok(format('SELECT prm.set_staff_availability(%s, %s, false)', :org, :sb), 'P0002', NULL, 'availability: another org''s staff');
SELECT throws_ok(format('SELECT prm.set_staff_availability(%s, %s, NULL)', :org, :s1), '22004', NULL, 'availability: NULL');

-- open_ticket
SELECT throws_ok(format('SELECT prm.open_ticket(%s, NULL)', :org), '22004', NULL, 'open_ticket: NULL subject');
SELECT throws_ok(format('SELECT prm.open_ticket(%s, ''  '')', :org), '22023', NULL, 'open_ticket: blank subject');
SELECT throws_ok(format('SELECT prm.open_ticket(%s, %L)', :org, repeat('s', 201)), '22001', NULL, 'open_ticket: oversized subject');
SELECT throws_ok(format('SELECT prm.open_ticket(%s, ''S'', ''whenever'')', :org), '22023', 'unknown ticket priority "whenever"', 'open_ticket: unknown priority');
SELECT throws_ok(format('SELECT prm.open_ticket(%s, ''S'', NULL)', :org), '22004', NULL, 'open_ticket: NULL priority');
SELECT throws_ok(format('SELECT prm.open_ticket(%s, ''S'', ''normal'', %s)', :org, :pat_b), 'P0002', NULL, 'open_ticket: another org''s patient');
SELECT throws_ok(format('SELECT prm.open_ticket(%s, ''S'', ''normal'', NULL, %L)', :org, repeat('d', 2001)), '22001', NULL, 'open_ticket: oversized description');
SELECT prm.open_ticket(:org, 'Call me back', 'normal', :pat, 'about the bill') AS t1 \gset
SELECT prm.open_ticket(:org_b, 'B''s ticket') AS tb \gset
SELECT is((SELECT status || '/' || priority || '/' || source FROM prm.ticket WHERE org_id = :org AND id = :t1),
          'new/normal/staff', 'open_ticket: a new ticket');
SELECT ok(EXISTS (SELECT 1 FROM prm.event WHERE org_id = :org AND kind = 'ticket_opened' AND entity_id = :t1), 'open_ticket: event');

-- lifecycle
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, %s, ''done'')', :org, :t1), '22023', NULL, 'status: unknown');
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, %s, NULL)', :org, :t1), '22004', NULL, 'status: NULL');
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, %s, ''open'')', :org, :tb), 'P0002', NULL, 'status: another org''s ticket');
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, 999999, ''open'')', :org), 'P0002', NULL, 'status: unknown ticket');
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, %s, ''closed'')', :org, :t1), '55000', 'ticket ' || :t1 || ' cannot move from new to closed', 'status: new -> closed refused');
SELECT lives_ok(format('SELECT prm.set_ticket_status(%s, %s, ''pending'')', :org, :t1), 'status: new -> pending');
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, %s, ''new'')', :org, :t1), '55000', 'ticket ' || :t1 || ' cannot move from pending to new', 'status: never back to new');
SELECT lives_ok(format('SELECT prm.set_ticket_status(%s, %s, ''on_hold'')', :org, :t1), 'status: pending -> on_hold');
SELECT lives_ok(format('SELECT prm.set_ticket_status(%s, %s, ''solved'')', :org, :t1), 'status: on_hold -> solved');
SELECT ok((SELECT solved_at IS NOT NULL AND autoclose_at = solved_at + interval '4 days' FROM prm.ticket WHERE id = :t1),
          'status: solved sets the auto-close at ticket_autoclose_after');
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, %s, ''pending'')', :org, :t1), '55000', NULL, 'status: solved -> pending refused');
SELECT lives_ok(format('SELECT prm.set_ticket_status(%s, %s, ''open'')', :org, :t1), 'status: solved -> open (reopened)');
SELECT ok((SELECT solved_at IS NULL AND autoclose_at IS NULL FROM prm.ticket WHERE id = :t1), 'status: reopening clears the solve');
SELECT lives_ok(format('SELECT prm.set_ticket_status(%s, %s, ''solved'')', :org, :t1), 'status: open -> solved');
SELECT lives_ok(format('SELECT prm.set_ticket_status(%s, %s, ''closed'')', :org, :t1), 'status: solved -> closed');
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, %s, ''open'')', :org, :t1), '55000', 'ticket ' || :t1 || ' cannot move from closed to open', 'status: closed is final');
SELECT throws_ok(format('SELECT prm.assign_ticket(%s, %s, %s)', :org, :t1, :s1), '55000', NULL, 'assign: a closed ticket');
SELECT is((SELECT count(*)::int FROM prm.event WHERE entity = 'ticket' AND entity_id = :t1 AND kind = 'ticket_status_changed'), 6,
          'status: every move is an event');

-- assignment: explicit, then round robin skipping the unavailable and the capped
SELECT prm.open_ticket(:org, 'T2') AS t2 \gset
SELECT throws_ok(format('SELECT prm.assign_ticket(%s, %s, %s)', :org, :t2, :sb), 'P0002', NULL, 'assign: another org''s staff');
SELECT throws_ok(format('SELECT prm.assign_ticket(%s, %s, %s)', :org, :tb, :s1), 'P0002', NULL, 'assign: another org''s ticket');
SELECT throws_ok(format('SELECT prm.assign_ticket(%s, NULL)', :org), '22004', NULL, 'assign: NULL ticket');
SELECT is(prm.assign_ticket(:org, :t2, :s2), :s2::bigint, 'assign: explicit');
SELECT is((SELECT status FROM prm.ticket WHERE id = :t2), 'open', 'assign: a new ticket becomes open');
UPDATE prm.staff SET last_assigned_at = NULL WHERE org_id = :org;
SELECT prm.set_staff_availability(:org, :s2, false);
SELECT prm.set_staff_availability(:org, s.id, false) FROM prm.staff s WHERE s.org_id = :org AND s.name LIKE 'Rob%';
SELECT prm.open_ticket(:org, 'R1') AS r1 \gset
SELECT prm.open_ticket(:org, 'R2') AS r2 \gset
SELECT prm.open_ticket(:org, 'R3') AS r3 \gset
SELECT prm.open_ticket(:org, 'R4') AS r4 \gset
SELECT is(ARRAY[prm.assign_ticket(:org, :r1), prm.assign_ticket(:org, :r2), prm.assign_ticket(:org, :r3)],
          ARRAY[:s1, :s3, :s1]::bigint[], 'round robin: in turn, skipping the unavailable');
SELECT prm.configure(:org, '{"max_open_tickets_per_staff": 2}');
SELECT is(prm.assign_ticket(:org, :r4), :s3::bigint, 'round robin: a member at the cap is skipped');
SELECT throws_ok(format('SELECT prm.assign_ticket(%s, %s)', :org, :t2), '55000', NULL, 'round robin: everyone unavailable or capped');
SELECT prm.set_ticket_status(:org, :r1, 'solved');
SELECT is(prm.assign_ticket(:org, :t2), :s1::bigint, 'round robin: a solved ticket frees a place under the cap');

-- comments
SELECT throws_ok(format('SELECT prm.add_ticket_comment(%s, %s, NULL)', :org, :t2), '22004', NULL, 'comment: NULL body');
SELECT throws_ok(format('SELECT prm.add_ticket_comment(%s, %s, %L)', :org, :t2, repeat('b', 1601)), '22001', NULL, 'comment: oversized body');
SELECT throws_ok(format('SELECT prm.add_ticket_comment(%s, %s, ''x'', false, %s)', :org, :t2, :sb), 'P0002', NULL, 'comment: another org''s staff');
SELECT throws_ok(format('SELECT prm.add_ticket_comment(%s, %s, ''x'')', :org, :tb), 'P0002', NULL, 'comment: another org''s ticket');
SELECT prm.add_ticket_comment(:org, :t2, 'internal note', false, :s1) AS c1 \gset
SELECT ok((SELECT NOT public AND outbound_message_id IS NULL FROM prm.ticket_comment WHERE id = :c1), 'comment: internal, nothing queued');
SELECT throws_ok(format('SELECT prm.add_ticket_comment(%s, %s, ''hi'', true)', :org, :t2), '55000', NULL, 'comment: public without a patient refused');
SELECT prm.open_ticket(:org, 'Nophone', 'normal', :nophone) AS tn \gset
SELECT throws_ok(format('SELECT prm.add_ticket_comment(%s, %s, ''hi'', true)', :org, :tn), '55000', NULL, 'comment: public to a patient with no address refused');
SELECT prm.open_ticket(:org, 'Reply', 'normal', :pat) AS t3 \gset
SELECT prm.add_ticket_comment(:org, :t3, 'We''ll call you at 3; DROP TABLE x', true) AS c2 \gset
SELECT is((SELECT m.channel || ' ' || m.to_address || ' ' || m.body FROM prm.outbound_message m
             JOIN prm.ticket_comment c ON c.outbound_message_id = m.id WHERE c.id = :c2),
          'sms +15558071001 We''ll call you at 3; DROP TABLE x', 'comment: public one queued by SMS, verbatim');
SELECT ok((SELECT first_replied_at IS NOT NULL FROM prm.ticket WHERE id = :t3), 'comment: a public one is the first reply');

-- merge
SELECT prm.add_ticket_comment(:org, :t3, 'more') AS c3 \gset
SELECT throws_ok(format('SELECT prm.merge_tickets(%s, %s, %s)', :org, :t3, :t3), '22023', NULL, 'merge: into itself');
SELECT throws_ok(format('SELECT prm.merge_tickets(%s, %s, %s)', :org, :t3, :tb), 'P0002', NULL, 'merge: another org''s ticket');
SELECT throws_ok(format('SELECT prm.merge_tickets(%s, %s, %s)', :org, :t3, :t1), '55000', NULL, 'merge: into a closed ticket');
SELECT lives_ok(format('SELECT prm.merge_tickets(%s, %s, %s)', :org, :t3, :t2), 'merge');
SELECT is((SELECT status || ' ' || merged_into FROM prm.ticket WHERE id = :t3), 'closed ' || :t2, 'merge: the source is closed and linked');
SELECT is((SELECT array_agg(id ORDER BY id) FROM prm.ticket_comment WHERE ticket_id = :t2), ARRAY[:c1, :c2, :c3]::bigint[],
          'merge: its comments moved to the target');
SELECT is((SELECT count(*)::int FROM prm.event WHERE kind = 'ticket_merged' AND entity_id IN (:t2, :t3)), 2, 'merge: an event on both');

-- priority
SELECT throws_ok(format('SELECT prm.set_ticket_priority(%s, %s, ''asap'')', :org, :t2), '22023', NULL, 'priority: unknown');
SELECT lives_ok(format('SELECT prm.set_ticket_priority(%s, %s, ''urgent'')', :org, :t2), 'priority: changed');

-- the author of a comment is the calling role, and its staff member
CREATE ROLE regress_tk_a;
SELECT prm.grant_access('regress_tk_a', :org, 'staff');
SELECT prm.add_staff(:org, 'Ada', NULL, 'regress_tk_a') AS ada \gset
SET LOCAL ROLE regress_tk_a;
SELECT prm.add_ticket_comment(:org, :t2, 'signed') AS c4 \gset
RESET ROLE;
SELECT is((SELECT author || ' ' || staff_id FROM prm.ticket_comment WHERE id = :c4), 'regress_tk_a ' || :ada,
          'comment: written by the calling role, as its staff member');

-- tenancy
CREATE ROLE regress_tk_b;
SELECT prm.grant_access('regress_tk_b', :org_b, 'admin');
SET LOCAL ROLE regress_tk_b;
SELECT is((SELECT count(*)::int FROM prm.ticket WHERE org_id = :org), 0, 'tenancy: B reads none of A''s tickets');
SELECT is((SELECT count(*)::int FROM prm.staff WHERE org_id = :org), 0, 'tenancy: B reads none of A''s staff');
SELECT is((SELECT count(*)::int FROM prm.ticket_comment WHERE org_id = :org), 0, 'tenancy: B reads none of A''s comments');
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, %s, ''open'')', :org, :t2), '42501', NULL, 'tenancy: B cannot change A''s ticket');
SELECT throws_ok(format('SELECT prm.add_staff(%s, ''Mole'')', :org), '42501', NULL, 'tenancy: B cannot add A''s staff');
SELECT throws_ok(format('SELECT prm.set_ticket_status(%s, %s, ''open'')', :org_b, :t2), 'P0002', NULL, 'tenancy: A''s ticket id through B is unknown');
SELECT is((SELECT count(*)::int FROM prm.ticket), 1, 'tenancy: B reads its own ticket');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
