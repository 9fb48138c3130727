/*-------------------------------------------------------------------------
 *
 * loop.c
 *	  The one loop helper for batches of items that may fail one by one:
 *	  the sweeps' slots, the syncs' records, run_due_jobs' steps, and every
 *	  capability to come.
 *
 * PrmRunItems(loop, n) runs loop->run(ctx, i) for i = 0 .. n-1, so that:
 *	- an item that fails is rolled back alone, its error handed to
 *	  loop->failed(), and the loop goes on with the next one;
 *	- errors that belong to the whole statement are re-raised, never
 *	  swallowed as an item's failure: a query cancel or statement_timeout
 *	  (57014), an administrator's or crash shutdown (57P01..57P05), running
 *	  out of memory or other resources (class 53) and anything FATAL;
 *	- each item runs in an SPI connection of its own, so whatever it
 *	  allocated, its tuple tables included, is freed when it ends: the
 *	  memory of a loop does not grow with its length;
 *	- a statement holds at most PRM_MAX_SUBXACTS of prm's
 *	  subtransactions (the worker runs each step as a statement of a
 *	  transaction of its own, pg_cron runs run_due_jobs() as one, so for them
 *	  that is the transaction's budget).  PostgreSQL caches 64 subtransaction
 *	  ids per backend; beyond that every snapshot in the cluster must look
 *	  up pg_subtrans.  Items therefore run in groups of up to PRM_ITEM_GROUP
 *	  in one subtransaction; only a group that fails is run again item by
 *	  item.  When the budget of the statement is spent the loop stops and
 *	  returns how many items it handled: the caller leaves the rest for its
 *	  next run (the worker commits and comes back at once, since the work is
 *	  still due).  A loop that must finish in one call (a sync: the caller
 *	  sent the records) sets unbounded, and then only its failing records
 *	  cost a subtransaction each beyond one per group.
 *	- a loop may say which errors are its items' own (is_item_error); any
 *	  other error ends the statement too.
 *
 * PrmRunInSubtransaction() runs a single piece of work the same way, with
 * the same rules for errors and the budget.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "prm.h"

/*
 * subtransactions prm began in the current top-level statement: the
 * budget is per statement (its transaction and its start time), so that a
 * long transaction of many statements -- a test suite, an application's
 * unit of work -- never finds a sweep silently doing nothing
 */
static int				  subxacts_used = 0;
static LocalTransactionId subxacts_lxid = InvalidLocalTransactionId;
static TimestampTz		  subxacts_stmt = 0;

/* Is the budget's record of another statement (or none)? */
static bool
LoopNewStatement(void)
{
	return subxacts_lxid != PrmCurrentLxid() ||
		   subxacts_stmt != GetCurrentStatementStartTimestamp();
}

/* Count one subtransaction against the statement's budget. */
static void
LoopTakeSubxact(void)
{
	if (LoopNewStatement())
	{
		subxacts_lxid = PrmCurrentLxid();
		subxacts_stmt = GetCurrentStatementStartTimestamp();
		subxacts_used = 0;
	}
	subxacts_used++;
}

/* How many more subtransactions prm may begin in this statement. */
int
PrmSubxactBudgetLeft(void)
{
	if (LoopNewStatement())
		return PRM_MAX_SUBXACTS;
	return Max(PRM_MAX_SUBXACTS - subxacts_used, 0);
}

/*
 * Must this error end the whole statement rather than one item?  Cancels,
 * timeouts, shutdowns and resource exhaustion are not an item's fault, and a
 * loop that caught them would keep running after the user asked it to stop.
 */
bool
PrmErrorEndsStatement(const ErrorData *edata)
{
	if (edata->elevel >= FATAL)
		return true;
	switch (edata->sqlerrcode)
	{
		case ERRCODE_QUERY_CANCELED:
		case ERRCODE_ADMIN_SHUTDOWN:
		case ERRCODE_CRASH_SHUTDOWN:
		case ERRCODE_CANNOT_CONNECT_NOW:
		case ERRCODE_DATABASE_DROPPED:
		case ERRCODE_IDLE_SESSION_TIMEOUT:
			return true;
		default:
			break;
	}
	return ERRCODE_TO_CATEGORY(edata->sqlerrcode) ==
		   ERRCODE_TO_CATEGORY(ERRCODE_INSUFFICIENT_RESOURCES);
}

/*
 * Is this error a conflict with another transaction that a retry of the
 * whole call may not meet again (deadlock, serialization failure, lock
 * timeout)?  A loop of independent items skips such an item until its next
 * run; a caller that cannot come back to its item (a webhook's message)
 * lets it end the call instead, so that the caller's client retries.
 */
