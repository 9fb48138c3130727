/*-------------------------------------------------------------------------
 *
 * health.c
 *	  prm.health(): one report for the DBA, from the rooms that know.
 *
 * The outbox reports its queue, its table's dead tuples, the oldest open
 * transaction and a claim probe (prm_health in outbox.c); the worker
 * reports, under key "worker", whether a prm worker runs for this database
 * and when it last ran (PrmWorkerStatusJson in worker.c), and under key
 * "notifier" whether its notifier relays (notify_relay.c).  This file only
 * puts the two together, so neither room needs to know the other.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/fmgrprotos.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_health_report);

/*
 * prm.health() RETURNS jsonb
 *	  The outbox's report with the worker's under "worker".  The outbox's
 *	  part checks that the caller is a superuser or the extension owner.
 */
Datum
prm_health_report(PG_FUNCTION_ARGS)
{
	LOCAL_FCINFO(outbox_fcinfo, 0);
	Datum outbox;
	Datum worker;
	char *worker_json;

	InitFunctionCallInfoData(*outbox_fcinfo, fcinfo->flinfo, 0, InvalidOid,
							 NULL, NULL);
	outbox = prm_health(outbox_fcinfo);

	PrmSpiConnect();
	worker_json = PrmWorkerStatusJson();
	worker = DirectFunctionCall1(jsonb_in,
								 CStringGetDatum(psprintf("{\"worker\": %s, \"notifier\": %s}",
														  worker_json, PrmNotifierStatusJson())));
	worker = SPI_datumTransfer(DirectFunctionCall2(jsonb_concat, outbox, worker),
							   false, -1);
	PrmSpiFinish();
	PG_RETURN_DATUM(worker);
}
