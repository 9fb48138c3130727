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
 *
 * What a listener sees.  The payload is empty as before, the channel names
 * what changed, and the rows are committed before the notification is sent;
 * one notification may stand for many commits, and, rarely, for none (the
 * notifier sends every channel once when it starts, which covers commits
 * that noted a notifier that then stopped).  Listeners therefore read what
 * is due and never count notifications.  The notification comes from the
 * notifier's process id, not the writer's.
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
#define RELAY_ALL ((uint32) ((1U << RELAY_NCHANNELS) - 1))

/*
 * The pause after a round, during which commits gather for the next: a
 * NOTIFY transaction per commit would cost the notifier as much CPU as the
 * writers it saves from the lock.  A listener hears at most this much later.
 */
#define RELAY_ROUND_MS 1L

/* one per notifier, that is per database served */
typedef struct RelaySlot
{
	Oid				 dboid;
	pid_t			 pid; /* 0: free */
	Latch			*latch;
	TimestampTz		 started_at;
	pg_atomic_uint32 pending; /* channels committed, not yet NOTIFYed */
	pg_atomic_uint64 commits; /* commits that handed it channels */
	pg_atomic_uint64 rounds;  /* its NOTIFY transactions */
} RelaySlot;

typedef struct RelayShared
{
	slock_t	  mutex; /* guards dboid, pid, latch, started_at */
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
/* decided at pre-commit: hand the channels to the notifier at commit */
static bool relay_at_commit = false;

static int		  RelayChannelIndex(const char *channel);
static RelaySlot *RelayFindSlot(void);
static void		  RelayNotifyNow(uint32 mask);
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

	/* a name outside the table (none today): PostgreSQL's NOTIFY, which dedups */
	if (ch < 0 || IsParallelWorker())
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
 * The slot of this database's notifier, NULL when none runs.  The caller
 * holds relay_shared->mutex.
 */
static RelaySlot *
RelayFindSlot(void)
{
	int i;

	for (i = 0; i < PRM_MAX_DATABASES; i++)
		if (relay_shared->slots[i].pid != 0 && relay_shared->slots[i].dboid == MyDatabaseId)
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
 * Pre-commit: relay when a notifier serves the database, else NOTIFY now
 * (PreCommit_Notify runs after this).  Commit: hand the channels over and
 * wake the notifier if its mask was empty (else it was woken already and
 * has not taken the mask yet).  No error may be raised after the commit.
 */
static void
RelayXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			relay_at_commit = false;
			if (noted_mask == 0)
				break;
			if (prm_notify_relay && relay_shared != NULL)
			{
				SpinLockAcquire(&relay_shared->mutex);
				relay_at_commit = RelayFindSlot() != NULL;
				SpinLockRelease(&relay_shared->mutex);
			}
			if (!relay_at_commit)
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
			if (relay_at_commit && noted_mask != 0)
			{
				RelaySlot *slot;
				Latch	  *latch = NULL;

				SpinLockAcquire(&relay_shared->mutex);
				slot = RelayFindSlot();
				if (slot != NULL)
				{
					if (pg_atomic_fetch_or_u32(&slot->pending, noted_mask) == 0)
						latch = slot->latch;
					pg_atomic_fetch_add_u64(&slot->commits, 1);
				}
				SpinLockRelease(&relay_shared->mutex);
				/* no slot: the notifier stopped, and sends every channel when it starts */
				if (latch != NULL)
					SetLatch(latch);
			}
			noted_mask = 0;
			relay_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			noted_mask = 0;
			relay_at_commit = false;
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
		slot->pid = 0;
	SpinLockRelease(&relay_shared->mutex);
}

/*
 * The notifier of one database (bgw_extra): take the mask, NOTIFY its
 * channels in one transaction, sleep on the latch until a commit hands it
 * more.  Its first round sends every channel (see the heading).  SIGTERM:
 * a last round for what is pending, then exit.  An error (the NOTIFY queue
 * full) ends the process; the launcher starts it again, and meanwhile
 * writers NOTIFY themselves.
 */
void
prm_notifier_main(Datum main_arg)
{
	char	   dbname[BGW_EXTRALEN];
	RelaySlot *slot = NULL;
	int		   i;

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(dbname, NULL, 0);
	pgstat_report_appname("prm notifier");

	if (relay_shared == NULL)
		elog(ERROR, "prm notifier started without prm's shared memory");
	SpinLockAcquire(&relay_shared->mutex);
	for (i = 0; i < PRM_MAX_DATABASES && slot == NULL; i++)
		if (relay_shared->slots[i].pid == 0)
		{
			slot = &relay_shared->slots[i];
			slot->dboid = MyDatabaseId;
			slot->pid = MyProcPid;
			slot->latch = MyLatch;
			slot->started_at = GetCurrentTimestamp();
			pg_atomic_write_u32(&slot->pending, RELAY_ALL);
			pg_atomic_write_u64(&slot->commits, 0);
			pg_atomic_write_u64(&slot->rounds, 0);
		}
	SpinLockRelease(&relay_shared->mutex);
	if (slot == NULL)
		elog(ERROR, "no free prm notifier slot");
	before_shmem_exit(RelayDetach, PointerGetDatum(slot));
	ereport(LOG, (errmsg("prm notifier started for database \"%s\"", dbname)));

	for (;;)
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
			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			RelayNotifyNow(mask);
			CommitTransactionCommand();
			pg_atomic_fetch_add_u64(&slot->rounds, 1);
			pgstat_report_activity(STATE_IDLE, NULL);
			/* let commits gather: at most one round a RELAY_ROUND_MS */
			if (!ShutdownRequestPending)
				(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, RELAY_ROUND_MS,
								 PG_WAIT_EXTENSION);
		}
		if (ShutdownRequestPending)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	ereport(LOG, (errmsg("prm notifier for database \"%s\" shutting down", dbname)));
	proc_exit(0);
}
