/*-------------------------------------------------------------------------
 *
 * reminder.c
 *	  Appointment reminders: scheduling them when an appointment is booked,
 *	  rescheduling when it moves, withdrawing when it is cancelled
 *	  (PrmScheduleReminders, prm.schedule_reminders), and the patient's
 *	  answers to a reminder (PrmReminderReply: C confirms, X cancels).
 *
 * A reminder is a queued outbound message of kind 'appointment_reminder'
 * (dedup key appointment_reminder:<id>; the companion monitoring's
 * reminders use 'reminder') whose not_before is its time: the outbox's
 * not_before is already a deadline of the worker (PrmNextDeadline), so
 * reminders add no loop of their own.
 * prm.appointment_reminder links each message to its appointment, offset
 * and the appointment time it was scheduled for.
 *
 * Invariants:
 *	- PrmScheduleReminders is a reconciliation, safe to call any number of
 *	  times: scheduled reminders that no longer fit (the appointment moved,
 *	  is no longer active, or the offset is gone from the settings) are
 *	  withdrawn and their message cancelled if it is still queued; then each
 *	  offset without a live reminder for the current time gets one, unless
 *	  its time has passed.  One live reminder per appointment and offset (a
 *	  partial unique index).
 *	- Offsets are elapsed time before the appointment ("24 hours" is 24
 *	  real hours, across a daylight-saving change too).  An SMS reminder
 *	  whose time falls in the organization's quiet hours, in the patient's
 *	  time zone, is moved earlier, to the last minute before those quiet hours
 *	  begin, so it never arrives late; a moved time that has already passed
 *	  is not scheduled.  A local time in a daylight-saving gap is read as
 *	  PostgreSQL reads it (moved forward by the gap).
 *	- Reminder texts carry the clinic, date and time only (the template
 *	  placeholders allow nothing else), and ask for C or X: CANCEL stays an
 *	  opt-out keyword.  C and X are answers only while the patient has a
 *	  reminder that went out, is still scheduled, and whose appointment is
 *	  active and ahead; otherwise the reply falls through to the hint.
 *
 * Locking: the appointment row (FOR NO KEY UPDATE) serializes reconciliations
 * of one appointment; a reply locks the sender's patients first (FillAnswer)
 * and then the appointment, the order PrmCancelAppointment keeps.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "fill.h"

PG_FUNCTION_INFO_V1(prm_schedule_reminders);

/* The shortest and longest reminder offset. */
#define REMINDER_MIN_USECS (5 * USECS_PER_MINUTE)
#define REMINDER_MAX_USECS (30 * USECS_PER_DAY)

/* An appointment as its reminders need it. */
typedef struct ReminderAppt
{
	int64		org_id;
	int64		id;
	int64		patient_id;
	TimestampTz starts_at;
	bool		active;	 /* proposed, pending or booked */
	char	   *address; /* the patient's phone or e-mail; NULL: none usable */
	char	   *tz;
	char	   *language;
} ReminderAppt;

static bool		   ReminderLoad(int64 org_id, int64 appointment_id, const char *channel,
								ReminderAppt *a);
static TimestampTz ReminderBeforeQuiet(const PrmSettings *s, const char *tz, TimestampTz t);
static void		   ReminderWithdraw(const ReminderAppt *a, const char *offsets_array);
static bool		   ReminderQueue(const ReminderAppt *a, const char *channel, int64 before,
								 const char *body);
static char		  *ReminderRender(int64 org_id, const char *kind, const char *channel,
								  const char *language, const char *tz, TimestampTz starts_at);

/*
 * Are the reminder tables there?  The library may be newer than the
 * extension's SQL objects until ALTER EXTENSION prm UPDATE has run.
 */
static bool
ReminderInstalled(void)
{
	Oid nsp = get_namespace_oid("prm", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("appointment_reminder", nsp));
}

/*
 * Parse a reminder_offsets value: up to PRM_MAX_REMINDERS items separated by
 * commas, each a whole number and a unit (minutes, hours or days, also
 * "min", "h", "d"), from 5 minutes to 30 days, none twice.  Returns the
 * count with the offsets in usecs, or -1 with *error saying why.
 */
