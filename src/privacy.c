/*-------------------------------------------------------------------------
 *
 * privacy.c
 *	  A patient's data on request: prm.export_patient (everything prm holds
 *	  about them, as jsonb, audited in the server log as well) and
 *	  prm.erase_patient (erasure), and the retention step that drops old
 *	  history.
 *
 * Whose data is it.  A row is the patient's when it names them (patient_id)
 * or, having no patient id, is addressed to or from their own phone number
 * or e-mail address: one no other patient of the organization has.  A row
 * that names another patient is that patient's, even when it came from a
 * phone the family shares; a message to a shared number without a patient
 * id belongs to everyone behind the number and stays.  (prm links an SMS
 * from a shared number to the patient with the lowest id, so erasing that
 * patient also blanks replies a family member may have written: erasure errs
 * on the side of erasing.)  Export and erasure use the same rule
 * (PRIVACY_OWN_ADDRESSES).
 *
 * What erasure does, column by column.  Every text, varchar and jsonb column
 * of schema prm was looked at (test/pgtap/erasure.sql searches all of them,
 * read from the catalog).  Erasure removes what identifies the patient or
 * quotes them, and keeps what the clinic's books need as de-identified rows
 * (an appointment with its time, provider, status and price stays, pointing
 * at an anonymised patient row); "[erased]" marks a text that was there.
 *	- patient: given_name and family_name 'erased'; phone, email, timezone,
 *	  external_source and external_id NULL; opted out of SMS; erased_at set.
 *	  language stays (a language code, needed by nothing, identifies no one).
 *	- appointment: cancel_reason '[erased]' (NULL stays NULL); external_source
 *	  and external_id NULL.  Booked appointments stay booked: whether to
 *	  cancel them is the clinic's call (prm.cancel_appointment).
 *	- waitlist_entry: waiting entries 'removed'; open offers withdrawn, their
 *	  slots offered to the next patients.  Offers stay (score_breakdown holds
 *	  numbers only).
 *	- outbound_message and outbound_message_history: body and to_address
 *	  '[erased]', dedup_key NULL (keys are the application's and may quote an
 *	  address), last_error '[erased]' (providers quote addresses); queued
 *	  messages cancelled.  provider_message_id, kind, channel, campaign and
 *	  the times stay (delivery callbacks still find the row).
 *	- therapists' contact e-mails: the patient's line ("- Ref. P<request>:
 *	  initials, age band, therapy type") keeps only the reference; a queued
 *	  e-mail left with no request to ask about is cancelled.
 *	- inbound_message: body, from_address and keyword (the first 40 letters
 *	  of the SMS) '[erased]'; reply (prm's own template text) and
 *	  provider_message_id stay.
 *	- conversation: the patient's (and those of their own address with no
 *	  patient) closed for good, address '[erased]'; every message's body
 *	  '[erased]' and call details NULL; their own messages in the
 *	  conversation of a number they share are blanked too.  Directions, times, authors (staff
 *	  roles) and provider ids stay.
 *	- placement_request: withdrawn if open (prm.withdraw_placement_request:
 *	  pending contacts withdrawn, calls cancelled); latitude, longitude,
 *	  birth_year and gender_preference NULL; its placement_request_time rows
 *	  deleted.  therapy_type, languages and max_distance_km stay as what the
 *	  request asked for; placement_contact rows stay (the therapist's side).
 *	- event: the payload keys that quote a person or a provider ("keyword" of
 *	  sms_received, "error" of message_dead) '[erased]' in the events about
 *	  the messages erased; every event row stays (the audit trail), and
 *	  ids-only payloads (patient_id, slot_id...) stay.
 *	- patient_stats: not erased.  It is a function of the rows that stay
 *	  (counts and times, no text) and the statistics triggers recompute it
 *	  whenever those rows change, so a deleted row would come back at the
 *	  next archiving run.
 *	- patient_consent: every consent in force withdrawn (a decision of
 *	  method erasure), notes '[erased]'; the decisions stay, de-identified.
 *	- Not the patient's: organization, location, provider, therapist,
 *	  message_template (the clinic's own texts), org_access, access_privilege,
 *	  function_level, org_mutex, job_run (role and job names, cluster-wide
 *	  errors), call_task.note (staff notes about a call to a therapist).
 * A later sync from the practice system brings the patient back as a new
 * row: they have to be erased there as well.
 *
 * The audit of an export.  An export hands personal data to the caller the
 * moment it returns, whether or not the caller's transaction commits, and
 * PostgreSQL has no autonomous transactions: an audit row in prm.event is
 * rolled back with the export (BEGIN; SELECT prm.export_patient(...);
 * ROLLBACK; leaves none).  So the export is also written to the server log,
 * which no rollback takes back: a LOG line "prm audit: ..." with the role
 * (and the session user when it differs), the organization, the patient and
 * the time, and no personal data.  Refusing exports inside a transaction
 * block would not have been enough: a statement that fails after the export
 * returned (SELECT prm.export_patient(1, 1), 1/0) rolls back its audit row
 * all the same, and pgTAP suites and applications run exports in
 * transactions.  The event stays as well: it is what a clinic's own audit
 * queries read.
 *
 * Retention (setting retention_days, default 730): events, inbound messages,
 * conversation messages and archived outbound messages older than that are
 * deleted by the jobs, a bounded number per run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "prm.h"
#include "comms.h"	  /* communications: consent in export and erasure */
#include "journey.h" /* journeys: export and erasure */
#include "monitor.h" /* companion monitoring: export and erasure */

