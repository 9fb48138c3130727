/*-------------------------------------------------------------------------
 *
 * monitor.h
 *	  What the rooms of companion monitoring share: local time with the
 *	  daylight-saving rules, "HH:MM" parsing, severities, and the alert
 *	  operations the heartbeat, acknowledgement and reminder paths call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PRM_MONITOR_H
#define PRM_MONITOR_H

#include "prm.h"

/* severities, in increasing order */
typedef enum MonSeverity
{
	MON_SEVERITY_LOW,
	MON_SEVERITY_MEDIUM,
	MON_SEVERITY_HIGH,
	MON_SEVERITY_CRITICAL
} MonSeverity;

/* monitor.c */
extern int MonParseSeverity(const char *s);

/* monitor_time.c */
extern bool		   MonParseClock(const char *s, TimeADT *out);
extern char		  *MonClockText(TimeADT t);
extern TimestampTz MonLocalToUtc(const char *tz, Timestamp local);
extern Timestamp   MonUtcToLocal(const char *tz, TimestampTz t);
extern TimestampTz MonNextLocalTime(const char *tz, TimeADT tod, TimestampTz after);

/* monitor_privacy.c */
extern Datum MonExportPatient(int64 org_id, int64 patient_id);
extern Datum MonErasePatient(int64 org_id, int64 patient_id);
extern int64 MonActivityRetention(int limit);

/*
 * monitor_alert.c: a batch of due items, each run alone (loop.c); a failing
 * one is logged and its deadline moved a minute on by backoff_sql ($1 the
 * organization, $2 the item's id).
 */
typedef struct MonBatch MonBatch;
struct MonBatch
{
	int64 (*fn)(MonBatch *b, int i); /* item i, inside SPI */
	void	   *arg;
	const char *what; /* the item, for the log */
	int64	   *org_ids;
	int64	   *ids;
	const char *backoff_sql;
	SPIPlanPtr *backoff_plan;
};

extern int64 MonRunBatch(MonBatch *b, int n);
extern int64 MonRunRows(SPITupleTable *rows, int n, int64 (*fn)(MonBatch *b, int i),
						const char *what, const char *backoff_sql, SPIPlanPtr *backoff_plan);

/* monitor_alert.c */
extern int64 MonOpenAlert(int64 org_id, int64 patient_id, const char *kind,
						  const char *severity, const char *details_json);
extern bool	 MonAcknowledge(int64 org_id, int64 alert_id, int64 caregiver_id);
extern bool	 MonResolve(int64 org_id, int64 alert_id, const char *why);
extern void	 MonRearm(int64 org_id, int64 patient_id);
extern int64 MonAlertStep(int limit);

/* monitor_reminder.c */
extern int64 MonReminderStep(int limit);
extern int64 MonSummaryStep(int limit);
extern void	 MonScheduleSummary(int64 org_id, int64 caregiver_id);

/*
 * For the inbound SMS path (inside SPI): true if from_e164 is a caregiver of
 * org_id who was sent an open alert and keyword acknowledged it (OK); then
 * *reply is the text to answer with.
 */
extern bool PrmMonitorCaregiverReply(int64 org_id, const char *from_e164,
									 const char *keyword, char **reply);

#endif /* PRM_MONITOR_H */
