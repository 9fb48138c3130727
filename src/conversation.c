/*-------------------------------------------------------------------------
 *
 * conversation.c
 *	  Conversations: every message to and from a patient threaded by
 *	  (organization, channel, address); staff replies, reading, assignment,
 *	  voice-call transcripts, and the conversation timers.
 *
 * PrmThreadMessage is the one routine that puts a message into its
 * conversation: the outbox calls it for every message to a patient, the
 * inbound paths for every message received.  It is a single upsert on the
 * partial unique index of open conversations, so two messages opening the
 * same conversation at once find one row, and a conversation closed
 * meanwhile is left alone (new traffic starts a new one).
 *
 * Timers, as Twilio Conversations: a conversation without traffic for the
 * organization's conversation_inactive_after becomes inactive, after
 * conversation_closed_after it is closed for good.  Its next timer is
 * state_due_at (indexed), a deadline of the worker: the timer step touches
 * only conversations whose timer is due.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "prm.h"
#include "ticket.h"

PG_FUNCTION_INFO_V1(prm_reply_in_conversation);
PG_FUNCTION_INFO_V1(prm_mark_conversation_read);
PG_FUNCTION_INFO_V1(prm_assign_conversation);
PG_FUNCTION_INFO_V1(prm_record_call_transcript);
PG_FUNCTION_INFO_V1(prm_set_inbound_address);

/* WhatsApp's customer service window */
#define WHATSAPP_WINDOW_USECS (24 * USECS_PER_HOUR)

/* When an active conversation of org_id touched at t becomes inactive. */
static TimestampTz
ConversationInactiveAt(int64 org_id, TimestampTz t)
{
	const PrmSettings *s = PrmGetSettings(org_id);

	return PrmTimestampPlusUsecs(t, PrmIntervalUsecs(&s->conversation_inactive_after));
}

/*
 * Put a message into the open conversation of (org_id, channel, address),
 * starting one if there is none, and return the conversation's id.  An
 * inbound message moves last_inbound_at (WhatsApp's window) and, when
 * unread, the unread count.  Inside SPI.
 */