int
PrmParseReminderOffsets(const char *str, int64 *usecs, const char **error)
{
	const char *p = str;
	int			n = 0;

	for (;;)
	{
		int64 number = 0;
		int64 unit;
		char  word[16];
		int	  len = 0;
		int	  i;

		while (*p == ' ')
			p++;
		if (!isdigit((unsigned char) *p))
		{
			*error = "Each offset must be a whole number and a unit, such as \"24 hours\" or \"30 minutes\".";
			return -1;
		}
		while (isdigit((unsigned char) *p) && number < 100000)
			number = number * 10 + (*p++ - '0');
		while (*p == ' ')
			p++;
		while (isalpha((unsigned char) *p) && len < (int) sizeof(word) - 1)
			word[len++] = pg_tolower((unsigned char) *p++);
		word[len] = '\0';
		if (strcmp(word, "minute") == 0 || strcmp(word, "minutes") == 0 || strcmp(word, "min") == 0 ||
			strcmp(word, "mins") == 0)
			unit = USECS_PER_MINUTE;
		else if (strcmp(word, "hour") == 0 || strcmp(word, "hours") == 0 || strcmp(word, "h") == 0)
			unit = USECS_PER_HOUR;
		else if (strcmp(word, "day") == 0 || strcmp(word, "days") == 0 || strcmp(word, "d") == 0)
			unit = USECS_PER_DAY;
		else
		{
			*error = "The unit of an offset must be minutes, hours or days.";
			return -1;
		}
		while (*p == ' ')
			p++;
		if (*p != ',' && *p != '\0')
		{
			*error = "Offsets are separated by commas, such as \"24 hours,2 hours\".";
			return -1;
		}
		if (number * unit < REMINDER_MIN_USECS || number * unit > REMINDER_MAX_USECS)
		{
			*error = "Each offset must be from 5 minutes to 30 days.";
			return -1;
		}
		if (n == PRM_MAX_REMINDERS)
		{
			*error = psprintf("At most %d offsets are allowed.", PRM_MAX_REMINDERS);
			return -1;
		}
		for (i = 0; i < n; i++)
			if (usecs[i] == number * unit)
			{
				*error = "An offset is given twice.";
				return -1;
			}
		usecs[n++] = number * unit;
		if (*p == '\0')
			return n;
		p++;
	}
}

/*
 * The time a reminder due at t goes out: t, or, when t falls in the quiet
 * hours of the patient's time zone tz, the last minute before they began.
 */
static TimestampTz
ReminderBeforeQuiet(const PrmSettings *s, const char *tz, TimestampTz t)
{
	Timestamp local;
	Timestamp target;
	int64	  tod;
	bool	  wraps = s->quiet_start > s->quiet_end;

	if (!s->quiet_hours || s->quiet_start == s->quiet_end)
		return t;
	local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone,
												  CStringGetTextDatum(tz),
												  TimestampTzGetDatum(t)));
	tod = local % USECS_PER_DAY;
	if (tod < 0)
		tod += USECS_PER_DAY;
	if (wraps && tod < s->quiet_end)
		target = local - tod - USECS_PER_DAY + s->quiet_start - USECS_PER_MINUTE;
	else if ((wraps && tod >= s->quiet_start) ||
			 (!wraps && tod >= s->quiet_start && tod < s->quiet_end))
		target = local - tod + s->quiet_start - USECS_PER_MINUTE;
	else
		return t;
	return DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone,
												   CStringGetTextDatum(tz),
												   TimestampGetDatum(target)));
}

/*
 * Lock and read an appointment with its patient's address on channel; false
 * when there is no such appointment.  Inside SPI.  The patient is read by
 * its key for the one appointment (OFFSET 0 keeps the subquery apart): as a
 * plain join, the planner could merge-join the organization's patients in
 * key order, 2.4 ms at 3,000 patients (the YES storm) and linear in them.
 */
