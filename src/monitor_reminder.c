/*-------------------------------------------------------------------------
 *
 * monitor_reminder.c
 *	  Reminders of companion monitoring (medication, exercises,
 *	  appointments) and caregivers' daily summaries.
 *
 * A reminder's schedule is local to the patient: times of day, ISO days
 * of the week, a first and an optional last date.  Its occurrences are
 * created reminder_horizon_days ahead (reminder.fill_due_at is when to
 * create more), each with the instant it is due by DESIGN.md's rules (see
 * MonLocalToUtc: a gap moves forward to the first valid minute, a repeated
 * hour fires once, at its first occurrence; none is skipped, as the unique
 * key (reminder, local date, local time) holds one per local time).
 * An occurrence's next_due_at is its deadline: when scheduled, the time to
 * send it to the patient; when sent, the time it counts as missed
 * (reminder_missed_after later), when the care circle is alerted.
 * Rescheduling withdraws the future scheduled occurrences and creates them
 * again; deleting withdraws every one not yet confirmed or missed.
 *
 * Daily summaries: caregiver.summary_due_at is the next daily_summary_time
 * in the caregiver's zone; the step sends the day's figures of the
 * caregiver's patients (heartbeats, reminders taken and missed, alerts) on
 * their channels -- counts only, no clinical details -- and sets the next.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "monitor.h"

PG_FUNCTION_INFO_V1(prm_add_reminder);
PG_FUNCTION_INFO_V1(prm_reschedule_reminder);
PG_FUNCTION_INFO_V1(prm_delete_reminder);
PG_FUNCTION_INFO_V1(prm_confirm_reminder);

#define MON_MAX_TIMES 24

/* A schedule, parsed. */
typedef struct MonSchedule
{
	int		ntimes;
	TimeADT times[MON_MAX_TIMES];
	int		ndays;
	int		days[7];
	char   *starts; /* "YYYY-MM-DD", or NULL: today */
	char   *ends;	/* or NULL */
} MonSchedule;

static void	 MonParseSchedule(Jsonb *j, MonSchedule *s);
static int64 MonWriteSchedule(int64 org_id, int64 reminder_id, int64 patient_id,
							  const char *title, Jsonb *json, const MonSchedule *s);
static int64 MonFill(int64 org_id, int64 reminder_id);
static char *MonDateArg(JsonbValue *v, const char *key);

/* The date string v of key, checked (22023 / 22007). */
static char *
MonDateArg(JsonbValue *v, const char *key)
{
	char *s;

	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schedule %s must be a date string such as \"2031-01-01\"", key)));
	s = pnstrdup(v->val.string.val, v->val.string.len);
	(void) DirectFunctionCall1(date_in, CStringGetDatum(s));
	return s;
}

