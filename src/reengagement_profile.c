/*-------------------------------------------------------------------------
 *
 * reengagement_profile.c
 *	  prm.patient_judgement: everything prm.patient_profile derives from a
 *	  patient's statistics row, the next appointment and the organization's
 *	  thresholds, in one call.
 *
 * The profile view once spelled each derived column out in SQL (rhythm,
 * ratio, rates, horizon and lifetime value, score, level, risk), with the
 * intermediate figures in lateral subqueries.  The planner copies such
 * subqueries' expressions into every column that reads them, and the
 * scoring functions read them many times over, so planning the profile of
 * one patient cost several times its execution and a lookup by key ten
 * times a plain primary-key read.  This function computes the same
 * columns, with the same arithmetic (the same numeric and float8 functions
 * in the same order, and the scoring functions of reengagement.c), so the
 * view plans as two index lookups and one function call.
 *
 * The moment of judgement (now() in the view) is an argument.  NULL
 * statistics arguments are a patient without a statistics row, as the
 * view's LEFT JOIN gives them.  The stored next appointment stands until
 * it passes; then the function looks the next one up (as the caller, so
 * row security applies: the function is STABLE, not IMMUTABLE).
 *
 * The organization's thresholds are read by the function (as the caller,
 * once per command and call site), not joined in by the view: the join
 * with prm.reengagement_settings, a view over the settings jsonb, and its
 * nine columns passed as arguments made planning one patient's profile
 * about twice as long.  For the same reason the result is a named row
 * type: the planner builds a record's column list from the OUT arguments
 * at every reference.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "prm.h"
#include "reengagement.h"

PG_FUNCTION_INFO_V1(prm_patient_judgement);

/* the arguments, in the order of the SQL signature */
enum
{
	JA_ORG,
	JA_PATIENT,
	JA_COMPLETED,
	JA_TOTAL,
	JA_CANCELLED,
	JA_NOSHOW,
	JA_LAST_VISIT,
	JA_AVG_DAYS,
	JA_REVENUE,
	JA_OUT_N,
	JA_REPLIED,
	JA_LAST_OUT,
	JA_LAST_IN,
	JA_NEXT_AT,
	JA_AS_OF,
	JA_COUNT
};

/* the columns of prm.patient_judgement_row, in order */
enum
{
	JO_NEXT_AT,
	JO_DAYS_SINCE,
	JO_DAYS_UNTIL_NEXT,
	JO_RHYTHM,
	JO_RHYTHM_RATIO,
	JO_CANCELLATION_RATE,
	JO_NO_SHOW_RATE,
	JO_ATTENDANCE_RATE,
	JO_AVERAGE_VISIT_VALUE,
	JO_HORIZON_VALUE,
	JO_LIFETIME_VALUE,
	JO_RESPONSE_RATE,
	JO_DAYS_SINCE_CONTACT,
	JO_ENGAGEMENT_SCORE,
	JO_ENGAGEMENT_LEVEL,
	JO_CHURN_RISK,
	JO_COUNT
};

/*
 * The next appointment: the stored one (stored_next, or 0 for none), unless
 * it has passed by now; then the patient's first active appointment after
 * now, looked up as the caller (row security applies).  false: none.
 */
static bool
NextAppointment(int64 org_id, int64 patient_id, bool has_stored, TimestampTz stored,
				TimestampTz now, TimestampTz *next)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;
	bool			  found;

	if (!has_stored || stored > now)
	{
		*next = stored;
		return has_stored;
	}
	PrmSpiConnectReadOnly();
	PrmPrepare(&plan,
			   "SELECT a.starts_at FROM prm.appointment a"
			   " WHERE a.org_id = $1 AND a.patient_id = $2"
			   "   AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in')"
			   "   AND a.starts_at > $3"
			   " ORDER BY a.starts_at LIMIT 1",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = TimestampTzGetDatum(now);
	found = PrmExecute(plan, values, NULL, true, 1) == 1;
	if (found)
		*next = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
	PrmSpiFinish();
	return found;
}

/*
 * What a call site keeps between calls (fn_extra): the result's row type
 * and the last organization's thresholds, valid for the command that read
 * them (a STABLE function's statements see that command's snapshot, so
 * every row of a profile scan is judged with one reading, taken once).
 */
