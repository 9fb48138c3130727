# Companion monitoring with the worker, no client calls between: a 2-second
# inactivity threshold opens an alert and the first caregiver's SMS is
# queued (the worker, asleep for up to an hour, was woken by the deadline;
# the lag is printed, not asserted); with no acknowledgement the
# second caregiver is asked escalation_wait later; an acknowledgement stops
# the escalation (the third is never asked); a heartbeat resolves the alert
# and tells those who were asked.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;

my $node = PostgreSQL::Test::Cluster->new('monitor');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'prm'\nprm.databases = 'postgres'\nprm.worker_max_sleep = 3600\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');

# Poll a query until it returns true, for up to 30 s (PrmTest.pm).
sub wait_until { PrmTest::wait_until($node, 'postgres', @_) }

my $org = $node->safe_psql('postgres',
	q{SELECT prm.create_organization('Companion', 'UTC', '+15558080000')});
my $mia = $node->safe_psql('postgres', qq{SELECT prm.add_patient($org, 'Mia', 'Mills', '+15558081001')});
my @circle;
for my $i (1 .. 3)
{
	push @circle, $node->safe_psql('postgres',
		qq{SELECT prm.add_caregiver($org, 'Carer $i', '+1555808200$i')});
	$node->safe_psql('postgres', qq{SELECT prm.link_caregiver($org, $mia, $circle[-1])});
}
# the worker has nothing to do: it sleeps (up to an hour) until woken
sleep 1;
$node->safe_psql('postgres', qq{
	SELECT prm.set_monitoring($org, $mia, '{"inactivity_threshold": "2 seconds", "escalation_wait": "2 seconds"}')});

ok(wait_until(q{SELECT count(*) = 1 FROM prm.alert WHERE kind = 'inactivity' AND status = 'open'}, 'the alert'),
	'two seconds of silence open an inactivity alert');
ok(wait_until(q{SELECT count(*) = 1 FROM prm.outbound_message WHERE kind = 'caregiver_alert'}, 'the first SMS'),
	'the first caregiver is messaged');
my $lag = $node->safe_psql('postgres', q{
	SELECT extract(epoch FROM (SELECT min(created_at) FROM prm.outbound_message WHERE kind = 'caregiver_alert')
	       - (SELECT started_at + inactivity_threshold FROM prm.monitoring))});
note "first caregiver SMS queued $lag s after the deadline";
is($node->safe_psql('postgres', q{SELECT to_address FROM prm.outbound_message WHERE kind = 'caregiver_alert'}),
	'+15558082001', 'the first of the circle');

ok(wait_until(q{SELECT count(DISTINCT caregiver_id) = 2 FROM prm.alert_notification WHERE purpose = 'alert'}, 'the second caregiver'),
	'no acknowledgement: the second caregiver is asked');
my $alert = $node->safe_psql('postgres', q{SELECT id FROM prm.alert});
$node->safe_psql('postgres', qq{SELECT prm.acknowledge_alert($org, $alert, $circle[1])});
sleep 3;
is($node->safe_psql('postgres', q{SELECT count(DISTINCT caregiver_id) FROM prm.alert_notification WHERE purpose = 'alert'}),
	'2', 'the acknowledgement stopped the escalation: the third is never asked');

$node->safe_psql('postgres', qq{SELECT prm.record_heartbeat($org, $mia)});
is($node->safe_psql('postgres', q{SELECT status FROM prm.alert}), 'resolved', 'a heartbeat resolves the alert');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prm.alert_notification WHERE purpose = 'resolved'}),
	'2', 'and tells both who were asked');

$node->stop;
done_testing();
