/*-------------------------------------------------------------------------
 *
 * ticket_sla.c
 *	  Business hours, holidays, SLA policies and the SLA clocks of tickets,
 *	  and the deadline step that raises breaches and closes solved tickets.
 *
 * Business time.  An organization's week is a set of local intervals per
 * weekday (prm.business_hours; no row: around the clock) minus its holidays
 * (prm.holiday, local dates), in its time zone.  Adding business time walks
 * the local days from the start: each interval's local ends are turned into
 * instants with the time zone of that very day (timestamp_zone), so a day
 * that loses or gains an hour to daylight saving counts its real length,
 * and a bound end inside a skipped hour moves forward to the first valid
 * instant.  The walk stops after BIZ_MAX_DAYS days (an organization closed
 * for two years, say, by holidays): 54000 rather than an endless loop.
 * Measuring business time between two instants walks the same days, so
 * prm.business_time_between refuses a span of more than BIZ_MAX_DAYS - 2
 * days (54000) rather than count it short.
 * "No stop" is BIZ_NO_STOP (infinity, which no finite input equals), never
 * 0: 0 is the instant 2000-01-01 00:00 UTC.
 *
 * Clocks.  A ticket has two clocks, first reply and resolution, each with a
 * target from its priority's prm.sla_policy.  A running clock is a due time
 * (first_reply_due_at, resolution_due_at); a paused one (pending, on_hold,
 * solved) is the business time left (first_reply_left, resolution_left),
 * turned back into a due time from now when the ticket is open again.  A
 * clock that was met (first_replied_at) or breached no longer drives the
 * deadline.  sla_next_due_at, a generated column, is the earliest running
 * due time or a solved ticket's auto-close: the worker's deadline.  The
 * ticket row is locked by the caller for every clock change.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "datatype/timestamp.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"

#include "ticket.h"

PG_FUNCTION_INFO_V1(prm_set_sla_policy);
PG_FUNCTION_INFO_V1(prm_set_business_hours);
PG_FUNCTION_INFO_V1(prm_add_holiday);
PG_FUNCTION_INFO_V1(prm_add_business_time);
PG_FUNCTION_INFO_V1(prm_business_time_between);

#define BIZ_MAX_RANGES 8
#define BIZ_MAX_DAYS 800
#define BIZ_MAX_HOLIDAYS 2000
#define BIZ_NO_STOP DT_NOEND /* the walk adds business time instead */

typedef struct BizRange
{
	int64 start; /* usecs after local midnight */
	int64 end;
} BizRange;

typedef struct BizCalendar
{
	bool	 always_open; /* no business hours: around the clock */
	int		 nranges[7];  /* per weekday, 0 = Sunday */
	BizRange ranges[7][BIZ_MAX_RANGES];
	DateADT *holidays; /* sorted */
	int		 nholidays;
	Datum	 tz; /* text */
} BizCalendar;

static const char *const biz_days[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static void		   BizParseHours(Datum hours, BizCalendar *cal);
static void		   BizLoad(int64 org_id, TimestampTz from, BizCalendar *cal);
static TimestampTz BizWalk(const BizCalendar *cal, TimestampTz start,
						   int64 target, TimestampTz stop, int64 *consumed);
static int64	   BizParseTime(const char *s, const char *day, bool is_end);

/* "HH:MM" as usecs after midnight ("24:00" only as an end); 22023 otherwise. */
static int64
BizParseTime(const char *s, const char *day, bool is_end)
{
	int h,
		m;

	if (s == NULL || strlen(s) != 5 || !isdigit((unsigned char) s[0]) ||
		!isdigit((unsigned char) s[1]) || s[2] != ':' ||
		!isdigit((unsigned char) s[3]) || !isdigit((unsigned char) s[4]))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("business hours of \"%s\": \"%s\" is not a time", day, s ? s : "null"),
				 errdetail("Times are strings \"HH:MM\", from \"00:00\" to \"24:00\".")));
	h = (s[0] - '0') * 10 + (s[1] - '0');
	m = (s[3] - '0') * 10 + (s[4] - '0');
	if (m > 59 || h > 24 || (h == 24 && (m != 0 || !is_end)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("business hours of \"%s\": \"%s\" is out of range", day, s),
				 errdetail("Times are from \"00:00\" to \"23:59\"; \"24:00\" may end a range.")));
	return (int64) h * USECS_PER_HOUR + (int64) m * USECS_PER_MINUTE;
}

