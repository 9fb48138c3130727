/*-------------------------------------------------------------------------
 *
 * reengagement.c
 *	  Bringing patients back: the pure functions that judge a patient from
 *	  their facts (visit rhythm, churn risk, engagement score and level,
 *	  lifetime value) and their SQL wrappers.  No SPI, no locks: every
 *	  function is IMMUTABLE.
 *
 * The other rooms of reengagement: reengagement_stats.c (per-patient
 * statistics and their triggers), reengagement_sync.c (practice-system
 * sync), reengagement_read.c (summary, outreach performance, search).
 *
 * Rhythm.  Patients are judged against their own rhythm, not a clinic-wide
 * calendar.  A patient with V >= 2 completed visits, the first at F and the
 * last at L, has the rhythm
 *		e = (L - F) / (V - 1) days,
 * their average interval; with fewer visits e is the organization's
 * default_visit_interval_days (180).  e is never taken below 7 days, so two
 * visits on consecutive days do not make a week's absence look like a
 * lapse.  With d days since the last visit, the rhythm ratio is r = d / e:
 * at r = 1 a visit is due now.
 *
 * Churn risk, from r and the thresholds critical_ratio (3.0), high_ratio
 * (2.0) and medium_ratio (1.25):
 *		r >= critical: critical;  r >= high: high;  r >= medium: medium;
 *		else low.
 * A patient with an upcoming appointment is low, one who never visited and
 * has nothing booked is medium.  Then, when at least three appointments are
 * known and half or more of them were cancelled or missed (the missed rate
 * m), the risk goes one step up (low to medium, ..., high to critical).
 *
 * Engagement score, 0 to 100, the sum of
 *		recency		40 x clamp(1 - r / critical, 0, 1); 40 with an upcoming
 *					appointment, 0 for a patient who never visited;
 *		frequency	25 x min(1, V / full_visits (6));
 *		attendance	15 x (1 - m), 7.5 while m is unknown;
 *		replies		20 x the response rate (outbound messages answered within
 *					48 hours / outbound messages), 10 while nothing was sent.
 * Levels: >= high_score (70) highly_engaged, >= moderate_score (45)
 * moderately_engaged, >= low_score (20) low_engagement, else disengaged.
 *
 * Lifetime value: revenue so far (fulfilled visits' prices) plus what the
 * next horizon (ltv_horizon_days, 365) should bring: the average visit value
 * x horizon / e visits x the chance the patient stays, by churn risk: low
 * 0.9, medium 0.6, high 0.3, critical 0.1.  The undiscounted part, average
 * visit value x horizon / e, is the patient's expected_horizon_value; summed
 * over high and critical patients it is the organization's value at risk.
 *
 * All thresholds are settings of the organization (keys of
 * prm.organization.settings, read by the view prm.reengagement_settings)
 * and arguments of the C functions, so the functions stay IMMUTABLE.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "prm.h"
#include "reengagement.h"

PG_FUNCTION_INFO_V1(prm_visit_rhythm_days);
PG_FUNCTION_INFO_V1(prm_churn_risk);
PG_FUNCTION_INFO_V1(prm_engagement_score);
PG_FUNCTION_INFO_V1(prm_engagement_level);
PG_FUNCTION_INFO_V1(prm_lifetime_value);

/* the shortest rhythm a patient is judged against, in days */
#define MIN_RHYTHM_DAYS 7.0
/* the most characters of an unknown churn risk an error message quotes */
#define RISK_QUOTE_CHARS 40

typedef enum ChurnRisk
{
	CHURN_LOW,
	CHURN_MEDIUM,
	CHURN_HIGH,
	CHURN_CRITICAL
} ChurnRisk;

const char *const PrmChurnRiskNames[PRM_RISKS] = {"low", "medium", "high", "critical"};
const char *const PrmEngagementLevelNames[PRM_LEVELS] = {
	"highly_engaged", "moderately_engaged", "low_engagement", "disengaged"};
static const double		 churn_retention[] = {0.9, 0.6, 0.3, 0.1};


static void		 ReadFacts(FunctionCallInfo fcinfo, PatientFacts *f);
static double	 ArgOrDefault(FunctionCallInfo fcinfo, int argno, double dflt);
static double	 RhythmDays(int visits, bool has_avg, double avg_days,
							double default_interval);
static ChurnRisk ComputeChurn(const PatientFacts *f, double critical,
							  double high, double medium,
							  double default_interval);
static double	 ComputeEngagement(const PatientFacts *f, double critical,
								   double default_interval, double full_visits);
static void		 CheckPositive(double value, const char *name);

