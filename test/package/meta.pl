#!/usr/bin/perl
# The PGXN metadata test: META.json against the required keys and value
# forms of the PGXN Meta Spec v1.0.0 (https://pgxn.org/spec/), no network,
# then against prm itself (the version prm.control installs, the files it
# names, the prerequisites).  The validator is shown to reject broken
# copies, so the test can fail.  Prints TAP; run from test/run.sh, or
#   perl test/package/meta.pl [META.json]
use strict;
use warnings;
use JSON::PP;
use File::Basename qw(dirname);

my $root = dirname(__FILE__) . '/../..';
my $file = shift // "$root/META.json";

# licence strings the spec knows (section "license")
my %licenses = map { $_ => 1 } qw(agpl_3 apache_1_1 apache_2_0 artistic_1 artistic_2
    bsd freebsd gfdl_1_2 gfdl_1_3 gpl_1 gpl_2 gpl_3 lgpl_2_1 lgpl_3_0 mit mozilla_1_0
    mozilla_1_1 openssl perl_5 postgresql qpl_1_0 ssleay sun zlib open_source
    restricted unrestricted unknown);
my $semver = qr/^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[A-Za-z][0-9A-Za-z-]*)?$/;
# a prerequisite's version: 0, a version, or a range of comma-separated comparisons
my $cmp = qr/(?:(?:==|!=|>=|<=|>|<)\s*)?\d+(?:\.\d+){0,2}(?:-[A-Za-z][0-9A-Za-z-]*)?/;

sub is_str { my $v = shift; defined $v && !ref $v && length $v }

# The spec's rules; returns the list of what is wrong with $m.
sub validate {
    my ($m) = @_;
    my @e;
    return ('not a JSON object') unless ref $m eq 'HASH';
    for my $k (qw(name abstract version maintainer license provides meta-spec)) {
        push @e, "missing required key $k" unless exists $m->{$k};
    }
    if (exists $m->{name}) {
        my $n = $m->{name};
        push @e, 'name must be a string of at least 2 characters without whitespace, control characters, / or \\'
            unless is_str($n) && length $n >= 2 && $n !~ m{[\s\x00-\x1f\x7f/\\]};
    }
    push @e, 'abstract must be a non-empty string' if exists $m->{abstract} && !is_str($m->{abstract});
    push @e, 'version must be a semantic version (X.Y.Z)'
        if exists $m->{version} && !(is_str($m->{version}) && $m->{version} =~ $semver);
    if (exists $m->{maintainer}) {
        my $x = $m->{maintainer};
        push @e, 'maintainer must be a string or a non-empty array of strings'
            unless is_str($x) || (ref $x eq 'ARRAY' && @$x && !grep { !is_str($_) } @$x);
    }
    if (exists $m->{license}) {
        my $l = $m->{license};
        my $ok = (is_str($l) && $licenses{$l})
              || (ref $l eq 'ARRAY' && @$l && !grep { !is_str($_) || !$licenses{$_} } @$l)
              || (ref $l eq 'HASH' && %$l && !grep { !is_str($_) } values %$l);
        push @e, 'license must be a known licence string, an array of them, or an object of name => URL' unless $ok;
    }
    if (exists $m->{provides}) {
        my $p = $m->{provides};
        if (ref $p ne 'HASH' || !%$p) {
            push @e, 'provides must be a non-empty object';
        } else {
            for my $ext (sort keys %$p) {
                my $x = $p->{$ext};
                if (ref $x ne 'HASH') { push @e, "provides.$ext must be an object"; next; }
                push @e, "provides.$ext.file is required" unless is_str($x->{file});
                push @e, "provides.$ext.version must be a semantic version"
                    unless is_str($x->{version}) && $x->{version} =~ $semver;
                for my $k (keys %$x) {
                    push @e, "provides.$ext has unknown key $k"
                        unless $k =~ /^(file|version|abstract|docfile|x_.*|X_.*)$/;
                }
            }
        }
    }
    if (exists $m->{'meta-spec'}) {
        my $s = $m->{'meta-spec'};
        push @e, 'meta-spec must be an object with version 1.0.0'
            unless ref $s eq 'HASH' && is_str($s->{version}) && $s->{version} eq '1.0.0';
    }
    if (exists $m->{prereqs}) {
        my $p = $m->{prereqs};
        if (ref $p ne 'HASH') {
            push @e, 'prereqs must be an object';
        } else {
            for my $phase (sort keys %$p) {
                push @e, "prereqs has unknown phase $phase"
                    unless $phase =~ /^(configure|build|test|runtime|develop)$/;
                my $rels = $p->{$phase};
                if (ref $rels ne 'HASH') { push @e, "prereqs.$phase must be an object"; next; }
                for my $rel (sort keys %$rels) {
                    push @e, "prereqs.$phase has unknown relationship $rel"
                        unless $rel =~ /^(requires|recommends|suggests|conflicts)$/;
                    my $deps = $rels->{$rel};
                    if (ref $deps ne 'HASH') { push @e, "prereqs.$phase.$rel must be an object"; next; }
                    for my $d (sort keys %$deps) {
                        my $v = $deps->{$d};
                        push @e, "prereqs.$phase.$rel.$d: \"$v\" is not 0, a version or a version range"
                            unless defined $v && !ref $v && ("$v" eq '0' || $v =~ /^$cmp(?:\s*,\s*$cmp)*$/);
                    }
                }
            }
        }
    }
    push @e, 'release_status must be stable, testing or unstable'
        if exists $m->{release_status} && !(is_str($m->{release_status})
                                            && $m->{release_status} =~ /^(stable|testing|unstable)$/);
    return @e;
}

