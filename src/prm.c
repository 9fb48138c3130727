/*-------------------------------------------------------------------------
 *
 * prm.c
 *	  Module entry point, settings and the helpers every capability shares:
 *	  argument checks, the tenancy check, prepared SPI statements and events.
 *
 * Tenancy: prm's functions are SECURITY DEFINER, so they see every row.  Each
 * one therefore calls PrmRequireOrgAccess() before touching an organization's
 * rows.  The check is made for the *outer* user (GetOuterUserId), i.e. the role
 * that called the function, and it passes when that role is a superuser, has
 * the privileges of the extension's owner, or has been given a level on the
 * organization through prm.grant_access (table prm.org_access).
 *
 * Events: PrmEmitEvent writes a row to prm.event and wakes listeners of the
 * "prm_event" channel (PrmNotifyOnce, notify_relay.c: at most one
 * notification per transaction and channel, whatever the number of changes).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/resowner.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "prm.h"

PG_MODULE_MAGIC;

void _PG_init(void);

char *prm_default_region = NULL;
bool  prm_notify_events = true;
bool  prm_grant_table_access = true;

/* channels notified in the current transaction (reset at transaction end) */
/*
 * SPI connections opened inside a read-only function (PrmSpiConnectReadOnly)
 * and not yet finished; while any is, statements run read-only: with the
 * caller's snapshot, as a STABLE function must, and refused if they write.
 * Reset at the end of a (sub)transaction that an error cut short.
 */
static int spi_read_only_depth = 0;

static void PrmXactCallback(XactEvent event, void *arg);
static void PrmSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
							   SubTransactionId parentSubid, void *arg);

/* Module load: define the settings every backend needs, then the worker's. */
void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	/*
	 * The (sub)transaction callbacks reset per-transaction state (the
	 * channels notified, the read-only SPI depth): registered at load, so
	 * that even a backend whose first prm call fails is reset.
	 */
	RegisterXactCallback(PrmXactCallback, NULL);
	RegisterSubXactCallback(PrmSubXactCallback, NULL);
	PrmRelayInit();

	DefineCustomStringVariable("prm.default_region",
							   "Region (ISO 3166 alpha-2) used to read national phone numbers.",
							   "An organization's setting phone_region overrides it.",
							   &prm_default_region,
							   "US",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("prm.notify_events",
							 "Whether state changes send NOTIFY prm_event.",
							 "Turn this off when nobody listens to prm_event.  Without a notifier "
							 "(prm.notify_relay), every NOTIFYing transaction commits behind one "
							 "cluster-wide lock.  Outbox notifications (prm_outbox_<channel>) are always sent.",
							 &prm_notify_events, true, PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("prm.grant_table_access",
							 "Whether prm.grant_access gives roles SELECT on prm's tables and views.",
							 "Off: roles read only through prm's functions, which authorise every read; "
							 "row-level security then has nothing to filter, and EXPLAIN and table "
							 "statistics of prm's tables are out of their reach.  Takes effect for a "
							 "role at its next grant_access or revoke_access, or for all at "
							 "prm.sync_access_privileges().",
							 &prm_grant_table_access, true, PGC_SUSET, 0,
							 NULL, NULL, NULL);

	PrmWorkerInit();
}

/* Raise 22004 when argument argno is NULL. */
void
PrmArgNotNull(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be NULL", name)));
}

/* Reject a text longer than maxlen characters. */
void
PrmCheckTextLength(const char *value, const char *name, int maxlen)
{
	int len = pg_mbstrlen(value);

	if (len > maxlen)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long", name),
				 errdetail("It has %d characters; at most %d are accepted.",
						   len, maxlen)));
}

/* A required, non-blank text argument of at most maxlen characters. */
char *
PrmTextArg(FunctionCallInfo fcinfo, int argno, const char *name, int maxlen)
{
	char	   *value;
	const char *p;

	PrmArgNotNull(fcinfo, argno, name);
	value = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	PrmCheckTextLength(value, name, maxlen);
	for (p = value; *p; p++)
		if (!isspace((unsigned char) *p))
			return value;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s must not be empty", name)));
	return NULL; /* keep compiler quiet */
}

/* An optional text argument: NULL stays NULL, blank becomes NULL. */
char *
PrmTextArgOrNull(FunctionCallInfo fcinfo, int argno, const char *name,
				 int maxlen)
{
	char	   *value;
	const char *p;

	if (PG_ARGISNULL(argno))
		return NULL;
	value = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	PrmCheckTextLength(value, name, maxlen);
	for (p = value; *p; p++)
		if (!isspace((unsigned char) *p))
			return value;
	return NULL;
}

