/*-------------------------------------------------------------------------
 *
 * reengagement_tally.c
 *	  Writing a patient's statistics row, judged, and keeping the
 *	  organization's tally of what the rows contribute to the summary; the
 *	  patient_stats_due job step that re-judges rows when the clock alone
 *	  changes their level, risk or upcoming appointment.
 *
 * A statistics row stores the patient's facts (counts, extremes, sums of
 * their rows) and, judged from them at computed_at with the organization's
 * thresholds, the level, risk, expected horizon value and lifetime value
 * that prm.patient_profile would show, and changes_at: the first moment at
 * which the clock alone would make the view show something else (the next
 * appointment passes, the rhythm ratio reaches a churn ratio, the recency
 * score drops the level).  Until then the stored judgement is the view's.
 *
 * The tally.  prm.reengagement_tally holds, per organization, the sums of
 * the stored contributions of its rows.  Every write adds the difference
 * between the row's new and old contributions to its transaction's
 * pending sums, written at commit to the tally row of the backend's slot
 * (MyBackendId; reengagement_pending.c): two backends never share a slot,
 * so writers of one clinic never wait on each other's tally row, and the
 * summary adds up at most max_connections rows.  Deleted rows are
 * subtracted by a statement trigger on prm.patient_stats.
 *
 * The summary (reengagement_read.c) is the tally, less the stored
 * contributions of the rows due within PRM_STATS_DUE_SLACK, plus those
 * rows judged afresh through the view: exact at any moment, whether or not
 * the worker has caught up.  The step re-judges due rows, writes them
 * (tally included), wakes the worker for nearer deadlines, and notifies
 * prm_patient_risk when a level or risk changed, as the triggers do.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "prm.h"
#include "reengagement.h"

PG_FUNCTION_INFO_V1(prm_patient_stats_tally_trigger);
PG_FUNCTION_INFO_V1(prm_reengagement_settings_trigger);

/* a judgement that the float arithmetic puts at or before now moves on by this */
#define STATS_RECHECK_USECS USECS_PER_SEC

static int	 NameIndex(const char *name, const char *const *names, int n);
static Datum NumericZero(void);
static bool	 NumericEq(Datum a, Datum b);

/* The index of name in names, or 0 when unknown. */
static int
NameIndex(const char *name, const char *const *names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return 0;
}

static Datum
NumericZero(void)
{
	return NumericGetDatum(int64_to_numeric(0));
}

static bool
NumericEq(Datum a, Datum b)
{
	return DatumGetBool(DirectFunctionCall2(numeric_eq, a, b));
}

/* the columns of prm.reengagement_settings, in ReadThresholds' order */
#define THRESHOLD_COLUMNS                                                     \
	"t.churn_critical_ratio, t.churn_high_ratio, t.churn_medium_ratio,"       \
	" t.default_visit_interval_days, t.engagement_full_visits,"               \
	" t.engagement_high_score, t.engagement_moderate_score,"                  \
	" t.engagement_low_score, t.ltv_horizon_days"

/* The thresholds in the first row of the last result, from column col on, checked. */
static void
ReadThresholds(int col, PrmThresholds *t)
{
	double *f[9];
	int		i;

	f[0] = &t->critical;
	f[1] = &t->high;
	f[2] = &t->medium;
	f[3] = &t->default_interval;
	f[4] = &t->full_visits;
	f[5] = &t->high_score;
	f[6] = &t->moderate_score;
	f[7] = &t->low_score;
	f[8] = &t->horizon;
	for (i = 0; i < 9; i++)
	{
		bool isnull;

		*f[i] = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, col + i, &isnull));
	}
	PrmCheckThresholds(t);
}

/*
 * The last thresholds read, with the version of the organization row they
 * were read from (its tid and xmin: every update makes a new version, and
 * a version's content never changes) and the user who read them (row
 * security decides whether the row is seen).  A write of statistics reads
 * the thresholds every time; when the row's version is the cached one, a
 * probe of the organization's primary key replaces the statement.  Any
 * relcache invalidation (prm.reengagement_settings redefined, say)
 * forgets them.
 */
typedef struct ThresholdCache
{
	bool			valid;
	int64			org_id;
	Oid				user_id;
	ItemPointerData tid;
	TransactionId	xmin;
	PrmThresholds	t;
} ThresholdCache;

static ThresholdCache threshold_cache;
static bool			  threshold_callback = false;

static void
ThresholdCacheForget(Datum arg, Oid relid)
{
	threshold_cache.valid = false;
}

