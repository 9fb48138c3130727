/*-------------------------------------------------------------------------
 *
 * fill.c
 *	  The cancellation fill engine: offering a freed slot to the best
 *	  waiting patients in batches, holding offers, reading replies, and
 *	  claiming the slot for exactly one of them.  This file holds what the
 *	  engine's rooms share (the slot lock, its status, local times) and the
 *	  slot's life as the rest of prm sees it: a slot freed, taken directly,
 *	  an entry's offer withdrawn, a cancellation undone, and fill_stats.
 *	  The other rooms: fill_batch.c, fill_reply.c, fill_sweep.c (fill.h).
 *
 * A slot's offers change only with the slot locked (FillLockSlot, FOR NO
 * KEY UPDATE); closing offers cancels their SMS not sent yet, and then the
 * slot moves on to its next batch (FillAdvance).
 *
 * Slot taken.  When a slot's open offers are withdrawn because it is no
 * longer free for them -- another patient's YES or link, a booking by the
 * clinic, an undone cancellation -- each patient who could have read the
 * offer (its SMS was handed to a sender) gets one short text saying the
 * appointment was taken (kind slot_taken, setting notify_slot_taken; a
 * built-in kind, so exempt from the promotional caps, as replies are).  It
 * goes through PrmSendToPatient, so opt-outs, consent and quiet hours hold
 * as for any message; its dedup key (slot_taken:<offer>) makes it once per
 * offer.  Not to the winner (their offer is accepted, not withdrawn), not
 * for offers already declined or expired (not open), and not to a patient
 * whose offer SMS was still queued: it is cancelled, they never saw the
 * offer.  A patient who answers YES meanwhile is told "gone" in the reply,
 * and the slot_taken text, if not yet claimed by a sender, is cancelled
 * (FillCancelSlotTakenText), so they are not told twice; a patient whose
 * reply is being handled at that very moment (their row locked) is left to
 * that reply, never waited for (see FillWithdrawSlotOffers).
 *
 * Lock order, everywhere: provider (taken by bookings, and by a YES before
 * it claims), slot, then its offers, then waitlist entries.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "pgtime.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "comms.h"
#include "fill.h"

PG_FUNCTION_INFO_V1(prm_undo_cancellation);
PG_FUNCTION_INFO_V1(prm_fill_stats);

/*
 * Are the fill engine's tables there?  The library may be newer than the
 * extension's SQL objects until ALTER EXTENSION prm UPDATE has run.
 */
bool
FillInstalled(void)
{
	Oid nsp = get_namespace_oid("prm", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("offer", nsp));
}

