/*-------------------------------------------------------------------------
 *
 * matching.c
 *	  Psychotherapy placement: therapist profiles, placement requests,
 *	  ranking, the assignment of requests to therapists, contact e-mails,
 *	  answers, follow-up calls and the contact history (section 13(3) SGB V).
 *
 * Ranking
 * -------
 * A therapist is a candidate for a request only when every hard filter
 * holds: the great-circle distance is at most the request's max_distance_km,
 * the therapist offers the therapy type, speaks one of the patient's
 * languages, has an open place, accepts contact, and has not been asked
 * about this request before.  Candidates are then scored out of 100:
 *
 *	distance	40 * (1 - d / max_distance_km)
 *	gender		10 when the patient states no preference or it is met
 *	times		20 * min(overlap, 120 min) / 120 min, where overlap is the
 *				weekly overlap of the patient's stated times with the
 *				therapist's phone hours (patients must reach therapists by
 *				phone); a patient who states no times gets the full 20
 *	replies		20 * (answers + 1) / (contacts + 2): the therapist's answer
 *				rate, smoothed so that a new therapist starts at 10
 *	places		10 * min(open_places, 3) / 3
 *
 * Scores are kept as integer hundredths ("centi-points", 0..10000) so that
 * the assignment below works in exact integer arithmetic.
 *
 * Distances are haversine distances on a sphere of radius 6371.0088 km
 * (the mean Earth radius), computed here in C.  prm.rank_therapists does not
 * scan every therapist: it first computes, in C, the latitude/longitude box
 * that contains the whole spherical cap of radius max_distance_km around the
 * patient (the longitude half-width is asin(sin(r/R) / cos(lat)); a box that
 * would reach a pole or cross the antimeridian falls back to all longitudes),
 * asks for the therapists in that box through the btree therapist_geo_idx
 * on (org_id, latitude, longitude), and only then computes exact distances.
 *
 * Assignment
 * ----------
 * prm.assign_placements proposes, for the open requests that have no
 * pending contact, at most one therapist each, giving each therapist at
 * most their free places (open places minus pending contacts).  The
 * objective is lexicographic:
 *
 *	1. as many requests matched as possible;
 *	2. among those, the highest total score;
 *	3. among those, the earliest registrations: the smallest sum of the
 *	   requests' positions in registration order.
 *
 * This is a min-cost max-flow problem on the network
 *
 *	source -(1, 0)-> request -(1, cost)-> therapist -(free places, 0)-> sink
 *
 * A maximum flow is objective 1; its minimum cost gives 2 and 3 when the
 * cost of a request-therapist arc is (10000 - score) * M + rank(request),
 * with M larger than any sum of ranks (n(n-1)/2 + 1 for n requests): one
 * centi-point of score then outweighs every difference in ranks.  All costs
 * are non-negative integers.
 *
 * The solver is the successive-shortest-path algorithm: augment one unit
 * along a shortest source-sink path of the residual network, repeat until
 * the sink is unreachable.  Each path is found with Dijkstra's algorithm on
 * reduced costs c(u,v) + pi(u) - pi(v), which stay non-negative because the
 * potentials pi are updated by the distances found (Edmonds-Karp / Tomizawa);
 * the search stops as soon as the sink is settled, and unsettled nodes get
 * the sink's distance added, which keeps the reduced costs non-negative.
 * Every intermediate flow is then a min-cost flow of its value, so the last
 * one is a min-cost maximum flow: the result is exact, not a heuristic.
 * There are at most n augmentations of O(E log E) each.  Requests and
 * therapists that share no candidate arc cannot influence each other, so
 * the network is first split into connected components (union-find) and
 * each is solved alone, in its own memory context: patients in Hamburg do
 * not make the paths of patients in Munich longer.
 *
 * Overflow: potentials are bounded by (nodes) * (largest arc cost).  With
 * at most MATCH_MAX_REQUESTS requests and MATCH_MAX_THERAPISTS therapists
 * per call this stays below 2^62; larger organizations are refused with
 * 54000 rather than solved wrongly.
 *
 * The greedy method (method => 'greedy') is the registration-order baseline:
 * each request in turn takes its best-scoring therapist that still has a
 * free place.  It can match fewer requests, and score less, than the exact
 * method; the tests and test/bench/matching.sh compare the two.
 *
 * Contacts
 * --------
 * A proposal is a prm.placement_contact row in status proposed.  The
 * planning step sends each therapist their proposed requests (earliest
 * registrations first, at most MATCH_BATCH_MAX) in one e-mail, and never a
 * second e-mail within 7 days of the last one: the therapist's row is
 * locked while this is checked and the batch written, so concurrent
 * planners cannot both send.  The e-mail names no patient: a reference (the
 * request id), initials, an age band and the therapy type.  An e-mail whose
 * requests are not all answered 7 days later gets a call task in the
 * therapist's next phone-hours window, computed from wall-clock phone hours
 * in the therapist's time zone day by day, so daylight-saving changes move
 * the UTC time of the call and not its local time.  An acceptance matches
 * the request, takes a place and withdraws the request's other pending
 * contacts; call tasks of e-mails with nothing left unanswered are
 * cancelled.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_add_therapist);
PG_FUNCTION_INFO_V1(prm_update_therapist);
PG_FUNCTION_INFO_V1(prm_set_phone_hours);
PG_FUNCTION_INFO_V1(prm_add_placement_request);
PG_FUNCTION_INFO_V1(prm_withdraw_placement_request);
PG_FUNCTION_INFO_V1(prm_therapist_distance_km);
PG_FUNCTION_INFO_V1(prm_rank_therapists);
PG_FUNCTION_INFO_V1(prm_assign_placements);
PG_FUNCTION_INFO_V1(prm_plan_contact_batches);
PG_FUNCTION_INFO_V1(prm_record_contact_answer);
PG_FUNCTION_INFO_V1(prm_run_matching_follow_ups);
PG_FUNCTION_INFO_V1(prm_record_call_outcome);
PG_FUNCTION_INFO_V1(prm_placement_evidence);

#define EARTH_RADIUS_KM 6371.0088
#define MATCH_MAX_DISTANCE 1000.0
#define MATCH_MAX_WINDOWS 50
#define MATCH_BATCH_MAX 10
#define MATCH_MAX_REQUESTS 50000
#define MATCH_MAX_THERAPISTS 100000
#define MATCH_SCORE_MAX 10000 /* centi-points */
#define MINUTES_PER_DAY 1440
#define FOLLOW_UP_DAYS 7

/* Fixed vocabularies: therapy types and ISO 639-1 languages (at most 64). */
static const char *const therapy_types[] = {
	"cbt", "psychodynamic", "analytic", "systemic", "humanistic"};

static const char *const language_codes[] = {
	"am", "ar", "bg", "bn", "bs", "cs", "da", "de", "el", "en", "es", "et",
	"fa", "fi", "fr", "he", "hi", "hr", "hu", "hy", "it", "ja", "ka", "ko",
	"ku", "lt", "lv", "mk", "nl", "no", "pl", "ps", "pt", "ro", "ru", "sk",
	"sl", "so", "sq", "sr", "sv", "ta", "ti", "tr", "uk", "ur", "vi", "zh"};

static const char *const genders[] = {"female", "male", "diverse"};
static const char *const answers[] = {"accepted", "declined", "no_place"};
static const char *const contact_channels[] = {"email", "phone", "letter", "in_person"};
static const char *const call_outcomes[] = {"reached", "no_answer", "voicemail", "wrong_number"};

/* A weekly window, in minutes since Monday 00:00 local time. */
typedef struct MatchWindow
{
	int start;
	int end;
} MatchWindow;

typedef struct MatchTherapist
{
	int64		 id;
	double		 lat;
	double		 lon;
	uint64		 langs;	 /* bit i: language_codes[i] */
	uint32		 types;	 /* bit i: therapy_types[i] */
	int			 gender; /* 0 unknown, else 1 + index in genders */
	int			 open_places;
	int			 capacity; /* free places for the assignment */
	int			 contacts;
	int			 answers;
	int			 nwin;
	MatchWindow *win;
} MatchTherapist;

typedef struct MatchRequest
{
	int64		 id;
	double		 lat;
	double		 lon;
	double		 max_km;
	uint64		 langs;
	int			 type;		  /* index in therapy_types */
	int			 gender_pref; /* 0 none, else 1 + index in genders */
	int			 nwin;
	MatchWindow *win;
} MatchRequest;

typedef struct MatchScore
{
	double distance_km;
	int	   score; /* centi-points */
	double distance_pts;
	double gender_pts;
	double times_pts;
	double reply_pts;
	double places_pts;
	int	   overlap_min;
} MatchScore;

/* A candidate pair of the assignment. */
typedef struct MatchPair
{
	int	  r; /* index of the request */
	int	  t; /* index of the therapist */
	int	  score;
	float distance_km;
} MatchPair;

/* A ranked candidate of prm.rank_therapists. */
typedef struct MatchRanked
{
	int		   t;
	MatchScore s;
} MatchRanked;

static int	  MatchVocabIndex(const char *const *vocab, int n, const char *value);
static int	  MatchOneOf(const char *const *vocab, int n, const char *value,
						 const char *what);
static uint64 MatchVocabMask(ArrayType *arr, const char *const *vocab, int n,
							 const char *what, bool strict);
static Datum  MatchMaskArray(uint64 mask, const char *const *vocab, int n);
static double MatchCoordinate(FunctionCallInfo fcinfo, int argno,
							  const char *name, double limit);
static int	  MatchParseWindows(Jsonb *json, const char *what, int **days,
								int **starts, int **ends);
static double MatchHaversine(double lat1, double lon1, double lat2, double lon2);
static void	  MatchBoundingBox(double lat, double lon, double km,
							   double *latmin, double *latmax,
							   double *lonmin, double *lonmax);
static void	  MatchScorePair(const MatchRequest *r, const MatchTherapist *t,
							 double distance_km, MatchScore *out);
static void	  MatchReadTherapist(int row, MatchTherapist *t);
static void	  MatchLoadRequest(int64 org_id, int64 request_id, MatchRequest *r);
static int	  MatchGetInt32(int row, int col);
static void	  MatchLoadPhoneHours(int64 org_id, MatchTherapist *ts, int nt);
static void	  MatchRequireRow(int64 org_id, const char *table, int64 id,
							  bool for_update);
static void	  MatchCancelSettledCalls(int64 org_id, int64 request_id,
									  TimestampTz as_of);
static int64  MatchFollowUps(int64 org_id, TimestampTz as_of, int limit);
static bool	  MatchNextWindow(const char *tz, const MatchWindow *win, int nwin,
							  TimestampTz as_of, TimestampTz *start,
							  TimestampTz *end);

/* ---------------------------------------------------------------------
 * Vocabularies and argument checks
 * ---------------------------------------------------------------------
 */

/* Index of value in vocab, or -1. */
static int
MatchVocabIndex(const char *const *vocab, int n, const char *value)
{
	int i;

	for (i = 0; i < n; i++)
		if (strcmp(vocab[i], value) == 0)
			return i;
	return -1;
}

/* A comma-separated list of a vocabulary, for hints. */
static char *
MatchVocabList(const char *const *vocab, int n)
{
	StringInfoData buf;
	int			   i;

	initStringInfo(&buf);
	for (i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "", vocab[i]);
	return buf.data;
}

/* Index of value in vocab; 22023 naming what when it is not there. */
static int
MatchOneOf(const char *const *vocab, int n, const char *value, const char *what)
{
	int i = MatchVocabIndex(vocab, n, value);

	if (i < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not recognized", what, value),
				 errhint("Use one of %s.", MatchVocabList(vocab, n))));
	return i;
}

/*
 * The set of vocabulary words in a text[] as a bit mask.  strict: raise
 * 22023 for an empty array, a NULL element or an unknown word (arguments);
 * otherwise skip what is not known (rows already validated).
 */
