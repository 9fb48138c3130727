/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  Per-organization settings: the registry of keys with their types,
 *	  ranges and defaults, prm.configure() and prm.settings(), and the typed
 *	  loader the engine uses (PrmLoadSettings).
 *
 * An organization stores only its overrides (prm.organization.settings);
 * the effective settings are the registry's defaults merged with them.  Every
 * value is validated and stored in canonical form (intervals as PostgreSQL
 * prints them, times as HH:MM:SS), so the engine never re-validates.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/json.h"

#include <math.h>

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_configure);
PG_FUNCTION_INFO_V1(prm_settings);

typedef enum SettingType
{
	SETTING_INT,
	SETTING_INTERVAL,
	SETTING_BOOL,
	SETTING_TIME,
	SETTING_REGION,
	SETTING_LOCALE,
	SETTING_URL,
	SETTING_NUMBER
} SettingType;

typedef struct SettingDef
{
	const char *name;
	SettingType type;
	const char *default_json; /* JSON text of the default */
	int64		min;		  /* ints: bounds; intervals: bounds in seconds */
	int64		max;
	const char *description;
} SettingDef;

#define HOUR 3600
#define DAY (24 * HOUR)

static const SettingDef setting_defs[] = {
	{"batch_size", SETTING_INT, "3", 1, 50, "patients offered a slot at once"},
	{"offer_hold", SETTING_INTERVAL, "\"00:07:00\"", 1, DAY, "how long an offer is held for its patient"},
	{"first_batch_delay", SETTING_INTERVAL, "\"00:00:00\"", 0, HOUR, "wait after a cancellation before the first batch (an undone cancellation sends nothing)"},
	{"min_notice", SETTING_INTERVAL, "\"01:00:00\"", 0, 7 * DAY, "a slot is offered only if it starts at least this long after the offer's hold ends"},
	{"max_batches", SETTING_INT, "10", 1, 100, "cut-off: no more batches for a slot after this many"},
	{"late_accept_window", SETTING_INTERVAL, "\"1 day\"", 0, 30 * DAY, "an expired offer can still be accepted (YES or its link) this long after its hold ended, while its patient waits and the slot is free; 0: never"},
	{"recent_offer_window", SETTING_INTERVAL, "\"7 days\"", 0, 90 * DAY, "an offer within this window lowers a patient's rank"},
	{"recent_offer_penalty", SETTING_INT, "5", 0, 100, "points taken off for an offer within recent_offer_window"},
	{"weight_urgent", SETTING_INT, "30", 0, 100, "points for an urgent entry"},
	{"weight_wait", SETTING_INT, "20", 0, 100, "points at most for the wait until the current appointment"},
	{"weight_seniority", SETTING_INT, "10", 0, 100, "points at most for time on the list"},
	{"wait_full_days", SETTING_INT, "60", 1, 3650, "days of waiting that earn the full wait points"},
	{"seniority_full_days", SETTING_INT, "90", 1, 3650, "days on the list that earn the full seniority points"},
	{"quiet_hours", SETTING_BOOL, "true", 0, 0, "hold patient SMS between quiet_start and quiet_end in the patient's time zone"},
	{"quiet_start", SETTING_TIME, "\"21:00:00\"", 0, 0, "start of quiet hours"},
	{"quiet_end", SETTING_TIME, "\"08:00:00\"", 0, 0, "end of quiet hours"},
	{"offer_daily_cap", SETTING_INT, "1", 0, 10, "offer messages per patient per day"},
	{"offer_weekly_cap", SETTING_INT, "3", 0, 50, "offer messages per patient per 7 days"},
	{"max_attempts", SETTING_INT, "5", 1, 20, "send attempts before a message is dead"},
	{"retry_base", SETTING_INTERVAL, "\"00:00:30\"", 1, HOUR, "first retry delay; doubles with each attempt"},
	{"phone_region", SETTING_REGION, "null", 0, 0, "region for national phone numbers (null: prm.default_region)"},
	{"locale", SETTING_LOCALE, "\"en\"", 0, 0, "default language of messages"},
	{"accept_url", SETTING_URL, "null", 0, 0, "base of one-time accept links in offers; the offer token is appended (null: no link)"},
	{"churn_critical_ratio", SETTING_NUMBER, "3.0", 1, 100, "churn risk is critical past this many of the patient's own visit intervals without a visit"},
	{"churn_high_ratio", SETTING_NUMBER, "2.0", 1, 100, "churn risk is high past this many visit intervals"},
	{"churn_medium_ratio", SETTING_NUMBER, "1.25", 1, 100, "churn risk is medium past this many visit intervals"},
	{"default_visit_interval_days", SETTING_NUMBER, "180", 7, 3650, "visit interval assumed for patients with too few visits"},
	{"engagement_full_visits", SETTING_NUMBER, "6", 1, 1000, "visits that earn the full frequency part of the engagement score"},
	{"engagement_high_score", SETTING_NUMBER, "70", 0, 100, "engagement score from which a patient is highly engaged"},
	{"engagement_moderate_score", SETTING_NUMBER, "45", 0, 100, "engagement score from which a patient is moderately engaged"},
	{"engagement_low_score", SETTING_NUMBER, "20", 0, 100, "engagement score from which engagement is low rather than none"},
	{"retention_days", SETTING_INT, "730", 30, 3650, "events, inbound messages and archived outbound messages older than this are deleted"},
	{"ltv_horizon_days", SETTING_NUMBER, "365", 1, 3650, "horizon of the estimated lifetime value"},
};

