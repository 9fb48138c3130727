# The background worker, with prm preloaded: it shows itself (and its
# launcher) in pg_stat_activity, expires a hold and queues the next batch
# at the deadline with no client call (asleep for up to an hour, it was
# woken by the deadline; the lag is printed, not asserted), obeys SIGHUP
# (prm.worker_enabled, prm.worker_max_sleep), stops cleanly on SIGTERM and
# is started again by the launcher.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'prm'\nprm.databases = 'postgres'\nprm.worker_max_sleep = 3600\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');

# Poll a query until it returns true, for up to 30 s (PrmTest.pm).
sub wait_until { PrmTest::wait_until($node, 'postgres', @_) }

# The pid of the prm worker of database postgres ('' when there is none).
sub worker_pid
{
	return $node->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity
		 WHERE backend_type = 'prm worker' AND datname = 'postgres'});
}

# A clinic with holds of 2 seconds, one booked patient and $waiting more on
# the waitlist; returns the organization and the appointment to cancel.
my $phones = 0;
sub make_clinic
{
	my ($name, $waiting) = @_;
	my $org = $node->safe_psql('postgres',
		sprintf(q{SELECT prm.create_organization('%s', 'Europe/London', '+44 20 7946 %04d')},
			$name, $phones));
	$node->safe_psql('postgres', qq{
		SELECT prm.configure($org, '{"phone_region": "GB", "offer_hold": "2 seconds",
		                             "min_notice": "0 seconds", "quiet_hours": false}')});
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

#
# 1. The launcher and the worker show themselves.
#
ok( wait_until(q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE backend_type = 'prm launcher' AND application_name = 'prm launcher'},
		'the launcher'),
	'the launcher is in pg_stat_activity');
ok( wait_until(q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE backend_type = 'prm worker' AND application_name = 'prm worker'
		   AND datname = 'postgres'},
		'the worker'),
	'the worker of database postgres is in pg_stat_activity');
my $pid = worker_pid();
unless (like($pid, qr/^\d+$/, 'the worker has a pid'))
{
	diag 'no prm worker is running: the other tests need one';
	done_testing();
	exit;
}

#
# 2. A hold runs out: the worker expires it and queues the next batch within
#    a second of the deadline.  From here on the test only reads prm.offer.
#
my ($org1, $appt1) = make_clinic('Deadline', 9);
my $slot1 = $node->safe_psql('postgres', "SELECT prm.cancel_appointment($org1, $appt1)");
is( $node->safe_psql('postgres', qq{
		SELECT count(*), bool_and(hold_until = created_at + interval '2 seconds')
		  FROM prm.offer WHERE org_id = $org1 AND slot_id = $slot1 AND batch_no = 1}),
	'3|t', 'cancelling sends a first batch of 3 offers held for 2 seconds');

ok( wait_until(qq{
		SELECT count(*) > 0 FROM prm.offer
		 WHERE org_id = $org1 AND slot_id = $slot1 AND batch_no = 2},
		'the second batch'),
	'the second batch comes without a client call');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(batch_no || ':' || status, ',' ORDER BY batch_no, id)
		  FROM prm.offer WHERE org_id = $org1 AND slot_id = $slot1 AND batch_no <= 2}),
	'1:expired,1:expired,1:expired,2:open,2:open,2:open',
	'the first batch expired, the second has 3 open offers');
my $lag = $node->safe_psql('postgres', qq{
	SELECT extract(epoch FROM
	         (SELECT min(created_at) FROM prm.offer
	           WHERE org_id = $org1 AND slot_id = $slot1 AND batch_no = 2)
	       - (SELECT max(hold_until) FROM prm.offer
	           WHERE org_id = $org1 AND slot_id = $slot1 AND batch_no = 1))});
note "second batch queued $lag s after the first batch's deadline";
cmp_ok($lag, '>=', 0, 'the second batch is not queued before the deadline');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM prm.outbound_message m
		  JOIN prm.offer o ON o.org_id = m.org_id AND o.id = m.offer_id
		 WHERE o.org_id = $org1 AND o.slot_id = $slot1 AND o.batch_no = 2
		   AND m.kind = 'offer'}),
	'3', 'each offer of the second batch has its SMS queued');

# the chain goes on alone: a third batch, then nobody is left
ok( wait_until(qq{
		SELECT fill_status = 'exhausted' FROM prm.slot WHERE org_id = $org1 AND id = $slot1},
		'the slot to run out of patients'),
	'the worker goes on until the waitlist is exhausted');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(batch_no || ':' || count, ',' ORDER BY batch_no) FROM (
		  SELECT batch_no, count(*) FILTER (WHERE status = 'expired') AS count
		    FROM prm.offer WHERE org_id = $org1 AND slot_id = $slot1 GROUP BY batch_no) b}),
	'1:3,2:3,3:3', 'three batches of three, each expired in turn');
