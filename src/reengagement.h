/*-------------------------------------------------------------------------
 *
 * reengagement.h
 *	  What the rooms of reengagement share: the judgement of a patient
 *	  (reengagement.c), the stored statistics row and its write
 *	  (reengagement_tally.c), and the recompute from source rows
 *	  (reengagement_stats.c; the replies an inbound message answers:
 *	  reengagement_replies.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PRM_REENGAGEMENT_H
#define PRM_REENGAGEMENT_H

#include "access/htup.h"
#include "datatype/timestamp.h"

/* engagement levels, best first, and churn risks, lowest first */
#define PRM_LEVELS 4
#define PRM_RISKS 4
extern const char *const PrmEngagementLevelNames[PRM_LEVELS];
extern const char *const PrmChurnRiskNames[PRM_RISKS];

/* An organization's thresholds (prm.reengagement_settings). */
typedef struct PrmThresholds
{
	double critical;
	double high;
	double medium;
	double default_interval;
	double full_visits;
	double high_score;
	double moderate_score;
	double low_score;
	double horizon;
} PrmThresholds;

/* What the scoring functions know of one patient (NULLs as has_ flags). */
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

/* reengagement.c */
extern void	  PrmCheckThresholds(const PrmThresholds *t);
extern int	  PrmJudgeLevel(const PatientFacts *f, const PrmThresholds *t);
extern int	  PrmJudgeRisk(const PatientFacts *f, const PrmThresholds *t);
extern double PrmEngagementScore(const PatientFacts *f, const PrmThresholds *t);
extern double PrmJudgeChangeDays(const PatientFacts *f, const PrmThresholds *t);
extern double PrmRhythmDays(int visits, bool has_avg, double avg_days,
							double default_interval);
extern Datum  PrmLifetimeValue(Datum revenue, int visits, bool has_avg,
							   double avg_days, int risk, double horizon,
							   double default_interval);

/* The figures of prm.patient_stats that come from the patient's rows. */
typedef struct PrmStatsFacts
{
	int32		total;
	int32		completed;
	int32		cancelled;
	int32		noshow;
	bool		has_first;
	bool		has_last;
	bool		has_next;
	TimestampTz first;
	TimestampTz last;
	TimestampTz next;
	Datum		revenue; /* numeric */
	int32		out_n;
	int32		in_n;
	int32		replied;
	bool		has_out_at;
	bool		has_in_at;
	TimestampTz out_at;
	TimestampTz in_at;
} PrmStatsFacts;

/* A statistics row as stored: its facts and what it contributes. */
typedef struct PrmStatsRow
{
	bool		  exists; /* false: just made, contributes nothing yet */
	PrmStatsFacts f;
	int			  level;
	int			  risk;
	bool		  has_changes_at;
	TimestampTz	  changes_at;
	Datum		  horizon_value; /* numeric */
	Datum		  lifetime_value;	 /* numeric */
	HeapTuple	  tuple; /* the locked row as read (NULL: write through SQL) */
} PrmStatsRow;

/*
 * The summary judges afresh the rows due within this much of now, so that
 * the float arithmetic of changes_at never leaves a stale row in the tally.
 */
#define PRM_STATS_DUE_SLACK "5 seconds"

/*
 * A tally difference: PRM_TALLY_COUNTS counts (patients, the four levels,
 * the four risks, no upcoming appointment) and PRM_TALLY_SUMS numeric sums
 * (value at risk, lifetime value, revenue), in the tally's column order.
 */
#define PRM_TALLY_COUNTS 10
#define PRM_TALLY_SUMS 3

/* the tally's columns, and adding a difference to a slot's row */
#define PRM_TALLY_INSERT                                                               \
	"INSERT INTO prm.reengagement_tally AS t (org_id, slot, patients, highly_engaged," \
	"       moderately_engaged, low_engagement, disengaged, risk_low, risk_medium,"   \
	"       risk_high, risk_critical, no_upcoming, value_at_risk, lifetime_value, revenue)"
