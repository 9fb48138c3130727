/*-------------------------------------------------------------------------
 *
 * reengagement.c
 *	  Bringing patients back: practice-system sync, per-patient statistics,
 *	  engagement, churn risk and lifetime value, the organization summary,
 *	  outreach performance and patient search.
 *
 * Statistics.  prm.patient_stats holds, per patient, the figures the
 * profile needs (visits, cancellations, no-shows, first, last and next
 * visit, revenue, messages in and out, replies).  Statement-level AFTER
 * triggers on prm.patient, prm.appointment, prm.outbound_message, its
 * history and prm.inbound_message collect the patients a statement touched
 * from its transition tables and recompute each one's row from that
 * patient's source rows (index scans on (org_id, patient_id)), then upsert
 * it.  Nothing is ever incremented: the row is a function of the source rows
 * alone, so the triggers are idempotent, a bulk statement costs one
 * recompute per patient, not per row, and replaying rows in any order (as
 * pg_restore does; patient_stats itself is not dumped) gives the same
 * result.  prm.rebuild_patient_stats() runs the same statement for every
 * patient of an organization.  Outbound messages never change patient or
 * creation time after they are queued, so only their inserts and deletes
 * (archiving moves them to the history table) are watched.
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
 * patient_stats also stores the level and risk as of its last recompute;
 * when a recompute changes either, the transaction notifies channel
 * prm_patient_risk (once).  The profile view computes them afresh on read,
 * since they move with the clock.
 *
 * Sync.  prm.sync_patients/sync_appointments upsert records of a practice
 * system by (source, external_id).  Each record is validated in C and
 * written in a subtransaction of its own: a bad record (a data or integrity
 * error, or an id not in the organization) is rolled back and reported with
 * its reason, the others apply.  Any other error aborts the whole call.
 * Syncs of one organization are serialised by a transaction advisory lock,
 * so "inserted" and "updated" are reported truthfully.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/tuplestore.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_visit_rhythm_days);
PG_FUNCTION_INFO_V1(prm_churn_risk);
PG_FUNCTION_INFO_V1(prm_engagement_score);
PG_FUNCTION_INFO_V1(prm_engagement_level);
PG_FUNCTION_INFO_V1(prm_lifetime_value);
PG_FUNCTION_INFO_V1(prm_patient_stats_trigger);
PG_FUNCTION_INFO_V1(prm_rebuild_patient_stats);
PG_FUNCTION_INFO_V1(prm_sync_patients);
PG_FUNCTION_INFO_V1(prm_sync_appointments);
PG_FUNCTION_INFO_V1(prm_reengagement_summary);
PG_FUNCTION_INFO_V1(prm_outreach_performance);
PG_FUNCTION_INFO_V1(prm_search_patients);

/* the shortest rhythm a patient is judged against, in days */
#define MIN_RHYTHM_DAYS 7.0
/* the most records one sync call takes */
#define SYNC_MAX_RECORDS 10000
/* lowest word similarity a name search returns */
#define SEARCH_MIN_SCORE "0.3"
/* first key of the advisory lock that serialises syncs of an organization */
#define SYNC_LOCK_KEY 1886547315 /* "prms" in ASCII */

typedef enum ChurnRisk
{
	CHURN_LOW,
	CHURN_MEDIUM,
	CHURN_HIGH,
	CHURN_CRITICAL
} ChurnRisk;

static const char *const churn_names[] = {"low", "medium", "high", "critical"};
static const double		 churn_retention[] = {0.9, 0.6, 0.3, 0.1};

/* What the scoring functions know of one patient. */
typedef struct PatientFacts
{
	int	   visits;	   /* completed visits */
	bool   visited;	   /* days_since is known */
	double days_since; /* days since the last visit */
	bool   has_avg;
	double avg_days; /* average days between visits */
	bool   upcoming; /* has an upcoming appointment */
	bool   has_missed;
	double missed_rate; /* (cancellations + no-shows) / appointments */
	bool   has_response;
	double response_rate; /* replied / outbound */
} PatientFacts;

/* one patient touched by a statement */
typedef struct PatientKey
{
	int64 org_id;
	int64 patient_id;
} PatientKey;

/* what became of one sync record */
typedef enum SyncOutcome
{
	SYNC_INSERTED,
	SYNC_UPDATED,
	SYNC_UNCHANGED
} SyncOutcome;

typedef SyncOutcome (*SyncRecordFn)(int64 org_id, const char *source,
									JsonbContainer *record,
									const char *external_id, void *arg);

static const char *const sync_sources[] = {"cliniko", "nookal", "halaxy", "csv"};

static const char *const appointment_statuses[] = {
	"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled",
	"noshow", "entered-in-error", "checked-in", "waitlist"};

static void		   ReadFacts(FunctionCallInfo fcinfo, PatientFacts *f);
static double	   ArgOrDefault(FunctionCallInfo fcinfo, int argno, double dflt);
static double	   RhythmDays(int visits, bool has_avg, double avg_days,
							  double default_interval);
static ChurnRisk   ComputeChurn(const PatientFacts *f, double critical,
								double high, double medium,
								double default_interval);
static double	   ComputeEngagement(const PatientFacts *f, double critical,
									 double default_interval, double full_visits);
static void		   CheckPositive(double value, const char *name);
static int		   StatsRecompute(int64 org_id, int64 patient_id, bool all);
static int		   StatsCollect(Tuplestorestate *ts, TupleDesc desc, AttrNumber org_att,
								AttrNumber pat_att, PatientKey **keys, int n, int *cap);
static int		   PatientKeyCmp(const void *a, const void *b);
static char		  *SyncSource(FunctionCallInfo fcinfo, int argno);
static Jsonb	  *SyncRecords(FunctionCallInfo fcinfo, int argno);
static char		  *SyncScalarText(JsonbContainer *obj, const char *key, bool required,
								  int maxlen, bool numbers_too);
static Datum	   SyncRun(FunctionCallInfo fcinfo, const char *what,
						   SyncRecordFn fn);
static bool		   SyncRejectable(int sqlerrcode);
static SyncOutcome SyncPatient(int64 org_id, const char *source,
							   JsonbContainer *record, const char *external_id,
							   void *arg);
static SyncOutcome SyncAppointment(int64 org_id, const char *source,
								   JsonbContainer *record,
								   const char *external_id, void *arg);
static SyncOutcome SyncOutcomeOf(void);
static void		   SyncCheckTimestamp(const char *value, const char *name);
static Datum	   SpiJsonbResult(void);

