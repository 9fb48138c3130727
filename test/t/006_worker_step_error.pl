# An error inside one step of the prm worker: it is logged and recorded in
# prm.job_run, only that step is rolled back, the other steps go on running
# (and doing work), the worker stays up, and once the cause is gone the
# failed step catches up.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;

my $node = PostgreSQL::Test::Cluster->new('steperror');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'prm'\nprm.databases = 'postgres'\nprm.worker_max_sleep = 30\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');

# Poll a query until it returns true, for up to 30 s (PrmTest.pm).
sub wait_until { PrmTest::wait_until($node, 'postgres', @_) }

# A clinic with one booked patient and $waiting more on the waitlist;
# returns the organization and the appointment to cancel.
my $phones = 0;
sub make_clinic
{
	my ($name, $waiting, $settings) = @_;
	my $org = $node->safe_psql('postgres',
		sprintf(q{SELECT prm.create_organization('%s', 'Europe/London', '+44 20 7946 %04d')},
			$name, $phones));
	$node->safe_psql('postgres', qq{
		SELECT prm.configure($org, '{"phone_region": "GB", "min_notice": "0 seconds",
		                             "quiet_hours": false}');
		SELECT prm.configure($org, '$settings')});
	my $provider = $node->safe_psql('postgres', qq{SELECT prm.add_provider($org, 'Dr $name')});
	my @patients;
	for my $i (0 .. $waiting)
	{
		$phones++;
		push @patients, $node->safe_psql('postgres',
			sprintf(q{SELECT prm.add_patient(%d, 'P%d', '%s', '07700 900%03d')},
				$org, $i, $name, $phones));
	}
	my $appt = $node->safe_psql('postgres', qq{
		SELECT prm.book_appointment($org, $patients[0], $provider,
		       now() + interval '1 day', now() + interval '1 day 30 minutes')});
	$node->safe_psql('postgres', qq{SELECT prm.join_waitlist($org, $_)})
	  for @patients[ 1 .. $#patients ];
	return ($org, $appt);
}

unless (
	ok( wait_until(q{
			SELECT count(*) = 1 FROM pg_stat_activity
			 WHERE backend_type = 'prm worker' AND datname = 'postgres'},
			'the worker'),
		'the worker is running'))
{
	diag 'no prm worker is running: the other tests need one';
	done_testing();
	exit;
}
my $pid = $node->safe_psql('postgres', q{
	SELECT pid FROM pg_stat_activity WHERE backend_type = 'prm worker' AND datname = 'postgres'});

# The broken clinic: its first batch goes out, then its offer template is
# broken behind prm's back (set_template would refuse it), so the batch
# that follows the 2-second hold cannot be rendered.
my ($broken, $appt1) = make_clinic('Broken', 6, '{"offer_hold": "2 seconds"}');
$node->safe_psql('postgres', qq{
	SELECT prm.set_template($broken, 'offer', '{clinic}: a slot on {date} at {time}. Reply YES.')});
my $slot1 = $node->safe_psql('postgres', "SELECT prm.cancel_appointment($broken, $appt1)");
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM prm.offer WHERE org_id = $broken AND slot_id = $slot1}),
	'3', 'the broken clinic sent its first batch');
my $offset = -s $node->logfile;
$node->safe_psql('postgres', qq{
	UPDATE prm.message_template SET body = 'x {nope}'
	 WHERE org_id = $broken AND kind = 'offer'});

ok( wait_until(q{
		SELECT last_error LIKE '%cannot be rendered%' FROM prm.job_run WHERE job = 'expire_offers'},
		'the error of expire_offers'),
	'prm.job_run records the error of expire_offers');
$node->wait_for_log(qr/prm: slot $slot1 of organization $broken was skipped: template "offer" of organization $broken cannot be rendered/, $offset);
like(slurp_file($node->logfile, $offset),
	qr/WARNING:  prm: slot $slot1 of organization $broken was skipped: template "offer" of organization $broken cannot be rendered/,
	'the log names the slot, the organization and the error');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(batch_no || ':' || status, ',' ORDER BY id)
		  FROM prm.offer WHERE org_id = $broken AND slot_id = $slot1}),
	'1:open,1:open,1:open', 'the failed step was rolled back: the first batch is still open');