/* Parse and check a schedule (22023 naming the key). */
static void
MonParseSchedule(Jsonb *j, MonSchedule *s)
{
	JsonbValue		  *v;
	JsonbIterator	  *it;
	JsonbValue		   e;
	JsonbIteratorToken tok;
	int				   i;
	bool			   seen[8] = {false};

	memset(s, 0, sizeof(*s));
	if (!JB_ROOT_IS_OBJECT(j) || JB_ROOT_IS_SCALAR(j))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schedule must be a JSON object")));
	it = JsonbIteratorInit(&j->root);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		if (tok == WJB_KEY)
		{
			char *k = pnstrdup(e.val.string.val, e.val.string.len);

			if (strcmp(k, "times") != 0 && strcmp(k, "days_of_week") != 0 &&
				strcmp(k, "starts") != 0 && strcmp(k, "ends") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("unknown key \"%s\" in schedule", k),
						 errhint("The keys are: times, days_of_week, starts, ends.")));
		}

	v = getKeyJsonValueFromContainer(&j->root, "times", 5, NULL);
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
		JsonContainerSize(v->val.binary.data) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schedule times must be a non-empty array of \"HH:MM\" strings")));
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
	{
		char   *t;
		TimeADT tod;

		if (tok != WJB_ELEM)
			continue;
		if (e.type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("schedule times must be \"HH:MM\" strings")));
		t = pnstrdup(e.val.string.val, e.val.string.len);
		if (!MonParseClock(t, &tod))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("schedule time \"%s\" is not a time of day", t),
					 errhint("Write it as \"HH:MM\", from \"00:00\" to \"23:59\".")));
		for (i = 0; i < s->ntimes; i++)
			if (s->times[i] == tod)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("schedule time \"%s\" is given twice", t)));
		if (s->ntimes == MON_MAX_TIMES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a schedule has at most %d times a day", MON_MAX_TIMES)));
		s->times[s->ntimes++] = tod;
	}

	v = getKeyJsonValueFromContainer(&j->root, "days_of_week", 12, NULL);
	if (v == NULL || v->type == jbvNull)
	{
		for (i = 1; i <= 7; i++)
			s->days[s->ndays++] = i;
	}
	else
	{
		if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
			JsonContainerSize(v->val.binary.data) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("schedule days_of_week must be a non-empty array of days 1 (Monday) to 7 (Sunday)")));
		it = JsonbIteratorInit(v->val.binary.data);
		while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		{
			int d;

			if (tok != WJB_ELEM)
				continue;
			if (e.type != jbvNumeric)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("schedule days_of_week must hold numbers 1 (Monday) to 7 (Sunday)")));
			d = DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(e.val.numeric)));
			if (d < 1 || d > 7 || seen[d])
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("schedule day %d is not a day of the week or is given twice", d),
						 errhint("Days are ISO: 1 is Monday, 7 is Sunday.")));
			seen[d] = true;
			s->days[s->ndays++] = d;
		}
	}
	v = getKeyJsonValueFromContainer(&j->root, "starts", 6, NULL);
	if (v != NULL && v->type != jbvNull)
		s->starts = MonDateArg(v, "starts");
	v = getKeyJsonValueFromContainer(&j->root, "ends", 4, NULL);
	if (v != NULL && v->type != jbvNull)
		s->ends = MonDateArg(v, "ends");
}

/*
 * Insert (reminder_id 0) or update a reminder with schedule s; the patient's
 * local today stands for a missing start.  Raises 22023 when ends comes
 * before starts.  Inside SPI.
 */
