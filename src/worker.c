/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The prm launcher and its per-database workers.
 *
 * With prm in shared_preload_libraries, a static "prm launcher" starts one
 * dynamic "prm worker" and one "prm notifier" (notify_relay.c) for each
 * database named in prm.databases, notices when one exits (bgw_notify_pid)
 * and starts it again, and reports a lack of worker slots
 * (max_worker_processes) with a hint.  A worker is started
 * at most once every PRM_WORKER_RESTART_MS, so one that cannot start (a
 * database that does not exist) does not make the launcher spin.
 *
 * A worker runs each time-driven step of jobs.c in a transaction of its own
 * (worker_spi's sequence: statement start, transaction, SPI, snapshot),
 * catches, logs and rolls back a step that fails and goes on with the next,
 * then sleeps on its latch until the earliest deadline the database knows
 * (prm.next_deadline), at most prm.worker_max_sleep.
 *
 * Waking early.  A backend that writes a nearer deadline (a new hold, a
 * delayed batch, a retry) calls PrmWakeWorker(); at commit, and only then,
 * the worker of its database is woken if it sleeps past that deadline.
 * Shared memory holds, per database, the worker's latch and the time it
 * sleeps until, under a spinlock.  A rolled back transaction wakes nobody.
 *
 * Signals: SIGHUP reloads settings; SIGTERM ends the loop and the worker
 * exits with code 0.  In a database without the extension the worker runs
 * nothing and checks again every prm.worker_max_sleep.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "prm.h"

PGDLLEXPORT void prm_launcher_main(Datum main_arg);
PGDLLEXPORT void prm_worker_main(Datum main_arg);

#define PRM_MAX_WORKERS PRM_MAX_DATABASES
/* longest pause after a round that could not move overdue work */
#define PRM_WORKER_MAX_BACKOFF_MS 10000L

/* how often the launcher looks at prm.databases, and restarts at most */
#define PRM_LAUNCHER_NAPTIME_MS 10000L
#define PRM_WORKER_RESTART_MS 5000L

typedef struct PrmWorkerSlot
{
	Oid			dboid;
	pid_t		pid;
	Latch	   *latch;
	TimestampTz sleep_until; /* 0 while running steps */
	TimestampTz started_at;
	TimestampTz last_round_at;	   /* when its last round of steps ended */
	bool		last_round_failed; /* a step of that round failed */
} PrmWorkerSlot;

typedef struct PrmShared
{
	slock_t		  mutex;
	PrmWorkerSlot slots[PRM_MAX_WORKERS];
} PrmShared;

static PrmShared *prm_shared = NULL;

/* settings */
static bool	 prm_worker_enabled = true;
static char *prm_databases = NULL;
static int	 prm_worker_max_sleep = 60;

/* the nearest deadline this transaction wrote, for the commit callback */
static TimestampTz pending_wake = 0;
static bool		   wake_callback_registered = false;

static volatile sig_atomic_t got_sigterm = false;
static volatile sig_atomic_t in_step = false;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void PrmShmemRequest(void);
static void PrmShmemStartup(void);
static void PrmWakeCallback(XactEvent event, void *arg);
static void PrmWorkerSigterm(SIGNAL_ARGS);
static void PrmWorkerDetach(int code, Datum arg);

/*
 * Define the worker's settings and, when preloaded, ask for shared memory
 * and register the launcher.  Called from _PG_init.
 */
void
PrmWorkerInit(void)
{
	BackgroundWorker bgw;

	DefineCustomBoolVariable("prm.worker_enabled",
							 "Whether the prm workers run the time-driven steps.",
							 "When off, workers stay idle; prm.run_due_jobs() still works.",
							 &prm_worker_enabled, true, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("prm.worker_max_sleep",
							"Longest time a prm worker sleeps between checks.",
							NULL,
							&prm_worker_max_sleep, 60, 1, 3600, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("prm.databases",
							   "Databases in which a prm worker runs (comma-separated).",
							   NULL,
							   &prm_databases, "postgres", PGC_SIGHUP, GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

	MarkGUCPrefixReserved("prm");

#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = PrmShmemRequest;
#else
	PrmShmemRequest();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = PrmShmemStartup;

	/*
	 * The launcher connects to no database, but asks for a connection all the
	 * same: only then does it get a backend status entry and show itself in
	 * pg_stat_activity (as the logical replication launcher does).
	 */
	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "prm", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "prm_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, "prm launcher", BGW_MAXLEN);
	strlcpy(bgw.bgw_type, "prm launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

/* Ask for the shared state. */
static void
PrmShmemRequest(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(MAXALIGN(sizeof(PrmShared)));
	RequestAddinShmemSpace(PrmRelayShmemSize());
}

/* Create or attach to the shared state. */
static void
PrmShmemStartup(void)
{
	bool found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	prm_shared = ShmemInitStruct("prm", sizeof(PrmShared), &found);
	if (!found)
	{
		memset(prm_shared, 0, sizeof(PrmShared));
		SpinLockInit(&prm_shared->mutex);
	}
	PrmRelayShmemStartup();
	LWLockRelease(AddinShmemInitLock);
}

/* At commit, wake this database's worker if it sleeps past our deadline. */
static void
PrmWakeCallback(XactEvent event, void *arg)
{
	int	   i;
	Latch *latch = NULL;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT) &&
		pending_wake != 0 && prm_shared != NULL)
	{
		SpinLockAcquire(&prm_shared->mutex);
		for (i = 0; i < PRM_MAX_WORKERS; i++)
		{
			PrmWorkerSlot *slot = &prm_shared->slots[i];

			/* a worker between sleeps (0) re-reads deadlines: wake it too */
			if (slot->pid != 0 && slot->dboid == MyDatabaseId &&
				(slot->sleep_until == 0 || pending_wake < slot->sleep_until))
			{
				latch = slot->latch;
				if (slot->sleep_until != 0)
					slot->sleep_until = pending_wake;
			}
		}
		SpinLockRelease(&prm_shared->mutex);
		if (latch)
			SetLatch(latch);
	}
	pending_wake = 0;
}

/*
 * Note that the current transaction wrote a deadline; the worker is woken
 * at commit if it would sleep past it.
 */
void
PrmWakeWorker(TimestampTz deadline)
{
	if (prm_shared == NULL || deadline == 0)
		return;
	if (!wake_callback_registered)
	{
		RegisterXactCallback(PrmWakeCallback, NULL);
		wake_callback_registered = true;
	}
	if (pending_wake == 0 || deadline < pending_wake)
		pending_wake = deadline;
}

/* Is dbname one of the databases in prm.databases? */
static bool
PrmDatabaseListed(const char *dbname)
{
	char	 *raw = pstrdup(prm_databases);
	List	 *dblist = NIL;
	ListCell *lc;
	bool	  listed = false;

	if (SplitGUCList(raw, ',', &dblist))
		foreach (lc, dblist)
			if (strcmp((char *) lfirst(lc), dbname) == 0)
				listed = true;
	list_free(dblist);
	pfree(raw);
	return listed;
}

/*
 * The worker's part of prm.health(), as jsonb text: whether prm is preloaded,
 * whether this database is in prm.databases, whether its worker runs (its
 * shared slot, the source the wake-ups use too), since when, when its last
 * round of steps ended and whether a step failed in it, until when it
 * sleeps, when any step last ran (prm.job_run: the worker or run_due_jobs),
 * the steps whose last run failed, and, when something is off, what to do.
 * Must run inside SPI.
 */
char *
PrmWorkerStatusJson(void)
{
	static SPIPlanPtr plan = NULL;
	char			 *dbname = get_database_name(MyDatabaseId);
	bool			  preloaded = prm_shared != NULL;
	bool			  listed = PrmDatabaseListed(dbname);
	PrmWorkerSlot	  slot;
	const char		 *problem = NULL;
	Datum			  values[9];
	char			  nulls[9];
	int				  i;

	memset(&slot, 0, sizeof(slot));
	if (preloaded)
	{
		SpinLockAcquire(&prm_shared->mutex);
		for (i = 0; i < PRM_MAX_WORKERS; i++)
			if (prm_shared->slots[i].pid != 0 &&
				prm_shared->slots[i].dboid == MyDatabaseId)
				slot = prm_shared->slots[i];
		SpinLockRelease(&prm_shared->mutex);
	}

	if (!preloaded)
		problem = "prm is not in shared_preload_libraries, so no worker runs: add it and restart the server, or schedule prm.run_due_jobs() with pg_cron (prm.schedule_with_pg_cron()).";
	else if (!listed)
		problem = psprintf("Database \"%s\" is not in prm.databases (\"%s\"): add it and reload the configuration.",
						   dbname, prm_databases);
	else if (slot.pid == 0)
		problem = "No prm worker is running for this database: the server log says why (max_worker_processes reached, or the worker failing to start).";
	else if (!prm_worker_enabled)
		problem = "prm.worker_enabled is off: the worker runs no steps.";
	else if (slot.last_round_failed)
		problem = "A step failed in the worker's last round: see failed_steps and the server log.";

	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_build_object("
			   " 'preloaded', $1, 'listed', $2, 'enabled', $3,"
			   " 'running', $4 IS NOT NULL, 'pid', $4,"
			   " 'started_at', $5, 'last_round_at', $6,"
			   " 'seconds_since_last_round', extract(epoch FROM pg_catalog.now() - $6),"
			   " 'sleeping_until', $7,"
			   " 'steps_last_run_at', (SELECT pg_catalog.max(j.last_run_at) FROM prm.job_run j),"
			   " 'failed_steps', (SELECT coalesce(pg_catalog.jsonb_agg(j.job ORDER BY j.job), '[]')"
			   "                    FROM prm.job_run j WHERE j.last_error IS NOT NULL),"
			   " 'max_sleep_seconds', $8, 'problem', $9)::text",
			   9, (Oid[]){BOOLOID, BOOLOID, BOOLOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, TEXTOID});
	memset(nulls, ' ', sizeof(nulls));
	values[0] = BoolGetDatum(preloaded);
	values[1] = BoolGetDatum(listed);
	values[2] = BoolGetDatum(prm_worker_enabled);
	values[3] = Int32GetDatum((int32) slot.pid);
	nulls[3] = slot.pid != 0 ? ' ' : 'n';
	values[4] = TimestampTzGetDatum(slot.started_at);
	nulls[4] = slot.pid != 0 ? ' ' : 'n';
	values[5] = TimestampTzGetDatum(slot.last_round_at);
	nulls[5] = slot.last_round_at != 0 ? ' ' : 'n';
	values[6] = TimestampTzGetDatum(slot.sleep_until);
	nulls[6] = slot.sleep_until != 0 ? ' ' : 'n';
	values[7] = Int32GetDatum(prm_worker_max_sleep);
	values[8] = problem ? CStringGetTextDatum(problem) : (Datum) 0;
	nulls[8] = problem ? ' ' : 'n';
	PrmExecute(plan, values, nulls, true, 1);
	return PrmGetText(0, 1);
}

/* SIGTERM: finish the current step, then leave. */
static void
PrmWorkerSigterm(SIGNAL_ARGS)
{
	int save_errno = errno;

	got_sigterm = true;
	/* a step blocked on a lock or a long recalculation: stop it now */
	if (in_step)
	{
		InterruptPending = true;
		ProcDiePending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

/* Give up this worker's shared slot on exit. */
static void
PrmWorkerDetach(int code, Datum arg)
{
	int i;

	if (prm_shared == NULL)
		return;
	SpinLockAcquire(&prm_shared->mutex);
	for (i = 0; i < PRM_MAX_WORKERS; i++)
		if (prm_shared->slots[i].pid == MyProcPid)
			memset(&prm_shared->slots[i], 0, sizeof(PrmWorkerSlot));
	SpinLockRelease(&prm_shared->mutex);
}

/*
 * What the launcher runs for each database: the worker (this file) and the
 * notifier (notify_relay.c), each restarted on its own.
 */
#define PRM_PROCESS_KINDS 2
static const char *const prm_process_function[PRM_PROCESS_KINDS] = {
	"prm_worker_main", "prm_notifier_main"};
static const char *const prm_process_type[PRM_PROCESS_KINDS] = {"prm worker", "prm notifier"};

/* the launcher's record of one database of prm.databases */
typedef struct LauncherDb
{
	char				   *name;
	BackgroundWorkerHandle *handle[PRM_PROCESS_KINDS];
	TimestampTz				started[PRM_PROCESS_KINDS];
} LauncherDb;

/* Start one process of a database; NULL when no worker slot is free. */
static BackgroundWorkerHandle *
PrmStartProcess(const char *dbname, int kind)
{
	BackgroundWorker		bgw;
	BackgroundWorkerHandle *handle;
	pid_t					pid;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw.bgw_library_name, "prm", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, prm_process_function[kind], BGW_MAXLEN);
	snprintf(bgw.bgw_name, BGW_MAXLEN, "%s for database %s", prm_process_type[kind], dbname);
	strlcpy(bgw.bgw_type, prm_process_type[kind], BGW_MAXLEN);
	strlcpy(bgw.bgw_extra, dbname, BGW_EXTRALEN);
	bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a %s for database \"%s\"", prm_process_type[kind], dbname),
				 errhint("Raise max_worker_processes (prm needs two for each database of "
						 "prm.databases, and one for its launcher); the launcher tries again.")));
		return NULL;
	}
	if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
	{
		pfree(handle);
		ereport(WARNING,
				(errmsg("%s for database \"%s\" did not start", prm_process_type[kind], dbname)));
		return NULL;
	}
	return handle;
}

/*
 * Stop the processes of databases no longer in prm.databases (dblist) and
 * forget them, so that the database can be dropped; return how many are
 * left.  The launcher waits for each to exit: it is the one that would
 * otherwise start it again.
 */
static int
PrmLauncherStopUnlisted(LauncherDb *dbs, int ndbs, List *dblist)
{
	int i = 0;

	while (i < ndbs)
	{
		ListCell *lc;
		bool	  listed = false;
		int		  kind;

		foreach (lc, dblist)
			if (strcmp((char *) lfirst(lc), dbs[i].name) == 0)
				listed = true;
		if (listed)
		{
			i++;
			continue;
		}
		for (kind = 0; kind < PRM_PROCESS_KINDS; kind++)
		{
			BackgroundWorkerHandle *handle = dbs[i].handle[kind];
			pid_t					pid;

			if (handle == NULL)
				continue;
			if (GetBackgroundWorkerPid(handle, &pid) == BGWH_STARTED)
			{
				ereport(LOG,
						(errmsg("prm launcher: stopping the %s for database \"%s\", no longer in prm.databases",
								prm_process_type[kind] + strlen("prm "), dbs[i].name)));
				TerminateBackgroundWorker(handle);
				(void) WaitForBackgroundWorkerShutdown(handle);
			}
			pfree(handle);
		}
		pfree(dbs[i].name);
		/* keep the array dense: the last entry takes this one's place */
		dbs[i] = dbs[--ndbs];
	}
	return ndbs;
}

/*
 * Start a database's process of one kind unless it runs, at most once every
 * PRM_WORKER_RESTART_MS; lower *timeout_ms to when it may be tried again.
 */
static void
PrmLauncherKeep(LauncherDb *db, int kind, long *timeout_ms)
{
	pid_t pid;

	if (db->handle[kind] != NULL && GetBackgroundWorkerPid(db->handle[kind], &pid) == BGWH_STARTED)
		return;
	if (db->started[kind] != 0)
	{
		TimestampTz next = TimestampTzPlusMilliseconds(db->started[kind], PRM_WORKER_RESTART_MS);
		long		wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next);

		/* it stopped soon after it started: try again later */
		if (wait_ms > 0)
		{
			*timeout_ms = Min(*timeout_ms, wait_ms);
			return;
		}
	}
	if (db->handle[kind] != NULL)
		pfree(db->handle[kind]);
	db->started[kind] = GetCurrentTimestamp();
	db->handle[kind] = PrmStartProcess(db->name, kind);
}

