/*-------------------------------------------------------------------------
 *
 * journey_def.c
 *	  Journey definitions: creating, changing and retiring journeys and
 *	  their stages, and the checks of what a definition may say (event
 *	  kinds, settings, stage actions, waits).
 *
 * Stages are numbered 1..n among the live ones.  Moving a stage renumbers
 * the others; retiring one moves the later ones up and its instances on to
 * the next stage (due at once: the worker runs that stage's actions), or,
 * when no stage is left after it, to the end (the worker completes them).
 * Every change of a journey's stages locks the journey row first (FOR NO
 * KEY UPDATE), so two changes, or a change and an instance moving on, see
 * one numbering.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "journey.h"
#include "monitor.h"
#include "outbox.h"
#include "ticket.h"

PG_FUNCTION_INFO_V1(prm_create_journey);
PG_FUNCTION_INFO_V1(prm_update_journey);
PG_FUNCTION_INFO_V1(prm_retire_journey);
PG_FUNCTION_INFO_V1(prm_add_journey_stage);
PG_FUNCTION_INFO_V1(prm_update_journey_stage);
PG_FUNCTION_INFO_V1(prm_move_journey_stage);
PG_FUNCTION_INFO_V1(prm_retire_journey_stage);

/*
 * The kinds of prm.event that are about a patient (they carry patient_id):
 * the only ones a journey can be triggered, ended or moved on by.
 */
static const char *const patient_event_kinds[] = {
	"alert_acknowledged",
	"alert_escalated",
	"alert_opened",
	"alert_repeated",
	"alert_resolved",
	"appointment_booked",
	"appointment_cancelled",
	"appointment_confirmed",
	"appointment_status_changed",
	"call_recorded",
	"cancellation_undone",
	"caregiver_linked",
	"caregiver_unlinked",
	"conversation_replied",
	"conversation_started",
	"delivery_status",
	"handoff_requested",
	"journey_cancelled",
	"journey_completed",
	"journey_exited",
	"journey_started",
	"message_dead",
	"message_queued",
	"message_received",
	"monitoring_changed",
	"offer_accepted",
	"offer_declined",
	"offer_sent",
	"offer_too_late",
	"offer_withdrawn",
	"patient_added",
	"patient_nudged",
	"patient_opted_in",
	"patient_opted_out",
	"placement_matched",
	"placement_requested",
	"placement_withdrawn",
	"reminder_added",
	"reminder_confirmed",
	"reminder_missed",
	"sms_received",
	"ticket_first_reply",
	"ticket_opened",
	"ticket_sla_breached",
	"ticket_status_changed",
	"waitlist_entry_updated",
	"waitlist_joined",
	"waitlist_left",
	"waitlist_preferences_set",
};

/* Raise 22023 unless kind is an event kind about a patient. */
void
JourneyCheckEventKind(const char *kind, const char *what)
{
	int i;

	for (i = 0; i < (int) lengthof(patient_event_kinds); i++)
		if (strcmp(kind, patient_event_kinds[i]) == 0)
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown event kind \"%s\" for %s", kind, what),
			 errdetail("Journeys follow the events about a patient, such as appointment_booked, "
					   "appointment_status_changed, patient_added or waitlist_joined."),
			 errhint("README.md lists every event kind about a patient.")));
}

/*
 * A wait's or advance_after's length in microseconds: 22023 unless it is
 * at least 0 (more than 0 for a wait) and at most 366 days.
 */
int64
JourneyCheckWait(Interval *iv, const char *what)
{
	int64 usecs;

	if (!PrmIntervalToUsecs(iv, &usecs) || usecs < 0 || usecs > JOURNEY_MAX_WAIT_USECS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is out of range", what,
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 errdetail("A journey waits at least 0 and at most 366 days.")));
	return usecs;
}

/* ---------- stage actions ---------- */

/*
 * The string member key of an action object (NULL when absent); 22023 if it
 * is not a string or longer than maxlen.
 */
