/*-------------------------------------------------------------------------
 *
 * conversation_inbound.c
 *	  Inbound traffic of every channel: routing a message to the
 *	  organization by the address it was sent to, recording it once per
 *	  provider message id, the keyword of a message, the request for a
 *	  person (handoff), and WhatsApp and e-mail messages, which prm threads
 *	  into the sender's conversation for staff.  SMS keywords and offer
 *	  replies are fill_reply.c's; prm.handle_inbound_message sends SMS there.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "prm.h"
#include "ticket.h"

/* The keyword of a message: its letters and digits, upper-cased, at most 40. */
char *
PrmKeyword(const char *body)
{
	StringInfoData buf;
	const char	  *p;

	initStringInfo(&buf);
	for (p = body; *p && buf.len < 40; p++)
		if (isalpha((unsigned char) *p))
			appendStringInfoChar(&buf, pg_toupper((unsigned char) *p));
		else if (isdigit((unsigned char) *p))
			appendStringInfoChar(&buf, *p);
	return buf.data;
}

/*
 * Does the message ask for a person?  Its keyword is one of the
 * organization's handoff_keywords (each read the same way, so "talk to
 * someone" in the setting matches "Talk to someone!").
 */
bool
PrmAsksForPerson(int64 org_id, const char *body)
{
	const PrmSettings *s = PrmGetSettings(org_id);
	char			  *kw = PrmKeyword(body);
	char			  *words = pstrdup(s->handoff_keywords);
	char			  *word;
	char			  *save = NULL;

	if (kw[0] == '\0')
		return false;
	for (word = strtok_r(words, ",", &save); word; word = strtok_r(NULL, ",", &save))
		if (strcmp(PrmKeyword(word), kw) == 0)
			return true;
	return false;
}

/*
 * The address inbound traffic on channel was sent to, in the form the
 * organization stores it: a phone number in E.164 (WhatsApp's "whatsapp:"
 * prefix dropped), an e-mail address in lower case ("Name <a@b>" read as
 * a@b).  NULL if it cannot be one.
 */
char *
PrmInboundAddress(const char *channel, const char *raw, const char *region)
{
	if (strcmp(channel, "email") == 0)
	{
		const char *lt = strchr(raw, '<');
		char	   *addr = pstrdup(lt ? lt + 1 : raw);
		char	   *gt = strchr(addr, '>');
		char	   *lower = addr;
		char	   *p;

		if (gt)
			*gt = '\0';
		for (p = addr; *p; p++)
			*p = pg_tolower((unsigned char) *p);
		/* trim blanks */
		while (*lower == ' ')
			lower++;
		while (*lower && lower[strlen(lower) - 1] == ' ')
			lower[strlen(lower) - 1] = '\0';
		if (strchr(lower, '@') == NULL || strlen(lower) > 254)
			return NULL;
		return lower;
	}
	if (pg_strncasecmp(raw, "whatsapp:", 9) == 0)
		raw += 9;
	return PrmTryNormalizePhone(raw, region);
}

/*
 * The organization owning address to_raw on channel, checked for the
 * webhook level (42501).  An address no organization owns: 0 for a
 * privileged caller, P0002 for any other, saying which argument is which
 * (clinic numbers are public; swapping To and From is the usual mistake).
 * Inside SPI.
 */
