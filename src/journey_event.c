/*-------------------------------------------------------------------------
 *
 * journey_event.c
 *	  How patients enter journeys and how their events move them: enrolment
 *	  (by event, start_journey, a segment), the reaction to an event about a
 *	  patient (exit and goal events, advance_on), events held back for an
 *	  instance another transaction holds, and the journeys' part of a
 *	  patient's export and erasure.
 *
 * Enrolment by event happens in the transaction that writes the event
 * (PrmJourneyOnEvent, called by PrmEmitEvent): the instance commits or
 * rolls back with the event itself, so a crash, a rollback or a replayed
 * webhook (whose handler writes no second event) neither loses nor
 * duplicates an enrolment, and no cursor has to be kept.  The event only
 * inserts the instance, due at once; the stage's actions run in the worker
 * (journey.c), never inside the transaction of a booking or a webhook, so a
 * failing action cannot undo what caused it.  One enrolment per event and
 * journey, and one active instance per journey and patient, are unique
 * indexes: concurrent events of one patient insert with ON CONFLICT DO
 * NOTHING, the second waiting for the first and then doing nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "journey.h"

/* The columns of an enrolment insert, for every way in. */
#define JOURNEY_ENROL_SQL(journeys)                                                                   \
	"WITH ins AS (INSERT INTO prm.journey_instance (org_id, journey_id, patient_id, stage_id,"        \
	"               stage_position, stage_entered_at, due_at, awaiting_event, entered_by,"            \
	"               source_event_id)"                                                                 \
	"  SELECT j.org_id, j.id, p.id, s.id, s.position, pg_catalog.now(), pg_catalog.now(),"            \
	"         s.advance_on, $3, $4"                                                                   \
	"    FROM " journeys                                                                              \
	"    JOIN prm.patient p ON p.org_id = j.org_id AND p.id = ANY ($2)"                               \
	"    LEFT JOIN LATERAL (SELECT st.id, st.position, st.advance_on FROM prm.journey_stage st"       \
	"                        WHERE st.org_id = j.org_id AND st.journey_id = j.id"                     \
	"                          AND st.retired_at IS NULL ORDER BY st.position LIMIT 1) s ON true"     \
	"   WHERE NOT EXISTS (SELECT 1 FROM prm.journey_instance x"                                       \
	"                      WHERE x.org_id = j.org_id AND x.journey_id = j.id AND x.patient_id = p.id" \
	"                        AND (j.reentry IS NULL OR x.status = 'active'"                           \
	"                             OR x.started_at > pg_catalog.now() - j.reentry))"                   \
	"  ON CONFLICT DO NOTHING"                                                                        \
	"  RETURNING org_id, id, patient_id, stage_position, stage_id),"                                  \
	" h AS (INSERT INTO prm.journey_step (org_id, instance_id, stage_position, kind, detail)"         \
	"        SELECT i.org_id, i.id, i.stage_position, 'entered',"                                     \
	"               pg_catalog.jsonb_build_object('stage_id', i.stage_id, 'by', $3::text,"            \
	"                                             'event_id', $4::bigint) FROM ins i)"                \
	" SELECT i.id, i.patient_id FROM ins i"

/* How deep PrmJourneyOnEvent is nested (events of journeys' own ends). */
static int event_depth = 0;

/* Wake the worker: instances are due now. */
void
JourneyWakeDue(void)
{
	PrmWakeWorker(GetCurrentTimestamp());
}

/* The event of an instance's end (journey_completed, _exited, _cancelled). */
void
JourneyEnded(int64 org_id, int64 instance_id, const char *kind)
{
	PrmEmitEvent(org_id, kind, "journey_instance", instance_id, NULL);
}

/* ---------- enrolment ---------- */

/*
 * Enrol patients (an int8[]) in journeys: the one journey_id given (kind
 * NULL: start_journey, a segment), or for an event of that kind the
 * organization's active journeys it triggers whose filter the payload
 * contains (journey_id unused).  Each new instance is due at
 * once (the worker runs its first stage), gets an 'entered' step and a
 * journey_started event.  Returns the instances made (the last one's id in
 * *last_id when asked).
 */
