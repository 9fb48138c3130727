/*-------------------------------------------------------------------------
 *
 * notify_relay.c
 *	  prm's notifications (NOTIFY prm_event, prm_outbox_sms, ...), sent at
 *	  most once per transaction and channel, and relayed by a notifier
 *	  process so that a committing transaction does not take NOTIFY's lock.
 *
 * Why a relay.  PostgreSQL's NOTIFY takes one cluster-wide lock at commit
 * (PreCommit_Notify) and holds it until the commit record is written: every
 * notifying transaction commits behind every other one.  Measured on an
 * enqueue, adding one NOTIFY to pgmq.send at 8 clients took it from 7,582
 * to 5,347 transactions per second, and in a YES storm most waits were on
 * that lock.  So a transaction of a database with a notifier only notes the
 * channels it would notify; once it has committed (XACT_EVENT_COMMIT: its
 * rows are visible) it ORs them into its database's shared mask and sets
 * the notifier's latch.  The notifier ("prm notifier for database X",
 * started beside the worker by the launcher of worker.c) takes the mask
 * and sends one NOTIFY per channel in one transaction of its own, for any
 * number of commits: the lock is taken once a round, not once a commit.
 * * The hand-over.  At pre-commit a transaction that noted channels looks
 * for its database's notifier and, when it finds one that is not closing,
 * counts itself in flight there; at commit (or abort) it ORs its channels
 * into that slot and leaves the count.  A notifier told to stop (SIGTERM:
 * its database left prm.databases, or the server stops) first marks itself
 * closing, so that later commits NOTIFY themselves, waits for the ones in
 * flight, sends what they handed over, and only then gives up its slot: no
 * commit that counted on it is left unnotified.  One that ends on an error
 * gives up its slot at once; the commits it had counted see that the slot's
 * generation changed and leave it alone, and its successor's first round
 * (below) covers them.
 *
 * What a listener sees.  The payload is empty as before, the channel names
 * what changed, and the rows are committed before the notification is sent;
 * one notification may stand for many commits, and, rarely, for none (the
 * notifier sends every channel once when it starts, for any commit lost to
 * a notifier that ended abruptly).  Listeners therefore read what is due and
 * never count notifications.  The notification comes from the notifier's
 * process id, not the writer's, so a listener cannot tell its own
 * notifications by their pid.  The notifier's NOTIFY transactions use a
 * transaction id each, at most one a RELAY_ROUND_MS, and commit with
 * synchronous_commit off: they carry no data.
*
 * Without a notifier (prm not preloaded, a database outside prm.databases,
 * the notifier restarting, or prm.notify_relay off) the channels are
 * NOTIFYed at pre-commit, in the transaction, as PostgreSQL does it.  A
 * prepared transaction gets them NOTIFYed too, so PREPARE TRANSACTION
 * refuses it as it refuses any NOTIFY.  A rolled back subtransaction
 * forgets the channels it noted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/parallel.h"
#include "access/xact.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "port/atomics.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "prm.h"

PGDLLEXPORT void prm_notifier_main(Datum main_arg);

/* every channel prm notifies; a bit of the mask each */
static const char *const relay_channels[] = {
	"prm_event",
	"prm_conversation",
	"prm_outbox_sms",
	"prm_outbox_whatsapp",
	"prm_outbox_email",
	"prm_outbox_voice",
	"prm_outbox_push",
	"prm_alert",
	"prm_patient_risk",
	"prm_ticket",
};
#define RELAY_NCHANNELS lengthof(relay_channels)
StaticAssertDecl(lengthof(relay_channels) < 32, "a channel is a bit of a uint32");
#define RELAY_ALL ((uint32) ((1U << RELAY_NCHANNELS) - 1))

/*
 * The pause after a round, during which commits gather for the next: a
 * NOTIFY transaction per commit would cost the notifier as much CPU as the
 * writers it saves from the lock.  A listener hears at most this much later.
 */
#define RELAY_ROUND_MS 1L
/* how long a stopping notifier waits for the commits counting on it */
#define RELAY_CLOSE_WAIT_MS 5000

/* one per notifier, that is per database served */
typedef struct RelaySlot
{
	Oid				 dboid;
	pid_t			 pid; /* 0: free */
	Latch			*latch;
	TimestampTz		 started_at;
	bool			 closing;	 /* stopping: takes no more commits */
	int				 inflight;	 /* commits between pre-commit and commit */
	uint64			 generation; /* which notifier holds the slot */
	pg_atomic_uint32 pending;	 /* channels committed, not yet NOTIFYed */
	pg_atomic_uint64 commits;	 /* commits that handed it channels */
	pg_atomic_uint64 rounds;	 /* its NOTIFY transactions */
} RelaySlot;