static char *
ActionString(JsonbContainer *obj, const char *key, int maxlen, int n)
{
	JsonbValue v;
	char	  *s;

	if (getKeyJsonValueFromContainer(obj, key, strlen(key), &v) == NULL)
		return NULL;
	if (v.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("action %d: \"%s\" must be a string", n, key)));
	s = pnstrdup(v.val.string.val, v.val.string.len);
	PrmCheckTextLength(s, psprintf("action %d: %s", n, key), maxlen);
	return s;
}

/* 22023 unless every key of the action object is one of allowed. */
static void
ActionKeysAllowed(JsonbContainer *obj, const char *const *allowed, int nallowed, int n,
				  const char *type)
{
	JsonbIterator	  *it = JsonbIteratorInit(obj);
	JsonbValue		   v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		int i;

		if (tok != WJB_KEY)
			continue;
		for (i = 0; i < nallowed; i++)
			if (strlen(allowed[i]) == (size_t) v.val.string.len &&
				strncmp(allowed[i], v.val.string.val, v.val.string.len) == 0)
				break;
		if (i == nallowed)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("action %d (%s) has an unknown key \"%.*s\"", n, type,
							Min(v.val.string.len, 64), v.val.string.val)));
	}
}

/* An interval member of a wait action, checked as a wait (> 0). */
static void
ActionInterval(const char *s, int n, const char *key)
{
	Interval *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(s),
														 ObjectIdGetDatum(InvalidOid),
														 Int32GetDatum(-1)));

	if (JourneyCheckWait(iv, psprintf("action %d: %s", n, key)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("action %d: %s must be longer than 0", n, key)));
}

/* One action object, number n (1-based). */
static void
CheckAction(JsonbContainer *obj, int n)
{
	static const char *const send_keys[] = {"type", "template", "channel"};
	static const char *const ticket_keys[] = {"type", "subject", "priority", "description"};
	static const char *const wait_keys[] = {"type", "for", "until_local", "before_appointment"};
	char					*type = ActionString(obj, "type", 20, n);

	if (type == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("action %d has no \"type\"", n),
				 errdetail("An action's type is send, open_ticket or wait.")));
	if (strcmp(type, "send") == 0)
	{
		char	   *kind = ActionString(obj, "template", 63, n);
		char	   *channel = ActionString(obj, "channel", 20, n);
		const char *p;

		ActionKeysAllowed(obj, send_keys, lengthof(send_keys), n, type);
		if (kind == NULL || kind[0] < 'a' || kind[0] > 'z')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("action %d (send) needs a \"template\": a message kind", n),
					 errdetail("A kind is lower-case letters, digits and underscores, starting with a letter.")));
		for (p = kind; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("action %d (send): \"%s\" is not a message kind", n, kind),
						 errdetail("A kind is lower-case letters, digits and underscores, starting with a letter.")));
		OutboxCheckChannel(channel ? channel : "sms");
	}
	else if (strcmp(type, "open_ticket") == 0)
	{
		char *subject = ActionString(obj, "subject", PRM_MAX_NAME_LEN, n);
		char *priority = ActionString(obj, "priority", 20, n);

		ActionKeysAllowed(obj, ticket_keys, lengthof(ticket_keys), n, type);
		(void) ActionString(obj, "description", PRM_MAX_TEXT_LEN, n);
		if (subject == NULL || subject[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("action %d (open_ticket) needs a \"subject\"", n)));
		if (priority)
			PrmCheckTicketPriority(priority);
	}
	else if (strcmp(type, "wait") == 0)
	{
		char   *forv = ActionString(obj, "for", 100, n);
		char   *until = ActionString(obj, "until_local", 5, n);
		char   *before = ActionString(obj, "before_appointment", 100, n);
		TimeADT tod;

		ActionKeysAllowed(obj, wait_keys, lengthof(wait_keys), n, type);
		if ((forv != NULL) + (until != NULL) + (before != NULL) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("action %d (wait) needs exactly one of \"for\", \"until_local\" and \"before_appointment\"", n)));
		if (forv)
			ActionInterval(forv, n, "for");
		if (before)
			ActionInterval(before, n, "before_appointment");
		if (until && !MonParseClock(until, &tod))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("action %d (wait): until_local \"%s\" is not a time of day", n, until),
					 errdetail("A time of day is \"HH:MM\", 00:00 to 23:59, in the patient's time zone.")));
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("action %d has an unknown type \"%s\"", n, type),
				 errdetail("An action's type is send, open_ticket or wait.")));
}