PG_FUNCTION_INFO_V1(prm_export_patient);
PG_FUNCTION_INFO_V1(prm_erase_patient);

static void	 PrivacyLogExport(int64 org_id, int64 patient_id);
static int64 PrivacyWithdraw(int64 org_id, int64 patient_id);
static Datum PrivacyBlank(int64 org_id, int64 patient_id, int64 withdrawn);

/* rows deleted at most per table and run by the retention step */
#define RETENTION_BATCH 5000

/*
 * The patient's own addresses ($1 organization, $2 patient): their phone and
 * their lower-cased e-mail, each NULL when they have none or another patient
 * of the organization has it too.  A CTE named own.
 */
#define PRIVACY_OWN_ADDRESSES                                                                 \
	"own AS (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM prm.patient q"                        \
	"                      WHERE q.org_id = p.org_id AND q.id <> p.id AND q.phone = p.phone)" \
	"                    THEN p.phone END AS phone,"                                          \
	"               CASE WHEN NOT EXISTS (SELECT 1 FROM prm.patient q"                        \
	"                      WHERE q.org_id = p.org_id AND q.id <> p.id"                        \
	"                        AND pg_catalog.lower(q.email) = pg_catalog.lower(p.email))"      \
	"                    THEN pg_catalog.lower(p.email) END AS email"                         \
	"          FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2)"

/* An outbound message (alias x) that is the patient's (with own). */
#define PRIVACY_THEIR_OUTBOUND                                                  \
	"(x.patient_id = $2 OR (x.patient_id IS NULL AND x.kind <> 'contact_batch'" \
	"  AND (x.to_address = own.phone OR pg_catalog.lower(x.to_address) = own.email)))"

/* An inbound message (alias x) that is the patient's (with own). */
#define PRIVACY_THEIR_INBOUND \
	"(x.patient_id = $2 OR (x.patient_id IS NULL"                        \
	"  AND (x.from_address = own.phone OR x.from_address = own.email)))"

/*
 * prm.export_patient(org_id, patient_id) RETURNS jsonb
 */