typedef struct RelayShared
{
	slock_t	  mutex;	   /* guards all but the atomics */
	uint64	  generations; /* slot holders so far */
	RelaySlot slots[PRM_MAX_DATABASES];
} RelayShared;

static RelayShared *relay_shared = NULL;

/* setting */
static bool prm_notify_relay = true;

/*
 * This transaction's channels: a bit each, with the (sub)transaction level
 * that noted it, so that a rolled back subtransaction takes its bits away.
 */
static uint32 noted_mask = 0;
static int	  noted_level[RELAY_NCHANNELS];
/*
 * Decided at pre-commit: the notifier's slot to hand the channels to at
 * commit (this transaction is counted in its inflight), or none: NOTIFY.
 */
static bool		  decided = false;
static RelaySlot *relay_slot = NULL;
/* the generation of relay_slot's holder when it counted us */
static uint64	  relay_generation = 0;
static int		  RelayChannelIndex(const char *channel);
static RelaySlot *RelayFindSlot(void);
static void		  RelayNotifyNow(uint32 mask);
static void		  RelayHandOver(bool committed);
static void		  RelayXactCallback(XactEvent event, void *arg);
static void		  RelaySubXactCallback(SubXactEvent event, SubTransactionId mySubid,
									   SubTransactionId parentSubid, void *arg);
static void		  RelayDetach(int code, Datum arg);

/* Size of the shared state, for worker.c's shared memory request. */
Size
PrmRelayShmemSize(void)
{
	return MAXALIGN(sizeof(RelayShared));
}

/* Create or attach to the shared state; from worker.c's startup hook. */
void
PrmRelayShmemStartup(void)
{
	bool found;
	int	 i;

	relay_shared = ShmemInitStruct("prm notify relay", sizeof(RelayShared), &found);
	if (!found)
	{
		memset(relay_shared, 0, sizeof(RelayShared));
		SpinLockInit(&relay_shared->mutex);
		for (i = 0; i < PRM_MAX_DATABASES; i++)
		{
			pg_atomic_init_u32(&relay_shared->slots[i].pending, 0);
			pg_atomic_init_u64(&relay_shared->slots[i].commits, 0);
			pg_atomic_init_u64(&relay_shared->slots[i].rounds, 0);
		}
	}
}

/* The setting and the transaction callbacks; from _PG_init. */
void
PrmRelayInit(void)
{
	DefineCustomBoolVariable("prm.notify_relay",
							 "Whether prm's notifications are relayed by the database's notifier.",
							 "On: a committing transaction hands its channels to the notifier, "
							 "which NOTIFYs for many commits at once, and the transaction does not "
							 "wait for NOTIFY's cluster-wide lock.  Off, or without a notifier: "
							 "NOTIFY in the transaction.",
							 &prm_notify_relay, true, PGC_USERSET, 0,
							 NULL, NULL, NULL);
	RegisterXactCallback(RelayXactCallback, NULL);
	RegisterSubXactCallback(RelaySubXactCallback, NULL);
}

/* Bit of a channel of relay_channels; -1 for any other name. */
static int
RelayChannelIndex(const char *channel)
{
	int i;

	for (i = 0; i < (int) RELAY_NCHANNELS; i++)
		if (strcmp(relay_channels[i], channel) == 0)
			return i;
	return -1;
}

/*
 * NOTIFY channel once, when the current transaction commits: noted here,
 * sent by the notifier or at pre-commit (see the file's heading).
 */
void
PrmNotifyOnce(const char *channel)
{
	int ch = RelayChannelIndex(channel);

	/*
	 * A name outside the table (none today), or a change made after this
	 * transaction decided at pre-commit not to relay (by a later pre-commit
	 * callback): PostgreSQL's NOTIFY, which dedups, and whose own pre-commit
	 * step comes after the callbacks.
	 */
	if (ch < 0 || IsParallelWorker() || (decided && relay_slot == NULL))
	{
		Async_Notify(channel, NULL);
		return;
	}
	if ((noted_mask & (1U << ch)) == 0)
	{
		noted_mask |= 1U << ch;
		noted_level[ch] = GetCurrentTransactionNestLevel();
	}
}

/*
 * The slot of this database's notifier, NULL when none runs (or its
 * notifier is closing).  The caller holds relay_shared->mutex.
 */
static RelaySlot *
RelayFindSlot(void)
{
	int i;

	for (i = 0; i < PRM_MAX_DATABASES; i++)
		if (relay_shared->slots[i].pid != 0 && relay_shared->slots[i].dboid == MyDatabaseId &&
			!relay_shared->slots[i].closing)
			return &relay_shared->slots[i];
	return NULL;
}

