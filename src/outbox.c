/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The outbound queue: queueing with quiet hours and dedup keys, claiming
 *	  with leases, acknowledgements, retries with backoff, delivery
 *	  callbacks, history and health.  (Templates: outbox_template.c;
 *	  recipient rules and quiet hours: outbox_recipient.c.)
 *
 * The queue's invariants:
 *	- a queued message is handed to at most one sender at a time: claims
 *	  pick rows with FOR UPDATE SKIP LOCKED in a MATERIALIZED step whose
 *	  LIMIT is the batch size, on the partial index outbound_message_claim_idx
 *	  (status = 'queued', ordered by not_before, id), then mark them
 *	  'sending' with a fresh lease_token and lease_expires_at;
 *	- an acknowledgement carrying a lease_token is accepted only while that
 *	  lease is the message's current one, so a sender whose lease ran out
 *	  cannot acknowledge a message someone else now holds;
 *	- a lease that runs out puts the message back in the queue (at the
 *	  start of every claim, and by run_due_jobs);
 *	- delivery statuses only move forward (queued < sending < sent <
 *	  delivered/undelivered/failed < read); a late or repeated callback
 *	  changes nothing and says so by returning false;
 *	- finished messages move to prm.outbound_message_history after a day, so
 *	  the hot table and its indexes stay small.
 * New work NOTIFYs channel prm_outbox_<channel>, at most once a transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/formatting.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "comms.h"
#include "outbox.h"

PG_FUNCTION_INFO_V1(prm_enqueue_message);
PG_FUNCTION_INFO_V1(prm_claim_messages);
PG_FUNCTION_INFO_V1(prm_mark_message_sent);
PG_FUNCTION_INFO_V1(prm_mark_message_failed);
PG_FUNCTION_INFO_V1(prm_record_delivery_status);
PG_FUNCTION_INFO_V1(prm_redrive_message);
PG_FUNCTION_INFO_V1(prm_health);

static void	  OutboxLoadMessage(int64 message_id, PrmAccessLevel level,
								int64 *org_id, char **status, char **lease);

/*
 * Has prm.outbound_message the from_address column (0.3.0 on)?  Syscache
 * lookups; once it is there it stays, so a yes is remembered.
 */
bool
OutboxHasFromAddress(void)
{
	static bool has = false;

	if (!has)
		has = PrmHasColumn("outbound_message", "from_address");
	return has;
}

/*
 * Queue a message; returns its id (the existing one's when dedup_key was
 * used before).  not_before 0 means now.  Must run inside SPI.
 */
int64
PrmEnqueue(int64 org_id, const char *channel, const char *to, const char *body,
		   const char *kind, int64 patient_id, int64 offer_id,
		   const char *dedup_key, TimestampTz not_before)
{
	return PrmEnqueueOrRefuse(org_id, channel, to, body, kind, patient_id, offer_id,
							  dedup_key, not_before, NULL);
}

/*
 * Queue a message, the one place every message goes through.  The message
 * takes the class of its kind (PrmMessageClass); a message to a patient
 * passes the patient's consent and, when promotional, the frequency caps
 * (PrmMessageGate).  A message that does not pass, or whose caller already
 * found a refusal (the reason in refusal: no address, opted out), is kept
 * as a row with status capped or refused and the reason in last_error --
 * not sent, not threaded, no NOTIFY -- and its id is returned all the same.
 */
