/*-------------------------------------------------------------------------
 *
 * monitor_alert.c
 *	  Alerts of companion monitoring: the inactivity deadline, opening an
 *	  alert (one per patient and kind, a repeat counts), escalation down the
 *	  care circle, acknowledgement and resolution, and the messages to
 *	  caregivers.
 *
 * Escalation, PagerDuty-style.  An alert starts at escalation_position 0
 * and at once asks the first caregiver of the circle whose alert_threshold
 * it reaches (a caregiver below whom it falls is passed over, recorded as
 * 'skipped').  next_escalation_at is then escalation_wait later; when it
 * comes with the alert still open, the next such caregiver is asked.  After
 * the last one the alert starts again at the top when the patient's
 * escalation_loop is on (at most MON_MAX_ROUNDS rounds), else it stays open
 * with no further step.  An acknowledgement or a resolution clears
 * next_escalation_at.  Quiet hours of a caregiver hold the message of any
 * alert but a critical one until they end; escalation does not wait for
 * them, so the next caregiver is asked on time.
 *
 * Locking: every change of an alert locks its row first (the steps with
 * SKIP LOCKED and a re-checked status), so an acknowledgement racing an
 * escalation step either comes first (the step skips or no longer sees an
 * open alert) or waits for the step's message and then stops the next one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "monitor.h"

#define MON_MAX_ROUNDS 10

static void		   MonEscalate(int64 org_id, int64 alert_id);
static TimestampTz MonTell(int64 org_id, int64 alert_id, int64 caregiver_id,
						   const char *purpose, bool critical, const char *text,
						   const char *dedup);
static TimestampTz MonDeadline(TimestampTz ref, int64 threshold, bool has_active,
							   TimeADT start, TimeADT end, const char *tz);
static char		  *MonAlertText(int64 org_id, int64 patient_id, const char *kind,
								bool resolved);

/*
 * Tell a caregiver about an alert on each channel they enabled, held by
 * their quiet hours unless critical; records each message in
 * prm.alert_notification.  Returns when the first one may go out (0: none
 * sent).  Inside SPI.
 */
static TimestampTz
MonTell(int64 org_id, int64 alert_id, int64 caregiver_id, const char *purpose,
		bool critical, const char *text, const char *dedup)
{
	static SPIPlanPtr		 plan = NULL;
	static SPIPlanPtr		 note_plan = NULL;
	static const char *const chans[] = {"sms", "email", "push"};
	Datum					 values[7];
	char					 nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char					*addr[3];
	bool					 on[3];
	bool					 quiet;
	char					*tz;
	TimestampTz				 now = GetCurrentTransactionStartTimestamp();
	TimestampTz				 release = now;
	TimestampTz				 first = 0;
	int						 c;

	PrmPrepare(&plan,
			   "SELECT c.phone, c.email, 'caregiver:' || c.id,"
			   "       (c.preferences #>> '{notifications,sms}')::boolean,"
			   "       (c.preferences #>> '{notifications,email}')::boolean AND c.email IS NOT NULL,"
			   "       (c.preferences #>> '{notifications,push}')::boolean,"
			   "       (c.preferences #>> '{quiet_hours,enabled}')::boolean,"
			   "       (c.preferences #>> '{quiet_hours,start}')::time,"
			   "       (c.preferences #>> '{quiet_hours,end}')::time,"
			   "       coalesce(c.timezone, o.timezone)"
			   "  FROM prm.caregiver c JOIN prm.organization o ON o.id = c.org_id"
			   " WHERE c.org_id = $1 AND c.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(caregiver_id);
	if (PrmExecute(plan, values, NULL, true, 1) == 0)
		return 0;
	for (c = 0; c < 3; c++)
	{
		addr[c] = PrmGetText(0, c + 1);
		on[c] = PrmGetText(0, c + 4) != NULL && strcmp(PrmGetText(0, c + 4), "t") == 0;
	}
	quiet = strcmp(PrmGetText(0, 7), "t") == 0;
	tz = PrmGetText(0, 10);
	if (quiet && !critical)
	{
		PrmSettings s;
		bool		isnull;

		memset(&s, 0, sizeof(s));
		s.quiet_hours = true;
		s.quiet_start = DatumGetTimeADT(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 8, &isnull));
		s.quiet_end = DatumGetTimeADT(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 9, &isnull));
		release = PrmQuietRelease(&s, tz, now);
	}

	PrmPrepare(&note_plan,
			   "INSERT INTO prm.alert_notification (org_id, alert_id, caregiver_id, purpose, channel, message_id, not_before)"
			   " VALUES ($1, $2, $3, $4, $5, $6, $7)",
			   7, (Oid[]){INT8OID, INT8OID, INT8OID, TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID});
	for (c = 0; c < 3; c++)
	{
		int64 msg;

		if (!on[c] || addr[c] == NULL)
			continue;
		msg = PrmEnqueue(org_id, chans[c], addr[c], text,
						 strcmp(purpose, "alert") == 0 ? "caregiver_alert" : "caregiver_resolved",
						 0, 0, psprintf("%s:%s", dedup, chans[c]), release);
		values[0] = Int64GetDatum(org_id);
		values[1] = Int64GetDatum(alert_id);
		values[2] = Int64GetDatum(caregiver_id);
		values[3] = CStringGetTextDatum(purpose);
		values[4] = CStringGetTextDatum(chans[c]);
		values[5] = Int64GetDatum(msg);
		values[6] = TimestampTzGetDatum(release);
		PrmExecute(note_plan, values, nulls, false, 0);
		first = release;
	}
	return first;
}