/* Lock a slot (waiting, or skipping when skip_locked) and read it. */
bool
FillLockSlot(int64 org_id, int64 slot_id, bool skip_locked, FillSlot *slot)
{
	static SPIPlanPtr plans[2];
	Datum			  values[2];
	bool			  isnull;
	HeapTuple		  tup;
	TupleDesc		  desc;

	PrmPrepare(&plans[skip_locked ? 1 : 0],
			   psprintf("SELECT s.provider_id, coalesce(p.location_id, 0), s.starts_at, s.ends_at,"
						"       s.status = 'free', s.batches_sent, s.fill_status"
						"  FROM prm.slot s JOIN prm.provider p"
						"    ON p.org_id = s.org_id AND p.id = s.provider_id"
						" WHERE s.org_id = $1 AND s.id = $2"
						" FOR NO KEY UPDATE OF s%s",
						skip_locked ? " SKIP LOCKED" : ""),
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	if (PrmExecute(plans[skip_locked ? 1 : 0], values, NULL, false, 1) != 1)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	slot->org_id = org_id;
	slot->id = slot_id;
	slot->provider_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	slot->location_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	slot->starts_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
	slot->ends_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
	slot->free = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	slot->batches_sent = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	strlcpy(slot->fill_status, SPI_getvalue(tup, desc, 7), sizeof(slot->fill_status));
	return true;
}

/* Set a slot's fill status. */
void
FillSetStatus(int64 org_id, int64 slot_id, const char *fill_status, bool new_batch)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[4];

	PrmPrepare(&plan,
			   "UPDATE prm.slot s SET fill_status = $3, next_batch_at = NULL,"
			   "       batches_sent = s.batches_sent + CASE WHEN $4 THEN 1 ELSE 0 END"
			   " WHERE s.org_id = $1 AND s.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, TEXTOID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	values[2] = CStringGetTextDatum(fill_status);
	values[3] = BoolGetDatum(new_batch);
	PrmExecute(plan, values, NULL, false, 0);
}

/* Have the jobs send the slot's next batch at time at. */
void
FillRetryLater(int64 org_id, int64 slot_id, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];

	PrmPrepare(&plan,
			   "UPDATE prm.slot s SET fill_status = 'pending', next_batch_at = $3"
			   " WHERE s.org_id = $1 AND s.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	values[2] = TimestampTzGetDatum(at);
	PrmExecute(plan, values, NULL, false, 0);
	PrmWakeWorker(at);
}

/* A time as "Mon 30 Nov" and "09:00" in time zone tz. */
void
FillFormatLocal(TimestampTz ts, const char *tz, char **date, char **time)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
										 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	Timestamp				 local;
	struct pg_tm			 tm;
	fsec_t					 fsec;

	local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone,
												  CStringGetTextDatum(tz),
												  TimestampTzGetDatum(ts)));
	if (timestamp2tm(local, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	*date = psprintf("%s %d %s", days[j2day(date2j(tm.tm_year, tm.tm_mon, tm.tm_mday))],
					 tm.tm_mday, months[tm.tm_mon - 1]);
	*time = psprintf("%02d:%02d", tm.tm_hour, tm.tm_min);
}

/*
 * An appointment's time as a patient reads it: date and time at the clinic
 * (the organization's time zone -- the appointment happens there), and,
 * when the patient's own time zone (patient_tz, NULL: the clinic's) is at
 * another UTC offset then, the clinic zone's abbreviation after the time
 * ("14:30 EST"; a zone with no letters gets "UTC+04").  The same offset
 * under another name (Toronto and New York) reads alike, so gets none.
 */
void
FillFormatAppointment(const PrmSettings *s, TimestampTz ts, const char *patient_tz,
					  char **date, char **time)
{
	pg_tz		*clinic;
	pg_tz		*own;
	struct pg_tm tm;
	fsec_t		 fsec;
	int			 clinic_off,
		own_off;
	const char *abbrev = NULL;

	FillFormatLocal(ts, s->timezone, date, time);
	if (patient_tz == NULL || strcmp(patient_tz, s->timezone) == 0)
		return;
	clinic = pg_tzset(s->timezone);
	own = pg_tzset(patient_tz);
	if (clinic == NULL || own == NULL ||
		timestamp2tm(ts, &clinic_off, &tm, &fsec, &abbrev, clinic) != 0)
		return; /* not reached for the IANA names prm stores */
	abbrev = abbrev ? pstrdup(abbrev) : NULL;
	if (timestamp2tm(ts, &own_off, &tm, &fsec, NULL, own) != 0)
		return;
	if (clinic_off == own_off)
		return;
	if (abbrev == NULL || abbrev[0] == '\0')
		*time = psprintf("%s %s", *time, s->timezone);
	else if (abbrev[0] == '+' || abbrev[0] == '-')
		*time = psprintf("%s UTC%s", *time, abbrev);
	else
		*time = psprintf("%s %s", *time, abbrev);
}

/*
 * The one statement that cancels offer SMS no sender has claimed yet, of
 * the offers offer_ids selects ($1 the organization): nobody is to be told
 * about a slot they can no longer take.
 */
#define CANCEL_OFFER_SMS(offer_ids)                                            \
	"UPDATE prm.outbound_message m"                                            \
	"   SET status = 'cancelled', last_error = 'offer closed before sending'," \
	"       updated_at = pg_catalog.now()"                                     \
	" WHERE m.org_id = $1 AND m.status = 'queued' AND m.kind = 'offer'"        \
	"   AND m.offer_id IN (" offer_ids ")"
/* the closed offers of slot $2 */
#define CLOSED_OFFERS_OF_SLOT      \
	"SELECT o.id FROM prm.offer o" \
	" WHERE o.org_id = $1 AND o.slot_id = $2 AND o.status IN ('withdrawn', 'expired')"

/*
 * Cancel the offer SMS of a slot that have not gone out yet while their
 * offers are closed (withdrawn or expired): nobody is to be told about a
 * slot they can no longer take.  Messages already claimed by a sender are
 * past recall.
 */
void
FillCancelClosedOfferMessages(int64 org_id, int64 slot_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   CANCEL_OFFER_SMS(CLOSED_OFFERS_OF_SLOT),
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	PrmExecute(plan, values, NULL, false, 0);
}

/*
 * Withdraw the open offers of a slot (whose lock the caller holds): the
 * slot is no longer free for them, and those who saw their offer are told
 * (file header, "Slot taken").
 */
int
FillWithdrawSlotOffers(int64 org_id, int64 slot_id, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr lock_plan = NULL;
	Datum			  values[2];
	int				  n,
		i,
		ntell = 0;
	int64			  *tell_offer;
	int64			  *tell_patient;
	const PrmSettings *s;

	/*
	 * An offer's SMS went out once a sender claimed it (or it was archived,
	 * being finished); still queued, it is cancelled by the same statement
	 * (c: the withdrawn rows are not yet visible to a later one's snapshot
	 * within it, so w's ids are named): never seen.
	 */
	PrmPrepare(&plan,
			   "WITH w AS (UPDATE prm.offer o SET status = 'withdrawn', responded_at = pg_catalog.now()"
			   "            WHERE o.org_id = $1 AND o.slot_id = $2 AND o.status = 'open'"
			   "            RETURNING o.id, o.patient_id),"
			   /* their offer SMS still queued, and any of the slot's closed before */
			   " c AS (" CANCEL_OFFER_SMS("SELECT w.id FROM w UNION ALL " CLOSED_OFFERS_OF_SLOT) ")"
			   "SELECT w.id, w.patient_id,"
			   "       NOT p.sms_opt_out AND p.erased_at IS NULL"
			   "       AND (EXISTS (SELECT 1 FROM prm.outbound_message m"
			   "                     WHERE m.org_id = $1 AND m.dedup_key = 'offer:' || w.id"
			   "                       AND m.status IN ('sending', 'sent', 'delivered', 'read'))"
			   "            OR EXISTS (SELECT 1 FROM prm.outbound_message_history h"
			   "                        WHERE h.org_id = $1 AND h.dedup_key = 'offer:' || w.id"
			   "                          AND h.status IN ('sent', 'delivered', 'read')))"
			   /* not the patient the slot was just booked for (by the clinic, or undone) */
			   "       AND NOT EXISTS (SELECT 1 FROM prm.slot s JOIN prm.appointment a"
			   "                         ON a.org_id = s.org_id AND a.provider_id = s.provider_id"
			   "                        AND a.starts_at < s.ends_at AND a.ends_at > s.starts_at"
			   "                      WHERE s.org_id = $1 AND s.id = $2 AND a.patient_id = w.patient_id"
			   "                        AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in'))"
			   "  FROM w JOIN prm.patient p ON p.org_id = $1 AND p.id = w.patient_id"
			   " ORDER BY w.id",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	n = PrmExecute(plan, values, NULL, false, 0);
	if (n == 0)
		return 0;
	tell_offer = palloc(sizeof(int64) * n);
	tell_patient = palloc(sizeof(int64) * n);
	for (i = 0; i < n; i++)
	{
		bool isnull;
		bool seen = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));

		if (!isnull && seen)
		{
			tell_offer[ntell] = PrmGetInt64(i, 1, &isnull);
			tell_patient[ntell++] = PrmGetInt64(i, 2, &isnull);
		}
	}
	PrmEmitEvent(org_id, "offers_withdrawn", "slot", slot_id,
				 psprintf("{\"offers\": %d, \"reason\": %s}", n, PrmJsonString(reason)));
	s = PrmGetSettings(org_id);
	if (!s->notify_slot_taken)
		return n;

	/*
	 * The patient's row is claimed first, never waited for (SKIP LOCKED): a
	 * reply of theirs in flight holds it, and has threaded into their
	 * conversation, which the text would wait on while that reply waits on
	 * this slot -- a deadlock.  Such a patient is answered by that reply
	 * ("gone", if a YES), so is not texted.
	 */
	PrmPrepare(&lock_plan,
			   "SELECT 1 FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2 FOR NO KEY UPDATE SKIP LOCKED",
			   2, (Oid[]){INT8OID, INT8OID});
	for (i = 0; i < ntell; i++)
	{
		values[1] = Int64GetDatum(tell_patient[i]);
		if (PrmExecute(lock_plan, values, NULL, false, 1) == 1)
			(void) PrmSendToPatient(org_id, tell_patient[i], "slot_taken", "sms", 0,
									psprintf("slot_taken:%lld", (long long) tell_offer[i]));
	}
	return n;
}

