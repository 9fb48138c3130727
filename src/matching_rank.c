/*-------------------------------------------------------------------------
 *
 * matching_rank.c
 *	  Distances, scores and their reasons: prm.rank_therapists for one
 *	  request, and prm.assign_placements for all open requests at once (it
 *	  builds the candidate pairs, hands them to matching_solver.c and
 *	  records the proposals).
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
 * the assignment works in exact integer arithmetic.
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
 * candidate pairs are every (request, therapist) that passes the hard
 * filters above, with its score; matching_solver.c explains how the best
 * set of pairs is found.  At most MATCH_MAX_REQUESTS requests and
 * MATCH_MAX_THERAPISTS therapists are taken per call; larger organizations
 * are refused with 54000 rather than solved wrongly.
 *
 * Locking: ranking and a proposal without persist only read.  Persisting
 * planners of one organization take turns on its prm.org_mutex row
 * (PrmLockOrgMutex, purpose 'placements', held until commit), so two of them
 * cannot propose the same free place twice.  Not an advisory lock: its key
 * would be public, and any role, even one without a grant, could take and
 * hold it and so hang the clinic's placements.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "matching.h"
#include "matching_solver.h"

PG_FUNCTION_INFO_V1(prm_therapist_distance_km);
PG_FUNCTION_INFO_V1(prm_rank_therapists);
PG_FUNCTION_INFO_V1(prm_assign_placements);

#define EARTH_RADIUS_KM 6371.0088
#define MATCH_MAX_REQUESTS 50000
#define MATCH_MAX_THERAPISTS 100000

/* A ranked candidate of prm.rank_therapists. */
typedef struct MatchRanked
{
	int		   t;
	MatchScore s;
} MatchRanked;

static double MatchHaversine(double lat1, double lon1, double lat2, double lon2);
static void	  MatchBoundingBox(double lat, double lon, double km,
							   double *latmin, double *latmax,
							   double *lonmin, double *lonmax);
static void	  MatchScorePair(const MatchRequest *r, const MatchTherapist *t,
							 double distance_km, MatchScore *out);

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
	PrmSpiConnectReadOnly();
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
	values[5] = CStringGetTextDatum(match_therapy_types[req.type]);
	values[6] = MatchMaskArray(req.langs, match_language_codes, lengthof(match_language_codes));
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
 * Assignment: the candidate pairs, the solver, the proposals
 * ---------------------------------------------------------------------
 */

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

/* Check for a query cancel between the solver's steps. */
static void
MatchCheckInterrupts(void)
{
	CHECK_FOR_INTERRUPTS();
}

/*
 * Choose at most one pair per request, under the therapists' capacities,
 * with the exact or the greedy solver (matching_solver.c).  Returns
 * choice[r]: the index of the pair chosen for request r, or -1.
 */
static int *
MatchChoose(const MatchPair *pairs, int npairs, int nr,
			const MatchTherapist *ts, int nt, bool exact)
{
	MatchProblem  prob;
	MatchTooLarge big;
	int			 *capacity = palloc(sizeof(int) * (nt + 1));
	int64		 *ids = palloc(sizeof(int64) * (nt + 1));
	int			 *choice = palloc(sizeof(int) * (nr + 1));
	int			  i;

	for (i = 0; i < nt; i++)
	{
		capacity[i] = ts[i].capacity;
		ids[i] = ts[i].id;
	}
	prob.nrequests = nr;
	prob.ntherapists = nt;
	prob.capacity = capacity;
	prob.therapist_ids = ids;
	prob.pairs = pairs;
	prob.npairs = npairs;
	prob.check_interrupts = MatchCheckInterrupts;
	if (!exact)
		MatchSolveGreedy(&prob, choice);
	else if (!MatchSolveExact(&prob, choice, &big))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%d requests and %d therapists that share candidates are too many for one exact assignment",
						big.nrequests, big.ntherapists),
				 errhint("Use method => 'greedy', or assign after fewer requests have piled up.")));
	pfree(capacity);
	pfree(ids);
	return choice;
}

/* An index from a row id to its position in an array. */
typedef struct MatchIdEntry
{
	int64 id;
	int	  idx;
} MatchIdEntry;

