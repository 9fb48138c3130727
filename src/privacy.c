/*-------------------------------------------------------------------------
 *
 * privacy.c
 *	  A patient's data on request: prm.export_patient (everything prm holds
 *	  about them, as jsonb, audited in the server log as well) and
 *	  prm.erase_patient (anonymisation), and the retention step that drops
 *	  old history.
 *
 * Erasure anonymises rather than deletes: appointments, offers and messages
 * stay as rows, so the organization's figures, the fill analytics and the
 * audit trail keep their shape, but nothing in them identifies the patient
 * any more.  The erasure itself is an event (without personal data).
 *
 * The audit of an export.  An export hands personal data to the caller the
 * moment it returns, whether or not the caller's transaction commits, and
 * PostgreSQL has no autonomous transactions: an audit row in prm.event is
 * rolled back with the export (BEGIN; SELECT prm.export_patient(...);
 * ROLLBACK; leaves none).  So the export is also written to the server log,
 * which no rollback takes back: a LOG line "prm audit: ..." with the role
 * (and the session user when it differs), the organization, the patient and
 * the time, and no personal data.  Refusing exports inside a transaction
 * block would not have been enough: a statement that fails after the export
 * returned (SELECT prm.export_patient(1, 1), 1/0) rolls back its audit row
 * all the same, and pgTAP suites and applications run exports in
 * transactions.  The event stays as well: it is what a clinic's own audit
 * queries read.
 *
 * Retention (setting retention_days, default 730): events, inbound messages
 * and archived outbound messages older than that are deleted by the jobs,
 * a bounded number per run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_export_patient);
PG_FUNCTION_INFO_V1(prm_erase_patient);

static void PrivacyLogExport(int64 org_id, int64 patient_id);

/* rows deleted at most per table and run by the retention step */
#define RETENTION_BATCH 5000

/*
 * prm.export_patient(org_id, patient_id) RETURNS jsonb
 */
