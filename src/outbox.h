/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  What the outbox's rooms share: outbox.c (the queue), outbox_ack.c
 *	  (the batch acknowledgement), outbox_template.c (message templates
 *	  and rendering) and outbox_rules.c (the rules of a message's columns).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_H
#define OUTBOX_H

#include "prm.h"

/* the batch acknowledgement's plan: generic, planned once per backend */
#define OUTBOX_GENERIC CURSOR_OPT_GENERIC_PLAN

/* the longest values of a message's columns, in characters (outbox_rules.c) */
#define OUTBOX_ADDRESS_MAX 320	/* to_address: a phone number, e-mail or device */
#define OUTBOX_BODY_MAX 1600	/* body: ten SMS segments */
#define OUTBOX_KEY_MAX 200		/* dedup_key, provider_message_id */
#define OUTBOX_CAMPAIGN_MAX 100 /* campaign */

extern void	  OutboxCheckChannel(const char *channel);
extern bool	  OutboxHasFromAddress(void);
extern Datum *OutboxCallerOrgs(PrmAccessLevel level, int *norgs);

#endif /* OUTBOX_H */
