/*-------------------------------------------------------------------------
 *
 * comms_consent.c
 *	  A patient's consent per channel and purpose (prm.set_consent, the
 *	  history in prm.patient_consent, the state in force in the view
 *	  prm.patient_consents), the frequency caps of promotional messages, and
 *	  the gate that applies both to every message to a patient
 *	  (PrmMessageGate, called by PrmEnqueueOrRefuse: the one place a message
 *	  is queued).  Also the consent's part of a patient's export and erasure.
 *
 * Consent.  A purpose is the message class a consent covers: promotional
 * or exempt.  The organization's setting consent_required lists the
 * channel:purpose pairs whose messages need consent ("*:promotional",
 * "email:*"); for those, a message is queued only while the patient's
 * latest decision for that channel and purpose gives consent, and is kept
 * as refused otherwise.  Every decision is a row: given or withdrawn, when
 * (decided_at), how (method), recorded by which role, with a note.
 *
 * Caps.  A promotional message counts against the patient's caps by its
 * send time (not_before, after quiet hours): at most promotional_daily_cap
 * on one calendar day and promotional_weekly_cap in one week (Monday to
 * Sunday) of the patient's local time.  Calendar windows, not rolling ones,
 * so a message scheduled for next Tuesday is capped the moment it is
 * scheduled, by what else goes out that day and week: the decision is made
 * once, when the message is queued, and never changes under a sender.
 * Messages capped, refused or cancelled do not count.  Exempt messages are
 * never capped and do not count either; offers keep their own caps.
 *
 * Cost.  Exempt messages where no consent is required (every message prm
 * queued before this file existed, with the default settings) pass with no
 * query at all.  A promotional message costs two statements for the caps:
 * the patient row locked (FOR NO KEY UPDATE), then the count, so two
 * promotional messages to one patient queued at once are counted one after
 * the other; a consent check costs one index probe.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "comms.h"

PG_FUNCTION_INFO_V1(prm_set_consent);

static const char *const consent_channels[] = {"sms", "whatsapp", "email", "voice", "push"};
static const char *const consent_methods[] = {"written", "verbal", "electronic", "sms", "app",
											  "import", "other"};

static bool CommsInList(const char *word, int len, const char *const *list, int n);
static bool CommsConsentRequired(const char *setting, const char *channel, const char *purpose);
static char *CommsConsentRefusal(int64 org_id, int64 patient_id, const char *channel,
								 const char *purpose);
static char *CommsCapRefusal(int64 org_id, int64 patient_id, TimestampTz at);

/* Is the len bytes at word one of list's n words? */
static bool
CommsInList(const char *word, int len, const char *const *list, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if ((int) strlen(list[i]) == len && strncmp(word, list[i], len) == 0)
			return true;
	return false;
}

/*
 * Is value a valid consent_required: comma-separated channel:purpose pairs
 * (either may be *), at most 150 characters?  *error says why not.
 */
bool
PrmCheckConsentRequired(const char *value, const char **error)
{
	static const char *const purposes[] = {"promotional", "exempt", "*"};
	const char				*p = value;

	if (strlen(value) > 150)
	{
		*error = "It must be at most 150 characters.";
		return false;
	}
	for (;;)
	{
		const char *colon = strchr(p, ':');
		const char *end = strchr(p, ',');

		if (end == NULL)
			end = p + strlen(p);
		if (colon == NULL || colon > end ||
			!(CommsInList(p, colon - p, consent_channels, lengthof(consent_channels)) ||
			  (colon - p == 1 && *p == '*')) ||
			!CommsInList(colon + 1, end - colon - 1, purposes, lengthof(purposes)))
		{
			*error = "It must be channel:purpose pairs separated by commas, such as \"*:promotional,email:exempt\" (channel sms, whatsapp, email, voice, push or *; purpose promotional, exempt or *).";
			return false;
		}
		if (*end == '\0')
			return true;
		p = end + 1;
	}
}