/*
 * Parse and validate weekly hours {"mon": [["09:00", "17:00"], ...], ...}
 * into cal: known day keys only, each an array of [start, end] pairs in
 * increasing, non-overlapping order, at least one range in the week.
 */
static void
BizParseHours(Datum hours, BizCalendar *cal)
{
	static SPIPlanPtr plan = NULL;
	int				  n,
		i,
		total = 0;

	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_typeof($1), d.key, pg_catalog.jsonb_typeof(d.value),"
			   "       pg_catalog.jsonb_typeof(r.v),"
			   "       CASE WHEN pg_catalog.jsonb_typeof(r.v) = 'array' THEN pg_catalog.jsonb_array_length(r.v) END,"
			   "       CASE WHEN pg_catalog.jsonb_typeof(r.v) = 'array' THEN pg_catalog.jsonb_typeof(r.v -> 0) END,"
			   "       CASE WHEN pg_catalog.jsonb_typeof(r.v) = 'array' THEN pg_catalog.jsonb_typeof(r.v -> 1) END,"
			   "       CASE WHEN pg_catalog.jsonb_typeof(r.v) = 'array' THEN r.v ->> 0 END,"
			   "       CASE WHEN pg_catalog.jsonb_typeof(r.v) = 'array' THEN r.v ->> 1 END"
			   "  FROM (SELECT 1) one"
			   "  LEFT JOIN pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof($1) = 'object' THEN $1 END) d ON true"
			   "  LEFT JOIN LATERAL pg_catalog.jsonb_array_elements("
			   "       CASE WHEN pg_catalog.jsonb_typeof(d.value) = 'array' THEN d.value END)"
			   "       WITH ORDINALITY r(v, ord) ON true"
			   " ORDER BY d.key, r.ord",
			   1, (Oid[]){JSONBOID});
	memset(cal->nranges, 0, sizeof(cal->nranges));
	cal->always_open = false;
	n = PrmExecute(plan, &hours, NULL, true, 0);
	for (i = 0; i < n; i++)
	{
		char *type = PrmGetText(i, 1);
		char *day = PrmGetText(i, 2);
		char *dtype = PrmGetText(i, 3);
		char *rtype = PrmGetText(i, 4);
		char *len = PrmGetText(i, 5);
		int	  wd;
		int64 start,
			end;

		if (strcmp(type, "object") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("business hours must be a JSON object, not %s", type),
					 errhint("Example: {\"mon\": [[\"09:00\", \"17:00\"]], \"tue\": [[\"09:00\", \"12:00\"], [\"13:00\", \"17:00\"]]}.")));
		if (day == NULL)
			continue; /* {} */
		for (wd = 0; wd < 7; wd++)
			if (strcmp(day, biz_days[wd]) == 0)
				break;
		if (wd == 7)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown day \"%s\" in business hours", day),
					 errdetail("Days are mon, tue, wed, thu, fri, sat and sun.")));
		if (strcmp(dtype, "array") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("business hours of \"%s\" must be an array of [start, end] pairs", day)));
		if (rtype == NULL)
			continue; /* "sat": [] is closed */
		if (strcmp(rtype, "array") != 0 || strcmp(len, "2") != 0 ||
			strcmp(PrmGetText(i, 6), "string") != 0 || strcmp(PrmGetText(i, 7), "string") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("business hours of \"%s\" must be an array of [start, end] pairs", day),
					 errdetail("Each range is two strings, as [\"09:00\", \"17:00\"].")));
		start = BizParseTime(PrmGetText(i, 8), day, false);
		end = BizParseTime(PrmGetText(i, 9), day, true);
		if (start >= end)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("business hours of \"%s\": a range must end after it starts", day)));
		if (cal->nranges[wd] > 0 && cal->ranges[wd][cal->nranges[wd] - 1].end > start)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("business hours of \"%s\": ranges must be in order and must not overlap", day)));
		if (cal->nranges[wd] == BIZ_MAX_RANGES)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("business hours of \"%s\" have more than %d ranges", day, BIZ_MAX_RANGES)));
		cal->ranges[wd][cal->nranges[wd]].start = start;
		cal->ranges[wd][cal->nranges[wd]].end = end;
		cal->nranges[wd]++;
		total++;
	}
	if (total == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("business hours must have at least one range"),
				 errhint("To count around the clock, pass NULL.")));
}

