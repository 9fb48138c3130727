# prm: PGXS build, install script assembly, and the two commands (demo, test).

EXTENSION    = prm
EXTVERSION   = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" prm.control)
MODULE_big   = prm
# every C file of src/ is one room of the module
OBJS         = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# Install scripts.  Each release adds SQL pieces; the pieces of a release are
# never edited once it is out.  A version's full script is the pieces of every
# release up to it, in order (shared schema first); the upgrade script from
# the previous release is that release's pieces alone.  test/t/002_upgrade.pl
# proves that both roads lead to the same catalog.
# From 0.3.0 on, a release's pieces live in src/v<version>/ and are read in
# the order of their numbered names (00_ shared schema first, 99_ access last).
SQL_0.1.0    = src/prm.sql src/directory.sql
SQL_0.2.0    = src/scoring.sql src/outbox.sql src/fill.sql src/jobs.sql src/reengagement.sql src/matching.sql src/privacy.sql src/access_sync.sql
SQL_0.3.0    = $(sort $(wildcard src/v0.3.0/*.sql))
DATA_built   = prm--0.1.0.sql prm--0.2.0.sql prm--0.3.0.sql \
               prm--0.1.0--0.2.0.sql prm--0.2.0--0.3.0.sql
DATA         = $(wildcard src/updates/prm--*.sql)

REGRESS      = directory fill loop
REGRESS_OPTS = --inputdir=.
# every isolation spec of test/specs/ (with its output in test/expected/)
ISOLATION    = $(basename $(notdir $(sort $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test

PG_CONFIG   ?= pg_config
PG_CPPFLAGS  = -Isrc
PG_CFLAGS    = -Wall -Wextra -Werror -Wno-unused-parameter
EXTRA_CLEAN  = results regression.diffs regression.out output_iso tmp_check test/unit/solver_test

# On a fresh machine the server headers may not be there yet: demo and test
# install them (test/deps.sh) and then run make again, which finds PGXS.
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
endif

# every room includes the shared headers: rebuild all when one changes
$(OBJS): $(wildcard src/*.h)

prm--0.1.0.sql: $(SQL_0.1.0)
	cat $^ > $@
prm--0.2.0.sql: $(SQL_0.1.0) $(SQL_0.2.0)
	cat $^ > $@
prm--0.3.0.sql: $(SQL_0.1.0) $(SQL_0.2.0) $(SQL_0.3.0)
	cat $^ > $@
UPDATE_GUARD = (printf '%s\n' '\echo Use "ALTER EXTENSION prm UPDATE" to load this file. \quit'; \
	 grep -hv '^\\echo Use "CREATE EXTENSION' $^) > $@
prm--0.1.0--0.2.0.sql: $(SQL_0.2.0)
	$(UPDATE_GUARD)
prm--0.2.0--0.3.0.sql: $(SQL_0.3.0)
	$(UPDATE_GUARD)

.PHONY: deps demo test bench fuzz unit dist package-test
deps:
	bash test/deps.sh

demo: deps
	$(MAKE) all
	$(MAKE) install
	bash test/demo.sh

test: deps
	$(MAKE) all
	$(MAKE) install
	bash test/run.sh

bench: deps
	$(MAKE) all
	$(MAKE) install
	bash test/bench/run.sh

# Not part of make test: a bounded fuzz run (FUZZ_SECONDS, default 240).
fuzz: deps
	$(MAKE) all
	$(MAKE) install
	bash test/fuzz/run.sh

# The assignment solver's unit test: src/matching_solver.c is pure C (c.h and
# palloc), so it is built here with a malloc shim and run without a server,
# with assertions on.  Prints TAP; test/run.sh counts it.
UNIT_CFLAGS = -O1 -g -Wall -Wextra -Werror -Wno-unused-parameter -DUSE_ASSERT_CHECKING \
              -Isrc -I$(shell $(PG_CONFIG) --includedir-server)
test/unit/solver_test: test/unit/solver_test.c src/matching_solver.c src/matching_solver.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/solver_test.c src/matching_solver.c

unit: test/unit/solver_test
	test/unit/solver_test

# The PGXN release: a zip of the committed tree (HEAD) under prm-<version>/,
# without what .gitattributes marks export-ignore (debian/, clients/, the git
# files).  Built files and test outputs are never committed, so never in it.
DIST = prm-$(EXTVERSION).zip
dist:
	git archive --format=zip --prefix=prm-$(EXTVERSION)/ -o $(DIST) HEAD
	@echo "$(DIST)"

# Not part of make test (a few minutes): META.json, make dist, and the Debian
# package built with dpkg-buildpackage and installed into a throwaway root.
package-test:
	bash test/package/run.sh
