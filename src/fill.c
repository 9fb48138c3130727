/*-------------------------------------------------------------------------
 *
 * fill.c
 *	  The cancellation fill engine: offering a freed slot to the best
 *	  waiting patients in batches, holding offers, reading replies, and
 *	  claiming the slot for exactly one of them.
 *
 * Choosing a batch.  Waiting entries are read in the order of the rank
 * index (priority_score DESC, joined_at, id) through a cursor, without
 * locks, into a ranked pool of FILL_POOL_FACTOR candidates per batch place.
 * The pool is then locked best first, one entry at a time, FOR NO KEY
 * UPDATE SKIP LOCKED: an entry another transaction is offering right now is skipped,
 * never waited for, and the next candidate takes its place, so two slots
 * filled at once choose disjoint patients and neither comes up short.  Only
 * entries actually offered are locked.  A batch that finds every candidate
 * busy elsewhere is retried a few seconds later by the jobs, not given up.
 * Hard filters are in the query (provider, location, days, time
 * window in the patient's time zone, expiry, reachable and not opted out,
 * no open offer, not offered this slot before, offer caps per day and week,
 * slot earlier than the current appointment).  In C each row gets its rank:
 * the score minus recent_offer_penalty when the patient had an offer within
 * recent_offer_window; and its hold: it starts when the SMS may go out (after
 * quiet hours), and the slot must start at least min_notice after it ends.
 * The scan stops once the pool is full and no later row can outrank it (a
 * later row's rank is at most its score).  A patient with two entries is
 * ranked once.  Offers are
 * inserted with ON CONFLICT DO NOTHING on offer_one_open_per_patient, so a
 * patient reached through two entries at once still gets one open offer.
 *
 * Claiming.  The first YES wins by a conditional UPDATE of the slot
 * (status 'free' -> 'busy').  It does not skip: a second YES waits on the
 * first one's row lock, and then either finds the slot busy (told it is
 * gone) or, if the first transaction rolled back, free (and wins).  Only
 * then is the offer row locked and checked.
 *
 * Lock order, everywhere: provider (taken by bookings, and by a YES before
 * it claims), slot, then its offers, then waitlist entries.
 * Sweeps (expiry, due batches) take the slot with SKIP LOCKED and come back
 * for a slot that is busy being claimed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "storage/proc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_fill_slot);
PG_FUNCTION_INFO_V1(prm_handle_inbound_sms);
PG_FUNCTION_INFO_V1(prm_accept_offer);
PG_FUNCTION_INFO_V1(prm_undo_cancellation);
PG_FUNCTION_INFO_V1(prm_expire_offers);
PG_FUNCTION_INFO_V1(prm_fill_stats);

/* rows examined at most when choosing one batch */
#define FILL_MAX_SCAN 5000 /* also the candidate query's LIMIT: planned for a fast start */
#define FILL_FETCH 64
/* candidates ranked per batch place, for when some are being offered elsewhere */
#define FILL_POOL_FACTOR 4
/* a batch that found everyone busy elsewhere is tried again this much later */
#define FILL_RETRY_USECS (5 * USECS_PER_SEC)

typedef struct FillSlot
{
	int64		org_id;
	int64		id;
	int64		provider_id;
	int64		location_id; /* 0 when the provider has none */
	TimestampTz starts_at;
	TimestampTz ends_at;
	bool		free;
	int			batches_sent;
	char		fill_status[16];
} FillSlot;

typedef struct FillCandidate
{
	int64		  entry_id;
	int64		  patient_id;
	int			  stored_score;
	int			  rank;
	int			  penalty;
	PrmScoreParts parts;
	TimestampTz	  release; /* when the offer SMS may go out */
	TimestampTz	  hold_until;
	char		 *phone;
	char		 *tz;
	char		 *language;
} FillCandidate;

typedef enum FillOutcome
{
	FILL_BOOKED,
	FILL_GONE,
	FILL_NO_OFFER
} FillOutcome;

static bool		   FillInstalled(void);
static bool		   FillLockSlot(int64 org_id, int64 slot_id, bool skip_locked, FillSlot *slot);
static int		   FillSendBatch(int64 org_id, int64 slot_id);
static void		   FillAdvance(int64 org_id, int64 slot_id);
static void		   FillFormatLocal(TimestampTz ts, const char *tz, char **date, char **time);
static FillOutcome FillAccept(int64 org_id, int64 offer_id, const char *channel,
							  char **reply);
static int		   FillWithdrawSlotOffers(int64 org_id, int64 slot_id, const char *reason);

/*
 * Are the fill engine's tables there?  The library may be newer than the
 * extension's SQL objects until ALTER EXTENSION prm UPDATE has run.
 */
static bool
FillInstalled(void)
{
	Oid nsp = get_namespace_oid("prm", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("offer", nsp));
}

/* Lock a slot (waiting, or skipping when skip_locked) and read it. */
static bool
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
static void
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
static void
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
static void
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

