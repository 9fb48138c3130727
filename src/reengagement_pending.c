/*-------------------------------------------------------------------------
 *
 * reengagement_pending.c
 *	  The differences a transaction makes to prm.reengagement_tally, kept
 *	  in memory and written once per organization at commit.
 *
 * Every write of a statistics row changes what it contributes to its
 * organization's summary.  Adding each difference to the tally row at
 * once would update one row as many times as the transaction writes
 * statistics: every update of a row the transaction itself updated walks
 * the chain of its earlier versions (none can be pruned before commit),
 * so a bulk statement, a sync or a rebuild of N patients would cost N^2.
 * Instead the differences are summed here, per organization and per
 * subtransaction level (an aborted subtransaction's are dropped, a
 * committed one's pass to its parent), and written at PRE_COMMIT (or
 * PRE_PREPARE) with one upsert per organization into the slot of this
 * backend.  Until then the summary adds this backend's pending sums to
 * what it reads (PrmTallyPending), so a transaction sees its own writes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "prm.h"
#include "reengagement.h"

/* one organization's pending sums at one subtransaction level */
typedef struct TallyPendingEntry
{
	int64 org_id;
	int	  level;
	int64 counts[PRM_TALLY_COUNTS];
	Datum sums[PRM_TALLY_SUMS]; /* numeric, in TopTransactionContext */
} TallyPendingEntry;

static TallyPendingEntry *pending = NULL;
static int				  npending = 0;
static int				  cappending = 0;
static bool				  callbacks_registered = false;

static void TallyXactCallback(XactEvent event, void *arg);
static void TallySubXactCallback(SubXactEvent event, SubTransactionId mySubid,
								 SubTransactionId parentSubid, void *arg);

/* Forget everything (the transaction ended; its memory is gone). */
static void
TallyReset(void)
{
	pending = NULL;
	npending = 0;
	cappending = 0;
}

/*
 * Add one write's difference for org_id: counts (patients, the four
 * levels, the four risks, no upcoming appointment) and numeric sums (value
 * at risk, lifetime value, revenue).
 */
void
PrmTallyAdd(int64 org_id, const int64 *counts, const Datum *sums)
{
	int				   level = GetCurrentTransactionNestLevel();
	MemoryContext	   old;
	TallyPendingEntry *e;
	int				   i;

	if (!callbacks_registered)
	{
		RegisterXactCallback(TallyXactCallback, NULL);
		RegisterSubXactCallback(TallySubXactCallback, NULL);
		callbacks_registered = true;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	if (npending > 0 && pending[npending - 1].org_id == org_id &&
		pending[npending - 1].level == level)
		e = &pending[npending - 1];
	else
	{
		if (npending == cappending)
		{
			cappending = cappending ? cappending * 2 : 8;
			pending = pending ? repalloc(pending, sizeof(TallyPendingEntry) * cappending)
							  : palloc(sizeof(TallyPendingEntry) * cappending);
		}
		e = &pending[npending++];
		memset(e, 0, sizeof(*e));
		e->org_id = org_id;
		e->level = level;
		for (i = 0; i < PRM_TALLY_SUMS; i++)
			e->sums[i] = NumericGetDatum(int64_to_numeric(0));
	}
	for (i = 0; i < PRM_TALLY_COUNTS; i++)
		e->counts[i] += counts[i];
	for (i = 0; i < PRM_TALLY_SUMS; i++)
		e->sums[i] = DirectFunctionCall2(numeric_add, e->sums[i], sums[i]);
	MemoryContextSwitchTo(old);
}

/*
 * This backend's pending sums for org_id (zeros when none), in the
 * caller's memory.
 */
void
PrmTallyPending(int64 org_id, int64 *counts, Datum *sums)
{
	int i;
	int k;

	memset(counts, 0, sizeof(int64) * PRM_TALLY_COUNTS);
	for (k = 0; k < PRM_TALLY_SUMS; k++)
		sums[k] = NumericGetDatum(int64_to_numeric(0));
	for (i = 0; i < npending; i++)
	{
		if (pending[i].org_id != org_id)
			continue;
		for (k = 0; k < PRM_TALLY_COUNTS; k++)
			counts[k] += pending[i].counts[k];
		for (k = 0; k < PRM_TALLY_SUMS; k++)
			sums[k] = DirectFunctionCall2(numeric_add, sums[k], pending[i].sums[k]);
	}
}

/* Drop the pending sums of org_id (a rebuild starts its tally over). */
void
PrmTallyForget(int64 org_id)
{
	int i;
	int n = 0;

	for (i = 0; i < npending; i++)
		if (pending[i].org_id != org_id)
			pending[n++] = pending[i];
	npending = n;
}

/* The owner of prm.reengagement_tally (the extension's owner). */
static Oid
TallyOwner(void)
{
	Oid		  rel = get_relname_relid("reengagement_tally", get_namespace_oid("prm", false));
	HeapTuple tp;
	Oid		  owner;

	if (!OidIsValid(rel))
		elog(ERROR, "prm.reengagement_tally does not exist");
	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(rel));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for relation %u", rel);
	owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	ReleaseSysCache(tp);
	return owner;
}

