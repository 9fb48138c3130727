-- a promotional message through its template: consent and caps checked
\set p random(0, 999)
SELECT prm.schedule_message(:org, :first + :p, 'news', 'sms');
