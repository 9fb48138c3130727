/*-------------------------------------------------------------------------
 *
 * fill_reply.c
 *	  A patient's answer to an offer: inbound SMS (prm.handle_inbound_sms),
 *	  its keyword (YES, NO, STOP, START, HELP), accepting and declining, and
 *	  the accept link (prm.accept_offer).
 *
 * Claiming.  The first YES wins by a conditional UPDATE of the slot
 * (status 'free' -> 'busy').  It does not skip: a second YES waits on the
 * first one's row lock, and then either finds the slot busy (told it is
 * gone) or, if the first transaction rolled back, free (and wins).  Only
 * then is the offer row locked and checked.
 *
 * Lock order: provider, slot, offer (as everywhere, see fill.h); a reply
 * locks the patients behind the number first.  An inbound message is
 * handled once per provider message id: a retried webhook gets the first
 * reply.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "fill.h"
#include "monitor.h"
#include "ticket.h"

PG_FUNCTION_INFO_V1(prm_handle_inbound_sms);
PG_FUNCTION_INFO_V1(prm_accept_offer);
PG_FUNCTION_INFO_V1(prm_handle_inbound_message);

typedef enum FillOutcome
{
	FILL_BOOKED,
	FILL_GONE,
	FILL_NO_OFFER
} FillOutcome;

static FillOutcome FillAccept(int64 org_id, int64 offer_id, const char *channel,
							  char **reply);

/* The reply confirming a booking at starts_at (FillFormatAppointment). */
static char *
FillBookedReply(int64 org_id, const char *tz, const char *language, TimestampTz starts_at)
{
	PrmTemplateVar vars[2];
	char		  *date;
	char		  *time;

	FillFormatAppointment(PrmGetSettings(org_id), starts_at, tz, &date, &time);
	vars[0].name = "date";
	vars[0].value = date;
	vars[1].name = "time";
	vars[1].value = time;
	return PrmRender(org_id, "booked", "sms", language, vars, 2);
}

/* An offer being accepted, as FillAccept reads it with its patient locked. */
typedef struct FillAcceptance
{
	int64		org_id;
	int64		offer_id;
	int64		slot_id;
	int64		patient_id;
	int64		entry_id;
	int64		scored_appointment_id; /* 0: the score counted no appointment */
	char	   *status;
	char	   *tz;
	char	   *language;
	bool		entry_waiting;
	bool		late_ok; /* an expired offer still inside late_accept_window */
	TimestampTz slot_starts;
	const char *channel;
} FillAcceptance;

/*
 * Lock the offer's patient -- one acceptance per patient at a time, whatever
 * the path (YES, link, both at once) -- and read the offer.  Lock order:
 * patient, provider, slot, offer, waitlist entry.
 */
static void
FillLoadAcceptance(FillAcceptance *a)
{
	static SPIPlanPtr  patient_plan = NULL;
	static SPIPlanPtr  offer_plan = NULL;
	Datum			   values[3];
	bool			   isnull;
	HeapTuple		   tup;
	TupleDesc		   desc;
	const PrmSettings *s = PrmGetSettings(a->org_id);

	PrmPrepare(&patient_plan,
			   "SELECT 1 FROM prm.patient p"
			   " WHERE p.org_id = $1"
			   "   AND p.id = (SELECT o.patient_id FROM prm.offer o WHERE o.org_id = $1 AND o.id = $2)"
			   " FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmPrepare(&offer_plan,
			   "SELECT o.slot_id, o.patient_id, o.waitlist_entry_id, o.status,"
			   "       coalesce(p.timezone, g.timezone), p.language,"
			   "       (SELECT w.status = 'waiting' FROM prm.waitlist_entry w"
			   "         WHERE w.org_id = o.org_id AND w.id = o.waitlist_entry_id),"
			   "       (SELECT s.starts_at FROM prm.slot s WHERE s.org_id = o.org_id AND s.id = o.slot_id),"
			   "       coalesce(o.scored_appointment_id, 0),"
			   "       o.hold_until > pg_catalog.now() - $3::pg_catalog.interval"
			   "  FROM prm.offer o"
			   "  JOIN prm.patient p ON p.org_id = o.org_id AND p.id = o.patient_id"
			   "  JOIN prm.organization g ON g.id = o.org_id"
			   " WHERE o.org_id = $1 AND o.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INTERVALOID});
	values[0] = Int64GetDatum(a->org_id);
	values[1] = Int64GetDatum(a->offer_id);
	values[2] = IntervalPGetDatum(&s->late_accept_window);
	PrmExecute(patient_plan, values, NULL, false, 1);
	if (PrmExecute(offer_plan, values, NULL, false, 1) != 1)
		elog(ERROR, "offer %lld vanished", (long long) a->offer_id);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	a->slot_id = PrmGetInt64(0, 1, &isnull);
	a->patient_id = PrmGetInt64(0, 2, &isnull);
	a->entry_id = PrmGetInt64(0, 3, &isnull);
	a->status = PrmGetText(0, 4);
	a->tz = PrmGetText(0, 5);
	a->language = PrmGetText(0, 6);
	a->entry_waiting = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull)) && !isnull;
	a->slot_starts = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &isnull));
	a->scored_appointment_id = PrmGetInt64(0, 9, &isnull);
	a->late_ok = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull)) && !isnull;
}

