-- Baseline: the bare conditional UPDATE that claims a slot, on a plain copy
-- of the same 1,000 slots, with the same reply order as storm_prm.sql
-- (replies 3s-2..3s race for slot s).
\set i :i + 1
\set n (:i - 1) * :clients + :client_id + 1
\set slot :slot_base + (:n - 1) / 3
UPDATE bench.slot SET status = 'busy' WHERE org_id = :org AND id = :slot AND status = 'free';
