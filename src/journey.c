/*-------------------------------------------------------------------------
 *
 * journey.c
 *	  The journey engine: running an instance's stage (its actions, waits
 *	  and advance rule), the worker's step for instances whose time has
 *	  come, and start_journey, start_journey_segment, advance_journey and
 *	  cancel_journey_instance.  Enrolment and the patient's events that end
 *	  or move instances on are in journey_event.c.
 *
 * Running an instance (JourneyRun, the instance row locked): its stage's
 * actions from next_action on, in order; a wait stores its end in due_at
 * and stops.  When the actions are done the stage's rule decides: an
 * awaited event that came (advance_on: the event hook cleared
 * awaiting_event and skipped the remaining actions) or its timeout, else
 * advance_after after the stage was entered, else nothing (advance_journey
 * only).  Moving on enters the next live stage by position, or completes
 * the instance.  Each pass enters a later stage, so a run ends after at
 * most as many stages as the journey has.
 *
 * An action that fails is rolled back with the whole run (the loop helper's
 * subtransaction), recorded in the history with its error, and skipped:
 * the instance is due again at once and goes on after it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "comms.h"
#include "journey.h"
#include "monitor.h"
#include "ticket.h"

PG_FUNCTION_INFO_V1(prm_start_journey);
PG_FUNCTION_INFO_V1(prm_start_journey_segment);
PG_FUNCTION_INFO_V1(prm_advance_journey);
PG_FUNCTION_INFO_V1(prm_cancel_journey_instance);

/* Where a run is, for the failure handler (after its rollback). */
typedef struct JourneyPoint
{
	int64 org_id;
	int64 instance_id;
	int64 stage_id;
	int	  action; /* -1: not inside an action */
} JourneyPoint;

static JourneyPoint journey_point;

/* Append a row to an instance's history (at its current stage position). */
void
JourneyStep(int64 org_id, int64 instance_id, int64 stage_id, const char *kind,
			const char *detail_json)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[5];
	char			  nulls[5] = {' ', ' ', ' ', ' ', ' '};

	PrmPrepare(&plan,
			   "INSERT INTO prm.journey_step (org_id, instance_id, stage_position, kind, detail)"
			   " SELECT $1, $2, i.stage_position, $3,"
			   "        coalesce($4::pg_catalog.jsonb, '{}') || pg_catalog.jsonb_build_object('stage_id', $5::bigint)"
			   "   FROM prm.journey_instance i WHERE i.org_id = $1 AND i.id = $2",
			   5, (Oid[]){INT8OID, INT8OID, TEXTOID, TEXTOID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(instance_id);
	values[2] = CStringGetTextDatum(kind);
	values[3] = detail_json ? CStringGetTextDatum(detail_json) : (Datum) 0;
	nulls[3] = detail_json ? ' ' : 'n';
	values[4] = Int64GetDatum(stage_id);
	nulls[4] = stage_id ? ' ' : 'n';
	PrmExecute(plan, values, nulls, false, 0);
}

/* ---------- running an instance ---------- */

/* The state of a locked instance and its stage. */
typedef struct JourneyRow
{
	int64		org_id;
	int64		id;
	int64		patient_id;
	int64		journey_id;
	int64		stage_id; /* 0: none left */
	int32		position;
	int32		next_action;
	TimestampTz entered_at;
	bool		awaiting; /* awaiting_event still set */
	char	   *tz;		  /* the patient's time zone */
	/* the stage */
	Jsonb	  *actions;
	bool	   has_after;
	int64	   after_usecs;
	bool	   has_on;
	ArrayType *failed; /* int4[] of the stage's failed actions */
} JourneyRow;

/* A stage's actions, advance_after and advance_on (as a boolean) into r, from column col on. */
static void
JourneyTakeStage(JourneyRow *r, HeapTuple tup, TupleDesc desc, int col)
{
	bool  isnull;
	Datum d;

	r->actions = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, col, &isnull));
	d = SPI_getbinval(tup, desc, col + 1, &isnull);
	r->has_after = !isnull;
	r->after_usecs = isnull ? 0 : PrmIntervalUsecs(DatumGetIntervalP(d));
	r->has_on = DatumGetBool(SPI_getbinval(tup, desc, col + 2, &isnull));
}

