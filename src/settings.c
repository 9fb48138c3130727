/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  Per-organization settings: the registry of keys, prm.configure() and
 *	  prm.settings(), the typed loader the engine uses (PrmLoadSettings,
 *	  PrmGetSettings), and prm's one interval conversion and checked time
 *	  arithmetic.
 *
 * The registry (setting_defs) is the one source of every setting: its key,
 * type, default, range, extra check and the field of PrmSettings it loads
 * into.  Adding a setting is one registry line plus that field.  An
 * organization stores only its overrides (prm.organization.settings); the
 * effective settings are the registry's defaults merged with them.  Every
 * value is validated and stored in canonical form (intervals as
 * "N days HH:MM:SS", times as HH:MM:SS), so the loader only converts: it
 * reads the merged jsonb once and decodes each key by its type into its
 * field.
 *
 * PrmGetSettings caches one organization's settings for the rest of the
 * transaction.  prm.configure() drops the cache, and so does the abort of
 * any subtransaction (a ROLLBACK TO SAVEPOINT may undo a configure whose
 * values the cache holds).
 *
 * Time arithmetic.  An interval is converted to microseconds in one place,
 * PrmIntervalToUsecs (a month counts 30 days), with overflow checks;
 * timestamps are moved with PrmTimestampPlusUsecs, which refuses infinite
 * inputs and results outside the timestamp range (22008) instead of letting
 * int64 arithmetic wrap.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "lib/stringinfo.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include <math.h>

#include "comms.h"

PG_FUNCTION_INFO_V1(prm_configure);
PG_FUNCTION_INFO_V1(prm_settings);

typedef enum SettingType
{
	SETTING_INT,	  /* int32; min..max */
	SETTING_NUMBER,	  /* double; min..max */
	SETTING_BOOL,	  /* bool */
	SETTING_INTERVAL, /* Interval; min..max seconds */
	SETTING_TIME,	  /* TimeADT */
	SETTING_TEXT	  /* char[]; the check validates it; JSON null allowed */
} SettingType;

typedef struct SettingDef SettingDef;

/* Validates the text str of a SETTING_TEXT (value: its JSON, for errors). */
typedef void (*SettingCheck)(const SettingDef *def, const char *value,
							 const char *str);

struct SettingDef
{
	const char	*name; /* the key, and the name of its field */
	SettingType	 type;
	const char	*default_json; /* JSON text of the default */
	int64		 min;		   /* ints, numbers: bounds; intervals: bounds in seconds */
	int64		 max;
	SettingCheck check;	   /* text: validation (NULL: any text) */
	char *const *fallback; /* text: what a null loads as (NULL: "") */
	size_t		 offset;   /* its field in PrmSettings */
	size_t		 size;
	const char	*description;
};

#define HOUR 3600
#define DAY (24 * HOUR)

/* One registry line: the key is the name of its field in PrmSettings. */
/* clang-format off */
#define SETTING(field, type, dflt, min, max, check, fallback, description) \
	{ #field, type, dflt, min, max, check, fallback, \
	  offsetof(PrmSettings, field), sizeof(((PrmSettings *) 0)->field), description }
/* clang-format on */

static void SettingCheckRegion(const SettingDef *def, const char *value, const char *str);
static void SettingCheckLocale(const SettingDef *def, const char *value, const char *str);
static void SettingCheckUrl(const SettingDef *def, const char *value, const char *str);
static void SettingCheckKeywords(const SettingDef *def, const char *value, const char *str);
static void SettingCheckReminderOffsets(const SettingDef *def, const char *value, const char *str);
static void SettingCheckReminderChannel(const SettingDef *def, const char *value, const char *str);
static void SettingCheckConsentRequired(const SettingDef *def, const char *value, const char *str);

/* what a null reminder_channel loads as */
static char *reminder_channel_fallback = "sms";