int64
PrmThreadMessage(int64 org_id, const char *channel, const char *address,
				 int64 patient_id, bool inbound, bool unread, const char *body,
				 int64 inbound_id, int64 outbound_id)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr plan = NULL;
	TimestampTz		  now = GetCurrentTransactionStartTimestamp();
	Datum			  v[10];
	char			  n[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  conversation_id;
	int64			  before_id = 0;
	bool			  inserted;
	char			 *before = NULL;

	Assert(address != NULL && body != NULL);
	/* e-mail addresses thread in the one inbound form, whoever wrote them */
	if (strcmp(channel, "email") == 0)
	{
		char *canonical = PrmInboundAddress("email", address, NULL);

		if (canonical != NULL)
			address = canonical;
	}
	/*
	 * The open conversation as it is now, locked: a lock the timer holds is
	 * waited for and the state read is the one it committed (the timer
	 * passes over a conversation locked here).  None: the upsert starts one,
	 * or joins the one another message is starting.
	 */
	PrmPrepare(&lock_plan,
			   "SELECT c.id, c.state FROM prm.conversation c"
			   " WHERE c.org_id = $1 AND c.channel = $2 AND c.address = $3 AND c.state <> 'closed'"
			   " FOR NO KEY UPDATE",
			   3, (Oid[]){INT8OID, TEXTOID, TEXTOID});
	if (PrmExecute(lock_plan,
				   (Datum[]){Int64GetDatum(org_id), CStringGetTextDatum(channel), CStringGetTextDatum(address)},
				   NULL, false, 1) == 1)
	{
		before_id = PrmGetInt64(0, 1, &isnull);
		before = PrmGetText(0, 2);
	}
	PrmPrepare(&plan,
			   "WITH c AS ("
			   "  INSERT INTO prm.conversation AS c (org_id, patient_id, channel, address,"
			   "         last_message_at, last_inbound_at, unread_count, state_due_at)"
			   "  VALUES ($1, $2, $3, $4, pg_catalog.now(), CASE WHEN $5 THEN pg_catalog.now() END,"
			   "          CASE WHEN $5 AND $6 THEN 1 ELSE 0 END, $7)"
			   "  ON CONFLICT (org_id, channel, address) WHERE state <> 'closed' DO UPDATE"
			   "     SET state = 'active', last_message_at = EXCLUDED.last_message_at,"
			   "         last_inbound_at = coalesce(EXCLUDED.last_inbound_at, c.last_inbound_at),"
			   "         unread_count = c.unread_count + EXCLUDED.unread_count,"
			   "         patient_id = coalesce(c.patient_id, EXCLUDED.patient_id),"
			   "         state_due_at = EXCLUDED.state_due_at"
			   "  RETURNING c.id, c.xmax = 0 AS inserted),"
			   " m AS ("
			   "  INSERT INTO prm.conversation_message (org_id, conversation_id, direction, body,"
			   "         inbound_message_id, outbound_message_id)"
			   "  SELECT $1, c.id, CASE WHEN $5 THEN 'inbound' ELSE 'outbound' END, $8, $9, $10 FROM c)"
			   "SELECT c.id, c.inserted FROM c",
			   10, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, BOOLOID, BOOLOID, TIMESTAMPTZOID, TEXTOID, INT8OID, INT8OID});
	v[0] = Int64GetDatum(org_id);
	v[1] = Int64GetDatum(patient_id);
	n[1] = patient_id > 0 ? ' ' : 'n';
	v[2] = CStringGetTextDatum(channel);
	v[3] = CStringGetTextDatum(address);
	v[4] = BoolGetDatum(inbound);
	v[5] = BoolGetDatum(unread);
	v[6] = TimestampTzGetDatum(ConversationInactiveAt(org_id, now));
	v[7] = CStringGetTextDatum(body);
	v[8] = Int64GetDatum(inbound_id);
	n[8] = inbound_id > 0 ? ' ' : 'n';
	v[9] = Int64GetDatum(outbound_id);
	n[9] = outbound_id > 0 ? ' ' : 'n';
	PrmExecute(plan, v, n, false, 0);
	conversation_id = PrmGetInt64(0, 1, &isnull);
	Assert(!isnull);
	/*
	 * Started: the upsert inserted the row (xmax 0; a row it updated carries
	 * this transaction's lock), not merely found none in its snapshot: a
	 * conversation another message opened meanwhile is joined, not started
	 * again.  Reactivated: the row updated is the one locked above, inactive.
	 */
	inserted = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (inserted)
		PrmEmitEvent(org_id, "conversation_started", "conversation", conversation_id,
					 psprintf("{\"channel\": %s}", PrmJsonString(channel)));
	else if (before_id == conversation_id && before != NULL && strcmp(before, "inactive") == 0)
		PrmEmitEvent(org_id, "conversation_reactivated", "conversation", conversation_id, NULL);
	PrmNotifyOnce("prm_conversation");
	return conversation_id;
}

/*
 * The timer step: conversations whose timer is due become inactive or
 * closed, at most limit of them (the next run comes at once while more are
 * due).  Conversations locked by a message being threaded are passed over:
 * that message moves their timer anyway.  Returns how many changed.
 */
