# The notifier relays prm's notifications (notify_relay.c): a commit that
# queues a message is NOTIFYed on prm_outbox_sms by the notifier's process,
# once, after the commit; a rolled back transaction or savepoint notifies
# nobody; many commits cost the notifier fewer NOTIFY transactions than
# commits; with prm.notify_relay off, or in a database without a notifier,
# the writer NOTIFYs itself; PREPARE TRANSACTION is refused as for NOTIFY;
# a notifier that is stopped is started again by the launcher, and its
# first round notifies every channel (for commits nobody relayed); one
# whose database leaves prm.databases exits, and writers NOTIFY again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;

my $node = PostgreSQL::Test::Cluster->new('relay');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'prm'\nprm.databases = 'postgres'\n"
	  . "prm.worker_max_sleep = 3600\nmax_prepared_transactions = 2\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE other');
for my $db (qw(postgres other))
{
	$node->safe_psql($db, q{
		CREATE EXTENSION prm CASCADE;
		SELECT prm.create_organization('Relay Physio', 'UTC', '+1 212 555 0100');});
}

# Poll a query in $db until it returns true (PrmTest.pm).
sub wait_until { PrmTest::wait_until($node, @_) }

# Run a psql script in $db and return the pids that sent a notification on
# $channel, in the order they arrived, and the script's last line.
sub notifications
{
	my ($db, $channel, $script) = @_;
	my ($out, $err) = ('', '');

	$node->psql($db, $script, stdout => \$out, stderr => \$err, on_error_die => 1);
	my @pids = $out =~ /Asynchronous notification "\Q$channel\E" received from server process with PID (\d+)\./g;
	my ($last) = $out =~ /([^\n]*)\z/;
	return (\@pids, $last);
}

sub notifier_json
{
	my ($field) = @_;
	return $node->safe_psql('postgres', "SELECT prm.health()->'notifier'->>'$field'");
}

my $enqueue = q{SELECT prm.enqueue_message(1, 'sms', '+1 212 555 0199', 'An earlier appointment is free.');};

ok(wait_until('postgres', q{SELECT prm.health()->'notifier'->>'running' = 'true'}, 'the notifier'),
	'the launcher starts a notifier for postgres, and health() reports it');
my $notifier = notifier_json('pid');
is( $node->safe_psql('postgres',
		"SELECT backend_type || ' ' || datname FROM pg_stat_activity WHERE pid = $notifier"),
	'prm notifier postgres',
	'the notifier is the backend "prm notifier" of database postgres');

#
# 1. A commit is notified once, by the notifier, after the commit.
#
my ($pids, $last) = notifications('postgres', 'prm_outbox_sms', qq{
	LISTEN prm_outbox_sms;
	$enqueue
	SELECT pg_sleep(0.5);
	SELECT 'end';});
is_deeply($pids, [$notifier], 'one queued message: one notification, sent by the notifier');
is($last, 'end', 'the script ran to its end');

($pids) = notifications('postgres', 'prm_outbox_sms', qq{
	LISTEN prm_outbox_sms;
	BEGIN; $enqueue SELECT pg_sleep(0.3); SELECT 'inside'; ROLLBACK;
	SELECT pg_sleep(0.5);
	SELECT 'end';});
is_deeply($pids, [], 'a rolled back transaction notifies nobody, before or after its end');

($pids) = notifications('postgres', 'prm_outbox_sms', qq{
	LISTEN prm_outbox_sms;
	BEGIN; SAVEPOINT a; $enqueue ROLLBACK TO SAVEPOINT a; COMMIT;
	SELECT pg_sleep(0.5);
	SELECT 'end';});
is_deeply($pids, [], 'a message queued in a rolled back savepoint notifies nobody');

($pids) = notifications('postgres', 'prm_outbox_sms', qq{
	LISTEN prm_outbox_sms;
	BEGIN; SAVEPOINT a; SAVEPOINT b; $enqueue RELEASE SAVEPOINT b; ROLLBACK TO SAVEPOINT a; COMMIT;
	SELECT pg_sleep(0.5);
	SELECT 'end';});
is_deeply($pids, [], 'released into a savepoint that is then rolled back: nobody');

($pids) = notifications('postgres', 'prm_outbox_sms', qq{
	LISTEN prm_outbox_sms;
	BEGIN; SAVEPOINT a; $enqueue RELEASE SAVEPOINT a; $enqueue COMMIT;
	SELECT pg_sleep(0.5);
	SELECT 'end';});
