/*-------------------------------------------------------------------------
 *
 * reengagement_read.c
 *	  The organization's reengagement reads: prm.reengagement_summary (over
 *	  the view prm.patient_profile), prm.outreach_performance (campaigns
 *	  from the outbox and its history) and prm.search_patients (name through
 *	  pg_trgm, else exact e-mail or phone, with a keyset cursor).
 *
 * All three are read-only and take no locks; they run with the caller's
 * organization checked at the readonly level.  The name expression of the
 * search, lower(given_name || ' ' || family_name), must match the one of
 * the trigram index on prm.patient (src/reengagement.sql says
 * "reengagement.c", where the search lived before this file).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "prm.h"
#include "reengagement.h"

PG_FUNCTION_INFO_V1(prm_reengagement_summary);
PG_FUNCTION_INFO_V1(prm_outreach_performance);
PG_FUNCTION_INFO_V1(prm_search_patients);

/* lowest word similarity a name search returns */
#define SEARCH_MIN_SCORE "0.3"

/*
 * A name search looks first for rows scoring at least this: when a page of
 * them is found, it is the page the full search would return (rows come
 * best first), and far fewer candidates are scored (bench reengagement:
 * "elizabeht taylorson" at 100,000 patients, 5,277 rows >= 0.3, 270 >= 0.5).
 */
#define SEARCH_FIRST_SCORE "0.5"

static Datum SpiJsonbResult(void);

/* The jsonb in column 1 of the single result row, copied out of SPI. */
static Datum
SpiJsonbResult(void)
{
	bool  isnull;
	Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

	Assert(!isnull);
	return SPI_datumTransfer(d, false, -1);
}

/*
 * prm.reengagement_summary(org_id) RETURNS jsonb
 */