/* Insert candidate c's offer with its SMS; false if the patient got one meanwhile. */
static bool
FillMakeOffer(const PrmSettings *s, FillSlot *slot, FillCandidate *c, int batch_no)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[9];
	bool			  isnull;
	int64			  offer_id;
	char			 *token;
	char			 *breakdown;
	char			 *date;
	char			 *time;
	char			 *body;
	PrmTemplateVar	  vars[4];
	int64			  hold_secs = s->offer_hold.time / USECS_PER_SEC +
					  (int64) s->offer_hold.day * 86400;
	const char *accept_url = s->accept_url[0] ? s->accept_url : NULL;

	breakdown = psprintf("{\"stored_score\": %d, \"score\": %d, \"urgent\": %d,"
						 " \"manual_boost\": %d, \"wait\": %d, \"seniority\": %d,"
						 " \"recent_offer_penalty\": %d, \"rank\": %d,"
						 " \"days_to_wait\": %.2f, \"days_on_list\": %.2f}",
						 c->stored_score, c->parts.total, c->parts.urgent,
						 c->parts.boost, c->parts.wait, c->parts.seniority,
						 c->penalty, c->rank, c->parts.days_to_wait,
						 c->parts.days_on_list);
	PrmPrepare(&plan,
			   "INSERT INTO prm.offer (org_id, slot_id, patient_id, waitlist_entry_id,"
			   "                       hold_until, batch_no, rank, score_breakdown)"
			   " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::pg_catalog.jsonb)"
			   " ON CONFLICT (org_id, patient_id) WHERE status = 'open' DO NOTHING"
			   " RETURNING id, token::text",
			   8, (Oid[]){INT8OID, INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, INT4OID, INT4OID, TEXTOID});
	values[0] = Int64GetDatum(slot->org_id);
	values[1] = Int64GetDatum(slot->id);
	values[2] = Int64GetDatum(c->patient_id);
	values[3] = Int64GetDatum(c->entry_id);
	values[4] = TimestampTzGetDatum(c->hold_until);
	values[5] = Int32GetDatum(batch_no);
	values[6] = Int32GetDatum(c->rank);
	values[7] = CStringGetTextDatum(breakdown);
	if (PrmExecute(plan, values, NULL, false, 0) != 1)
		return false;
	offer_id = PrmGetInt64(0, 1, &isnull);
	token = PrmGetText(0, 2);

	FillFormatLocal(slot->starts_at, c->tz, &date, &time);
	vars[0].name = "date";
	vars[0].value = date;
	vars[1].name = "time";
	vars[1].value = time;
	vars[2].name = "hold_minutes";
	vars[2].value = psprintf("%lld", (long long) (hold_secs / 60));
	vars[3].name = "link";
	vars[3].value = accept_url ? psprintf(" Or book here: %s%s", accept_url, token) : "";
	body = PrmRender(slot->org_id, "offer", "sms", c->language, vars, 4);
	PrmEnqueue(slot->org_id, "sms", c->phone, body, "offer", c->patient_id, offer_id,
			   psprintf("offer:%lld", (long long) offer_id), c->release);
	PrmEmitEvent(slot->org_id, "offer_sent", "offer", offer_id,
				 psprintf("{\"slot_id\": %lld, \"patient_id\": %lld, \"batch_no\": %d,"
						  " \"hold_until\": %s, \"score_breakdown\": %s}",
						  (long long) slot->id, (long long) c->patient_id, batch_no,
						  PrmJsonTimestamp(c->hold_until), breakdown));
	return true;
}

/*
 * Send the next batch of offers for a slot, if it is free, has no open
 * offers and may still be offered.  Returns the number of offers made.
 */
