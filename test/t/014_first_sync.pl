# A first import costs what it brings.  On a new database prm's tables were
# never analysed, and each record's look-ups by key (the foreign-key checks,
# the statistics rows, the external id) were planned for an empty table and
# kept for the whole call: every check read all the rows synced so far, so
# one sync_patients of N records read about N^2 rows (3,000 records: 22.5
# million).  A sync now analyses the tables it writes whose statistics
# count fewer rows than it brings, as it goes (reengagement_sync.c).
#
# Checked by counting, not timing: the rows read from prm.patient,
# prm.patient_stats and prm.appointment (sequential scans and fetches
# through indexes, from pg_stat_xact_user_tables, read inside it) by one
# transaction that syncs 3,000 patients and then 3,000 appointments into a
# fresh cluster with autovacuum off.  The bound, 1,000 rows a record, is
# far above what the linear cost needs (about 300) and far below the
# quadratic one (7,500).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $n    = 3000;
my $node = PostgreSQL::Test::Cluster->new('first_sync');
$node->init;
$node->append_conf('postgresql.conf', "autovacuum = off\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');
my $org = $node->safe_psql('postgres',
	q{SELECT prm.create_organization('First Sync Clinic', 'UTC', '+12025550100')});
my $provider = $node->safe_psql('postgres', qq{SELECT prm.add_provider($org, 'Dr Lee')});

is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_class
		   WHERE relnamespace = 'prm'::regnamespace AND reltuples >= 0
		     AND relname IN ('patient', 'patient_stats', 'appointment')}),
	'0',
	'a new database: the tables were never analysed');

# the rows read are this transaction's own counters, read before it commits
my ($inserted, $read) = split /\n/, $node->safe_psql(
	'postgres', qq{
	BEGIN;
	SELECT (prm.sync_patients($org, 'cliniko', (
	          SELECT jsonb_agg(jsonb_build_object('external_id', 'p' || g, 'given_name', 'Given' || g,
	                 'family_name', 'Family' || g, 'phone', '+1202556' || lpad(g::text, 4, '0')))
	            FROM generate_series(1, $n) g)) ->> 'inserted')
	    || ',' ||
	       (prm.sync_appointments($org, 'cliniko', (
	          SELECT jsonb_agg(jsonb_build_object('external_id', 'a' || g, 'patient_external_id', 'p' || g,
	                 'provider_id', $provider, 'starts_at', (now() - interval '1 day' * g)::text,
	                 'ends_at', (now() - interval '1 day' * g + interval '30 minutes')::text,
	                 'status', 'fulfilled', 'price', 80))
	            FROM generate_series(1, $n) g)) ->> 'inserted');
	SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0) FROM pg_stat_xact_user_tables
	 WHERE schemaname = 'prm' AND relname IN ('patient', 'patient_stats', 'appointment');
	COMMIT;});
is($inserted, "$n,$n", "one transaction synced $n patients and $n appointments");
note("rows read from prm.patient, prm.patient_stats and prm.appointment by the sync: $read");
cmp_ok($read, '>', 0, 'the counters saw the sync read its tables');
cmp_ok($read, '<', 1000 * $n, 'the sync read fewer than 1,000 rows a record (it read N^2/2 per check before)');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_class
		   WHERE relnamespace = 'prm'::regnamespace AND reltuples > 0
		     AND relname IN ('patient', 'patient_stats', 'appointment')}),
	'3',
	'the sync analysed the tables it wrote');
is( $node->safe_psql('postgres',
		qq{SELECT count(*) FROM prm.appointment a JOIN prm.patient p ON p.org_id = a.org_id AND p.id = a.patient_id
		    WHERE a.org_id = $org AND p.external_id = 'p' || substr(a.external_id, 2)}),
	$n,
	'every appointment belongs to its own patient');

$node->stop;
done_testing();
