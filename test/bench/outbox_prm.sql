-- One sender round through prm, the protocol a sender runs: claim :batch
-- queued SMS with a lease (one transaction), then acknowledge the whole
-- batch as sent with the lease tokens (a second transaction).
SELECT coalesce(array_agg(c.id), '{}') AS ids, coalesce(array_agg('SM' || c.id), '{}') AS providers,
       coalesce(array_agg(c.lease_token), '{}') AS tokens
  FROM prm.claim_messages('sms', :batch, '60 seconds') c \gset
SELECT count(*) FROM prm.mark_messages_sent(:ids, :providers, :tokens);