static int
FillSendBatch(int64 org_id, int64 slot_id)
{
	static SPIPlanPtr  open_plan = NULL;
	static SPIPlanPtr  cand_plan = NULL;
	static SPIPlanPtr  lock_plan = NULL;
	const PrmSettings *s;
	FillSlot		   slot;
	Datum			   values[10];
	char			   nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Portal			   portal;
	FillCandidate	  *chosen;
	int				   nchosen = 0;
	int				   scanned = 0;
	bool			   done = false;
	int				   made = 0;
	int				   busy = 0;
	int				   pool_size;
	int				   i;
	TimestampTz		   now = GetCurrentTransactionStartTimestamp();
	TimestampTz		   earliest_hold_end = 0;

	if (!FillLockSlot(org_id, slot_id, false, &slot) || !slot.free ||
		strcmp(slot.fill_status, "withdrawn") == 0)
		return 0;

	PrmPrepare(&open_plan,
			   "SELECT 1 FROM prm.offer o WHERE o.org_id = $1 AND o.slot_id = $2 AND o.status = 'open'",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	if (PrmExecute(open_plan, values, NULL, false, 1) > 0)
		return 0;

	s = PrmGetSettings(org_id);
	if (slot.batches_sent >= s->max_batches)
	{
		FillSetStatus(org_id, slot_id, "exhausted", false);
		PrmEmitEvent(org_id, "fill_exhausted", "slot", slot_id,
					 psprintf("{\"reason\": \"max_batches\", \"batches_sent\": %d}", slot.batches_sent));
		return 0;
	}
	if (slot.starts_at < now + PrmIntervalUsecs(&s->offer_hold) + PrmIntervalUsecs(&s->min_notice))
	{
		FillSetStatus(org_id, slot_id, "too_late", false);
		PrmEmitEvent(org_id, "fill_too_late", "slot", slot_id, NULL);
		return 0;
	}

	PrmPrepareCursor(&cand_plan,
					 "SELECT w.id, w.patient_id, w.priority_score, w.urgent, w.manual_boost,"
					 "       w.current_appointment_at, w.joined_at, p.phone,"
					 "       coalesce(p.timezone, $7), p.language,"
					 "       EXISTS (SELECT 1 FROM prm.offer o WHERE o.org_id = w.org_id"
					 "                 AND o.patient_id = w.patient_id AND o.created_at > pg_catalog.now() - $8)"
					 "  FROM prm.waitlist_entry w"
					 "  JOIN prm.patient p ON p.org_id = w.org_id AND p.id = w.patient_id"
					 " WHERE w.org_id = $1 AND w.status = 'waiting'"
					 "   AND (w.provider_id IS NULL OR w.provider_id = $2)"
					 "   AND (w.location_ids IS NULL OR $3 = ANY (w.location_ids))"
					 "   AND (w.expires_at IS NULL OR w.expires_at > pg_catalog.now())"
					 "   AND (w.current_appointment_at IS NULL OR w.current_appointment_at > $4)"
					 "   AND (w.days_of_week IS NULL OR"
					 "        extract(isodow FROM ($4 AT TIME ZONE coalesce(p.timezone, $7)))::int = ANY (w.days_of_week))"
					 "   AND (w.earliest_time IS NULL OR ($4 AT TIME ZONE coalesce(p.timezone, $7))::time >= w.earliest_time)"
					 "   AND (w.latest_time IS NULL OR ($5 AT TIME ZONE coalesce(p.timezone, $7))::time <= w.latest_time)"
					 "   AND p.phone IS NOT NULL AND NOT p.sms_opt_out"
					 "   AND NOT EXISTS (SELECT 1 FROM prm.offer o WHERE o.org_id = w.org_id"
					 "                     AND o.patient_id = w.patient_id AND o.status = 'open')"
					 "   AND NOT EXISTS (SELECT 1 FROM prm.offer o WHERE o.org_id = w.org_id"
					 "                     AND o.slot_id = $6 AND o.patient_id = w.patient_id)"
					 "   AND (SELECT pg_catalog.count(*) FROM prm.offer o WHERE o.org_id = w.org_id"
					 "          AND o.patient_id = w.patient_id"
					 "          AND o.created_at > pg_catalog.now() - interval '1 day') < $9"
					 "   AND (SELECT pg_catalog.count(*) FROM prm.offer o WHERE o.org_id = w.org_id"
					 "          AND o.patient_id = w.patient_id"
					 "          AND o.created_at > pg_catalog.now() - interval '7 days') < $10"
					 " ORDER BY w.priority_score DESC, w.joined_at, w.id"
					 " LIMIT " CppAsString2(FILL_MAX_SCAN),
					 10, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, TEXTOID, INTERVALOID, INT4OID, INT4OID},
					 CURSOR_OPT_FAST_PLAN);
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot.provider_id);
	values[2] = Int64GetDatum(slot.location_id);
	if (slot.location_id == 0)
		nulls[2] = 'n';
	values[3] = TimestampTzGetDatum(slot.starts_at);
	values[4] = TimestampTzGetDatum(slot.ends_at);
	values[5] = Int64GetDatum(slot_id);
	values[6] = CStringGetTextDatum(s->timezone);
	values[7] = IntervalPGetDatum(&s->recent_offer_window);
	values[8] = Int32GetDatum(s->offer_daily_cap);
	values[9] = Int32GetDatum(s->offer_weekly_cap);

	pool_size = Min(s->batch_size * FILL_POOL_FACTOR, FILL_MAX_SCAN);
	chosen = palloc0(sizeof(FillCandidate) * (pool_size + 1));
	portal = SPI_cursor_open(NULL, cand_plan, values, nulls, false);
	while (!done && scanned < FILL_MAX_SCAN)
	{
		uint64		   r;
		SPITupleTable *tab;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, FILL_FETCH);
		if (SPI_processed == 0)
			break;
		tab = SPI_tuptable;
		for (r = 0; r < SPI_processed && !done; r++)
		{
			HeapTuple	  tup = tab->vals[r];
			TupleDesc	  desc = tab->tupdesc;
			FillCandidate c;
			bool		  isnull,
				appt_null;
			Datum appt;
			int	  pos;

			scanned++;
			memset(&c, 0, sizeof(c));
			c.entry_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			c.patient_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			c.stored_score = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));

			/* nothing later can outrank a full pool: ranks never exceed scores */
			if (nchosen == pool_size && c.stored_score <= chosen[nchosen - 1].rank)
			{
				done = true;
				break;
			}
			appt = SPI_getbinval(tup, desc, 6, &appt_null);
			PrmComputeScore(DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)),
							DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull)),
							!appt_null, appt_null ? 0 : DatumGetTimestampTz(appt),
							DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull)),
							now, s, &c.parts);
			c.penalty = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull)) ? s->recent_offer_penalty : 0;
			c.rank = c.stored_score - c.penalty;
			c.phone = SPI_getvalue(tup, desc, 8);
			c.tz = SPI_getvalue(tup, desc, 9);
			c.language = SPI_getvalue(tup, desc, 10);
			c.release = PrmQuietRelease(s, c.tz, now);
			c.hold_until = c.release + PrmIntervalUsecs(&s->offer_hold);
			/* the patient must be able to answer and still make it */
			if (slot.starts_at < c.hold_until + PrmIntervalUsecs(&s->min_notice))
				continue;

			/*
			 * A patient with two entries (any provider, and this one) is
			 * ranked once: by the first entry seen, which has the higher
			 * score and the same penalty.
			 */
			for (pos = 0; pos < nchosen; pos++)
				if (chosen[pos].patient_id == c.patient_id)
					break;
			if (pos < nchosen)
				continue;

			/* insert by rank; equal ranks keep scan order (score, then seniority) */
			pos = nchosen;
			while (pos > 0 && chosen[pos - 1].rank < c.rank)
				pos--;
			if (pos >= pool_size)
				continue;
			if (nchosen == pool_size)
				nchosen--;
			memmove(&chosen[pos + 1], &chosen[pos], sizeof(FillCandidate) * (nchosen - pos));
			chosen[pos] = c;
			nchosen++;
			Assert(nchosen <= pool_size);
		}
	}
	SPI_cursor_close(portal);

	/*
	 * Lock the best candidates one by one, skipping those another
	 * transaction is offering right now, until the batch is full.  Only the
	 * entries offered stay locked.  The patient is claimed too (a
	 * transaction-level advisory lock, tried, never waited for): a patient
	 * reached through two entries by two fills at once is skipped by the
	 * second, which would otherwise wait on the first one's offer insert.
	 */
	PrmPrepare(&lock_plan,
			   "SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended("
			   "         'prm.offer:' || $1::text || ':' || w.patient_id::text, 0))"
			   "  FROM prm.waitlist_entry w"
			   " WHERE w.org_id = $1 AND w.id = $2 AND w.status = 'waiting'"
			   " FOR NO KEY UPDATE SKIP LOCKED",
			   2, (Oid[]){INT8OID, INT8OID});
	for (i = 0; i < nchosen && made < s->batch_size; i++)
	{
		Datum lv[2];
		bool  isnull;

		lv[0] = Int64GetDatum(org_id);
		lv[1] = Int64GetDatum(chosen[i].entry_id);
		if (PrmExecute(lock_plan, lv, NULL, false, 1) == 0 ||
			!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		{
			busy++;
			continue;
		}
		if (FillMakeOffer(s, &slot, &chosen[i], slot.batches_sent + 1))
		{
			made++;
			if (earliest_hold_end == 0 || chosen[i].hold_until < earliest_hold_end)
				earliest_hold_end = chosen[i].hold_until;
		}
		else
			busy++; /* the patient got an offer meanwhile */
	}

	if (made > 0)
	{
		FillSetStatus(org_id, slot_id, "offering", true);
		PrmEmitEvent(org_id, "batch_sent", "slot", slot_id,
					 psprintf("{\"batch_no\": %d, \"offers\": %d, \"examined\": %d}",
							  slot.batches_sent + 1, made, scanned));
		PrmWakeWorker(earliest_hold_end);
	}
	else if (busy > 0)
	{
		/* everyone eligible is being offered elsewhere: try again shortly */
		FillRetryLater(org_id, slot_id, now + FILL_RETRY_USECS);
		PrmEmitEvent(org_id, "batch_deferred", "slot", slot_id,
					 psprintf("{\"busy\": %d}", busy));
	}
	else
	{
		FillSetStatus(org_id, slot_id, "exhausted", false);
		PrmEmitEvent(org_id, "fill_exhausted", "slot", slot_id,
					 psprintf("{\"batch_no\": %d, \"offers\": 0, \"examined\": %d}",
							  slot.batches_sent, scanned));
	}
	return made;
}