/*
 * The therapists of org_id with a free place (open places minus pending
 * contacts, in ts[i].capacity), by latitude, with their phone hours.
 * 54000 when there are more than MATCH_MAX_THERAPISTS.
 */
static MatchTherapist *
MatchLoadFreeTherapists(int64 org_id, int *nt)
{
	static SPIPlanPtr plan = NULL;
	MatchTherapist	 *ts;
	Datum			  values[2];
	int				  n,
		i;

	PrmPrepare(&plan,
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
	values[0] = Int64GetDatum(org_id);
	values[1] = Int32GetDatum(MATCH_MAX_THERAPISTS + 1);
	n = PrmExecute(plan, values, NULL, true, 0);
	if (n > MATCH_MAX_THERAPISTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("organization %lld has more than %d therapists with free places",
						(long long) org_id, MATCH_MAX_THERAPISTS)));
	ts = palloc(sizeof(MatchTherapist) * (n + 1));
	for (i = 0; i < n; i++)
	{
		MatchReadTherapist(i, &ts[i]);
		ts[i].capacity = MatchGetInt32(i, 10);
	}
	SPI_freetuptable(SPI_tuptable);
	MatchLoadPhoneHours(org_id, ts, n);
	*nt = n;
	return ts;
}

/* Attach their stated times to the open requests rs of org_id. */
static void
MatchLoadRequestTimes(int64 org_id, MatchRequest *rs, int nr)
{
	static SPIPlanPtr plan = NULL;
	HASHCTL			  ctl;
	HTAB			 *rindex;
	Datum			  values[1];
	int				  n,
		i;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(MatchIdEntry);
	ctl.hcxt = CurrentMemoryContext;
	rindex = hash_create("prm request index", Max(nr, 16), &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (i = 0; i < nr; i++)
	{
		MatchIdEntry *e = hash_search(rindex, &rs[i].id, HASH_ENTER, NULL);

		e->idx = i;
	}

	PrmPrepare(&plan,
			   "SELECT x.request_id, x.day_of_week,"
			   "       (pg_catalog.date_part('epoch', x.starts) / 60)::int,"
			   "       (pg_catalog.date_part('epoch', x.ends) / 60)::int"
			   "  FROM prm.placement_request_time x"
			   "  JOIN prm.placement_request r ON r.org_id = x.org_id AND r.id = x.request_id"
			   " WHERE x.org_id = $1 AND r.status = 'open'"
			   " ORDER BY x.request_id",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	n = PrmExecute(plan, values, NULL, true, 0);
	for (i = 0; i < n;)
	{
		bool		  isnull;
		int64		  rid = PrmGetInt64(i, 1, &isnull);
		MatchIdEntry *e = hash_search(rindex, &rid, HASH_FIND, NULL);
		int			  j,
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
	hash_destroy(rindex);
}

/*
 * The open requests of org_id without a pending contact, in registration
 * order, with their stated times.  54000 when there are more than
 * MATCH_MAX_REQUESTS.
 */
static MatchRequest *
MatchLoadOpenRequests(int64 org_id, int *nr)
{
	static SPIPlanPtr plan = NULL;
	MatchRequest	 *rs;
	Datum			  values[2];
	int				  n,
		i;

	PrmPrepare(&plan,
			   "SELECT " REQUEST_COLUMNS " FROM prm.placement_request r"
			   " WHERE r.org_id = $1 AND r.status = 'open'"
			   "   AND NOT EXISTS (SELECT 1 FROM prm.placement_contact c"
			   "                    WHERE c.org_id = $1 AND c.request_id = r.id"
			   "                      AND c.status IN ('proposed', 'sent'))"
			   " ORDER BY r.registered_at, r.id LIMIT $2",
			   2, (Oid[]){INT8OID, INT4OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int32GetDatum(MATCH_MAX_REQUESTS + 1);
	n = PrmExecute(plan, values, NULL, true, 0);
	if (n > MATCH_MAX_REQUESTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("organization %lld has more than %d open placement requests to assign",
						(long long) org_id, MATCH_MAX_REQUESTS)));
	rs = palloc(sizeof(MatchRequest) * (n + 1));
	for (i = 0; i < n; i++)
		MatchReadRequest(i, &rs[i]);
	SPI_freetuptable(SPI_tuptable);
	MatchLoadRequestTimes(org_id, rs, n);
	*nr = n;
	return rs;
}

/*
 * The (request id, therapist id) pairs of org_id's open requests that were
 * contacted already: they are never proposed again.
 */
static HTAB *
MatchLoadContactedPairs(int64 org_id)
{
	static SPIPlanPtr plan = NULL;
	HASHCTL			  ctl;
	HTAB			 *excluded;
	Datum			  values[1];
	int				  n,
		i;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 2 * sizeof(int64);
	ctl.entrysize = 2 * sizeof(int64);
	ctl.hcxt = CurrentMemoryContext;
	excluded = hash_create("prm contacted pairs", 1024, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	PrmPrepare(&plan,
			   "SELECT c.request_id, c.therapist_id FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   " WHERE c.org_id = $1 AND r.status = 'open'",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	n = PrmExecute(plan, values, NULL, true, 0);
	for (i = 0; i < n; i++)
	{
		bool  isnull;
		int64 key[2];

		key[0] = PrmGetInt64(i, 1, &isnull);
		key[1] = PrmGetInt64(i, 2, &isnull);
		hash_search(excluded, key, HASH_ENTER, NULL);
	}
	SPI_freetuptable(SPI_tuptable);
	return excluded;
}

/*
 * Return the chosen pairs as rows of rsinfo and, with persist, record them
 * as proposed placement contacts; returns the number recorded.
 */
static int
MatchEmitProposals(ReturnSetInfo *rsinfo, int64 org_id, const MatchRequest *rs,
				   int nr, const MatchTherapist *ts, const MatchPair *pairs,
				   const int *choice, bool persist)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[4];
	int				  proposed = 0;
	int				  i;

	PrmPrepare(&plan,
			   "INSERT INTO prm.placement_contact (org_id, request_id, therapist_id, score)"
			   " VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, request_id, therapist_id) DO NOTHING",
			   4, (Oid[]){INT8OID, INT8OID, INT8OID, FLOAT8OID});
	values[0] = Int64GetDatum(org_id);
	for (i = 0; i < nr; i++)
	{
		Datum			 out[3];
		bool			 outnulls[3] = {false, false, false};
		const MatchPair *p;

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
			proposed += PrmExecute(plan, values, NULL, false, 0);
		}
	}
	return proposed;
}

/*
 * prm.assign_placements(org_id, method, persist)
 *	  RETURNS TABLE (request_id, therapist_id, score)
 */
Datum
prm_assign_placements(PG_FUNCTION_ARGS)
{
	ReturnSetInfo  *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64			org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char		   *method = PrmTextArg(fcinfo, 1, "method", 20);
	bool			persist = PRM_GETARG_BOOL_NOTNULL(2, "persist");
	bool			exact;
	MatchTherapist *ts;
	MatchRequest   *rs;
	MatchPair	   *pairs;
	HTAB		   *excluded;
	int			   *choice;
	int				nt,
		nr,
		npairs,
		proposed;

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

	/* persisting planners of one organization take turns */
	if (persist)
		PrmLockOrgMutex(org_id, "placements");

	ts = MatchLoadFreeTherapists(org_id, &nt);
	rs = MatchLoadOpenRequests(org_id, &nr);
	excluded = MatchLoadContactedPairs(org_id);
	pairs = MatchCandidatePairs(rs, nr, ts, nt, excluded, &npairs);
	choice = MatchChoose(pairs, npairs, nr, ts, nt, exact);
	proposed = MatchEmitProposals(rsinfo, org_id, rs, nr, ts, pairs, choice, persist);
	if (persist)
		PrmEmitEvent(org_id, "placements_proposed", "organization", org_id,
					 psprintf("{\"method\": \"%s\", \"proposed\": %d, \"open_requests\": %d}",
							  exact ? "exact" : "greedy", proposed, nr));
	PrmSpiFinish();
	return (Datum) 0;
}