int64
PrmEnqueueOrRefuse(int64 org_id, const char *channel, const char *to, const char *body,
				   const char *kind, int64 patient_id, int64 offer_id,
				   const char *dedup_key, TimestampTz not_before, const char *refusal)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr existing_plan = NULL;
	Datum			  values[12];
	char			  nulls[12] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	const char		 *message_class;
	const char		 *status = "queued";
	char			 *reason = refusal ? pstrdup(refusal) : NULL;

	/* a key used by a message already moved to the history queues nothing */
	if (dedup_key)
	{
		static SPIPlanPtr history_plan = NULL;

		PrmPrepare(&history_plan,
				   "SELECT h.id FROM prm.outbound_message_history h WHERE h.org_id = $1 AND h.dedup_key = $2",
				   2, (Oid[]){INT8OID, TEXTOID});
		values[0] = Int64GetDatum(org_id);
		values[1] = CStringGetTextDatum(dedup_key);
		if (PrmExecute(history_plan, values, NULL, true, 1) == 1)
			return PrmGetInt64(0, 1, &isnull);
	}

	message_class = PrmMessageClass(org_id, kind);
	if (message_class == NULL)
		message_class = "exempt"; /* a kind of prm's own code, not a template */
	if (reason)
		status = "refused";
	else if (patient_id > 0)
		status = PrmMessageGate(org_id, patient_id, channel, message_class,
								not_before ? not_before : GetCurrentTransactionStartTimestamp(),
								&reason);

	PrmPrepare(&insert_plan,
			   "INSERT INTO prm.outbound_message"
			   "  (org_id, channel, to_address, body, kind, patient_id, offer_id, dedup_key, not_before,"
			   "   status, last_error, message_class)"
			   " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, coalesce($9, pg_catalog.now()), $10, $11, $12)"
			   /* the partial unique index of 0.3.0, the constraint before */
			   " ON CONFLICT (org_id, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING RETURNING id",
			   12, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, INT8OID, TEXTOID,
						   TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(channel);
	values[2] = CStringGetTextDatum(to);
	values[3] = CStringGetTextDatum(body);
	values[4] = CStringGetTextDatum(kind);
	values[5] = Int64GetDatum(patient_id);
	if (patient_id <= 0)
		nulls[5] = 'n';
	values[6] = Int64GetDatum(offer_id);
	if (offer_id <= 0)
		nulls[6] = 'n';
	if (dedup_key)
		values[7] = CStringGetTextDatum(dedup_key);
	else
		nulls[7] = 'n';
	values[8] = TimestampTzGetDatum(not_before);
	if (not_before == 0)
		nulls[8] = 'n';
	values[9] = CStringGetTextDatum(status);
	if (reason)
		values[10] = CStringGetTextDatum(reason);
	else
		nulls[10] = 'n';
	values[11] = CStringGetTextDatum(message_class);
	if (PrmExecute(insert_plan, values, nulls, false, 0) == 1)
	{
		int64 id = PrmGetInt64(0, 1, &isnull);

		if (reason)
		{
			/* kept, not sent: visible with its reason */
			PrmEmitEvent(org_id, strcmp(status, "capped") == 0 ? "message_capped" : "message_refused",
						 "outbound_message", id,
						 psprintf("{\"patient_id\": %lld, \"kind\": %s, \"channel\": %s, \"reason\": %s}",
								  (long long) patient_id, PrmJsonString(kind), PrmJsonString(channel),
								  PrmJsonString(reason)));
			return id;
		}
		PrmNotifyOnce(psprintf("prm_outbox_%s", channel));
		/* every message to a patient belongs to its conversation */
		if (patient_id > 0 && strcmp(channel, "push") != 0)
			(void) PrmThreadMessage(org_id, channel, to, patient_id, false, false, body, 0, id);
		/* a message held for later: the worker wakes its senders then */
		if (not_before > GetCurrentTransactionStartTimestamp())
			PrmWakeWorker(not_before);
		return id;
	}
	Assert(dedup_key != NULL);
	PrmPrepare(&existing_plan,
			   "SELECT m.id FROM prm.outbound_message m WHERE m.org_id = $1 AND m.dedup_key = $2",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[1] = CStringGetTextDatum(dedup_key);
	if (PrmExecute(existing_plan, values, NULL, true, 1) == 1)
		return PrmGetInt64(0, 1, &isnull);
	return 0; /* archived between the two looks: nothing queued again */
}

/*
 * The organizations where the calling role holds level (NULL for a
 * privileged caller: all of them).  Raises 42501 when there are none.
 */
Datum *
OutboxCallerOrgs(PrmAccessLevel level, int *norgs)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	Datum			 *orgs;
	int				  n,
		i,
		kept = 0;

	*norgs = -1;
	if (PrmCallerIsPrivileged())
		return NULL;
	PrmPrepare(&plan,
			   "SELECT a.org_id, a.level FROM prm.org_access a"
			   " WHERE pg_catalog.pg_has_role($1, a.role_id, 'USAGE')",
			   1, (Oid[]){OIDOID});
	values[0] = ObjectIdGetDatum(GetOuterUserId());
	n = PrmExecute(plan, values, NULL, true, 0);
	orgs = palloc(sizeof(Datum) * (n + 1));
	for (i = 0; i < n; i++)
	{
		PrmAccessLevel granted = PrmParseLevel(PrmGetText(i, 2));
		bool		   isnull;

		if (granted == level || (granted >= PRM_LEVEL_STAFF &&
								 (level != PRM_LEVEL_ADMIN || granted == PRM_LEVEL_ADMIN)))
			orgs[kept++] = Int64GetDatum(PrmGetInt64(i, 1, &isnull));
	}
	if (kept == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied: no organization gives this role the \"%s\" level",
						PrmLevelName(level)),
				 errhint("An administrator can give it with prm.grant_access().")));
	*norgs = kept;
	return orgs;
}

/*
 * Lock a message by id and return its organization, status and lease
 * token.  A message the caller may not touch is reported as missing.
 */