/* After offers of a slot closed: the next batch if none is open any more. */
static void
FillAdvance(int64 org_id, int64 slot_id)
{
	(void) FillSendBatch(org_id, slot_id);
}

/*
 * Cancel the offer SMS of a slot that have not gone out yet while their
 * offers are closed (withdrawn or expired): nobody is to be told about a
 * slot they can no longer take.  Messages already claimed by a sender are
 * past recall.
 */
static void
FillCancelClosedOfferMessages(int64 org_id, int64 slot_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "UPDATE prm.outbound_message m"
			   "   SET status = 'cancelled', last_error = 'offer closed before sending',"
			   "       updated_at = pg_catalog.now()"
			   " WHERE m.org_id = $1 AND m.status = 'queued' AND m.kind = 'offer'"
			   "   AND m.offer_id IN (SELECT o.id FROM prm.offer o"
			   "                       WHERE o.org_id = $1 AND o.slot_id = $2"
			   "                         AND o.status IN ('withdrawn', 'expired'))",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	PrmExecute(plan, values, NULL, false, 0);
}

/* Withdraw the open offers of a slot (whose lock the caller holds). */
static int
FillWithdrawSlotOffers(int64 org_id, int64 slot_id, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	int				  n;

	PrmPrepare(&plan,
			   "UPDATE prm.offer o SET status = 'withdrawn', responded_at = pg_catalog.now()"
			   " WHERE o.org_id = $1 AND o.slot_id = $2 AND o.status = 'open'",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	n = PrmExecute(plan, values, NULL, false, 0);
	if (n > 0)
	{
		FillCancelClosedOfferMessages(org_id, slot_id);
		PrmEmitEvent(org_id, "offers_withdrawn", "slot", slot_id,
					 psprintf("{\"offers\": %d, \"reason\": %s}", n, PrmJsonString(reason)));
	}
	return n;
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
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;
	int64			  slot_id;
	FillSlot		  slot;

	PrmPrepare(&find_plan,
			   "SELECT o.slot_id FROM prm.offer o"
			   " WHERE o.org_id = $1 AND o.waitlist_entry_id = $2 AND o.status = 'open'",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(entry_id);
	if (PrmExecute(find_plan, values, NULL, false, 1) == 0)
		return;
	slot_id = PrmGetInt64(0, 1, &isnull);
	if (!FillLockSlot(org_id, slot_id, false, &slot))
		return;
	PrmPrepare(&plan,
			   "UPDATE prm.offer o SET status = 'withdrawn', responded_at = pg_catalog.now()"
			   " WHERE o.org_id = $1 AND o.waitlist_entry_id = $2 AND o.status = 'open'"
			   " RETURNING o.id",
			   2, (Oid[]){INT8OID, INT8OID});
	if (PrmExecute(plan, values, NULL, false, 0) > 0)
	{
		PrmEmitEvent(org_id, "offer_withdrawn", "offer", PrmGetInt64(0, 1, &isnull),
					 psprintf("{\"reason\": %s}", PrmJsonString(reason)));
		FillCancelClosedOfferMessages(org_id, slot_id);
	}
	FillAdvance(org_id, slot_id);
}

/* The reply confirming a booking at starts_at, in the patient's time zone. */
static char *
FillBookedReply(int64 org_id, const char *tz, const char *language, TimestampTz starts_at)
{
	PrmTemplateVar vars[2];
	char		  *date;
	char		  *time;

	FillFormatLocal(starts_at, tz, &date, &time);
	vars[0].name = "date";
	vars[0].value = date;
	vars[1].name = "time";
	vars[1].value = time;
	return PrmRender(org_id, "booked", "sms", language, vars, 2);
}

/*
 * Accept an offer: claim its slot for the offer's patient, book, close the
 * offer, the slot's other offers and the entry, and release the patient's
 * later appointment.  *reply gets the text for the patient.
 */
static FillOutcome
FillAccept(int64 org_id, int64 offer_id, const char *channel, char **reply)
{
	static SPIPlanPtr offer_plan = NULL;
	static SPIPlanPtr provider_plan = NULL;
	static SPIPlanPtr claim_plan = NULL;
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr unclaim_plan = NULL;
	static SPIPlanPtr close_plan = NULL;
	static SPIPlanPtr later_plan = NULL;
	Datum			  values[6];
	bool			  isnull;
	int64			  slot_id,
		patient_id,
		entry_id,
		provider_id,
		appt_id,
		later_id;
	char	   *status;
	char	   *tz;
	char	   *language;
	bool		entry_waiting;
	TimestampTz slot_starts;
	TimestampTz starts_at,
		ends_at;

	PrmPrepare(&offer_plan,
			   "SELECT o.slot_id, o.patient_id, o.waitlist_entry_id, o.status,"
			   "       coalesce(p.timezone, g.timezone), p.language,"
			   "       (SELECT w.status = 'waiting' FROM prm.waitlist_entry w"
			   "         WHERE w.org_id = o.org_id AND w.id = o.waitlist_entry_id),"
			   "       (SELECT s.starts_at FROM prm.slot s WHERE s.org_id = o.org_id AND s.id = o.slot_id)"
			   "  FROM prm.offer o"
			   "  JOIN prm.patient p ON p.org_id = o.org_id AND p.id = o.patient_id"
			   "  JOIN prm.organization g ON g.id = o.org_id"
			   " WHERE o.org_id = $1 AND o.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(offer_id);
	if (PrmExecute(offer_plan, values, NULL, false, 1) != 1)
		elog(ERROR, "offer %lld vanished", (long long) offer_id);
	slot_id = PrmGetInt64(0, 1, &isnull);
	patient_id = PrmGetInt64(0, 2, &isnull);
	entry_id = PrmGetInt64(0, 3, &isnull);
	status = PrmGetText(0, 4);
	tz = PrmGetText(0, 5);
	language = PrmGetText(0, 6);
	entry_waiting = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 7, &isnull)) && !isnull;
	slot_starts = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 8, &isnull));

	if (strcmp(status, "accepted") == 0)
	{
		/* a repeated YES or link click: confirm again, book nothing */
		*reply = FillBookedReply(org_id, tz, language, slot_starts);
		return FILL_BOOKED;
	}
	if (strcmp(status, "open") != 0 && strcmp(status, "expired") != 0)
	{
		*reply = PrmRender(org_id, strcmp(status, "withdrawn") == 0 ? "gone" : "no_offer",
						   "sms", language, NULL, 0);
		return strcmp(status, "withdrawn") == 0 ? FILL_GONE : FILL_NO_OFFER;
	}
	if (strcmp(status, "expired") == 0 && !entry_waiting)
	{
		/* an expired offer is only good while its patient is still waiting */
		*reply = PrmRender(org_id, "no_offer", "sms", language, NULL, 0);
		return FILL_NO_OFFER;
	}

	/*
	 * Lock order is provider, slot, offer everywhere (book_appointment locks
	 * the provider first too), so take the provider's lock before the slot's.
	 */
	PrmPrepare(&provider_plan,
			   "SELECT p.id FROM prm.slot s JOIN prm.provider p"
			   "    ON p.org_id = s.org_id AND p.id = s.provider_id"
			   " WHERE s.org_id = $1 AND s.id = $2 FOR NO KEY UPDATE OF p",
			   2, (Oid[]){INT8OID, INT8OID});
	values[1] = Int64GetDatum(slot_id);
	PrmExecute(provider_plan, values, NULL, false, 1);

	/* the claim: waits for a concurrent claimer and re-checks after it */
	PrmPrepare(&claim_plan,
			   "UPDATE prm.slot s SET status = 'busy', fill_status = 'filled',"
			   "       filled_at = pg_catalog.now(), next_batch_at = NULL"
			   " WHERE s.org_id = $1 AND s.id = $2 AND s.status = 'free'"
			   "   AND s.starts_at > pg_catalog.now()"
			   " RETURNING s.provider_id, s.starts_at, s.ends_at",
			   2, (Oid[]){INT8OID, INT8OID});
	values[1] = Int64GetDatum(slot_id);
	if (PrmExecute(claim_plan, values, NULL, false, 0) != 1)
	{
		static SPIPlanPtr again_plan = NULL;

		/* the same offer accepted meanwhile (a link click and an SMS): it won */
		PrmPrepare(&again_plan,
				   "SELECT 1 FROM prm.offer o WHERE o.org_id = $1 AND o.id = $2 AND o.status = 'accepted'",
				   2, (Oid[]){INT8OID, INT8OID});
		values[1] = Int64GetDatum(offer_id);
		if (PrmExecute(again_plan, values, NULL, false, 1) == 1)
		{
			*reply = FillBookedReply(org_id, tz, language, slot_starts);
			return FILL_BOOKED;
		}
		*reply = PrmRender(org_id, "gone", "sms", language, NULL, 0);
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
	if (strcmp(status, "open") != 0 && strcmp(status, "expired") != 0)
	{
		/* declined or withdrawn while we waited: give the slot back */
		PrmPrepare(&unclaim_plan,
				   "UPDATE prm.slot s SET status = 'free', fill_status = 'offering', filled_at = NULL"
				   " WHERE s.org_id = $1 AND s.id = $2",
				   2, (Oid[]){INT8OID, INT8OID});
		values[1] = Int64GetDatum(slot_id);
		PrmExecute(unclaim_plan, values, NULL, false, 0);
		/* whatever status the decline we waited for left is gone: move on */
		FillAdvance(org_id, slot_id);
		*reply = PrmRender(org_id, "no_offer", "sms", language, NULL, 0);
		return FILL_NO_OFFER;
	}

	appt_id = PrmBookAppointment(org_id, patient_id, provider_id, starts_at, ends_at, slot_id);

	PrmPrepare(&close_plan,
			   "WITH o AS (UPDATE prm.offer o SET status = 'accepted', responded_at = pg_catalog.now(),"
			   "                  response_channel = $5"
			   "            WHERE o.org_id = $1 AND o.id = $2 RETURNING o.id),"
			   "     w AS (UPDATE prm.waitlist_entry w SET status = 'booked', closed_at = pg_catalog.now()"
			   "            WHERE w.org_id = $1 AND w.id = $3 RETURNING w.id)"
			   "UPDATE prm.slot s SET booked_appointment_id = $4"
			   " WHERE s.org_id = $1 AND s.id = $6",
			   6, (Oid[]){INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID});
	values[1] = Int64GetDatum(offer_id);
	values[2] = Int64GetDatum(entry_id);
	values[3] = Int64GetDatum(appt_id);
	values[4] = CStringGetTextDatum(channel);
	values[5] = Int64GetDatum(slot_id);
	PrmExecute(close_plan, values, NULL, false, 0);
	FillWithdrawSlotOffers(org_id, slot_id, "slot filled");
	PrmEmitEvent(org_id, "offer_accepted", "offer", offer_id,
				 psprintf("{\"slot_id\": %lld, \"patient_id\": %lld, \"appointment_id\": %lld, \"channel\": %s}",
						  (long long) slot_id, (long long) patient_id, (long long) appt_id,
						  PrmJsonString(channel)));

	/* the appointment the patient was waiting to bring forward is free now */
	PrmPrepare(&later_plan,
			   "SELECT a.id FROM prm.appointment a, prm.waitlist_entry w"
			   " WHERE w.org_id = $1 AND w.id = $3"
			   "   AND a.org_id = $1 AND a.patient_id = $2 AND a.id <> $4"
			   "   AND a.status IN ('proposed', 'pending', 'booked')"
			   "   AND a.starts_at > $5"
			   "   AND (w.provider_id IS NULL OR a.provider_id = w.provider_id)"
			   " ORDER BY a.starts_at LIMIT 1 FOR NO KEY UPDATE OF a",
			   5, (Oid[]){INT8OID, INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID});
	values[1] = Int64GetDatum(patient_id);
	values[2] = Int64GetDatum(entry_id);
	values[3] = Int64GetDatum(appt_id);
	values[4] = TimestampTzGetDatum(starts_at);
	if (PrmExecute(later_plan, values, NULL, false, 1) == 1)
	{
		later_id = PrmGetInt64(0, 1, &isnull);
		(void) PrmCancelAppointment(org_id, later_id, "moved earlier from the waitlist");
	}

	*reply = FillBookedReply(org_id, tz, language, starts_at);
	return FILL_BOOKED;
}

