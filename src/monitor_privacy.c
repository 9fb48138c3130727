/*-------------------------------------------------------------------------
 *
 * monitor_privacy.c
 *	  A patient's monitoring data in prm.export_patient and
 *	  prm.erase_patient (called from privacy.c), and the retention of the
 *	  activity log.
 *
 * The caregivers are people of their own: a patient's erasure deletes the
 * links to them, not them (prm.remove_caregiver removes one).  Messages to
 * caregivers carry no patient id (they are not the patient's messages and
 * count in none of the patient's statistics), so the erasure finds the ones
 * about the patient through prm.alert_notification and blanks them before it
 * deletes the alerts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "monitor.h"

/*
 * A patient's monitoring data for prm.export_patient, as jsonb keys to add
 * to the export: care circle, monitoring, activity, alerts, reminders.
 * Inside SPI.
 */
Datum
MonExportPatient(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;

	PrmPrepare(&plan,
			   "SELECT pg_catalog.jsonb_build_object("
			   " 'care_circle', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c)"
			   "       || pg_catalog.jsonb_build_object('position', l.position) ORDER BY l.position)"
			   "     FROM prm.care_link l JOIN prm.caregiver c ON c.org_id = l.org_id AND c.id = l.caregiver_id"
			   "    WHERE l.org_id = $1 AND l.patient_id = $2), '[]'),"
			   " 'monitoring', (SELECT pg_catalog.to_jsonb(m) FROM prm.monitoring m WHERE m.org_id = $1 AND m.patient_id = $2),"
			   " 'activity', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(a) ORDER BY a.occurred_at)"
			   "     FROM prm.patient_activity a WHERE a.org_id = $1 AND a.patient_id = $2), '[]'),"
			   " 'alerts', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(a) ORDER BY a.id)"
			   "     FROM prm.alert a WHERE a.org_id = $1 AND a.patient_id = $2), '[]'),"
			   " 'reminders', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(r) ORDER BY r.id)"
			   "     FROM prm.reminder r WHERE r.org_id = $1 AND r.patient_id = $2), '[]'),"
			   " 'reminder_occurrences', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(o) ORDER BY o.id)"
			   "     FROM prm.reminder_occurrence o WHERE o.org_id = $1 AND o.patient_id = $2), '[]'))",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	PrmExecute(plan, values, NULL, true, 1);
	return SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
							 false, -1);
}

/*
 * Erase a patient's monitoring data for prm.erase_patient: the messages
 * sent to caregivers about them blanked (they name the patient), then
 * links, monitoring, activity, alerts and reminders deleted, and the
 * profile fields cleared.  The caregivers stay (they are people of their
 * own; prm.remove_caregiver removes one).  Returns what changed as jsonb
 * keys to add to the erasure's result.  Inside SPI.
 */
Datum
MonErasePatient(int64 org_id, int64 patient_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;

	PrmPrepare(&plan,
			   "WITH msgs AS (SELECT n.message_id AS id FROM prm.alert_notification n"
			   "                JOIN prm.alert a ON a.org_id = n.org_id AND a.id = n.alert_id"
			   "               WHERE a.org_id = $1 AND a.patient_id = $2 AND n.message_id IS NOT NULL),"
			   " m AS (UPDATE prm.outbound_message x SET body = '[erased]',"
			   "         status = CASE WHEN x.status = 'queued' THEN 'cancelled' ELSE x.status END, updated_at = pg_catalog.now()"
			   "       WHERE x.org_id = $1 AND x.id IN (SELECT id FROM msgs) RETURNING 1),"
			   " h AS (UPDATE prm.outbound_message_history x SET body = '[erased]'"
			   "       WHERE x.org_id = $1 AND x.id IN (SELECT id FROM msgs) RETURNING 1),"
			   " l AS (DELETE FROM prm.care_link l WHERE l.org_id = $1 AND l.patient_id = $2 RETURNING 1),"
			   " mo AS (DELETE FROM prm.monitoring m WHERE m.org_id = $1 AND m.patient_id = $2 RETURNING 1),"
			   " ac AS (DELETE FROM prm.patient_activity a WHERE a.org_id = $1 AND a.patient_id = $2 RETURNING 1),"
			   " al AS (DELETE FROM prm.alert a WHERE a.org_id = $1 AND a.patient_id = $2 RETURNING 1),"
			   " oc AS (DELETE FROM prm.reminder_occurrence o WHERE o.org_id = $1 AND o.patient_id = $2 RETURNING 1),"
			   " re AS (DELETE FROM prm.reminder r WHERE r.org_id = $1 AND r.patient_id = $2 RETURNING 1),"
			   " p AS (UPDATE prm.patient p SET profile_photo_url = NULL, preferred_voice = NULL,"
			   "         communication_style = NULL, app_version = NULL, last_heartbeat_at = NULL"
			   "       WHERE p.org_id = $1 AND p.id = $2 RETURNING 1)"
			   " SELECT pg_catalog.jsonb_build_object("
			   "  'caregiver_messages_blanked', (SELECT pg_catalog.count(*) FROM m) + (SELECT pg_catalog.count(*) FROM h),"
			   "  'care_links_deleted', (SELECT pg_catalog.count(*) FROM l),"
			   "  'monitoring_deleted', (SELECT pg_catalog.count(*) FROM mo),"
			   "  'activity_deleted', (SELECT pg_catalog.count(*) FROM ac),"
			   "  'alerts_deleted', (SELECT pg_catalog.count(*) FROM al),"
			   "  'reminders_deleted', (SELECT pg_catalog.count(*) FROM re) + 0 * (SELECT pg_catalog.count(*) FROM oc)"
			   "                       + 0 * (SELECT pg_catalog.count(*) FROM p))",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	PrmExecute(plan, values, NULL, false, 1);
	return SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
							 false, -1);
}

/*
 * The retention of the activity log: delete heartbeats and activity older
 * than each organization's activity_retention_days, at most limit rows
 * (oldest first, by the BRIN index's time order).  Returns how many.
 */
int64
MonActivityRetention(int limit)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];

	PrmPrepare(&plan,
			   "DELETE FROM prm.patient_activity x WHERE x.ctid = ANY (ARRAY("
			   "  SELECT y.ctid FROM prm.patient_activity y JOIN prm.organization o ON o.id = y.org_id"
			   "   WHERE y.occurred_at < pg_catalog.now() - pg_catalog.make_interval(days =>"
			   "           coalesce((o.settings ->> 'activity_retention_days')::int, 30))"
			   "   LIMIT $1))",
			   1, (Oid[]){INT4OID});
	values[0] = Int32GetDatum(limit);
	return PrmExecute(plan, values, NULL, false, 0);
}
