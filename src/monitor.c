/*-------------------------------------------------------------------------
 *
 * monitor.c
 *	  Companion monitoring, the care circle and the hot path: caregivers,
 *	  their links to patients and preferences, per-patient monitoring
 *	  settings, heartbeats and acknowledgements.
 *
 * Invariants:
 *	- preferences and monitoring settings are stored as the effective ones
 *	  (every key, validated), beside typed columns the steps read;
 *	- a heartbeat is one UPDATE of prm.patient (last_heartbeat_at is not
 *	  indexed, so it is a HOT update) and one append to prm.patient_activity.
 *	  It does not move the inactivity deadline (prm.monitoring.next_due_at):
 *	  that stays no later than the true deadline, and when it comes the
 *	  alert step re-reads the last heartbeat and pushes it on.  So the
 *	  worker is woken once per patient per threshold, never per beat;
 *	- the alert step locks the patient row (FOR NO KEY UPDATE) before it
 *	  reads last_heartbeat_at, and a heartbeat looks for an open alert in a
 *	  statement after its UPDATE: either the step sees the beat and opens
 *	  nothing, or the heartbeat waits for the step and resolves its alert.
 *
 * Local time is monitor_time.c's; the patient's data in export and erasure
 * is monitor_privacy.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "monitor.h"

PG_FUNCTION_INFO_V1(prm_add_caregiver);
PG_FUNCTION_INFO_V1(prm_link_caregiver);
PG_FUNCTION_INFO_V1(prm_unlink_caregiver);
PG_FUNCTION_INFO_V1(prm_remove_caregiver);
PG_FUNCTION_INFO_V1(prm_set_caregiver_preferences);
PG_FUNCTION_INFO_V1(prm_set_monitoring);
PG_FUNCTION_INFO_V1(prm_record_heartbeat);
PG_FUNCTION_INFO_V1(prm_acknowledge_alert);
PG_FUNCTION_INFO_V1(prm_resolve_alert);
PG_FUNCTION_INFO_V1(prm_caregiver_reply);

static const char *const severities[] = {"low", "medium", "high", "critical"};

/* A caregiver's preferences, parsed. */
typedef struct MonPrefs
{
	bool	email;
	bool	sms;
	bool	push;
	int		threshold; /* MonSeverity, low .. high */
	bool	quiet;
	TimeADT quiet_start;
	TimeADT quiet_end;
	bool	has_summary;
	TimeADT summary;
} MonPrefs;

/* A patient's monitoring settings, parsed. */
typedef struct MonSettings
{
	bool	 enabled;
	Interval threshold;
	bool	 has_active;
	TimeADT	 active_start;
	TimeADT	 active_end;
	Interval wait;
	bool	 loop;
	int		 severity;
	Interval nudge;		/* check-in before the deadline; 0: none */
	bool	 nudge_sms; /* by SMS (else push) */
} MonSettings;

static JsonbValue	  *MonKey(JsonbContainer *c, const char *key);
static void			   MonCheckKeys(JsonbContainer *c, const char *what,
									const char *const *allowed, int n);
static bool			   MonBool(JsonbValue *v, const char *key);
static char			  *MonString(JsonbValue *v, const char *key);
static TimeADT		   MonClock(JsonbValue *v, const char *key);
static JsonbContainer *MonObject(JsonbValue *v, const char *key);
static void			   MonApplyPrefs(JsonbContainer *c, MonPrefs *p);
static char			  *MonPrefsJson(const MonPrefs *p);
static void			   MonApplySettings(JsonbContainer *c, MonSettings *s);
static char			  *MonSettingsJson(const MonSettings *s);
static Interval		   MonInterval(JsonbValue *v, const char *key, int64 min_secs,
								   int64 max_secs);

/* The index of severity s (-1: not one). */
int
MonParseSeverity(const char *s)
{
	int i;

	for (i = 0; i < (int) lengthof(severities); i++)
		if (strcmp(s, severities[i]) == 0)
			return i;
	return -1;
}

/* The value of key in object c, or NULL. */
static JsonbValue *
MonKey(JsonbContainer *c, const char *key)
{
	return getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
}

