/*-------------------------------------------------------------------------
 *
 * comms.c
 *	  Messages to a patient through a template: PrmSendToPatient (the core
 *	  the journeys' send action calls too), prm.schedule_message at a time,
 *	  prm.schedule_message_local at a local time of day, prm.cancel_message,
 *	  and prm.patient_communications, a patient's messages both ways.
 *
 * A scheduled message is an outbound message queued with not_before at its
 * time: the outbox's not_before is already a deadline of the worker and of
 * run_due_jobs() (PrmNextDeadline), so scheduling adds no loop and no job
 * step.  Cancelling is allowed while the message is still queued, that is,
 * before a sender claimed it; claims lock the row (SKIP LOCKED), and so
 * does the cancel, so a message is either claimed or cancelled, never both.
 *
 * Local times follow DESIGN.md's daylight-saving rules through
 * MonLocalToUtc / MonNextLocalTime (monitor_time.c): a time in a gap is
 * the first valid minute after it, a time of a repeated hour its first
 * occurrence.  Quiet hours then hold an SMS or WhatsApp message as they
 * hold any other (PrmRecipientCheck).
 *
 * What a message may say: the placeholders of every template ({clinic},
 * {clinic_phone}), and {date} and {time} of the patient's next active
 * appointment, at the clinic (FillFormatAppointment); a template that needs a value the patient does not have
 * keeps the message as refused, with the placeholder named.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/timestamp.h"

#include "comms.h"
#include "fill.h"
#include "monitor.h"
#include "outbox.h"

PG_FUNCTION_INFO_V1(prm_schedule_message);
PG_FUNCTION_INFO_V1(prm_schedule_message_local);
PG_FUNCTION_INFO_V1(prm_cancel_message);
PG_FUNCTION_INFO_V1(prm_patient_communications);

/* How far ahead a message may be scheduled. */
#define COMMS_HORIZON_USECS (366 * USECS_PER_DAY)

/* A patient as a message to them needs it. */
typedef struct CommsPatient
{
	char	   *phone;	 /* NULL: none */
	char	   *email;	 /* NULL: none */
	bool		opted_out;
	bool		erased;
	char	   *tz;
	char	   *language;
	bool		has_next;
	TimestampTz next_at; /* their next active appointment, when has_next */
} CommsPatient;

static void		   CommsLoadPatient(int64 org_id, int64 patient_id, CommsPatient *p);
static const char *CommsAddress(const CommsPatient *p, int64 patient_id, const char *channel,
								char **refusal);
static int64	   CommsScheduleCommon(int64 org_id, int64 patient_id,
									   const char *kind, const char *channel, TimestampTz at,
									   const char *dedup);

/* Read the patient (02000 when there is none).  Inside SPI. */
static void
CommsLoadPatient(int64 org_id, int64 patient_id, CommsPatient *p)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	Datum			  next;

	PrmPrepare(&plan,
			   "SELECT p.phone, p.email, p.sms_opt_out, p.erased_at IS NOT NULL,"
			   "       coalesce(p.timezone, o.timezone), p.language,"
			   "       (SELECT pg_catalog.min(a.starts_at) FROM prm.appointment a"
			   "         WHERE a.org_id = p.org_id AND a.patient_id = p.id"
			   "           AND a.status IN ('proposed', 'pending', 'booked') AND a.starts_at > pg_catalog.now())"
			   "  FROM prm.patient p JOIN prm.organization o ON o.id = p.org_id"
			   " WHERE p.org_id = $1 AND p.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	if (PrmExecute(plan, values, NULL, true, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("patient %lld does not exist in organization %lld",
						(long long) patient_id, (long long) org_id)));
	p->phone = PrmGetText(0, 1);
	p->email = PrmGetText(0, 2);
	p->opted_out = strcmp(PrmGetText(0, 3), "t") == 0;
	p->erased = strcmp(PrmGetText(0, 4), "t") == 0;
	p->tz = PrmGetText(0, 5);
	p->language = PrmGetText(0, 6);
	next = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 7, &isnull);
	p->has_next = !isnull;
	p->next_at = isnull ? 0 : DatumGetTimestampTz(next);
}

