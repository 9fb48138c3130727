/*-------------------------------------------------------------------------
 *
 * fill_sweep.c
 *	  The fill engine's sweeps, run by the jobs: expiring offers whose hold
 *	  ended (prm.expire_offers) and sending batches whose delay is over, each
 *	  slot in a subtransaction of its own (FillGuarded), so one failing slot
 *	  is logged and skipped while the others go on.
 *
 * Sweeps (expiry, due batches) take the slot with SKIP LOCKED and come back
 * for a slot that is busy being claimed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "fill.h"

PG_FUNCTION_INFO_V1(prm_expire_offers);

/* the first error a guarded slot hit in this transaction, for prm.job_run */
static char				 *fill_slot_error = NULL;
static LocalTransactionId fill_slot_error_lxid = InvalidLocalTransactionId;

/*
 * The first per-slot error of the current transaction's sweeps since the
 * last call, or NULL; the error is forgotten once taken.
 */
const char *
PrmFillTakeSweepError(void)
{
	const char *error = NULL;

	if (fill_slot_error_lxid == MyProc->lxid)
		error = fill_slot_error;
	fill_slot_error_lxid = InvalidLocalTransactionId;
	return error;
}

typedef struct FillGuardedArg
{
	int (*fn)(int64 org_id, int64 slot_id, TimestampTz as_of);
	int64		org_id;
	int64		slot_id;
	TimestampTz as_of;
} FillGuardedArg;

/* Call a FillGuarded step (for PrmRunInSubtransaction). */
static int64
FillGuardedCall(void *arg)
{
	FillGuardedArg *g = (FillGuardedArg *) arg;

	return g->fn(g->org_id, g->slot_id, g->as_of);
}

/*
 * Run a sweep's work on one slot in a subtransaction of its own: a slot
 * that fails (say, its organization's template cannot be rendered) is rolled
 * back alone, logged and remembered, and the sweep goes on with the other
 * slots and organizations.  Returns fn's result, or 0 after an error.
 */
static int
FillGuarded(int (*fn)(int64 org_id, int64 slot_id, TimestampTz as_of),
			int64 org_id, int64 slot_id, TimestampTz as_of)
{
	FillGuardedArg arg = {fn, org_id, slot_id, as_of};
	ErrorData	  *edata;
	int64		   result = 0;

	edata = PrmRunInSubtransaction(FillGuardedCall, &arg, &result);
	if (edata == NULL)
		return (int) result;
	ereport(WARNING,
			(errmsg("prm: slot %lld of organization %lld was skipped: %s",
					(long long) slot_id, (long long) org_id, edata->message),
			 edata->detail ? errdetail("%s", edata->detail) : 0,
			 errhint("The other slots were processed; this one is tried again on the next run.")));
	if (fill_slot_error_lxid != MyProc->lxid)
	{
		if (fill_slot_error != NULL)
			pfree(fill_slot_error);
		fill_slot_error = MemoryContextStrdup(TopMemoryContext,
											  psprintf("slot %lld of organization %lld: %s",
													   (long long) slot_id, (long long) org_id,
													   edata->message));
		fill_slot_error_lxid = MyProc->lxid;
	}
	FreeErrorData(edata);
	return 0;
}

/* Expire one slot's overdue offers and move it on (a FillGuarded step). */
static int
FillExpireSlot(int64 org_id, int64 slot_id, TimestampTz as_of)
{
	static SPIPlanPtr expire_plan = NULL;
	FillSlot		  slot;
	Datum			  values[3];
	int				  k;

	/* a slot being claimed right now is left for the next sweep */
	if (!FillLockSlot(org_id, slot_id, true, &slot))
		return 0;
	PrmPrepare(&expire_plan,
			   "UPDATE prm.offer o SET status = 'expired'"
			   " WHERE o.org_id = $1 AND o.slot_id = $2 AND o.status = 'open' AND o.hold_until <= $3",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	values[2] = TimestampTzGetDatum(as_of);
	k = PrmExecute(expire_plan, values, NULL, false, 0);
	if (k > 0)
	{
		FillCancelClosedOfferMessages(org_id, slot_id);
		PrmEmitEvent(org_id, "offers_expired", "slot", slot_id,
					 psprintf("{\"offers\": %d}", k));
	}
	FillAdvance(org_id, slot_id);
	return k;
}

/* Send a delayed batch (a FillGuarded step). */
static int
FillDueBatch(int64 org_id, int64 slot_id, TimestampTz as_of)
{
	return FillSendBatch(org_id, slot_id);
}

/* Copy n (org_id, slot_id) result rows out, before other queries run. */
static void
FillReadSlotIds(int n, int64 **org_ids, int64 **slot_ids)
{
	int	 i;
	bool isnull;

	*org_ids = palloc(sizeof(int64) * (n + 1));
	*slot_ids = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		(*org_ids)[i] = PrmGetInt64(i, 1, &isnull);
		(*slot_ids)[i] = PrmGetInt64(i, 2, &isnull);
	}
}

