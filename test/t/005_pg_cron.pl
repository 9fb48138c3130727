# Without prm preloaded, pg_cron runs the time-driven steps:
# prm.run_due_jobs() expires a hold that ran out and sends the next batch,
# prm.schedule_with_pg_cron() schedules it every minute, and pg_cron's own
# run does the same work.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
# pg_cron runs jobs in background workers: the test server takes no TCP
# connections, which pg_cron's default (libpq to localhost) would need
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n"
	  . "cron.use_background_workers = on\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');

# Poll a query until it returns true, for up to $seconds (30) (PrmTest.pm).
sub wait_until { my ($query, $what, $seconds) = @_; PrmTest::wait_until($node, 'postgres', $query, $what, $seconds) }

is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('prm worker', 'prm launcher')}),
	'0', 'prm is not preloaded: no launcher, no worker');

# a clinic with holds of 2 seconds, one booked patient and nine waiting
my $org = $node->safe_psql('postgres',
	q{SELECT prm.create_organization('Cron Clinic', 'Europe/London', '+44 20 7946 0000')});
$node->safe_psql('postgres', qq{
	SELECT prm.configure($org, '{"phone_region": "GB", "offer_hold": "2 seconds",
	                             "min_notice": "0 seconds", "quiet_hours": false}')});
my $provider = $node->safe_psql('postgres', qq{SELECT prm.add_provider($org, 'Dr Cron')});
$node->safe_psql('postgres', sprintf(
		q{SELECT prm.add_patient(%d, 'P' || g, 'Cron', '07700 900' || lpad(g::text, 3, '0'))
		    FROM generate_series(0, 9) g}, $org));
my $appt = $node->safe_psql('postgres', qq{
	SELECT prm.book_appointment($org, p.id, $provider,
	       now() + interval '1 day', now() + interval '1 day 30 minutes')
	  FROM prm.patient p WHERE p.org_id = $org AND p.given_name = 'P0'});
$node->safe_psql('postgres', qq{
	SELECT prm.join_waitlist($org, p.id) FROM prm.patient p
	 WHERE p.org_id = $org AND p.given_name <> 'P0' ORDER BY p.id});
my $slot = $node->safe_psql('postgres', "SELECT prm.cancel_appointment($org, $appt)");
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM prm.offer WHERE org_id = $org AND slot_id = $slot AND batch_no = 1}),
	'3', 'cancelling sends a first batch of 3 offers');

#
# 1. run_due_jobs() by hand does the work once the hold ran out.
#
ok( wait_until(qq{
		SELECT clock_timestamp() > max(hold_until) FROM prm.offer
		 WHERE org_id = $org AND slot_id = $slot}, 'the hold to run out'),
	'the hold ran out');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM prm.offer WHERE org_id = $org AND slot_id = $slot AND batch_no = 2}),
	'0', 'nothing expires the hold without the worker');
my $result = $node->safe_psql('postgres', 'SELECT prm.run_due_jobs()');
like($result, qr/"expire_offers": 3\b/, "run_due_jobs() expired three offers: $result");
unlike($result, qr/error/, 'no step failed');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(batch_no || ':' || status, ',' ORDER BY id)
		  FROM prm.offer WHERE org_id = $org AND slot_id = $slot}),
	'1:expired,1:expired,1:expired,2:open,2:open,2:open',
	'the first batch expired and the second was sent');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM prm.outbound_message m JOIN prm.offer o
		    ON o.org_id = m.org_id AND o.id = m.offer_id
		 WHERE o.slot_id = $slot AND o.batch_no = 2}),
	'3', 'with an SMS queued for each new offer');

#
# 2. schedule_with_pg_cron() puts it in cron.job, once.
#
my $jobid = $node->safe_psql('postgres', 'SELECT prm.schedule_with_pg_cron()');
like($jobid, qr/^\d+$/, 'schedule_with_pg_cron() returns a job id');
is( $node->safe_psql('postgres', qq{
		SELECT jobname, schedule, command, database FROM cron.job WHERE jobid = $jobid}),
	'prm_run_due_jobs|* * * * *|SELECT prm.run_due_jobs()|postgres',
	'cron.job runs SELECT prm.run_due_jobs() every minute in this database');
is($node->safe_psql('postgres', 'SELECT prm.schedule_with_pg_cron()'),
	$jobid, 'scheduling again keeps the same job');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE command LIKE '%prm.run_due_jobs%'}),
	'1', 'and does not add a second one');

#
# 3. pg_cron's own run (at the next minute) expires the second batch, whose
#    hold ran out meanwhile, and sends the third (held for an hour, so that
#    later runs leave it be).
#
$node->safe_psql('postgres', qq{SELECT prm.configure($org, '{"offer_hold": "1 hour"}')});
my $hold2 = $node->safe_psql('postgres', qq{
	SELECT max(hold_until) FROM prm.offer WHERE org_id = $org AND slot_id = $slot AND batch_no = 2});
ok( wait_until(qq{
		SELECT EXISTS (SELECT 1 FROM cron.job_run_details d
		                WHERE d.jobid = $jobid AND d.status = 'succeeded'
		                  AND d.start_time > '$hold2')},
		'a pg_cron run after the hold ran out', 75),
	'pg_cron ran prm.run_due_jobs() and it succeeded');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(batch_no || ':' || status, ',' ORDER BY id)
		  FROM prm.offer WHERE org_id = $org AND slot_id = $slot AND batch_no >= 2}),
	'2:expired,2:expired,2:expired,3:open,3:open,3:open',
	'the pg_cron run expired the second batch and sent the third');
# Compared with the hold's end, not with the run's start_time in
# cron.job_run_details: pg_cron writes that time itself, and a comparison
# with it failed once in 3 runs (likely taken after the job's transaction
# began).  Nothing else runs jobs here (no worker, no call).
is( $node->safe_psql('postgres', qq{
		SELECT bool_and(o.created_at > '$hold2')
		  FROM prm.offer o
		 WHERE o.org_id = $org AND o.slot_id = $slot AND o.batch_no = 3}),
	't', 'the third batch was made after the hold ran out, by the pg_cron run');

$node->stop;
done_testing();