/*
 * prm.fill_slot(org_id, slot_id) RETURNS int
 */
Datum
prm_fill_slot(PG_FUNCTION_ARGS)
{
	int64 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64 slot_id = PRM_GETARG_INT64_NOTNULL(1, "slot_id");
	int	  made;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_SLOT, slot_id, false);
	made = FillSendBatch(org_id, slot_id);
	PrmSpiFinish();
	PG_RETURN_INT32(made);
}

/* The keyword of an SMS: its letters, upper-cased, everything else dropped. */
static char *
FillKeyword(const char *body)
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

	PrmPrepare(&plan,
			   "SELECT o.id FROM prm.offer o"
			   " WHERE o.org_id = $1 AND o.patient_id = ANY ($2)"
			   "   AND (o.status = 'open' OR (NOT $3 AND o.status IN ('expired', 'withdrawn', 'accepted')"
			   "        AND o.created_at > pg_catalog.now() - interval '1 day'))"
			   " ORDER BY o.status = 'open' DESC, o.status = 'accepted' DESC, o.status = 'expired' DESC,"
			   "          o.created_at DESC, o.id DESC"
			   " LIMIT 1",
			   3, (Oid[]){INT8OID, INT8ARRAYOID, BOOLOID});
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

/*
 * prm.handle_inbound_sms(to_number, from_number, body, provider_message_id)
 *	  RETURNS text: the reply, or NULL.
 */