/* Raise 22023 unless c is an object whose keys are all in allowed. */
static void
MonCheckKeys(JsonbContainer *c, const char *what, const char *const *allowed, int n)
{
	JsonbIterator	  *it;
	JsonbValue		   v;
	JsonbIteratorToken tok;

	if (!JsonContainerIsObject(c))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what)));
	it = JsonbIteratorInit(c);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		int i;

		if (tok != WJB_KEY)
			continue;
		for (i = 0; i < n; i++)
			if (strlen(allowed[i]) == (size_t) v.val.string.len &&
				strncmp(allowed[i], v.val.string.val, v.val.string.len) == 0)
				break;
		if (i == n)
		{
			StringInfoData keys;

			initStringInfo(&keys);
			for (i = 0; i < n; i++)
				appendStringInfo(&keys, "%s%s", i ? ", " : "", allowed[i]);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown key \"%.*s\" in %s", v.val.string.len, v.val.string.val, what),
					 errhint("The keys are: %s.", keys.data)));
		}
	}
}

/* The boolean v of key (22023 otherwise). */
static bool
MonBool(JsonbValue *v, const char *key)
{
	if (v->type != jbvBool)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be true or false", key)));
	return v->val.boolean;
}

/* The string v of key (22023 otherwise). */
static char *
MonString(JsonbValue *v, const char *key)
{
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a string", key)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* The "HH:MM" string v of key (22023 otherwise). */
static TimeADT
MonClock(JsonbValue *v, const char *key)
{
	char   *s = MonString(v, key);
	TimeADT t;

	if (!MonParseClock(s, &t))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not a time of day", key, s),
				 errhint("Write it as \"HH:MM\", from \"00:00\" to \"23:59\".")));
	return t;
}

/* The object v of key (22023 otherwise). */
static JsonbContainer *
MonObject(JsonbValue *v, const char *key)
{
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", key)));
	return v->val.binary.data;
}

/* The interval string v of key, between min_secs and max_secs (22023). */
static Interval
MonInterval(JsonbValue *v, const char *key, int64 min_secs, int64 max_secs)
{
	char	 *s = MonString(v, key);
	Interval *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(s),
														 ObjectIdGetDatum(InvalidOid),
														 Int32GetDatum(-1)));
	int64	  usecs;

	if (!PrmIntervalToUsecs(iv, &usecs) || usecs < min_secs * USECS_PER_SEC ||
		usecs > max_secs * USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is out of range", key, s),
				 errdetail("It must be between %s and %s.", PrmFormatSeconds(min_secs),
						   PrmFormatSeconds(max_secs))));
	return *iv;
}

/* Apply the preferences in object c to p, validating every key. */
static void
MonApplyPrefs(JsonbContainer *c, MonPrefs *p)
{
	static const char *const keys[] = {"notifications", "alert_threshold", "quiet_hours", "daily_summary_time"};
	static const char *const nkeys[] = {"email", "sms", "push"};
	static const char *const qkeys[] = {"enabled", "start", "end"};
	JsonbValue				*v;

	MonCheckKeys(c, "preferences", keys, lengthof(keys));
	if ((v = MonKey(c, "notifications")) != NULL)
	{
		JsonbContainer *n = MonObject(v, "notifications");
		JsonbValue	   *b;

		MonCheckKeys(n, "notifications", nkeys, lengthof(nkeys));
		if ((b = MonKey(n, "email")) != NULL)
			p->email = MonBool(b, "notifications.email");
		if ((b = MonKey(n, "sms")) != NULL)
			p->sms = MonBool(b, "notifications.sms");
		if ((b = MonKey(n, "push")) != NULL)
			p->push = MonBool(b, "notifications.push");
	}
	if ((v = MonKey(c, "alert_threshold")) != NULL)
	{
		char *s = MonString(v, "alert_threshold");

		p->threshold = MonParseSeverity(s);
		if (p->threshold < 0 || p->threshold > MON_SEVERITY_HIGH)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("alert_threshold \"%s\" is not recognized", s),
					 errhint("Use low, medium or high: the caregiver is told of alerts at or above it (critical ones always).")));
	}
	if ((v = MonKey(c, "quiet_hours")) != NULL)
	{
		JsonbContainer *q = MonObject(v, "quiet_hours");
		JsonbValue	   *b;

		MonCheckKeys(q, "quiet_hours", qkeys, lengthof(qkeys));
		if ((b = MonKey(q, "enabled")) != NULL)
			p->quiet = MonBool(b, "quiet_hours.enabled");
		if ((b = MonKey(q, "start")) != NULL)
			p->quiet_start = MonClock(b, "quiet_hours.start");
		if ((b = MonKey(q, "end")) != NULL)
			p->quiet_end = MonClock(b, "quiet_hours.end");
		if (p->quiet_start == p->quiet_end)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("quiet_hours start and end are both %s", MonClockText(p->quiet_start)),
					 errdetail("Quiet hours run from start to end; an end before the start runs across midnight."),
					 errhint("Set enabled to false for no quiet hours.")));
	}
	if ((v = MonKey(c, "daily_summary_time")) != NULL)
	{
		p->has_summary = v->type != jbvNull;
		if (p->has_summary)
			p->summary = MonClock(v, "daily_summary_time");
	}
}