/*
 * Expire open offers whose hold ended by as_of, slot by slot (at most limit
 * slots), and send the next batch where a slot has no open offer left.
 * orgs (norgs of them) limits it to some organizations; NULL: all.
 */
int
PrmExpireOffers(TimestampTz as_of, Datum *orgs, int norgs, int limit)
{
	static SPIPlanPtr find_plan = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	int				  n,
		i,
		expired = 0;
	int64 *org_ids;
	int64 *slot_ids;

	if (!FillInstalled())
		return 0;
	PrmPrepare(&find_plan,
			   "SELECT DISTINCT o.org_id, o.slot_id FROM prm.offer o"
			   " WHERE o.status = 'open' AND o.hold_until <= $1"
			   "   AND ($2::bigint[] IS NULL OR o.org_id = ANY ($2::bigint[]))"
			   " LIMIT $3",
			   3, (Oid[]){TIMESTAMPTZOID, INT8ARRAYOID, INT4OID});
	values[0] = TimestampTzGetDatum(as_of);
	if (orgs)
		values[1] = PointerGetDatum(construct_array(orgs, norgs, INT8OID, 8, true, TYPALIGN_DOUBLE));
	else
		nulls[1] = 'n';
	values[2] = Int32GetDatum(limit);
	n = PrmExecute(find_plan, values, nulls, false, 0);
	FillReadSlotIds(n, &org_ids, &slot_ids);

	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		expired += FillGuarded(FillExpireSlot, org_ids[i], slot_ids[i], as_of);
	}
	return expired;
}

/* Send first batches whose delay is over (at most limit slots). */
int
PrmSendDueBatches(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	int				  n,
		i,
		sent = 0;
	int64 *org_ids;
	int64 *slot_ids;

	if (!FillInstalled())
		return 0;
	PrmPrepare(&plan,
			   "SELECT s.org_id, s.id FROM prm.slot s"
			   " WHERE s.fill_status = 'pending' AND s.next_batch_at <= pg_catalog.now()"
			   " ORDER BY s.next_batch_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	n = PrmExecute(plan, values, NULL, false, 0);
	FillReadSlotIds(n, &org_ids, &slot_ids);
	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		sent += FillGuarded(FillDueBatch, org_ids[i], slot_ids[i], 0);
	}
	return sent;
}

/*
 * prm.expire_offers(as_of timestamptz) RETURNS int
 */
Datum
prm_expire_offers(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr orgs_plan = NULL;
	TimestampTz		  as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(0, "as_of");
	Datum			 *orgs = NULL;
	int				  norgs = 0;
	int				  expired;

	PrmSpiConnect();
	if (!PrmCallerIsPrivileged())
	{
		Datum values[1];
		int	  i;
		bool  isnull;

		/* a staff role expires its own organizations' offers only */
		PrmPrepare(&orgs_plan,
				   "SELECT a.org_id FROM prm.org_access a"
				   " WHERE a.level IN ('admin', 'staff')"
				   "   AND pg_catalog.pg_has_role($1, a.role_id, 'USAGE')",
				   1, (Oid[]){OIDOID});
		values[0] = ObjectIdGetDatum(GetOuterUserId());
		norgs = PrmExecute(orgs_plan, values, NULL, false, 0);
		if (norgs == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to expire offers"),
					 errhint("It needs the staff level on an organization.")));
		orgs = palloc(sizeof(Datum) * norgs);
		for (i = 0; i < norgs; i++)
			orgs[i] = Int64GetDatum(PrmGetInt64(i, 1, &isnull));
	}
	expired = PrmExpireOffers(as_of, orgs, norgs, 1000);
	PrmSpiFinish();
	PG_RETURN_INT32(expired);
}