/*
 * The answer to an offer that cannot be accepted as it stands, or
 * FILL_BOOKED with *reply NULL when it can.
 */
static FillOutcome
FillAcceptRefusal(FillAcceptance *a, char **reply)
{
	*reply = NULL;
	if (strcmp(a->status, "accepted") == 0)
	{
		/* a repeated YES or link click: confirm again, book nothing */
		*reply = FillBookedReply(a->org_id, a->tz, a->language, a->slot_starts);
		return FILL_BOOKED;
	}
	if (strcmp(a->status, "open") != 0 && strcmp(a->status, "expired") != 0)
	{
		bool gone = strcmp(a->status, "withdrawn") == 0;

		*reply = PrmRender(a->org_id, gone ? "gone" : "no_offer", "sms", a->language, NULL, 0);
		if (gone)
			FillCancelSlotTakenText(a->org_id, a->offer_id);
		return gone ? FILL_GONE : FILL_NO_OFFER;
	}
	if (!a->entry_waiting || (strcmp(a->status, "expired") == 0 && !a->late_ok))
	{
		/*
		 * Only a waiting entry books, and an expired offer only within
		 * late_accept_window of its hold's end: a link is not good forever.
		 */
		*reply = PrmRender(a->org_id, "no_offer", "sms", a->language, NULL, 0);
		return FILL_NO_OFFER;
	}
	return FILL_BOOKED;
}

/* Give a claimed slot back (the acceptance fell through) and move it on. */
static void
FillUnclaim(int64 org_id, int64 slot_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "UPDATE prm.slot s SET status = 'free', fill_status = 'offering', filled_at = NULL"
			   " WHERE s.org_id = $1 AND s.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	PrmExecute(plan, values, NULL, false, 0);
	FillAdvance(org_id, slot_id);
}

/*
 * Release exactly the appointment the offer's score counted the wait for,
 * if it is still active and still later than the new one; otherwise leave
 * it, and say so in an event (it changed after the offer was made).
 */
static void
FillReleaseScoredAppointment(FillAcceptance *a, int64 new_appt, TimestampTz new_starts)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;
	bool			  later;

	if (a->scored_appointment_id == 0)
		return;
	PrmPrepare(&plan,
			   "SELECT a.status IN ('proposed', 'pending', 'booked'), a.starts_at > $3, a.status"
			   "  FROM prm.appointment a WHERE a.org_id = $1 AND a.id = $2"
			   " FOR NO KEY UPDATE",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(a->org_id);
	values[1] = Int64GetDatum(a->scored_appointment_id);
	values[2] = TimestampTzGetDatum(new_starts);
	if (PrmExecute(plan, values, NULL, false, 1) == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		later = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (later)
		{
			(void) PrmCancelAppointment(a->org_id, a->scored_appointment_id,
										"moved earlier from the waitlist");
			return;
		}
	}
	PrmEmitEvent(a->org_id, "release_skipped", "appointment", a->scored_appointment_id,
				 psprintf("{\"offer_id\": %lld, \"appointment_id\": %lld,"
						  " \"reason\": \"the appointment changed after the offer was made\"}",
						  (long long) a->offer_id, (long long) new_appt));
}

/*
 * Accept an offer: claim its slot for the offer's patient, book, close the
 * offer, the slot's other offers, the patient's other open offers and the
 * entry, and release the appointment the score counted.  *reply gets the
 * text for the patient.
 */
