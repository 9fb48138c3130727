/*-------------------------------------------------------------------------
 *
 * directory.c
 *	  The clinic directory: organizations, locations, providers, patients,
 *	  appointments and the slots that cancellations free.
 *
 * Invariants:
 *	- every row references rows of its own organization only: each lookup
 *	  is by (org_id, id), and the foreign keys include org_id;
 *	- a provider never holds two overlapping active appointments.  Bookings
 *	  for one provider are serialised by locking the provider row, so the
 *	  overlap check names the conflicting appointment; the exclusion
 *	  constraint appointment_no_double_booking is the backstop;
 *	- cancelling an appointment turns its time into a free slot in the same
 *	  transaction, and booking over a free slot makes it busy.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_create_organization);
PG_FUNCTION_INFO_V1(prm_add_location);
PG_FUNCTION_INFO_V1(prm_add_provider);
PG_FUNCTION_INFO_V1(prm_add_patient);
PG_FUNCTION_INFO_V1(prm_book_appointment);
PG_FUNCTION_INFO_V1(prm_cancel_appointment);
PG_FUNCTION_INFO_V1(prm_set_appointment_status);

static int64 DirectoryInsertReturningId(SPIPlanPtr plan, Datum *values,
										const char *nulls);

/* Run an INSERT ... RETURNING id plan and return the id. */
static int64
DirectoryInsertReturningId(SPIPlanPtr plan, Datum *values, const char *nulls)
{
	bool  isnull;
	int64 id;

	if (PrmExecute(plan, values, nulls, false, 0) != 1)
		elog(ERROR, "insert did not return a row");
	id = PrmGetInt64(0, 1, &isnull);
	Assert(!isnull);
	return id;
}

/*
 * Raise P0002 unless entity id exists in organization org_id; with
 * for_update, lock the row.  entity names a table of the directory.
 */
void
PrmRequireRow(int64 org_id, PrmEntity entity, int64 id, bool for_update)
{
	static SPIPlanPtr		 plans[PRM_ENTITY_COUNT][2];
	static const char *const tables[PRM_ENTITY_COUNT] = {
		"location", "provider", "patient", "appointment", "slot",
		"waitlist_entry", "offer", "outbound_message", "conversation", "staff", "ticket"};
	Datum values[2];

	Assert(entity >= 0 && entity < PRM_ENTITY_COUNT);
	PrmPrepare(&plans[entity][for_update ? 1 : 0],
			   psprintf("SELECT 1 FROM prm.%s t WHERE t.org_id = $1 AND t.id = $2%s",
						tables[entity], for_update ? " FOR NO KEY UPDATE" : ""),
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(id);
	if (PrmExecute(plans[entity][for_update ? 1 : 0], values, NULL,
				   !for_update, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("%s %lld does not exist in organization %lld",
						tables[entity], (long long) id, (long long) org_id)));
}

/*
 * prm.create_organization(name text, timezone text, sms_number text)
 *	  RETURNS bigint: a new clinic.
 */
Datum
prm_create_organization(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr taken_plan = NULL;
	char			 *name = PrmTextArg(fcinfo, 0, "name", PRM_MAX_NAME_LEN);
	char			 *tz;
	char			 *sms = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	int64			  org_id;

	PrmArgNotNull(fcinfo, 1, "timezone");
	tz = PrmValidateTimezone(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (!PG_ARGISNULL(2))
		sms = PrmNormalizePhone(text_to_cstring(PG_GETARG_TEXT_PP(2)), NULL);

	PrmSpiConnect();
	if (!PrmCallerIsPrivileged())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create an organization"),
				 errhint("Organizations are created by a superuser or the owner of the prm extension.")));
	if (sms)
	{
		PrmPrepare(&taken_plan,
				   "SELECT o.id FROM prm.organization o WHERE o.sms_number = $1",
				   1, (Oid[]){TEXTOID});
		values[0] = CStringGetTextDatum(sms);
		if (PrmExecute(taken_plan, values, NULL, true, 1) > 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("SMS number %s already belongs to another organization", sms),
					 errdetail("Inbound messages are routed by the clinic's number, so each number has one organization.")));
	}

	PrmPrepare(&plan,
			   "INSERT INTO prm.organization (name, timezone, sms_number)"
			   " VALUES ($1, $2, $3) RETURNING id",
			   3, (Oid[]){TEXTOID, TEXTOID, TEXTOID});
	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(tz);
	if (sms)
		values[2] = CStringGetTextDatum(sms);
	else
		nulls[2] = 'n';
	org_id = DirectoryInsertReturningId(plan, values, nulls);
	PrmEmitEvent(org_id, "organization_created", "organization", org_id, NULL);
	PrmSpiFinish();
	PG_RETURN_INT64(org_id);
}