Datum
prm_handle_inbound_sms(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr org_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr replay_plan = NULL;
	static SPIPlanPtr patients_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	static SPIPlanPtr start_plan = NULL;
	char			 *to_raw = PrmTextArg(fcinfo, 0, "to_number", 40);
	char			 *from_raw;
	char			 *body;
	char			 *pmid = PrmTextArg(fcinfo, 3, "provider_message_id", 200);
	char			 *to;
	char			 *from;
	char			 *keyword;
	char			 *reply = NULL;
	char			 *language = "en";
	FillKeywordKind	  kind;
	Datum			  values[6];
	char			  nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  org_id,
		inbound_id,
		offer_id = 0,
		first_patient = 0;
	int npatients,
		nopted = 0,
		i;
	Datum *patient_ids;
	Datum  patients;
	text  *result;

	PrmArgNotNull(fcinfo, 1, "from_number");
	from_raw = text_to_cstring(PG_GETARG_TEXT_PP(1));
	body = PG_ARGISNULL(2) ? pstrdup("") : text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (strlen(body) > 1600)
		body[pg_mbcharcliplen(body, strlen(body), 1600)] = '\0';

	PrmSpiConnect();
	to = PrmTryNormalizePhone(to_raw, NULL);
	PrmPrepare(&org_plan, "SELECT o.id FROM prm.organization o WHERE o.sms_number = $1",
			   1, (Oid[]){TEXTOID});
	values[0] = CStringGetTextDatum(to ? to : to_raw);
	if (to == NULL || PrmExecute(org_plan, values, NULL, false, 1) == 0)
	{
		if (!PrmCallerIsPrivileged())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for SMS number %s", to ? to : to_raw),
					 errhint("The webhook role needs the webhook level on the organization owning the number.")));
		PrmSpiFinish();
		PG_RETURN_NULL();
	}
	org_id = PrmGetInt64(0, 1, &isnull);
	if (!PrmHasOrgAccess(org_id, PRM_LEVEL_WEBHOOK))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for SMS number %s", to),
				 errhint("The webhook role needs the webhook level on the organization owning the number.")));

	from = PrmTryNormalizePhone(from_raw, PrmOrgPhoneRegion(org_id));
	keyword = FillKeyword(body);
	kind = FillClassify(keyword);

	/* once per provider message id: a retried webhook gets the first reply */
	PrmPrepare(&insert_plan,
			   "INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword)"
			   " VALUES ($1, $2, $3, $4, $5)"
			   " ON CONFLICT (org_id, provider_message_id) DO NOTHING RETURNING id",
			   5, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(pmid);
	values[2] = CStringGetTextDatum(from ? from : from_raw);
	values[3] = CStringGetTextDatum(body);
	values[4] = CStringGetTextDatum(keyword);
	if (PrmExecute(insert_plan, values, NULL, false, 0) == 0)
	{
		PrmPrepare(&replay_plan,
				   "SELECT i.reply FROM prm.inbound_message i"
				   " WHERE i.org_id = $1 AND i.provider_message_id = $2",
				   2, (Oid[]){INT8OID, TEXTOID});
		PrmExecute(replay_plan, values, NULL, false, 1);
		reply = PrmGetText(0, 1);
		result = reply ? cstring_to_text(reply) : NULL;
		if (result)
			result = (text *) DatumGetPointer(SPI_datumTransfer(PointerGetDatum(result), false, -1));
		PrmSpiFinish();
		if (result == NULL)
			PG_RETURN_NULL();
		PG_RETURN_TEXT_P(result);
	}
	inbound_id = PrmGetInt64(0, 1, &isnull);

	/* the patients behind the number (a family may share one) */
	npatients = 0;
	patient_ids = NULL;
	if (from)
	{
		PrmPrepare(&patients_plan,
				   "SELECT p.id, p.sms_opt_out, p.language FROM prm.patient p"
				   " WHERE p.org_id = $1 AND p.phone = $2 ORDER BY p.id FOR NO KEY UPDATE",
				   2, (Oid[]){INT8OID, TEXTOID});
		values[1] = CStringGetTextDatum(from);
		npatients = PrmExecute(patients_plan, values, NULL, false, 0);
		patient_ids = palloc(sizeof(Datum) * (npatients + 1));
		for (i = 0; i < npatients; i++)
		{
			patient_ids[i] = Int64GetDatum(PrmGetInt64(i, 1, &isnull));
			if (strcmp(PrmGetText(i, 2), "t") == 0)
				nopted++;
		}
		if (npatients > 0)
		{
			first_patient = DatumGetInt64(patient_ids[0]);
			language = PrmGetText(0, 3);
		}
	}
	patients = PointerGetDatum(construct_array(patient_ids ? patient_ids : values, npatients,
											   INT8OID, 8, true, TYPALIGN_DOUBLE));

	if (kind == KW_HELP)
		reply = PrmRender(org_id, "help", "sms", language, NULL, 0);
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
	else
		reply = PrmRender(org_id, "hint", "sms", language, NULL, 0);

	PrmPrepare(&update_plan,
			   "UPDATE prm.inbound_message i SET patient_id = $3, offer_id = $4, reply = $5"
			   " WHERE i.org_id = $1 AND i.id = $2",
			   5, (Oid[]){INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(inbound_id);
	values[2] = Int64GetDatum(first_patient);
	nulls[2] = first_patient ? ' ' : 'n';
	values[3] = Int64GetDatum(offer_id);
	nulls[3] = offer_id ? ' ' : 'n';
	values[4] = reply ? CStringGetTextDatum(reply) : (Datum) 0;
	nulls[4] = reply ? ' ' : 'n';
	PrmExecute(update_plan, values, nulls, false, 0);
	PrmEmitEvent(org_id, "sms_received", "inbound_message", inbound_id,
				 psprintf("{\"keyword\": %s, \"patient_id\": %s}", PrmJsonString(keyword),
						  first_patient ? psprintf("%lld", (long long) first_patient) : "null"));

	result = reply ? cstring_to_text(reply) : NULL;
	if (result)
		result = (text *) DatumGetPointer(SPI_datumTransfer(PointerGetDatum(result), false, -1));
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
	PrmPrepare(&plan, "SELECT o.org_id, o.id FROM prm.offer o WHERE o.token = $1",
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
	int64			  slot_id;
	FillSlot		  slot;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_APPOINTMENT, appointment_id, false);
	PrmPrepare(&find_plan,
			   "SELECT s.id FROM prm.slot s JOIN prm.appointment a"
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
	if (!FillLockSlot(org_id, slot_id, false, &slot) || !slot.free)
	{
		PrmSpiFinish();
		PG_RETURN_BOOL(false);
	}
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

/* the first error a guarded slot hit in this transaction, for prm.job_run */
static char				 *fill_slot_error = NULL;
static LocalTransactionId fill_slot_error_lxid = InvalidLocalTransactionId;

/*
 * The first per-slot error of the current transaction's sweeps since the
 * last call, or NULL; the error is forgotten once taken.
 */
const char *
PrmFillTakeSweepError(void)
{
	const char *error = NULL;

	if (fill_slot_error_lxid == MyProc->lxid)
		error = fill_slot_error;
	fill_slot_error_lxid = InvalidLocalTransactionId;
	return error;
}

typedef struct FillGuardedArg
{
	int (*fn)(int64 org_id, int64 slot_id, TimestampTz as_of);
	int64		org_id;
	int64		slot_id;
	TimestampTz as_of;
} FillGuardedArg;

/* Call a FillGuarded step (for PrmRunInSubtransaction). */
static int64
FillGuardedCall(void *arg)
{
	FillGuardedArg *g = (FillGuardedArg *) arg;

	return g->fn(g->org_id, g->slot_id, g->as_of);
}

/*
 * Run a sweep's work on one slot in a subtransaction of its own: a slot
 * that fails (say, its organization's template cannot be rendered) is rolled
 * back alone, logged and remembered, and the sweep goes on with the other
 * slots and organizations.  Returns fn's result, or 0 after an error.
 */
static int
FillGuarded(int (*fn)(int64 org_id, int64 slot_id, TimestampTz as_of),
			int64 org_id, int64 slot_id, TimestampTz as_of)
{
	FillGuardedArg arg = {fn, org_id, slot_id, as_of};
	ErrorData	  *edata;
	int64		   result = 0;

	edata = PrmRunInSubtransaction(FillGuardedCall, &arg, &result);
	if (edata == NULL)
		return (int) result;
	ereport(WARNING,
			(errmsg("prm: slot %lld of organization %lld was skipped: %s",
					(long long) slot_id, (long long) org_id, edata->message),
			 edata->detail ? errdetail("%s", edata->detail) : 0,
			 errhint("The other slots were processed; this one is tried again on the next run.")));
	if (fill_slot_error_lxid != MyProc->lxid)
	{
		if (fill_slot_error != NULL)
			pfree(fill_slot_error);
		fill_slot_error = MemoryContextStrdup(TopMemoryContext,
											  psprintf("slot %lld of organization %lld: %s",
													   (long long) slot_id, (long long) org_id,
													   edata->message));
		fill_slot_error_lxid = MyProc->lxid;
	}
	FreeErrorData(edata);
	return 0;
}

/* Expire one slot's overdue offers and move it on (a FillGuarded step). */
static int
FillExpireSlot(int64 org_id, int64 slot_id, TimestampTz as_of)
{
	static SPIPlanPtr expire_plan = NULL;
	FillSlot		  slot;
	Datum			  values[3];
	int				  k;

	/* a slot being claimed right now is left for the next sweep */
	if (!FillLockSlot(org_id, slot_id, true, &slot))
		return 0;
	PrmPrepare(&expire_plan,
			   "UPDATE prm.offer o SET status = 'expired'"
			   " WHERE o.org_id = $1 AND o.slot_id = $2 AND o.status = 'open' AND o.hold_until <= $3",
			   3, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	values[2] = TimestampTzGetDatum(as_of);
	k = PrmExecute(expire_plan, values, NULL, false, 0);
	if (k > 0)
	{
		FillCancelClosedOfferMessages(org_id, slot_id);
		PrmEmitEvent(org_id, "offers_expired", "slot", slot_id,
					 psprintf("{\"offers\": %d}", k));
	}
	FillAdvance(org_id, slot_id);
	return k;
}

/* Send a delayed batch (a FillGuarded step). */
static int
FillDueBatch(int64 org_id, int64 slot_id, TimestampTz as_of)
{
	return FillSendBatch(org_id, slot_id);
}

/* Copy n (org_id, slot_id) result rows out, before other queries run. */
static void
FillReadSlotIds(int n, int64 **org_ids, int64 **slot_ids)
{
	int	 i;
	bool isnull;

	*org_ids = palloc(sizeof(int64) * (n + 1));
	*slot_ids = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		(*org_ids)[i] = PrmGetInt64(i, 1, &isnull);
		(*slot_ids)[i] = PrmGetInt64(i, 2, &isnull);
	}
}

/*
 * Expire open offers whose hold ended by as_of, slot by slot (at most limit
 * slots), and send the next batch where a slot has no open offer left.
 * orgs (norgs of them) limits it to some organizations; NULL: all.
 */
int
PrmExpireOffers(TimestampTz as_of, Datum *orgs, int norgs, int limit)
{
	static SPIPlanPtr find_plan = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	int				  n,
		i,
		expired = 0;
	int64 *org_ids;
	int64 *slot_ids;

	if (!FillInstalled())
		return 0;
	PrmPrepare(&find_plan,
			   "SELECT DISTINCT o.org_id, o.slot_id FROM prm.offer o"
			   " WHERE o.status = 'open' AND o.hold_until <= $1"
			   "   AND ($2::bigint[] IS NULL OR o.org_id = ANY ($2::bigint[]))"
			   " LIMIT $3",
			   3, (Oid[]){TIMESTAMPTZOID, INT8ARRAYOID, INT4OID});
	values[0] = TimestampTzGetDatum(as_of);
	if (orgs)
		values[1] = PointerGetDatum(construct_array(orgs, norgs, INT8OID, 8, true, TYPALIGN_DOUBLE));
	else
		nulls[1] = 'n';
	values[2] = Int32GetDatum(limit);
	n = PrmExecute(find_plan, values, nulls, false, 0);
	FillReadSlotIds(n, &org_ids, &slot_ids);

	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		expired += FillGuarded(FillExpireSlot, org_ids[i], slot_ids[i], as_of);
	}
	return expired;
}

/* Send first batches whose delay is over (at most limit slots). */
int
PrmSendDueBatches(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	int				  n,
		i,
		sent = 0;
	int64 *org_ids;
	int64 *slot_ids;

	if (!FillInstalled())
		return 0;
	PrmPrepare(&plan,
			   "SELECT s.org_id, s.id FROM prm.slot s"
			   " WHERE s.fill_status = 'pending' AND s.next_batch_at <= pg_catalog.now()"
			   " ORDER BY s.next_batch_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	n = PrmExecute(plan, values, NULL, false, 0);
	FillReadSlotIds(n, &org_ids, &slot_ids);
	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		sent += FillGuarded(FillDueBatch, org_ids[i], slot_ids[i], 0);
	}
	return sent;
}

/*
 * prm.expire_offers(as_of timestamptz) RETURNS int
 */
Datum
prm_expire_offers(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr orgs_plan = NULL;
	TimestampTz		  as_of = PRM_GETARG_TIMESTAMPTZ_NOTNULL(0, "as_of");
	Datum			 *orgs = NULL;
	int				  norgs = 0;
	int				  expired;

	PrmSpiConnect();
	if (!PrmCallerIsPrivileged())
	{
		Datum values[1];
		int	  i;
		bool  isnull;

		/* a staff role expires its own organizations' offers only */
		PrmPrepare(&orgs_plan,
				   "SELECT a.org_id FROM prm.org_access a"
				   " WHERE a.level IN ('admin', 'staff')"
				   "   AND pg_catalog.pg_has_role($1, a.role_id, 'USAGE')",
				   1, (Oid[]){OIDOID});
		values[0] = ObjectIdGetDatum(GetOuterUserId());
		norgs = PrmExecute(orgs_plan, values, NULL, false, 0);
		if (norgs == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to expire offers"),
					 errhint("It needs the staff level on an organization.")));
		orgs = palloc(sizeof(Datum) * norgs);
		for (i = 0; i < norgs; i++)
			orgs[i] = Int64GetDatum(PrmGetInt64(i, 1, &isnull));
	}
	expired = PrmExpireOffers(as_of, orgs, norgs, 1000);
	PrmSpiFinish();
	PG_RETURN_INT32(expired);
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
	PrmSpiConnect();
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
