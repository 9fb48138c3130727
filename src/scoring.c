/*-------------------------------------------------------------------------
 *
 * scoring.c
 *	  The waitlist and its priority scores.
 *
 * The score of a waiting entry says how badly its patient needs an earlier
 * appointment.  It is the sum of four parts, each with a weight that is a
 * setting of the organization (defaults in brackets):
 *
 *	urgent		weight_urgent [30] when the entry is urgent, else 0;
 *	boost		the manual boost staff set, 0 to 40, taken as is (a boost
 *				outside that range is an error, never clamped);
 *	wait		how long the patient would otherwise wait: with the current
 *				appointment d days away, floor(weight_wait [20] *
 *				min(d, wait_full_days [60]) / wait_full_days); a patient with
 *				no appointment at all gets the full weight_wait, one whose
 *				appointment is already due gets 0;
 *	seniority	time on the list: floor(weight_seniority [10] * min(j,
 *				seniority_full_days [90]) / seniority_full_days) after j days.
 *
 * Every part grows monotonically and is capped, so with default weights the
 * score lies in 0..100.  Fractional days count (an appointment 36 hours away
 * is 1.5 days away); flooring keeps scores integers without ever rounding a
 * part above its cap.  Every timestamp must be finite ('infinity' and
 * '-infinity' raise 22008); any finite ones work, the two ends of the
 * timestamp range included (their difference does not fit in int64
 * microseconds, so it is taken in double, where every cap is long reached).
 *
 * The score is stored in prm.waitlist_entry.priority_score and kept current:
 *	- on write, by the BEFORE trigger waitlist_entry_score;
 *	- when the patient's appointments change, by the AFTER trigger
 *	  appointment_waitlist, which refreshes current_appointment_at (and so
 *	  fires the first trigger);
 *	- for the passage of time, by prm.recalculate_priorities(), one UPDATE
 *	  that calls the C scoring function, run hourly by run_due_jobs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/rel.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_priority_score);
PG_FUNCTION_INFO_V1(prm_priority_score_weighted);
PG_FUNCTION_INFO_V1(prm_join_waitlist);
PG_FUNCTION_INFO_V1(prm_set_waitlist_preferences);
PG_FUNCTION_INFO_V1(prm_leave_waitlist);
PG_FUNCTION_INFO_V1(prm_explain_priority);
PG_FUNCTION_INFO_V1(prm_recalculate_priorities);
PG_FUNCTION_INFO_V1(prm_waitlist_entry_score_trigger);
PG_FUNCTION_INFO_V1(prm_appointment_waitlist_trigger);

/* the default weights, as in settings.c */
static const PrmSettings default_weights = {
	.weight_urgent = 30,
	.weight_wait = 20,
	.weight_seniority = 10,
	.wait_full_days = 60,
	.seniority_full_days = 90,
};

static void ScoringRefreshCurrentAppointment(int64 org_id, int64 patient_id);

/* Raise 22023 for a manual boost outside 0..40. */
void
PrmCheckBoost(int boost)
{
	if (boost < 0 || boost > 40)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("manual boost %d is out of range", boost),
				 errdetail("A boost must be between 0 and 40."),
				 errhint("Boosts are not clamped: pass a value in range.")));
}

/* Points for x days out of full_days, at most weight. */
static int
ScoringCapped(double days, int full_days, int weight)
{
	Assert(full_days > 0);
	if (days <= 0)
		return 0;
	if (days >= full_days)
		return weight;
	return (int) floor(weight * days / full_days);
}

/*
 * Days (fractional) from one finite time to another: exact in microseconds
 * when the difference fits in int64, else in double (only between the far
 * ends of the timestamp range, hundreds of thousands of years apart).
 */
static double
ScoringDaysBetween(TimestampTz from, TimestampTz to)
{
	int64 usecs;

	if (pg_sub_s64_overflow(to, from, &usecs))
		return ((double) to - (double) from) / USECS_PER_DAY;
	return (double) usecs / USECS_PER_DAY;
}

/*
 * The score of an entry at as_of with the weights of w, part by part.
 * Infinite times raise 22008; a total beyond int raises 22003 (only huge
 * explicit weights reach it).
 */