/* The effective preferences p as JSON text. */
static char *
MonPrefsJson(const MonPrefs *p)
{
	return psprintf("{\"notifications\": {\"email\": %s, \"sms\": %s, \"push\": %s},"
					" \"alert_threshold\": \"%s\","
					" \"quiet_hours\": {\"enabled\": %s, \"start\": \"%s\", \"end\": \"%s\"},"
					" \"daily_summary_time\": %s}",
					p->email ? "true" : "false", p->sms ? "true" : "false",
					p->push ? "true" : "false", severities[p->threshold],
					p->quiet ? "true" : "false", MonClockText(p->quiet_start),
					MonClockText(p->quiet_end),
					p->has_summary ? psprintf("\"%s\"", MonClockText(p->summary)) : "null");
}

/* The default preferences. */
static void
MonDefaultPrefs(MonPrefs *p)
{
	memset(p, 0, sizeof(*p));
	p->email = true;
	p->sms = true;
	p->push = false;
	p->threshold = MON_SEVERITY_MEDIUM;
	p->quiet = false;
	MonParseClock("22:00", &p->quiet_start);
	MonParseClock("07:00", &p->quiet_end);
}

/* A jsonb Datum of JSON text. */
static Datum
MonJsonb(const char *json)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}

/*
 * prm.add_caregiver(org_id, name, phone, email, timezone) RETURNS bigint
 */
Datum
prm_add_caregiver(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *name = PrmTextArg(fcinfo, 1, "name", PRM_MAX_NAME_LEN);
	char			 *phone = PrmTextArg(fcinfo, 2, "phone", 40);
	char			 *email = PrmTextArgOrNull(fcinfo, 3, "email", 254);
	char			 *tz = PrmTextArgOrNull(fcinfo, 4, "timezone", 64);
	MonPrefs		  prefs;
	Datum			  values[6];
	char			  nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  id;

	if (email)
		PrmCheckEmail(email);
	if (tz)
		tz = PrmValidateTimezone(tz);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	phone = PrmNormalizePhone(phone, PrmOrgPhoneRegion(org_id));
	MonDefaultPrefs(&prefs);
	PrmPrepare(&plan,
			   "INSERT INTO prm.caregiver (org_id, name, phone, email, timezone, preferences)"
			   " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
			   6, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(name);
	values[2] = CStringGetTextDatum(phone);
	values[3] = email ? CStringGetTextDatum(email) : (Datum) 0;
	nulls[3] = email ? ' ' : 'n';
	values[4] = tz ? CStringGetTextDatum(tz) : (Datum) 0;
	nulls[4] = tz ? ' ' : 'n';
	values[5] = MonJsonb(MonPrefsJson(&prefs));
	PrmExecute(plan, values, nulls, false, 0);
	id = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(org_id, "caregiver_added", "caregiver", id, NULL);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/* Raise P0002 unless caregiver id is organization org_id's; lock it. */
static void
MonRequireCaregiver(int64 org_id, int64 id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "SELECT 1 FROM prm.caregiver c WHERE c.org_id = $1 AND c.id = $2 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(id);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("caregiver %lld does not exist in organization %lld",
						(long long) id, (long long) org_id)));
}

/* Close the gaps of a patient's circle (0: every patient's): positions 1 .. n. */
static void
MonRenumberCircle(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "UPDATE prm.care_link l SET position = r.n"
			   "  FROM (SELECT k.patient_id, k.caregiver_id, pg_catalog.row_number()"
			   "               OVER (PARTITION BY k.patient_id ORDER BY k.position, k.linked_at) AS n"
			   "          FROM prm.care_link k WHERE k.org_id = $1 AND ($2 = 0 OR k.patient_id = $2)) r"
			   " WHERE l.org_id = $1 AND l.patient_id = r.patient_id AND l.caregiver_id = r.caregiver_id"
			   "   AND l.position <> r.n",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	PrmExecute(plan, values, NULL, false, 0);
}

/*
 * prm.link_caregiver(org_id, patient_id, caregiver_id, position) RETURNS void
 */
