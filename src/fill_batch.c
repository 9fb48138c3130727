/*-------------------------------------------------------------------------
 *
 * fill_batch.c
 *	  Choosing the candidates for a freed slot and sending them a batch of
 *	  offers (prm.fill_slot, and every room that moves a slot on).
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
 * ranked once.
 *
 * Reachable first (setting offer_reachable_first, on by default).  A
 * patient in their quiet hours would read the offer only when they end (at
 * 08:00 in their time zone), and their hold starts then: given a batch
 * place, they keep the slot waiting for hours while patients who could
 * answer now are not asked.  So the places go first to the patients whose
 * SMS can go out now, in rank order, and only the places left to patients
 * in their quiet hours, in rank order (their holds start when their quiet
 * hours end, as before).  We rank rather than leave held patients out of
 * the count: a batch of held patients alone still goes out (the slot is
 * not left unoffered overnight), and when the awake patients pass, the
 * next batch reaches the best of the held ones.  Whether a patient is
 * reachable now depends on their time zone alone, so the organization's
 * patients' distinct zones are read first (a skip scan of
 * patient_timezone_idx: a few index probes) and each is judged by
 * PrmQuietRelease.  When every zone is awake, or none is (the whole clinic
 * asleep at night), reachable-first changes nothing and the scan is the
 * single one above.  Otherwise it runs in two passes, each in score order:
 * the patients of the awake zones, then -- only when they do not fill the
 * pool -- the others.  Every other rule and the order within each group
 * are unchanged.  Offers are
 * inserted with ON CONFLICT DO NOTHING on offer_one_open_per_patient, so a
 * patient reached through two entries at once still gets one open offer.
 *
 * Locking: the slot is locked (waiting) before anything else; candidate
 * entries are locked only when offered, with SKIP LOCKED, and their
 * patient's row with them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "fill.h"

PG_FUNCTION_INFO_V1(prm_fill_slot);

/* rows examined at most when choosing one batch */
#define FILL_MAX_SCAN 5000 /* also the candidate query's LIMIT: planned for a fast start */
#define FILL_FETCH 64
/* candidates ranked per batch place, for when some are being offered elsewhere */
#define FILL_POOL_FACTOR 4
/* a batch that found everyone busy elsewhere is tried again this much later */
#define FILL_RETRY_USECS (5 * USECS_PER_SEC)

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

/* Which patients one pass of the candidate scan reads (FillScanCandidates). */
typedef enum FillReach
{
	FILL_REACH_ANY,	 /* everyone: one pass */
	FILL_REACH_NOW,	 /* those in a zone of b->awake_zones: their SMS may go out now */
	FILL_REACH_HELD	 /* the others, in their quiet hours */
} FillReach;

/* zones read at most when judging who is reachable (there are ~600 IANA zones) */
#define FILL_MAX_ZONES 2000

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
			   "WITH t AS (SELECT pg_catalog.gen_random_uuid() AS token)"
			   "INSERT INTO prm.offer (org_id, slot_id, patient_id, waitlist_entry_id,"
			   "                       hold_until, batch_no, rank, score_breakdown,"
			   "                       scored_appointment_id, token_hash)"
			   " SELECT $1, $2, $3, $4, $5, $6, $7, $8::pg_catalog.jsonb,"
			   /* the appointment whose wait the score counted */
			   "        (SELECT a.id FROM prm.appointment a, prm.waitlist_entry w"
			   "          WHERE w.org_id = $1 AND w.id = $4"
			   "            AND a.org_id = $1 AND a.patient_id = $3"
			   "            AND a.starts_at = w.current_appointment_at"
			   "            AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in')"
			   "            AND (w.provider_id IS NULL OR a.provider_id = w.provider_id)"
			   "          ORDER BY a.id LIMIT 1),"
			   "        pg_catalog.sha256(pg_catalog.uuid_send(t.token))"
			   "   FROM t"
			   " ON CONFLICT (org_id, patient_id) WHERE status = 'open' DO NOTHING"
			   /* only the hash is stored: the token itself leaves in the SMS */
			   " RETURNING id, (SELECT t.token::text FROM t)",
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

	FillFormatAppointment(s, slot->starts_at, c->tz, &date, &time);
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

