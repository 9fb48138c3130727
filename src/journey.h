/*-------------------------------------------------------------------------
 *
 * journey.h
 *	  What the journey files share: definitions and their checks
 *	  (journey_def.c), and the engine that runs instances (journey.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PRM_JOURNEY_H
#define PRM_JOURNEY_H

#include "prm.h"

/* at most this many actions in a stage, patients in a segment call */
#define JOURNEY_MAX_ACTIONS 20
#define JOURNEY_MAX_SEGMENT 10000
/* the longest wait or advance_after a stage may have */
#define JOURNEY_MAX_WAIT_USECS (INT64CONST(366) * USECS_PER_DAY)
/* next_action of a stage whose remaining actions are skipped */
#define JOURNEY_ACTIONS_DONE 1000

/* journey_def.c */
extern void	 JourneyCheckEventKind(const char *kind, const char *what);
extern void	 JourneyCheckActions(Jsonb *actions);
extern int64 JourneyCheckWait(Interval *iv, const char *what);

/* a batch of rows (org_id, instance id, ...) for the loop helper */
typedef struct JourneyBatch
{
	SPITupleTable *rows;
} JourneyBatch;

/* journey.c: the engine */
extern int64 PrmJourneyDueStep(int limit);
extern void	 JourneyStep(int64 org_id, int64 instance_id, int64 stage_id, const char *kind,
						 const char *detail_json);

/* journey_event.c: enrolment, events, held events, privacy */
extern void	 JourneyWakeDue(void);
extern void	 JourneyEnded(int64 org_id, int64 instance_id, const char *kind);
extern int64 JourneyEnrol(int64 org_id, int64 journey_id, Datum patients, const char *entered_by,
						  int64 event_id, const char *kind, const char *payload, int64 *last_id);
extern Datum JourneyOnePatient(int64 patient_id);
extern int	 JourneyApplyHeld(int64 org_id, int64 instance_id, int64 patient_id);
extern int64 JourneyHeldStep(int limit);
extern Datum JourneyExportPatient(int64 org_id, int64 patient_id);
extern Datum JourneyErasePatient(int64 org_id, int64 patient_id);

#endif /* PRM_JOURNEY_H */