static bool
ReminderLoad(int64 org_id, int64 appointment_id, const char *channel, ReminderAppt *a)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;

	PrmPrepare(&plan,
			   "SELECT a.patient_id, a.starts_at, a.status IN ('proposed', 'pending', 'booked'),"
			   "       CASE WHEN $3 = 'email' THEN p.email"
			   "            WHEN NOT p.sms_opt_out THEN p.phone END,"
			   "       coalesce(p.timezone, o.timezone), p.language"
			   "  FROM prm.appointment a"
			   "  CROSS JOIN LATERAL (SELECT p.email, p.phone, p.sms_opt_out, p.timezone, p.language"
			   "                        FROM prm.patient p"
			   "                       WHERE p.org_id = a.org_id AND p.id = a.patient_id OFFSET 0) p"
			   "  JOIN prm.organization o ON o.id = a.org_id"
			   " WHERE a.org_id = $1 AND a.id = $2"
			   "   FOR NO KEY UPDATE OF a",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(appointment_id);
	values[2] = CStringGetTextDatum(channel);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		return false;
	a->org_id = org_id;
	a->id = appointment_id;
	a->patient_id = PrmGetInt64(0, 1, &isnull);
	a->starts_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 2, &isnull));
	a->active = strcmp(PrmGetText(0, 3), "t") == 0;
	a->address = PrmGetText(0, 4);
	a->tz = PrmGetText(0, 5);
	a->language = PrmGetText(0, 6);
	return true;
}

/*
 * Withdraw the scheduled reminders of an appointment that no longer fit:
 * scheduled for another time, of an appointment no longer active, or for an
 * offset not in offsets_array (an interval[] literal; NULL: none fits).
 * Their messages still queued are cancelled.
 */
static void
ReminderWithdraw(const ReminderAppt *a, const char *offsets_array)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[5];
	char			  nulls[5] = {' ', ' ', ' ', ' ', ' '};

	PrmPrepare(&plan,
			   "WITH w AS ("
			   "  UPDATE prm.appointment_reminder r SET status = 'withdrawn', updated_at = pg_catalog.now()"
			   "   WHERE r.org_id = $1 AND r.appointment_id = $2 AND r.status = 'scheduled'"
			   "     AND NOT ($4 AND r.starts_at = $3"
			   "              AND r.remind_before = ANY (coalesce($5::pg_catalog.interval[], '{}')))"
			   "  RETURNING r.message_id)"
			   " UPDATE prm.outbound_message m"
			   "    SET status = 'cancelled', last_error = 'reminder withdrawn', updated_at = pg_catalog.now()"
			   "   FROM w WHERE m.org_id = $1 AND m.id = w.message_id AND m.status = 'queued'",
			   5, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, BOOLOID, TEXTOID});
	values[0] = Int64GetDatum(a->org_id);
	values[1] = Int64GetDatum(a->id);
	values[2] = TimestampTzGetDatum(a->starts_at);
	values[3] = BoolGetDatum(a->active);
	if (offsets_array)
		values[4] = CStringGetTextDatum(offsets_array);
	else
		nulls[4] = 'n';
	PrmExecute(plan, values, nulls, false, 0);
}

/*
 * Queue the reminder of an appointment for the offset before (usecs) unless
 * it has one for its current time already (answered ones count) or its time
 * has passed.  Returns whether it queued one.
 */