/*
 * Lock an instance and read it with its stage; false when it is no longer
 * active.  P0002 for an unknown instance.
 */
static bool
JourneyLoad(int64 org_id, int64 instance_id, JourneyRow *r)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2] = {Int64GetDatum(org_id), Int64GetDatum(instance_id)};
	HeapTuple		  tup;
	TupleDesc		  desc;
	bool			  isnull;
	Datum			  d;

	PrmPrepare(&plan,
			   "SELECT i.status = 'active', i.patient_id, i.journey_id, i.stage_id, i.stage_position,"
			   "       i.next_action, i.stage_entered_at, i.awaiting_event IS NOT NULL,"
			   "       coalesce(p.timezone, o.timezone), p.language,"
			   "       s.actions, s.advance_after, s.advance_on IS NOT NULL, s.retired_at IS NOT NULL,"
			   "       i.failed_actions"
			   "  FROM prm.journey_instance i"
			   "  JOIN prm.patient p ON p.org_id = i.org_id AND p.id = i.patient_id"
			   "  JOIN prm.organization o ON o.id = i.org_id"
			   "  LEFT JOIN prm.journey_stage s ON s.org_id = i.org_id AND s.id = i.stage_id"
			   " WHERE i.org_id = $1 AND i.id = $2 FOR NO KEY UPDATE OF i",
			   2, (Oid[]){INT8OID, INT8OID});
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("journey instance %lld not found in organization %lld",
						(long long) instance_id, (long long) org_id)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	if (!DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull)))
		return false;
	memset(r, 0, sizeof(*r));
	r->org_id = org_id;
	r->id = instance_id;
	r->patient_id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	r->journey_id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	d = SPI_getbinval(tup, desc, 4, &isnull);
	r->stage_id = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 5, &isnull);
	r->position = isnull ? 0 : DatumGetInt32(d);
	r->next_action = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	d = SPI_getbinval(tup, desc, 7, &isnull);
	r->entered_at = isnull ? GetCurrentTransactionStartTimestamp() : DatumGetTimestampTz(d);
	r->awaiting = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
	r->tz = SPI_getvalue(tup, desc, 9);
	d = SPI_getbinval(tup, desc, 14, &isnull);
	if (r->stage_id && !isnull && DatumGetBool(d))
		r->stage_id = 0; /* a retired stage: nothing more to do in it */
	if (r->stage_id)
	{
		JourneyTakeStage(r, tup, desc, 11);
		r->failed = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 15, &isnull));
	}
	return true;
}

/*
 * Lock and read an instance after applying the events held back for it
 * (JourneyReact): a run never acts past an exit that has committed.
 */
static bool
JourneyLoadCurrent(int64 org_id, int64 instance_id, JourneyRow *r)
{
	if (!JourneyLoad(org_id, instance_id, r))
		return false;
	if (JourneyApplyHeld(org_id, instance_id, r->patient_id) == 0)
		return true;
	return JourneyLoad(org_id, instance_id, r);
}

/* Store where an instance is: its action cursor and its deadline (0: none). */
static void
JourneySave(JourneyRow *r, TimestampTz due)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[4];
	char			  nulls[4] = {' ', ' ', ' ', ' '};

	PrmPrepare(&plan,
			   "UPDATE prm.journey_instance i SET next_action = $3, due_at = $4, updated_at = pg_catalog.now()"
			   " WHERE i.org_id = $1 AND i.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, INT4OID, TIMESTAMPTZOID});
	values[0] = Int64GetDatum(r->org_id);
	values[1] = Int64GetDatum(r->id);
	values[2] = Int32GetDatum(r->next_action);
	values[3] = TimestampTzGetDatum(due);
	nulls[3] = due ? ' ' : 'n';
	PrmExecute(plan, values, nulls, false, 0);
}

