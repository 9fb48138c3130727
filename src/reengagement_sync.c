/*-------------------------------------------------------------------------
 *
 * reengagement_sync.c
 *	  Practice-system sync: prm.sync_patients and prm.sync_appointments.
 *
 * Sync.  prm.sync_patients/sync_appointments upsert records of a practice
 * system by (source, external_id).  Each record is validated in C and
 * written in a subtransaction of its own: a bad record (a data or integrity
 * error, or an id not in the organization) is rolled back and reported with
 * its reason, the others apply.  Any other error aborts the whole call.
 * Syncs of one organization are serialised by the lock on its 'sync' row
 * of prm.org_mutex (PrmLockOrgMutex), held until the transaction ends, so
 * "inserted" and "updated" are reported truthfully.  Unlike an advisory
 * lock on a public key, no role without prm's rights can take it and hang
 * the clinic's syncs.
 *
 * A first import.  On tables never analysed, a look-up of one row by its
 * key (org_id, id) -- the foreign-key checks of every record, the
 * statistics rows -- cost the same through any index led by org_id, and
 * another index won the tie: each check read all the organization's rows
 * so far.  Analysed once while small, the table is read whole instead, as
 * it should be at that size.  Either plan is kept until the statistics
 * change, which no autovacuum does inside the sync's transaction, so a
 * first sync of N records in one call cost N^2 (8,000 patients: 45 s).
 * So a sync analyses the tables it writes whose statistics counted fewer
 * rows than it brings when it started (never analysed, analysed empty or
 * small), after 100, 200, 400 ... SYNC_ANALYZE_LAST records: each time
 * they are planned again for their size, by their keys once they are
 * large enough (SyncAnalyzeNew).  A sync into a table already larger than
 * it analyses nothing.  An analysis keeps its ShareUpdateExclusiveLock on
 * the table until the sync's transaction ends: meanwhile autovacuum passes
 * the table over, and a first import of another organization at the same
 * time skips its analyses (its lock is only tried), so it stays slow.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/resowner.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_sync_patients);
PG_FUNCTION_INFO_V1(prm_sync_appointments);

/* the most records one sync call takes */
#define SYNC_MAX_RECORDS 10000

/* what became of one sync record */
typedef enum SyncOutcome
{
	SYNC_INSERTED,
	SYNC_UPDATED,
	SYNC_UNCHANGED
} SyncOutcome;

typedef SyncOutcome (*SyncRecordFn)(int64 org_id, const char *source,
									JsonbContainer *record,
									const char *external_id, void *arg);

static const char *const sync_sources[] = {"cliniko", "nookal", "halaxy", "csv"};

static const char *const appointment_statuses[] = {
	"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled",
	"noshow", "entered-in-error", "checked-in", "waitlist"};

static char		  *SyncSource(FunctionCallInfo fcinfo, int argno);
static Jsonb	  *SyncRecords(FunctionCallInfo fcinfo, int argno);
static char		  *SyncScalarText(JsonbContainer *obj, const char *key, bool required,
								  int maxlen, bool numbers_too);
static Datum	   SyncRun(FunctionCallInfo fcinfo, const char *what,
						   SyncRecordFn fn, const char *tables);
static bool		   SyncRejectable(int sqlerrcode);
static SyncOutcome SyncPatient(int64 org_id, const char *source,
							   JsonbContainer *record, const char *external_id,
							   void *arg);
static SyncOutcome SyncAppointment(int64 org_id, const char *source,
								   JsonbContainer *record,
								   const char *external_id, void *arg);
static SyncOutcome SyncOutcomeOf(void);
static void		   SyncCheckTimestamp(const char *value, const char *name);

/*
 * Refuse a time that is not ISO 8601 with a UTC offset ("2031-03-03T09:00:00
 * +11:00" or "...Z"): read any other way, it would depend on the session's
 * TimeZone and DateStyle, and a re-sync from another session would move it.
 */