/* ---------------------------------------------------------------------
 * Scoring: pure functions of a patient's facts and the thresholds
 * ---------------------------------------------------------------------
 */

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
	PG_RETURN_TEXT_P(cstring_to_text(churn_names[ComputeChurn(&f, critical, high,
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
	double	future = 0;
	Datum	d;

	CheckPositive(horizon, "horizon_days");
	CheckPositive(dflt, "default_interval_days");
	if (PG_ARGISNULL(3))
		PG_RETURN_NULL();
	risk = text_to_cstring(PG_GETARG_TEXT_PP(3));
	for (i = 0; i < (int) lengthof(churn_names); i++)
		if (strcmp(risk, churn_names[i]) == 0)
			break;
	if (i == (int) lengthof(churn_names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("churn risk \"%s\" is not recognized", risk),
				 errhint("Use critical, high, medium or low.")));
	revenue = PG_ARGISNULL(0) ? int64_to_numeric(0) : PG_GETARG_NUMERIC(0);
	if (visits > 0)
	{
		double per_visit = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
															  NumericGetDatum(revenue))) /
						   visits;
		double e = RhythmDays(visits, !PG_ARGISNULL(2),
							  PG_ARGISNULL(2) ? 0 : PG_GETARG_FLOAT8(2), dflt);

		future = per_visit * (horizon / e) * churn_retention[i];
	}
	d = DirectFunctionCall1(float8_numeric, Float8GetDatum(future));
	d = DirectFunctionCall2(numeric_add, NumericGetDatum(revenue), d);
	PG_RETURN_DATUM(DirectFunctionCall2(numeric_round, d, Int32GetDatum(2)));
}

/* ---------------------------------------------------------------------
 * Statistics: per-patient recompute, the triggers, the rebuild
 * ---------------------------------------------------------------------
 */

/*
 * The statement that recomputes patient_stats rows from the source rows.
 * The first %s restricts the patients (p), the second the old rows (s).
 * It returns how many existing rows changed level or risk.
 */
#define STATS_OUTBOUND(cols)                                          \
	"(SELECT " cols " FROM prm.outbound_message m0"                   \
	"  WHERE m0.org_id = p.org_id AND m0.patient_id = p.id"           \
	" UNION ALL SELECT " cols " FROM prm.outbound_message_history m0" \
	"  WHERE m0.org_id = p.org_id AND m0.patient_id = p.id)"

static const char *const stats_sql =
	"WITH old AS ("
	"  SELECT s.patient_id, s.engagement_level, s.churn_risk FROM prm.patient_stats s"
	"   WHERE s.org_id = $1 AND %s),"
	" fresh AS ("
	"  SELECT p.org_id, p.id AS patient_id, a.total, a.completed, a.cancelled, a.noshow,"
	"         a.first_visit, a.last_visit, a.next_at, a.revenue, g.avg_gap,"
	"         o.n AS out_n, i.n AS in_n, r.n AS replied_n, o.last_at AS out_at, i.last_at AS in_at,"
	"         prm.engagement_level(a.completed, d.days_since, g.avg_gap::float8, a.next_at IS NOT NULL,"
	"           d.missed, CASE WHEN o.n > 0 THEN r.n::float8 / o.n END, t.churn_critical_ratio,"
	"           t.default_visit_interval_days, t.engagement_full_visits, t.engagement_high_score,"
	"           t.engagement_moderate_score, t.engagement_low_score) AS engagement_level,"
	"         prm.churn_risk(a.completed, d.days_since, g.avg_gap::float8, a.next_at IS NOT NULL,"
	"           d.missed, t.churn_critical_ratio, t.churn_high_ratio, t.churn_medium_ratio,"
	"           t.default_visit_interval_days) AS churn_risk"
	"    FROM prm.patient p"
	"    JOIN prm.reengagement_settings t ON t.org_id = p.org_id"
	"    CROSS JOIN LATERAL ("
	"      SELECT pg_catalog.count(*) FILTER (WHERE x.status <> 'entered-in-error')::int AS total,"
	"             pg_catalog.count(*) FILTER (WHERE x.status = 'fulfilled')::int AS completed,"
	"             pg_catalog.count(*) FILTER (WHERE x.status = 'cancelled')::int AS cancelled,"
	"             pg_catalog.count(*) FILTER (WHERE x.status = 'noshow')::int AS noshow,"
	"             pg_catalog.min(x.starts_at) FILTER (WHERE x.status = 'fulfilled') AS first_visit,"
	"             pg_catalog.max(x.starts_at) FILTER (WHERE x.status = 'fulfilled') AS last_visit,"
	"             pg_catalog.min(x.starts_at) FILTER (WHERE x.status IN ('proposed', 'pending', 'booked',"
	"                 'arrived', 'checked-in') AND x.starts_at > pg_catalog.now()) AS next_at,"
	"             coalesce(pg_catalog.sum(x.price) FILTER (WHERE x.status = 'fulfilled'), 0) AS revenue"
	"        FROM prm.appointment x WHERE x.org_id = p.org_id AND x.patient_id = p.id) a"
	"    CROSS JOIN LATERAL ("
	"      SELECT CASE WHEN a.completed >= 2 THEN pg_catalog.round(pg_catalog.date_part('epoch',"
	"               a.last_visit - a.first_visit)::numeric / 86400 / (a.completed - 1), 2) END AS avg_gap) g"
	"    CROSS JOIN LATERAL ("
	"      SELECT pg_catalog.date_part('epoch', pg_catalog.now() - a.last_visit) / 86400 AS days_since,"
	"             CASE WHEN a.total >= 3 THEN (a.cancelled + a.noshow)::float8 / a.total END AS missed) d"
	"    CROSS JOIN LATERAL ("
	"      SELECT pg_catalog.count(*)::int AS n, pg_catalog.max(m.created_at) AS last_at"
	"        FROM " STATS_OUTBOUND("m0.created_at") " m) o"
													"    CROSS JOIN LATERAL ("
													"      SELECT pg_catalog.count(*)::int AS n, pg_catalog.max(y.received_at) AS last_at"
													"        FROM prm.inbound_message y WHERE y.org_id = p.org_id AND y.patient_id = p.id) i"
													"    CROSS JOIN LATERAL ("
													"      SELECT pg_catalog.count(*)::int AS n FROM " STATS_OUTBOUND("m0.created_at") " m"
																																	   "       WHERE i.n > 0 AND EXISTS (SELECT 1 FROM prm.inbound_message y"
																																	   "               WHERE y.org_id = p.org_id AND y.patient_id = p.id"
																																	   "                 AND y.received_at >= m.created_at"
																																	   "                 AND y.received_at < m.created_at + interval '48 hours')) r"
																																	   "   WHERE p.org_id = $1 AND %s),"
																																	   " up AS ("
																																	   "  INSERT INTO prm.patient_stats AS s (org_id, patient_id, total_appointments, completed_visits,"
																																	   "         cancellations, no_shows, first_visit_at, last_visit_at, next_appointment_at, revenue,"
																																	   "         avg_days_between_visits, messages_out, messages_in, replied_out, last_outbound_at,"
																																	   "         last_inbound_at, engagement_level, churn_risk, computed_at)"
																																	   "  SELECT org_id, patient_id, total, completed, cancelled, noshow, first_visit, last_visit, next_at,"
																																	   "         revenue, avg_gap, out_n, in_n, replied_n, out_at, in_at, engagement_level, churn_risk,"
																																	   "         pg_catalog.now()"
																																	   "    FROM fresh"
																																	   "  ON CONFLICT (org_id, patient_id) DO UPDATE SET"
																																	   "         total_appointments = EXCLUDED.total_appointments, completed_visits = EXCLUDED.completed_visits,"
																																	   "         cancellations = EXCLUDED.cancellations, no_shows = EXCLUDED.no_shows,"
																																	   "         first_visit_at = EXCLUDED.first_visit_at, last_visit_at = EXCLUDED.last_visit_at,"
																																	   "         next_appointment_at = EXCLUDED.next_appointment_at, revenue = EXCLUDED.revenue,"
																																	   "         avg_days_between_visits = EXCLUDED.avg_days_between_visits,"
																																	   "         messages_out = EXCLUDED.messages_out, messages_in = EXCLUDED.messages_in,"
																																	   "         replied_out = EXCLUDED.replied_out, last_outbound_at = EXCLUDED.last_outbound_at,"
																																	   "         last_inbound_at = EXCLUDED.last_inbound_at, engagement_level = EXCLUDED.engagement_level,"
																																	   "         churn_risk = EXCLUDED.churn_risk, computed_at = EXCLUDED.computed_at"
																																	   "   WHERE (s.total_appointments, s.completed_visits, s.cancellations, s.no_shows, s.first_visit_at,"
																																	   "          s.last_visit_at, s.next_appointment_at, s.revenue, s.avg_days_between_visits,"
																																	   "          s.messages_out, s.messages_in, s.replied_out, s.last_outbound_at, s.last_inbound_at,"
																																	   "          s.engagement_level, s.churn_risk)"
																																	   "         IS DISTINCT FROM"
																																	   "         (EXCLUDED.total_appointments, EXCLUDED.completed_visits, EXCLUDED.cancellations,"
																																	   "          EXCLUDED.no_shows, EXCLUDED.first_visit_at, EXCLUDED.last_visit_at,"
																																	   "          EXCLUDED.next_appointment_at, EXCLUDED.revenue, EXCLUDED.avg_days_between_visits,"
																																	   "          EXCLUDED.messages_out, EXCLUDED.messages_in, EXCLUDED.replied_out,"
																																	   "          EXCLUDED.last_outbound_at, EXCLUDED.last_inbound_at, EXCLUDED.engagement_level,"
																																	   "          EXCLUDED.churn_risk)"
																																	   "  RETURNING s.patient_id, s.engagement_level, s.churn_risk)"
																																	   "SELECT (SELECT pg_catalog.count(*) FROM fresh)::int,"
																																	   "       (SELECT pg_catalog.count(*)::int FROM up JOIN old USING (patient_id)"
																																	   "         WHERE (old.engagement_level, old.churn_risk) IS DISTINCT FROM"
																																	   "               (up.engagement_level, up.churn_risk))";

/*
 * Recompute the statistics of one patient (or, with all, of every patient
 * of the organization) from their rows.  Returns the number of patients
 * whose stored level or risk changed; *patients (when not NULL) gets the
 * number of patients computed.  Must run inside SPI.
 */
static int
StatsRecomputeCounting(int64 org_id, int64 patient_id, bool all, int *patients)
{
	static SPIPlanPtr one_plan = NULL;
	static SPIPlanPtr all_plan = NULL;
	SPIPlanPtr		  plan;
	Datum			  values[2];
	bool			  isnull;

	if (all)
		plan = PrmPrepare(&all_plan, psprintf(stats_sql, "true", "true"),
						  1, (Oid[]){INT8OID});
	else
		plan = PrmPrepare(&one_plan,
						  psprintf(stats_sql, "s.patient_id = $2", "p.id = $2"),
						  2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	if (PrmExecute(plan, values, NULL, false, 0) != 1)
		elog(ERROR, "patient statistics recompute returned no row");
	if (patients)
		*patients = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 2, &isnull));
}

