/*-------------------------------------------------------------------------
 *
 * monitor_time.c
 *	  Local time for companion monitoring: "HH:MM" times of day, and the
 *	  instants of local times by DESIGN.md's daylight-saving rules.
 *
 * PostgreSQL reads a local time in a spring-forward gap with the offset
 * before the gap (02:30 in New York on the day clocks go to 03:00 becomes
 * 03:30 EDT), and a time of the repeated autumn hour as its later
 * occurrence.  prm's rules differ on both: a time in a gap is the first
 * valid minute after it (03:00), and a time of a repeated hour is its first
 * occurrence.  MonLocalToUtc applies them by checking PostgreSQL's answer:
 * if it does not show the asked local time, walk forward a minute at a time
 * to the first that does; if it does, try the same local time half an hour,
 * an hour and two hours earlier and take the earliest that shows it too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "monitor.h"

PG_FUNCTION_INFO_V1(prm_local_to_utc);

/* Parse "HH:MM" (00:00 .. 23:59) into *out; false if malformed. */
bool
MonParseClock(const char *s, TimeADT *out)
{
	int h,
		m;

	if (strlen(s) != 5 || !isdigit((unsigned char) s[0]) || !isdigit((unsigned char) s[1]) ||
		s[2] != ':' || !isdigit((unsigned char) s[3]) || !isdigit((unsigned char) s[4]))
		return false;
	h = (s[0] - '0') * 10 + (s[1] - '0');
	m = (s[3] - '0') * 10 + (s[4] - '0');
	if (h > 23 || m > 59)
		return false;
	*out = ((int64) h * 60 + m) * 60 * USECS_PER_SEC;
	return true;
}

/* "HH:MM" of t. */
char *
MonClockText(TimeADT t)
{
	int64 mins = t / (60 * USECS_PER_SEC);

	return psprintf("%02d:%02d", (int) (mins / 60), (int) (mins % 60));
}

/* The local time of instant t in zone tz. */
Timestamp
MonUtcToLocal(const char *tz, TimestampTz t)
{
	return DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone,
												 CStringGetTextDatum(tz),
												 TimestampTzGetDatum(t)));
}

/* PostgreSQL's reading of local time local in zone tz. */
static TimestampTz
MonPgLocalToUtc(const char *tz, Timestamp local)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone,
												   CStringGetTextDatum(tz),
												   TimestampGetDatum(local)));
}

/*
 * The instant of local time local in zone tz, by DESIGN.md's rules: in a
 * gap, the first valid minute after it; in a repeated hour, the first
 * occurrence.  (PostgreSQL reads a gap time with the offset before the
 * gap, and a repeated time as the later occurrence.)
 */
TimestampTz
MonLocalToUtc(const char *tz, Timestamp local)
{
	TimestampTz		   t = MonPgLocalToUtc(tz, local);
	static const int64 back[] = {USECS_PER_HOUR / 2, USECS_PER_HOUR, 2 * USECS_PER_HOUR};
	int				   i;

	if (MonUtcToLocal(tz, t) != local)
	{
		/* a gap: walk forward a minute at a time to the first valid one */
		Timestamp minute = local - local % (60 * USECS_PER_SEC);

		for (i = 1; i <= 24 * 60; i++)
		{
			Timestamp	c = minute + (int64) i * 60 * USECS_PER_SEC;
			TimestampTz ct = MonPgLocalToUtc(tz, c);

			if (MonUtcToLocal(tz, ct) == c)
				return ct;
		}
		return t;
	}
	/* a repeated hour: the earliest instant that shows this local time */
	for (i = lengthof(back) - 1; i >= 0; i--)
		if (MonUtcToLocal(tz, t - back[i]) == local)
			return t - back[i];
	return t;
}

/* The first instant after after when it is tod in zone tz. */
TimestampTz
MonNextLocalTime(const char *tz, TimeADT tod, TimestampTz after)
{
	Timestamp	local = MonUtcToLocal(tz, after);
	int64		into = local % USECS_PER_DAY;
	Timestamp	midnight;
	TimestampTz t;
	int			d;

	if (into < 0)
		into += USECS_PER_DAY;
	midnight = local - into;
	for (d = 0; d < 3; d++)
	{
		t = MonLocalToUtc(tz, midnight + (int64) d * USECS_PER_DAY + tod);
		if (t > after)
			return t;
	}
	return t;
}

/*
 * prm.local_to_utc(local timestamp, timezone text) RETURNS timestamptz
 *	  The instant of a local time by prm's daylight-saving rules.
 */
Datum
prm_local_to_utc(PG_FUNCTION_ARGS)
{
	Timestamp local;
	char	 *tz;

	PrmArgNotNull(fcinfo, 0, "local");
	local = PG_GETARG_TIMESTAMP(0);
	tz = PrmValidateTimezone(PrmTextArg(fcinfo, 1, "timezone", 64));
	PrmCheckFiniteTimestamp(local, "local");
	PG_RETURN_TIMESTAMPTZ(MonLocalToUtc(tz, local));
}