/*
 * A patient whose withdrawn offer is answered (YES, or its link) gets the
 * reply "gone": the slot_taken text of that offer, if no sender has it yet,
 * would tell them twice, and is cancelled.
 */
void
FillCancelSlotTakenText(int64 org_id, int64 offer_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "UPDATE prm.outbound_message m"
			   "   SET status = 'cancelled', last_error = 'the patient was told in a reply',"
			   "       updated_at = pg_catalog.now()"
			   " WHERE m.org_id = $1 AND m.dedup_key = $2 AND m.status = 'queued'",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(psprintf("slot_taken:%lld", (long long) offer_id));
	PrmExecute(plan, values, NULL, false, 0);
}

/* A slot was freed: start filling it, now or after first_batch_delay. */
void
PrmSlotFreed(int64 org_id, int64 slot_id)
{
	const PrmSettings *s;
	int64			   delay;

	if (!FillInstalled())
		return;
	s = PrmGetSettings(org_id);
	delay = PrmIntervalUsecs(&s->first_batch_delay);
	if (delay <= 0)
	{
		(void) FillSendBatch(org_id, slot_id);
		return;
	}
	FillRetryLater(org_id, slot_id, GetCurrentTransactionStartTimestamp() + delay);
}

/* A free slot was booked directly: its open offers are void. */
void
PrmSlotTaken(int64 org_id, int64 slot_id)
{
	if (!FillInstalled())
		return;
	FillWithdrawSlotOffers(org_id, slot_id, "slot booked");
	FillSetStatus(org_id, slot_id, "filled", false);
}

