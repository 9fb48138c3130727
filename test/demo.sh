#!/bin/bash
# make demo: a throwaway PostgreSQL with pg_cron and prm preloaded, a clinic
# scenario played through prm's SQL API, and what the database then holds.
set -euo pipefail
cd "$(dirname "$0")/.."
pg_virtualenv -t -o "shared_preload_libraries=pg_cron,prm" -o "cron.database_name=postgres" \
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -f test/demo.sql