int64
PrmConversationTimers(int limit)
{
	static SPIPlanPtr due_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	int				  n,
		i;
	int64		*orgs;
	int64		*ids;
	char	   **states;
	TimestampTz *last;
	int64		 changed = 0;

	PrmPrepare(&due_plan,
			   "SELECT c.org_id, c.id, c.state, c.last_message_at FROM prm.conversation c"
			   " WHERE c.state <> 'closed' AND c.state_due_at <= pg_catalog.now()"
			   " ORDER BY c.state_due_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	PrmPrepare(&update_plan,
			   "UPDATE prm.conversation c SET state = $3, state_due_at = $4,"
			   "       closed_at = CASE WHEN $3 = 'closed' THEN pg_catalog.now() END"
			   " WHERE c.org_id = $1 AND c.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, TEXTOID, TIMESTAMPTZOID});
	n = PrmExecute(due_plan, (Datum[]){Int32GetDatum(limit)}, NULL, false, 0);
	orgs = palloc(sizeof(int64) * (n + 1));
	ids = palloc(sizeof(int64) * (n + 1));
	states = palloc(sizeof(char *) * (n + 1));
	last = palloc(sizeof(TimestampTz) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		orgs[i] = PrmGetInt64(i, 1, &isnull);
		ids[i] = PrmGetInt64(i, 2, &isnull);
		states[i] = PrmGetText(i, 3);
		last[i] = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);

	for (i = 0; i < n; i++)
	{
		const PrmSettings *s = PrmGetSettings(orgs[i]);
		TimestampTz		   now = GetCurrentTransactionStartTimestamp();
		TimestampTz		   closes = PrmTimestampPlusUsecs(last[i], PrmIntervalUsecs(&s->conversation_closed_after));
		const char		  *state;
		Datum			   values[4];
		char			   nulls[4] = {' ', ' ', ' ', ' '};

		CHECK_FOR_INTERRUPTS();
		/* inactive first; closed when its time has come too (or it was inactive) */
		if (strcmp(states[i], "active") == 0 && closes > now)
			state = "inactive";
		else
			state = "closed";
		values[0] = Int64GetDatum(orgs[i]);
		values[1] = Int64GetDatum(ids[i]);
		values[2] = CStringGetTextDatum(state);
		values[3] = TimestampTzGetDatum(closes);
		if (strcmp(state, "closed") == 0)
			nulls[3] = 'n';
		PrmExecute(update_plan, values, nulls, false, 0);
		PrmEmitEvent(orgs[i], strcmp(state, "closed") == 0 ? "conversation_closed" : "conversation_inactive",
					 "conversation", ids[i], NULL);
		changed++;
	}
	if (changed > 0)
		PrmNotifyOnce("prm_conversation");
	return changed;
}

/* A conversation of org_id, locked; its channel, address, patient, state and WhatsApp window. */
typedef struct ConversationRow
{
	char	   *channel;
	char	   *address;
	int64		patient_id;
	char	   *state;
	TimestampTz last_inbound_at; /* 0: never */
} ConversationRow;

static void
ConversationLoad(int64 org_id, int64 conversation_id, ConversationRow *row)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	Datum			  d;

	PrmPrepare(&plan,
			   "SELECT c.channel, c.address, c.patient_id, c.state, c.last_inbound_at"
			   "  FROM prm.conversation c WHERE c.org_id = $1 AND c.id = $2 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(conversation_id);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("conversation %lld does not exist in organization %lld",
						(long long) conversation_id, (long long) org_id)));
	row->channel = PrmGetText(0, 1);
	row->address = PrmGetText(0, 2);
	row->patient_id = PrmGetInt64(0, 3, &isnull);
	if (isnull)
		row->patient_id = 0;
	row->state = PrmGetText(0, 4);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull);
	row->last_inbound_at = isnull ? 0 : DatumGetTimestampTz(d);
}

/* A closed conversation is final: no reply, no reading, no assignment (55000). */
static void
ConversationRequireOpen(int64 conversation_id, const ConversationRow *row)
{
	if (strcmp(row->state, "closed") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("conversation %lld is closed", (long long) conversation_id),
				 errdetail("A closed conversation never reopens."),
				 errhint("Send with prm.enqueue_message; the message starts a new conversation.")));
}

/*
 * prm.reply_in_conversation(org_id, conversation_id, body, template)
 *	  RETURNS bigint: the queued message, on the conversation's channel.
 *	  WhatsApp allows free-form text only within 24 hours of the patient's
 *	  last message; outside it only a template the organization stored for
 *	  WhatsApp (its approved wording), named by template.
 */