void
PrmComputeScore(bool urgent, int boost, bool has_appt, TimestampTz appt_at,
				TimestampTz joined_at, TimestampTz as_of, const PrmSettings *w,
				PrmScoreParts *out)
{
	PrmCheckBoost(boost);
	if (has_appt)
		PrmCheckFiniteTimestamp(appt_at, "current_appointment_at");
	PrmCheckFiniteTimestamp(joined_at, "joined_at");
	PrmCheckFiniteTimestamp(as_of, "as_of");
	out->urgent = urgent ? w->weight_urgent : 0;
	out->boost = boost;
	if (has_appt)
	{
		out->days_to_wait = ScoringDaysBetween(as_of, appt_at);
		out->wait = ScoringCapped(out->days_to_wait, w->wait_full_days, w->weight_wait);
	}
	else
	{
		out->days_to_wait = -1;
		out->wait = w->weight_wait;
	}
	out->days_on_list = ScoringDaysBetween(joined_at, as_of);
	out->seniority = ScoringCapped(out->days_on_list, w->seniority_full_days,
								   w->weight_seniority);
	if (pg_add_s32_overflow(out->urgent, out->boost, &out->total) ||
		pg_add_s32_overflow(out->total, out->wait, &out->total) ||
		pg_add_s32_overflow(out->total, out->seniority, &out->total))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("priority score out of range"),
				 errdetail("The weights add up to more than an integer holds.")));
	Assert(out->wait >= 0 && out->wait <= w->weight_wait);
	Assert(out->seniority >= 0 && out->seniority <= w->weight_seniority);
}

/*
 * The first instant after as_of at which a score computed with the same
 * inputs (now_parts: the score at as_of, which the caller has) changes by the passage of time alone, or 0 if it never will: the
 * deadline at which prm rescores the entry (see the file header).  Each
 * time-driven part is monotone in time -- the wait part never grows, the
 * seniority part never shrinks -- so the earliest change of each is found by
 * bisection on the very function that scores, to the microsecond, and the
 * deadline is the earlier of the two.  No formula is kept twice.
 */
TimestampTz
PrmScoreNextChange(bool urgent, int boost, bool has_appt, TimestampTz appt_at,
				   TimestampTz joined_at, TimestampTz as_of, const PrmSettings *w,
				   const PrmScoreParts *now_parts)
{
	TimestampTz next = 0;
	int			part;

	for (part = 0; part < 2; part++)
	{
		/* wait: constant once the appointment is reached; seniority: once full */
		TimestampTz lo = as_of;
		TimestampTz hi;
		int			now_value = part == 0 ? now_parts->wait : now_parts->seniority;

		if (part == 0)
		{
			if (!has_appt || appt_at <= as_of)
				continue;
			hi = appt_at;
		}
		else
		{
			int64 full;

			if (pg_mul_s64_overflow((int64) w->seniority_full_days, USECS_PER_DAY, &full) ||
				pg_add_s64_overflow(joined_at, full, &hi))
				continue;
			hi += 1;
			if (hi <= as_of)
				continue;
		}
		/* invariant: the part is unchanged at lo and changed at hi */
		{
			PrmScoreParts p;

			PrmComputeScore(urgent, boost, has_appt, appt_at, joined_at, hi, w, &p);
			if ((part == 0 ? p.wait : p.seniority) == now_value)
				continue;
		}
		while (hi - lo > 1)
		{
			TimestampTz	  mid = lo + (hi - lo) / 2;
			PrmScoreParts p;

			PrmComputeScore(urgent, boost, has_appt, appt_at, joined_at, mid, w, &p);
			if ((part == 0 ? p.wait : p.seniority) == now_value)
				lo = mid;
			else
				hi = mid;
		}
		if (next == 0 || hi < next)
			next = hi;
	}
	return next;
}

/* A timestamptz as a JSON string (ISO 8601), whatever the DateStyle. */
char *
PrmJsonTimestamp(TimestampTz ts)
{
	char buf[MAXDATELEN + 1];

	return PrmJsonString(JsonEncodeDateTime(buf, TimestampTzGetDatum(ts),
											TIMESTAMPTZOID, NULL));
}

/*
 * prm.priority_score(urgent, manual_boost, current_appointment_at,
 *					  joined_at, as_of) RETURNS int
 *	  The score with the default weights.  A NULL current_appointment_at is
 *	  a patient with no appointment at all (full wait points); a NULL
 *	  anywhere else gives NULL, as a STRICT function would.
 */
