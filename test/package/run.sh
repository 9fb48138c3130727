#!/bin/bash
# make package-test: prm's packages, built and installed for real.  Not part
# of make test (dpkg-buildpackage runs the regression and isolation suites
# once more; a few minutes).  As root on Debian 12; installs its build
# dependencies with apt.  Everything happens in a temporary directory: the
# tree gets no build products, and the system's PostgreSQL is not touched.
#
#   1. META.json against the PGXN Meta Spec (test/package/meta.pl)
#   2. make dist: the zip holds exactly the committed files PGXN needs, and
#      the extension builds from it (it archives HEAD: commit first)
#   3. dpkg-buildpackage -us -uc -b on a copy of the tree (with uncommitted
#      changes) makes postgresql-15-prm; dpkg -x puts it into a throwaway root
#      holding a copy of PostgreSQL 15 without prm, where CREATE EXTENSION prm
#      CASCADE runs and the background worker starts
# Prints TAP and ends "N passed, N failed"; the exit code says whether all passed.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
VERSION=$(sed -n "s/^default_version = '\(.*\)'/\1/p" prm.control)
PGV=$(cat debian/pgversions | head -1)
PGBIN=/usr/lib/postgresql/$PGV/bin
TMP=$(mktemp -d /tmp/prm-package.XXXXXX)
chmod 755 "$TMP"
n=0; failed=0
ok() {      # $1: 0 when it holds, $2: what
    n=$((n + 1))
    if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
finish() {
    echo "1..$n"
    echo "$((n - failed)) passed, $failed failed (work in $TMP)"
    [ "$failed" = 0 ]
    exit $?
}

# the build dependencies (debian/control's Build-Depends), once
need=()
for p in dpkg-dev debhelper postgresql-server-dev-all postgresql-contrib unzip git; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "# installing: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q > "$TMP/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
        < /dev/null >> "$TMP/apt.log" 2>&1 || { cat "$TMP/apt.log"; echo "Bail out! apt-get install failed"; exit 2; }
fi

# 1. the PGXN metadata
echo "# META.json"
perl test/package/meta.pl > "$TMP/meta.log" 2>&1
ok $? "META.json passes test/package/meta.pl ($(grep -c '^ok' "$TMP/meta.log") checks)"
grep '^not ok' "$TMP/meta.log"

# 2. make dist
echo "# make dist"
make -s dist DIST="$TMP/prm-$VERSION.zip" > "$TMP/dist.log" 2>&1
ok $? "make dist writes prm-$VERSION.zip"
unzip -Z1 "$TMP/prm-$VERSION.zip" | grep -v '/$' | sort > "$TMP/dist.files"
# what it should hold: the committed files less those marked export-ignore
git ls-tree -r -z --name-only HEAD | xargs -0 git check-attr export-ignore -- \
    | sed -n 's/: export-ignore: unspecified$//p' | sed "s|^|prm-$VERSION/|" | sort > "$TMP/expected.files"
diff -u "$TMP/expected.files" "$TMP/dist.files" > "$TMP/dist.diff"
ok $? "the zip holds exactly the committed files, less export-ignore ($(wc -l < "$TMP/dist.files") files)"
cat "$TMP/dist.diff"
for f in META.json prm.control Makefile README.md src/prm.c sql/directory.sql expected/directory.out; do
    grep -qx "prm-$VERSION/$f" "$TMP/dist.files"; ok $? "the zip holds $f"
done
! grep -E '\.(o|so|bc|zip|deb)$|/(results|output_iso|tmp_check|node_modules|debian|clients)/|regression\.(diffs|out)$|/prm--[0-9.]+(--[0-9.]+)?\.sql$' \
    "$TMP/dist.files"
ok $? "the zip holds no build products, test outputs, debian/ or clients/"
mkdir -p "$TMP/dist" && unzip -q "$TMP/prm-$VERSION.zip" -d "$TMP/dist"
make -s -C "$TMP/dist/prm-$VERSION" PG_CONFIG="$PGBIN/pg_config" > "$TMP/dist-build.log" 2>&1 \
    && [ -f "$TMP/dist/prm-$VERSION/prm.so" ] && [ -f "$TMP/dist/prm-$VERSION/prm--$VERSION.sql" ]
ok $? "the unpacked zip builds (make, as pgxn install does)"

# 3. the Debian package, built on a copy of the working tree
echo "# dpkg-buildpackage"
SRC=$TMP/deb/prm-$VERSION
mkdir -p "$SRC"
git ls-files -z -c -o --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$SRC"
( cd "$SRC" && pg_buildext checkcontrol ) > "$TMP/checkcontrol.log" 2>&1
ok $? "debian/control is up to date with debian/control.in and debian/pgversions"
chown -R postgres "$TMP/deb"      # pg_buildext installcheck runs the cluster as its caller's user
( cd "$SRC" && runuser -u postgres -- dpkg-buildpackage -us -uc -b ) > "$TMP/dpkg-buildpackage.log" 2>&1
rc=$?
ok $rc "dpkg-buildpackage -us -uc -b (log: $TMP/dpkg-buildpackage.log)"
[ $rc = 0 ] || tail -n 60 "$TMP/dpkg-buildpackage.log"
grep -E '^(ok|not ok) |^# (All|[0-9]+ of)|tests? (passed|failed)' "$TMP/dpkg-buildpackage.log" | sed 's/^/#   /' | tail -n 5
DEB=$(ls "$TMP"/deb/postgresql-"$PGV"-prm_"$VERSION"-*_*.deb 2>/dev/null | head -1)
[ -n "$DEB" ]; ok $? "postgresql-$PGV-prm's .deb was made ($(basename "${DEB:-none}"))"
[ -n "$DEB" ] || finish
[ "$(dpkg-deb -f "$DEB" Package)" = "postgresql-$PGV-prm" ]; ok $? "its Package is postgresql-$PGV-prm"
dpkg-deb -f "$DEB" Depends | grep -q "postgresql-$PGV"; ok $? "it depends on postgresql-$PGV ($(dpkg-deb -f "$DEB" Depends))"
dpkg-deb -f "$DEB" Recommends | grep -q "postgresql-$PGV-cron"; ok $? "it recommends postgresql-$PGV-cron"
dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's|^\./|/|' > "$TMP/deb.files"
for f in /usr/lib/postgresql/$PGV/lib/prm.so /usr/share/postgresql/$PGV/extension/prm.control \
         /usr/share/doc/postgresql-$PGV-prm/copyright; do
    grep -qx "$f" "$TMP/deb.files"; ok $? "it installs $f"
done
# every install and upgrade script the build makes (the unpacked zip's build above), and src/updates/
for f in "$TMP/dist/prm-$VERSION"/prm--*.sql src/updates/prm--*.sql; do
    [ -e "$f" ] || continue
    grep -qx "/usr/share/postgresql/$PGV/extension/$(basename "$f")" "$TMP/deb.files"; ok $? "it installs the script $(basename "$f")"
done

# a throwaway root: a copy of PostgreSQL without prm, then the package unpacked into it
echo "# dpkg -x into a throwaway root"
R=$TMP/root
mkdir -p "$R/usr/lib/postgresql" "$R/usr/share/postgresql"
cp -a "/usr/lib/postgresql/$PGV" "$R/usr/lib/postgresql/"
cp -a "/usr/share/postgresql/$PGV" "$R/usr/share/postgresql/"
rm -f "$R/usr/lib/postgresql/$PGV/lib/prm.so" "$R/usr/share/postgresql/$PGV/extension/"prm.control \
      "$R/usr/share/postgresql/$PGV/extension/"prm--*.sql
rm -rf "$R/usr/lib/postgresql/$PGV/lib/bitcode/prm" "$R/usr/lib/postgresql/$PGV/lib/bitcode/prm.index.bc"
[ ! -e "$R/usr/share/postgresql/$PGV/extension/prm.control" ]; ok $? "the root's PostgreSQL has no prm before the package"
dpkg -x "$DEB" "$R"
cmp -s "$R/usr/lib/postgresql/$PGV/lib/prm.so" <(dpkg-deb --fsys-tarfile "$DEB" | tar -xOf - "./usr/lib/postgresql/$PGV/lib/prm.so")
ok $? "dpkg -x put the package's prm.so into the root"
chown -R postgres "$R"
RB=$R/usr/lib/postgresql/$PGV/bin
mkdir -p "$R/sock" "$R/data" && chown postgres "$R/sock" "$R/data"
runuser -u postgres -- "$RB/initdb" -D "$R/data" -A trust > "$TMP/initdb.log" 2>&1
cat >> "$R/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$R/sock'
port = 5599
shared_preload_libraries = 'prm'
prm.databases = 'postgres'
fsync = off
CONF
runuser -u postgres -- "$RB/pg_ctl" -D "$R/data" -l "$R/server.log" -w start > /dev/null
ok $? "a cluster of the root starts with prm preloaded"
q() { runuser -u postgres -- "$RB/psql" -X -At -h "$R/sock" -p 5599 -d postgres -v ON_ERROR_STOP=1 "$@"; }
out=$(q -q -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION prm CASCADE' \
        -c "SELECT extname || ' ' || extversion FROM pg_extension WHERE extname IN ('prm', 'btree_gist', 'pg_trgm') ORDER BY 1" 2>&1)
echo "$out" | sed 's/^/#   /'
[ "$(echo "$out" | tr '\n' ' ')" = "btree_gist 1.7 pg_trgm 1.6 prm $VERSION " ]
ok $? "CREATE EXTENSION prm CASCADE installs prm $VERSION with btree_gist and pg_trgm"
q -c "SELECT prm.create_organization('Package Clinic', 'UTC', '+61 2 9000 0009')" > /dev/null 2>&1
ok $? "prm works from the package (create_organization)"
# the worker of the packaged library: it comes up for prm.databases
for _ in $(seq 1 150); do
    w=$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'prm worker'" 2>/dev/null)
    [ "${w:-0}" -gt 0 ] && break
    sleep 0.2
done
[ "${w:-0}" -gt 0 ]; ok $? "the packaged library's background worker runs"
runuser -u postgres -- "$RB/pg_ctl" -D "$R/data" -w stop -m fast > /dev/null
finish