static const SettingDef setting_defs[] = {
	SETTING(batch_size, SETTING_INT, "3", 1, 50, NULL, NULL, "patients offered a slot at once"),
	SETTING(offer_hold, SETTING_INTERVAL, "\"00:07:00\"", 1, DAY, NULL, NULL, "how long an offer is held for its patient"),
	SETTING(first_batch_delay, SETTING_INTERVAL, "\"00:00:00\"", 0, HOUR, NULL, NULL, "wait after a cancellation before the first batch (an undone cancellation sends nothing)"),
	SETTING(min_notice, SETTING_INTERVAL, "\"01:00:00\"", 0, 7 * DAY, NULL, NULL, "a slot is offered only if it starts at least this long after the offer's hold ends"),
	SETTING(max_batches, SETTING_INT, "10", 1, 100, NULL, NULL, "cut-off: no more batches for a slot after this many"),
	SETTING(late_accept_window, SETTING_INTERVAL, "\"1 day\"", 0, 30 * DAY, NULL, NULL, "an expired offer can still be accepted (YES or its link) this long after its hold ended, while its patient waits and the slot is free; 0: never"),
	SETTING(recent_offer_window, SETTING_INTERVAL, "\"7 days\"", 0, 90 * DAY, NULL, NULL, "an offer within this window lowers a patient's rank"),
	SETTING(recent_offer_penalty, SETTING_INT, "5", 0, 100, NULL, NULL, "points taken off for an offer within recent_offer_window"),
	SETTING(weight_urgent, SETTING_INT, "30", 0, 100, NULL, NULL, "points for an urgent entry"),
	SETTING(weight_wait, SETTING_INT, "20", 0, 100, NULL, NULL, "points at most for the wait until the current appointment"),
	SETTING(weight_seniority, SETTING_INT, "10", 0, 100, NULL, NULL, "points at most for time on the list"),
	SETTING(wait_full_days, SETTING_INT, "60", 1, 3650, NULL, NULL, "days of waiting that earn the full wait points"),
	SETTING(seniority_full_days, SETTING_INT, "90", 1, 3650, NULL, NULL, "days on the list that earn the full seniority points"),
	SETTING(quiet_hours, SETTING_BOOL, "true", 0, 0, NULL, NULL, "hold patient SMS between quiet_start and quiet_end in the patient's time zone"),
	SETTING(quiet_start, SETTING_TIME, "\"21:00:00\"", 0, 0, NULL, NULL, "start of quiet hours"),
	SETTING(quiet_end, SETTING_TIME, "\"08:00:00\"", 0, 0, NULL, NULL, "end of quiet hours"),
	SETTING(offer_daily_cap, SETTING_INT, "1", 0, 10, NULL, NULL, "offer messages per patient per day"),
	SETTING(offer_weekly_cap, SETTING_INT, "3", 0, 50, NULL, NULL, "offer messages per patient per 7 days"),
	SETTING(max_attempts, SETTING_INT, "5", 1, 20, NULL, NULL, "send attempts before a message is dead"),
	SETTING(retry_base, SETTING_INTERVAL, "\"00:00:30\"", 1, HOUR, NULL, NULL, "first retry delay; doubles with each attempt"),
	SETTING(phone_region, SETTING_TEXT, "null", 0, 0, SettingCheckRegion, &prm_default_region, "region for national phone numbers (null: prm.default_region)"),
	SETTING(locale, SETTING_TEXT, "\"en\"", 0, 0, SettingCheckLocale, NULL, "default language of messages"),
	SETTING(accept_url, SETTING_TEXT, "null", 0, 0, SettingCheckUrl, NULL, "base of one-time accept links in offers; the offer token is appended (null: no link)"),
	SETTING(churn_critical_ratio, SETTING_NUMBER, "3.0", 1, 100, NULL, NULL, "churn risk is critical past this many of the patient's own visit intervals without a visit"),
	SETTING(churn_high_ratio, SETTING_NUMBER, "2.0", 1, 100, NULL, NULL, "churn risk is high past this many visit intervals"),
	SETTING(churn_medium_ratio, SETTING_NUMBER, "1.25", 1, 100, NULL, NULL, "churn risk is medium past this many visit intervals"),
	SETTING(default_visit_interval_days, SETTING_NUMBER, "180", 7, 3650, NULL, NULL, "visit interval assumed for patients with too few visits"),
	SETTING(engagement_full_visits, SETTING_NUMBER, "6", 1, 1000, NULL, NULL, "visits that earn the full frequency part of the engagement score"),
	SETTING(engagement_high_score, SETTING_NUMBER, "70", 0, 100, NULL, NULL, "engagement score from which a patient is highly engaged"),
	SETTING(engagement_moderate_score, SETTING_NUMBER, "45", 0, 100, NULL, NULL, "engagement score from which a patient is moderately engaged"),
	SETTING(engagement_low_score, SETTING_NUMBER, "20", 0, 100, NULL, NULL, "engagement score from which engagement is low rather than none"),
	SETTING(retention_days, SETTING_INT, "730", 30, 3650, NULL, NULL, "events, inbound messages and archived outbound messages older than this are deleted"),
	SETTING(ltv_horizon_days, SETTING_NUMBER, "365", 1, 3650, NULL, NULL, "horizon of the estimated lifetime value"),
	/* conversations */
	SETTING(conversation_inactive_after, SETTING_INTERVAL, "\"1 day\"", 60, 365 * DAY, NULL, NULL, "a conversation without traffic this long becomes inactive (traffic makes it active again)"),
	SETTING(conversation_closed_after, SETTING_INTERVAL, "\"30 days\"", 60, 3650 * DAY, NULL, NULL, "a conversation without traffic this long is closed for good (new traffic starts a new one)"),
	SETTING(handoff_keywords, SETTING_TEXT, "\"AGENT,HUMAN,PERSON,STAFF\"", 0, 0, SettingCheckKeywords, NULL, "comma-separated words: an inbound message that is one of them asks for a person and opens a ticket (null: none)"),
	/* tickets (ticket.c, ticket_sla.c) */
	SETTING(ticket_autoclose_after, SETTING_INTERVAL, "\"4 days\"", HOUR, 365 * DAY, NULL, NULL, "a solved ticket closes by itself this long after it was solved"),
	SETTING(max_open_tickets_per_staff, SETTING_INT, "0", 0, 100000, NULL, NULL, "round-robin assignment skips staff members with this many tickets not yet solved; 0: no cap"),
	/* companion monitoring (monitor*.c) */
	SETTING(reminder_missed_after, SETTING_INTERVAL, "\"01:00:00\"", 60, DAY, NULL, NULL, "a reminder not confirmed this long after it was due is missed, and the care circle is alerted"),
	SETTING(reminder_horizon_days, SETTING_INT, "2", 1, 31, NULL, NULL, "reminder occurrences are created this many days ahead"),
	SETTING(activity_retention_days, SETTING_INT, "30", 1, 3650, NULL, NULL, "heartbeats and activity older than this are deleted"),
	/* appointment reminders */
	SETTING(appointment_reminders, SETTING_BOOL, "false", 0, 0, NULL, NULL, "queue reminders of every booked appointment, reminder_offsets before it on reminder_channel (off until the organization turns it on)"),
	SETTING(reminder_offsets, SETTING_TEXT, "\"24 hours,2 hours\"", 0, 0, SettingCheckReminderOffsets, NULL, "comma-separated times before an appointment that its reminders go out, each a whole number of minutes, hours or days from 5 minutes to 30 days, at most 5 (null: none)"),
	SETTING(reminder_channel, SETTING_TEXT, "\"sms\"", 0, 0, SettingCheckReminderChannel, &reminder_channel_fallback, "channel of appointment reminders: sms or email (replies C and X are read on SMS)"),
	/* communications (comms.c, comms_consent.c) */
	SETTING(promotional_daily_cap, SETTING_INT, "1", 0, 100, NULL, NULL, "promotional messages per patient per day (the patient's local calendar day, by send time); exempt messages are never capped"),
	SETTING(promotional_weekly_cap, SETTING_INT, "3", 0, 500, NULL, NULL, "promotional messages per patient per week (Monday to Sunday in the patient's time zone, by send time)"),
	SETTING(consent_required, SETTING_TEXT, "null", 0, 0, SettingCheckConsentRequired, NULL, "comma-separated channel:purpose pairs (channel sms, whatsapp, email, voice, push or *; purpose promotional, exempt or *) whose messages need the patient's consent (null: none)"),
	/* offers reaching the right people at the right time (fill_batch.c, fill.c) */
	SETTING(offer_reachable_first, SETTING_BOOL, "true", 0, 0, NULL, NULL, "a batch goes first to patients whose offer SMS can go out now; patients in their quiet hours get the places left (false: by rank alone)"),
	SETTING(notify_slot_taken, SETTING_BOOL, "true", 0, 0, NULL, NULL, "patients whose offer was withdrawn because someone else took the slot get one short text saying so (only those whose offer SMS went out)"),
};

