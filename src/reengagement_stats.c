/*-------------------------------------------------------------------------
 *
 * reengagement_stats.c
 *	  Per-patient statistics (prm.patient_stats): the statement-level
 *	  triggers that apply each statement's difference to them, the
 *	  recompute of a patient from their rows, and prm.rebuild_patient_stats.
 *
 * Statistics.  prm.patient_stats holds, per patient, the figures the
 * profile needs (visits, cancellations, no-shows, first, last and next
 * visit, revenue, messages in and out, replies).  Statement-level AFTER
 * triggers on prm.patient, prm.appointment, prm.outbound_message, its
 * history and prm.inbound_message read the rows a statement added and
 * removed from its transition tables (an update is its old row removed and
 * its new row added, unless nothing the statistics read changed), group
 * them by patient and apply the difference: counts and sums move by what
 * was added less what was removed, extremes take the added rows'.  Cost is
 * the rows the statement touched, not the patient's history.  Replies (an
 * outbound message answered within 48 hours) are counted from the 48 hours
 * around the added rows only (for added inbound messages by direct scans
 * of the three (org_id, patient_id, time) indexes, not a statement: a
 * patient's reply arriving is the commonest write).  A removed row that was
 * one of the patient's extremes (first or last visit, next appointment), or
 * a stored next appointment that has passed, makes the trigger look the
 * three extremes up again (index scans on (org_id, patient_id, starts_at)); a removed
 * message makes it recompute that patient from all their rows (index scans
 * on (org_id, patient_id)), which is also what prm.rebuild_patient_stats()
 * does for every patient of an organization.  The rows are locked,
 * written (through their primary key, not statements), judged and tallied
 * by reengagement_tally.c.
 *
 * Outbound messages never change patient or creation time after they are
 * queued, so only their inserts and deletes are watched.  Archiving moves
 * finished messages to the history table in one statement
 * (PrmArchiveMessages) that deletes and inserts the same rows unchanged;
 * the union of the two tables, and so every patient's figures, stay as
 * they were, and the trigger skips both halves of that statement
 * (PrmArchiveInProgress).
 *
 * When a write changes a stored level or risk, the transaction notifies
 * channel prm_patient_risk (once).
 *
 * Locking: writes of one patient's figures are serialised by a row lock on
 * the patient's statistics row (made first if missing), taken in (org_id,
 * patient_id) order by the trigger before it reads the stored figures: a
 * difference is always applied to what the previous holder committed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/datum.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "prm.h"
#include "reengagement.h"

PG_FUNCTION_INFO_V1(prm_patient_stats_trigger);
PG_FUNCTION_INFO_V1(prm_rebuild_patient_stats);

/* the tables prm.patient_stats_trigger() is written for, all in schema prm */
static const char *const stats_relations[] = {
	"patient", "appointment", "outbound_message", "outbound_message_history",
	"inbound_message"};

/* a patient */
typedef struct PatientKeyData
{
	int64 org_id;
	int64 patient_id;
} PatientKeyData;

/* which of them a trigger fired for */
typedef enum StatsTable
{
	STATS_PATIENT,
	STATS_APPOINTMENT,
	STATS_OUTBOUND,
	STATS_INBOUND
} StatsTable;

/* how an appointment's status counts */
typedef enum StatsStatus
{
	ST_OTHER,	 /* counted in total only */
	ST_ERROR,	 /* entered-in-error: not counted */
	ST_FULFILLED,
	ST_CANCELLED,
	ST_NOSHOW,
	ST_ACTIVE /* proposed, pending, booked, arrived, checked-in */
} StatsStatus;

/* one row a statement added (sign 1) or removed (sign -1) */
typedef struct StatsEntry
{
	int64		org_id;
	int64		patient_id;
	int			sign;
	StatsStatus status;
	TimestampTz at; /* starts_at, created_at or received_at */
	bool		has_price;
	Datum		price;
	int64		id; /* inbound message id */
} StatsEntry;

