/*-------------------------------------------------------------------------
 *
 * reengagement_stats.c
 *	  Per-patient statistics (prm.patient_stats): the recompute, the
 *	  statement-level triggers that run it, and prm.rebuild_patient_stats.
 *
 * Statistics.  prm.patient_stats holds, per patient, the figures the
 * profile needs (visits, cancellations, no-shows, first, last and next
 * visit, revenue, messages in and out, replies).  Statement-level AFTER
 * triggers on prm.patient, prm.appointment, prm.outbound_message, its
 * history and prm.inbound_message collect the patients a statement touched
 * from its transition tables and recompute each one's row from that
 * patient's source rows (index scans on (org_id, patient_id)), then upsert
 * it.  Nothing is ever incremented: the row is a function of the source rows
 * alone, so the triggers are idempotent, a bulk statement costs one
 * recompute per patient, not per row, and replaying rows in any order (as
 * pg_restore does; patient_stats itself is not dumped) gives the same
 * result.  prm.rebuild_patient_stats() runs the same statement for every
 * patient of an organization.  Outbound messages never change patient or
 * creation time after they are queued, so only their inserts and deletes
 * are watched.  Archiving moves finished messages to the history table in
 * one statement (PrmArchiveMessages) that deletes and inserts the same rows
 * unchanged; the union of the two tables, and so every patient's figures,
 * stay as they were, and the trigger skips both halves of that statement
 * (PrmArchiveInProgress) rather than recompute each patient twice.
 *
 * patient_stats also stores the level and risk as of its last recompute;
 * when a recompute changes either, the transaction notifies channel
 * prm_patient_risk (once).  The profile view computes them afresh on read,
 * since they move with the clock.
 *
 * Locking: recomputes of one patient are serialised by a row lock on the
 * patient's statistics row (made first if missing), taken in (org_id,
 * patient_id) order by the trigger before any recompute.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_patient_stats_trigger);
PG_FUNCTION_INFO_V1(prm_rebuild_patient_stats);

/* the tables prm.patient_stats_trigger() is written for, all in schema prm */
static const char *const stats_relations[] = {
	"patient", "appointment", "outbound_message", "outbound_message_history",
	"inbound_message"};

/* one patient touched by a statement */
typedef struct PatientKey
{
	int64 org_id;
	int64 patient_id;
} PatientKey;

static int		  StatsRecompute(int64 org_id, int64 patient_id, bool all);
static int		  StatsCollect(Tuplestorestate *ts, TupleDesc desc, AttrNumber org_att,
							   AttrNumber pat_att, PatientKey **keys, int n, int *cap);
static int		  PatientKeyCmp(const void *a, const void *b);
static void		  StatsCheckTrigger(FunctionCallInfo fcinfo);
static bool		  StatsIsArchiveMove(TriggerData *trigdata);
static AttrNumber StatsBigintColumn(Relation rel, const char *name);

/*
 * The statement that recomputes patient_stats rows from the source rows.
 * The first %s restricts the patients (p), the second the old rows (s).
 * It returns how many existing rows changed level or risk.
 */
/* (capped and refused messages were never queued: they do not count) */
#define STATS_OUTBOUND(cols)                                                   \
	"(SELECT " cols " FROM prm.outbound_message m0"                            \
	"  WHERE m0.org_id = p.org_id AND m0.patient_id = p.id"                    \
	"    AND m0.status NOT IN ('capped', 'refused')"                           \
	" UNION ALL SELECT " cols " FROM prm.outbound_message_history m0"          \
	"  WHERE m0.org_id = p.org_id AND m0.patient_id = p.id"                    \
	"    AND m0.status NOT IN ('capped', 'refused'))"

