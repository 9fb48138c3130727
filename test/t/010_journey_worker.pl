# A journey runs itself on the worker: with prm preloaded and the worker
# asleep for up to an hour, a booking enrols its patient (the event's own
# transaction), the worker runs stage 1 (a message, then a 2-second wait),
# moves to stage 2 when its advance_after of 2 seconds is over, sends its
# message and completes the instance, with no client call in between.  The
# waits are respected (nothing of stage 2 before 4 s), every step is in the
# history, and the lag of each deadline is printed (not asserted: no timing
# thresholds in tests).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;

my $node = PostgreSQL::Test::Cluster->new('journey_worker');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'prm'\nprm.databases = 'postgres'\nprm.worker_max_sleep = 3600\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');

# Poll a query until it returns true, for up to 60 s (PrmTest.pm).
sub wait_until { PrmTest::wait_until($node, 'postgres', @_, 60) }

my $org = $node->safe_psql('postgres',
	q{SELECT prm.create_organization('Journeys', 'UTC', '+15558095000')});
$node->safe_psql('postgres', qq{SELECT prm.configure($org, '{"quiet_hours": false}')});
my $pat = $node->safe_psql('postgres', qq{SELECT prm.add_patient($org, 'Wen', 'Walker', '+15558095001')});
my $prov = $node->safe_psql('postgres', qq{SELECT prm.add_provider($org, 'Dr Way')});
my $j = $node->safe_psql('postgres', qq{SELECT prm.create_journey($org, 'Welcome', 'appointment_booked')});
$node->safe_psql('postgres', qq{
	SELECT prm.add_journey_stage($org, $j, 'Hello',
	    '[{"type": "send", "template": "booked"}, {"type": "wait", "for": "2 seconds"}]', '0');
	SELECT prm.add_journey_stage($org, $j, 'Pause', '[]', '2 seconds');
	SELECT prm.add_journey_stage($org, $j, 'Bye',
	    '[{"type": "open_ticket", "subject": "Check in with the new patient"}]', '0');});
ok( wait_until(q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'prm worker'}, 'the worker'),
	'the worker runs');
sleep(1);    # let the worker settle into its long sleep

$node->safe_psql('postgres', qq{
	SELECT prm.book_appointment($org, $pat, $prov, now() + interval '3 days', now() + interval '3 days 1 hour')});
my $inst = $node->safe_psql('postgres', qq{SELECT id FROM prm.journey_instance WHERE patient_id = $pat});
ok($inst, 'the booking enrolled the patient');

ok( wait_until(qq{SELECT status = 'completed' FROM prm.journey_instance WHERE id = $inst}, 'completion'),
	'the worker ran the journey to completion by itself');
is( $node->safe_psql('postgres', qq{SELECT string_agg(kind || ':' || coalesce(stage_position::text, '-'), ' ' ORDER BY step_id)
	                                  FROM prm.journey_history WHERE instance_id = $inst}),
	'entered:1 action:1 waiting:1 entered:2 entered:3 action:3 completed:3',
	'the history: stage 1 sent and waited, stage 2 waited out its advance_after, stage 3 opened a ticket');
is( $node->safe_psql('postgres', qq{SELECT count(*) FROM prm.outbound_message WHERE patient_id = $pat AND dedup_key LIKE 'journey:%'}),
	'1', 'one message queued');
is( $node->safe_psql('postgres', qq{SELECT count(*) FROM prm.ticket WHERE patient_id = $pat AND source = 'journey'}),
	'1', 'one ticket opened');

# the waits were kept: stage 2 no earlier than 2 s after stage 1's wait
# began, stage 3 no earlier than 2 s after stage 2 was entered
my $gaps = $node->safe_psql('postgres', qq{
	WITH s AS (SELECT kind, stage_position, at FROM prm.journey_history WHERE instance_id = $inst)
	SELECT (SELECT at FROM s WHERE kind = 'entered' AND stage_position = 2)
	         - (SELECT at FROM s WHERE kind = 'waiting') >= interval '2 seconds',
	       (SELECT at FROM s WHERE kind = 'entered' AND stage_position = 3)
	         - (SELECT at FROM s WHERE kind = 'entered' AND stage_position = 2) >= interval '2 seconds'});
is($gaps, 't|t', 'no stage moved on before its wait was over');
my $lags = $node->safe_psql('postgres', qq{
	WITH s AS (SELECT kind, stage_position, at FROM prm.journey_history WHERE instance_id = $inst)
	SELECT round(extract(epoch FROM (SELECT at FROM s WHERE kind = 'entered' AND stage_position = 2)
	                   - (SELECT at FROM s WHERE kind = 'waiting') - interval '2 seconds') * 1000) || ' ms, '
	    || round(extract(epoch FROM (SELECT at FROM s WHERE kind = 'entered' AND stage_position = 3)
	                   - (SELECT at FROM s WHERE kind = 'entered' AND stage_position = 2) - interval '2 seconds') * 1000) || ' ms'});
diag("deadline to action: $lags");

$node->stop;
done_testing();