/*
 * one-organization cache of PrmLoadSettings, valid for one transaction; a
 * later transaction keeps it when the organization's row is still the
 * version it was loaded from (same xmin and ctid: prm.configure and every
 * other change of the row write a new version) and prm.default_region,
 * which a null phone_region loads as, is unchanged
 */
static PrmSettings		  cached_settings;
static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
static bool				  cached_version_valid = false;
static TransactionId	  cached_xmin = InvalidTransactionId;
static ItemPointerData	  cached_ctid;
static char				  cached_default_region[16];
static bool				  subxact_callback_registered = false;

static const SettingDef *SettingLookup(const char *name);
static char				*SettingCanonical(const SettingDef *def, const char *type,
										  const char *value);
static void				 SettingDecode(const SettingDef *def, const JsonbValue *v,
									   PrmSettings *s);

/* The registry entry of a key, or NULL. */
static const SettingDef *
SettingLookup(const char *name)
{
	int i;

	for (i = 0; i < (int) lengthof(setting_defs); i++)
		if (strcmp(setting_defs[i].name, name) == 0)
			return &setting_defs[i];
	return NULL;
}

/* Raise 22023 for a bad setting value. */
static void
SettingInvalid(const SettingDef *def, const char *value, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for setting \"%s\": %s", def->name, value),
			 errdetail("%s", detail),
			 errhint("The setting is: %s.", def->description)));
}

