/*-------------------------------------------------------------------------
 *
 * outbox_ack.c
 *	  The outbox's batch acknowledgement, prm.mark_messages_sent: a sender
 *	  that claimed a batch with prm.claim_messages reports the whole batch
 *	  sent in one call (one statement), with each message's lease token.
 *
 * The rules are mark_message_sent's, for every message of the batch:
 *	- a message is acknowledged only while the lease given is its current
 *	  one (status 'sending', the same lease_token); one whose lease ran out
 *	  and that was handed on is not touched, and its id is returned, so the
 *	  sender knows which of its sends someone else now reports on;
 *	- the caller must hold the sender level (or staff, admin) on the
 *	  message's organization: a message of another organization is refused
 *	  with 42501, an id that does not exist with P0002, and either refusal
 *	  changes nothing (the whole call is rolled back);
 *	- bad input (NULL arrays or elements, arrays of different lengths, more
 *	  than 1000 messages, an id twice, a provider id over 200 characters)
 *	  is refused before anything is read.
 * Unlike mark_message_sent, a lease token is always needed: the admin's
 * acknowledgement without a lease is one message at a time, on record.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "outbox.h"

PG_FUNCTION_INFO_V1(prm_mark_messages_sent);

#define OUTBOX_MAX_BATCH 1000

/*
 * Argument argno as a one-dimensional array of at most OUTBOX_MAX_BATCH
 * elements, none of them NULL; returns its elements and sets *n.
 */
static Datum *
OutboxBatchArg(FunctionCallInfo fcinfo, int argno, const char *name, Oid elemtype, int *n)
{
	ArrayType *arr;
	Datum	  *elems;
	bool	  *nulls;
	int16	   typlen;
	bool	   typbyval;
	char	   typalign;
	int		   i;

	PrmArgNotNull(fcinfo, argno, name);
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", name)));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign, &elems, &nulls, n);
	if (*n > OUTBOX_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s has %d elements; at most %d are accepted", name, *n, OUTBOX_MAX_BATCH),
				 errhint("Acknowledge at most one claim's batch at a time.")));
	for (i = 0; i < *n; i++)
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("element %d of %s is NULL", i + 1, name)));
	return elems;
}

static int
OutboxCompareInt64(const void *a, const void *b)
{
	int64 x = *(const int64 *) a;
	int64 y = *(const int64 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * Why the message ids left over by the acknowledgement were not
 * acknowledged: raise for one that does not exist (P0002) or that the
 * caller may not touch (42501); the others (a lease no longer held, a
 * message no longer being sent) are returned as refused.
 */
static void
OutboxExplainRefused(ArrayType *leftover, Tuplestorestate *out, TupleDesc desc)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	int64			 *ids;
	int64			 *orgs;
	bool			 *missing;
	uint64			  n,
		i;

	PrmPrepare(&plan,
			   "SELECT a.id, m.org_id FROM pg_catalog.unnest($1::bigint[]) WITH ORDINALITY a(id, pos)"
			   "  LEFT JOIN prm.outbound_message m ON m.id = a.id ORDER BY a.pos",
			   1, (Oid[]){INT8ARRAYOID});
	values[0] = PointerGetDatum(leftover);
	n = PrmExecute(plan, values, NULL, true, 0);
	/* copy the rows out: the access checks run queries of their own */
	ids = palloc(sizeof(int64) * (n + 1));
	orgs = palloc(sizeof(int64) * (n + 1));
	missing = palloc(sizeof(bool) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		ids[i] = PrmGetInt64(i, 1, &isnull);
		orgs[i] = PrmGetInt64(i, 2, &missing[i]);
	}
	for (i = 0; i < n; i++)
	{
		if (missing[i])
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("outbound message %lld does not exist", (long long) ids[i]),
					 errdetail("Nothing of this batch was acknowledged."),
					 errhint("Finished messages move to prm.outbound_message_history after a day.")));
		if (!PrmHasOrgAccess(orgs[i], PRM_LEVEL_SENDER))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for outbound message %lld", (long long) ids[i]),
					 errdetail("The role does not hold the sender level on its organization; nothing of this batch was acknowledged."),
					 errhint("Acknowledge only the messages prm.claim_messages() gave this role.")));
	}
	for (i = 0; i < n; i++)
	{
		bool  isnull = false;
		Datum v = Int64GetDatum(ids[i]);

		tuplestore_putvalues(out, desc, &v, &isnull);
	}
}