/* One batch being chosen for a slot: its settings, slot and pool. */
typedef struct FillBatch
{
	const PrmSettings *s;
	FillSlot		   slot;
	TimestampTz		   now;
	FillCandidate	  *chosen; /* the pool, best rank first */
	int				   pool_size;
	int				   nchosen;
	int				   nfirst;		/* the pool's first entries, from an earlier pass */
	Datum			   awake_zones; /* text[]: zones out of quiet hours now */
	int				   scanned;
	int				   made;
	int				   busy;
	TimestampTz		   earliest_hold_end;
} FillBatch;

/*
 * Lock the slot and decide whether a batch may go out now: a free slot with
 * no open offer, under max_batches, starting late enough (else its fill
 * status says why).
 */
static bool
FillBatchMayStart(int64 org_id, int64 slot_id, FillBatch *b)
{
	static SPIPlanPtr open_plan = NULL;
	Datum			  values[2];

	if (!FillLockSlot(org_id, slot_id, false, &b->slot) || !b->slot.free ||
		strcmp(b->slot.fill_status, "withdrawn") == 0)
		return false;

	PrmPrepare(&open_plan,
			   "SELECT 1 FROM prm.offer o WHERE o.org_id = $1 AND o.slot_id = $2 AND o.status = 'open'",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slot_id);
	if (PrmExecute(open_plan, values, NULL, false, 1) > 0)
		return false;

	b->s = PrmGetSettings(org_id);
	if (b->slot.batches_sent >= b->s->max_batches)
	{
		FillSetStatus(org_id, slot_id, "exhausted", false);
		PrmEmitEvent(org_id, "fill_exhausted", "slot", slot_id,
					 psprintf("{\"reason\": \"max_batches\", \"batches_sent\": %d}", b->slot.batches_sent));
		return false;
	}
	if (b->slot.starts_at < b->now + PrmIntervalUsecs(&b->s->offer_hold) + PrmIntervalUsecs(&b->s->min_notice))
	{
		FillSetStatus(org_id, slot_id, "too_late", false);
		PrmEmitEvent(org_id, "fill_too_late", "slot", slot_id, NULL);
		return false;
	}
	return true;
}

/*
 * Read the eligible entries of one reach (FillReach) in score order into
 * the pool after its first b->nfirst entries, keeping the best by rank
 * (see the file header), stopping once no later row can outrank the pool.
 */