/* phone_region: a region prm can read phone numbers of. */
static void
SettingCheckRegion(const SettingDef *def, const char *value, const char *str)
{
	PrmCheckPhoneRegion(str);
}

/* locale: a language tag. */
static void
SettingCheckLocale(const SettingDef *def, const char *value, const char *str)
{
	const char *p;

	for (p = str; *p; p++)
		if (!(isalpha((unsigned char) *p) || *p == '-' || *p == '_'))
			break;
	if (*p != '\0' || strlen(str) < 2 || strlen(str) > 10)
		SettingInvalid(def, value, "It must be a language tag such as \"en\" or \"de-AT\".");
}

/* handoff_keywords: words of letters, separated by commas. */
static void
SettingCheckKeywords(const SettingDef *def, const char *value, const char *str)
{
	const char *p;

	for (p = str; *p; p++)
		if (!(isalpha((unsigned char) *p) || *p == ',' || *p == ' '))
			SettingInvalid(def, value, "It must be words of letters separated by commas, such as \"AGENT,HUMAN\".");
	if (strlen(str) > 200)
		SettingInvalid(def, value, "It must be at most 200 characters.");
}

/* accept_url: an http(s) URL that can go into an SMS as it is. */
static void
SettingCheckUrl(const SettingDef *def, const char *value, const char *str)
{
	const char *p;

	if (strncmp(str, "https://", 8) != 0 && strncmp(str, "http://", 7) != 0)
		SettingInvalid(def, value, "It must start with https:// or http://.");
	for (p = str; *p; p++)
		if (isspace((unsigned char) *p) || iscntrl((unsigned char) *p) ||
			*p == '"' || *p == '<' || *p == '>')
			SettingInvalid(def, value, "It must not contain spaces, quotes or angle brackets.");
}

/* Raise 22023 unless x lies in the bounds of def. */
static void
SettingCheckRange(const SettingDef *def, const char *value, double x,
				  const char *unit)
{
	if (x < def->min || x > def->max)
		SettingInvalid(def, value,
					   psprintf("It must be between %lld and %lld%s.",
								(long long) def->min, (long long) def->max, unit));
}

/*
 * Validate value (JSON text of type type, as jsonb_typeof names it) for def
 * and return its canonical JSON text.
 */
static char *
SettingCanonical(const SettingDef *def, const char *type, const char *value)
{
	StringInfoData buf;
	char		  *str;

	switch (def->type)
	{
		case SETTING_INT:
		{
			char *end;
			long  v;

			if (strcmp(type, "number") != 0)
				SettingInvalid(def, value, "It must be a whole number.");
			errno = 0;
			v = strtol(value, &end, 10);
			if (*end != '\0' || errno != 0)
				SettingInvalid(def, value, "It must be a whole number.");
			SettingCheckRange(def, value, (double) v, "");
			return psprintf("%ld", v);
		}
		case SETTING_BOOL:
			if (strcmp(type, "boolean") != 0)
				SettingInvalid(def, value, "It must be true or false.");
			return pstrdup(value);
		case SETTING_NUMBER:
		{
			char  *end;
			double v;

			if (strcmp(type, "number") != 0)
				SettingInvalid(def, value, "It must be a number.");
			errno = 0;
			v = strtod(value, &end);
			if (*end != '\0' || errno != 0 || isnan(v))
				SettingInvalid(def, value, "It must be a number.");
			SettingCheckRange(def, value, v, "");
			return psprintf("%.15g", v);
		}
		case SETTING_INTERVAL:
		case SETTING_TIME:
		case SETTING_TEXT:
			break;
	}

	if (strcmp(type, "string") != 0)
		SettingInvalid(def, value, "It must be a JSON string.");
	/* value is a JSON string literal: take its text */
	str = TextDatumGetCString(DirectFunctionCall2(json_object_field_text,
												  CStringGetTextDatum(psprintf("{\"v\":%s}", value)),
												  CStringGetTextDatum("v")));
	PrmCheckTextLength(str, "setting value", 100);
	initStringInfo(&buf);

	switch (def->type)
	{
		case SETTING_INTERVAL:
		{
			Datum d;
			int64 usecs;

			d = DirectFunctionCall3(interval_in, CStringGetDatum(str),
									ObjectIdGetDatum(InvalidOid),
									Int32GetDatum(-1));
			/* an interval too long for 64-bit microseconds is out of range too */
			if (!PrmIntervalToUsecs(DatumGetIntervalP(d), &usecs))
				usecs = PG_INT64_MAX;
			SettingCheckRange(def, value, (double) (usecs / USECS_PER_SEC), " seconds");
			escape_json(&buf, PrmFormatSeconds(usecs / USECS_PER_SEC));
			break;
		}
		case SETTING_TIME:
		{
			Datum d;

			d = DirectFunctionCall3(time_in, CStringGetDatum(str),
									ObjectIdGetDatum(InvalidOid),
									Int32GetDatum(0));
			escape_json(&buf, DatumGetCString(DirectFunctionCall1(time_out, d)));
			break;
		}
		case SETTING_TEXT:
			if (def->check)
				def->check(def, value, str);
			if (strlen(str) >= def->size)
				SettingInvalid(def, value,
							   psprintf("It must be shorter than %zu bytes.", def->size));
			escape_json(&buf, str);
			break;
		default:
			elog(ERROR, "unexpected setting type %d", (int) def->type);
	}
	return buf.data;
}

