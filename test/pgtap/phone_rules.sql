-- National numbering rules beyond lengths, whichever way a number is
-- written: North America (+1: area and exchange codes start 2-9, no N11
-- area code), the UK (+44), Germany (+49) and Australia (+61); the error's
-- detail names the rule, and for a national number the region it was read
-- with, so an Australian mobile typed into a US organization is not stored
-- as the impossible +10412345678.  Other regions: E.164 and national
-- lengths.  A patient cannot be given the clinic's own SMS number (add_patient,
-- sync_patients, re-syncs); two patients may share a phone (a family).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(62);

-- the detail of the error normalize_phone raises (NULL: no error)
CREATE FUNCTION pg_temp.phone_detail(phone text, region text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    PERFORM prm.normalize_phone(phone, region);
    RETURN NULL;
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN d;
END $$;

-- 1. NANP
SELECT throws_ok($$SELECT prm.normalize_phone('0412 345 678', 'US')$$, '22023', 'phone number "0412 345 678" is not valid',
                 'an Australian mobile read as a US number is refused with 22023');
SELECT alike(pg_temp.phone_detail('0412 345 678', 'US'), 'A North American area code cannot start with 0 or 1 (NANP%',
             'the detail names the rule: the area code starts with 0');
SELECT alike(pg_temp.phone_detail('0412 345 678', 'US'), '%read as a national number of region US%',
             'and the region the number was read with');
SELECT throws_ok($$SELECT prm.normalize_phone('+1 041 234 5678')$$, '22023', NULL, 'an area code starting with 0 is refused');
SELECT alike(pg_temp.phone_detail('+1 141 234 5678'), '%area code cannot start with 0 or 1%', 'so is one starting with 1');
SELECT unalike(pg_temp.phone_detail('+1 141 234 5678'), '%read as a national number%', 'an international number names no region');
SELECT alike(pg_temp.phone_detail('(212) 055-0100', 'US'), '%exchange code%cannot start with 0 or 1%', 'an exchange starting with 0');
SELECT alike(pg_temp.phone_detail('+1 212 155 0100'), '%exchange code%cannot start with 0 or 1%', 'an exchange starting with 1');
SELECT alike(pg_temp.phone_detail('+1 911 555 0100'), '%N11%service codes%', 'an N11 area code is a service code');
SELECT alike(pg_temp.phone_detail('+1 555 8100'), '%10 digits after the country code%', 'a +1 number needs 10 digits after the country code');
SELECT alike(pg_temp.phone_detail('011 1 212 055 0100', 'US'), '%exchange code%', 'the rules hold after the 011 prefix too');
SELECT is(prm.normalize_phone('(212) 555-0100', 'US'), '+12125550100', 'a New York number is fine');
SELECT is(prm.normalize_phone('+1 416 555 0199', 'GB'), '+14165550199', 'a Toronto number in international form, in a UK organization');
SELECT is(prm.normalize_phone('613-555-0123', 'CA'), '+16135550123', 'a Canadian national number');
SELECT is(prm.normalize_phone('+1 212 211 0100'), '+12122110100', 'an N11 exchange is not an area code: allowed');

-- 2. UK (Ofcom)
SELECT is(prm.normalize_phone('07700 900123', 'GB'), '+447700900123', 'a UK mobile');
SELECT is(prm.normalize_phone('020 7946 0958', 'GB'), '+442079460958', 'a London number');
SELECT is(prm.normalize_phone('+44 (0)161 496 0000'), '+441614960000', 'a Manchester number with the bracketed trunk prefix');
SELECT is(prm.normalize_phone('016977 3456', 'GB'), '+44169773456', 'a 01 number with 9 digits');
SELECT is(prm.normalize_phone('0800 123 456', 'GB'), '+44800123456', 'a 0800 number with 9 digits');
SELECT alike(pg_temp.phone_detail('0770 090 012', 'GB'), '%07 (mobile)%10 digits%Ofcom%', 'a UK mobile with 9 digits: the rule is named');
SELECT alike(pg_temp.phone_detail('+44 20 7946 095'), '%02%10 digits%', 'a London number one digit short');
SELECT alike(pg_temp.phone_detail('+44 4123 456789'), '%04 and 06 are not allocated%', '04 is not allocated');
SELECT alike(pg_temp.phone_detail('+44 6123 456789'), '%04 and 06 are not allocated%', 'nor is 06');
SELECT alike(pg_temp.phone_detail('+44 0123 456789'), '%does not start with 0 after the country code%', '+44 0... is not a number');

-- 3. Germany (Bundesnetzagentur)
SELECT is(prm.normalize_phone('0151 23456789', 'DE'), '+4915123456789', 'a German mobile with 11 digits');
SELECT is(prm.normalize_phone('0160 1234567', 'DE'), '+491601234567', 'and with 10');
SELECT is(prm.normalize_phone('030 1234567', 'DE'), '+49301234567', 'a Berlin number');
SELECT alike(pg_temp.phone_detail('0171 123456', 'DE'), '%German mobile number%10 or 11 digits%', 'a German mobile too short: the rule is named');
SELECT alike(pg_temp.phone_detail('+49 176 123456789'), '%German mobile number%10 or 11 digits%', 'and too long');
SELECT alike(pg_temp.phone_detail('+49 030 1234567'), '%does not start with 0 after the country code%', 'the trunk prefix after +49');

-- 4. Australia (ACMA)
SELECT is(prm.normalize_phone('0412 345 678', 'AU'), '+61412345678', 'the same mobile in an Australian organization is fine');
SELECT is(prm.normalize_phone('(02) 9876 5432', 'AU'), '+61298765432', 'a Sydney number');
SELECT is(prm.normalize_phone('+61 8 9123 4567'), '+61891234567', 'a Perth number in international form');
SELECT alike(pg_temp.phone_detail('+61 1300 123 45'), '%starts 02, 03, 07 or 08%04 (mobile)%1300%', 'a 1300 number is not reachable from abroad');
SELECT alike(pg_temp.phone_detail('+61 6123 4567 8'), '%starts 02, 03, 07 or 08%', '06 is no Australian range');
SELECT alike(pg_temp.phone_detail('+61 412 345 67'), '%9 digits after the country code%ACMA%', 'an Australian mobile one digit short');
SELECT alike(pg_temp.phone_detail('0412 345 67', 'AU'), '%region AU has 9 digits%', 'read nationally, the region''s length is named');

-- 5. other regions: by length
SELECT is(prm.normalize_phone('06 12 34 56 78', 'FR'), '+33612345678', 'a French mobile');
SELECT alike(pg_temp.phone_detail('06 12 34 56', 'FR'), '%region FR has 9 digits%', 'a French number too short');
SELECT alike(pg_temp.phone_detail('+81 3 1234'), '%8 to 15 digits%', 'an international number of another plan: E.164 length');
SELECT is(prm.normalize_phone('+81 3 1234 5678'), '+81312345678', 'a Tokyo number passes on length');

-- 6. the clinic's own number, families
SELECT prm.create_organization('Own', 'America/New_York', '+1 212 555 0150') AS org \gset
SELECT prm.create_organization('Other', 'America/New_York', '+1 212 555 0160') AS other \gset
SELECT throws_ok(format($$SELECT prm.add_patient(%s, 'Ann', 'Own', '+12125550150')$$, :org), '22023',
                 'phone number +12125550150 is the organization''s own SMS or WhatsApp number', 'a patient with the clinic''s own number is refused');
SELECT throws_ok(format($$SELECT prm.add_patient(%s, 'Ann', 'Own', '(212) 555-0150')$$, :org), '22023', NULL,
                 'in national form too');
SELECT is((SELECT count(*)::int FROM prm.patient WHERE org_id = :org), 0, 'and no patient was added');
SELECT is(prm.set_inbound_address(:org, 'whatsapp', '+1 212 555 0159'), '+12125550159', 'the clinic has a WhatsApp number');
SELECT throws_ok(format($$SELECT prm.add_patient(%s, 'Ann', 'Own', '+12125550159')$$, :org), '22023',
                 'phone number +12125550159 is the organization''s own SMS or WhatsApp number', 'a patient with the clinic''s WhatsApp number is refused');
SELECT throws_ok(format($$SELECT prm.set_inbound_address(%s, 'whatsapp', '+12125550159')$$, :other), '23505',
                 'WhatsApp number +12125550159 already belongs to another organization', 'another clinic''s WhatsApp number: 23505 in words');
SELECT is((SELECT whatsapp_number FROM prm.organization WHERE id = :other), NULL, 'and the other clinic was not changed');
SELECT is(prm.set_inbound_address(:org, 'whatsapp', '+1 212 555 0159'), '+12125550159', 'setting one''s own number again is no conflict');
SELECT lives_ok(format($$SELECT prm.add_patient(%s, 'Ann', 'Other', '+12125550150')$$, :other),
                'another organization''s patient may have that number (it is not that clinic''s)');
SELECT prm.add_patient(:org, 'Pat', 'Family', '+1 212 555 0151') AS p1 \gset
SELECT prm.add_patient(:org, 'Kim', 'Family', '212.555.0151') AS p2 \gset
SELECT is((SELECT count(*)::int FROM prm.patient WHERE org_id = :org AND phone = '+12125550151'), 2, 'two patients may share a phone (a family)');

SELECT prm.sync_patients(:org, 'cliniko', jsonb_build_array(
    jsonb_build_object('external_id', 's1', 'given_name', 'Sam', 'family_name', 'Sync', 'phone', '212-555-0150'),
    jsonb_build_object('external_id', 's2', 'given_name', 'Lee', 'family_name', 'Sync', 'phone', '0412 345 678'),
    jsonb_build_object('external_id', 's3', 'given_name', 'Max', 'family_name', 'Sync', 'phone', '+1 212 555 0152'))) AS r1 \gset
SELECT is((:'r1'::jsonb ->> 'inserted')::int, 1, 'sync: one record inserted');
SELECT alike((SELECT x ->> 'reason' FROM jsonb_array_elements(:'r1'::jsonb -> 'rejections') x WHERE x ->> 'index' = '0'),
             '%own SMS or WhatsApp number%', 'sync: the clinic''s own number is rejected');
SELECT alike((SELECT x ->> 'detail' FROM jsonb_array_elements(:'r1'::jsonb -> 'rejections') x WHERE x ->> 'index' = '1'),
             '%area code cannot start with 0 or 1%', 'sync: an impossible number is rejected with the rule in "detail"');
SELECT prm.sync_patients(:org, 'cliniko', jsonb_build_array(
    jsonb_build_object('external_id', 's3', 'given_name', 'Max', 'family_name', 'Sync', 'phone', '+1 212 555 0150'))) AS r2 \gset
SELECT is((:'r2'::jsonb ->> 'rejected')::int, 1, 're-sync: changing a patient''s phone to the clinic''s number is rejected');
SELECT is((SELECT phone FROM prm.patient WHERE org_id = :org AND external_id = 's3'), '+12125550152', 'and the old phone is kept');

-- 7. the inbound routing rule for a family's phone
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS x \gset
SELECT prm.add_provider(:org, 'Dr Route') AS dr \gset
SELECT prm.add_patient(:org, 'Bo', 'Booked', '+1 212 555 0153') AS pb \gset
SELECT prm.join_waitlist(:org, :p2) AS e2 \gset
SELECT prm.book_appointment(:org, :pb, :dr, now() + interval '2 days', now() + interval '2 days 30 minutes') AS appt \gset
SELECT prm.cancel_appointment(:org, :appt) AS slot \gset
SELECT is((SELECT patient_id FROM prm.offer WHERE org_id = :org AND slot_id = :slot), :p2::bigint, 'the second family member is offered the slot');
SELECT lives_ok($$SELECT prm.handle_inbound_sms('+12125550150', '+12125550151', 'YES', 'SM-family-1')$$, 'a YES from the shared phone');
SELECT is((SELECT patient_id FROM prm.appointment WHERE org_id = :org AND status = 'booked' AND provider_id = :dr), :p2::bigint,
          'books the family member who holds the open offer, not the lowest id');
SELECT lives_ok($$SELECT prm.handle_inbound_sms('+12125550150', '+12125550151', 'STOP', 'SM-family-2')$$, 'a STOP from the shared phone');
SELECT is((SELECT count(*)::int FROM prm.patient WHERE org_id = :org AND phone = '+12125550151' AND sms_opt_out), 2,
          'opts out every patient behind the number');

SELECT * FROM finish();
ROLLBACK;
