/*-------------------------------------------------------------------------
 *
 * fill.h
 *	  What the rooms of the cancellation fill engine share: the slot as the
 *	  engine reads it, its lock, and the steps every room takes on a slot.
 *
 * The engine's rooms:
 *	fill.c		 shared helpers and the slot's life: freed, taken, withdrawn,
 *				 undo_cancellation, fill_stats
 *	fill_batch.c choosing candidates and sending a batch (prm.fill_slot)
 *	fill_reply.c inbound SMS, keywords, accept and decline, the accept link
 *	fill_sweep.c expiry and due-batch sweeps, the guarded per-slot runner
 *
 * Lock order, everywhere: provider (taken by bookings, and by a YES before
 * it claims), slot, then its offers, then waitlist entries.  Every change to
 * a slot's offers happens with the slot locked (FillLockSlot).
 *
 *-------------------------------------------------------------------------
 */
#ifndef FILL_H
#define FILL_H

#include "prm.h"

/* A slot as the engine reads it, under its lock (FillLockSlot). */
typedef struct FillSlot
{
	int64		org_id;
	int64		id;
	int64		provider_id;
	int64		location_id; /* 0 when the provider has none */
	TimestampTz starts_at;
	TimestampTz ends_at;
	bool		free;
	int			batches_sent;
	char		fill_status[16];
} FillSlot;

/* fill.c */
extern bool FillInstalled(void);
extern bool FillLockSlot(int64 org_id, int64 slot_id, bool skip_locked, FillSlot *slot);
extern void FillSetStatus(int64 org_id, int64 slot_id, const char *fill_status, bool new_batch);
extern void FillRetryLater(int64 org_id, int64 slot_id, TimestampTz at);
extern void FillFormatLocal(TimestampTz ts, const char *tz, char **date, char **time);
extern void FillFormatAppointment(const PrmSettings *s, TimestampTz ts, const char *patient_tz,
								  char **date, char **time);
extern void FillCancelSlotTakenText(int64 org_id, int64 offer_id);
extern void FillCancelClosedOfferMessages(int64 org_id, int64 slot_id);
extern int	FillWithdrawSlotOffers(int64 org_id, int64 slot_id, const char *reason);
extern void FillWithdrawOpenOffers(int64 org_id, const char *where, int64 key,
								   int64 except_offer, const char *reason);

/* fill_batch.c */
extern int	FillSendBatch(int64 org_id, int64 slot_id);
extern void FillAdvance(int64 org_id, int64 slot_id);

#endif /* FILL_H */