/* The text of an alert message: no clinical details, only who and what. */
static char *
MonAlertText(int64 org_id, int64 patient_id, const char *kind, bool resolved)
{
	static SPIPlanPtr  plan = NULL;
	Datum			   values[2];
	const PrmSettings *s = PrmGetSettings(org_id);
	char			  *who;

	PrmPrepare(&plan, "SELECT p.given_name FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	who = PrmExecute(plan, values, NULL, true, 1) == 1 ? PrmGetText(0, 1) : "your contact";
	if (resolved)
		return psprintf("%s: %s is active again; the alert is closed.", s->name, who);
	if (strcmp(kind, "inactivity") == 0)
		return psprintf("%s: we have had no sign of activity from %s for a while. Please check on them and reply OK to take responsibility.",
						s->name, who);
	return psprintf("%s: %s has not confirmed a reminder. Please check on them and reply OK to take responsibility.",
					s->name, who);
}

/*
 * Open an alert, or count a repeat of the open one of that patient and
 * kind; a new alert is escalated at once.  Returns its id.  Inside SPI.
 */
int64
MonOpenAlert(int64 org_id, int64 patient_id, const char *kind,
			 const char *severity, const char *details_json)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[5];
	bool			  isnull;
	int64			  id;
	bool			  inserted;

	PrmPrepare(&plan,
			   "INSERT INTO prm.alert AS a (org_id, patient_id, kind, severity, details, next_escalation_at)"
			   " VALUES ($1, $2, $3, $4, $5, pg_catalog.now())"
			   " ON CONFLICT (org_id, patient_id, kind) WHERE status <> 'resolved'"
			   " DO UPDATE SET repeat_count = a.repeat_count + 1, last_seen_at = pg_catalog.now(),"
			   "   details = a.details || EXCLUDED.details"
			   " RETURNING a.id, a.xmax = 0",
			   5, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, JSONBOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = CStringGetTextDatum(kind);
	values[3] = CStringGetTextDatum(severity);
	values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(details_json ? details_json : "{}"));
	PrmExecute(plan, values, NULL, false, 1);
	id = PrmGetInt64(0, 1, &isnull);
	inserted = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	PrmEmitEvent(org_id, inserted ? "alert_opened" : "alert_repeated", "alert", id,
				 psprintf("{\"patient_id\": %lld, \"kind\": \"%s\", \"severity\": \"%s\"}",
						  (long long) patient_id, kind, severity));
	PrmNotifyOnce("prm_alert");
	if (inserted)
		MonEscalate(org_id, id);
	return id;
}

/*
 * One escalation step of an open alert: ask the next caregiver of the
 * circle it reaches, and set the next step (see the file's header).
 */