#define PRM_TALLY_ADD                                                                         \
	" ON CONFLICT (org_id, slot) DO UPDATE SET patients = t.patients + EXCLUDED.patients,"  \
	"   highly_engaged = t.highly_engaged + EXCLUDED.highly_engaged,"                        \
	"   moderately_engaged = t.moderately_engaged + EXCLUDED.moderately_engaged,"            \
	"   low_engagement = t.low_engagement + EXCLUDED.low_engagement,"                        \
	"   disengaged = t.disengaged + EXCLUDED.disengaged,"                                    \
	"   risk_low = t.risk_low + EXCLUDED.risk_low, risk_medium = t.risk_medium + EXCLUDED.risk_medium," \
	"   risk_high = t.risk_high + EXCLUDED.risk_high,"                                       \
	"   risk_critical = t.risk_critical + EXCLUDED.risk_critical,"                           \
	"   no_upcoming = t.no_upcoming + EXCLUDED.no_upcoming,"                                 \
	"   value_at_risk = t.value_at_risk + EXCLUDED.value_at_risk,"                           \
	"   lifetime_value = t.lifetime_value + EXCLUDED.lifetime_value,"                        \
	"   revenue = t.revenue + EXCLUDED.revenue"

/* reengagement_pending.c */
extern void PrmTallyAdd(int64 org_id, const int64 *counts, const Datum *sums);
extern void PrmTallyPending(int64 org_id, int64 *counts, Datum *sums);
extern void PrmTallyForget(int64 org_id);

/* reengagement_tally.c */
extern int64 PrmAdvancePatientStats(int limit);
extern void PrmLoadThresholds(int64 org_id, PrmThresholds *t);
extern bool PrmStatsLock(int64 org_id, int64 patient_id, PrmStatsRow *row,
						 PrmThresholds *t);
extern bool PrmStatsWrite(int64 org_id, int64 patient_id, const PrmStatsRow *old,
						  const PrmStatsFacts *fresh, const PrmThresholds *t);
extern void PrmStatsReadFacts(int row, int col, PrmStatsFacts *f);

/*
 * A patient's appointment figures from their rows (p: prm.patient), as
 * lateral a: total, completed, cancelled, noshow, first_visit, last_visit,
 * next_at, revenue.  Shared by the recompute and the 0.2.0 one.
 */
#define PRM_STATS_APPOINTMENT_LATERAL                                                         \
	" CROSS JOIN LATERAL ("                                                                    \
	"   SELECT pg_catalog.count(*) FILTER (WHERE x.status <> 'entered-in-error')::int AS total," \
	"          pg_catalog.count(*) FILTER (WHERE x.status = 'fulfilled')::int AS completed,"     \
	"          pg_catalog.count(*) FILTER (WHERE x.status = 'cancelled')::int AS cancelled,"     \
	"          pg_catalog.count(*) FILTER (WHERE x.status = 'noshow')::int AS noshow,"           \
	"          pg_catalog.min(x.starts_at) FILTER (WHERE x.status = 'fulfilled') AS first_visit," \
	"          pg_catalog.max(x.starts_at) FILTER (WHERE x.status = 'fulfilled') AS last_visit,"  \
	"          pg_catalog.min(x.starts_at) FILTER (WHERE x.status IN ('proposed', 'pending', 'booked'," \
	"              'arrived', 'checked-in') AND x.starts_at > pg_catalog.now()) AS next_at,"    \
	"          coalesce(pg_catalog.sum(x.price) FILTER (WHERE x.status = 'fulfilled'), 0) AS revenue" \
	"     FROM prm.appointment x WHERE x.org_id = p.org_id AND x.patient_id = p.id) a"

/* reengagement_legacy.c: a 0.2.0 schema until ALTER EXTENSION UPDATE */
extern bool PrmStatsTallyInstalled(void);
extern int	PrmStatsLegacyRecompute(const int64 *org_ids, const int64 *patient_ids, int n);
extern int	PrmStatsLegacyRebuild(int64 org_id);

/* reengagement_stats.c */
extern void PrmStatsRecomputeFacts(int64 org_id, int64 patient_id, PrmStatsFacts *f);

/*
 * reengagement_replies.c: the outbound messages of a patient newly answered
 * by inbound messages ids (received from lo to hi), by a statement or by
 * direct index scans (-1: an index is missing, or more than 64 candidate
 * messages: use the statement), and
 * those answered among outbound messages sent at times.  Inside SPI.
 */
extern int32 PrmStatsRepliedByInbound(int64 org_id, int64 patient_id, TimestampTz lo,
									  TimestampTz hi, Datum *ids, int n);
extern int32 PrmStatsRepliedByInboundDirect(int64 org_id, int64 patient_id, TimestampTz lo,
											TimestampTz hi, const Datum *ids,
											const TimestampTz *times, int n);
extern int32 PrmStatsRepliedOutbound(int64 org_id, int64 patient_id, Datum *times, int n);

#endif