/* NOTIFY the channels of mask in the current transaction. */
static void
RelayNotifyNow(uint32 mask)
{
	int i;

	for (i = 0; i < (int) RELAY_NCHANNELS; i++)
		if (mask & (1U << i))
			Async_Notify(relay_channels[i], NULL);
}

/*
 * Commit or abort of a transaction counted in relay_slot's inflight: hand
 * over the channels when it committed (waking the notifier if its mask was
 * empty: else it was woken already and has not taken the mask yet), and
 * leave the count.  Spinlock, atomics and a latch: nothing that can fail.
 */
static void
RelayHandOver(bool committed)
{
	Latch *latch = NULL;

	SpinLockAcquire(&relay_shared->mutex);
	/*
	 * The notifier that counted us ended meanwhile (an error: it gave up
	 * the slot without waiting): its successor's first round notifies every
	 * channel, and the slot's count is no longer ours to touch.
	 */
	if (relay_slot->pid == 0 || relay_slot->generation != relay_generation)
	{
		SpinLockRelease(&relay_shared->mutex);
		return;
	}
	if (committed && noted_mask != 0)
	{
		if (pg_atomic_fetch_or_u32(&relay_slot->pending, noted_mask) == 0)
			latch = relay_slot->latch;
		pg_atomic_fetch_add_u64(&relay_slot->commits, 1);
	}
	Assert(relay_slot->inflight > 0);
	relay_slot->inflight--;
	/* a closing notifier waits for the last one */
	if (relay_slot->closing && relay_slot->inflight == 0)
		latch = relay_slot->latch;
	SpinLockRelease(&relay_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * Pre-commit: relay when a notifier serves the database, else NOTIFY now
 * (PreCommit_Notify runs after the callbacks).  Commit and abort: see
 * RelayHandOver.  No error may be raised after the commit.
 */
static void
RelayXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			Assert(relay_slot == NULL);
			decided = true;
			if (noted_mask == 0)
				break;
			if (prm_notify_relay && relay_shared != NULL)
			{
				SpinLockAcquire(&relay_shared->mutex);
				relay_slot = RelayFindSlot();
				if (relay_slot != NULL)
				{
					relay_slot->inflight++;
					relay_generation = relay_slot->generation;
				}
				SpinLockRelease(&relay_shared->mutex);
			}
			if (relay_slot == NULL)
			{
				RelayNotifyNow(noted_mask);
				noted_mask = 0;
			}
			break;
		case XACT_EVENT_PRE_PREPARE:
			/* PostgreSQL refuses to prepare a transaction that NOTIFYs: so do we */
			RelayNotifyNow(noted_mask);
			noted_mask = 0;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (relay_slot != NULL)
				RelayHandOver(event == XACT_EVENT_COMMIT);
			relay_slot = NULL;
			decided = false;
			noted_mask = 0;
			break;
		default:
			break;
	}
}

/*
 * A subtransaction's end: rolled back, it forgets the channels first noted
 * in it (or deeper); released, it passes them to its parent.
 */
static void
RelaySubXactCallback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	int level = GetCurrentTransactionNestLevel();
	int i;

	if (noted_mask == 0 || (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB))
		return;
	for (i = 0; i < (int) RELAY_NCHANNELS; i++)
	{
		if ((noted_mask & (1U << i)) == 0 || noted_level[i] < level)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
			noted_mask &= ~(1U << i);
		else
			noted_level[i] = level - 1;
	}
}

/*
 * The notifier's part of prm.health(), as jsonb text: whether one runs for
 * this database, its pid, since when, how many commits handed it channels
 * and in how many NOTIFY transactions it sent them.
 */
char *
PrmNotifierStatusJson(void)
{
	RelaySlot  *slot = NULL;
	pid_t		pid = 0;
	TimestampTz started = 0;
	uint64		commits = 0,
		   rounds = 0;

	if (relay_shared != NULL)
	{
		SpinLockAcquire(&relay_shared->mutex);
		slot = RelayFindSlot();
		if (slot != NULL)
		{
			pid = slot->pid;
			started = slot->started_at;
			commits = pg_atomic_read_u64(&slot->commits);
			rounds = pg_atomic_read_u64(&slot->rounds);
		}
		SpinLockRelease(&relay_shared->mutex);
	}
	if (pid == 0)
		return psprintf("{\"running\": false, \"relay\": %s}",
						prm_notify_relay ? "true" : "false");
	return psprintf("{\"running\": true, \"relay\": %s, \"pid\": %d, \"started_at\": \"%s\", "
					"\"relayed_commits\": " UINT64_FORMAT ", \"notify_rounds\": " UINT64_FORMAT "}",
					prm_notify_relay ? "true" : "false", (int) pid,
					timestamptz_to_str(started), commits, rounds);
}