Datum
prm_priority_score(PG_FUNCTION_ARGS)
{
	PrmScoreParts parts;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		PG_RETURN_NULL();
	PrmComputeScore(PG_GETARG_BOOL(0), PG_GETARG_INT32(1), !PG_ARGISNULL(2),
					PG_ARGISNULL(2) ? 0 : PG_GETARG_TIMESTAMPTZ(2),
					PG_GETARG_TIMESTAMPTZ(3), PG_GETARG_TIMESTAMPTZ(4),
					&default_weights, &parts);
	PG_RETURN_INT32(parts.total);
}

/*
 * prm.priority_score(urgent, manual_boost, current_appointment_at,
 *					  joined_at, as_of, weight_urgent, weight_wait,
 *					  weight_seniority, wait_full_days, seniority_full_days)
 *	  The score with explicit weights; current_appointment_at may be NULL.
 */
Datum
prm_priority_score_weighted(PG_FUNCTION_ARGS)
{
	PrmSettings	  w;
	PrmScoreParts parts;
	int			  i;

	for (i = 0; i < 10; i++)
		if (i != 2 && PG_ARGISNULL(i))
			PG_RETURN_NULL();
	memset(&w, 0, sizeof(w));
	w.weight_urgent = PG_GETARG_INT32(5);
	w.weight_wait = PG_GETARG_INT32(6);
	w.weight_seniority = PG_GETARG_INT32(7);
	w.wait_full_days = PG_GETARG_INT32(8);
	w.seniority_full_days = PG_GETARG_INT32(9);
	if (w.wait_full_days < 1 || w.seniority_full_days < 1 ||
		w.weight_urgent < 0 || w.weight_wait < 0 || w.weight_seniority < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("priority weights must not be negative and full-day counts must be positive")));
	PrmComputeScore(PG_GETARG_BOOL(0), PG_GETARG_INT32(1), !PG_ARGISNULL(2),
					PG_ARGISNULL(2) ? 0 : PG_GETARG_TIMESTAMPTZ(2),
					PG_GETARG_TIMESTAMPTZ(3), PG_GETARG_TIMESTAMPTZ(4), &w, &parts);
	PG_RETURN_INT32(parts.total);
}

/*
 * BEFORE INSERT OR UPDATE trigger on prm.waitlist_entry: set priority_score
 * from the row's inputs and its organization's weights, as of now.
 */
Datum
prm_waitlist_entry_score_trigger(PG_FUNCTION_ARGS)
{
	TriggerData		  *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc		   tupdesc;
	HeapTuple		   tuple;
	bool			   isnull;
	int64			   org_id;
	bool			   urgent;
	int				   boost;
	Datum			   appt;
	bool			   appt_null;
	TimestampTz		   joined_at;
	TimestampTz		   due;
	PrmScoreParts	   parts;
	const PrmSettings *w;
	int				   cols[2];
	Datum			   vals[2];
	bool			   nulls[2] = {false, false};

	PrmCheckTrigger(fcinfo, "waitlist_entry_score_trigger", "waitlist_entry");
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function prm.waitlist_entry_score_trigger() must be fired BEFORE INSERT OR UPDATE FOR EACH ROW")));

	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple : trigdata->tg_trigtuple;
	tupdesc = trigdata->tg_relation->rd_att;

	org_id = DatumGetInt64(heap_getattr(tuple, SPI_fnumber(tupdesc, "org_id"), tupdesc, &isnull));
	urgent = DatumGetBool(heap_getattr(tuple, SPI_fnumber(tupdesc, "urgent"), tupdesc, &isnull));
	boost = DatumGetInt32(heap_getattr(tuple, SPI_fnumber(tupdesc, "manual_boost"), tupdesc, &isnull));
	appt = heap_getattr(tuple, SPI_fnumber(tupdesc, "current_appointment_at"), tupdesc, &appt_null);
	joined_at = DatumGetTimestampTz(heap_getattr(tuple, SPI_fnumber(tupdesc, "joined_at"), tupdesc, &isnull));

	/* the score now, and when it next changes by time alone: its deadline */
	PrmSpiConnect();
	w = PrmGetSettings(org_id);
	PrmComputeScore(urgent, boost, !appt_null,
					appt_null ? 0 : DatumGetTimestampTz(appt), joined_at,
					GetCurrentTransactionStartTimestamp(), w, &parts);
	due = PrmScoreNextChange(urgent, boost, !appt_null,
							 appt_null ? 0 : DatumGetTimestampTz(appt), joined_at,
							 GetCurrentTransactionStartTimestamp(), w, &parts);
	PrmSpiFinish();

	cols[0] = SPI_fnumber(tupdesc, "priority_score");
	vals[0] = Int32GetDatum(parts.total);
	cols[1] = SPI_fnumber(tupdesc, "score_due_at");
	vals[1] = TimestampTzGetDatum(due);
	nulls[1] = due == 0;
	/* before ALTER EXTENSION UPDATE adds score_due_at, only the score */
	tuple = heap_modify_tuple_by_cols(tuple, tupdesc, cols[1] > 0 ? 2 : 1, cols, vals, nulls);
	return PointerGetDatum(tuple);
}

