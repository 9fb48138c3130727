/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  The time-driven steps of prm, run by the background worker (each step
 *	  in its own transaction) or by prm.run_due_jobs() from pg_cron (each
 *	  step in its own subtransaction), and the deadline the worker sleeps to.
 *
 * Every step is bounded: it handles at most a fixed number of rows and
 * leaves the rest for the next run, which then comes at once because the
 * next deadline is already due.  A step that fails is logged and rolled
 * back alone; the other steps still run.  Each step records its last run in
 * prm.job_run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "prm.h"
#include "ticket.h"
#include "monitor.h"
#include "journey.h"
#include "reengagement.h"

PG_FUNCTION_INFO_V1(prm_run_due_jobs);
PG_FUNCTION_INFO_V1(prm_next_deadline);
PG_FUNCTION_INFO_V1(prm_schedule_with_pg_cron);

static int64 JobExpireOffers(void);
static int64 JobDueBatches(void);
static int64 JobReleaseLeases(void);
static int64 JobNotifyDueMessages(void);
static int64 JobArchiveMessages(void);
static int64 JobRecalculate(void);
static int64 JobMatchingFollowUps(void);
static int64 JobRetention(void);
static int64 JobConversationTimers(void);
static int64 JobTicketDeadlines(void);
static int64 JobMonitorAlerts(void);
static int64 JobMonitorReminders(void);
static int64 JobMonitorSummaries(void);
static int64 JobJourneySteps(void);
static int64 JobPatientStatsDue(void);

typedef struct JobStep
{
	const char *name;
	int64 (*run)(void);
} JobStep;

static const JobStep job_steps[] = {
	{"expire_offers", JobExpireOffers},
	{"send_due_batches", JobDueBatches},
	{"release_leases", JobReleaseLeases},
	{"notify_due_messages", JobNotifyDueMessages},
	{"archive_messages", JobArchiveMessages},
	{"recalculate_priorities", JobRecalculate},
	{"matching_follow_ups", JobMatchingFollowUps},
	{"apply_retention", JobRetention},
	{"conversation_timers", JobConversationTimers},
	{"ticket_deadlines", JobTicketDeadlines},
	/* companion monitoring (monitor_alert.c, monitor_reminder.c) */
	{"monitor_alerts", JobMonitorAlerts},
	{"monitor_reminders", JobMonitorReminders},
	{"monitor_summaries", JobMonitorSummaries},
	/* journeys: actions, waits and advances that are due (journey.c) */
	{"journey_steps", JobJourneySteps},
	/* reengagement: levels and risks the clock changes (reengagement_tally.c) */
	{"patient_stats_due", JobPatientStatsDue},
};

/* When a step last ran (0 if never). */
static TimestampTz
JobLastRun(const char *name)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	bool			  isnull;
	Datum			  d;

	PrmPrepare(&plan, "SELECT j.last_run_at FROM prm.job_run j WHERE j.job = $1",
			   1, (Oid[]){TEXTOID});
	values[0] = CStringGetTextDatum(name);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		return 0;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* Record a step's run. */
static void
JobRecord(const char *name, int64 result, const char *error)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};

	PrmPrepare(&plan,
			   "INSERT INTO prm.job_run (job, last_run_at, last_result, last_error)"
			   " VALUES ($1, pg_catalog.now(), $2, $3)"
			   " ON CONFLICT (job) DO UPDATE SET last_run_at = EXCLUDED.last_run_at,"
			   "   last_result = EXCLUDED.last_result, last_error = EXCLUDED.last_error",
			   3, (Oid[]){TEXTOID, INT8OID, TEXTOID});
	values[0] = CStringGetTextDatum(name);
	values[1] = Int64GetDatum(result);
	if (error)
		values[2] = CStringGetTextDatum(error);
	else
		nulls[2] = 'n';
	PrmExecute(plan, values, nulls, false, 0);
}

static int64
JobExpireOffers(void)
{
	return PrmExpireOffers(GetCurrentTransactionStartTimestamp(), NULL, 0, 1000);
}

static int64
JobDueBatches(void)
{
	return PrmSendDueBatches(500);
}