static void
MonEscalate(int64 org_id, int64 alert_id)
{
	static SPIPlanPtr alert_plan = NULL;
	static SPIPlanPtr circle_plan = NULL;
	static SPIPlanPtr next_plan = NULL;
	static SPIPlanPtr skip_plan = NULL;
	Datum			  values[5];
	char			  nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  patient_id;
	int				  severity;
	int				  position,
		rounds;
	Interval *wait;
	char	 *kind;
	bool	  loop;
	int		  n,
		i,
		chosen = -1;
	int64	   *ids;
	int		   *positions;
	int		   *thresholds;
	TimestampTz next = 0;

	PrmPrepare(&alert_plan,
			   "SELECT a.patient_id, a.severity, a.escalation_position, a.escalation_rounds, a.kind,"
			   "       coalesce(m.escalation_wait, interval '15 minutes'), coalesce(m.escalation_loop, false)"
			   "  FROM prm.alert a LEFT JOIN prm.monitoring m ON m.org_id = a.org_id AND m.patient_id = a.patient_id"
			   " WHERE a.org_id = $1 AND a.id = $2 AND a.status = 'open' FOR NO KEY UPDATE OF a",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(alert_id);
	if (PrmExecute(alert_plan, values, NULL, false, 1) == 0)
		return;
	patient_id = PrmGetInt64(0, 1, &isnull);
	severity = MonParseSeverity(PrmGetText(0, 2));
	position = (int) PrmGetInt64(0, 3, &isnull);
	rounds = (int) PrmGetInt64(0, 4, &isnull);
	kind = PrmGetText(0, 5);
	wait = DatumGetIntervalP(SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull), false, sizeof(Interval)));
	loop = strcmp(PrmGetText(0, 7), "t") == 0;

	PrmPrepare(&circle_plan,
			   "SELECT l.caregiver_id, l.position, c.preferences ->> 'alert_threshold'"
			   "  FROM prm.care_link l JOIN prm.caregiver c ON c.org_id = l.org_id AND c.id = l.caregiver_id"
			   " WHERE l.org_id = $1 AND l.patient_id = $2 ORDER BY l.position",
			   2, (Oid[]){INT8OID, INT8OID});
	values[1] = Int64GetDatum(patient_id);
	n = PrmExecute(circle_plan, values, NULL, true, 0);
	ids = palloc(sizeof(int64) * (n + 1));
	positions = palloc(sizeof(int) * (n + 1));
	thresholds = palloc(sizeof(int) * (n + 1));
	for (i = 0; i < n; i++)
	{
		ids[i] = PrmGetInt64(i, 1, &isnull);
		positions[i] = (int) PrmGetInt64(i, 2, &isnull);
		thresholds[i] = MonParseSeverity(PrmGetText(i, 3));
	}
	PrmPrepare(&skip_plan,
			   "INSERT INTO prm.alert_notification (org_id, alert_id, caregiver_id, purpose)"
			   " VALUES ($1, $2, $3, 'skipped')",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	for (i = 0; i < n && chosen < 0; i++)
	{
		if (positions[i] <= position)
			continue;
		if (severity >= thresholds[i])
			chosen = i;
		else if (rounds == 0)
		{
			values[1] = Int64GetDatum(alert_id);
			values[2] = Int64GetDatum(ids[i]);
			PrmExecute(skip_plan, values, NULL, false, 0);
		}
	}
	if (chosen < 0 && loop && rounds + 1 < MON_MAX_ROUNDS)
	{
		for (i = 0; i < n && chosen < 0; i++)
			if (severity >= thresholds[i])
				chosen = i;
		if (chosen >= 0)
			rounds++;
	}
	if (chosen >= 0)
	{
		char *text = MonAlertText(org_id, patient_id, kind, false);

		(void) MonTell(org_id, alert_id, ids[chosen], "alert", severity == MON_SEVERITY_CRITICAL,
					   text, psprintf("alert:%lld:%d:%d", (long long) alert_id, rounds, positions[chosen]));
		position = positions[chosen];
		next = PrmTimestampPlusUsecs(GetCurrentTransactionStartTimestamp(), PrmIntervalUsecs(wait));
		PrmEmitEvent(org_id, "alert_escalated", "alert", alert_id,
					 psprintf("{\"caregiver_id\": %lld, \"position\": %d, \"round\": %d}",
							  (long long) ids[chosen], position, rounds + 1));
	}
	else
		PrmEmitEvent(org_id, "alert_escalation_exhausted", "alert", alert_id, NULL);

	PrmPrepare(&next_plan,
			   "UPDATE prm.alert a SET escalation_position = $3, escalation_rounds = $4, next_escalation_at = $5"
			   " WHERE a.org_id = $1 AND a.id = $2",
			   5, (Oid[]){INT8OID, INT8OID, INT4OID, INT4OID, TIMESTAMPTZOID});
	values[1] = Int64GetDatum(alert_id);
	values[2] = Int32GetDatum(position);
	values[3] = Int32GetDatum(rounds);
	values[4] = TimestampTzGetDatum(next);
	nulls[4] = next == 0 ? 'n' : ' ';
	PrmExecute(next_plan, values, nulls, false, 0);
	if (next != 0)
		PrmWakeWorker(next);
}

