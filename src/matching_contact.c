/*-------------------------------------------------------------------------
 *
 * matching_contact.c
 *	  Contacting therapists about placement requests: contact e-mails,
 *	  answers, follow-up calls, and the contact history a patient needs for
 *	  cost reimbursement (section 13(3) SGB V).
 *
 * Contacts
 * --------
 * A proposal is a prm.placement_contact row in status proposed.  The
 * planning step sends each therapist their proposed requests (earliest
 * registrations first, at most MATCH_BATCH_MAX) in one e-mail, and never a
 * second e-mail within 7 days of the last one: the therapist's row is
 * locked while this is checked and the batch written, so concurrent
 * planners cannot both send.  The e-mail names no patient: a reference (the
 * request id), initials, an age band and the therapy type.  An e-mail whose
 * requests are not all answered 7 days later gets a call task in the
 * therapist's next phone-hours window, computed from wall-clock phone hours
 * in the therapist's time zone day by day, so daylight-saving changes move
 * the UTC time of the call and not its local time.  An acceptance matches
 * the request, takes a place and withdraws the request's other pending
 * contacts; call tasks of e-mails with nothing left unanswered are
 * cancelled.
 *
 * Times of record
 * ---------------
 * The contact history is evidence: a patient shows it to the health
 * insurer to be reimbursed.  Every time in it (an e-mail's sent_at, an
 * answer's answered_at, a call task's created_at and completed_at) is the
 * time prm recorded it, the transaction time, and the role that recorded it
 * is kept.  A caller may state another time (as_of: the letter arrived on
 * Monday and is typed in on Wednesday, or a simulation), but only an
 * administrator of the organization: it is kept beside the time of record
 * in a *_override column and shown as such in prm.placement_evidence, and
 * the rules of this file (the 7 days between e-mails, the 7 days before a
 * call) then run on it; an e-mail sent now is checked against the times of
 * record as well (MATCH_TOO_RECENT).  Staff stating a time get 42501, so
 * they can neither backdate the evidence nor move the e-mail rule.
 *
 * Locking: the therapist's row serialises the e-mails to that therapist; an
 * answer locks the request, the therapist and the contact; the follow-up
 * step takes due e-mails with SKIP LOCKED, so concurrent runs share them.
 * All these row locks are FOR NO KEY UPDATE (see matching.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "matching.h"

PG_FUNCTION_INFO_V1(prm_plan_contact_batches);
PG_FUNCTION_INFO_V1(prm_record_contact_answer);
PG_FUNCTION_INFO_V1(prm_run_matching_follow_ups);
PG_FUNCTION_INFO_V1(prm_record_call_outcome);
PG_FUNCTION_INFO_V1(prm_placement_evidence);

#define MATCH_BATCH_MAX 10
#define FOLLOW_UP_DAYS 7

/*
 * The rule of one e-mail per therapist in 7 days, as SQL: is contact batch b
 * too close to an e-mail at time "at" (override: whether "at" is a stated
 * time)?  An e-mail's time is its override when it has one.  An e-mail sent
 * now is also checked against the times of record, so an administrator's
 * backdated e-mail does not let staff send another one this week.
 */
#define MATCH_TOO_RECENT(at, override)                                       \
	" (coalesce(b.sent_at_override, b.sent_at) > " at " - interval '7 days'" \
	"  OR (NOT " override " AND b.sent_at > " at " - interval '7 days'))"

/* Fixed vocabularies: answers, contact channels, call outcomes. */
static const char *const answers[] = {"accepted", "declined", "no_place"};
static const char *const contact_channels[] = {"email", "phone", "letter", "in_person"};
static const char *const call_outcomes[] = {"reached", "no_answer", "voicemail", "wrong_number"};

/* When an evidence record takes effect (MatchEvidenceTime). */
typedef struct MatchWhen
{
	TimestampTz at;		  /* the stated time if there is one, else now */
	bool		override; /* at is an administrator's stated time */
} MatchWhen;

static void	 MatchEvidenceTime(FunctionCallInfo fcinfo, int argno, int64 org_id,
							   MatchWhen *when);
static int64 MatchFollowUps(int64 org_id, const MatchWhen *when, int limit);

/* ---------------------------------------------------------------------
 * Times of record
 * ---------------------------------------------------------------------
 */

/*
 * When the evidence recorded by a function call takes effect: now (the
 * time of record), unless argument argno (as_of) states another time, which
 * is an administrator's override; staff get 42501.  A NULL as_of, or one equal to
 * the transaction time, is now.  org_id 0: every organization (the caller
 * is privileged already).  Call after the access check; must run inside SPI.
 */