/* The size of the PrmSettings field a type loads into; 0: any (text). */
static size_t
SettingFieldSize(SettingType type)
{
	switch (type)
	{
		case SETTING_INT:
			return sizeof(int32);
		case SETTING_NUMBER:
			return sizeof(double);
		case SETTING_BOOL:
			return sizeof(bool);
		case SETTING_INTERVAL:
			return sizeof(Interval);
		case SETTING_TIME:
			return sizeof(TimeADT);
		case SETTING_TEXT:
			return 0;
	}
	return 0;
}

/* Copy src into a text field of size bytes; raise when it does not fit. */
static void
SettingsCopyText(char *field, size_t size, const char *src, const char *name)
{
	if (strlcpy(field, src, size) >= size)
		elog(ERROR, "%s \"%.20s...\" is longer than %zu bytes", name, src, size - 1);
}

/*
 * Decode the effective value v of def into its field of s.  Stored values
 * were validated by prm.configure(), so a value of another JSON type means
 * the settings were written by hand.
 */
static void
SettingDecode(const SettingDef *def, const JsonbValue *v, PrmSettings *s)
{
	char  *field = (char *) s + def->offset;
	size_t size = SettingFieldSize(def->type);

	if (size != 0 && size != def->size)
		elog(ERROR, "setting \"%s\" has a field of %zu bytes for a value of %zu",
			 def->name, def->size, size);
	switch (def->type)
	{
		case SETTING_INT:
			if (v->type == jbvNumeric)
			{
				int32 i = DatumGetInt32(DirectFunctionCall1(numeric_int4,
															NumericGetDatum(v->val.numeric)));

				memcpy(field, &i, size);
				return;
			}
			break;
		case SETTING_NUMBER:
			if (v->type == jbvNumeric)
			{
				double d = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
															  NumericGetDatum(v->val.numeric)));

				memcpy(field, &d, size);
				return;
			}
			break;
		case SETTING_BOOL:
			if (v->type == jbvBool)
			{
				bool b = v->val.boolean;

				memcpy(field, &b, size);
				return;
			}
			break;
		case SETTING_INTERVAL:
		case SETTING_TIME:
			if (v->type == jbvString)
			{
				char *str = pnstrdup(v->val.string.val, v->val.string.len);

				if (def->type == SETTING_INTERVAL)
					memcpy(field,
						   DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(str),
																 ObjectIdGetDatum(InvalidOid),
																 Int32GetDatum(-1))),
						   size);
				else
				{
					TimeADT t = DatumGetTimeADT(DirectFunctionCall3(time_in, CStringGetDatum(str),
																	ObjectIdGetDatum(InvalidOid),
																	Int32GetDatum(-1)));

					memcpy(field, &t, size);
				}
				return;
			}
			break;
		case SETTING_TEXT:
			if (v->type == jbvString)
			{
				SettingsCopyText(field, def->size,
								 pnstrdup(v->val.string.val, v->val.string.len), def->name);
				return;
			}
			if (v->type == jbvNull)
			{
				const char *fallback = def->fallback && *def->fallback ? *def->fallback : "";

				SettingsCopyText(field, def->size, fallback, def->name);
				return;
			}
			break;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("stored setting \"%s\" of organization %lld has the wrong type",
					def->name, (long long) s->org_id),
			 errhint("Set it again with prm.configure().")));
}