static const char *const stats_sql =
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
	"    CROSS JOIN LATERAL ("
	"      SELECT pg_catalog.count(*) FILTER (WHERE x.status <> 'entered-in-error')::int AS total,"
	"             pg_catalog.count(*) FILTER (WHERE x.status = 'fulfilled')::int AS completed,"
	"             pg_catalog.count(*) FILTER (WHERE x.status = 'cancelled')::int AS cancelled,"
	"             pg_catalog.count(*) FILTER (WHERE x.status = 'noshow')::int AS noshow,"
	"             pg_catalog.min(x.starts_at) FILTER (WHERE x.status = 'fulfilled') AS first_visit,"
	"             pg_catalog.max(x.starts_at) FILTER (WHERE x.status = 'fulfilled') AS last_visit,"
	"             pg_catalog.min(x.starts_at) FILTER (WHERE x.status IN ('proposed', 'pending', 'booked',"
	"                 'arrived', 'checked-in') AND x.starts_at > pg_catalog.now()) AS next_at,"
	"             coalesce(pg_catalog.sum(x.price) FILTER (WHERE x.status = 'fulfilled'), 0) AS revenue"
	"        FROM prm.appointment x WHERE x.org_id = p.org_id AND x.patient_id = p.id) a"
	"    CROSS JOIN LATERAL ("
	"      SELECT CASE WHEN a.completed >= 2 THEN pg_catalog.round(pg_catalog.date_part('epoch',"
	"               a.last_visit - a.first_visit)::numeric / 86400 / (a.completed - 1), 2) END AS avg_gap) g"
	"    CROSS JOIN LATERAL ("
	"      SELECT pg_catalog.date_part('epoch', pg_catalog.now() - a.last_visit) / 86400 AS days_since,"
	"             CASE WHEN a.total >= 3 THEN (a.cancelled + a.noshow)::float8 / a.total END AS missed) d"
	"    CROSS JOIN LATERAL ("
	"      SELECT pg_catalog.count(*)::int AS n, pg_catalog.max(m.created_at) AS last_at"
	"        FROM " STATS_OUTBOUND("m0.created_at") " m) o"
													"    CROSS JOIN LATERAL ("
													"      SELECT pg_catalog.count(*)::int AS n, pg_catalog.max(y.received_at) AS last_at"
													"        FROM prm.inbound_message y WHERE y.org_id = p.org_id AND y.patient_id = p.id) i"
													"    CROSS JOIN LATERAL ("
													"      SELECT pg_catalog.count(*)::int AS n FROM " STATS_OUTBOUND("m0.created_at") " m"
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
StatsRecomputeCounting(int64 org_id, int64 patient_id, bool all, int *patients)
{
	static SPIPlanPtr one_plan = NULL;
	static SPIPlanPtr all_plan = NULL;
	SPIPlanPtr		  plan;
	Datum			  values[2];
	bool			  isnull;

	if (all)
		plan = PrmPrepare(&all_plan, psprintf(stats_sql, "true", "true"),
						  1, (Oid[]){INT8OID});
	else
		plan = PrmPrepare(&one_plan,
						  psprintf(stats_sql, "s.patient_id = $2", "p.id = $2"),
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

/* Recompute one patient's statistics; the number of level/risk changes. */
static int
StatsRecompute(int64 org_id, int64 patient_id, bool all)
{
	return StatsRecomputeCounting(org_id, patient_id, all, NULL);
}

/* Order PatientKeys by organization, then patient. */
static int
PatientKeyCmp(const void *a, const void *b)
{
	const PatientKey *x = (const PatientKey *) a;
	const PatientKey *y = (const PatientKey *) b;

	if (x->org_id != y->org_id)
		return x->org_id < y->org_id ? -1 : 1;
	if (x->patient_id != y->patient_id)
		return x->patient_id < y->patient_id ? -1 : 1;
	return 0;
}

/*
 * Append the (org_id, patient) pairs of a transition table to *keys (n
 * used, *cap allocated); rows without a patient are skipped.  Returns the
 * new count.
 */
static int
StatsCollect(Tuplestorestate *ts, TupleDesc desc, AttrNumber org_att,
			 AttrNumber pat_att, PatientKey **keys, int n, int *cap)
{
	TupleTableSlot *slot;

	if (ts == NULL)
		return n;
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	tuplestore_rescan(ts);
	while (tuplestore_gettupleslot(ts, true, false, slot))
	{
		bool  org_null;
		bool  pat_null;
		Datum org = slot_getattr(slot, org_att, &org_null);
		Datum pat = slot_getattr(slot, pat_att, &pat_null);

		if (org_null || pat_null)
			continue;
		if (n == *cap)
		{
			*cap *= 2;
			*keys = repalloc(*keys, sizeof(PatientKey) * *cap);
		}
		(*keys)[n].org_id = DatumGetInt64(org);
		(*keys)[n].patient_id = DatumGetInt64(pat);
		n++;
	}
	ExecDropSingleTupleTableSlot(slot);
	return n;
}

/*
 * Refuse to run prm.patient_stats_trigger() unless the trigger manager fired
 * it AFTER a statement (39P01), with one argument (39P01), on one of the
 * prm tables it was written for (42809).  On any other relation (a
 * temporary table with the same column names, say) it would read columns
 * it cannot trust.
 */
static void
StatsCheckTrigger(FunctionCallInfo fcinfo)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	 rel;
	char		*nspname;
	int			 i;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function prm.patient_stats_trigger() was not called by the trigger manager"),
				 errdetail("It is a statement trigger function of prm's patient, appointment and message tables.")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function prm.patient_stats_trigger() must be fired AFTER ... FOR EACH STATEMENT")));
	if (trigdata->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function prm.patient_stats_trigger() takes one argument, the patient column"),
				 errdetail("The trigger passes %d.", trigdata->tg_trigger->tgnargs)));
	rel = trigdata->tg_relation;
	nspname = get_namespace_name(RelationGetNamespace(rel));
	if (nspname != NULL && strcmp(nspname, "prm") == 0 &&
		rel->rd_rel->relkind == RELKIND_RELATION)
		for (i = 0; i < (int) lengthof(stats_relations); i++)
			if (strcmp(RelationGetRelationName(rel), stats_relations[i]) == 0)
				return;
	ereport(ERROR,
			(errcode(ERRCODE_WRONG_OBJECT_TYPE),
			 errmsg("function prm.patient_stats_trigger() can only be used as a trigger on prm's patient, appointment and message tables"),
			 errdetail("It was fired for relation \"%s\".", RelationGetRelationName(rel))));
}