static void
SyncCheckTimestamp(const char *value, const char *name)
{
	size_t		len = strlen(value);
	const char *tail;
	bool		ok = len >= 17 && isdigit((unsigned char) value[0]) &&
			  value[4] == '-' && value[7] == '-' &&
			  (value[10] == 'T' || value[10] == ' ');

	if (ok)
	{
		if (value[len - 1] == 'Z')
			ok = true;
		else
		{
			/* +HH, +HHMM or +HH:MM at the end */
			for (tail = value + len - 1; tail > value + 10 && (isdigit((unsigned char) *tail) || *tail == ':'); tail--)
				;
			ok = (*tail == '+' || *tail == '-') && (value + len - tail) >= 3;
		}
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_DATETIME_FORMAT),
				 errmsg("%s \"%s\" is not an ISO 8601 time with a UTC offset", name, value),
				 errhint("Write it as 2031-03-03T09:00:00+11:00 or 2031-03-02T22:00:00Z.")));
}

/* The source argument: one of the known practice systems, else 22023. */
static char *
SyncSource(FunctionCallInfo fcinfo, int argno)
{
	char *source = PrmTextArg(fcinfo, argno, "source", 40);
	int	  i;

	for (i = 0; i < (int) lengthof(sync_sources); i++)
		if (strcmp(source, sync_sources[i]) == 0)
			return source;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("sync source \"%s\" is not recognized", source),
			 errhint("Use cliniko, nookal, halaxy or csv.")));
	return NULL; /* keep compiler quiet */
}

/* The records argument: a JSON array of at most SYNC_MAX_RECORDS. */
static Jsonb *
SyncRecords(FunctionCallInfo fcinfo, int argno)
{
	Jsonb *records;

	PrmArgNotNull(fcinfo, argno, "records");
	records = PG_GETARG_JSONB_P(argno);
	if (!JB_ROOT_IS_ARRAY(records) || JB_ROOT_IS_SCALAR(records))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("records must be a JSON array")));
	if (JB_ROOT_COUNT(records) > SYNC_MAX_RECORDS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many records in one sync"),
				 errdetail("%u records were sent; at most %d are accepted per call.",
						   JB_ROOT_COUNT(records), SYNC_MAX_RECORDS),
				 errhint("Send them in batches.")));
	return records;
}

/*
 * A scalar field of a record as text: a string (or, with numbers_too, a
 * number).  Missing or null: NULL, or 22004 when required.  Blank strings
 * count as missing; longer than maxlen: 22001.
 */
static char *
SyncScalarText(JsonbContainer *obj, const char *key, bool required,
			   int maxlen, bool numbers_too)
{
	JsonbValue	v;
	char	   *text = NULL;
	const char *p;

	if (getKeyJsonValueFromContainer(obj, key, strlen(key), &v) != NULL &&
		v.type != jbvNull)
	{
		if (v.type == jbvString)
			text = pnstrdup(v.val.string.val, v.val.string.len);
		else if (v.type == jbvNumeric && numbers_too)
			text = DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v.val.numeric)));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("field \"%s\" must be a JSON %s", key,
							numbers_too ? "string or number" : "string")));
		for (p = text; *p && isspace((unsigned char) *p); p++)
			;
		if (*p == '\0')
			text = NULL;
	}
	if (text == NULL)
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("field \"%s\" is required", key)));
		return NULL;
	}
	PrmCheckTextLength(text, psprintf("field \"%s\"", key), maxlen);
	return text;
}

/* Errors that reject one record; any other aborts the sync. */
static bool
SyncRejectable(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_DATA_EXCEPTION ||
		   ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		   sqlerrcode == ERRCODE_NO_DATA_FOUND;
}

/* The outcome from the (id, inserted, changed) row of an upsert. */
static SyncOutcome
SyncOutcomeOf(void)
{
	bool isnull;
	bool inserted = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 2, &isnull));
	bool changed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 3, &isnull));

	if (inserted)
		return SYNC_INSERTED;
	return changed ? SYNC_UPDATED : SYNC_UNCHANGED;
}