/* Recompute one patient's statistics; the number of level/risk changes. */
static int
StatsRecompute(int64 org_id, int64 patient_id, bool all)
{
	return StatsRecomputeCounting(org_id, patient_id, all, NULL);
}

/* Order PatientKeys by organization, then patient. */
static int
PatientKeyCmp(const void *a, const void *b)
{
	const PatientKey *x = (const PatientKey *) a;
	const PatientKey *y = (const PatientKey *) b;

	if (x->org_id != y->org_id)
		return x->org_id < y->org_id ? -1 : 1;
	if (x->patient_id != y->patient_id)
		return x->patient_id < y->patient_id ? -1 : 1;
	return 0;
}

/*
 * Append the (org_id, patient) pairs of a transition table to *keys (n
 * used, *cap allocated); rows without a patient are skipped.  Returns the
 * new count.
 */
static int
StatsCollect(Tuplestorestate *ts, TupleDesc desc, AttrNumber org_att,
			 AttrNumber pat_att, PatientKey **keys, int n, int *cap)
{
	TupleTableSlot *slot;

	if (ts == NULL)
		return n;
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	tuplestore_rescan(ts);
	while (tuplestore_gettupleslot(ts, true, false, slot))
	{
		bool  org_null;
		bool  pat_null;
		Datum org = slot_getattr(slot, org_att, &org_null);
		Datum pat = slot_getattr(slot, pat_att, &pat_null);

		if (org_null || pat_null)
			continue;
		if (n == *cap)
		{
			*cap *= 2;
			*keys = repalloc(*keys, sizeof(PatientKey) * *cap);
		}
		(*keys)[n].org_id = DatumGetInt64(org);
		(*keys)[n].patient_id = DatumGetInt64(pat);
		n++;
	}
	ExecDropSingleTupleTableSlot(slot);
	return n;
}

/*
 * AFTER ... FOR EACH STATEMENT trigger with transition tables: recompute
 * the statistics of every patient the statement touched, once each.  The
 * trigger's argument names the column holding the patient's id.
 */