/*
 * prm.add_location(org_id, name, timezone, address) RETURNS bigint
 */
Datum
prm_add_location(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *name = PrmTextArg(fcinfo, 1, "name", PRM_MAX_NAME_LEN);
	char			 *tz = PrmTextArgOrNull(fcinfo, 2, "timezone", 64);
	char			 *address = PrmTextArgOrNull(fcinfo, 3, "address", 500);
	Datum			  values[4];
	char			  nulls[4] = {' ', ' ', ' ', ' '};
	int64			  id;

	if (tz)
		tz = PrmValidateTimezone(tz);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&plan,
			   "INSERT INTO prm.location (org_id, name, timezone, address)"
			   " VALUES ($1, $2, $3, $4) RETURNING id",
			   4, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(name);
	if (tz)
		values[2] = CStringGetTextDatum(tz);
	else
		nulls[2] = 'n';
	if (address)
		values[3] = CStringGetTextDatum(address);
	else
		nulls[3] = 'n';
	id = DirectoryInsertReturningId(plan, values, nulls);
	PrmEmitEvent(org_id, "location_added", "location", id, NULL);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * prm.add_provider(org_id bigint, name text) RETURNS bigint
 */
Datum
prm_add_provider(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *name = PrmTextArg(fcinfo, 1, "name", PRM_MAX_NAME_LEN);
	Datum			  values[2];
	int64			  id;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&plan,
			   "INSERT INTO prm.provider (org_id, name) VALUES ($1, $2) RETURNING id",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(name);
	id = DirectoryInsertReturningId(plan, values, NULL);
	PrmEmitEvent(org_id, "provider_added", "provider", id, NULL);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * Raise unless e164 (normalised) may be a patient's phone in org_id: the
 * clinic's own SMS or WhatsApp number may not -- messages to it would go to the clinic,
 * and its own messages would be read as that patient's replies.  Patients
 * sharing a phone (a family) are allowed.  Inside SPI.
 */
void
PrmCheckPatientPhone(int64 org_id, const char *e164)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr sms_plan = NULL;
	Datum			  values[2];
	bool			  whatsapp = PrmHasColumn("organization", "whatsapp_number"); /* 0.3.0 on */

	if (whatsapp)
		PrmPrepare(&plan,
				   "SELECT 1 FROM prm.organization o"
				   " WHERE o.id = $1 AND $2 IN (o.sms_number, o.whatsapp_number)",
				   2, (Oid[]){INT8OID, TEXTOID});
	else
		PrmPrepare(&sms_plan, "SELECT 1 FROM prm.organization o WHERE o.id = $1 AND o.sms_number = $2",
				   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(e164);
	if (PrmExecute(whatsapp ? plan : sms_plan, values, NULL, true, 1) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("phone number %s is the organization's own SMS or WhatsApp number", e164),
				 errdetail("Messages to the patient would go to the clinic, and the clinic's own messages would be read as the patient's replies."),
				 errhint("Give the patient's own number.")));
}

/*
 * prm.add_patient(org_id, given_name, family_name, phone, email, timezone)
 *	  RETURNS bigint
 */
Datum
prm_add_patient(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *given = PrmTextArg(fcinfo, 1, "given_name", PRM_MAX_NAME_LEN);
	char			 *family = PrmTextArg(fcinfo, 2, "family_name", PRM_MAX_NAME_LEN);
	char			 *phone = PrmTextArg(fcinfo, 3, "phone", 40);
	char			 *email = PrmTextArgOrNull(fcinfo, 4, "email", 254);
	char			 *tz = PrmTextArgOrNull(fcinfo, 5, "timezone", 64);
	Datum			  values[6];
	char			  nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int64			  id;

	if (email)
		PrmCheckEmail(email);
	if (tz)
		tz = PrmValidateTimezone(tz);

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	phone = PrmNormalizePhone(phone, PrmOrgPhoneRegion(org_id));
	PrmCheckPatientPhone(org_id, phone);

	PrmPrepare(&plan,
			   "INSERT INTO prm.patient (org_id, given_name, family_name, phone, email, timezone)"
			   " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
			   6, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(given);
	values[2] = CStringGetTextDatum(family);
	values[3] = CStringGetTextDatum(phone);
	if (email)
		values[4] = CStringGetTextDatum(email);
	else
		nulls[4] = 'n';
	if (tz)
		values[5] = CStringGetTextDatum(tz);
	else
		nulls[5] = 'n';
	id = DirectoryInsertReturningId(plan, values, nulls);
	PrmEmitEvent(org_id, "patient_added", "patient", id, NULL);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * The steps every path that puts an appointment in a provider's calendar
 * takes, in this order -- booking, accepting an offer, syncing from the
 * practice system, undoing a cancellation:
 *	1. PrmLockProvider: the provider's row lock serialises the calendar
 *	   (lock order: patient, provider, slot, offer, waitlist entry);
 *	2. PrmCheckProviderFree: no other active appointment overlaps (a clear
 *	   23P01, before the exclusion constraint would say it less clearly);
 *	3. write the appointment, then PrmTakeCoveredSlots: free slots under it
 *	   are busy now and their open offers withdrawn, so no YES can book
 *	   over it later.
 */

/* Step 1: lock the provider's calendar.  Inside SPI. */
void
PrmLockProvider(int64 org_id, int64 provider_id)
{
	PrmRequireRow(org_id, PRM_ENTITY_PROVIDER, provider_id, true);
}

/*
 * Step 2: raise 23P01 unless the provider has no active appointment
 * overlapping [starts_at, ends_at) other than except_id (0: none).
 */
void
PrmCheckProviderFree(int64 org_id, int64 provider_id, TimestampTz starts_at,
					 TimestampTz ends_at, int64 except_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[5];

	PrmPrepare(&plan,
			   "SELECT a.id, a.starts_at::text, a.ends_at::text FROM prm.appointment a"
			   " WHERE a.org_id = $1 AND a.provider_id = $2 AND a.id <> $5"
			   "   AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in', 'fulfilled')"
			   "   AND pg_catalog.tstzrange(a.starts_at, a.ends_at) && pg_catalog.tstzrange($3, $4)"
			   " LIMIT 1",
			   5, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(provider_id);
	values[2] = TimestampTzGetDatum(starts_at);
	values[3] = TimestampTzGetDatum(ends_at);
	values[4] = Int64GetDatum(except_id);
	if (PrmExecute(plan, values, NULL, false, 1) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXCLUSION_VIOLATION),
				 errmsg("provider %lld is already booked at that time",
						(long long) provider_id),
				 errdetail("Appointment %s (%s to %s) overlaps the requested time.",
						   PrmGetText(0, 1), PrmGetText(0, 2), PrmGetText(0, 3)),
				 errhint("Cancel that appointment first or choose another time.")));
}

/*
 * Step 3: free slots of the provider under appointment appt_id are taken
 * now (except except_slot, the slot it fills, 0: none), and their open
 * offers withdrawn.
 */
void
PrmTakeCoveredSlots(int64 org_id, int64 provider_id, TimestampTz starts_at,
					TimestampTz ends_at, int64 appt_id, int64 except_slot)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[5];
	uint64			  i,
		n;
	int64 *taken;
	bool   isnull;

	PrmPrepare(&plan,
			   "UPDATE prm.slot s SET status = 'busy', booked_appointment_id = $5,"
			   "       filled_at = pg_catalog.now()"
			   " WHERE s.org_id = $1 AND s.provider_id = $2 AND s.status = 'free'"
			   "   AND pg_catalog.tstzrange(s.starts_at, s.ends_at) && pg_catalog.tstzrange($3, $4)"
			   " RETURNING s.id",
			   5, (Oid[]){INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(provider_id);
	values[2] = TimestampTzGetDatum(starts_at);
	values[3] = TimestampTzGetDatum(ends_at);
	values[4] = Int64GetDatum(appt_id);
	PrmExecute(plan, values, NULL, false, 0);
	n = SPI_processed;
	taken = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
		taken[i] = PrmGetInt64(i, 1, &isnull);
	for (i = 0; i < n; i++)
		if (taken[i] != except_slot)
			PrmSlotTaken(org_id, taken[i]);
}

/*
 * Insert a booked appointment after checking the patient, the provider and
 * the provider's calendar; make free slots it covers busy.  Shared by
 * book_appointment and the fill engine.  Must run inside SPI.
 */
int64
PrmBookAppointment(int64 org_id, int64 patient_id, int64 provider_id,
				   TimestampTz starts_at, TimestampTz ends_at, int64 slot_id)
{
	static SPIPlanPtr insert_plan = NULL;
	Datum			  values[6];
	char			  nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int64			  id;

	int64 length;

	PrmCheckFiniteTimestamp(starts_at, "starts_at");
	PrmCheckFiniteTimestamp(ends_at, "ends_at");
	if (ends_at <= starts_at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an appointment must end after it starts"),
				 errdetail("ends_at %s is not after starts_at %s.",
						   timestamptz_to_str(ends_at), timestamptz_to_str(starts_at))));
	if (pg_sub_s64_overflow(ends_at, starts_at, &length) || length > USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an appointment cannot last longer than a day")));

	PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	PrmLockProvider(org_id, provider_id);
	PrmCheckProviderFree(org_id, provider_id, starts_at, ends_at, 0);

	PrmPrepare(&insert_plan,
			   "INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, slot_id)"
			   " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
			   6, (Oid[]){INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = Int64GetDatum(provider_id);
	values[3] = TimestampTzGetDatum(starts_at);
	values[4] = TimestampTzGetDatum(ends_at);
	if (slot_id > 0)
		values[5] = Int64GetDatum(slot_id);
	else
		nulls[5] = 'n';
	id = DirectoryInsertReturningId(insert_plan, values, nulls);

	PrmTakeCoveredSlots(org_id, provider_id, starts_at, ends_at, id, slot_id);
	(void) PrmScheduleReminders(org_id, id);

	PrmEmitPatientEvent(org_id, "appointment_booked", "appointment", id, patient_id,
						psprintf("{\"patient_id\": %lld, \"provider_id\": %lld}",
								 (long long) patient_id, (long long) provider_id));
	return id;
}

/*
 * prm.book_appointment(org_id, patient_id, provider_id, starts_at, ends_at)
 *	  RETURNS bigint
 */
Datum
prm_book_appointment(PG_FUNCTION_ARGS)
{
	int64		org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64		patient_id = PRM_GETARG_INT64_NOTNULL(1, "patient_id");
	int64		provider_id = PRM_GETARG_INT64_NOTNULL(2, "provider_id");
	TimestampTz starts_at = PRM_GETARG_TIMESTAMPTZ_NOTNULL(3, "starts_at");
	TimestampTz ends_at = PRM_GETARG_TIMESTAMPTZ_NOTNULL(4, "ends_at");
	int64		id;

	if (TIMESTAMP_NOT_FINITE(starts_at) || TIMESTAMP_NOT_FINITE(ends_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("appointment times must be finite")));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	id = PrmBookAppointment(org_id, patient_id, provider_id, starts_at, ends_at, 0);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * Cancel an appointment, turn its time into a free slot and start filling
 * it; return the slot.  Shared by cancel_appointment and the fill engine
 * (which releases a winner's later appointment).  Must run inside SPI.
 */
int64
PrmCancelAppointment(int64 org_id, int64 appointment_id, const char *reason)
{
	static SPIPlanPtr cancel_plan = NULL;
	static SPIPlanPtr slot_plan = NULL;
	static SPIPlanPtr status_plan = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', ' '};
	int64			  slot_id;

	PrmRequireRow(org_id, PRM_ENTITY_APPOINTMENT, appointment_id, true);
	PrmPrepare(&cancel_plan,
			   "UPDATE prm.appointment a"
			   "   SET status = 'cancelled', cancelled_at = pg_catalog.now(), cancel_reason = $3"
			   " WHERE a.org_id = $1 AND a.id = $2"
			   "   AND a.status IN ('proposed', 'pending', 'booked')",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(appointment_id);
	if (reason)
		values[2] = CStringGetTextDatum(reason);
	else
		nulls[2] = 'n';
	if (PrmExecute(cancel_plan, values, nulls, false, 0) == 0)
	{
		PrmPrepare(&status_plan,
				   "SELECT a.status FROM prm.appointment a WHERE a.org_id = $1 AND a.id = $2",
				   2, (Oid[]){INT8OID, INT8OID});
		PrmExecute(status_plan, values, NULL, true, 1);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("appointment %lld cannot be cancelled", (long long) appointment_id),
				 errdetail("Its status is \"%s\"; only proposed, pending and booked appointments can be cancelled.",
						   PrmGetText(0, 1))));
	}
	(void) PrmScheduleReminders(org_id, appointment_id); /* withdraws them */

	PrmPrepare(&slot_plan,
			   "INSERT INTO prm.slot (org_id, provider_id, starts_at, ends_at, appointment_id)"
			   " SELECT a.org_id, a.provider_id, a.starts_at, a.ends_at, a.id"
			   "   FROM prm.appointment a WHERE a.org_id = $1 AND a.id = $2"
			   " RETURNING id",
			   2, (Oid[]){INT8OID, INT8OID});
	slot_id = DirectoryInsertReturningId(slot_plan, values, NULL);

	PrmEmitEvent(org_id, "appointment_cancelled", "appointment", appointment_id,
				 psprintf("{\"slot_id\": %lld}", (long long) slot_id));
	PrmSlotFreed(org_id, slot_id);
	return slot_id;
}

/*
 * prm.cancel_appointment(org_id, appointment_id, reason) RETURNS bigint
 *	  Cancel an appointment and return the free slot it leaves; offers for
 *	  the slot go out in the same transaction.
 */
Datum
prm_cancel_appointment(PG_FUNCTION_ARGS)
{
	int64 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64 appointment_id = PRM_GETARG_INT64_NOTNULL(1, "appointment_id");
	char *reason = PrmTextArgOrNull(fcinfo, 2, "reason", 500);
	int64 slot_id;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	slot_id = PrmCancelAppointment(org_id, appointment_id, reason);
	PrmSpiFinish();
	PG_RETURN_INT64(slot_id);
}

/*
 * prm.set_appointment_status(org_id, appointment_id, status) RETURNS void
 */
Datum
prm_set_appointment_status(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  appointment_id = PRM_GETARG_INT64_NOTNULL(1, "appointment_id");
	char			 *status = PrmTextArg(fcinfo, 2, "status", 30);
	Datum			  values[3];

	if (strcmp(status, "arrived") != 0 && strcmp(status, "checked-in") != 0 &&
		strcmp(status, "fulfilled") != 0 && strcmp(status, "noshow") != 0 &&
		strcmp(status, "entered-in-error") != 0 && strcmp(status, "booked") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("appointment status \"%s\" cannot be set here", status),
				 errhint("Use booked, arrived, checked-in, fulfilled, noshow or entered-in-error; cancel with prm.cancel_appointment().")));

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmRequireRow(org_id, PRM_ENTITY_APPOINTMENT, appointment_id, true);
	PrmPrepare(&plan,
			   "UPDATE prm.appointment a SET status = $3"
			   " WHERE a.org_id = $1 AND a.id = $2 AND a.status <> 'cancelled'",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(appointment_id);
	values[2] = CStringGetTextDatum(status);
	if (PrmExecute(plan, values, NULL, false, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("appointment %lld is cancelled", (long long) appointment_id),
				 errdetail("A cancelled appointment keeps its status; book a new one instead.")));
	PrmEmitEvent(org_id, "appointment_status_changed", "appointment", appointment_id,
				 psprintf("{\"status\": %s}", PrmJsonString(status)));
	(void) PrmScheduleReminders(org_id, appointment_id);
	PrmSpiFinish();
	PG_RETURN_VOID();
}
