# Upgrades: for every released version with an upgrade path, install it, put
# data in, ALTER EXTENSION prm UPDATE, and compare the catalog of everything
# prm owns with a fresh install of the default version (the idea of
# pg_stat_statements' oldextversions test).  The data must survive and the
# upgraded extension must work.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE ROLE regress_upgrade_staff');

my $default = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'prm'});
my @old = split /\n/, $node->safe_psql('postgres',
	qq{SELECT version FROM pg_available_extension_versions
	    WHERE name = 'prm' AND version <> '$default' ORDER BY version});
ok(scalar(@old) > 0, "there are released versions older than $default: @old");

# Everything that belongs to the extension, described by catalog functions.
my $catalog = q{
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'prm'),
members AS (
  SELECT d.classid, d.objid FROM pg_depend d, ext
   WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
SELECT line FROM (
  SELECT 'function ' || p.oid::regprocedure || E'\n' || pg_get_functiondef(p.oid)
         || E'\ncomment: ' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
         || E'\nPUBLIC may execute: ' || has_function_privilege('public', p.oid, 'EXECUTE') AS line
    FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' kind ' || c.relkind::text
         || ' options ' || coalesce(c.reloptions::text, '-')
         || ' rls ' || c.relrowsecurity
         || ' comment ' || coalesce(obj_description(c.oid, 'pg_class'), '-')
    FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
  UNION ALL
  SELECT 'column ' || c.oid::regclass || '.' || a.attnum || ' ' || a.attname || ' '
         || format_type(a.atttypid, a.atttypmod) || ' notnull ' || a.attnotnull
         || ' default ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '-')
         || ' identity ' || a.attidentity::text
         || ' comment ' || coalesce(col_description(c.oid, a.attnum), '-')
    FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
  UNION ALL
  SELECT 'constraint ' || con.conrelid::regclass || ' ' || con.conname || ' '
         || pg_get_constraintdef(con.oid)
    FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
    JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = i.indrelid
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = t.tgrelid
   WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'policy ' || pol.polrelid::regclass || ' ' || pol.polname || ' ' || pol.polcmd::text || ' '
         || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '-')
    FROM pg_policy pol JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = pol.polrelid
  UNION ALL
  SELECT 'dumped ' || x::regclass FROM pg_extension e, unnest(e.extconfig) x WHERE e.extname = 'prm'
  UNION ALL
  SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0) FROM members m
) s ORDER BY line};

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION prm CASCADE');
my $fresh = $node->safe_psql('fresh', $catalog);
like($fresh, qr/function prm\.fill_slot/, 'fresh install has the fill engine');

foreach my $v (@old)
{
	my $db = "from_" . ($v =~ s/\W/_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION prm VERSION '$v' CASCADE");
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'prm'}),
		$v, "installed $v");

	# data written under the old version
	$node->safe_psql($db, q{
		SELECT prm.create_organization('Old Clinic', 'UTC', '+15558001000');
		SELECT prm.add_provider(1, 'Dr Old');
		SELECT prm.add_patient(1, 'P' || g, 'Old', '+1555800' || (2000 + g)) FROM generate_series(1, 5) g;
		SELECT prm.book_appointment(1, g, 1, now() + g * interval '1 day', now() + g * interval '1 day' + interval '30 minutes')
		  FROM generate_series(1, 5) g;
		SELECT prm.cancel_appointment(1, 5);
		SELECT prm.grant_access('regress_upgrade_staff', 1, 'staff');
	});
	my $before = $node->safe_psql($db,
		q{SELECT (SELECT count(*) FROM prm.patient) || ' ' || (SELECT count(*) FROM prm.appointment)
		      || ' ' || (SELECT count(*) FROM prm.slot) || ' ' || (SELECT count(*) FROM prm.event)});

	$node->safe_psql($db, 'ALTER EXTENSION prm UPDATE');
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'prm'}),
		$default, "$v updated to $default");

	my $upgraded = $node->safe_psql($db, $catalog);
	is($upgraded, $fresh, "catalog after updating $v equals a fresh $default install");

	is($node->safe_psql($db,
		q{SELECT (SELECT count(*) FROM prm.patient) || ' ' || (SELECT count(*) FROM prm.appointment)
		      || ' ' || (SELECT count(*) FROM prm.slot) || ' ' || (SELECT count(*) FROM prm.event)}),
		$before, "rows written under $v are all there after the update");

	# and the new version works on the old data
	$node->safe_psql($db, q{
		SELECT prm.configure(1, '{"quiet_hours": false}');
		SELECT prm.join_waitlist(1, 5);
	});
	is($node->safe_psql($db, q{SELECT prm.cancel_appointment(1, 4) > 0}), 't',
		'cancel works after the update');
	is($node->safe_psql($db, q{SELECT count(*) FROM prm.offer WHERE patient_id = 5}), '1',
		'the waiting patient got an offer after the update');
	is($node->safe_psql($db, q{SET ROLE regress_upgrade_staff; SELECT count(*) FROM prm.offer}), '1',
		'a role granted before the update reads the tables the update added');
	is($node->safe_psql($db, q{SELECT has_function_privilege('regress_upgrade_staff', 'prm.fill_slot(bigint,bigint)', 'EXECUTE')
	                               AND NOT has_function_privilege('regress_upgrade_staff', 'prm.configure(bigint,jsonb)', 'EXECUTE')
	                               AND NOT has_function_privilege('public', 'prm.fill_slot(bigint,bigint)', 'EXECUTE')}), 't',
		'after the update a staff role granted before it executes exactly the staff functions');
}

$node->stop;
done_testing();