static uint64
MatchVocabMask(ArrayType *arr, const char *const *vocab, int n,
			   const char *what, bool strict)
{
	Datum *elems;
	bool  *nulls;
	int	   nelems,
		i;
	uint64 mask = 0;

	Assert(n <= 64);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", what)));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &nelems);
	if (strict && nelems == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what),
				 errhint("Use one or more of %s.", MatchVocabList(vocab, n))));
	if (strict && nelems > 20)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s has %d elements; at most 20 are accepted", what, nelems)));
	for (i = 0; i < nelems; i++)
	{
		char *word;
		int	  k;

		if (nulls[i])
		{
			if (strict)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("%s must not contain NULL", what)));
			continue;
		}
		word = TextDatumGetCString(elems[i]);
		if (strict)
			PrmCheckTextLength(word, what, 40);
		k = MatchVocabIndex(vocab, n, word);
		if (k < 0)
		{
			if (strict)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s contains \"%s\", which is not recognized", what, word),
						 errhint("Use %s.", MatchVocabList(vocab, n))));
			continue;
		}
		mask |= UINT64CONST(1) << k;
	}
	return mask;
}

/* The words of a mask as a text[] Datum, in vocabulary order. */
static Datum
MatchMaskArray(uint64 mask, const char *const *vocab, int n)
{
	Datum *elems = palloc(sizeof(Datum) * n);
	int	   i,
		k = 0;

	for (i = 0; i < n; i++)
		if (mask & (UINT64CONST(1) << i))
			elems[k++] = CStringGetTextDatum(vocab[i]);
	return PointerGetDatum(construct_array(elems, k, TEXTOID, -1, false,
										   TYPALIGN_INT));
}

/* A required latitude (limit 90) or longitude (limit 180) argument. */
static double
MatchCoordinate(FunctionCallInfo fcinfo, int argno, const char *name,
				double limit)
{
	double v;

	PrmArgNotNull(fcinfo, argno, name);
	v = PG_GETARG_FLOAT8(argno);
	if (isnan(v) || v < -limit || v > limit)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %g is out of range", name, v),
				 errdetail("A %s must be between %g and %g degrees.", name, -limit, limit)));
	return v;
}

/* Minutes since midnight of "HH:MM" or "HH:MM:SS" (24:00 allowed), or -1. */
static int
MatchParseClock(const char *s)
{
	int h = 0,
		m = 0,
		sec = 0,
		n = 0;

	if (s == NULL || strlen(s) > 8)
		return -1;
	if (sscanf(s, "%2d:%2d%n", &h, &m, &n) != 2 || n != 5 || !isdigit((unsigned char) s[0]))
		return -1;
	if (s[5] == ':')
	{
		if (strlen(s) != 8 || !isdigit((unsigned char) s[6]) || !isdigit((unsigned char) s[7]))
			return -1;
		sec = (s[6] - '0') * 10 + (s[7] - '0');
	}
	else if (s[5] != '\0')
		return -1;
	if (h < 0 || m < 0 || m > 59 || sec > 59 || h > 24 || (h == 24 && (m || sec)))
		return -1;
	return h * 60 + m;
}

/*
 * Parse a JSON array of {"day": 1-7, "from": "HH:MM", "to": "HH:MM"} into
 * parallel arrays (ISO day, start and end minutes of the day); return the
 * number of windows.  Raises 22023 for anything else.  Must run inside SPI.
 */
static int
MatchParseWindows(Jsonb *json, const char *what, int **days, int **starts,
				  int **ends)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	int				  n,
		i;

	if (!JB_ROOT_IS_ARRAY(json) || JB_ROOT_IS_SCALAR(json))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON array", what),
				 errhint("Example: [{\"day\": 1, \"from\": \"09:00\", \"to\": \"10:30\"}] (day 1 = Monday).")));
	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_typeof(e), e ->> 'day', e ->> 'from', e ->> 'to'"
			   "  FROM pg_catalog.jsonb_array_elements($1) WITH ORDINALITY AS x (e, n)"
			   " ORDER BY x.n",
			   1, (Oid[]){JSONBOID});
	values[0] = JsonbPGetDatum(json);
	n = PrmExecute(plan, values, NULL, true, 0);
	if (n > MATCH_MAX_WINDOWS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s has %d windows; at most %d are accepted", what, n, MATCH_MAX_WINDOWS)));
	*days = palloc(sizeof(int) * (n + 1));
	*starts = palloc(sizeof(int) * (n + 1));
	*ends = palloc(sizeof(int) * (n + 1));
	for (i = 0; i < n; i++)
	{
		char *type = PrmGetText(i, 1);
		char *day = PrmGetText(i, 2);
		char *from = PrmGetText(i, 3);
		char *to = PrmGetText(i, 4);
		int	  d;

		if (strcmp(type, "object") != 0 || day == NULL || from == NULL || to == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("window %d of %s is not an object with keys day, from and to", i + 1, what)));
		if (strlen(day) != 1 || day[0] < '1' || day[0] > '7')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("day \"%.20s\" of window %d of %s is out of range", day, i + 1, what),
					 errdetail("Days are ISO days of the week: 1 = Monday to 7 = Sunday.")));
		d = day[0] - '0';
		(*days)[i] = d;
		(*starts)[i] = MatchParseClock(from);
		(*ends)[i] = MatchParseClock(to);
		if ((*starts)[i] < 0 || (*ends)[i] < 0 || (*starts)[i] >= MINUTES_PER_DAY)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("window %d of %s has a bad time", i + 1, what),
					 errdetail("Times are \"HH:MM\" between 00:00 and 24:00.")));
		if ((*ends)[i] <= (*starts)[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("window %d of %s ends before it starts", i + 1, what),
					 errhint("A window that runs past midnight is two windows, one on each day.")));
	}
	return n;
}

/* Raise P0002 unless table has row (org_id, id); optionally lock it. */
static void
MatchRequireRow(int64 org_id, const char *table, int64 id, bool for_update)
{
	static SPIPlanPtr		 plans[4][2];
	static const char *const tables[] = {
		"therapist", "placement_request", "call_task", "patient"};
	Datum values[2];
	int	  k;

	for (k = 0; k < (int) lengthof(tables); k++)
		if (strcmp(tables[k], table) == 0)
			break;
	if (k == lengthof(tables))
		elog(ERROR, "unexpected table \"%s\"", table);
	PrmPrepare(&plans[k][for_update ? 1 : 0],
			   psprintf("SELECT 1 FROM prm.%s t WHERE t.org_id = $1 AND t.id = $2%s",
						tables[k], for_update ? " FOR UPDATE" : ""),
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(id);
	if (PrmExecute(plans[k][for_update ? 1 : 0], values, NULL, !for_update, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("%s %lld does not exist in organization %lld",
						table, (long long) id, (long long) org_id)));
}

/* ---------------------------------------------------------------------
 * Distance and score
 * ---------------------------------------------------------------------
 */

/* Great-circle distance in km between two points in degrees. */
static double
MatchHaversine(double lat1, double lon1, double lat2, double lon2)
{
	double p1 = lat1 * M_PI / 180.0;
	double p2 = lat2 * M_PI / 180.0;
	double dp = (lat2 - lat1) * M_PI / 180.0;
	double dl = (lon2 - lon1) * M_PI / 180.0;
	double a = sin(dp / 2) * sin(dp / 2) +
			   cos(p1) * cos(p2) * sin(dl / 2) * sin(dl / 2);

	return 2.0 * EARTH_RADIUS_KM * asin(Min(1.0, sqrt(a)));
}

/*
 * The latitude/longitude box (degrees) that contains every point within km
 * of (lat, lon).  Near a pole, or across the antimeridian, the box takes all
 * longitudes: correct, only less selective.
 */
static void
MatchBoundingBox(double lat, double lon, double km, double *latmin,
				 double *latmax, double *lonmin, double *lonmax)
{
	double		 ang = km / EARTH_RADIUS_KM;
	double		 latr = lat * M_PI / 180.0;
	double		 lo = latr - ang;
	double		 hi = latr + ang;
	const double margin = 1e-9;

	*lonmin = -180.0;
	*lonmax = 180.0;
	if (lo > -M_PI / 2 && hi < M_PI / 2)
	{
		double dlon = asin(sin(ang) / cos(latr)) * 180.0 / M_PI;

		if (lon - dlon >= -180.0 && lon + dlon <= 180.0)
		{
			*lonmin = lon - dlon - margin;
			*lonmax = lon + dlon + margin;
		}
	}
	*latmin = Max(lo * 180.0 / M_PI, -90.0) - margin;
	*latmax = Min(hi * 180.0 / M_PI, 90.0) + margin;
}

/* Weekly minutes in which two sets of windows overlap. */
static int
MatchOverlap(const MatchWindow *a, int na, const MatchWindow *b, int nb)
{
	int i,
		j,
		total = 0;

	for (i = 0; i < na; i++)
		for (j = 0; j < nb; j++)
		{
			int lo = Max(a[i].start, b[j].start);
			int hi = Min(a[i].end, b[j].end);

			if (hi > lo)
				total += hi - lo;
		}
	return total;
}

/* The soft score of a candidate that passed the hard filters. */
static void
MatchScorePair(const MatchRequest *r, const MatchTherapist *t,
			   double distance_km, MatchScore *out)
{
	double total;

	out->distance_km = distance_km;
	out->distance_pts = 40.0 * Max(0.0, 1.0 - distance_km / r->max_km);
	out->gender_pts = (r->gender_pref == 0 || r->gender_pref == t->gender) ? 10.0 : 0.0;
	out->overlap_min = MatchOverlap(r->win, r->nwin, t->win, t->nwin);
	out->times_pts = r->nwin == 0 ? 20.0 : 20.0 * Min(out->overlap_min, 120) / 120.0;
	out->reply_pts = 20.0 * (t->answers + 1.0) / (Max(t->contacts, t->answers) + 2.0);
	out->places_pts = 10.0 * Min(t->open_places, 3) / 3.0;
	total = out->distance_pts + out->gender_pts + out->times_pts +
			out->reply_pts + out->places_pts;
	out->score = (int) rint(total * 100.0);
	out->score = Max(0, Min(MATCH_SCORE_MAX, out->score));
}

/* The reasons of a score as JSON text. */
static char *
MatchReasonsJson(const MatchRequest *r, const MatchTherapist *t,
				 const MatchScore *s)
{
	return psprintf("{\"distance_km\": %.2f, \"max_distance_km\": %.2f, \"distance_points\": %.2f,"
					" \"gender\": \"%s\", \"gender_points\": %.2f,"
					" \"overlap_minutes\": %d, \"times_points\": %.2f,"
					" \"reply_rate\": %.3f, \"reply_points\": %.2f,"
					" \"open_places\": %d, \"places_points\": %.2f}",
					s->distance_km, r->max_km, s->distance_pts,
					r->gender_pref == 0 ? "no preference" : (r->gender_pref == t->gender ? "as preferred" : "not as preferred"),
					s->gender_pts, s->overlap_min, s->times_pts,
					t->contacts > 0 ? (double) t->answers / Max(t->contacts, t->answers) : 0.0,
					s->reply_pts, t->open_places, s->places_pts);
}

/*
 * prm.therapist_distance_km(lat1, lon1, lat2, lon2) RETURNS float8
 */
Datum
prm_therapist_distance_km(PG_FUNCTION_ARGS)
{
	double lat1 = MatchCoordinate(fcinfo, 0, "latitude", 90);
	double lon1 = MatchCoordinate(fcinfo, 1, "longitude", 180);
	double lat2 = MatchCoordinate(fcinfo, 2, "latitude", 90);
	double lon2 = MatchCoordinate(fcinfo, 3, "longitude", 180);

	PG_RETURN_FLOAT8(MatchHaversine(lat1, lon1, lat2, lon2));
}

/* ---------------------------------------------------------------------
 * Loading profiles
 * ---------------------------------------------------------------------
 */

/* Column col (1-based) of an int4 result column; NULL reads as 0. */
static int
MatchGetInt32(int row, int col)
{
	bool  isnull;
	Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
							col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

/* Column list MatchReadTherapist expects (alias t). */
#define THERAPIST_COLUMNS                                                    \
	"t.id, t.latitude, t.longitude, t.languages, t.therapy_types, t.gender," \
	" t.open_places, t.contacts_total, t.answers_total"

/* Fill t from row of the current SPI result (THERAPIST_COLUMNS first). */
static void
MatchReadTherapist(int row, MatchTherapist *t)
{
	HeapTuple tup = SPI_tuptable->vals[row];
	TupleDesc desc = SPI_tuptable->tupdesc;
	bool	  isnull;
	char	 *gender;

	memset(t, 0, sizeof(*t));
	t->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	t->lat = DatumGetFloat8(SPI_getbinval(tup, desc, 2, &isnull));
	t->lon = DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));
	t->langs = MatchVocabMask(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 4, &isnull)),
							  language_codes, lengthof(language_codes), "languages", false);
	t->types = (uint32) MatchVocabMask(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 5, &isnull)),
									   therapy_types, lengthof(therapy_types),
									   "therapy types", false);
	gender = SPI_getvalue(tup, desc, 6);
	t->gender = gender ? MatchVocabIndex(genders, lengthof(genders), gender) + 1 : 0;
	t->open_places = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
	t->capacity = t->open_places;
	t->contacts = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	t->answers = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
}