Datum
prm_link_caregiver(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr shift_plan = NULL;
	static SPIPlanPtr upsert_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	int64			  caregiver_id = PRM_GETARG_INT64_NOTNULL(2, "caregiver_id");
	int32			  position = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);
	Datum			  values[4];

	if (!PG_ARGISNULL(3) && (position < 1 || position > 100))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("position %d is out of range", position),
				 errdetail("Positions start at 1 (asked first); NULL puts the caregiver last.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, true);
	MonRequireCaregiver(org_id, caregiver_id);
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = Int64GetDatum(caregiver_id);
	values[3] = Int32GetDatum(position);
	/* make room: everyone else at or after the position moves down one */
	PrmPrepare(&shift_plan,
			   "UPDATE prm.care_link l SET position = l.position + 1"
			   " WHERE l.org_id = $1 AND l.patient_id = $2 AND l.caregiver_id <> $3"
			   "   AND $4 > 0 AND l.position >= $4",
			   4, (Oid[]){INT8OID, INT8OID, INT8OID, INT4OID});
	PrmExecute(shift_plan, values, NULL, false, 0);
	PrmPrepare(&upsert_plan,
			   "INSERT INTO prm.care_link (org_id, patient_id, caregiver_id, position)"
			   " SELECT $1, $2, $3, CASE WHEN $4 > 0 THEN $4 ELSE coalesce(pg_catalog.max(k.position), 0) + 1 END"
			   "   FROM prm.care_link k WHERE k.org_id = $1 AND k.patient_id = $2 AND k.caregiver_id <> $3"
			   " ON CONFLICT (org_id, patient_id, caregiver_id) DO UPDATE SET position = EXCLUDED.position",
			   4, (Oid[]){INT8OID, INT8OID, INT8OID, INT4OID});
	PrmExecute(upsert_plan, values, NULL, false, 0);
	MonRenumberCircle(org_id, patient_id);
	PrmEmitEvent(org_id, "caregiver_linked", "patient", patient_id,
				 psprintf("{\"caregiver_id\": %lld}", (long long) caregiver_id));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.unlink_caregiver(org_id, patient_id, caregiver_id) RETURNS boolean
 */
Datum
prm_unlink_caregiver(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	int64			  caregiver_id = PRM_GETARG_INT64_NOTNULL(2, "caregiver_id");
	Datum			  values[3];
	bool			  found;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, true);
	MonRequireCaregiver(org_id, caregiver_id);
	PrmPrepare(&plan,
			   "DELETE FROM prm.care_link l WHERE l.org_id = $1 AND l.patient_id = $2 AND l.caregiver_id = $3",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = Int64GetDatum(caregiver_id);
	found = PrmExecute(plan, values, NULL, false, 0) > 0;
	if (found)
	{
		MonRenumberCircle(org_id, patient_id);
		PrmEmitEvent(org_id, "caregiver_unlinked", "patient", patient_id,
					 psprintf("{\"caregiver_id\": %lld}", (long long) caregiver_id));
	}
	PrmSpiFinish();
	PG_RETURN_BOOL(found);
}

/*
 * prm.remove_caregiver(org_id, caregiver_id) RETURNS jsonb
 *	  The caregiver's messages are blanked (they name the caregiver's
 *	  address); links go with the row; alert notifications keep their
 *	  history without the caregiver.
 */
Datum
prm_remove_caregiver(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  caregiver_id = PRM_GETARG_INT64_NOTNULL(1, "caregiver_id");
	Datum			  values[2];
	bool			  isnull;
	Datum			  result;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	MonRequireCaregiver(org_id, caregiver_id);
	PrmPrepare(&plan,
			   "WITH c AS (SELECT c.phone, pg_catalog.lower(c.email) AS email, 'caregiver:' || c.id AS push"
			   "             FROM prm.caregiver c WHERE c.org_id = $1 AND c.id = $2),"
			   " m AS (UPDATE prm.outbound_message x SET body = '[erased]', to_address = '[erased]', dedup_key = NULL,"
			   "         status = CASE WHEN x.status = 'queued' THEN 'cancelled' ELSE x.status END, updated_at = pg_catalog.now()"
			   "       FROM c WHERE x.org_id = $1 AND x.kind LIKE 'caregiver%'"
			   "         AND (x.to_address = c.phone OR pg_catalog.lower(x.to_address) = c.email OR x.to_address = c.push)"
			   "       RETURNING 1),"
			   " h AS (UPDATE prm.outbound_message_history x SET body = '[erased]', to_address = '[erased]', dedup_key = NULL"
			   "       FROM c WHERE x.org_id = $1 AND x.kind LIKE 'caregiver%'"
			   "         AND (x.to_address = c.phone OR pg_catalog.lower(x.to_address) = c.email OR x.to_address = c.push)"
			   "       RETURNING 1),"
			   " l AS (SELECT k.patient_id FROM prm.care_link k WHERE k.org_id = $1 AND k.caregiver_id = $2),"
			   " d AS (DELETE FROM prm.caregiver c WHERE c.org_id = $1 AND c.id = $2 RETURNING 1)"
			   " SELECT pg_catalog.jsonb_build_object('caregiver', (SELECT pg_catalog.count(*) FROM d),"
			   "   'links', (SELECT pg_catalog.count(*) FROM l),"
			   "   'messages_blanked', (SELECT pg_catalog.count(*) FROM m) + (SELECT pg_catalog.count(*) FROM h))",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(caregiver_id);
	PrmExecute(plan, values, NULL, false, 1);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = SPI_datumTransfer(result, false, -1);
	MonRenumberCircle(org_id, 0); /* close the circles the caregiver left */
	PrmEmitEvent(org_id, "caregiver_removed", "caregiver", caregiver_id, NULL);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * prm.set_caregiver_preferences(org_id, caregiver_id, preferences) RETURNS jsonb
 */
Datum
prm_set_caregiver_preferences(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr read_plan = NULL;
	static SPIPlanPtr write_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  caregiver_id = PRM_GETARG_INT64_NOTNULL(1, "caregiver_id");
	Jsonb			 *input;
	MonPrefs		  prefs;
	Datum			  values[3];
	bool			  isnull;
	Datum			  current;
	Datum			  result;

	PrmArgNotNull(fcinfo, 2, "preferences");
	input = PG_GETARG_JSONB_P(2);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MonRequireCaregiver(org_id, caregiver_id);
	PrmPrepare(&read_plan,
			   "SELECT c.preferences FROM prm.caregiver c WHERE c.org_id = $1 AND c.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(caregiver_id);
	PrmExecute(read_plan, values, NULL, false, 1);
	current = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	MonDefaultPrefs(&prefs);
	MonApplyPrefs(&DatumGetJsonbP(current)->root, &prefs);
	MonApplyPrefs(&input->root, &prefs);
	PrmPrepare(&write_plan,
			   "UPDATE prm.caregiver c SET preferences = $3 WHERE c.org_id = $1 AND c.id = $2"
			   " RETURNING c.preferences",
			   3, (Oid[]){INT8OID, INT8OID, JSONBOID});
	values[2] = MonJsonb(MonPrefsJson(&prefs));
	PrmExecute(write_plan, values, NULL, false, 1);
	result = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
							   false, -1);
	MonScheduleSummary(org_id, caregiver_id);
	PrmEmitEvent(org_id, "caregiver_preferences_changed", "caregiver", caregiver_id, NULL);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/* The default monitoring settings. */
static void
MonDefaultSettings(MonSettings *s)
{
	memset(s, 0, sizeof(*s));
	s->enabled = true;
	s->threshold.time = 4 * USECS_PER_HOUR;
	s->wait.time = 15 * 60 * USECS_PER_SEC;
	s->loop = false;
	s->severity = MON_SEVERITY_HIGH;
}

/* Apply the monitoring settings in object c to s, validating every key. */
static void
MonApplySettings(JsonbContainer *c, MonSettings *s)
{
	static const char *const keys[] = {"enabled", "inactivity_threshold", "active_hours",
									   "escalation_wait", "escalation_loop", "severity",
									   "nudge_before", "nudge_channel"};
	static const char *const akeys[] = {"start", "end"};
	JsonbValue				*v;

	MonCheckKeys(c, "monitoring settings", keys, lengthof(keys));
	if ((v = MonKey(c, "enabled")) != NULL)
		s->enabled = MonBool(v, "enabled");
	if ((v = MonKey(c, "inactivity_threshold")) != NULL)
		s->threshold = MonInterval(v, "inactivity_threshold", 1, 30 * 86400);
	if ((v = MonKey(c, "escalation_wait")) != NULL)
		s->wait = MonInterval(v, "escalation_wait", 1, 86400);
	if ((v = MonKey(c, "escalation_loop")) != NULL)
		s->loop = MonBool(v, "escalation_loop");
	if ((v = MonKey(c, "nudge_before")) != NULL)
		s->nudge = MonInterval(v, "nudge_before", 0, 30 * 86400);
	if ((v = MonKey(c, "nudge_channel")) != NULL)
	{
		char *ch = MonString(v, "nudge_channel");

		if (strcmp(ch, "push") != 0 && strcmp(ch, "sms") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("nudge_channel \"%s\" is not recognized", ch),
					 errhint("Use push (the companion app) or sms.")));
		s->nudge_sms = strcmp(ch, "sms") == 0;
	}
	if ((v = MonKey(c, "severity")) != NULL)
	{
		char *sev = MonString(v, "severity");

		s->severity = MonParseSeverity(sev);
		if (s->severity < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("severity \"%s\" is not recognized", sev),
					 errhint("Use low, medium, high or critical.")));
	}
	if ((v = MonKey(c, "active_hours")) != NULL)
	{
		s->has_active = v->type != jbvNull;
		if (s->has_active)
		{
			JsonbContainer *a = MonObject(v, "active_hours");
			JsonbValue	   *b;

			MonCheckKeys(a, "active_hours", akeys, lengthof(akeys));
			if ((b = MonKey(a, "start")) == NULL || (v = MonKey(a, "end")) == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("active_hours needs both start and end")));
			s->active_start = MonClock(b, "active_hours.start");
			s->active_end = MonClock(v, "active_hours.end");
			if (s->active_start == s->active_end)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("active_hours start and end are both %s", MonClockText(s->active_start)),
						 errhint("Set active_hours to null to count silence all day.")));
		}
	}
}