/*
 * Acknowledge an alert (caregiver_id 0: by staff).  true if this call
 * acknowledged it; false if it was acknowledged already.  A resolved or
 * unknown alert raises.  Inside SPI.
 */
bool
MonAcknowledge(int64 org_id, int64 alert_id, int64 caregiver_id)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr member_plan = NULL;
	static SPIPlanPtr ack_plan = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	char			 *status;
	bool			  isnull;
	int64			  patient_id;

	PrmPrepare(&lock_plan,
			   "SELECT a.status, a.patient_id FROM prm.alert a WHERE a.org_id = $1 AND a.id = $2 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(alert_id);
	if (PrmExecute(lock_plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("alert %lld does not exist in organization %lld",
						(long long) alert_id, (long long) org_id)));
	status = PrmGetText(0, 1);
	patient_id = PrmGetInt64(0, 2, &isnull);
	if (strcmp(status, "resolved") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("alert %lld is resolved", (long long) alert_id),
				 errdetail("A resolved alert needs no acknowledgement.")));
	if (caregiver_id != 0)
	{
		PrmPrepare(&member_plan,
				   "SELECT 1 FROM prm.care_link l WHERE l.org_id = $1 AND l.patient_id = $2 AND l.caregiver_id = $3",
				   3, (Oid[]){INT8OID, INT8OID, INT8OID});
		values[1] = Int64GetDatum(patient_id);
		values[2] = Int64GetDatum(caregiver_id);
		if (PrmExecute(member_plan, values, NULL, true, 1) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("caregiver %lld is not in the care circle of patient %lld",
							(long long) caregiver_id, (long long) patient_id)));
	}
	if (strcmp(status, "acknowledged") == 0)
		return false;
	PrmPrepare(&ack_plan,
			   "UPDATE prm.alert a SET status = 'acknowledged', acknowledged_at = pg_catalog.now(),"
			   "   acknowledged_by = $3, next_escalation_at = NULL"
			   " WHERE a.org_id = $1 AND a.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[1] = Int64GetDatum(alert_id);
	values[2] = Int64GetDatum(caregiver_id);
	nulls[2] = caregiver_id == 0 ? 'n' : ' ';
	PrmExecute(ack_plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "alert_acknowledged", "alert", alert_id,
				 caregiver_id ? psprintf("{\"caregiver_id\": %lld}", (long long) caregiver_id) : NULL);
	PrmNotifyOnce("prm_alert");
	return true;
}

/*
 * Resolve an alert (why: heartbeat, staff, confirmed) and tell the
 * caregivers who were alerted; an inactivity alert re-arms the patient's
 * deadline.  false if it was resolved already.  Inside SPI.
 */
bool
MonResolve(int64 org_id, int64 alert_id, const char *why)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr told_plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	int64			  patient_id;
	char			 *kind;
	int				  n,
		i;
	int64 *told;
	bool  *critical;
	char  *text;

	PrmPrepare(&plan,
			   "UPDATE prm.alert a SET status = 'resolved', resolved_at = pg_catalog.now(), next_escalation_at = NULL"
			   " WHERE a.org_id = $1 AND a.id = $2 AND a.status <> 'resolved'"
			   " RETURNING a.patient_id, a.kind",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(alert_id);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		return false;
	patient_id = PrmGetInt64(0, 1, &isnull);
	kind = PrmGetText(0, 2);
	PrmEmitEvent(org_id, "alert_resolved", "alert", alert_id,
				 psprintf("{\"by\": \"%s\"}", why));
	PrmNotifyOnce("prm_alert");

	PrmPrepare(&told_plan,
			   "SELECT DISTINCT n.caregiver_id, a.severity = 'critical' FROM prm.alert_notification n"
			   "  JOIN prm.alert a ON a.org_id = n.org_id AND a.id = n.alert_id"
			   " WHERE n.org_id = $1 AND n.alert_id = $2 AND n.purpose = 'alert' AND n.caregiver_id IS NOT NULL",
			   2, (Oid[]){INT8OID, INT8OID});
	n = PrmExecute(told_plan, values, NULL, true, 0);
	told = palloc(sizeof(int64) * (n + 1));
	critical = palloc(sizeof(bool) * (n + 1));
	for (i = 0; i < n; i++)
	{
		told[i] = PrmGetInt64(i, 1, &isnull);
		critical[i] = strcmp(PrmGetText(i, 2), "t") == 0;
	}
	text = MonAlertText(org_id, patient_id, kind, true);
	for (i = 0; i < n; i++)
		(void) MonTell(org_id, alert_id, told[i], "resolved", critical[i], text,
					   psprintf("resolved:%lld:%lld", (long long) alert_id, (long long) told[i]));
	if (strcmp(kind, "inactivity") == 0)
		MonRearm(org_id, patient_id);
	return true;
}