/*
 * The one interval conversion: the length of iv in microseconds, a month
 * counting 30 days, into *usecs.  False (and *usecs untouched) when it does
 * not fit in 64 bits or the interval is infinite.
 */
bool
PrmIntervalToUsecs(const Interval *iv, int64 *usecs)
{
	int64 months;
	int64 days;
	int64 sum;

#if PG_VERSION_NUM >= 170000
	if (INTERVAL_NOT_FINITE(iv))
		return false;
#endif
	if (pg_mul_s64_overflow((int64) iv->month, 30 * USECS_PER_DAY, &months) ||
		pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &days) ||
		pg_add_s64_overflow(months, days, &sum) ||
		pg_add_s64_overflow(sum, iv->time, &sum))
		return false;
	*usecs = sum;
	return true;
}

/* The length of an interval in microseconds; 22023 when it does not fit. */
int64
PrmIntervalUsecs(const Interval *iv)
{
	int64 usecs;

	if (!PrmIntervalToUsecs(iv, &usecs))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("interval \"%s\" is out of range",
						DatumGetCString(DirectFunctionCall1(interval_out,
															IntervalPGetDatum(iv)))),
				 errdetail("prm counts a month as 30 days; the whole interval must be shorter than about 292,000 years.")));
	return usecs;
}

/*
 * t plus usecs microseconds.  t must be finite and the sum must lie in the
 * timestamp range; anything else raises 22008 rather than wrapping around.
 */
TimestampTz
PrmTimestampPlusUsecs(TimestampTz t, int64 usecs)
{
	TimestampTz result;

	PrmCheckFiniteTimestamp(t, "time");
	if (pg_add_s64_overflow(t, usecs, &result) || !IS_VALID_TIMESTAMP(result))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range"),
				 errdetail("%s moved by %s is outside the range of timestamps.",
						   DatumGetCString(DirectFunctionCall1(timestamptz_out,
															   TimestampTzGetDatum(t))),
						   PrmFormatSeconds(usecs / USECS_PER_SEC))));
	return result;
}

/* Raise 22008 when t, named name, is 'infinity' or '-infinity'. */
void
PrmCheckFiniteTimestamp(TimestampTz t, const char *name)
{
	if (TIMESTAMP_NOT_FINITE(t))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("%s must be a finite time, not %s", name,
						TIMESTAMP_IS_NOBEGIN(t) ? "-infinity" : "infinity")));
}

/*
 * An interval of secs seconds as "N days HH:MM:SS" (parts left out when
 * zero), the same whatever the session's IntervalStyle.  A negative one has
 * each part negative ("-1 day -01:00:00"), as PostgreSQL reads it back.
 */
char *
PrmFormatSeconds(int64 secs)
{
	const char *sign = secs < 0 ? "-" : "";
	uint64		mag = secs < 0 ? -(uint64) secs : (uint64) secs;
	uint64		days = mag / DAY;
	uint64		rest = mag % DAY;
	char	   *day_part = "";

	if (days > 0)
		day_part = psprintf("%s%llu day%s", sign, (unsigned long long) days,
							days == 1 ? "" : "s");
	if (days > 0 && rest == 0)
		return day_part;
	return psprintf("%s%s%s%02d:%02d:%02d", day_part, days > 0 ? " " : "", sign,
					(int) (rest / HOUR), (int) (rest % HOUR / 60), (int) (rest % 60));
}

/* JSON text of the defaults of every setting (built once). */
char *
SettingsDefaultsJson(void)
{
	static char	  *defaults = NULL;
	StringInfoData buf;
	MemoryContext  old;
	int			   i;

	if (defaults != NULL)
		return defaults;
	old = MemoryContextSwitchTo(TopMemoryContext);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < (int) lengthof(setting_defs); i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, setting_defs[i].name);
		appendStringInfo(&buf, ": %s", setting_defs[i].default_json);
	}
	appendStringInfoChar(&buf, '}');
	MemoryContextSwitchTo(old);
	defaults = buf.data;
	return defaults;
}