/* The effective settings s as JSON text. */
static char *
MonSettingsJson(const MonSettings *s)
{
	char *threshold = DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(&s->threshold)));
	char *wait = DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(&s->wait)));

	char *nudge = DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(&s->nudge)));

	return psprintf("{\"enabled\": %s, \"inactivity_threshold\": \"%s\", \"active_hours\": %s,"
					" \"escalation_wait\": \"%s\", \"escalation_loop\": %s, \"severity\": \"%s\","
					" \"nudge_before\": \"%s\", \"nudge_channel\": \"%s\"}",
					s->enabled ? "true" : "false", threshold,
					s->has_active ? psprintf("{\"start\": \"%s\", \"end\": \"%s\"}",
											 MonClockText(s->active_start), MonClockText(s->active_end))
								  : "null",
					wait, s->loop ? "true" : "false", severities[s->severity], nudge,
					s->nudge_sms ? "sms" : "push");
}

/*
 * prm.set_monitoring(org_id, patient_id, settings) RETURNS jsonb
 *	  The deadline restarts from now or the last heartbeat, whichever is
 *	  later; the alert step refines it for active hours.
 */
Datum
prm_set_monitoring(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr read_plan = NULL;
	static SPIPlanPtr write_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	Jsonb			 *input;
	MonSettings		  s;
	Datum			  values[12];
	char			  nulls[12] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	Datum			  result;
	Datum			  due;

	PrmArgNotNull(fcinfo, 2, "settings");
	input = PG_GETARG_JSONB_P(2);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, true);
	MonDefaultSettings(&s);
	PrmPrepare(&read_plan,
			   "SELECT m.settings FROM prm.monitoring m WHERE m.org_id = $1 AND m.patient_id = $2 FOR UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	if (PrmExecute(read_plan, values, NULL, false, 1) == 1)
		MonApplySettings(&DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))->root, &s);
	MonApplySettings(&input->root, &s);
	if (PrmIntervalUsecs(&s.nudge) >= PrmIntervalUsecs(&s.threshold))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("nudge_before must be shorter than inactivity_threshold"),
				 errdetail("The patient is nudged that long before the inactivity deadline; \"0\" nudges no one.")));

	PrmPrepare(&write_plan,
			   "INSERT INTO prm.monitoring AS m (org_id, patient_id, settings, enabled, inactivity_threshold,"
			   "   active_start, active_end, escalation_wait, escalation_loop, severity, nudge_before, nudge_channel,"
			   "   next_due_at)"
			   " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
			   "        CASE WHEN $4 THEN pg_catalog.now() + $5 - $11 END"
			   "   FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2"
			   " ON CONFLICT (org_id, patient_id) DO UPDATE SET settings = EXCLUDED.settings,"
			   "   enabled = EXCLUDED.enabled, inactivity_threshold = EXCLUDED.inactivity_threshold,"
			   "   active_start = EXCLUDED.active_start, active_end = EXCLUDED.active_end,"
			   "   escalation_wait = EXCLUDED.escalation_wait, escalation_loop = EXCLUDED.escalation_loop,"
			   "   severity = EXCLUDED.severity, nudge_before = EXCLUDED.nudge_before, nudge_channel = EXCLUDED.nudge_channel,"
			   "   started_at = CASE WHEN m.enabled THEN m.started_at ELSE pg_catalog.now() END,"
			   /* an open inactivity alert keeps the deadline off until a heartbeat */
			   "   next_due_at = CASE WHEN EXCLUDED.enabled AND NOT EXISTS (SELECT 1 FROM prm.alert a"
			   "       WHERE a.org_id = $1 AND a.patient_id = $2 AND a.kind = 'inactivity' AND a.status <> 'resolved')"
			   "     THEN GREATEST(pg_catalog.now(), (SELECT p.last_heartbeat_at FROM prm.patient p"
			   "                                       WHERE p.org_id = $1 AND p.id = $2) + $5 - $11,"
			   "                   CASE WHEN m.enabled THEN m.started_at END + $5 - $11) END"
			   " RETURNING m.settings, m.next_due_at",
			   12, (Oid[]){INT8OID, INT8OID, JSONBOID, BOOLOID, INTERVALOID, TIMEOID, TIMEOID, INTERVALOID, BOOLOID, TEXTOID, INTERVALOID, TEXTOID});
	values[2] = MonJsonb(MonSettingsJson(&s));
	values[3] = BoolGetDatum(s.enabled);
	values[4] = IntervalPGetDatum(&s.threshold);
	values[5] = TimeADTGetDatum(s.active_start);
	values[6] = TimeADTGetDatum(s.active_end);
	if (!s.has_active)
		nulls[5] = nulls[6] = 'n';
	values[7] = IntervalPGetDatum(&s.wait);
	values[8] = BoolGetDatum(s.loop);
	values[9] = CStringGetTextDatum(severities[s.severity]);
	values[10] = IntervalPGetDatum(&s.nudge);
	values[11] = CStringGetTextDatum(s.nudge_sms ? "sms" : "push");
	PrmExecute(write_plan, values, nulls, false, 1);
	result = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
							   false, -1);
	due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		PrmWakeWorker(DatumGetTimestampTz(due));
	PrmEmitEvent(org_id, "monitoring_changed", "patient", patient_id, NULL);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * prm.record_heartbeat(org_id, patient_id, kind, details) RETURNS void
 *	  The hot path: see the file's header.
 */