# the other steps still run, after the failing one, in every round
my $failed_at = $node->safe_psql('postgres',
	q{SELECT last_run_at FROM prm.job_run WHERE job = 'expire_offers'});
ok( wait_until(qq{
		SELECT bool_and(last_run_at > '$failed_at') FROM prm.job_run
		 WHERE job IN ('send_due_batches', 'release_leases', 'notify_due_messages',
		               'archive_messages')},
		'the other steps to run'),
	'the other steps run after the failing one');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(job, ',' ORDER BY job) FROM prm.job_run WHERE last_error IS NOT NULL}),
	'expire_offers', 'only expire_offers has an error');

# and they still do their work: a healthy clinic's delayed first batch goes
# out through send_due_batches while expire_offers keeps failing
my ($healthy, $appt2) = make_clinic('Healthy', 3,
	'{"offer_hold": "1 hour", "first_batch_delay": "2 seconds"}');
my $slot2 = $node->safe_psql('postgres', "SELECT prm.cancel_appointment($healthy, $appt2)");
is( $node->safe_psql('postgres', qq{
		SELECT fill_status FROM prm.slot WHERE org_id = $healthy AND id = $slot2}),
	'pending', 'the healthy clinic waits 2 seconds before its first batch');
ok( wait_until(qq{
		SELECT count(*) = 3 FROM prm.offer WHERE org_id = $healthy AND slot_id = $slot2},
		'the healthy first batch'),
	'send_due_batches sends the healthy clinic its first batch');
is( $node->safe_psql('postgres', qq{
		SELECT sweep_failures >= 1 AND sweep_retry_at IS NOT NULL FROM prm.slot
		 WHERE org_id = $broken AND id = $slot1}),
	't', 'while the broken slot backs off alone');

# one clinic's broken template does not hold up another's expiring holds:
# each slot of a sweep runs in a subtransaction of its own
my ($other, $appt3) = make_clinic('Other', 6, '{"offer_hold": "2 seconds"}');
my $slot3 = $node->safe_psql('postgres', "SELECT prm.cancel_appointment($other, $appt3)");
ok( wait_until(qq{
		SELECT count(*) = 3 FROM prm.offer WHERE org_id = $other AND slot_id = $slot3 AND batch_no = 2},
		'the second batch of the other clinic'),
	'another clinic\'s hold expires and its next batch goes out while the broken one fails');
ok( wait_until(qq{
		SELECT sweep_failures >= 2 FROM prm.slot WHERE org_id = $broken AND id = $slot1},
		'the broken slot to be tried again'),
	'the broken slot is tried again after its back-off, and fails again, alone');
like( slurp_file($node->logfile),
	qr/slot $slot1 of organization $broken was skipped: .*cannot be rendered/, 'the broken slot is reported in the log');

is( $node->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity WHERE backend_type = 'prm worker' AND datname = 'postgres'}),
	$pid, 'the worker is the same process');
unlike(slurp_file($node->logfile, $offset),
	qr/terminated by signal|exited with exit code|terminating any other active server processes/,
	'no worker exit, no crash restart');

# mend the template: the failed step catches up, the error is cleared
$node->safe_psql('postgres', qq{
	UPDATE prm.message_template SET body = '{clinic}: a slot on {date} at {time}. Reply YES.'
	 WHERE org_id = $broken AND kind = 'offer'});
ok( wait_until(qq{
		SELECT count(*) = 3 FROM prm.offer
		 WHERE org_id = $broken AND slot_id = $slot1 AND batch_no = 2},
		'the second batch of the mended clinic'),
	'once the template renders, the hold is expired and the next batch sent');
ok( wait_until(q{
		SELECT last_error IS NULL FROM prm.job_run WHERE job = 'expire_offers'},
		'the error to clear'),
	'prm.job_run no longer shows an error');
like( $node->safe_psql('postgres', qq{
		SELECT body FROM prm.outbound_message m JOIN prm.offer o
		    ON o.org_id = m.org_id AND o.id = m.offer_id
		 WHERE o.org_id = $broken AND o.batch_no = 2 LIMIT 1}),
	qr/^Broken: a slot on /, 'the second batch uses the mended template');
is( $node->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity WHERE backend_type = 'prm worker' AND datname = 'postgres'}),
	$pid, 'the same worker went on throughout');

$node->stop;
done_testing();