/*
 * The attribute number of column name of rel, which must be a bigint: 42703 when
 * there is no such column, 42804 when it has another type.
 */
static AttrNumber
StatsBigintColumn(Relation rel, const char *name)
{
	TupleDesc  desc = RelationGetDescr(rel);
	AttrNumber att = SPI_fnumber(desc, name);

	if (att <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						name, RelationGetRelationName(rel)),
				 errhint("The argument of prm.patient_stats_trigger() names the patient column.")));
	if (TupleDescAttr(desc, att - 1)->atttypid != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of relation \"%s\" is not of type bigint",
						name, RelationGetRelationName(rel)),
				 errdetail("prm.patient_stats_trigger() reads org_id and the patient column as bigint.")));
	return att;
}

/*
 * Whether the trigger fired for one half of the archive's move: its delete
 * from prm.outbound_message or its insert into the history.  The flag is
 * set for that one statement only (no other prm trigger writes these
 * tables), and any other table or event is recomputed as usual.
 */
static bool
StatsIsArchiveMove(TriggerData *trigdata)
{
	const char *relname = RelationGetRelationName(trigdata->tg_relation);

	if (!PrmArchiveInProgress())
		return false;
	if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		return strcmp(relname, "outbound_message") == 0;
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		return strcmp(relname, "outbound_message_history") == 0;
	return false;
}

/*
 * AFTER ... FOR EACH STATEMENT trigger with transition tables: recompute
 * the statistics of every patient the statement touched, once each.  The
 * trigger's argument names the column holding the patient's id.
 */
Datum
prm_patient_stats_trigger(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	TriggerData		 *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc		  desc;
	AttrNumber		  org_att;
	AttrNumber		  pat_att;
	PatientKey		 *keys;
	int				  cap = 16;
	int				  n = 0;
	int				  i;
	int				  changed = 0;

	StatsCheckTrigger(fcinfo);
	if (StatsIsArchiveMove(trigdata))
		return PointerGetDatum(NULL);
	desc = RelationGetDescr(trigdata->tg_relation);
	org_att = StatsBigintColumn(trigdata->tg_relation, "org_id");
	pat_att = StatsBigintColumn(trigdata->tg_relation, trigdata->tg_trigger->tgargs[0]);

	keys = palloc(sizeof(PatientKey) * cap);
	n = StatsCollect(trigdata->tg_oldtable, desc, org_att, pat_att, &keys, n, &cap);
	n = StatsCollect(trigdata->tg_newtable, desc, org_att, pat_att, &keys, n, &cap);
	if (n == 0)
		return PointerGetDatum(NULL);
	qsort(keys, n, sizeof(PatientKey), PatientKeyCmp);

	PrmSpiConnect();

	/*
	 * Serialise recomputes of one patient: without a lock, two transactions
	 * writing rows of the same patient would each compute from a snapshot
	 * without the other's rows, and the later commit would store stale
	 * figures.  The lock is the patient's statistics row (made first if
	 * missing), taken in key order so these locks cannot deadlock among
	 * themselves; row locks live in the tuples, so a bulk load of many
	 * patients uses no lock-table memory.  Each recompute then runs with a
	 * snapshot taken after the lock, which sees what the previous holder
	 * committed.
	 */
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

		if (i > 0 && PatientKeyCmp(&keys[i - 1], &keys[i]) == 0)
			continue;
		lv[0] = Int64GetDatum(keys[i].org_id);
		lv[1] = Int64GetDatum(keys[i].patient_id);
		PrmExecute(lock_plan, lv, NULL, false, 1);
	}
	for (i = 0; i < n; i++)
	{
		if (i > 0 && PatientKeyCmp(&keys[i - 1], &keys[i]) == 0)
			continue;
		changed += StatsRecompute(keys[i].org_id, keys[i].patient_id, false);
	}
	PrmSpiFinish();
	if (changed > 0)
		PrmNotifyOnce("prm_patient_risk");
	pfree(keys);
	return PointerGetDatum(NULL);
}

/*
 * prm.rebuild_patient_stats(org_id) RETURNS bigint
 *	  Throw the organization's statistics away and compute them again.
 */
Datum
prm_rebuild_patient_stats(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr delete_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Datum			  values[1];
	int				  patients;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&delete_plan, "DELETE FROM prm.patient_stats s WHERE s.org_id = $1",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	PrmExecute(delete_plan, values, NULL, false, 0);
	(void) StatsRecomputeCounting(org_id, 0, true, &patients);
	PrmEmitEvent(org_id, "patient_stats_rebuilt", "organization", org_id,
				 psprintf("{\"patients\": %d}", patients));
	PrmSpiFinish();
	PG_RETURN_INT64(patients);
}