/* Column list MatchReadRequest expects (alias r). */
#define REQUEST_COLUMNS                                              \
	"r.id, r.latitude, r.longitude, r.max_distance_km, r.languages," \
	" r.therapy_type, r.gender_preference"

/* Fill r from row of the current SPI result (REQUEST_COLUMNS first). */
static void
MatchReadRequest(int row, MatchRequest *r)
{
	HeapTuple tup = SPI_tuptable->vals[row];
	TupleDesc desc = SPI_tuptable->tupdesc;
	bool	  isnull;
	char	 *pref;

	memset(r, 0, sizeof(*r));
	r->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	r->lat = DatumGetFloat8(SPI_getbinval(tup, desc, 2, &isnull));
	r->lon = DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));
	r->max_km = DatumGetFloat8(SPI_getbinval(tup, desc, 4, &isnull));
	r->langs = MatchVocabMask(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 5, &isnull)),
							  language_codes, lengthof(language_codes), "languages", false);
	r->type = MatchVocabIndex(therapy_types, lengthof(therapy_types), SPI_getvalue(tup, desc, 6));
	pref = SPI_getvalue(tup, desc, 7);
	r->gender_pref = pref ? MatchVocabIndex(genders, lengthof(genders), pref) + 1 : 0;
}

/* Load one request with its stated times; P0002 when it is not there. */
static void
MatchLoadRequest(int64 org_id, int64 request_id, MatchRequest *r)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr times_plan = NULL;
	Datum			  values[2];
	int				  n,
		i;

	PrmPrepare(&plan,
			   "SELECT " REQUEST_COLUMNS " FROM prm.placement_request r"
			   " WHERE r.org_id = $1 AND r.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	if (PrmExecute(plan, values, NULL, true, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("placement_request %lld does not exist in organization %lld",
						(long long) request_id, (long long) org_id)));
	MatchReadRequest(0, r);

	PrmPrepare(&times_plan,
			   "SELECT x.day_of_week,"
			   "       (pg_catalog.date_part('epoch', x.starts) / 60)::int,"
			   "       (pg_catalog.date_part('epoch', x.ends) / 60)::int"
			   "  FROM prm.placement_request_time x"
			   " WHERE x.org_id = $1 AND x.request_id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	n = PrmExecute(times_plan, values, NULL, true, 0);
	r->nwin = n;
	r->win = palloc(sizeof(MatchWindow) * (n + 1));
	for (i = 0; i < n; i++)
	{
		int base = (MatchGetInt32(i, 1) - 1) * MINUTES_PER_DAY;

		r->win[i].start = base + MatchGetInt32(i, 2);
		r->win[i].end = base + MatchGetInt32(i, 3);
	}
}

/*
 * Attach their weekly phone hours to the nt therapists of ts.  Must run
 * inside SPI; the windows are allocated in the current memory context.
 */