/* Does an appointment in this status hold its provider's time? */
static bool
SyncStatusActive(const char *status)
{
	static const char *const active[] = {"proposed", "pending", "booked", "arrived",
										 "checked-in", "fulfilled"};
	int						 i;

	for (i = 0; i < (int) lengthof(active); i++)
		if (strcmp(status, active[i]) == 0)
			return true;
	return false;
}

/* The id of an appointment synced earlier under this external id, or 0. */
static int64
SyncAppointmentId(int64 org_id, const char *source, const char *external_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;

	PrmPrepare(&plan,
			   "SELECT a.id FROM prm.appointment a"
			   " WHERE a.org_id = $1 AND a.external_source = $2 AND a.external_id = $3",
			   3, (Oid[]){INT8OID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(source);
	values[2] = CStringGetTextDatum(external_id);
	if (PrmExecute(plan, values, NULL, true, 1) != 1)
		return 0;
	return PrmGetInt64(0, 1, &isnull);
}

/* Insert or update one patient record.  Inside SPI and a subtransaction. */
static SyncOutcome
SyncPatient(int64 org_id, const char *source, JsonbContainer *record,
			const char *external_id, void *arg)
{
	static SPIPlanPtr plan = NULL;
	const char		 *region = (const char *) arg;
	char			 *given = SyncScalarText(record, "given_name", true, PRM_MAX_NAME_LEN, false);
	char			 *family = SyncScalarText(record, "family_name", true, PRM_MAX_NAME_LEN, false);
	char			 *phone = SyncScalarText(record, "phone", false, 40, true);
	char			 *email = SyncScalarText(record, "email", false, 254, false);
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	if (phone)
	{
		/* the record is rejected with the rule the number breaks */
		phone = PrmNormalizePhone(phone, region);
		PrmCheckPatientPhone(org_id, phone);
	}
	if (email)
		PrmCheckEmail(email);

	PrmPrepare(&plan,
			   "WITH old AS ("
			   "  SELECT p.id, (p.given_name, p.family_name, p.phone, p.email)"
			   "         IS DISTINCT FROM ($4, $5, $6, $7) AS changed"
			   "    FROM prm.patient p"
			   "   WHERE p.org_id = $1 AND p.external_source = $2 AND p.external_id = $3),"
			   " up AS ("
			   "  INSERT INTO prm.patient AS p (org_id, external_source, external_id, given_name,"
			   "         family_name, phone, email, last_synced_at)"
			   "  VALUES ($1, $2, $3, $4, $5, $6, $7, pg_catalog.now())"
			   "  ON CONFLICT (org_id, external_source, external_id) DO UPDATE SET"
			   "         given_name = EXCLUDED.given_name, family_name = EXCLUDED.family_name,"
			   "         phone = EXCLUDED.phone, email = EXCLUDED.email,"
			   "         last_synced_at = EXCLUDED.last_synced_at,"
			   "         updated_at = CASE WHEN (p.given_name, p.family_name, p.phone, p.email)"
			   "             IS DISTINCT FROM (EXCLUDED.given_name, EXCLUDED.family_name,"
			   "                               EXCLUDED.phone, EXCLUDED.email)"
			   "             THEN pg_catalog.now() ELSE p.updated_at END"
			   "  RETURNING p.id)"
			   "SELECT up.id, old.id IS NULL, coalesce(old.changed, true)"
			   "  FROM up LEFT JOIN old ON true",
			   7, (Oid[]){INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(source);
	values[2] = CStringGetTextDatum(external_id);
	values[3] = CStringGetTextDatum(given);
	values[4] = CStringGetTextDatum(family);
	if (phone)
		values[5] = CStringGetTextDatum(phone);
	else
		nulls[5] = 'n';
	if (email)
		values[6] = CStringGetTextDatum(email);
	else
		nulls[6] = 'n';
	if (PrmExecute(plan, values, nulls, false, 0) != 1)
		elog(ERROR, "patient upsert returned no row");
	return SyncOutcomeOf();
}

/* Insert or update one appointment record.  Inside SPI and a subtransaction. */
static SyncOutcome
SyncAppointment(int64 org_id, const char *source, JsonbContainer *record,
				const char *external_id, void *arg)
{
	static SPIPlanPtr patient_plan = NULL;
	static SPIPlanPtr plan = NULL;
	char			 *patient_ext = SyncScalarText(record, "patient_external_id", true, 200, true);
	char			 *provider = SyncScalarText(record, "provider_id", true, 20, true);
	char			 *starts = SyncScalarText(record, "starts_at", true, 64, false);
	char			 *ends = SyncScalarText(record, "ends_at", true, 64, false);
	char			 *status = SyncScalarText(record, "status", false, 30, false);
	char			 *price = SyncScalarText(record, "price", false, 20, true);
	int64			  provider_id;
	int64			  patient_id;
	TimestampTz		  starts_at;
	TimestampTz		  ends_at;
	Datum			  price_num = (Datum) 0;
	Datum			  values[9];
	char			  nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	bool			  active;
	SyncOutcome		  outcome;
	int64			  appt_id;
	int64			  length;
	int				  i;

	provider_id = DatumGetInt64(DirectFunctionCall1(int8in, CStringGetDatum(provider)));
	SyncCheckTimestamp(starts, "starts_at");
	SyncCheckTimestamp(ends, "ends_at");
	starts_at = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(starts),
														ObjectIdGetDatum(InvalidOid),
														Int32GetDatum(-1)));
	ends_at = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(ends),
													  ObjectIdGetDatum(InvalidOid),
													  Int32GetDatum(-1)));
	PrmCheckFiniteTimestamp(starts_at, "starts_at");
	PrmCheckFiniteTimestamp(ends_at, "ends_at");
	if (ends_at <= starts_at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an appointment must end after it starts")));
	if (pg_sub_s64_overflow(ends_at, starts_at, &length) || length > USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an appointment cannot last longer than a day")));
	if (status == NULL)
		status = "booked";
	for (i = 0; i < (int) lengthof(appointment_statuses); i++)
		if (strcmp(status, appointment_statuses[i]) == 0)
			break;
	if (i == (int) lengthof(appointment_statuses))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("appointment status \"%s\" is not recognized", status)));
	if (price)
	{
		price_num = DirectFunctionCall3(numeric_in, CStringGetDatum(price),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		if (numeric_is_nan(DatumGetNumeric(price_num)) ||
			numeric_is_inf(DatumGetNumeric(price_num)) ||
			DatumGetBool(DirectFunctionCall2(numeric_lt, price_num,
											 NumericGetDatum(int64_to_numeric(0)))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("price \"%s\" must be a number not below zero", price)));
	}

	PrmPrepare(&patient_plan,
			   "SELECT p.id FROM prm.patient p"
			   " WHERE p.org_id = $1 AND p.external_source = $2 AND p.external_id = $3",
			   3, (Oid[]){INT8OID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(source);
	values[2] = CStringGetTextDatum(patient_ext);
	if (PrmExecute(patient_plan, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("patient \"%s\" of %s has not been synced to organization %lld",
						patient_ext, source, (long long) org_id)));
	patient_id = PrmGetInt64(0, 1, &isnull);
	/* the booking routine's steps (directory.c): lock, check, write, take slots */
	active = SyncStatusActive(status);
	PrmLockProvider(org_id, provider_id);
	if (active)
		PrmCheckProviderFree(org_id, provider_id, starts_at, ends_at,
							 SyncAppointmentId(org_id, source, external_id));

	PrmPrepare(&plan,
			   "WITH old AS ("
			   "  SELECT a.id, (a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.status, a.price)"
			   "         IS DISTINCT FROM ($4, $5, $6, $7, $8, $9::numeric(12,2)) AS changed"
			   "    FROM prm.appointment a"
			   "   WHERE a.org_id = $1 AND a.external_source = $2 AND a.external_id = $3),"
			   " up AS ("
			   "  INSERT INTO prm.appointment AS a (org_id, external_source, external_id, patient_id,"
			   "         provider_id, starts_at, ends_at, status, price, cancelled_at, last_synced_at)"
			   "  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
			   "          CASE WHEN $8 = 'cancelled' THEN pg_catalog.now() END, pg_catalog.now())"
			   "  ON CONFLICT (org_id, external_source, external_id) DO UPDATE SET"
			   "         patient_id = EXCLUDED.patient_id, provider_id = EXCLUDED.provider_id,"
			   "         starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,"
			   "         status = EXCLUDED.status, price = EXCLUDED.price,"
			   "         cancelled_at = CASE WHEN EXCLUDED.status = 'cancelled'"
			   "                             THEN coalesce(a.cancelled_at, pg_catalog.now()) END,"
			   "         last_synced_at = EXCLUDED.last_synced_at"
			   "  RETURNING a.id)"
			   "SELECT up.id, old.id IS NULL, coalesce(old.changed, true)"
			   "  FROM up LEFT JOIN old ON true",
			   9, (Oid[]){INT8OID, TEXTOID, TEXTOID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, NUMERICOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(source);
	values[2] = CStringGetTextDatum(external_id);
	values[3] = Int64GetDatum(patient_id);
	values[4] = Int64GetDatum(provider_id);
	values[5] = TimestampTzGetDatum(starts_at);
	values[6] = TimestampTzGetDatum(ends_at);
	values[7] = CStringGetTextDatum(status);
	values[8] = price_num;
	if (price == NULL)
		nulls[8] = 'n';
	if (PrmExecute(plan, values, nulls, false, 0) != 1)
		elog(ERROR, "appointment upsert returned no row");
	outcome = SyncOutcomeOf();
	appt_id = PrmGetInt64(0, 1, &isnull);
	if (active)
		PrmTakeCoveredSlots(org_id, provider_id, starts_at, ends_at, appt_id, 0);
	/* its reminders follow a moved, cancelled or new appointment */
	(void) PrmScheduleReminders(org_id, appt_id);
	return outcome;
}

/* one external id seen in a batch, and the first record that had it */
typedef struct SyncSeen
{
	char key[200 * MAX_MULTIBYTE_CHAR_LEN + 1];
	int	 index;
} SyncSeen;

/* A sync under way: its input, what fn needs, and what it found. */
typedef struct SyncBatch
{
	int64		   org_id;
	const char	  *source;
	Jsonb		  *records;
	SyncRecordFn   fn;
	char		  *region;
	HTAB		  *seen;
	MemoryContext  cxt;		 /* the function's, where the results live */
	int			  *outcomes; /* per record: a SyncOutcome, or -1 if rejected */
	char		 **ids;		 /* per record: its external id, once read */
	int			   rejected;
	StringInfoData rejections;
	int			   nfresh; /* tables whose statistics counted fewer rows than it brings */
	Oid			   fresh[3];
	int			   analyze_at; /* the record before which they are analysed next */
} SyncBatch;

/* the first and the last analysis of a first import (see the header) */
#define SYNC_ANALYZE_FIRST 100
#define SYNC_ANALYZE_LAST 6400

/*
 * Note the tables a sync writes (tables, an array literal) whose
 * statistics count fewer rows than the sync brings (count): never
 * analysed, analysed empty or small.  Inside SPI.
 */
static void
SyncFindFresh(SyncBatch *b, Datum tables, uint32 count)
{
	uint64 i;

	if (SPI_execute_with_args("SELECT c.oid FROM pg_catalog.pg_class c"
							  " WHERE c.relnamespace = 'prm'::pg_catalog.regnamespace"
							  "   AND c.relname = ANY ($1::pg_catalog.name[]) AND c.reltuples < $2",
							  2, (Oid[]){TEXTOID, FLOAT4OID}, (Datum[]){tables, Float4GetDatum((float4) count)},
							  NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the statistics of prm's tables");
	Assert(SPI_processed <= lengthof(b->fresh));
	for (i = 0; i < SPI_processed && i < lengthof(b->fresh); i++)
	{
		bool isnull;

		b->fresh[b->nfresh++] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 1, &isnull));
	}
	b->analyze_at = SYNC_ANALYZE_FIRST;
}

/* ANALYZE prm.<arg> unless another session holds it (for PrmRunInSubtransaction). */
static int64
SyncAnalyzeOne(void *arg)
{
	Oid	  relid = *(Oid *) arg;
	char *name = get_rel_name(relid);

	if (name == NULL || !ConditionalLockRelationOid(relid, ShareUpdateExclusiveLock))
		return 0;
	if (SPI_execute(psprintf("ANALYZE prm.%s", quote_identifier(name)), false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not analyze prm.%s", name);
	return 1;
}

/*
 * ANALYZE the tables SyncFindFresh noted (see the header).  This
 * transaction's own rows so far are sampled.  A table another session is
 * analysing or vacuuming is left alone rather than waited for.  Each runs
 * in a subtransaction of its own: an analysis that fails is a warning, not
 * the sync's failure (a cancel or timeout still ends the call).  Should the
 * group of records around it roll back later, pg_statistic rolls back with
 * it, while the sizes in pg_class (written in place) stay; the next
 * analysis comes at the next doubling either way.  Inside SPI.
 */
static void
SyncAnalyzeNew(SyncBatch *b)
{
	int i;

	for (i = 0; i < b->nfresh; i++)
	{
		int64	   analysed;
		ErrorData *edata = PrmRunInSubtransaction(SyncAnalyzeOne, &b->fresh[i], &analysed);

		if (edata != NULL)
		{
			ereport(WARNING,
					(errmsg("prm: sync could not analyze table %u: %s", b->fresh[i], edata->message)));
			FreeErrorData(edata);
		}
	}
	b->analyze_at *= 2;
	if (b->analyze_at > SYNC_ANALYZE_LAST)
		b->nfresh = 0;
}

/* The external id of record i, validated (inside the record's SPI). */
static char *
SyncExternalId(SyncBatch *b, int i, JsonbContainer **record)
{
	JsonbValue *elem = getIthJsonbValueFromContainer(&b->records->root, i);

	if (elem == NULL || elem->type != jbvBinary ||
		!JsonContainerIsObject(elem->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("record is not a JSON object")));
	*record = elem->val.binary.data;
	return SyncScalarText(*record, "external_id", true, 200, true);
}

/* Apply fn to record i (a PrmItemLoop item; it may run again after a rollback). */
static int64
SyncItem(void *ctx, int i)
{
	SyncBatch	   *b = (SyncBatch *) ctx;
	JsonbContainer *record;
	char		   *external_id = SyncExternalId(b, i, &record);
	SyncSeen	   *seen;
	bool			found;
	SyncOutcome		outcome;

	if (b->nfresh > 0 && i >= b->analyze_at)
		SyncAnalyzeNew(b);
	if (b->ids[i] == NULL)
		b->ids[i] = MemoryContextStrdup(b->cxt, external_id);
	seen = hash_search(b->seen, external_id, HASH_ENTER, &found);
	if (!found)
		seen->index = i;
	else if (seen->index != i)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("external_id \"%s\" appears earlier in this batch", external_id)));
	outcome = b->fn(b->org_id, b->source, record, external_id, b->region);
	/* the last run of a record counts: a group redone item by item overwrites */
	b->outcomes[i] = outcome;
	return 1;
}

/* Record i was rejected: note why (after its rollback). */
static void
SyncItemFailed(void *ctx, int i, ErrorData *edata)
{
	SyncBatch	 *b = (SyncBatch *) ctx;
	MemoryContext old = MemoryContextSwitchTo(b->cxt);

	b->outcomes[i] = -1;
	appendStringInfo(&b->rejections, "%s{\"index\": %d, \"external_id\": %s, \"reason\": %s%s%s}",
					 b->rejected > 0 ? ", " : "", i,
					 b->ids[i] ? PrmJsonString(b->ids[i]) : "null",
					 PrmJsonString(edata->message),
					 edata->detail ? ", \"detail\": " : "",
					 edata->detail ? PrmJsonString(edata->detail) : "");
	b->rejected++;
	MemoryContextSwitchTo(old);
}

/* Is this error a record's fault (the record is rejected, the sync goes on)? */
static bool
SyncItemError(const ErrorData *edata)
{
	return SyncRejectable(edata->sqlerrcode);
}

/*
 * The body of both syncs: check the arguments, then apply fn to each record
 * through the loop helper -- a record that fails is rolled back and
 * rejected alone, its memory freed with it -- and report.  fn gets the
 * organization's phone region as its arg; tables are those it writes, as
 * an array literal (SyncFindFresh).
 */
static Datum
SyncRun(FunctionCallInfo fcinfo, const char *what, SyncRecordFn fn, const char *tables)
{
	SyncBatch	b = {0};
	PrmItemLoop loop = {SyncItem, SyncItemFailed, &b, 0, 0, SyncItemError, true};
	HASHCTL		ctl;
	uint32		count;
	int			counts[3] = {0, 0, 0};
	int			n;
	char	   *result;

	b.org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	b.source = SyncSource(fcinfo, 1);
	b.records = SyncRecords(fcinfo, 2);
	b.fn = fn;
	b.cxt = CurrentMemoryContext;
	count = JB_ROOT_COUNT(b.records);
	b.outcomes = palloc0(sizeof(int) * (count + 1));
	b.ids = palloc0(sizeof(char *) * (count + 1));
	initStringInfo(&b.rejections);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(((SyncSeen *) 0)->key);
	ctl.entrysize = sizeof(SyncSeen);
	ctl.hcxt = b.cxt;
	b.seen = hash_create("prm sync external ids", Max(count, 16), &ctl,
						 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	PrmSpiConnect();
	PrmRequireOrgAccess(b.org_id, PRM_LEVEL_STAFF);
	b.region = MemoryContextStrdup(b.cxt, PrmOrgPhoneRegion(b.org_id));
	PrmLockOrgMutex(b.org_id, "sync");
	if (count > SYNC_ANALYZE_FIRST)
		SyncFindFresh(&b, CStringGetTextDatum(tables), count);

	n = PrmRunItems(&loop, (int) count);
	Assert(n == (int) count);
	for (; n > 0; n--)
		if (b.outcomes[n - 1] >= 0)
			counts[b.outcomes[n - 1]]++;

	result = MemoryContextStrdup(b.cxt,
								 psprintf("{\"source\": %s, \"records\": %u, \"inserted\": %d,"
										  " \"updated\": %d, \"unchanged\": %d, \"rejected\": %d,"
										  " \"rejections\": [%s]}",
										  PrmJsonString(b.source), count, counts[SYNC_INSERTED],
										  counts[SYNC_UPDATED], counts[SYNC_UNCHANGED],
										  b.rejected, b.rejections.data));
	if (counts[SYNC_INSERTED] + counts[SYNC_UPDATED] + b.rejected > 0)
		PrmEmitEvent(b.org_id, psprintf("%s_synced", what), "organization", b.org_id,
					 psprintf("{\"source\": %s, \"inserted\": %d, \"updated\": %d,"
							  " \"unchanged\": %d, \"rejected\": %d}",
							  PrmJsonString(b.source), counts[SYNC_INSERTED],
							  counts[SYNC_UPDATED], counts[SYNC_UNCHANGED], b.rejected));
	PrmSpiFinish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(result)));
}

/*
 * prm.sync_patients(org_id, source, records jsonb) RETURNS jsonb
 */
Datum
prm_sync_patients(PG_FUNCTION_ARGS)
{
	return SyncRun(fcinfo, "patients", SyncPatient, "{patient,patient_stats}");
}

/*
 * prm.sync_appointments(org_id, source, records jsonb) RETURNS jsonb
 */
Datum
prm_sync_appointments(PG_FUNCTION_ARGS)
{
	return SyncRun(fcinfo, "appointments", SyncAppointment, "{appointment,patient_stats}");
}