/*
 * The launcher: keep one worker and one notifier running for each database
 * in prm.databases, and none for a database taken out of it.
 */
void
prm_launcher_main(Datum main_arg)
{
	LauncherDb dbs[PRM_MAX_WORKERS];
	int		   ndbs = 0;
	int		   i;

	memset(dbs, 0, sizeof(dbs));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("prm launcher");

	for (;;)
	{
		List	 *dblist = NIL;
		ListCell *lc;
		char	 *raw;
		long	  timeout_ms = PRM_LAUNCHER_NAPTIME_MS;
		bool	  listed;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		raw = pstrdup(prm_databases);
		if (!(listed = SplitGUCList(raw, ',', &dblist)))
			ereport(WARNING,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("prm.databases is not a valid list of database names")));
		foreach (lc, dblist)
		{
			char *name = (char *) lfirst(lc);
			int	  found = -1;
			int	  kind;

			for (i = 0; i < ndbs; i++)
				if (strcmp(dbs[i].name, name) == 0)
					found = i;
			if (found < 0)
			{
				if (ndbs == PRM_MAX_WORKERS)
				{
					ereport(WARNING,
							(errmsg("prm runs workers for at most %d databases", PRM_MAX_WORKERS)));
					continue;
				}
				memset(&dbs[ndbs], 0, sizeof(LauncherDb));
				dbs[ndbs].name = MemoryContextStrdup(TopMemoryContext, name);
				found = ndbs++;
			}
			for (kind = 0; kind < PRM_PROCESS_KINDS; kind++)
				PrmLauncherKeep(&dbs[found], kind, &timeout_ms);
		}
		/* a list that cannot be read stops nobody */
		if (listed)
			ndbs = PrmLauncherStopUnlisted(dbs, ndbs, dblist);
		list_free(dblist);
		pfree(raw);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* Is prm installed in the worker's database?  In its own transaction. */
static bool
PrmWorkerExtensionInstalled(void)
{
	bool installed;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	installed = OidIsValid(get_extension_oid("prm", true));
	if (installed)
	{
		/* and updated to a version with the job steps */
		PushActiveSnapshot(GetTransactionSnapshot());
		PrmSpiConnect();
		installed = SPI_execute("SELECT 1 FROM pg_catalog.pg_proc p"
								" JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
								" WHERE n.nspname = 'prm' AND p.proname = 'run_due_jobs'",
								true, 1) == SPI_OK_SELECT &&
					SPI_processed == 1;
		PrmSpiFinish();
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	return installed;
}

/*
 * Run one job step in a transaction of its own and return what it did (0
 * when it was not due); on error log it, roll back, record the error and
 * return -1.
 */
static int64
PrmWorkerRunStep(int step, MemoryContext loop_ctx)
{
	volatile bool  ok = true;
	volatile int64 done = 0;
	char *volatile message = NULL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, PrmJobName(step));
		in_step = true;
		if (got_sigterm)
		{
			InterruptPending = true;
			ProcDiePending = true;
		}
		PrmSpiConnect();
		done = Max(PrmRunJob(step), 0);
		in_step = false;
		PrmSpiFinish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData *edata;

		in_step = false;
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(loop_ctx);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		RESUME_INTERRUPTS();
		message = edata->message;
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(loop_ctx);

	if (!ok)
	{
		ereport(LOG,
				(errmsg("prm worker: step \"%s\" failed and was rolled back; the other steps go on",
						PrmJobName(step))));
		/* record the failure; if even that fails, the log has it */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PG_TRY();
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			PrmSpiConnect();
			PrmRecordJobError(step, message);
			PrmSpiFinish();
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
		PG_CATCH();
		{
			HOLD_INTERRUPTS();
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			RESUME_INTERRUPTS();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(loop_ctx);
	}
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok ? done : -1;
}

/* The next deadline, read in a transaction of its own (0: none). */
static TimestampTz
PrmWorkerNextDeadline(MemoryContext loop_ctx)
{
	TimestampTz deadline = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		PrmSpiConnect();
		deadline = PrmNextDeadline();
		PrmSpiFinish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		RESUME_INTERRUPTS();
		deadline = 0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(loop_ctx);
	return deadline;
}

/*
 * A worker: run the due steps, sleep until the next deadline, again.
 */
void
prm_worker_main(Datum main_arg)
{
	char		  dbname[BGW_EXTRALEN];
	MemoryContext loop_ctx;
	long		  backoff_ms;
	int			  i,
		mine = -1;

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, PrmWorkerSigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(dbname, NULL, 0);
	pgstat_report_appname("prm worker");
	/* the steps' SQL is schema-qualified; operators resolve in pg_catalog only */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	if (prm_shared == NULL)
		elog(ERROR, "prm worker started without prm's shared memory");
	SpinLockAcquire(&prm_shared->mutex);
	for (i = 0; i < PRM_MAX_WORKERS && mine < 0; i++)
		if (prm_shared->slots[i].pid == 0)
		{
			mine = i;
			prm_shared->slots[i].pid = MyProcPid;
			prm_shared->slots[i].dboid = MyDatabaseId;
			prm_shared->slots[i].latch = MyLatch;
			prm_shared->slots[i].sleep_until = 0;
			prm_shared->slots[i].started_at = GetCurrentTimestamp();
			prm_shared->slots[i].last_round_at = 0;
		}
	SpinLockRelease(&prm_shared->mutex);
	if (mine < 0)
		elog(ERROR, "no free prm worker slot");
	before_shmem_exit(PrmWorkerDetach, (Datum) 0);

	ereport(LOG, (errmsg("prm worker started for database \"%s\"", dbname)));
	backoff_ms = 0;
	loop_ctx = AllocSetContextCreate(TopMemoryContext, "prm worker loop",
									 ALLOCSET_DEFAULT_SIZES);

	while (!got_sigterm)
	{
		TimestampTz deadline = 0;
		TimestampTz now;
		long		timeout_ms = prm_worker_max_sleep * 1000L;
		int64		work = 0;
		bool		failed = false;
		TimestampTz round_start;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			timeout_ms = prm_worker_max_sleep * 1000L;
		}
		MemoryContextReset(loop_ctx);
		MemoryContextSwitchTo(loop_ctx);

		SpinLockAcquire(&prm_shared->mutex);
		prm_shared->slots[mine].sleep_until = 0;
		SpinLockRelease(&prm_shared->mutex);

		round_start = GetCurrentTimestamp();
		if (prm_worker_enabled && PrmWorkerExtensionInstalled())
		{
			for (i = 0; i < PrmJobCount() && !got_sigterm; i++)
			{
				int64 done = PrmWorkerRunStep(i, loop_ctx);

				if (done < 0)
					failed = true;
				else
					work += done;
			}
			deadline = PrmWorkerNextDeadline(loop_ctx);
		}

		now = GetCurrentTimestamp();
		if (deadline != 0)
		{
			long until = (long) ((deadline - now) / 1000);

			/* work already due: run again soon, but never spin */
			timeout_ms = Max(Min(until + 5, timeout_ms), 100L);

			/*
			 * Work that was already due when the round began and that the
			 * round could not move (a step failing, or every due row locked
			 * by a claim in progress): back off,
			 * doubling up to PRM_WORKER_MAX_BACKOFF_MS, so that a broken
			 * template is not retried and logged ten times a second.
			 */
			if (deadline <= round_start && (failed || work == 0))
			{
				backoff_ms = backoff_ms ? Min(backoff_ms * 2, PRM_WORKER_MAX_BACKOFF_MS) : 200;
				timeout_ms = Max(timeout_ms, backoff_ms);
			}
			else
				backoff_ms = 0;
		}
		SpinLockAcquire(&prm_shared->mutex);
		prm_shared->slots[mine].sleep_until = now + (TimestampTz) timeout_ms * 1000;
		if (prm_worker_enabled)
		{
			prm_shared->slots[mine].last_round_at = now;
			prm_shared->slots[mine].last_round_failed = failed;
		}
		SpinLockRelease(&prm_shared->mutex);

		if (got_sigterm)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	ereport(LOG, (errmsg("prm worker for database \"%s\" shutting down", dbname)));
	proc_exit(0);
}
