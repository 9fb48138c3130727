/*-------------------------------------------------------------------------
 *
 * access.c
 *	  Giving roles access to organizations: prm.grant_access and
 *	  prm.revoke_access.
 *
 * Access has two halves, both kept here so they never disagree:
 *	- a row in prm.org_access (org, role, level), which the functions'
 *	  tenancy check and the tables' row-level security policies read;
 *	- privileges: SELECT, because row-level security filters rows but does
 *	  not grant the right to read a table (readonly, staff and admin roles
 *	  get it on every prm table and view but the credentials, which only
 *	  admin roles read; sender roles on the outbox only, webhook roles on
 *	  none), and EXECUTE on exactly the functions the
 *	  role's levels need (prm.function_level; PUBLIC has none).  Writes
 *	  always go through prm's functions.
 * After any change the role's privileges are recomputed from all its rows in
 * prm.org_access, so revoking one organization leaves the others intact, and
 * only privileges prm granted (prm.access_privilege) are ever revoked.
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
 * Which of the granted levels (a bit per PrmAccessLevel) satisfy the level a
 * function needs, as named in prm.function_level?
 */
static bool
AccessLevelsSatisfy(int levels, const char *needed)
{
	int l;

	if (strcmp(needed, "none") == 0)
		return false;
	if (strcmp(needed, "any") == 0)
		return levels != 0;
	if (strcmp(needed, "relay") == 0)
		return AccessLevelsSatisfy(levels, "sender") || AccessLevelsSatisfy(levels, "webhook");
	/* the outbox's table: senders claim from it, readers see delivery status */
	if (strcmp(needed, "outbox") == 0)
		return AccessLevelsSatisfy(levels, "sender") || AccessLevelsSatisfy(levels, "readonly");
	for (l = PRM_LEVEL_SENDER; l <= PRM_LEVEL_ADMIN; l++)
		if ((levels & (1 << l)) &&
			PrmLevelSatisfies((PrmAccessLevel) l, PrmParseLevel(needed)))
			return true;
	return false;
}

