/*-------------------------------------------------------------------------
 *
 * outbox_rules.c
 *	  The rules of an outbound message's columns, in one place: its
 *	  channels, statuses and classes, and how long its address, body, keys
 *	  and campaign may be.  prm.outbound_message and its history check
 *	  every row with prm.outbound_message_check(), one CHECK constraint
 *	  calling this file, and the functions that take a channel as an
 *	  argument check it against the same list (OutboxCheckChannel).
 *
 * Why one function and not a CHECK expression per column.  PostgreSQL
 * keeps a CHECK constraint as the text of its expression tree and, in every
 * INSERT and UPDATE statement of the table, reads that text back
 * (stringToNode), plans and compiles it.  The eight expressions of 0.2.0
 * were 4,637 characters, read back by every enqueue, claim and
 * acknowledgement; a call with eight columns is 1,176 and one expression.
 * Measured with pg_stat_statements, one client, the old schema and the new
 * side by side: the enqueue's INSERT 107-114 us -> 65-76 us, the whole
 * enqueue_message 220-233 -> 162-190 us; a claim's UPDATE of one message
 * 129-169 -> 114-123 us and its acknowledgement's 94-130 -> 74-84 us.
 * Columns of domain types would cost less still (a domain's rule is
 * planned once, in the type cache), but such a column no longer compares
 * with a text value in a record (pgTAP's results_eq) or a polymorphic call
 * (is()), and these are the columns every client reads.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "outbox.h"

PG_FUNCTION_INFO_V1(prm_outbound_message_check);

static const char *const channels[] = {"sms", "whatsapp", "email", "voice", "push"};
static const char *const statuses[] = {"queued", "sending", "sent", "delivered",
									   "undelivered", "failed", "read", "dead",
									   "cancelled", "capped", "refused"};
static const char *const classes[] = {"promotional", "exempt"};

/* Is the text value one of the n words of list? */
static bool
RulesInList(text *value, const char *const *list, int n)
{
	const char *data = VARDATA_ANY(value);
	size_t		len = VARSIZE_ANY_EXHDR(value);
	int			i;

	for (i = 0; i < n; i++)
		if (strlen(list[i]) == len && memcmp(data, list[i], len) == 0)
			return true;
	return false;
}

/* The list as "a, b or c", for a message. */
static char *
RulesListText(const char *const *list, int n)
{
	StringInfoData buf;
	int			   i;

	initStringInfo(&buf);
	for (i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s", i == 0 ? "" : (i == n - 1 ? " or " : ", "), list[i]);
	return buf.data;
}

/* Raise 23514 unless argument argno (a text column) is one of list. */
static void
RulesCheckList(FunctionCallInfo fcinfo, int argno, const char *column,
			   const char *const *list, int n)
{
	if (PG_ARGISNULL(argno) || RulesInList(PG_GETARG_TEXT_PP(argno), list, n))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("the %s of an outbound message must be %s", column, RulesListText(list, n)),
			 errdetail("The row was refused by check constraint \"outbound_message_check\".")));
}

/* Raise 23514 when argument argno (a text column) has more than max characters. */
static void
RulesCheckLength(FunctionCallInfo fcinfo, int argno, const char *column, int max)
{
	text *value;
	Size  bytes;
	int	  chars;

	if (PG_ARGISNULL(argno))
		return;
	/*
	 * A character is at least a byte: most values pass on their size alone,
	 * read without decompressing them (an UPDATE that leaves a long body as
	 * it was hands it over compressed).
	 */
	bytes = toast_raw_datum_size(PG_GETARG_DATUM(argno)) - VARHDRSZ;
	if (bytes <= (Size) max)
		return;
	value = PG_GETARG_TEXT_PP(argno);
	chars = pg_mbstrlen_with_len(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
	if (chars <= max)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("the %s of an outbound message is too long", column),
			 errdetail("It has %d characters; at most %d are allowed. The row was refused by check constraint \"outbound_message_check\".",
					   chars, max)));
}

/*
 * prm.outbound_message_check(channel, to_address, body, status, dedup_key,
 *							  provider_message_id, campaign, message_class)
 * RETURNS boolean: true, or 23514 naming the column and its rule.  A NULL
 * passes (the NOT NULL columns say so themselves).
 */
Datum
prm_outbound_message_check(PG_FUNCTION_ARGS)
{
	RulesCheckList(fcinfo, 0, "channel", channels, lengthof(channels));
	RulesCheckLength(fcinfo, 1, "to_address", OUTBOX_ADDRESS_MAX);
	RulesCheckLength(fcinfo, 2, "body", OUTBOX_BODY_MAX);
	RulesCheckList(fcinfo, 3, "status", statuses, lengthof(statuses));
	RulesCheckLength(fcinfo, 4, "dedup_key", OUTBOX_KEY_MAX);
	RulesCheckLength(fcinfo, 5, "provider_message_id", OUTBOX_KEY_MAX);
	RulesCheckLength(fcinfo, 6, "campaign", OUTBOX_CAMPAIGN_MAX);
	RulesCheckList(fcinfo, 7, "message_class", classes, lengthof(classes));
	PG_RETURN_BOOL(true);
}

/* Raise 22023 unless channel (an argument) is one of the outbox's channels. */
void
OutboxCheckChannel(const char *channel)
{
	int i;

	for (i = 0; i < (int) lengthof(channels); i++)
		if (strcmp(channel, channels[i]) == 0)
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("channel \"%s\" is not recognized", channel),
			 errhint("Use %s.", RulesListText(channels, lengthof(channels)))));
}