/* Did action k of the current stage fail before (and is to be skipped)? */
static bool
ActionFailedBefore(JourneyRow *r, int k)
{
	Datum *elems;
	int	   n,
		i;

	if (r->failed == NULL)
		return false;
	deconstruct_array(r->failed, INT4OID, sizeof(int32), true, TYPALIGN_INT, &elems, NULL, &n);
	for (i = 0; i < n; i++)
		if (DatumGetInt32(elems[i]) == k)
			return true;
	return false;
}

/* A string member of an action (validated when the stage was written). */
static char *
ActionField(JsonbContainer *obj, const char *key)
{
	JsonbValue v;

	if (getKeyJsonValueFromContainer(obj, key, strlen(key), &v) == NULL || v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* An interval member of an action, in microseconds. */
static int64
ActionUsecs(JsonbContainer *obj, const char *key)
{
	Interval *iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
														 CStringGetDatum(ActionField(obj, key)),
														 ObjectIdGetDatum(InvalidOid),
														 Int32GetDatum(-1)));

	return PrmIntervalUsecs(iv);
}

/* The start of the patient's next booked appointment after now; 0 if none. */
static TimestampTz
NextAppointment(JourneyRow *r)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2] = {Int64GetDatum(r->org_id), Int64GetDatum(r->patient_id)};
	bool			  isnull;
	Datum			  d;

	PrmPrepare(&plan,
			   "SELECT pg_catalog.min(a.starts_at) FROM prm.appointment a"
			   " WHERE a.org_id = $1 AND a.patient_id = $2 AND a.status = 'booked'"
			   "   AND a.starts_at > pg_catalog.now()",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(plan, values, NULL, true, 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(d);
}

/*
 * When a wait action ends (0: it has nothing to wait for).  "for" counts
 * from the moment the wait begins, "until_local" is the next such local
 * time of the patient, "before_appointment" is that long before the
 * patient's next booked appointment.
 */
static TimestampTz
WaitEnd(JourneyRow *r, JsonbContainer *obj, char **why)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	char	   *s;

	*why = NULL;
	if ((s = ActionField(obj, "for")) != NULL)
		return PrmTimestampPlusUsecs(now, ActionUsecs(obj, "for"));
	if ((s = ActionField(obj, "until_local")) != NULL)
	{
		TimeADT tod;

		if (!MonParseClock(s, &tod))
			elog(ERROR, "malformed until_local \"%s\"", s);
		return MonNextLocalTime(r->tz, tod, now);
	}
	{
		TimestampTz appt = NextAppointment(r);

		if (appt == 0)
		{
			*why = "no upcoming appointment";
			return 0;
		}
		return PrmTimestampPlusUsecs(appt, -ActionUsecs(obj, "before_appointment"));
	}
}

/*
 * Queue a send action's message through PrmSendToPatient (the template in
 * the patient's language; quiet hours, opt-outs, consent and caps applied):
 * the history's detail, with the message's id and status (queued, or capped
 * or refused with the reason kept on the message).
 */
static char *
ActionSend(JourneyRow *r, JsonbContainer *obj, int action)
{
	static SPIPlanPtr plan = NULL;
	char			 *channel = ActionField(obj, "channel");
	int64			  id;
	Datum			  values[1];
	char			 *status = "unknown";

	id = PrmSendToPatient(r->org_id, r->patient_id, ActionField(obj, "template"),
						  channel ? channel : "sms", 0,
						  psprintf("journey:%lld:%lld:%d", (long long) r->id,
								   (long long) r->stage_id, action));

	/*
	 * By id alone (ids are unique across organizations), the organization
	 * checked here: with (org_id, id) in the WHERE, the plan cached while the
	 * outbox had no statistics yet (a new install) went through its patient
	 * index and read every message of the organization.
	 */
	PrmPrepare(&plan, "SELECT m.status, m.org_id FROM prm.outbound_message m WHERE m.id = $1",
			   1, (Oid[]){INT8OID});
	values[0] = Int64GetDatum(id);
	if (PrmExecute(plan, values, NULL, true, 1) == 1)
	{
		bool isnull PG_USED_FOR_ASSERTS_ONLY;

		Assert(PrmGetInt64(0, 2, &isnull) == r->org_id);
		status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	}
	return psprintf("{\"action\": %d, \"type\": \"send\", \"message_id\": %lld, \"status\": %s}", action,
					(long long) id, PrmJsonString(status));
}