static void
MatchLoadPhoneHours(int64 org_id, MatchTherapist *ts, int nt)
{
	static SPIPlanPtr plan = NULL;
	HASHCTL			  ctl;
	HTAB			 *index;
	Datum			 *ids;
	Datum			  values[2];
	int				  n,
		i;
	typedef struct IdEntry
	{
		int64 id;
		int	  idx;
	} IdEntry;

	if (nt == 0)
		return;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(IdEntry);
	ctl.hcxt = CurrentMemoryContext;
	index = hash_create("prm therapist index", nt, &ctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ids = palloc(sizeof(Datum) * nt);
	for (i = 0; i < nt; i++)
	{
		IdEntry *e = hash_search(index, &ts[i].id, HASH_ENTER, NULL);

		e->idx = i;
		ids[i] = Int64GetDatum(ts[i].id);
		ts[i].nwin = 0;
		ts[i].win = NULL;
	}

	PrmPrepare(&plan,
			   "SELECT h.therapist_id, h.day_of_week,"
			   "       (pg_catalog.date_part('epoch', h.starts) / 60)::int,"
			   "       (pg_catalog.date_part('epoch', h.ends) / 60)::int"
			   "  FROM prm.therapist_phone_hours h"
			   " WHERE h.org_id = $1 AND h.therapist_id = ANY ($2)"
			   " ORDER BY h.therapist_id, h.day_of_week, h.starts",
			   2, (Oid[]){INT8OID, INT8ARRAYOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = PointerGetDatum(construct_array(ids, nt, INT8OID, 8, true, TYPALIGN_DOUBLE));
	n = PrmExecute(plan, values, NULL, true, 0);
	for (i = 0; i < n;)
	{
		bool			isnull;
		int64			tid = PrmGetInt64(i, 1, &isnull);
		IdEntry		   *e = hash_search(index, &tid, HASH_FIND, NULL);
		MatchTherapist *t;
		int				j,
			k;

		for (j = i; j < n && PrmGetInt64(j, 1, &isnull) == tid; j++)
			;
		if (e == NULL)
			elog(ERROR, "phone hours of unexpected therapist %lld", (long long) tid);
		t = &ts[e->idx];
		t->nwin = j - i;
		t->win = palloc(sizeof(MatchWindow) * t->nwin);
		for (k = i; k < j; k++)
		{
			int base = (MatchGetInt32(k, 2) - 1) * MINUTES_PER_DAY;

			t->win[k - i].start = base + MatchGetInt32(k, 3);
			t->win[k - i].end = base + MatchGetInt32(k, 4);
		}
		i = j;
	}
	SPI_freetuptable(SPI_tuptable);
	hash_destroy(index);
}

/* ---------------------------------------------------------------------
 * Profiles: therapists, phone hours, requests
 * ---------------------------------------------------------------------
 */

/* An optional vocabulary argument (NULL stays NULL): its index + 1, or 0. */
static int
MatchOptionalWord(FunctionCallInfo fcinfo, int argno, const char *const *vocab,
				  int n, const char *what)
{
	char *value = PrmTextArgOrNull(fcinfo, argno, what, 40);

	if (value == NULL)
		return 0;
	return MatchOneOf(vocab, n, value, what) + 1;
}

/*
 * prm.add_therapist(org_id, name, email, latitude, longitude, languages,
 *					 therapy_types, open_places, gender, timezone,
 *					 accepts_contact) RETURNS bigint
 */
Datum
prm_add_therapist(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *name = PrmTextArg(fcinfo, 1, "name", PRM_MAX_NAME_LEN);
	char			 *email = PrmTextArg(fcinfo, 2, "email", 254);
	double			  lat = MatchCoordinate(fcinfo, 3, "latitude", 90);
	double			  lon = MatchCoordinate(fcinfo, 4, "longitude", 180);
	uint64			  langs;
	uint64			  types;
	int32			  places;
	int				  gender;
	char			 *tz = NULL;
	bool			  accepts;
	Datum			  values[11];
	char			  nulls[11] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  id;

	PrmCheckEmail(email);
	PrmArgNotNull(fcinfo, 5, "languages");
	langs = MatchVocabMask(PG_GETARG_ARRAYTYPE_P(5), language_codes,
						   lengthof(language_codes), "languages", true);
	PrmArgNotNull(fcinfo, 6, "therapy_types");
	types = MatchVocabMask(PG_GETARG_ARRAYTYPE_P(6), therapy_types,
						   lengthof(therapy_types), "therapy types", true);
	places = PRM_GETARG_INT32_NOTNULL(7, "open_places");
	if (places < 0 || places > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("open places %d is out of range", places),
				 errdetail("Open places must be between 0 and 1000.")));
	gender = MatchOptionalWord(fcinfo, 8, genders, lengthof(genders), "gender");
	if (!PG_ARGISNULL(9))
		tz = PrmValidateTimezone(text_to_cstring(PG_GETARG_TEXT_PP(9)));
	accepts = PRM_GETARG_BOOL_NOTNULL(10, "accepts_contact");

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	if (tz == NULL)
		tz = pstrdup(PrmGetSettings(org_id)->timezone);

	PrmPrepare(&plan,
			   "INSERT INTO prm.therapist (org_id, name, email, latitude, longitude, languages,"
			   "   therapy_types, open_places, gender, timezone, accepts_contact)"
			   " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
			   11, (Oid[]){INT8OID, TEXTOID, TEXTOID, FLOAT8OID, FLOAT8OID, TEXTARRAYOID, TEXTARRAYOID, INT4OID, TEXTOID, TEXTOID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(name);
	values[2] = CStringGetTextDatum(email);
	values[3] = Float8GetDatum(lat);
	values[4] = Float8GetDatum(lon);
	values[5] = MatchMaskArray(langs, language_codes, lengthof(language_codes));
	values[6] = MatchMaskArray(types, therapy_types, lengthof(therapy_types));
	values[7] = Int32GetDatum(places);
	if (gender)
		values[8] = CStringGetTextDatum(genders[gender - 1]);
	else
		nulls[8] = 'n';
	values[9] = CStringGetTextDatum(tz);
	values[10] = BoolGetDatum(accepts);
	if (PrmExecute(plan, values, nulls, false, 0) != 1)
		elog(ERROR, "therapist insert returned no row");
	id = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(org_id, "therapist_added", "therapist", id,
				 psprintf("{\"open_places\": %d, \"accepts_contact\": %s}",
						  places, accepts ? "true" : "false"));
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * prm.update_therapist(org_id, therapist_id, open_places, accepts_contact)
 *	  RETURNS void; a NULL keeps the value.
 */
Datum
prm_update_therapist(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  therapist_id = PRM_GETARG_INT64_NOTNULL(1, "therapist_id");
	Datum			  values[4];
	char			  nulls[4] = {' ', ' ', ' ', ' '};

	if (!PG_ARGISNULL(2) && (PG_GETARG_INT32(2) < 0 || PG_GETARG_INT32(2) > 1000))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("open places %d is out of range", PG_GETARG_INT32(2)),
				 errdetail("Open places must be between 0 and 1000.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MatchRequireRow(org_id, "therapist", therapist_id, true);
	PrmPrepare(&plan,
			   "UPDATE prm.therapist t SET open_places = coalesce($3, t.open_places),"
			   "       accepts_contact = coalesce($4, t.accepts_contact), updated_at = pg_catalog.now()"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, INT4OID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(therapist_id);
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[3] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[3] = PG_ARGISNULL(3) ? 'n' : ' ';
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "therapist_updated", "therapist", therapist_id, NULL);
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* Insert parsed windows as rows of table (therapist or request windows). */
static void
MatchInsertWindows(SPIPlanPtr plan, int64 org_id, int64 owner_id, int n,
				   const int *days, const int *starts, const int *ends)
{
	Datum values[5];
	int	  i;

	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(owner_id);
	for (i = 0; i < n; i++)
	{
		values[2] = Int32GetDatum(days[i]);
		values[3] = TimeADTGetDatum((TimeADT) starts[i] * USECS_PER_MINUTE);
		values[4] = TimeADTGetDatum((TimeADT) ends[i] * USECS_PER_MINUTE);
		PrmExecute(plan, values, NULL, false, 0);
	}
}

/*
 * prm.set_phone_hours(org_id, therapist_id, hours jsonb) RETURNS int
 *	  Replace a therapist's weekly phone hours.
 */
Datum
prm_set_phone_hours(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr delete_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  therapist_id = PRM_GETARG_INT64_NOTNULL(1, "therapist_id");
	Jsonb			 *hours;
	int				 *days,
		*starts,
		*ends;
	int	  n;
	Datum values[2];

	PrmArgNotNull(fcinfo, 2, "hours");
	hours = PG_GETARG_JSONB_P(2);
	PrmSpiConnect();
	n = MatchParseWindows(hours, "phone hours", &days, &starts, &ends);
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MatchRequireRow(org_id, "therapist", therapist_id, true);
	PrmPrepare(&delete_plan,
			   "DELETE FROM prm.therapist_phone_hours h WHERE h.org_id = $1 AND h.therapist_id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(therapist_id);
	PrmExecute(delete_plan, values, NULL, false, 0);
	PrmPrepare(&insert_plan,
			   "INSERT INTO prm.therapist_phone_hours (org_id, therapist_id, day_of_week, starts, ends)"
			   " VALUES ($1, $2, $3, $4, $5)",
			   5, (Oid[]){INT8OID, INT8OID, INT4OID, TIMEOID, TIMEOID});
	MatchInsertWindows(insert_plan, org_id, therapist_id, n, days, starts, ends);
	PrmEmitEvent(org_id, "therapist_phone_hours_set", "therapist", therapist_id,
				 psprintf("{\"windows\": %d}", n));
	PrmSpiFinish();
	PG_RETURN_INT32(n);
}

/*
 * prm.add_placement_request(org_id, patient_id, latitude, longitude,
 *		max_distance_km, languages, therapy_type, gender_preference,
 *		available_times, birth_year, registered_at) RETURNS bigint
 */
Datum
prm_add_placement_request(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr times_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	double			  lat = MatchCoordinate(fcinfo, 2, "latitude", 90);
	double			  lon = MatchCoordinate(fcinfo, 3, "longitude", 180);
	double			  max_km;
	uint64			  langs;
	int				  type;
	int				  pref;
	int				 *days = NULL,
		*starts = NULL,
		*ends = NULL;
	int	  nwin = 0;
	Datum values[10];
	char  nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool  isnull;
	int64 id;

	PrmArgNotNull(fcinfo, 4, "max_distance_km");
	max_km = PG_GETARG_FLOAT8(4);
	if (isnan(max_km) || max_km <= 0 || max_km > MATCH_MAX_DISTANCE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("maximum distance %g km is out of range", max_km),
				 errdetail("The maximum distance must be greater than 0 and at most %g km.",
						   MATCH_MAX_DISTANCE)));
	PrmArgNotNull(fcinfo, 5, "languages");
	langs = MatchVocabMask(PG_GETARG_ARRAYTYPE_P(5), language_codes,
						   lengthof(language_codes), "languages", true);
	type = MatchOneOf(therapy_types, lengthof(therapy_types),
					  PrmTextArg(fcinfo, 6, "therapy type", 40), "therapy type");
	pref = MatchOptionalWord(fcinfo, 7, genders, lengthof(genders), "gender preference");
	if (!PG_ARGISNULL(9) && (PG_GETARG_INT32(9) < 1900 || PG_GETARG_INT32(9) > 2200))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("birth year %d is out of range", PG_GETARG_INT32(9))));

	PrmSpiConnect();
	if (!PG_ARGISNULL(8))
		nwin = MatchParseWindows(PG_GETARG_JSONB_P(8), "available times", &days, &starts, &ends);
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MatchRequireRow(org_id, "patient", patient_id, false);
	if (!PG_ARGISNULL(10))
	{
		/*
		 * Patients are served in order of registration: a registration time
		 * other than now (carried over from another system) is an
		 * administrator's decision, not staff's.
		 */
		PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	}

	PrmPrepare(&plan,
			   "INSERT INTO prm.placement_request (org_id, patient_id, latitude, longitude,"
			   "   max_distance_km, languages, therapy_type, gender_preference, birth_year, registered_at)"
			   " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, pg_catalog.now()))"
			   " RETURNING id",
			   10, (Oid[]){INT8OID, INT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID, TEXTARRAYOID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = Float8GetDatum(lat);
	values[3] = Float8GetDatum(lon);
	values[4] = Float8GetDatum(max_km);
	values[5] = MatchMaskArray(langs, language_codes, lengthof(language_codes));
	values[6] = CStringGetTextDatum(therapy_types[type]);
	if (pref)
		values[7] = CStringGetTextDatum(genders[pref - 1]);
	else
		nulls[7] = 'n';
	values[8] = PG_ARGISNULL(9) ? (Datum) 0 : PG_GETARG_DATUM(9);
	nulls[8] = PG_ARGISNULL(9) ? 'n' : ' ';
	values[9] = PG_ARGISNULL(10) ? (Datum) 0 : PG_GETARG_DATUM(10);
	nulls[9] = PG_ARGISNULL(10) ? 'n' : ' ';
	if (PrmExecute(plan, values, nulls, false, 0) != 1)
		elog(ERROR, "placement request insert returned no row");
	id = PrmGetInt64(0, 1, &isnull);

	PrmPrepare(&times_plan,
			   "INSERT INTO prm.placement_request_time (org_id, request_id, day_of_week, starts, ends)"
			   " VALUES ($1, $2, $3, $4, $5)",
			   5, (Oid[]){INT8OID, INT8OID, INT4OID, TIMEOID, TIMEOID});
	MatchInsertWindows(times_plan, org_id, id, nwin, days, starts, ends);
	PrmEmitEvent(org_id, "placement_requested", "placement_request", id,
				 psprintf("{\"patient_id\": %lld, \"therapy_type\": \"%s\", \"max_distance_km\": %g}",
						  (long long) patient_id, therapy_types[type], max_km));
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * Cancel the open call tasks of e-mails about request_id that no longer
 * have an unanswered request.
 */
static void
MatchCancelSettledCalls(int64 org_id, int64 request_id, TimestampTz as_of)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];

	PrmPrepare(&plan,
			   "UPDATE prm.call_task k SET status = 'cancelled', completed_at = $3"
			   " WHERE k.org_id = $1 AND k.status = 'open'"
			   "   AND k.batch_id IN (SELECT c.batch_id FROM prm.placement_contact c"
			   "                       WHERE c.org_id = $1 AND c.request_id = $2)"
			   "   AND NOT EXISTS (SELECT 1 FROM prm.placement_contact c"
			   "                    WHERE c.org_id = $1 AND c.batch_id = k.batch_id"
			   "                      AND c.status = 'sent')",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	values[2] = TimestampTzGetDatum(as_of);
	PrmExecute(plan, values, NULL, false, 0);
}

/* Withdraw the pending contacts of a request (but keep). */
static int
MatchWithdrawContacts(int64 org_id, int64 request_id, int64 keep_contact_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];

	PrmPrepare(&plan,
			   "UPDATE prm.placement_contact c SET status = 'withdrawn'"
			   " WHERE c.org_id = $1 AND c.request_id = $2 AND c.id <> $3"
			   "   AND c.status IN ('proposed', 'sent')",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	values[2] = Int64GetDatum(keep_contact_id);
	return PrmExecute(plan, values, NULL, false, 0);
}

/*
 * prm.withdraw_placement_request(org_id, request_id) RETURNS boolean
 */
Datum
prm_withdraw_placement_request(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  request_id = PRM_GETARG_INT64_NOTNULL(1, "request_id");
	Datum			  values[2];
	bool			  was_open;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MatchRequireRow(org_id, "placement_request", request_id, true);
	PrmPrepare(&plan,
			   "UPDATE prm.placement_request r SET status = 'withdrawn', closed_at = pg_catalog.now()"
			   " WHERE r.org_id = $1 AND r.id = $2 AND r.status = 'open'",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	was_open = PrmExecute(plan, values, NULL, false, 0) == 1;
	if (was_open)
	{
		MatchWithdrawContacts(org_id, request_id, 0);
		MatchCancelSettledCalls(org_id, request_id, GetCurrentTransactionStartTimestamp());
		PrmEmitEvent(org_id, "placement_withdrawn", "placement_request", request_id, NULL);
	}
	PrmSpiFinish();
	PG_RETURN_BOOL(was_open);
}

/* ---------------------------------------------------------------------
 * Ranking
 * ---------------------------------------------------------------------
 */

/* qsort order of ranked candidates: best score, then nearest, then id. */
static int
MatchRankedCmp(const void *a, const void *b, void *arg)
{
	const MatchRanked	 *x = a;
	const MatchRanked	 *y = b;
	const MatchTherapist *ts = arg;

	if (x->s.score != y->s.score)
		return x->s.score > y->s.score ? -1 : 1;
	if (x->s.distance_km != y->s.distance_km)
		return x->s.distance_km < y->s.distance_km ? -1 : 1;
	return ts[x->t].id < ts[y->t].id ? -1 : (ts[x->t].id > ts[y->t].id);
}

/*
 * prm.rank_therapists(org_id, request_id, max_results)
 *	  RETURNS TABLE (therapist_id, score, distance_km, reasons)
 *	  The hard filters run in SQL on the bounding box (an index range scan);
 *	  the exact distance and the score are computed here.
 */
Datum
prm_rank_therapists(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	ReturnSetInfo	 *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  request_id = PRM_GETARG_INT64_NOTNULL(1, "request_id");
	int32			  max_results = PRM_GETARG_INT32_NOTNULL(2, "max_results");
	MatchRequest	  req;
	MatchTherapist	 *ts;
	MatchRanked		 *ranked;
	double			  latmin,
		latmax,
		lonmin,
		lonmax;
	Datum values[8];
	int	  n,
		i,
		nr = 0;

	if (max_results < 1 || max_results > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_results %d is out of range", max_results),
				 errdetail("Ask for 1 to 1000 therapists.")));
	InitMaterializedSRF(fcinfo, 0);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	MatchLoadRequest(org_id, request_id, &req);
	{
		/* a matched or withdrawn request has nobody left to rank */
		static SPIPlanPtr status_plan = NULL;
		Datum			  sv[2];
		char			 *status;

		PrmPrepare(&status_plan,
				   "SELECT r.status FROM prm.placement_request r WHERE r.org_id = $1 AND r.id = $2",
				   2, (Oid[]){INT8OID, INT8OID});
		sv[0] = Int64GetDatum(org_id);
		sv[1] = Int64GetDatum(request_id);
		PrmExecute(status_plan, sv, NULL, true, 1);
		status = PrmGetText(0, 1);
		if (strcmp(status, "open") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("placement request %lld is %s", (long long) request_id, status),
					 errdetail("Only open requests are ranked.")));
	}
	MatchBoundingBox(req.lat, req.lon, req.max_km, &latmin, &latmax, &lonmin, &lonmax);

	PrmPrepare(&plan,
			   "SELECT " THERAPIST_COLUMNS " FROM prm.therapist t"
			   " WHERE t.org_id = $1"
			   "   AND t.latitude BETWEEN $2 AND $3 AND t.longitude BETWEEN $4 AND $5"
			   "   AND t.accepts_contact AND t.open_places > 0"
			   "   AND t.therapy_types @> ARRAY[$6::text] AND t.languages && $7"
			   "   AND NOT EXISTS (SELECT 1 FROM prm.placement_contact c"
			   "                    WHERE c.org_id = $1 AND c.request_id = $8"
			   "                      AND c.therapist_id = t.id)",
			   8, (Oid[]){INT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID, TEXTOID, TEXTARRAYOID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Float8GetDatum(latmin);
	values[2] = Float8GetDatum(latmax);
	values[3] = Float8GetDatum(lonmin);
	values[4] = Float8GetDatum(lonmax);
	values[5] = CStringGetTextDatum(therapy_types[req.type]);
	values[6] = MatchMaskArray(req.langs, language_codes, lengthof(language_codes));
	values[7] = Int64GetDatum(request_id);
	n = PrmExecute(plan, values, NULL, true, 0);

	/* exact distances: the box holds the circle, not only the circle */
	ts = palloc(sizeof(MatchTherapist) * (n + 1));
	ranked = palloc(sizeof(MatchRanked) * (n + 1));
	for (i = 0; i < n; i++)
	{
		MatchTherapist t;
		double		   d;

		MatchReadTherapist(i, &t);
		d = MatchHaversine(req.lat, req.lon, t.lat, t.lon);
		if (d > req.max_km)
			continue;
		ranked[nr].t = nr;
		ranked[nr].s.distance_km = d;
		ts[nr++] = t;
	}
	SPI_freetuptable(SPI_tuptable);
	MatchLoadPhoneHours(org_id, ts, nr);
	for (i = 0; i < nr; i++)
		MatchScorePair(&req, &ts[i], ranked[i].s.distance_km, &ranked[i].s);
	qsort_arg(ranked, nr, sizeof(MatchRanked), MatchRankedCmp, ts);

	for (i = 0; i < nr && i < max_results; i++)
	{
		const MatchTherapist *t = &ts[ranked[i].t];
		Datum				  out[4];
		bool				  outnulls[4] = {false, false, false, false};

		out[0] = Int64GetDatum(t->id);
		out[1] = Float8GetDatum(ranked[i].s.score / 100.0);
		out[2] = Float8GetDatum(rint(ranked[i].s.distance_km * 1000.0) / 1000.0);
		out[3] = DirectFunctionCall1(jsonb_in,
									 CStringGetDatum(MatchReasonsJson(&req, t, &ranked[i].s)));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnulls);
	}
	PrmSpiFinish();
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * Assignment
 * ---------------------------------------------------------------------
 */

/* The residual network of one component (arc e^1 is the reverse of e). */
typedef struct FlowGraph
{
	int	   nnodes;
	int	   narcs;
	int	  *head; /* first arc out of each node, or -1 */
	int	  *next; /* next arc out of the same node */
	int	  *to;
	int	  *cap;
	int64 *cost;
} FlowGraph;

/* A binary min-heap of (key, node) with lazy deletion. */
typedef struct FlowHeap
{
	int	   size;
	int	   max;
	int64 *key;
	int	  *node;
} FlowHeap;

#define FLOW_INF (PG_INT64_MAX / 4)

/* Allocate a network of nnodes nodes with room for maxedges edges. */
static void
FlowInit(FlowGraph *g, int nnodes, int maxedges)
{
	int i;

	g->nnodes = nnodes;
	g->narcs = 0;
	g->head = palloc(sizeof(int) * nnodes);
	g->next = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * 2 * (Size) maxedges);
	g->to = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * 2 * (Size) maxedges);
	g->cap = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * 2 * (Size) maxedges);
	g->cost = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int64) * 2 * (Size) maxedges);
	for (i = 0; i < nnodes; i++)
		g->head[i] = -1;
}

/* Add the arc u -> v and its reverse; return the forward arc. */
static int
FlowAddEdge(FlowGraph *g, int u, int v, int cap, int64 cost)
{
	int e = g->narcs;

	g->to[e] = v;
	g->cap[e] = cap;
	g->cost[e] = cost;
	g->next[e] = g->head[u];
	g->head[u] = e;
	g->to[e + 1] = u;
	g->cap[e + 1] = 0;
	g->cost[e + 1] = -cost;
	g->next[e + 1] = g->head[v];
	g->head[v] = e + 1;
	g->narcs += 2;
	return e;
}

/* Push (key, node) on the heap. */
static void
FlowHeapPush(FlowHeap *h, int64 key, int node)
{
	int i = h->size++;

	Assert(h->size <= h->max);
	while (i > 0)
	{
		int parent = (i - 1) / 2;

		if (h->key[parent] <= key)
			break;
		h->key[i] = h->key[parent];
		h->node[i] = h->node[parent];
		i = parent;
	}
	h->key[i] = key;
	h->node[i] = node;
}

/* Pop the smallest (key, node) from a non-empty heap. */
static int
FlowHeapPop(FlowHeap *h, int64 *key)
{
	int	  top = h->node[0];
	int64 lastkey;
	int	  lastnode;
	int	  i = 0;

	*key = h->key[0];
	h->size--;
	lastkey = h->key[h->size];
	lastnode = h->node[h->size];
	for (;;)
	{
		int child = 2 * i + 1;

		if (child >= h->size)
			break;
		if (child + 1 < h->size && h->key[child + 1] < h->key[child])
			child++;
		if (h->key[child] >= lastkey)
			break;
		h->key[i] = h->key[child];
		h->node[i] = h->node[child];
		i = child;
	}
	if (h->size > 0)
	{
		h->key[i] = lastkey;
		h->node[i] = lastnode;
	}
	return top;
}

/*
 * Min-cost max-flow from s to t by successive shortest paths (Dijkstra on
 * reduced costs, see the file header).  All initial arc costs must be
 * non-negative.  Returns the flow value; the flow is left in g->cap.
 */
static int
FlowSolve(FlowGraph *g, int s, int t, int max_flow)
{
	int64	*pot = palloc0(sizeof(int64) * g->nnodes);
	int64	*dist = palloc(sizeof(int64) * g->nnodes);
	int		*prev = palloc(sizeof(int) * g->nnodes);
	bool	*done = palloc(sizeof(bool) * g->nnodes);
	FlowHeap heap;
	int		 flow = 0;

	heap.max = g->narcs + g->nnodes + 1;
	heap.key = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int64) * (Size) heap.max);
	heap.node = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * (Size) heap.max);

	while (flow < max_flow)
	{
		int	  v;
		int64 d;

		CHECK_FOR_INTERRUPTS();
		for (v = 0; v < g->nnodes; v++)
		{
			dist[v] = FLOW_INF;
			done[v] = false;
			prev[v] = -1;
		}
		dist[s] = 0;
		heap.size = 0;
		FlowHeapPush(&heap, 0, s);
		while (heap.size > 0)
		{
			int u = FlowHeapPop(&heap, &d);
			int e;

			if (done[u])
				continue;
			done[u] = true;
			if (u == t)
				break; /* the rest cannot shorten the path to t */
			for (e = g->head[u]; e >= 0; e = g->next[e])
			{
				int	  w = g->to[e];
				int64 nd;

				if (g->cap[e] <= 0 || done[w])
					continue;
				nd = d + g->cost[e] + pot[u] - pot[w];
				Assert(g->cost[e] + pot[u] - pot[w] >= 0);
				if (nd < dist[w])
				{
					dist[w] = nd;
					prev[w] = e;
					FlowHeapPush(&heap, nd, w);
				}
			}
		}
		if (!done[t])
			break; /* no augmenting path: the flow is maximum */

		/* settled nodes move by their distance, the others by t's */
		for (v = 0; v < g->nnodes; v++)
			pot[v] += done[v] ? dist[v] : dist[t];

		/* augment one unit: every source arc has capacity 1 */
		for (v = t; v != s; v = g->to[prev[v] ^ 1])
		{
			g->cap[prev[v]] -= 1;
			g->cap[prev[v] ^ 1] += 1;
		}
		flow++;
	}
	return flow;
}

