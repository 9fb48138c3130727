-- One consumer round through pgmq 1.5.1, the same protocol: read :batch
-- messages with a 60-second visibility timeout (one transaction), then
-- delete the whole batch (a second transaction).
SELECT coalesce(array_agg(r.msg_id), '{}') AS ids FROM pgmq.read('bench', 60, :batch) r \gset
SELECT count(*) FROM pgmq.delete('bench', :ids::bigint[]);