static FillOutcome
FillAccept(int64 org_id, int64 offer_id, const char *channel, char **reply)
{
	static SPIPlanPtr provider_plan = NULL;
	static SPIPlanPtr claim_plan = NULL;
	static SPIPlanPtr again_plan = NULL;
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr entry_plan = NULL;
	static SPIPlanPtr close_plan = NULL;
	FillAcceptance	  a = {0};
	FillOutcome		  refusal;
	Datum			  values[6];
	bool			  isnull;
	int64			  provider_id,
		appt_id;
	char	   *status;
	TimestampTz starts_at,
		ends_at;

	a.org_id = org_id;
	a.offer_id = offer_id;
	a.channel = channel;
	FillLoadAcceptance(&a);
	refusal = FillAcceptRefusal(&a, reply);
	if (*reply != NULL)
		return refusal;

	/*
	 * Lock order is patient, provider, slot, offer everywhere
	 * (book_appointment locks the provider first too).
	 */
	PrmPrepare(&provider_plan,
			   "SELECT p.id FROM prm.slot s JOIN prm.provider p"
			   "    ON p.org_id = s.org_id AND p.id = s.provider_id"
			   " WHERE s.org_id = $1 AND s.id = $2 FOR NO KEY UPDATE OF p",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(a.slot_id);
	PrmExecute(provider_plan, values, NULL, false, 1);

	/* the claim: waits for a concurrent claimer and re-checks after it */
	PrmPrepare(&claim_plan,
			   "UPDATE prm.slot s SET status = 'busy', fill_status = 'filled',"
			   "       filled_at = pg_catalog.now(), next_batch_at = NULL"
			   " WHERE s.org_id = $1 AND s.id = $2 AND s.status = 'free'"
			   "   AND s.starts_at > pg_catalog.now()"
			   " RETURNING s.provider_id, s.starts_at, s.ends_at",
			   2, (Oid[]){INT8OID, INT8OID});
	if (PrmExecute(claim_plan, values, NULL, false, 0) != 1)
	{
		/* the same offer accepted meanwhile (a link click and an SMS): it won */
		PrmPrepare(&again_plan,
				   "SELECT 1 FROM prm.offer o WHERE o.org_id = $1 AND o.id = $2 AND o.status = 'accepted'",
				   2, (Oid[]){INT8OID, INT8OID});
		values[1] = Int64GetDatum(offer_id);
		if (PrmExecute(again_plan, values, NULL, false, 1) == 1)
		{
			*reply = FillBookedReply(org_id, a.tz, a.language, a.slot_starts);
			return FILL_BOOKED;
		}
		*reply = PrmRender(org_id, "gone", "sms", a.language, NULL, 0);
		FillCancelSlotTakenText(org_id, offer_id);
		PrmEmitEvent(org_id, "offer_too_late", "offer", offer_id, NULL);
		return FILL_GONE;
	}
	provider_id = PrmGetInt64(0, 1, &isnull);
	starts_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	ends_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));

	/* with the slot held, the offer can no longer change under us but by us */
	PrmPrepare(&lock_plan,
			   "SELECT o.status FROM prm.offer o WHERE o.org_id = $1 AND o.id = $2 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[1] = Int64GetDatum(offer_id);
	PrmExecute(lock_plan, values, NULL, false, 1);
	status = PrmGetText(0, 1);

	/* one booking per waitlist entry: the entry must still be waiting */
	PrmPrepare(&entry_plan,
			   "UPDATE prm.waitlist_entry w SET status = 'booked', closed_at = pg_catalog.now()"
			   " WHERE w.org_id = $1 AND w.id = $2 AND w.status = 'waiting'",
			   2, (Oid[]){INT8OID, INT8OID});
	values[1] = Int64GetDatum(a.entry_id);
	if ((strcmp(status, "open") != 0 && strcmp(status, "expired") != 0) ||
		PrmExecute(entry_plan, values, NULL, false, 0) != 1)
	{
		/* declined or withdrawn while we waited, or the entry booked: give back */
		FillUnclaim(org_id, a.slot_id);
		*reply = PrmRender(org_id, "no_offer", "sms", a.language, NULL, 0);
		return FILL_NO_OFFER;
	}

	appt_id = PrmBookAppointment(org_id, a.patient_id, provider_id, starts_at, ends_at, a.slot_id);

	PrmPrepare(&close_plan,
			   "WITH o AS (UPDATE prm.offer o SET status = 'accepted', responded_at = pg_catalog.now(),"
			   "                  response_channel = $4"
			   "            WHERE o.org_id = $1 AND o.id = $2 RETURNING o.id)"
			   "UPDATE prm.slot s SET booked_appointment_id = $3"
			   " WHERE s.org_id = $1 AND s.id = $5",
			   5, (Oid[]){INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID});
	values[1] = Int64GetDatum(offer_id);
	values[2] = Int64GetDatum(appt_id);
	values[3] = CStringGetTextDatum(channel);
	values[4] = Int64GetDatum(a.slot_id);
	PrmExecute(close_plan, values, NULL, false, 0);
	FillWithdrawSlotOffers(org_id, a.slot_id, "slot filled");
	/* a patient books once: an offer of another slot they still hold is void */
	FillWithdrawOpenOffers(org_id, "o.patient_id = $2", a.patient_id, offer_id,
						   "patient booked another slot");
	PrmEmitPatientEvent(org_id, "offer_accepted", "offer", offer_id, a.patient_id,
						psprintf("{\"slot_id\": %lld, \"patient_id\": %lld, \"appointment_id\": %lld, \"channel\": %s}",
								 (long long) a.slot_id, (long long) a.patient_id, (long long) appt_id,
								 PrmJsonString(channel)));

	FillReleaseScoredAppointment(&a, appt_id, starts_at);
	*reply = FillBookedReply(org_id, a.tz, a.language, starts_at);
	return FILL_BOOKED;
}

