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

/* Fixed vocabularies: answers, contact channels, call outcomes. */
static const char *const answers[] = {"accepted", "declined", "no_place"};
static const char *const contact_channels[] = {"email", "phone", "letter", "in_person"};
static const char *const call_outcomes[] = {"reached", "no_answer", "voicemail", "wrong_number"};

static int64 MatchFollowUps(int64 org_id, TimestampTz as_of, int limit);
static bool	 MatchNextWindow(const char *tz, const MatchWindow *win, int nwin,
							 TimestampTz as_of, TimestampTz *start,
							 TimestampTz *end);

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
 * check that the therapist may get an e-mail at as_of: still accepts
 * contact, has a place, and had no e-mail in the 7 days before (or later).
 * Their name and address in *name and *email.
 */
static bool
MatchLockBatchTherapist(int64 org_id, int64 therapist_id, TimestampTz as_of,
						char **name, char **email)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr recent_plan = NULL;
	Datum			  values[3];

	PrmPrepare(&lock_plan,
			   "SELECT t.name, t.email FROM prm.therapist t"
			   " WHERE t.org_id = $1 AND t.id = $2"
			   "   AND t.accepts_contact AND t.open_places > 0 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(therapist_id);
	values[2] = TimestampTzGetDatum(as_of);
	if (PrmExecute(lock_plan, values, NULL, false, 1) != 1)
		return false;
	*name = PrmGetText(0, 1);
	*email = PrmGetText(0, 2);
	PrmPrepare(&recent_plan,
			   "SELECT 1 FROM prm.contact_batch b"
			   " WHERE b.org_id = $1 AND b.therapist_id = $2"
			   "   AND b.sent_at > $3 - interval '7 days' LIMIT 1",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
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
 * Record the e-mail: the contact batch and its follow-up time, the outbox
 * message, the n contacts ids as sent, the therapist's contact count, and
 * the event.  Returns the batch id.
 */
static int64
MatchRecordBatch(int64 org_id, int64 therapist_id, TimestampTz as_of, int n,
				 Datum *ids, const char *email, const char *body)
{
	static SPIPlanPtr batch_plan = NULL;
	static SPIPlanPtr message_plan = NULL;
	static SPIPlanPtr mark_plan = NULL;
	static SPIPlanPtr counter_plan = NULL;
	Datum			  values[5];
	int64			  batch_id;
	int64			  message_id;
	bool			  isnull;

	PrmPrepare(&batch_plan,
			   "INSERT INTO prm.contact_batch (org_id, therapist_id, template, patients, sent_at, follow_up_at)"
			   " VALUES ($1, $2, $4, $5, $3, $3 + interval '" CppAsString2(FOLLOW_UP_DAYS) " days') RETURNING id",
			   5, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID, INT4OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(therapist_id);
	values[2] = TimestampTzGetDatum(as_of);
	values[3] = CStringGetTextDatum(n == 1 ? "contact_single" : "contact_several");
	values[4] = Int32GetDatum(n);
	if (PrmExecute(batch_plan, values, NULL, false, 0) != 1)
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

	PrmPrepare(&mark_plan,
			   "UPDATE prm.placement_contact c SET status = 'sent', batch_id = $2, sent_at = $3,"
			   "       channel = 'email'"
			   " WHERE c.org_id = $1 AND c.id = ANY ($4)",
			   4, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, INT8ARRAYOID});
	values[2] = TimestampTzGetDatum(as_of);
	values[3] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	PrmExecute(mark_plan, values, NULL, false, 0);

	PrmPrepare(&counter_plan,
			   "UPDATE prm.therapist t SET contacts_total = t.contacts_total + $3"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT4OID});
	values[1] = Int64GetDatum(therapist_id);
	values[2] = Int32GetDatum(n);
	PrmExecute(counter_plan, values, NULL, false, 0);

	PrmEmitEvent(org_id, "contact_batch_sent", "contact_batch", batch_id,
				 psprintf("{\"therapist_id\": %lld, \"patients\": %d, \"message_id\": %lld, \"sent_at\": %s}",
						  (long long) therapist_id, n, (long long) message_id,
						  PrmJsonTimestamp(as_of)));
	return batch_id;
}

/*
 * Send one therapist's proposed requests in one e-mail, unless the
 * therapist had one in the 7 days before as_of (or later).  Returns
 * whether an e-mail was queued.  Must run inside SPI.
 */
static bool
MatchSendBatch(int64 org_id, int64 therapist_id, TimestampTz as_of)
{
	char		  *name;
	char		  *email;
	Datum		  *ids;
	StringInfoData lines;
	int			   n;

	if (!MatchLockBatchTherapist(org_id, therapist_id, as_of, &name, &email))
		return false;
	initStringInfo(&lines);
	n = MatchBatchContacts(org_id, therapist_id, as_of, &ids, &lines);
	if (n == 0)
		return false;
	MatchRecordBatch(org_id, therapist_id, as_of, n, ids, email,
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
	TimestampTz		  as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(1, "as_of");
	int32			  max_batches = PRM_GETARG_INT32_NOTNULL(2, "max_batches");
	Datum			  values[3];
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
	PrmPrepare(&plan,
			   "SELECT c.therapist_id FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   " WHERE c.org_id = $1 AND c.status = 'proposed' AND r.status = 'open'"
			   "   AND NOT EXISTS (SELECT 1 FROM prm.contact_batch b"
			   "                    WHERE b.org_id = $1 AND b.therapist_id = c.therapist_id"
			   "                      AND b.sent_at > $2 - interval '7 days')"
			   " GROUP BY c.therapist_id"
			   " ORDER BY pg_catalog.min(r.registered_at), c.therapist_id LIMIT $3",
			   3, (Oid[]){INT8OID, TIMESTAMPTZOID, INT4OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = TimestampTzGetDatum(as_of);
	values[2] = Int32GetDatum(max_batches);
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
		if (MatchSendBatch(org_id, therapists[i], as_of))
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
 * prm.record_contact_answer(org_id, request_id, therapist_id, answer,
 *		stated_waiting_weeks, channel, as_of) RETURNS boolean
 */
Datum
prm_record_contact_answer(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr answer_plan = NULL;
	static SPIPlanPtr therapist_plan = NULL;
	static SPIPlanPtr match_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  request_id = PRM_GETARG_INT64_NOTNULL(1, "request_id");
	int64			  therapist_id = PRM_GETARG_INT64_NOTNULL(2, "therapist_id");
	int				  answer = MatchOneOf(answers, lengthof(answers),
										  PrmTextArg(fcinfo, 3, "answer", 40), "answer");
	bool			  has_weeks = !PG_ARGISNULL(4);
	int				  channel = MatchOneOf(contact_channels, lengthof(contact_channels),
										   PrmTextArg(fcinfo, 5, "channel", 40), "channel");
	TimestampTz		  as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(6, "as_of");
	bool			  accepted = (answer == 0);
	bool			  matched = false;
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int64			  contact_id;
	char			 *status;
	bool			  isnull;

	if (has_weeks && (PG_GETARG_INT32(4) < 0 || PG_GETARG_INT32(4) > 520))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stated waiting time %d weeks is out of range", PG_GETARG_INT32(4)),
				 errdetail("Waiting times are between 0 and 520 weeks.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	MatchRequireRow(org_id, "placement_request", request_id, true);
	MatchRequireRow(org_id, "therapist", therapist_id, true);

	PrmPrepare(&find_plan,
			   "SELECT c.id, c.status, r.status FROM prm.placement_contact c"
			   "  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id"
			   " WHERE c.org_id = $1 AND c.request_id = $2 AND c.therapist_id = $3"
			   " FOR NO KEY UPDATE OF c",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(request_id);
	values[2] = Int64GetDatum(therapist_id);
	if (PrmExecute(find_plan, values, NULL, false, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("therapist %lld was not asked about placement request %lld",
						(long long) therapist_id, (long long) request_id),
				 errhint("Answers are recorded for contacts proposed by prm.assign_placements().")));
	contact_id = PrmGetInt64(0, 1, &isnull);
	status = PrmGetText(0, 2);
	if (strcmp(status, "answered") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("therapist %lld has already answered about placement request %lld",
						(long long) therapist_id, (long long) request_id)));
	matched = accepted && strcmp(PrmGetText(0, 3), "open") == 0;

	PrmPrepare(&answer_plan,
			   "UPDATE prm.placement_contact c SET status = 'answered', answer = $3, answer_channel = $4,"
			   "       stated_waiting_weeks = $5, answered_at = $6,"
			   "       sent_at = coalesce(c.sent_at, $6),"
			   "       channel = CASE WHEN c.sent_at IS NULL THEN $4 ELSE c.channel END"
			   " WHERE c.org_id = $1 AND c.id = $2",
			   6, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID});
	values[1] = Int64GetDatum(contact_id);
	values[2] = CStringGetTextDatum(answers[answer]);
	values[3] = CStringGetTextDatum(contact_channels[channel]);
	values[4] = has_weeks ? PG_GETARG_DATUM(4) : (Datum) 0;
	nulls[4] = has_weeks ? ' ' : 'n';
	values[5] = TimestampTzGetDatum(as_of);
	PrmExecute(answer_plan, values, nulls, false, 0);

	/* reply history; an acceptance takes a place, no_place empties them */
	PrmPrepare(&therapist_plan,
			   "UPDATE prm.therapist t SET answers_total = t.answers_total + 1,"
			   "       accepted_total = t.accepted_total + CASE WHEN $3 = 'accepted' THEN 1 ELSE 0 END,"
			   "       open_places = CASE WHEN $3 = 'no_place' THEN 0"
			   "                          WHEN $4 THEN pg_catalog.int4larger(t.open_places - 1, 0)"
			   "                          ELSE t.open_places END,"
			   "       updated_at = pg_catalog.now()"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, TEXTOID, BOOLOID});
	values[1] = Int64GetDatum(therapist_id);
	values[3] = BoolGetDatum(matched);
	PrmExecute(therapist_plan, values, NULL, false, 0);

	if (matched)
	{
		PrmPrepare(&match_plan,
				   "UPDATE prm.placement_request r SET status = 'matched', matched_therapist_id = $3,"
				   "       closed_at = $4"
				   " WHERE r.org_id = $1 AND r.id = $2",
				   4, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID});
		values[1] = Int64GetDatum(request_id);
		values[2] = Int64GetDatum(therapist_id);
		values[3] = TimestampTzGetDatum(as_of);
		PrmExecute(match_plan, values, NULL, false, 0);
		MatchWithdrawContacts(org_id, request_id, contact_id);
		PrmEmitEvent(org_id, "placement_matched", "placement_request", request_id,
					 psprintf("{\"therapist_id\": %lld}", (long long) therapist_id));
	}
	MatchCancelSettledCalls(org_id, request_id, as_of);
	PrmEmitEvent(org_id, "contact_answered", "placement_contact", contact_id,
				 psprintf("{\"request_id\": %lld, \"therapist_id\": %lld, \"answer\": \"%s\", \"channel\": \"%s\"}",
						  (long long) request_id, (long long) therapist_id,
						  answers[answer], contact_channels[channel]));
	PrmSpiFinish();
	PG_RETURN_BOOL(matched);
}

/* ISO day of week (1 = Monday) of a day number counted from 2000-01-01. */
static int
MatchIsoDow(int64 day)
{
	/* 2000-01-01 was a Saturday (ISO 6) */
	return (int) (((day % 7) + 7 + 5) % 7) + 1;
}

/*
 * The first moment at or after as_of inside one of the weekly windows
 * (wall-clock times in time zone tz), and the end of that window.  Each
 * candidate day's local start and end are converted to UTC on their own,
 * so a daylight-saving change between as_of and the call moves the call's
 * UTC time, never its local time.  False when there are no windows.
 */
static bool
MatchNextWindow(const char *tz, const MatchWindow *win, int nwin,
				TimestampTz as_of, TimestampTz *start, TimestampTz *end)
{
	Datum	  tzd = CStringGetTextDatum(tz);
	Timestamp local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone, tzd,
															TimestampTzGetDatum(as_of)));
	int64	  day0 = local / USECS_PER_DAY - (local % USECS_PER_DAY < 0 ? 1 : 0);
	int		  k,
		i;

	for (k = 0; k <= 7; k++)
	{
		int64		day = day0 + k;
		int			dow = MatchIsoDow(day);
		TimestampTz best_start = 0;
		TimestampTz best_end = 0;
		bool		found = false;

		for (i = 0; i < nwin; i++)
		{
			int		  wdow = win[i].start / MINUTES_PER_DAY + 1;
			Timestamp ls,
				le;
			TimestampTz s,
				e;

			if (wdow != dow)
				continue;
			ls = day * USECS_PER_DAY + (int64) (win[i].start % MINUTES_PER_DAY) * USECS_PER_MINUTE;
			le = day * USECS_PER_DAY + (int64) (win[i].end - (wdow - 1) * MINUTES_PER_DAY) * USECS_PER_MINUTE;
			s = DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, tzd, TimestampGetDatum(ls)));
			e = DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, tzd, TimestampGetDatum(le)));
			if (s < as_of)
				s = as_of;
			if (e <= s)
				continue; /* over, or lost in a daylight-saving gap */
			if (!found || s < best_start)
			{
				best_start = s;
				best_end = e;
				found = true;
			}
		}
		if (found)
		{
			*start = best_start;
			*end = best_end;
			return true;
		}
	}
	return false;
}

