/*-------------------------------------------------------------------------
 *
 * fill_sweep.c
 *	  The fill engine's sweeps, run by the jobs: expiring offers whose hold
 *	  ended (prm.expire_offers) and sending batches whose delay is over,
 *	  through the loop helper (loop.c), so one failing slot is rolled back,
 *	  logged and backed off alone while the others go on.
 *
 * Sweeps lock the slots they pick with SKIP LOCKED in the query that picks
 * them: a slot busy being claimed is passed over without taking a place of
 * the sweep's limit, and comes back in the next sweep.
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

	if (fill_slot_error_lxid == PrmCurrentLxid())
		error = fill_slot_error;
	fill_slot_error_lxid = InvalidLocalTransactionId;
	return error;
}

/* The slots a sweep works through, and what it does to each. */
typedef struct FillSweep
{
	int (*fn)(int64 org_id, int64 slot_id, TimestampTz as_of);
	bool		retry_by_batch; /* back off by next_batch_at, not sweep_retry_at */
	TimestampTz as_of;
	int64	   *org_ids;
	int64	   *slot_ids;
} FillSweep;

/* One slot of a sweep (a PrmItemLoop item). */
static int64
FillSweepItem(void *ctx, int i)
{
	FillSweep *sw = (FillSweep *) ctx;

	return sw->fn(sw->org_ids[i], sw->slot_ids[i], sw->as_of);
}

/*
 * A slot of a sweep failed (say, its organization's template cannot be
 * rendered) and was rolled back alone: log it, remember the first error of
 * the transaction for prm.job_run, and back that slot off alone -- 5 s,
 * doubling with each failure in a row, at most an hour -- so that it neither
 * fails in every sweep nor keeps the worker's deadline in the past.
 */
static void
FillSweepFailed(void *ctx, int i, ErrorData *edata)
{
	static SPIPlanPtr plan = NULL;
	FillSweep		 *sw = (FillSweep *) ctx;
	int64			  org_id = sw->org_ids[i];
	int64			  slot_id = sw->slot_ids[i];
	Datum			  values[3];

	ereport(WARNING,
			(errmsg("prm: slot %lld of organization %lld was skipped: %s",
					(long long) slot_id, (long long) org_id, edata->message),
			 edata->detail ? errdetail("%s", edata->detail) : 0,
			 errhint("The other slots were processed; this one is tried again after a back-off.")));
	if (fill_slot_error_lxid != PrmCurrentLxid())
	{
		if (fill_slot_error != NULL)
			pfree(fill_slot_error);
		fill_slot_error = MemoryContextStrdup(TopMemoryContext,
											  psprintf("slot %lld of organization %lld: %s",
													   (long long) slot_id, (long long) org_id,
													   edata->message));
		fill_slot_error_lxid = PrmCurrentLxid();
	}

	PrmSpiConnect();
	PrmPrepare(&plan,
			   "UPDATE prm.slot s SET sweep_failures = s.sweep_failures + 1,"
			   "       sweep_retry_at = pg_catalog.now() + pg_catalog.make_interval("
			   "           secs => LEAST(3600, 5 * 2 ^ LEAST(s.sweep_failures, 10))),"
			   "       next_batch_at = CASE WHEN $3 THEN pg_catalog.now() + pg_catalog.make_interval("
			   "           secs => LEAST(3600, 5 * 2 ^ LEAST(s.sweep_failures, 10))) ELSE s.next_batch_at END"
			   " WHERE s.org_id = $1 AND s.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	values[2] = BoolGetDatum(sw->retry_by_batch);
	PrmExecute(plan, values, NULL, false, 0);
	PrmSpiFinish();
}

/* A slot went through a sweep: forget its earlier failures. */
static void
FillSweepSucceeded(int64 org_id, int64 slot_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "UPDATE prm.slot s SET sweep_failures = 0, sweep_retry_at = NULL"
			   " WHERE s.org_id = $1 AND s.id = $2 AND s.sweep_failures > 0",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	PrmExecute(plan, values, NULL, false, 0);
}

/*
 * Run a sweep over the n slots of the last query's result (org_id, slot_id),
 * through the loop helper.  Returns the sum of fn's results.
 */
static int
FillRunSweep(int n, int (*fn)(int64, int64, TimestampTz), bool retry_by_batch,
			 TimestampTz as_of)
{
	FillSweep	sw = {fn, retry_by_batch, as_of, NULL, NULL};
	PrmItemLoop loop = {FillSweepItem, FillSweepFailed, &sw, 0, 0, NULL, false};
	int			i;
	bool		isnull;

	sw.org_ids = palloc(sizeof(int64) * (n + 1));
	sw.slot_ids = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		sw.org_ids[i] = PrmGetInt64(i, 1, &isnull);
		sw.slot_ids[i] = PrmGetInt64(i, 2, &isnull);
	}
	(void) PrmRunItems(&loop, n);
	return (int) loop.done;
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
	FillSweepSucceeded(org_id, slot_id);
	return k;
}

