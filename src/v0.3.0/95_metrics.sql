-- prm 0.3.0, metrics: one row per metric and label set, in the shape
-- postgres_exporter's custom queries read (labels as columns, one value).
-- Counts only, of every organization, labelled by org_id: readable by
-- pg_monitor (the exporter's role) and superusers, by no tenant level.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- the last hour's slots are read by index, so a scrape costs what the hour
-- made, not the size of the slot table (slots are made in time order: BRIN)
CREATE INDEX slot_created_idx ON prm.slot USING brin (created_at);
CREATE INDEX slot_filled_idx ON prm.slot (filled_at) WHERE filled_at IS NOT NULL;

CREATE VIEW prm.metrics AS
-- the outbox: depth per channel and status
SELECT 'outbox_messages'::text AS metric, m.org_id, m.channel, m.status, NULL::text AS step,
       pg_catalog.count(*)::double precision AS value
  FROM prm.outbound_message m GROUP BY m.org_id, m.channel, m.status
UNION ALL
-- how long the oldest due message has waited to be claimed
SELECT 'outbox_oldest_due_seconds', m.org_id, m.channel, 'queued', NULL,
       pg_catalog.max(EXTRACT(epoch FROM pg_catalog.now() - m.not_before))::double precision
  FROM prm.outbound_message m WHERE m.status = 'queued' AND m.not_before <= pg_catalog.now()
 GROUP BY m.org_id, m.channel
UNION ALL
SELECT 'offers_open', o.org_id, NULL, 'open', NULL, pg_catalog.count(*)
  FROM prm.offer o WHERE o.status = 'open' GROUP BY o.org_id
UNION ALL
-- slots freed and filled in the last hour (fill rate = filled / freed)
SELECT 'slots_freed_last_hour', s.org_id, NULL, NULL, NULL, pg_catalog.count(*)
  FROM prm.slot s WHERE s.created_at > pg_catalog.now() - interval '1 hour' GROUP BY s.org_id
UNION ALL
SELECT 'slots_filled_last_hour', s.org_id, NULL, NULL, NULL, pg_catalog.count(*)
  FROM prm.slot s WHERE s.filled_at > pg_catalog.now() - interval '1 hour' GROUP BY s.org_id
UNION ALL
SELECT 'conversations_unread_messages', c.org_id, c.channel, c.state, NULL, pg_catalog.sum(c.unread_count)
  FROM prm.conversation c WHERE c.state <> 'closed' GROUP BY c.org_id, c.channel, c.state
UNION ALL
-- the time-driven steps: seconds since each last ran, and whether its last run failed
SELECT 'job_seconds_since_run', NULL, NULL, NULL, j.job,
       EXTRACT(epoch FROM pg_catalog.now() - j.last_run_at)::double precision
  FROM prm.job_run j
UNION ALL
SELECT 'job_failed', NULL, NULL, NULL, j.job, (j.last_error IS NOT NULL)::int
  FROM prm.job_run j;
COMMENT ON VIEW prm.metrics IS 'Operational metrics, one row per metric and labels (org_id, channel, status, step), for postgres_exporter custom queries (see test/metrics/queries.yaml). Counts only; readable by pg_monitor.';
REVOKE ALL ON prm.metrics FROM PUBLIC;
GRANT SELECT ON prm.metrics TO pg_monitor;