/* 22023 unless actions is an array of at most 20 well-formed actions. */
void
JourneyCheckActions(Jsonb *actions)
{
	uint32 i,
		n;

	if (!JB_ROOT_IS_ARRAY(actions) || JB_ROOT_IS_SCALAR(actions))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a stage's actions must be a JSON array"),
				 errdetail("For example [{\"type\": \"send\", \"template\": \"welcome\", \"channel\": \"sms\"}].")));
	n = JB_ROOT_COUNT(actions);
	if (n > JOURNEY_MAX_ACTIONS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a stage has at most %d actions, not %u", JOURNEY_MAX_ACTIONS, n),
				 errhint("Split the work over several stages.")));
	for (i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(&actions->root, i);

		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("action %u must be a JSON object", i + 1)));
		CheckAction(v->val.binary.data, (int) i + 1);
	}
}

/* ---------- journey settings ---------- */

typedef struct JourneySettings
{
	bool  has_exit, has_goal, has_reentry, has_active, has_filter, has_name, has_trigger;
	Datum exit_events;	 /* text[] */
	Datum goal_events;	 /* text[] */
	bool  reentry_never; /* reentry 'never' (NULL interval) */
	Datum reentry;		 /* interval */
	bool  active;
	bool  filter_null;
	Datum filter; /* jsonb object */
	char *name;
	char *trigger; /* NULL: none */
} JourneySettings;

/* A text[] of event kinds from a JSON array of strings. */
static Datum
SettingsKinds(JsonbValue *v, const char *key)
{
	ArrayBuildState *astate = NULL;
	uint32			 i,
		n;

	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("journey setting %s must be an array of event kinds", key)));
	n = JsonContainerSize(v->val.binary.data);
	if (n > 50)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("journey setting %s names at most 50 event kinds", key)));
	astate = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	for (i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(v->val.binary.data, i);
		char	   *kind;

		if (e->type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("journey setting %s must be an array of event kinds", key)));
		kind = pnstrdup(e->val.string.val, Min(e->val.string.len, 100));
		JourneyCheckEventKind(kind, key);
		astate = accumArrayResult(astate, CStringGetTextDatum(kind), false, TEXTOID,
								  CurrentMemoryContext);
	}
	return makeArrayResult(astate, CurrentMemoryContext);
}

/*
 * Read a journey's settings object into *s (the keys given only); 22023 for
 * an unknown key or a malformed value.  name and trigger_event are settings
 * only for update_journey.
 */