/*
 * Create the call tasks of contact e-mails sent at least 7 days before
 * as_of that still have unanswered requests (of one organization, or all
 * when org_id is 0); at most limit e-mails are looked at.  Returns the
 * number of tasks created.  Must run inside SPI.
 */
static int64
MatchFollowUps(int64 org_id, TimestampTz as_of, int limit)
{
	static SPIPlanPtr due_plan = NULL;
	static SPIPlanPtr pending_plan = NULL;
	static SPIPlanPtr task_plan = NULL;
	static SPIPlanPtr done_plan = NULL;
	typedef struct DueBatch
	{
		int64 org_id;
		int64 id;
		int64 therapist_id;
		char *tz;
	} DueBatch;
	DueBatch *due;
	Datum	  values[6];
	char	  nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int		  n,
		i;
	int64 created = 0;

	PrmPrepare(&due_plan,
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
	n = PrmExecute(due_plan, values, nulls, false, 0);
	due = palloc(sizeof(DueBatch) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		due[i].org_id = PrmGetInt64(i, 1, &isnull);
		due[i].id = PrmGetInt64(i, 2, &isnull);
		due[i].therapist_id = PrmGetInt64(i, 3, &isnull);
		due[i].tz = PrmGetText(i, 4);
	}
	memset(nulls, ' ', sizeof(nulls));

	for (i = 0; i < n; i++)
	{
		MatchTherapist t;
		TimestampTz	   ws,
			we;

		CHECK_FOR_INTERRUPTS();
		values[0] = Int64GetDatum(due[i].org_id);
		values[1] = Int64GetDatum(due[i].id);
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
			continue; /* everything answered or withdrawn */

		memset(&t, 0, sizeof(t));
		t.id = due[i].therapist_id;
		MatchLoadPhoneHours(due[i].org_id, &t, 1);
		if (!MatchNextWindow(due[i].tz, t.win, t.nwin, as_of, &ws, &we))
		{
			/* no phone hours known: the call can be made from now on */
			ws = as_of;
			we = as_of + USECS_PER_DAY;
		}
		PrmPrepare(&task_plan,
				   "INSERT INTO prm.call_task (org_id, therapist_id, batch_id, window_starts_at,"
				   "   window_ends_at, created_at, note)"
				   " VALUES ($1, $3, $2, $4, $5, $6, $7)"
				   " ON CONFLICT (org_id, batch_id) DO NOTHING RETURNING id",
				   7, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID});
		{
			Datum tv[7];
			char  tn[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
			bool  isnull;

			tv[0] = values[0];
			tv[1] = values[1];
			tv[2] = Int64GetDatum(due[i].therapist_id);
			tv[3] = TimestampTzGetDatum(ws);
			tv[4] = TimestampTzGetDatum(we);
			tv[5] = TimestampTzGetDatum(as_of);
			if (t.nwin == 0)
				tv[6] = CStringGetTextDatum("The therapist has no phone hours on record.");
			else
				tn[6] = 'n';
			if (PrmExecute(task_plan, tv, tn, false, 0) == 1)
			{
				int64 task_id = PrmGetInt64(0, 1, &isnull);

				created++;
				PrmEmitEvent(due[i].org_id, "call_task_created", "call_task", task_id,
							 psprintf("{\"therapist_id\": %lld, \"batch_id\": %lld, \"window_starts_at\": %s}",
									  (long long) due[i].therapist_id, (long long) due[i].id,
									  PrmJsonTimestamp(ws)));
			}
		}
	}
	return created;
}

/* The job runner's follow-up step: all organizations, now, bounded. */
int64
PrmMatchingFollowUps(void)
{
	return MatchFollowUps(0, GetCurrentTransactionStartTimestamp(), 200);
}

/*
 * prm.run_matching_follow_ups(org_id, as_of, max_tasks) RETURNS bigint
 */
Datum
prm_run_matching_follow_ups(PG_FUNCTION_ARGS)
{
	TimestampTz as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(1, "as_of");
	int32		max_tasks = PRM_GETARG_INT32_NOTNULL(2, "max_tasks");
	int64		org_id = 0;
	int64		created;

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
	created = MatchFollowUps(org_id, as_of, max_tasks);
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
	TimestampTz		  as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(4, "as_of");
	Datum			  values[5];
	char			  nulls[5] = {' ', ' ', ' ', ' ', ' '};
	char			 *status;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
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
			   "UPDATE prm.call_task k SET status = 'done', outcome = $3, note = $4, completed_at = $5"
			   " WHERE k.org_id = $1 AND k.id = $2",
			   5, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID});
	values[2] = CStringGetTextDatum(call_outcomes[outcome]);
	values[3] = note ? CStringGetTextDatum(note) : (Datum) 0;
	nulls[3] = note ? ' ' : 'n';
	values[4] = TimestampTzGetDatum(as_of);
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "call_task_done", "call_task", task_id,
				 psprintf("{\"outcome\": \"%s\"}", call_outcomes[outcome]));
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

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_build_object("
			   "  'request_id', r.id, 'patient_id', r.patient_id, 'registered_at', r.registered_at,"
			   "  'status', r.status, 'therapy_type', r.therapy_type,"
			   "  'matched_therapist_id', r.matched_therapist_id, 'closed_at', r.closed_at,"
			   "  'contacts', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
			   "      'therapist_id', c.therapist_id, 'therapist_name', t.name,"
			   "      'therapist_email', t.email, 'contacted_at', c.sent_at, 'channel', c.channel,"
			   "      'answer', c.answer, 'answer_channel', c.answer_channel,"
			   "      'answered_at', c.answered_at, 'stated_waiting_weeks', c.stated_waiting_weeks,"
			   "      'status', c.status,"
			   "      'calls', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object("
			   "          'window_starts_at', k.window_starts_at, 'status', k.status,"
			   "          'outcome', k.outcome, 'completed_at', k.completed_at) ORDER BY k.id)"
			   "          FROM prm.call_task k WHERE k.org_id = c.org_id AND k.batch_id = c.batch_id),"
			   "        '[]'::pg_catalog.jsonb)) ORDER BY c.sent_at, c.id)"
			   "    FROM prm.placement_contact c"
			   "    JOIN prm.therapist t ON t.org_id = c.org_id AND t.id = c.therapist_id"
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