Datum
prm_patient_stats_trigger(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	TriggerData		 *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc		  desc;
	AttrNumber		  org_att;
	AttrNumber		  pat_att;
	PatientKey		 *keys;
	int				  cap = 16;
	int				  n = 0;
	int				  i;
	int				  changed = 0;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		elog(ERROR, "patient_stats_trigger: not called as an AFTER STATEMENT trigger");
	if (trigdata->tg_trigger->tgnargs != 1)
		elog(ERROR, "patient_stats_trigger: expected the patient column as argument");

	desc = RelationGetDescr(trigdata->tg_relation);
	org_att = SPI_fnumber(desc, "org_id");
	pat_att = SPI_fnumber(desc, trigdata->tg_trigger->tgargs[0]);
	if (org_att <= 0 || pat_att <= 0)
		elog(ERROR, "patient_stats_trigger: relation \"%s\" has no column org_id or \"%s\"",
			 RelationGetRelationName(trigdata->tg_relation),
			 trigdata->tg_trigger->tgargs[0]);

	keys = palloc(sizeof(PatientKey) * cap);
	n = StatsCollect(trigdata->tg_oldtable, desc, org_att, pat_att, &keys, n, &cap);
	n = StatsCollect(trigdata->tg_newtable, desc, org_att, pat_att, &keys, n, &cap);
	if (n == 0)
		return PointerGetDatum(NULL);
	qsort(keys, n, sizeof(PatientKey), PatientKeyCmp);

	PrmSpiConnect();

	/*
	 * Serialise recomputes of one patient: without a lock, two transactions
	 * writing rows of the same patient would each compute from a snapshot
	 * without the other's rows, and the later commit would store stale
	 * figures.  The lock is the patient's statistics row (made first if
	 * missing), taken in key order so these locks cannot deadlock among
	 * themselves; row locks live in the tuples, so a bulk load of many
	 * patients uses no lock-table memory.  Each recompute then runs with a
	 * snapshot taken after the lock, which sees what the previous holder
	 * committed.
	 */
	PrmPrepare(&lock_plan,
			   "WITH made AS (INSERT INTO prm.patient_stats (org_id, patient_id, engagement_level, churn_risk)"
			   "              SELECT $1, $2, 'disengaged', 'low'"
			   "               WHERE EXISTS (SELECT 1 FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2)"
			   "              ON CONFLICT (org_id, patient_id) DO NOTHING RETURNING 1)"
			   "SELECT (SELECT pg_catalog.count(*) FROM made),"
			   "       (SELECT 1 FROM prm.patient_stats s WHERE s.org_id = $1 AND s.patient_id = $2 FOR UPDATE)",
			   2, (Oid[]){INT8OID, INT8OID});
	for (i = 0; i < n; i++)
	{
		Datum lv[2];

		if (i > 0 && PatientKeyCmp(&keys[i - 1], &keys[i]) == 0)
			continue;
		lv[0] = Int64GetDatum(keys[i].org_id);
		lv[1] = Int64GetDatum(keys[i].patient_id);
		PrmExecute(lock_plan, lv, NULL, false, 1);
	}
	for (i = 0; i < n; i++)
	{
		if (i > 0 && PatientKeyCmp(&keys[i - 1], &keys[i]) == 0)
			continue;
		changed += StatsRecompute(keys[i].org_id, keys[i].patient_id, false);
	}
	PrmSpiFinish();
	if (changed > 0)
		PrmNotifyOnce("prm_patient_risk");
	pfree(keys);
	return PointerGetDatum(NULL);
}

/*
 * prm.rebuild_patient_stats(org_id) RETURNS bigint
 *	  Throw the organization's statistics away and compute them again.
 */
Datum
prm_rebuild_patient_stats(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr delete_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Datum			  values[1];
	int				  patients;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&delete_plan, "DELETE FROM prm.patient_stats s WHERE s.org_id = $1",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	PrmExecute(delete_plan, values, NULL, false, 0);
	(void) StatsRecomputeCounting(org_id, 0, true, &patients);
	PrmEmitEvent(org_id, "patient_stats_rebuilt", "organization", org_id,
				 psprintf("{\"patients\": %d}", patients));
	PrmSpiFinish();
	PG_RETURN_INT64(patients);
}

/* ---------------------------------------------------------------------
 * Sync
 * ---------------------------------------------------------------------
 */

/*
 * Refuse a time that is not ISO 8601 with a UTC offset ("2031-03-03T09:00:00
 * +11:00" or "...Z"): read any other way, it would depend on the session's
 * TimeZone and DateStyle, and a re-sync from another session would move it.
 */
static void
SyncCheckTimestamp(const char *value, const char *name)
{
	size_t		len = strlen(value);
	const char *tail;
	bool		ok = len >= 17 && isdigit((unsigned char) value[0]) &&
			  value[4] == '-' && value[7] == '-' &&
			  (value[10] == 'T' || value[10] == ' ');

	if (ok)
	{
		if (value[len - 1] == 'Z')
			ok = true;
		else
		{
			/* +HH, +HHMM or +HH:MM at the end */
			for (tail = value + len - 1; tail > value + 10 && (isdigit((unsigned char) *tail) || *tail == ':'); tail--)
				;
			ok = (*tail == '+' || *tail == '-') && (value + len - tail) >= 3;
		}
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_DATETIME_FORMAT),
				 errmsg("%s \"%s\" is not an ISO 8601 time with a UTC offset", name, value),
				 errhint("Write it as 2031-03-03T09:00:00+11:00 or 2031-03-02T22:00:00Z.")));
}

/* The source argument: one of the known practice systems, else 22023. */
static char *
SyncSource(FunctionCallInfo fcinfo, int argno)
{
	char *source = PrmTextArg(fcinfo, argno, "source", 40);
	int	  i;

	for (i = 0; i < (int) lengthof(sync_sources); i++)
		if (strcmp(source, sync_sources[i]) == 0)
			return source;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("sync source \"%s\" is not recognized", source),
			 errhint("Use cliniko, nookal, halaxy or csv.")));
	return NULL; /* keep compiler quiet */
}

/* The records argument: a JSON array of at most SYNC_MAX_RECORDS. */
static Jsonb *
SyncRecords(FunctionCallInfo fcinfo, int argno)
{
	Jsonb *records;

	PrmArgNotNull(fcinfo, argno, "records");
	records = PG_GETARG_JSONB_P(argno);
	if (!JB_ROOT_IS_ARRAY(records) || JB_ROOT_IS_SCALAR(records))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("records must be a JSON array")));
	if (JB_ROOT_COUNT(records) > SYNC_MAX_RECORDS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many records in one sync"),
				 errdetail("%u records were sent; at most %d are accepted per call.",
						   JB_ROOT_COUNT(records), SYNC_MAX_RECORDS),
				 errhint("Send them in batches.")));
	return records;
}

/*
 * A scalar field of a record as text: a string (or, with numbers_too, a
 * number).  Missing or null: NULL, or 22004 when required.  Blank strings
 * count as missing; longer than maxlen: 22001.
 */