static const SettingDef *SettingLookup(const char *name);
static char				*SettingCanonical(const SettingDef *def, const char *type,
										  const char *value);
static int64			 IntervalSeconds(Interval *iv);

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

/* Seconds in an interval, counting a month as 30 days. */
static int64
IntervalSeconds(Interval *iv)
{
	return (int64) iv->month * 30 * DAY + (int64) iv->day * DAY +
		   iv->time / USECS_PER_SEC;
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
			if (v < def->min || v > def->max)
				SettingInvalid(def, value,
							   psprintf("It must be between %lld and %lld.",
										(long long) def->min,
										(long long) def->max));
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
			if (v < def->min || v > def->max)
				SettingInvalid(def, value,
							   psprintf("It must be between %lld and %lld.",
										(long long) def->min,
										(long long) def->max));
			return psprintf("%.15g", v);
		}
		default:
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
			int64 secs;

			d = DirectFunctionCall3(interval_in, CStringGetDatum(str),
									ObjectIdGetDatum(InvalidOid),
									Int32GetDatum(-1));
			secs = IntervalSeconds(DatumGetIntervalP(d));
			if (secs < def->min || secs > def->max)
				SettingInvalid(def, value,
							   psprintf("It must be between %lld and %lld seconds.",
										(long long) def->min,
										(long long) def->max));
			escape_json(&buf, PrmFormatSeconds(secs));
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
		case SETTING_REGION:
			PrmCheckPhoneRegion(str);
			escape_json(&buf, str);
			break;
		case SETTING_LOCALE:
		{
			const char *p;

			for (p = str; *p; p++)
				if (!(isalpha((unsigned char) *p) || *p == '-' || *p == '_'))
					break;
			if (*p != '\0' || strlen(str) < 2 || strlen(str) > 10)
				SettingInvalid(def, value, "It must be a language tag such as \"en\" or \"de-AT\".");
			escape_json(&buf, str);
			break;
		}
		case SETTING_URL:
		{
			const char *p;

			if (strncmp(str, "https://", 8) != 0 && strncmp(str, "http://", 7) != 0)
				SettingInvalid(def, value, "It must start with https:// or http://.");
			for (p = str; *p; p++)
				if (isspace((unsigned char) *p) || iscntrl((unsigned char) *p) ||
					*p == '"' || *p == '<' || *p == '>')
					SettingInvalid(def, value, "It must not contain spaces, quotes or angle brackets.");
			escape_json(&buf, str);
			break;
		}
		default:
			elog(ERROR, "unexpected setting type %d", (int) def->type);
	}
	return buf.data;
}

