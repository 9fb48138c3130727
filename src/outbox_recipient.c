/*-------------------------------------------------------------------------
 *
 * outbox_recipient.c
 *	  Who a message may go to, and when: the recipient rules every queued
 *	  message passes (the named patient owns the address, SMS opt-outs,
 *	  quiet hours in the time zone of the patient behind the number).
 *	  Split from outbox.c, which queues, claims and acknowledges.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "prm.h"

/*
 * When an SMS to a patient at time t may go out: t itself, or, when t falls
 * in the organization's quiet hours in the patient's time zone tz, the end
 * of those quiet hours.  t must be finite (22008), and so must the end of
 * its quiet hours: a time within a day of the last timestamp may have none.
 */
TimestampTz
PrmQuietRelease(const PrmSettings *s, const char *tz, TimestampTz t)
{
	Timestamp local;
	int64	  tod;
	Timestamp midnight;
	Timestamp release;
	bool	  wraps = s->quiet_start > s->quiet_end;

	PrmCheckFiniteTimestamp(t, "the send time");
	if (!s->quiet_hours || s->quiet_start == s->quiet_end)
		return t;
	local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone,
												  CStringGetTextDatum(tz),
												  TimestampTzGetDatum(t)));
	tod = local % USECS_PER_DAY;
	if (tod < 0)
		tod += USECS_PER_DAY;
	midnight = local - tod; /* a valid local time less than a day: no overflow */

	if (wraps && tod >= s->quiet_start)
		release = PrmTimestampPlusUsecs(midnight, USECS_PER_DAY + s->quiet_end);
	else if ((wraps && tod < s->quiet_end) ||
			 (!wraps && tod >= s->quiet_start && tod < s->quiet_end))
		release = PrmTimestampPlusUsecs(midnight, s->quiet_end);
	else
		return t;
	return DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone,
												   CStringGetTextDatum(tz),
												   TimestampGetDatum(release)));
}

/*
 * The rules a message to a patient obeys, whether or not the caller named
 * the patient: the named patient must own the address (22023); an SMS to a
 * number whose patients all opted out is refused (55000); and an SMS to a
 * patient's number is held by quiet hours in the time zone of the patient
 * behind it (the named one, else the first of a family sharing it) -- a
 * number no patient has is sent when the caller said.  WhatsApp goes to a
 * phone number too: the same rules but for the SMS opt-out.  Returns when
 * the message may go out.  Inside SPI.
 */
TimestampTz
PrmRecipientRules(int64 org_id, const char *channel, const char *to,
				  int64 patient_id, TimestampTz not_before)
{
	char *refusal = NULL;

	not_before = PrmRecipientCheck(org_id, channel, to, patient_id, not_before, &refusal);
	if (refusal)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s", refusal),
				 errhint("The patient can reply START to subscribe again.")));
	return not_before;
}

/*
 * As PrmRecipientRules, but an opt-out is not raised: *refusal says it
 * (NULL when the message may go).  Inside SPI.
 */
TimestampTz
PrmRecipientCheck(int64 org_id, const char *channel, const char *to,
				  int64 patient_id, TimestampTz not_before, char **refusal)
{
	/*
	 * The patients behind the address, the named one first: one statement
	 * per kind of address, each on its index and planned once.  (As one
	 * statement choosing the column by a parameter, its generic plan read
	 * every patient, so each call planned it afresh: most of an enqueue.)
	 */
	static SPIPlanPtr		 plans[2] = {NULL, NULL};
	static const char *const sql[2] = {
		"SELECT p.sms_opt_out, coalesce(p.timezone, o.timezone), p.id = $3"
		"  FROM prm.organization o"
		"  LEFT JOIN prm.patient p ON p.org_id = o.id AND p.phone = $2"
		" WHERE o.id = $1"
		" ORDER BY p.id = $3 DESC, p.id",
		"SELECT p.sms_opt_out, coalesce(p.timezone, o.timezone), p.id = $3"
		"  FROM prm.organization o"
		"  LEFT JOIN prm.patient p ON p.org_id = o.id"
		"   AND pg_catalog.lower(p.email) = pg_catalog.lower($2) AND p.email IS NOT NULL"
		" WHERE o.id = $1"
		" ORDER BY p.id = $3 DESC, p.id"};
	bool	   whatsapp = strcmp(channel, "whatsapp") == 0;
	bool	   sms = whatsapp || strcmp(channel, "sms") == 0; /* by phone */
	SPIPlanPtr plan;
	Datum	   values[3];
	int		   n,
		i,
		opted = 0;
	char *tz;

	*refusal = NULL;
	if (!sms && strcmp(channel, "email") != 0)
		return not_before;
	plan = PrmPrepareCursor(&plans[sms ? 0 : 1], sql[sms ? 0 : 1], 3,
							(Oid[]){INT8OID, TEXTOID, INT8OID}, CURSOR_OPT_GENERIC_PLAN);
	values[0] = Int64GetDatum(org_id);
	values[1] = CStringGetTextDatum(to);
	values[2] = Int64GetDatum(patient_id);
	n = PrmExecute(plan, values, NULL, true, 0);
	if (patient_id != 0 && (n == 0 || PrmGetText(0, 3) == NULL || strcmp(PrmGetText(0, 3), "t") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("patient %lld does not have the address %s", (long long) patient_id, to),
				 errhint("Send to the patient's own %s, or leave patient_id out.", sms ? "phone" : "e-mail")));
	if (!sms)
		return not_before;
	for (i = 0; i < n; i++)
		if (PrmGetText(i, 1) != NULL && strcmp(PrmGetText(i, 1), "t") == 0)
			opted++;
	if (!whatsapp && n > 0 && PrmGetText(0, 1) != NULL && opted == n)
	{
		*refusal = psprintf("%s has opted out of SMS",
							patient_id ? psprintf("patient %lld", (long long) patient_id) : to);
		return not_before;
	}
	/* a number no patient has: the caller's own time (a clinic's staff, say) */
	if (PrmGetText(0, 1) == NULL)
		return not_before;
	tz = PrmGetText(0, 2);
	return PrmQuietRelease(PrmGetSettings(org_id), tz, not_before);
}
