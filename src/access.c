/*-------------------------------------------------------------------------
 *
 * access.c
 *	  Giving roles access to organizations: prm.grant_access and
 *	  prm.revoke_access.
 *
 * Access has two halves, both kept here so they never disagree:
 *	- a row in prm.org_access (org, role, level), which the functions'
 *	  tenancy check and the tables' row-level security policies read;
 *	- table privileges, because row-level security filters rows but does not
 *	  grant the right to read a table: readonly, staff and admin roles get
 *	  SELECT on every prm table and view, sender roles on the outbox only,
 *	  webhook roles on none.  Writes always go through prm's functions.
 * After any change the role's privileges are recomputed from all its rows in
 * prm.org_access, so revoking one organization leaves the others intact.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

#include "prm.h"

PG_FUNCTION_INFO_V1(prm_grant_access);
PG_FUNCTION_INFO_V1(prm_revoke_access);
PG_FUNCTION_INFO_V1(prm_sync_access_privileges);

static void AccessSyncPrivileges(Oid roleid);

/* Run a utility statement built from quoted identifiers only. */
static void
AccessRunUtility(const char *sql)
{
	int rc = SPI_execute(sql, false, 0);

	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute failed for \"%s\": %s", sql,
			 SPI_result_code_string(rc));
}

/*
 * Recompute the table privileges of roleid from its rows in prm.org_access.
 * The relation names come from the catalog and the role name is quoted, so
 * no text a caller wrote ends up in the statements.
 */
static void
AccessSyncPrivileges(Oid roleid)
{
	static SPIPlanPtr levels_plan = NULL;
	static SPIPlanPtr rels_plan = NULL;
	Datum			  values[1];
	const char		 *role = quote_identifier(GetUserNameFromId(roleid, false));
	bool			  reader = false;
	bool			  sender = false;
	int				  n,
		i;
	char **rels;
	bool  *outbox;

	PrmPrepare(&levels_plan,
			   "SELECT DISTINCT a.level FROM prm.org_access a WHERE a.role_id = $1",
			   1, (Oid[]){OIDOID});
	values[0] = ObjectIdGetDatum(roleid);
	n = PrmExecute(levels_plan, values, NULL, true, 0);
	for (i = 0; i < n; i++)
	{
		PrmAccessLevel level = PrmParseLevel(PrmGetText(i, 1));

		if (level >= PRM_LEVEL_READONLY)
			reader = true;
		else if (level == PRM_LEVEL_SENDER)
			sender = true;
	}

	/* every table and view that belongs to the extension */
	PrmPrepare(&rels_plan,
			   "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname),"
			   "       c.relname IN ('outbound_message')"
			   "  FROM pg_catalog.pg_depend d"
			   "  JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'prm'"
			   "  JOIN pg_catalog.pg_class c ON c.oid = d.objid"
			   "  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
			   " WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
			   "   AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass"
			   "   AND d.deptype = 'e' AND c.relkind IN ('r', 'v', 'p')"
			   "   AND c.relname <> 'org_access'"
			   " ORDER BY 1",
			   0, NULL);
	n = PrmExecute(rels_plan, NULL, NULL, true, 0);
	rels = palloc(sizeof(char *) * (n + 1));
	outbox = palloc(sizeof(bool) * (n + 1));
	for (i = 0; i < n; i++)
	{
		rels[i] = PrmGetText(i, 1);
		outbox[i] = strcmp(PrmGetText(i, 2), "t") == 0;
	}

	for (i = 0; i < n; i++)
	{
		bool may_read = reader || (sender && outbox[i]);

		AccessRunUtility(psprintf("%s SELECT ON %s %s %s",
								  may_read ? "GRANT" : "REVOKE", rels[i],
								  may_read ? "TO" : "FROM", role));
	}
}

/*
 * prm.grant_access(role regrole, org_id bigint, level text) RETURNS void
 *	  Give role access to an organization at level; replaces an earlier level.
 */
Datum
prm_grant_access(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid				  roleid;
	int64			  org_id;
	char			 *level_name;
	PrmAccessLevel	  level;
	Datum			  values[4];

	PrmArgNotNull(fcinfo, 0, "role");
	roleid = PG_GETARG_OID(0);
	org_id = PRM_GETARG_INT64_NOTNULL(1, "org_id");
	level_name = PrmTextArg(fcinfo, 2, "level", 20);
	level = PrmParseLevel(level_name);

	if (superuser_arg(roleid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("role \"%s\" is a superuser", GetUserNameFromId(roleid, false)),
				 errdetail("Superusers see every organization; access levels do not apply to them.")));

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);

	PrmPrepare(&plan,
			   "INSERT INTO prm.org_access (org_id, role_id, level, granted_by)"
			   " VALUES ($1, $2, $3, $4)"
			   " ON CONFLICT (org_id, role_id) DO UPDATE"
			   "   SET level = EXCLUDED.level, granted_by = EXCLUDED.granted_by,"
			   "       granted_at = pg_catalog.now()",
			   4, (Oid[]){INT8OID, OIDOID, TEXTOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = ObjectIdGetDatum(roleid);
	values[2] = CStringGetTextDatum(PrmLevelName(level));
	values[3] = CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false));
	PrmExecute(plan, values, NULL, false, 0);

	AccessSyncPrivileges(roleid);
	PrmEmitEvent(org_id, "access_granted", "role", roleid,
				 psprintf("{\"role\": %s, \"level\": \"%s\"}",
						  PrmJsonString(GetUserNameFromId(roleid, false)),
						  PrmLevelName(level)));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.revoke_access(role regrole, org_id bigint) RETURNS boolean
 *	  Take away role's access to an organization; true if it had any.
 */
Datum
prm_revoke_access(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid				  roleid;
	int64			  org_id;
	Datum			  values[2];
	bool			  had;

	PrmArgNotNull(fcinfo, 0, "role");
	roleid = PG_GETARG_OID(0);
	org_id = PRM_GETARG_INT64_NOTNULL(1, "org_id");

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmPrepare(&plan,
			   "DELETE FROM prm.org_access a WHERE a.org_id = $1 AND a.role_id = $2",
			   2, (Oid[]){INT8OID, OIDOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = ObjectIdGetDatum(roleid);
	had = PrmExecute(plan, values, NULL, false, 0) > 0;
	AccessSyncPrivileges(roleid);
	if (had)
		PrmEmitEvent(org_id, "access_revoked", "role", roleid, NULL);
	PrmSpiFinish();
	PG_RETURN_BOOL(had);
}

/*
 * prm.sync_access_privileges() RETURNS int
 *	  Recompute the privileges of every role that has access somewhere.
 */
Datum
prm_sync_access_privileges(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int				  n,
		i;
	Oid *roles;

	PrmSpiConnect();
	if (!PrmCallerIsPrivileged())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for prm.sync_access_privileges()")));
	PrmPrepare(&plan,
			   "SELECT DISTINCT a.role_id FROM prm.org_access a"
			   "  JOIN pg_catalog.pg_roles r ON r.oid = a.role_id",
			   0, NULL);
	n = PrmExecute(plan, NULL, NULL, true, 0);
	roles = palloc(sizeof(Oid) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		roles[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
												  SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (i = 0; i < n; i++)
		AccessSyncPrivileges(roles[i]);
	PrmSpiFinish();
	PG_RETURN_INT32(n);
}
