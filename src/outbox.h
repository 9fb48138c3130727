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

extern void	  OutboxCheckChannel(const char *channel);
extern bool	  OutboxHasFromAddress(void);
extern Datum *OutboxCallerOrgs(PrmAccessLevel level, int *norgs);

#endif /* OUTBOX_H */