/* the columns a trigger reads */
typedef struct StatsColumns
{
	StatsTable table;
	AttrNumber org;
	AttrNumber patient;
	AttrNumber status;
	AttrNumber at;
	AttrNumber price;
	AttrNumber id;
} StatsColumns;

/*
 * The facts of patients from their rows, in the order of the stored
 * columns (PrmStatsReadFacts).  %s restricts the patients (p).
 */
/* (capped and refused messages were never queued: they do not count) */
#define STATS_OUTBOUND(cols)                                                   \
	"(SELECT " cols " FROM prm.outbound_message m0"                            \
	"  WHERE m0.org_id = p.org_id AND m0.patient_id = p.id"                    \
	"    AND m0.status NOT IN ('capped', 'refused')"                           \
	" UNION ALL SELECT " cols " FROM prm.outbound_message_history m0"          \
	"  WHERE m0.org_id = p.org_id AND m0.patient_id = p.id"                    \
	"    AND m0.status NOT IN ('capped', 'refused'))"

static const char *const facts_sql =
	"SELECT p.id, a.total, a.completed, a.cancelled, a.noshow, a.first_visit, a.last_visit,"
	"       a.next_at, a.revenue, o.n, i.n, r.n, o.last_at, i.last_at"
	"  FROM prm.patient p"
	PRM_STATS_APPOINTMENT_LATERAL
	"  CROSS JOIN LATERAL ("
	"    SELECT pg_catalog.count(*)::int AS n, pg_catalog.max(m.created_at) AS last_at"
	"      FROM " STATS_OUTBOUND("m0.created_at") " m) o"
	"  CROSS JOIN LATERAL ("
	"    SELECT pg_catalog.count(*)::int AS n, pg_catalog.max(y.received_at) AS last_at"
	"      FROM prm.inbound_message y WHERE y.org_id = p.org_id AND y.patient_id = p.id) i"
	"  CROSS JOIN LATERAL ("
	"    SELECT pg_catalog.count(*)::int AS n FROM " STATS_OUTBOUND("m0.created_at") " m"
	"     WHERE i.n > 0 AND EXISTS (SELECT 1 FROM prm.inbound_message y"
	"             WHERE y.org_id = p.org_id AND y.patient_id = p.id"
	"               AND y.received_at >= m.created_at"
	"               AND y.received_at < m.created_at + interval '48 hours')) r"
	" WHERE p.org_id = $1 AND %s";

/*
 * A patient's facts recomputed from all their rows (zeros when the patient
 * is gone).  Must run inside SPI.
 */
void
PrmStatsRecomputeFacts(int64 org_id, int64 patient_id, PrmStatsFacts *f)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan, psprintf(facts_sql, "p.id = $2"), 2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	memset(f, 0, sizeof(*f));
	f->revenue = NumericGetDatum(int64_to_numeric(0));
	if (PrmExecute(plan, values, NULL, false, 1) == 1)
		PrmStatsReadFacts(0, 2, f);
}

/*
 * Look a patient's appointment extremes up again (first and last visit,
 * next appointment) when a removed row may have been one of them or the
 * stored next appointment has passed: three index scans on (org_id,
 * patient_id, starts_at), each stopping at its first match.
 */
