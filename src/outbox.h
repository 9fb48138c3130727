/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  What the outbox's rooms share: outbox.c (the queue), outbox_ack.c
 *	  (the batch acknowledgement) and outbox_template.c (message templates
 *	  and rendering).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_H
#define OUTBOX_H

#include "prm.h"

/* the batch acknowledgement's plan: generic, planned once per backend */
#define OUTBOX_GENERIC CURSOR_OPT_GENERIC_PLAN

extern void	  OutboxCheckChannel(const char *channel);
extern bool	  OutboxHasFromAddress(void);
extern Datum *OutboxCallerOrgs(PrmAccessLevel level, int *norgs);

#endif /* OUTBOX_H */