/* one entry of the time zone name cache: lower-cased name -> IANA name */
typedef struct TzNameEntry
{
	char key[TZ_STRLEN_MAX + 1];
	char name[TZ_STRLEN_MAX + 1];
} TzNameEntry;

static HTAB *tz_names = NULL;

/* Load the names of pg_timezone_names once per backend. */
static void
PrmLoadTimezoneNames(void)
{
	HASHCTL ctl;
	HTAB   *names;
	uint64	i;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = TZ_STRLEN_MAX + 1;
	ctl.entrysize = sizeof(TzNameEntry);
	ctl.hcxt = TopMemoryContext;
	names = hash_create("prm time zone names", 1024, &ctl,
						HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	PrmSpiConnect();
	if (SPI_execute("SELECT name FROM pg_catalog.pg_timezone_names", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_timezone_names");
	for (i = 0; i < SPI_processed; i++)
	{
		char		*name = PrmGetText(i, 1);
		char		*key;
		TzNameEntry *entry;

		if (strlen(name) > TZ_STRLEN_MAX)
			continue;
		key = asc_tolower(name, strlen(name));
		entry = hash_search(names, key, HASH_ENTER, NULL);
		strlcpy(entry->name, name, sizeof(entry->name));
	}
	PrmSpiFinish();
	tz_names = names;
}

/*
 * Check that tzname is an IANA time zone name PostgreSQL knows, in any
 * letter case; return its proper spelling.  POSIX rules such as "FOO5",
 * which SET TIME ZONE would also accept, are refused.
 */
char *
PrmValidateTimezone(const char *tzname)
{
	TzNameEntry *entry = NULL;

	PrmCheckTextLength(tzname, "time zone", 64);
	if (tz_names == NULL)
		PrmLoadTimezoneNames();
	if (strlen(tzname) <= TZ_STRLEN_MAX)
		entry = hash_search(tz_names, asc_tolower(tzname, strlen(tzname)),
							HASH_FIND, NULL);
	if (entry == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" is not recognized", tzname),
				 errhint("Use an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"; see pg_timezone_names.")));
	return pstrdup(entry->name);
}

/* Reject an e-mail address that cannot be one. */
void
PrmCheckEmail(const char *email)
{
	const char *at = strchr(email, '@');
	const char *p;

	PrmCheckTextLength(email, "e-mail address", 254);
	for (p = email; *p; p++)
		if (isspace((unsigned char) *p) || iscntrl((unsigned char) *p) ||
			*p == '<' || *p == '>' || *p == ',' || *p == ';' || *p == '"')
			break;
	if (*p != '\0' || at == NULL || at == email || strchr(at + 1, '@') != NULL ||
		strchr(at + 1, '.') == NULL || at[1] == '.' ||
		email[strlen(email) - 1] == '.')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("e-mail address \"%s\" is not valid", email),
				 errhint("Write it as name@example.org.")));
}

/* Access levels by name, in the order of PrmAccessLevel. */
static const char *const level_names[] = {
	"sender", "webhook", "readonly", "staff", "admin"};

/* Parse an access level name, raising 22023 for an unknown one. */
PrmAccessLevel
PrmParseLevel(const char *level)
{
	int i;

	for (i = 0; i < (int) lengthof(level_names); i++)
		if (strcmp(level, level_names[i]) == 0)
			return (PrmAccessLevel) i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("access level \"%s\" is not recognized", level),
			 errhint("Use one of admin, staff, readonly, webhook, sender.")));
	return PRM_LEVEL_READONLY; /* keep compiler quiet */
}

/* The name of an access level. */
const char *
PrmLevelName(PrmAccessLevel level)
{
	Assert(level >= 0 && level < lengthof(level_names));
	return level_names[level];
}

/*
 * Does a granted level allow an action that needs the required level?
 * readonly < staff < admin; staff and admin may also do what webhook and
 * sender roles do, but webhook and sender roles may do nothing else.
 */
bool
PrmLevelSatisfies(PrmAccessLevel granted, PrmAccessLevel required)
{
	if (granted == required)
		return true;
	if (granted == PRM_LEVEL_SENDER || granted == PRM_LEVEL_WEBHOOK)
		return false;
	if (required == PRM_LEVEL_SENDER || required == PRM_LEVEL_WEBHOOK)
		return granted >= PRM_LEVEL_STAFF;
	return granted >= required;
}