static void
OutboxLoadMessage(int64 message_id, PrmAccessLevel level, int64 *org_id,
				  char **status, char **lease)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr lock_plan = NULL;
	Datum			  values[2];
	bool			  isnull;

	/* authorise on the row's organization before locking anything */
	PrmPrepare(&find_plan,
			   "SELECT m.org_id FROM prm.outbound_message m WHERE m.id = $1",
			   1, (Oid[]){INT8OID});
	PrmPrepare(&lock_plan,
			   "SELECT m.status, m.lease_token::text FROM prm.outbound_message m"
			   " WHERE m.org_id = $1 AND m.id = $2 FOR UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(message_id);
	if (PrmExecute(find_plan, values, NULL, true, 1) == 1)
	{
		*org_id = PrmGetInt64(0, 1, &isnull);
		if (PrmHasOrgAccess(*org_id, level))
		{
			values[0] = Int64GetDatum(*org_id);
			values[1] = Int64GetDatum(message_id);
			if (PrmExecute(lock_plan, values, NULL, false, 1) == 1)
			{
				*status = PrmGetText(0, 1);
				*lease = PrmGetText(0, 2);
				return;
			}
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_NO_DATA_FOUND),
			 errmsg("outbound message %lld does not exist", (long long) message_id),
			 errhint("Finished messages move to prm.outbound_message_history after a day.")));
}

/* Refuse an acknowledgement whose lease is not the message's current one. */
static void
OutboxCheckLease(int64 org_id, int64 message_id, const char *status,
				 const char *current, FunctionCallInfo fcinfo, int argno)
{
	char *given;

	if (strcmp(status, "sending") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("outbound message %lld is not claimed", (long long) message_id),
				 errdetail("Its status is \"%s\".", status),
				 errhint("Claim it with prm.claim_messages() first; a lease that ran out returns the message to the queue.")));
	if (PG_ARGISNULL(argno))
	{
		/*
		 * Without a token the lease is not checked: that kills a message
		 * another sender may hold, so only an admin may do it, on record.
		 */
		if (!PrmHasOrgAccess(org_id, PRM_LEVEL_ADMIN))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("an acknowledgement of outbound message %lld needs its lease token",
							(long long) message_id),
					 errdetail("Only an admin of the organization may acknowledge without the lease."),
					 errhint("Pass the lease_token that prm.claim_messages() returned.")));
		PrmEmitEvent(org_id, "lease_overridden", "outbound_message", message_id,
					 psprintf("{\"lease_token\": %s}",
							  current ? PrmJsonString(current) : "null"));
		return;
	}
	given = DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(argno)));
	if (current == NULL || strcmp(given, current) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("lease %s of outbound message %lld is no longer held", given,
						(long long) message_id),
				 errdetail("The lease ran out and the message was claimed again."),
				 errhint("Do not report on this message; its current holder will.")));
}

/*
 * prm.enqueue_message(org_id, channel, to_address, body, patient_id,
 *					   dedup_key, not_before) RETURNS bigint
 */