Datum
prm_reply_in_conversation(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr author_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  conversation_id = PRM_GETARG_INT64_NOTNULL(1, "conversation_id");
	char			 *body = PrmTextArgOrNull(fcinfo, 2, "body", 1600);
	/* the three-argument form shares this function: it has no argument 3 to read */
	char *template = PG_NARGS() > 3 ? PrmTextArgOrNull(fcinfo, 3, "template", 30) : NULL;
	ConversationRow c;
	TimestampTz		not_before;
	int64			id;

	if ((body == NULL) == (template == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("give either body or template"),
				 errhint("body is free text; template names a message kind the organization stored for the channel.")));
	if (body != NULL && body[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("body must not be empty")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	ConversationLoad(org_id, conversation_id, &c);
	ConversationRequireOpen(conversation_id, &c);
	if (strcmp(c.channel, "voice") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("conversation %lld is a voice conversation: it takes no written reply", (long long) conversation_id),
				 errhint("Reply by SMS with prm.enqueue_message(org_id, 'sms', ...).")));
	if (template != NULL)
	{
		static SPIPlanPtr stored_plan = NULL;
		Datum			  values[3];

		/* only the organization's own wording counts as approved */
		PrmPrepare(&stored_plan,
				   "SELECT 1 FROM prm.message_template t WHERE t.org_id = $1 AND t.kind = $2 AND t.channel = $3",
				   3, (Oid[]){INT8OID, TEXTOID, TEXTOID});
		values[0] = Int64GetDatum(org_id);
		values[1] = CStringGetTextDatum(template);
		values[2] = CStringGetTextDatum(c.channel);
		if (PrmExecute(stored_plan, values, NULL, true, 1) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("organization %lld has no %s template of kind \"%s\"",
							(long long) org_id, c.channel, template),
					 errhint("Store it with prm.set_template(org_id, kind, body, channel => '%s').", c.channel)));
		body = PrmRender(org_id, template, c.channel, PrmGetSettings(org_id)->locale, NULL, 0);
	}
	else if (strcmp(c.channel, "whatsapp") == 0 &&
			 (c.last_inbound_at == 0 ||
			  GetCurrentTransactionStartTimestamp() - c.last_inbound_at > WHATSAPP_WINDOW_USECS))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("WhatsApp allows free-form replies only within 24 hours of the patient's last message"),
				 errdetail(c.last_inbound_at == 0 ? "The patient has not written in this conversation."
												  : "The patient last wrote at %s.",
						   timestamptz_to_str(c.last_inbound_at)),
				 errhint("Send an approved template: prm.reply_in_conversation(org_id, conversation_id, NULL, template => 'kind').")));

	not_before = PrmRecipientRules(org_id, c.channel, c.address, c.patient_id,
								   GetCurrentTransactionStartTimestamp());
	id = PrmEnqueue(org_id, c.channel, c.address, body, "reply", c.patient_id, 0, NULL, not_before);
	/* PrmEnqueue threads messages to a patient; an unknown sender's here */
	if (c.patient_id == 0)
		(void) PrmThreadMessage(org_id, c.channel, c.address, 0, false, false, body, 0, id);
	PrmPrepare(&author_plan,
			   "UPDATE prm.conversation_message m SET author = $3"
			   " WHERE m.org_id = $1 AND m.outbound_message_id = $2",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	PrmExecute(author_plan,
			   (Datum[]){Int64GetDatum(org_id), Int64GetDatum(id),
						 CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false))},
			   NULL, false, 0);
	/* a staff reply answers the conversation's tickets (their first reply) */
	PrmTicketStaffReplied(org_id, conversation_id);
	PrmEmitEvent(org_id, "conversation_replied", "conversation", conversation_id,
				 psprintf("{\"outbound_message_id\": %lld}", (long long) id));
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * prm.mark_conversation_read(org_id, conversation_id) RETURNS int: how many
 * messages were unread.
 */
Datum
prm_mark_conversation_read(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  conversation_id = PRM_GETARG_INT64_NOTNULL(1, "conversation_id");
	Datum			  values[2];
	bool			  isnull;
	int64			  unread;
	ConversationRow	  c;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	ConversationLoad(org_id, conversation_id, &c);
	ConversationRequireOpen(conversation_id, &c);
	PrmPrepare(&plan,
			   "WITH old AS (SELECT c.unread_count FROM prm.conversation c WHERE c.org_id = $1 AND c.id = $2)"
			   " UPDATE prm.conversation c SET unread_count = 0"
			   "  WHERE c.org_id = $1 AND c.id = $2 RETURNING (SELECT old.unread_count FROM old)",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(conversation_id);
	PrmExecute(plan, values, NULL, false, 0);
	unread = PrmGetInt64(0, 1, &isnull);
	if (unread > 0)
	{
		PrmEmitEvent(org_id, "conversation_read", "conversation", conversation_id,
					 psprintf("{\"messages\": %lld}", (long long) unread));
		PrmNotifyOnce("prm_conversation");
	}
	PrmSpiFinish();
	PG_RETURN_INT32((int32) unread);
}

/*
 * prm.assign_conversation(org_id, conversation_id, staff_id) RETURNS void
 *	  staff_id NULL: unassigned.
 */
Datum
prm_assign_conversation(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  conversation_id = PRM_GETARG_INT64_NOTNULL(1, "conversation_id");
	int64			  staff_id = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	ConversationRow	  c;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	ConversationLoad(org_id, conversation_id, &c);
	ConversationRequireOpen(conversation_id, &c);
	if (staff_id != 0)
		PrmRequireRow(org_id, PRM_ENTITY_STAFF, staff_id, false);
	PrmPrepare(&plan,
			   "UPDATE prm.conversation c SET assignee_id = $3 WHERE c.org_id = $1 AND c.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(conversation_id);
	values[2] = Int64GetDatum(staff_id);
	nulls[2] = staff_id ? ' ' : 'n';
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "conversation_assigned", "conversation", conversation_id,
				 staff_id ? psprintf("{\"staff_id\": %lld}", (long long) staff_id) : "{\"staff_id\": null}");
	PrmNotifyOnce("prm_conversation");
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* outcome: a short word of lower-case letters and underscores */
static void
ConversationCheckOutcome(const char *outcome)
{
	const char *p;

	for (p = outcome; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || *p == '_' || *p == '-'))
			break;
	if (*p != '\0' || p == outcome || strlen(outcome) > 40)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("call outcome \"%s\" is not valid", outcome),
				 errhint("Use a word of lower-case letters, hyphens and underscores, such as completed, voicemail, no-answer or transferred.")));
}