/* The business calendar of an organization, with its holidays from "from" on. */
static void
BizLoad(int64 org_id, TimestampTz from, BizCalendar *cal)
{
	static SPIPlanPtr org_plan = NULL;
	static SPIPlanPtr holiday_plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	Datum			  hours;
	int				  n,
		i;

	PrmPrepare(&org_plan,
			   "SELECT o.timezone, h.hours FROM prm.organization o"
			   "  LEFT JOIN prm.business_hours h ON h.org_id = o.id WHERE o.id = $1",
			   1, (Oid[]){INT8OID});
	PrmPrepare(&holiday_plan,
			   "SELECT h.day FROM prm.holiday h"
			   " WHERE h.org_id = $1 AND h.day >= ($2 AT TIME ZONE 'UTC')::date - 1"
			   " ORDER BY h.day LIMIT " CppAsString2(BIZ_MAX_HOLIDAYS),
			   2, (Oid[]){INT8OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	if (PrmExecute(org_plan, values, NULL, true, 1) != 1)
		elog(ERROR, "organization %lld vanished", (long long) org_id);
	cal->tz = CStringGetTextDatum(PrmGetText(0, 1));
	hours = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	cal->nholidays = 0;
	cal->holidays = NULL;
	if (isnull)
	{
		cal->always_open = true;
		return;
	}
	hours = PointerGetDatum(PG_DETOAST_DATUM_COPY(hours));
	BizParseHours(hours, cal);
	values[1] = TimestampTzGetDatum(from);
	n = PrmExecute(holiday_plan, values, NULL, true, 0);
	cal->holidays = palloc(sizeof(DateADT) * Max(n, 1));
	for (i = 0; i < n; i++)
		cal->holidays[i] = DatumGetDateADT(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1, &isnull));
	cal->nholidays = n;
}

/* Is local date d a holiday? */
static bool
BizIsHoliday(const BizCalendar *cal, DateADT d)
{
	int lo = 0,
		hi = cal->nholidays - 1;

	while (lo <= hi)
	{
		int mid = (lo + hi) / 2;

		if (cal->holidays[mid] == d)
			return true;
		if (cal->holidays[mid] < d)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}

/* The instant of local time usecs after local midnight of date d. */
static TimestampTz
BizInstant(const BizCalendar *cal, DateADT d, int64 usecs)
{
	Timestamp local = (Timestamp) d * USECS_PER_DAY + usecs;

	return DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, cal->tz,
												   TimestampGetDatum(local)));
}

/*
 * Walk business time from start: returns the instant at which target usecs
 * of it have passed (target < 0: never), or 0 when stop (0: none) comes
 * first; *consumed is the business time walked.
 */
static TimestampTz
BizWalk(const BizCalendar *cal, TimestampTz start, int64 target,
		TimestampTz stop, int64 *consumed)
{
	Timestamp local;
	DateADT	  d;
	int		  day;

	*consumed = 0;
	if (cal->always_open)
	{
		if (stop != BIZ_NO_STOP && (target < 0 || start + target > stop))
		{
			*consumed = Max(stop - start, 0);
			return 0;
		}
		*consumed = target;
		return PrmTimestampPlusUsecs(start, target);
	}
	local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone, cal->tz,
												  TimestampTzGetDatum(start)));
	d = (DateADT) (local / USECS_PER_DAY - (local < 0 && local % USECS_PER_DAY != 0));
	for (day = 0; day < BIZ_MAX_DAYS; day++, d++)
	{
		int wd = j2day(d + POSTGRES_EPOCH_JDATE);
		int r;

		if (cal->nranges[wd] == 0 || BizIsHoliday(cal, d))
			continue;
		for (r = 0; r < cal->nranges[wd]; r++)
		{
			TimestampTz lo = Max(BizInstant(cal, d, cal->ranges[wd][r].start), start);
			TimestampTz hi = BizInstant(cal, d, cal->ranges[wd][r].end);

			if (stop != BIZ_NO_STOP && lo >= stop)
				return 0;
			if (stop != BIZ_NO_STOP && hi > stop)
				hi = stop;
			if (hi <= lo)
				continue;
			if (target >= 0 && *consumed + (hi - lo) >= target)
			{
				TimestampTz at = lo + (target - *consumed);

				*consumed = target;
				return at;
			}
			*consumed += hi - lo;
		}
	}
	if (stop != BIZ_NO_STOP)
		return 0;
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("an SLA target ends more than %d days after its start", BIZ_MAX_DAYS),
			 errdetail("The organization's business hours and holidays leave too little business time."),
			 errhint("Check prm.business_hours and prm.holiday, or shorten the targets.")));
	return 0; /* keep compiler quiet */
}