/* Open a ticket for the patient; its id. */
static int64
ActionTicket(JourneyRow *r, JsonbContainer *obj)
{
	char *priority = ActionField(obj, "priority");

	return PrmOpenTicket(r->org_id, ActionField(obj, "subject"), priority ? priority : "normal",
						 r->patient_id, ActionField(obj, "description"), 0, "journey");
}

/*
 * Enter the next live stage after the instance's, or complete it when none
 * is left.  False when completed.
 */
static bool
JourneyEnterNext(JourneyRow *r, const char *reason)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr done_plan = NULL;
	Datum			  values[4];
	bool			  isnull;

	values[0] = Int64GetDatum(r->org_id);
	values[1] = Int64GetDatum(r->id);
	values[2] = Int64GetDatum(r->journey_id);
	values[3] = Int32GetDatum(r->position);
	PrmPrepare(&plan,
			   "UPDATE prm.journey_instance i SET stage_id = s.id, stage_position = s.position,"
			   "       stage_entered_at = pg_catalog.now(), next_action = 0, failed_actions = '{}', due_at = NULL,"
			   "       awaiting_event = s.advance_on, updated_at = pg_catalog.now()"
			   "  FROM (SELECT st.id, st.position, st.advance_on, st.actions, st.advance_after"
			   "          FROM prm.journey_stage st"
			   "         WHERE st.org_id = $1 AND st.journey_id = $3 AND st.retired_at IS NULL"
			   "           AND st.position > $4 ORDER BY st.position LIMIT 1) s"
			   " WHERE i.org_id = $1 AND i.id = $2"
			   " RETURNING s.id, s.position, s.actions, s.advance_after, s.advance_on IS NOT NULL",
			   4, (Oid[]){INT8OID, INT8OID, INT8OID, INT4OID});
	if (r->stage_id && PrmExecute(plan, values, NULL, false, 1) == 1)
	{
		int64 from = r->stage_id;

		r->stage_id = PrmGetInt64(0, 1, &isnull);
		r->position = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		JourneyTakeStage(r, SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		/* a new stage: its actions from the first, its event awaited, none failed */
		r->next_action = 0;
		r->entered_at = GetCurrentTransactionStartTimestamp();
		r->awaiting = r->has_on;
		r->failed = NULL;
		JourneyStep(r->org_id, r->id, r->stage_id, "entered",
					psprintf("{\"reason\": \"%s\", \"from_stage_id\": %lld}", reason, (long long) from));
		return true;
	}
	PrmPrepare(&done_plan,
			   "UPDATE prm.journey_instance i SET status = 'completed', ended_at = pg_catalog.now(),"
			   "       end_reason = 'finished', due_at = NULL, awaiting_event = NULL,"
			   "       updated_at = pg_catalog.now()"
			   " WHERE i.org_id = $1 AND i.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(done_plan, values, NULL, false, 0);
	JourneyStep(r->org_id, r->id, 0, "completed", psprintf("{\"reason\": \"%s\"}", reason));
	JourneyEnded(r->org_id, r->id, "journey_completed");
	return false;
}

/*
 * Run a locked, active instance until it must wait (see the file header).
 * force: move on at once (advance_journey), skipping the rest of the stage.
 * Returns false when the instance completed.
 */
static bool
JourneyRun(JourneyRow *r, bool force)
{
	int guard;

	journey_point.org_id = r->org_id;
	journey_point.instance_id = r->id;
	for (guard = 0; guard < 200; guard++)
	{
		TimestampTz now = GetCurrentTransactionStartTimestamp();
		int			n = r->actions ? (int) JB_ROOT_COUNT(r->actions) : 0;

		CHECK_FOR_INTERRUPTS();
		journey_point.stage_id = r->stage_id;
		journey_point.action = -1;
		if (force || r->stage_id == 0)
		{
			if (!JourneyEnterNext(r, force ? "advance_journey" : "stage_retired"))
				return false;
			force = false;
			continue;
		}
		while (r->next_action < n)
		{
			JsonbValue	   *v = getIthJsonbValueFromContainer(&r->actions->root, r->next_action);
			JsonbContainer *obj = v->val.binary.data;
			char		   *type = ActionField(obj, "type");
			int				k = r->next_action;

			journey_point.action = k;
			r->next_action++;
			if (ActionFailedBefore(r, k))
				continue;
			if (strcmp(type, "wait") == 0)
			{
				char	   *why;
				TimestampTz until = WaitEnd(r, obj, &why);

				if (until > now)
				{
					JourneyStep(r->org_id, r->id, r->stage_id, "waiting",
								psprintf("{\"action\": %d, \"until\": %s}", k,
										 PrmJsonTimestamp(until)));
					JourneySave(r, until);
					return true;
				}
				JourneyStep(r->org_id, r->id, r->stage_id, "waiting",
							psprintf("{\"action\": %d, \"skipped\": %s}", k,
									 PrmJsonString(why ? why : "its time has passed")));
			}
			else if (strcmp(type, "send") == 0)
				JourneyStep(r->org_id, r->id, r->stage_id, "action", ActionSend(r, obj, k));
			else if (strcmp(type, "open_ticket") == 0)
				JourneyStep(r->org_id, r->id, r->stage_id, "action",
							psprintf("{\"action\": %d, \"type\": \"open_ticket\", \"ticket_id\": %lld}", k,
									 (long long) ActionTicket(r, obj)));
			else
				elog(ERROR, "unknown journey action type \"%s\"", type);
		}
		journey_point.action = -1;

		/* the stage's actions are done: its rule */
		if (r->has_on && !r->awaiting)
		{
			if (!JourneyEnterNext(r, "event"))
				return false;
		}
		else if (r->has_after && PrmTimestampPlusUsecs(r->entered_at, r->after_usecs) <= now)
		{
			if (!JourneyEnterNext(r, r->has_on ? "timeout" : "advance_after"))
				return false;
		}
		else
		{
			JourneySave(r, r->has_after ? PrmTimestampPlusUsecs(r->entered_at, r->after_usecs) : 0);
			return true;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("journey instance %lld moved through too many stages in one run", (long long) r->id)));
	return false; /* keep compiler quiet */
}

/*
 * After a run failed and was rolled back (the actions before the failing one
 * with it): record the error at the action it happened in, mark that action
 * failed for the stage, and have the instance run again at once -- the
 * rolled-back actions run again, the failed one is skipped.  A failure
 * outside an action waits five minutes before the next try.
 */
static void
JourneyFailed(ErrorData *edata)
{
	static SPIPlanPtr plan = NULL;
	JourneyPoint	  p = journey_point;
	Datum			  values[4];

	PrmPrepare(&plan,
			   "UPDATE prm.journey_instance i SET"
			   "   failed_actions = CASE WHEN $3 >= 0 AND i.stage_id IS NOT DISTINCT FROM $4"
			   "                         THEN pg_catalog.array_append(i.failed_actions, $3) ELSE i.failed_actions END,"
			   "   due_at = CASE WHEN $3 >= 0 THEN pg_catalog.now() ELSE pg_catalog.now() + interval '5 minutes' END,"
			   "   updated_at = pg_catalog.now()"
			   " WHERE i.org_id = $1 AND i.id = $2 AND i.status = 'active'",
			   4, (Oid[]){INT8OID, INT8OID, INT4OID, INT8OID});
	values[0] = Int64GetDatum(p.org_id);
	values[1] = Int64GetDatum(p.instance_id);
	values[2] = Int32GetDatum(p.action);
	values[3] = Int64GetDatum(p.stage_id);
	PrmExecute(plan, values, NULL, false, 0);
	JourneyStep(p.org_id, p.instance_id, p.stage_id, "action",
				psprintf("{\"action\": %d, \"error\": %s, \"sqlstate\": \"%s\"}", p.action,
						 PrmJsonString(edata->message), unpack_sql_state(edata->sqlerrcode)));
}

/* ---------- the worker's step ---------- */

static int64
JourneyItem(void *ctx, int i)
{
	JourneyBatch *b = (JourneyBatch *) ctx;
	bool		  isnull;
	int64		  org_id = DatumGetInt64(SPI_getbinval(b->rows->vals[i], b->rows->tupdesc, 1, &isnull));
	int64		  id = DatumGetInt64(SPI_getbinval(b->rows->vals[i], b->rows->tupdesc, 2, &isnull));
	JourneyRow	  r;

	journey_point.org_id = org_id;
	journey_point.instance_id = id;
	journey_point.stage_id = 0;
	journey_point.action = -1;
	if (JourneyLoadCurrent(org_id, id, &r))
		(void) JourneyRun(&r, false);
	return 1;
}

static void
JourneyItemFailed(void *ctx, int i, ErrorData *edata)
{
	JourneyFailed(edata);
}

/*
 * The instances whose time has come (due_at passed), oldest first, at most
 * limit, those locked by others skipped: each run in the loop helper.
 * Returns the instances handled.
 */
int64
PrmJourneyDueStep(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1] = {Int32GetDatum(limit)};
	JourneyBatch	  b;
	PrmItemLoop		  loop = {0};
	int				  n;
	int64			  held = JourneyHeldStep(limit);

	PrmPrepare(&plan,
			   "SELECT i.org_id, i.id FROM prm.journey_instance i"
			   " WHERE i.status = 'active' AND i.due_at <= pg_catalog.now()"
			   " ORDER BY i.due_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED",
			   1, (Oid[]){INT4OID});
	n = PrmExecute(plan, values, NULL, false, 0);
	if (n == 0)
		return held;
	b.rows = SPI_tuptable;
	loop.run = JourneyItem;
	loop.failed = JourneyItemFailed;
	loop.ctx = &b;
	(void) PrmRunItems(&loop, n);
	return held + loop.done + loop.failures;
}

