-- Queue one message through pgmq 1.5.1, one transaction.
\set n random(1000, 9999)
SELECT pgmq.send('bench', jsonb_build_object('to', '+1202555' || :n, 'body', 'Harbour Physio: an earlier appointment is free on Mon 3 Mar at 09:00. Reply YES to book it or NO to pass.'));
