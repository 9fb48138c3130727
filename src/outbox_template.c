/*-------------------------------------------------------------------------
 *
 * outbox_template.c
 *	  Message templates: the built-in wording of every kind, an
 *	  organization's own (prm.set_template), and rendering (PrmRender,
 *	  prm.render_template).
 *
 * A template may use only the placeholders listed here, none of which is a
 * patient detail: what an SMS says can never carry a name, a condition or a
 * specialty.  An organization's template for a kind, channel and locale
 * wins over the built-in one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "outbox.h"

PG_FUNCTION_INFO_V1(prm_set_template);
PG_FUNCTION_INFO_V1(prm_render_template);
PG_FUNCTION_INFO_V1(prm_message_class);

static void		   OutboxCheckTemplate(const char *body);
static const char *OutboxTemplateBody(int64 org_id, const char *kind,
									  const char *channel, const char *locale);

/* Built-in English wording of every message kind. */
typedef struct TemplateDefault
{
	const char *kind;
	const char *body;
} TemplateDefault;

static const TemplateDefault template_defaults[] = {
	{"offer", "{clinic}: an earlier appointment is free on {date} at {time}. Reply YES to book it or NO to pass. We hold it for you for {hold_minutes} min.{link}"},
	{"booked", "{clinic}: you are booked for {date} at {time}. Reply HELP for help."},
	{"gone", "{clinic}: sorry, that appointment has just been taken. You stay on our waitlist."},
	/* to patients whose open offer was withdrawn when the slot was taken (fill.c) */
	{"slot_taken", "{clinic}: the earlier appointment we offered you has been taken. You stay on our waitlist."},
	{"declined", "{clinic}: no problem, you stay on our waitlist."},
	{"no_offer", "{clinic}: you have no open offer right now. We will text you when an earlier time is free."},
	{"help", "{clinic}: offers of earlier appointments and reminders, up to 3 msgs/week. Reply STOP to opt out, HELP for help. Msg & data rates may apply."},
	{"stop", "{clinic}: you are unsubscribed and will get no more messages. Reply START to subscribe again."},
	{"start", "{clinic}: you are subscribed again. Reply STOP to opt out, HELP for help. Msg & data rates may apply."},
	{"handoff", "{clinic}: thanks, a member of our team will answer you here as soon as they can."},
	{"hint", "{clinic}: sorry, we did not understand. Reply YES to take the offer, NO to pass, HELP for help or STOP to opt out."},
	{"contact_single", "Dear {therapist},\n\n{clinic} is looking for a psychotherapy place for one patient:\n{patients}\n"
					   "Could you offer a first consultation or a place? Please reply to this e-mail with the reference and "
					   "\"yes\", \"no\" or \"no place\", and your expected waiting time in weeks.\n\nThank you,\n{clinic}"},
	{"contact_several", "Dear {therapist},\n\n{clinic} is looking for psychotherapy places for {count} patients:\n{patients}\n"
						"Could you offer any of them a first consultation or a place? Please reply to this e-mail with each "
						"reference and \"yes\", \"no\" or \"no place\", and your expected waiting time in weeks.\n\nThank you,\n{clinic}"},
	/* appointment reminders: C and X, since CANCEL is an opt-out keyword */
	{"reminder", "{clinic}: reminder of your appointment on {date} at {time}. Reply C to confirm or X to cancel."},
	{"reminder_confirmed", "{clinic}: thank you, your appointment on {date} at {time} is confirmed."},
	{"reminder_cancelled", "{clinic}: your appointment on {date} at {time} is cancelled. Reply HELP for help."},
};

/*
 * Kinds of messages prm queues itself without a template of that name: not
 * an organization's to take (and exempt, as the built-in kinds are).
 */
static const char *const outbox_internal_kinds[] = {
	"other", "reply", "appointment_reminder", "contact_batch", "ticket_comment",
	"caregiver_alert", "caregiver_resolved", "caregiver_summary", "check_in"};

/* Placeholders a template may use; patient details are deliberately absent. */
static const char *const template_placeholders[] = {
	"clinic", "clinic_phone", "date", "time", "hold_minutes", "link",
	/* therapist e-mails: patients appear only as de-identified lines */
	"therapist", "count", "patients"};

/* Is kind one of prm's own (built-in or internal)? */
bool
PrmKindIsBuiltIn(const char *kind)
{
	int i;

	for (i = 0; i < (int) lengthof(template_defaults); i++)
		if (strcmp(kind, template_defaults[i].kind) == 0)
			return true;
	for (i = 0; i < (int) lengthof(outbox_internal_kinds); i++)
		if (strcmp(kind, outbox_internal_kinds[i]) == 0)
			return true;
	return false;
}