/* Withdraw the open offer of a waitlist entry and move its slot on. */
void
PrmWithdrawEntryOffers(int64 org_id, int64 entry_id, const char *reason)
{
	FillWithdrawOpenOffers(org_id, "o.waitlist_entry_id = $2", entry_id, 0, reason);
}

/*
 * Withdraw the open offers of the rows of prm.offer o matching "o.org_id =
 * $1 AND <where>" ($2: key, $3: an offer to keep, 0 for none), one at a
 * time: lock its slot, close it, cancel its unsent SMS, move the slot on.
 * where is one of a few constant strings; each gets its own plan.
 */
void
FillWithdrawOpenOffers(int64 org_id, const char *where, int64 key,
					   int64 except_offer, const char *reason)
{
	static SPIPlanPtr find_plans[2];
	static SPIPlanPtr close_plan = NULL;
	int				  which = strcmp(where, "o.waitlist_entry_id = $2") == 0 ? 0 : 1;
	Datum			  values[3];
	bool			  isnull;
	int				  n,
		i;
	int64 *offers;
	int64 *slots;

	Assert(which == 0 || strcmp(where, "o.patient_id = $2") == 0);
	PrmPrepare(&find_plans[which],
			   psprintf("SELECT o.id, o.slot_id FROM prm.offer o"
						" WHERE o.org_id = $1 AND %s AND o.id <> $3 AND o.status = 'open'"
						" ORDER BY o.id",
						where),
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	PrmPrepare(&close_plan,
			   "UPDATE prm.offer o SET status = 'withdrawn', responded_at = pg_catalog.now()"
			   " WHERE o.org_id = $1 AND o.id = $2 AND o.status = 'open'",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(key);
	values[2] = Int64GetDatum(except_offer);
	n = PrmExecute(find_plans[which], values, NULL, false, 0);
	offers = palloc(sizeof(int64) * (n + 1));
	slots = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		offers[i] = PrmGetInt64(i, 1, &isnull);
		slots[i] = PrmGetInt64(i, 2, &isnull);
	}
	for (i = 0; i < n; i++)
	{
		FillSlot slot;

		if (!FillLockSlot(org_id, slots[i], false, &slot))
			continue;
		values[1] = Int64GetDatum(offers[i]);
		if (PrmExecute(close_plan, values, NULL, false, 0) > 0)
		{
			PrmEmitEvent(org_id, "offer_withdrawn", "offer", offers[i],
						 psprintf("{\"reason\": %s}", PrmJsonString(reason)));
			FillCancelClosedOfferMessages(org_id, slots[i]);
		}
		FillAdvance(org_id, slots[i]);
	}
}

/*
 * prm.undo_cancellation(org_id, appointment_id) RETURNS boolean
 */
Datum
prm_undo_cancellation(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr undo_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  appointment_id = PRM_GETARG_INT64_NOTNULL(1, "appointment_id");
	Datum			  values[3];
	bool			  isnull;
	int64			  slot_id,
		provider_id;
	TimestampTz starts_at,
		ends_at;
	FillSlot slot;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_APPOINTMENT, appointment_id, false);
	PrmPrepare(&find_plan,
			   "SELECT s.id, a.provider_id, a.starts_at, a.ends_at FROM prm.slot s JOIN prm.appointment a"
			   "    ON a.org_id = s.org_id AND a.id = s.appointment_id"
			   " WHERE s.org_id = $1 AND s.appointment_id = $2 AND a.status = 'cancelled'"
			   " ORDER BY s.id DESC LIMIT 1",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(appointment_id);
	if (PrmExecute(find_plan, values, NULL, false, 1) == 0)
	{
		PrmSpiFinish();
		PG_RETURN_BOOL(false);
	}
	slot_id = PrmGetInt64(0, 1, &isnull);
	provider_id = PrmGetInt64(0, 2, &isnull);
	starts_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	ends_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));

	/* the booking routine's order: provider, then slot; then the check */
	PrmLockProvider(org_id, provider_id);
	if (!FillLockSlot(org_id, slot_id, false, &slot) || !slot.free)
	{
		PrmSpiFinish();
		PG_RETURN_BOOL(false);
	}
	PrmCheckProviderFree(org_id, provider_id, starts_at, ends_at, appointment_id);
	FillWithdrawSlotOffers(org_id, slot_id, "cancellation undone");
	PrmPrepare(&undo_plan,
			   "WITH s AS (UPDATE prm.slot s SET status = 'entered-in-error', fill_status = 'withdrawn',"
			   "                  next_batch_at = NULL"
			   "            WHERE s.org_id = $1 AND s.id = $3)"
			   "UPDATE prm.appointment a SET status = 'booked', cancelled_at = NULL, cancel_reason = NULL"
			   " WHERE a.org_id = $1 AND a.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[2] = Int64GetDatum(slot_id);
	PrmExecute(undo_plan, values, NULL, false, 0);
	PrmEmitEvent(org_id, "cancellation_undone", "appointment", appointment_id,
				 psprintf("{\"slot_id\": %lld}", (long long) slot_id));
	PrmSpiFinish();
	PG_RETURN_BOOL(true);
}