typedef struct JudgementCallCache
{
	TupleDesc		   desc;
	bool			   has_thresholds;
	int64			   org_id;
	Oid				   user_id;
	LocalTransactionId lxid;
	CommandId		   cid;
	PrmThresholds	   t;
} JudgementCallCache;

/* The call site's cache, made on the first call. */
static JudgementCallCache *
CallCache(FunctionCallInfo fcinfo)
{
	JudgementCallCache *cache = (JudgementCallCache *) fcinfo->flinfo->fn_extra;
	TupleDesc			desc;
	MemoryContext		old;

	if (cache != NULL)
		return cache;
	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE || desc->natts != JO_COUNT)
		elog(ERROR, "prm.patient_judgement() must return the %d columns of prm.patient_judgement_row",
			 JO_COUNT);
	cache = palloc0(sizeof(JudgementCallCache));
	cache->desc = BlessTupleDesc(CreateTupleDescCopy(desc));
	MemoryContextSwitchTo(old);
	fcinfo->flinfo->fn_extra = cache;
	return cache;
}

/* The organization's thresholds, read as the caller once per command. */
static void
CallThresholds(JudgementCallCache *cache, int64 org_id, PrmThresholds *t)
{
	CommandId cid = GetCurrentCommandId(false);

	if (!cache->has_thresholds || cache->org_id != org_id || cache->user_id != GetUserId() ||
		cache->lxid != MyProc->lxid || cache->cid != cid)
	{
		PrmSpiConnectReadOnly();
		PrmLoadThresholds(org_id, &cache->t);
		PrmSpiFinish();
		cache->has_thresholds = true;
		cache->org_id = org_id;
		cache->user_id = GetUserId();
		cache->lxid = MyProc->lxid;
		cache->cid = cid;
	}
	*t = cache->t;
}

static int32
ArgInt(FunctionCallInfo fcinfo, int n, bool *isnull)
{
	*isnull = PG_ARGISNULL(n);
	return *isnull ? 0 : PG_GETARG_INT32(n);
}

/* round(x, places) of a numeric */
static Datum
Round(Datum n, int places)
{
	return DirectFunctionCall2(numeric_round, n, Int32GetDatum(places));
}

/* round(x::numeric, places) of a float8 */
static Datum
RoundFloat(double x, int places)
{
	return Round(DirectFunctionCall1(float8_numeric, Float8GetDatum(x)), places);
}

/* round(a::numeric / b, places) of two int4 */
static Datum
RoundRatio(int32 a, int32 b, int places)
{
	return Round(DirectFunctionCall2(numeric_div, NumericGetDatum(int64_to_numeric(a)),
									 NumericGetDatum(int64_to_numeric(b))),
				 places);
}

/* round((extract(epoch FROM later - earlier) / 86400)::numeric, 1) */
static Datum
RoundDaysBetween(TimestampTz later, TimestampTz earlier)
{
	Datum iv = DirectFunctionCall2(timestamp_mi, TimestampTzGetDatum(later),
								   TimestampTzGetDatum(earlier));
	Datum secs = DirectFunctionCall2(extract_interval, CStringGetTextDatum("epoch"), iv);

	return Round(DirectFunctionCall2(numeric_div, secs, NumericGetDatum(int64_to_numeric(86400))),
				 1);
}

/*
 * prm.patient_judgement(org_id, patient_id, completed_visits,
 *		total_appointments, cancellations,
 *		no_shows, last_visit_at, avg_days_between_visits, revenue,
 *		messages_out, replied_out, last_outbound_at, last_inbound_at,
 *		next_appointment_at, as_of) RETURNS prm.patient_judgement_row
 *	  The derived columns of prm.patient_profile, with the thresholds of
 *	  the organization (prm.reengagement_settings); see the header.
 */