static void
MatchEvidenceTime(FunctionCallInfo fcinfo, int argno, int64 org_id,
				  MatchWhen *when)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz as_of;

	when->at = now;
	when->override = false;
	if (PG_ARGISNULL(argno))
		return;
	as_of = PG_GETARG_TIMESTAMPTZ(argno);
	if (as_of == now)
		return;
	if (TIMESTAMP_NOT_FINITE(as_of))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of must be a finite time")));
	if (org_id != 0 && !PrmHasOrgAccess(org_id, PRM_LEVEL_ADMIN))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to record a time other than now"),
				 errdetail("Contact evidence is recorded at the time prm records it; "
						   "a time stated instead is an administrator's override."),
				 errhint("Leave out as_of, or ask an administrator of organization %lld to record the time it happened.",
						 (long long) org_id)));
	when->at = as_of;
	when->override = true;
}

/* The override of when as a statement argument: its time, or NULL. */
static Datum
MatchOverrideArg(const MatchWhen *when, char *null)
{
	*null = when->override ? ' ' : 'n';
	return when->override ? TimestampTzGetDatum(when->at) : (Datum) 0;
}

/* The override of when as JSON: its time, or null. */
static const char *
MatchOverrideJson(const MatchWhen *when)
{
	return when->override ? PrmJsonTimestamp(when->at) : "null";
}

/* The name of the calling role, for the *_recorded_by columns. */
static Datum
MatchCallerName(void)
{
	return CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false));
}

/* ---------------------------------------------------------------------
 * Contact batches
 * ---------------------------------------------------------------------
 */

/* The first character of a name and a full stop ("A."), or "?". */
static char *
MatchInitial(const char *name)
{
	const char *p = name;

	while (*p && isspace((unsigned char) *p))
		p++;
	if (*p == '\0')
		return pstrdup("?");
	return psprintf("%.*s.", pg_mblen(p), p);
}

/* The age band of an age in years (negative: unknown). */
static const char *
MatchAgeBand(int age)
{
	if (age < 0)
		return "age not stated";
	if (age < 18)
		return "under 18";
	if (age < 25)
		return "18-24";
	if (age < 35)
		return "25-34";
	if (age < 45)
		return "35-44";
	if (age < 55)
		return "45-54";
	if (age < 65)
		return "55-64";
	return "65 or older";
}

/*
 * Lock the therapist's row (it serialises planners: one e-mail a week) and
 * check that the therapist may get an e-mail at when->at: still accepts
 * contact, has a place, and had no e-mail in the 7 days before (or later;
 * MATCH_TOO_RECENT).  Their name and address in *name and *email.
 */
static bool
MatchLockBatchTherapist(int64 org_id, int64 therapist_id, const MatchWhen *when,
						char **name, char **email)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr recent_plan = NULL;
	Datum			  values[4];

	PrmPrepare(&lock_plan,
			   "SELECT t.name, t.email FROM prm.therapist t"
			   " WHERE t.org_id = $1 AND t.id = $2"
			   "   AND t.accepts_contact AND t.open_places > 0 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(therapist_id);
	values[2] = TimestampTzGetDatum(when->at);
	values[3] = BoolGetDatum(when->override);
	if (PrmExecute(lock_plan, values, NULL, false, 1) != 1)
		return false;
	*name = PrmGetText(0, 1);
	*email = PrmGetText(0, 2);
	PrmPrepare(&recent_plan,
			   "SELECT 1 FROM prm.contact_batch b"
			   " WHERE b.org_id = $1 AND b.therapist_id = $2"
			   "   AND" MATCH_TOO_RECENT("$3", "$4") " LIMIT 1",
			   4, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, BOOLOID});
	return PrmExecute(recent_plan, values, NULL, false, 1) == 0;
}

/*
 * Lock the therapist's proposed contacts of open requests (earliest
 * registrations first, at most MATCH_BATCH_MAX) and describe each patient
 * in a de-identified line: reference, initials, age band at as_of, therapy
 * type.  Returns the number of contacts; their ids in *ids.
 */