bool
PrmErrorIsTransient(const ErrorData *edata)
{
	return edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		   edata->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
		   edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

/*
 * Run fn(arg) in a subtransaction of its own, inside an SPI connection of
 * its own.  On success the subtransaction is committed, *result gets fn's
 * value and NULL is returned; on an item's error the subtransaction is
 * rolled back alone and the error, copied into the caller's memory context,
 * is returned; errors that end the statement are re-raised.  It counts
 * against the statement's budget: loops check PrmSubxactBudgetLeft().
 */
ErrorData *
PrmRunInSubtransaction(int64 (*fn)(void *arg), void *arg, int64 *result)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData *volatile error = NULL;
	volatile int64 value = 0;

	(void) LoopTakeSubxact();
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		PrmSpiConnect();
		value = fn(arg);
		PrmSpiFinish();
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
		/* rolled back first, so the caller's own subtransactions stay intact */
		if (PrmErrorEndsStatement(error))
			ReThrowError(error);
	}
	PG_END_TRY();
	*result = value;
	return error;
}

typedef struct LoopGroup
{
	PrmItemLoop *loop;
	int			 first;
	int			 count;
} LoopGroup;

/* Run the items of a group one after the other, each in its own SPI. */
static int64
LoopRunGroup(void *arg)
{
	LoopGroup *g = (LoopGroup *) arg;
	int64	   done = 0;
	int		   i;

	for (i = g->first; i < g->first + g->count; i++)
	{
		CHECK_FOR_INTERRUPTS();
		PrmSpiConnect();
		done += g->loop->run(g->loop->ctx, i);
		PrmSpiFinish();
	}
	return done;
}

typedef struct LoopFailure
{
	PrmItemLoop *loop;
	int			 index;
	ErrorData	*edata;
} LoopFailure;

/* Call the loop's failed() callback (for PrmRunInSubtransaction). */
static int64
LoopCallFailed(void *arg)
{
	LoopFailure *f = (LoopFailure *) arg;

	f->loop->failed(f->loop->ctx, f->index, f->edata);
	return 0;
}

/*
 * Hand item i's error to the loop's failed() callback, in a subtransaction
 * of its own: an error of the callback (its bookkeeping failed too) is
 * logged and does not undo the items that succeeded.
 */
static void
LoopReportFailure(PrmItemLoop *loop, int i, ErrorData *edata)
{
	LoopFailure f = {loop, i, edata};
	ErrorData  *cb_error;
	int64		ignored;

	if (loop->failed == NULL)
		return;
	cb_error = PrmRunInSubtransaction(LoopCallFailed, &f, &ignored);
	if (cb_error != NULL)
	{
		ereport(WARNING,
				(errmsg("prm: recording the failure of item %d failed: %s", i, cb_error->message)));
		FreeErrorData(cb_error);
	}
}

/*
 * Run items 0 .. n-1 of loop (see the file's header); loop->done gets the
 * sum of their results and loop->failures the number that failed.  Returns
 * the number of items handled, less than n when the statement's budget of
 * subtransactions ran out.
 */
int
PrmRunItems(PrmItemLoop *loop, int n)
{
	int i = 0;
	int group = PRM_ITEM_GROUP;

	Assert(loop->run != NULL);
	/*
	 * A loop that must finish sizes its groups so that all of them fit the
	 * budget when nothing fails.
	 */
	if (loop->unbounded)
		group = Max(group, (n + PRM_MAX_SUBXACTS / 2 - 1) / (PRM_MAX_SUBXACTS / 2));
	while (i < n)
	{
		LoopGroup  g = {loop, i, Min(group, n - i)};
		ErrorData *edata;
		int64	   done = 0;
		int		   j;

		if (!loop->unbounded && PrmSubxactBudgetLeft() < 1)
			break;
		edata = PrmRunInSubtransaction(LoopRunGroup, &g, &done);
		if (edata == NULL)
		{
			loop->done += done;
			i += g.count;
			continue;
		}
		if (loop->is_item_error && !loop->is_item_error(edata))
			ReThrowError(edata);
		FreeErrorData(edata);

		/* the group failed: run its items one by one to find the culprit */
		for (j = g.first; j < g.first + g.count; j++)
		{
			LoopGroup one = {loop, j, 1};

			if (!loop->unbounded && PrmSubxactBudgetLeft() < 1)
				return j;
			edata = PrmRunInSubtransaction(LoopRunGroup, &one, &done);
			if (edata == NULL)
				loop->done += done;
			else if (loop->is_item_error && !loop->is_item_error(edata))
				ReThrowError(edata);
			else
			{
				loop->failures++;
				LoopReportFailure(loop, j, edata);
				FreeErrorData(edata);
			}
		}
		i += g.count;
	}
	return i;
}
