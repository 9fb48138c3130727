# prm.databases decides which databases have a worker, and prm.health()
# says so: with 'postgres,clinic' both get one and clinic's health reports
# it running (pid, started_at, last_round_at); a database not in the list
# reports "listed": false with a problem saying what to do; taking clinic
# out of prm.databases and reloading stops its worker (the launcher does
# not start it again) so DROP DATABASE clinic succeeds, while the worker of
# postgres keeps running; putting a database back in starts one again.
# Without prm preloaded, health() says no worker runs and names pg_cron.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::Bin;
use PrmTest;

my $node = PostgreSQL::Test::Cluster->new('databases');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'prm'\nprm.databases = 'postgres,clinic'\nprm.worker_max_sleep = 3600\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE clinic');
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql($_, 'CREATE EXTENSION prm CASCADE') for qw(postgres clinic other);

# Poll a query in $db until it returns true (PrmTest.pm).
sub wait_until { PrmTest::wait_until($node, @_) }

# The pids of the prm workers of database $db, as pg_stat_activity shows them.
sub worker_pids
{
	my ($db) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') FROM pg_stat_activity
		 WHERE backend_type = 'prm worker' AND datname = '$db'});
}

#
# 1. Both listed databases get a worker, and health() reports it.
#
ok(wait_until('postgres', q{
		SELECT count(DISTINCT datname) = 2 FROM pg_stat_activity
		 WHERE backend_type = 'prm worker' AND datname IN ('postgres', 'clinic')},
		'the two workers'),
	'a worker runs for postgres and for clinic');
my $clinic_pid = worker_pids('clinic');
like($clinic_pid, qr/^\d+$/, 'exactly one worker for clinic');
ok(wait_until('clinic', q{SELECT (prm.health()->'worker'->>'last_round_at') IS NOT NULL},
		'a first round in clinic'),
	'health() in clinic reports when the worker last ran');
is($node->safe_psql('clinic', q{
		SELECT concat_ws('|', w->>'preloaded', w->>'listed', w->>'running', w->>'pid',
		                 w->>'started_at' IS NOT NULL, w->>'problem' IS NULL,
		                 (w->>'last_round_at')::timestamptz <= now())
		  FROM (SELECT prm.health()->'worker' AS w) h}),
	"true|true|true|$clinic_pid|t|t|t",
	'health() in clinic: preloaded, listed, running with the pid pg_stat_activity shows, no problem');

is($node->safe_psql('other', q{
		SELECT concat_ws('|', w->>'listed', w->>'running', w->>'problem' LIKE '%not in prm.databases%')
		  FROM (SELECT prm.health()->'worker' AS w) h}),
	'false|false|t',
	'health() in a database not in prm.databases: no worker, and the problem says to add it');
is(worker_pids('other'), '', 'and indeed no worker runs there');

#
# 2. Out of prm.databases: the worker stops, the database can be dropped.
#
my $postgres_pid = worker_pids('postgres');
my $offset = -s $node->logfile;
$node->safe_psql('postgres', q{ALTER SYSTEM SET prm.databases = 'postgres'});
$node->reload;
ok(wait_until('postgres', q{
		SELECT count(*) = 0 FROM pg_stat_activity
		 WHERE backend_type = 'prm worker' AND datname = 'clinic'},
		'the worker of clinic to stop'),
	'after the reload the worker of clinic has stopped');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE clinic');
is($rc, 0, 'DROP DATABASE clinic succeeds') or diag $err;
my $log = slurp_file($node->logfile, $offset);
like($log, qr/stopping the worker for database "clinic", no longer in prm.databases/,
	'the launcher logs why it stopped the worker');
unlike($log, qr/prm worker for database "clinic" did not start|terminated by signal/,
	'the worker stopped cleanly and was not started again');
is(worker_pids('postgres'), $postgres_pid, 'the worker of postgres kept running');
is($node->safe_psql('postgres', q{SELECT prm.health()->'worker'->>'running'}), 'true',
	'and health() in postgres still reports it');

#
# 3. Back in the list: a worker starts again.
#
$node->safe_psql('postgres', q{ALTER SYSTEM SET prm.databases = 'postgres, other'});
$node->reload;
ok(wait_until('other', q{SELECT (prm.health()->'worker'->>'running')::boolean},
		'a worker for other'),
	'a database added to prm.databases gets a worker at the reload');

#
# 4. Without prm preloaded health() says that no worker runs, and why.
#
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''\n");
$node->restart;
is($node->safe_psql('postgres', q{
		SELECT concat_ws('|', w->>'preloaded', w->>'running', w->>'problem' LIKE '%pg_cron%')
		  FROM (SELECT prm.health()->'worker' AS w) h}),
	'false|false|t',
	'without the preload: not running, and the problem names pg_cron');

$node->stop;
done_testing();