static int
MatchBatchContacts(int64 org_id, int64 therapist_id, TimestampTz as_of,
				   Datum **ids, StringInfo lines)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;
	int				  n,
		i;

	PrmPrepare(&plan,
			   "SELECT c.id, r.id, r.therapy_type, p.given_name, p.family_name,"
			   "       coalesce(pg_catalog.date_part('year', $3 AT TIME ZONE 'UTC')::int - r.birth_year, -1)"
			   "  FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   "  JOIN prm.patient p ON p.org_id = r.org_id AND p.id = r.patient_id"
			   " WHERE c.org_id = $1 AND c.therapist_id = $2 AND c.status = 'proposed'"
			   "   AND r.status = 'open'"
			   " ORDER BY r.registered_at, r.id LIMIT " CppAsString2(MATCH_BATCH_MAX) " FOR NO KEY UPDATE OF c",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(therapist_id);
	values[2] = TimestampTzGetDatum(as_of);
	n = PrmExecute(plan, values, NULL, false, 0);
	*ids = palloc(sizeof(Datum) * (n + 1));
	for (i = 0; i < n; i++)
	{
		(*ids)[i] = Int64GetDatum(PrmGetInt64(i, 1, &isnull));
		appendStringInfo(lines, "- Ref. P%s: %s%s, %s, %s\n",
						 PrmGetText(i, 2),
						 MatchInitial(PrmGetText(i, 4)), MatchInitial(PrmGetText(i, 5)),
						 MatchAgeBand(MatchGetInt32(i, 6)), PrmGetText(i, 3));
	}
	return n;
}

/*
 * The e-mail about n patients: the organization's wording (prm.set_template),
 * else the built-in one.  22001 when it is longer than 1600 characters.
 */
static char *
MatchBatchBody(int64 org_id, int64 therapist_id, const char *therapist_name,
			   int n, const char *lines)
{
	const PrmSettings *settings = PrmGetSettings(org_id);
	PrmTemplateVar	   vars[3];
	char			  *body;

	vars[0].name = "therapist";
	vars[0].value = therapist_name;
	vars[1].name = "count";
	vars[1].value = psprintf("%d", n);
	vars[2].name = "patients";
	vars[2].value = lines;
	body = PrmRender(org_id, n == 1 ? "contact_single" : "contact_several",
					 "email", settings->locale, vars, 3);
	if (pg_mbstrlen(body) > 1600)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("contact e-mail to therapist %lld is longer than 1600 characters",
						(long long) therapist_id),
				 errhint("Shorten the therapist's or the organization's name.")));
	return body;
}

/*
 * Record the e-mail, sent now (with when's override): the contact batch and
 * its follow-up time, the outbox message, the n contacts ids as sent, the
 * therapist's contact count, and the event.  Returns the batch id.
 */
static int64
MatchRecordBatch(int64 org_id, int64 therapist_id, const MatchWhen *when, int n,
				 Datum *ids, const char *email, const char *body)
{
	static SPIPlanPtr batch_plan = NULL;
	static SPIPlanPtr message_plan = NULL;
	static SPIPlanPtr mark_plan = NULL;
	static SPIPlanPtr counter_plan = NULL;
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int64			  batch_id;
	int64			  message_id;
	bool			  isnull;

	PrmPrepare(&batch_plan,
			   "INSERT INTO prm.contact_batch (org_id, therapist_id, template, patients, sent_at,"
			   "   sent_at_override, follow_up_at, recorded_by)"
			   " VALUES ($1, $2, $4, $5, pg_catalog.now(), $3,"
			   "         $6 + interval '" CppAsString2(FOLLOW_UP_DAYS) " days', $7) RETURNING id",
			   7, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(therapist_id);
	values[2] = MatchOverrideArg(when, &nulls[2]);
	values[3] = CStringGetTextDatum(n == 1 ? "contact_single" : "contact_several");
	values[4] = Int32GetDatum(n);
	values[5] = TimestampTzGetDatum(when->at);
	values[6] = MatchCallerName();
	if (PrmExecute(batch_plan, values, nulls, false, 0) != 1)
		elog(ERROR, "contact batch insert returned no row");
	batch_id = PrmGetInt64(0, 1, &isnull);

	message_id = PrmEnqueue(org_id, "email", email, body, "contact_batch", 0, 0,
							psprintf("contact_batch:%lld", (long long) batch_id), 0);

	PrmPrepare(&message_plan,
			   "UPDATE prm.contact_batch b SET message_id = $3 WHERE b.org_id = $1 AND b.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[1] = Int64GetDatum(batch_id);
	values[2] = Int64GetDatum(message_id);
	PrmExecute(message_plan, values, NULL, false, 0);
	values[2] = MatchOverrideArg(when, &nulls[2]);

	PrmPrepare(&mark_plan,
			   "UPDATE prm.placement_contact c SET status = 'sent', batch_id = $2,"
			   "       sent_at = pg_catalog.now(), sent_at_override = $3, channel = 'email'"
			   " WHERE c.org_id = $1 AND c.id = ANY ($4)",
			   4, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, INT8ARRAYOID});
	values[3] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	PrmExecute(mark_plan, values, nulls, false, 0);

	PrmPrepare(&counter_plan,
			   "UPDATE prm.therapist t SET contacts_total = t.contacts_total + $3"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT4OID});
	values[1] = Int64GetDatum(therapist_id);
	values[2] = Int32GetDatum(n);
	PrmExecute(counter_plan, values, NULL, false, 0);

	PrmEmitEvent(org_id, "contact_batch_sent", "contact_batch", batch_id,
				 psprintf("{\"therapist_id\": %lld, \"patients\": %d, \"message_id\": %lld,"
						  " \"sent_at\": %s, \"sent_at_override\": %s}",
						  (long long) therapist_id, n, (long long) message_id,
						  PrmJsonTimestamp(GetCurrentTransactionStartTimestamp()),
						  MatchOverrideJson(when)));
	return batch_id;
}

