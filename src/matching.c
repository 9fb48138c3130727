/*-------------------------------------------------------------------------
 *
 * matching.c
 *	  Psychotherapy placement (section 13(3) SGB V), the profiles: therapist
 *	  profiles, their phone hours and placement requests (the write API),
 *	  the fixed vocabularies, and the readers that turn these rows into the
 *	  structs of matching.h.
 *
 * The rooms of matching:
 *	matching.c			profiles: therapists, phone hours, requests
 *	matching_rank.c		distances, scores and their reasons; ranking one
 *						request (rank_therapists) and all open ones at
 *						once (assign_placements: candidates, proposals)
 *	matching_solver.c	the assignment itself (min-cost max-flow), pure C
 *	matching_contact.c	contact e-mails, answers, follow-up calls, evidence
 *
 * Invariants: an argument is checked completely before anything is stored
 * (bad input raises 22023 or 22004 and stores nothing); vocabulary words are
 * stored in vocabulary order; weekly windows are stored as ISO day and
 * wall-clock times in the owner's time zone and read as minutes since Monday
 * 00:00 (MatchWindow), and MatchNextWindow finds the next window from a
 * time day by day in local time, so daylight-saving changes move a call's
 * UTC time and not its local time; a registration time other than now is an
 * administrator's decision, because patients are served in order of
 * registration.
 *
 * Locking: a write to a therapist or a request first locks its row
 * (MatchRequireRow with for_update), so writers of one profile take turns.
 * Every row lock of matching is FOR NO KEY UPDATE, as in the fill engine:
 * no key of these rows ever changes, and FOR UPDATE would make the
 * foreign-key checks of concurrent inserts (a proposal's placement_contact
 * takes FOR KEY SHARE on its therapist and request) wait, and deadlock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "matching.h"

PG_FUNCTION_INFO_V1(prm_add_therapist);
PG_FUNCTION_INFO_V1(prm_update_therapist);
PG_FUNCTION_INFO_V1(prm_set_phone_hours);
PG_FUNCTION_INFO_V1(prm_add_placement_request);
PG_FUNCTION_INFO_V1(prm_withdraw_placement_request);

#define MATCH_MAX_DISTANCE 1000.0
#define MATCH_MAX_WINDOWS 50

/* Fixed vocabularies: therapy types and ISO 639-1 languages (at most 64). */
const char *const match_therapy_types[] = {
	"cbt", "psychodynamic", "analytic", "systemic", "humanistic"};

const char *const match_language_codes[] = {
	"am", "ar", "bg", "bn", "bs", "cs", "da", "de", "el", "en", "es", "et",
	"fa", "fi", "fr", "he", "hi", "hr", "hu", "hy", "it", "ja", "ka", "ko",
	"ku", "lt", "lv", "mk", "nl", "no", "pl", "ps", "pt", "ro", "ru", "sk",
	"sl", "so", "sq", "sr", "sv", "ta", "ti", "tr", "uk", "ur", "vi", "zh"};

const char *const match_genders[] = {"female", "male", "diverse"};

static int	  MatchVocabIndex(const char *const *vocab, int n, const char *value);
static uint64 MatchVocabMask(ArrayType *arr, const char *const *vocab, int n,
							 const char *what, bool strict);
static int	  MatchParseWindows(Jsonb *json, const char *what, int **days,
								int **starts, int **ends);

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
int
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
Datum
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
double
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

/*
 * Raise P0002 unless table has row (org_id, id); optionally lock it FOR NO
 * KEY UPDATE (which foreign-key checks of other transactions do not wait for).
 */
void
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
						tables[k], for_update ? " FOR NO KEY UPDATE" : ""),
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
 * Loading profiles
 * ---------------------------------------------------------------------
 */

/* Column col (1-based) of an int4 result column; NULL reads as 0. */
int
MatchGetInt32(int row, int col)
{
	bool  isnull;
	Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
							col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

/* Fill t from row of the current SPI result (THERAPIST_COLUMNS first). */
void
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
							  match_language_codes, lengthof(match_language_codes), "languages", false);
	t->types = (uint32) MatchVocabMask(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 5, &isnull)),
									   match_therapy_types, lengthof(match_therapy_types),
									   "therapy types", false);
	gender = SPI_getvalue(tup, desc, 6);
	t->gender = gender ? MatchVocabIndex(match_genders, lengthof(match_genders), gender) + 1 : 0;
	t->open_places = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
	t->capacity = t->open_places;
	t->contacts = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	t->answers = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
}

/* Fill r from row of the current SPI result (REQUEST_COLUMNS first). */
void
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
							  match_language_codes, lengthof(match_language_codes), "languages", false);
	r->type = MatchVocabIndex(match_therapy_types, lengthof(match_therapy_types), SPI_getvalue(tup, desc, 6));
	pref = SPI_getvalue(tup, desc, 7);
	r->gender_pref = pref ? MatchVocabIndex(match_genders, lengthof(match_genders), pref) + 1 : 0;
}

/* Load one request with its stated times; P0002 when it is not there. */
void
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
void
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
bool
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
	langs = MatchVocabMask(PG_GETARG_ARRAYTYPE_P(5), match_language_codes,
						   lengthof(match_language_codes), "languages", true);
	PrmArgNotNull(fcinfo, 6, "therapy_types");
	types = MatchVocabMask(PG_GETARG_ARRAYTYPE_P(6), match_therapy_types,
						   lengthof(match_therapy_types), "therapy types", true);
	places = PRM_GETARG_INT32_NOTNULL(7, "open_places");
	if (places < 0 || places > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("open places %d is out of range", places),
				 errdetail("Open places must be between 0 and 1000.")));
	gender = MatchOptionalWord(fcinfo, 8, match_genders, lengthof(match_genders), "gender");
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
	values[5] = MatchMaskArray(langs, match_language_codes, lengthof(match_language_codes));
	values[6] = MatchMaskArray(types, match_therapy_types, lengthof(match_therapy_types));
	values[7] = Int32GetDatum(places);
	if (gender)
		values[8] = CStringGetTextDatum(match_genders[gender - 1]);
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
	langs = MatchVocabMask(PG_GETARG_ARRAYTYPE_P(5), match_language_codes,
						   lengthof(match_language_codes), "languages", true);
	type = MatchOneOf(match_therapy_types, lengthof(match_therapy_types),
					  PrmTextArg(fcinfo, 6, "therapy type", 40), "therapy type");
	pref = MatchOptionalWord(fcinfo, 7, match_genders, lengthof(match_genders), "gender preference");
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
	values[5] = MatchMaskArray(langs, match_language_codes, lengthof(match_language_codes));
	values[6] = CStringGetTextDatum(match_therapy_types[type]);
	if (pref)
		values[7] = CStringGetTextDatum(match_genders[pref - 1]);
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
						  (long long) patient_id, match_therapy_types[type], max_km));
	PrmSpiFinish();
	PG_RETURN_INT64(id);
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