static void
ParseSettings(Jsonb *settings, JourneySettings *s, bool for_update)
{
	JsonbIterator *it;
	JsonbValue	   k,
		v;
	JsonbIteratorToken tok;

	memset(s, 0, sizeof(*s));
	if (!JB_ROOT_IS_OBJECT(settings))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("journey settings must be a JSON object")));
	it = JsonbIteratorInit(&settings->root);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(k.val.string.val, Min(k.val.string.len, 64));
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		if (strcmp(key, "exit_events") == 0)
			s->has_exit = true, s->exit_events = SettingsKinds(&v, key);
		else if (strcmp(key, "goal_events") == 0)
			s->has_goal = true, s->goal_events = SettingsKinds(&v, key);
		else if (strcmp(key, "active") == 0)
		{
			if (v.type != jbvBool)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("journey setting active must be true or false")));
			s->has_active = true, s->active = v.val.boolean;
		}
		else if (strcmp(key, "reentry") == 0)
		{
			char	 *r;
			Interval *iv;

			if (v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("journey setting reentry must be \"never\" or an interval")));
			r = pnstrdup(v.val.string.val, Min(v.val.string.len, 100));
			s->has_reentry = true;
			s->reentry_never = strcmp(r, "never") == 0;
			if (!s->reentry_never)
			{
				iv = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(r),
														   ObjectIdGetDatum(InvalidOid),
														   Int32GetDatum(-1)));
				if (JourneyCheckWait(iv, "reentry") == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("journey setting reentry must be longer than 0"),
							 errhint("Use \"never\" for a journey a patient takes once.")));
				s->reentry = IntervalPGetDatum(iv);
			}
		}
		else if (strcmp(key, "trigger_filter") == 0)
		{
			s->has_filter = true;
			if (v.type == jbvNull)
				s->filter_null = true;
			else if (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
				s->filter = JsonbPGetDatum(JsonbValueToJsonb(&v));
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("journey setting trigger_filter must be a JSON object"),
						 errdetail("The triggering event's payload must contain it, e.g. {\"to\": \"arrived\"}.")));
		}
		else if (for_update && strcmp(key, "name") == 0 && v.type == jbvString)
		{
			s->has_name = true;
			s->name = pnstrdup(v.val.string.val, Min(v.val.string.len, PRM_MAX_NAME_LEN + 1));
			PrmCheckTextLength(s->name, "name", PRM_MAX_NAME_LEN);
			if (s->name[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("name must not be empty")));
		}
		else if (for_update && strcmp(key, "trigger_event") == 0 &&
				 (v.type == jbvString || v.type == jbvNull))
		{
			s->has_trigger = true;
			if (v.type == jbvString)
			{
				s->trigger = pnstrdup(v.val.string.val, Min(v.val.string.len, 100));
				JourneyCheckEventKind(s->trigger, "trigger_event");
			}
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown or malformed journey setting \"%s\"", key),
					 errdetail("The settings are exit_events, goal_events, reentry, active and trigger_filter%s.",
							   for_update ? ", and name and trigger_event" : "")));
	}
}

/* Lock a live journey of the organization (P0002 if none, 55000 if retired). */
static void
LockJourney(int64 org_id, int64 journey_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2] = {Int64GetDatum(org_id), Int64GetDatum(journey_id)};
	bool			  isnull;

	PrmPrepare(&plan,
			   "SELECT j.retired_at IS NOT NULL FROM prm.journey j"
			   " WHERE j.org_id = $1 AND j.id = $2 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("journey %lld not found in organization %lld", (long long) journey_id,
						(long long) org_id)));
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("journey %lld is retired", (long long) journey_id),
				 errhint("Create a new journey instead.")));
}

/*
 * The journey of a live stage, locked (journey first, then the stage); P0002
 * if the stage is unknown, 55000 if retired.
 */
static int64
LockStage(int64 org_id, int64 stage_id)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr stage_plan = NULL;
	Datum			  values[2] = {Int64GetDatum(org_id), Int64GetDatum(stage_id)};
	bool			  isnull;
	int64			  journey_id;

	PrmPrepare(&plan,
			   "SELECT s.journey_id FROM prm.journey_stage s WHERE s.org_id = $1 AND s.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	if (PrmExecute(plan, values, NULL, true, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("journey stage %lld not found in organization %lld", (long long) stage_id,
						(long long) org_id)));
	journey_id = PrmGetInt64(0, 1, &isnull);
	LockJourney(org_id, journey_id);
	PrmPrepare(&stage_plan,
			   "SELECT 1 FROM prm.journey_stage s WHERE s.org_id = $1 AND s.id = $2"
			   "   AND s.retired_at IS NULL FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	if (PrmExecute(stage_plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("journey stage %lld is retired", (long long) stage_id)));
	return journey_id;
}

/* A stage's arguments 3..5 checked: actions, advance_after, advance_on. */
static void
StageArgs(FunctionCallInfo fcinfo, Datum *values, char *nulls)
{
	Jsonb *actions = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	char  *on = PrmTextArgOrNull(fcinfo, 5, "advance_on", 100);

	if (actions == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("actions must not be NULL"),
				 errhint("A stage without actions has actions '[]'.")));
	JourneyCheckActions(actions);
	values[0] = JsonbPGetDatum(actions);
	nulls[0] = ' ';
	nulls[1] = PG_ARGISNULL(4) ? 'n' : ' ';
	if (!PG_ARGISNULL(4))
	{
		values[1] = PG_GETARG_DATUM(4);
		(void) JourneyCheckWait(PG_GETARG_INTERVAL_P(4), "advance_after");
	}
	nulls[2] = on ? ' ' : 'n';
	if (on)
	{
		JourneyCheckEventKind(on, "advance_on");
		values[2] = CStringGetTextDatum(on);
	}
}