/*
 * Send one therapist's proposed requests in one e-mail, unless the
 * therapist had one in the 7 days before when->at (or later).  Returns
 * whether an e-mail was queued.  Must run inside SPI.
 */
static bool
MatchSendBatch(int64 org_id, int64 therapist_id, const MatchWhen *when)
{
	char		  *name;
	char		  *email;
	Datum		  *ids;
	StringInfoData lines;
	int			   n;

	if (!MatchLockBatchTherapist(org_id, therapist_id, when, &name, &email))
		return false;
	initStringInfo(&lines);
	n = MatchBatchContacts(org_id, therapist_id, when->at, &ids, &lines);
	if (n == 0)
		return false;
	MatchRecordBatch(org_id, therapist_id, when, n, ids, email,
					 MatchBatchBody(org_id, therapist_id, name, n, lines.data));
	return true;
}

/*
 * prm.plan_contact_batches(org_id, as_of, max_batches) RETURNS int
 *	  Therapists are served in the order of the earliest registration among
 *	  their proposed requests.
 */
Datum
prm_plan_contact_batches(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int32			  max_batches = PRM_GETARG_INT32_NOTNULL(2, "max_batches");
	MatchWhen		  when;
	Datum			  values[4];
	int64			 *therapists;
	int				  n,
		i,
		sent = 0;

	if (max_batches < 1 || max_batches > 10000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_batches %d is out of range", max_batches),
				 errdetail("Send 1 to 10000 e-mails per call.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MatchEvidenceTime(fcinfo, 1, org_id, &when);
	PrmPrepare(&plan,
			   "SELECT c.therapist_id FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   " WHERE c.org_id = $1 AND c.status = 'proposed' AND r.status = 'open'"
			   "   AND NOT EXISTS (SELECT 1 FROM prm.contact_batch b"
			   "                    WHERE b.org_id = $1 AND b.therapist_id = c.therapist_id AND"
			   "                     " MATCH_TOO_RECENT("$2", "$4") ") GROUP BY c.therapist_id ORDER BY pg_catalog.min(r.registered_at), c.therapist_id LIMIT $3",
			   4, (Oid[]){INT8OID, TIMESTAMPTZOID, INT4OID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = TimestampTzGetDatum(when.at);
	values[2] = Int32GetDatum(max_batches);
	values[3] = BoolGetDatum(when.override);
	n = PrmExecute(plan, values, NULL, false, 0);
	therapists = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		therapists[i] = PrmGetInt64(i, 1, &isnull);
	}
	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (MatchSendBatch(org_id, therapists[i], &when))
			sent++;
	}
	PrmSpiFinish();
	PG_RETURN_INT32(sent);
}

/* ---------------------------------------------------------------------
 * Settling contacts
 * ---------------------------------------------------------------------
 */

/*
 * Cancel the open call tasks of e-mails about request_id that no longer
 * have an unanswered request.
 */
void
MatchCancelSettledCalls(int64 org_id, int64 request_id, TimestampTz as_of)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];

	PrmPrepare(&plan,
			   "UPDATE prm.call_task k SET status = 'cancelled', completed_at = $3"
			   " WHERE k.org_id = $1 AND k.status = 'open'"
			   "   AND k.batch_id IN (SELECT c.batch_id FROM prm.placement_contact c"
			   "                       WHERE c.org_id = $1 AND c.request_id = $2)"
			   "   AND NOT EXISTS (SELECT 1 FROM prm.placement_contact c"
			   "                    WHERE c.org_id = $1 AND c.batch_id = k.batch_id"
			   "                      AND c.status = 'sent')",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	values[2] = TimestampTzGetDatum(as_of);
	PrmExecute(plan, values, NULL, false, 0);
}

/* Withdraw the pending contacts of a request (but keep). */
int
MatchWithdrawContacts(int64 org_id, int64 request_id, int64 keep_contact_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];

	PrmPrepare(&plan,
			   "UPDATE prm.placement_contact c SET status = 'withdrawn'"
			   " WHERE c.org_id = $1 AND c.request_id = $2 AND c.id <> $3"
			   "   AND c.status IN ('proposed', 'sent')",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	values[2] = Int64GetDatum(keep_contact_id);
	return PrmExecute(plan, values, NULL, false, 0);
}

/* ---------------------------------------------------------------------
 * Answers, follow-up calls
 * ---------------------------------------------------------------------
 */

/*
 * Lock the request, the therapist and the contact of the pair (in that
 * order), and check that the therapist was asked and has not answered yet.
 * Returns the contact's id; *open says whether the request is still open.
 */
static int64
MatchLockContact(int64 org_id, int64 request_id, int64 therapist_id, bool *open)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	int64			  contact_id;
	bool			  isnull;

	MatchRequireRow(org_id, "placement_request", request_id, true);
	MatchRequireRow(org_id, "therapist", therapist_id, true);
	PrmPrepare(&plan,
			   "SELECT c.id, c.status, r.status FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   " WHERE c.org_id = $1 AND c.request_id = $2 AND c.therapist_id = $3"
			   " FOR NO KEY UPDATE OF c",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	values[2] = Int64GetDatum(therapist_id);
	if (PrmExecute(plan, values, NULL, false, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("therapist %lld was not asked about placement request %lld",
						(long long) therapist_id, (long long) request_id),
				 errhint("Answers are recorded for contacts proposed by prm.assign_placements().")));
	contact_id = PrmGetInt64(0, 1, &isnull);
	if (strcmp(PrmGetText(0, 2), "answered") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("therapist %lld has already answered about placement request %lld",
						(long long) therapist_id, (long long) request_id)));
	*open = strcmp(PrmGetText(0, 3), "open") == 0;
	return contact_id;
}

