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

/* Placeholders a template may use; patient details are deliberately absent. */
static const char *const template_placeholders[] = {
	"clinic", "clinic_phone", "date", "time", "hold_minutes", "link",
	/* therapist e-mails: patients appear only as de-identified lines */
	"therapist", "count", "patients"};

/* Raise 22023 unless kind is a template kind. */
static void
OutboxCheckKind(const char *kind)
{
	int i;

	for (i = 0; i < (int) lengthof(template_defaults); i++)
		if (strcmp(kind, template_defaults[i].kind) == 0)
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("message kind \"%s\" is not recognized", kind),
			 errhint("Use offer, booked, gone, declined, no_offer, help, stop, start, hint, handoff, contact_single, contact_several, reminder, reminder_confirmed or reminder_cancelled.")));
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
	elog(ERROR, "no template for message kind \"%s\"", kind);
	return NULL; /* keep compiler quiet */
}

/*
 * Render a message kind for an organization.  vars holds name/value pairs
 * (nvars of them); {clinic} and {clinic_phone} come from the organization.
 * A placeholder with no value is an error: a message is never sent half
 * filled in.  Must run inside SPI.
 */
char *
PrmRender(int64 org_id, const char *kind, const char *channel,
		  const char *locale, const PrmTemplateVar *vars, int nvars)
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
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("template \"%s\" of organization %lld cannot be rendered",
							kind, (long long) org_id),
					 errdetail("Placeholder {%.*s} has no value for this message.", len, p + 1),
					 errhint("Change the template with prm.set_template().")));
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
 * prm.set_template(org_id, kind, body, channel, locale) RETURNS bigint
 */
Datum
prm_set_template(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *kind = PrmTextArg(fcinfo, 1, "kind", 30);
	char			 *body = PrmTextArg(fcinfo, 2, "body", 1600);
	char			 *channel = PrmTextArg(fcinfo, 3, "channel", 10);
	char			 *locale = PrmTextArg(fcinfo, 4, "locale", 20);
	Datum			  values[5];
	bool			  isnull;
	int64			  id;

	OutboxCheckKind(kind);
	OutboxCheckChannel(channel);
	OutboxCheckTemplate(body);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
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
				 psprintf("{\"kind\": %s, \"channel\": %s, \"locale\": %s}",
						  PrmJsonString(kind), PrmJsonString(channel), PrmJsonString(locale)));
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