/* Does the setting consent_required cover channel and purpose? */
static bool
CommsConsentRequired(const char *setting, const char *channel, const char *purpose)
{
	const char *p = setting;

	while (*p)
	{
		const char *colon = strchr(p, ':');
		const char *end = strchr(p, ',');

		if (end == NULL)
			end = p + strlen(p);
		if (colon == NULL || colon > end)
			return false; /* validated when it was set: cannot happen */
		if (((colon - p == 1 && *p == '*') ||
			 ((size_t) (colon - p) == strlen(channel) && strncmp(p, channel, colon - p) == 0)) &&
			((end - colon - 1 == 1 && colon[1] == '*') ||
			 ((size_t) (end - colon - 1) == strlen(purpose) && strncmp(colon + 1, purpose, end - colon - 1) == 0)))
			return true;
		p = *end ? end + 1 : end;
	}
	return false;
}

/*
 * Why a message for purpose on channel may not go to the patient (NULL:
 * their latest decision gives consent).
 */
static char *
CommsConsentRefusal(int64 org_id, int64 patient_id, const char *channel, const char *purpose)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[4];

	PrmPrepare(&plan,
			   "SELECT c.granted, pg_catalog.to_char(c.decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC'"
			   "  FROM prm.patient_consent c"
			   " WHERE c.org_id = $1 AND c.patient_id = $2 AND c.channel = $3 AND c.purpose = $4"
			   " ORDER BY c.id DESC LIMIT 1",
			   4, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = CStringGetTextDatum(channel);
	values[3] = CStringGetTextDatum(purpose);
	if (PrmExecute(plan, values, NULL, true, 1) == 0)
		return psprintf("no consent: the organization requires consent for %s messages on %s (consent_required) and patient %lld has given none",
						purpose, channel, (long long) patient_id);
	if (strcmp(PrmGetText(0, 1), "t") == 0)
		return NULL;
	return psprintf("no consent: patient %lld withdrew consent for %s messages on %s at %s",
					(long long) patient_id, purpose, channel, PrmGetText(0, 2));
}

/*
 * Why a promotional message to the patient at time at would exceed a cap
 * (NULL: it would not).  Locks the patient row first, in a statement of its
 * own, so caps are counted one message at a time: the count runs with a
 * snapshot taken after the lock was granted, and so sees the message of
 * the transaction that held it (a lock taken inside the counting statement
 * would leave its snapshot from before the wait: test/specs/two_promotional).
 */
static char *
CommsCapRefusal(int64 org_id, int64 patient_id, TimestampTz at)
{
	static SPIPlanPtr  plan = NULL;
	const PrmSettings *s = PrmGetSettings(org_id);
	Datum			   values[3];
	int				   day_n,
		week_n;
	bool isnull;

	PrmPrepare(&plan,
			   "WITH p AS (SELECT coalesce(p.timezone, o.timezone) AS tz"
			   "             FROM prm.patient p JOIN prm.organization o ON o.id = p.org_id"
			   "            WHERE p.org_id = $1 AND p.id = $2),"
			   " b AS (SELECT p.tz, pg_catalog.date_trunc('day', pg_catalog.timezone(p.tz, $3)) AS d,"
			   "              pg_catalog.date_trunc('week', pg_catalog.timezone(p.tz, $3)) AS w FROM p)"
			   " SELECT pg_catalog.count(x.l) FILTER (WHERE x.l >= b.d AND x.l < b.d + interval '1 day')::int8,"
			   "        pg_catalog.count(x.l)::int8, b.d::date::text, b.w::date::text"
			   "   FROM b LEFT JOIN LATERAL ("
			   "     SELECT pg_catalog.timezone(b.tz, m.not_before) AS l FROM prm.outbound_message m"
			   "      WHERE m.org_id = $1 AND m.patient_id = $2 AND m.message_class = 'promotional'"
			   "        AND m.status NOT IN ('capped', 'refused', 'cancelled')"
			   "        AND m.not_before >= pg_catalog.timezone(b.tz, b.w) - interval '1 day'"
			   "        AND m.not_before < pg_catalog.timezone(b.tz, b.w) + interval '8 days'"
			   "     UNION ALL"
			   "     SELECT pg_catalog.timezone(b.tz, h.not_before) FROM prm.outbound_message_history h"
			   "      WHERE h.org_id = $1 AND h.patient_id = $2 AND h.message_class = 'promotional'"
			   "        AND h.status NOT IN ('capped', 'refused', 'cancelled')"
			   "        AND h.not_before >= pg_catalog.timezone(b.tz, b.w) - interval '1 day'"
			   "        AND h.not_before < pg_catalog.timezone(b.tz, b.w) + interval '8 days') x"
			   "     ON x.l >= b.w AND x.l < b.w + interval '7 days'"
			   "  GROUP BY b.d, b.w",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, true);
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = TimestampTzGetDatum(at);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		return NULL; /* no such patient: the insert's foreign key says so */
	day_n = (int) PrmGetInt64(0, 1, &isnull);
	week_n = (int) PrmGetInt64(0, 2, &isnull);
	if (day_n >= s->promotional_daily_cap)
		return psprintf("daily cap: %d promotional message%s already go%s to patient %lld on %s, their local day (promotional_daily_cap %d)",
						day_n, day_n == 1 ? "" : "s", day_n == 1 ? "es" : "", (long long) patient_id,
						PrmGetText(0, 3), s->promotional_daily_cap);
	if (week_n >= s->promotional_weekly_cap)
		return psprintf("weekly cap: %d promotional message%s already go%s to patient %lld in the week of %s, Monday to Sunday in their time zone (promotional_weekly_cap %d)",
						week_n, week_n == 1 ? "" : "s", week_n == 1 ? "es" : "", (long long) patient_id,
						PrmGetText(0, 4), s->promotional_weekly_cap);
	return NULL;
}

