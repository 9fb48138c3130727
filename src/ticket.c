/*-------------------------------------------------------------------------
 *
 * ticket.c
 *	  Staff, tickets and their lifecycle, assignment, comments and merging.
 *
 * Lifecycle (Zendesk's): new -> open | pending | on_hold | solved;
 * open, pending, on_hold -> each other or solved; solved -> open (reopened)
 * or closed; closed is final, and nothing returns to new.  Assigning a new
 * ticket opens it; a patient's reply reopens a pending one.  new and open
 * run the SLA clocks, pending, on_hold and solved pause them (ticket_sla.c).
 * Solved tickets close by themselves ticket_autoclose_after their solve
 * (the deadline step in ticket_sla.c).
 *
 * Locking.  Every change of a ticket locks its row first (FOR NO KEY
 * UPDATE), so two staff members changing one ticket run one after the
 * other and the second sees the first's result.  Round-robin assignment
 * also holds the organization's 'tickets' mutex (prm.org_mutex) until
 * commit: the choice of the next staff member (the available one assigned
 * longest ago, under max_open_tickets_per_staff) and the move of their
 * last_assigned_at are one step, so two concurrent assignments never pick
 * the same member by the same stale order nor overrun the cap.  A merge
 * locks its two tickets in id order.
 *
 * Merging moves the source's comments to the target (merged_from keeps
 * where they came from), closes the source and links it (merged_into).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "ticket.h"

PG_FUNCTION_INFO_V1(prm_add_staff);
PG_FUNCTION_INFO_V1(prm_set_staff_availability);
PG_FUNCTION_INFO_V1(prm_open_ticket);
PG_FUNCTION_INFO_V1(prm_assign_ticket);
PG_FUNCTION_INFO_V1(prm_set_ticket_status);
PG_FUNCTION_INFO_V1(prm_set_ticket_priority);
PG_FUNCTION_INFO_V1(prm_add_ticket_comment);
PG_FUNCTION_INFO_V1(prm_merge_tickets);

#define TICKET_MAX_BODY 1600

static const char *const ticket_statuses[] = {"new", "open", "pending", "on_hold", "solved", "closed"};

enum
{
	ST_NEW,
	ST_OPEN,
	ST_PENDING,
	ST_ON_HOLD,
	ST_SOLVED,
	ST_CLOSED,
	ST_COUNT
};

/* allowed[from][to] */
static const bool ticket_moves[ST_COUNT][ST_COUNT] = {
	/* new */ {false, true, true, true, true, false},
	/* open */ {false, false, true, true, true, false},
	/* pending */ {false, true, false, true, true, false},
	/* on_hold */ {false, true, true, false, true, false},
	/* solved */ {false, true, false, false, false, true},
	/* closed */ {false, false, false, false, false, false},
};

static int	TicketStatusIndex(const char *status);
static int	TicketLock(int64 org_id, int64 ticket_id);
static void TicketMove(int64 org_id, int64 ticket_id, int from, int to,
					   const char *reason);
static void TicketEvent(int64 org_id, int64 ticket_id, const char *kind,
						const char *payload);

/* Raise 22023 unless priority is low, normal, high or urgent. */
void
PrmCheckTicketPriority(const char *priority)
{
	if (strcmp(priority, "low") != 0 && strcmp(priority, "normal") != 0 &&
		strcmp(priority, "high") != 0 && strcmp(priority, "urgent") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown ticket priority \"%s\"", priority),
				 errdetail("A priority is low, normal, high or urgent.")));
}

/* The index of a status; 22023 for an unknown one. */
static int
TicketStatusIndex(const char *status)
{
	int i;

	for (i = 0; i < ST_COUNT; i++)
		if (strcmp(status, ticket_statuses[i]) == 0)
			return i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown ticket status \"%s\"", status),
			 errdetail("A status is new, open, pending, on_hold, solved or closed.")));
	return -1; /* keep compiler quiet */
}