typedef enum FillKeywordKind
{
	KW_YES,
	KW_NO,
	KW_STOP,
	KW_START,
	KW_HELP,
	KW_UNKNOWN
} FillKeywordKind;

/* Classify a keyword (see FillKeyword). */
static FillKeywordKind
FillClassify(const char *kw)
{
	static const char *const stops[] = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL",
										"END", "QUIT", "REVOKE", "OPTOUT"};
	int						 i;

	if (strcmp(kw, "YES") == 0 || strcmp(kw, "Y") == 0)
		return KW_YES;
	if (strcmp(kw, "NO") == 0 || strcmp(kw, "N") == 0)
		return KW_NO;
	for (i = 0; i < (int) lengthof(stops); i++)
		if (strcmp(kw, stops[i]) == 0)
			return KW_STOP;
	if (strcmp(kw, "START") == 0 || strcmp(kw, "UNSTOP") == 0)
		return KW_START;
	if (strcmp(kw, "HELP") == 0 || strcmp(kw, "INFO") == 0)
		return KW_HELP;
	return KW_UNKNOWN;
}

/*
 * A YES or NO with polite words after it ("Yes please!", "yes, I'll take
 * it", "no thanks"): the first word decides, at most eight words in all,
 * never a question, and never a YES with a negation after it ("yes but I
 * can't").  Anything else is not an answer.  STOP and the other keywords stay
 * exact: they are read by FillClassify alone.
 */
static FillKeywordKind
FillPoliteAnswer(const char *body)
{
	static const char *const negations[] = {"not", "dont", "cant", "cannot", "wont",
											"never", "no", "nope", "isnt", "arent"};
	char					 word[16];
	int						 nwords = 0;
	int						 len = 0;
	FillKeywordKind			 first = KW_UNKNOWN;
	bool					 negated = false;
	const char				*p;

	if (strchr(body, '?') != NULL)
		return KW_UNKNOWN;
	for (p = body;; p++)
	{
		bool letter = *p != '\0' && isalpha((unsigned char) *p);

		if (letter)
		{
			if (len < (int) sizeof(word) - 1)
				word[len++] = pg_tolower((unsigned char) *p);
			continue;
		}
		if (*p == '\'' || (unsigned char) *p >= 0x80)
			continue; /* apostrophes (also typographic) join a word: "can't" */
		if (len > 0)
		{
			int i;

			word[len] = '\0';
			len = 0;
			if (++nwords > 8)
				return KW_UNKNOWN;
			if (nwords == 1)
			{
				if (strcmp(word, "yes") == 0 || strcmp(word, "y") == 0)
					first = KW_YES;
				else if (strcmp(word, "no") == 0 || strcmp(word, "n") == 0)
					first = KW_NO;
				else
					return KW_UNKNOWN;
			}
			else
				for (i = 0; i < (int) lengthof(negations); i++)
					if (strcmp(word, negations[i]) == 0)
						negated = true;
		}
		if (*p == '\0')
			break;
	}
	if (first == KW_YES && negated)
		return KW_UNKNOWN;
	return first;
}