/*
 * The gate of a message to a patient (see the file header): "queued",
 * "refused" or "capped", with *reason for the last two.
 */
const char *
PrmMessageGate(int64 org_id, int64 patient_id, const char *channel,
			   const char *message_class, TimestampTz at, char **reason)
{
	const PrmSettings *s = PrmGetSettings(org_id);
	bool			   promotional = strcmp(message_class, "promotional") == 0;
	char			  *cap = NULL;

	*reason = NULL;
	/* caps first: their statement locks the patient, consent is read after */
	if (promotional)
		cap = CommsCapRefusal(org_id, patient_id, at);
	if (s->consent_required[0] != '\0' &&
		CommsConsentRequired(s->consent_required, channel, message_class))
		*reason = CommsConsentRefusal(org_id, patient_id, channel, message_class);
	if (*reason)
		return "refused";
	if (cap)
	{
		*reason = cap;
		return "capped";
	}
	return "queued";
}

/* Raise 22023 unless word is one of list's n words (what names it). */
static void
CommsCheckWord(const char *word, const char *const *list, int n, const char *what,
			   const char *hint)
{
	if (!CommsInList(word, strlen(word), list, n))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s \"%s\" is not recognized", what, word),
				 errhint("%s", hint)));
}

/*
 * prm.set_consent(org_id, patient_id, channel, purpose, granted, method,
 *				   note, decided_at) RETURNS bigint
 */
