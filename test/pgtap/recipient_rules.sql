-- A message queued with or without its patient obeys the patient's rules:
-- the named patient must own the address, an opted-out number is refused,
-- quiet hours are the patient's behind the number.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(6);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('Rules', 'UTC', '+15558008000') AS org \gset
SELECT prm.add_patient(:org, 'Ann', 'Rules', '+15558008001', 'ann@example.org', 'Australia/Sydney') AS ann \gset
SELECT prm.add_patient(:org, 'Bob', 'Rules', '+15558008002') AS bob \gset

SELECT throws_ok(format($$SELECT prm.enqueue_message(%s, 'sms', '+15558008002', 'hi', %s)$$, :org, :ann), '22023',
                 format('patient %s does not have the address +15558008002', :ann), 'another patient''s number under Ann''s id is refused');
SELECT throws_ok(format($$SELECT prm.enqueue_message(%s, 'email', 'bob@example.org', 'hi', %s)$$, :org, :ann), '22023', NULL,
                 'an e-mail address Ann does not have is refused');
SELECT lives_ok(format($$SELECT prm.enqueue_message(%s, 'email', 'ANN@example.org', 'hi', %s)$$, :org, :ann),
                'her own address, in any case, is fine');
-- without a patient id: Ann's number is still Ann's
SELECT prm.enqueue_message(:org, 'sms', '+15558008001', 'late', NULL, 'r1', '2031-01-01 23:30 Australia/Sydney') AS r1 \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :r1),
          '2031-01-02 08:00 Australia/Sydney'::timestamptz, 'quiet hours of the patient behind the number, named or not');
SELECT prm.handle_inbound_sms('+15558008000', '+15558008002', 'STOP', 'r-stop') IS NOT NULL AS stopped \gset
SELECT throws_ok(format($$SELECT prm.enqueue_message(%s, 'sms', '+15558008002', 'hi')$$, :org), '55000',
                 '+15558008002 has opted out of SMS', 'an opted-out number is refused without the patient id too');
SELECT lives_ok(format($$SELECT prm.enqueue_message(%s, 'sms', '+15558008999', 'to the plumber')$$, :org),
                'a number no patient has goes out as the caller says');

SELECT * FROM finish();
ROLLBACK;
