-- National numbering rules beyond lengths: a North American (+1) number has
-- ten digits after the country code and an area code that does not start
-- with 0 or 1, so an Australian mobile typed into a US organization is not
-- stored as the impossible +10412345678.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(6);

SELECT throws_like($$SELECT prm.normalize_phone('0412 345 678', 'US')$$, '%is not valid%',
                   'an Australian mobile read as a US number is refused');
SELECT throws_ok($$SELECT prm.normalize_phone('0412 345 678', 'US')$$, '22023', NULL, 'with 22023');
SELECT throws_ok($$SELECT prm.normalize_phone('+1 041 234 5678')$$, '22023', NULL, 'an area code starting with 0 is refused');
SELECT throws_ok($$SELECT prm.normalize_phone('+1 555 0100')$$, '22023', NULL, 'a +1 number needs 10 digits after the country code');
SELECT is(prm.normalize_phone('(212) 555-0100', 'US'), '+12125550100', 'a New York number is fine');
SELECT is(prm.normalize_phone('0412 345 678', 'AU'), '+61412345678', 'and the same mobile in an Australian organization too');

SELECT * FROM finish();
ROLLBACK;