/* start plus usecs of business time of the organization. */
static TimestampTz
BizAdd(int64 org_id, TimestampTz start, int64 usecs)
{
	BizCalendar cal;
	int64		consumed;

	BizLoad(org_id, start, &cal);
	return BizWalk(&cal, start, usecs, BIZ_NO_STOP, &consumed);
}

/* The business time of the organization in [from, to). */
static int64
BizBetween(int64 org_id, TimestampTz from, TimestampTz to)
{
	BizCalendar cal;
	int64		consumed;

	if (to <= from)
		return 0;
	BizLoad(org_id, from, &cal);
	(void) BizWalk(&cal, from, -1, to, &consumed);
	return consumed;
}

static Datum
UsecsInterval(int64 usecs)
{
	Interval *iv = palloc0(sizeof(Interval));

	iv->time = usecs;
	return IntervalPGetDatum(iv);
}

/*
 * Start a ticket's clocks now from its priority's targets (a new ticket, a
 * priority change): running, or, when paused, as the time left.  A first
 * reply already given keeps its clock stopped; breaches are forgotten.
 */
void
TicketSlaStart(int64 org_id, int64 ticket_id, bool paused)
{
	static SPIPlanPtr policy_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	Datum			  values[6];
	char			  nulls[6] = {' ', ' ', 'n', 'n', 'n', 'n'};
	TimestampTz		  now = GetCurrentTransactionStartTimestamp();
	int				  k;

	PrmPrepare(&policy_plan,
			   "SELECT p.first_reply, p.resolution, t.first_replied_at IS NOT NULL"
			   "  FROM prm.ticket t JOIN prm.sla_policy p ON p.org_id = t.org_id AND p.priority = t.priority"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmPrepare(&update_plan,
			   "UPDATE prm.ticket t SET first_reply_due_at = $3, resolution_due_at = $4,"
			   "  first_reply_left = $5, resolution_left = $6,"
			   "  first_reply_breached_at = NULL, resolution_breached_at = NULL"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   6, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INTERVALOID, INTERVALOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	if (PrmExecute(policy_plan, values, NULL, false, 1) == 1)
	{
		HeapTuple tup = SPI_copytuple(SPI_tuptable->vals[0]);
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool	  isnull;
		bool	  replied = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));

		for (k = 0; k < 2; k++)
		{
			Datum target = SPI_getbinval(tup, desc, k + 1, &isnull);
			int64 usecs;

			if (isnull || (k == 0 && replied))
				continue;
			usecs = PrmIntervalUsecs(DatumGetIntervalP(target));
			if (paused)
			{
				values[4 + k] = UsecsInterval(usecs);
				nulls[4 + k] = ' ';
			}
			else
			{
				values[2 + k] = TimestampTzGetDatum(BizAdd(org_id, now, usecs));
				nulls[2 + k] = ' ';
			}
		}
	}
	PrmExecute(update_plan, values, nulls, false, 0);
	TicketWakeFor(org_id, ticket_id);
}

/*
 * Pause the running clocks (the ticket leaves new/open): keep the business
 * time left until each due time.  Met or breached clocks stay as they are.
 */