/* ---------- the SQL functions ---------- */

Datum
prm_create_journey(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *name = PrmTextArg(fcinfo, 1, "name", PRM_MAX_NAME_LEN);
	char			 *trigger = PrmTextArgOrNull(fcinfo, 2, "trigger_event", 100);
	Jsonb			 *settings = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	JourneySettings	  s;
	Datum			  values[9];
	char			  nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  id;

	if (trigger)
		JourneyCheckEventKind(trigger, "trigger_event");
	if (settings)
		ParseSettings(settings, &s, false);
	else
		memset(&s, 0, sizeof(s));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmPrepare(&plan,
			   "INSERT INTO prm.journey (org_id, name, trigger_event, trigger_filter, exit_events,"
			   "                         goal_events, reentry, active)"
			   " VALUES ($1, $2, $3, $4, coalesce($5, '{}'), coalesce($6, '{}'), $7, coalesce($8, true))"
			   " ON CONFLICT DO NOTHING RETURNING id",
			   8, (Oid[]){INT8OID, TEXTOID, TEXTOID, JSONBOID, TEXTARRAYOID, TEXTARRAYOID, INTERVALOID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(name);
	values[2] = trigger ? CStringGetTextDatum(trigger) : (Datum) 0;
	nulls[2] = trigger ? ' ' : 'n';
	values[3] = s.filter;
	nulls[3] = s.has_filter && !s.filter_null ? ' ' : 'n';
	values[4] = s.exit_events;
	nulls[4] = s.has_exit ? ' ' : 'n';
	values[5] = s.goal_events;
	nulls[5] = s.has_goal ? ' ' : 'n';
	values[6] = s.reentry;
	nulls[6] = s.has_reentry && !s.reentry_never ? ' ' : 'n';
	values[7] = BoolGetDatum(s.active);
	nulls[7] = s.has_active ? ' ' : 'n';
	if (PrmExecute(plan, values, nulls, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("organization %lld already has a journey named \"%s\"", (long long) org_id, name)));
	id = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(org_id, "journey_created", "journey", id,
				 psprintf("{\"name\": %s}", PrmJsonString(name)));
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

Datum
prm_update_journey(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  journey_id = PRM_GETARG_INT64_NOTNULL(1, "journey_id");
	JourneySettings	  s;
	Datum			  values[16];
	char			  nulls[16];

	PrmArgNotNull(fcinfo, 2, "settings");
	ParseSettings(PG_GETARG_JSONB_P(2), &s, true);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	LockJourney(org_id, journey_id);
	PrmPrepare(&plan,
			   "UPDATE prm.journey j SET"
			   "   exit_events = CASE WHEN $3 THEN $4 ELSE j.exit_events END,"
			   "   goal_events = CASE WHEN $5 THEN $6 ELSE j.goal_events END,"
			   "   reentry = CASE WHEN $7 THEN $8 ELSE j.reentry END,"
			   "   active = CASE WHEN $9 THEN $10 ELSE j.active END,"
			   "   trigger_filter = CASE WHEN $11 THEN $12 ELSE j.trigger_filter END,"
			   "   name = CASE WHEN $13 THEN $14 ELSE j.name END,"
			   "   trigger_event = CASE WHEN $15 THEN $16 ELSE j.trigger_event END,"
			   "   updated_at = pg_catalog.now()"
			   " WHERE j.org_id = $1 AND j.id = $2",
			   16,
			   (Oid[]){INT8OID, INT8OID, BOOLOID, TEXTARRAYOID, BOOLOID, TEXTARRAYOID, BOOLOID,
					   INTERVALOID, BOOLOID, BOOLOID, BOOLOID, JSONBOID, BOOLOID, TEXTOID, BOOLOID,
					   TEXTOID});
	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(journey_id);
	values[2] = BoolGetDatum(s.has_exit);
	values[3] = s.exit_events;
	nulls[3] = s.has_exit ? ' ' : 'n';
	values[4] = BoolGetDatum(s.has_goal);
	values[5] = s.goal_events;
	nulls[5] = s.has_goal ? ' ' : 'n';
	values[6] = BoolGetDatum(s.has_reentry);
	values[7] = s.reentry;
	nulls[7] = s.has_reentry && !s.reentry_never ? ' ' : 'n';
	values[8] = BoolGetDatum(s.has_active);
	values[9] = BoolGetDatum(s.active);
	values[10] = BoolGetDatum(s.has_filter);
	values[11] = s.filter;
	nulls[11] = s.has_filter && !s.filter_null ? ' ' : 'n';
	values[12] = BoolGetDatum(s.has_name);
	values[13] = s.has_name ? CStringGetTextDatum(s.name) : (Datum) 0;
	nulls[13] = s.has_name ? ' ' : 'n';
	values[14] = BoolGetDatum(s.has_trigger);
	values[15] = s.trigger ? CStringGetTextDatum(s.trigger) : (Datum) 0;
	nulls[15] = s.trigger ? ' ' : 'n';
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "journey_updated", "journey", journey_id,
				 JsonbToCString(NULL, &PG_GETARG_JSONB_P(2)->root, 64));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

Datum
prm_retire_journey(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  journey_id = PRM_GETARG_INT64_NOTNULL(1, "journey_id");
	Datum			  values[2] = {Int64GetDatum(org_id), Int64GetDatum(journey_id)};
	bool			  isnull;
	int64			  n;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	LockJourney(org_id, journey_id);
	PrmPrepare(&plan,
			   "WITH j AS (UPDATE prm.journey j SET active = false, retired_at = pg_catalog.now(),"
			   "                                  updated_at = pg_catalog.now()"
			   "            WHERE j.org_id = $1 AND j.id = $2),"
			   " ended AS (UPDATE prm.journey_instance i SET status = 'cancelled', ended_at = pg_catalog.now(),"
			   "               end_reason = 'journey_retired', due_at = NULL, updated_at = pg_catalog.now()"
			   "            WHERE i.org_id = $1 AND i.journey_id = $2 AND i.status = 'active'"
			   "            RETURNING i.org_id, i.id, i.stage_position),"
			   " h AS (INSERT INTO prm.journey_step (org_id, instance_id, stage_position, kind, detail)"
			   "        SELECT e.org_id, e.id, e.stage_position, 'cancelled', '{\"reason\": \"journey_retired\"}'"
			   "          FROM ended e)"
			   " SELECT pg_catalog.count(*) FROM ended",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(plan, values, NULL, false, 0);
	n = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(org_id, "journey_retired", "journey", journey_id,
				 psprintf("{\"instances_cancelled\": %lld}", (long long) n));
	PrmSpiFinish();
	PG_RETURN_INT32((int32) n);
}

Datum
prm_add_journey_stage(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  journey_id = PRM_GETARG_INT64_NOTNULL(1, "journey_id");
	char			 *name = PrmTextArg(fcinfo, 2, "name", PRM_MAX_NAME_LEN);
	Datum			  values[6];
	char			  nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  id;

	StageArgs(fcinfo, values + 3, nulls + 3);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	LockJourney(org_id, journey_id);
	PrmPrepare(&plan,
			   "INSERT INTO prm.journey_stage (org_id, journey_id, position, name, actions,"
			   "                               advance_after, advance_on)"
			   " SELECT $1, $2, coalesce(pg_catalog.max(s.position), 0) + 1, $3, $4, $5, $6"
			   "   FROM prm.journey_stage s"
			   "  WHERE s.org_id = $1 AND s.journey_id = $2 AND s.retired_at IS NULL"
			   " HAVING pg_catalog.count(*) < 100"
			   " RETURNING id",
			   6, (Oid[]){INT8OID, INT8OID, TEXTOID, JSONBOID, INTERVALOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(journey_id);
	values[2] = CStringGetTextDatum(name);
	if (PrmExecute(plan, values, nulls, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("journey %lld already has 100 stages", (long long) journey_id)));
	id = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(org_id, "journey_stage_added", "journey", journey_id,
				 psprintf("{\"stage_id\": %lld}", (long long) id));
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

Datum
prm_update_journey_stage(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  stage_id = PRM_GETARG_INT64_NOTNULL(1, "stage_id");
	char			 *name = PrmTextArg(fcinfo, 2, "name", PRM_MAX_NAME_LEN);
	Datum			  values[6];
	char			  nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int64			  journey_id;

	StageArgs(fcinfo, values + 3, nulls + 3);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	journey_id = LockStage(org_id, stage_id);
	PrmPrepare(&plan,
			   "UPDATE prm.journey_stage s SET name = $3, actions = $4, advance_after = $5,"
			   "       advance_on = $6, updated_at = pg_catalog.now()"
			   " WHERE s.org_id = $1 AND s.id = $2",
			   6, (Oid[]){INT8OID, INT8OID, TEXTOID, JSONBOID, INTERVALOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(stage_id);
	values[2] = CStringGetTextDatum(name);
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "journey_stage_updated", "journey", journey_id,
				 psprintf("{\"stage_id\": %lld}", (long long) stage_id));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * Number a journey's live stages 1..n again, with stage_id at position
 * (0: stage_id is no longer live and simply drops out), and show the new
 * positions on the active instances.  The journey is locked.  Two
 * statements, because PostgreSQL checks the unique index on live positions
 * row by row: first every live stage moves out of 1..100, then each takes
 * its place.
 */
static void
RenumberStages(int64 org_id, int64 journey_id, int64 stage_id, int position)
{
	static SPIPlanPtr lift_plan = NULL;
	static SPIPlanPtr place_plan = NULL;
	static SPIPlanPtr show_plan = NULL;
	Datum			  values[4] = {Int64GetDatum(org_id), Int64GetDatum(journey_id),
								   Int64GetDatum(stage_id), Int32GetDatum(position)};

	PrmPrepare(&lift_plan,
			   "UPDATE prm.journey_stage s SET position = s.position + 1000"
			   " WHERE s.org_id = $1 AND s.journey_id = $2 AND s.retired_at IS NULL",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(lift_plan, values, NULL, false, 0);
	PrmPrepare(&place_plan,
			   "WITH others AS (SELECT s.id, pg_catalog.row_number() OVER (ORDER BY s.position)::numeric AS k"
			   "                  FROM prm.journey_stage s"
			   "                 WHERE s.org_id = $1 AND s.journey_id = $2 AND s.retired_at IS NULL AND s.id <> $3),"
			   " wanted AS (SELECT o.id, o.k FROM others o UNION ALL SELECT $3, $4 - 0.5 WHERE $4 > 0),"
			   " ordered AS (SELECT w.id, pg_catalog.row_number() OVER (ORDER BY w.k)::int AS pos FROM wanted w)"
			   " UPDATE prm.journey_stage s SET position = o.pos, updated_at = pg_catalog.now()"
			   "   FROM ordered o WHERE s.org_id = $1 AND s.id = o.id",
			   4, (Oid[]){INT8OID, INT8OID, INT8OID, INT4OID});
	PrmExecute(place_plan, values, NULL, false, 0);
	PrmPrepare(&show_plan,
			   "UPDATE prm.journey_instance i SET stage_position = s.position, updated_at = pg_catalog.now()"
			   "  FROM prm.journey_stage s"
			   " WHERE i.org_id = $1 AND i.journey_id = $2 AND i.status = 'active'"
			   "   AND s.org_id = i.org_id AND s.id = i.stage_id AND s.retired_at IS NULL"
			   "   AND i.stage_position IS DISTINCT FROM s.position",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(show_plan, values, NULL, false, 0);
}

Datum
prm_move_journey_stage(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr count_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  stage_id = PRM_GETARG_INT64_NOTNULL(1, "stage_id");
	int32			  position = PRM_GETARG_INT32_NOTNULL(2, "position");
	Datum			  values[2];
	bool			  isnull;
	int64			  journey_id;
	int64			  n;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	journey_id = LockStage(org_id, stage_id);
	PrmPrepare(&count_plan,
			   "SELECT pg_catalog.count(*) FROM prm.journey_stage s"
			   " WHERE s.org_id = $1 AND s.journey_id = $2 AND s.retired_at IS NULL",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(journey_id);
	PrmExecute(count_plan, values, NULL, true, 1);
	n = PrmGetInt64(0, 1, &isnull);
	if (position < 1 || position > n)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("position %d is out of range", position),
				 errdetail("Journey %lld has %lld live stages: a position is 1 to %lld.",
						   (long long) journey_id, (long long) n, (long long) n)));
	RenumberStages(org_id, journey_id, stage_id, position);
	PrmEmitEvent(org_id, "journey_stage_moved", "journey", journey_id,
				 psprintf("{\"stage_id\": %lld, \"position\": %d}", (long long) stage_id, position));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

Datum
prm_retire_journey_stage(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr retire_plan = NULL;
	static SPIPlanPtr move_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  stage_id = PRM_GETARG_INT64_NOTNULL(1, "stage_id");
	Datum			  values[3];
	bool			  isnull;
	int64			  journey_id;
	int64			  moved;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	journey_id = LockStage(org_id, stage_id);
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(stage_id);
	values[2] = Int64GetDatum(journey_id);
	PrmPrepare(&retire_plan,
			   "UPDATE prm.journey_stage s SET retired_at = pg_catalog.now(), position = NULL,"
			   "       updated_at = pg_catalog.now()"
			   " WHERE s.org_id = $1 AND s.id = $2 RETURNING s.position",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(retire_plan, values, NULL, false, 0);
	RenumberStages(org_id, journey_id, stage_id, 0);

	/*
	 * Its instances enter the stage that now has the retired one's old
	 * position (the next one), due at once; with none left they are due at
	 * once without a stage, and the worker completes them.
	 */
	PrmPrepare(&move_plan,
			   "WITH next AS (SELECT s.id, s.position, s.advance_on FROM prm.journey_stage s"
			   "               WHERE s.org_id = $1 AND s.journey_id = $3 AND s.retired_at IS NULL"
			   "                 AND s.position >= (SELECT pg_catalog.min(i.stage_position) FROM prm.journey_instance i"
			   "                                     WHERE i.org_id = $1 AND i.stage_id = $2 AND i.status = 'active')"
			   "               ORDER BY s.position LIMIT 1),"
			   " moved AS (UPDATE prm.journey_instance i SET stage_id = n.id, stage_position = n.position,"
			   "                stage_entered_at = pg_catalog.now(), next_action = 0, failed_actions = '{}',"
			   "                due_at = pg_catalog.now(),"
			   "                awaiting_event = n.advance_on, updated_at = pg_catalog.now()"
			   "             FROM (SELECT 1) one LEFT JOIN next n ON true"
			   "            WHERE i.org_id = $1 AND i.stage_id = $2 AND i.status = 'active'"
			   "            RETURNING i.org_id, i.id, i.stage_position, i.stage_id),"
			   " h AS (INSERT INTO prm.journey_step (org_id, instance_id, stage_position, kind, detail)"
			   "        SELECT m.org_id, m.id, m.stage_position, 'advanced',"
			   "               pg_catalog.jsonb_build_object('reason', 'stage_retired', 'stage_id', m.stage_id,"
			   "                                             'retired_stage_id', $2)"
			   "          FROM moved m)"
			   " SELECT pg_catalog.count(*) FROM moved",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	PrmExecute(move_plan, values, NULL, false, 0);
	moved = PrmGetInt64(0, 1, &isnull);
	if (moved > 0)
		JourneyWakeDue();
	PrmEmitEvent(org_id, "journey_stage_retired", "journey", journey_id,
				 psprintf("{\"stage_id\": %lld, \"instances_moved\": %lld}", (long long) stage_id,
						  (long long) moved));
	PrmSpiFinish();
	PG_RETURN_INT32((int32) moved);
}