/*
 * Record the answer on the contact: answered now by the calling role, with
 * when's override.  A contact never sent (the therapist was asked another
 * way) is recorded as made now, by the answer's channel.  weeks < 0: no
 * waiting time stated.
 */
static void
MatchRecordAnswer(int64 org_id, int64 contact_id, int answer, int channel,
				  int weeks, const MatchWhen *when)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	PrmPrepare(&plan,
			   "UPDATE prm.placement_contact c SET status = 'answered', answer = $3, answer_channel = $4,"
			   "       stated_waiting_weeks = $5, answered_at = pg_catalog.now(),"
			   "       answered_at_override = $6, answer_recorded_by = $7,"
			   "       sent_at = coalesce(c.sent_at, pg_catalog.now()),"
			   "       sent_at_override = CASE WHEN c.sent_at IS NULL THEN $6 ELSE c.sent_at_override END,"
			   "       channel = CASE WHEN c.sent_at IS NULL THEN $4 ELSE c.channel END"
			   " WHERE c.org_id = $1 AND c.id = $2",
			   7, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(contact_id);
	values[2] = CStringGetTextDatum(answers[answer]);
	values[3] = CStringGetTextDatum(contact_channels[channel]);
	values[4] = Int32GetDatum(weeks);
	nulls[4] = weeks >= 0 ? ' ' : 'n';
	values[5] = MatchOverrideArg(when, &nulls[5]);
	values[6] = MatchCallerName();
	PrmExecute(plan, values, nulls, false, 0);
}

/*
 * Count the answer in the therapist's reply history; an acceptance that
 * matched takes a place, no_place empties them.
 */
static void
MatchCountAnswer(int64 org_id, int64 therapist_id, int answer, bool matched)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[4];

	PrmPrepare(&plan,
			   "UPDATE prm.therapist t SET answers_total = t.answers_total + 1,"
			   "       accepted_total = t.accepted_total + CASE WHEN $3 = 'accepted' THEN 1 ELSE 0 END,"
			   "       open_places = CASE WHEN $3 = 'no_place' THEN 0"
			   "                          WHEN $4 THEN pg_catalog.int4larger(t.open_places - 1, 0)"
			   "                          ELSE t.open_places END,"
			   "       updated_at = pg_catalog.now()"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, TEXTOID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(therapist_id);
	values[2] = CStringGetTextDatum(answers[answer]);
	values[3] = BoolGetDatum(matched);
	PrmExecute(plan, values, NULL, false, 0);
}

/*
 * Match the request with the therapist (closed now) and withdraw its other
 * pending contacts.
 */
static void
MatchCloseRequest(int64 org_id, int64 request_id, int64 therapist_id,
				  int64 contact_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];

	PrmPrepare(&plan,
			   "UPDATE prm.placement_request r SET status = 'matched', matched_therapist_id = $3,"
			   "       closed_at = pg_catalog.now()"
			   " WHERE r.org_id = $1 AND r.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	values[2] = Int64GetDatum(therapist_id);
	PrmExecute(plan, values, NULL, false, 0);
	MatchWithdrawContacts(org_id, request_id, contact_id);
	PrmEmitEvent(org_id, "placement_matched", "placement_request", request_id,
				 psprintf("{\"therapist_id\": %lld}", (long long) therapist_id));
}