/* Is the calling role a superuser or a member of the extension's owner? */
bool
PrmCallerIsPrivileged(void)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[1];
	bool			  isnull;

	if (superuser_arg(GetOuterUserId()))
		return true;
	PrmPrepare(&plan,
			   "SELECT pg_catalog.pg_has_role($1, e.extowner, 'USAGE')"
			   "  FROM pg_catalog.pg_extension e WHERE e.extname = 'prm'",
			   1, (Oid[]){OIDOID});
	values[0] = ObjectIdGetDatum(GetOuterUserId());
	if (PrmExecute(plan, values, NULL, true, 1) != 1)
		return false;
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull)) &&
		   !isnull;
}

/*
 * May the calling role act on organization org_id at the given level?
 * False as well when the organization does not exist.  Must run inside SPI.
 */
bool
PrmHasOrgAccess(int64 org_id, PrmAccessLevel level)
{
	static SPIPlanPtr exists_plan = NULL;
	static SPIPlanPtr level_plan = NULL;
	Datum			  values[2];
	uint64			  i;

	if (PrmCallerIsPrivileged())
	{
		PrmPrepare(&exists_plan,
				   "SELECT 1 FROM prm.organization o WHERE o.id = $1",
				   1, (Oid[]){INT8OID});
		values[0] = Int64GetDatum(org_id);
		return PrmExecute(exists_plan, values, NULL, true, 1) > 0;
	}

	PrmPrepare(&level_plan,
			   "SELECT a.level FROM prm.org_access a"
			   " WHERE a.org_id = $1"
			   "   AND pg_catalog.pg_has_role($2, a.role_id, 'USAGE')",
			   2, (Oid[]){INT8OID, OIDOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = ObjectIdGetDatum(GetOuterUserId());
	PrmExecute(level_plan, values, NULL, true, 0);
	for (i = 0; i < SPI_processed; i++)
		if (PrmLevelSatisfies(PrmParseLevel(PrmGetText(i, 1)), level))
			return true;
	return false;
}

/*
 * Raise unless the calling role may act on organization org_id at the given
 * level.  A role without access learns nothing about whether the
 * organization exists: it gets 42501 either way; a privileged caller gets
 * P0002 for an organization that does not exist.  Must run inside SPI.
 */
void
PrmRequireOrgAccess(int64 org_id, PrmAccessLevel level)
{
	if (PrmHasOrgAccess(org_id, level))
		return;
	if (PrmCallerIsPrivileged())
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("organization %lld does not exist", (long long) org_id)));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for organization %lld",
					(long long) org_id),
			 errdetail("This action needs the \"%s\" level on the organization.",
					   PrmLevelName(level)),
			 errhint("An administrator of the organization can give it with prm.grant_access().")));
}

/*
 * Serialise one kind of work of an organization (purpose: 'sync',
 * 'placements'): lock its row in prm.org_mutex until the transaction ends,
 * creating the row on first use.  Unlike an advisory lock on a public key, no
 * role without prm's rights can take or hold it.  Call after the access
 * check.  Must run inside SPI.
 */
void
PrmLockOrgMutex(int64 org_id, const char *purpose)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	Datum			  values[2];

	PrmPrepare(&lock_plan,
			   "SELECT 1 FROM prm.org_mutex m"
			   " WHERE m.org_id = $1 AND m.purpose = $2 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, TEXTOID});
	PrmPrepare(&insert_plan,
			   "INSERT INTO prm.org_mutex (org_id, purpose) VALUES ($1, $2)"
			   " ON CONFLICT DO NOTHING",
			   2, (Oid[]){INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(purpose);
	if (PrmExecute(lock_plan, values, NULL, false, 0) == 1)
		return;
	/* first use: create the row (waits for a concurrent creator), lock it */
	PrmExecute(insert_plan, values, NULL, false, 0);
	if (PrmExecute(lock_plan, values, NULL, false, 0) != 1)
		elog(ERROR, "could not lock the %s mutex of organization %lld",
			 purpose, (long long) org_id);
}

/*
 * Refuse to run trigger function fname unless it was fired as a trigger
 * (39P01) on prm's own table relname (42809).  prm's trigger functions read
 * columns by name and type; on any other relation, a temporary table with
 * the same column names and other types, say, they would misread memory.
 */
void
PrmCheckTrigger(FunctionCallInfo fcinfo, const char *fname,
				const char *relname)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	 rel;
	char		*nspname;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function prm.%s() was not called by the trigger manager", fname),
				 errdetail("It is a trigger function of prm.%s.", relname)));
	rel = trigdata->tg_relation;
	nspname = get_namespace_name(RelationGetNamespace(rel));
	if (nspname == NULL || strcmp(nspname, "prm") != 0 ||
		strcmp(RelationGetRelationName(rel), relname) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("function prm.%s() can only be used as a trigger on prm.%s",
						fname, relname),
				 errdetail("It was fired for relation \"%s\".",
						   RelationGetRelationName(rel))));
}