static int64
JobReleaseLeases(void)
{
	return PrmReleaseExpiredLeases(1000);
}

/*
 * Wake senders while due messages wait (retries and quiet hours ending
 * included): one NOTIFY per channel with due queued messages, whatever made
 * them due and whenever that was committed.
 */
static int64
JobNotifyDueMessages(void)
{
	static SPIPlanPtr plan = NULL;
	int				  n,
		i;

	PrmPrepare(&plan,
			   "SELECT c.channel FROM (VALUES ('sms'), ('whatsapp'), ('email'), ('voice'), ('push')) c(channel)"
			   " WHERE EXISTS (SELECT 1 FROM prm.outbound_message m"
			   "                WHERE m.status = 'queued' AND m.channel = c.channel"
			   "                  AND m.not_before <= pg_catalog.now())",
			   0, NULL);
	n = PrmExecute(plan, NULL, NULL, false, 0);
	for (i = 0; i < n; i++)
		PrmNotifyOnce(psprintf("prm_outbox_%s", PrmGetText(i, 1)));
	return n;
}

static int64
JobArchiveMessages(void)
{
	return PrmArchiveMessages(5000);
}

/*
 * Rescore the entries whose score changes now by the passage of time alone
 * (their deadline, score_due_at): at most 10,000 per run; the next run comes
 * at once while more are due.
 */
static int64
JobRecalculate(void)
{
	return PrmRescoreDue(10000);
}

/* Call tasks for therapist e-mails unanswered for 7 days. */
static int64
JobMatchingFollowUps(void)
{
	return PrmMatchingFollowUps();
}

/* Hourly: drop history older than each organization's retention. */
static int64
JobRetention(void)
{
	TimestampTz last = JobLastRun("apply_retention");

	if (last != 0 && GetCurrentTransactionStartTimestamp() - last < USECS_PER_HOUR)
		return -1; /* not due */
	/* companion monitoring: the activity log has a retention of its own */
	return PrmApplyRetention() + MonActivityRetention(10000);
}

/* Due inactivity deadlines and escalation steps, 1,000 of each per run. */
static int64
JobMonitorAlerts(void)
{
	return MonAlertStep(1000);
}

/* Reminder occurrences created ahead, sent, missed: 1,000 of each per run. */
static int64
JobMonitorReminders(void)
{
	return MonReminderStep(1000);
}

/* Caregivers' daily summaries, 500 per run. */
static int64
JobMonitorSummaries(void)
{
	return MonSummaryStep(500);
}

/* Journey instances whose wait ended or that are due to run their stage. */
static int64
JobJourneySteps(void)
{
	return PrmJourneyDueStep(500);
}

/* Statistics rows whose level, risk or next appointment the clock changed. */
static int64
JobPatientStatsDue(void)
{
	return PrmAdvancePatientStats(500);
}

/* Conversations whose timer is due become inactive or closed. */
static int64
JobConversationTimers(void)
{
	return PrmConversationTimers(1000);
}

/* SLA breaches and auto-closes of tickets that are due. */
static int64
JobTicketDeadlines(void)
{
	return PrmTicketDueStep(500);
}

/* Number of steps. */
int
PrmJobCount(void)
{
	return (int) lengthof(job_steps);
}

/* Name of step i. */
const char *
PrmJobName(int i)
{
	Assert(i >= 0 && i < (int) lengthof(job_steps));
	return job_steps[i].name;
}

/*
 * Run step i in the current transaction (inside SPI) and record it; returns
 * what it did (-1: not due).
 */
int64
PrmRunJob(int i)
{
	int64 result;

	Assert(i >= 0 && i < (int) lengthof(job_steps));
	(void) PrmFillTakeSweepError();
	result = job_steps[i].run();
	/* a slot that failed alone is reported as the step's error */
	if (result >= 0)
		JobRecord(job_steps[i].name, result, PrmFillTakeSweepError());
	return result;
}

/* Record a step's failure (in a fresh transaction of the caller's). */
void
PrmRecordJobError(int i, const char *message)
{
	JobRecord(job_steps[i].name, -1, message);
}