/*
 * prm.record_contact_answer(org_id, request_id, therapist_id, answer,
 *		stated_waiting_weeks, channel, as_of) RETURNS boolean
 */
Datum
prm_record_contact_answer(PG_FUNCTION_ARGS)
{
	int64	  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64	  request_id = PRM_GETARG_INT64_NOTNULL(1, "request_id");
	int64	  therapist_id = PRM_GETARG_INT64_NOTNULL(2, "therapist_id");
	int		  answer = MatchOneOf(answers, lengthof(answers),
								  PrmTextArg(fcinfo, 3, "answer", 40), "answer");
	int		  weeks = PG_ARGISNULL(4) ? -1 : PG_GETARG_INT32(4);
	int		  channel = MatchOneOf(contact_channels, lengthof(contact_channels),
								   PrmTextArg(fcinfo, 5, "channel", 40), "channel");
	bool	  accepted = (answer == 0);
	bool	  open;
	bool	  matched;
	MatchWhen when;
	int64	  contact_id;

	if (!PG_ARGISNULL(4) && (weeks < 0 || weeks > 520))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stated waiting time %d weeks is out of range", weeks),
				 errdetail("Waiting times are between 0 and 520 weeks.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MatchEvidenceTime(fcinfo, 6, org_id, &when);
	contact_id = MatchLockContact(org_id, request_id, therapist_id, &open);
	matched = accepted && open;
	MatchRecordAnswer(org_id, contact_id, answer, channel, weeks, &when);
	MatchCountAnswer(org_id, therapist_id, answer, matched);
	if (matched)
		MatchCloseRequest(org_id, request_id, therapist_id, contact_id);
	MatchCancelSettledCalls(org_id, request_id, GetCurrentTransactionStartTimestamp());
	PrmEmitEvent(org_id, "contact_answered", "placement_contact", contact_id,
				 psprintf("{\"request_id\": %lld, \"therapist_id\": %lld, \"answer\": \"%s\","
						  " \"channel\": \"%s\", \"answered_at_override\": %s}",
						  (long long) request_id, (long long) therapist_id,
						  answers[answer], contact_channels[channel],
						  MatchOverrideJson(&when)));
	PrmSpiFinish();
	PG_RETURN_BOOL(matched);
}

/* A contact e-mail due for its follow-up check. */
typedef struct MatchDueBatch
{
	int64 org_id;
	int64 id;
	int64 therapist_id;
	char *tz; /* the therapist's time zone */
} MatchDueBatch;

/*
 * Lock (SKIP LOCKED) at most limit contact e-mails whose follow-up is due
 * at as_of, of one organization or all when org_id is 0; returns how many,
 * in *due.
 */
static int
MatchDueBatches(int64 org_id, TimestampTz as_of, int limit, MatchDueBatch **due)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	int				  n,
		i;

	PrmPrepare(&plan,
			   "SELECT b.org_id, b.id, b.therapist_id, t.timezone"
			   "  FROM prm.contact_batch b"
			   "  JOIN prm.therapist t ON t.org_id = b.org_id AND t.id = b.therapist_id"
			   " WHERE b.follow_up_at IS NOT NULL AND b.follow_up_at <= $1"
			   "   AND ($2::bigint IS NULL OR b.org_id = $2)"
			   " ORDER BY b.follow_up_at, b.org_id, b.id LIMIT $3"
			   " FOR NO KEY UPDATE OF b SKIP LOCKED",
			   3, (Oid[]){TIMESTAMPTZOID, INT8OID, INT4OID});
	values[0] = TimestampTzGetDatum(as_of);
	values[1] = Int64GetDatum(org_id);
	nulls[1] = org_id > 0 ? ' ' : 'n';
	values[2] = Int32GetDatum(limit);
	n = PrmExecute(plan, values, nulls, false, 0);
	*due = palloc(sizeof(MatchDueBatch) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		(*due)[i].org_id = PrmGetInt64(i, 1, &isnull);
		(*due)[i].id = PrmGetInt64(i, 2, &isnull);
		(*due)[i].therapist_id = PrmGetInt64(i, 3, &isnull);
		(*due)[i].tz = PrmGetText(i, 4);
	}
	return n;
}

/*
 * Check one due e-mail: clear its follow-up time and, if a request of it
 * is still unanswered, create its call task (recorded now, with when's
 * override) in the therapist's next phone-hours window from when->at.
 * Returns whether a task was created.
 */