/* Send a delayed batch (a FillGuarded step). */
static int
FillDueBatch(int64 org_id, int64 slot_id, TimestampTz as_of)
{
	int sent = FillSendBatch(org_id, slot_id);

	FillSweepSucceeded(org_id, slot_id);
	return sent;
}

/*
 * Expire open offers whose hold ended by as_of, slot by slot (at most limit
 * slots, the longest overdue first), and send the next batch where a slot
 * has no open offer left.  orgs (norgs of them) limits it to some
 * organizations; NULL: all.  Slots locked by someone else right now and
 * slots backing off after a failure are passed over and do not count
 * against the limit, so one organization's busy or broken slots never hold
 * back another's.
 */
int
PrmExpireOffers(TimestampTz as_of, Datum *orgs, int norgs, int limit)
{
	static SPIPlanPtr find_plan = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	int				  n;

	if (!FillInstalled())
		return 0;
	PrmPrepare(&find_plan,
			   "SELECT s.org_id, s.id FROM prm.slot s"
			   "  JOIN (SELECT o.org_id, o.slot_id, pg_catalog.min(o.hold_until) AS due"
			   "          FROM prm.offer o"
			   "         WHERE o.status = 'open' AND o.hold_until <= $1"
			   "           AND ($2::bigint[] IS NULL OR o.org_id = ANY ($2::bigint[]))"
			   "         GROUP BY o.org_id, o.slot_id) d"
			   "    ON d.org_id = s.org_id AND d.slot_id = s.id"
			   " WHERE s.sweep_retry_at IS NULL OR s.sweep_retry_at <= $1"
			   " ORDER BY d.due LIMIT $3 FOR NO KEY UPDATE OF s SKIP LOCKED",
			   3, (Oid[]){TIMESTAMPTZOID, INT8ARRAYOID, INT4OID});
	values[0] = TimestampTzGetDatum(as_of);
	if (orgs)
		values[1] = PointerGetDatum(construct_array(orgs, norgs, INT8OID, 8, true, TYPALIGN_DOUBLE));
	else
		nulls[1] = 'n';
	values[2] = Int32GetDatum(limit);
	n = PrmExecute(find_plan, values, nulls, false, 0);
	return FillRunSweep(n, FillExpireSlot, false, as_of);
}

/*
 * Send first batches whose delay is over (at most limit slots); locked ones
 * are passed over, failing ones back off by their next_batch_at.
 */
int
PrmSendDueBatches(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	int				  n;

	if (!FillInstalled())
		return 0;
	PrmPrepare(&plan,
			   "SELECT s.org_id, s.id FROM prm.slot s"
			   " WHERE s.fill_status = 'pending' AND s.next_batch_at <= pg_catalog.now()"
			   " ORDER BY s.next_batch_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	n = PrmExecute(plan, values, NULL, false, 0);
	return FillRunSweep(n, FillDueBatch, true, 0);
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