/* Does this database's prm have the 0.3.0 privilege registry? */
static bool
AccessHasRegistry(void)
{
	if (SPI_execute("SELECT pg_catalog.to_regclass('prm.function_level') IS NOT NULL",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for prm.function_level");
	return strcmp(PrmGetText(0, 1), "t") == 0;
}

/*
 * The rule of prm 0.2.0, for a database whose SQL objects are still that
 * version's: SELECT on every prm table and view for readers, on the outbox
 * for senders, revoked from everyone else.
 */
static void
AccessSyncLegacy(Oid roleid, int levels)
{
	const char *role = quote_identifier(GetUserNameFromId(roleid, false));
	int			n,
		i;
	char **rels;
	bool  *outbox;

	if (SPI_execute("SELECT pg_catalog.format('%I.%I', n.nspname, c.relname),"
					"       c.relname = 'outbound_message'"
					"  FROM pg_catalog.pg_depend d"
					"  JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'prm'"
					"  JOIN pg_catalog.pg_class c ON c.oid = d.objid"
					"  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
					" WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
					"   AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass"
					"   AND d.deptype = 'e' AND c.relkind IN ('r', 'v', 'p')"
					"   AND c.relname NOT IN ('org_access', 'org_mutex')",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list prm's relations");
	n = SPI_processed;
	rels = palloc(sizeof(char *) * (n + 1));
	outbox = palloc(sizeof(bool) * (n + 1));
	for (i = 0; i < n; i++)
	{
		rels[i] = PrmGetText(i, 1);
		outbox[i] = strcmp(PrmGetText(i, 2), "t") == 0;
	}
	for (i = 0; i < n; i++)
	{
		bool may_read = AccessLevelsSatisfy(levels, outbox[i] ? "sender" : "readonly");

		AccessRunUtility(psprintf("%s SELECT ON %s %s %s",
								  may_read ? "GRANT" : "REVOKE", rels[i],
								  may_read ? "TO" : "FROM", role));
	}
}

/*
 * Recompute the privileges of roleid from its rows in prm.org_access: SELECT
 * on prm's tables and views (readers all, senders the outbox: readers see it
 * too, as its tenant_read policy and prm.conversation_thread do) and EXECUTE on
 * the functions its levels satisfy (prm.function_level).  A privilege is
 * granted and recorded in prm.access_privilege when the role lacks it, and
 * revoked only when that table says prm granted it: privileges a DBA gave by
 * hand are never taken away.  Names come from the catalog and are quoted, so
 * no text a caller wrote ends up in the statements.
 */
static void
AccessSyncPrivileges(Oid roleid)
{
	static SPIPlanPtr levels_plan = NULL;
	static SPIPlanPtr objects_plan = NULL;
	static SPIPlanPtr record_plan = NULL;
	static SPIPlanPtr forget_plan = NULL;
	Datum			  values[2];
	const char		 *role = quote_identifier(GetUserNameFromId(roleid, false));
	int				  levels = 0;
	int				  n,
		i;
	char **objects;
	char **names;
	char **needs;
	bool  *has;
	bool  *ours;

	PrmPrepare(&levels_plan,
			   "SELECT DISTINCT a.level FROM prm.org_access a WHERE a.role_id = $1",
			   1, (Oid[]){OIDOID});
	values[0] = ObjectIdGetDatum(roleid);
	n = PrmExecute(levels_plan, values, NULL, true, 0);
	for (i = 0; i < n; i++)
		levels |= 1 << PrmParseLevel(PrmGetText(i, 1));

	/*
	 * Under an older SQL script (the library is updated before ALTER
	 * EXTENSION UPDATE runs) there is no registry yet: keep that version's
	 * rule, SELECT only, all of it recomputed.
	 */
	if (!AccessHasRegistry())
	{
		AccessSyncLegacy(roleid, levels);
		return;
	}

	/*
	 * Every table, view and function of the extension with the level it
	 * needs, whether the role holds the privilege directly, and whether prm
	 * granted it.
	 */
	PrmPrepare(&objects_plan,
			   "WITH members AS ("
			   "  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d"
			   "    JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'prm'"
			   "   WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass"
			   "     AND d.deptype = 'e'),"
			   " objects AS ("
			   "  SELECT 'table ' || pg_catalog.format('%I.%I', n.nspname, c.relname) AS object,"
			   "         pg_catalog.format('TABLE %I.%I', n.nspname, c.relname) AS name,"
			   "         CASE c.relname WHEN 'outbound_message' THEN 'outbox'"
			   "                        WHEN 'channel_credential' THEN 'admin'"
			   "                        WHEN 'metrics' THEN 'none' ELSE 'readonly' END AS needs,"
			   "         'SELECT' AS privilege, c.relacl AS acl, c.relowner AS owner"
			   "    FROM members m JOIN pg_catalog.pg_class c ON c.oid = m.objid"
			   "    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
			   "   WHERE m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
			   "     AND c.relkind IN ('r', 'v', 'p')"
			   "     AND c.relname NOT IN ('org_access', 'org_mutex', 'access_privilege', 'function_level')"
			   "  UNION ALL"
			   "  SELECT 'function ' || p.oid::pg_catalog.regprocedure::text,"
			   "         'FUNCTION ' || p.oid::pg_catalog.regprocedure::text,"
			   "         coalesce(l.level, 'none'), 'EXECUTE', p.proacl, p.proowner"
			   "    FROM members m JOIN pg_catalog.pg_proc p ON p.oid = m.objid"
			   "    LEFT JOIN prm.function_level l ON l.signature = p.oid::pg_catalog.regprocedure::text"
			   "   WHERE m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass)"
			   " SELECT o.object, o.name, o.needs,"
			   "        EXISTS (SELECT 1 FROM pg_catalog.aclexplode(coalesce(o.acl, pg_catalog.acldefault("
			   "                      CASE WHEN o.privilege = 'SELECT' THEN 'r' ELSE 'f' END::pg_catalog.\"char\", o.owner))) x"
			   "                 WHERE x.grantee = $1 AND x.privilege_type = o.privilege),"
			   "        EXISTS (SELECT 1 FROM prm.access_privilege g"
			   "                 WHERE g.role_id = $1 AND g.object = o.object)"
			   "   FROM objects o ORDER BY o.object",
			   1, (Oid[]){OIDOID});
	n = PrmExecute(objects_plan, values, NULL, true, 0);
	objects = palloc(sizeof(char *) * (n + 1));
	names = palloc(sizeof(char *) * (n + 1));
	needs = palloc(sizeof(char *) * (n + 1));
	has = palloc(sizeof(bool) * (n + 1));
	ours = palloc(sizeof(bool) * (n + 1));
	for (i = 0; i < n; i++)
	{
		objects[i] = PrmGetText(i, 1);
		names[i] = PrmGetText(i, 2);
		needs[i] = PrmGetText(i, 3);
		has[i] = strcmp(PrmGetText(i, 4), "t") == 0;
		ours[i] = strcmp(PrmGetText(i, 5), "t") == 0;
	}

	PrmPrepare(&record_plan,
			   "INSERT INTO prm.access_privilege (role_id, object) VALUES ($1, $2)"
			   " ON CONFLICT DO NOTHING",
			   2, (Oid[]){OIDOID, TEXTOID});
	PrmPrepare(&forget_plan,
			   "DELETE FROM prm.access_privilege g WHERE g.role_id = $1 AND g.object = $2",
			   2, (Oid[]){OIDOID, TEXTOID});
	for (i = 0; i < n; i++)
	{
		bool is_table = strncmp(objects[i], "table ", 6) == 0;
		bool wanted = AccessLevelsSatisfy(levels, needs[i]) &&
					  (!is_table || prm_grant_table_access);
		const char *privilege = is_table ? "SELECT" : "EXECUTE";

		CHECK_FOR_INTERRUPTS();
		values[1] = CStringGetTextDatum(objects[i]);
		if (wanted && !has[i])
		{
			AccessRunUtility(psprintf("GRANT %s ON %s TO %s", privilege, names[i], role));
			PrmExecute(record_plan, values, NULL, false, 0);
		}
		else if (!wanted && ours[i])
		{
			if (has[i])
				AccessRunUtility(psprintf("REVOKE %s ON %s FROM %s", privilege, names[i], role));
			PrmExecute(forget_plan, values, NULL, false, 0);
		}
	}
}

/*
 * prm.grant_access(role regrole, org_id bigint, level text) RETURNS void
 *	  Give role access to an organization at level.  A role holds at most
 *	  one of the ordered levels (readonly, staff, admin) on an organization:
 *	  a new one replaces the old, with a NOTICE saying so.  sender and
 *	  webhook add to what the role holds, so one process can be both.
 */
Datum
prm_grant_access(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr delete_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	Oid				  roleid;
	int64			  org_id;
	char			 *level_name;
	PrmAccessLevel	  level;
	Datum			  values[5];
	char			 *replaced = NULL;
	int				  n,
		i;

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
	if (has_bypassrls_privilege(roleid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("role \"%s\" bypasses row-level security", GetUserNameFromId(roleid, false)),
				 errdetail("With the table privileges of a level it would read every organization's rows."),
				 errhint("Use a role without BYPASSRLS (ALTER ROLE ... NOBYPASSRLS).")));

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);

	/*
	 * An ordered level replaces the role's other ordered level, if any; the
	 * row of the same level is written again (who granted it, when).  Under
	 * a schema older than 0.3.0 (the library is updated before ALTER
	 * EXTENSION UPDATE runs) a role has one row per organization: every
	 * level is replaced, as that version did.
	 */
	PrmPrepare(&delete_plan,
			   "DELETE FROM prm.org_access a"
			   " WHERE a.org_id = $1 AND a.role_id = $2"
			   "   AND (a.level = $3 OR $4 OR ($5 AND a.level IN ('readonly', 'staff', 'admin')))"
			   " RETURNING a.level",
			   5, (Oid[]){INT8OID, OIDOID, TEXTOID, BOOLOID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = ObjectIdGetDatum(roleid);
	values[2] = CStringGetTextDatum(PrmLevelName(level));
	values[3] = BoolGetDatum(!AccessHasRegistry());
	values[4] = BoolGetDatum(level >= PRM_LEVEL_READONLY);
	n = PrmExecute(delete_plan, values, NULL, false, 0);
	for (i = 0; i < n; i++)
		if (strcmp(PrmGetText(i, 1), PrmLevelName(level)) != 0)
			replaced = PrmGetText(i, 1);

	/* a concurrent grant of the same level wrote it already: fine */
	PrmPrepare(&insert_plan,
			   "INSERT INTO prm.org_access (org_id, role_id, level, granted_by)"
			   " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
			   4, (Oid[]){INT8OID, OIDOID, TEXTOID, TEXTOID});
	values[3] = CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false));
	PrmExecute(insert_plan, values, NULL, false, 0);
	if (replaced)
		ereport(NOTICE,
				(errmsg("role \"%s\" now has the \"%s\" level on organization %lld instead of \"%s\"",
						GetUserNameFromId(roleid, false), PrmLevelName(level),
						(long long) org_id, replaced),
				 errdetail("A role holds one of readonly, staff and admin on an organization; sender and webhook add to it.")));

	AccessSyncPrivileges(roleid);
	PrmEmitEvent(org_id, "access_granted", "role", roleid,
				 psprintf("{\"role\": %s, \"level\": \"%s\", \"replaced\": %s}",
						  PrmJsonString(GetUserNameFromId(roleid, false)),
						  PrmLevelName(level),
						  replaced ? PrmJsonString(replaced) : "null"));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * prm.revoke_access(role regrole, org_id bigint) RETURNS boolean
 * prm.revoke_access(role regrole, org_id bigint, level text) RETURNS boolean
 *	  Take away role's access to an organization -- every level, or the one
 *	  named, keeping the others; true if it had any (that level).
 */
Datum
prm_revoke_access(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid				  roleid;
	int64			  org_id;
	const char		 *level = NULL;
	Datum			  values[3];
	char			  nulls[3] = {' ', ' ', 'n'};
	bool			  had;

	PrmArgNotNull(fcinfo, 0, "role");
	roleid = PG_GETARG_OID(0);
	org_id = PRM_GETARG_INT64_NOTNULL(1, "org_id");
	if (PG_NARGS() > 2)
		level = PrmLevelName(PrmParseLevel(PrmTextArg(fcinfo, 2, "level", 20)));

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmPrepare(&plan,
			   "DELETE FROM prm.org_access a WHERE a.org_id = $1 AND a.role_id = $2"
			   "   AND ($3::text IS NULL OR a.level = $3)",
			   3, (Oid[]){INT8OID, OIDOID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = ObjectIdGetDatum(roleid);
	if (level)
	{
		values[2] = CStringGetTextDatum(level);
		nulls[2] = ' ';
	}
	had = PrmExecute(plan, values, nulls, false, 0) > 0;
	AccessSyncPrivileges(roleid);
	if (had)
		PrmEmitEvent(org_id, "access_revoked", "role", roleid,
					 level ? psprintf("{\"level\": \"%s\"}", level) : NULL);
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
