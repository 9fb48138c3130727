-- One cancellation through prm: the appointment is cancelled, its slot
-- freed and offered to the best 3 eligible waiting patients, each offer
-- queueing its SMS, in one transaction.  Transaction k cancels target k.
\set i :i + 1
SELECT prm.cancel_appointment(:org, t.id) FROM bench.cancel_target t WHERE t.n = :i;