static void
FillScanCandidates(int64 org_id, int64 slot_id, FillBatch *b, FillReach reach)
{
	static SPIPlanPtr  cand_plan = NULL;
	const PrmSettings *s = b->s;
	FillSlot		  *slotp = &b->slot;
	Datum			   values[12];
	char			   nulls[12] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Portal			   portal;
	FillCandidate	  *chosen = b->chosen;
	int				   nchosen = b->nchosen;
	int				   first = b->nfirst;
	int				   scanned = b->scanned;
	int				   pool_size = b->pool_size;
	bool			   done = false;
	TimestampTz		   now = b->now;

	/*
	 * The patient's offers are read once per row, in one probe of
	 * offer_patient_idx (the LATERAL aggregate): an open one, one of this
	 * slot, the day's and the week's counts for the caps, and a recent one
	 * for the penalty.  As five subqueries the planner hashed the recent
	 * ones (every offer of the week read before the first row) and joined
	 * the open ones as a list scanned per row.  The patient is read after
	 * them and only when they pass (the LATERAL subquery p refers to x): the
	 * best-scored entries, which every batch meets first, are those whose
	 * patients hold open offers, and the planner, left to choose, read each
	 * one's patient first.  A generic plan: the custom ones cost a planning
	 * per batch and were never cheaper.
	 */
	PrmPrepareCursor(&cand_plan,
					 "SELECT w.id, w.patient_id, w.priority_score, w.urgent, w.manual_boost,"
					 "       w.current_appointment_at, w.joined_at, p.phone,"
					 "       coalesce(p.timezone, $7), p.language, coalesce(x.recent, false)"
					 "  FROM prm.waitlist_entry w"
					 " CROSS JOIN LATERAL"
					 "       (SELECT pg_catalog.bool_or(o.status = 'open') AS open,"
					 "               pg_catalog.bool_or(o.slot_id = $6) AS this_slot,"
					 "               pg_catalog.count(*) FILTER (WHERE o.created_at > pg_catalog.now() - interval '1 day') AS day,"
					 "               pg_catalog.count(*) FILTER (WHERE o.created_at > pg_catalog.now() - interval '7 days') AS week,"
					 "               pg_catalog.bool_or(o.created_at > pg_catalog.now() - $8) AS recent"
					 "          FROM prm.offer o WHERE o.org_id = w.org_id AND o.patient_id = w.patient_id) x"
					 " CROSS JOIN LATERAL"
					 "       (SELECT p.phone, p.timezone, p.language FROM prm.patient p"
					 "         WHERE p.org_id = w.org_id AND p.id = w.patient_id"
					 "           AND p.phone IS NOT NULL AND NOT p.sms_opt_out"
					 "           AND x.open IS NOT TRUE AND x.this_slot IS NOT TRUE"
					 "           AND x.day < $9 AND x.week < $10 OFFSET 0) p"
					 " WHERE w.org_id = $1 AND w.status = 'waiting'"
					 "   AND (w.provider_id IS NULL OR w.provider_id = $2)"
					 "   AND (w.location_ids IS NULL OR $3 = ANY (w.location_ids))"
					 "   AND (w.expires_at IS NULL OR w.expires_at > pg_catalog.now())"
					 "   AND (w.current_appointment_at IS NULL OR w.current_appointment_at > $4)"
					 "   AND (w.days_of_week IS NULL OR"
					 "        extract(isodow FROM ($4 AT TIME ZONE coalesce(p.timezone, $7)))::int = ANY (w.days_of_week))"
					 "   AND (w.earliest_time IS NULL OR ($4 AT TIME ZONE coalesce(p.timezone, $7))::time >= w.earliest_time)"
					 "   AND (w.latest_time IS NULL OR ($5 AT TIME ZONE coalesce(p.timezone, $7))::time <= w.latest_time)"
					 /* the reach: in an awake zone ($12) or not ($11 null: everyone) */
					 "   AND ($11 IS NULL OR (coalesce(p.timezone, $7) = ANY ($11)) = $12)"
					 " ORDER BY w.priority_score DESC, w.joined_at, w.id"
					 " LIMIT " CppAsString2(FILL_MAX_SCAN),
					 12, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, TEXTOID, INTERVALOID, INT4OID, INT4OID, TEXTARRAYOID, BOOLOID},
					 CURSOR_OPT_FAST_PLAN | CURSOR_OPT_GENERIC_PLAN);
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(slotp->provider_id);
	values[2] = Int64GetDatum(slotp->location_id);
	if (slotp->location_id == 0)
		nulls[2] = 'n';
	values[3] = TimestampTzGetDatum(slotp->starts_at);
	values[4] = TimestampTzGetDatum(slotp->ends_at);
	values[5] = Int64GetDatum(slot_id);
	values[6] = CStringGetTextDatum(s->timezone);
	values[7] = IntervalPGetDatum(&s->recent_offer_window);
	values[8] = Int32GetDatum(s->offer_daily_cap);
	values[9] = Int32GetDatum(s->offer_weekly_cap);
	values[10] = b->awake_zones;
	if (reach == FILL_REACH_ANY)
		nulls[10] = 'n';
	values[11] = BoolGetDatum(reach == FILL_REACH_NOW);

	portal = SPI_cursor_open(NULL, cand_plan, values, nulls, false);
	while (!done && scanned < FILL_MAX_SCAN)
	{
		uint64		   r;
		SPITupleTable *tab;

		CHECK_FOR_INTERRUPTS();
		/*
		 * The first fetch asks for what fills the pool and one more, which
		 * shows whether a later row could outrank it: each row costs a
		 * patient probe and an offer aggregate.
		 */
		SPI_cursor_fetch(portal, true,
						 scanned == b->scanned ? Min(pool_size - nchosen + 1, FILL_FETCH) : FILL_FETCH);
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
			if (slotp->starts_at < c.hold_until + PrmIntervalUsecs(&s->min_notice))
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

			/*
			 * insert by rank after an earlier pass's entries; equal ranks
			 * keep scan order (score, then seniority)
			 */
			pos = nchosen;
			while (pos > first && chosen[pos - 1].rank < c.rank)
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

	b->nchosen = nchosen;
	b->scanned = scanned;
}