/*
 * The version (tid, xmin) of organization org_id's row that the next
 * statement of prm would see: one starting now, or inside a read-only
 * function the caller's (a newer version than the statement reads would
 * pair it with older thresholds in the cache); false when there is none.
 */
static bool
OrgRowVersion(int64 org_id, ItemPointer tid, TransactionId *xmin)
{
	Oid			relid = get_relname_relid("organization", get_namespace_oid("prm", false));
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Snapshot	snap;
	bool		found;

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	snap = RegisterSnapshot(PrmSpiIsReadOnly() ? GetActiveSnapshot() : GetTransactionSnapshot());
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(org_id));
	scan = systable_beginscan(rel, RelationGetPrimaryKeyIndex(rel), true, snap, 1, &key);
	tup = systable_getnext(scan);
	found = HeapTupleIsValid(tup);
	if (found)
	{
		*tid = tup->t_self;
		*xmin = HeapTupleHeaderGetXmin(tup->t_data);
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);
	return found;
}

/* The thresholds of an organization (prm.reengagement_settings), checked. */
void
PrmLoadThresholds(int64 org_id, PrmThresholds *t)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	ItemPointerData	  tid;
	TransactionId	  xmin = InvalidTransactionId;
	bool			  versioned;

	if (!threshold_callback)
	{
		CacheRegisterRelcacheCallback(ThresholdCacheForget, (Datum) 0);
		threshold_callback = true;
	}
	versioned = OrgRowVersion(org_id, &tid, &xmin);
	if (versioned && threshold_cache.valid && threshold_cache.org_id == org_id &&
		threshold_cache.user_id == GetUserId() && ItemPointerEquals(&threshold_cache.tid, &tid) &&
		TransactionIdEquals(threshold_cache.xmin, xmin))
	{
		*t = threshold_cache.t;
		return;
	}
	PrmPrepare(&plan,
			   "SELECT " THRESHOLD_COLUMNS " FROM prm.reengagement_settings t WHERE t.org_id = $1",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	if (PrmExecute(plan, values, NULL, false, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("organization %lld does not exist", (long long) org_id)));
	ReadThresholds(1, t);
	threshold_cache.valid = versioned;
	threshold_cache.org_id = org_id;
	threshold_cache.user_id = GetUserId();
	threshold_cache.tid = tid;
	threshold_cache.xmin = xmin;
	threshold_cache.t = *t;
}

/* A timestamptz column of the last result, or false when NULL. */
static bool
GetTs(int row, int col, TimestampTz *ts)
{
	bool  isnull;
	Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	*ts = isnull ? 0 : DatumGetTimestampTz(d);
	return !isnull;
}