/*
 * Refresh current_appointment_at of the patient's waiting entries: the
 * start of the next active appointment, with the entry's provider when it
 * names one.  Only entries whose value changes are written.
 */
static void
ScoringRefreshCurrentAppointment(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "UPDATE prm.waitlist_entry w SET current_appointment_at = x.next_at"
			   "  FROM (SELECT w2.id,"
			   "               (SELECT pg_catalog.min(a.starts_at) FROM prm.appointment a"
			   "                 WHERE a.org_id = w2.org_id AND a.patient_id = w2.patient_id"
			   "                   AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in')"
			   "                   AND a.starts_at > pg_catalog.now()"
			   "                   AND (w2.provider_id IS NULL OR a.provider_id = w2.provider_id)) AS next_at"
			   "          FROM prm.waitlist_entry w2"
			   "         WHERE w2.org_id = $1 AND w2.patient_id = $2 AND w2.status = 'waiting') x"
			   " WHERE w.org_id = $1 AND w.id = x.id"
			   "   AND w.current_appointment_at IS DISTINCT FROM x.next_at",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	PrmExecute(plan, values, NULL, false, 0);
}

/*
 * AFTER trigger on prm.appointment: a patient's appointments changed, so
 * the wait part of their waiting entries' scores may have.
 */
Datum
prm_appointment_waitlist_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	 tupdesc;
	bool		 isnull;
	int64		 org_id;
	int64		 patient_id;
	HeapTuple	 tuple;

	PrmCheckTrigger(fcinfo, "appointment_waitlist_trigger", "appointment");
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function prm.appointment_waitlist_trigger() must be fired AFTER FOR EACH ROW")));
	tupdesc = trigdata->tg_relation->rd_att;

	PrmSpiConnect();
	tuple = trigdata->tg_trigtuple;
	org_id = DatumGetInt64(heap_getattr(tuple, SPI_fnumber(tupdesc, "org_id"), tupdesc, &isnull));
	patient_id = DatumGetInt64(heap_getattr(tuple, SPI_fnumber(tupdesc, "patient_id"), tupdesc, &isnull));
	ScoringRefreshCurrentAppointment(org_id, patient_id);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		int64 new_patient;

		tuple = trigdata->tg_newtuple;
		new_patient = DatumGetInt64(heap_getattr(tuple, SPI_fnumber(tupdesc, "patient_id"), tupdesc, &isnull));
		if (new_patient != patient_id)
			ScoringRefreshCurrentAppointment(org_id, new_patient);
	}
	PrmSpiFinish();
	return PointerGetDatum(NULL);
}

/*
 * prm.join_waitlist(org_id, patient_id, provider_id, urgent, manual_boost)
 *	  RETURNS bigint
 */