/*
 * The patient's address on channel, or NULL with *refusal saying why
 * (erased, no such address, opted out of SMS).
 */
static const char *
CommsAddress(const CommsPatient *p, int64 patient_id, const char *channel, char **refusal)
{
	const char *address;

	*refusal = NULL;
	if (p->erased)
	{
		*refusal = psprintf("patient %lld was erased", (long long) patient_id);
		return NULL;
	}
	if (strcmp(channel, "push") == 0)
		return psprintf("patient:%lld", (long long) patient_id);
	address = strcmp(channel, "email") == 0 ? p->email : p->phone;
	if (address == NULL)
		*refusal = psprintf("patient %lld has no %s", (long long) patient_id,
							strcmp(channel, "email") == 0 ? "e-mail address" : "phone number");
	else if (strcmp(channel, "sms") == 0 && p->opted_out)
	{
		*refusal = psprintf("patient %lld has opted out of SMS", (long long) patient_id);
		address = NULL;
	}
	return address;
}

/* See comms.h. */
int64
PrmSendToPatient(int64 org_id, int64 patient_id, const char *kind, const char *channel,
				 TimestampTz not_before, const char *dedup_key)
{
	CommsPatient   p;
	const char	  *address;
	char		  *refusal = NULL;
	char		  *no_address = NULL;
	char		  *missing = NULL;
	char		  *body;
	PrmTemplateVar vars[2];
	int			   nvars = 0;

	OutboxCheckChannel(channel);
	(void) PrmRequireMessageKind(org_id, kind);
	CommsLoadPatient(org_id, patient_id, &p);
	if (not_before == 0)
		not_before = GetCurrentTransactionStartTimestamp();
	PrmCheckFiniteTimestamp(not_before, "the send time");
	if (p.has_next)
	{
		char *date;
		char *time;

		FillFormatAppointment(PrmGetSettings(org_id), p.next_at, p.tz, &date, &time);
		vars[0].name = "date";
		vars[0].value = date;
		vars[1].name = "time";
		vars[1].value = time;
		nvars = 2;
	}
	body = PrmRenderIfPossible(org_id, kind, channel, p.language, vars, nvars, &missing);
	if (body == NULL)
	{
		refusal = psprintf("the template of kind %s needs {%s}, which patient %lld has no value for%s",
						   kind, missing, (long long) patient_id,
						   strcmp(missing, "date") == 0 || strcmp(missing, "time") == 0
							   ? " (no upcoming appointment)"
							   : "");
		body = "";
	}
	address = CommsAddress(&p, patient_id, channel, &no_address);
	if (refusal == NULL)
		refusal = no_address;
	if (refusal == NULL)
		not_before = PrmRecipientCheck(org_id, channel, address, patient_id, not_before, &refusal);
	return PrmEnqueueOrRefuse(org_id, channel, address ? address : "", body, kind, patient_id, 0,
							  dedup_key, not_before, refusal);
}

/*
 * The shared tail of the two schedule functions: connect, authorise, send,
 * and report a queued message as an event.
 */
static int64
CommsScheduleCommon(int64 org_id, int64 patient_id, const char *kind,
					const char *channel, TimestampTz at, const char *dedup)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	int64			  id;

	id = PrmSendToPatient(org_id, patient_id, kind, channel, at, dedup);
	PrmPrepare(&plan,
			   "SELECT m.status, m.not_before FROM prm.outbound_message m WHERE m.org_id = $1 AND m.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(id);
	if (PrmExecute(plan, values, NULL, true, 1) == 1 && strcmp(PrmGetText(0, 1), "queued") == 0)
		PrmEmitEvent(org_id, "message_queued", "outbound_message", id,
					 psprintf("{\"patient_id\": %lld, \"kind\": %s, \"channel\": %s, \"not_before\": %s}",
							  (long long) patient_id, PrmJsonString(kind), PrmJsonString(channel),
							  PrmJsonString(PrmGetText(0, 2))));
	return id;
}