int64
JourneyEnrol(int64 org_id, int64 journey_id, Datum patients, const char *entered_by,
			 int64 event_id, const char *kind, const char *payload, int64 *last_id)
{
	static SPIPlanPtr one_plan = NULL;
	static SPIPlanPtr event_plan = NULL;
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SPITupleTable	 *tuptable;
	int64			  n,
		i;

	values[0] = Int64GetDatum(org_id);
	values[1] = patients;
	values[2] = CStringGetTextDatum(entered_by);
	values[3] = Int64GetDatum(event_id);
	nulls[3] = event_id ? ' ' : 'n';
	if (kind == NULL)
	{
		PrmPrepare(&one_plan,
				   JOURNEY_ENROL_SQL("(SELECT * FROM prm.journey j WHERE j.org_id = $1 AND j.id = $5 AND j.active) j"),
				   5, (Oid[]){INT8OID, INT8ARRAYOID, TEXTOID, INT8OID, INT8OID});
		values[4] = Int64GetDatum(journey_id);
		n = PrmExecute(one_plan, values, nulls, false, 0);
	}
	else
	{
		PrmPrepare(&event_plan,
				   JOURNEY_ENROL_SQL("(SELECT * FROM prm.journey j WHERE j.org_id = $1 AND j.active AND j.trigger_event = $5"
									 " AND (j.trigger_filter IS NULL OR $6::pg_catalog.jsonb @> j.trigger_filter)) j"),
				   6, (Oid[]){INT8OID, INT8ARRAYOID, TEXTOID, INT8OID, TEXTOID, TEXTOID});
		values[4] = CStringGetTextDatum(kind);
		values[5] = CStringGetTextDatum(payload ? payload : "{}");
		n = PrmExecute(event_plan, values, nulls, false, 0);
	}
	tuptable = SPI_tuptable;
	for (i = 0; i < n; i++)
	{
		bool  isnull;
		int64 id = DatumGetInt64(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 1, &isnull));

		if (last_id)
			*last_id = id;
		PrmEmitEvent(org_id, "journey_started", "journey_instance", id,
					 psprintf("{\"by\": \"%s\"}", entered_by));
	}
	if (n > 0)
		JourneyWakeDue();
	return n;
}