static int64
MonWriteSchedule(int64 org_id, int64 reminder_id, int64 patient_id,
				 const char *title, Jsonb *json, const MonSchedule *s)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[9];
	char			  nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	Datum			 *times = palloc(sizeof(Datum) * s->ntimes);
	Datum			 *days = palloc(sizeof(Datum) * s->ndays);
	int				  i;

	for (i = 0; i < s->ntimes; i++)
		times[i] = TimeADTGetDatum(s->times[i]);
	for (i = 0; i < s->ndays; i++)
		days[i] = Int32GetDatum(s->days[i]);
	if (s->starts && s->ends &&
		DatumGetDateADT(DirectFunctionCall1(date_in, CStringGetDatum(s->ends))) <
			DatumGetDateADT(DirectFunctionCall1(date_in, CStringGetDatum(s->starts))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schedule ends %s before it starts %s", s->ends, s->starts)));
	PrmPrepare(&plan,
			   "WITH z AS (SELECT coalesce(p.timezone, o.timezone) AS tz FROM prm.patient p"
			   "             JOIN prm.organization o ON o.id = p.org_id WHERE p.org_id = $1 AND p.id = $3),"
			   " ins AS (INSERT INTO prm.reminder (org_id, patient_id, title, schedule, times, days_of_week, starts, ends, fill_due_at)"
			   "         SELECT $1, $3, $4, $5, $6, $7, coalesce($8, (pg_catalog.now() AT TIME ZONE z.tz)::date), $9, pg_catalog.now()"
			   "           FROM z WHERE $2 = 0 RETURNING id),"
			   " upd AS (UPDATE prm.reminder r SET schedule = $5, times = $6, days_of_week = $7,"
			   "           starts = coalesce($8, (pg_catalog.now() AT TIME ZONE z.tz)::date), ends = $9,"
			   "           filled_until = NULL, fill_due_at = pg_catalog.now()"
			   "         FROM z WHERE $2 <> 0 AND r.org_id = $1 AND r.id = $2 RETURNING r.id)"
			   " SELECT id FROM ins UNION ALL SELECT id FROM upd",
			   9, (Oid[]){INT8OID, INT8OID, INT8OID, TEXTOID, JSONBOID, TIMEARRAYOID, INT4ARRAYOID, DATEOID, DATEOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(reminder_id);
	values[2] = Int64GetDatum(patient_id);
	values[3] = title ? CStringGetTextDatum(title) : CStringGetTextDatum("-");
	values[4] = JsonbPGetDatum(json);
	values[5] = PointerGetDatum(construct_array(times, s->ntimes, TIMEOID, sizeof(TimeADT), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[6] = PointerGetDatum(construct_array(days, s->ndays, INT4OID, 4, true, TYPALIGN_INT));
	if (s->starts)
		values[7] = DirectFunctionCall1(date_in, CStringGetDatum(s->starts));
	else
		nulls[7] = 'n';
	if (s->ends)
		values[8] = DirectFunctionCall1(date_in, CStringGetDatum(s->ends));
	else
		nulls[8] = 'n';
	if (PrmExecute(plan, values, nulls, false, 1) != 1)
		elog(ERROR, "reminder was not written");
	return PrmGetInt64(0, 1, &isnull);
}

/*
 * Create the occurrences of a reminder up to its horizon (those due from
 * now on); returns how many.  Inside SPI.
 */
static int64
MonFill(int64 org_id, int64 reminder_id)
{
	static SPIPlanPtr  days_plan = NULL;
	static SPIPlanPtr  ins_plan = NULL;
	static SPIPlanPtr  done_plan = NULL;
	const PrmSettings *s = PrmGetSettings(org_id);
	Datum			   values[7];
	bool			   isnull;
	int				   n,
		i;
	int64		   made = 0;
	SPITupleTable *rows;
	TimestampTz	   now = GetCurrentTransactionStartTimestamp();
	TimestampTz	   first = 0;

	PrmPrepare(&days_plan,
			   "WITH r AS (SELECT r.*, coalesce(p.timezone, o.timezone) AS tz FROM prm.reminder r"
			   "             JOIN prm.patient p ON p.org_id = r.org_id AND p.id = r.patient_id"
			   "             JOIN prm.organization o ON o.id = r.org_id"
			   "            WHERE r.org_id = $1 AND r.id = $2 AND r.status = 'active')"
			   " SELECT d::date, t, r.tz, r.patient_id FROM r,"
			   "   pg_catalog.generate_series(GREATEST(r.starts, (pg_catalog.now() AT TIME ZONE r.tz)::date - 1),"
			   "       LEAST(coalesce(r.ends, 'infinity'::date), (pg_catalog.now() AT TIME ZONE r.tz)::date + $3)::timestamp,"
			   "       interval '1 day') d,"
			   "   pg_catalog.unnest(r.times) t"
			   " WHERE pg_catalog.date_part('isodow', d)::int = ANY (r.days_of_week)"
			   " ORDER BY 1, 2",
			   3, (Oid[]){INT8OID, INT8OID, INT4OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(reminder_id);
	values[2] = Int32GetDatum(s->reminder_horizon_days);
	n = PrmExecute(days_plan, values, NULL, false, 0);
	rows = SPI_tuptable;
	PrmPrepare(&ins_plan,
			   "INSERT INTO prm.reminder_occurrence AS x (org_id, reminder_id, patient_id, local_date, local_time, due_at, next_due_at)"
			   " VALUES ($1, $2, $3, $4, $5, $6, $6)"
			   " ON CONFLICT (org_id, reminder_id, local_date, local_time) DO UPDATE"
			   "   SET status = 'scheduled', due_at = EXCLUDED.due_at, next_due_at = EXCLUDED.due_at"
			   " WHERE x.status = 'withdrawn'",
			   6, (Oid[]){INT8OID, INT8OID, INT8OID, DATEOID, TIMEOID, TIMESTAMPTZOID});
	for (i = 0; i < n; i++)
	{
		DateADT		d = DatumGetDateADT(SPI_getbinval(rows->vals[i], rows->tupdesc, 1, &isnull));
		TimeADT		t = DatumGetTimeADT(SPI_getbinval(rows->vals[i], rows->tupdesc, 2, &isnull));
		char	   *tz = SPI_getvalue(rows->vals[i], rows->tupdesc, 3);
		int64		patient_id = DatumGetInt64(SPI_getbinval(rows->vals[i], rows->tupdesc, 4, &isnull));
		TimestampTz due = MonLocalToUtc(tz, (Timestamp) d * USECS_PER_DAY + t);

		if (due < now)
			continue;
		values[2] = Int64GetDatum(patient_id);
		values[3] = DateADTGetDatum(d);
		values[4] = TimeADTGetDatum(t);
		values[5] = TimestampTzGetDatum(due);
		if (PrmExecute(ins_plan, values, NULL, false, 0) > 0)
		{
			made++;
			if (first == 0 || due < first)
				first = due;
		}
	}
	PrmPrepare(&done_plan,
			   "UPDATE prm.reminder r SET filled_until = (pg_catalog.now() AT TIME ZONE z.tz)::date + $3,"
			   "   fill_due_at = pg_catalog.now() + interval '12 hours'"
			   "  FROM (SELECT coalesce(p.timezone, o.timezone) AS tz FROM prm.reminder q"
			   "          JOIN prm.patient p ON p.org_id = q.org_id AND p.id = q.patient_id"
			   "          JOIN prm.organization o ON o.id = q.org_id WHERE q.org_id = $1 AND q.id = $2) z"
			   " WHERE r.org_id = $1 AND r.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT4OID});
	PrmExecute(done_plan, values, NULL, false, 0);
	if (first != 0)
		PrmWakeWorker(first);
	return made;
}

/*
 * prm.add_reminder(org_id, patient_id, title, schedule) RETURNS bigint
 */
Datum
prm_add_reminder(PG_FUNCTION_ARGS)
{
	int64		org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64		patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	char	   *title = PrmTextArg(fcinfo, 2, "title", PRM_MAX_NAME_LEN);
	Jsonb	   *json;
	MonSchedule s;
	int64		id;

	PrmArgNotNull(fcinfo, 3, "schedule");
	json = PG_GETARG_JSONB_P(3);
	MonParseSchedule(json, &s);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	id = MonWriteSchedule(org_id, 0, patient_id, title, json, &s);
	(void) MonFill(org_id, id);
	PrmEmitEvent(org_id, "reminder_added", "reminder", id,
				 psprintf("{\"patient_id\": %lld}", (long long) patient_id));
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/* Lock reminder id of org_id (P0002 if unknown); its patient's id. */
static int64
MonLockReminder(int64 org_id, int64 id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;

	PrmPrepare(&plan,
			   "SELECT r.patient_id FROM prm.reminder r WHERE r.org_id = $1 AND r.id = $2 AND r.status = 'active' FOR UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(id);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("reminder %lld does not exist in organization %lld",
						(long long) id, (long long) org_id)));
	return PrmGetInt64(0, 1, &isnull);
}

/* Withdraw a reminder's occurrences in the given states; how many. */
static int64
MonWithdraw(int64 org_id, int64 id, bool sent_too)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];

	PrmPrepare(&plan,
			   "UPDATE prm.reminder_occurrence o SET status = 'withdrawn', next_due_at = NULL"
			   " WHERE o.org_id = $1 AND o.reminder_id = $2"
			   "   AND (o.status = 'scheduled' OR ($3 AND o.status = 'sent'))",
			   3, (Oid[]){INT8OID, INT8OID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(id);
	values[2] = BoolGetDatum(sent_too);
	return PrmExecute(plan, values, NULL, false, 0);
}

/*
 * prm.reschedule_reminder(org_id, reminder_id, schedule) RETURNS bigint
 */
Datum
prm_reschedule_reminder(PG_FUNCTION_ARGS)
{
	int64		org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64		id = PRM_GETARG_INT64_NOTNULL(1, "reminder_id");
	Jsonb	   *json;
	MonSchedule s;
	int64		patient_id;

	PrmArgNotNull(fcinfo, 2, "schedule");
	json = PG_GETARG_JSONB_P(2);
	MonParseSchedule(json, &s);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	patient_id = MonLockReminder(org_id, id);
	(void) MonWithdraw(org_id, id, false);
	MonWriteSchedule(org_id, id, patient_id, NULL, json, &s);
	(void) MonFill(org_id, id);
	PrmEmitEvent(org_id, "reminder_rescheduled", "reminder", id, NULL);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * prm.delete_reminder(org_id, reminder_id) RETURNS bigint
 */
Datum
prm_delete_reminder(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  id = PRM_GETARG_INT64_NOTNULL(1, "reminder_id");
	Datum			  values[2];
	int64			  n;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	(void) MonLockReminder(org_id, id);
	n = MonWithdraw(org_id, id, true);
	PrmPrepare(&plan,
			   "UPDATE prm.reminder r SET status = 'deleted', fill_due_at = NULL WHERE r.org_id = $1 AND r.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(id);
	PrmExecute(plan, values, NULL, false, 0);
	PrmEmitEvent(org_id, "reminder_deleted", "reminder", id, NULL);
	PrmSpiFinish();
	PG_RETURN_INT64(n);
}

/*
 * prm.confirm_reminder(org_id, occurrence_id) RETURNS void
 */
Datum
prm_confirm_reminder(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  id = PRM_GETARG_INT64_NOTNULL(1, "occurrence_id");
	Datum			  values[2];
	char			 *status;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_WEBHOOK);
	PrmPrepare(&lock_plan,
			   "SELECT o.status FROM prm.reminder_occurrence o WHERE o.org_id = $1 AND o.id = $2 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(id);
	if (PrmExecute(lock_plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("reminder occurrence %lld does not exist in organization %lld",
						(long long) id, (long long) org_id)));
	status = PrmGetText(0, 1);
	if (strcmp(status, "withdrawn") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("reminder occurrence %lld was withdrawn", (long long) id),
				 errdetail("Its reminder was rescheduled or deleted.")));
	if (strcmp(status, "confirmed") != 0)
	{
		PrmPrepare(&plan,
				   "UPDATE prm.reminder_occurrence o SET status = 'confirmed', confirmed_at = pg_catalog.now(),"
				   "   next_due_at = NULL WHERE o.org_id = $1 AND o.id = $2",
				   2, (Oid[]){INT8OID, INT8OID});
		PrmExecute(plan, values, NULL, false, 0);
		PrmEmitEvent(org_id, "reminder_confirmed", "reminder_occurrence", id,
					 strcmp(status, "missed") == 0 ? "{\"late\": true}" : NULL);
	}
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* One due occurrence: send it (scheduled) or count it missed (sent). */
static int64
MonOccurrenceItem(int64 org_id, int64 id, int64 patient_id, int64 reminder_id,
				  const char *status, const char *title, TimestampTz due)
{
	static SPIPlanPtr sent_plan = NULL;
	static SPIPlanPtr missed_plan = NULL;
	Datum			  values[3];

	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(id);
	if (strcmp(status, "scheduled") == 0)
	{
		const PrmSettings *s = PrmGetSettings(org_id);

		(void) PrmEnqueue(org_id, "push", psprintf("patient:%lld", (long long) patient_id),
						  psprintf("Reminder: %s", title), "reminder", patient_id, 0,
						  psprintf("reminder:%lld", (long long) id), 0);
		PrmPrepare(&sent_plan,
				   "UPDATE prm.reminder_occurrence o SET status = 'sent', sent_at = pg_catalog.now(),"
				   "   next_due_at = GREATEST(o.due_at + $3, pg_catalog.now())"
				   " WHERE o.org_id = $1 AND o.id = $2 RETURNING o.next_due_at",
				   3, (Oid[]){INT8OID, INT8OID, INTERVALOID});
		values[2] = IntervalPGetDatum(&s->reminder_missed_after);
		if (PrmExecute(sent_plan, values, NULL, false, 1) == 1)
		{
			bool isnull;

			PrmWakeWorker(DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
		}
		return 1;
	}
	PrmPrepare(&missed_plan,
			   "UPDATE prm.reminder_occurrence o SET status = 'missed', next_due_at = NULL"
			   " WHERE o.org_id = $1 AND o.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(missed_plan, values, NULL, false, 0);
	PrmEmitEvent(org_id, "reminder_missed", "reminder_occurrence", id,
				 psprintf("{\"patient_id\": %lld}", (long long) patient_id));
	MonOpenAlert(org_id, patient_id, "missed_reminder", "medium",
				 psprintf("{\"reminder_id\": %lld, \"occurrence_id\": %lld, \"due_at\": %s}",
						  (long long) reminder_id, (long long) id, PrmJsonTimestamp(due)));
	return 1;
}

/* A reminder due for more occurrences (a MonBatch item). */
static int64
MonFillBatchItem(MonBatch *b, int i)
{
	return MonFill(b->org_ids[i], b->ids[i]);
}

/* A due occurrence (a MonBatch item over the due query's rows). */
static int64
MonOccurrenceBatchItem(MonBatch *b, int i)
{
	SPITupleTable *rows = (SPITupleTable *) b->arg;
	HeapTuple	   tup = rows->vals[i];
	TupleDesc	   desc = rows->tupdesc;
	bool		   isnull;

	return MonOccurrenceItem(b->org_ids[i], b->ids[i],
							 DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull)),
							 DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull)),
							 SPI_getvalue(tup, desc, 5), SPI_getvalue(tup, desc, 6),
							 DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull)));
}

/*
 * The reminder step: create occurrences ahead for the reminders due for
 * it, then send due occurrences and count missed ones; at most limit of
 * each.
 */
int64
MonReminderStep(int limit)
{
	static SPIPlanPtr fill_plan = NULL;
	static SPIPlanPtr due_plan = NULL;
	static SPIPlanPtr fill_backoff = NULL;
	static SPIPlanPtr occurrence_backoff = NULL;
	Datum			  values[1];
	int64			  done = 0;
	int				  n;
	SPITupleTable	 *rows;

	PrmPrepare(&fill_plan,
			   "SELECT r.org_id, r.id FROM prm.reminder r WHERE r.status = 'active' AND r.fill_due_at <= pg_catalog.now()"
			   " ORDER BY r.fill_due_at LIMIT $1 FOR UPDATE SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	n = PrmExecute(fill_plan, values, NULL, false, 0);
	rows = SPI_tuptable;
	done += MonRunRows(rows, n, MonFillBatchItem, "reminder",
					   "UPDATE prm.reminder r SET fill_due_at = pg_catalog.now() + interval '1 minute'"
					   " WHERE r.org_id = $1 AND r.id = $2",
					   &fill_backoff);

	PrmPrepare(&due_plan,
			   "SELECT o.org_id, o.id, o.patient_id, o.reminder_id, o.status, r.title, o.due_at"
			   "  FROM prm.reminder_occurrence o JOIN prm.reminder r ON r.org_id = o.org_id AND r.id = o.reminder_id"
			   " WHERE o.status IN ('scheduled', 'sent') AND o.next_due_at <= pg_catalog.now()"
			   " ORDER BY o.next_due_at LIMIT $1 FOR NO KEY UPDATE OF o SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	n = PrmExecute(due_plan, values, NULL, false, 0);
	rows = SPI_tuptable;
	done += MonRunRows(rows, n, MonOccurrenceBatchItem, "reminder occurrence",
					   "UPDATE prm.reminder_occurrence o SET next_due_at = pg_catalog.now() + interval '1 minute'"
					   " WHERE o.org_id = $1 AND o.id = $2 AND o.status IN ('scheduled', 'sent')",
					   &occurrence_backoff);
	return done;
}

/*
 * Set a caregiver's next daily summary from their preferences (none when
 * daily_summary_time is null).  Inside SPI.
 */
void
MonScheduleSummary(int64 org_id, int64 caregiver_id)
{
	static SPIPlanPtr read_plan = NULL;
	static SPIPlanPtr write_plan = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	char			 *when;
	TimeADT			  tod;
	TimestampTz		  due = 0;

	PrmPrepare(&read_plan,
			   "SELECT c.preferences ->> 'daily_summary_time', coalesce(c.timezone, o.timezone)"
			   "  FROM prm.caregiver c JOIN prm.organization o ON o.id = c.org_id WHERE c.org_id = $1 AND c.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(caregiver_id);
	if (PrmExecute(read_plan, values, NULL, true, 1) == 0)
		return;
	when = PrmGetText(0, 1);
	if (when != NULL && MonParseClock(when, &tod))
		due = MonNextLocalTime(PrmGetText(0, 2), tod, GetCurrentTransactionStartTimestamp());
	PrmPrepare(&write_plan,
			   "UPDATE prm.caregiver c SET summary_due_at = $3 WHERE c.org_id = $1 AND c.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	values[2] = TimestampTzGetDatum(due);
	nulls[2] = due == 0 ? 'n' : ' ';
	PrmExecute(write_plan, values, nulls, false, 0);
	if (due != 0)
		PrmWakeWorker(due);
}

/*
 * The summary step: the daily summary of each caregiver due for one (at
 * most limit), on their channels, then their next.
 */
int64
MonSummaryStep(int limit)
{
	static SPIPlanPtr due_plan = NULL;
	static SPIPlanPtr figures_plan = NULL;
	Datum			  values[3];
	bool			  isnull;
	int				  n,
		i;
	SPITupleTable *rows;

	PrmPrepare(&due_plan,
			   "SELECT c.org_id, c.id, c.summary_due_at, c.phone, c.email,"
			   "       (c.preferences #>> '{notifications,sms}')::boolean,"
			   "       (c.preferences #>> '{notifications,email}')::boolean,"
			   "       (c.preferences #>> '{notifications,push}')::boolean"
			   "  FROM prm.caregiver c WHERE c.summary_due_at <= pg_catalog.now()"
			   " ORDER BY c.summary_due_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	n = PrmExecute(due_plan, values, NULL, false, 0);
	rows = SPI_tuptable;
	PrmPrepare(&figures_plan,
			   "WITH pts AS (SELECT l.patient_id FROM prm.care_link l WHERE l.org_id = $1 AND l.caregiver_id = $2)"
			   " SELECT (SELECT pg_catalog.count(*) FROM pts),"
			   "  (SELECT pg_catalog.count(*) FROM prm.patient_activity a WHERE a.org_id = $1"
			   "     AND a.patient_id IN (SELECT patient_id FROM pts) AND a.occurred_at > $3 - interval '1 day' AND a.occurred_at <= $3),"
			   "  (SELECT pg_catalog.count(*) FILTER (WHERE o.status = 'confirmed') FROM prm.reminder_occurrence o WHERE o.org_id = $1"
			   "     AND o.patient_id IN (SELECT patient_id FROM pts) AND o.due_at > $3 - interval '1 day' AND o.due_at <= $3),"
			   "  (SELECT pg_catalog.count(*) FILTER (WHERE o.status = 'missed') FROM prm.reminder_occurrence o WHERE o.org_id = $1"
			   "     AND o.patient_id IN (SELECT patient_id FROM pts) AND o.due_at > $3 - interval '1 day' AND o.due_at <= $3),"
			   "  (SELECT pg_catalog.count(*) FROM prm.alert a WHERE a.org_id = $1"
			   "     AND a.patient_id IN (SELECT patient_id FROM pts) AND a.opened_at > $3 - interval '1 day' AND a.opened_at <= $3)",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	for (i = 0; i < n; i++)
	{
		HeapTuple				 tup = rows->vals[i];
		TupleDesc				 desc = rows->tupdesc;
		int64					 org_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		int64					 id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		TimestampTz				 due = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
		char					*addr[3] = {SPI_getvalue(tup, desc, 4), SPI_getvalue(tup, desc, 5), psprintf("caregiver:%lld", (long long) id)};
		static const char *const chans[] = {"sms", "email", "push"};
		char					*body;
		int						 c;

		values[0] = Int64GetDatum(org_id);
		values[1] = Int64GetDatum(id);
		values[2] = TimestampTzGetDatum(due);
		PrmExecute(figures_plan, values, NULL, true, 1);
		body = psprintf("%s daily summary: %s check-ins, %s reminders taken, %s missed, %s alerts for the %s people in your care today.",
						PrmGetSettings(org_id)->name, PrmGetText(0, 2), PrmGetText(0, 3),
						PrmGetText(0, 4), PrmGetText(0, 5), PrmGetText(0, 1));
		for (c = 0; c < 3; c++)
		{
			char *on = SPI_getvalue(tup, desc, 6 + c);

			if (on != NULL && strcmp(on, "t") == 0 && addr[c] != NULL)
				(void) PrmEnqueue(org_id, chans[c], addr[c], body, "caregiver_summary", 0, 0,
								  psprintf("summary:%lld:%s:%s", (long long) id,
										   PrmJsonTimestamp(due), chans[c]),
								  0);
		}
		PrmEmitEvent(org_id, "caregiver_summary_sent", "caregiver", id, NULL);
		MonScheduleSummary(org_id, id);
	}
	return n;
}
