-- One patient's YES through prm's SMS webhook function.  Client c's k-th
-- transaction is reply n = (k-1) * :clients + c + 1, so with -t T and
-- :clients clients every reply 1..3000 is sent exactly once (n > 3000 finds
-- no row and does nothing).
\set i :i + 1
\set n (:i - 1) * :clients + :client_id + 1
SELECT prm.handle_inbound_sms(:clinic, r.phone, 'YES', 'SMyes' || r.n)
  FROM bench.storm_reply r WHERE r.n = :n;
