-- One sender round through prm: claim :batch queued SMS with a lease, then
-- acknowledge each one as sent with its lease token (one transaction).
SELECT prm.mark_message_sent(c.id, 'SM' || c.id, c.lease_token)
  FROM prm.claim_messages('sms', :batch, '60 seconds') c;
