/*-------------------------------------------------------------------------
 *
 * fhir.c
 *	  prm.fhir_resource(): one FHIR R4 resource of an organization by type
 *	  and id, read from the FHIR views of src/v0.3.0/96_fhir.sql (which
 *	  hold the mapping; this file only picks the view and checks access).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_fhir_resource);

/* resource types and their views, in the same order */
static const char *const fhir_types[] = {"Patient", "Practitioner", "Schedule",
										 "Appointment", "Slot", "Communication"};
static const char *const fhir_views[] = {"fhir_patient", "fhir_practitioner", "fhir_schedule",
										 "fhir_appointment", "fhir_slot", "fhir_communication"};

/*
 * prm.fhir_resource(org_id, resource_type, id) RETURNS jsonb
 */
Datum
prm_fhir_resource(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plans[lengthof(fhir_types)];
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *type = PrmTextArg(fcinfo, 1, "resource_type", 40);
	char			 *id = PrmTextArg(fcinfo, 2, "id", 64);
	Datum			  values[2];
	bool			  isnull;
	Datum			  result;
	int				  t;

	StaticAssertStmt(lengthof(fhir_types) == lengthof(fhir_views), "one view per type");
	for (t = 0; t < (int) lengthof(fhir_types); t++)
		if (strcmp(type, fhir_types[t]) == 0)
			break;
	if (t == (int) lengthof(fhir_types))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("FHIR resource type \"%s\" is not served by prm", type),
				 errhint("Use Patient, Practitioner, Schedule, Appointment, Slot or Communication.")));
	PrmSpiConnectReadOnly();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_READONLY);
	PrmPrepare(&plans[t],
			   psprintf("SELECT v.resource FROM prm.%s v WHERE v.org_id = $1 AND v.id = $2", fhir_views[t]),
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(id);
	if (PrmExecute(plans[t], values, NULL, true, 1) == 0)
	{
		PrmSpiFinish();
		PG_RETURN_NULL();
	}
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	Assert(!isnull);
	result = SPI_datumTransfer(result, false, -1);
	PrmSpiFinish();
	PG_RETURN_DATUM(result);
}