/* Raise 22023 unless at lies between now and the horizon. */
static void
CommsCheckSendTime(TimestampTz at, const char *name)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	PrmCheckFiniteTimestamp(at, name);
	if (at < PrmTimestampPlusUsecs(now, -USECS_PER_MINUTE))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is in the past", name),
				 errhint("Schedule a message for now or later (at most a year ahead).")));
	if (at > PrmTimestampPlusUsecs(now, COMMS_HORIZON_USECS))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is more than a year ahead", name),
				 errhint("Schedule a message at most a year ahead.")));
}

/*
 * prm.schedule_message(org_id, patient_id, kind, channel, send_at,
 *						dedup_key) RETURNS bigint
 */
Datum
prm_schedule_message(PG_FUNCTION_ARGS)
{
	int64		org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64		patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	char	   *kind = PrmTextArg(fcinfo, 2, "kind", 30);
	char	   *channel = PrmTextArg(fcinfo, 3, "channel", 10);
	TimestampTz send_at = PRM_GETARG_TIMESTAMPTZ_NOTNULL(4, "send_at");
	char	   *dedup = PrmTextArgOrNull(fcinfo, 5, "dedup_key", OUTBOX_KEY_MAX);
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	int64		id;

	OutboxCheckChannel(channel);
	CommsCheckSendTime(send_at, "send_at");
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	id = CommsScheduleCommon(org_id, patient_id, kind, channel, Max(send_at, now), dedup);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * prm.schedule_message_local(org_id, patient_id, kind, channel, local_time,
 *							  on_date, dedup_key) RETURNS bigint
 */
Datum
prm_schedule_message_local(PG_FUNCTION_ARGS)
{
	int64		org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64		patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	char	   *kind = PrmTextArg(fcinfo, 2, "kind", 30);
	char	   *channel = PrmTextArg(fcinfo, 3, "channel", 10);
	TimeADT		tod;
	char		*dedup = PrmTextArgOrNull(fcinfo, 6, "dedup_key", OUTBOX_KEY_MAX);
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz at;
	CommsPatient p;
	int64		id;

	PrmArgNotNull(fcinfo, 4, "local_time");
	tod = PG_GETARG_TIMEADT(4);
	if (tod < 0 || tod >= USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("local_time 24:00 is not a time of day"),
				 errhint("Use 00:00 of the next day.")));
	OutboxCheckChannel(channel);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	CommsLoadPatient(org_id, patient_id, &p);
	if (PG_ARGISNULL(5))
		at = MonNextLocalTime(p.tz, tod, now);
	else
	{
		DateADT		on_date = PG_GETARG_DATEADT(5);
		Timestamp	today = MonUtcToLocal(p.tz, now);

		/* bounded before the arithmetic: no date far enough to overflow it */
		if (DATE_NOT_FINITE(on_date))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("on_date must be finite")));
		if ((int64) on_date * USECS_PER_DAY < today - 2 * USECS_PER_DAY ||
			(int64) on_date * USECS_PER_DAY > today + COMMS_HORIZON_USECS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("on_date is out of range"),
					 errdetail("A message is scheduled from today to a year ahead.")));
		at = MonLocalToUtc(p.tz, (Timestamp) on_date * USECS_PER_DAY + tod);
		if (at <= now)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("that local time has passed"),
					 errdetail("It was %s in the patient's time zone %s.",
							   timestamptz_to_str(at), p.tz),
					 errhint("Leave on_date NULL for the next occurrence of the time.")));
	}
	CommsCheckSendTime(at, "the local time");
	id = CommsScheduleCommon(org_id, patient_id, kind, channel, at, dedup);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * prm.cancel_message(org_id, message_id) RETURNS void
 */