/* The effective settings of an organization as a jsonb Datum (inside SPI). */
static Datum
SettingsEffective(int64 org_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	Datum			  result;

	PrmPrepare(&plan,
			   "SELECT $2::pg_catalog.jsonb || o.settings FROM prm.organization o WHERE o.id = $1",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(SettingsDefaultsJson());
	if (PrmExecute(plan, values, NULL, true, 1) != 1)
		elog(ERROR, "organization %lld vanished", (long long) org_id);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	Assert(!isnull);
	return SPI_datumTransfer(result, false, -1);
}

/*
 * Read the effective settings of an organization into a struct (inside
 * SPI): the organization's own columns, then every registry key of the
 * merged jsonb, decoded by its type into its field.
 */
void
PrmLoadSettings(int64 org_id, PrmSettings *s)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	Jsonb			 *effective;
	char			 *sms_number;
	int				  i;

	PrmPrepare(&plan,
			   "SELECT o.timezone, o.name, o.sms_number, $2::pg_catalog.jsonb || o.settings,"
			   "       o.xmin, o.ctid"
			   "  FROM prm.organization o WHERE o.id = $1",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(SettingsDefaultsJson());
	if (PrmExecute(plan, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("organization %lld does not exist", (long long) org_id)));

	/* the row version read, for PrmGetSettings's next transactions */
	cached_version_valid = false;
	cached_xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 5, &isnull));
	ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0],
													  SPI_tuptable->tupdesc, 6, &isnull)),
					&cached_ctid);

	memset(s, 0, sizeof(*s));
	s->org_id = org_id;
	SettingsCopyText(s->timezone, sizeof(s->timezone), PrmGetText(0, 1), "timezone");
	SettingsCopyText(s->name, sizeof(s->name), PrmGetText(0, 2), "organization name");
	sms_number = PrmGetText(0, 3);
	if (sms_number != NULL)
		SettingsCopyText(s->sms_number, sizeof(s->sms_number), sms_number, "sms_number");
	effective = DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 4, &isnull));
	for (i = 0; i < (int) lengthof(setting_defs); i++)
	{
		const SettingDef *def = &setting_defs[i];
		JsonbValue		  v;

		if (getKeyJsonValueFromContainer(&effective->root, def->name,
										 strlen(def->name), &v) == NULL)
			elog(ERROR, "setting \"%s\" of organization %lld is missing",
				 def->name, (long long) org_id);
		SettingDecode(def, &v, s);
	}
}

/*
 * A subtransaction that aborts may have undone a prm.configure() whose
 * values the cache holds (or loaded them itself): drop the cache.
 */
static void
SettingsSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		cached_lxid = InvalidLocalTransactionId;
		cached_version_valid = false;
	}
}

/*
 * Is the cached organization's row still the version the cache was loaded
 * from, and prm.default_region what it was?  One index probe instead of
 * merging and decoding every setting again.  Inside SPI.
 */
static bool
SettingsCacheCurrent(int64 org_id)
{
	static SPIPlanPtr plan = NULL;
	bool			  isnull;

	if (!cached_version_valid || cached_settings.org_id != org_id ||
		strcmp(cached_default_region, prm_default_region ? prm_default_region : "") != 0)
		return false;
	PrmPrepare(&plan, "SELECT o.xmin, o.ctid FROM prm.organization o WHERE o.id = $1",
			   1, (Oid[]){INT8OID});
	if (PrmExecute(plan, (Datum[]){Int64GetDatum(org_id)}, NULL, true, 1) != 1)
		return false;
	return DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
											   &isnull)) == cached_xmin &&
		ItemPointerEquals((ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0],
															SPI_tuptable->tupdesc, 2, &isnull)),
						  &cached_ctid);
}

/*
 * The effective settings of an organization, loaded at most once per
 * transaction and organization (inside SPI).  prm.configure() and the abort
 * of a subtransaction drop it.
 */
const PrmSettings *
PrmGetSettings(int64 org_id)
{
	if (!subxact_callback_registered)
	{
		RegisterSubXactCallback(SettingsSubXactCallback, NULL);
		subxact_callback_registered = true;
	}
	if (cached_lxid != PrmCurrentLxid() || cached_settings.org_id != org_id)
	{
		cached_lxid = InvalidLocalTransactionId;
		if (!SettingsCacheCurrent(org_id))
		{
			PrmLoadSettings(org_id, &cached_settings);
			strlcpy(cached_default_region, prm_default_region ? prm_default_region : "",
					sizeof(cached_default_region));
			cached_version_valid = true;
		}
		cached_lxid = PrmCurrentLxid();
	}
	return &cached_settings;
}

/*
 * Thresholds that must keep their order, checked on the effective settings
 * after a change (the whole prm.configure() call fails otherwise).
 */