/*
 * Write the pending sums, one upsert per organization into this backend's
 * slot; organizations deleted meanwhile are skipped (their tally went with
 * them).
 */
static void
TallyFlush(void)
{
	static SPIPlanPtr plan = NULL;
	int64			 *orgs;
	int				  norgs = 0;
	int				  i;
	int				  j;
	Oid				  save_userid;
	int				  save_sec;

	if (npending == 0)
		return;
	orgs = palloc(sizeof(int64) * npending);
	for (i = 0; i < npending; i++)
	{
		for (j = 0; j < norgs && orgs[j] != pending[i].org_id; j++)
			;
		if (j == norgs)
			orgs[norgs++] = pending[i].org_id;
	}
	/*
	 * At commit the current user is the session's again, not the owner of
	 * the SECURITY DEFINER function whose writes made these sums (a webhook
	 * role may not write the tally): write as the tally's owner.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(TallyOwner(), save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	PushActiveSnapshot(GetTransactionSnapshot());
	PrmSpiConnect();
	PrmPrepare(&plan,
			   PRM_TALLY_INSERT
			   " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15"
			   "  WHERE EXISTS (SELECT 1 FROM prm.organization g WHERE g.id = $1)" PRM_TALLY_ADD,
			   15,
			   (Oid[]){INT8OID, INT4OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
					   INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, NUMERICOID, NUMERICOID,
					   NUMERICOID});
	for (i = 0; i < norgs; i++)
	{
		Datum v[15];
		int64 counts[PRM_TALLY_COUNTS];
		Datum sums[PRM_TALLY_SUMS];
		int	  k;

		PrmTallyPending(orgs[i], counts, sums);
		v[0] = Int64GetDatum(orgs[i]);
		v[1] = Int32GetDatum(MyBackendId);
		for (k = 0; k < PRM_TALLY_COUNTS; k++)
			v[2 + k] = Int64GetDatum(counts[k]);
		for (k = 0; k < PRM_TALLY_SUMS; k++)
			v[2 + PRM_TALLY_COUNTS + k] = sums[k];
		PrmExecute(plan, v, NULL, false, 0);
	}
	PrmSpiFinish();
	PopActiveSnapshot();
	SetUserIdAndSecContext(save_userid, save_sec);
	npending = 0;
}

/* Write at commit (or prepare); forget when the transaction is over. */
static void
TallyXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			TallyFlush();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			TallyReset();
			break;
		default:
			break;
	}
}

/* An aborted subtransaction's sums go; a committed one's pass to its parent. */
static void
TallySubXactCallback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	int level = GetCurrentTransactionNestLevel();
	int i;
	int n = 0;

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		for (i = 0; i < npending; i++)
			if (pending[i].level < level)
				pending[n++] = pending[i];
		npending = n;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (i = 0; i < npending; i++)
			if (pending[i].level >= level)
				pending[i].level = level - 1;
	}
}