Datum
prm_cancel_message(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr history_plan = NULL;
	static SPIPlanPtr cancel_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  message_id = PRM_GETARG_INT64_NOTNULL(1, "message_id");
	Datum			  values[3];
	char			 *status;
	char			 *kind;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&lock_plan,
			   "SELECT m.status, m.kind FROM prm.outbound_message m"
			   " WHERE m.org_id = $1 AND m.id = $2 FOR UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmPrepare(&history_plan,
			   "SELECT h.status, h.kind FROM prm.outbound_message_history h"
			   " WHERE h.org_id = $1 AND h.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(message_id);
	if (PrmExecute(lock_plan, values, NULL, false, 1) == 0 &&
		PrmExecute(history_plan, values, NULL, true, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("outbound message %lld does not exist in organization %lld",
						(long long) message_id, (long long) org_id)));
	status = PrmGetText(0, 1);
	kind = PrmGetText(0, 2);
	if (strcmp(kind, "offer") == 0 || strcmp(kind, "appointment_reminder") == 0 ||
		strcmp(kind, "contact_batch") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("outbound message %lld belongs to %s", (long long) message_id,
						strcmp(kind, "offer") == 0				  ? "an offer"
						: strcmp(kind, "contact_batch") == 0 ? "a therapist contact batch"
															 : "an appointment reminder"),
				 errhint("It is withdrawn with them: cancel the appointment, or leave the offer to expire.")));
	if (strcmp(status, "queued") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("outbound message %lld cannot be cancelled", (long long) message_id),
				 errdetail("%s", strcmp(status, "cancelled") == 0 ? "It is already cancelled."
								 : strcmp(status, "capped") == 0 || strcmp(status, "refused") == 0
									 ? psprintf("It was never queued: it is %s.", status)
									 : psprintf("A sender has it already: its status is %s.", status)),
				 errhint("Only a message still waiting in the queue can be cancelled.")));
	PrmPrepare(&cancel_plan,
			   "UPDATE prm.outbound_message m"
			   "   SET status = 'cancelled', last_error = $3, updated_at = pg_catalog.now()"
			   " WHERE m.org_id = $1 AND m.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	values[2] = CStringGetTextDatum(psprintf("cancelled by %s",
											 GetUserNameFromId(GetOuterUserId(), false)));
	PrmExecute(cancel_plan, values, NULL, false, 0);
	PrmEmitEvent(org_id, "message_cancelled", "outbound_message", message_id, NULL);
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* Raise 22023 unless status is one a communication can have. */
static void
CommsCheckStatus(const char *status)
{
	static const char *const statuses[] = {
		"queued", "sending", "sent", "delivered", "undelivered", "failed", "read",
		"dead", "cancelled", "capped", "refused", "received"};
	int i;

	for (i = 0; i < (int) lengthof(statuses); i++)
		if (strcmp(status, statuses[i]) == 0)
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("status \"%s\" is not recognized", status),
			 errhint("Use queued, sending, sent, delivered, undelivered, failed, read, dead, cancelled, capped, refused, or received for inbound messages.")));
}

/*
 * prm.patient_communications(org_id, patient_id, channel, status, since,
 *							  until, page_size, after) RETURNS TABLE
 *	  Newest first by (at, direction, id); the cursor of a row is
 *	  "<at in microseconds>:<0 inbound, 1 outbound>:<id>".
 */