/* Start a patient's inactivity deadline again from now. */
void
MonRearm(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;

	PrmPrepare(&plan,
			   "UPDATE prm.monitoring m SET next_due_at = pg_catalog.now() + m.inactivity_threshold - m.nudge_before"
			   " WHERE m.org_id = $1 AND m.patient_id = $2 AND m.enabled RETURNING m.next_due_at",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	if (PrmExecute(plan, values, NULL, false, 1) == 1)
		PrmWakeWorker(DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
}

/*
 * When silence since ref reaches threshold, counting only the active hours
 * [start, end) local in zone tz when has_active (an end before the start
 * runs across midnight).
 */
static TimestampTz
MonDeadline(TimestampTz ref, int64 threshold, bool has_active, TimeADT start,
			TimeADT end, const char *tz)
{
	int64	  remaining = threshold;
	Timestamp local;
	int64	  into;
	Timestamp midnight;
	int64	  len = end > start ? end - start : USECS_PER_DAY - start + end;
	int		  k;

	if (!has_active)
		return PrmTimestampPlusUsecs(ref, threshold);
	local = MonUtcToLocal(tz, ref);
	into = local % USECS_PER_DAY;
	if (into < 0)
		into += USECS_PER_DAY;
	midnight = local - into;
	for (k = -1; k < 4000; k++)
	{
		Timestamp	ws_local = midnight + (int64) k * USECS_PER_DAY + start;
		TimestampTz ws = MonLocalToUtc(tz, ws_local);
		TimestampTz we = MonLocalToUtc(tz, ws_local + len);
		TimestampTz s;

		if (we <= ref)
			continue;
		s = Max(ws, ref);
		if (we - s >= remaining)
			return s + remaining;
		remaining -= we - s;
	}
	return DT_NOEND;
}

/* One due patient of the inactivity step, as the step read it. */
typedef struct MonDue
{
	int64		org_id;
	int64		patient_id;
	TimestampTz ref;	   /* silence since */
	int64		threshold; /* usecs */
	bool		has_active;
	TimeADT		start;
	TimeADT		end;
	char	   *tz;
	char	   *severity;
	int64		nudge; /* usecs; 0: none */
	bool		nudge_sms;
	bool		nudged; /* this silence was nudged already */
	char	   *phone;	/* the patient's, if they take SMS */
} MonDue;

/* Nudge a silent patient before the deadline: "are you well?". */
static void
MonNudge(const MonDue *d)
{
	const PrmSettings *s = PrmGetSettings(d->org_id);
	bool			   sms = d->nudge_sms && d->phone != NULL;

	(void) PrmEnqueue(d->org_id, sms ? "sms" : "push",
					  sms ? d->phone : psprintf("patient:%lld", (long long) d->patient_id),
					  psprintf("%s: we have not heard from your companion app for a while. Please open it so we know you are well.", s->name),
					  "check_in", d->patient_id, 0,
					  psprintf("nudge:%lld:%s", (long long) d->patient_id, PrmJsonTimestamp(d->ref)), 0);
	PrmEmitEvent(d->org_id, "patient_nudged", "patient", d->patient_id, NULL);
}

/*
 * A due patient: the deadline moves on (to the nudge before it, or to it),
 * the patient is nudged, or the alert opens.  1 if an alert opened.
 */
static int64
MonInactivityItem(const MonDue *d)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[4];
	char			  nulls[4] = {' ', ' ', ' ', 'n'};
	TimestampTz		  now = GetCurrentTransactionStartTimestamp();
	TimestampTz		  deadline = MonDeadline(d->ref, d->threshold, d->has_active, d->start, d->end, d->tz);
	TimestampTz		  next = deadline;
	bool			  overdue = deadline <= now;

	if (!overdue && d->nudge > 0 && !d->nudged && !TIMESTAMP_NOT_FINITE(deadline))
	{
		TimestampTz nudge_at = deadline - d->nudge;

		if (nudge_at <= now)
		{
			MonNudge(d);
			values[3] = TimestampTzGetDatum(d->ref);
			nulls[3] = ' ';
		}
		else
			next = nudge_at;
	}
	PrmPrepare(&plan,
			   "UPDATE prm.monitoring m SET next_due_at = $3, nudged_for = coalesce($4, m.nudged_for)"
			   " WHERE m.org_id = $1 AND m.patient_id = $2",
			   4, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(d->org_id);
	values[1] = Int64GetDatum(d->patient_id);
	values[2] = TimestampTzGetDatum(next);
	if (overdue || TIMESTAMP_NOT_FINITE(next))
		nulls[2] = 'n';
	PrmExecute(plan, values, nulls, false, 0);
	if (!overdue)
		return 0;
	MonOpenAlert(d->org_id, d->patient_id, "inactivity", d->severity,
				 psprintf("{\"silent_since\": %s}", PrmJsonTimestamp(d->ref)));
	return 1;
}

/* Item i of a batch (a PrmItemLoop item). */
static int64
MonBatchItem(void *ctx, int i)
{
	MonBatch *b = (MonBatch *) ctx;

	return b->fn(b, i);
}

/*
 * Item i of a batch failed and was rolled back alone: log it and move its
 * deadline a minute on, so that it neither fails the step nor keeps the
 * worker's deadline in the past.
 */
static void
MonBatchFailed(void *ctx, int i, ErrorData *edata)
{
	MonBatch *b = (MonBatch *) ctx;
	Datum	  values[2];

	ereport(WARNING,
			(errmsg("prm: %s %lld of organization %lld was skipped: %s", b->what,
					(long long) b->ids[i], (long long) b->org_ids[i], edata->message),
			 errhint("The others were processed; this one is tried again in a minute.")));
	PrmSpiConnect();
	PrmPrepare(b->backoff_plan, b->backoff_sql, 2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(b->org_ids[i]);
	values[1] = Int64GetDatum(b->ids[i]);
	PrmExecute(*b->backoff_plan, values, NULL, false, 0);
	PrmSpiFinish();
}

/*
 * Run the n items of batch b, each failing alone (loop.c); returns the sum
 * of their results.
 */
int64
MonRunBatch(MonBatch *b, int n)
{
	PrmItemLoop loop = {MonBatchItem, MonBatchFailed, b, 0, 0, NULL, false};

	(void) PrmRunItems(&loop, n);
	return loop.done;
}

/*
 * Run the n rows of rows (org_id, id first) as a batch of fn, each failing
 * alone.
 */
int64
MonRunRows(SPITupleTable *rows, int n, int64 (*fn)(MonBatch *b, int i),
		   const char *what, const char *backoff_sql, SPIPlanPtr *backoff_plan)
{
	MonBatch b;
	bool	 isnull;
	int		 i;

	b.fn = fn;
	b.arg = rows;
	b.what = what;
	b.backoff_sql = backoff_sql;
	b.backoff_plan = backoff_plan;
	b.org_ids = palloc(sizeof(int64) * (n + 1));
	b.ids = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		b.org_ids[i] = DatumGetInt64(SPI_getbinval(rows->vals[i], rows->tupdesc, 1, &isnull));
		b.ids[i] = DatumGetInt64(SPI_getbinval(rows->vals[i], rows->tupdesc, 2, &isnull));
	}
	return MonRunBatch(&b, n);
}

/* A due patient of the inactivity step (a MonBatch item). */
static int64
MonInactivityBatchItem(MonBatch *b, int i)
{
	return MonInactivityItem(&((MonDue *) b->arg)[i]);
}

/* A due escalation step (a MonBatch item). */
static int64
MonEscalationBatchItem(MonBatch *b, int i)
{
	MonEscalate(b->org_ids[i], b->ids[i]);
	return 1;
}

/*
 * The alert step: due inactivity deadlines (opening alerts or moving the
 * deadline to the last heartbeat's), then due escalation steps; at most
 * limit of each.  Returns the alerts opened plus the steps taken.
 */
int64
MonAlertStep(int limit)
{
	static SPIPlanPtr due_plan = NULL;
	static SPIPlanPtr esc_plan = NULL;
	static SPIPlanPtr inactivity_backoff = NULL;
	static SPIPlanPtr escalation_backoff = NULL;
	MonBatch		  batch;
	MonDue			 *dues;
	Datum			  values[1];
	bool			  isnull;
	int64			  done = 0;
	int				  n,
		i;
	SPITupleTable *tuples;

	PrmPrepare(&due_plan,
			   "SELECT m.org_id, m.patient_id, GREATEST(p.last_heartbeat_at, m.started_at),"
			   "       pg_catalog.date_part('epoch', m.inactivity_threshold) * 1000000,"
			   "       m.active_start, m.active_end, coalesce(p.timezone, o.timezone), m.severity,"
			   "       pg_catalog.date_part('epoch', m.nudge_before) * 1000000, m.nudge_channel = 'sms',"
			   "       m.nudged_for IS NOT DISTINCT FROM GREATEST(p.last_heartbeat_at, m.started_at),"
			   "       CASE WHEN NOT p.sms_opt_out THEN p.phone END"
			   "  FROM prm.monitoring m"
			   "  JOIN prm.patient p ON p.org_id = m.org_id AND p.id = m.patient_id"
			   "  JOIN prm.organization o ON o.id = m.org_id"
			   " WHERE m.next_due_at <= pg_catalog.now()"
			   " ORDER BY m.next_due_at LIMIT $1"
			   " FOR NO KEY UPDATE OF m, p SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	n = PrmExecute(due_plan, values, NULL, false, 0);
	tuples = SPI_tuptable;
	dues = palloc(sizeof(MonDue) * (n + 1));
	batch.org_ids = palloc(sizeof(int64) * (n + 1));
	batch.ids = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		HeapTuple tup = tuples->vals[i];
		TupleDesc desc = tuples->tupdesc;
		MonDue	  d;
		bool	  no_active;

		d.org_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		d.patient_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		d.ref = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
		d.threshold = (int64) DatumGetFloat8(SPI_getbinval(tup, desc, 4, &isnull));
		d.start = DatumGetTimeADT(SPI_getbinval(tup, desc, 5, &no_active));
		d.end = DatumGetTimeADT(SPI_getbinval(tup, desc, 6, &isnull));
		d.has_active = !no_active;
		if (no_active)
			d.start = d.end = 0;
		d.tz = SPI_getvalue(tup, desc, 7);
		d.severity = SPI_getvalue(tup, desc, 8);
		d.nudge = (int64) DatumGetFloat8(SPI_getbinval(tup, desc, 9, &isnull));
		d.nudge_sms = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
		d.nudged = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull));
		d.phone = SPI_getvalue(tup, desc, 12);
		dues[i] = d;
		batch.org_ids[i] = d.org_id;
		batch.ids[i] = d.patient_id;
	}
	batch.fn = MonInactivityBatchItem;
	batch.arg = dues;
	batch.what = "monitored patient";
	batch.backoff_sql = "UPDATE prm.monitoring m SET next_due_at = pg_catalog.now() + interval '1 minute'"
						" WHERE m.org_id = $1 AND m.patient_id = $2";
	batch.backoff_plan = &inactivity_backoff;
	done += MonRunBatch(&batch, n);

	PrmPrepare(&esc_plan,
			   "SELECT a.org_id, a.id FROM prm.alert a"
			   " WHERE a.status = 'open' AND a.next_escalation_at <= pg_catalog.now()"
			   " ORDER BY a.next_escalation_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	n = PrmExecute(esc_plan, values, NULL, false, 0);
	tuples = SPI_tuptable;
	done += MonRunRows(tuples, n, MonEscalationBatchItem, "alert",
					   "UPDATE prm.alert a SET next_escalation_at = pg_catalog.now() + interval '1 minute'"
					   " WHERE a.org_id = $1 AND a.id = $2 AND a.status = 'open'",
					   &escalation_backoff);
	return done;
}