static bool
MatchFollowUpBatch(const MatchDueBatch *b, const MatchWhen *when)
{
	static SPIPlanPtr done_plan = NULL;
	static SPIPlanPtr pending_plan = NULL;
	static SPIPlanPtr task_plan = NULL;
	MatchTherapist	  t;
	TimestampTz		  ws,
		we;
	Datum values[7];
	char  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool  isnull;
	int64 task_id;

	values[0] = Int64GetDatum(b->org_id);
	values[1] = Int64GetDatum(b->id);
	PrmPrepare(&done_plan,
			   "UPDATE prm.contact_batch b SET follow_up_at = NULL"
			   " WHERE b.org_id = $1 AND b.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(done_plan, values, NULL, false, 0);

	PrmPrepare(&pending_plan,
			   "SELECT 1 FROM prm.placement_contact c"
			   " WHERE c.org_id = $1 AND c.batch_id = $2 AND c.status = 'sent' LIMIT 1",
			   2, (Oid[]){INT8OID, INT8OID});
	if (PrmExecute(pending_plan, values, NULL, false, 1) == 0)
		return false; /* everything answered or withdrawn */

	memset(&t, 0, sizeof(t));
	t.id = b->therapist_id;
	MatchLoadPhoneHours(b->org_id, &t, 1);
	if (!MatchNextWindow(b->tz, t.win, t.nwin, when->at, &ws, &we))
	{
		/* no phone hours known: the call can be made from now on */
		ws = when->at;
		we = when->at + USECS_PER_DAY;
	}
	PrmPrepare(&task_plan,
			   "INSERT INTO prm.call_task (org_id, therapist_id, batch_id, window_starts_at,"
			   "   window_ends_at, created_at, created_at_override, note)"
			   " VALUES ($1, $3, $2, $4, $5, pg_catalog.now(), $6, $7)"
			   " ON CONFLICT (org_id, batch_id) DO NOTHING RETURNING id",
			   7, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID});
	values[2] = Int64GetDatum(b->therapist_id);
	values[3] = TimestampTzGetDatum(ws);
	values[4] = TimestampTzGetDatum(we);
	values[5] = MatchOverrideArg(when, &nulls[5]);
	if (t.nwin == 0)
		values[6] = CStringGetTextDatum("The therapist has no phone hours on record.");
	else
		nulls[6] = 'n';
	if (PrmExecute(task_plan, values, nulls, false, 0) != 1)
		return false;
	task_id = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(b->org_id, "call_task_created", "call_task", task_id,
				 psprintf("{\"therapist_id\": %lld, \"batch_id\": %lld, \"window_starts_at\": %s}",
						  (long long) b->therapist_id, (long long) b->id,
						  PrmJsonTimestamp(ws)));
	return true;
}

/*
 * Create the call tasks of contact e-mails sent at least 7 days before
 * when->at that still have unanswered requests (of one organization, or
 * all when org_id is 0); at most limit e-mails are looked at.  Returns the
 * number of tasks created.  Must run inside SPI.
 */
static int64
MatchFollowUps(int64 org_id, const MatchWhen *when, int limit)
{
	MatchDueBatch *due;
	int			   n,
		i;
	int64 created = 0;

	n = MatchDueBatches(org_id, when->at, limit, &due);
	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (MatchFollowUpBatch(&due[i], when))
			created++;
	}
	return created;
}

/* The job runner's follow-up step: all organizations, now, bounded. */
int64
PrmMatchingFollowUps(void)
{
	MatchWhen now = {GetCurrentTransactionStartTimestamp(), false};

	return MatchFollowUps(0, &now, 200);
}

/*
 * prm.run_matching_follow_ups(org_id, as_of, max_tasks) RETURNS bigint
 */
Datum
prm_run_matching_follow_ups(PG_FUNCTION_ARGS)
{
	int32	  max_tasks = PRM_GETARG_INT32_NOTNULL(2, "max_tasks");
	int64	  org_id = 0;
	MatchWhen when;
	int64	  created;

	if (max_tasks < 1 || max_tasks > 10000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_tasks %d is out of range", max_tasks),
				 errdetail("Look at 1 to 10000 e-mails per call.")));
	PrmSpiConnect();
	if (PG_ARGISNULL(0))
	{
		if (!PrmCallerIsPrivileged())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to run follow-ups of every organization"),
					 errhint("Pass your organization's id.")));
	}
	else
	{
		org_id = PG_GETARG_INT64(0);
		PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	}
	MatchEvidenceTime(fcinfo, 1, org_id, &when);
	created = MatchFollowUps(org_id, &when, max_tasks);
	PrmSpiFinish();
	PG_RETURN_INT64(created);
}

/*
 * prm.record_call_outcome(org_id, call_task_id, outcome, note, as_of)
 *	  RETURNS void
 */