static bool
ReminderQueue(const ReminderAppt *a, const char *channel, int64 before, const char *body)
{
	static SPIPlanPtr  insert_plan = NULL;
	static SPIPlanPtr  link_plan = NULL;
	const PrmSettings *s = PrmGetSettings(a->org_id);
	Datum			   values[6];
	bool			   isnull;
	TimestampTz		   due;
	int64			   reminder_id;
	int64			   message_id;

	due = PrmTimestampPlusUsecs(a->starts_at, -before);
	if (strcmp(channel, "sms") == 0) /* quiet hours hold SMS only */
		due = ReminderBeforeQuiet(s, a->tz, due);
	if (due <= GetCurrentTransactionStartTimestamp())
		return false;
	PrmPrepare(&insert_plan,
			   "INSERT INTO prm.appointment_reminder"
			   "  (org_id, appointment_id, remind_before, starts_at, due_at, channel)"
			   " SELECT $1, $2, pg_catalog.make_interval(secs => $3 / 1000000.0), $4, $5, $6"
			   "  WHERE NOT EXISTS (SELECT 1 FROM prm.appointment_reminder r"
			   "                     WHERE r.org_id = $1 AND r.appointment_id = $2 AND r.starts_at = $4"
			   "                       AND r.remind_before = pg_catalog.make_interval(secs => $3 / 1000000.0)"
			   "                       AND r.status <> 'withdrawn')"
			   " RETURNING id",
			   6, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID});
	values[0] = Int64GetDatum(a->org_id);
	values[1] = Int64GetDatum(a->id);
	values[2] = Int64GetDatum(before);
	values[3] = TimestampTzGetDatum(a->starts_at);
	values[4] = TimestampTzGetDatum(due);
	values[5] = CStringGetTextDatum(channel);
	if (PrmExecute(insert_plan, values, NULL, false, 0) == 0)
		return false;
	reminder_id = PrmGetInt64(0, 1, &isnull);

	due = PrmRecipientRules(a->org_id, channel, a->address, a->patient_id, due);
	message_id = PrmEnqueue(a->org_id, channel, a->address, body, "appointment_reminder", a->patient_id, 0,
							psprintf("appointment_reminder:%lld", (long long) reminder_id), due);
	PrmPrepare(&link_plan,
			   "UPDATE prm.appointment_reminder r SET message_id = $3, due_at = $4"
			   " WHERE r.org_id = $1 AND r.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID});
	values[1] = Int64GetDatum(reminder_id);
	values[2] = Int64GetDatum(message_id);
	values[3] = TimestampTzGetDatum(due);
	PrmExecute(link_plan, values, NULL, false, 0);
	return true;
}

/* A message kind about the appointment at starts_at (FillFormatAppointment). */
static char *
ReminderRender(int64 org_id, const char *kind, const char *channel, const char *language,
			   const char *tz, TimestampTz starts_at)
{
	PrmTemplateVar vars[2];
	char		  *date;
	char		  *time;

	FillFormatAppointment(PrmGetSettings(org_id), starts_at, tz, &date, &time);
	vars[0].name = "date";
	vars[0].value = date;
	vars[1].name = "time";
	vars[1].value = time;
	return PrmRender(org_id, kind, channel, language, vars, 2);
}

/*
 * Bring an appointment's reminders in line with its time, its status and
 * the organization's settings (see the file header).  Returns how many it
 * queued.  Must run inside SPI.
 */
int
PrmScheduleReminders(int64 org_id, int64 appointment_id)
{
	const PrmSettings *s;
	const char		  *channel;
	int64			   offsets[PRM_MAX_REMINDERS];
	const char		  *error = NULL;
	int				   n = 0;
	int				   i;
	int				   queued = 0;
	ReminderAppt	   a;
	StringInfoData	   array;
	char			  *body = NULL;

	if (!ReminderInstalled())
		return 0;
	s = PrmGetSettings(org_id);
	channel = s->reminder_channel[0] ? s->reminder_channel : "sms";
	if (!ReminderLoad(org_id, appointment_id, channel, &a))
		return 0;
	if (s->appointment_reminders && s->reminder_offsets[0] != '\0')
		n = PrmParseReminderOffsets(s->reminder_offsets, offsets, &error);
	if (n < 0)
		elog(ERROR, "stored reminder_offsets \"%s\" is invalid: %s", s->reminder_offsets, error);
	initStringInfo(&array);
	appendStringInfoChar(&array, '{');
	for (i = 0; i < n; i++)
		appendStringInfo(&array, "%s\"%lld microseconds\"", i ? "," : "", (long long) offsets[i]);
	appendStringInfoChar(&array, '}');
	ReminderWithdraw(&a, array.data);

	if (!a.active || a.address == NULL || a.starts_at <= GetCurrentTransactionStartTimestamp())
		return 0;
	for (i = 0; i < n; i++)
	{
		if (body == NULL)
			body = ReminderRender(org_id, "reminder", channel, a.language, a.tz, a.starts_at);
		if (ReminderQueue(&a, channel, offsets[i], body))
			queued++;
	}
	return queued;
}

/*
 * prm.schedule_reminders(org_id, appointment_id) RETURNS integer
 *	  Reconcile one appointment's reminders; how many were queued.
 */
Datum
prm_schedule_reminders(PG_FUNCTION_ARGS)
{
	int64 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64 appointment_id = PRM_GETARG_INT64_NOTNULL(1, "appointment_id");
	int	  queued;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_APPOINTMENT, appointment_id, true);
	queued = PrmScheduleReminders(org_id, appointment_id);
	PrmSpiFinish();
	PG_RETURN_INT32(queued);
}