/* Union-find root with path halving. */
static int
MatchFind(int *parent, int x)
{
	while (parent[x] != x)
	{
		parent[x] = parent[parent[x]];
		x = parent[x];
	}
	return x;
}

/*
 * The candidate pairs of the open requests: every (request, therapist)
 * that passes the hard filters, with its score.  Therapists are sorted by
 * latitude, so each request looks only at its latitude band.  Pairs come
 * out grouped by request, in request order.
 */
static MatchPair *
MatchCandidatePairs(MatchRequest *rs, int nr, MatchTherapist *ts, int nt,
					HTAB *excluded, int *npairs)
{
	int		   maxpairs = 1024;
	MatchPair *pairs = MemoryContextAllocHuge(CurrentMemoryContext,
											  sizeof(MatchPair) * (Size) maxpairs);
	int		   n = 0;
	int		   i;

	for (i = 0; i < nr; i++)
	{
		MatchRequest *r = &rs[i];
		double		  latmin,
			latmax,
			lonmin,
			lonmax;
		int lo = 0,
			hi = nt,
			j;

		CHECK_FOR_INTERRUPTS();
		if (r->type < 0)
			continue;
		MatchBoundingBox(r->lat, r->lon, r->max_km, &latmin, &latmax, &lonmin, &lonmax);
		while (lo < hi) /* first therapist with latitude >= latmin */
		{
			int mid = lo + (hi - lo) / 2;

			if (ts[mid].lat < latmin)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (j = lo; j < nt && ts[j].lat <= latmax; j++)
		{
			MatchTherapist *t = &ts[j];
			MatchScore		sc;
			double			d;
			int64			key[2];

			if (t->lon < lonmin || t->lon > lonmax ||
				!(t->types & (1U << r->type)) || !(t->langs & r->langs))
				continue;
			d = MatchHaversine(r->lat, r->lon, t->lat, t->lon);
			if (d > r->max_km)
				continue;
			key[0] = r->id;
			key[1] = t->id;
			if (hash_search(excluded, key, HASH_FIND, NULL) != NULL)
				continue;
			MatchScorePair(r, t, d, &sc);
			if (n == maxpairs)
			{
				if ((Size) maxpairs * 2 * sizeof(MatchPair) > MaxAllocHugeSize / 2)
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("too many candidate pairs for one assignment")));
				maxpairs *= 2;
				pairs = repalloc_huge(pairs, sizeof(MatchPair) * (Size) maxpairs);
			}
			pairs[n].r = i;
			pairs[n].t = j;
			pairs[n].score = sc.score;
			pairs[n].distance_km = (float) d;
			n++;
		}
	}
	*npairs = n;
	return pairs;
}

/* Is pair a better choice than b for the same request (greedy order)? */
static bool
MatchPairBetter(const MatchPair *a, const MatchPair *b, const MatchTherapist *ts)
{
	if (a->score != b->score)
		return a->score > b->score;
	if (a->distance_km != b->distance_km)
		return a->distance_km < b->distance_km;
	return ts[a->t].id < ts[b->t].id;
}

/* Greedy: each request in registration order takes its best free therapist. */
static void
MatchGreedy(MatchPair *pairs, int npairs, MatchTherapist *ts, int *choice)
{
	int i = 0;

	while (i < npairs)
	{
		int r = pairs[i].r;
		int best = -1;
		int j;

		for (j = i; j < npairs && pairs[j].r == r; j++)
			if (ts[pairs[j].t].capacity > 0 &&
				(best < 0 || MatchPairBetter(&pairs[j], &pairs[best], ts)))
				best = j;
		if (best >= 0)
		{
			ts[pairs[best].t].capacity--;
			choice[r] = best;
		}
		i = j;
	}
}

/*
 * Exact: split the candidate graph into connected components and solve
 * each as a min-cost max-flow (see the file header).  choice[r] gets the
 * index of the chosen pair of request r.
 */
static void
MatchExact(MatchPair *pairs, int npairs, int nr, MatchTherapist *ts, int nt,
		   int *choice)
{
	int *parent = palloc(sizeof(int) * (nr + nt));
	int *comp_of = palloc(sizeof(int) * nr);
	int *count;
	int *start;
	int *order;
	int *local = palloc(sizeof(int) * (nr + nt));
	int	 ncomp = 0;
	int	 i,
		c;
	MemoryContext work;
	MemoryContext old;

	for (i = 0; i < nr + nt; i++)
		parent[i] = i;
	for (i = 0; i < npairs; i++)
	{
		int a = MatchFind(parent, pairs[i].r);
		int b = MatchFind(parent, nr + pairs[i].t);

		if (a != b)
			parent[a] = b;
	}
	/* number the components that have pairs, in request order */
	for (i = 0; i < nr + nt; i++)
		local[i] = -1;
	for (i = 0; i < nr; i++)
	{
		int root = MatchFind(parent, i);

		if (local[root] < 0)
			local[root] = ncomp++;
		comp_of[i] = local[root];
	}
	/* bucket the pairs by component, keeping request order */
	count = palloc0(sizeof(int) * (ncomp + 1));
	start = palloc0(sizeof(int) * (ncomp + 1));
	order = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * (Size) (npairs + 1));
	for (i = 0; i < npairs; i++)
		count[comp_of[pairs[i].r]]++;
	for (c = 1; c <= ncomp; c++)
		start[c] = start[c - 1] + count[c - 1];
	memset(count, 0, sizeof(int) * (ncomp + 1));
	for (i = 0; i < npairs; i++)
	{
		c = comp_of[pairs[i].r];
		order[start[c] + count[c]++] = i;
	}

	work = AllocSetContextCreate(CurrentMemoryContext, "prm assignment component",
								 ALLOCSET_DEFAULT_SIZES);
	for (i = 0; i < nr + nt; i++)
		local[i] = -1;
	for (c = 0; c < ncomp; c++)
	{
		int first = start[c];
		int np = count[c];
		int nreq = 0,
			nther = 0,
			capsum = 0,
			k;
		int64	  m;
		FlowGraph g;
		int		 *arc;
		int		 *req_global;
		int		 *ther_global;

		if (np == 0)
			continue;
		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(work);
		req_global = palloc(sizeof(int) * np);
		ther_global = palloc(sizeof(int) * np);
		for (k = first; k < first + np; k++)
		{
			MatchPair *p = &pairs[order[k]];

			if (local[p->r] < 0)
			{
				req_global[nreq] = p->r;
				local[p->r] = nreq++;
			}
			if (local[nr + p->t] < 0)
			{
				ther_global[nther] = p->t;
				local[nr + p->t] = nther++;
				capsum += ts[p->t].capacity;
			}
		}
		/* rank = position in registration order inside the component */
		m = (int64) nreq * (nreq - 1) / 2 + 1;
		if ((double) (MATCH_SCORE_MAX + 1) * m * (nreq + nther + 2) >= (double) (FLOW_INF / 4))
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("%d requests and %d therapists that share candidates are too many for one exact assignment",
							nreq, nther),
					 errhint("Use method => 'greedy', or assign after fewer requests have piled up.")));

		/* nodes: 0 source, 1 sink, 2.. requests, then therapists */
		FlowInit(&g, nreq + nther + 2, np + nreq + nther);
		for (k = 0; k < nreq; k++)
			FlowAddEdge(&g, 0, 2 + k, 1, 0);
		for (k = 0; k < nther; k++)
			FlowAddEdge(&g, 2 + nreq + k, 1, ts[ther_global[k]].capacity, 0);
		arc = palloc(sizeof(int) * np);
		for (k = 0; k < np; k++)
		{
			MatchPair *p = &pairs[order[first + k]];
			int		   lr = local[p->r];

			arc[k] = FlowAddEdge(&g, 2 + lr, 2 + nreq + local[nr + p->t], 1,
								 (int64) (MATCH_SCORE_MAX - p->score) * m + lr);
		}
		FlowSolve(&g, 0, 1, Min(nreq, capsum));
		for (k = 0; k < np; k++)
			if (g.cap[arc[k]] == 0)
			{
				MatchPair *p = &pairs[order[first + k]];

				choice[p->r] = order[first + k];
				ts[p->t].capacity--;
			}
		for (k = 0; k < nreq; k++)
			local[req_global[k]] = -1;
		for (k = 0; k < nther; k++)
			local[nr + ther_global[k]] = -1;
		MemoryContextSwitchTo(old);
		MemoryContextReset(work);
	}
	MemoryContextDelete(work);
}