/* Lock a ticket of the organization (P0002 if none); its status index. */
static int
TicketLock(int64 org_id, int64 ticket_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "SELECT t.status FROM prm.ticket t WHERE t.org_id = $1 AND t.id = $2 FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		PrmRequireRow(org_id, PRM_ENTITY_TICKET, ticket_id, false); /* raises */
	return TicketStatusIndex(PrmGetText(0, 1));
}

/* An event about a ticket, and the NOTIFY staff inboxes listen to. */
static void
TicketEvent(int64 org_id, int64 ticket_id, const char *kind, const char *payload)
{
	PrmEmitEvent(org_id, kind, "ticket", ticket_id, payload);
	PrmNotifyOnce("prm_ticket");
}

/* Raise 55000 naming the move unless from -> to is allowed. */
static void
TicketCheckMove(int64 ticket_id, int from, int to)
{
	if (ticket_moves[from][to])
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("ticket %lld cannot move from %s to %s", (long long) ticket_id,
					ticket_statuses[from], ticket_statuses[to]),
			 from == ST_CLOSED ? errdetail("A closed ticket is final.")
			 : to == ST_NEW	   ? errdetail("A ticket never returns to new.")
			 : to == ST_CLOSED ? errdetail("Only a solved ticket can be closed.")
							   : errdetail("A solved ticket can only be reopened (open) or closed.")));
}

/*
 * Move a locked ticket from -> to (checked): the solve and close times, the
 * SLA clocks paused or resumed, an event.
 */