/* ---------- the SQL functions ---------- */

/* Run an instance now, in the caller's transaction, recording failures. */
typedef struct JourneyNow
{
	int64 org_id;
	int64 id;
	bool  force;
	bool  completed;
} JourneyNow;

static int64
JourneyNowRun(void *arg)
{
	JourneyNow *j = (JourneyNow *) arg;
	JourneyRow	r;

	journey_point.org_id = j->org_id;
	journey_point.instance_id = j->id;
	journey_point.stage_id = 0;
	journey_point.action = -1;
	if (JourneyLoadCurrent(j->org_id, j->id, &r))
		j->completed = !JourneyRun(&r, j->force);
	else
		j->completed = true;
	return 1;
}

/*
 * Run an instance inside the caller's call: each failing action is recorded
 * and skipped and the run starts again after it (at most as many times as a
 * stage has actions; what remains is left to the worker).
 */
static void
JourneyRunNow(int64 org_id, int64 id, bool force)
{
	JourneyNow j = {org_id, id, force, false};
	int		   tries;

	for (tries = 0; tries <= JOURNEY_MAX_ACTIONS; tries++)
	{
		int64	   done;
		ErrorData *edata = PrmRunInSubtransaction(JourneyNowRun, &j, &done);

		if (edata == NULL)
			return;
		if (PrmErrorIsTransient(edata))
			ReThrowError(edata);
		JourneyFailed(edata);
		FreeErrorData(edata);
		j.force = false;
	}
}