/* Is kind a built-in kind with wording of its own? */
static bool
OutboxKindHasDefault(const char *kind)
{
	int i;

	for (i = 0; i < (int) lengthof(template_defaults); i++)
		if (strcmp(kind, template_defaults[i].kind) == 0)
			return true;
	return false;
}

/*
 * Raise 22023 unless kind can have a template: a built-in kind with
 * wording, or a well-formed name that is not one of prm's internal kinds.
 */
static void
OutboxCheckKind(const char *kind)
{
	const char *p;

	if (OutboxKindHasDefault(kind))
		return;
	for (p = kind; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (p > kind && ((*p >= '0' && *p <= '9') || *p == '_'))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("message kind \"%s\" is not valid", kind),
					 errdetail("A kind of its own is 1 to 30 lower-case letters, digits and underscores, starting with a letter."),
					 errhint("The built-in kinds are offer, booked, gone, slot_taken, declined, no_offer, help, stop, start, hint, handoff, contact_single, contact_several, reminder, reminder_confirmed and reminder_cancelled.")));
	if (*kind == '\0' || strlen(kind) > 30)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message kind \"%s\" is not valid", kind),
				 errdetail("A kind of its own is 1 to 30 lower-case letters, digits and underscores, starting with a letter.")));
	if (PrmKindIsBuiltIn(kind))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message kind \"%s\" is reserved", kind),
				 errdetail("prm queues messages of this kind itself, without a template."),
				 errhint("Choose another name for the organization's own kind.")));
}

/* Raise 22023 unless message_class is promotional or exempt. */
static void
OutboxCheckClass(const char *message_class)
{
	if (strcmp(message_class, "promotional") != 0 && strcmp(message_class, "exempt") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message class \"%s\" is not recognized", message_class),
				 errhint("Use promotional or exempt.")));
}

/*
 * The message class of kind for an organization: "exempt" for prm's own
 * kinds, the class of the organization's own kind, else NULL (no such kind
 * in the organization).  A query only for a kind not built in.  Inside SPI.
 */
const char *
PrmMessageClass(int64 org_id, const char *kind)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	if (PrmKindIsBuiltIn(kind))
		return "exempt";
	PrmPrepare(&plan,
			   "SELECT k.message_class FROM prm.message_kind k WHERE k.org_id = $1 AND k.kind = $2",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(kind);
	if (PrmExecute(plan, values, NULL, true, 1) == 0)
		return NULL;
	return strcmp(PrmGetText(0, 1), "promotional") == 0 ? "promotional" : "exempt";
}

/*
 * The message class of a kind that is to be rendered or sent: as
 * PrmMessageClass, raising 22023 for a kind the organization does not
 * have (and for a malformed one).  Inside SPI.
 */
const char *
PrmRequireMessageKind(int64 org_id, const char *kind)
{
	const char *message_class;

	OutboxCheckKind(kind);
	message_class = PrmMessageClass(org_id, kind);
	if (message_class == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("organization %lld has no message kind \"%s\"", (long long) org_id, kind),
				 errhint("Give the kind a wording first with prm.set_template().")));
	return message_class;
}

/* Raise 22023 for unbalanced braces or an unknown placeholder. */
static void
OutboxCheckTemplate(const char *body)
{
	const char *p = body;

	while ((p = strchr(p, '{')) != NULL)
	{
		const char *end = strchr(p, '}');
		int			i;
		bool		known = false;

		if (end == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("template has an unclosed placeholder"),
					 errdetail("Text from \"%.20s\" has no closing brace.", p)));
		for (i = 0; i < (int) lengthof(template_placeholders); i++)
			if (strlen(template_placeholders[i]) == (size_t) (end - p - 1) &&
				strncmp(p + 1, template_placeholders[i], end - p - 1) == 0)
				known = true;
		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("template placeholder \"%.*s\" is not allowed", (int) (end - p + 1), p),
					 errdetail("Allowed: {clinic}, {clinic_phone}, {date}, {time}, {hold_minutes}, {link}, and in therapist e-mails {therapist}, {count}, {patients}."),
					 errhint("Messages never carry patient or clinical details.")));
		p = end + 1;
	}
}

/*
 * The body of a kind for an organization: its own template for the channel
 * and locale, else for the language part of the locale, else English, else
 * the built-in text.
 */