Datum
prm_set_consent(PG_FUNCTION_ARGS)
{
	static const char *const purposes[] = {"promotional", "exempt"};
	static SPIPlanPtr		 erased_plan = NULL;
	static SPIPlanPtr		 plan = NULL;
	int64					 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64					 patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	char					*channel = PrmTextArg(fcinfo, 2, "channel", 10);
	char					*purpose = PrmTextArg(fcinfo, 3, "purpose", 20);
	bool					 granted = PRM_GETARG_BOOL_NOTNULL(4, "granted");
	char					*method = PrmTextArg(fcinfo, 5, "method", 20);
	char					*note = PrmTextArgOrNull(fcinfo, 6, "note", 500);
	TimestampTz				 now = GetCurrentTransactionStartTimestamp();
	TimestampTz				 decided_at = PG_ARGISNULL(7) ? now : PG_GETARG_TIMESTAMPTZ(7);
	Datum					 values[9];
	char					 nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool					 isnull;
	int64					 id;

	CommsCheckWord(channel, consent_channels, lengthof(consent_channels), "channel",
				   "Use sms, whatsapp, email, voice or push.");
	CommsCheckWord(purpose, purposes, lengthof(purposes), "consent purpose",
				   "Use promotional or exempt (the message class the consent covers).");
	CommsCheckWord(method, consent_methods, lengthof(consent_methods), "consent method",
				   "Use written, verbal, electronic, sms, app, import or other.");
	PrmCheckFiniteTimestamp(decided_at, "decided_at");
	if (decided_at > PrmTimestampPlusUsecs(now, USECS_PER_MINUTE) ||
		decided_at < PrmTimestampPlusUsecs(now, -100 * 366 * USECS_PER_DAY))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("decided_at is out of range"),
				 errdetail("A consent decision was taken in the last 100 years and not in the future.")));

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, true);
	PrmPrepare(&erased_plan,
			   "SELECT 1 FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2 AND p.erased_at IS NOT NULL",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	if (PrmExecute(erased_plan, values, NULL, true, 1) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("patient %lld was erased", (long long) patient_id),
				 errdetail("An erased patient has withdrawn every consent and can give none.")));
	PrmPrepare(&plan,
			   "INSERT INTO prm.patient_consent"
			   "  (org_id, patient_id, channel, purpose, granted, method, decided_at, recorded_by, note)"
			   " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
			   9, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, BOOLOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, TEXTOID});
	values[2] = CStringGetTextDatum(channel);
	values[3] = CStringGetTextDatum(purpose);
	values[4] = BoolGetDatum(granted);
	values[5] = CStringGetTextDatum(method);
	values[6] = TimestampTzGetDatum(decided_at);
	values[7] = CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false));
	if (note)
		values[8] = CStringGetTextDatum(note);
	else
		nulls[8] = 'n';
	PrmExecute(plan, values, nulls, false, 0);
	id = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(org_id, granted ? "consent_given" : "consent_withdrawn", "patient", patient_id,
				 psprintf("{\"patient_id\": %lld, \"consent_id\": %lld, \"channel\": %s, \"purpose\": %s, \"method\": %s}",
						  (long long) patient_id, (long long) id, PrmJsonString(channel),
						  PrmJsonString(purpose), PrmJsonString(method)));
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/* The patient's consent history for prm.export_patient: {"consents": [...]}. */
Datum
CommsExportPatient(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;

	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_build_object('consents', coalesce(pg_catalog.jsonb_agg("
			   "         pg_catalog.to_jsonb(c) ORDER BY c.id), '[]'))"
			   "  FROM prm.patient_consent c WHERE c.org_id = $1 AND c.patient_id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	PrmExecute(plan, values, NULL, true, 1);
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/*
 * The consent's part of prm.erase_patient: every consent in force is
 * withdrawn (a decision of method erasure, so the history shows when and
 * why), and the notes (which may name a guardian) are blanked.  The rows
 * stay, de-identified: what was decided and when, for the clinic's records.
 */
Datum
CommsErasePatient(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;

	PrmPrepare(&plan,
			   "WITH n AS (UPDATE prm.patient_consent c SET note = '[erased]'"
			   "            WHERE c.org_id = $1 AND c.patient_id = $2 AND c.note IS NOT NULL RETURNING 1),"
			   " w AS (INSERT INTO prm.patient_consent"
			   "         (org_id, patient_id, channel, purpose, granted, method, decided_at, recorded_by)"
			   "       SELECT v.org_id, v.patient_id, v.channel, v.purpose, false, 'erasure', pg_catalog.now(), $3"
			   "         FROM prm.patient_consents v"
			   "        WHERE v.org_id = $1 AND v.patient_id = $2 AND v.granted RETURNING 1)"
			   " SELECT pg_catalog.jsonb_build_object("
			   "   'consents_withdrawn', (SELECT pg_catalog.count(*) FROM w),"
			   "   'consent_notes_blanked', (SELECT pg_catalog.count(*) FROM n))",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false));
	PrmExecute(plan, values, NULL, false, 1);
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}