/*
 * prm.record_call_transcript(org_id, provider_call_id, caller, transcript,
 *							  duration_seconds, outcome) RETURNS bigint
 *	  A voice agent's call into the caller's voice conversation, once per
 *	  provider call id: a replay returns the first recording's id.
 */
Datum
prm_record_call_transcript(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr existing_plan = NULL;
	static SPIPlanPtr patient_plan = NULL;
	static SPIPlanPtr call_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *call_id = PrmTextArg(fcinfo, 1, "provider_call_id", 200);
	char			 *caller_raw;
	char			 *transcript = PrmTextArg(fcinfo, 3, "transcript", 100000);
	int32			  duration = PG_ARGISNULL(4) ? -1 : PG_GETARG_INT32(4);
	char			 *outcome = PrmTextArgOrNull(fcinfo, 5, "outcome", 40);
	char			 *caller;
	Datum			  values[4];
	bool			  isnull;
	int64			  patient_id = 0;
	int64			  conversation_id,
		message_id;

	if (!PG_ARGISNULL(4) && (duration < 0 || duration > 24 * 3600))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("duration_seconds %d is out of range", duration),
				 errhint("A call lasts from 0 seconds to 24 hours.")));
	/* whatever the provider sends as the caller (withheld numbers too): 64 bytes */
	PrmArgNotNull(fcinfo, 2, "caller");
	caller_raw = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (strlen(caller_raw) > 64)
		caller_raw[pg_mbcliplen(caller_raw, strlen(caller_raw), 64)] = '\0';
	if (outcome)
		ConversationCheckOutcome(outcome);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_WEBHOOK);
	caller = PrmTryNormalizePhone(caller_raw, PrmOrgPhoneRegion(org_id));
	if (caller == NULL)
		caller = caller_raw; /* "anonymous", "Restricted": kept as sent */
	/* one recording per call id, also when the provider retries a slow call */
	PrmLockOrgMutex(org_id, "calls");

	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(call_id);
	PrmPrepare(&existing_plan,
			   "SELECT m.id FROM prm.conversation_message m WHERE m.org_id = $1 AND m.provider_call_id = $2",
			   2, (Oid[]){INT8OID, TEXTOID});
	if (PrmExecute(existing_plan, values, NULL, false, 1) == 1)
	{
		message_id = PrmGetInt64(0, 1, &isnull);
		PrmSpiFinish();
		PG_RETURN_INT64(message_id);
	}

	PrmPrepare(&patient_plan,
			   "SELECT p.id FROM prm.patient p WHERE p.org_id = $1 AND p.phone = $2 ORDER BY p.id LIMIT 1",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[1] = CStringGetTextDatum(caller);
	if (PrmExecute(patient_plan, values, NULL, false, 1) == 1)
		patient_id = PrmGetInt64(0, 1, &isnull);
	conversation_id = PrmThreadMessage(org_id, "voice", caller, patient_id, true, true,
									   transcript, 0, 0);
	/* the message just threaded is the conversation's newest */
	PrmPrepare(&call_plan,
			   "UPDATE prm.conversation_message m SET provider_call_id = $3,"
			   "       call = pg_catalog.jsonb_build_object('caller', $4::text,"
			   "              'duration_seconds', $5::int, 'outcome', $6::text)"
			   " WHERE m.org_id = $1 AND m.id = (SELECT pg_catalog.max(x.id) FROM prm.conversation_message x"
			   "                                   WHERE x.org_id = $1 AND x.conversation_id = $2)"
			   " RETURNING m.id",
			   6, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, INT4OID, TEXTOID});
	{
		Datum v[6];
		char  n[6] = {' ', ' ', ' ', ' ', ' ', ' '};

		v[0] = Int64GetDatum(org_id);
		v[1] = Int64GetDatum(conversation_id);
		v[2] = CStringGetTextDatum(call_id);
		v[3] = CStringGetTextDatum(caller);
		v[4] = Int32GetDatum(duration);
		n[4] = duration >= 0 ? ' ' : 'n';
		v[5] = outcome ? CStringGetTextDatum(outcome) : (Datum) 0;
		n[5] = outcome ? ' ' : 'n';
		PrmExecute(call_plan, v, n, false, 0);
	}
	message_id = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(org_id, "call_recorded", "conversation", conversation_id,
				 psprintf("{\"message_id\": %lld, \"patient_id\": %s}", (long long) message_id,
						  patient_id ? psprintf("%lld", (long long) patient_id) : "null"));
	PrmSpiFinish();
	PG_RETURN_INT64(message_id);
}