/* Give up the notifier's slot on exit. */
static void
RelayDetach(int code, Datum arg)
{
	RelaySlot *slot = (RelaySlot *) DatumGetPointer(arg);

	SpinLockAcquire(&relay_shared->mutex);
	if (slot->pid == MyProcPid)
	{
		slot->pid = 0;
		slot->closing = false;
		slot->inflight = 0;
	}
	SpinLockRelease(&relay_shared->mutex);
}

/* NOTIFY the channels of mask in a transaction of the notifier's own. */
static void
RelayRound(RelaySlot *slot, uint32 mask)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "NOTIFY");
	RelayNotifyNow(mask);
	CommitTransactionCommand();
	pg_atomic_fetch_add_u64(&slot->rounds, 1);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Take no more commits, wait for those in flight (their commit record is
 * being written: milliseconds), at most RELAY_CLOSE_WAIT_MS, and send what
 * they handed over.
 */
static void
RelayClose(RelaySlot *slot)
{
	TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RELAY_CLOSE_WAIT_MS);
	uint32		mask;

	SpinLockAcquire(&relay_shared->mutex);
	slot->closing = true;
	SpinLockRelease(&relay_shared->mutex);
	for (;;)
	{
		int inflight;

		SpinLockAcquire(&relay_shared->mutex);
		inflight = slot->inflight;
		SpinLockRelease(&relay_shared->mutex);
		if (inflight == 0 || GetCurrentTimestamp() >= give_up)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	mask = pg_atomic_exchange_u32(&slot->pending, 0);
	if (mask != 0)
		RelayRound(slot, mask);
}

/*
 * The notifier of one database (bgw_extra): take the mask, NOTIFY its
 * channels in one transaction, pause RELAY_ROUND_MS, and sleep on the latch
 * until a commit hands it more.  Its first round sends every channel (see
 * the heading).  SIGTERM: RelayClose, then exit.  An error (the NOTIFY
 * queue full) ends the process; the launcher starts it again, and
 * meanwhile writers NOTIFY themselves.
 */
void
prm_notifier_main(Datum main_arg)
{
	char		dbname[BGW_EXTRALEN];
	RelaySlot  *slot = NULL;
	TimestampTz now;
	bool		duplicate = false;
	int			i;

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(dbname, NULL, 0);
	pgstat_report_appname("prm notifier");
	/* a NOTIFY carries no data: its commit need not wait for the disk */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	if (relay_shared == NULL)
		elog(ERROR, "prm notifier started without prm's shared memory");
	now = GetCurrentTimestamp();
	SpinLockAcquire(&relay_shared->mutex);
	for (i = 0; i < PRM_MAX_DATABASES; i++)
		if (relay_shared->slots[i].pid != 0 && relay_shared->slots[i].dboid == MyDatabaseId)
			duplicate = true;
	for (i = 0; i < PRM_MAX_DATABASES && slot == NULL && !duplicate; i++)
		if (relay_shared->slots[i].pid == 0)
		{
			slot = &relay_shared->slots[i];
			slot->dboid = MyDatabaseId;
			slot->pid = MyProcPid;
			slot->latch = MyLatch;
			slot->started_at = now;
			slot->closing = false;
			slot->inflight = 0;
			slot->generation = ++relay_shared->generations;
			pg_atomic_write_u32(&slot->pending, RELAY_ALL);
			pg_atomic_write_u64(&slot->commits, 0);
			pg_atomic_write_u64(&slot->rounds, 0);
		}
	SpinLockRelease(&relay_shared->mutex);
	/* a launcher started again after an error does not know the one running */
	if (duplicate)
	{
		ereport(LOG, (errmsg("prm notifier for database \"%s\" runs already: this one exits", dbname)));
		proc_exit(0);
	}
	if (slot == NULL)
		elog(ERROR, "no free prm notifier slot");
	before_shmem_exit(RelayDetach, PointerGetDatum(slot));
	ereport(LOG, (errmsg("prm notifier started for database \"%s\"", dbname)));

	while (!ShutdownRequestPending)
	{
		uint32 mask;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		mask = pg_atomic_exchange_u32(&slot->pending, 0);
		if (mask != 0)
		{
			RelayRound(slot, mask);
			/* let commits gather: at most one round a RELAY_ROUND_MS */
			(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, RELAY_ROUND_MS,
							 PG_WAIT_EXTENSION);
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	RelayClose(slot);
	ereport(LOG, (errmsg("prm notifier for database \"%s\" shutting down", dbname)));
	proc_exit(0);
}
