/*-------------------------------------------------------------------------
 *
 * ticket.h
 *	  What the ticket files (ticket.c, ticket_sla.c) share, and the entry
 *	  points other capabilities (conversations, inbound messages, journeys)
 *	  call inside SPI.  The entry points check no access: their caller did.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PRM_TICKET_H
#define PRM_TICKET_H

#include "prm.h"

/* entry points for other capabilities (0 = NULL for ids) */
extern int64 PrmOpenTicket(int64 org_id, const char *subject,
						   const char *priority, int64 patient_id,
						   const char *description, int64 conversation_id,
						   const char *source);
extern void	 PrmTicketPatientReplied(int64 org_id, int64 patient_id,
									 int64 conversation_id);
extern void	 PrmTicketStaffReplied(int64 org_id, int64 conversation_id);

/* ticket.c: vocabulary */
extern void PrmCheckTicketPriority(const char *priority);

/* ticket_sla.c: SLA clocks of one ticket (row locked by the caller) */
extern void	 TicketSlaStart(int64 org_id, int64 ticket_id, bool paused);
extern void	 TicketSlaPause(int64 org_id, int64 ticket_id);
extern void	 TicketSlaResume(int64 org_id, int64 ticket_id);
extern void	 TicketWakeFor(int64 org_id, int64 ticket_id);
extern int64 PrmTicketDueStep(int limit);

#endif /* PRM_TICKET_H */
