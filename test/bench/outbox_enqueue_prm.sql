-- Queue one SMS through prm (to a number no patient has: no consent to
-- look up), one transaction.
\set n random(1000, 9999)
SELECT prm.enqueue_message(:org, 'sms', '+1202555' || :n, 'Harbour Physio: an earlier appointment is free on Mon 3 Mar at 09:00. Reply YES to book it or NO to pass.');