/*
 * Close the reminders of an appointment that went out and are unanswered
 * with status (confirmed or cancelled).
 */
static void
ReminderAnswered(int64 org_id, int64 appointment_id, const char *status)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];

	PrmPrepare(&plan,
			   "UPDATE prm.appointment_reminder r SET status = $3, updated_at = pg_catalog.now()"
			   "  FROM prm.appointment_reminders v"
			   " WHERE r.org_id = $1 AND r.appointment_id = $2 AND r.status = 'scheduled'"
			   "   AND v.org_id = r.org_id AND v.id = r.id AND v.sent",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(appointment_id);
	values[2] = CStringGetTextDatum(status);
	PrmExecute(plan, values, NULL, false, 0);
}

/* Mark an appointment confirmed by its patient. */
static void
ReminderConfirm(int64 org_id, int64 appointment_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "UPDATE prm.appointment a SET confirmed_at = coalesce(a.confirmed_at, pg_catalog.now())"
			   " WHERE a.org_id = $1 AND a.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(appointment_id);
	PrmExecute(plan, values, NULL, false, 0);
	ReminderAnswered(org_id, appointment_id, "confirmed");
	PrmEmitEvent(org_id, "appointment_confirmed", "appointment", appointment_id,
				 psprintf("{\"patient_id\": %lld, \"via\": \"reminder\"}", (long long) patient_id));
}

/*
 * An inbound SMS keyword from the patients behind a number (a bigint[]) as
 * an answer to a reminder: C or CONFIRM confirms, X cancels through
 * PrmCancelAppointment (so the fill engine offers the slot at once).  Only
 * a reminder that went out, is unanswered and is of an active appointment
 * ahead is answered (the soonest such appointment); otherwise returns false
 * and leaves *reply alone.  Inside SPI, the patients locked.
 */
bool
PrmReminderReply(int64 org_id, Datum patients, const char *keyword, const char *language,
				 char **reply)
{
	static SPIPlanPtr plan = NULL;
	bool			  confirm = strcmp(keyword, "C") == 0 || strcmp(keyword, "CONFIRM") == 0;
	Datum			  values[2];
	bool			  isnull;
	int64			  appointment_id;
	int64			  patient_id;
	TimestampTz		  starts_at;
	char			 *tz;

	if ((!confirm && strcmp(keyword, "X") != 0) || !ReminderInstalled())
		return false;
	PrmPrepare(&plan,
			   "SELECT a.id, a.patient_id, a.starts_at, coalesce(p.timezone, o.timezone)"
			   "  FROM prm.appointment_reminders v"
			   "  JOIN prm.appointment a ON a.org_id = v.org_id AND a.id = v.appointment_id"
			   "  JOIN prm.patient p ON p.org_id = a.org_id AND p.id = a.patient_id"
			   "  JOIN prm.organization o ON o.id = a.org_id"
			   " WHERE v.org_id = $1 AND a.patient_id = ANY ($2) AND v.channel = 'sms'"
			   "   AND v.status = 'scheduled' AND v.sent AND v.starts_at = a.starts_at"
			   "   AND a.status IN ('proposed', 'pending', 'booked')"
			   "   AND a.starts_at > pg_catalog.now()"
			   " ORDER BY a.starts_at, a.id LIMIT 1"
			   "   FOR NO KEY UPDATE OF a",
			   2, (Oid[]){INT8OID, INT8ARRAYOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = patients;
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		return false;
	appointment_id = PrmGetInt64(0, 1, &isnull);
	patient_id = PrmGetInt64(0, 2, &isnull);
	starts_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 3, &isnull));
	tz = PrmGetText(0, 4);

	if (confirm)
		ReminderConfirm(org_id, appointment_id, patient_id);
	else
	{
		ReminderAnswered(org_id, appointment_id, "cancelled");
		(void) PrmCancelAppointment(org_id, appointment_id, "cancelled by the patient's reply to a reminder");
	}
	*reply = ReminderRender(org_id, confirm ? "reminder_confirmed" : "reminder_cancelled", "sms",
							language, tz, starts_at);
	return true;
}