Datum
prm_enqueue_message(PG_FUNCTION_ARGS)
{
	int64		org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char	   *channel = PrmTextArg(fcinfo, 1, "channel", 10);
	char	   *to = PrmTextArg(fcinfo, 2, "to_address", OUTBOX_ADDRESS_MAX);
	char	   *body = PrmTextArg(fcinfo, 3, "body", OUTBOX_BODY_MAX);
	int64		patient_id = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4);
	char	   *dedup = PrmTextArgOrNull(fcinfo, 5, "dedup_key", OUTBOX_KEY_MAX);
	TimestampTz not_before = PG_ARGISNULL(6) ? GetCurrentTransactionStartTimestamp() : PG_GETARG_TIMESTAMPTZ(6);
	int64		id;

	OutboxCheckChannel(channel);
	PrmCheckFiniteTimestamp(not_before, "not_before");
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	if (strcmp(channel, "sms") == 0 || strcmp(channel, "whatsapp") == 0)
		to = PrmNormalizePhone(to, PrmOrgPhoneRegion(org_id));
	if (patient_id != 0)
		PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	not_before = PrmRecipientRules(org_id, channel, to, patient_id, not_before);
	id = PrmEnqueue(org_id, channel, to, body, "other", patient_id, 0, dedup,
					not_before);
	PrmEmitPatientEvent(org_id, "message_queued", "outbound_message", id, patient_id, NULL);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * The plan of a statement a sender runs on every round, for one LIMIT.
 * sql is a format whose one %s is its LIMIT.  Planned generically with the
 * limit written in, a plan is made once per backend and limit (a sender
 * keeps one batch size) and costed for that many rows: with LIMIT $n, a
 * generic plan is costed for a tenth of the table (a merge join over the
 * whole id index), and a custom plan is planned again on every call (a
 * quarter of a claim's time).  After OUTBOX_LIMIT_PLANS limits, the plan
 * with the limit as the parameter limit_param, custom-planned.
 */
#define OUTBOX_LIMIT_PLANS 4
typedef struct OutboxLimitPlans
{
	int32	   limits[OUTBOX_LIMIT_PLANS];
	SPIPlanPtr plans[OUTBOX_LIMIT_PLANS];
	SPIPlanPtr fallback;
} OutboxLimitPlans;

static SPIPlanPtr
OutboxLimitPlan(OutboxLimitPlans *cache, const char *sql, int32 limit,
				const char *limit_param, int nargs, Oid *argtypes)
{
	int i;

	for (i = 0; i < OUTBOX_LIMIT_PLANS && cache->plans[i] != NULL; i++)
		if (cache->limits[i] == limit)
			return cache->plans[i];
	if (i == OUTBOX_LIMIT_PLANS)
		return PrmPrepare(&cache->fallback, psprintf(sql, limit_param), nargs, argtypes);
	PrmPrepareCursor(&cache->plans[i], psprintf(sql, psprintf("%d", limit)), nargs, argtypes,
					 CURSOR_OPT_GENERIC_PLAN);
	cache->limits[i] = limit;
	return cache->plans[i];
}

/*
 * Put messages whose lease ran out back in the queue (or to dead when they
 * used up their attempts); at most limit of them.  Returns how many.
 *
 * The time compared with is the clock's now, passed in ($2): as
 * clock_timestamp() in the statement it was no index condition (volatile),
 * so every call walked the whole lease index in order -- every message
 * acknowledged since the last vacuum left an entry there -- and visited
 * each entry's row to find none due: at 32 senders, a sixth of the
 * sender's time.  Now the scan stops at the first lease still running.
 */
int
PrmReleaseExpiredLeases(int limit)
{
	static OutboxLimitPlans plans;
	Datum					values[2];

	values[0] = Int32GetDatum(limit);
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	return PrmExecute(OutboxLimitPlan(&plans,
									  "WITH x AS MATERIALIZED ("
									  "  SELECT m.org_id, m.id FROM prm.outbound_message m"
									  "   WHERE m.status = 'sending' AND m.lease_expires_at < $2"
									  "   ORDER BY m.lease_expires_at LIMIT %s FOR UPDATE SKIP LOCKED)"
									  "UPDATE prm.outbound_message m"
									  "   SET status = CASE WHEN m.attempts >= coalesce((o.settings ->> 'max_attempts')::int, 5)"
									  "                     THEN 'dead' ELSE 'queued' END,"
									  "       last_error = coalesce(m.last_error, 'lease expired'),"
									  "       lease_token = NULL, lease_expires_at = NULL, updated_at = pg_catalog.now()"
									  "  FROM x, prm.organization o"
									  " WHERE m.org_id = x.org_id AND m.id = x.id AND o.id = m.org_id",
									  limit, "$1", 2, (Oid[]){INT4OID, TIMESTAMPTZOID}),
					  values, NULL, false, 0);
}

/*
 * prm.claim_messages(channel, max_count, lease) RETURNS SETOF outbound_message
 */
Datum
prm_claim_messages(PG_FUNCTION_ARGS)
{
	static OutboxLimitPlans plans[2];
	SPIPlanPtr		  plan;
	bool			  has_from;
	ReturnSetInfo	 *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char			 *channel = PrmTextArg(fcinfo, 0, "channel", 10);
	int32			  max_count = PRM_GETARG_INT32_NOTNULL(1, "max_count");
	Interval		 *lease;
	int64			  lease_usecs;
	Datum			 *orgs;
	int				  norgs;
	Datum			  values[4];
	char			  nulls[4] = {' ', ' ', ' ', ' '};
	uint64			  i;
	MemoryContext	  per_query;
	MemoryContext	  old;

	PrmArgNotNull(fcinfo, 2, "lease");
	lease = PG_GETARG_INTERVAL_P(2);
	OutboxCheckChannel(channel);
	if (max_count < 1 || max_count > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count %d is out of range", max_count),
				 errdetail("A claim takes 1 to 1000 messages.")));
	if (!PrmIntervalToUsecs(lease, &lease_usecs) ||
		lease_usecs < USECS_PER_SEC || lease_usecs > 3600 * USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease is out of range"),
				 errdetail("A lease lasts from 1 second to 1 hour.")));

	InitMaterializedSRF(fcinfo, 0);
	per_query = rsinfo->econtext->ecxt_per_query_memory;

	PrmSpiConnect();
	orgs = OutboxCallerOrgs(PRM_LEVEL_SENDER, &norgs);
	PrmReleaseExpiredLeases(100);

	/*
	 * The From address is written now, not at enqueue: the row is rewritten
	 * here anyway, so it costs the claim one lookup of the organization
	 * (cached, one row) and costs queueing nothing; and a message that
	 * waited (quiet hours, a retry) goes out from the number the clinic has
	 * when it is sent, not the one it had when the message was queued.
	 * Schemas before 0.3.0 have no from_address column.
	 */
	has_from = OutboxHasFromAddress();
	plan = OutboxLimitPlan(&plans[has_from],
						   psprintf("WITH c AS MATERIALIZED ("
									"  SELECT m.org_id, m.id FROM prm.outbound_message m"
									"   WHERE m.status = 'queued' AND m.channel = $1"
									"     AND m.not_before <= pg_catalog.now()"
									"     AND ($4::bigint[] IS NULL OR m.org_id = ANY ($4::bigint[]))"
									"   ORDER BY m.not_before, m.id"
									"   LIMIT %%s FOR UPDATE SKIP LOCKED)"
									"UPDATE prm.outbound_message m"
									"   SET status = 'sending', attempts = m.attempts + 1,"
									"       lease_token = pg_catalog.gen_random_uuid(),"
									"       lease_expires_at = pg_catalog.clock_timestamp() + $3,"
									"       %s"
									"       updated_at = pg_catalog.now()"
									"  FROM c WHERE m.org_id = c.org_id AND m.id = c.id"
									" RETURNING m.*",
									has_from
										? "from_address = (SELECT CASE m.channel WHEN 'whatsapp' THEN o.whatsapp_number"
										  "   WHEN 'email' THEN o.email_address WHEN 'push' THEN NULL"
										  "   ELSE o.sms_number END FROM prm.organization o WHERE o.id = m.org_id),"
										: ""),
						   max_count, "$2", 4, (Oid[]){TEXTOID, INT4OID, INTERVALOID, INT8ARRAYOID});
	values[0] = CStringGetTextDatum(channel);
	values[1] = Int32GetDatum(max_count);
	values[2] = IntervalPGetDatum(lease);
	if (orgs == NULL)
	{
		nulls[3] = 'n';
		values[3] = (Datum) 0;
	}
	else
		values[3] = PointerGetDatum(construct_array(orgs, norgs, INT8OID, 8, true, TYPALIGN_DOUBLE));
	PrmExecute(plan, values, nulls, false, 0);
	Assert(SPI_processed <= (uint64) max_count);
	/* a lease that runs out is a deadline: the worker requeues at its end */
	if (SPI_processed > 0)
		PrmWakeWorker(GetCurrentTimestamp() + lease_usecs + USECS_PER_SEC / 100);

	old = MemoryContextSwitchTo(per_query);
	for (i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	MemoryContextSwitchTo(old);
	PrmSpiFinish();
	return (Datum) 0;
}