my $n = 0;
my $failed = 0;
sub ok {
    my ($cond, $name, @diag) = @_;
    $n++;
    print(($cond ? '' : 'not '), "ok $n - $name\n");
    print map { "# $_\n" } @diag unless $cond;
    $failed++ unless $cond;
}

open my $fh, '<:raw', $file or die "cannot read $file: $!";
my $text = do { local $/; <$fh> };
my $meta = eval { JSON::PP->new->utf8->decode($text) };
ok(defined $meta, 'META.json is valid JSON', $@ || ());
$meta //= {};

my @errors = validate($meta);
ok(!@errors, 'META.json follows the PGXN Meta Spec 1.0.0 (required keys, value forms)', @errors);

# prm itself: what the metadata says is what the tree installs
open my $cf, '<', "$root/prm.control" or die "prm.control: $!";
my $control = do { local $/; <$cf> };
my ($default_version) = $control =~ /^default_version\s*=\s*'([^']*)'/m;
my ($requires) = $control =~ /^requires\s*=\s*'([^']*)'/m;
ok(($meta->{version} // '') eq $default_version, "version is prm.control's default_version ($default_version)");
ok(($meta->{provides}{prm}{version} // '') eq $default_version, 'provides.prm.version is the same');
for my $k (qw(file docfile)) {
    my $f = $meta->{provides}{prm}{$k} // '';
    ok($f ne '' && -f "$root/$f", "provides.prm.$k names a file of the tree ($f)");
}
my $rt = $meta->{prereqs}{runtime} // {};
ok(($rt->{requires}{PostgreSQL} // '') =~ /^>= 15\.0\.0, < 16\.0\.0$/, 'runtime requires PostgreSQL 15');
ok(exists $rt->{recommends}{pg_cron}, 'runtime recommends pg_cron');
for my $ext (split /\s*,\s*/, $requires // '') {
    ok(exists $rt->{requires}{$ext}, "runtime requires $ext (prm.control requires it)");
}

# the validator catches what it should: each required key removed, and bad values
for my $k (qw(name abstract version maintainer license provides meta-spec)) {
    my %broken = %$meta;
    delete $broken{$k};
    ok((grep { $_ eq "missing required key $k" } validate(\%broken)), "a copy without $k is rejected");
}
my @bad = (
    [version        => '0.3'],
    [name           => 'p r m'],
    [license        => 'GPL'],
    ['meta-spec'    => {version => '2.0.0'}],
    [provides       => {prm => {version => '0.3.0'}}],
    [prereqs        => {runtime => {requires => {PostgreSQL => 'fifteen'}}}],
    [release_status => 'final'],
);
for my $b (@bad) {
    my %broken = (%$meta, $b->[0] => $b->[1]);
    ok(scalar(validate(\%broken)) > 0, "a copy with a bad $b->[0] is rejected");
}
print "1..$n\n";
exit($failed ? 1 : 0);