Datum
prm_reengagement_summary(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Datum			  values[1 + PRM_TALLY_COUNTS + PRM_TALLY_SUMS];
	int64			  counts[PRM_TALLY_COUNTS];
	Datum			  sums[PRM_TALLY_SUMS];
	Datum			  result;
	int				  save_nestlevel;
	int				  i;

	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	if (!PrmStatsTallyInstalled())
	{
		/* a 0.2.0 schema until ALTER EXTENSION UPDATE: every patient through the view */
		static SPIPlanPtr legacy_plan = NULL;

		PrmPrepare(&legacy_plan,
				   "SELECT pg_catalog.jsonb_build_object("
				   "  'org_id', $1, 'patients', pg_catalog.count(*),"
				   "  'engagement', pg_catalog.jsonb_build_object("
				   "     'highly_engaged', pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'highly_engaged'),"
				   "     'moderately_engaged', pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'moderately_engaged'),"
				   "     'low_engagement', pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'low_engagement'),"
				   "     'disengaged', pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'disengaged')),"
				   "  'churn_risk', pg_catalog.jsonb_build_object("
				   "     'critical', pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'critical'),"
				   "     'high', pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'high'),"
				   "     'medium', pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'medium'),"
				   "     'low', pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'low')),"
				   "  'no_upcoming_appointment', pg_catalog.count(*) FILTER (WHERE NOT v.has_upcoming_appointment),"
				   "  'value_at_risk', coalesce(pg_catalog.sum(v.expected_horizon_value)"
				   "       FILTER (WHERE v.churn_risk IN ('high', 'critical')), 0),"
				   "  'estimated_lifetime_value', coalesce(pg_catalog.sum(v.estimated_lifetime_value), 0),"
				   "  'total_revenue', coalesce(pg_catalog.sum(v.total_revenue), 0),"
				   "  'generated_at', pg_catalog.now())"
				   "  FROM prm.patient_profile v WHERE v.org_id = $1",
				   1, (Oid[]){INT8OID});
		values[0] = Int64GetDatum(org_id);
		PrmExecute(legacy_plan, values, NULL, true, 1);
		result = SpiJsonbResult();
		PrmSpiFinish();
		PG_RETURN_DATUM(result);
	}

	/*
	 * The tally less the stored contributions of the rows due now (or
	 * within PRM_STATS_DUE_SLACK, which covers the float arithmetic of
	 * changes_at), plus those rows judged afresh by the view.
	 */
	PrmPrepare(&plan,
			   "WITH due AS ("
			   "  SELECT s.patient_id, s.engagement_level, s.churn_risk, s.next_appointment_at,"
			   "         s.expected_horizon_value, s.lifetime_value, s.revenue"
			   "    FROM prm.patient_stats s"
			   "   WHERE s.changes_at <= pg_catalog.now() + interval '" PRM_STATS_DUE_SLACK "'"
			   "     AND s.org_id = $1),"
			   " parts AS ("
			   "  SELECT pg_catalog.sum(t.patients) AS patients,"
			   "         pg_catalog.sum(t.highly_engaged) AS highly_engaged,"
			   "         pg_catalog.sum(t.moderately_engaged) AS moderately_engaged,"
			   "         pg_catalog.sum(t.low_engagement) AS low_engagement,"
			   "         pg_catalog.sum(t.disengaged) AS disengaged,"
			   "         pg_catalog.sum(t.risk_critical) AS critical, pg_catalog.sum(t.risk_high) AS high,"
			   "         pg_catalog.sum(t.risk_medium) AS medium, pg_catalog.sum(t.risk_low) AS low,"
			   "         pg_catalog.sum(t.no_upcoming) AS no_upcoming,"
			   "         pg_catalog.sum(t.value_at_risk) AS value_at_risk,"
			   "         pg_catalog.sum(t.lifetime_value) AS lifetime_value,"
			   "         pg_catalog.sum(t.revenue) AS revenue"
			   "    FROM prm.reengagement_tally t WHERE t.org_id = $1"
			   /* this transaction's own writes, not in the tally before it commits */
			   "  UNION ALL SELECT $2, $3, $4, $5, $6, $10, $9, $8, $7, $11, $12, $13, $14"
			   "  UNION ALL"
			   "  SELECT -pg_catalog.count(*),"
			   "         -pg_catalog.count(*) FILTER (WHERE d.engagement_level = 'highly_engaged'),"
			   "         -pg_catalog.count(*) FILTER (WHERE d.engagement_level = 'moderately_engaged'),"
			   "         -pg_catalog.count(*) FILTER (WHERE d.engagement_level = 'low_engagement'),"
			   "         -pg_catalog.count(*) FILTER (WHERE d.engagement_level = 'disengaged'),"
			   "         -pg_catalog.count(*) FILTER (WHERE d.churn_risk = 'critical'),"
			   "         -pg_catalog.count(*) FILTER (WHERE d.churn_risk = 'high'),"
			   "         -pg_catalog.count(*) FILTER (WHERE d.churn_risk = 'medium'),"
			   "         -pg_catalog.count(*) FILTER (WHERE d.churn_risk = 'low'),"
			   "         -pg_catalog.count(*) FILTER (WHERE d.next_appointment_at IS NULL),"
			   "         -pg_catalog.sum(d.expected_horizon_value) FILTER (WHERE d.churn_risk IN ('high', 'critical')),"
			   "         -pg_catalog.sum(d.lifetime_value), -pg_catalog.sum(d.revenue)"
			   "    FROM due d"
			   "  UNION ALL"
			   "  SELECT pg_catalog.count(*),"
			   "         pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'highly_engaged'),"
			   "         pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'moderately_engaged'),"
			   "         pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'low_engagement'),"
			   "         pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'disengaged'),"
			   "         pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'critical'),"
			   "         pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'high'),"
			   "         pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'medium'),"
			   "         pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'low'),"
			   "         pg_catalog.count(*) FILTER (WHERE NOT v.has_upcoming_appointment),"
			   "         pg_catalog.sum(v.expected_horizon_value) FILTER (WHERE v.churn_risk IN ('high', 'critical')),"
			   "         pg_catalog.sum(v.estimated_lifetime_value), pg_catalog.sum(v.total_revenue)"
			   "    FROM prm.patient_profile v"
			   "   WHERE v.org_id = $1 AND v.patient_id IN (SELECT d.patient_id FROM due d))"
			   "SELECT pg_catalog.jsonb_build_object("
			   "  'org_id', $1, 'patients', coalesce(pg_catalog.sum(p.patients), 0),"
			   "  'engagement', pg_catalog.jsonb_build_object("
			   "     'highly_engaged', coalesce(pg_catalog.sum(p.highly_engaged), 0),"
			   "     'moderately_engaged', coalesce(pg_catalog.sum(p.moderately_engaged), 0),"
			   "     'low_engagement', coalesce(pg_catalog.sum(p.low_engagement), 0),"
			   "     'disengaged', coalesce(pg_catalog.sum(p.disengaged), 0)),"
			   "  'churn_risk', pg_catalog.jsonb_build_object("
			   "     'critical', coalesce(pg_catalog.sum(p.critical), 0),"
			   "     'high', coalesce(pg_catalog.sum(p.high), 0),"
			   "     'medium', coalesce(pg_catalog.sum(p.medium), 0),"
			   "     'low', coalesce(pg_catalog.sum(p.low), 0)),"
			   "  'no_upcoming_appointment', coalesce(pg_catalog.sum(p.no_upcoming), 0),"
			   "  'value_at_risk', coalesce(pg_catalog.sum(p.value_at_risk), 0),"
			   "  'estimated_lifetime_value', coalesce(pg_catalog.sum(p.lifetime_value), 0),"
			   "  'total_revenue', coalesce(pg_catalog.sum(p.revenue), 0),"
			   "  'generated_at', pg_catalog.now())"
			   "  FROM parts p",
			   14,
			   (Oid[]){INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
					   INT8OID, INT8OID, INT8OID, NUMERICOID, NUMERICOID, NUMERICOID});
	values[0] = Int64GetDatum(org_id);
	PrmTallyPending(org_id, counts, sums);
	for (i = 0; i < PRM_TALLY_COUNTS; i++)
		values[1 + i] = Int64GetDatum(counts[i]);
	for (i = 0; i < PRM_TALLY_SUMS; i++)
		values[1 + PRM_TALLY_COUNTS + i] = sums[i];

	/*
	 * The estimate counts the view's look-up of passed next appointments for
	 * every row, which pushes a scan of a large clinic over jit_above_cost;
	 * compiling then costs many times the scan itself.
	 */
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	PrmExecute(plan, values, NULL, true, 1);
	AtEOXact_GUC(true, save_nestlevel);
	result = SpiJsonbResult();
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * prm.outreach_performance(org_id, since, rebook_window) RETURNS jsonb
 *	  A campaign is the message's campaign column, else its kind.
 */
Datum
prm_outreach_performance(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Interval		 *window;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	int64			  usecs;
	Datum			  result;

	PrmArgNotNull(fcinfo, 2, "rebook_window");
	window = PG_GETARG_INTERVAL_P(2);
	usecs = PrmIntervalUsecs(window);
	if (usecs <= 0 || usecs > 366 * USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rebook_window must be longer than zero and at most a year")));

	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmPrepare(&plan,
			   "WITH m AS ("
			   "  SELECT coalesce(x.campaign, x.kind) AS campaign, x.patient_id, x.created_at, x.status"
			   "    FROM (SELECT o.campaign, o.kind, o.patient_id, o.created_at, o.status"
			   "            FROM prm.outbound_message o WHERE o.org_id = $1 AND o.created_at >= $2"
			   "          UNION ALL"
			   "          SELECT h.campaign, h.kind, h.patient_id, h.created_at, h.status"
			   "            FROM prm.outbound_message_history h WHERE h.org_id = $1 AND h.created_at >= $2) x),"
			   " per AS ("
			   "  SELECT m.campaign, pg_catalog.count(*) AS messages,"
			   "         pg_catalog.count(DISTINCT m.patient_id) AS patients,"
			   "         pg_catalog.count(DISTINCT m.patient_id)"
			   "           FILTER (WHERE m.status IN ('sent', 'delivered', 'read')) AS reached,"
			   "         pg_catalog.count(DISTINCT m.patient_id) FILTER (WHERE EXISTS ("
			   "           SELECT 1 FROM prm.inbound_message i"
			   "            WHERE i.org_id = $1 AND i.patient_id = m.patient_id"
			   "              AND i.received_at >= m.created_at"
			   "              AND i.received_at < m.created_at + interval '48 hours')) AS replied,"
			   "         pg_catalog.count(DISTINCT m.patient_id) FILTER (WHERE EXISTS ("
			   "           SELECT 1 FROM prm.appointment a"
			   "            WHERE a.org_id = $1 AND a.patient_id = m.patient_id"
			   "              AND a.created_at > m.created_at AND a.created_at <= m.created_at + $3"
			   "              AND a.status <> 'entered-in-error')) AS rebooked"
			   "    FROM m GROUP BY m.campaign)"
			   "SELECT pg_catalog.jsonb_build_object('org_id', $1, 'since', $2, 'rebook_window', $3::text,"
			   "  'campaigns', coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
			   "     'campaign', per.campaign, 'messages', per.messages, 'patients', per.patients,"
			   "     'reached', per.reached, 'replied', per.replied, 'rebooked', per.rebooked,"
			   "     'reply_rate', pg_catalog.round(per.replied::numeric / NULLIF(per.reached, 0), 3),"
			   "     'rebook_rate', pg_catalog.round(per.rebooked::numeric / NULLIF(per.reached, 0), 3))"
			   "     ORDER BY per.campaign), '[]'))"
			   "  FROM per",
			   3, (Oid[]){INT8OID, TIMESTAMPTZOID, INTERVALOID});
	values[0] = Int64GetDatum(org_id);
	if (PG_ARGISNULL(1))
		values[1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp() - 90 * USECS_PER_DAY);
	else
		values[1] = PG_GETARG_DATUM(1);
	values[2] = IntervalPGetDatum(window);
	PrmExecute(plan, values, nulls, true, 1);
	result = SpiJsonbResult();
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/* The schema pg_trgm is installed in, quoted; raises when it is missing. */
static char *
SearchTrgmSchema(void)
{
	if (SPI_execute("SELECT n.nspname FROM pg_catalog.pg_extension e"
					"  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
					" WHERE e.extname = 'pg_trgm'",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up pg_trgm");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("extension \"pg_trgm\" is not installed"),
				 errhint("prm requires it: CREATE EXTENSION pg_trgm.")));
	return pstrdup(quote_identifier(PrmGetText(0, 1)));
}

/* Run the name search plan with word_similarity_threshold at threshold. */
static int
SearchByName(SPIPlanPtr plan, Datum *values, const char *nulls, const char *threshold)
{
	int save_nestlevel = NewGUCNestLevel();
	int n;

	(void) set_config_option("pg_trgm.word_similarity_threshold", threshold,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	n = PrmExecute(plan, values, nulls, true, 0);
	AtEOXact_GUC(true, save_nestlevel);
	return n;
}

/*
 * prm.search_patients(org_id, query, page_size, cursor) RETURNS jsonb
 *	  Name, e-mail or phone, decided by the query's shape.  Results are
 *	  ordered by score descending, then patient id; the cursor is the
 *	  (score, id) of the last row returned, so pages never overlap or skip
 *	  even while patients are added.
 */
Datum
prm_search_patients(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr name_plan = NULL;
	static SPIPlanPtr exact_plans[2] = {NULL, NULL}; /* phone, e-mail */
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *query = PrmTextArg(fcinfo, 1, "query", PRM_MAX_NAME_LEN);
	int32			  page_size = PRM_GETARG_INT32_NOTNULL(2, "page_size");
	char			 *cursor = PrmTextArgOrNull(fcinfo, 3, "cursor", 100);
	const char		 *kind;
	float4			  after_score = 0;
	int64			  after_id = 0;
	Datum			  values[5];
	char			  nulls[5] = {' ', ' ', ' ', ' ', ' '};
	StringInfoData	  out;
	MemoryContext	  fn_cxt = CurrentMemoryContext;
	const char		 *p;
	int				  digits = 0;
	bool			  phone_like = true;
	int				  n;
	int				  i;

	if (page_size < 1 || page_size > 100)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("page size %d is out of range", page_size),
				 errdetail("A page holds 1 to 100 patients.")));
	if (cursor)
	{
		char extra;

		if (sscanf(cursor, "%f:" INT64_FORMAT "%c", &after_score, &after_id, &extra) != 2 ||
			isnan(after_score) || after_id <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cursor \"%s\" is not valid", cursor),
					 errhint("Pass the next_cursor of the previous page unchanged.")));
	}
	for (p = query; *p; p++)
	{
		if (isdigit((unsigned char) *p))
			digits++;
		else if (!strchr("+-(). /", *p))
			phone_like = false;
	}

	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	values[0] = Int64GetDatum(org_id);
	values[2] = Float4GetDatum(after_score);
	values[3] = Int64GetDatum(after_id);
	values[4] = Int32GetDatum(page_size + 1);
	if (!cursor)
		nulls[2] = nulls[3] = 'n';

	if (strchr(query, '@') != NULL || (phone_like && digits >= 6))
	{
		char *key = query;
		int	  by_email = strchr(query, '@') != NULL;

		if (!by_email)
		{
			kind = "phone";
			key = PrmTryNormalizePhone(query, PrmOrgPhoneRegion(org_id));
		}
		else
			kind = "email";
		/*
		 * Exact matches score 1; an unreadable phone matches nothing.  One
		 * statement per kind, each on its index, planned once.  As one
		 * statement choosing the column by a parameter, its generic plan
		 * read every patient, so every call was planned; and an address is
		 * shared by a few patients at most, but lower() of an e-mail has no
		 * statistics (its index is partial), so a planner left to choose
		 * walked the organization's patients in id order for the LIMIT:
		 * the matches are found first (MATERIALIZED), then ordered.
		 */
		PrmPrepareCursor(&exact_plans[by_email],
						 by_email
							 ? "WITH m AS MATERIALIZED (SELECT p.id, p.given_name, p.family_name, p.email, p.phone"
							   "  FROM prm.patient p"
							   " WHERE p.org_id = $1 AND p.email IS NOT NULL"
							   "   AND pg_catalog.lower(p.email) = pg_catalog.lower($2))"
							   "SELECT m.*, 1::real FROM m WHERE $4::bigint IS NULL OR m.id > $4"
							   " ORDER BY m.id LIMIT $5"
							 : "WITH m AS MATERIALIZED (SELECT p.id, p.given_name, p.family_name, p.email, p.phone"
							   "  FROM prm.patient p WHERE p.org_id = $1 AND p.phone = $2)"
							   "SELECT m.*, 1::real FROM m WHERE $4::bigint IS NULL OR m.id > $4"
							   " ORDER BY m.id LIMIT $5",
						 5, (Oid[]){INT8OID, TEXTOID, FLOAT4OID, INT8OID, INT4OID},
						 CURSOR_OPT_GENERIC_PLAN);
		if (key == NULL)
			n = 0;
		else
		{
			values[1] = CStringGetTextDatum(key);
			n = PrmExecute(exact_plans[by_email], values, nulls, true, 0);
		}
	}
	else
	{
		kind = "name";
		if (name_plan == NULL)
		{
			char *trgm = SearchTrgmSchema();

			PrmPrepare(&name_plan,
					   psprintf("SELECT m.id, m.given_name, m.family_name, m.email, m.phone, m.score"
								"  FROM (SELECT p.id, p.given_name, p.family_name, p.email, p.phone,"
								"               %s.word_similarity(pg_catalog.lower($2),"
								"                 pg_catalog.lower(p.given_name || ' ' || p.family_name)) AS score"
								"          FROM prm.patient p"
								"         WHERE p.org_id = $1"
								"           AND pg_catalog.lower($2) OPERATOR(%s.<%%)"
								"               pg_catalog.lower(p.given_name || ' ' || p.family_name)) m"
								" WHERE $3::real IS NULL OR m.score < $3 OR (m.score = $3 AND m.id > $4)"
								" ORDER BY m.score DESC, m.id LIMIT $5",
								trgm, trgm),
					   5, (Oid[]){INT8OID, TEXTOID, FLOAT4OID, INT8OID, INT4OID});
		}
		values[1] = CStringGetTextDatum(query);
		/*
		 * The index condition <% uses the threshold.  The first pass finds
		 * the rows >= SEARCH_FIRST_SCORE; only a page it cannot fill (or a
		 * cursor below that score) needs the full search.
		 */
		n = 0;
		if (!cursor || after_score >= (float4) atof(SEARCH_FIRST_SCORE))
			n = SearchByName(name_plan, values, nulls, SEARCH_FIRST_SCORE);
		if (n <= page_size)
			n = SearchByName(name_plan, values, nulls, SEARCH_MIN_SCORE);
	}

	{
		MemoryContext old = MemoryContextSwitchTo(fn_cxt);

		initStringInfo(&out);
		MemoryContextSwitchTo(old);
	}
	appendStringInfo(&out, "{\"kind\": \"%s\", \"results\": [", kind);
	for (i = 0; i < n && i < page_size; i++)
	{
		char *email = PrmGetText(i, 4);
		char *phone = PrmGetText(i, 5);

		appendStringInfo(&out,
						 "%s{\"patient_id\": %s, \"given_name\": %s, \"family_name\": %s,"
						 " \"email\": %s, \"phone\": %s, \"score\": %s}",
						 i > 0 ? ", " : "", PrmGetText(i, 1),
						 PrmJsonString(PrmGetText(i, 2)), PrmJsonString(PrmGetText(i, 3)),
						 email ? PrmJsonString(email) : "null",
						 phone ? PrmJsonString(phone) : "null", PrmGetText(i, 6));
	}
	appendStringInfoString(&out, "], \"next_cursor\": ");
	if (n > page_size)
	{
		bool   isnull;
		float4 score = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[page_size - 1],
													SPI_tuptable->tupdesc, 6, &isnull));

		appendStringInfo(&out, "\"%.9g:%s\"", score, PrmGetText(page_size - 1, 1));
	}
	else
		appendStringInfoString(&out, "null");
	appendStringInfoChar(&out, '}');
	PrmSpiFinish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