void
TicketSlaPause(int64 org_id, int64 ticket_id)
{
	static SPIPlanPtr read_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	Datum			  values[4];
	char			  nulls[4] = {' ', ' ', 'n', 'n'};
	TimestampTz		  now = GetCurrentTransactionStartTimestamp();
	TimestampTz		  due[2];
	bool			  has[2];
	int				  k;

	PrmPrepare(&read_plan,
			   "SELECT CASE WHEN t.first_replied_at IS NULL AND t.first_reply_breached_at IS NULL THEN t.first_reply_due_at END,"
			   "       CASE WHEN t.resolution_breached_at IS NULL THEN t.resolution_due_at END"
			   "  FROM prm.ticket t WHERE t.org_id = $1 AND t.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmPrepare(&update_plan,
			   "UPDATE prm.ticket t SET"
			   "  first_reply_left = $3, first_reply_due_at = CASE WHEN $3 IS NULL THEN t.first_reply_due_at END,"
			   "  resolution_left = $4, resolution_due_at = CASE WHEN $4 IS NULL THEN t.resolution_due_at END"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, INTERVALOID, INTERVALOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	if (PrmExecute(read_plan, values, NULL, false, 1) != 1)
		return;
	for (k = 0; k < 2; k++)
	{
		bool isnull;

		due[k] = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, k + 1, &isnull));
		has[k] = !isnull;
	}
	for (k = 0; k < 2; k++)
		if (has[k])
		{
			values[2 + k] = UsecsInterval(BizBetween(org_id, now, due[k]));
			nulls[2 + k] = ' ';
		}
	if (has[0] || has[1])
		PrmExecute(update_plan, values, nulls, false, 0);
}

/* Resume paused clocks (back to open): due = now + the business time left. */
void
TicketSlaResume(int64 org_id, int64 ticket_id)
{
	static SPIPlanPtr read_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	Datum			  values[4];
	char			  nulls[4] = {' ', ' ', 'n', 'n'};
	TimestampTz		  now = GetCurrentTransactionStartTimestamp();
	int64			  left[2];
	bool			  has[2];
	int				  k;

	PrmPrepare(&read_plan,
			   "SELECT t.first_reply_left, t.resolution_left FROM prm.ticket t"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmPrepare(&update_plan,
			   "UPDATE prm.ticket t SET"
			   "  first_reply_due_at = COALESCE($3, t.first_reply_due_at), first_reply_left = NULL,"
			   "  resolution_due_at = COALESCE($4, t.resolution_due_at), resolution_left = NULL"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	if (PrmExecute(read_plan, values, NULL, false, 1) != 1)
		return;
	for (k = 0; k < 2; k++)
	{
		bool  isnull;
		Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, k + 1, &isnull);

		has[k] = !isnull;
		left[k] = isnull ? 0 : PrmIntervalUsecs(DatumGetIntervalP(d));
	}
	for (k = 0; k < 2; k++)
		if (has[k])
		{
			values[2 + k] = TimestampTzGetDatum(BizAdd(org_id, now, left[k]));
			nulls[2 + k] = ' ';
		}
	if (has[0] || has[1])
	{
		PrmExecute(update_plan, values, nulls, false, 0);
		TicketWakeFor(org_id, ticket_id);
	}
}

/* Tell the worker of the ticket's deadline (at commit, if it is nearer). */
void
TicketWakeFor(int64 org_id, int64 ticket_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	Datum			  d;

	PrmPrepare(&plan,
			   "SELECT t.sla_next_due_at FROM prm.ticket t WHERE t.org_id = $1 AND t.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	if (PrmExecute(plan, values, NULL, false, 1) != 1)
		return;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		PrmWakeWorker(DatumGetTimestampTz(d));
}

/*
 * The deadline step: tickets whose sla_next_due_at has come (at most
 * limit, those locked by others skipped).  A running clock past its due
 * time is breached (once: its breached_at is set), a solved ticket past its
 * auto-close is closed.  Returns the tickets handled.
 */
int64
PrmTicketDueStep(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	int				  n,
		i;

	PrmPrepare(&plan,
			   "WITH due AS ("
			   "  SELECT t.org_id, t.id,"
			   "    (t.status IN ('new', 'open') AND t.first_replied_at IS NULL AND t.first_reply_breached_at IS NULL"
			   "     AND t.first_reply_due_at <= pg_catalog.now()) AS fr,"
			   "    (t.status IN ('new', 'open') AND t.resolution_breached_at IS NULL"
			   "     AND t.resolution_due_at <= pg_catalog.now()) AS res,"
			   "    (t.status = 'solved' AND t.autoclose_at <= pg_catalog.now()) AS cl"
			   "    FROM prm.ticket t WHERE t.sla_next_due_at <= pg_catalog.now()"
			   "   ORDER BY t.sla_next_due_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED)"
			   " UPDATE prm.ticket t SET"
			   "   first_reply_breached_at = CASE WHEN d.fr THEN pg_catalog.now() ELSE t.first_reply_breached_at END,"
			   "   resolution_breached_at = CASE WHEN d.res THEN pg_catalog.now() ELSE t.resolution_breached_at END,"
			   "   status = CASE WHEN d.cl THEN 'closed' ELSE t.status END,"
			   "   closed_at = CASE WHEN d.cl THEN pg_catalog.now() ELSE t.closed_at END,"
			   "   autoclose_at = CASE WHEN d.cl THEN NULL ELSE t.autoclose_at END,"
			   "   updated_at = pg_catalog.now()"
			   "  FROM due d WHERE t.org_id = d.org_id AND t.id = d.id"
			   " RETURNING t.org_id, t.id, d.fr, d.res, d.cl,"
			   "   t.first_reply_due_at::text, t.resolution_due_at::text",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	n = PrmExecute(plan, values, NULL, false, 0);
	if (n > 0)
	{
		SPITupleTable *tuptable = SPI_tuptable;

		for (i = 0; i < n; i++)
		{
			HeapTuple tup = tuptable->vals[i];
			TupleDesc desc = tuptable->tupdesc;
			bool	  isnull;
			int64	  org_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			int64	  id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			int		  k;

			for (k = 0; k < 2; k++)
				if (DatumGetBool(SPI_getbinval(tup, desc, 3 + k, &isnull)))
					PrmEmitEvent(org_id, "ticket_sla_breached", "ticket", id,
								 psprintf("{\"target\": \"%s\", \"due_at\": %s}",
										  k == 0 ? "first_reply" : "resolution",
										  PrmJsonString(SPI_getvalue(tup, desc, 6 + k))));
			if (DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull)))
				PrmEmitEvent(org_id, "ticket_status_changed", "ticket", id,
							 "{\"from\": \"solved\", \"to\": \"closed\", \"reason\": \"auto_close\"}");
		}
		PrmNotifyOnce("prm_ticket");
	}
	return n;
}

/* An SLA target: NULL (none) or a positive interval without months. */
static bool
SlaTargetArg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	Interval *iv;

	if (PG_ARGISNULL(argno))
		return false;
	iv = PG_GETARG_INTERVAL_P(argno);
	if (iv->month != 0 || PrmIntervalUsecs(iv) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s target must be a positive interval of days, hours and minutes", name),
				 errdetail("A month has no fixed length in business time.")));
	return true;
}