static void
SettingsCheckOrder(int64 org_id)
{
	const PrmSettings *s = PrmGetSettings(org_id);

	if (!(s->churn_medium_ratio <= s->churn_high_ratio &&
		  s->churn_high_ratio <= s->churn_critical_ratio))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("churn thresholds are out of order"),
				 errdetail("churn_medium_ratio <= churn_high_ratio <= churn_critical_ratio must hold.")));
	if (!(s->engagement_low_score <= s->engagement_moderate_score &&
		  s->engagement_moderate_score <= s->engagement_high_score))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("engagement thresholds are out of order"),
				 errdetail("engagement_low_score <= engagement_moderate_score <= engagement_high_score must hold.")));
}

/*
 * prm.configure(org_id bigint, settings jsonb) RETURNS jsonb
 *	  Validate and store setting overrides; return the effective settings.
 */
Datum
prm_configure(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr each_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Jsonb			 *settings;
	StringInfoData	  set;
	List			 *resets = NIL;
	Datum			  values[3];
	Datum			  result;
	int				  n,
		i;
	ListCell		*lc;
	ArrayBuildState *astate;

	PrmArgNotNull(fcinfo, 1, "settings");
	settings = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(settings))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("settings must be a JSON object"),
				 errhint("For example: {\"batch_size\": 5, \"offer_hold\": \"10 minutes\"}.")));

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);

	PrmPrepare(&each_plan,
			   "SELECT e.key, e.value::text, pg_catalog.jsonb_typeof(e.value)"
			   "  FROM pg_catalog.jsonb_each($1) e ORDER BY e.key",
			   1, (Oid[]){JSONBOID});
	values[0] = JsonbPGetDatum(settings);
	n = PrmExecute(each_plan, values, NULL, true, 0);

	initStringInfo(&set);
	appendStringInfoChar(&set, '{');
	for (i = 0; i < n; i++)
	{
		char			 *key = PrmGetText(i, 1);
		char			 *value = PrmGetText(i, 2);
		char			 *type = PrmGetText(i, 3);
		const SettingDef *def = SettingLookup(key);

		if (def == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown setting \"%s\"", key),
					 errhint("prm.settings(org_id) lists the settings.")));
		if (strcmp(type, "null") == 0)
		{
			resets = lappend(resets, key);
			continue;
		}
		if (set.len > 1)
			appendStringInfoString(&set, ", ");
		escape_json(&set, key);
		appendStringInfo(&set, ": %s", SettingCanonical(def, type, value));
	}
	appendStringInfoChar(&set, '}');

	astate = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	foreach (lc, resets)
		accumArrayResult(astate, CStringGetTextDatum(lfirst(lc)), false,
						 TEXTOID, CurrentMemoryContext);

	PrmPrepare(&update_plan,
			   "UPDATE prm.organization o"
			   "   SET settings = (o.settings || $2::pg_catalog.jsonb) - $3::text[]"
			   " WHERE o.id = $1",
			   3, (Oid[]){INT8OID, TEXTOID, TEXTARRAYOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(set.data);
	values[2] = makeArrayResult(astate, CurrentMemoryContext);
	PrmExecute(update_plan, values, NULL, false, 0);
	cached_lxid = InvalidLocalTransactionId;
	cached_version_valid = false;
	SettingsCheckOrder(org_id);
	PrmEmitEvent(org_id, "settings_changed", "organization", org_id,
				 psprintf("{\"set\": %s, \"reset\": %s}", set.data,
						  TextDatumGetCString(DirectFunctionCall1(array_to_json,
																  values[2]))));

	result = SettingsEffective(org_id);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * prm.settings(org_id bigint) RETURNS jsonb
 *	  The effective settings of an organization.
 */
Datum
prm_settings(PG_FUNCTION_ARGS)
{
	int64 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	Datum result;

	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	result = SettingsEffective(org_id);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/* appointment reminders */

/* reminder_offsets: what PrmParseReminderOffsets reads. */
static void
SettingCheckReminderOffsets(const SettingDef *def, const char *value, const char *str)
{
	int64		usecs[PRM_MAX_REMINDERS];
	const char *error = NULL;

	if (strlen(str) > 100)
		SettingInvalid(def, value, "It must be at most 100 characters.");
	if (PrmParseReminderOffsets(str, usecs, &error) < 0)
		SettingInvalid(def, value, error);
}

/* reminder_channel: sms or email. */
static void
SettingCheckReminderChannel(const SettingDef *def, const char *value, const char *str)
{
	if (strcmp(str, "sms") != 0 && strcmp(str, "email") != 0)
		SettingInvalid(def, value, "It must be \"sms\" or \"email\".");
}

/* consent_required: channel:purpose pairs. */
static void
SettingCheckConsentRequired(const SettingDef *def, const char *value, const char *str)
{
	const char *error = NULL;

	if (!PrmCheckConsentRequired(str, &error))
		SettingInvalid(def, value, error);
}