/*
 * An interval of secs seconds as "N days HH:MM:SS" (parts left out when
 * zero), the same whatever the session's IntervalStyle.
 */
char *
PrmFormatSeconds(int64 secs)
{
	int64 days = secs / DAY;
	int64 rest = secs % DAY;

	if (days > 0 && rest == 0)
		return psprintf("%lld day%s", (long long) days, days == 1 ? "" : "s");
	return psprintf("%s%02d:%02d:%02d",
					days > 0 ? psprintf("%lld day%s ", (long long) days, days == 1 ? "" : "s") : "",
					(int) (rest / HOUR), (int) (rest % HOUR / 60), (int) (rest % 60));
}

/* The length of an interval in microseconds, a month counting 30 days. */
int64
PrmIntervalUsecs(const Interval *iv)
{
	return iv->time + (int64) iv->day * USECS_PER_DAY +
		   (int64) iv->month * 30 * USECS_PER_DAY;
}

/* JSON text of the defaults of every setting. */
char *
SettingsDefaultsJson(void)
{
	StringInfoData buf;
	int			   i;

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
	return buf.data;
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

/* Read the effective settings of an organization into a struct (inside SPI). */
void
PrmLoadSettings(int64 org_id, PrmSettings *s)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	int				  i;

	PrmPrepare(&plan,
			   "SELECT e.batch_size::int, e.offer_hold::interval,"
			   "       e.first_batch_delay::interval, e.min_notice::interval,"
			   "       e.max_batches::int, e.recent_offer_window::interval,"
			   "       e.recent_offer_penalty::int, e.weight_urgent::int,"
			   "       e.weight_wait::int, e.weight_seniority::int,"
			   "       e.wait_full_days::int, e.seniority_full_days::int,"
			   "       e.quiet_hours::bool, e.quiet_start::time, e.quiet_end::time,"
			   "       e.offer_daily_cap::int, e.offer_weekly_cap::int,"
			   "       e.max_attempts::int, e.retry_base::interval,"
			   "       coalesce(e.phone_region, pg_catalog.current_setting('prm.default_region')),"
			   "       e.locale, o.timezone, o.name, o.sms_number, e.accept_url,"
			   "       e.late_accept_window::interval"
			   "  FROM prm.organization o,"
			   "       pg_catalog.jsonb_to_record($2::pg_catalog.jsonb || o.settings) AS e("
			   "         batch_size text, offer_hold text, first_batch_delay text,"
			   "         min_notice text, max_batches text, recent_offer_window text,"
			   "         recent_offer_penalty text, weight_urgent text, weight_wait text,"
			   "         weight_seniority text, wait_full_days text,"
			   "         seniority_full_days text, quiet_hours text, quiet_start text,"
			   "         quiet_end text, offer_daily_cap text, offer_weekly_cap text,"
			   "         max_attempts text, retry_base text, phone_region text,"
			   "         locale text, accept_url text, late_accept_window text)"
			   " WHERE o.id = $1",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(SettingsDefaultsJson());
	if (PrmExecute(plan, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("organization %lld does not exist", (long long) org_id)));

	memset(s, 0, sizeof(*s));
	s->org_id = org_id;
	for (i = 1; i <= 26; i++)
	{
		bool  isnull;
		Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								i, &isnull);

		if (isnull && i < 22)
			elog(ERROR, "setting %d of organization %lld is null", i,
				 (long long) org_id);
		switch (i)
		{
			case 1: s->batch_size = DatumGetInt32(d); break;
			case 2: s->offer_hold = *DatumGetIntervalP(d); break;
			case 3: s->first_batch_delay = *DatumGetIntervalP(d); break;
			case 4: s->min_notice = *DatumGetIntervalP(d); break;
			case 5: s->max_batches = DatumGetInt32(d); break;
			case 6: s->recent_offer_window = *DatumGetIntervalP(d); break;
			case 7: s->recent_offer_penalty = DatumGetInt32(d); break;
			case 8: s->weight_urgent = DatumGetInt32(d); break;
			case 9: s->weight_wait = DatumGetInt32(d); break;
			case 10: s->weight_seniority = DatumGetInt32(d); break;
			case 11: s->wait_full_days = DatumGetInt32(d); break;
			case 12: s->seniority_full_days = DatumGetInt32(d); break;
			case 13: s->quiet_hours = DatumGetBool(d); break;
			case 14: s->quiet_start = DatumGetTimeADT(d); break;
			case 15: s->quiet_end = DatumGetTimeADT(d); break;
			case 16: s->offer_daily_cap = DatumGetInt32(d); break;
			case 17: s->offer_weekly_cap = DatumGetInt32(d); break;
			case 18: s->max_attempts = DatumGetInt32(d); break;
			case 19: s->retry_base = *DatumGetIntervalP(d); break;
			case 20: strlcpy(s->phone_region, TextDatumGetCString(d), sizeof(s->phone_region)); break;
			case 21: strlcpy(s->locale, TextDatumGetCString(d), sizeof(s->locale)); break;
			case 22: strlcpy(s->timezone, TextDatumGetCString(d), sizeof(s->timezone)); break;
			case 23: strlcpy(s->name, TextDatumGetCString(d), sizeof(s->name)); break;
			case 24:
				if (!isnull)
					strlcpy(s->sms_number, TextDatumGetCString(d), sizeof(s->sms_number));
				break;
			case 25:
				if (!isnull)
					strlcpy(s->accept_url, TextDatumGetCString(d), sizeof(s->accept_url));
				break;
			case 26: s->late_accept_window = *DatumGetIntervalP(d); break;
		}
	}
}