is_deeply($pids, [$notifier], 'two messages in one transaction, one in a released savepoint: one notification');

#
# 2. Many commits, fewer NOTIFY transactions.
#
my $commits0 = notifier_json('relayed_commits');
my $rounds0 = notifier_json('notify_rounds');
($pids) = notifications('postgres', 'prm_outbox_sms', qq{
	LISTEN prm_outbox_sms;
	DO \$\$ BEGIN FOR i IN 1..200 LOOP
		PERFORM prm.enqueue_message(1, 'sms', '+1 212 555 0199', 'An earlier appointment is free.');
		COMMIT;
	END LOOP; END \$\$;
	SELECT pg_sleep(0.5);
	SELECT 'end';});
my $commits = notifier_json('relayed_commits') - $commits0;
my $rounds = notifier_json('notify_rounds') - $rounds0;
is($commits, 200, '200 commits handed their channel to the notifier');
cmp_ok($rounds, '>=', 1, "the notifier sent them ($rounds NOTIFY transactions)");
cmp_ok(scalar(@$pids), '>=', 1, 'the listener heard of them');
cmp_ok(scalar(@$pids), '<=', $rounds, 'never more notifications than NOTIFY rounds');
is((grep { $_ != $notifier } @$pids), 0, 'every one from the notifier');

#
# 3. Without the relay, the writer NOTIFYs in its transaction.
#
($pids, $last) = notifications('postgres', 'prm_outbox_sms', qq{
	SET prm.notify_relay = off;
	LISTEN prm_outbox_sms;
	$enqueue
	SELECT pg_backend_pid();});
is_deeply($pids, [$last], 'prm.notify_relay off: one notification, from the writer itself');

($pids, $last) = notifications('other', 'prm_outbox_sms', qq{
	LISTEN prm_outbox_sms;
	$enqueue
	SELECT pg_backend_pid();});
is_deeply($pids, [$last], 'a database without a notifier: the writer NOTIFYs itself');
is($node->safe_psql('other', q{SELECT prm.health()->'notifier'->>'running'}),
	'false', 'and health() of that database says no notifier runs');

my ($rc, $out, $err) = $node->psql('postgres', qq{BEGIN; $enqueue PREPARE TRANSACTION 'p';});
like($err, qr/cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY/,
	'PREPARE TRANSACTION is refused for a transaction that queued a message, as for NOTIFY');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0', 'nothing was prepared');

#
# 4. A stopped notifier is started again, and its first round notifies
#    every channel: a listener of prm_ticket hears from it with no ticket.
#
($pids) = notifications('postgres', 'prm_ticket', qq{
	LISTEN prm_ticket;
	SELECT pg_terminate_backend($notifier);
	DO \$\$ BEGIN
		FOR i IN 1..300 LOOP
			EXIT WHEN coalesce((prm.health()->'notifier'->>'pid')::int, $notifier) <> $notifier;
			PERFORM pg_sleep(0.1);
		END LOOP; END \$\$;
	SELECT pg_sleep(0.5);
	SELECT 'end';});
my $new_notifier = notifier_json('pid');
isnt($new_notifier, $notifier, 'the launcher started a new notifier');
is_deeply($pids, [$new_notifier], 'whose first round notified prm_ticket, though no ticket changed');

($pids) = notifications('postgres', 'prm_outbox_sms', qq{
	LISTEN prm_outbox_sms;
	$enqueue
	SELECT pg_sleep(0.5);
	SELECT 'end';});
is_deeply($pids, [$new_notifier], 'and which relays the next commit');

#
# 5. A database taken out of prm.databases: its notifier sends what is
#    pending and exits, and the writers NOTIFY themselves again.
#
$node->append_conf('postgresql.conf', "prm.databases = 'other'\n");
$node->reload;
ok(wait_until('postgres', q{SELECT prm.health()->'notifier'->>'running' = 'false'}, 'the notifier to stop'),
	'taken out of prm.databases, the notifier of postgres stops');
like(slurp_file($node->logfile), qr/prm notifier for database "postgres" shutting down/,
	'and says so in the log');
($pids, $last) = notifications('postgres', 'prm_outbox_sms', qq{
	LISTEN prm_outbox_sms;
	$enqueue
	SELECT pg_backend_pid();});
is_deeply($pids, [$last], 'a commit after that NOTIFYs itself');

$node->stop;
done_testing();
