-- the existing hot path: a staff message to a patient (exempt, kind other)
\set p random(0, 999)
SELECT prm.enqueue_message(:org, 'sms', '+1555900' || lpad((:p + 1)::text, 4, '0'), 'Your results are ready.', :first + :p);