/*
 * prm.assign_placements(org_id, method, persist)
 *	  RETURNS TABLE (request_id, therapist_id, score)
 */
Datum
prm_assign_placements(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr ther_plan = NULL;
	static SPIPlanPtr req_plan = NULL;
	static SPIPlanPtr times_plan = NULL;
	static SPIPlanPtr excl_plan = NULL;
	static SPIPlanPtr persist_plan = NULL;
	ReturnSetInfo	 *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *method = PrmTextArg(fcinfo, 1, "method", 20);
	bool			  persist = PRM_GETARG_BOOL_NOTNULL(2, "persist");
	bool			  exact;
	MatchTherapist	 *ts;
	MatchRequest	 *rs;
	MatchPair		 *pairs;
	int				 *choice;
	HASHCTL			  ctl;
	HTAB			 *rindex;
	HTAB			 *excluded;
	Datum			  values[4];
	int				  nt,
		nr,
		npairs,
		n,
		i,
		proposed = 0;
	typedef struct IdEntry
	{
		int64 id;
		int	  idx;
	} IdEntry;

	if (strcmp(method, "exact") == 0)
		exact = true;
	else if (strcmp(method, "greedy") == 0)
		exact = false;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("assignment method \"%s\" is not recognized", method),
				 errhint("Use exact or greedy.")));
	InitMaterializedSRF(fcinfo, 0);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, persist ? PRM_LEVEL_STAFF : PRM_LEVEL_READONLY);
	values[0] = Int64GetDatum(org_id);

	/* persisting planners of one organization take turns */
	if (persist)
	{
		static SPIPlanPtr lock_plan = NULL;

		PrmPrepare(&lock_plan,
				   "SELECT pg_catalog.pg_advisory_xact_lock(1886547297, pg_catalog.hashint8($1))",
				   1, (Oid[]){INT8OID});
		PrmExecute(lock_plan, values, NULL, false, 0);
	}

	/* therapists with a free place, by latitude; capacity minus pending */
	PrmPrepare(&ther_plan,
			   "SELECT " THERAPIST_COLUMNS ", t.open_places - coalesce(p.pending, 0)"
			   "  FROM prm.therapist t"
			   "  LEFT JOIN (SELECT c.therapist_id, pg_catalog.count(*)::int AS pending"
			   "               FROM prm.placement_contact c"
			   "              WHERE c.org_id = $1 AND c.status IN ('proposed', 'sent')"
			   "              GROUP BY c.therapist_id) p ON p.therapist_id = t.id"
			   " WHERE t.org_id = $1 AND t.accepts_contact"
			   "   AND t.open_places > coalesce(p.pending, 0)"
			   " ORDER BY t.latitude, t.id LIMIT $2",
			   2, (Oid[]){INT8OID, INT4OID});
	values[1] = Int32GetDatum(MATCH_MAX_THERAPISTS + 1);
	nt = PrmExecute(ther_plan, values, NULL, true, 0);
	if (nt > MATCH_MAX_THERAPISTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("organization %lld has more than %d therapists with free places",
						(long long) org_id, MATCH_MAX_THERAPISTS)));
	ts = palloc(sizeof(MatchTherapist) * (nt + 1));
	for (i = 0; i < nt; i++)
	{
		MatchReadTherapist(i, &ts[i]);
		ts[i].capacity = MatchGetInt32(i, 10);
	}
	SPI_freetuptable(SPI_tuptable);
	MatchLoadPhoneHours(org_id, ts, nt);

	/* open requests without a pending contact, in registration order */
	PrmPrepare(&req_plan,
			   "SELECT " REQUEST_COLUMNS " FROM prm.placement_request r"
			   " WHERE r.org_id = $1 AND r.status = 'open'"
			   "   AND NOT EXISTS (SELECT 1 FROM prm.placement_contact c"
			   "                    WHERE c.org_id = $1 AND c.request_id = r.id"
			   "                      AND c.status IN ('proposed', 'sent'))"
			   " ORDER BY r.registered_at, r.id LIMIT $2",
			   2, (Oid[]){INT8OID, INT4OID});
	values[1] = Int32GetDatum(MATCH_MAX_REQUESTS + 1);
	nr = PrmExecute(req_plan, values, NULL, true, 0);
	if (nr > MATCH_MAX_REQUESTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("organization %lld has more than %d open placement requests to assign",
						(long long) org_id, MATCH_MAX_REQUESTS)));
	rs = palloc(sizeof(MatchRequest) * (nr + 1));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(IdEntry);
	ctl.hcxt = CurrentMemoryContext;
	rindex = hash_create("prm request index", Max(nr, 16), &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (i = 0; i < nr; i++)
	{
		IdEntry *e;

		MatchReadRequest(i, &rs[i]);
		e = hash_search(rindex, &rs[i].id, HASH_ENTER, NULL);
		e->idx = i;
	}
	SPI_freetuptable(SPI_tuptable);

	/* the requests' stated times */
	PrmPrepare(&times_plan,
			   "SELECT x.request_id, x.day_of_week,"
			   "       (pg_catalog.date_part('epoch', x.starts) / 60)::int,"
			   "       (pg_catalog.date_part('epoch', x.ends) / 60)::int"
			   "  FROM prm.placement_request_time x"
			   "  JOIN prm.placement_request r ON r.org_id = x.org_id AND r.id = x.request_id"
			   " WHERE x.org_id = $1 AND r.status = 'open'"
			   " ORDER BY x.request_id",
			   1, (Oid[]){INT8OID});
	n = PrmExecute(times_plan, values, NULL, true, 0);
	for (i = 0; i < n;)
	{
		bool	 isnull;
		int64	 rid = PrmGetInt64(i, 1, &isnull);
		IdEntry *e = hash_search(rindex, &rid, HASH_FIND, NULL);
		int		 j,
			k;

		for (j = i; j < n && PrmGetInt64(j, 1, &isnull) == rid; j++)
			;
		if (e != NULL)
		{
			MatchRequest *r = &rs[e->idx];

			r->nwin = j - i;
			r->win = palloc(sizeof(MatchWindow) * r->nwin);
			for (k = i; k < j; k++)
			{
				int base = (MatchGetInt32(k, 2) - 1) * MINUTES_PER_DAY;

				r->win[k - i].start = base + MatchGetInt32(k, 3);
				r->win[k - i].end = base + MatchGetInt32(k, 4);
			}
		}
		i = j;
	}
	SPI_freetuptable(SPI_tuptable);

	/* pairs already contacted are never proposed again */
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 2 * sizeof(int64);
	ctl.entrysize = 2 * sizeof(int64);
	ctl.hcxt = CurrentMemoryContext;
	excluded = hash_create("prm contacted pairs", 1024, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	PrmPrepare(&excl_plan,
			   "SELECT c.request_id, c.therapist_id FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   " WHERE c.org_id = $1 AND r.status = 'open'",
			   1, (Oid[]){INT8OID});
	n = PrmExecute(excl_plan, values, NULL, true, 0);
	for (i = 0; i < n; i++)
	{
		bool  isnull;
		int64 key[2];

		key[0] = PrmGetInt64(i, 1, &isnull);
		key[1] = PrmGetInt64(i, 2, &isnull);
		hash_search(excluded, key, HASH_ENTER, NULL);
	}
	SPI_freetuptable(SPI_tuptable);

	pairs = MatchCandidatePairs(rs, nr, ts, nt, excluded, &npairs);
	choice = palloc(sizeof(int) * (nr + 1));
	for (i = 0; i < nr; i++)
		choice[i] = -1;
	if (exact)
		MatchExact(pairs, npairs, nr, ts, nt, choice);
	else
		MatchGreedy(pairs, npairs, ts, choice);

	PrmPrepare(&persist_plan,
			   "INSERT INTO prm.placement_contact (org_id, request_id, therapist_id, score)"
			   " VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, request_id, therapist_id) DO NOTHING",
			   4, (Oid[]){INT8OID, INT8OID, INT8OID, FLOAT8OID});
	for (i = 0; i < nr; i++)
	{
		Datum	   out[3];
		bool	   outnulls[3] = {false, false, false};
		MatchPair *p;

		if (choice[i] < 0)
			continue;
		p = &pairs[choice[i]];
		out[0] = Int64GetDatum(rs[i].id);
		out[1] = Int64GetDatum(ts[p->t].id);
		out[2] = Float8GetDatum(p->score / 100.0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnulls);
		if (persist)
		{
			values[1] = out[0];
			values[2] = out[1];
			values[3] = out[2];
			proposed += PrmExecute(persist_plan, values, NULL, false, 0);
		}
	}
	if (persist)
		PrmEmitEvent(org_id, "placements_proposed", "organization", org_id,
					 psprintf("{\"method\": \"%s\", \"proposed\": %d, \"open_requests\": %d}",
							  exact ? "exact" : "greedy", proposed, nr));
	PrmSpiFinish();
	return (Datum) 0;
}

/* ---------------------------------------------------------------------
 * Contact batches
 * ---------------------------------------------------------------------
 */

/* The first character of a name and a full stop ("A."), or "?". */
static char *
MatchInitial(const char *name)
{
	const char *p = name;

	while (*p && isspace((unsigned char) *p))
		p++;
	if (*p == '\0')
		return pstrdup("?");
	return psprintf("%.*s.", pg_mblen(p), p);
}

/* The age band of an age in years (negative: unknown). */
static const char *
MatchAgeBand(int age)
{
	if (age < 0)
		return "age not stated";
	if (age < 18)
		return "under 18";
	if (age < 25)
		return "18-24";
	if (age < 35)
		return "25-34";
	if (age < 45)
		return "35-44";
	if (age < 55)
		return "45-54";
	if (age < 65)
		return "55-64";
	return "65 or older";
}

/*
 * Send one therapist's proposed requests in one e-mail, unless the
 * therapist had one in the 7 days before as_of (or later).  Returns
 * whether an e-mail was queued.  Must run inside SPI.
 */
static bool
MatchSendBatch(int64 org_id, int64 therapist_id, TimestampTz as_of)
{
	static SPIPlanPtr  lock_plan = NULL;
	static SPIPlanPtr  recent_plan = NULL;
	static SPIPlanPtr  contacts_plan = NULL;
	static SPIPlanPtr  batch_plan = NULL;
	static SPIPlanPtr  message_plan = NULL;
	static SPIPlanPtr  mark_plan = NULL;
	static SPIPlanPtr  counter_plan = NULL;
	const PrmSettings *settings = PrmGetSettings(org_id);
	Datum			   values[5];
	char			  *tname;
	char			  *email;
	int				   n,
		i;
	int64		   batch_id;
	int64		   message_id;
	bool		   isnull;
	Datum		  *ids;
	StringInfoData lines;
	StringInfoData body;

	/* the therapist's row lock serialises planners: one e-mail a week */
	PrmPrepare(&lock_plan,
			   "SELECT t.name, t.email FROM prm.therapist t"
			   " WHERE t.org_id = $1 AND t.id = $2"
			   "   AND t.accepts_contact AND t.open_places > 0 FOR UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(therapist_id);
	values[2] = TimestampTzGetDatum(as_of);
	if (PrmExecute(lock_plan, values, NULL, false, 1) != 1)
		return false;
	tname = PrmGetText(0, 1);
	email = PrmGetText(0, 2);
	PrmPrepare(&recent_plan,
			   "SELECT 1 FROM prm.contact_batch b"
			   " WHERE b.org_id = $1 AND b.therapist_id = $2"
			   "   AND b.sent_at > $3 - interval '7 days' LIMIT 1",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	if (PrmExecute(recent_plan, values, NULL, false, 1) > 0)
		return false;

	PrmPrepare(&contacts_plan,
			   "SELECT c.id, r.id, r.therapy_type, p.given_name, p.family_name,"
			   "       coalesce(pg_catalog.date_part('year', $3 AT TIME ZONE 'UTC')::int - r.birth_year, -1)"
			   "  FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   "  JOIN prm.patient p ON p.org_id = r.org_id AND p.id = r.patient_id"
			   " WHERE c.org_id = $1 AND c.therapist_id = $2 AND c.status = 'proposed'"
			   "   AND r.status = 'open'"
			   " ORDER BY r.registered_at, r.id LIMIT " CppAsString2(MATCH_BATCH_MAX) " FOR UPDATE OF c",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	n = PrmExecute(contacts_plan, values, NULL, false, 0);
	if (n == 0)
		return false;

	/* de-identified lines: reference, initials, age band, therapy type */
	ids = palloc(sizeof(Datum) * n);
	initStringInfo(&lines);
	for (i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(PrmGetInt64(i, 1, &isnull));
		appendStringInfo(&lines, "- Ref. P%s: %s%s, %s, %s\n",
						 PrmGetText(i, 2),
						 MatchInitial(PrmGetText(i, 4)), MatchInitial(PrmGetText(i, 5)),
						 MatchAgeBand(MatchGetInt32(i, 6)), PrmGetText(i, 3));
	}

	/* the organization's wording (prm.set_template), else the built-in one */
	{
		PrmTemplateVar vars[3];

		vars[0].name = "therapist";
		vars[0].value = tname;
		vars[1].name = "count";
		vars[1].value = psprintf("%d", n);
		vars[2].name = "patients";
		vars[2].value = lines.data;
		initStringInfo(&body);
		appendStringInfoString(&body, PrmRender(org_id, n == 1 ? "contact_single" : "contact_several",
												"email", settings->locale, vars, 3));
	}
	if (pg_mbstrlen(body.data) > 1600)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("contact e-mail to therapist %lld is longer than 1600 characters",
						(long long) therapist_id),
				 errhint("Shorten the therapist's or the organization's name.")));

	PrmPrepare(&batch_plan,
			   "INSERT INTO prm.contact_batch (org_id, therapist_id, template, patients, sent_at, follow_up_at)"
			   " VALUES ($1, $2, $4, $5, $3, $3 + interval '" CppAsString2(FOLLOW_UP_DAYS) " days')"
																						   " RETURNING id",
			   5, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID, INT4OID});
	values[3] = CStringGetTextDatum(n == 1 ? "contact_single" : "contact_several");
	values[4] = Int32GetDatum(n);
	if (PrmExecute(batch_plan, values, NULL, false, 0) != 1)
		elog(ERROR, "contact batch insert returned no row");
	batch_id = PrmGetInt64(0, 1, &isnull);

	message_id = PrmEnqueue(org_id, "email", email, body.data, "contact_batch", 0, 0,
							psprintf("contact_batch:%lld", (long long) batch_id), 0);

	PrmPrepare(&message_plan,
			   "UPDATE prm.contact_batch b SET message_id = $3 WHERE b.org_id = $1 AND b.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[1] = Int64GetDatum(batch_id);
	values[2] = Int64GetDatum(message_id);
	PrmExecute(message_plan, values, NULL, false, 0);

	PrmPrepare(&mark_plan,
			   "UPDATE prm.placement_contact c SET status = 'sent', batch_id = $2, sent_at = $3,"
			   "       channel = 'email'"
			   " WHERE c.org_id = $1 AND c.id = ANY ($4)",
			   4, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, INT8ARRAYOID});
	values[2] = TimestampTzGetDatum(as_of);
	values[3] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	PrmExecute(mark_plan, values, NULL, false, 0);

	PrmPrepare(&counter_plan,
			   "UPDATE prm.therapist t SET contacts_total = t.contacts_total + $3"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT4OID});
	values[1] = Int64GetDatum(therapist_id);
	values[2] = Int32GetDatum(n);
	PrmExecute(counter_plan, values, NULL, false, 0);

	PrmEmitEvent(org_id, "contact_batch_sent", "contact_batch", batch_id,
				 psprintf("{\"therapist_id\": %lld, \"patients\": %d, \"message_id\": %lld, \"sent_at\": %s}",
						  (long long) therapist_id, n, (long long) message_id,
						  PrmJsonTimestamp(as_of)));
	return true;
}