static void
StatsLookUpExtremes(int64 org_id, int64 patient_id, PrmStatsFacts *f)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	Datum			  d;

	PrmPrepare(&plan,
			   "SELECT (SELECT pg_catalog.min(x.starts_at) FROM prm.appointment x"
			   "         WHERE x.org_id = $1 AND x.patient_id = $2 AND x.status = 'fulfilled'),"
			   "       (SELECT pg_catalog.max(x.starts_at) FROM prm.appointment x"
			   "         WHERE x.org_id = $1 AND x.patient_id = $2 AND x.status = 'fulfilled'),"
			   "       (SELECT pg_catalog.min(x.starts_at) FROM prm.appointment x"
			   "         WHERE x.org_id = $1 AND x.patient_id = $2 AND x.starts_at > pg_catalog.now()"
			   "           AND x.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in'))",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	PrmExecute(plan, values, NULL, false, 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	f->has_first = !isnull;
	f->first = isnull ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	f->has_last = !isnull;
	f->last = isnull ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	f->has_next = !isnull;
	f->next = isnull ? 0 : DatumGetTimestampTz(d);
}

/* Order entries by organization, then patient. */
static int
StatsEntryCmp(const void *a, const void *b)
{
	const StatsEntry *x = (const StatsEntry *) a;
	const StatsEntry *y = (const StatsEntry *) b;

	if (x->org_id != y->org_id)
		return x->org_id < y->org_id ? -1 : 1;
	if (x->patient_id != y->patient_id)
		return x->patient_id < y->patient_id ? -1 : 1;
	return 0;
}

/* How an appointment status counts. */
static StatsStatus
StatsStatusOf(const char *s)
{
	static const char *const active[] = {"proposed", "pending", "booked", "arrived", "checked-in"};
	int						 i;

	if (strcmp(s, "fulfilled") == 0)
		return ST_FULFILLED;
	if (strcmp(s, "cancelled") == 0)
		return ST_CANCELLED;
	if (strcmp(s, "noshow") == 0)
		return ST_NOSHOW;
	if (strcmp(s, "entered-in-error") == 0)
		return ST_ERROR;
	for (i = 0; i < (int) lengthof(active); i++)
		if (strcmp(s, active[i]) == 0)
			return ST_ACTIVE;
	return ST_OTHER;
}

/* Read what the statistics need of one transition-table row; false without a patient. */
static bool
StatsReadEntry(TupleTableSlot *slot, const StatsColumns *c, int sign, StatsEntry *e)
{
	bool  isnull;
	Datum d;

	memset(e, 0, sizeof(*e));
	d = slot_getattr(slot, c->org, &isnull);
	if (isnull)
		return false;
	e->org_id = DatumGetInt64(d);
	d = slot_getattr(slot, c->patient, &isnull);
	if (isnull)
		return false;
	e->patient_id = DatumGetInt64(d);
	e->sign = sign;
	if (c->table == STATS_PATIENT)
		return true;
	d = slot_getattr(slot, c->at, &isnull);
	e->at = isnull ? 0 : DatumGetTimestampTz(d);
	if (c->table == STATS_APPOINTMENT)
	{
		d = slot_getattr(slot, c->status, &isnull);
		e->status = isnull ? ST_OTHER : StatsStatusOf(TextDatumGetCString(d));
		d = slot_getattr(slot, c->price, &isnull);
		e->has_price = !isnull;
		if (!isnull)
			e->price = datumCopy(d, false, -1);
	}
	else if (c->table == STATS_INBOUND)
	{
		d = slot_getattr(slot, c->id, &isnull);
		e->id = isnull ? 0 : DatumGetInt64(d);
	}
	else if (c->table == STATS_OUTBOUND)
	{
		char *status;

		/* capped and refused messages were never queued: they do not count */
		d = slot_getattr(slot, c->status, &isnull);
		status = isnull ? "" : TextDatumGetCString(d);
		if (strcmp(status, "capped") == 0 || strcmp(status, "refused") == 0)
			return false;
	}
	return true;
}

/* Are the old and the new row of an update the same to the statistics? */
static bool
StatsSameEntry(const StatsEntry *a, const StatsEntry *b)
{
	if (a->org_id != b->org_id || a->patient_id != b->patient_id || a->at != b->at ||
		a->status != b->status || a->has_price != b->has_price || a->id != b->id)
		return false;
	return !a->has_price ||
		   DatumGetBool(DirectFunctionCall2(numeric_eq, a->price, b->price));
}

/* Append an entry to *entries (n used, *cap allocated); the new count. */
static int
StatsPush(StatsEntry **entries, int n, int *cap, const StatsEntry *e)
{
	if (n == *cap)
	{
		*cap *= 2;
		*entries = repalloc(*entries, sizeof(StatsEntry) * *cap);
	}
	(*entries)[n] = *e;
	return n + 1;
}

/*
 * The entries of a statement: the rows of its old table removed, those of
 * its new table added.  An update's old and new tables hold its rows in
 * the same order; a pair the statistics cannot tell apart is left out.
 */
static int
StatsCollect(TriggerData *trigdata, const StatsColumns *c, StatsEntry **entries, int *cap)
{
	TupleDesc		desc = RelationGetDescr(trigdata->tg_relation);
	Tuplestorestate *olds = trigdata->tg_oldtable;
	Tuplestorestate *news = trigdata->tg_newtable;
	TupleTableSlot *oslot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	TupleTableSlot *nslot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	int				n = 0;

	if (olds)
		tuplestore_rescan(olds);
	if (news)
		tuplestore_rescan(news);
	for (;;)
	{
		bool	   has_old = olds && tuplestore_gettupleslot(olds, true, false, oslot);
		bool	   has_new = news && tuplestore_gettupleslot(news, true, false, nslot);
		StatsEntry o;
		StatsEntry w;
		bool	   ok_old;
		bool	   ok_new;

		CHECK_FOR_INTERRUPTS();
		if (!has_old && !has_new)
			break;
		ok_old = has_old && StatsReadEntry(oslot, c, -1, &o);
		ok_new = has_new && StatsReadEntry(nslot, c, 1, &w);
		if (ok_old && ok_new && StatsSameEntry(&o, &w))
			continue;
		if (ok_old)
			n = StatsPush(entries, n, cap, &o);
		if (ok_new)
			n = StatsPush(entries, n, cap, &w);
	}
	ExecDropSingleTupleTableSlot(oslot);
	ExecDropSingleTupleTableSlot(nslot);
	return n;
}

/*
 * The patients the triggers of one query applied.  Every trigger of a
 * query sees all of that query's rows (a data-modifying WITH writes
 * several tables, or one table twice, in one query), so after a recompute
 * from all rows, a difference applied by a later trigger of the same query
 * would count its rows twice, and two differences of messages would judge
 * replies each without the other's rows.  Such a patient is recomputed
 * instead.  A query is known by its transaction and the command id of its
 * snapshot, which is the active one while its AFTER triggers fire.
 */
#define MEMO_RECOMPUTED 0x1
#define MEMO_MESSAGES 0x2

typedef struct StatsMemoEntry
{
	PatientKeyData key;
	int			   flags;
} StatsMemoEntry;

static HTAB				 *stats_memo = NULL;
static MemoryContext	  stats_memo_cxt = NULL;
static LocalTransactionId stats_memo_lxid = InvalidLocalTransactionId;
static CommandId		  stats_memo_cid = InvalidCommandId;

/* The memo entry of a patient for the query whose triggers fire now. */
static StatsMemoEntry *
StatsMemo(int64 org_id, int64 patient_id)
{
	CommandId	   cid = ActiveSnapshotSet() ? GetActiveSnapshot()->curcid : InvalidCommandId;
	PatientKeyData key;
	bool		   found;
	StatsMemoEntry *e;

	if (stats_memo == NULL || stats_memo_lxid != MyProc->lxid || stats_memo_cid != cid)
	{
		HASHCTL ctl;

		if (stats_memo_cxt == NULL)
			stats_memo_cxt = AllocSetContextCreate(TopMemoryContext, "prm statistics memo",
												   ALLOCSET_SMALL_SIZES);
		MemoryContextReset(stats_memo_cxt);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(PatientKeyData);
		ctl.entrysize = sizeof(StatsMemoEntry);
		ctl.hcxt = stats_memo_cxt;
		stats_memo = hash_create("prm statistics memo", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		stats_memo_lxid = MyProc->lxid;
		stats_memo_cid = cid;
	}
	memset(&key, 0, sizeof(key));
	key.org_id = org_id;
	key.patient_id = patient_id;
	e = hash_search(stats_memo, &key, HASH_ENTER, &found);
	if (!found)
		e->flags = 0;
	return e;
}

/* Is ts the stored extreme has/at? */
#define STATS_IS(has, at, ts) ((has) && (at) == (ts))

/*
 * Apply the n entries of one patient (all of table) to their row: lock it,
 * add the difference (or recompute when a removed row may have been an
 * extreme), write it.  Returns whether a stored level or risk changed.
 */
static bool
StatsApply(StatsTable table, const StatsEntry *e, int n, PrmThresholds *t)
{
	TimestampTz	  now = GetCurrentTransactionStartTimestamp();
	PrmStatsRow	  row;
	PrmStatsFacts f;
	bool		  full;
	bool		  extremes = false;
	StatsMemoEntry *memo;
	bool		  changed;
	Datum		 *keys = palloc(sizeof(Datum) * n);
	TimestampTz	 *times = palloc(sizeof(TimestampTz) * n);
	int			  nkeys = 0;
	TimestampTz	  lo = DT_NOEND;
	TimestampTz	  hi = DT_NOBEGIN;
	int			  i;

	if (!PrmStatsLock(e->org_id, e->patient_id, &row, t))
		return false;
	f = row.f;
	memo = StatsMemo(e->org_id, e->patient_id);
	/* a new row of a patient who may already have rows; what the memo says */
	full = (!row.exists && table != STATS_PATIENT) || (memo->flags & MEMO_RECOMPUTED) ||
		   ((memo->flags & MEMO_MESSAGES) && table != STATS_APPOINTMENT && table != STATS_PATIENT);
	for (i = 0; i < n && !full; i++)
	{
		const StatsEntry *x = &e[i];

		CHECK_FOR_INTERRUPTS();
		if (table == STATS_APPOINTMENT)
		{
			if (x->status != ST_ERROR)
				f.total += x->sign;
			if (x->status == ST_CANCELLED)
				f.cancelled += x->sign;
			if (x->status == ST_NOSHOW)
				f.noshow += x->sign;
			if (x->status == ST_FULFILLED)
			{
				f.completed += x->sign;
				if (x->has_price)
					f.revenue = DirectFunctionCall2(x->sign > 0 ? numeric_add : numeric_sub,
													f.revenue, x->price);
				if (x->sign < 0)
					extremes |= STATS_IS(row.f.has_first, row.f.first, x->at) ||
								STATS_IS(row.f.has_last, row.f.last, x->at);
				else
				{
					if (!f.has_first || x->at < f.first)
						f.first = x->at;
					if (!f.has_last || x->at > f.last)
						f.last = x->at;
					f.has_first = f.has_last = true;
				}
			}
			if (x->status == ST_ACTIVE && x->at > now)
			{
				if (x->sign < 0)
					extremes |= STATS_IS(row.f.has_next, row.f.next, x->at);
				else if (!f.has_next || x->at < f.next)
				{
					f.next = x->at;
					f.has_next = true;
				}
			}
		}
		else if (table == STATS_OUTBOUND || table == STATS_INBOUND)
		{
			/* a removed message: its replies are not worth undoing by hand */
			if (x->sign < 0)
			{
				full = true;
				break;
			}
			if (table == STATS_OUTBOUND)
			{
				f.out_n++;
				if (!f.has_out_at || x->at > f.out_at)
					f.out_at = x->at;
				f.has_out_at = true;
				keys[nkeys++] = TimestampTzGetDatum(x->at);
			}
			else
			{
				f.in_n++;
				if (!f.has_in_at || x->at > f.in_at)
					f.in_at = x->at;
				f.has_in_at = true;
				times[nkeys] = x->at;
				keys[nkeys++] = Int64GetDatum(x->id);
			}
			lo = Min(lo, x->at);
			hi = Max(hi, x->at);
		}
	}
	if (full)
		PrmStatsRecomputeFacts(e->org_id, e->patient_id, &f);
	else
	{
		/* extremes are idempotent: a look-up may see rows still to be applied */
		if (extremes || (f.has_next && f.next <= now))
			StatsLookUpExtremes(e->org_id, e->patient_id, &f);
		if (nkeys > 0 && table == STATS_OUTBOUND && row.f.in_n > 0 &&
			row.f.has_in_at && row.f.in_at >= lo)
			f.replied += PrmStatsRepliedOutbound(e->org_id, e->patient_id, keys, nkeys);
		else if (nkeys > 0 && table == STATS_INBOUND && f.out_n > 0 &&
				 f.has_out_at && f.out_at > lo - 48 * USECS_PER_HOUR)
		{
			int32 more = PrmStatsRepliedByInboundDirect(e->org_id, e->patient_id, lo, hi, keys,
													 times, nkeys);

			f.replied += more >= 0 ? more
								   : PrmStatsRepliedByInbound(e->org_id, e->patient_id, lo, hi,
														   keys, nkeys);
		}
	}
	pfree(keys);
	pfree(times);
	if (full)
		memo->flags |= MEMO_RECOMPUTED;
	if (table == STATS_OUTBOUND || table == STATS_INBOUND)
		memo->flags |= MEMO_MESSAGES;
	changed = PrmStatsWrite(e->org_id, e->patient_id, &row, &f, t);
	/* a statement may touch many patients: their rows' copies go now */
	if (row.tuple != NULL)
		heap_freetuple(row.tuple);
	return changed;
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
 * AFTER ... FOR EACH STATEMENT trigger with transition tables: apply the
 * statement's difference to every patient it touched, once each, in
 * (org_id, patient_id) order.  The trigger's argument names the column
 * holding the patient's id.
 */
Datum
prm_patient_stats_trigger(PG_FUNCTION_ARGS)
{
	TriggerData	 *trigdata = (TriggerData *) fcinfo->context;
	Relation	  rel;
	const char	 *relname;
	StatsColumns  c;
	StatsEntry	 *entries;
	PrmThresholds t;
	int			  cap = 16;
	int			  n;
	int			  i;
	int			  j;
	int			  changed = 0;

	StatsCheckTrigger(fcinfo);
	if (StatsIsArchiveMove(trigdata))
		return PointerGetDatum(NULL);
	rel = trigdata->tg_relation;
	relname = RelationGetRelationName(rel);
	memset(&c, 0, sizeof(c));
	c.org = StatsBigintColumn(rel, "org_id");
	c.patient = StatsBigintColumn(rel, trigdata->tg_trigger->tgargs[0]);
	if (strcmp(relname, "patient") == 0)
		c.table = STATS_PATIENT;
	else if (strcmp(relname, "appointment") == 0)
	{
		c.table = STATS_APPOINTMENT;
		c.status = SPI_fnumber(RelationGetDescr(rel), "status");
		c.at = SPI_fnumber(RelationGetDescr(rel), "starts_at");
		c.price = SPI_fnumber(RelationGetDescr(rel), "price");
	}
	else if (strcmp(relname, "inbound_message") == 0)
	{
		c.table = STATS_INBOUND;
		c.at = SPI_fnumber(RelationGetDescr(rel), "received_at");
		c.id = StatsBigintColumn(rel, "id");
	}
	else
	{
		c.table = STATS_OUTBOUND;
		c.at = SPI_fnumber(RelationGetDescr(rel), "created_at");
		c.status = SPI_fnumber(RelationGetDescr(rel), "status");
	}

	entries = palloc(sizeof(StatsEntry) * cap);
	n = StatsCollect(trigdata, &c, &entries, &cap);
	if (n == 0)
		return PointerGetDatum(NULL);
	qsort(entries, n, sizeof(StatsEntry), StatsEntryCmp);

	PrmSpiConnect();
	if (!PrmStatsTallyInstalled())
	{
		/* a 0.2.0 schema: recompute as 0.2.0 did until the update */
		int64 *orgs = palloc(sizeof(int64) * n);
		int64 *patients = palloc(sizeof(int64) * n);

		for (i = 0; i < n; i++)
		{
			orgs[i] = entries[i].org_id;
			patients[i] = entries[i].patient_id;
		}
		changed = PrmStatsLegacyRecompute(orgs, patients, n);
		n = 0;
	}
	for (i = 0; i < n; i = j)
	{
		for (j = i + 1; j < n && StatsEntryCmp(&entries[i], &entries[j]) == 0; j++)
			;
		if (StatsApply(c.table, &entries[i], j - i, &t))
			changed++;
	}
	PrmSpiFinish();
	if (changed > 0)
		PrmNotifyOnce("prm_patient_risk");
	pfree(entries);
	return PointerGetDatum(NULL);
}

/*
 * prm.rebuild_patient_stats(org_id) RETURNS bigint
 *	  Throw the organization's statistics and tally away and compute them
 *	  again from the rows.
 */
Datum
prm_rebuild_patient_stats(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr delete_plan = NULL;
	static SPIPlanPtr tally_plan = NULL;
	static SPIPlanPtr all_plan = NULL;
	static SPIPlanPtr make_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Datum			  values[1];
	PrmThresholds	  t;
	PrmStatsFacts	 *facts;
	int64			 *ids;
	int				  patients;
	int				  i;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	if (!PrmStatsTallyInstalled())
	{
		patients = PrmStatsLegacyRebuild(org_id);
		PrmEmitEvent(org_id, "patient_stats_rebuilt", "organization", org_id,
					 psprintf("{\"patients\": %d}", patients));
		PrmSpiFinish();
		PG_RETURN_INT64(patients);
	}
	PrmPrepare(&delete_plan, "DELETE FROM prm.patient_stats s WHERE s.org_id = $1",
			   1, (Oid[]){INT8OID});
	PrmPrepare(&tally_plan, "DELETE FROM prm.reengagement_tally t WHERE t.org_id = $1",
			   1, (Oid[]){INT8OID});
	PrmPrepare(&all_plan, psprintf(facts_sql, "true"), 1, (Oid[]){INT8OID});
	PrmPrepare(&make_plan,
			   "INSERT INTO prm.patient_stats (org_id, patient_id, engagement_level, churn_risk)"
			   " SELECT p.org_id, p.id, 'disengaged', 'low' FROM prm.patient p WHERE p.org_id = $1"
			   " ON CONFLICT (org_id, patient_id) DO NOTHING",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	PrmExecute(delete_plan, values, NULL, false, 0);
	PrmExecute(tally_plan, values, NULL, false, 0);
	PrmTallyForget(org_id);
	patients = PrmExecute(all_plan, values, NULL, false, 0);
	facts = palloc(sizeof(PrmStatsFacts) * (patients + 1));
	ids = palloc(sizeof(int64) * (patients + 1));
	for (i = 0; i < patients; i++)
	{
		bool isnull;

		ids[i] = PrmGetInt64(i, 1, &isnull);
		PrmStatsReadFacts(i, 2, &facts[i]);
	}
	/* every row made at once, then each written as new (contributing nothing yet) */
	PrmExecute(make_plan, values, NULL, false, 0);
	PrmLoadThresholds(org_id, &t);
	for (i = 0; i < patients; i++)
	{
		PrmStatsRow row;

		CHECK_FOR_INTERRUPTS();
		memset(&row, 0, sizeof(row));
		row.f.revenue = row.horizon_value = row.lifetime_value =
			NumericGetDatum(int64_to_numeric(0));
		(void) PrmStatsWrite(org_id, ids[i], &row, &facts[i], &t);
	}
	PrmEmitEvent(org_id, "patient_stats_rebuilt", "organization", org_id,
				 psprintf("{\"patients\": %d}", patients));
	PrmSpiFinish();
	PG_RETURN_INT64(patients);
}