/* Argument argno as float8, or dflt when it is NULL. */
static double
ArgOrDefault(FunctionCallInfo fcinfo, int argno, double dflt)
{
	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return dflt;
	return PG_GETARG_FLOAT8(argno);
}

/* Raise 22023 unless a threshold is a positive number. */
static void
CheckPositive(double value, const char *name)
{
	if (!(value > 0) || isinf(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a positive number", name)));
}

/*
 * The facts shared by the scoring functions' first arguments:
 * (completed_visits, days_since_last_visit, avg_days_between_visits,
 *  has_upcoming, missed_rate[, response_rate]); NULLs mean "unknown".
 */
static void
ReadFacts(FunctionCallInfo fcinfo, PatientFacts *f)
{
	memset(f, 0, sizeof(*f));
	f->visits = PG_ARGISNULL(0) ? 0 : Max(PG_GETARG_INT32(0), 0);
	f->visited = !PG_ARGISNULL(1) && f->visits > 0;
	f->days_since = f->visited ? Max(PG_GETARG_FLOAT8(1), 0.0) : 0;
	f->has_avg = !PG_ARGISNULL(2);
	f->avg_days = f->has_avg ? PG_GETARG_FLOAT8(2) : 0;
	f->upcoming = !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
	f->has_missed = !PG_ARGISNULL(4);
	f->missed_rate = f->has_missed ? Min(Max(PG_GETARG_FLOAT8(4), 0.0), 1.0) : 0;
}

/* A patient's rhythm in days: their average interval, else the default. */
static double
RhythmDays(int visits, bool has_avg, double avg_days, double default_interval)
{
	double e = (visits >= 2 && has_avg) ? avg_days : default_interval;

	return Max(e, MIN_RHYTHM_DAYS);
}

/* The churn risk of a patient (see the header). */
static ChurnRisk
ComputeChurn(const PatientFacts *f, double critical, double high,
			 double medium, double default_interval)
{
	ChurnRisk risk;

	if (f->upcoming)
		risk = CHURN_LOW;
	else if (!f->visited)
		risk = CHURN_MEDIUM;
	else
	{
		double r = f->days_since / RhythmDays(f->visits, f->has_avg,
											  f->avg_days, default_interval);

		if (r >= critical)
			risk = CHURN_CRITICAL;
		else if (r >= high)
			risk = CHURN_HIGH;
		else if (r >= medium)
			risk = CHURN_MEDIUM;
		else
			risk = CHURN_LOW;
	}
	if (f->has_missed && f->missed_rate >= 0.5 && risk < CHURN_CRITICAL)
		risk++;
	return risk;
}

/* The engagement score of a patient, 0 to 100 (see the header). */
static double
ComputeEngagement(const PatientFacts *f, double critical,
				  double default_interval, double full_visits)
{
	double recency;
	double frequency;
	double attendance;
	double replies;

	if (f->upcoming)
		recency = 40;
	else if (!f->visited)
		recency = 0;
	else
	{
		double r = f->days_since / RhythmDays(f->visits, f->has_avg,
											  f->avg_days, default_interval);

		recency = 40 * Min(Max(1 - r / critical, 0.0), 1.0);
	}
	frequency = 25 * Min(f->visits / full_visits, 1.0);
	attendance = f->has_missed ? 15 * (1 - f->missed_rate) : 7.5;
	replies = f->has_response ? 20 * Min(Max(f->response_rate, 0.0), 1.0) : 10;
	return recency + frequency + attendance + replies;
}

/*
 * prm.visit_rhythm_days(completed_visits, avg_days_between_visits,
 *						 default_interval_days) RETURNS float8
 */
Datum
prm_visit_rhythm_days(PG_FUNCTION_ARGS)
{
	int	   visits = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0);
	double dflt = ArgOrDefault(fcinfo, 2, 180);

	CheckPositive(dflt, "default_interval_days");
	PG_RETURN_FLOAT8(RhythmDays(visits, !PG_ARGISNULL(1),
								PG_ARGISNULL(1) ? 0 : PG_GETARG_FLOAT8(1), dflt));
}

/*
 * prm.churn_risk(completed_visits, days_since_last_visit,
 *				  avg_days_between_visits, has_upcoming, missed_rate,
 *				  critical_ratio, high_ratio, medium_ratio,
 *				  default_interval_days) RETURNS text
 */
Datum
prm_churn_risk(PG_FUNCTION_ARGS)
{
	PatientFacts f;
	double		 critical = ArgOrDefault(fcinfo, 5, 3.0);
	double		 high = ArgOrDefault(fcinfo, 6, 2.0);
	double		 medium = ArgOrDefault(fcinfo, 7, 1.25);
	double		 dflt = ArgOrDefault(fcinfo, 8, 180);

	CheckPositive(medium, "medium_ratio");
	CheckPositive(dflt, "default_interval_days");
	if (!(medium <= high && high <= critical) || isinf(critical))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("churn ratios must satisfy 0 < medium <= high <= critical"),
				 errdetail("medium %g, high %g, critical %g.", medium, high, critical)));
	ReadFacts(fcinfo, &f);
	PG_RETURN_TEXT_P(cstring_to_text(PrmChurnRiskNames[ComputeChurn(&f, critical, high,
															  medium, dflt)]));
}