/*
 * prm.plan_contact_batches(org_id, as_of, max_batches) RETURNS int
 *	  Therapists are served in the order of the earliest registration among
 *	  their proposed requests.
 */
Datum
prm_plan_contact_batches(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	TimestampTz		  as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(1, "as_of");
	int32			  max_batches = PRM_GETARG_INT32_NOTNULL(2, "max_batches");
	Datum			  values[3];
	int64			 *therapists;
	int				  n,
		i,
		sent = 0;

	if (max_batches < 1 || max_batches > 10000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_batches %d is out of range", max_batches),
				 errdetail("Send 1 to 10000 e-mails per call.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&plan,
			   "SELECT c.therapist_id FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   " WHERE c.org_id = $1 AND c.status = 'proposed' AND r.status = 'open'"
			   "   AND NOT EXISTS (SELECT 1 FROM prm.contact_batch b"
			   "                    WHERE b.org_id = $1 AND b.therapist_id = c.therapist_id"
			   "                      AND b.sent_at > $2 - interval '7 days')"
			   " GROUP BY c.therapist_id"
			   " ORDER BY pg_catalog.min(r.registered_at), c.therapist_id LIMIT $3",
			   3, (Oid[]){INT8OID, TIMESTAMPTZOID, INT4OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = TimestampTzGetDatum(as_of);
	values[2] = Int32GetDatum(max_batches);
	n = PrmExecute(plan, values, NULL, false, 0);
	therapists = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		therapists[i] = PrmGetInt64(i, 1, &isnull);
	}
	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (MatchSendBatch(org_id, therapists[i], as_of))
			sent++;
	}
	PrmSpiFinish();
	PG_RETURN_INT32(sent);
}

/* ---------------------------------------------------------------------
 * Answers, follow-up calls
 * ---------------------------------------------------------------------
 */

/*
 * prm.record_contact_answer(org_id, request_id, therapist_id, answer,
 *		stated_waiting_weeks, channel, as_of) RETURNS boolean
 */
Datum
prm_record_contact_answer(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr answer_plan = NULL;
	static SPIPlanPtr therapist_plan = NULL;
	static SPIPlanPtr match_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  request_id = PRM_GETARG_INT64_NOTNULL(1, "request_id");
	int64			  therapist_id = PRM_GETARG_INT64_NOTNULL(2, "therapist_id");
	int				  answer = MatchOneOf(answers, lengthof(answers),
										  PrmTextArg(fcinfo, 3, "answer", 40), "answer");
	bool			  has_weeks = !PG_ARGISNULL(4);
	int				  channel = MatchOneOf(contact_channels, lengthof(contact_channels),
										   PrmTextArg(fcinfo, 5, "channel", 40), "channel");
	TimestampTz		  as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(6, "as_of");
	bool			  accepted = (answer == 0);
	bool			  matched = false;
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int64			  contact_id;
	char			 *status;
	bool			  isnull;

	if (has_weeks && (PG_GETARG_INT32(4) < 0 || PG_GETARG_INT32(4) > 520))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stated waiting time %d weeks is out of range", PG_GETARG_INT32(4)),
				 errdetail("Waiting times are between 0 and 520 weeks.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MatchRequireRow(org_id, "placement_request", request_id, true);
	MatchRequireRow(org_id, "therapist", therapist_id, true);

	PrmPrepare(&find_plan,
			   "SELECT c.id, c.status, r.status FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   " WHERE c.org_id = $1 AND c.request_id = $2 AND c.therapist_id = $3"
			   " FOR UPDATE OF c",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	values[2] = Int64GetDatum(therapist_id);
	if (PrmExecute(find_plan, values, NULL, false, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("therapist %lld was not asked about placement request %lld",
						(long long) therapist_id, (long long) request_id),
				 errhint("Answers are recorded for contacts proposed by prm.assign_placements().")));
	contact_id = PrmGetInt64(0, 1, &isnull);
	status = PrmGetText(0, 2);
	if (strcmp(status, "answered") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("therapist %lld has already answered about placement request %lld",
						(long long) therapist_id, (long long) request_id)));
	matched = accepted && strcmp(PrmGetText(0, 3), "open") == 0;

	PrmPrepare(&answer_plan,
			   "UPDATE prm.placement_contact c SET status = 'answered', answer = $3, answer_channel = $4,"
			   "       stated_waiting_weeks = $5, answered_at = $6,"
			   "       sent_at = coalesce(c.sent_at, $6),"
			   "       channel = CASE WHEN c.sent_at IS NULL THEN $4 ELSE c.channel END"
			   " WHERE c.org_id = $1 AND c.id = $2",
			   6, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID});
	values[1] = Int64GetDatum(contact_id);
	values[2] = CStringGetTextDatum(answers[answer]);
	values[3] = CStringGetTextDatum(contact_channels[channel]);
	values[4] = has_weeks ? PG_GETARG_DATUM(4) : (Datum) 0;
	nulls[4] = has_weeks ? ' ' : 'n';
	values[5] = TimestampTzGetDatum(as_of);
	PrmExecute(answer_plan, values, nulls, false, 0);

	/* reply history; an acceptance takes a place, no_place empties them */
	PrmPrepare(&therapist_plan,
			   "UPDATE prm.therapist t SET answers_total = t.answers_total + 1,"
			   "       accepted_total = t.accepted_total + CASE WHEN $3 = 'accepted' THEN 1 ELSE 0 END,"
			   "       open_places = CASE WHEN $3 = 'no_place' THEN 0"
			   "                          WHEN $4 THEN pg_catalog.int4larger(t.open_places - 1, 0)"
			   "                          ELSE t.open_places END,"
			   "       updated_at = pg_catalog.now()"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, TEXTOID, BOOLOID});
	values[1] = Int64GetDatum(therapist_id);
	values[3] = BoolGetDatum(matched);
	PrmExecute(therapist_plan, values, NULL, false, 0);

	if (matched)
	{
		PrmPrepare(&match_plan,
				   "UPDATE prm.placement_request r SET status = 'matched', matched_therapist_id = $3,"
				   "       closed_at = $4"
				   " WHERE r.org_id = $1 AND r.id = $2",
				   4, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID});
		values[1] = Int64GetDatum(request_id);
		values[2] = Int64GetDatum(therapist_id);
		values[3] = TimestampTzGetDatum(as_of);
		PrmExecute(match_plan, values, NULL, false, 0);
		MatchWithdrawContacts(org_id, request_id, contact_id);
		PrmEmitEvent(org_id, "placement_matched", "placement_request", request_id,
					 psprintf("{\"therapist_id\": %lld}", (long long) therapist_id));
	}
	MatchCancelSettledCalls(org_id, request_id, as_of);
	PrmEmitEvent(org_id, "contact_answered", "placement_contact", contact_id,
				 psprintf("{\"request_id\": %lld, \"therapist_id\": %lld, \"answer\": \"%s\", \"channel\": \"%s\"}",
						  (long long) request_id, (long long) therapist_id,
						  answers[answer], contact_channels[channel]));
	PrmSpiFinish();
	PG_RETURN_BOOL(matched);
}