int64
PrmRouteInbound(const char *channel, const char *to_raw)
{
	static SPIPlanPtr plan = NULL;
	char			 *to = PrmInboundAddress(channel, to_raw, NULL);
	Datum			  values[2];
	bool			  isnull;
	int64			  org_id = 0;
	const char		 *what = strcmp(channel, "sms") == 0		? "SMS number"
							 : strcmp(channel, "whatsapp") == 0 ? "WhatsApp number"
																: "e-mail address";

	PrmPrepare(&plan,
			   "SELECT o.id FROM prm.organization o"
			   " WHERE CASE $1 WHEN 'sms' THEN o.sms_number = $2"
			   "               WHEN 'whatsapp' THEN o.whatsapp_number = $2"
			   "               ELSE o.email_address = $2 END",
			   2, (Oid[]){TEXTOID, TEXTOID});
	values[0] = CStringGetTextDatum(channel);
	values[1] = CStringGetTextDatum(to ? to : to_raw);
	if (to != NULL && PrmExecute(plan, values, NULL, false, 1) == 1)
		org_id = PrmGetInt64(0, 1, &isnull);
	if (org_id != 0 ? PrmHasOrgAccess(org_id, PRM_LEVEL_WEBHOOK) : PrmCallerIsPrivileged())
		return org_id;
	if (org_id == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("no organization has the %s %s", what, to ? to : to_raw),
				 errdetail("The \"to\" argument is the clinic's own address (Twilio's \"To\"), \"from\" the patient's (\"From\")."),
				 errhint("Call it with named arguments, e.g. to_address => ..., from_address => ...; a clinic's WhatsApp number and e-mail address are set with prm.set_inbound_address().")));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for %s %s", what, to ? to : to_raw),
			 errhint("The webhook role needs the webhook level on the organization owning the address.")));
	return 0; /* keep compiler quiet */
}

/*
 * Record an inbound message once per provider message id, with the
 * patient who sent it (patient_id, 0 for none); returns its id, or 0 for a
 * replay, with *replay the reply first given (or NULL).  Inside SPI.
 */
int64
PrmRecordInbound(int64 org_id, const char *channel, const char *pmid,
				 const char *from, const char *body, const char *keyword,
				 int64 patient_id, char **replay)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr replay_plan = NULL;
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;

	PrmPrepare(&insert_plan,
			   "INSERT INTO prm.inbound_message"
			   "  (org_id, provider_message_id, from_address, body, keyword, channel, patient_id)"
			   " VALUES ($1, $2, $3, $4, $5, $6, $7)"
			   " ON CONFLICT (org_id, provider_message_id) DO NOTHING RETURNING id",
			   7, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(pmid);
	values[2] = CStringGetTextDatum(from);
	values[3] = CStringGetTextDatum(body);
	values[4] = CStringGetTextDatum(keyword);
	values[5] = CStringGetTextDatum(channel);
	values[6] = Int64GetDatum(patient_id);
	nulls[6] = patient_id ? ' ' : 'n';
	*replay = NULL;
	if (PrmExecute(insert_plan, values, nulls, false, 0) == 1)
		return PrmGetInt64(0, 1, &isnull);
	PrmPrepare(&replay_plan,
			   "SELECT i.reply FROM prm.inbound_message i"
			   " WHERE i.org_id = $1 AND i.provider_message_id = $2",
			   2, (Oid[]){INT8OID, TEXTOID});
	/* the first one's row, unless retention deleted it meanwhile */
	if (PrmExecute(replay_plan, values, NULL, false, 1) == 1)
		*replay = PrmGetText(0, 1);
	return 0;
}

/*
 * Keep who sent an inbound message, its conversation and the reply with it.
 * thread_reply: the reply is also put into that conversation, which the
 * inbound message was threaded into earlier in this transaction
 * (PrmThreadMessage).  That upsert left the row locked, active, with this
 * transaction's timestamps and timer: threading again would write the same
 * values, so only the message row is added, in this same statement.
 */
