# SLA breaches are deadlines the worker wakes for: with prm preloaded and
# the worker asleep for up to an hour, a ticket whose first reply is due in 2
# seconds gets its ticket_sla_breached event (within the test's 30-second
# poll, so the deadline woke the worker; the lag is printed, not asserted),
# with no client call (the commit of open_ticket woke the worker to
# the ticket's sla_next_due_at); a solved ticket past ticket_autoclose_after
# is closed by the same step.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;

my $node = PostgreSQL::Test::Cluster->new('ticket_sla');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'prm'\nprm.databases = 'postgres'\nprm.worker_max_sleep = 3600\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');

# Poll a query until it returns true, for up to 30 s (PrmTest.pm).
sub wait_until { PrmTest::wait_until($node, 'postgres', @_) }

my $org = $node->safe_psql('postgres', q{SELECT prm.create_organization('SLA', 'UTC', '+15558090000')});
$node->safe_psql('postgres', qq{SELECT prm.set_sla_policy($org, 'normal', '2 seconds', '1 hour')});
ok( wait_until(q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'prm worker'}, 'the worker'),
	'the worker runs');
# let the worker settle into its long sleep first
sleep(1);
my $ticket = $node->safe_psql('postgres', qq{SELECT prm.open_ticket($org, 'Call me')});

ok( wait_until(qq{SELECT EXISTS (SELECT 1 FROM prm.event WHERE entity = 'ticket' AND entity_id = $ticket
	                    AND kind = 'ticket_sla_breached')}, 'the breach'),
	'the worker raised the first-reply breach by itself');
my $lag = $node->safe_psql('postgres', qq{
	SELECT extract(epoch FROM e.occurred_at - t.first_reply_due_at)
	  FROM prm.event e JOIN prm.ticket t ON t.org_id = e.org_id AND t.id = e.entity_id
	 WHERE e.kind = 'ticket_sla_breached' AND t.id = $ticket});
cmp_ok($lag, '>=', 0, 'not before the due time');
note "breach raised $lag s after the due time";

# auto-close: as if the solve was 4 days ago
$node->safe_psql('postgres', qq{SELECT prm.set_ticket_status($org, $ticket, 'solved')});
$node->safe_psql('postgres', qq{
	UPDATE prm.ticket SET autoclose_at = now() + interval '1 second' WHERE id = $ticket});
# a deadline written behind prm's back: a reload makes the worker look again
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( wait_until(qq{SELECT status = 'closed' FROM prm.ticket WHERE id = $ticket}, 'the auto-close'),
	'the worker closed the solved ticket by itself');

$node->stop;
done_testing();