/* Opt the patients out of SMS: offers withdrawn, queued SMS cancelled. */
static int
FillOptOut(int64 org_id, Datum patients)
{
	static SPIPlanPtr optout_plan = NULL;
	static SPIPlanPtr offers_plan = NULL;
	static SPIPlanPtr queue_plan = NULL;
	Datum			  values[2];
	int				  changed,
		n,
		i;
	int64 *slots;
	bool   isnull;

	PrmPrepare(&optout_plan,
			   "UPDATE prm.patient p SET sms_opt_out = true, opted_out_at = pg_catalog.now(),"
			   "       updated_at = pg_catalog.now()"
			   " WHERE p.org_id = $1 AND p.id = ANY ($2) AND NOT p.sms_opt_out",
			   2, (Oid[]){INT8OID, INT8ARRAYOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = patients;
	changed = PrmExecute(optout_plan, values, NULL, false, 0);

	PrmPrepare(&queue_plan,
			   "UPDATE prm.outbound_message m SET status = 'cancelled', last_error = 'patient opted out',"
			   "       updated_at = pg_catalog.now()"
			   " WHERE m.org_id = $1 AND m.patient_id = ANY ($2) AND m.channel = 'sms' AND m.status = 'queued'",
			   2, (Oid[]){INT8OID, INT8ARRAYOID});
	PrmExecute(queue_plan, values, NULL, false, 0);

	PrmPrepare(&offers_plan,
			   "SELECT DISTINCT o.slot_id FROM prm.offer o"
			   " WHERE o.org_id = $1 AND o.patient_id = ANY ($2) AND o.status = 'open'",
			   2, (Oid[]){INT8OID, INT8ARRAYOID});
	n = PrmExecute(offers_plan, values, NULL, false, 0);
	slots = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
		slots[i] = PrmGetInt64(i, 1, &isnull);
	for (i = 0; i < n; i++)
	{
		static SPIPlanPtr withdraw_plan = NULL;
		FillSlot		  slot;
		Datum			  v[3];

		if (!FillLockSlot(org_id, slots[i], false, &slot))
			continue;
		PrmPrepare(&withdraw_plan,
				   "UPDATE prm.offer o SET status = 'withdrawn', responded_at = pg_catalog.now()"
				   " WHERE o.org_id = $1 AND o.slot_id = $2 AND o.patient_id = ANY ($3) AND o.status = 'open'",
				   3, (Oid[]){INT8OID, INT8OID, INT8ARRAYOID});
		v[0] = Int64GetDatum(org_id);
		v[1] = Int64GetDatum(slots[i]);
		v[2] = patients;
		if (PrmExecute(withdraw_plan, v, NULL, false, 0) > 0)
			PrmEmitEvent(org_id, "offers_withdrawn", "slot", slots[i],
						 "{\"reason\": \"patient opted out\"}");
		FillAdvance(org_id, slots[i]);
	}
	return changed;
}

/*
 * The offer a YES or NO of these patients is about: the newest open one,
 * else the newest expired or withdrawn one of the last day.
 */
static int64
FillCurrentOffer(int64 org_id, Datum patients, bool open_only)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;

	/*
	 * A generic plan: the custom plans of this query never looked cheaper
	 * than it, so it was planned again on every YES (0.3 ms, more than its
	 * run).
	 */
	PrmPrepareCursor(&plan,
					 "SELECT o.id FROM prm.offer o"
					 " WHERE o.org_id = $1 AND o.patient_id = ANY ($2)"
					 "   AND (o.status = 'open' OR (NOT $3 AND o.status IN ('expired', 'withdrawn', 'accepted')"
					 "        AND o.created_at > pg_catalog.now() - interval '1 day'))"
					 " ORDER BY o.status = 'open' DESC, o.status = 'accepted' DESC, o.status = 'expired' DESC,"
					 "          o.created_at DESC, o.id DESC"
					 " LIMIT 1",
					 3, (Oid[]){INT8OID, INT8ARRAYOID, BOOLOID}, CURSOR_OPT_GENERIC_PLAN);
	values[0] = Int64GetDatum(org_id);
	values[1] = patients;
	values[2] = BoolGetDatum(open_only);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		return 0;
	return PrmGetInt64(0, 1, &isnull);
}

/* Decline an offer: release it, and move its slot on. */
static void
FillDecline(int64 org_id, int64 offer_id)
{
	static SPIPlanPtr slot_plan = NULL;
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	int64			  slot_id;
	FillSlot		  slot;

	PrmPrepare(&slot_plan,
			   "SELECT o.slot_id FROM prm.offer o WHERE o.org_id = $1 AND o.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(offer_id);
	PrmExecute(slot_plan, values, NULL, false, 1);
	slot_id = PrmGetInt64(0, 1, &isnull);
	(void) FillLockSlot(org_id, slot_id, false, &slot);
	PrmPrepare(&plan,
			   "UPDATE prm.offer o SET status = 'declined', responded_at = pg_catalog.now(),"
			   "       response_channel = 'sms'"
			   " WHERE o.org_id = $1 AND o.id = $2 AND o.status = 'open'",
			   2, (Oid[]){INT8OID, INT8OID});
	if (PrmExecute(plan, values, NULL, false, 0) > 0)
		PrmEmitEvent(org_id, "offer_declined", "offer", offer_id, NULL);
	FillAdvance(org_id, slot_id);
}

/* An inbound SMS being answered: what FillAnswer reads and writes. */
typedef struct FillInbound
{
	int64			org_id;
	FillKeywordKind kind;
	const char	   *body;
	Datum			patients; /* bigint[] of the patients behind the number */
	int				npatients;
	int				nopted;
	int64			first_patient;
	const char	   *language;
	const char	   *address; /* the sender's number, as threaded */
	int64			inbound_id;
	int64			conversation_id; /* the sender's conversation */
	int64			offer_id;		 /* out: the offer answered, or 0 */
	char		   *reply;			 /* out: the reply, or NULL */
	MemoryContext	cxt;			 /* where the reply is kept */
} FillInbound;

/*
 * Act on an inbound SMS by its keyword (for PrmRunInSubtransaction, inside
 * SPI): STOP, START, HELP, YES, NO or a hint.
 */
static int64
FillAnswer(void *arg)
{
	static SPIPlanPtr start_plan = NULL;
	FillInbound		 *in = (FillInbound *) arg;
	int64			  org_id = in->org_id;
	FillKeywordKind	  kind = in->kind;
	Datum			  patients = in->patients;
	int				  npatients = in->npatients;
	int				  nopted = in->nopted;
	int64			  first_patient = in->first_patient;
	const char		 *language = in->language;
	int64			  offer_id = 0;
	char			 *reply = NULL;
	Datum			  values[2];

	values[0] = Int64GetDatum(org_id);
	if (kind == KW_HELP)
		reply = PrmRender(org_id, "help", "sms", language, NULL, 0);
	else if (PrmMonitorCaregiverReply(org_id, in->address, PrmKeyword(in->body), &reply))
		; /* a caregiver's OK to an alert they were sent */
	else if (npatients == 0)
		reply = NULL; /* a number we do not know: say nothing */
	else if (kind == KW_STOP)
	{
		if (FillOptOut(org_id, patients) > 0)
		{
			reply = PrmRender(org_id, "stop", "sms", language, NULL, 0);
			PrmEmitEvent(org_id, "patient_opted_out", "patient", first_patient, NULL);
		}
	}
	else if (kind == KW_START)
	{
		PrmPrepare(&start_plan,
				   "UPDATE prm.patient p SET sms_opt_out = false, opted_out_at = NULL,"
				   "       updated_at = pg_catalog.now()"
				   " WHERE p.org_id = $1 AND p.id = ANY ($2) AND p.sms_opt_out",
				   2, (Oid[]){INT8OID, INT8ARRAYOID});
		values[1] = patients;
		if (PrmExecute(start_plan, values, NULL, false, 0) > 0)
			PrmEmitEvent(org_id, "patient_opted_in", "patient", first_patient, NULL);
		reply = PrmRender(org_id, "start", "sms", language, NULL, 0);
	}
	else if (nopted == npatients)
		reply = NULL; /* opted out: only START and HELP are answered */
	else if (kind == KW_YES)
	{
		offer_id = FillCurrentOffer(org_id, patients, false);
		if (offer_id == 0)
			reply = PrmRender(org_id, "no_offer", "sms", language, NULL, 0);
		else
			(void) FillAccept(org_id, offer_id, "sms", &reply);
	}
	else if (kind == KW_NO)
	{
		offer_id = FillCurrentOffer(org_id, patients, true);
		if (offer_id == 0)
			reply = PrmRender(org_id, "no_offer", "sms", language, NULL, 0);
		else
		{
			FillDecline(org_id, offer_id);
			reply = PrmRender(org_id, "declined", "sms", language, NULL, 0);
		}
	}
	else if (kind == KW_UNKNOWN &&
			 PrmReminderReply(org_id, patients, PrmKeyword(in->body), language, &reply))
		; /* C or X answering a pending appointment reminder (reminder.c) */
	else if (PrmAsksForPerson(org_id, in->body))
		reply = PrmHandoff(org_id, "sms", in->address, first_patient, in->conversation_id,
						   in->inbound_id, in->body, language);
	else
	{
		/* free text: the patient's reply to their pending tickets, and the hint */
		PrmTicketPatientReplied(org_id, first_patient, in->conversation_id);
		reply = PrmRender(org_id, "hint", "sms", language, NULL, 0);
	}

	in->offer_id = offer_id;
	in->reply = reply ? MemoryContextStrdup(in->cxt, reply) : NULL;
	return 0;
}

/*
 * The patients behind a sender number (a family may share one), locked, in
 * in->patients (a bigint[]), with their count, the opted-out count, the
 * first one and its language.  Inside SPI.
 */
static void
FillReadSenders(FillInbound *in, const char *from)
{
	static SPIPlanPtr patients_plan = NULL;
	Datum			  values[2];
	Datum			 *ids = NULL;
	bool			  isnull;
	int				  i;

	in->npatients = 0;
	in->nopted = 0;
	in->first_patient = 0;
	in->language = "en";
	if (from)
	{
		PrmPrepare(&patients_plan,
				   "SELECT p.id, p.sms_opt_out, p.language FROM prm.patient p"
				   " WHERE p.org_id = $1 AND p.phone = $2 ORDER BY p.id FOR NO KEY UPDATE",
				   2, (Oid[]){INT8OID, TEXTOID});
		values[0] = Int64GetDatum(in->org_id);
		values[1] = CStringGetTextDatum(from);
		in->npatients = PrmExecute(patients_plan, values, NULL, false, 0);
		ids = palloc(sizeof(Datum) * (in->npatients + 1));
		for (i = 0; i < in->npatients; i++)
		{
			ids[i] = Int64GetDatum(PrmGetInt64(i, 1, &isnull));
			if (strcmp(PrmGetText(i, 2), "t") == 0)
				in->nopted++;
		}
		if (in->npatients > 0)
		{
			in->first_patient = DatumGetInt64(ids[0]);
			in->language = PrmGetText(0, 3);
		}
	}
	in->patients = PointerGetDatum(construct_array(ids ? ids : values, in->npatients,
												   INT8OID, 8, true, TYPALIGN_DOUBLE));
}

/*
 * Keep the reply and what the message was about with the inbound message,
 * and thread the reply into the sender's conversation.
 */
static void
FillCloseInbound(FillInbound *in, int64 inbound_id, const char *keyword)
{
	PrmCloseInbound(in->org_id, inbound_id, in->first_patient, in->offer_id,
					in->conversation_id, in->reply, true);
	PrmEmitPatientEvent(in->org_id, "sms_received", "inbound_message", inbound_id,
						in->first_patient,
						psprintf("{\"keyword\": %s, \"patient_id\": %s, \"conversation_id\": %lld}",
								 PrmJsonString(keyword),
								 in->first_patient ? psprintf("%lld", (long long) in->first_patient) : "null",
								 (long long) in->conversation_id));
}

/*
 * Act on the message in a subtransaction.  The webhook's contract: a reply
 * or NULL for whatever the message itself causes (an error of its own would
 * make the provider retry forever): that is rolled back alone, logged and
 * recorded as an event.  A conflict with another transaction (deadlock,
 * serialization failure, lock timeout) is re-raised and ends the call, so
 * the provider retries it; so do cancels, timeouts and resource exhaustion
 * (PrmRunInSubtransaction).  README, "What the webhook raises".
 */
static void
FillAnswerGuarded(FillInbound *in, int64 inbound_id)
{
	ErrorData *edata;
	int64	   ignored;

	edata = PrmRunInSubtransaction(FillAnswer, in, &ignored);
	if (edata == NULL)
		return;
	/*
	 * A deadlock, serialization failure or lock timeout is not the
	 * message's fault: the whole call fails, so the provider's retry acts on
	 * it again, rather than its YES being answered NULL for good.
	 */
	if (PrmErrorIsTransient(edata))
		ReThrowError(edata);
	ereport(WARNING,
			(errmsg("prm: inbound SMS %lld of organization %lld was not acted on: %s",
					(long long) inbound_id, (long long) in->org_id, edata->message)));
	PrmEmitEvent(in->org_id, "inbound_failed", "inbound_message", inbound_id,
				 psprintf("{\"sqlstate\": \"%s\", \"error\": %s}",
						  unpack_sql_state(edata->sqlerrcode), PrmJsonString(edata->message)));
	FreeErrorData(edata);
	in->offer_id = 0;
	in->reply = NULL;
}

/* A reply as the function's result, out of SPI's memory. */
static text *
FillResult(const char *reply)
{
	text *result;

	if (reply == NULL)
		return NULL;
	result = cstring_to_text(reply);
	return (text *) DatumGetPointer(SPI_datumTransfer(PointerGetDatum(result), false, -1));
}

/*
 * An inbound SMS: recorded once per provider message id, threaded into the
 * sender's conversation, acted on by its keyword (guarded), its reply
 * threaded too.  Returns the reply, or NULL.  Inside SPI.
 */
static char *
FillHandleSms(const char *to_raw, const char *from_raw, const char *body,
			  const char *pmid)
{
	char	   *from;
	char	   *keyword;
	char	   *replay;
	FillInbound in = {0};
	int64		inbound_id;

	in.org_id = PrmRouteInbound("sms", to_raw);
	if (in.org_id == 0)
		return NULL; /* a number no organization owns (privileged caller) */
	from = PrmTryNormalizePhone(from_raw, PrmOrgPhoneRegion(in.org_id));
	keyword = PrmKeyword(body);
	in.kind = FillClassify(keyword);
	if (in.kind == KW_UNKNOWN)
		in.kind = FillPoliteAnswer(body);
	in.body = body;
	in.cxt = CurrentMemoryContext;

	/*
	 * Once per provider message id: a retried webhook gets the first reply.
	 * The message is recorded with its sender, so that closing it changes
	 * no key (no foreign-key check, no statistics to apply again).
	 */
	FillReadSenders(&in, from);
	inbound_id = PrmRecordInbound(in.org_id, "sms", pmid, from ? from : from_raw, body, keyword,
								  in.first_patient, &replay);
	if (inbound_id == 0)
		return replay;
	in.inbound_id = inbound_id;
	in.address = from ? from : from_raw;
	/* what prm answers by itself is not left unread for staff */
	in.conversation_id = PrmThreadMessage(in.org_id, "sms", in.address, in.first_patient, true,
										  in.kind == KW_UNKNOWN, body, inbound_id, 0);
	FillAnswerGuarded(&in, inbound_id);
	/* the reply is threaded as the message is closed, in one statement */
	FillCloseInbound(&in, inbound_id, keyword);
	return in.reply;
}

/*
 * The arguments of an inbound webhook call from argument first on: to,
 * from, body, provider message id.  The sender address and the body are
 * clipped (whatever the provider sends), never refused: the webhook's
 * contract is a reply or NULL.
 */
static void
FillInboundArgs(FunctionCallInfo fcinfo, int first, const char *to_name,
				const char *from_name, int body_max, char **to, char **from,
				char **body, char **pmid)
{
	*to = PrmTextArg(fcinfo, first, to_name, 330);
	*pmid = PrmTextArg(fcinfo, first + 3, "provider_message_id", 200);
	PrmArgNotNull(fcinfo, first + 1, from_name);
	*from = text_to_cstring(PG_GETARG_TEXT_PP(first + 1));
	if (strlen(*from) > 320)
		(*from)[pg_mbcliplen(*from, strlen(*from), 320)] = '\0';
	*body = PG_ARGISNULL(first + 2) ? pstrdup("") : text_to_cstring(PG_GETARG_TEXT_PP(first + 2));
	if (strlen(*body) > (size_t) body_max)
		(*body)[pg_mbcharcliplen(*body, strlen(*body), body_max)] = '\0';
}

/*
 * prm.handle_inbound_sms(to_number, from_number, body, provider_message_id)
 *	  RETURNS text: the reply, or NULL.
 */
Datum
prm_handle_inbound_sms(PG_FUNCTION_ARGS)
{
	char *to_raw,
		*from_raw,
		*body,
		*pmid;
	text *result;

	FillInboundArgs(fcinfo, 0, "to_number", "from_number", 1600, &to_raw, &from_raw, &body, &pmid);
	if (strlen(from_raw) > 64)
		from_raw[pg_mbcliplen(from_raw, strlen(from_raw), 64)] = '\0';
	PrmSpiConnect();
	result = FillResult(FillHandleSms(to_raw, from_raw, body, pmid));
	PrmSpiFinish();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(result);
}

/*
 * prm.handle_inbound_message(channel, to_address, from_address, body,
 *							  provider_message_id) RETURNS text
 *	  SMS exactly as handle_inbound_sms; WhatsApp and e-mail threaded into
 *	  the sender's conversation.  The reply, or NULL.
 */
Datum
prm_handle_inbound_message(PG_FUNCTION_ARGS)
{
	char *channel = PrmTextArg(fcinfo, 0, "channel", 20);
	bool  sms = strcmp(channel, "sms") == 0;
	bool  email = strcmp(channel, "email") == 0;
	char *to_raw,
		*from_raw,
		*body,
		*pmid;
	text *result;

	if (!sms && !email && strcmp(channel, "whatsapp") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("inbound channel \"%s\" is not recognized", channel),
				 errhint("Use sms, whatsapp or email; voice calls are recorded with prm.record_call_transcript().")));
	/* SMS: 1,600 characters as for handle_inbound_sms; WhatsApp: 4,096; e-mail: 100,000 */
	FillInboundArgs(fcinfo, 1, "to_address", "from_address", sms ? 1600 : email ? 100000
																				: 4096,
					&to_raw, &from_raw, &body, &pmid);
	if (!email && strlen(from_raw) > 64)
		from_raw[pg_mbcliplen(from_raw, strlen(from_raw), 64)] = '\0';
	PrmSpiConnect();
	if (sms)
		result = FillResult(FillHandleSms(to_raw, from_raw, body, pmid));
	else
		result = FillResult(PrmHandleInboundOther(channel, to_raw, from_raw, body, pmid));
	PrmSpiFinish();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(result);
}

/*
 * prm.accept_offer(token uuid) RETURNS text
 */
Datum
prm_accept_offer(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	bool			  isnull;
	int64			  org_id,
		offer_id;
	char *reply = NULL;
	text *result;

	PrmArgNotNull(fcinfo, 0, "token");
	PrmSpiConnect();
	PrmPrepare(&plan,
			   "SELECT o.org_id, o.id FROM prm.offer o"
			   " WHERE o.token_hash = pg_catalog.sha256(pg_catalog.uuid_send($1))",
			   1, (Oid[]){UUIDOID});
	values[0] = PG_GETARG_DATUM(0);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("offer link is not valid")));
	org_id = PrmGetInt64(0, 1, &isnull);
	offer_id = PrmGetInt64(0, 2, &isnull);
	if (!PrmHasOrgAccess(org_id, PRM_LEVEL_WEBHOOK))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("offer link is not valid")));
	(void) FillAccept(org_id, offer_id, "link", &reply);
	result = cstring_to_text(reply);
	result = (text *) DatumGetPointer(SPI_datumTransfer(PointerGetDatum(result), false, -1));
	PrmSpiFinish();
	PG_RETURN_TEXT_P(result);
}