static const char *
OutboxTemplateBody(int64 org_id, const char *kind, const char *channel,
				   const char *locale)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[4];
	int				  i;

	PrmPrepare(&plan,
			   "SELECT t.body FROM prm.message_template t"
			   " WHERE t.org_id = $1 AND t.kind = $2 AND t.channel = $3"
			   "   AND t.locale IN ($4, pg_catalog.split_part(pg_catalog.replace($4, '_', '-'), '-', 1), 'en')"
			   " ORDER BY t.locale = $4 DESC, t.locale = 'en' LIMIT 1",
			   4, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(kind);
	values[2] = CStringGetTextDatum(channel);
	values[3] = CStringGetTextDatum(locale);
	if (PrmExecute(plan, values, NULL, true, 1) == 1)
		return PrmGetText(0, 1);
	for (i = 0; i < (int) lengthof(template_defaults); i++)
		if (strcmp(template_defaults[i].kind, kind) == 0)
			return template_defaults[i].body;
	/* an organization's own kind, worded for other channels only */
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("message kind \"%s\" of organization %lld has no wording for channel %s",
					kind, (long long) org_id, channel),
			 errhint("Give it one with prm.set_template(org_id, kind, body, channel).")));
	return NULL; /* keep compiler quiet */
}

/*
 * Render a message kind for an organization.  vars holds name/value pairs
 * (nvars of them); {clinic} and {clinic_phone} come from the organization.
 * A placeholder with no value leaves the message unrendered: NULL, with
 * *missing the placeholder's name.  Must run inside SPI.
 */
char *
PrmRenderIfPossible(int64 org_id, const char *kind, const char *channel,
					const char *locale, const PrmTemplateVar *vars, int nvars,
					char **missing)
{
	const PrmSettings *s = PrmGetSettings(org_id);
	const char		  *body = OutboxTemplateBody(org_id, kind, channel, locale);
	StringInfoData	   out;
	const char		  *p = body;

	initStringInfo(&out);
	while (*p)
	{
		const char *end;
		const char *value = NULL;
		int			len,
			i;

		if (*p != '{' || (end = strchr(p, '}')) == NULL)
		{
			appendStringInfoChar(&out, *p++);
			continue;
		}
		len = end - p - 1;
		if (len == 6 && strncmp(p + 1, "clinic", 6) == 0)
			value = s->name;
		else if (len == 12 && strncmp(p + 1, "clinic_phone", 12) == 0)
			value = s->sms_number;
		for (i = 0; value == NULL && i < nvars; i++)
			if ((int) strlen(vars[i].name) == len && strncmp(p + 1, vars[i].name, len) == 0)
				value = vars[i].value;
		if (value == NULL)
		{
			*missing = pnstrdup(p + 1, len);
			return NULL;
		}
		appendStringInfoString(&out, value);
		p = end + 1;
	}
	if (pg_mbstrlen(out.data) > 1600)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("rendered message of kind \"%s\" is longer than 1600 characters", kind)));
	return out.data;
}

/*
 * As PrmRenderIfPossible, raising 22023 for a placeholder with no value: a
 * message is never sent half filled in.  Must run inside SPI.
 */
char *
PrmRender(int64 org_id, const char *kind, const char *channel,
		  const char *locale, const PrmTemplateVar *vars, int nvars)
{
	char *missing = NULL;
	char *out = PrmRenderIfPossible(org_id, kind, channel, locale, vars, nvars, &missing);

	if (out == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("template \"%s\" of organization %lld cannot be rendered",
						kind, (long long) org_id),
				 errdetail("Placeholder {%s} has no value for this message.", missing),
				 errhint("Change the template with prm.set_template().")));
	return out;
}

/*
 * Record an organization's own kind with its class (NULL: keep it, or
 * promotional for a new kind).  Built-in kinds stay exempt: a class other
 * than exempt is refused (22023).
 */