/*
 * prm.set_sla_policy(org_id, priority, first_reply, resolution) RETURNS void
 *	  For tickets opened (or re-prioritised) from now on.
 */
Datum
prm_set_sla_policy(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *priority = PrmTextArg(fcinfo, 1, "priority", 20);
	Datum			  values[4];
	char			  nulls[4] = {' ', ' ', ' ', ' '};

	PrmCheckTicketPriority(priority);
	if (!SlaTargetArg(fcinfo, 2, "first reply"))
		nulls[2] = 'n';
	if (!SlaTargetArg(fcinfo, 3, "resolution"))
		nulls[3] = 'n';
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmPrepare(&plan,
			   "INSERT INTO prm.sla_policy (org_id, priority, first_reply, resolution)"
			   " VALUES ($1, $2, $3, $4) ON CONFLICT (org_id, priority) DO UPDATE"
			   " SET first_reply = EXCLUDED.first_reply, resolution = EXCLUDED.resolution",
			   4, (Oid[]){INT8OID, TEXTOID, INTERVALOID, INTERVALOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(priority);
	values[2] = nulls[2] == 'n' ? (Datum) 0 : PG_GETARG_DATUM(2);
	values[3] = nulls[3] == 'n' ? (Datum) 0 : PG_GETARG_DATUM(3);
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "sla_policy_set", "organization", org_id,
				 psprintf("{\"priority\": %s}", PrmJsonString(priority)));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.set_business_hours(org_id, hours jsonb) RETURNS void
 *	  NULL: around the clock.  Due times already stored stay as they are.
 */
Datum
prm_set_business_hours(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr set_plan = NULL;
	static SPIPlanPtr clear_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Datum			  values[2];
	BizCalendar		  cal;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmPrepare(&set_plan,
			   "INSERT INTO prm.business_hours (org_id, hours) VALUES ($1, $2)"
			   " ON CONFLICT (org_id) DO UPDATE SET hours = EXCLUDED.hours",
			   2, (Oid[]){INT8OID, JSONBOID});
	PrmPrepare(&clear_plan, "DELETE FROM prm.business_hours h WHERE h.org_id = $1",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	if (PG_ARGISNULL(1))
		PrmExecute(clear_plan, values, NULL, false, 0);
	else
	{
		values[1] = PG_GETARG_DATUM(1);
		BizParseHours(values[1], &cal);
		PrmExecute(set_plan, values, NULL, false, 0);
	}
	PrmEmitEvent(org_id, "business_hours_set", "organization", org_id, "{}");
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* prm.add_holiday(org_id, day date, name text) RETURNS void */
Datum
prm_add_holiday(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *name = PrmTextArgOrNull(fcinfo, 2, "name", PRM_MAX_NAME_LEN);
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};

	PrmArgNotNull(fcinfo, 1, "day");
	if (DATE_NOT_FINITE(PG_GETARG_DATEADT(1)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a holiday must be a finite date")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmPrepare(&plan,
			   "INSERT INTO prm.holiday (org_id, day, name) VALUES ($1, $2, $3)"
			   " ON CONFLICT (org_id, day) DO UPDATE SET name = EXCLUDED.name",
			   3, (Oid[]){INT8OID, DATEOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = PG_GETARG_DATUM(1);
	if (name)
		values[2] = CStringGetTextDatum(name);
	else
		nulls[2] = 'n';
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "holiday_added", "organization", org_id, "{}");
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.add_business_time(org_id, start timestamptz, amount interval)
 *	  RETURNS timestamptz: start plus amount of the organization's business
 *	  time, as SLA due times are computed.
 */
Datum
prm_add_business_time(PG_FUNCTION_ARGS)
{
	int64		org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	TimestampTz start = PRM_GETARG_TIMESTAMPTZ_NOTNULL(1, "start");
	int64		usecs;
	TimestampTz due;

	PrmArgNotNull(fcinfo, 2, "amount");
	PrmCheckFiniteTimestamp(start, "start");
	usecs = PrmIntervalUsecs(PG_GETARG_INTERVAL_P(2));
	if (usecs < 0 || PG_GETARG_INTERVAL_P(2)->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("amount of business time must be a non-negative interval of days, hours and minutes")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	due = BizAdd(org_id, start, usecs);
	PrmSpiFinish();
	PG_RETURN_TIMESTAMPTZ(due);
}

/*
 * prm.business_time_between(org_id, from timestamptz, to timestamptz)
 *	  RETURNS interval: the organization's business time in [from, to).
 */
Datum
prm_business_time_between(PG_FUNCTION_ARGS)
{
	int64		org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	TimestampTz from = PRM_GETARG_TIMESTAMPTZ_NOTNULL(1, "from");
	TimestampTz to = PRM_GETARG_TIMESTAMPTZ_NOTNULL(2, "to");
	int64		usecs;
	int64		span;

	PrmCheckFiniteTimestamp(from, "from");
	PrmCheckFiniteTimestamp(to, "to");
	/*
	 * The walk covers BIZ_MAX_DAYS local days: a longer span would be counted
	 * short.  The widest finite span overflows int64 microseconds.
	 */
	if (to > from && (pg_sub_s64_overflow(to, from, &span) ||
					  span / USECS_PER_DAY > BIZ_MAX_DAYS - 2))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("business time is measured over at most %d days", BIZ_MAX_DAYS - 2),
				 errdetail("The span from \"from\" to \"to\" is longer."),
				 errhint("Measure a longer span in parts and add them up.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	usecs = BizBetween(org_id, from, to);
	PrmSpiFinish();
	PG_RETURN_DATUM(UsecsInterval(usecs));
}
