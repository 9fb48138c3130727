/*-------------------------------------------------------------------------
 *
 * reengagement_legacy.c
 *	  The statistics of a 0.2.0 schema, for the time between installing this
 *	  library and ALTER EXTENSION prm UPDATE: 0.2.0's prm.patient_stats has
 *	  neither changes_at nor the stored contributions, and there is no
 *	  prm.reengagement_tally, so its triggers recompute each touched patient
 *	  from all their rows as 0.2.0 did (the statement below is 0.2.0's), and
 *	  rebuild and summary read as 0.2.0 did.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/lsyscache.h"

#include "prm.h"
#include "reengagement.h"

/* Is the 0.3.0 tally there (else the schema is 0.2.0's)? */
bool
PrmStatsTallyInstalled(void)
{
	Oid nsp = get_namespace_oid("prm", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("reengagement_tally", nsp));
}

/*
 * The statement that recomputes patient_stats rows from the source rows.
 * The first %s restricts the patients (p), the second the old rows (s).
 * It returns how many existing rows changed level or risk.
 */
#define LEGACY_OUTBOUND(cols)                                          \
	"(SELECT " cols " FROM prm.outbound_message m0"                   \
	"  WHERE m0.org_id = p.org_id AND m0.patient_id = p.id"           \
	" UNION ALL SELECT " cols " FROM prm.outbound_message_history m0" \
	"  WHERE m0.org_id = p.org_id AND m0.patient_id = p.id)"

static const char *const legacy_sql =
	"WITH old AS ("
	"  SELECT s.patient_id, s.engagement_level, s.churn_risk FROM prm.patient_stats s"
	"   WHERE s.org_id = $1 AND %s),"
	" fresh AS ("
	"  SELECT p.org_id, p.id AS patient_id, a.total, a.completed, a.cancelled, a.noshow,"
	"         a.first_visit, a.last_visit, a.next_at, a.revenue, g.avg_gap,"
	"         o.n AS out_n, i.n AS in_n, r.n AS replied_n, o.last_at AS out_at, i.last_at AS in_at,"
	"         prm.engagement_level(a.completed, d.days_since, g.avg_gap::float8, a.next_at IS NOT NULL,"
	"           d.missed, CASE WHEN o.n > 0 THEN r.n::float8 / o.n END, t.churn_critical_ratio,"
	"           t.default_visit_interval_days, t.engagement_full_visits, t.engagement_high_score,"
	"           t.engagement_moderate_score, t.engagement_low_score) AS engagement_level,"
	"         prm.churn_risk(a.completed, d.days_since, g.avg_gap::float8, a.next_at IS NOT NULL,"
	"           d.missed, t.churn_critical_ratio, t.churn_high_ratio, t.churn_medium_ratio,"
	"           t.default_visit_interval_days) AS churn_risk"
	"    FROM prm.patient p"
	"    JOIN prm.reengagement_settings t ON t.org_id = p.org_id"
	PRM_STATS_APPOINTMENT_LATERAL
	"    CROSS JOIN LATERAL ("
	"      SELECT CASE WHEN a.completed >= 2 THEN pg_catalog.round(pg_catalog.date_part('epoch',"
	"               a.last_visit - a.first_visit)::numeric / 86400 / (a.completed - 1), 2) END AS avg_gap) g"
	"    CROSS JOIN LATERAL ("
	"      SELECT pg_catalog.date_part('epoch', pg_catalog.now() - a.last_visit) / 86400 AS days_since,"
	"             CASE WHEN a.total >= 3 THEN (a.cancelled + a.noshow)::float8 / a.total END AS missed) d"
	"    CROSS JOIN LATERAL ("
	"      SELECT pg_catalog.count(*)::int AS n, pg_catalog.max(m.created_at) AS last_at"
	"        FROM " LEGACY_OUTBOUND("m0.created_at") " m) o"
													"    CROSS JOIN LATERAL ("
													"      SELECT pg_catalog.count(*)::int AS n, pg_catalog.max(y.received_at) AS last_at"
													"        FROM prm.inbound_message y WHERE y.org_id = p.org_id AND y.patient_id = p.id) i"
													"    CROSS JOIN LATERAL ("
													"      SELECT pg_catalog.count(*)::int AS n FROM " LEGACY_OUTBOUND("m0.created_at") " m"
																																	   "       WHERE i.n > 0 AND EXISTS (SELECT 1 FROM prm.inbound_message y"
																																	   "               WHERE y.org_id = p.org_id AND y.patient_id = p.id"
																																	   "                 AND y.received_at >= m.created_at"
																																	   "                 AND y.received_at < m.created_at + interval '48 hours')) r"
																																	   "   WHERE p.org_id = $1 AND %s),"
																																	   " up AS ("
																																	   "  INSERT INTO prm.patient_stats AS s (org_id, patient_id, total_appointments, completed_visits,"
																																	   "         cancellations, no_shows, first_visit_at, last_visit_at, next_appointment_at, revenue,"
																																	   "         avg_days_between_visits, messages_out, messages_in, replied_out, last_outbound_at,"
																																	   "         last_inbound_at, engagement_level, churn_risk, computed_at)"
																																	   "  SELECT org_id, patient_id, total, completed, cancelled, noshow, first_visit, last_visit, next_at,"
																																	   "         revenue, avg_gap, out_n, in_n, replied_n, out_at, in_at, engagement_level, churn_risk,"
																																	   "         pg_catalog.now()"
																																	   "    FROM fresh"
																																	   "  ON CONFLICT (org_id, patient_id) DO UPDATE SET"
																																	   "         total_appointments = EXCLUDED.total_appointments, completed_visits = EXCLUDED.completed_visits,"
																																	   "         cancellations = EXCLUDED.cancellations, no_shows = EXCLUDED.no_shows,"
																																	   "         first_visit_at = EXCLUDED.first_visit_at, last_visit_at = EXCLUDED.last_visit_at,"
																																	   "         next_appointment_at = EXCLUDED.next_appointment_at, revenue = EXCLUDED.revenue,"
																																	   "         avg_days_between_visits = EXCLUDED.avg_days_between_visits,"
																																	   "         messages_out = EXCLUDED.messages_out, messages_in = EXCLUDED.messages_in,"
																																	   "         replied_out = EXCLUDED.replied_out, last_outbound_at = EXCLUDED.last_outbound_at,"
																																	   "         last_inbound_at = EXCLUDED.last_inbound_at, engagement_level = EXCLUDED.engagement_level,"
																																	   "         churn_risk = EXCLUDED.churn_risk, computed_at = EXCLUDED.computed_at"
																																	   "   WHERE (s.total_appointments, s.completed_visits, s.cancellations, s.no_shows, s.first_visit_at,"
																																	   "          s.last_visit_at, s.next_appointment_at, s.revenue, s.avg_days_between_visits,"
																																	   "          s.messages_out, s.messages_in, s.replied_out, s.last_outbound_at, s.last_inbound_at,"
																																	   "          s.engagement_level, s.churn_risk)"
																																	   "         IS DISTINCT FROM"
																																	   "         (EXCLUDED.total_appointments, EXCLUDED.completed_visits, EXCLUDED.cancellations,"
																																	   "          EXCLUDED.no_shows, EXCLUDED.first_visit_at, EXCLUDED.last_visit_at,"
																																	   "          EXCLUDED.next_appointment_at, EXCLUDED.revenue, EXCLUDED.avg_days_between_visits,"
																																	   "          EXCLUDED.messages_out, EXCLUDED.messages_in, EXCLUDED.replied_out,"
																																	   "          EXCLUDED.last_outbound_at, EXCLUDED.last_inbound_at, EXCLUDED.engagement_level,"
																																	   "          EXCLUDED.churn_risk)"
																																	   "  RETURNING s.patient_id, s.engagement_level, s.churn_risk)"
																																	   "SELECT (SELECT pg_catalog.count(*) FROM fresh)::int,"
																																	   "       (SELECT pg_catalog.count(*)::int FROM up JOIN old USING (patient_id)"
																																	   "         WHERE (old.engagement_level, old.churn_risk) IS DISTINCT FROM"
																																	   "               (up.engagement_level, up.churn_risk))";