static void
OutboxSetKindClass(int64 org_id, const char *kind, const char *message_class)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};

	if (message_class)
		OutboxCheckClass(message_class);
	if (OutboxKindHasDefault(kind))
	{
		if (message_class && strcmp(message_class, "exempt") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("built-in message kind \"%s\" is exempt", kind),
					 errdetail("Clinical reminders, confirmations, replies and offers (with their own caps) are never promotional."),
					 errhint("Give promotional wording a kind of its own, such as \"newsletter\".")));
		return;
	}
	PrmPrepare(&plan,
			   "INSERT INTO prm.message_kind AS k (org_id, kind, message_class)"
			   " VALUES ($1, $2, coalesce($3, 'promotional'))"
			   " ON CONFLICT (org_id, kind) DO UPDATE"
			   "   SET message_class = coalesce($3, k.message_class), updated_at = pg_catalog.now()",
			   3, (Oid[]){INT8OID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(kind);
	if (message_class)
		values[2] = CStringGetTextDatum(message_class);
	else
		nulls[2] = 'n';
	PrmExecute(plan, values, nulls, false, 0);
}

/*
 * prm.set_template(org_id, kind, body, channel, locale, message_class)
 *	  RETURNS bigint
 */
Datum
prm_set_template(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *kind = PrmTextArg(fcinfo, 1, "kind", 30);
	char			 *body = PrmTextArg(fcinfo, 2, "body", OUTBOX_BODY_MAX);
	char			 *channel = PrmTextArg(fcinfo, 3, "channel", 10);
	char			 *locale = PrmTextArg(fcinfo, 4, "locale", 20);
	char			 *message_class = PG_NARGS() > 5 ? PrmTextArgOrNull(fcinfo, 5, "message_class", 20) : NULL;
	Datum			  values[5];
	bool			  isnull;
	int64			  id;

	OutboxCheckKind(kind);
	OutboxCheckChannel(channel);
	OutboxCheckTemplate(body);
	if (message_class)
		OutboxCheckClass(message_class);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	OutboxSetKindClass(org_id, kind, message_class);
	PrmPrepare(&plan,
			   "INSERT INTO prm.message_template (org_id, kind, body, channel, locale)"
			   " VALUES ($1, $2, $3, $4, $5)"
			   " ON CONFLICT (org_id, kind, channel, locale) DO UPDATE"
			   "   SET body = EXCLUDED.body, updated_at = pg_catalog.now()"
			   " RETURNING id",
			   5, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(kind);
	values[2] = CStringGetTextDatum(body);
	values[3] = CStringGetTextDatum(channel);
	values[4] = CStringGetTextDatum(locale);
	PrmExecute(plan, values, NULL, false, 0);
	id = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(org_id, "template_set", "message_template", id,
				 psprintf("{\"kind\": %s, \"channel\": %s, \"locale\": %s, \"message_class\": %s}",
						  PrmJsonString(kind), PrmJsonString(channel), PrmJsonString(locale),
						  PrmJsonString(PrmMessageClass(org_id, kind))));
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * prm.render_template(org_id, kind, vars jsonb, channel, locale) RETURNS text
 */
Datum
prm_render_template(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *kind = PrmTextArg(fcinfo, 1, "kind", 30);
	Jsonb			 *vars_json;
	char			 *channel = PrmTextArg(fcinfo, 3, "channel", 10);
	char			 *locale = PrmTextArg(fcinfo, 4, "locale", 20);
	PrmTemplateVar	 *vars;
	Datum			  values[1];
	int				  n,
		i;
	text *result;

	PrmArgNotNull(fcinfo, 2, "vars");
	vars_json = PG_GETARG_JSONB_P(2);
	if (!JB_ROOT_IS_OBJECT(vars_json))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("vars must be a JSON object")));
	OutboxCheckKind(kind);
	OutboxCheckChannel(channel);
	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	(void) PrmRequireMessageKind(org_id, kind);
	PrmPrepare(&plan, "SELECT e.key, e.value FROM pg_catalog.jsonb_each_text($1) e",
			   1, (Oid[]){JSONBOID});
	values[0] = JsonbPGetDatum(vars_json);
	n = PrmExecute(plan, values, NULL, true, 0);
	vars = palloc0(sizeof(PrmTemplateVar) * (n + 1));
	for (i = 0; i < n; i++)
	{
		vars[i].name = PrmGetText(i, 1);
		vars[i].value = PrmGetText(i, 2);
		if (vars[i].value == NULL)
			vars[i].value = "";
	}
	result = cstring_to_text(PrmRender(org_id, kind, channel, locale, vars, n));
	result = (text *) DatumGetPointer(SPI_datumTransfer(PointerGetDatum(result), false, -1));
	PrmSpiFinish();
	PG_RETURN_TEXT_P(result);
}

/*
 * prm.message_class(org_id, kind) RETURNS text
 */
Datum
prm_message_class(PG_FUNCTION_ARGS)
{
	int64		org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char	   *kind = PrmTextArg(fcinfo, 1, "kind", 30);
	const char *message_class;

	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	message_class = PrmRequireMessageKind(org_id, kind);
	PrmSpiFinish();
	PG_RETURN_TEXT_P(cstring_to_text(message_class));
}