Datum
prm_export_patient(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	Datum			  values[2];
	bool			  isnull;
	Datum			  result;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_build_object("
			   " 'exported_at', pg_catalog.now(),"
			   " 'patient', (SELECT pg_catalog.to_jsonb(p) FROM prm.patient p WHERE p.org_id = $1 AND p.id = $2),"
			   " 'appointments', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(a) ORDER BY a.id)"
			   "     FROM prm.appointment a WHERE a.org_id = $1 AND a.patient_id = $2), '[]'),"
			   " 'waitlist_entries', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(w) ORDER BY w.id)"
			   "     FROM prm.waitlist_entry w WHERE w.org_id = $1 AND w.patient_id = $2), '[]'),"
			   " 'offers', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(o) - 'token' ORDER BY o.id)"
			   "     FROM prm.offer o WHERE o.org_id = $1 AND o.patient_id = $2), '[]'),"
			   " 'messages_out', coalesce((SELECT pg_catalog.jsonb_agg(x ORDER BY x->>'created_at') FROM ("
			   "     SELECT pg_catalog.to_jsonb(m) - 'lease_token' AS x FROM prm.outbound_message m"
			   "      WHERE m.org_id = $1 AND m.patient_id = $2"
			   "     UNION ALL"
			   "     SELECT pg_catalog.to_jsonb(h) - 'lease_token' FROM prm.outbound_message_history h"
			   "      WHERE h.org_id = $1 AND h.patient_id = $2) y), '[]'),"
			   " 'messages_in', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(i) ORDER BY i.id)"
			   "     FROM prm.inbound_message i WHERE i.org_id = $1 AND i.patient_id = $2), '[]'),"
			   " 'placement_requests', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(r) ORDER BY r.id)"
			   "     FROM prm.placement_request r WHERE r.org_id = $1 AND r.patient_id = $2), '[]'),"
			   " 'statistics', (SELECT pg_catalog.to_jsonb(s) FROM prm.patient_stats s"
			   "     WHERE s.org_id = $1 AND s.patient_id = $2),"
			   " 'events', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(e) ORDER BY e.id)"
			   "     FROM prm.event e WHERE e.org_id = $1 AND e.entity = 'patient' AND e.entity_id = $2), '[]'))",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	PrmExecute(plan, values, NULL, true, 1);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	Assert(!isnull);
	result = SPI_datumTransfer(result, false, -1);
	PrivacyLogExport(org_id, patient_id);
	PrmEmitEvent(org_id, "patient_exported", "patient", patient_id, NULL);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * Write the audit line of an export to the server log: role, organization,
 * patient and time (ISO 8601 in UTC, whatever the session's DateStyle and
 * time zone), no personal data.
 */
static void
PrivacyLogExport(int64 org_id, int64 patient_id)
{
	Oid		  role = GetOuterUserId();
	Oid		  session = GetSessionUserId();
	char	  when[MAXDATELEN + 1];
	const int utc = 0;

	JsonEncodeDateTime(when, TimestampTzGetDatum(GetCurrentTimestamp()),
					   TIMESTAMPTZOID, &utc);
	ereport(LOG,
			(errmsg("prm audit: role \"%s\"%s exported patient %lld of organization %lld at %s",
					GetUserNameFromId(role, false),
					session == role ? ""
									: psprintf(" (session user \"%s\")",
											   GetUserNameFromId(session, false)),
					(long long) patient_id, (long long) org_id, when),
			 errhidestmt(true),
			 errhidecontext(true)));
}

/*
 * prm.erase_patient(org_id, patient_id) RETURNS jsonb
 */
Datum
prm_erase_patient(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr entries_plan = NULL;
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	Datum			  values[2];
	bool			  isnull;
	int				  n,
		i;
	int64 *entries;
	Datum  result;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, true);
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);

	/* open offers go back to their slots, which move on to the next patient */
	PrmPrepare(&entries_plan,
			   "SELECT w.id FROM prm.waitlist_entry w"
			   " WHERE w.org_id = $1 AND w.patient_id = $2 AND w.status = 'waiting'",
			   2, (Oid[]){INT8OID, INT8OID});
	n = PrmExecute(entries_plan, values, NULL, false, 0);
	entries = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
		entries[i] = PrmGetInt64(i, 1, &isnull);
	for (i = 0; i < n; i++)
		PrmWithdrawEntryOffers(org_id, entries[i], "patient erased");

	PrmPrepare(&plan,
			   "WITH p AS (UPDATE prm.patient p"
			   "             SET given_name = 'erased', family_name = 'erased', phone = NULL, email = NULL,"
			   "                 external_source = NULL, external_id = NULL, sms_opt_out = true,"
			   "                 opted_out_at = coalesce(p.opted_out_at, pg_catalog.now()),"
			   "                 updated_at = pg_catalog.now()"
			   "           WHERE p.org_id = $1 AND p.id = $2 RETURNING 1),"
			   "     w AS (UPDATE prm.waitlist_entry w SET status = 'removed', closed_at = pg_catalog.now()"
			   "           WHERE w.org_id = $1 AND w.patient_id = $2 AND w.status = 'waiting' RETURNING 1),"
			   "     m AS (UPDATE prm.outbound_message m"
			   "             SET body = '[erased]', to_address = '[erased]',"
			   "                 status = CASE WHEN m.status = 'queued' THEN 'cancelled' ELSE m.status END,"
			   "                 updated_at = pg_catalog.now()"
			   "           WHERE m.org_id = $1 AND m.patient_id = $2 RETURNING 1),"
			   "     h AS (UPDATE prm.outbound_message_history h SET body = '[erased]', to_address = '[erased]'"
			   "           WHERE h.org_id = $1 AND h.patient_id = $2 RETURNING 1),"
			   "     i AS (UPDATE prm.inbound_message i SET body = '[erased]', from_address = '[erased]'"
			   "           WHERE i.org_id = $1 AND i.patient_id = $2 RETURNING 1),"
			   "     r AS (UPDATE prm.placement_request r SET status = 'withdrawn'"
			   "           WHERE r.org_id = $1 AND r.patient_id = $2 AND r.status = 'open' RETURNING 1)"
			   "SELECT pg_catalog.jsonb_build_object("
			   "  'patient', (SELECT pg_catalog.count(*) FROM p),"
			   "  'waitlist_entries_closed', (SELECT pg_catalog.count(*) FROM w),"
			   "  'messages_out_blanked', (SELECT pg_catalog.count(*) FROM m) + (SELECT pg_catalog.count(*) FROM h),"
			   "  'messages_in_blanked', (SELECT pg_catalog.count(*) FROM i),"
			   "  'placement_requests_withdrawn', (SELECT pg_catalog.count(*) FROM r))",
			   2, (Oid[]){INT8OID, INT8OID});
	PrmExecute(plan, values, NULL, false, 1);
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = SPI_datumTransfer(result, false, -1);
	PrmEmitEvent(org_id, "patient_erased", "patient", patient_id, NULL);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}

/*
 * The retention step: delete events, inbound messages and archived outbound
 * messages older than each organization's retention_days, at most
 * RETENTION_BATCH rows of each per run.  Returns the rows deleted.
 */
int64
PrmApplyRetention(void)
{
	static SPIPlanPtr		 plans[3];
	static const char *const tables[3] = {"event", "inbound_message", "outbound_message_history"};
	static const char *const columns[3] = {"occurred_at", "received_at", "updated_at"};
	int64					 deleted = 0;
	int						 t;

	for (t = 0; t < 3; t++)
	{
		Datum values[1];

		PrmPrepare(&plans[t],
				   psprintf("DELETE FROM prm.%s x WHERE (x.org_id, x.id) IN ("
							"  SELECT y.org_id, y.id FROM prm.%s y JOIN prm.organization o ON o.id = y.org_id"
							"   WHERE y.%s < pg_catalog.now() - pg_catalog.make_interval(days =>"
							"           coalesce((o.settings ->> 'retention_days')::int, 730))"
							"   LIMIT $1)",
							tables[t], tables[t], columns[t]),
				   1, (Oid[]){INT4OID});
		values[0] = Int32GetDatum(RETENTION_BATCH);
		deleted += PrmExecute(plans[t], values, NULL, false, 0);
	}
	return deleted;
}