Datum
prm_patient_communications(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	ReturnSetInfo	 *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	char			 *channel = PrmTextArgOrNull(fcinfo, 2, "channel", 10);
	char			 *status = PrmTextArgOrNull(fcinfo, 3, "status", 20);
	int32			  page_size = PRM_GETARG_INT32_NOTNULL(6, "page_size");
	char			 *after = PrmTextArgOrNull(fcinfo, 7, "after", 80);
	int64			  after_at = 0,
		after_id = 0;
	int			  after_dir = 0;
	Datum		  values[10];
	char		  nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	MemoryContext per_query;
	MemoryContext old;
	uint64		  r;
	int			  i;

	if (channel)
		OutboxCheckChannel(channel);
	if (status)
		CommsCheckStatus(status);
	for (i = 4; i <= 5; i++)
		if (!PG_ARGISNULL(i))
			PrmCheckFiniteTimestamp(PG_GETARG_TIMESTAMPTZ(i), i == 4 ? "since" : "until");
	if (!PG_ARGISNULL(4) && !PG_ARGISNULL(5) && PG_GETARG_TIMESTAMPTZ(4) > PG_GETARG_TIMESTAMPTZ(5))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("since is after until")));
	if (page_size < 1 || page_size > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("page_size %d is out of range", page_size),
				 errdetail("A page holds 1 to 1000 rows.")));
	if (after)
	{
		char extra;

		if (sscanf(after, INT64_FORMAT ":%d:" INT64_FORMAT "%c", &after_at, &after_dir, &after_id,
				   &extra) != 3 ||
			(after_dir != 0 && after_dir != 1) || after_id <= 0 || IS_VALID_TIMESTAMP(after_at) == false)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cursor \"%s\" is not valid", after),
					 errhint("Pass the cursor of the last row of the previous page unchanged.")));
	}

	InitMaterializedSRF(fcinfo, 0);
	per_query = rsinfo->econtext->ecxt_per_query_memory;
	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	PrmPrepare(&plan,
			   "SELECT x.direction, x.id, x.channel, x.kind, x.message_class, x.status, x.reason,"
			   "       x.address, x.body, x.at, x.d"
			   "  FROM (SELECT 'outbound' AS direction, 1 AS d, m.id, m.channel, m.kind, m.message_class,"
			   "               m.status, m.last_error AS reason, m.to_address AS address, m.body,"
			   "               coalesce(m.sent_at, m.not_before) AS at"
			   "          FROM prm.outbound_message m WHERE m.org_id = $1 AND m.patient_id = $2"
			   "        UNION ALL"
			   "        SELECT 'outbound', 1, h.id, h.channel, h.kind, h.message_class, h.status, h.last_error,"
			   "               h.to_address, h.body, coalesce(h.sent_at, h.not_before)"
			   "          FROM prm.outbound_message_history h WHERE h.org_id = $1 AND h.patient_id = $2"
			   "        UNION ALL"
			   "        SELECT 'inbound', 0, i.id, i.channel, NULL, NULL, 'received', NULL,"
			   "               i.from_address, i.body, i.received_at"
			   "          FROM prm.inbound_message i WHERE i.org_id = $1 AND i.patient_id = $2) x"
			   " WHERE ($3::text IS NULL OR x.channel = $3) AND ($4::text IS NULL OR x.status = $4)"
			   "   AND ($5::timestamptz IS NULL OR x.at >= $5) AND ($6::timestamptz IS NULL OR x.at < $6)"
			   "   AND ($7::timestamptz IS NULL OR (x.at, x.d, x.id) < ($7, $8, $9))"
			   " ORDER BY x.at DESC, x.d DESC, x.id DESC"
			   " LIMIT $10",
			   10, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
						   TIMESTAMPTZOID, INT4OID, INT8OID, INT4OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = channel ? CStringGetTextDatum(channel) : (Datum) 0;
	nulls[2] = channel ? ' ' : 'n';
	values[3] = status ? CStringGetTextDatum(status) : (Datum) 0;
	nulls[3] = status ? ' ' : 'n';
	values[4] = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	nulls[4] = PG_ARGISNULL(4) ? 'n' : ' ';
	values[5] = PG_ARGISNULL(5) ? (Datum) 0 : PG_GETARG_DATUM(5);
	nulls[5] = PG_ARGISNULL(5) ? 'n' : ' ';
	values[6] = TimestampTzGetDatum(after_at);
	nulls[6] = after ? ' ' : 'n';
	values[7] = Int32GetDatum(after_dir);
	values[8] = Int64GetDatum(after_id);
	values[9] = Int32GetDatum(page_size);
	PrmExecute(plan, values, nulls, true, 0);

	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple tup = SPI_tuptable->vals[r];
		TupleDesc desc = SPI_tuptable->tupdesc;
		Datum	  out[11];
		bool	  outnull[11];
		bool	  isnull;
		int64	  id;
		int		  c;

		CHECK_FOR_INTERRUPTS();
		for (c = 0; c < 10; c++)
			out[c] = SPI_getbinval(tup, desc, c + 1, &outnull[c]);
		id = DatumGetInt64(out[1]);
		old = MemoryContextSwitchTo(per_query);
		out[10] = CStringGetTextDatum(psprintf(INT64_FORMAT ":%d:" INT64_FORMAT,
											   (int64) DatumGetTimestampTz(out[9]),
											   DatumGetInt32(SPI_getbinval(tup, desc, 11, &isnull)), id));
		outnull[10] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnull);
		MemoryContextSwitchTo(old);
	}
	PrmSpiFinish();
	return (Datum) 0;
}
