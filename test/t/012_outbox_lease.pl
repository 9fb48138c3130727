# A lease that runs out wakes the worker at its deadline.  The worker may
# sleep for an hour (prm.worker_max_sleep = 3600); a sender claims a message
# with a 2-second lease and never acknowledges it.  Nothing but the worker
# may put it back in the queue (this test only reads the table: a claim
# would release it too), and it must do so long before the hour is up --
# at the lease's end, because claim_messages told the worker that deadline.
# A bounded poll, no timing threshold but its generous timeout.  Then the
# message is claimed again, from the clinic's number, and acknowledged in a
# batch with prm.mark_messages_sent.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;

my $node = PostgreSQL::Test::Cluster->new('outbox_lease');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'prm'\nprm.databases = 'postgres'\nprm.worker_max_sleep = 3600\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');

# Poll a query until it returns true, for up to 60 s (PrmTest.pm).
sub wait_until { PrmTest::wait_until($node, 'postgres', @_, 60) }

ok( wait_until(q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE backend_type = 'prm worker' AND datname = 'postgres'},
		'the worker'),
	'the worker of database postgres runs');

my $org = $node->safe_psql('postgres',
	q{SELECT prm.create_organization('Lease Clinic', 'UTC', '+12025550100')});
my $id = $node->safe_psql('postgres',
	qq{SELECT prm.enqueue_message($org, 'sms', '+12025550111', 'Your appointment is confirmed.')});

# let the worker finish the round the enqueue woke it for, and go to sleep
ok( wait_until(q{SELECT (prm.health() -> 'worker' ->> 'sleeping_until') IS NOT NULL},
		'the worker to sleep'),
	'the worker sleeps');

my $claimed = $node->safe_psql('postgres',
	q{SELECT id || '|' || from_address FROM prm.claim_messages('sms', 10, '2 seconds')});
is($claimed, "$id|+12025550100", 'the claim hands the message over, with the clinic number to send from');

ok( wait_until(qq{
		SELECT status = 'queued' AND lease_token IS NULL AND last_error = 'lease expired'
		  FROM prm.outbound_message WHERE id = $id},
		'the lease to be released'),
	'the worker puts the message back in the queue when its lease runs out, long before worker_max_sleep');
# claimed again and acknowledged as a batch
my ($mid, $token) = split /\|/, $node->safe_psql('postgres',
	q{SELECT id || '|' || lease_token FROM prm.claim_messages('sms', 10, '60 seconds')});
is($mid, $id, 'the message is claimed again');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM prm.mark_messages_sent(ARRAY[$mid]::bigint[], ARRAY['SM1'], ARRAY['$token']::uuid[])}),
	'0', 'the batch acknowledgement refuses nothing');
is( $node->safe_psql('postgres', qq{
		SELECT status || '|' || provider_message_id || '|' || attempts FROM prm.outbound_message WHERE id = $id}),
	'sent|SM1|2', 'the message is sent, on its second attempt');

$node->stop;
done_testing();
