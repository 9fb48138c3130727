# prm: PGXS build, install script assembly, and the two commands (demo, test).

EXTENSION    = prm
EXTVERSION   = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" prm.control)
MODULE_big   = prm
OBJS         = src/prm.o src/settings.o src/phone.o src/access.o src/directory.o

# Install script: the pieces in dependency order, shared schema first.
SQL_PARTS    = src/prm.sql src/directory.sql
DATA_built   = prm--$(EXTVERSION).sql
DATA         = $(wildcard src/updates/prm--*.sql)

REGRESS      = directory
REGRESS_OPTS = --inputdir=.
ISOLATION    =
ISOLATION_OPTS = --inputdir=test

PG_CONFIG   ?= pg_config
PG_CPPFLAGS  = -Isrc
PG_CFLAGS    = -Wall -Wextra -Werror -Wno-unused-parameter
EXTRA_CLEAN  = prm--$(EXTVERSION).sql results regression.diffs regression.out output_iso tmp_check

# On a fresh machine the server headers may not be there yet: demo and test
# install them (test/deps.sh) and then run make again, which finds PGXS.
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
endif

prm--$(EXTVERSION).sql: $(SQL_PARTS) prm.control
	cat $(SQL_PARTS) > $@

.PHONY: deps demo test bench
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