/* A step (for PrmRunInSubtransaction, which connects SPI). */
static int64
JobRunInSpi(void *arg)
{
	return PrmRunJob(*(int *) arg);
}

typedef struct JobErrorArg
{
	int			step;
	const char *message;
} JobErrorArg;

/* Record a step's error (for PrmRunInSubtransaction, which connects SPI). */
static int64
JobRecordErrorInSpi(void *arg)
{
	JobErrorArg *e = (JobErrorArg *) arg;

	PrmRecordJobError(e->step, e->message);
	return 0;
}

/*
 * prm.run_due_jobs() RETURNS jsonb
 *	  Every step in a subtransaction of its own: a failing step is rolled
 *	  back alone, reported in the result and logged as a WARNING.  A query
 *	  cancel or statement_timeout is not a step's failure: it ends the call
 *	  (PrmRunInSubtransaction re-raises it).
 */
Datum
prm_run_due_jobs(PG_FUNCTION_ARGS)
{
	StringInfoData out;
	int			   i;
	Datum		   result;

	PrmSpiConnect();
	if (!PrmCallerIsPrivileged())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for prm.run_due_jobs()"),
				 errhint("It works for every organization; run it as a superuser or the extension owner, as pg_cron does.")));
	PrmSpiFinish();

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	for (i = 0; i < (int) lengthof(job_steps); i++)
	{
		ErrorData  *edata;
		char	   *error = NULL;
		int64		done = 0;
		int64		ignored;
		JobErrorArg arg;

		edata = PrmRunInSubtransaction(JobRunInSpi, &i, &done);
		if (edata != NULL)
		{
			error = pstrdup(edata->message);
			ereport(WARNING,
					(errmsg("prm job step \"%s\" failed: %s", job_steps[i].name, edata->message)));
			FreeErrorData(edata);
			/* remember the failure, in a subtransaction of its own */
			arg.step = i;
			arg.message = error;
			edata = PrmRunInSubtransaction(JobRecordErrorInSpi, &arg, &ignored);
			if (edata != NULL)
				FreeErrorData(edata);
		}

		if (i > 0)
			appendStringInfoString(&out, ", ");
		escape_json(&out, job_steps[i].name);
		if (error)
			appendStringInfo(&out, ": {\"error\": %s}", PrmJsonString(error));
		else if (done < 0)
			appendStringInfoString(&out, ": null");
		else
			appendStringInfo(&out, ": %lld", (long long) done);
	}
	appendStringInfoChar(&out, '}');
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data));
	PG_RETURN_DATUM(result);
}

/*
 * The earliest deadline any step knows of (0 if none).  Inside SPI.  Slots
 * locked by someone else right now (a claim, an open transaction that
 * filled them) are passed over, and a slot backing off after a failure
 * counts from the end of its back-off: neither keeps the deadline in the
 * past, which would make the worker back off for every organization.
 */