Datum
prm_join_waitlist(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	bool			  has_provider = !PG_ARGISNULL(2);
	int64			  provider_id = has_provider ? PG_GETARG_INT64(2) : 0;
	bool			  urgent = PRM_GETARG_BOOL_NOTNULL(3, "urgent");
	int32			  boost = PRM_GETARG_INT32_NOTNULL(4, "manual_boost");
	Datum			  values[5];
	char			  nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  id;

	PrmCheckBoost(boost);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	/* lock the patient: one waiting entry per patient and provider choice */
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, true);
	if (has_provider)
		PrmRequireRow(org_id, PRM_ENTITY_PROVIDER, provider_id, false);

	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = Int64GetDatum(provider_id);
	if (!has_provider)
		nulls[2] = 'n';
	values[3] = BoolGetDatum(urgent);
	values[4] = Int32GetDatum(boost);

	PrmPrepare(&find_plan,
			   "SELECT w.id FROM prm.waitlist_entry w"
			   " WHERE w.org_id = $1 AND w.patient_id = $2 AND w.status = 'waiting'"
			   "   AND w.provider_id IS NOT DISTINCT FROM $3 FOR NO KEY UPDATE",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	if (PrmExecute(find_plan, values, nulls, false, 1) == 1)
	{
		id = PrmGetInt64(0, 1, &isnull);
		PrmPrepare(&update_plan,
				   "UPDATE prm.waitlist_entry w SET urgent = $4, manual_boost = $5"
				   " WHERE w.org_id = $1 AND w.id = $2",
				   5, (Oid[]){INT8OID, INT8OID, INT8OID, BOOLOID, INT4OID});
		values[1] = Int64GetDatum(id);
		PrmExecute(update_plan, values, nulls, false, 0);
		PrmEmitEvent(org_id, "waitlist_entry_updated", "waitlist_entry", id,
					 psprintf("{\"urgent\": %s, \"manual_boost\": %d}",
							  urgent ? "true" : "false", boost));
	}
	else
	{
		PrmPrepare(&insert_plan,
				   "INSERT INTO prm.waitlist_entry"
				   "   (org_id, patient_id, provider_id, urgent, manual_boost, current_appointment_at)"
				   " SELECT $1, $2, $3, $4, $5,"
				   "        (SELECT pg_catalog.min(a.starts_at) FROM prm.appointment a"
				   "          WHERE a.org_id = $1 AND a.patient_id = $2"
				   "            AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in')"
				   "            AND a.starts_at > pg_catalog.now()"
				   "            AND ($3 IS NULL OR a.provider_id = $3))"
				   " RETURNING id",
				   5, (Oid[]){INT8OID, INT8OID, INT8OID, BOOLOID, INT4OID});
		if (PrmExecute(insert_plan, values, nulls, false, 0) != 1)
			elog(ERROR, "waitlist insert returned no row");
		id = PrmGetInt64(0, 1, &isnull);
		PrmEmitEvent(org_id, "waitlist_joined", "waitlist_entry", id,
					 psprintf("{\"patient_id\": %lld, \"urgent\": %s, \"manual_boost\": %d}",
							  (long long) patient_id, urgent ? "true" : "false", boost));
	}
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * prm.set_waitlist_preferences(org_id, waitlist_entry_id, preferences jsonb)
 *	  Validate every key, then apply them all in one UPDATE.
 */
Datum
prm_set_waitlist_preferences(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr each_plan = NULL;
	static SPIPlanPtr apply_plan = NULL;
	static SPIPlanPtr locations_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  entry_id = PRM_GETARG_INT64_NOTNULL(1, "waitlist_entry_id");
	Jsonb			 *prefs;
	Datum			  values[3];
	int				  n,
		i;

	PrmArgNotNull(fcinfo, 2, "preferences");
	prefs = PG_GETARG_JSONB_P(2);
	if (!JB_ROOT_IS_OBJECT(prefs))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("preferences must be a JSON object")));

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_WAITLIST_ENTRY, entry_id, true);

	/* each key: known, of the right JSON type, and in range */
	PrmPrepare(&each_plan,
			   "SELECT e.key, pg_catalog.jsonb_typeof(e.value), e.value #>> '{}',"
			   "       CASE WHEN pg_catalog.jsonb_typeof(e.value) = 'array'"
			   "            THEN (SELECT pg_catalog.bool_and(pg_catalog.jsonb_typeof(x) = 'number'"
			   "                                  AND x::text ~ '^[0-9]{1,18}$')"
			   "                    FROM pg_catalog.jsonb_array_elements(e.value) x) END"
			   "  FROM pg_catalog.jsonb_each($1) e",
			   1, (Oid[]){JSONBOID});
	values[0] = JsonbPGetDatum(prefs);
	n = PrmExecute(each_plan, values, NULL, true, 0);
	for (i = 0; i < n; i++)
	{
		char	   *key = PrmGetText(i, 1);
		char	   *type = PrmGetText(i, 2);
		char	   *text = PrmGetText(i, 3);
		char	   *ints_ok = PrmGetText(i, 4);
		bool		is_null = strcmp(type, "null") == 0;
		const char *want = NULL;

		if (strcmp(key, "urgent") == 0)
			want = "boolean";
		else if (strcmp(key, "manual_boost") == 0)
			want = "number";
		else if (strcmp(key, "location_ids") == 0 || strcmp(key, "days_of_week") == 0)
			want = "array";
		else if (strcmp(key, "earliest_time") == 0 || strcmp(key, "latest_time") == 0 ||
				 strcmp(key, "expires_at") == 0)
			want = "string";
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown waitlist preference \"%s\"", key),
					 errhint("Known preferences: urgent, manual_boost, location_ids, days_of_week, earliest_time, latest_time, expires_at.")));
		if (is_null && (strcmp(key, "urgent") == 0 || strcmp(key, "manual_boost") == 0))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("waitlist preference \"%s\" cannot be null", key)));
		if (!is_null && strcmp(type, want) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("waitlist preference \"%s\" must be a JSON %s", key, want)));
		if (!is_null && strcmp(want, "array") == 0 && ints_ok != NULL && strcmp(ints_ok, "t") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("waitlist preference \"%s\" must be an array of positive whole numbers", key)));
		if (!is_null && strcmp(key, "manual_boost") == 0)
		{
			char *end;
			long  v = strtol(text, &end, 10);

			if (*end != '\0' || v < INT_MIN || v > INT_MAX)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("manual boost \"%s\" is not a whole number", text)));
			PrmCheckBoost((int) v);
		}
		if (!is_null && (strcmp(key, "earliest_time") == 0 || strcmp(key, "latest_time") == 0))
			(void) DirectFunctionCall3(time_in, CStringGetDatum(text),
									   ObjectIdGetDatum(InvalidOid), Int32GetDatum(0));
		if (!is_null && strcmp(key, "expires_at") == 0)
			(void) DirectFunctionCall3(timestamptz_in, CStringGetDatum(text),
									   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	}

	/* days 1..7 and the organization's own locations only */
	PrmPrepare(&locations_plan,
			   "SELECT"
			   "  (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_array_elements_text("
			   "     CASE WHEN pg_catalog.jsonb_typeof($2 -> 'location_ids') = 'array' THEN $2 -> 'location_ids' ELSE '[]' END) x"
			   "    WHERE NOT EXISTS (SELECT 1 FROM prm.location l WHERE l.org_id = $1 AND l.id = x::bigint)),"
			   "  (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_array_elements_text("
			   "     CASE WHEN pg_catalog.jsonb_typeof($2 -> 'days_of_week') = 'array' THEN $2 -> 'days_of_week' ELSE '[]' END) x"
			   "    WHERE x::numeric NOT BETWEEN 1 AND 7)",
			   2, (Oid[]){INT8OID, JSONBOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = JsonbPGetDatum(prefs);
	PrmExecute(locations_plan, values, NULL, true, 1);
	if (strcmp(PrmGetText(0, 1), "0") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("location_ids names a location that does not exist in organization %lld",
						(long long) org_id)));
	if (strcmp(PrmGetText(0, 2), "0") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("days_of_week must hold ISO day numbers 1 (Monday) to 7 (Sunday)")));

	PrmPrepare(&apply_plan,
			   "UPDATE prm.waitlist_entry w SET"
			   "  urgent = CASE WHEN $3 ? 'urgent' THEN ($3 ->> 'urgent')::boolean ELSE w.urgent END,"
			   "  manual_boost = CASE WHEN $3 ? 'manual_boost' THEN ($3 ->> 'manual_boost')::int ELSE w.manual_boost END,"
			   "  location_ids = CASE WHEN $3 ? 'location_ids' THEN"
			   "     (SELECT pg_catalog.array_agg(x::bigint ORDER BY x::bigint) FROM pg_catalog.jsonb_array_elements_text("
			   "        CASE WHEN pg_catalog.jsonb_typeof($3 -> 'location_ids') = 'array' THEN $3 -> 'location_ids' END) x)"
			   "     ELSE w.location_ids END,"
			   "  days_of_week = CASE WHEN $3 ? 'days_of_week' THEN"
			   "     (SELECT pg_catalog.array_agg(DISTINCT x::int) FROM pg_catalog.jsonb_array_elements_text("
			   "        CASE WHEN pg_catalog.jsonb_typeof($3 -> 'days_of_week') = 'array' THEN $3 -> 'days_of_week' END) x)"
			   "     ELSE w.days_of_week END,"
			   "  earliest_time = CASE WHEN $3 ? 'earliest_time' THEN ($3 ->> 'earliest_time')::time ELSE w.earliest_time END,"
			   "  latest_time = CASE WHEN $3 ? 'latest_time' THEN ($3 ->> 'latest_time')::time ELSE w.latest_time END,"
			   "  expires_at = CASE WHEN $3 ? 'expires_at' THEN ($3 ->> 'expires_at')::timestamptz ELSE w.expires_at END"
			   " WHERE w.org_id = $1 AND w.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, JSONBOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(entry_id);
	values[2] = JsonbPGetDatum(prefs);
	PrmExecute(apply_plan, values, NULL, false, 0);
	PrmEmitEvent(org_id, "waitlist_preferences_set", "waitlist_entry", entry_id,
				 DatumGetCString(DirectFunctionCall1(jsonb_out, JsonbPGetDatum(prefs))));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.leave_waitlist(org_id, waitlist_entry_id) RETURNS boolean
 */
Datum
prm_leave_waitlist(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  entry_id = PRM_GETARG_INT64_NOTNULL(1, "waitlist_entry_id");
	Datum			  values[2];
	bool			  was_waiting;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_WAITLIST_ENTRY, entry_id, false);
	PrmWithdrawEntryOffers(org_id, entry_id, "left the waitlist");
	PrmPrepare(&plan,
			   "UPDATE prm.waitlist_entry w SET status = 'removed', closed_at = pg_catalog.now()"
			   " WHERE w.org_id = $1 AND w.id = $2 AND w.status = 'waiting'",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(entry_id);
	was_waiting = PrmExecute(plan, values, NULL, false, 0) > 0;
	if (was_waiting)
		PrmEmitEvent(org_id, "waitlist_left", "waitlist_entry", entry_id, NULL);
	PrmSpiFinish();
	PG_RETURN_BOOL(was_waiting);
}

/*
 * prm.explain_priority(org_id, waitlist_entry_id) RETURNS jsonb
 *	  The score now, part by part, with inputs, weights and the penalty for
 *	  a recent offer that candidate selection applies on top.
 */
Datum
prm_explain_priority(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr  plan = NULL;
	int64			   org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			   entry_id = PRM_GETARG_INT64_NOTNULL(1, "waitlist_entry_id");
	const PrmSettings *w;
	Datum			   values[3];
	bool			   isnull,
		appt_null,
		last_null;
	bool urgent;
	int	 boost,
		stored,
		penalty;
	TimestampTz appt_at = 0,
				joined_at,
				last_offer = 0,
				now = GetCurrentTransactionStartTimestamp();
	char		  *status;
	PrmScoreParts  parts;
	StringInfoData buf;
	Datum		   result;

	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmRequireRow(org_id, PRM_ENTITY_WAITLIST_ENTRY, entry_id, false);
	w = PrmGetSettings(org_id);

	PrmPrepare(&plan,
			   "SELECT w.urgent, w.manual_boost, w.current_appointment_at, w.joined_at,"
			   "       w.priority_score, w.status, w.patient_id,"
			   "       (SELECT pg_catalog.max(o.created_at) FROM prm.offer o"
			   "         WHERE o.org_id = w.org_id AND o.patient_id = w.patient_id"
			   "           AND o.created_at > pg_catalog.now() - $3)"
			   "  FROM prm.waitlist_entry w WHERE w.org_id = $1 AND w.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INTERVALOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(entry_id);
	values[2] = IntervalPGetDatum(&w->recent_offer_window);
	PrmExecute(plan, values, NULL, true, 1);
	urgent = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	boost = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	appt_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &appt_null));
	joined_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	stored = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	status = PrmGetText(0, 6);
	last_offer = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 8, &last_null));

	PrmComputeScore(urgent, boost, !appt_null, appt_at, joined_at, now, w, &parts);
	penalty = last_null ? 0 : w->recent_offer_penalty;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"waitlist_entry_id\": %lld, \"patient_id\": %s, \"status\": %s,"
					 " \"as_of\": %s, \"score\": %d, \"stored_score\": %d,",
					 (long long) entry_id, PrmGetText(0, 7), PrmJsonString(status),
					 PrmJsonTimestamp(now), parts.total, stored);
	appendStringInfo(&buf,
					 " \"components\": {"
					 "\"urgent\": {\"points\": %d, \"max\": %d, \"urgent\": %s},"
					 " \"manual_boost\": {\"points\": %d, \"max\": 40},"
					 " \"wait\": {\"points\": %d, \"max\": %d, \"current_appointment_at\": %s,"
					 " \"days_to_wait\": %s, \"full_at_days\": %d},"
					 " \"seniority\": {\"points\": %d, \"max\": %d, \"joined_at\": %s,"
					 " \"days_on_list\": %.2f, \"full_at_days\": %d}},",
					 parts.urgent, w->weight_urgent, urgent ? "true" : "false",
					 parts.boost,
					 parts.wait, w->weight_wait,
					 appt_null ? "null" : PrmJsonTimestamp(appt_at),
					 appt_null ? "null" : psprintf("%.2f", parts.days_to_wait),
					 w->wait_full_days,
					 parts.seniority, w->weight_seniority, PrmJsonTimestamp(joined_at),
					 parts.days_on_list, w->seniority_full_days);
	appendStringInfo(&buf,
					 " \"recent_offer_penalty\": {\"points\": %d, \"last_offer_at\": %s,"
					 " \"window\": %s}, \"rank\": %d}",
					 penalty, last_null ? "null" : PrmJsonTimestamp(last_offer),
					 PrmJsonString(PrmFormatSeconds(PrmIntervalUsecs(&w->recent_offer_window) /
													USECS_PER_SEC)),
					 parts.total - penalty);

	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
	result = SPI_datumTransfer(result, false, -1);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * prm.recalculate_priorities(org_id bigint DEFAULT NULL) RETURNS bigint
 *	  Rescore every waiting entry from scratch (after a change of weights,
 *	  say); returns how many scores changed.  The passage of time needs no
 *	  such sweep: PrmRescoreDue rescores the entries whose deadline came.
 */