Datum
prm_start_journey(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr why_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  journey_id = PRM_GETARG_INT64_NOTNULL(1, "journey_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(2, "patient_id");
	Datum			  values[3];
	int64			  id = 0;
	bool			  isnull;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	if (JourneyEnrol(org_id, journey_id, JourneyOnePatient(patient_id), "start_journey", 0, NULL, NULL,
					 &id) == 0)
	{
		PrmPrepare(&why_plan,
				   "SELECT j.active, j.retired_at IS NOT NULL,"
				   "       EXISTS (SELECT 1 FROM prm.journey_instance x WHERE x.org_id = j.org_id"
				   "                 AND x.journey_id = j.id AND x.patient_id = $3 AND x.status = 'active')"
				   "  FROM prm.journey j WHERE j.org_id = $1 AND j.id = $2",
				   3, (Oid[]){INT8OID, INT8OID, INT8OID});
		values[0] = Int64GetDatum(org_id);
		values[1] = Int64GetDatum(journey_id);
		values[2] = Int64GetDatum(patient_id);
		if (PrmExecute(why_plan, values, NULL, true, 1) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("journey %lld not found in organization %lld", (long long) journey_id,
							(long long) org_id)));
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("journey %lld is not active", (long long) journey_id),
					 errhint("Set {\"active\": true} with prm.update_journey() (a retired journey stays retired).")));
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)))
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("patient %lld is already on journey %lld", (long long) patient_id,
							(long long) journey_id),
					 errdetail("A patient has at most one active instance of a journey.")));
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("journey %lld does not take patient %lld again yet", (long long) journey_id,
						(long long) patient_id),
				 errdetail("The journey's reentry policy refuses another entry this soon."),
				 errhint("See the journey's reentry setting.")));
	}
	JourneyRunNow(org_id, id, false);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