/*
 * Raise 23505 when another organization already routes by this WhatsApp
 * number or e-mail address (the unique constraint backs it against a race;
 * this says which address, in words, instead of the constraint's name).
 */
static void
InboundAddressCheckFree(int64 org_id, bool email, const char *address)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];

	PrmPrepare(&plan,
			   "SELECT 1 FROM prm.organization o"
			   " WHERE o.id <> $1 AND CASE WHEN $2 THEN o.email_address ELSE o.whatsapp_number END = $3",
			   3, (Oid[]){INT8OID, BOOLOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = BoolGetDatum(email);
	values[2] = CStringGetTextDatum(address);
	if (PrmExecute(plan, values, NULL, true, 1) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("%s %s already belongs to another organization",
						email ? "e-mail address" : "WhatsApp number", address),
				 errdetail("Inbound messages are routed by the clinic's address, so each address has one organization.")));
}

/*
 * prm.set_inbound_address(org_id, channel, address) RETURNS text
 *	  The clinic's WhatsApp number or e-mail address inbound traffic is
 *	  routed by (SMS: the organization's sms_number); NULL removes it.
 *	  Returns the address as stored.
 */
Datum
prm_set_inbound_address(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *channel = PrmTextArg(fcinfo, 1, "channel", 20);
	char			 *raw = PrmTextArgOrNull(fcinfo, 2, "address", 320);
	bool			  email = strcmp(channel, "email") == 0;
	char			 *address = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	text			 *result;

	if (!email && strcmp(channel, "whatsapp") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" has no inbound address to set", channel),
				 errhint("Use whatsapp or email; the SMS number is the organization's sms_number.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	if (raw != NULL && email)
	{
		address = PrmInboundAddress("email", raw, NULL);
		PrmCheckEmail(address ? address : raw);
	}
	else if (raw != NULL)
		address = PrmNormalizePhone(pg_strncasecmp(raw, "whatsapp:", 9) == 0 ? raw + 9 : raw,
									PrmOrgPhoneRegion(org_id));
	if (address != NULL)
		InboundAddressCheckFree(org_id, email, address);
	PrmPrepare(&plan,
			   "UPDATE prm.organization o"
			   "   SET whatsapp_number = CASE WHEN $2 THEN o.whatsapp_number ELSE $3 END,"
			   "       email_address = CASE WHEN $2 THEN $3 ELSE o.email_address END"
			   " WHERE o.id = $1",
			   3, (Oid[]){INT8OID, BOOLOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = BoolGetDatum(email);
	values[2] = address ? CStringGetTextDatum(address) : (Datum) 0;
	nulls[2] = address ? ' ' : 'n';
	PrmExecute(plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "inbound_address_set", "organization", org_id,
				 psprintf("{\"channel\": %s, \"address\": %s}", PrmJsonString(channel),
						  address ? PrmJsonString(address) : "null"));
	result = address ? (text *) DatumGetPointer(SPI_datumTransfer(CStringGetTextDatum(address), false, -1)) : NULL;
	PrmSpiFinish();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(result);
}