/*
 * prm.mark_messages_sent(message_ids bigint[], provider_message_ids text[],
 *						  lease_tokens uuid[]) RETURNS SETOF bigint
 *	  Returns the ids that were not acknowledged (their lease is no longer
 *	  held); every other message of the batch is now 'sent'.
 */
Datum
prm_mark_messages_sent(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	ReturnSetInfo	 *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum			 *ids;
	Datum			 *providers;
	int				  nids,
		nproviders,
		ntokens,
		i;
	int64 *sorted;
	Datum *orgs;
	int	   norgs;
	Datum  values[4];
	char   nulls[4] = {' ', ' ', ' ', ' '};

	ids = OutboxBatchArg(fcinfo, 0, "message_ids", INT8OID, &nids);
	providers = OutboxBatchArg(fcinfo, 1, "provider_message_ids", TEXTOID, &nproviders);
	(void) OutboxBatchArg(fcinfo, 2, "lease_tokens", UUIDOID, &ntokens);
	if (nproviders != nids || ntokens != nids)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message_ids, provider_message_ids and lease_tokens must have the same length"),
				 errdetail("They have %d, %d and %d elements.", nids, nproviders, ntokens),
				 errhint("Element i of each array is about the same message.")));
	sorted = palloc(sizeof(int64) * (nids + 1));
	for (i = 0; i < nids; i++)
	{
		char *provider = TextDatumGetCString(providers[i]);

		PrmCheckTextLength(provider, "provider_message_id", 200);
		if (strspn(provider, " \t\r\n") == strlen(provider))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("element %d of provider_message_ids must not be empty", i + 1)));
		sorted[i] = DatumGetInt64(ids[i]);
	}
	qsort(sorted, nids, sizeof(int64), OutboxCompareInt64);
	for (i = 1; i < nids; i++)
		if (sorted[i] == sorted[i - 1])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("outbound message %lld is twice in message_ids", (long long) sorted[i])));

	/* SETOF bigint: a scalar, so the executor's one-column descriptor */
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (nids == 0)
		return (Datum) 0;

	PrmSpiConnect();
	orgs = OutboxCallerOrgs(PRM_LEVEL_SENDER, &norgs);

	/*
	 * One statement for the batch: the messages whose lease is the one
	 * given become 'sent'; the ids left over come back, to be explained.
	 * The organization filter keeps another organization's rows untouched.
	 * A generic plan (planned once): m.id = ANY ($1) takes the id index,
	 * and the status test is written so that the planner does not take the
	 * partial lease index instead, whose statistics (a handful of messages
	 * in flight) hide the entries of every message acknowledged since the
	 * last vacuum.
	 */
	PrmPrepareCursor(&plan,
					 "WITH a AS MATERIALIZED ("
					 "  SELECT a.id, a.provider_id, a.token"
					 "    FROM ROWS FROM (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::text[]),"
					 "                    pg_catalog.unnest($3::uuid[])) a(id, provider_id, token)),"
					 " u AS ("
					 "  UPDATE prm.outbound_message m"
					 "     SET status = 'sent', provider_message_id = a.provider_id, sent_at = pg_catalog.now(),"
					 "         lease_token = NULL, lease_expires_at = NULL, last_error = NULL,"
					 "         updated_at = pg_catalog.now()"
					 "    FROM a"
					 "   WHERE m.id = ANY ($1::bigint[]) AND m.id = a.id AND m.lease_token = a.token"
					 "     AND m.status || '' = 'sending'"
					 "     AND ($4::bigint[] IS NULL OR m.org_id = ANY ($4::bigint[]))"
					 "  RETURNING m.id)"
					 "SELECT pg_catalog.array_agg(a.id) FROM a WHERE a.id NOT IN (SELECT u.id FROM u)",
					 4, (Oid[]){INT8ARRAYOID, TEXTARRAYOID, UUIDARRAYOID, INT8ARRAYOID}, OUTBOX_GENERIC);
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	if (orgs == NULL)
	{
		nulls[3] = 'n';
		values[3] = (Datum) 0;
	}
	else
		values[3] = PointerGetDatum(construct_array(orgs, norgs, INT8OID, 8, true, TYPALIGN_DOUBLE));
	PrmExecute(plan, values, nulls, false, 0);
	{
		bool  isnull;
		Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
			ArrayType	 *leftover = DatumGetArrayTypePCopy(d);

			MemoryContextSwitchTo(old);
			OutboxExplainRefused(leftover, rsinfo->setResult, rsinfo->setDesc);
		}
	}
	PrmSpiFinish();
	return (Datum) 0;
}