/* Prepare sql once per backend and keep the plan. */
SPIPlanPtr
PrmPrepare(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr plan;

	if (*cache != NULL)
		return *cache;
	plan = SPI_prepare(sql, nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	*cache = plan;
	return plan;
}

/*
 * Prepare a query for a cursor once per backend, with cursor options (such
 * as CURSOR_OPT_FAST_PLAN, for queries read only in part), and keep it.
 */
SPIPlanPtr
PrmPrepareCursor(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes,
				 int options)
{
	SPIPlanPtr plan;

	if (*cache != NULL)
		return *cache;
	plan = SPI_prepare_cursor(sql, nargs, argtypes, options);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare_cursor failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	*cache = plan;
	return plan;
}

/* Run a prepared plan; return the number of rows processed. */
int
PrmExecute(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only,
		   long count)
{
	int rc;

	/*
	 * Reads inside prm's volatile functions must see the function's own
	 * earlier writes, so their statements run with a fresh snapshot (the
	 * caller's read_only is a statement of intent only); inside a read-only
	 * function every statement runs read-only.
	 */
	(void) read_only;
	rc = SPI_execute_plan(plan, values, nulls, spi_read_only_depth > 0, count);

	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
	return (int) SPI_processed;
}

/* Column col (1-based) of result row as int64. */
int64
PrmGetInt64(int row, int col, bool *isnull)
{
	Datum d = SPI_getbinval(SPI_tuptable->vals[row],
							SPI_tuptable->tupdesc, col, isnull);

	return *isnull ? 0 : DatumGetInt64(d);
}

/* Column col (1-based) of result row as a palloc'd C string, or NULL. */
char *
PrmGetText(int row, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);
}

/* SPI_connect with error checking. */
void
PrmSpiConnect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (spi_read_only_depth > 0)
		spi_read_only_depth++;
}

/* SPI_connect for a STABLE or IMMUTABLE function: its statements run read-only. */
void
PrmSpiConnectReadOnly(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	spi_read_only_depth++;
}

/* Whether prm's statements now run read-only, with the caller's snapshot. */
bool
PrmSpiIsReadOnly(void)
{
	return spi_read_only_depth > 0;
}

/* SPI_finish with error checking. */
void
PrmSpiFinish(void)
{
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	if (spi_read_only_depth > 0)
		spi_read_only_depth--;
}

/* Forget the channels notified once the transaction ends. */
static void
PrmXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			spi_read_only_depth = 0;
			break;
		default:
			break;
	}
}

/* A rolled back subtransaction may have left the read-only depth unbalanced. */
static void
PrmSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
				   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		spi_read_only_depth = 0; /* an error left it unbalanced: be less strict */
}

/*
 * The patient an event is about, from its entity: the patient itself, or the
 * patient_id of the entity's row (0: none, or an entity about no patient).
 * Each entity's lookup is prepared when first needed, so an extension
 * script's events never name a table that does not exist yet.
 */
typedef struct EventEntity
{
	const char *entity;
	const char *sql;
	SPIPlanPtr	plan;
} EventEntity;

/*
 * Has table prm.relname the column?  Syscache lookups only: how the library
 * tells a later release's schema from an older one's (the library is
 * updated before ALTER EXTENSION UPDATE runs).
 */
bool
PrmHasColumn(const char *relname, const char *column)
{
	Oid nsp = get_namespace_oid("prm", true);
	Oid rel = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;

	return OidIsValid(rel) && get_attnum(rel, column) != InvalidAttrNumber;
}

/* Has prm.event the patient_id column (0.3.0 on)? */
static bool
EventHasPatient(void)
{
	return PrmHasColumn("event", "patient_id");
}

