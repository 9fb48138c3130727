# kill -9 of the prm worker: the server restarts after the crash, the
# launcher and the worker come back, no offer, message or event is lost or
# made twice, and a hold that runs out after the crash still gets its next
# batch.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'prm'\nprm.databases = 'postgres'\nprm.worker_max_sleep = 30\n"
	  . "restart_after_crash = on\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');

# Poll a query until it returns true, for up to 30 s (PrmTest.pm).
sub wait_until { PrmTest::wait_until($node, 'postgres', @_) }

# The pid of the prm worker of database postgres.
sub worker_pid
{
	ok( wait_until(q{
			SELECT count(*) = 1 FROM pg_stat_activity
			 WHERE backend_type = 'prm worker' AND datname = 'postgres'},
			'the worker'),
		'the worker is running');
	return $node->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity
		 WHERE backend_type = 'prm worker' AND datname = 'postgres'});
}

# kill -9 the worker and wait until the server has restarted and the
# launcher and a new worker are back; returns the new worker's pid.
sub crash_worker
{
	my ($pid) = @_;
	my $offset = -s $node->logfile;

	ok(kill('KILL', $pid), "kill -9 of worker $pid");
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
	ok( wait_until(qq{
			SELECT count(*) = 1 FROM pg_stat_activity
			 WHERE backend_type = 'prm launcher'}, 'the launcher'),
		'the launcher is back after the crash restart');
	ok( wait_until(qq{
			SELECT count(*) = 1 FROM pg_stat_activity
			 WHERE backend_type = 'prm worker' AND datname = 'postgres' AND pid <> $pid},
			'a new worker'),
		'a new worker is back after the crash restart');
	like(slurp_file($node->logfile, $offset),
		qr/background worker "prm worker" \(PID $pid\) was terminated by signal 9/,
		'the postmaster saw the worker crash');
	return $node->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity
		 WHERE backend_type = 'prm worker' AND datname = 'postgres'});
}