/*
 * prm.mark_message_sent(message_id, provider_message_id, lease_token)
 */
Datum
prm_mark_message_sent(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  message_id = PRM_GETARG_INT64_NOTNULL(0, "message_id");
	char			 *provider_id = PrmTextArg(fcinfo, 1, "provider_message_id", OUTBOX_KEY_MAX);
	int64			  org_id;
	char			 *status;
	char			 *lease;
	Datum			  values[3];

	PrmSpiConnect();
	OutboxLoadMessage(message_id, PRM_LEVEL_SENDER, &org_id, &status, &lease);
	OutboxCheckLease(org_id, message_id, status, lease, fcinfo, 2);
	PrmPrepare(&plan,
			   "UPDATE prm.outbound_message m"
			   "   SET status = 'sent', provider_message_id = $3, sent_at = pg_catalog.now(),"
			   "       lease_token = NULL, lease_expires_at = NULL, last_error = NULL,"
			   "       updated_at = pg_catalog.now()"
			   " WHERE m.org_id = $1 AND m.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(message_id);
	values[2] = CStringGetTextDatum(provider_id);
	PrmExecute(plan, values, NULL, false, 0);
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.mark_message_failed(message_id, error, retryable, lease_token)
 *	  Retry after base * 2^(attempts-1), at most an hour, with +-25% jitter so
 *	  that messages failing together do not come back together.
 */
Datum
prm_mark_message_failed(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr  attempts_plan = NULL;
	static SPIPlanPtr  plan = NULL;
	int64			   message_id = PRM_GETARG_INT64_NOTNULL(0, "message_id");
	char			  *error = PrmTextArg(fcinfo, 1, "error", PRM_MAX_TEXT_LEN);
	bool			   retryable = PRM_GETARG_BOOL_NOTNULL(2, "retryable");
	int64			   org_id;
	char			  *status;
	char			  *lease;
	const PrmSettings *s;
	Datum			   values[5];
	bool			   isnull;
	int				   attempts;
	bool			   dead;
	double			   delay_secs;
	TimestampTz		   not_before;

	PrmSpiConnect();
	OutboxLoadMessage(message_id, PRM_LEVEL_SENDER, &org_id, &status, &lease);
	OutboxCheckLease(org_id, message_id, status, lease, fcinfo, 3);
	s = PrmGetSettings(org_id);
	PrmPrepare(&attempts_plan,
			   "SELECT m.attempts FROM prm.outbound_message m WHERE m.org_id = $1 AND m.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(message_id);
	PrmExecute(attempts_plan, values, NULL, true, 1);
	attempts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	dead = !retryable || attempts >= s->max_attempts;

	/* in double: 2^attempts cannot overflow, and the hour caps it */
	delay_secs = (double) PrmIntervalUsecs(&s->retry_base) / USECS_PER_SEC *
				 pow(2.0, Max(attempts - 1, 0));
	delay_secs = Min(delay_secs, 3600.0);
	delay_secs *= 0.75 + 0.5 * pg_prng_double(&pg_global_prng_state);
	not_before = PrmTimestampPlusUsecs(GetCurrentTransactionStartTimestamp(),
									   dead ? 0 : (int64) (delay_secs * USECS_PER_SEC));

	PrmPrepare(&plan,
			   "UPDATE prm.outbound_message m"
			   "   SET status = CASE WHEN $4 THEN 'dead' ELSE 'queued' END,"
			   "       last_error = $3, lease_token = NULL, lease_expires_at = NULL,"
			   "       not_before = $5,"
			   "       updated_at = pg_catalog.now()"
			   " WHERE m.org_id = $1 AND m.id = $2",
			   5, (Oid[]){INT8OID, INT8OID, TEXTOID, BOOLOID, TIMESTAMPTZOID});
	values[2] = CStringGetTextDatum(error);
	values[3] = BoolGetDatum(dead);
	values[4] = TimestampTzGetDatum(not_before);
	PrmExecute(plan, values, NULL, false, 0);
	if (dead)
		PrmEmitEvent(org_id, "message_dead", "outbound_message", message_id,
					 psprintf("{\"attempts\": %d, \"error\": %s}", attempts, PrmJsonString(error)));
	else
		PrmWakeWorker(not_before);
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* Rank of a delivery status: statuses only ever move to a higher rank. */
static int
OutboxStatusRank(const char *status)
{
	if (strcmp(status, "queued") == 0 || strcmp(status, "accepted") == 0 ||
		strcmp(status, "scheduled") == 0)
		return 0;
	if (strcmp(status, "sending") == 0)
		return 1;
	if (strcmp(status, "sent") == 0)
		return 2;
	if (strcmp(status, "delivered") == 0 || strcmp(status, "undelivered") == 0 ||
		strcmp(status, "failed") == 0 || strcmp(status, "canceled") == 0 ||
		strcmp(status, "cancelled") == 0 || strcmp(status, "dead") == 0)
		return 3;
	if (strcmp(status, "read") == 0)
		return 4;
	return -1;
}

/*
 * prm.record_delivery_status(provider_message_id, status) RETURNS boolean
 */
Datum
prm_record_delivery_status(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr find_plan = NULL;
	static SPIPlanPtr plans[2];
	char			 *provider_id = PrmTextArg(fcinfo, 0, "provider_message_id", OUTBOX_KEY_MAX);
	char			 *raw = PrmTextArg(fcinfo, 1, "status", 30);
	char			 *status = asc_tolower(raw, strlen(raw));
	int				  rank = OutboxStatusRank(status);
	Datum			  values[4];
	bool			  isnull;
	int64			  org_id,
		id;
	bool in_history;
	bool applied = false;
	int	 n,
		i;

	if (rank < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delivery status \"%s\" is not recognized", raw),
				 errhint("Use the provider's status words: queued, sending, sent, delivered, undelivered, failed, read, canceled.")));
	if (strcmp(status, "canceled") == 0)
		status = "cancelled";
	if (rank == 0)
		status = "queued";

	PrmSpiConnect();
	PrmPrepare(&find_plan,
			   "SELECT m.org_id, m.id, m.status, false FROM prm.outbound_message m"
			   " WHERE m.provider_message_id = $1"
			   " UNION ALL "
			   "SELECT h.org_id, h.id, h.status, true FROM prm.outbound_message_history h"
			   " WHERE h.provider_message_id = $1",
			   1, (Oid[]){TEXTOID});
	values[0] = CStringGetTextDatum(provider_id);
	n = PrmExecute(find_plan, values, NULL, true, 0);
	/* copy the matches out: the checks below run queries of their own */
	{
		int64 *orgs = palloc(sizeof(int64) * (n + 1));
		int64 *ids = palloc(sizeof(int64) * (n + 1));
		bool  *hist = palloc(sizeof(bool) * (n + 1));

		for (i = 0; i < n; i++)
		{
			orgs[i] = PrmGetInt64(i, 1, &isnull);
			ids[i] = PrmGetInt64(i, 2, &isnull);
			hist[i] = strcmp(PrmGetText(i, 4), "t") == 0;
		}
		for (i = 0; i < n && !applied; i++)
		{
			org_id = orgs[i];
			id = ids[i];
			in_history = hist[i];
			/* statuses come from the webhook or from a sender that learns them */
			if (!PrmHasOrgAccess(org_id, PRM_LEVEL_WEBHOOK) &&
				!PrmHasOrgAccess(org_id, PRM_LEVEL_SENDER))
				continue;
			if (plans[in_history] == NULL)
				PrmPrepare(&plans[in_history],
						   psprintf("UPDATE prm.%s m SET status = $3,"
									"       delivered_at = CASE WHEN $3 = 'delivered' THEN pg_catalog.now() ELSE m.delivered_at END,"
									"       updated_at = pg_catalog.now()"
									" WHERE m.org_id = $1 AND m.id = $2"
									"   AND (CASE m.status WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'sent' THEN 2"
									"        WHEN 'read' THEN 4 ELSE 3 END) < $4",
									in_history ? "outbound_message_history" : "outbound_message"),
						   4, (Oid[]){INT8OID, INT8OID, TEXTOID, INT4OID});
			values[0] = Int64GetDatum(org_id);
			values[1] = Int64GetDatum(id);
			values[2] = CStringGetTextDatum(status);
			values[3] = Int32GetDatum(rank);
			applied = PrmExecute(plans[in_history], values, NULL, false, 0) > 0;
			if (applied)
				PrmEmitEvent(org_id, "delivery_status", "outbound_message", id,
							 psprintf("{\"status\": %s}", PrmJsonString(status)));
		}
	}
	PrmSpiFinish();
	PG_RETURN_BOOL(applied);
}

/*
 * prm.redrive_message(org_id, message_id) RETURNS boolean
 */
Datum
prm_redrive_message(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  message_id = PRM_GETARG_INT64_NOTNULL(1, "message_id");
	Datum			  values[2];
	bool			  redriven;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_OUTBOUND_MESSAGE, message_id, true);
	PrmPrepare(&plan,
			   "UPDATE prm.outbound_message m"
			   "   SET status = 'queued', attempts = 0, not_before = pg_catalog.now(),"
			   "       updated_at = pg_catalog.now()"
			   " WHERE m.org_id = $1 AND m.id = $2 AND m.status = 'dead'"
			   " RETURNING m.channel",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(message_id);
	redriven = PrmExecute(plan, values, NULL, false, 0) > 0;
	if (redriven)
	{
		PrmNotifyOnce(psprintf("prm_outbox_%s", PrmGetText(0, 1)));
		PrmEmitEvent(org_id, "message_redriven", "outbound_message", message_id, NULL);
	}
	PrmSpiFinish();
	PG_RETURN_BOOL(redriven);
}

/* true while PrmArchiveMessages runs its move (see PrmArchiveInProgress) */
static bool archive_in_progress = false;

/*
 * Whether the statement running now is PrmArchiveMessages' move.  Its
 * delete from prm.outbound_message and insert into the history are one
 * statement that moves each row unchanged, so nothing derived from the
 * union of the two tables changes: prm.patient_stats_trigger() asks this to
 * skip both halves instead of recomputing every patient twice.
 */
bool
PrmArchiveInProgress(void)
{
	return archive_in_progress;
}

/*
 * Move finished messages older than a day to the history table, at most
 * limit of them; returns how many moved.  The statuses are exactly the
 * predicate of outbound_message_finished_idx (0.3.0), so the look-up reads
 * only the finished messages whose day has passed, not the whole queue.
 */
int
PrmArchiveMessages(int limit)
{
	static SPIPlanPtr plans[2];
	bool			  has_from = OutboxHasFromAddress();
	const char		 *from = has_from ? ", from_address" : "";
	Datum			  values[1];
	int				  moved;

	/* the plan of the schema's columns (from_address from 0.3.0 on) */
	if (plans[has_from] == NULL)
		PrmPrepare(&plans[has_from],
			   psprintf("WITH moved AS ("
			   "  DELETE FROM prm.outbound_message m"
			   "   WHERE (m.org_id, m.id) IN ("
			   "     SELECT x.org_id, x.id FROM prm.outbound_message x"
			   "      WHERE x.status IN ('delivered', 'undelivered', 'failed', 'read', 'cancelled', 'sent',"
			   "                         'capped', 'refused')"
			   "        AND x.updated_at < pg_catalog.now() - interval '1 day'"
			   "      LIMIT $1 FOR UPDATE SKIP LOCKED)"
			   "  RETURNING m.*)"
			   "INSERT INTO prm.outbound_message_history"
			   "  (org_id, id, channel, to_address, body, status, attempts, created_at, lease_token,"
			   "   lease_expires_at, not_before, kind, patient_id, offer_id, dedup_key,"
			   "   provider_message_id, last_error, sent_at, delivered_at, updated_at, campaign, message_class"
			   "   %s)"
			   "SELECT org_id, id, channel, to_address, body, status, attempts, created_at, lease_token,"
			   "   lease_expires_at, not_before, kind, patient_id, offer_id, dedup_key,"
			   "   provider_message_id, last_error, sent_at, delivered_at, updated_at, campaign, message_class"
			   "   %s"
			   "  FROM moved", from, from),
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	/* the statement's AFTER triggers fire before PrmExecute returns */
	archive_in_progress = true;
	PG_TRY();
	{
		moved = PrmExecute(plans[has_from], values, NULL, false, 0);
	}
	PG_FINALLY();
	{
		archive_in_progress = false;
	}
	PG_END_TRY();
	return moved;
}

/*
 * prm.health() RETURNS jsonb
 */
Datum
prm_health(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr stats_plan = NULL;
	static SPIPlanPtr probe_plan = NULL;
	instr_time		  start,
		elapsed;
	char  *stats;
	double probe_ms;
	Datum  result;

	PrmSpiConnect();
	if (!PrmCallerIsPrivileged())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for prm.health()"),
				 errhint("It reports on every organization; ask a superuser or the extension owner.")));

	/* a claim without the lock: how fast the claim path is right now */
	PrmPrepare(&probe_plan,
			   "SELECT m.id FROM prm.outbound_message m"
			   " WHERE m.status = 'queued' AND m.channel = 'sms' AND m.not_before <= pg_catalog.now()"
			   " ORDER BY m.not_before, m.id LIMIT 10",
			   0, NULL);
	INSTR_TIME_SET_CURRENT(start);
	PrmExecute(probe_plan, NULL, NULL, true, 0);
	INSTR_TIME_SET_CURRENT(elapsed);
	INSTR_TIME_SUBTRACT(elapsed, start);
	probe_ms = INSTR_TIME_GET_MILLISEC(elapsed);

	PrmPrepare(&stats_plan,
			   "SELECT pg_catalog.jsonb_build_object("
			   " 'queue', (SELECT coalesce(pg_catalog.jsonb_object_agg(q.channel, q.statuses), '{}')"
			   "            FROM (SELECT c.channel, pg_catalog.jsonb_object_agg(c.status, c.n) AS statuses"
			   "                    FROM (SELECT m.channel, m.status, pg_catalog.count(*) AS n"
			   "                            FROM prm.outbound_message m GROUP BY 1, 2) c"
			   "                   GROUP BY c.channel) q),"
			   " 'due_now', (SELECT pg_catalog.count(*) FROM prm.outbound_message m"
			   "              WHERE m.status = 'queued' AND m.not_before <= pg_catalog.now()),"
			   " 'oldest_due_seconds', (SELECT coalesce(extract(epoch FROM pg_catalog.now() - pg_catalog.min(m.not_before)), 0)"
			   "              FROM prm.outbound_message m"
			   "              WHERE m.status = 'queued' AND m.not_before <= pg_catalog.now()),"
			   " 'dead', (SELECT pg_catalog.count(*) FROM prm.outbound_message m WHERE m.status = 'dead'),"
			   " 'history', (SELECT pg_catalog.count(*) FROM prm.outbound_message_history),"
			   " 'table', (SELECT pg_catalog.jsonb_build_object('live_tuples', s.n_live_tup,"
			   "                  'dead_tuples', s.n_dead_tup, 'last_autovacuum', s.last_autovacuum,"
			   "                  'last_vacuum', s.last_vacuum)"
			   "             FROM pg_catalog.pg_stat_user_tables s"
			   "            WHERE s.relid = 'prm.outbound_message'::pg_catalog.regclass),"
			   " 'oldest_xact_seconds', (SELECT coalesce(extract(epoch FROM pg_catalog.max(pg_catalog.now() - a.xact_start)), 0)"
			   "              FROM pg_catalog.pg_stat_activity a"
			   "             WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_catalog.pg_backend_pid()),"
			   " 'oldest_xmin_age', (SELECT pg_catalog.max(pg_catalog.age(a.backend_xmin))"
			   "              FROM pg_catalog.pg_stat_activity a WHERE a.pid <> pg_catalog.pg_backend_pid()))::text",
			   0, NULL);
	PrmExecute(stats_plan, NULL, NULL, true, 1);
	stats = PrmGetText(0, 1);
	result = DirectFunctionCall1(jsonb_in,
								 CStringGetDatum(psprintf("%s", stats)));
	result = DirectFunctionCall2(jsonb_concat, result,
								 DirectFunctionCall1(jsonb_in,
													 CStringGetDatum(psprintf("{\"claim_probe_ms\": %.3f}", probe_ms))));
	result = SPI_datumTransfer(result, false, -1);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}