static char *
SyncScalarText(JsonbContainer *obj, const char *key, bool required,
			   int maxlen, bool numbers_too)
{
	JsonbValue	v;
	char	   *text = NULL;
	const char *p;

	if (getKeyJsonValueFromContainer(obj, key, strlen(key), &v) != NULL &&
		v.type != jbvNull)
	{
		if (v.type == jbvString)
			text = pnstrdup(v.val.string.val, v.val.string.len);
		else if (v.type == jbvNumeric && numbers_too)
			text = DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v.val.numeric)));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("field \"%s\" must be a JSON %s", key,
							numbers_too ? "string or number" : "string")));
		for (p = text; *p && isspace((unsigned char) *p); p++)
			;
		if (*p == '\0')
			text = NULL;
	}
	if (text == NULL)
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("field \"%s\" is required", key)));
		return NULL;
	}
	PrmCheckTextLength(text, psprintf("field \"%s\"", key), maxlen);
	return text;
}

/* Errors that reject one record; any other aborts the sync. */
static bool
SyncRejectable(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_DATA_EXCEPTION ||
		   ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		   sqlerrcode == ERRCODE_NO_DATA_FOUND;
}

/* The outcome from the (id, inserted, changed) row of an upsert. */
static SyncOutcome
SyncOutcomeOf(void)
{
	bool isnull;
	bool inserted = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 2, &isnull));
	bool changed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 3, &isnull));

	if (inserted)
		return SYNC_INSERTED;
	return changed ? SYNC_UPDATED : SYNC_UNCHANGED;
}

/* Insert or update one patient record.  Inside SPI and a subtransaction. */
static SyncOutcome
SyncPatient(int64 org_id, const char *source, JsonbContainer *record,
			const char *external_id, void *arg)
{
	static SPIPlanPtr plan = NULL;
	const char		 *region = (const char *) arg;
	char			 *given = SyncScalarText(record, "given_name", true, PRM_MAX_NAME_LEN, false);
	char			 *family = SyncScalarText(record, "family_name", true, PRM_MAX_NAME_LEN, false);
	char			 *phone = SyncScalarText(record, "phone", false, 40, true);
	char			 *email = SyncScalarText(record, "email", false, 254, false);
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	if (phone)
	{
		char *e164 = PrmTryNormalizePhone(phone, region);

		if (e164 == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("phone number \"%s\" cannot be read", phone)));
		phone = e164;
	}
	if (email)
		PrmCheckEmail(email);

	PrmPrepare(&plan,
			   "WITH old AS ("
			   "  SELECT p.id, (p.given_name, p.family_name, p.phone, p.email)"
			   "         IS DISTINCT FROM ($4, $5, $6, $7) AS changed"
			   "    FROM prm.patient p"
			   "   WHERE p.org_id = $1 AND p.external_source = $2 AND p.external_id = $3),"
			   " up AS ("
			   "  INSERT INTO prm.patient AS p (org_id, external_source, external_id, given_name,"
			   "         family_name, phone, email, last_synced_at)"
			   "  VALUES ($1, $2, $3, $4, $5, $6, $7, pg_catalog.now())"
			   "  ON CONFLICT (org_id, external_source, external_id) DO UPDATE SET"
			   "         given_name = EXCLUDED.given_name, family_name = EXCLUDED.family_name,"
			   "         phone = EXCLUDED.phone, email = EXCLUDED.email,"
			   "         last_synced_at = EXCLUDED.last_synced_at,"
			   "         updated_at = CASE WHEN (p.given_name, p.family_name, p.phone, p.email)"
			   "             IS DISTINCT FROM (EXCLUDED.given_name, EXCLUDED.family_name,"
			   "                               EXCLUDED.phone, EXCLUDED.email)"
			   "             THEN pg_catalog.now() ELSE p.updated_at END"
			   "  RETURNING p.id)"
			   "SELECT up.id, old.id IS NULL, coalesce(old.changed, true)"
			   "  FROM up LEFT JOIN old ON true",
			   7, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(source);
	values[2] = CStringGetTextDatum(external_id);
	values[3] = CStringGetTextDatum(given);
	values[4] = CStringGetTextDatum(family);
	if (phone)
		values[5] = CStringGetTextDatum(phone);
	else
		nulls[5] = 'n';
	if (email)
		values[6] = CStringGetTextDatum(email);
	else
		nulls[6] = 'n';
	if (PrmExecute(plan, values, nulls, false, 0) != 1)
		elog(ERROR, "patient upsert returned no row");
	return SyncOutcomeOf();
}