void
PrmCloseInbound(int64 org_id, int64 inbound_id, int64 patient_id, int64 offer_id,
				int64 conversation_id, const char *reply, bool thread_reply)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	Assert(!thread_reply || conversation_id > 0);
	PrmPrepare(&plan,
			   "WITH m AS ("
			   "  INSERT INTO prm.conversation_message (org_id, conversation_id, direction, body)"
			   "  SELECT $1, $6, 'outbound', $5 WHERE $7 AND $5 IS NOT NULL)"
			   "UPDATE prm.inbound_message i SET patient_id = $3, offer_id = $4, reply = $5,"
			   "       conversation_id = $6"
			   " WHERE i.org_id = $1 AND i.id = $2",
			   7, (Oid[]){INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(inbound_id);
	values[2] = Int64GetDatum(patient_id);
	nulls[2] = patient_id ? ' ' : 'n';
	values[3] = Int64GetDatum(offer_id);
	nulls[3] = offer_id ? ' ' : 'n';
	values[4] = reply ? CStringGetTextDatum(reply) : (Datum) 0;
	nulls[4] = reply ? ' ' : 'n';
	values[5] = Int64GetDatum(conversation_id);
	nulls[5] = conversation_id ? ' ' : 'n';
	values[6] = BoolGetDatum(thread_reply);
	PrmExecute(plan, values, nulls, false, 0);
}

/*
 * The patient behind a sender address on channel (the first of a family
 * sharing it), locked, and its language; 0 if none.  Inside SPI.
 */
static int64
InboundPatient(int64 org_id, const char *channel, const char *from, char **language)
{
	/*
	 * One statement per kind of address, each on its index: as one choosing
	 * the column by a parameter, its generic plan (the webhooks run on
	 * generic plans) walked every patient of the organization in id order.
	 * The matches are found first (MATERIALIZED: lower() of a partial
	 * index's column has no statistics), then the first is locked; its
	 * address is checked again should it change meanwhile.
	 */
	static SPIPlanPtr		 plans[2] = {NULL, NULL};
	static const char *const sql[2] = {
		"WITH m AS MATERIALIZED (SELECT x.id FROM prm.patient x"
		"                         WHERE x.org_id = $1 AND x.phone = $2)"
		"SELECT p.id, p.language FROM prm.patient p"
		" WHERE p.org_id = $1 AND p.id = (SELECT pg_catalog.min(m.id) FROM m)"
		"   AND p.phone = $2"
		" FOR NO KEY UPDATE",
		"WITH m AS MATERIALIZED (SELECT x.id FROM prm.patient x"
		"                         WHERE x.org_id = $1 AND x.email IS NOT NULL"
		"                           AND pg_catalog.lower(x.email) = $2)"
		"SELECT p.id, p.language FROM prm.patient p"
		" WHERE p.org_id = $1 AND p.id = (SELECT pg_catalog.min(m.id) FROM m)"
		"   AND pg_catalog.lower(p.email) = $2"
		" FOR NO KEY UPDATE"};
	int	  by_email = strcmp(channel, "email") == 0;
	Datum values[2];
	bool  isnull;

	*language = "en";
	if (from == NULL)
		return 0;
	PrmPrepareCursor(&plans[by_email], sql[by_email], 2, (Oid[]){INT8OID, TEXTOID},
					 CURSOR_OPT_GENERIC_PLAN);
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(from);
	if (PrmExecute(plans[by_email], values, NULL, false, 1) == 0)
		return 0;
	*language = PrmGetText(0, 2);
	return PrmGetInt64(0, 1, &isnull);
}

/*
 * A sender asked for a person: a ticket for staff (linked to the
 * conversation, the message as its description), the event, and the reply
 * telling the sender someone will answer.  Inside SPI.
 */
char *
PrmHandoff(int64 org_id, const char *channel, const char *address,
		   int64 patient_id, int64 conversation_id, int64 inbound_id,
		   const char *body, const char *language)
{
	char *reply = PrmRender(org_id, "handoff", strcmp(channel, "email") == 0 ? "email" : "sms",
							language, NULL, 0);
	char *description = pstrdup(body);
	int64 ticket_id;

	/* a ticket's description holds 2,000 characters; the thread has it all */
	if (strlen(description) > 2000)
		description[pg_mbcharcliplen(description, strlen(description), 2000)] = '\0';
	ticket_id = PrmOpenTicket(org_id, "Asked for a person", "normal", patient_id, description,
							  conversation_id, "inbound");

	PrmEmitEvent(org_id, "handoff_requested", "conversation", conversation_id,
				 psprintf("{\"inbound_message_id\": %lld, \"patient_id\": %s, \"ticket_id\": %lld}",
						  (long long) inbound_id,
						  patient_id ? psprintf("%lld", (long long) patient_id) : "null",
						  (long long) ticket_id));
	return reply;
}

/* What acting on a WhatsApp or e-mail message reads and writes. */
typedef struct InboundAct
{
	int64		  org_id;
	const char	 *channel;
	const char	 *address;
	const char	 *body;
	const char	 *language;
	int64		  patient_id;
	int64		  conversation_id;
	int64		  inbound_id;
	char		 *reply; /* out */
	MemoryContext cxt;	 /* where the reply is kept */
} InboundAct;

/*
 * Act on a message threaded for staff (for PrmRunInSubtransaction, inside
 * SPI): a request for a person is answered and opens a ticket; any other
 * message of a patient is their reply to their pending tickets.
 */
static int64
InboundActOn(void *arg)
{
	InboundAct *act = (InboundAct *) arg;
	char	   *reply;

	if (!PrmAsksForPerson(act->org_id, act->body))
	{
		if (act->patient_id != 0)
			PrmTicketPatientReplied(act->org_id, act->patient_id, act->conversation_id);
		return 0;
	}
	reply = PrmHandoff(act->org_id, act->channel, act->address, act->patient_id,
					   act->conversation_id, act->inbound_id, act->body, act->language);
	(void) PrmThreadMessage(act->org_id, act->channel, act->address, act->patient_id, false,
							false, reply, 0, 0);
	act->reply = MemoryContextStrdup(act->cxt, reply);
	return 0;
}

/*
 * A WhatsApp or e-mail message: recorded once, threaded into the sender's
 * conversation (an unknown sender's too, for staff), then acted on in a
 * subtransaction: whatever fails there is rolled back alone, logged and
 * recorded as an event (the webhook's contract: a reply or NULL); a
 * transient failure fails the call, so the provider's retry acts again.
 * Returns the reply, or NULL.  Inside SPI.
 */
char *
PrmHandleInboundOther(const char *channel, const char *to_raw,
					  const char *from_raw, const char *body, const char *pmid)
{
	int64	   org_id = PrmRouteInbound(channel, to_raw);
	char	  *from;
	char	  *replay;
	char	  *language;
	InboundAct act = {0};
	ErrorData *edata;
	int64	   ignored;

	if (org_id == 0)
		return NULL; /* an address no organization owns (privileged caller) */
	from = PrmInboundAddress(channel, from_raw, PrmOrgPhoneRegion(org_id));
	act.patient_id = InboundPatient(org_id, channel, from, &language);
	act.inbound_id = PrmRecordInbound(org_id, channel, pmid, from ? from : from_raw, body,
									  PrmKeyword(body), act.patient_id, &replay);
	if (act.inbound_id == 0)
		return replay; /* a retried webhook gets the first reply */
	act.org_id = org_id;
	act.channel = channel;
	act.address = from ? from : from_raw;
	act.body = body;
	act.language = language;
	act.cxt = CurrentMemoryContext;
	act.conversation_id = PrmThreadMessage(org_id, channel, act.address, act.patient_id,
										   true, true, body, act.inbound_id, 0);
	edata = PrmRunInSubtransaction(InboundActOn, &act, &ignored);
	if (edata != NULL)
	{
		if (PrmErrorIsTransient(edata))
			ReThrowError(edata);
		ereport(WARNING,
				(errmsg("prm: inbound %s message %lld of organization %lld was not acted on: %s",
						channel, (long long) act.inbound_id, (long long) org_id, edata->message)));
		PrmEmitEvent(org_id, "inbound_failed", "inbound_message", act.inbound_id,
					 psprintf("{\"sqlstate\": \"%s\", \"error\": %s}",
							  unpack_sql_state(edata->sqlerrcode), PrmJsonString(edata->message)));
		FreeErrorData(edata);
		act.reply = NULL;
	}
	PrmCloseInbound(org_id, act.inbound_id, act.patient_id, 0, act.conversation_id, act.reply,
					false);
	PrmEmitPatientEvent(org_id, "message_received", "inbound_message", act.inbound_id,
						act.patient_id,
						psprintf("{\"channel\": %s, \"conversation_id\": %lld, \"patient_id\": %s}",
								 PrmJsonString(channel), (long long) act.conversation_id,
								 act.patient_id ? psprintf("%lld", (long long) act.patient_id) : "null"));
	return act.reply;
}
