-- the baseline: the bare INSERT of the same row
\set p random(0, 999)
INSERT INTO bench.comms_message (org_id, channel, to_address, body, kind, patient_id)
VALUES (:org, 'sms', '+1555900' || lpad((:p + 1)::text, 4, '0'), 'Your results are ready.', 'other', :first + :p);