TimestampTz
PrmNextDeadline(void)
{
	static SPIPlanPtr plan = NULL;
	bool			  isnull;
	Datum			  d;

	PrmPrepare(&plan,
			   "SELECT LEAST("
			   "  (SELECT GREATEST(o.hold_until, s.sweep_retry_at) FROM prm.offer o"
			   "     JOIN prm.slot s ON s.org_id = o.org_id AND s.id = o.slot_id"
			   "    WHERE o.status = 'open' ORDER BY 1 LIMIT 1 FOR NO KEY UPDATE OF s SKIP LOCKED),"
			   "  (SELECT s.next_batch_at FROM prm.slot s WHERE s.fill_status = 'pending'"
			   "    ORDER BY s.next_batch_at LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED),"
			   "  (SELECT pg_catalog.min(m.lease_expires_at) FROM prm.outbound_message m WHERE m.status = 'sending'),"
			   "  (SELECT pg_catalog.min(m.not_before) FROM prm.outbound_message m"
			   "    WHERE m.status = 'queued' AND m.not_before > pg_catalog.now()),"
			   /*
				* scores change by days: rescore them a minute at a time, so a
				* long waitlist does not wake the worker several times a second
				*/
			   "  (SELECT pg_catalog.date_trunc('minute', w.score_due_at) + interval '1 minute'"
			   "     FROM prm.waitlist_entry w WHERE w.status = 'waiting' AND w.score_due_at IS NOT NULL"
			   "    ORDER BY w.score_due_at LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED),"
			   "  (SELECT c.state_due_at FROM prm.conversation c WHERE c.state <> 'closed'"
			   "    ORDER BY c.state_due_at LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED),"
			   /* tickets: SLA breaches and auto-closes */
			   "  (SELECT t.sla_next_due_at FROM prm.ticket t WHERE t.sla_next_due_at IS NOT NULL"
			   "    ORDER BY t.sla_next_due_at LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED),"
			   /* companion monitoring: inactivity, escalation, reminders, summaries */
			   "  (SELECT pg_catalog.min(m.next_due_at) FROM prm.monitoring m WHERE m.next_due_at IS NOT NULL),"
			   "  (SELECT pg_catalog.min(a.next_escalation_at) FROM prm.alert a WHERE a.status = 'open'),"
			   "  (SELECT pg_catalog.min(r.fill_due_at) FROM prm.reminder r WHERE r.status = 'active'),"
			   "  (SELECT pg_catalog.min(o.next_due_at) FROM prm.reminder_occurrence o"
			   "    WHERE o.status IN ('scheduled', 'sent')),"
			   "  (SELECT pg_catalog.min(c.summary_due_at) FROM prm.caregiver c WHERE c.summary_due_at IS NOT NULL),"
			   /* journeys: stage actions, waits, advances */
			   "  (SELECT pg_catalog.min(i.due_at) FROM prm.journey_instance i"
			   "    WHERE i.status = 'active' AND i.due_at IS NOT NULL),"
			   "  (SELECT pg_catalog.min(p.retry_at) FROM prm.journey_pending_event p),"
			   /* reengagement: a level, risk or next appointment the clock changes */
			   "  (SELECT s.changes_at FROM prm.patient_stats s WHERE s.changes_at IS NOT NULL"
			   "    ORDER BY s.changes_at LIMIT 1))",
			   0, NULL);
	PrmExecute(plan, NULL, NULL, true, 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(d);
}

/*
 * prm.next_deadline() RETURNS timestamptz
 */
Datum
prm_next_deadline(PG_FUNCTION_ARGS)
{
	TimestampTz deadline;

	PrmSpiConnect();
	if (!PrmCallerIsPrivileged())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for prm.next_deadline()"),
				 errdetail("It reports deadlines of every organization."),
				 errhint("Run it as a superuser or the extension owner.")));
	deadline = PrmNextDeadline();
	PrmSpiFinish();
	if (deadline == 0)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(deadline);
}

/*
 * prm.schedule_with_pg_cron(schedule text) RETURNS bigint
 *	  Runs as the caller, so pg_cron's own permission checks apply.
 */
Datum
prm_schedule_with_pg_cron(PG_FUNCTION_ARGS)
{
	char	  *schedule = PrmTextArg(fcinfo, 0, "schedule", 100);
	Datum	   values[3];
	bool	   isnull;
	int64	   jobid;
	SPIPlanPtr plan;

	PrmSpiConnect();
	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for pg_cron");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pg_cron is not installed in this database"),
				 errhint("Run CREATE EXTENSION pg_cron in the database named by cron.database_name, or preload prm to use its worker instead.")));
	plan = SPI_prepare("SELECT cron.schedule($1, $2, $3)", 3, (Oid[]){TEXTOID, TEXTOID, TEXTOID});
	if (plan == NULL)
		elog(ERROR, "could not prepare cron.schedule");
	values[0] = CStringGetTextDatum("prm_run_due_jobs");
	values[1] = CStringGetTextDatum(schedule);
	values[2] = CStringGetTextDatum("SELECT prm.run_due_jobs()");
	if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "cron.schedule did not return a job id");
	jobid = PrmGetInt64(0, 1, &isnull);
	PrmSpiFinish();
	PG_RETURN_INT64(jobid);
}