static void
TicketMove(int64 org_id, int64 ticket_id, int from, int to, const char *reason)
{
	static SPIPlanPtr  plan = NULL;
	Datum			   values[4];
	bool			   active_before = (from == ST_NEW || from == ST_OPEN);
	bool			   active_after = (to == ST_NEW || to == ST_OPEN);
	const PrmSettings *s;

	TicketCheckMove(ticket_id, from, to);
	s = PrmGetSettings(org_id);
	if (active_before && !active_after)
		TicketSlaPause(org_id, ticket_id);
	PrmPrepare(&plan,
			   "UPDATE prm.ticket t SET status = $3, updated_at = pg_catalog.now(),"
			   "  solved_at = CASE WHEN $3 = 'solved' THEN pg_catalog.now()"
			   "                   WHEN $3 = 'closed' THEN t.solved_at END,"
			   "  autoclose_at = CASE WHEN $3 = 'solved' THEN pg_catalog.now() + $4 END,"
			   "  closed_at = CASE WHEN $3 = 'closed' THEN pg_catalog.now() END"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   4, (Oid[]){INT8OID, INT8OID, TEXTOID, INTERVALOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	values[2] = CStringGetTextDatum(ticket_statuses[to]);
	values[3] = IntervalPGetDatum(&s->ticket_autoclose_after);
	PrmExecute(plan, values, NULL, false, 0);
	if (!active_before && active_after)
		TicketSlaResume(org_id, ticket_id);
	else
		TicketWakeFor(org_id, ticket_id);
	TicketEvent(org_id, ticket_id, "ticket_status_changed",
				psprintf("{\"from\": \"%s\", \"to\": \"%s\", \"reason\": %s}",
						 ticket_statuses[from], ticket_statuses[to], PrmJsonString(reason)));
}

/* prm.add_staff(org_id, name, email, role regrole) RETURNS bigint */
Datum
prm_add_staff(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char			 *name = PrmTextArg(fcinfo, 1, "name", PRM_MAX_NAME_LEN);
	char			 *email = PrmTextArgOrNull(fcinfo, 2, "email", 254);
	Datum			  values[4];
	char			  nulls[4] = {' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  id;

	if (email)
		PrmCheckEmail(email);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_ADMIN);
	PrmPrepare(&plan,
			   "INSERT INTO prm.staff (org_id, name, email, role) VALUES ($1, $2, $3, $4)"
			   " RETURNING id",
			   4, (Oid[]){INT8OID, TEXTOID, TEXTOID, REGROLEOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(name);
	if (email)
		values[2] = CStringGetTextDatum(email);
	else
		nulls[2] = 'n';
	if (PG_ARGISNULL(3))
		nulls[3] = 'n';
	else
		values[3] = PG_GETARG_DATUM(3);
	PrmExecute(plan, values, nulls, false, 1);
	id = PrmGetInt64(0, 1, &isnull);
	PrmEmitEvent(org_id, "staff_added", "staff", id, "{}");
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/* prm.set_staff_availability(org_id, staff_id, available) RETURNS void */
Datum
prm_set_staff_availability(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  staff_id = PRM_GETARG_INT64_NOTNULL(1, "staff_id");
	bool			  available = PRM_GETARG_BOOL_NOTNULL(2, "available");
	Datum			  values[3];

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	PrmPrepare(&plan,
			   "UPDATE prm.staff s SET available = $3 WHERE s.org_id = $1 AND s.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, BOOLOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(staff_id);
	values[2] = BoolGetDatum(available);
	if (PrmExecute(plan, values, NULL, false, 0) == 0)
		PrmRequireRow(org_id, PRM_ENTITY_STAFF, staff_id, false); /* raises */
	PrmEmitEvent(org_id, "staff_availability_changed", "staff", staff_id,
				 available ? "{\"available\": true}" : "{\"available\": false}");
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * Open a ticket (status new) with its SLA clocks started; returns its id.
 * Ids 0 mean NULL; patient and conversation must be the organization's
 * (P0002).  Inside SPI; the caller checked access.
 */
int64
PrmOpenTicket(int64 org_id, const char *subject, const char *priority,
			  int64 patient_id, const char *description, int64 conversation_id,
			  const char *source)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr conv_plan = NULL;
	Datum			  values[7];
	char			  nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  id;

	PrmCheckTicketPriority(priority);
	if (strcmp(source, "staff") != 0 && strcmp(source, "conversation") != 0 &&
		strcmp(source, "inbound") != 0 && strcmp(source, "journey") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown ticket source \"%s\"", source),
				 errdetail("A source is staff, conversation, inbound or journey.")));
	if (patient_id != 0)
		PrmRequireRow(org_id, PRM_ENTITY_PATIENT, patient_id, false);
	PrmPrepare(&conv_plan,
			   "SELECT COALESCE(c.patient_id, 0) FROM prm.conversation c WHERE c.org_id = $1 AND c.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(conversation_id);
	if (conversation_id != 0)
	{
		if (PrmExecute(conv_plan, values, NULL, true, 1) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("conversation %lld does not exist in organization %lld",
							(long long) conversation_id, (long long) org_id)));
		/* a ticket of a conversation is its patient's, unless told otherwise */
		if (patient_id == 0)
			patient_id = PrmGetInt64(0, 1, &isnull);
	}
	PrmPrepare(&plan,
			   "INSERT INTO prm.ticket (org_id, subject, priority, patient_id, description,"
			   "  conversation_id, source) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
			   7, (Oid[]){INT8OID, TEXTOID, TEXTOID, INT8OID, TEXTOID, INT8OID, TEXTOID});
	values[1] = CStringGetTextDatum(subject);
	values[2] = CStringGetTextDatum(priority);
	values[3] = Int64GetDatum(patient_id);
	nulls[3] = patient_id ? ' ' : 'n';
	values[4] = description ? CStringGetTextDatum(description) : (Datum) 0;
	nulls[4] = description ? ' ' : 'n';
	values[5] = Int64GetDatum(conversation_id);
	nulls[5] = conversation_id ? ' ' : 'n';
	values[6] = CStringGetTextDatum(source);
	PrmExecute(plan, values, nulls, false, 1);
	id = PrmGetInt64(0, 1, &isnull);
	TicketSlaStart(org_id, id, false);
	TicketEvent(org_id, id, "ticket_opened",
				psprintf("{\"priority\": %s, \"source\": %s}", PrmJsonString(priority),
						 PrmJsonString(source)));
	return id;
}

/* prm.open_ticket(org_id, subject, priority, patient_id, description) RETURNS bigint */
Datum
prm_open_ticket(PG_FUNCTION_ARGS)
{
	int64 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	char *subject = PrmTextArg(fcinfo, 1, "subject", PRM_MAX_NAME_LEN);
	char *priority = PrmTextArg(fcinfo, 2, "priority", 20);
	int64 patient_id = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT64(3);
	char *description = PrmTextArgOrNull(fcinfo, 4, "description", PRM_MAX_TEXT_LEN);
	int64 id;

	PrmCheckTicketPriority(priority);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	id = PrmOpenTicket(org_id, subject, priority, patient_id, description, 0, "staff");
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/*
 * The next staff member by round robin for ticket_id: the available one
 * assigned longest ago (never first) with fewer open tickets than the cap.
 * Holds the organization's 'tickets' mutex until commit.  55000 if none.
 */
static int64
TicketRoundRobin(int64 org_id, int64 ticket_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	bool			  isnull;
	int32			  cap = PrmGetSettings(org_id)->max_open_tickets_per_staff;

	PrmLockOrgMutex(org_id, "tickets");
	PrmPrepare(&plan,
			   "SELECT s.id FROM prm.staff s"
			   " WHERE s.org_id = $1 AND s.available"
			   "   AND ($2 = 0 OR (SELECT pg_catalog.count(*) FROM prm.ticket t"
			   "                    WHERE t.org_id = s.org_id AND t.assignee_id = s.id AND t.id <> $3"
			   "                      AND t.status IN ('new', 'open', 'pending', 'on_hold')) < $2)"
			   " ORDER BY s.last_assigned_at NULLS FIRST, s.id LIMIT 1",
			   3, (Oid[]){INT8OID, INT4OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int32GetDatum(cap);
	values[2] = Int64GetDatum(ticket_id);
	if (PrmExecute(plan, values, NULL, false, 1) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no staff member of organization %lld can take ticket %lld",
						(long long) org_id, (long long) ticket_id),
				 cap > 0 ? errdetail("Every staff member is unavailable or has %d open tickets (max_open_tickets_per_staff).", cap)
						 : errdetail("Every staff member is unavailable."),
				 errhint("Mark a staff member available with prm.set_staff_availability(), or assign the ticket explicitly.")));
	return PrmGetInt64(0, 1, &isnull);
}

/* prm.assign_ticket(org_id, ticket_id, staff_id) RETURNS bigint: the assignee */
Datum
prm_assign_ticket(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr assign_plan = NULL;
	static SPIPlanPtr staff_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  ticket_id = PRM_GETARG_INT64_NOTNULL(1, "ticket_id");
	int64			  staff_id;
	int				  status;
	Datum			  values[3];

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	status = TicketLock(org_id, ticket_id);
	if (status == ST_CLOSED)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ticket %lld is closed", (long long) ticket_id),
				 errdetail("A closed ticket is final.")));
	if (PG_ARGISNULL(2))
		staff_id = TicketRoundRobin(org_id, ticket_id);
	else
	{
		staff_id = PG_GETARG_INT64(2);
		PrmRequireRow(org_id, PRM_ENTITY_STAFF, staff_id, false);
	}
	PrmPrepare(&assign_plan,
			   "UPDATE prm.ticket t SET assignee_id = $3, updated_at = pg_catalog.now()"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	PrmPrepare(&staff_plan,
			   "UPDATE prm.staff s SET last_assigned_at = pg_catalog.clock_timestamp()"
			   " WHERE s.org_id = $1 AND s.id = $3",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	values[2] = Int64GetDatum(staff_id);
	PrmExecute(assign_plan, values, NULL, false, 0);
	PrmExecute(staff_plan, values, NULL, false, 0);
	TicketEvent(org_id, ticket_id, "ticket_assigned",
				psprintf("{\"assignee_id\": %lld, \"round_robin\": %s}", (long long) staff_id,
						 PG_ARGISNULL(2) ? "true" : "false"));
	if (status == ST_NEW)
		TicketMove(org_id, ticket_id, ST_NEW, ST_OPEN, "assigned");
	PrmSpiFinish();
	PG_RETURN_INT64(staff_id);
}

/* prm.set_ticket_status(org_id, ticket_id, status) RETURNS void */
Datum
prm_set_ticket_status(PG_FUNCTION_ARGS)
{
	int64 org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64 ticket_id = PRM_GETARG_INT64_NOTNULL(1, "ticket_id");
	int	  to = TicketStatusIndex(PrmTextArg(fcinfo, 2, "status", 20));
	int	  from;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	from = TicketLock(org_id, ticket_id);
	if (from != to)
		TicketMove(org_id, ticket_id, from, to, "staff");
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* prm.set_ticket_priority(org_id, ticket_id, priority) RETURNS void */
Datum
prm_set_ticket_priority(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  ticket_id = PRM_GETARG_INT64_NOTNULL(1, "ticket_id");
	char			 *priority = PrmTextArg(fcinfo, 2, "priority", 20);
	int				  status;
	Datum			  values[3];

	PrmCheckTicketPriority(priority);
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	status = TicketLock(org_id, ticket_id);
	if (status == ST_CLOSED)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ticket %lld is closed", (long long) ticket_id),
				 errdetail("A closed ticket is final.")));
	PrmPrepare(&plan,
			   "UPDATE prm.ticket t SET priority = $3, updated_at = pg_catalog.now()"
			   " WHERE t.org_id = $1 AND t.id = $2 AND t.priority <> $3",
			   3, (Oid[]){INT8OID, INT8OID, TEXTOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	values[2] = CStringGetTextDatum(priority);
	if (PrmExecute(plan, values, NULL, false, 0) == 1)
	{
		TicketSlaStart(org_id, ticket_id, !(status == ST_NEW || status == ST_OPEN));
		TicketEvent(org_id, ticket_id, "ticket_priority_changed",
					psprintf("{\"priority\": %s}", PrmJsonString(priority)));
	}
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/* The first reply on a ticket: its first-reply clock stops for good. */
static void
TicketFirstReply(int64 org_id, int64 ticket_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];

	PrmPrepare(&plan,
			   "UPDATE prm.ticket t SET first_replied_at = pg_catalog.now(), first_reply_left = NULL,"
			   "  updated_at = pg_catalog.now()"
			   " WHERE t.org_id = $1 AND t.id = $2 AND t.first_replied_at IS NULL",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	if (PrmExecute(plan, values, NULL, false, 0) == 1)
		TicketEvent(org_id, ticket_id, "ticket_first_reply", "{}");
}

/*
 * Queue a public comment to the ticket's patient: on the ticket's
 * conversation's channel and address, else by SMS to the patient's phone.
 * Returns the outbound message's id; 55000 when there is no address.
 */
static int64
TicketSendToPatient(int64 org_id, int64 ticket_id, const char *body)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	bool			  isnull;
	char			 *channel;
	char			 *to;
	int64			  patient_id;

	PrmPrepare(&plan,
			   "SELECT COALESCE(c.channel, 'sms'), COALESCE(c.address, p.phone), t.patient_id"
			   "  FROM prm.ticket t"
			   "  LEFT JOIN prm.conversation c ON c.org_id = t.org_id AND c.id = t.conversation_id"
			   "       AND c.channel <> 'voice'"
			   "  LEFT JOIN prm.patient p ON p.org_id = t.org_id AND p.id = t.patient_id"
			   " WHERE t.org_id = $1 AND t.id = $2",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	PrmExecute(plan, values, NULL, true, 1);
	channel = PrmGetText(0, 1);
	to = PrmGetText(0, 2);
	patient_id = PrmGetInt64(0, 3, &isnull);
	if (to == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ticket %lld has no patient address to send a public comment to",
						(long long) ticket_id),
				 errdetail("The ticket has no conversation, and no patient with a phone number."),
				 errhint("Add an internal comment (public false) instead.")));
	return PrmEnqueue(org_id, channel, to, body, "ticket_comment",
					  isnull ? 0 : patient_id, 0, NULL, 0);
}

/*
 * prm.add_ticket_comment(org_id, ticket_id, body, public, staff_id)
 *	  RETURNS bigint: the comment's id.
 */
Datum
prm_add_ticket_comment(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  ticket_id = PRM_GETARG_INT64_NOTNULL(1, "ticket_id");
	char			 *body = PrmTextArg(fcinfo, 2, "body", TICKET_MAX_BODY);
	bool			  is_public = PRM_GETARG_BOOL_NOTNULL(3, "public");
	int64			  staff_id = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4);
	int64			  message_id = 0;
	Datum			  values[8];
	char			  nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool			  isnull;
	int64			  id;

	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	if (TicketLock(org_id, ticket_id) == ST_CLOSED)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ticket %lld is closed", (long long) ticket_id),
				 errdetail("A closed ticket takes no more comments; open a new ticket.")));
	if (staff_id != 0)
		PrmRequireRow(org_id, PRM_ENTITY_STAFF, staff_id, false);
	if (is_public)
		message_id = TicketSendToPatient(org_id, ticket_id, body);
	/* the author is the calling role; without staff_id, its staff member */
	PrmPrepare(&plan,
			   "INSERT INTO prm.ticket_comment (org_id, ticket_id, body, public, staff_id,"
			   "  outbound_message_id, author)"
			   " VALUES ($1, $2, $3, $4, COALESCE($5, (SELECT s.id FROM prm.staff s"
			   "          WHERE s.org_id = $1 AND s.role = $8)), $6, $7) RETURNING id",
			   8, (Oid[]){INT8OID, INT8OID, TEXTOID, BOOLOID, INT8OID, INT8OID, TEXTOID, OIDOID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(ticket_id);
	values[2] = CStringGetTextDatum(body);
	values[3] = BoolGetDatum(is_public);
	values[4] = Int64GetDatum(staff_id);
	nulls[4] = staff_id ? ' ' : 'n';
	values[5] = Int64GetDatum(message_id);
	nulls[5] = message_id ? ' ' : 'n';
	values[6] = CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false));
	values[7] = ObjectIdGetDatum(GetOuterUserId());
	PrmExecute(plan, values, nulls, false, 1);
	id = PrmGetInt64(0, 1, &isnull);
	TicketEvent(org_id, ticket_id, "ticket_comment_added",
				psprintf("{\"comment_id\": %lld, \"public\": %s}", (long long) id,
						 is_public ? "true" : "false"));
	if (is_public)
		TicketFirstReply(org_id, ticket_id);
	PrmSpiFinish();
	PG_RETURN_INT64(id);
}

/* prm.merge_tickets(org_id, source_id, target_id) RETURNS void */
Datum
prm_merge_tickets(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr move_plan = NULL;
	static SPIPlanPtr link_plan = NULL;
	int64			  org_id = PRM_GETARG_INT64_NOTNULL(0, "org_id");
	int64			  source = PRM_GETARG_INT64_NOTNULL(1, "source_id");
	int64			  target = PRM_GETARG_INT64_NOTNULL(2, "target_id");
	int				  st_source,
		st_target;
	Datum values[3];

	if (source == target)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ticket %lld cannot be merged into itself", (long long) source)));
	PrmSpiConnect();
	PrmRequireOrgAccess(org_id, PRM_LEVEL_STAFF);
	/* lock in id order: two merges of the same pair cannot deadlock */
	if (source < target)
	{
		st_source = TicketLock(org_id, source);
		st_target = TicketLock(org_id, target);
	}
	else
	{
		st_target = TicketLock(org_id, target);
		st_source = TicketLock(org_id, source);
	}
	if (st_source == ST_CLOSED || st_target == ST_CLOSED)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ticket %lld is closed", (long long) (st_source == ST_CLOSED ? source : target)),
				 errdetail("Only tickets that are not closed can be merged.")));
	PrmPrepare(&move_plan,
			   "UPDATE prm.ticket_comment c SET ticket_id = $3, merged_from = COALESCE(c.merged_from, $2)"
			   " WHERE c.org_id = $1 AND c.ticket_id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	PrmPrepare(&link_plan,
			   "UPDATE prm.ticket t SET merged_into = $3 WHERE t.org_id = $1 AND t.id = $2",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(source);
	values[2] = Int64GetDatum(target);
	PrmExecute(move_plan, values, NULL, false, 0);
	PrmExecute(link_plan, values, NULL, false, 0);
	/* closed is reached through solved, as every close */
	if (st_source != ST_SOLVED)
		TicketMove(org_id, source, st_source, ST_SOLVED, "merged");
	TicketMove(org_id, source, ST_SOLVED, ST_CLOSED, "merged");
	TicketEvent(org_id, source, "ticket_merged",
				psprintf("{\"into\": %lld}", (long long) target));
	TicketEvent(org_id, target, "ticket_merged",
				psprintf("{\"from\": %lld}", (long long) source));
	PrmSpiFinish();
	PG_RETURN_VOID();
}

/*
 * A patient replied (in conversation_id, or 0): their pending tickets of
 * that conversation, or of the patient without a conversation, reopen.
 * Inside SPI; the caller checked access.
 */
void
PrmTicketPatientReplied(int64 org_id, int64 patient_id, int64 conversation_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[3];
	int				  n,
		i;
	int64 *ids;

	/*
	 * Lock every ticket that is or may just have become pending, and read
	 * the status after the lock: a filter on 'pending' alone would pass over
	 * a ticket a concurrent transaction is moving to pending (the row's
	 * version this statement sees is still open), and the reply would be
	 * lost to it.
	 */
	PrmPrepare(&plan,
			   "SELECT t.id, t.status = 'pending' FROM prm.ticket t"
			   " WHERE t.org_id = $1 AND t.status IN ('new', 'open', 'pending', 'on_hold')"
			   "   AND (($3 <> 0 AND t.conversation_id = $3)"
			   "        OR ($2 <> 0 AND t.patient_id = $2 AND t.conversation_id IS NULL))"
			   " ORDER BY t.id FOR NO KEY UPDATE",
			   3, (Oid[]){INT8OID, INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(patient_id);
	values[2] = Int64GetDatum(conversation_id);
	n = PrmExecute(plan, values, NULL, false, 0);
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		/* the status as locked: only a pending one goes back to open */
		ids[i] = strcmp(PrmGetText(i, 2), "t") == 0 ? PrmGetInt64(i, 1, &isnull) : 0;
	}
	for (i = 0; i < n; i++)
		if (ids[i] != 0)
			TicketMove(org_id, ids[i], ST_PENDING, ST_OPEN, "patient_replied");
}

/*
 * A staff member replied in conversation_id: the first reply of its tickets
 * that are not closed.  Inside SPI; the caller checked access.
 */
void
PrmTicketStaffReplied(int64 org_id, int64 conversation_id)
{
	static SPIPlanPtr plan = NULL;
	Datum			  values[2];
	int				  n,
		i;
	int64 *ids;

	PrmPrepare(&plan,
			   "SELECT t.id FROM prm.ticket t"
			   " WHERE t.org_id = $1 AND t.conversation_id = $2 AND t.first_replied_at IS NULL"
			   "   AND t.status <> 'closed' ORDER BY t.id FOR NO KEY UPDATE",
			   2, (Oid[]){INT8OID, INT8OID});
	values[0] = Int64GetDatum(org_id);
	values[1] = Int64GetDatum(conversation_id);
	n = PrmExecute(plan, values, NULL, false, 0);
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		bool isnull;

		ids[i] = PrmGetInt64(i, 1, &isnull);
	}
	for (i = 0; i < n; i++)
		TicketFirstReply(org_id, ids[i]);
}