static int64
EventPatient(int64 org_id, const char *entity, int64 entity_id)
{
#define EVENT_LOOKUP(table) \
	"SELECT x.patient_id FROM prm." table " x WHERE x.org_id = $1 AND x.id = $2"
	static EventEntity entities[] = {
		{"appointment", EVENT_LOOKUP("appointment"), NULL},
		{"waitlist_entry", EVENT_LOOKUP("waitlist_entry"), NULL},
		{"offer", EVENT_LOOKUP("offer"), NULL},
		{"outbound_message", EVENT_LOOKUP("outbound_message"), NULL},
		{"inbound_message", EVENT_LOOKUP("inbound_message"), NULL},
		{"conversation", EVENT_LOOKUP("conversation"), NULL},
		{"ticket", EVENT_LOOKUP("ticket"), NULL},
		{"alert", EVENT_LOOKUP("alert"), NULL},
		{"reminder", EVENT_LOOKUP("reminder"), NULL},
		{"reminder_occurrence", EVENT_LOOKUP("reminder_occurrence"), NULL},
		{"placement_request", EVENT_LOOKUP("placement_request"), NULL},
		{"journey_instance", EVENT_LOOKUP("journey_instance"), NULL},
	};
#undef EVENT_LOOKUP
	Datum values[2] = {Int64GetDatum(org_id), Int64GetDatum(entity_id)};
	bool  isnull;
	int	  i;

	if (strcmp(entity, "patient") == 0)
		return entity_id;
	for (i = 0; i < (int) lengthof(entities); i++)
	{
		int64 patient_id;

		if (strcmp(entity, entities[i].entity) != 0)
			continue;
		PrmPrepare(&entities[i].plan, entities[i].sql, 2, (Oid[]){INT8OID, INT8OID});
		if (PrmExecute(entities[i].plan, values, NULL, false, 1) == 0)
			return 0;
		patient_id = PrmGetInt64(0, 1, &isnull);
		return isnull ? 0 : patient_id;
	}
	return 0;
}

/*
 * Record a state change in prm.event, with the calling role as actor, and
 * wake the listeners of "prm_event".  Must run inside SPI.
 */
void
PrmEmitEvent(int64 org_id, const char *kind, const char *entity,
			 int64 entity_id, const char *payload_json)
{
	PrmEmitPatientEvent(org_id, kind, entity, entity_id, -1, payload_json);
}

/*
 * PrmEmitEvent for a caller that knows the patient the entity is about
 * (0: none), which spares the look-up; -1: look it up.
 */
void
PrmEmitPatientEvent(int64 org_id, const char *kind, const char *entity, int64 entity_id,
					int64 patient_id, const char *payload_json)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr old_plan = NULL;
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;

	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(kind);
	values[2] = CStringGetTextDatum(entity);
	values[3] = Int64GetDatum(entity_id);
	if (payload_json)
		values[4] = CStringGetTextDatum(payload_json);
	else
		nulls[4] = 'n';
	values[5] = CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false));

	/*
	 * The library also serves schemas older than 0.3.0 (before ALTER
	 * EXTENSION UPDATE), whose prm.event has no patient_id.
	 */
	if (!EventHasPatient())
	{
		PrmPrepare(&old_plan,
				   "INSERT INTO prm.event (org_id, kind, entity, entity_id, payload, actor)"
				   " VALUES ($1, $2, $3, $4, coalesce($5::pg_catalog.jsonb, '{}'), $6)",
				   6, (Oid[]){INT8OID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID});
		PrmExecute(old_plan, values, nulls, false, 0);
		patient_id = 0;
	}
	else
	{
		if (patient_id < 0)
			patient_id = EventPatient(org_id, entity, entity_id);
		PrmPrepare(&plan,
				   "INSERT INTO prm.event (org_id, kind, entity, entity_id, payload, actor, patient_id)"
				   " VALUES ($1, $2, $3, $4, coalesce($5::pg_catalog.jsonb, '{}'), $6, $7) RETURNING id",
				   7, (Oid[]){INT8OID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, INT8OID});
		values[6] = Int64GetDatum(patient_id);
		nulls[6] = patient_id ? ' ' : 'n';
		PrmExecute(plan, values, nulls, false, 0);
	}
	if (prm_notify_events)
		PrmNotifyOnce("prm_event");

	/*
	 * Journeys react to events about a patient -- not while an extension
	 * script runs: an update's own events come before the journey tables.
	 */
	if (patient_id && !creating_extension)
		PrmJourneyOnEvent(org_id, PrmGetInt64(0, 1, &isnull), kind, patient_id, payload_json);
}

/* s as a quoted, escaped JSON string (palloc'd). */
char *
PrmJsonString(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, s);
	return buf.data;
}