static int32
GetInt32(int row, int col)
{
	bool  isnull;
	Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

static Datum
GetNumeric(int row, int col)
{
	bool  isnull;
	Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? NumericZero() : d;
}

/*
 * The facts of row `row` of the last result, from column col on, in the
 * order of prm.patient_stats' columns: total_appointments, completed_visits,
 * cancellations, no_shows, first_visit_at, last_visit_at,
 * next_appointment_at, revenue, messages_out, messages_in, replied_out,
 * last_outbound_at, last_inbound_at.
 */
void
PrmStatsReadFacts(int row, int col, PrmStatsFacts *f)
{
	f->total = GetInt32(row, col);
	f->completed = GetInt32(row, col + 1);
	f->cancelled = GetInt32(row, col + 2);
	f->noshow = GetInt32(row, col + 3);
	f->has_first = GetTs(row, col + 4, &f->first);
	f->has_last = GetTs(row, col + 5, &f->last);
	f->has_next = GetTs(row, col + 6, &f->next);
	f->revenue = GetNumeric(row, col + 7);
	f->out_n = GetInt32(row, col + 8);
	f->in_n = GetInt32(row, col + 9);
	f->replied = GetInt32(row, col + 10);
	f->has_out_at = GetTs(row, col + 11, &f->out_at);
	f->has_in_at = GetTs(row, col + 12, &f->in_at);
}

/*
 * The direct path.  A statistics write is a locked read and an update of
 * one row by its primary key; through SPI each is a statement to start,
 * run and end, which cost a single-row appointment insert more than its
 * own work did.  So the row is found and locked through its primary-key
 * index (RelationFindReplTupleByIndex, as logical replication applies a
 * row) and updated in place (ExecSimpleRelationUpdate: constraints,
 * indexes and row triggers as an UPDATE would, no statement).  Statistics
 * are derived data kept by prm's own code: the caller's privileges and row
 * security were checked on the write that made them change.
 *
 * The columns, by name: the key, then what PrmStatsWrite writes, in the
 * order of its SQL statement's parameters $3 on, then computed_at.
 */
static const char *const stats_columns[] = {
	"org_id", "patient_id",
	"total_appointments", "completed_visits", "cancellations", "no_shows",
	"first_visit_at", "last_visit_at", "next_appointment_at", "revenue",
	"avg_days_between_visits", "messages_out", "messages_in", "replied_out",
	"last_outbound_at", "last_inbound_at", "engagement_level", "churn_risk",
	"changes_at", "expected_horizon_value", "lifetime_value", "computed_at"};

#define SC_COUNT ((int) lengthof(stats_columns))
#define SC_WRITTEN (SC_COUNT - 3) /* between the key and computed_at */

/* prm.patient_stats, opened for writing, and the numbers of its columns. */
static Relation
StatsOpen(AttrNumber *att)
{
	Oid		  relid = get_relname_relid("patient_stats", get_namespace_oid("prm", false));
	Relation  rel;
	TupleDesc desc;
	int		  i;

	if (!OidIsValid(relid))
		elog(ERROR, "prm.patient_stats does not exist");
	rel = table_open(relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	for (i = 0; i < SC_COUNT; i++)
	{
		att[i] = SPI_fnumber(desc, stats_columns[i]);
		if (att[i] <= 0)
			elog(ERROR, "column \"%s\" of prm.patient_stats does not exist", stats_columns[i]);
	}
	return rel;
}

/* A column of a slot, copied into the current memory context. */
static Datum
SlotCopy(TupleTableSlot *slot, AttrNumber att, bool *isnull)
{
	Datum			  d = slot_getattr(slot, att, isnull);
	Form_pg_attribute a = TupleDescAttr(slot->tts_tupleDescriptor, att - 1);

	return *isnull ? (Datum) 0 : datumCopy(d, a->attbyval, a->attlen);
}

static bool
SlotTs(TupleTableSlot *slot, AttrNumber att, TimestampTz *ts)
{
	bool isnull;
	Datum d = slot_getattr(slot, att, &isnull);

	*ts = isnull ? 0 : DatumGetTimestampTz(d);
	return !isnull;
}

static int32
SlotInt32(TupleTableSlot *slot, AttrNumber att)
{
	bool isnull;
	Datum d = slot_getattr(slot, att, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

static Datum
SlotNumeric(TupleTableSlot *slot, AttrNumber att)
{
	bool  isnull;
	Datum d = SlotCopy(slot, att, &isnull);

	return isnull ? NumericZero() : d;
}

/*
 * Find and lock (FOR UPDATE) a patient's statistics row through the
 * primary key and read it into *row; false when there is none.  Rows this
 * transaction wrote, even in the current command, are found: the lookup
 * follows the row to its latest version.
 */
static bool
StatsLockDirect(int64 org_id, int64 patient_id, PrmStatsRow *row)
{
	AttrNumber		att[SC_COUNT];
	Relation		rel = StatsOpen(att);
	TupleTableSlot *search = table_slot_create(rel, NULL);
	TupleTableSlot *found = table_slot_create(rel, NULL);
	bool			isnull;
	bool			ok;
	int				i;

	/* make the writes of this command so far lockable */
	CommandCounterIncrement();
	ExecClearTuple(search);
	for (i = 0; i < search->tts_tupleDescriptor->natts; i++)
		search->tts_isnull[i] = true;
	search->tts_values[att[0] - 1] = Int64GetDatum(org_id);
	search->tts_isnull[att[0] - 1] = false;
	search->tts_values[att[1] - 1] = Int64GetDatum(patient_id);
	search->tts_isnull[att[1] - 1] = false;
	ExecStoreVirtualTuple(search);
	ok = RelationFindReplTupleByIndex(rel, RelationGetPrimaryKeyIndex(rel), LockTupleExclusive,
									  search, found);
	if (ok)
	{
		PrmStatsFacts *f = &row->f;
		Datum		   d;

		f->total = SlotInt32(found, att[2]);
		f->completed = SlotInt32(found, att[3]);
		f->cancelled = SlotInt32(found, att[4]);
		f->noshow = SlotInt32(found, att[5]);
		f->has_first = SlotTs(found, att[6], &f->first);
		f->has_last = SlotTs(found, att[7], &f->last);
		f->has_next = SlotTs(found, att[8], &f->next);
		f->revenue = SlotNumeric(found, att[9]);
		f->out_n = SlotInt32(found, att[11]);
		f->in_n = SlotInt32(found, att[12]);
		f->replied = SlotInt32(found, att[13]);
		f->has_out_at = SlotTs(found, att[14], &f->out_at);
		f->has_in_at = SlotTs(found, att[15], &f->in_at);
		d = slot_getattr(found, att[16], &isnull);
		row->level = isnull ? 0 : NameIndex(TextDatumGetCString(d), PrmEngagementLevelNames, PRM_LEVELS);
		d = slot_getattr(found, att[17], &isnull);
		row->risk = isnull ? 0 : NameIndex(TextDatumGetCString(d), PrmChurnRiskNames, PRM_RISKS);
		row->has_changes_at = SlotTs(found, att[18], &row->changes_at);
		row->horizon_value = SlotNumeric(found, att[19]);
		row->lifetime_value = SlotNumeric(found, att[20]);
		row->exists = true;
		row->tuple = ExecCopySlotHeapTuple(found);
		row->tuple->t_self = found->tts_tid;
	}
	ExecDropSingleTupleTableSlot(search);
	ExecDropSingleTupleTableSlot(found);
	table_close(rel, NoLock);
	return ok;
}

/*
 * Update the row locked by StatsLockDirect (old) with the values of
 * PrmStatsWrite's statement (v, n: its parameters, $1 and $2 the key),
 * computed_at now; each value coerced to its column's type modifier as
 * the statement would.
 */
static void
StatsUpdateDirect(HeapTuple old, const Datum *v, const char *n)
{
	AttrNumber		att[SC_COUNT];
	Relation		rel = StatsOpen(att);
	TupleDesc		desc = RelationGetDescr(rel);
	EState		   *estate = CreateExecutorState();
	RangeTblEntry  *rte = makeNode(RangeTblEntry);
	ResultRelInfo  *rri = makeNode(ResultRelInfo);
	EPQState		epq;
	TupleTableSlot *search;
	TupleTableSlot *slot;
	int				i;

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	ExecInitResultRelation(estate, rri, 1);
	estate->es_output_cid = GetCurrentCommandId(true);
	AfterTriggerBeginQuery();
	ExecOpenIndices(rri, false);
	EvalPlanQualInit(&epq, estate, NULL, NIL, -1);

	search = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	ExecClearTuple(search);
	ExecStoreVirtualTuple(search);
	search->tts_tid = old->t_self;
	slot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	heap_deform_tuple(old, desc, slot->tts_values, slot->tts_isnull);
	for (i = 0; i <= SC_WRITTEN; i++)
	{
		int				  a = att[2 + i] - 1;
		Form_pg_attribute attr = TupleDescAttr(desc, a);

		if (i == SC_WRITTEN)
		{
			/* computed_at = now() */
			slot->tts_values[a] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
			slot->tts_isnull[a] = false;
			break;
		}
		slot->tts_isnull[a] = n[2 + i] == 'n';
		slot->tts_values[a] = v[2 + i];
		if (!slot->tts_isnull[a] && attr->atttypid == NUMERICOID && attr->atttypmod >= 0)
			slot->tts_values[a] = DirectFunctionCall2(numeric, v[2 + i],
													  Int32GetDatum(attr->atttypmod));
	}
	ExecStoreVirtualTuple(slot);
	ExecSimpleRelationUpdate(rri, estate, &epq, search, slot);

	EvalPlanQualEnd(&epq);
	AfterTriggerEndQuery(estate);
	ExecResetTupleTable(estate->es_tupleTable, false);
	ExecCloseResultRelations(estate); /* and its indexes */
	ExecCloseRangeTableRelations(estate);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
}

/*
 * Lock a patient's statistics row (made first if missing) and read it,
 * with the organization's thresholds (*t).  This is the lock that
 * serialises every write of one patient's figures: the row returned is the
 * latest committed version.  Returns false when the patient does not exist
 * (any more).
 */
bool
PrmStatsLock(int64 org_id, int64 patient_id, PrmStatsRow *row, PrmThresholds *t)
{
	static SPIPlanPtr make_plan = NULL;
	Datum			  values[2];
	int				  attempt;

	PrmPrepare(&make_plan,
			   "INSERT INTO prm.patient_stats (org_id, patient_id, engagement_level, churn_risk)"
			   " SELECT $1, $2, 'disengaged', 'low'"
			   "  WHERE EXISTS (SELECT 1 FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2)"
			   " ON CONFLICT (org_id, patient_id) DO NOTHING RETURNING 1",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	memset(row, 0, sizeof(*row));
	/* found, or made by us, or made by another transaction since: then found */
	for (attempt = 0; attempt < 2; attempt++)
	{
		if (StatsLockDirect(org_id, patient_id, row))
		{
			PrmLoadThresholds(org_id, t);
			return true;
		}
		if (attempt == 0 && PrmExecute(make_plan, values, NULL, false, 0) == 1)
		{
			/* just made: written as new, contributing nothing yet */
			if (!StatsLockDirect(org_id, patient_id, row))
				elog(ERROR, "the statistics row just made for patient %lld is gone",
					 (long long) patient_id);
			row->exists = false;
			row->f.revenue = NumericZero();
			row->horizon_value = NumericZero();
			row->lifetime_value = NumericZero();
			PrmLoadThresholds(org_id, t);
			return true;
		}
	}
	return false;
}

/* What a row contributes, judged from facts f at now. */
typedef struct StatsJudged
{
	int			level;
	int			risk;
	bool		has_avg;
	Datum		avg; /* numeric */
	bool		has_changes_at;
	TimestampTz changes_at;
	Datum		horizon_value;
	Datum		lifetime_value;
} StatsJudged;

/*
 * Judge facts as prm.patient_profile does, with the same arithmetic (the
 * same numeric and float8 functions, in the same order), so the stored
 * judgement equals the view's.
 */
static void
StatsJudge(const PrmStatsFacts *f, const PrmThresholds *t, StatsJudged *j)
{
	TimestampTz	 now = GetCurrentTransactionStartTimestamp();
	PatientFacts pf;
	double		 rhythm;
	double		 change_days;
	Datum		 per_visit;

	memset(&pf, 0, sizeof(pf));
	memset(j, 0, sizeof(*j));
	/* round(date_part('epoch', last - first)::numeric / 86400 / (completed - 1), 2) */
	j->has_avg = f->completed >= 2 && f->has_first && f->has_last;
	if (j->has_avg)
	{
		Datum gap = DirectFunctionCall2(timestamp_mi, TimestampTzGetDatum(f->last),
										TimestampTzGetDatum(f->first));
		Datum secs = DirectFunctionCall2(interval_part, CStringGetTextDatum("epoch"), gap);
		Datum n = DirectFunctionCall1(float8_numeric, secs);

		n = DirectFunctionCall2(numeric_div, n, NumericGetDatum(int64_to_numeric(86400)));
		n = DirectFunctionCall2(numeric_div, n,
								NumericGetDatum(int64_to_numeric(f->completed - 1)));
		j->avg = DirectFunctionCall2(numeric_round, n, Int32GetDatum(2));
		pf.has_avg = true;
		pf.avg_days = DatumGetFloat8(DirectFunctionCall1(numeric_float8, j->avg));
	}
	pf.visits = Max(f->completed, 0);
	/* date_part('epoch', now() - last_visit_at) / 86400 */
	pf.visited = f->has_last && pf.visits > 0;
	if (pf.visited)
	{
		Datum ago = DirectFunctionCall2(timestamp_mi, TimestampTzGetDatum(now),
										TimestampTzGetDatum(f->last));

		pf.days_since = Max(DatumGetFloat8(DirectFunctionCall2(interval_part,
															   CStringGetTextDatum("epoch"),
															   ago)) /
								86400,
							0.0);
	}
	pf.upcoming = f->has_next && f->next > now;
	pf.has_missed = f->total >= 3;
	pf.missed_rate = pf.has_missed
						 ? Min(Max((double) (f->cancelled + f->noshow) / f->total, 0.0), 1.0)
						 : 0;
	pf.has_response = f->out_n > 0;
	pf.response_rate = pf.has_response ? (double) f->replied / f->out_n : 0;

	j->level = PrmJudgeLevel(&pf, t);
	j->risk = PrmJudgeRisk(&pf, t);

	/* the next moment the clock alone changes what the view shows */
	change_days = PrmJudgeChangeDays(&pf, t);
	if (pf.upcoming)
	{
		j->has_changes_at = true;
		j->changes_at = f->next;
	}
	else if (change_days >= 0)
	{
		double at = (double) f->last + change_days * (double) USECS_PER_DAY;

		/* beyond any date PostgreSQL keeps: never */
		if (at < (double) END_TIMESTAMP)
		{
			j->has_changes_at = true;
			j->changes_at = (TimestampTz) at;
		}
	}
	if (j->has_changes_at && j->changes_at <= now)
		j->changes_at = now + STATS_RECHECK_USECS;

	/*
	 * expected_horizon_value: round(CASE WHEN completed > 0 THEN revenue /
	 * completed ELSE 0 END * (horizon / rhythm)::numeric, 2)
	 */
	rhythm = PrmRhythmDays(f->completed, pf.has_avg, pf.avg_days, t->default_interval);
	per_visit = f->completed > 0
					? DirectFunctionCall2(numeric_div, f->revenue,
										  NumericGetDatum(int64_to_numeric(f->completed)))
					: NumericZero();
	j->horizon_value = DirectFunctionCall2(numeric_round,
										   DirectFunctionCall2(numeric_mul, per_visit,
															   DirectFunctionCall1(float8_numeric,
																				   Float8GetDatum(t->horizon / rhythm))),
										   Int32GetDatum(2));
	j->lifetime_value = PrmLifetimeValue(f->revenue, pf.visits, pf.has_avg, pf.avg_days,
										 j->risk, t->horizon, t->default_interval);
}

/* Are two sets of facts the same? */
static bool
FactsEqual(const PrmStatsFacts *a, const PrmStatsFacts *b)
{
	return a->total == b->total && a->completed == b->completed &&
		   a->cancelled == b->cancelled && a->noshow == b->noshow &&
		   a->has_first == b->has_first && (!a->has_first || a->first == b->first) &&
		   a->has_last == b->has_last && (!a->has_last || a->last == b->last) &&
		   a->has_next == b->has_next && (!a->has_next || a->next == b->next) &&
		   a->out_n == b->out_n && a->in_n == b->in_n && a->replied == b->replied &&
		   a->has_out_at == b->has_out_at && (!a->has_out_at || a->out_at == b->out_at) &&
		   a->has_in_at == b->has_in_at && (!a->has_in_at || a->in_at == b->in_at) &&
		   NumericEq(a->revenue, b->revenue);
}

/* The value at risk a row contributes: its horizon value when high or critical. */
static Datum
ValueAtRisk(int risk, Datum horizon_value)
{
	return risk >= 2 ? horizon_value : NumericZero();
}

/*
 * Write a patient's row (locked by PrmStatsLock, which filled old) with the
 * facts fresh, judged now, and add the difference of its contributions to
 * the transaction's pending tally (reengagement_pending.c).  Returns whether a stored level or risk changed.
 */
bool
PrmStatsWrite(int64 org_id, int64 patient_id, const PrmStatsRow *old,
			  const PrmStatsFacts *fresh, const PrmThresholds *t)
{
	static SPIPlanPtr plan = NULL;
	StatsJudged		  j;
	Datum			  v[21];
	char			  n[21];
	int64			  counts[PRM_TALLY_COUNTS];
	Datum			  sums[PRM_TALLY_SUMS];

	StatsJudge(fresh, t, &j);
	if (old->exists && FactsEqual(&old->f, fresh) && old->level == j.level &&
		old->risk == j.risk && old->has_changes_at == j.has_changes_at &&
		(!j.has_changes_at || old->changes_at == j.changes_at) &&
		NumericEq(old->horizon_value, j.horizon_value) &&
		NumericEq(old->lifetime_value, j.lifetime_value))
		return false;

	PrmPrepare(&plan,
			   "UPDATE prm.patient_stats s SET total_appointments = $3, completed_visits = $4,"
			   "       cancellations = $5, no_shows = $6, first_visit_at = $7, last_visit_at = $8,"
			   "       next_appointment_at = $9, revenue = $10, avg_days_between_visits = $11,"
			   "       messages_out = $12, messages_in = $13, replied_out = $14,"
			   "       last_outbound_at = $15, last_inbound_at = $16, engagement_level = $17,"
			   "       churn_risk = $18, changes_at = $19, expected_horizon_value = $20,"
			   "       lifetime_value = $21, computed_at = pg_catalog.now()"
			   " WHERE s.org_id = $1 AND s.patient_id = $2",
			   21,
			   (Oid[]){INT8OID, INT8OID, INT4OID, INT4OID, INT4OID, INT4OID, TIMESTAMPTZOID,
					   TIMESTAMPTZOID, TIMESTAMPTZOID, NUMERICOID, NUMERICOID, INT4OID, INT4OID,
					   INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
					   NUMERICOID, NUMERICOID});
	memset(n, ' ', sizeof(n));
	v[0] = Int64GetDatum(org_id);
	v[1] = Int64GetDatum(patient_id);
	v[2] = Int32GetDatum(fresh->total);
	v[3] = Int32GetDatum(fresh->completed);
	v[4] = Int32GetDatum(fresh->cancelled);
	v[5] = Int32GetDatum(fresh->noshow);
	v[6] = TimestampTzGetDatum(fresh->first);
	n[6] = fresh->has_first ? ' ' : 'n';
	v[7] = TimestampTzGetDatum(fresh->last);
	n[7] = fresh->has_last ? ' ' : 'n';
	v[8] = TimestampTzGetDatum(fresh->next);
	n[8] = fresh->has_next ? ' ' : 'n';
	v[9] = fresh->revenue;
	v[10] = j.avg;
	n[10] = j.has_avg ? ' ' : 'n';
	v[11] = Int32GetDatum(fresh->out_n);
	v[12] = Int32GetDatum(fresh->in_n);
	v[13] = Int32GetDatum(fresh->replied);
	v[14] = TimestampTzGetDatum(fresh->out_at);
	n[14] = fresh->has_out_at ? ' ' : 'n';
	v[15] = TimestampTzGetDatum(fresh->in_at);
	n[15] = fresh->has_in_at ? ' ' : 'n';
	v[16] = CStringGetTextDatum(PrmEngagementLevelNames[j.level]);
	v[17] = CStringGetTextDatum(PrmChurnRiskNames[j.risk]);
	v[18] = TimestampTzGetDatum(j.changes_at);
	n[18] = j.has_changes_at ? ' ' : 'n';
	v[19] = j.horizon_value;
	v[20] = j.lifetime_value;

	if (old->tuple != NULL)
		StatsUpdateDirect(old->tuple, v, n);
	else if (PrmExecute(plan, v, n, false, 0) != 1)
		return false;

	/* the tally: new contributions less the old ones */
	memset(counts, 0, sizeof(counts));
	counts[0] = old->exists ? 0 : 1;
	counts[1 + j.level]++;
	counts[1 + PRM_LEVELS + j.risk]++;
	counts[1 + PRM_LEVELS + PRM_RISKS] = (fresh->has_next ? 0 : 1) -
										 (old->exists ? (old->f.has_next ? 0 : 1) : 0);
	if (old->exists)
	{
		counts[1 + old->level]--;
		counts[1 + PRM_LEVELS + old->risk]--;
	}
	sums[0] = DirectFunctionCall2(numeric_sub, ValueAtRisk(j.risk, j.horizon_value),
								  old->exists ? ValueAtRisk(old->risk, old->horizon_value)
											  : NumericZero());
	sums[1] = DirectFunctionCall2(numeric_sub, j.lifetime_value, old->lifetime_value);
	sums[2] = DirectFunctionCall2(numeric_sub, fresh->revenue,
								  old->exists ? old->f.revenue : NumericZero());
	PrmTallyAdd(org_id, counts, sums);
	if (j.has_changes_at)
		PrmWakeWorker(j.changes_at);
	return old->exists && (old->level != j.level || old->risk != j.risk);
}

/*
 * prm.patient_stats_tally_trigger(): AFTER DELETE ... FOR EACH STATEMENT on
 * prm.patient_stats.  Subtracts the deleted rows' contributions, except for
 * organizations being deleted (their tally goes with them).
 */
Datum
prm_patient_stats_tally_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Datum		 values[1];

	PrmCheckTrigger(fcinfo, "patient_stats_tally_trigger", "patient_stats");
	if (!TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) || trigdata->tg_oldtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function prm.patient_stats_tally_trigger() must be fired AFTER DELETE ... FOR EACH STATEMENT with an old table")));
	PrmSpiConnect();
	if (SPI_register_trigger_data(trigdata) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register the transition table");
	values[0] = Int32GetDatum(MyBackendId);
	if (SPI_execute_with_args(
			PRM_TALLY_INSERT
			" SELECT o.org_id, $1, -pg_catalog.count(*),"
			"       -pg_catalog.count(*) FILTER (WHERE o.engagement_level = 'highly_engaged'),"
			"       -pg_catalog.count(*) FILTER (WHERE o.engagement_level = 'moderately_engaged'),"
			"       -pg_catalog.count(*) FILTER (WHERE o.engagement_level = 'low_engagement'),"
			"       -pg_catalog.count(*) FILTER (WHERE o.engagement_level = 'disengaged'),"
			"       -pg_catalog.count(*) FILTER (WHERE o.churn_risk = 'low'),"
			"       -pg_catalog.count(*) FILTER (WHERE o.churn_risk = 'medium'),"
			"       -pg_catalog.count(*) FILTER (WHERE o.churn_risk = 'high'),"
			"       -pg_catalog.count(*) FILTER (WHERE o.churn_risk = 'critical'),"
			"       -pg_catalog.count(*) FILTER (WHERE o.next_appointment_at IS NULL),"
			"       -coalesce(pg_catalog.sum(o.expected_horizon_value)"
			"                 FILTER (WHERE o.churn_risk IN ('high', 'critical')), 0),"
			"       -pg_catalog.sum(o.lifetime_value), -pg_catalog.sum(o.revenue)"
			"   FROM old_rows o"
			"  WHERE EXISTS (SELECT 1 FROM prm.organization g WHERE g.id = o.org_id)"
			"  GROUP BY o.org_id"
			PRM_TALLY_ADD,
			1, (Oid[]){INT4OID}, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not subtract deleted statistics from the tally");
	PrmSpiFinish();
	return PointerGetDatum(NULL);
}

/*
 * prm.reengagement_settings_trigger(): AFTER UPDATE OF settings ON
 * prm.organization FOR EACH ROW, when a reengagement threshold changed
 * (the trigger's WHEN says which).  Every statistics row of the
 * organization becomes due: the summary judges due rows afresh, and the
 * step writes their new judgement.
 */
Datum
prm_reengagement_settings_trigger(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	TriggerData		 *trigdata = (TriggerData *) fcinfo->context;
	Datum			  values[1];
	bool			  isnull;

	PrmCheckTrigger(fcinfo, "reengagement_settings_trigger", "organization");
	if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function prm.reengagement_settings_trigger() must be fired AFTER UPDATE ... FOR EACH ROW")));
	values[0] = heap_getattr(trigdata->tg_newtuple,
							 SPI_fnumber(RelationGetDescr(trigdata->tg_relation), "id"),
							 RelationGetDescr(trigdata->tg_relation), &isnull);
	PrmSpiConnect();
	PrmPrepare(&plan,
			   "UPDATE prm.patient_stats s SET changes_at = pg_catalog.now() WHERE s.org_id = $1",
			   1, (Oid[]){INT8OID});
	PrmExecute(plan, values, NULL, false, 0);
	PrmSpiFinish();
	PrmWakeWorker(GetCurrentTransactionStartTimestamp());
	return PointerGetDatum(NULL);
}

/* the due rows of one run of the step */
typedef struct StatsDue
{
	int64 *org_ids;
	int64 *patient_ids;
	int	   changed;
} StatsDue;

/* Re-judge one due row (a PrmItemLoop item). */
static int64
StatsDueItem(void *ctx, int i)
{
	StatsDue	 *due = (StatsDue *) ctx;
	PrmStatsRow	  row;
	PrmStatsFacts facts;
	PrmThresholds t;
	TimestampTz	  now = GetCurrentTransactionStartTimestamp();

	if (!PrmStatsLock(due->org_ids[i], due->patient_ids[i], &row, &t) || !row.exists)
		return 0;
	/* re-judged by a write since it was listed */
	if (!row.has_changes_at || row.changes_at > now)
		return 0;
	facts = row.f;
	/*
	 * A passed next appointment is looked up again; rows from before 0.3.0
	 * (changes_at -infinity) are recomputed from their rows once.
	 */
	if ((facts.has_next && facts.next <= now) || row.changes_at == DT_NOBEGIN)
		PrmStatsRecomputeFacts(due->org_ids[i], due->patient_ids[i], &facts);
	if (PrmStatsWrite(due->org_ids[i], due->patient_ids[i], &row, &facts, &t))
		due->changed++;
	return 1;
}

/*
 * The patient_stats_due step: re-judge up to limit rows whose changes_at
 * has come.  Returns how many were re-judged.
 */
int64
PrmAdvancePatientStats(int limit)
{
	static SPIPlanPtr plan = NULL;
	StatsDue		  due = {NULL, NULL, 0};
	PrmItemLoop		  loop = {StatsDueItem, NULL, &due, 0, 0, NULL, false};
	Datum			  values[1];
	int				  n;
	int				  i;
	bool			  isnull;

	if (!PrmStatsTallyInstalled())
		return 0;
	PrmPrepare(&plan,
			   "SELECT s.org_id, s.patient_id FROM prm.patient_stats s"
			   " WHERE s.changes_at <= pg_catalog.now() ORDER BY s.changes_at LIMIT $1",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	n = PrmExecute(plan, values, NULL, false, 0);
	due.org_ids = palloc(sizeof(int64) * (n + 1));
	due.patient_ids = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		due.org_ids[i] = PrmGetInt64(i, 1, &isnull);
		due.patient_ids[i] = PrmGetInt64(i, 2, &isnull);
	}
	(void) PrmRunItems(&loop, n);
	if (due.changed > 0)
		PrmNotifyOnce("prm_patient_risk");
	return loop.done;
}