/* The engagement score from the arguments of engagement_score/_level. */
static double
EngagementFromArgs(FunctionCallInfo fcinfo)
{
	PatientFacts f;
	double		 critical = ArgOrDefault(fcinfo, 6, 3.0);
	double		 dflt = ArgOrDefault(fcinfo, 7, 180);
	double		 full = ArgOrDefault(fcinfo, 8, 6);

	CheckPositive(critical, "critical_ratio");
	CheckPositive(dflt, "default_interval_days");
	CheckPositive(full, "full_visits");
	ReadFacts(fcinfo, &f);
	f.has_response = !PG_ARGISNULL(5);
	f.response_rate = f.has_response ? PG_GETARG_FLOAT8(5) : 0;
	return ComputeEngagement(&f, critical, dflt, full);
}

/*
 * prm.engagement_score(completed_visits, days_since_last_visit,
 *						avg_days_between_visits, has_upcoming, missed_rate,
 *						response_rate, critical_ratio, default_interval_days,
 *						full_visits) RETURNS float8
 */
Datum
prm_engagement_score(PG_FUNCTION_ARGS)
{
	PG_RETURN_FLOAT8(EngagementFromArgs(fcinfo));
}

/*
 * prm.engagement_level(... as engagement_score ..., high_score,
 *						moderate_score, low_score) RETURNS text
 */
Datum
prm_engagement_level(PG_FUNCTION_ARGS)
{
	double		high = ArgOrDefault(fcinfo, 9, 70);
	double		moderate = ArgOrDefault(fcinfo, 10, 45);
	double		low = ArgOrDefault(fcinfo, 11, 20);
	double		score;
	const char *level;

	if (!(0 <= low && low <= moderate && moderate <= high && high <= 100))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("engagement scores must satisfy 0 <= low <= moderate <= high <= 100"),
				 errdetail("low %g, moderate %g, high %g.", low, moderate, high)));
	score = EngagementFromArgs(fcinfo);
	if (score >= high)
		level = "highly_engaged";
	else if (score >= moderate)
		level = "moderately_engaged";
	else if (score >= low)
		level = "low_engagement";
	else
		level = "disengaged";
	PG_RETURN_TEXT_P(cstring_to_text(level));
}

/*
 * prm.lifetime_value(revenue, completed_visits, avg_days_between_visits,
 *					  churn_risk, horizon_days, default_interval_days)
 *	  RETURNS numeric
 */
Datum
prm_lifetime_value(PG_FUNCTION_ARGS)
{
	Numeric revenue;
	int		visits = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	double	horizon = ArgOrDefault(fcinfo, 4, 365);
	double	dflt = ArgOrDefault(fcinfo, 5, 180);
	char   *risk;
	int		i;

	CheckPositive(horizon, "horizon_days");
	CheckPositive(dflt, "default_interval_days");
	if (PG_ARGISNULL(3))
		PG_RETURN_NULL();
	risk = text_to_cstring(PG_GETARG_TEXT_PP(3));
	for (i = 0; i < (int) lengthof(PrmChurnRiskNames); i++)
		if (strcmp(risk, PrmChurnRiskNames[i]) == 0)
			break;
	if (i == (int) lengthof(PrmChurnRiskNames))
	{
		/* quote at most RISK_QUOTE_CHARS of it: the argument may be huge */
		int clip = pg_mbcharcliplen(risk, strlen(risk), RISK_QUOTE_CHARS);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("churn risk \"%.*s%s\" is not recognized",
						clip, risk, risk[clip] ? "..." : ""),
				 errhint("Use critical, high, medium or low.")));
	}
	revenue = PG_ARGISNULL(0) ? int64_to_numeric(0) : PG_GETARG_NUMERIC(0);
	PG_RETURN_DATUM(PrmLifetimeValue(NumericGetDatum(revenue), visits, !PG_ARGISNULL(2),
									 PG_ARGISNULL(2) ? 0 : PG_GETARG_FLOAT8(2), i,
									 horizon, dflt));
}

/*
 * The lifetime value (see the header) of a patient with the churn risk
 * risk (an index of PrmChurnRiskNames); revenue is numeric.
 */