Datum
prm_patient_judgement(PG_FUNCTION_ARGS)
{
	JudgementCallCache *cache;
	Datum				out[JO_COUNT];
	bool				nulls[JO_COUNT];
	PrmThresholds		t;
	PatientFacts		f;
	bool				no_completed;
	bool				no_total;
	bool				no_cancelled;
	bool				no_noshow;
	bool				no_out;
	bool				no_replied;
	int32				completed = ArgInt(fcinfo, JA_COMPLETED, &no_completed);
	int32				total = ArgInt(fcinfo, JA_TOTAL, &no_total);
	int32				cancelled = ArgInt(fcinfo, JA_CANCELLED, &no_cancelled);
	int32				noshow = ArgInt(fcinfo, JA_NOSHOW, &no_noshow);
	int32				out_n = ArgInt(fcinfo, JA_OUT_N, &no_out);
	int32				replied = ArgInt(fcinfo, JA_REPLIED, &no_replied);
	bool				has_revenue = !PG_ARGISNULL(JA_REVENUE);
	Datum				revenue = has_revenue ? PG_GETARG_DATUM(JA_REVENUE) : 0;
	TimestampTz			now;
	double				days_since = 0;
	double				rhythm;
	double				score;
	Datum				per_visit;
	int					risk;
	TimestampTz			next = 0;

	PrmArgNotNull(fcinfo, JA_ORG, "org_id");
	PrmArgNotNull(fcinfo, JA_PATIENT, "patient_id");
	PrmArgNotNull(fcinfo, JA_AS_OF, "as_of");
	now = PG_GETARG_TIMESTAMPTZ(JA_AS_OF);
	cache = CallCache(fcinfo);
	CallThresholds(cache, PG_GETARG_INT64(JA_ORG), &t);

	memset(nulls, true, sizeof(nulls));

	/* the facts the scoring functions read, as the view passed them */
	memset(&f, 0, sizeof(f));
	f.visits = Max(completed, 0);
	if (!PG_ARGISNULL(JA_LAST_VISIT))
	{
		/* date_part('epoch', now() - last_visit_at) / 86400 */
		Datum ago = DirectFunctionCall2(timestamp_mi, TimestampTzGetDatum(now),
										PG_GETARG_DATUM(JA_LAST_VISIT));

		days_since = DatumGetFloat8(DirectFunctionCall2(interval_part,
														CStringGetTextDatum("epoch"), ago)) /
					 86400;
		out[JO_DAYS_SINCE] = Float8GetDatum(days_since);
		nulls[JO_DAYS_SINCE] = false;
		f.visited = f.visits > 0;
		f.days_since = f.visited ? Max(days_since, 0.0) : 0;
	}
	f.has_avg = !PG_ARGISNULL(JA_AVG_DAYS);
	if (f.has_avg)
		f.avg_days = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
														PG_GETARG_DATUM(JA_AVG_DAYS)));
	f.upcoming = NextAppointment(PG_GETARG_INT64(JA_ORG), PG_GETARG_INT64(JA_PATIENT),
								 !PG_ARGISNULL(JA_NEXT_AT),
								 PG_ARGISNULL(JA_NEXT_AT) ? 0 : PG_GETARG_TIMESTAMPTZ(JA_NEXT_AT),
								 now, &next);
	if (f.upcoming)
	{
		out[JO_NEXT_AT] = TimestampTzGetDatum(next);
		nulls[JO_NEXT_AT] = false;
	}
	/* CASE WHEN total >= 3 THEN (cancellations + no_shows)::float8 / total END */
	f.has_missed = !no_total && total >= 3 && !no_cancelled && !no_noshow;
	if (f.has_missed)
		f.missed_rate = Min(Max((double) (cancelled + noshow) / total, 0.0), 1.0);
	/* CASE WHEN messages_out > 0 THEN replied_out::float8 / messages_out END */
	f.has_response = !no_out && out_n > 0 && !no_replied;
	if (f.has_response)
	{
		f.response_rate = (double) replied / out_n;
		out[JO_RESPONSE_RATE] = RoundFloat(f.response_rate, 3);
		nulls[JO_RESPONSE_RATE] = false;
	}

	if (f.upcoming)
	{
		out[JO_DAYS_UNTIL_NEXT] = RoundDaysBetween(next, now);
		nulls[JO_DAYS_UNTIL_NEXT] = false;
	}
	rhythm = PrmRhythmDays(completed, f.has_avg, f.avg_days, t.default_interval);
	out[JO_RHYTHM] = RoundFloat(rhythm, 1);
	nulls[JO_RHYTHM] = false;
	if (!nulls[JO_DAYS_SINCE])
	{
		out[JO_RHYTHM_RATIO] = RoundFloat(days_since / rhythm, 2);
		nulls[JO_RHYTHM_RATIO] = false;
	}
	if (!no_total && total > 0 && !no_cancelled)
	{
		out[JO_CANCELLATION_RATE] = RoundRatio(cancelled, total, 3);
		nulls[JO_CANCELLATION_RATE] = false;
	}
	if (!no_total && total > 0 && !no_noshow)
	{
		out[JO_NO_SHOW_RATE] = RoundRatio(noshow, total, 3);
		nulls[JO_NO_SHOW_RATE] = false;
	}
	if (!no_completed && !no_noshow && !no_cancelled && completed + noshow + cancelled > 0)
	{
		out[JO_ATTENDANCE_RATE] = RoundRatio(completed, completed + noshow + cancelled, 3);
		nulls[JO_ATTENDANCE_RATE] = false;
	}

	/* revenue / completed_visits, when there are visits and a revenue */
	per_visit = 0;
	if (!no_completed && completed > 0 && has_revenue)
	{
		per_visit = DirectFunctionCall2(numeric_div, revenue,
										NumericGetDatum(int64_to_numeric(completed)));
		out[JO_AVERAGE_VISIT_VALUE] = Round(per_visit, 2);
		nulls[JO_AVERAGE_VISIT_VALUE] = false;
	}
	/* round(CASE WHEN completed > 0 THEN revenue / completed ELSE 0 END * (horizon / rhythm)::numeric, 2) */
	if (no_completed || completed <= 0 || has_revenue)
	{
		Datum v = (!no_completed && completed > 0) ? per_visit
												   : NumericGetDatum(int64_to_numeric(0));

		out[JO_HORIZON_VALUE] =
			Round(DirectFunctionCall2(numeric_mul, v,
									  DirectFunctionCall1(float8_numeric,
														  Float8GetDatum(t.horizon / rhythm))),
				  2);
		nulls[JO_HORIZON_VALUE] = false;
	}

	risk = PrmJudgeRisk(&f, &t);
	out[JO_LIFETIME_VALUE] = PrmLifetimeValue(has_revenue ? revenue
														   : NumericGetDatum(int64_to_numeric(0)),
											  completed, f.has_avg, f.avg_days, risk,
											  t.horizon, t.default_interval);
	nulls[JO_LIFETIME_VALUE] = false;

	/* greatest() of the two, ignoring NULLs */
	if (!PG_ARGISNULL(JA_LAST_OUT) || !PG_ARGISNULL(JA_LAST_IN))
	{
		TimestampTz last;

		if (PG_ARGISNULL(JA_LAST_OUT))
			last = PG_GETARG_TIMESTAMPTZ(JA_LAST_IN);
		else if (PG_ARGISNULL(JA_LAST_IN))
			last = PG_GETARG_TIMESTAMPTZ(JA_LAST_OUT);
		else
			last = Max(PG_GETARG_TIMESTAMPTZ(JA_LAST_OUT), PG_GETARG_TIMESTAMPTZ(JA_LAST_IN));
		out[JO_DAYS_SINCE_CONTACT] = RoundDaysBetween(now, last);
		nulls[JO_DAYS_SINCE_CONTACT] = false;
	}

	score = PrmEngagementScore(&f, &t);
	out[JO_ENGAGEMENT_SCORE] = RoundFloat(score, 1);
	nulls[JO_ENGAGEMENT_SCORE] = false;
	out[JO_ENGAGEMENT_LEVEL] = CStringGetTextDatum(PrmEngagementLevelNames[PrmJudgeLevel(&f, &t)]);
	nulls[JO_ENGAGEMENT_LEVEL] = false;
	out[JO_CHURN_RISK] = CStringGetTextDatum(PrmChurnRiskNames[risk]);
	nulls[JO_CHURN_RISK] = false;

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(cache->desc, out, nulls)));
}
