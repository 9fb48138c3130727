# The audit of prm.export_patient survives a rollback: the export hands out
# personal data whether or not the caller commits, and PostgreSQL has no
# autonomous transactions, so besides the event row (rolled back with the
# transaction) every export writes a LOG line to the server log: who (and
# the session user behind a SET ROLE), which organization and patient, and
# when, with no personal data.  The client is not sent the line; an export
# refused by the access check logs nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('exportaudit');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION prm CASCADE');

my $org = $node->safe_psql('postgres',
	q{SELECT prm.create_organization('Audit Clinic', 'UTC', '+15558090000')});
my $patient = $node->safe_psql('postgres',
	qq{SELECT prm.add_patient($org, 'Yolanda', 'Auditwright', '+15558091001', 'yolanda\@example.org')});
$node->safe_psql('postgres', qq{
	CREATE ROLE frontdesk LOGIN;
	CREATE ROLE viewer LOGIN;
	SELECT prm.grant_access('frontdesk', $org, 'staff');
	SELECT prm.grant_access('viewer', $org, 'readonly');});

my $exported = qq{SELECT count(*) FROM prm.event
	WHERE org_id = $org AND kind = 'patient_exported' AND entity_id = $patient};
my $line = qr/LOG:  prm audit: role "frontdesk" exported patient $patient of organization $org at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$/m;

#
# 1. An export rolled back: no event, but the log line (its time in ISO 8601
#    UTC whatever the session's DateStyle and time zone).
#
my $offset = -s $node->logfile;
my ($rc, $out, $err) = $node->psql('postgres',
	qq{BEGIN; SET LOCAL DateStyle = 'SQL, DMY'; SET LOCAL TimeZone = 'Asia/Tokyo'; SELECT prm.export_patient($org, $patient) ->> 'patient' IS NOT NULL; ROLLBACK;},
	extra_params => [ '-U', 'frontdesk' ]);
is($rc, 0, 'frontdesk exports the patient in a transaction and rolls it back');
is($out, 't', 'the export returned the patient');
is($node->safe_psql('postgres', $exported), '0', 'the rollback took the audit event with it');
ok($node->log_contains($line, $offset), 'but the server log has the audit line');
my $log = slurp_file($node->logfile, $offset);
unlike($log, qr/Yolanda|Auditwright|5550091001|yolanda\@example/i,
	'the log holds no personal data of the patient');
unlike($err, qr/prm audit/, 'the client is not sent the audit line');

#
# 2. Behind SET ROLE the session user is named too; a committed export also
#    leaves its event.
#
$offset = -s $node->logfile;
$node->safe_psql('postgres', qq{SET ROLE frontdesk; SELECT prm.export_patient($org, $patient);});
ok( $node->log_contains(
		qr/prm audit: role "frontdesk" \(session user "[^"]+"\) exported patient $patient of organization $org at /,
		$offset),
	'an export behind SET ROLE names the session user as well');
is($node->safe_psql('postgres', $exported), '1', 'a committed export leaves its event');

#
# 3. An export the access check refuses logs no audit line.
#
$offset = -s $node->logfile;
($rc, $out, $err) = $node->psql('postgres', qq{SELECT prm.export_patient($org, $patient)},
	extra_params => [ '-U', 'viewer' ]);
like($err, qr/permission denied/, 'a readonly role may not export');
unlike(slurp_file($node->logfile, $offset), qr/prm audit/, 'and a refused export logs no audit line');

$node->stop;
done_testing();