Datum
PrmLifetimeValue(Datum revenue, int visits, bool has_avg, double avg_days,
				 int risk, double horizon, double default_interval)
{
	double future = 0;
	Datum  d;

	if (visits > 0)
	{
		double per_visit = DatumGetFloat8(DirectFunctionCall1(numeric_float8, revenue)) /
						   visits;
		double e = RhythmDays(visits, has_avg, avg_days, default_interval);

		future = per_visit * (horizon / e) * churn_retention[risk];
	}
	d = DirectFunctionCall1(float8_numeric, Float8GetDatum(future));
	d = DirectFunctionCall2(numeric_add, revenue, d);
	return DirectFunctionCall2(numeric_round, d, Int32GetDatum(2));
}

/* RhythmDays, for the other rooms. */
double
PrmRhythmDays(int visits, bool has_avg, double avg_days, double default_interval)
{
	return RhythmDays(visits, has_avg, avg_days, default_interval);
}

/*
 * Raise what the SQL scoring functions raise for thresholds they refuse,
 * so the statistics triggers judge with the same rules as the view.
 */
void
PrmCheckThresholds(const PrmThresholds *t)
{
	CheckPositive(t->critical, "critical_ratio");
	CheckPositive(t->medium, "medium_ratio");
	CheckPositive(t->default_interval, "default_interval_days");
	CheckPositive(t->full_visits, "full_visits");
	CheckPositive(t->horizon, "horizon_days");
	if (!(t->medium <= t->high && t->high <= t->critical) || isinf(t->critical))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("churn ratios must satisfy 0 < medium <= high <= critical"),
				 errdetail("medium %g, high %g, critical %g.", t->medium, t->high, t->critical)));
	if (!(0 <= t->low_score && t->low_score <= t->moderate_score &&
		  t->moderate_score <= t->high_score && t->high_score <= 100))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("engagement scores must satisfy 0 <= low <= moderate <= high <= 100"),
				 errdetail("low %g, moderate %g, high %g.", t->low_score, t->moderate_score,
						   t->high_score)));
}

/* The engagement level (an index of PrmEngagementLevelNames). */
int
PrmJudgeLevel(const PatientFacts *f, const PrmThresholds *t)
{
	double score = ComputeEngagement(f, t->critical, t->default_interval, t->full_visits);

	if (score >= t->high_score)
		return 0;
	if (score >= t->moderate_score)
		return 1;
	if (score >= t->low_score)
		return 2;
	return 3;
}

/* The engagement score, 0 to 100. */
double
PrmEngagementScore(const PatientFacts *f, const PrmThresholds *t)
{
	return ComputeEngagement(f, t->critical, t->default_interval, t->full_visits);
}

/* The churn risk (an index of PrmChurnRiskNames). */
int
PrmJudgeRisk(const PatientFacts *f, const PrmThresholds *t)
{
	return (int) ComputeChurn(f, t->critical, t->high, t->medium, t->default_interval);
}

/*
 * When, in days since the last visit, the level or the risk of a patient
 * who visited and has nothing booked next changes with the clock alone;
 * -1 when neither ever does.  Both move only with r = days / rhythm: the
 * risk steps up at the next churn ratio above r; the score loses recency
 * linearly, 40 x (1 - r / critical), and the level drops once the score is
 * under the level's lower bound L, i.e. past r* = critical x (1 - (L - K) /
 * 40), K being the rest of the score.
 */
double
PrmJudgeChangeDays(const PatientFacts *f, const PrmThresholds *t)
{
	double e;
	double r;
	double best = -1;
	double ratios[3];
	double bounds[3];
	int	   level;
	int	   i;

	if (f->upcoming || !f->visited)
		return -1;
	e = RhythmDays(f->visits, f->has_avg, f->avg_days, t->default_interval);
	r = f->days_since / e;
	ratios[0] = t->medium;
	ratios[1] = t->high;
	ratios[2] = t->critical;
	for (i = 0; i < 3; i++)
		if (ratios[i] > r)
		{
			best = ratios[i];
			break;
		}
	level = PrmJudgeLevel(f, t);
	bounds[0] = t->high_score;
	bounds[1] = t->moderate_score;
	bounds[2] = t->low_score;
	if (level < 3 && r < t->critical)
	{
		PatientFacts rest = *f;
		double		 k;
		double		 star;

		/* the score without recency: recency is 0 from r = critical on */
		rest.days_since = t->critical * e;
		k = ComputeEngagement(&rest, t->critical, t->default_interval, t->full_visits);
		if (bounds[level] - k > 0)
		{
			star = t->critical * (1 - (bounds[level] - k) / 40);
			if (star < r)
				star = r;
			if (best < 0 || star < best)
				best = star;
		}
	}
	return best < 0 ? -1 : best * e;
}