/* A one-element int8[] of patient_id. */
Datum
JourneyOnePatient(int64 patient_id)
{
	Datum d = Int64GetDatum(patient_id);

	return PointerGetDatum(construct_array(&d, 1, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

/*
 * An event about a patient was written (PrmEmitEvent, inside SPI): end the
 * patient's active instances whose journey has it as an exit or goal event
 * (cancel them all when the patient was erased), move on those awaiting
 * it, and enrol the patient in the journeys it triggers.  Two probes of
 * partial indexes when nothing matches.
 */
static void JourneyReact(int64 org_id, int64 event_id, const char *kind, int64 patient_id,
						 const char *payload, int64 instance_id);

void
PrmJourneyOnEvent(int64 org_id, int64 event_id, const char *kind, int64 patient_id,
				  const char *payload)
{
	Assert(patient_id > 0);
	if (event_depth >= 8)
	{
		ereport(WARNING,
				(errmsg("journeys did not react to event %lld (%s): events of journeys nested too deep",
						(long long) event_id, kind)));
		return;
	}
	event_depth++;
	PG_TRY();
	{
		JourneyReact(org_id, event_id, kind, patient_id, payload, 0);
	}
	PG_FINALLY();
	{
		event_depth--;
	}
	PG_END_TRY();
}

/*
 * The work of PrmJourneyOnEvent, and of applying an event held back for one
 * instance (instance_id; 0: every instance of the patient, then enrolment).
 *
 * The event's transaction may already hold locks the worker waits for while
 * it runs an instance (a conversation, the patient's statistics), and the
 * worker holds the instance: waiting for it here could deadlock.  So an
 * instance that is locked is skipped (SKIP LOCKED) and the event is held
 * back for it in prm.journey_pending_event, which the worker applies under
 * the instance's lock before it runs the instance again (and as a deadline
 * of its own).  Whoever holds the instance commits first; the event then
 * takes effect, before any further action of the instance.
 */
/*
 * Could an event of kind about the patient matter to a journey: has the
 * patient an active instance, or does an active journey of the
 * organization start on it?  One statement, two probes of partial indexes,
 * instead of the reaction's and the enrolment's statements on every event
 * of an organization without journeys (the fill engine's hot paths).
 */
static bool
JourneyMayReact(int64 org_id, const char *kind, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3] = {Int64GetDatum(org_id), Int64GetDatum(patient_id), CStringGetTextDatum(kind)};
	bool			  isnull;

	PrmPrepare(&plan,
			   "SELECT EXISTS (SELECT 1 FROM prm.journey_instance i"
			   "                WHERE i.org_id = $1 AND i.patient_id = $2 AND i.status = 'active')"
			   "    OR EXISTS (SELECT 1 FROM prm.journey j"
			   "                WHERE j.org_id = $1 AND j.active AND j.trigger_event = $3)",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	PrmExecute(plan, values, NULL, false, 1);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
JourneyReact(int64 org_id, int64 event_id, const char *kind, int64 patient_id,
			 const char *payload, int64 instance_id)
{
	static SPIPlanPtr react_plan = NULL;
	Datum			  values[5];
	SPITupleTable	 *tuptable;
	int				  n,
		i;
	bool woke = false;

	/* every event about a patient comes here: most find nothing to do */
	if (instance_id == 0 && !JourneyMayReact(org_id, kind, patient_id))
		return;
	PrmPrepare(&react_plan,
			   "WITH cand AS (SELECT i.id,"
			   "             CASE WHEN $3 = 'patient_erased' THEN 'cancelled'"
			   "                  WHEN $3 = ANY (j.goal_events) THEN 'completed'"
			   "                  WHEN $3 = ANY (j.exit_events) THEN 'exited' END AS ends"
			   "        FROM prm.journey_instance i JOIN prm.journey j ON j.org_id = i.org_id AND j.id = i.journey_id"
			   "       WHERE i.org_id = $1 AND i.patient_id = $2 AND i.status = 'active'"
			   "         AND ($5 = 0 OR i.id = $5)"
			   "         AND ($3 = 'patient_erased' OR $3 = ANY (j.goal_events) OR $3 = ANY (j.exit_events)"
			   "              OR i.awaiting_event = $3)),"
			   " r AS (SELECT i.id, c.ends FROM prm.journey_instance i JOIN cand c ON c.id = i.id"
			   "        WHERE i.org_id = $1 AND i.status = 'active'"
			   "        ORDER BY i.id FOR NO KEY UPDATE OF i SKIP LOCKED),"
			   " held AS (INSERT INTO prm.journey_pending_event (org_id, instance_id, event_id, kind)"
			   "           SELECT $1, c.id, $4, $3 FROM cand c WHERE c.id NOT IN (SELECT r.id FROM r)"
			   "           RETURNING 1),"
			   " u AS (UPDATE prm.journey_instance i SET"
			   "         status = coalesce(r.ends, i.status),"
			   "         ended_at = CASE WHEN r.ends IS NOT NULL THEN pg_catalog.now() END,"
			   "         end_reason = CASE r.ends WHEN 'completed' THEN 'goal' WHEN 'exited' THEN 'exit_event'"
			   "                                  WHEN 'cancelled' THEN 'patient_erased' END,"
			   "         due_at = CASE WHEN r.ends IS NULL THEN pg_catalog.now() END,"
			   "         next_action = CASE WHEN r.ends IS NULL THEN 1000 ELSE i.next_action END,"
			   "         awaiting_event = NULL, updated_at = pg_catalog.now()"
			   "        FROM r WHERE i.org_id = $1 AND i.id = r.id"
			   "       RETURNING i.id, i.status, i.stage_position, i.stage_id),"
			   " h AS (INSERT INTO prm.journey_step (org_id, instance_id, stage_position, kind, detail)"
			   "        SELECT $1, u.id, u.stage_position, CASE u.status WHEN 'active' THEN 'waiting' ELSE u.status END,"
			   "               pg_catalog.jsonb_build_object('stage_id', u.stage_id, 'event', $3, 'event_id', $4,"
			   "                   'reason', CASE u.status WHEN 'completed' THEN 'goal' WHEN 'exited' THEN 'exit_event'"
			   "                                           WHEN 'cancelled' THEN 'patient_erased' ELSE 'event_came' END)"
			   "          FROM u)"
			   " SELECT u.id, u.status FROM u"
			   " UNION ALL SELECT 0, 'held' FROM held"
			   " ORDER BY 1",
			   5, (Oid[]){INT8OID, INT8OID, TEXTOID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = CStringGetTextDatum(kind);
	values[3] = Int64GetDatum(event_id);
	values[4] = Int64GetDatum(instance_id);
	n = PrmExecute(react_plan, values, NULL, false, 0);
	tuptable = SPI_tuptable;
	for (i = 0; i < n; i++)
	{
		bool  isnull;
		int64 id = DatumGetInt64(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 1, &isnull));
		char *status = SPI_getvalue(tuptable->vals[i], tuptable->tupdesc, 2);

		if (strcmp(status, "active") == 0 || strcmp(status, "held") == 0)
			woke = true;
		else
			JourneyEnded(org_id, id, psprintf("journey_%s", status));
	}
	if (woke)
		JourneyWakeDue();
	if (instance_id == 0 && strcmp(kind, "patient_erased") != 0)
		(void) JourneyEnrol(org_id, 0, JourneyOnePatient(patient_id), "event", event_id, kind, payload,
							NULL);
}

/*
 * Apply the events held back for a locked instance (JourneyReact), oldest
 * first, and forget them.  Returns how many there were.
 */
int
JourneyApplyHeld(int64 org_id, int64 instance_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2] = {Int64GetDatum(org_id), Int64GetDatum(instance_id)};
	SPITupleTable	 *tuptable;
	int				  n,
		i;

	PrmPrepare(&plan,
			   "WITH d AS (DELETE FROM prm.journey_pending_event p WHERE p.org_id = $1 AND p.instance_id = $2"
			   "           RETURNING p.id, p.event_id, p.kind)"
			   " SELECT d.id, d.event_id, d.kind FROM d ORDER BY d.id",
			   2, (Oid[]){INT8OID, INT8OID});
	n = PrmExecute(plan, values, NULL, false, 0);
	tuptable = SPI_tuptable;
	for (i = 0; i < n; i++)
	{
		bool  isnull;
		int64 event_id = DatumGetInt64(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 2, &isnull));

		CHECK_FOR_INTERRUPTS();
		event_depth++;
		PG_TRY();
		{
			JourneyReact(org_id, event_id, SPI_getvalue(tuptable->vals[i], tuptable->tupdesc, 3),
						 patient_id, NULL, instance_id);
		}
		PG_FINALLY();
		{
			event_depth--;
		}
		PG_END_TRY();
	}
	return n;
}

/* ---------- privacy ---------- */

/* {"journeys": [instance with its "history"]} of a patient, inside SPI. */
Datum
JourneyExportPatient(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2] = {Int64GetDatum(org_id), Int64GetDatum(patient_id)};
	bool			  isnull;

	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_build_object('journeys', coalesce(pg_catalog.jsonb_agg("
			   "         pg_catalog.to_jsonb(i) || pg_catalog.jsonb_build_object('journey', j.name, 'history',"
			   "           (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s) ORDER BY s.id), '[]')"
			   "              FROM prm.journey_step s WHERE s.org_id = i.org_id AND s.instance_id = i.id))"
			   "         ORDER BY i.id), '[]'))"
			   "  FROM prm.journey_instance i JOIN prm.journey j ON j.org_id = i.org_id AND j.id = i.journey_id"
			   " WHERE i.org_id = $1 AND i.patient_id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(plan, values, NULL, true, 1);
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/*
 * Erasure: the errors recorded in a patient's journey history may quote
 * their details; blank them.  (The patient_erased event then cancels their
 * active instances.)  {"journey_errors_blanked": n}.
 */
Datum
JourneyErasePatient(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2] = {Int64GetDatum(org_id), Int64GetDatum(patient_id)};
	bool			  isnull;

	PrmPrepare(&plan,
			   "WITH b AS (UPDATE prm.journey_step s SET detail = s.detail || '{\"error\": \"[erased]\"}'"
			   "             FROM prm.journey_instance i"
			   "            WHERE s.org_id = $1 AND i.org_id = s.org_id AND i.id = s.instance_id"
			   "              AND i.patient_id = $2 AND s.detail ? 'error' RETURNING 1)"
			   " SELECT pg_catalog.jsonb_build_object('journey_errors_blanked', pg_catalog.count(*)) FROM b",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(plan, values, NULL, false, 1);
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/* Move the retry time of an instance's held events that far on. */
static void
JourneyHeldLater(Datum org_id, Datum instance_id, const char *after)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3] = {org_id, instance_id, CStringGetTextDatum(after)};

	PrmPrepare(&plan,
			   "UPDATE prm.journey_pending_event p SET retry_at = pg_catalog.now() + $3::interval"
			   " WHERE p.org_id = $1 AND p.instance_id = $2",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	PrmExecute(plan, values, NULL, false, 0);
}

/*
 * The instances with events held back (JourneyReact) whose retry time has
 * come: each one not locked by someone else gets its events applied; one
 * still locked is tried again in a second.  Returns the instances handled.
 */
static int64
JourneyHeldItem(void *ctx, int i)
{
	static SPIPlanPtr lock_plan = NULL;
	JourneyBatch	 *b = (JourneyBatch *) ctx;
	bool			  isnull;
	Datum			  values[2];

	values[0] = SPI_getbinval(b->rows->vals[i], b->rows->tupdesc, 1, &isnull);
	values[1] = SPI_getbinval(b->rows->vals[i], b->rows->tupdesc, 2, &isnull);
	PrmPrepare(&lock_plan,
			   "SELECT i.patient_id FROM prm.journey_instance i WHERE i.org_id = $1 AND i.id = $2"
			   " FOR NO KEY UPDATE SKIP LOCKED",
			   2, (Oid[]){INT8OID, INT8OID});
	if (PrmExecute(lock_plan, values, NULL, false, 1) == 1)
		return JourneyApplyHeld(DatumGetInt64(values[0]), DatumGetInt64(values[1]),
								PrmGetInt64(0, 1, &isnull));
	JourneyHeldLater(values[0], values[1], "1 second");
	return 0;
}

/* Applying an instance's held events failed: try again in a minute, not at once. */
static void
JourneyHeldFailed(void *ctx, int i, ErrorData *edata)
{
	JourneyBatch *b = (JourneyBatch *) ctx;
	bool		  isnull;

	JourneyHeldLater(SPI_getbinval(b->rows->vals[i], b->rows->tupdesc, 1, &isnull),
					 SPI_getbinval(b->rows->vals[i], b->rows->tupdesc, 2, &isnull), "1 minute");
}

int64
JourneyHeldStep(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1] = {Int32GetDatum(limit)};
	JourneyBatch	  b;
	PrmItemLoop		  loop = {0};
	int				  n;

	PrmPrepare(&plan,
			   "SELECT p.org_id, p.instance_id FROM prm.journey_pending_event p"
			   " WHERE p.retry_at <= pg_catalog.now()"
			   " GROUP BY p.org_id, p.instance_id ORDER BY pg_catalog.min(p.id) LIMIT $1",
			   1, (Oid[]){INT4OID});
	n = PrmExecute(plan, values, NULL, true, 0);
	if (n == 0)
		return 0;
	b.rows = SPI_tuptable;
	loop.run = JourneyHeldItem;
	loop.failed = JourneyHeldFailed;
	loop.ctx = &b;
	(void) PrmRunItems(&loop, n);
	return loop.done;
}