Datum
prm_export_patient(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	Datum			  values[2];
	bool			  isnull;
	Datum			  result;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	PrmPrepare(&plan,
			   "WITH " PRIVACY_OWN_ADDRESSES
			   " SELECT pg_catalog.jsonb_build_object("
			   " 'exported_at', pg_catalog.now(),"
			   " 'patient', (SELECT pg_catalog.to_jsonb(p) FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2),"
			   " 'appointments', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(a) ORDER BY a.id)"
			   "     FROM prm.appointment a WHERE a.org_id = $1 AND a.patient_id = $2), '[]'),"
			   " 'waitlist_entries', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(w) ORDER BY w.id)"
			   "     FROM prm.waitlist_entry w WHERE w.org_id = $1 AND w.patient_id = $2), '[]'),"
			   " 'offers', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(o) - 'token_hash' ORDER BY o.id)"
			   "     FROM prm.offer o WHERE o.org_id = $1 AND o.patient_id = $2), '[]'),"
			   " 'messages_out', coalesce((SELECT pg_catalog.jsonb_agg(y.j ORDER BY y.j->>'created_at') FROM ("
			   "     SELECT pg_catalog.to_jsonb(x) - 'lease_token' AS j FROM prm.outbound_message x, own"
			   "      WHERE x.org_id = $1 AND " PRIVACY_THEIR_OUTBOUND
			   "     UNION ALL"
			   "     SELECT pg_catalog.to_jsonb(x) - 'lease_token' FROM prm.outbound_message_history x, own"
			   "      WHERE x.org_id = $1 AND " PRIVACY_THEIR_OUTBOUND ") y), '[]'),"
			   " 'messages_in', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x) ORDER BY x.id)"
			   "     FROM prm.inbound_message x, own WHERE x.org_id = $1 AND " PRIVACY_THEIR_INBOUND "), '[]'),"
			   " 'placement_requests', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(r) ORDER BY r.id)"
			   "     FROM prm.placement_request r WHERE r.org_id = $1 AND r.patient_id = $2), '[]'),"
			   " 'conversations', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c)"
			   "       || pg_catalog.jsonb_build_object('messages', (SELECT coalesce(pg_catalog.jsonb_agg("
			   "            pg_catalog.to_jsonb(m) ORDER BY m.id), '[]') FROM prm.conversation_message m"
			   "            WHERE m.org_id = c.org_id AND m.conversation_id = c.id)) ORDER BY c.id)"
			   "     FROM prm.conversation c, own WHERE c.org_id = $1 AND (c.patient_id = $2 OR (c.patient_id IS NULL"
			   "       AND (c.address = own.phone OR c.address = own.email)))), '[]'),"
			   " 'tickets', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(t) ORDER BY t.id)"
			   "     FROM prm.ticket t WHERE t.org_id = $1 AND t.patient_id = $2), '[]'),"
			   " 'statistics', (SELECT pg_catalog.to_jsonb(s) FROM prm.patient_stats s"
			   "     WHERE s.org_id = $1 AND s.patient_id = $2),"
			   " 'events', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(e) ORDER BY e.id)"
			   "     FROM prm.event e WHERE e.org_id = $1 AND e.patient_id = $2), '[]'))",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	PrmExecute(plan, values, NULL, true, 1);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	Assert(!isnull);
	/* companion monitoring (monitor_privacy.c): care circle, activity, alerts, reminders */
	result = DirectFunctionCall2(jsonb_concat, result, MonExportPatient(org_id, patient_id));
	/* journeys (journey.c): instances and their history */
	result = DirectFunctionCall2(jsonb_concat, result, JourneyExportPatient(org_id, patient_id));
	/* communications (comms_consent.c): the consent history */
	result = DirectFunctionCall2(jsonb_concat, result, CommsExportPatient(org_id, patient_id));
	result = SPI_datumTransfer(result, false, -1);
	PrivacyLogExport(org_id, patient_id);
	PrmEmitEvent(org_id, "patient_exported", "patient", patient_id, NULL);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * Write the audit line of an export to the server log: role, organization,
 * patient and time (ISO 8601 in UTC, whatever the session's DateStyle and
 * time zone), no personal data.
 */
static void
PrivacyLogExport(int64 org_id, int64 patient_id)
{
	Oid		  role = GetOuterUserId();
	Oid		  session = GetSessionUserId();
	char	  when[MAXDATELEN + 1];
	const int utc = 0;

	JsonEncodeDateTime(when, TimestampTzGetDatum(GetCurrentTimestamp()),
					   TIMESTAMPTZOID, &utc);
	ereport(LOG,
			(errmsg("prm audit: role \"%s\"%s exported patient %lld of organization %lld at %s",
					GetUserNameFromId(role, false),
					session == role ? ""
									: psprintf(" (session user \"%s\")",
											   GetUserNameFromId(session, false)),
					(long long) patient_id, (long long) org_id, when),
			 errhidestmt(true),
			 errhidecontext(true)));
}

/*
 * prm.erase_patient(org_id, patient_id) RETURNS jsonb
 */
Datum
prm_erase_patient(PG_FUNCTION_ARGS)
{
	int64 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64 patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	int64 withdrawn;
	Datum result;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, true);
	withdrawn = PrivacyWithdraw(org_id, patient_id);
	result = PrivacyBlank(org_id, patient_id, withdrawn);
	/* companion monitoring (monitor_privacy.c): messages about them blanked, their rows deleted */
	result = DirectFunctionCall2(jsonb_concat, result, MonErasePatient(org_id, patient_id));
	/* journeys (journey.c): errors in their history blanked */
	result = DirectFunctionCall2(jsonb_concat, result, JourneyErasePatient(org_id, patient_id));
	/* communications (comms_consent.c): consents withdrawn, their notes blanked */
	result = DirectFunctionCall2(jsonb_concat, result, CommsErasePatient(org_id, patient_id));
	/* the concatenations live in SPI's memory: out of it before SPI_finish */
	result = SPI_datumTransfer(result, false, -1);
	PrmEmitEvent(org_id, "patient_erased", "patient", patient_id, NULL);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * Withdraw what the patient still has open: their offers (whose slots move
 * on to the next patients) and their placement requests (through
 * prm.withdraw_placement_request, which also withdraws the pending contacts
 * and cancels the calls).  Returns the placement requests withdrawn.
 */
static int64
PrivacyWithdraw(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr entries_plan = NULL;
	static SPIPlanPtr requests_plan = NULL;
	static SPIPlanPtr withdraw_plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	int64			 *ids;
	int64			  withdrawn = 0;
	int				  n,
		i;

	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	PrmPrepare(&entries_plan,
			   "SELECT w.id FROM prm.waitlist_entry w"
			   " WHERE w.org_id = $1 AND w.patient_id = $2 AND w.status = 'waiting'",
			   2, (Oid[]){INT8OID, INT8OID});
	n = PrmExecute(entries_plan, values, NULL, false, 0);
	ids = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
		ids[i] = PrmGetInt64(i, 1, &isnull);
	for (i = 0; i < n; i++)
		PrmWithdrawEntryOffers(org_id, ids[i], "patient erased");

	PrmPrepare(&requests_plan,
			   "SELECT r.id FROM prm.placement_request r"
			   " WHERE r.org_id = $1 AND r.patient_id = $2 AND r.status = 'open'",
			   2, (Oid[]){INT8OID, INT8OID});
	n = PrmExecute(requests_plan, values, NULL, false, 0);
	ids = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
		ids[i] = PrmGetInt64(i, 1, &isnull);
	PrmPrepare(&withdraw_plan, "SELECT prm.withdraw_placement_request($1, $2)",
			   2, (Oid[]){INT8OID, INT8OID});
	for (i = 0; i < n; i++)
	{
		values[1] = Int64GetDatum(ids[i]);
		PrmExecute(withdraw_plan, values, NULL, false, 1);
		withdrawn++;
	}
	return withdrawn;
}

/*
 * Blank everything that is the patient's, in one statement (the rule is at
 * the top of this file); returns what changed, as jsonb.
 */
static Datum
PrivacyBlank(int64 org_id, int64 patient_id, int64 withdrawn)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;
	Datum			  result;

	PrmPrepare(&plan,
			   "WITH " PRIVACY_OWN_ADDRESSES ","
			   " p AS (UPDATE prm.patient p"
			   "         SET given_name = 'erased', family_name = 'erased', phone = NULL, email = NULL,"
			   "             timezone = NULL, external_source = NULL, external_id = NULL, sms_opt_out = true,"
			   "             opted_out_at = coalesce(p.opted_out_at, pg_catalog.now()),"
			   "             erased_at = coalesce(p.erased_at, pg_catalog.now()), updated_at = pg_catalog.now()"
			   "       WHERE p.org_id = $1 AND p.id = $2 RETURNING 1),"
			   " w AS (UPDATE prm.waitlist_entry w SET status = 'removed', closed_at = pg_catalog.now()"
			   "       WHERE w.org_id = $1 AND w.patient_id = $2 AND w.status = 'waiting' RETURNING 1),"
			   " a AS (UPDATE prm.appointment a"
			   "         SET cancel_reason = CASE WHEN a.cancel_reason IS NOT NULL THEN '[erased]' END,"
			   "             external_source = NULL, external_id = NULL"
			   "       WHERE a.org_id = $1 AND a.patient_id = $2"
			   "         AND (a.cancel_reason IS NOT NULL OR a.external_source IS NOT NULL"
			   "              OR a.external_id IS NOT NULL) RETURNING 1),"
			   " m AS (UPDATE prm.outbound_message x"
			   "         SET body = '[erased]', to_address = '[erased]', dedup_key = NULL,"
			   "             last_error = CASE WHEN x.last_error IS NOT NULL THEN '[erased]' END,"
			   "             status = CASE WHEN x.status = 'queued' THEN 'cancelled' ELSE x.status END,"
			   "             updated_at = pg_catalog.now()"
			   "       FROM own WHERE x.org_id = $1 AND " PRIVACY_THEIR_OUTBOUND " RETURNING x.id),"
			   " h AS (UPDATE prm.outbound_message_history x"
			   "         SET body = '[erased]', to_address = '[erased]', dedup_key = NULL,"
			   "             last_error = CASE WHEN x.last_error IS NOT NULL THEN '[erased]' END"
			   "       FROM own WHERE x.org_id = $1 AND " PRIVACY_THEIR_OUTBOUND " RETURNING x.id),"
			   /* their lines in therapists' e-mails: "- Ref. P<request>: ..." */
			   " refs AS (SELECT '- Ref[.] P(' || pg_catalog.string_agg(r.id::text, '|') || '):[^'"
			   "                 || pg_catalog.chr(10) || ']*' AS pattern"
			   "            FROM prm.placement_request r WHERE r.org_id = $1 AND r.patient_id = $2),"
			   " mails AS (SELECT DISTINCT b.message_id AS id FROM prm.contact_batch b"
			   "             JOIN prm.placement_contact c ON c.org_id = b.org_id AND c.batch_id = b.id"
			   "             JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   "            WHERE b.org_id = $1 AND r.patient_id = $2 AND b.message_id IS NOT NULL),"
			   /* a queued e-mail left with no request to ask about is not sent */
			   " cm AS (UPDATE prm.outbound_message x"
			   "          SET body = pg_catalog.regexp_replace(x.body, refs.pattern, E'- Ref. P\\\\1: [erased]', 'g'),"
			   "              status = CASE WHEN x.status = 'queued' AND NOT EXISTS ("
			   "                         SELECT 1 FROM prm.contact_batch b"
			   "                           JOIN prm.placement_contact c ON c.org_id = b.org_id AND c.batch_id = b.id"
			   "                          WHERE b.org_id = x.org_id AND b.message_id = x.id AND c.status <> 'withdrawn')"
			   "                        THEN 'cancelled' ELSE x.status END,"
			   "              updated_at = pg_catalog.now()"
			   "        FROM refs WHERE x.org_id = $1 AND x.id IN (SELECT mails.id FROM mails) RETURNING 1),"
			   " ch AS (UPDATE prm.outbound_message_history x"
			   "          SET body = pg_catalog.regexp_replace(x.body, refs.pattern, E'- Ref. P\\\\1: [erased]', 'g')"
			   "        FROM refs WHERE x.org_id = $1 AND x.id IN (SELECT mails.id FROM mails) RETURNING 1),"
			   " i AS (UPDATE prm.inbound_message x"
			   "         SET body = '[erased]', from_address = '[erased]', keyword = '[erased]'"
			   "       FROM own WHERE x.org_id = $1 AND " PRIVACY_THEIR_INBOUND " RETURNING x.id),"
			   /* their conversations: closed for good, every message blanked */
			   " cv AS (UPDATE prm.conversation x"
			   "          SET address = '[erased]', state = 'closed', state_due_at = NULL,"
			   "              closed_at = coalesce(x.closed_at, pg_catalog.now())"
			   "        FROM own WHERE x.org_id = $1 AND (x.patient_id = $2 OR (x.patient_id IS NULL"
			   "              AND (x.address = own.phone OR x.address = own.email))) RETURNING x.id),"
			   " cvm AS (UPDATE prm.conversation_message x SET body = '[erased]', call = NULL"
			   "         WHERE x.org_id = $1 AND (x.conversation_id IN (SELECT cv.id FROM cv)"
			   /* and theirs in a conversation of a number they share */
			   "               OR x.outbound_message_id IN (SELECT m.id FROM m UNION ALL SELECT h.id FROM h)"
			   "               OR x.inbound_message_id IN (SELECT i.id FROM i)) RETURNING 1),"
			   /* tickets about them: the subject, the description (a handoff's message) and every
			    * comment, internal or written to them, are blanked; the tickets stay for the SLA books */
			   " tk AS (UPDATE prm.ticket x"
			   "          SET subject = '[erased]',"
			   "              description = CASE WHEN x.description IS NOT NULL THEN '[erased]' END"
			   "        WHERE x.org_id = $1"
			   "          AND (x.patient_id = $2 OR x.conversation_id IN (SELECT cv.id FROM cv)) RETURNING x.id),"
			   " tc AS (UPDATE prm.ticket_comment x SET body = '[erased]'"
			   "        WHERE x.org_id = $1 AND x.ticket_id IN (SELECT tk.id FROM tk) RETURNING 1),"
			   " r AS (UPDATE prm.placement_request r"
			   "         SET latitude = NULL, longitude = NULL, birth_year = NULL, gender_preference = NULL"
			   "       WHERE r.org_id = $1 AND r.patient_id = $2 RETURNING 1),"
			   " rt AS (DELETE FROM prm.placement_request_time t"
			   "        WHERE t.org_id = $1 AND t.request_id IN (SELECT r.id FROM prm.placement_request r"
			   "                                                  WHERE r.org_id = $1 AND r.patient_id = $2)"
			   "        RETURNING 1),"
			   " e AS (UPDATE prm.event e"
			   "         SET payload = e.payload || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object("
			   "               'keyword', CASE WHEN e.payload ? 'keyword' THEN '[erased]' END,"
			   "               'error', CASE WHEN e.payload ? 'error' THEN '[erased]' END))"
			   "       WHERE e.org_id = $1 AND pg_catalog.jsonb_typeof(e.payload) = 'object'"
			   "         AND (e.payload ? 'keyword' OR e.payload ? 'error')"
			   "         AND ((e.entity = 'inbound_message' AND e.entity_id IN (SELECT i.id FROM i))"
			   "              OR (e.entity = 'outbound_message'"
			   "                  AND (e.entity_id IN (SELECT m.id FROM m) OR e.entity_id IN (SELECT h.id FROM h))))"
			   "       RETURNING 1)"
			   " SELECT pg_catalog.jsonb_build_object("
			   "  'patient', (SELECT pg_catalog.count(*) FROM p),"
			   "  'waitlist_entries_closed', (SELECT pg_catalog.count(*) FROM w),"
			   "  'appointments_anonymised', (SELECT pg_catalog.count(*) FROM a),"
			   "  'messages_out_blanked', (SELECT pg_catalog.count(*) FROM m) + (SELECT pg_catalog.count(*) FROM h),"
			   "  'contact_emails_blanked', (SELECT pg_catalog.count(*) FROM cm) + (SELECT pg_catalog.count(*) FROM ch),"
			   "  'messages_in_blanked', (SELECT pg_catalog.count(*) FROM i),"
			   "  'conversations_closed', (SELECT pg_catalog.count(*) FROM cv),"
			   "  'conversation_messages_blanked', (SELECT pg_catalog.count(*) FROM cvm),"
			   "  'tickets_blanked', (SELECT pg_catalog.count(*) FROM tk),"
			   "  'ticket_comments_blanked', (SELECT pg_catalog.count(*) FROM tc),"
			   "  'placement_requests_withdrawn', $3,"
			   "  'placement_requests_blanked', (SELECT pg_catalog.count(*) FROM r),"
			   "  'placement_times_deleted', (SELECT pg_catalog.count(*) FROM rt),"
			   "  'events_blanked', (SELECT pg_catalog.count(*) FROM e))",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = Int64GetDatum(withdrawn);
	PrmExecute(plan, values, NULL, false, 1);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	Assert(!isnull);
	return SPI_datumTransfer(result, false, -1);
}

/*
 * The retention step: delete events, inbound messages and archived outbound
 * messages older than each organization's retention_days, at most
 * RETENTION_BATCH rows of each per run.  Returns the rows deleted.
 */
int64
PrmApplyRetention(void)
{
	static SPIPlanPtr		 plans[4];
	static const char *const tables[4] = {"event", "inbound_message", "outbound_message_history",
										  "conversation_message"};
	static const char *const columns[4] = {"occurred_at", "received_at", "updated_at", "created_at"};
	int64					 deleted = 0;
	int						 t;

	for (t = 0; t < (int) lengthof(tables); t++)
	{
		Datum values[1];

		PrmPrepare(&plans[t],
				   psprintf("DELETE FROM prm.%s x WHERE (x.org_id, x.id) IN ("
							"  SELECT y.org_id, y.id FROM prm.%s y JOIN prm.organization o ON o.id = y.org_id"
							"   WHERE y.%s < pg_catalog.now() - pg_catalog.make_interval(days =>"
							"           coalesce((o.settings ->> 'retention_days')::int, 730))"
							"   LIMIT $1)",
							tables[t], tables[t], columns[t]),
				   1, (Oid[]){INT4OID});
		values[0] = Int32GetDatum(RETENTION_BATCH);
		deleted += PrmExecute(plans[t], values, NULL, false, 0);
	}
	return deleted;
}
