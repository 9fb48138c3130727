# pg_dump of a database using prm, restored into a fresh database: every prm
# row is back, identity sequences go on where they were, access survives.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('postgres', 'CREATE ROLE regress_dump_staff');
$node->safe_psql('src', q{
	CREATE EXTENSION prm CASCADE;
	SELECT prm.create_organization('Dump Clinic', 'Europe/London', '+44 20 7946 0000');
	SELECT prm.configure(1, '{"phone_region": "GB", "batch_size": 5}');
	SELECT prm.add_provider(1, 'Dr Dump');
	SELECT prm.add_location(1, 'High Street');
	SELECT prm.add_patient(1, 'P' || g, 'Dump', '07700 900' || lpad(g::text, 3, '0'))
	  FROM generate_series(1, 50) g;
	SELECT prm.book_appointment(1, g, 1, '2031-01-01 09:00+00'::timestamptz + g * interval '1 hour',
	                            '2031-01-01 09:30+00'::timestamptz + g * interval '1 hour')
	  FROM generate_series(1, 20) g;
	SELECT prm.configure(1, '{"quiet_hours": false, "offer_daily_cap": 10, "offer_weekly_cap": 10}');
	SELECT prm.join_waitlist(1, g, NULL, g % 7 = 0, g % 5) FROM generate_series(21, 40) g;
	SELECT prm.cancel_appointment(1, g, 'moved') FROM generate_series(1, 5) g;
	SELECT prm.handle_inbound_sms('+44 20 7946 0000', phone, 'YES', 'SM-dump-' || id)
	  FROM prm.patient WHERE id IN (SELECT patient_id FROM prm.offer WHERE status = 'open' LIMIT 2);
	SELECT count(*) FROM prm.claim_messages('sms', 3);
	SELECT prm.grant_access('regress_dump_staff', 1, 'staff');
	SELECT prm.set_channel_credential(1, 'twilio', 'dumptoken0123456789abcdef0123456');
});

# one line per prm table: name, row count and a digest of every row
my $fingerprint = q{
	SELECT string_agg(c.relname || ' ' ||
	         (xpath('/row/f/text()', query_to_xml(format(
	           'SELECT count(*) || '' '' || md5(coalesce(string_agg(t::text, '','' ORDER BY t::text), '''')) AS f FROM %I.%I t',
	           n.nspname, c.relname), false, true, '')))[1]::text, E'\n' ORDER BY c.relname)
	  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE n.nspname = 'prm' AND c.relkind = 'r'
	   AND c.relname <> 'patient_stats'};    # patient_stats is derived: rebuilt by triggers, not dumped

my $before = $node->safe_psql('src', $fingerprint);
like($before, qr/^appointment 2[0-9] /m, 'source holds the appointments');
my $max_appt = $node->safe_psql('src', 'SELECT max(id) FROM prm.appointment');
my $max_offer = $node->safe_psql('src', 'SELECT max(id) FROM prm.offer');
like($before, qr/^patient 50 /m, 'source holds the patients');
like($before, qr/^offer [1-9]/m, 'source holds offers');
like($before, qr/^outbound_message [1-9]/m, 'source holds queued messages');
like($before, qr/^inbound_message 2 /m, 'source holds inbound messages');
like($before, qr/^waitlist_entry 20 /m, 'source holds the waitlist');

my $dump = $node->basedir . '/prm.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('src'), '-f', $dump ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst'), $dump ], 'pg_restore');

my $after = $node->safe_psql('dst', $fingerprint);
is($after, $before, 'every prm table has the same rows after restore');
is($node->safe_psql('dst', q{SELECT count(*) FROM prm.patient_stats}),
	$node->safe_psql('src', q{SELECT count(*) FROM prm.patient_stats}),
	'derived patient statistics were rebuilt for every patient during the restore');
is($node->safe_psql('dst', q{SELECT sum(completed_visits) || ' ' || sum(cancellations) FROM prm.patient_stats}),
	$node->safe_psql('src', q{SELECT sum(completed_visits) || ' ' || sum(cancellations) FROM prm.patient_stats}),
	'and they hold the same figures');

# sequences go on: new rows do not collide with restored ones
is($node->safe_psql('dst', q{SELECT prm.add_patient(1, 'New', 'Patient', '07700 900999')}),
	'51', 'a new patient gets the next id');
is($node->safe_psql('dst', q{SELECT prm.book_appointment(1, 51, 1, '2032-01-01 09:00+00', '2032-01-01 09:30+00')}),
	$max_appt + 1, 'a new appointment gets the next id');
is($node->safe_psql('dst', q{SELECT prm.create_organization('Second', 'UTC')}),
	'2', 'a new organization gets the next id');
$node->safe_psql('dst', q{SELECT prm.cancel_appointment(1, 20)});
is($node->safe_psql('dst', qq{SELECT count(*) > 0 AND min(id) > $max_offer FROM prm.offer
	  WHERE created_at > (SELECT max(created_at) FROM prm.offer WHERE id <= $max_offer)}),
	't', 'offers made after the restore continue the sequence (no id reused)');
cmp_ok($node->safe_psql('dst', q{SELECT count(*) FROM prm.event WHERE kind = 'patient_added'}),
	'==', 51, 'events restored and new ones appended');

# the auth token is dumped (pg_extension_config_dump), and only for those who may read it
is($node->safe_psql('dst', q{SELECT auth_token FROM prm.channel_credential WHERE org_id = 1}),
	'dumptoken0123456789abcdef0123456', 'the auth token survives the restore');
$node->safe_psql('postgres', 'ALTER ROLE regress_dump_staff LOGIN');
$node->command_fails_like(
	[ 'pg_dump', '--enable-row-security', '-U', 'regress_dump_staff', '-t', 'prm.channel_credential',
	  '-d', $node->connstr('src') ],
	qr/permission denied for table channel_credential/, 'a staff role cannot dump the auth tokens');

# access survives: the staff role reads its organization's patients
is($node->safe_psql('dst', q{SET ROLE regress_dump_staff; SELECT count(*) FROM prm.patient}),
	'51', 'granted role still reads through row-level security');

# the restored database still refuses double bookings and keeps settings
my ($ret, $out, $err) = $node->psql('dst',
	q{SELECT prm.book_appointment(1, 2, 1, '2031-01-01 15:00+00', '2031-01-01 15:15+00')});
like($err, qr/already booked/, 'exclusion rule still holds after restore');
is($node->safe_psql('dst', q{SELECT prm.settings(1) ->> 'batch_size'}), '5', 'settings restored');

$node->stop;
done_testing();