/* one-organization cache of PrmLoadSettings, valid for one transaction */
static PrmSettings		  cached_settings;
static LocalTransactionId cached_lxid = InvalidLocalTransactionId;

/*
 * The effective settings of an organization, loaded at most once per
 * transaction and organization (inside SPI).  prm.configure() drops it.
 */
const PrmSettings *
PrmGetSettings(int64 org_id)
{
	if (cached_lxid != MyProc->lxid || cached_settings.org_id != org_id)
	{
		cached_lxid = InvalidLocalTransactionId;
		PrmLoadSettings(org_id, &cached_settings);
		cached_lxid = MyProc->lxid;
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
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "SELECT (e.churn_medium_ratio <= e.churn_high_ratio AND e.churn_high_ratio <= e.churn_critical_ratio),"
			   "       (e.engagement_low_score <= e.engagement_moderate_score"
			   "        AND e.engagement_moderate_score <= e.engagement_high_score),"
			   "       e.quiet_start IS NOT NULL"
			   "  FROM prm.organization o,"
			   "       pg_catalog.jsonb_to_record($2::pg_catalog.jsonb || o.settings) AS e("
			   "         churn_medium_ratio float8, churn_high_ratio float8, churn_critical_ratio float8,"
			   "         engagement_low_score float8, engagement_moderate_score float8,"
			   "         engagement_high_score float8, quiet_start text)"
			   " WHERE o.id = $1",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(SettingsDefaultsJson());
	PrmExecute(plan, values, NULL, true, 1);
	if (strcmp(PrmGetText(0, 1), "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("churn thresholds are out of order"),
				 errdetail("churn_medium_ratio <= churn_high_ratio <= churn_critical_ratio must hold.")));
	if (strcmp(PrmGetText(0, 2), "t") != 0)
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

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	result = SettingsEffective(org_id);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}
