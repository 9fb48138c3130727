/*-------------------------------------------------------------------------
 *
 * comms.h
 *	  Communications to patients (comms.c, comms_consent.c): sending a
 *	  message kind to a patient through its template, now or later, and the
 *	  gate every message to a patient passes in PrmEnqueue (consent and the
 *	  frequency caps of promotional messages).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PRM_COMMS_H
#define PRM_COMMS_H

#include "prm.h"

/*
 * comms.c: queue message kind to a patient on channel, to go out at
 * not_before (0: now).  Picks the patient's address for the channel
 * (phone, e-mail or their app), renders the kind's template in the
 * patient's language ({date} and {time}: their next appointment), applies
 * quiet hours and opt-outs (PrmRecipientCheck), then consent and caps
 * (PrmEnqueueOrRefuse).  Returns the message's id; the message is queued,
 * or kept with status capped or refused and the reason in last_error (no
 * address, opted out, no consent, a cap, a placeholder the patient has no
 * value for).  A dedup_key used before returns that message's id.
 * Raises 02000 for an unknown patient, 22023 for an unknown channel or a
 * kind the organization does not have.  Runs inside the caller's SPI
 * connection; the caller has authorised the organization.
 */
extern int64 PrmSendToPatient(int64 org_id, int64 patient_id, const char *kind,
							  const char *channel, TimestampTz not_before,
							  const char *dedup_key);

/*
 * comms_consent.c: whether a message of message_class to a patient on
 * channel at time at may be queued: "queued", or "refused" (no consent
 * where the organization requires it) or "capped" (a promotional cap is
 * full) with *reason saying why.  Inside SPI.
 */
extern const char *PrmMessageGate(int64 org_id, int64 patient_id, const char *channel,
								  const char *message_class, TimestampTz at,
								  char **reason);
extern bool		   PrmCheckConsentRequired(const char *value, const char **error);
extern Datum	   CommsExportPatient(int64 org_id, int64 patient_id);
extern Datum	   CommsErasePatient(int64 org_id, int64 patient_id);

#endif /* PRM_COMMS_H */