Datum
prm_record_call_outcome(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  task_id = PRM_GETARG_INT64_NOTNULL(1, "call_task_id");
	int				  outcome = MatchOneOf(call_outcomes, lengthof(call_outcomes),
										   PrmTextArg(fcinfo, 2, "outcome", 40), "call outcome");
	char			 *note = PrmTextArgOrNull(fcinfo, 3, "note", PRM_MAX_TEXT_LEN);
	MatchWhen		  when;
	Datum			  values[6];
	char			  nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	char			 *status;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MatchEvidenceTime(fcinfo, 4, org_id, &when);
	PrmPrepare(&find_plan,
			   "SELECT k.status FROM prm.call_task k WHERE k.org_id = $1 AND k.id = $2 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(task_id);
	if (PrmExecute(find_plan, values, NULL, false, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("call_task %lld does not exist in organization %lld",
						(long long) task_id, (long long) org_id)));
	status = PrmGetText(0, 1);
	if (strcmp(status, "open") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("call task %lld is %s, not open", (long long) task_id, status)));
	PrmPrepare(&plan,
			   "UPDATE prm.call_task k SET status = 'done', outcome = $3, note = $4,"
			   "       completed_at = pg_catalog.now(), completed_at_override = $5,"
			   "       outcome_recorded_by = $6"
			   " WHERE k.org_id = $1 AND k.id = $2",
			   6, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID});
	values[2] = CStringGetTextDatum(call_outcomes[outcome]);
	values[3] = note ? CStringGetTextDatum(note) : (Datum) 0;
	nulls[3] = note ? ' ' : 'n';
	values[4] = MatchOverrideArg(&when, &nulls[4]);
	values[5] = MatchCallerName();
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "call_task_done", "call_task", task_id,
				 psprintf("{\"outcome\": \"%s\", \"completed_at_override\": %s}",
						  call_outcomes[outcome], MatchOverrideJson(&when)));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Evidence
 * ---------------------------------------------------------------------
 */

/*
 * prm.placement_evidence(org_id, request_id) RETURNS jsonb
 */
Datum
prm_placement_evidence(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  request_id = PRM_GETARG_INT64_NOTNULL(1, "request_id");
	Datum			  values[2];
	Datum			  result;
	bool			  isnull;

	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_build_object("
			   "  'request_id', r.id, 'patient_id', r.patient_id, 'registered_at', r.registered_at,"
			   "  'status', r.status, 'therapy_type', r.therapy_type,"
			   "  'matched_therapist_id', r.matched_therapist_id, 'closed_at', r.closed_at,"
			   "  'contacts', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
			   "      'therapist_id', c.therapist_id, 'therapist_name', t.name,"
			   "      'therapist_email', t.email, 'contacted_at', c.sent_at,"
			   "      'contacted_at_override', c.sent_at_override,"
			   "      'contact_recorded_by', coalesce(b.recorded_by, c.answer_recorded_by),"
			   "      'channel', c.channel, 'answer', c.answer, 'answer_channel', c.answer_channel,"
			   "      'answered_at', c.answered_at, 'answered_at_override', c.answered_at_override,"
			   "      'answer_recorded_by', c.answer_recorded_by,"
			   "      'stated_waiting_weeks', c.stated_waiting_weeks, 'status', c.status,"
			   "      'calls', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
			   "          'window_starts_at', k.window_starts_at, 'status', k.status,"
			   "          'created_at', k.created_at, 'created_at_override', k.created_at_override,"
			   "          'outcome', k.outcome, 'completed_at', k.completed_at,"
			   "          'completed_at_override', k.completed_at_override,"
			   "          'outcome_recorded_by', k.outcome_recorded_by) ORDER BY k.id)"
			   "          FROM prm.call_task k WHERE k.org_id = c.org_id AND k.batch_id = c.batch_id),"
			   "        '[]'::pg_catalog.jsonb))"
			   "      ORDER BY coalesce(c.sent_at_override, c.sent_at), c.id)"
			   "    FROM prm.placement_contact c"
			   "    JOIN prm.therapist t ON t.org_id = c.org_id AND t.id = c.therapist_id"
			   "    LEFT JOIN prm.contact_batch b ON b.org_id = c.org_id AND b.id = c.batch_id"
			   "   WHERE c.org_id = r.org_id AND c.request_id = r.id AND c.sent_at IS NOT NULL),"
			   "    '[]'::pg_catalog.jsonb))"
			   "  FROM prm.placement_request r WHERE r.org_id = $1 AND r.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	if (PrmExecute(plan, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("placement_request %lld does not exist in organization %lld",
						(long long) request_id, (long long) org_id)));
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = SPI_datumTransfer(result, false, -1);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}