/*
 * Whether the organization's patients are in time zones some of which are
 * out of quiet hours now and some in them; if so, b->awake_zones gets the
 * awake ones.  The distinct zones come from a skip scan of
 * patient_timezone_idx; patients without a zone are in the clinic's.
 */
static bool
FillZonesDiffer(int64 org_id, FillBatch *b)
{
	static SPIPlanPtr  plan = NULL;
	const PrmSettings *s = b->s;
	Datum			   values[1];
	Datum			  *awake;
	int				   n,
		i,
		nawake = 0;

	PrmPrepare(&plan,
			   "WITH RECURSIVE z(tz) AS ("
			   "  SELECT (SELECT p.timezone FROM prm.patient p WHERE p.org_id = $1 AND p.timezone IS NOT NULL"
			   "           ORDER BY p.timezone LIMIT 1)"
			   "  UNION ALL"
			   "  SELECT (SELECT p.timezone FROM prm.patient p WHERE p.org_id = $1 AND p.timezone > z.tz"
			   "           ORDER BY p.timezone LIMIT 1)"
			   "    FROM z WHERE z.tz IS NOT NULL)"
			   "SELECT z.tz FROM z WHERE z.tz IS NOT NULL LIMIT " CppAsString2(FILL_MAX_ZONES),
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(org_id);
	n = PrmExecute(plan, values, NULL, true, 0);
	awake = palloc(sizeof(Datum) * (n + 1));
	for (i = 0; i <= n; i++)
	{
		const char *tz = i < n ? PrmGetText(i, 1) : s->timezone;

		CHECK_FOR_INTERRUPTS();
		if (PrmQuietRelease(s, tz, b->now) <= b->now)
			awake[nawake++] = CStringGetTextDatum(tz);
	}
	if (nawake == 0 || nawake == n + 1)
		return false; /* all asleep, or all awake: the rank alone decides */
	b->awake_zones = PointerGetDatum(construct_array(awake, nawake, TEXTOID, -1, false, TYPALIGN_INT));
	return true;
}

/*
 * Fill the pool: by rank alone, or, with offer_reachable_first, the
 * patients reachable now first and the others after them (file header).
 */
static void
FillRankCandidates(int64 org_id, int64 slot_id, FillBatch *b)
{
	const PrmSettings *s = b->s;

	b->pool_size = Min(s->batch_size * FILL_POOL_FACTOR, FILL_MAX_SCAN);
	b->chosen = palloc0(sizeof(FillCandidate) * (b->pool_size + 1));
	if (!s->offer_reachable_first || !s->quiet_hours || s->quiet_start == s->quiet_end ||
		!FillZonesDiffer(org_id, b))
	{
		FillScanCandidates(org_id, slot_id, b, FILL_REACH_ANY);
		return;
	}
	FillScanCandidates(org_id, slot_id, b, FILL_REACH_NOW);
	if (b->nchosen < b->pool_size && b->scanned < FILL_MAX_SCAN)
	{
		b->nfirst = b->nchosen;
		FillScanCandidates(org_id, slot_id, b, FILL_REACH_HELD);
	}
}

/*
 * Offer the slot to the best candidates of the pool that no other
 * transaction is offering right now, until the batch is full.
 */
static void
FillOfferBest(int64 org_id, FillBatch *b)
{
	static SPIPlanPtr  lock_plan = NULL;
	const PrmSettings *s = b->s;
	FillCandidate	  *chosen = b->chosen;
	int				   i;

	/*
	 * Lock the best candidates one by one, skipping those another
	 * transaction is offering right now, until the batch is full.  Only the
	 * entries offered stay locked.  The patient's row is claimed too, with
	 * SKIP LOCKED (never waited for): a patient reached through two entries
	 * by two fills at once, or accepting another offer right now, is skipped
	 * by the second, which would otherwise wait on the first one's offer
	 * insert.  (A row lock, not an advisory lock on a public key, which any
	 * role could hold to keep a patient from ever being offered a slot.)
	 */
	PrmPrepare(&lock_plan,
			   "SELECT true FROM prm.waitlist_entry w"
			   "  JOIN prm.patient p ON p.org_id = w.org_id AND p.id = w.patient_id"
			   " WHERE w.org_id = $1 AND w.id = $2 AND w.status = 'waiting'"
			   " FOR NO KEY UPDATE OF w, p SKIP LOCKED",
			   2, (Oid[]){INT8OID, INT8OID});
	for (i = 0; i < b->nchosen && b->made < s->batch_size; i++)
	{
		Datum lv[2];
		bool  isnull;

		lv[0] = Int64GetDatum(org_id);
		lv[1] = Int64GetDatum(chosen[i].entry_id);
		if (PrmExecute(lock_plan, lv, NULL, false, 1) == 0 ||
			!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		{
			b->busy++;
			continue;
		}
		if (FillMakeOffer(s, &b->slot, &chosen[i], b->slot.batches_sent + 1))
		{
			b->made++;
			if (b->earliest_hold_end == 0 || chosen[i].hold_until < b->earliest_hold_end)
				b->earliest_hold_end = chosen[i].hold_until;
		}
		else
			b->busy++; /* the patient got an offer meanwhile */
	}
}

/* Record what the batch did: offering, deferred, or exhausted. */
static void
FillFinishBatch(int64 org_id, int64 slot_id, FillBatch *b)
{
	int			made = b->made;
	int			busy = b->busy;
	int			scanned = b->scanned;
	TimestampTz now = b->now;

	if (made > 0)
	{
		FillSetStatus(org_id, slot_id, "offering", true);
		PrmEmitEvent(org_id, "batch_sent", "slot", slot_id,
					 psprintf("{\"batch_no\": %d, \"offers\": %d, \"examined\": %d}",
							  b->slot.batches_sent + 1, made, scanned));
		PrmWakeWorker(b->earliest_hold_end);
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
							  b->slot.batches_sent, scanned));
	}
}

/*
 * Send the next batch of offers for a slot, if it is free, has no open
 * offers and may still be offered.  Returns the number of offers made.
 */
int
FillSendBatch(int64 org_id, int64 slot_id)
{
	FillBatch b = {0};

	b.now = GetCurrentTransactionStartTimestamp();
	if (!FillBatchMayStart(org_id, slot_id, &b))
		return 0;
	FillRankCandidates(org_id, slot_id, &b);
	FillOfferBest(org_id, &b);
	FillFinishBatch(org_id, slot_id, &b);
	return b.made;
}

/* After offers of a slot closed: the next batch if none is open any more. */
void
FillAdvance(int64 org_id, int64 slot_id)
{
	(void) FillSendBatch(org_id, slot_id);
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
