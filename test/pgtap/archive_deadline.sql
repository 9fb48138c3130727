-- The archive step is a deadline, not a sweep: run_due_jobs finds the
-- finished messages whose day has passed through their index, however many
-- messages are queued.  Counted, not timed: the rows of prm.outbound_message
-- this transaction read (pg_stat_xact_user_tables) while run_due_jobs ran,
-- with 3,000 messages queued for later.  It read all 3,000 before.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(6);

CREATE TEMP VIEW outbox_reads AS
SELECT coalesce((SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables
                  WHERE relid = 'prm.outbound_message'::regclass), 0) AS n;

SELECT prm.create_organization('Deadline Clinic', 'UTC', '+15558093000') AS org \gset
-- 3,000 messages queued for tomorrow, 4 finished two days ago, 4 finished now
INSERT INTO prm.outbound_message (org_id, channel, to_address, body, not_before)
SELECT :org, 'sms', '+1555809' || lpad(g::text, 4, '0'), 'see you tomorrow', now() + interval '1 day'
  FROM generate_series(1, 3000) g;
INSERT INTO prm.outbound_message (org_id, channel, to_address, body, status, updated_at)
SELECT :org, 'sms', '+15558094000', 'done', s, now() - interval '2 days'
  FROM unnest(ARRAY['sent', 'delivered', 'failed', 'cancelled']) s;
INSERT INTO prm.outbound_message (org_id, channel, to_address, body, status)
SELECT :org, 'sms', '+15558094001', 'done today', s
  FROM unnest(ARRAY['sent', 'delivered', 'read', 'refused']) s;
ANALYZE prm.outbound_message;

SELECT n AS before FROM outbox_reads \gset
SELECT is((prm.run_due_jobs() ->> 'archive_messages')::int, 4, 'the four messages finished two days ago are archived');
SELECT n AS after_first FROM outbox_reads \gset
SELECT cmp_ok((:after_first - :before)::int, '<', 300,
              'run_due_jobs read fewer than 300 of the 3,008 outbox rows to archive 4');
SELECT is((prm.run_due_jobs() ->> 'archive_messages')::int, 0, 'nothing is left to archive');
SELECT cmp_ok(((SELECT n FROM outbox_reads) - :after_first)::int, '<', 300,
              'with nothing due, run_due_jobs read fewer than 300 outbox rows');
SELECT is((SELECT count(*)::int FROM prm.outbound_message_history WHERE org_id = :org), 4,
          'the history holds the four');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE org_id = :org AND status <> 'queued'), 4,
          'the messages finished today stay in the outbox');

SELECT * FROM finish();
ROLLBACK;