Datum
prm_start_journey_segment(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr check_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  journey_id = PRM_GETARG_INT64_NOTNULL(1, "journey_id");
	ArrayType		 *patients;
	Datum			  values[2];
	int				  n;
	int64			  enrolled;

	PrmArgNotNull(fcinfo, 2, "patient_ids");
	patients = PG_GETARG_ARRAYTYPE_P(2);
	n = ArrayGetNItems(ARR_NDIM(patients), ARR_DIMS(patients));
	if (n > JOURNEY_MAX_SEGMENT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a segment call enrols at most %d patients, not %d", JOURNEY_MAX_SEGMENT, n),
				 errhint("Enrol a large segment in several calls, by keyset over patient id.")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&check_plan,
			   "SELECT 1 FROM prm.journey j WHERE j.org_id = $1 AND j.id = $2 AND j.active",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(journey_id);
	if (PrmExecute(check_plan, values, NULL, true, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("no active journey %lld in organization %lld", (long long) journey_id,
						(long long) org_id)));
	enrolled = JourneyEnrol(org_id, journey_id, PointerGetDatum(patients), "segment", 0, NULL, NULL,
							NULL);
	PrmSpiFinish();
	PG_RETURN_INT32((int32) enrolled);
}

Datum
prm_advance_journey(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr pos_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  instance_id = PRM_GETARG_INT64_NOTNULL(1, "instance_id");
	JourneyRow		  r;
	Datum			  values[2] = {Int64GetDatum(org_id), Int64GetDatum(instance_id)};
	bool			  isnull;
	Datum			  d;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	if (!JourneyLoad(org_id, instance_id, &r))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("journey instance %lld is not active", (long long) instance_id)));
	JourneyRunNow(org_id, instance_id, true);
	PrmPrepare(&pos_plan,
			   "SELECT CASE WHEN i.status = 'active' THEN i.stage_position END"
			   "  FROM prm.journey_instance i WHERE i.org_id = $1 AND i.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(pos_plan, values, NULL, false, 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	PrmSpiFinish();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_INT32(DatumGetInt32(d));
}

Datum
prm_cancel_journey_instance(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  instance_id = PRM_GETARG_INT64_NOTNULL(1, "instance_id");
	JourneyRow		  r;
	Datum			  values[2] = {Int64GetDatum(org_id), Int64GetDatum(instance_id)};

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	if (!JourneyLoad(org_id, instance_id, &r))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("journey instance %lld is not active", (long long) instance_id)));
	PrmPrepare(&plan,
			   "UPDATE prm.journey_instance i SET status = 'cancelled', ended_at = pg_catalog.now(),"
			   "       end_reason = 'cancelled', due_at = NULL, awaiting_event = NULL,"
			   "       updated_at = pg_catalog.now()"
			   " WHERE i.org_id = $1 AND i.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(plan, values, NULL, false, 0);
	JourneyStep(org_id, instance_id, r.stage_id, "cancelled", "{\"reason\": \"cancelled\"}");
	JourneyEnded(org_id, instance_id, "journey_cancelled");
	PrmSpiFinish();
	PG_RETURN_VOID();
}