/*
 * Recompute the statistics of one patient (or, with all, of every patient
 * of the organization) from their rows.  Returns the number of patients
 * whose stored level or risk changed; *patients (when not NULL) gets the
 * number of patients computed.  Must run inside SPI.
 */
static int
LegacyRecompute(int64 org_id, int64 patient_id, bool all, int *patients)
{
	static SPIPlanPtr one_plan = NULL;
	static SPIPlanPtr all_plan = NULL;
	SPIPlanPtr		  plan;
	Datum			  values[2];
	bool			  isnull;

	if (all)
		plan = PrmPrepare(&all_plan, psprintf(legacy_sql, "true", "true"),
						  1, (Oid[]){INT8OID});
	else
		plan = PrmPrepare(&one_plan,
						  psprintf(legacy_sql, "s.patient_id = $2", "p.id = $2"),
						  2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	if (PrmExecute(plan, values, NULL, false, 0) != 1)
		elog(ERROR, "patient statistics recompute returned no row");
	if (patients)
		*patients = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 2, &isnull));
}

/*
 * Lock and recompute each of the n patients (sorted, possibly repeated) as
 * 0.2.0 did; returns how many changed level or risk.
 */
int
PrmStatsLegacyRecompute(const int64 *org_ids, const int64 *patient_ids, int n)
{
	static SPIPlanPtr lock_plan = NULL;
	int				  changed = 0;
	int				  i;

	PrmPrepare(&lock_plan,
			   "WITH made AS (INSERT INTO prm.patient_stats (org_id, patient_id, engagement_level, churn_risk)"
			   "              SELECT $1, $2, 'disengaged', 'low'"
			   "               WHERE EXISTS (SELECT 1 FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2)"
			   "              ON CONFLICT (org_id, patient_id) DO NOTHING RETURNING 1)"
			   "SELECT (SELECT pg_catalog.count(*) FROM made),"
			   "       (SELECT 1 FROM prm.patient_stats s WHERE s.org_id = $1 AND s.patient_id = $2 FOR UPDATE)",
			   2, (Oid[]){INT8OID, INT8OID});
	for (i = 0; i < n; i++)
	{
		Datum lv[2];

		if (i > 0 && org_ids[i - 1] == org_ids[i] && patient_ids[i - 1] == patient_ids[i])
			continue;
		lv[0] = Int64GetDatum(org_ids[i]);
		lv[1] = Int64GetDatum(patient_ids[i]);
		PrmExecute(lock_plan, lv, NULL, false, 1);
	}
	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (i > 0 && org_ids[i - 1] == org_ids[i] && patient_ids[i - 1] == patient_ids[i])
			continue;
		changed += LegacyRecompute(org_ids[i], patient_ids[i], false, NULL);
	}
	return changed;
}

/* Recompute every patient of an organization as 0.2.0 did; the number of patients. */
int
PrmStatsLegacyRebuild(int64 org_id)
{
	static SPIPlanPtr delete_plan = NULL;
	Datum			  values[1];
	int				  patients;

	PrmPrepare(&delete_plan, "DELETE FROM prm.patient_stats s WHERE s.org_id = $1",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	PrmExecute(delete_plan, values, NULL, false, 0);
	(void) LegacyRecompute(org_id, 0, true, &patients);
	return patients;
}