is(worker_pid(), $pid, 'the same worker did it all');

#
# 3. SIGHUP: prm.worker_enabled = off stops the steps, on resumes them.
#
$node->safe_psql('postgres', 'ALTER SYSTEM SET prm.worker_enabled = off');
$node->reload;
my ($org2, $appt2) = make_clinic('Paused', 6);
my $slot2 = $node->safe_psql('postgres', "SELECT prm.cancel_appointment($org2, $appt2)");
ok( wait_until(qq{
		SELECT clock_timestamp() > max(hold_until) + interval '3 seconds'
		  FROM prm.offer WHERE org_id = $org2 AND slot_id = $slot2},
		'the hold to be 3 s over'),
	'the hold of the paused clinic ran out 3 seconds ago');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(batch_no || ':' || status, ',' ORDER BY id)
		  FROM prm.offer WHERE org_id = $org2 AND slot_id = $slot2}),
	'1:open,1:open,1:open', 'with prm.worker_enabled off the offers are not expired');

$node->safe_psql('postgres', 'ALTER SYSTEM RESET prm.worker_enabled');
$node->reload;
ok( wait_until(qq{
		SELECT count(*) = 3 FROM prm.offer
		 WHERE org_id = $org2 AND slot_id = $slot2 AND batch_no = 2},
		'the second batch after re-enabling'),
	'with prm.worker_enabled on again the worker expires them and sends the next batch');
is(worker_pid(), $pid, 'the worker was not restarted for a reload');

#
# 4. SIGHUP: prm.worker_max_sleep.  With nothing due the worker wakes every
#    worker_max_sleep; at 1 s its runs (prm.job_run.last_run_at) follow each
#    other closely, which 30 s would not allow.
#
ok( wait_until(qq{
		SELECT fill_status = 'exhausted' FROM prm.slot WHERE org_id = $org2 AND id = $slot2},
		'the paused clinic to run out of patients'),
	'the paused clinic ran out of patients');
is($node->safe_psql('postgres',
		q{SELECT coalesce(prm.next_deadline() > now() + interval '1 minute', true)}),
	't', 'nothing is due within a minute: only worker_max_sleep wakes the worker');
$node->safe_psql('postgres', 'ALTER SYSTEM SET prm.worker_max_sleep = 1');
$node->reload;
my %seen;
my $start = $node->safe_psql('postgres',
	q{SELECT last_run_at FROM prm.job_run WHERE job = 'release_leases'});
for (1 .. 200)    # 20 s, less than the old worker_max_sleep
{
	my $run = $node->safe_psql('postgres',
		q{SELECT last_run_at FROM prm.job_run WHERE job = 'release_leases'});
	$seen{$run} = 1 if $run ne $start;
	last if keys %seen >= 4;
	usleep(100_000);
}
cmp_ok(scalar(keys %seen), '>=', 4,
	'with prm.worker_max_sleep = 1 the idle worker runs its steps every second');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET prm.worker_max_sleep');
$node->reload;

#
# 5. SIGTERM: the worker shuts down cleanly, the launcher starts it again.
#
my $offset = -s $node->logfile;
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)"),
	't', 'pg_terminate_backend of the worker');
ok( wait_until(qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE backend_type = 'prm worker' AND datname = 'postgres' AND pid <> $pid},
		'a new worker'),
	'the launcher starts a new worker');
my $log = slurp_file($node->logfile, $offset);
like($log, qr/prm worker for database "postgres" shutting down/,
	'the worker logs its clean shutdown');
unlike($log, qr/terminated by signal|exited with exit code [1-9]/,
	'the worker did not crash');
unlike($log, qr/terminating any other active server processes/,
	'no crash restart');
my $newpid = worker_pid();

# the new worker does the work too
my ($org3, $appt3) = make_clinic('Restarted', 4);
my $slot3 = $node->safe_psql('postgres', "SELECT prm.cancel_appointment($org3, $appt3)");
ok( wait_until(qq{
		SELECT count(*) = 1 FROM prm.offer
		 WHERE org_id = $org3 AND slot_id = $slot3 AND batch_no = 2},
		'the restarted worker'),
	'the restarted worker expires holds and sends the next batch');
is(worker_pid(), $newpid, 'the new worker is still running');

$node->stop;
done_testing();