Datum
prm_recalculate_priorities(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	char			  nulls[2] = {' ', ' '};
	int64			  changed;
	bool			  isnull;

	PrmSpiConnect();
	if (PG_ARGISNULL(0))
	{
		if (!PrmCallerIsPrivileged())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to recalculate every organization"),
					 errhint("Pass the organization's id.")));
		nulls[0] = 'n';
		values[0] = (Datum) 0;
	}
	else
	{
		values[0] = Int64GetDatum(PG_GETARG_INT64(0));
		PrmRequireOrgAccess(PG_GETARG_INT64(0), PRM_LEVEL_STAFF);
	}

	/*
	 * Touch every waiting entry's deadline column: the score trigger
	 * rescores it with its organization's weights as of now and sets its
	 * next deadline.  The count is of the scores that changed.
	 */
	PrmPrepare(&plan,
			   "WITH old AS (SELECT w.org_id, w.id, w.priority_score FROM prm.waitlist_entry w"
			   "              WHERE w.status = 'waiting' AND ($1::bigint IS NULL OR w.org_id = $1)),"
			   "     u AS (UPDATE prm.waitlist_entry w SET score_due_at = NULL FROM old"
			   "            WHERE w.org_id = old.org_id AND w.id = old.id"
			   "           RETURNING w.priority_score IS DISTINCT FROM old.priority_score AS changed)"
			   "SELECT pg_catalog.count(*) FILTER (WHERE u.changed) FROM u",
			   1, (Oid[]){INT8OID});
	PrmExecute(plan, values, nulls, false, 0);
	changed = PrmGetInt64(0, 1, &isnull);
	PrmSpiFinish();
	PG_RETURN_INT64(changed);
}

/*
 * Rescore the waiting entries whose deadline (score_due_at) has come, at
 * most limit of them, the longest due first, passing over those locked
 * right now: the steady-state work of the passage of time, proportional to
 * the scores that change rather than to the waitlist.  Inside SPI.
 */
int64
PrmRescoreDue(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];

	PrmPrepare(&plan,
			   /*
				* the due rows, locked, then updated by the tuple ids the lock
				* returned (a TID scan: a semi-join on the key would scan the
				* whole table once the planner expects a few thousand rows)
				*/
			   "UPDATE prm.waitlist_entry w SET score_due_at = NULL"
			   " WHERE w.ctid = ANY (ARRAY("
			   "   SELECT d.ctid FROM prm.waitlist_entry d"
			   "    WHERE d.status = 'waiting' AND d.score_due_at <= pg_catalog.now()"
			   "    ORDER BY d.score_due_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED))",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	return PrmExecute(plan, values, NULL, false, 0);
}