Datum
prm_record_heartbeat(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr beat_plan = NULL;
	static SPIPlanPtr alert_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	char			 *kind = PrmTextArg(fcinfo, 2, "kind", 50);
	Jsonb			 *details;
	JsonbValue		 *version = NULL;
	Datum			  values[5];
	char			  nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int				  n,
		i;

	PrmArgNotNull(fcinfo, 3, "details");
	details = PG_GETARG_JSONB_P(3);
	if (!JB_ROOT_IS_OBJECT(details) || JB_ROOT_IS_SCALAR(details))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("heartbeat details must be a JSON object")));
	if (VARSIZE(details) > 4000)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("heartbeat details are too long"),
				 errdetail("At most about 4000 bytes are kept per heartbeat.")));
	version = MonKey(&details->root, "app_version");
	if (version != NULL && (version->type != jbvString || version->val.string.len > 50))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("app_version must be a string of at most 50 characters")));

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_WEBHOOK);
	PrmPrepare(&beat_plan,
			   "WITH u AS (UPDATE prm.patient p SET last_heartbeat_at = pg_catalog.now(),"
			   "             app_version = coalesce($5, p.app_version)"
			   "           WHERE p.org_id = $1 AND p.id = $2 RETURNING p.id),"
			   " i AS (INSERT INTO prm.patient_activity (org_id, patient_id, kind, details)"
			   "       SELECT $1, u.id, $3, $4 FROM u RETURNING 1)"
			   " SELECT pg_catalog.count(*) FROM i",
			   5, (Oid[]){INT8OID, INT8OID, TEXTOID, JSONBOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = CStringGetTextDatum(kind);
	values[3] = JsonbPGetDatum(details);
	if (version != NULL)
		values[4] = PointerGetDatum(cstring_to_text_with_len(version->val.string.val, version->val.string.len));
	else
		nulls[4] = 'n';
	PrmExecute(beat_plan, values, nulls, false, 1);
	if (PrmGetInt64(0, 1, &isnull) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("patient %lld does not exist in organization %lld",
						(long long) patient_id, (long long) org_id)));
	/* a fresh snapshot: an alert the step committed while we waited is seen */
	PrmPrepare(&alert_plan,
			   "SELECT a.id FROM prm.alert a WHERE a.org_id = $1 AND a.patient_id = $2"
			   "   AND a.kind = 'inactivity' AND a.status <> 'resolved'",
			   2, (Oid[]){INT8OID, INT8OID});
	n = PrmExecute(alert_plan, values, NULL, false, 0);
	if (n > 0)
	{
		int64 *ids = palloc(sizeof(int64) * n);

		for (i = 0; i < n; i++)
			ids[i] = PrmGetInt64(i, 1, &isnull);
		for (i = 0; i < n; i++)
			MonResolve(org_id, ids[i], "heartbeat");
	}
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.acknowledge_alert(org_id, alert_id, caregiver_id) RETURNS void
 */
Datum
prm_acknowledge_alert(PG_FUNCTION_ARGS)
{
	int64 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64 alert_id = PRM_GETARG_INT64_NOTNULL(1, "alert_id");
	int64 caregiver_id = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	if (caregiver_id != 0)
		MonRequireCaregiver(org_id, caregiver_id);
	(void) MonAcknowledge(org_id, alert_id, caregiver_id);
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.resolve_alert(org_id, alert_id) RETURNS boolean
 */
Datum
prm_resolve_alert(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  alert_id = PRM_GETARG_INT64_NOTNULL(1, "alert_id");
	Datum			  values[2];
	bool			  done;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&plan, "SELECT 1 FROM prm.alert a WHERE a.org_id = $1 AND a.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(alert_id);
	if (PrmExecute(plan, values, NULL, true, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("alert %lld does not exist in organization %lld",
						(long long) alert_id, (long long) org_id)));
	done = MonResolve(org_id, alert_id, "staff");
	PrmSpiFinish();
	PG_RETURN_BOOL(done);
}

/* See monitor.h. */
bool
PrmMonitorCaregiverReply(int64 org_id, const char *from_e164, const char *keyword,
						 char **reply)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	int64			  alert_id,
		caregiver_id;

	*reply = NULL;
	if (keyword == NULL || pg_strcasecmp(keyword, "OK") != 0)
		return false;
	PrmPrepare(&plan,
			   "SELECT n.alert_id, n.caregiver_id FROM prm.caregiver c"
			   "  JOIN prm.alert_notification n ON n.org_id = c.org_id AND n.caregiver_id = c.id"
			   "  JOIN prm.alert a ON a.org_id = n.org_id AND a.id = n.alert_id"
			   " WHERE c.org_id = $1 AND c.phone = $2 AND n.purpose = 'alert' AND a.status = 'open'"
			   " ORDER BY n.created_at DESC, n.id DESC LIMIT 1",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(from_e164);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		return false;
	alert_id = PrmGetInt64(0, 1, &isnull);
	caregiver_id = PrmGetInt64(0, 2, &isnull);
	if (MonAcknowledge(org_id, alert_id, caregiver_id))
		*reply = pstrdup("Thank you. You have taken responsibility for this alert; the others will not be asked.");
	else
		*reply = pstrdup("Thank you. This alert was already taken care of.");
	return true;
}

/*
 * prm.caregiver_reply(org_id, from_phone, body) RETURNS text
 *	  A thin wrapper of PrmMonitorCaregiverReply for tests and for
 *	  applications that route caregivers' replies themselves.
 */
Datum
prm_caregiver_reply(PG_FUNCTION_ARGS)
{
	int64 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char *from = PrmTextArg(fcinfo, 1, "from_phone", 40);
	char *body = PrmTextArg(fcinfo, 2, "body", 1600);
	char *reply;
	char *keyword;
	bool  handled;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_WEBHOOK);
	from = PrmNormalizePhone(from, PrmOrgPhoneRegion(org_id));
	keyword = pstrdup(body);
	/* the first word, without surrounding blanks or punctuation */
	while (*keyword && !isalnum((unsigned char) *keyword))
		keyword++;
	{
		char *e = keyword;

		while (*e && isalnum((unsigned char) *e))
			e++;
		*e = '\0';
	}
	handled = PrmMonitorCaregiverReply(org_id, from, keyword, &reply);
	PrmSpiFinish();
	if (!handled)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(reply));
}
