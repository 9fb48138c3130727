/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  What the outbox's rooms share: outbox.c (the queue) and
 *	  outbox_template.c (message templates and rendering).
 *
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_H
#define OUTBOX_H

#include "prm.h"

extern void OutboxCheckChannel(const char *channel);

#endif /* OUTBOX_H */
