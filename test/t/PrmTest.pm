# What prm's TAP tests share: waiting for a background process to act.
package PrmTest;

use strict;
use warnings;
use Exporter 'import';
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT_OK = qw(wait_until);

# Poll $query in database $db of $node (every 100 ms, for up to $seconds,
# default 30) until it returns true; say what timed out when it does not.
sub wait_until
{
	my ($node, $db, $query, $what, $seconds) = @_;

	$seconds //= 30;
	for (1 .. 10 * $seconds)
	{
		my ($rc, $out) = $node->psql($db, $query);
		return 1 if $rc == 0 && $out eq 't';
		usleep(100_000);
	}
	diag "timed out after $seconds s waiting for $what";
	return 0;
}

1;