/* Insert or update one appointment record.  Inside SPI and a subtransaction. */
static SyncOutcome
SyncAppointment(int64 org_id, const char *source, JsonbContainer *record,
				const char *external_id, void *arg)
{
	static SPIPlanPtr patient_plan = NULL;
	static SPIPlanPtr plan = NULL;
	char			 *patient_ext = SyncScalarText(record, "patient_external_id", true, 200, true);
	char			 *provider = SyncScalarText(record, "provider_id", true, 20, true);
	char			 *starts = SyncScalarText(record, "starts_at", true, 64, false);
	char			 *ends = SyncScalarText(record, "ends_at", true, 64, false);
	char			 *status = SyncScalarText(record, "status", false, 30, false);
	char			 *price = SyncScalarText(record, "price", false, 20, true);
	int64			  provider_id;
	int64			  patient_id;
	TimestampTz		  starts_at;
	TimestampTz		  ends_at;
	Datum			  price_num = (Datum) 0;
	Datum			  values[9];
	char			  nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int				  i;

	provider_id = DatumGetInt64(DirectFunctionCall1(int8in, CStringGetDatum(provider)));
	SyncCheckTimestamp(starts, "starts_at");
	SyncCheckTimestamp(ends, "ends_at");
	starts_at = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(starts),
														ObjectIdGetDatum(InvalidOid),
														Int32GetDatum(-1)));
	ends_at = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(ends),
													  ObjectIdGetDatum(InvalidOid),
													  Int32GetDatum(-1)));
	if (TIMESTAMP_NOT_FINITE(starts_at) || TIMESTAMP_NOT_FINITE(ends_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("appointment times must be finite")));
	if (ends_at <= starts_at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an appointment must end after it starts")));
	if (ends_at - starts_at > USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an appointment cannot last longer than a day")));
	if (status == NULL)
		status = "booked";
	for (i = 0; i < (int) lengthof(appointment_statuses); i++)
		if (strcmp(status, appointment_statuses[i]) == 0)
			break;
	if (i == (int) lengthof(appointment_statuses))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("appointment status \"%s\" is not recognized", status)));
	if (price)
	{
		price_num = DirectFunctionCall3(numeric_in, CStringGetDatum(price),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		if (numeric_is_nan(DatumGetNumeric(price_num)) ||
			numeric_is_inf(DatumGetNumeric(price_num)) ||
			DatumGetBool(DirectFunctionCall2(numeric_lt, price_num,
											 NumericGetDatum(int64_to_numeric(0)))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("price \"%s\" must be a number not below zero", price)));
	}

	PrmPrepare(&patient_plan,
			   "SELECT p.id FROM prm.patient p"
			   " WHERE p.org_id = $1 AND p.external_source = $2 AND p.external_id = $3",
			   3, (Oid[]){INT8OID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(source);
	values[2] = CStringGetTextDatum(patient_ext);
	if (PrmExecute(patient_plan, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("patient \"%s\" of %s has not been synced to organization %lld",
						patient_ext, source, (long long) org_id)));
	patient_id = PrmGetInt64(0, 1, &isnull);
	PrmRequireRow(org_id, PRM_ENTITY_PROVIDER, provider_id, false);

	PrmPrepare(&plan,
			   "WITH old AS ("
			   "  SELECT a.id, (a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.status, a.price)"
			   "         IS DISTINCT FROM ($4, $5, $6, $7, $8, $9::numeric(12,2)) AS changed"
			   "    FROM prm.appointment a"
			   "   WHERE a.org_id = $1 AND a.external_source = $2 AND a.external_id = $3),"
			   " up AS ("
			   "  INSERT INTO prm.appointment AS a (org_id, external_source, external_id, patient_id,"
			   "         provider_id, starts_at, ends_at, status, price, cancelled_at, last_synced_at)"
			   "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
			   "          CASE WHEN $8 = 'cancelled' THEN pg_catalog.now() END, pg_catalog.now())"
			   "  ON CONFLICT (org_id, external_source, external_id) DO UPDATE SET"
			   "         patient_id = EXCLUDED.patient_id, provider_id = EXCLUDED.provider_id,"
			   "         starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,"
			   "         status = EXCLUDED.status, price = EXCLUDED.price,"
			   "         cancelled_at = CASE WHEN EXCLUDED.status = 'cancelled'"
			   "                             THEN coalesce(a.cancelled_at, pg_catalog.now()) END,"
			   "         last_synced_at = EXCLUDED.last_synced_at"
			   "  RETURNING a.id)"
			   "SELECT up.id, old.id IS NULL, coalesce(old.changed, true)"
			   "  FROM up LEFT JOIN old ON true",
			   9, (Oid[]){INT8OID, TEXTOID, TEXTOID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, NUMERICOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(source);
	values[2] = CStringGetTextDatum(external_id);
	values[3] = Int64GetDatum(patient_id);
	values[4] = Int64GetDatum(provider_id);
	values[5] = TimestampTzGetDatum(starts_at);
	values[6] = TimestampTzGetDatum(ends_at);
	values[7] = CStringGetTextDatum(status);
	values[8] = price_num;
	if (price == NULL)
		nulls[8] = 'n';
	if (PrmExecute(plan, values, nulls, false, 0) != 1)
		elog(ERROR, "appointment upsert returned no row");
	return SyncOutcomeOf();
}

/*
 * The body of both syncs: check the arguments, then apply fn to each
 * record in a subtransaction of its own, and report.  fn gets the
 * organization's phone region as its arg.
 */
static Datum
SyncRun(FunctionCallInfo fcinfo, const char *what, SyncRecordFn fn)
{
	static SPIPlanPtr lock_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *source = SyncSource(fcinfo, 1);
	Jsonb			 *records = SyncRecords(fcinfo, 2);
	uint32			  count = JB_ROOT_COUNT(records);
	MemoryContext	  fn_cxt = CurrentMemoryContext;
	MemoryContext	  spi_cxt;
	ResourceOwner	  owner = CurrentResourceOwner;
	HASHCTL			  ctl;
	HTAB			 *seen;
	StringInfoData	  rejections;
	int				  counts[3] = {0, 0, 0};
	int				  rejected = 0;
	uint32			  i;
	Datum			  values[1];
	char			 *result;
	char			 *region;

	initStringInfo(&rejections);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 200 * MAX_MULTIBYTE_CHAR_LEN + 1;
	ctl.entrysize = ctl.keysize;
	ctl.hcxt = fn_cxt;
	seen = hash_create("prm sync external ids", Max(count, 16), &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	PrmSpiConnect();
	spi_cxt = CurrentMemoryContext;
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	region = PrmOrgPhoneRegion(org_id);
	PrmPrepare(&lock_plan,
			   "SELECT pg_catalog.pg_advisory_xact_lock(" CppAsString2(SYNC_LOCK_KEY) ","
																					  "       pg_catalog.hashint8($1))",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	PrmExecute(lock_plan, values, NULL, false, 0);

	for (i = 0; i < count; i++)
	{
		JsonbValue *elem = getIthJsonbValueFromContainer(&records->root, i);
		char *volatile external_id = NULL;
		char *volatile reason = NULL;
		volatile SyncOutcome outcome = SYNC_UNCHANGED;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(spi_cxt);
		PG_TRY();
		{
			bool found;

			if (elem == NULL || elem->type != jbvBinary ||
				!JsonContainerIsObject(elem->val.binary.data))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("record is not a JSON object")));
			external_id = SyncScalarText(elem->val.binary.data, "external_id",
										 true, 200, true);
			hash_search(seen, external_id, HASH_ENTER, &found);
			if (found)
				ereport(ERROR,
						(errcode(ERRCODE_UNIQUE_VIOLATION),
						 errmsg("external_id \"%s\" appears earlier in this batch", external_id)));
			outcome = fn(org_id, source, elem->val.binary.data, external_id, region);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(spi_cxt);
			CurrentResourceOwner = owner;
		}
		PG_CATCH();
		{
			ErrorData *edata;

			MemoryContextSwitchTo(fn_cxt);
			edata = CopyErrorData();
			if (!SyncRejectable(edata->sqlerrcode))
				PG_RE_THROW();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(spi_cxt);
			CurrentResourceOwner = owner;
			reason = edata->message;
		}
		PG_END_TRY();

		if (reason)
		{
			MemoryContext old = MemoryContextSwitchTo(fn_cxt);

			appendStringInfo(&rejections, "%s{\"index\": %u, \"external_id\": %s, \"reason\": %s}",
							 rejected > 0 ? ", " : "", i,
							 external_id ? PrmJsonString(external_id) : "null",
							 PrmJsonString(reason));
			MemoryContextSwitchTo(old);
			rejected++;
		}
		else
			counts[outcome]++;
	}

	result = MemoryContextStrdup(fn_cxt,
								 psprintf("{\"source\": %s, \"records\": %u, \"inserted\": %d,"
										  " \"updated\": %d, \"unchanged\": %d, \"rejected\": %d,"
										  " \"rejections\": [%s]}",
										  PrmJsonString(source), count, counts[SYNC_INSERTED],
										  counts[SYNC_UPDATED], counts[SYNC_UNCHANGED],
										  rejected, rejections.data));
	if (counts[SYNC_INSERTED] + counts[SYNC_UPDATED] + rejected > 0)
		PrmEmitEvent(org_id, psprintf("%s_synced", what), "organization", org_id,
					 psprintf("{\"source\": %s, \"inserted\": %d, \"updated\": %d,"
							  " \"unchanged\": %d, \"rejected\": %d}",
							  PrmJsonString(source), counts[SYNC_INSERTED],
							  counts[SYNC_UPDATED], counts[SYNC_UNCHANGED], rejected));
	PrmSpiFinish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(result)));
}

/*
 * prm.sync_patients(org_id, source, records jsonb) RETURNS jsonb
 */
Datum
prm_sync_patients(PG_FUNCTION_ARGS)
{
	return SyncRun(fcinfo, "patients", SyncPatient);
}

/*
 * prm.sync_appointments(org_id, source, records jsonb) RETURNS jsonb
 */
Datum
prm_sync_appointments(PG_FUNCTION_ARGS)
{
	return SyncRun(fcinfo, "appointments", SyncAppointment);
}

/* ---------------------------------------------------------------------
 * Summary, outreach, search
 * ---------------------------------------------------------------------
 */

/* The jsonb in column 1 of the single result row, copied out of SPI. */
static Datum
SpiJsonbResult(void)
{
	bool  isnull;
	Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

	Assert(!isnull);
	return SPI_datumTransfer(d, false, -1);
}

/*
 * prm.reengagement_summary(org_id) RETURNS jsonb
 */
Datum
prm_reengagement_summary(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Datum			  values[1];
	Datum			  result;
	int				  save_nestlevel;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_build_object("
			   "  'org_id', $1, 'patients', pg_catalog.count(*),"
			   "  'engagement', pg_catalog.jsonb_build_object("
			   "     'highly_engaged', pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'highly_engaged'),"
			   "     'moderately_engaged', pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'moderately_engaged'),"
			   "     'low_engagement', pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'low_engagement'),"
			   "     'disengaged', pg_catalog.count(*) FILTER (WHERE v.engagement_level = 'disengaged')),"
			   "  'churn_risk', pg_catalog.jsonb_build_object("
			   "     'critical', pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'critical'),"
			   "     'high', pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'high'),"
			   "     'medium', pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'medium'),"
			   "     'low', pg_catalog.count(*) FILTER (WHERE v.churn_risk = 'low')),"
			   "  'no_upcoming_appointment', pg_catalog.count(*) FILTER (WHERE NOT v.has_upcoming_appointment),"
			   "  'value_at_risk', coalesce(pg_catalog.sum(v.expected_horizon_value)"
			   "       FILTER (WHERE v.churn_risk IN ('high', 'critical')), 0),"
			   "  'estimated_lifetime_value', coalesce(pg_catalog.sum(v.estimated_lifetime_value), 0),"
			   "  'total_revenue', coalesce(pg_catalog.sum(v.total_revenue), 0),"
			   "  'generated_at', pg_catalog.now())"
			   "  FROM prm.patient_profile v WHERE v.org_id = $1",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);

	/*
	 * The estimate counts the view's look-up of passed next appointments for
	 * every row, which pushes a scan of a large clinic over jit_above_cost;
	 * compiling then costs many times the scan itself.
	 */
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	PrmExecute(plan, values, NULL, true, 1);
	AtEOXact_GUC(true, save_nestlevel);
	result = SpiJsonbResult();
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * prm.outreach_performance(org_id, since, rebook_window) RETURNS jsonb
 *	  A campaign is the message's campaign column, else its kind.
 */
Datum
prm_outreach_performance(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Interval		 *window;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	int64			  usecs;
	Datum			  result;

	PrmArgNotNull(fcinfo, 2, "rebook_window");
	window = PG_GETARG_INTERVAL_P(2);
	usecs = PrmIntervalUsecs(window);
	if (usecs <= 0 || usecs > 366 * USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rebook_window must be longer than zero and at most a year")));

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmPrepare(&plan,
			   "WITH m AS ("
			   "  SELECT coalesce(x.campaign, x.kind) AS campaign, x.patient_id, x.created_at, x.status"
			   "    FROM (SELECT o.campaign, o.kind, o.patient_id, o.created_at, o.status"
			   "            FROM prm.outbound_message o WHERE o.org_id = $1 AND o.created_at >= $2"
			   "          UNION ALL"
			   "          SELECT h.campaign, h.kind, h.patient_id, h.created_at, h.status"
			   "            FROM prm.outbound_message_history h WHERE h.org_id = $1 AND h.created_at >= $2) x),"
			   " per AS ("
			   "  SELECT m.campaign, pg_catalog.count(*) AS messages,"
			   "         pg_catalog.count(DISTINCT m.patient_id) AS patients,"
			   "         pg_catalog.count(DISTINCT m.patient_id)"
			   "           FILTER (WHERE m.status IN ('sent', 'delivered', 'read')) AS reached,"
			   "         pg_catalog.count(DISTINCT m.patient_id) FILTER (WHERE EXISTS ("
			   "           SELECT 1 FROM prm.inbound_message i"
			   "            WHERE i.org_id = $1 AND i.patient_id = m.patient_id"
			   "              AND i.received_at >= m.created_at"
			   "              AND i.received_at < m.created_at + interval '48 hours')) AS replied,"
			   "         pg_catalog.count(DISTINCT m.patient_id) FILTER (WHERE EXISTS ("
			   "           SELECT 1 FROM prm.appointment a"
			   "            WHERE a.org_id = $1 AND a.patient_id = m.patient_id"
			   "              AND a.created_at > m.created_at AND a.created_at <= m.created_at + $3"
			   "              AND a.status <> 'entered-in-error')) AS rebooked"
			   "    FROM m GROUP BY m.campaign)"
			   "SELECT pg_catalog.jsonb_build_object('org_id', $1, 'since', $2, 'rebook_window', $3::text,"
			   "  'campaigns', coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
			   "     'campaign', per.campaign, 'messages', per.messages, 'patients', per.patients,"
			   "     'reached', per.reached, 'replied', per.replied, 'rebooked', per.rebooked,"
			   "     'reply_rate', pg_catalog.round(per.replied::numeric / NULLIF(per.reached, 0), 3),"
			   "     'rebook_rate', pg_catalog.round(per.rebooked::numeric / NULLIF(per.reached, 0), 3))"
			   "     ORDER BY per.campaign), '[]'))"
			   "  FROM per",
			   3, (Oid[]){INT8OID, TIMESTAMPTZOID, INTERVALOID});
	values[0] = Int64GetDatum(org_id);
	if (PG_ARGISNULL(1))
		values[1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp() - 90 * USECS_PER_DAY);
	else
		values[1] = PG_GETARG_DATUM(1);
	values[2] = IntervalPGetDatum(window);
	PrmExecute(plan, values, nulls, true, 1);
	result = SpiJsonbResult();
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/* The schema pg_trgm is installed in, quoted; raises when it is missing. */
static char *
SearchTrgmSchema(void)
{
	if (SPI_execute("SELECT n.nspname FROM pg_catalog.pg_extension e"
					"  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
					" WHERE e.extname = 'pg_trgm'",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up pg_trgm");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("extension \"pg_trgm\" is not installed"),
				 errhint("prm requires it: CREATE EXTENSION pg_trgm.")));
	return pstrdup(quote_identifier(PrmGetText(0, 1)));
}

/*
 * prm.search_patients(org_id, query, page_size, cursor) RETURNS jsonb
 *	  Name, e-mail or phone, decided by the query's shape.  Results are
 *	  ordered by score descending, then patient id; the cursor is the
 *	  (score, id) of the last row returned, so pages never overlap or skip
 *	  even while patients are added.
 */
Datum
prm_search_patients(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr name_plan = NULL;
	static SPIPlanPtr exact_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *query = PrmTextArg(fcinfo, 1, "query", PRM_MAX_NAME_LEN);
	int32			  page_size = PRM_GETARG_INT32_NOTNULL(2, "page_size");
	char			 *cursor = PrmTextArgOrNull(fcinfo, 3, "cursor", 100);
	const char		 *kind;
	float4			  after_score = 0;
	int64			  after_id = 0;
	Datum			  values[5];
	char			  nulls[5] = {' ', ' ', ' ', ' ', ' '};
	StringInfoData	  out;
	MemoryContext	  fn_cxt = CurrentMemoryContext;
	const char		 *p;
	int				  digits = 0;
	bool			  phone_like = true;
	int				  n;
	int				  i;

	if (page_size < 1 || page_size > 100)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("page size %d is out of range", page_size),
				 errdetail("A page holds 1 to 100 patients.")));
	if (cursor)
	{
		char extra;

		if (sscanf(cursor, "%f:" INT64_FORMAT "%c", &after_score, &after_id, &extra) != 2 ||
			isnan(after_score) || after_id <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("cursor \"%s\" is not valid", cursor),
					 errhint("Pass the next_cursor of the previous page unchanged.")));
	}
	for (p = query; *p; p++)
	{
		if (isdigit((unsigned char) *p))
			digits++;
		else if (!strchr("+-(). /", *p))
			phone_like = false;
	}

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	values[0] = Int64GetDatum(org_id);
	values[2] = Float4GetDatum(after_score);
	values[3] = Int64GetDatum(after_id);
	values[4] = Int32GetDatum(page_size + 1);
	if (!cursor)
		nulls[2] = nulls[3] = 'n';

	if (strchr(query, '@') != NULL || (phone_like && digits >= 6))
	{
		char *key = query;

		if (strchr(query, '@') == NULL)
		{
			kind = "phone";
			key = PrmTryNormalizePhone(query, PrmOrgPhoneRegion(org_id));
		}
		else
			kind = "email";
		/* exact matches score 1; an unreadable phone matches nothing */
		PrmPrepare(&exact_plan,
				   "SELECT p.id, p.given_name, p.family_name, p.email, p.phone, 1::real"
				   "  FROM prm.patient p"
				   " WHERE p.org_id = $1"
				   "   AND CASE WHEN $2 LIKE '%@%' THEN pg_catalog.lower(p.email) = pg_catalog.lower($2)"
				   "            ELSE p.phone = $2 END"
				   "   AND ($4::bigint IS NULL OR p.id > $4)"
				   " ORDER BY p.id LIMIT $5",
				   5, (Oid[]){INT8OID, TEXTOID, FLOAT4OID, INT8OID, INT4OID});
		if (key == NULL)
			n = 0;
		else
		{
			values[1] = CStringGetTextDatum(key);
			n = PrmExecute(exact_plan, values, nulls, true, 0);
		}
	}
	else
	{
		int save_nestlevel;

		kind = "name";
		if (name_plan == NULL)
		{
			char *trgm = SearchTrgmSchema();

			PrmPrepare(&name_plan,
					   psprintf("SELECT m.id, m.given_name, m.family_name, m.email, m.phone, m.score"
								"  FROM (SELECT p.id, p.given_name, p.family_name, p.email, p.phone,"
								"               %s.word_similarity(pg_catalog.lower($2),"
								"                 pg_catalog.lower(p.given_name || ' ' || p.family_name)) AS score"
								"          FROM prm.patient p"
								"         WHERE p.org_id = $1"
								"           AND pg_catalog.lower($2) OPERATOR(%s.<%%)"
								"               pg_catalog.lower(p.given_name || ' ' || p.family_name)) m"
								" WHERE $3::real IS NULL OR m.score < $3 OR (m.score = $3 AND m.id > $4)"
								" ORDER BY m.score DESC, m.id LIMIT $5",
								trgm, trgm),
					   5, (Oid[]){INT8OID, TEXTOID, FLOAT4OID, INT8OID, INT4OID});
		}
		values[1] = CStringGetTextDatum(query);
		/* the index condition <% uses this threshold */
		save_nestlevel = NewGUCNestLevel();
		(void) set_config_option("pg_trgm.word_similarity_threshold", SEARCH_MIN_SCORE,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
		n = PrmExecute(name_plan, values, nulls, true, 0);
		AtEOXact_GUC(true, save_nestlevel);
	}

	{
		MemoryContext old = MemoryContextSwitchTo(fn_cxt);

		initStringInfo(&out);
		MemoryContextSwitchTo(old);
	}
	appendStringInfo(&out, "{\"kind\": \"%s\", \"results\": [", kind);
	for (i = 0; i < n && i < page_size; i++)
	{
		char *email = PrmGetText(i, 4);
		char *phone = PrmGetText(i, 5);

		appendStringInfo(&out,
						 "%s{\"patient_id\": %s, \"given_name\": %s, \"family_name\": %s,"
						 " \"email\": %s, \"phone\": %s, \"score\": %s}",
						 i > 0 ? ", " : "", PrmGetText(i, 1),
						 PrmJsonString(PrmGetText(i, 2)), PrmJsonString(PrmGetText(i, 3)),
						 email ? PrmJsonString(email) : "null",
						 phone ? PrmJsonString(phone) : "null", PrmGetText(i, 6));
	}
	appendStringInfoString(&out, "], \"next_cursor\": ");
	if (n > page_size)
	{
		bool   isnull;
		float4 score = DatumGetFloat4(SPI_getbinval(SPI_tuptable->vals[page_size - 1],
													SPI_tuptable->tupdesc, 6, &isnull));

		appendStringInfo(&out, "\"%.9g:%s\"", score, PrmGetText(page_size - 1, 1));
	}
	else
		appendStringInfoString(&out, "null");
	appendStringInfoChar(&out, '}');
	PrmSpiFinish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