# A clinic (holds of $hold) with one booked patient and $waiting more on
# the waitlist; returns the organization and the appointment to cancel.
my $phones = 0;
sub make_clinic
{
	my ($name, $waiting, $hold) = @_;
	my $org = $node->safe_psql('postgres',
		sprintf(q{SELECT prm.create_organization('%s', 'Europe/London', '+44 20 7946 %04d')},
			$name, $phones));
	$node->safe_psql('postgres', qq{
		SELECT prm.configure($org, '{"phone_region": "GB", "offer_hold": "$hold",
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

# Every row of the tables the fill engine and the outbox write, as one digest.
my $fingerprint = q{
	SELECT string_agg(t || ' ' || n || ' ' || d, E'\n' ORDER BY t) FROM (
	  SELECT 'offer' AS t, count(*) AS n, md5(coalesce(string_agg(o::text, ',' ORDER BY o.id), '')) AS d
	    FROM prm.offer o
	  UNION ALL
	  SELECT 'outbound_message', count(*), md5(coalesce(string_agg(m::text, ',' ORDER BY m.id), ''))
	    FROM prm.outbound_message m
	  UNION ALL
	  SELECT 'event', count(*), md5(coalesce(string_agg(e::text, ',' ORDER BY e.id), ''))
	    FROM prm.event e
	  UNION ALL
	  SELECT 'slot', count(*), md5(coalesce(string_agg(s::text, ',' ORDER BY s.id), ''))
	    FROM prm.slot s) f};

# Nothing made twice: one message per offer, unique dedup keys, a patient
# offered a slot once, no batch larger than batch_size (3).
my $no_duplicates = q{
	SELECT (SELECT count(*) = count(DISTINCT (org_id, dedup_key))
	          FROM prm.outbound_message WHERE dedup_key IS NOT NULL)
	   AND (SELECT count(*) FROM prm.offer)
	       = (SELECT count(*) FROM prm.outbound_message WHERE kind = 'offer')
	   AND NOT EXISTS (SELECT 1 FROM prm.offer o
	                    WHERE NOT EXISTS (SELECT 1 FROM prm.outbound_message m
	                                       WHERE m.org_id = o.org_id AND m.offer_id = o.id
	                                         AND m.dedup_key = 'offer:' || o.id))
	   AND NOT EXISTS (SELECT 1 FROM prm.offer GROUP BY org_id, slot_id, patient_id
	                   HAVING count(*) > 1)
	   AND NOT EXISTS (SELECT 1 FROM prm.offer GROUP BY org_id, slot_id, batch_no
	                   HAVING count(*) > 3)};

my $pid = worker_pid();
unless ($pid)
{
	diag 'no prm worker is running: the other tests need one';
	done_testing();
	exit;
}

#
# 1. A settled state: a slot whose first batch the worker expired and whose
#    second batch is held for an hour.  A crash changes none of its rows.
#
my ($org1, $appt1) = make_clinic('Settled', 9, '2 seconds');
my $slot1 = $node->safe_psql('postgres', "SELECT prm.cancel_appointment($org1, $appt1)");
# the second batch, made by the worker, will be held for an hour
$node->safe_psql('postgres', qq{SELECT prm.configure($org1, '{"offer_hold": "1 hour"}')});
ok( wait_until(qq{
		SELECT count(*) = 3 FROM prm.offer
		 WHERE org_id = $org1 AND slot_id = $slot1 AND batch_no = 2},
		'the second batch'),
	'the worker expired the first batch and sent the second');
my $before = $node->safe_psql('postgres', $fingerprint);
like($before, qr/^offer 6 /m, 'six offers before the crash');
like($before, qr/^outbound_message 6 /m, 'six messages before the crash');

$pid = crash_worker($pid);
is($node->safe_psql('postgres', $fingerprint), $before,
	'after the crash restart every offer, message, event and slot is as it was');
is($node->safe_psql('postgres', $no_duplicates), 't', 'nothing is duplicated');

#
# 2. A crash while a hold runs: after the restart the new worker still
#    expires it and sends the next batch, once.
#
my ($org2, $appt2) = make_clinic('Running', 6, '3 seconds');
my $slot2 = $node->safe_psql('postgres', "SELECT prm.cancel_appointment($org2, $appt2)");
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM prm.offer WHERE org_id = $org2 AND slot_id = $slot2 AND status = 'open'}),
	'3', 'a first batch is held for 3 seconds');
$node->safe_psql('postgres', qq{
	CREATE TABLE held AS SELECT * FROM prm.offer WHERE org_id = $org2 AND slot_id = $slot2});

$pid = crash_worker($pid);
ok( wait_until(qq{
		SELECT count(*) = 3 FROM prm.offer
		 WHERE org_id = $org2 AND slot_id = $slot2 AND batch_no = 2},
		'the second batch after the crash'),
	'after the crash the hold still runs out and the next batch is sent');
ok( wait_until(qq{
		SELECT fill_status = 'exhausted' FROM prm.slot WHERE org_id = $org2 AND id = $slot2},
		'the slot to run out of patients'),
	'and the worker goes on to the end of the waitlist');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(batch_no || ':' || status, ',' ORDER BY id)
		  FROM prm.offer WHERE org_id = $org2 AND slot_id = $slot2}),
	'1:expired,1:expired,1:expired,2:expired,2:expired,2:expired',
	'two batches of three, each expired once');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM prm.offer o
		 WHERE org_id = $org2 AND slot_id = $slot2 AND batch_no = 1
		   AND (o.id, o.patient_id, o.hold_until, o.created_at, o.token_hash) IN
		       (SELECT h.id, h.patient_id, h.hold_until, h.created_at, h.token_hash FROM held h)}),
	'3', 'the offers made before the crash are the ones that expired');
is($node->safe_psql('postgres', $no_duplicates), 't', 'still nothing is duplicated');
like($node->safe_psql('postgres', $fingerprint), qr/^offer 12 .*^outbound_message 12 /ms,
	'twelve offers and twelve messages in all');
# the settled slot was not touched by the second crash either
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(batch_no || ':' || status, ',' ORDER BY id)
		  FROM prm.offer WHERE org_id = $org1 AND slot_id = $slot1}),
	'1:expired,1:expired,1:expired,2:open,2:open,2:open',
	'the settled slot still holds its second batch');

$node->stop;
done_testing();