/* ISO day of week (1 = Monday) of a day number counted from 2000-01-01. */
static int
MatchIsoDow(int64 day)
{
	/* 2000-01-01 was a Saturday (ISO 6) */
	return (int) (((day % 7) + 7 + 5) % 7) + 1;
}

/*
 * The first moment at or after as_of inside one of the weekly windows
 * (wall-clock times in time zone tz), and the end of that window.  Each
 * candidate day's local start and end are converted to UTC on their own,
 * so a daylight-saving change between as_of and the call moves the call's
 * UTC time, never its local time.  False when there are no windows.
 */
static bool
MatchNextWindow(const char *tz, const MatchWindow *win, int nwin,
				TimestampTz as_of, TimestampTz *start, TimestampTz *end)
{
	Datum	  tzd = CStringGetTextDatum(tz);
	Timestamp local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone, tzd,
															TimestampTzGetDatum(as_of)));
	int64	  day0 = local / USECS_PER_DAY - (local % USECS_PER_DAY < 0 ? 1 : 0);
	int		  k,
		i;

	for (k = 0; k <= 7; k++)
	{
		int64		day = day0 + k;
		int			dow = MatchIsoDow(day);
		TimestampTz best_start = 0;
		TimestampTz best_end = 0;
		bool		found = false;

		for (i = 0; i < nwin; i++)
		{
			int		  wdow = win[i].start / MINUTES_PER_DAY + 1;
			Timestamp ls,
				le;
			TimestampTz s,
				e;

			if (wdow != dow)
				continue;
			ls = day * USECS_PER_DAY + (int64) (win[i].start % MINUTES_PER_DAY) * USECS_PER_MINUTE;
			le = day * USECS_PER_DAY + (int64) (win[i].end - (wdow - 1) * MINUTES_PER_DAY) * USECS_PER_MINUTE;
			s = DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, tzd, TimestampGetDatum(ls)));
			e = DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, tzd, TimestampGetDatum(le)));
			if (s < as_of)
				s = as_of;
			if (e <= s)
				continue; /* over, or lost in a daylight-saving gap */
			if (!found || s < best_start)
			{
				best_start = s;
				best_end = e;
				found = true;
			}
		}
		if (found)
		{
			*start = best_start;
			*end = best_end;
			return true;
		}
	}
	return false;
}

/*
 * Create the call tasks of contact e-mails sent at least 7 days before
 * as_of that still have unanswered requests (of one organization, or all
 * when org_id is 0); at most limit e-mails are looked at.  Returns the
 * number of tasks created.  Must run inside SPI.
 */
static int64
MatchFollowUps(int64 org_id, TimestampTz as_of, int limit)
{
	static SPIPlanPtr due_plan = NULL;
	static SPIPlanPtr pending_plan = NULL;
	static SPIPlanPtr task_plan = NULL;
	static SPIPlanPtr done_plan = NULL;
	typedef struct DueBatch
	{
		int64 org_id;
		int64 id;
		int64 therapist_id;
		char *tz;
	} DueBatch;
	DueBatch *due;
	Datum	  values[6];
	char	  nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int		  n,
		i;
	int64 created = 0;

	PrmPrepare(&due_plan,
			   "SELECT b.org_id, b.id, b.therapist_id, t.timezone"
			   "  FROM prm.contact_batch b"
			   "  JOIN prm.therapist t ON t.org_id = b.org_id AND t.id = b.therapist_id"
			   " WHERE b.follow_up_at IS NOT NULL AND b.follow_up_at <= $1"
			   "   AND ($2::bigint IS NULL OR b.org_id = $2)"
			   " ORDER BY b.follow_up_at, b.org_id, b.id LIMIT $3"
			   " FOR UPDATE OF b SKIP LOCKED",
			   3, (Oid[]){TIMESTAMPTZOID, INT8OID, INT4OID});
	values[0] = TimestampTzGetDatum(as_of);
	values[1] = Int64GetDatum(org_id);
	nulls[1] = org_id > 0 ? ' ' : 'n';
	values[2] = Int32GetDatum(limit);
	n = PrmExecute(due_plan, values, nulls, false, 0);
	due = palloc(sizeof(DueBatch) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		due[i].org_id = PrmGetInt64(i, 1, &isnull);
		due[i].id = PrmGetInt64(i, 2, &isnull);
		due[i].therapist_id = PrmGetInt64(i, 3, &isnull);
		due[i].tz = PrmGetText(i, 4);
	}
	memset(nulls, ' ', sizeof(nulls));

	for (i = 0; i < n; i++)
	{
		MatchTherapist t;
		TimestampTz	   ws,
			we;

		CHECK_FOR_INTERRUPTS();
		values[0] = Int64GetDatum(due[i].org_id);
		values[1] = Int64GetDatum(due[i].id);
		PrmPrepare(&done_plan,
				   "UPDATE prm.contact_batch b SET follow_up_at = NULL"
				   " WHERE b.org_id = $1 AND b.id = $2",
				   2, (Oid[]){INT8OID, INT8OID});
		PrmExecute(done_plan, values, NULL, false, 0);

		PrmPrepare(&pending_plan,
				   "SELECT 1 FROM prm.placement_contact c"
				   " WHERE c.org_id = $1 AND c.batch_id = $2 AND c.status = 'sent' LIMIT 1",
				   2, (Oid[]){INT8OID, INT8OID});
		if (PrmExecute(pending_plan, values, NULL, false, 1) == 0)
			continue; /* everything answered or withdrawn */

		memset(&t, 0, sizeof(t));
		t.id = due[i].therapist_id;
		MatchLoadPhoneHours(due[i].org_id, &t, 1);
		if (!MatchNextWindow(due[i].tz, t.win, t.nwin, as_of, &ws, &we))
		{
			/* no phone hours known: the call can be made from now on */
			ws = as_of;
			we = as_of + USECS_PER_DAY;
		}
		PrmPrepare(&task_plan,
				   "INSERT INTO prm.call_task (org_id, therapist_id, batch_id, window_starts_at,"
				   "   window_ends_at, created_at, note)"
				   " VALUES ($1, $3, $2, $4, $5, $6, $7)"
				   " ON CONFLICT (org_id, batch_id) DO NOTHING RETURNING id",
				   7, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID});
		{
			Datum tv[7];
			char  tn[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
			bool  isnull;

			tv[0] = values[0];
			tv[1] = values[1];
			tv[2] = Int64GetDatum(due[i].therapist_id);
			tv[3] = TimestampTzGetDatum(ws);
			tv[4] = TimestampTzGetDatum(we);
			tv[5] = TimestampTzGetDatum(as_of);
			if (t.nwin == 0)
				tv[6] = CStringGetTextDatum("The therapist has no phone hours on record.");
			else
				tn[6] = 'n';
			if (PrmExecute(task_plan, tv, tn, false, 0) == 1)
			{
				int64 task_id = PrmGetInt64(0, 1, &isnull);

				created++;
				PrmEmitEvent(due[i].org_id, "call_task_created", "call_task", task_id,
							 psprintf("{\"therapist_id\": %lld, \"batch_id\": %lld, \"window_starts_at\": %s}",
									  (long long) due[i].therapist_id, (long long) due[i].id,
									  PrmJsonTimestamp(ws)));
			}
		}
	}
	return created;
}

/* The job runner's follow-up step: all organizations, now, bounded. */
int64
PrmMatchingFollowUps(void)
{
	return MatchFollowUps(0, GetCurrentTransactionStartTimestamp(), 200);
}

/*
 * prm.run_matching_follow_ups(org_id, as_of, max_tasks) RETURNS bigint
 */
Datum
prm_run_matching_follow_ups(PG_FUNCTION_ARGS)
{
	TimestampTz as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(1, "as_of");
	int32		max_tasks = PRM_GETARG_INT32_NOTNULL(2, "max_tasks");
	int64		org_id = 0;
	int64		created;

	if (max_tasks < 1 || max_tasks > 10000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_tasks %d is out of range", max_tasks),
				 errdetail("Look at 1 to 10000 e-mails per call.")));
	PrmSpiConnect();
	if (PG_ARGISNULL(0))
	{
		if (!PrmCallerIsPrivileged())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to run follow-ups of every organization"),
					 errhint("Pass your organization's id.")));
	}
	else
	{
		org_id = PG_GETARG_INT64(0);
		PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	}
	created = MatchFollowUps(org_id, as_of, max_tasks);
	PrmSpiFinish();
	PG_RETURN_INT64(created);
}

/*
 * prm.record_call_outcome(org_id, call_task_id, outcome, note, as_of)
 *	  RETURNS void
 */
Datum
prm_record_call_outcome(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  task_id = PRM_GETARG_INT64_NOTNULL(1, "call_task_id");
	int				  outcome = MatchOneOf(call_outcomes, lengthof(call_outcomes),
										   PrmTextArg(fcinfo, 2, "outcome", 40), "call outcome");
	char			 *note = PrmTextArgOrNull(fcinfo, 3, "note", PRM_MAX_TEXT_LEN);
	TimestampTz		  as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(4, "as_of");
	Datum			  values[5];
	char			  nulls[5] = {' ', ' ', ' ', ' ', ' '};
	char			 *status;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&find_plan,
			   "SELECT k.status FROM prm.call_task k WHERE k.org_id = $1 AND k.id = $2 FOR UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(task_id);
	if (PrmExecute(find_plan, values, NULL, false, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("call_task %lld does not exist in organization %lld",
						(long long) task_id, (long long) org_id)));
	status = PrmGetText(0, 1);
	if (strcmp(status, "open") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("call task %lld is %s, not open", (long long) task_id, status)));
	PrmPrepare(&plan,
			   "UPDATE prm.call_task k SET status = 'done', outcome = $3, note = $4, completed_at = $5"
			   " WHERE k.org_id = $1 AND k.id = $2",
			   5, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID});
	values[2] = CStringGetTextDatum(call_outcomes[outcome]);
	values[3] = note ? CStringGetTextDatum(note) : (Datum) 0;
	nulls[3] = note ? ' ' : 'n';
	values[4] = TimestampTzGetDatum(as_of);
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "call_task_done", "call_task", task_id,
				 psprintf("{\"outcome\": \"%s\"}", call_outcomes[outcome]));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Evidence
 * ---------------------------------------------------------------------
 */

/*
 * prm.placement_evidence(org_id, request_id) RETURNS jsonb
 */
Datum
prm_placement_evidence(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  request_id = PRM_GETARG_INT64_NOTNULL(1, "request_id");
	Datum			  values[2];
	Datum			  result;
	bool			  isnull;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_build_object("
			   "  'request_id', r.id, 'patient_id', r.patient_id, 'registered_at', r.registered_at,"
			   "  'status', r.status, 'therapy_type', r.therapy_type,"
			   "  'matched_therapist_id', r.matched_therapist_id, 'closed_at', r.closed_at,"
			   "  'contacts', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
			   "      'therapist_id', c.therapist_id, 'therapist_name', t.name,"
			   "      'therapist_email', t.email, 'contacted_at', c.sent_at, 'channel', c.channel,"
			   "      'answer', c.answer, 'answer_channel', c.answer_channel,"
			   "      'answered_at', c.answered_at, 'stated_waiting_weeks', c.stated_waiting_weeks,"
			   "      'status', c.status,"
			   "      'calls', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
			   "          'window_starts_at', k.window_starts_at, 'status', k.status,"
			   "          'outcome', k.outcome, 'completed_at', k.completed_at) ORDER BY k.id)"
			   "          FROM prm.call_task k WHERE k.org_id = c.org_id AND k.batch_id = c.batch_id),"
			   "        '[]'::pg_catalog.jsonb)) ORDER BY c.sent_at, c.id)"
			   "    FROM prm.placement_contact c"
			   "    JOIN prm.therapist t ON t.org_id = c.org_id AND t.id = c.therapist_id"
			   "   WHERE c.org_id = r.org_id AND c.request_id = r.id AND c.sent_at IS NOT NULL),"
			   "    '[]'::pg_catalog.jsonb))"
			   "  FROM prm.placement_request r WHERE r.org_id = $1 AND r.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	if (PrmExecute(plan, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("placement_request %lld does not exist in organization %lld",
						(long long) request_id, (long long) org_id)));
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = SPI_datumTransfer(result, false, -1);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}
