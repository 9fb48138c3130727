/*-------------------------------------------------------------------------
 *
 * reengagement_replies.c
 *	  How many of a patient's outbound messages an inbound message answers
 *	  (one sent in the 48 hours before it, answered by no other), for the
 *	  statistics triggers of reengagement_stats.c: by a statement, or by
 *	  direct scans of the (org_id, patient_id, time) indexes.
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

/* An int8[] or timestamptz[] of n values. */
static Datum
StatsArray(Datum *values, int n, Oid type)
{
	return PointerGetDatum(construct_array(values, n, type, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * How many more outbound messages of the patient are answered now that
 * inbound messages ids (received from lo to hi) were added: those sent in
 * the 48 hours before one of them and answered by no other.
 */
int32
PrmStatsRepliedByInbound(int64 org_id, int64 patient_id, TimestampTz lo, TimestampTz hi,
						 Datum *ids, int n)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[5];
	bool			  isnull;

#define STATS_REPLY_WINDOW(table)                                                        \
	"SELECT m0.created_at FROM " table " m0 WHERE m0.org_id = $1 AND m0.patient_id = $2" \
	"   AND m0.created_at > $3 - interval '48 hours' AND m0.created_at <= $4"            \
	"   AND m0.status NOT IN ('capped', 'refused')"
#define STATS_ANSWERED(cond)                                                         \
	"(SELECT 1 FROM prm.inbound_message y WHERE y.org_id = $1 AND y.patient_id = $2" \
	"   AND y.received_at >= m.created_at"                                           \
	"   AND y.received_at < m.created_at + interval '48 hours' AND " cond ")"
	PrmPrepare(&plan,
			   "SELECT pg_catalog.count(*)::int FROM (" STATS_REPLY_WINDOW("prm.outbound_message") " UNION ALL " STATS_REPLY_WINDOW("prm.outbound_message_history") ") m"
																																									" WHERE EXISTS " STATS_ANSWERED("y.id = ANY ($5)") "   AND NOT EXISTS " STATS_ANSWERED("y.id <> ALL ($5)"),
			   5, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8ARRAYOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = TimestampTzGetDatum(lo);
	values[3] = TimestampTzGetDatum(hi);
	values[4] = StatsArray(ids, n, INT8OID);
	PrmExecute(plan, values, NULL, false, 1);
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * PrmStatsRepliedByInbound without statements: the same count from direct
 * scans of the (org_id, patient_id, time) indexes of the two outbound
 * tables and prm.inbound_message, for the single-row inserts of inbound
 * messages that arrive one at a time (through SQL, the reply check cost
 * more than the rest of the trigger).  The n new messages (ids, received
 * at times) answer an outbound message sent at m when one of them came in
 * [m, m + 48 hours); it becomes replied when no other inbound message of
 * the patient did.  Returns -1 when an index is missing (an older schema):
 * the caller asks SQL.
 */
#define REPLY_WINDOW_USECS (48 * USECS_PER_HOUR)
#define REPLY_MAX_CANDIDATES 64

/*
 * Open prm.<table> and find prm.<index>, with the heap column numbers of
 * org_id, patient_id and the time column (keys[0..2].sk_attno, for the
 * caller's scan keys); NULL when either is missing.
 */
static Relation
StatsScanOpen(const char *table, const char *index, const char *time_column, Oid *idx,
			  AttrNumber *att)
{
	Oid		  nsp = get_namespace_oid("prm", false);
	Oid		  relid = get_relname_relid(table, nsp);
	Relation  rel;
	TupleDesc desc;

	*idx = get_relname_relid(index, nsp);
	if (!OidIsValid(relid) || !OidIsValid(*idx))
		return NULL;
	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	att[0] = SPI_fnumber(desc, "org_id");
	att[1] = SPI_fnumber(desc, "patient_id");
	att[2] = SPI_fnumber(desc, time_column);
	att[3] = SPI_fnumber(desc, strcmp(table, "inbound_message") == 0 ? "id" : "status");
	return rel;
}

int32
PrmStatsRepliedByInboundDirect(int64 org_id, int64 patient_id, TimestampTz lo, TimestampTz hi,
							   const Datum *ids, const TimestampTz *times, int n)
{
	static const char *const outbound[2][2] = {
		{"outbound_message", "outbound_message_patient_idx"},
		{"outbound_message_history", "outbound_message_history_patient_idx"}};
	TimestampTz candidates[REPLY_MAX_CANDIDATES];
	bool		answered[REPLY_MAX_CANDIDATES];
	int			ncand = 0;
	int32		replied = 0;
	Snapshot	snap;
	ScanKeyData keys[4];
	SysScanDesc scan;
	Relation	rel;
	Oid			idx;
	AttrNumber	att[4];
	HeapTuple	tup;
	TimestampTz first = DT_NOEND;
	TimestampTz last = DT_NOBEGIN;
	bool		isnull;
	int			k;
	int			i;
	int			j;

	/* see the rows of this statement, as a statement of it would */
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetTransactionSnapshot());
	/* the outbound messages sent in the 48 hours before a new message */
	for (k = 0; k < 2; k++)
	{
		rel = StatsScanOpen(outbound[k][0], outbound[k][1], "created_at", &idx, att);
		if (rel == NULL)
		{
			UnregisterSnapshot(snap);
			return -1;
		}
		ScanKeyInit(&keys[0], att[0], BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(org_id));
		ScanKeyInit(&keys[1], att[1], BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(patient_id));
		ScanKeyInit(&keys[2], att[2], BTGreaterStrategyNumber, F_TIMESTAMPTZ_GT,
					TimestampTzGetDatum(lo - REPLY_WINDOW_USECS));
		ScanKeyInit(&keys[3], att[2], BTLessEqualStrategyNumber, F_TIMESTAMPTZ_LE,
					TimestampTzGetDatum(hi));
		scan = systable_beginscan(rel, idx, true, snap, 4, keys);
		while (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			Datum		d = heap_getattr(tup, att[3], RelationGetDescr(rel), &isnull);
			char	   *status = isnull ? "" : TextDatumGetCString(d);
			TimestampTz m;
			bool		by_new = false;

			CHECK_FOR_INTERRUPTS();
			/* capped and refused messages were never queued: they do not count */
			if (strcmp(status, "capped") == 0 || strcmp(status, "refused") == 0)
				continue;
			d = heap_getattr(tup, att[2], RelationGetDescr(rel), &isnull);
			if (isnull)
				continue;
			m = DatumGetTimestampTz(d);
			for (i = 0; i < n && !by_new; i++)
				by_new = times[i] >= m && times[i] < m + REPLY_WINDOW_USECS;
			if (!by_new)
				continue;
			if (ncand == REPLY_MAX_CANDIDATES)
			{
				/* unusually many: SQL counts them */
				systable_endscan(scan);
				table_close(rel, NoLock);
				UnregisterSnapshot(snap);
				return -1;
			}
			answered[ncand] = false;
			candidates[ncand++] = m;
			first = Min(first, m);
			last = Max(last, m);
		}
		systable_endscan(scan);
		table_close(rel, NoLock);
	}
	if (ncand > 0)
	{
		/* which of them another inbound message of the patient answered already */
		rel = StatsScanOpen("inbound_message", "inbound_message_patient_idx", "received_at", &idx,
							att);
		if (rel == NULL)
		{
			UnregisterSnapshot(snap);
			return -1;
		}
		ScanKeyInit(&keys[0], att[0], BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(org_id));
		ScanKeyInit(&keys[1], att[1], BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(patient_id));
		ScanKeyInit(&keys[2], att[2], BTGreaterEqualStrategyNumber, F_TIMESTAMPTZ_GE,
					TimestampTzGetDatum(first));
		ScanKeyInit(&keys[3], att[2], BTLessStrategyNumber, F_TIMESTAMPTZ_LT,
					TimestampTzGetDatum(last + REPLY_WINDOW_USECS));
		scan = systable_beginscan(rel, idx, true, snap, 4, keys);
		while (HeapTupleIsValid(tup = systable_getnext(scan)))
		{
			Datum		d = heap_getattr(tup, att[3], RelationGetDescr(rel), &isnull);
			int64		id = isnull ? 0 : DatumGetInt64(d);
			TimestampTz y;
			bool		is_new = false;

			CHECK_FOR_INTERRUPTS();
			d = heap_getattr(tup, att[2], RelationGetDescr(rel), &isnull);
			if (isnull)
				continue;
			y = DatumGetTimestampTz(d);
			for (i = 0; i < n && !is_new; i++)
				is_new = DatumGetInt64(ids[i]) == id;
			if (is_new)
				continue;
			for (j = 0; j < ncand; j++)
				if (y >= candidates[j] && y < candidates[j] + REPLY_WINDOW_USECS)
					answered[j] = true;
		}
		systable_endscan(scan);
		table_close(rel, NoLock);
		for (j = 0; j < ncand; j++)
			if (!answered[j])
				replied++;
	}
	UnregisterSnapshot(snap);
	return replied;
}

/* How many of the added outbound messages (sent at times) are already answered. */
int32
PrmStatsRepliedOutbound(int64 org_id, int64 patient_id, Datum *times, int n)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;

	PrmPrepare(&plan,
			   "SELECT pg_catalog.count(*)::int FROM pg_catalog.unnest($3::timestamptz[]) m(created_at)"
			   " WHERE EXISTS " STATS_ANSWERED("true"),
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZARRAYOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = StatsArray(times, n, TIMESTAMPTZOID);
	PrmExecute(plan, values, NULL, false, 1);
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}