/*
 * prm.fill_stats(org_id, period_start, period_end) RETURNS jsonb
 */
Datum
prm_fill_stats(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	TimestampTz		  from = PRM_GETARG_TIMESTAMPTZ_NOTNULL(1, "period_start");
	TimestampTz		  to = PRM_GETARG_TIMESTAMPTZ_NOTNULL(2, "period_end");
	Datum			  values[3];
	bool			  isnull;
	Datum			  result;

	if (to < from)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("period_end must not be before period_start")));
	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmPrepare(&plan,
			   "WITH s AS (SELECT s.* FROM prm.slot s"
			   "            WHERE s.org_id = $1 AND s.created_at >= $2 AND s.created_at <= $3"
			   "              AND s.fill_status <> 'withdrawn'),"
			   "     o AS (SELECT o.* FROM prm.offer o JOIN s ON s.id = o.slot_id WHERE o.org_id = $1),"
			   "     f AS (SELECT s.id, s.filled_at - s.created_at AS t FROM s"
			   "            WHERE s.booked_appointment_id IS NOT NULL AND s.fill_status = 'filled'),"
			   "     offered AS (SELECT DISTINCT o.patient_id FROM o)"
			   "SELECT pg_catalog.jsonb_build_object("
			   "  'period_start', $2, 'period_end', $3,"
			   "  'slots', (SELECT pg_catalog.count(*) FROM s),"
			   "  'filled', (SELECT pg_catalog.count(*) FROM f),"
			   "  'fill_rate', (SELECT CASE WHEN pg_catalog.count(*) = 0 THEN NULL ELSE"
			   "                  round((SELECT pg_catalog.count(*) FROM f)::numeric / pg_catalog.count(*), 4) END FROM s),"
			   "  'median_time_to_fill_seconds', (SELECT round(extract(epoch FROM"
			   "                  percentile_cont(0.5) WITHIN GROUP (ORDER BY f.t))::numeric, 1) FROM f),"
			   "  'offers', (SELECT pg_catalog.count(*) FROM o),"
			   "  'offers_per_fill', (SELECT CASE WHEN (SELECT pg_catalog.count(*) FROM f) = 0 THEN NULL ELSE"
			   "                  round(pg_catalog.count(*)::numeric / (SELECT pg_catalog.count(*) FROM f), 2) END"
			   "                   FROM o WHERE o.slot_id IN (SELECT f.id FROM f)),"
			   "  'median_reply_latency_seconds', (SELECT round(extract(epoch FROM"
			   "                  percentile_cont(0.5) WITHIN GROUP (ORDER BY o.responded_at - o.created_at))::numeric, 1)"
			   "                   FROM o WHERE o.status IN ('accepted', 'declined')),"
			   "  'accepted', (SELECT pg_catalog.count(*) FROM o WHERE o.status = 'accepted'),"
			   "  'declined', (SELECT pg_catalog.count(*) FROM o WHERE o.status = 'declined'),"
			   "  'expired', (SELECT pg_catalog.count(*) FROM o WHERE o.status = 'expired'),"
			   "  'opt_out_rate', (SELECT CASE WHEN pg_catalog.count(*) = 0 THEN NULL ELSE"
			   "                  round((SELECT pg_catalog.count(*) FROM prm.patient p JOIN offered x ON x.patient_id = p.id"
			   "                          WHERE p.org_id = $1 AND p.sms_opt_out"
			   "                            AND p.opted_out_at >= $2 AND p.opted_out_at <= $3)::numeric"
			   "                        / pg_catalog.count(*), 4) END FROM offered))",
			   3, (Oid[]){INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = TimestampTzGetDatum(from);
	values[2] = TimestampTzGetDatum(to);
	PrmExecute(plan, values, NULL, true, 1);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = SPI_datumTransfer(result, false, -1);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}
