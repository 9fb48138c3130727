/*-------------------------------------------------------------------------
 *
 * prm.h
 *	  What every prm source file shares: settings, argument checks, the
 *	  tenancy check, SPI helpers and event emission.
 *
 * Every SQL-callable function of prm follows the same contract:
 *	- a NULL where a value is required raises 22004 (PrmArgNotNull);
 *	- the caller's access to the organization is checked before any row is
 *	  read (PrmRequireOrgAccess), because the functions are SECURITY DEFINER
 *	  and therefore bypass row-level security;
 *	- every SQL statement is prepared once, kept (SPI_keepplan) and uses
 *	  schema-qualified names only, so the caller's search_path never matters.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PRM_H
#define PRM_H

#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "storage/proc.h"
#include "utils/jsonb.h"
#include "utils/date.h"
#include "utils/timestamp.h"

/* Access levels, in increasing order of power for the ordered ones. */
typedef enum PrmAccessLevel
{
	PRM_LEVEL_SENDER,	/* claims and acknowledges outbound messages */
	PRM_LEVEL_WEBHOOK,	/* delivers inbound messages and statuses */
	PRM_LEVEL_READONLY, /* reads the organization's rows */
	PRM_LEVEL_STAFF,	/* runs the clinic: patients, bookings, fills */
	PRM_LEVEL_ADMIN		/* settings and access of the organization */
} PrmAccessLevel;

/* The current transaction's local id (its place in PGPROC moved in 17). */
#if PG_VERSION_NUM >= 170000
#define PrmCurrentLxid() (MyProc->vxid.lxid)
#else
#define PrmCurrentLxid() (MyProc->lxid)
#endif

/* Longest accepted length of short free-text fields (names, reasons). */
#define PRM_MAX_NAME_LEN 200
#define PRM_MAX_TEXT_LEN 2000

/* settings (prm.c) */
extern char *prm_default_region;
extern bool	 prm_notify_events;
extern bool	 prm_grant_table_access;

/* prm.c: argument checks */
extern void	 PrmArgNotNull(FunctionCallInfo fcinfo, int argno, const char *name);
extern char *PrmTextArg(FunctionCallInfo fcinfo, int argno, const char *name,
						int maxlen);
extern char *PrmTextArgOrNull(FunctionCallInfo fcinfo, int argno,
							  const char *name, int maxlen);
extern void	 PrmCheckTextLength(const char *value, const char *name, int maxlen);
extern char *PrmValidateTimezone(const char *tzname);
extern void	 PrmCheckEmail(const char *email);
extern void	 PrmCheckTrigger(FunctionCallInfo fcinfo, const char *fname,
							 const char *relname);

/* prm.c: tenancy */
extern bool			  PrmCallerIsPrivileged(void);
extern bool			  PrmHasOrgAccess(int64 org_id, PrmAccessLevel level);
extern void			  PrmRequireOrgAccess(int64 org_id, PrmAccessLevel level);
extern PrmAccessLevel PrmParseLevel(const char *level);
extern bool			  PrmLevelSatisfies(PrmAccessLevel granted,
										PrmAccessLevel required);
extern void			  PrmLockOrgMutex(int64 org_id, const char *purpose);
extern const char	 *PrmLevelName(PrmAccessLevel level);

/* prm.c: SPI helpers */
extern SPIPlanPtr PrmPrepare(SPIPlanPtr *cache, const char *sql, int nargs,
							 Oid *argtypes);
extern SPIPlanPtr PrmPrepareCursor(SPIPlanPtr *cache, const char *sql, int nargs,
								   Oid *argtypes, int options);
extern int		  PrmExecute(SPIPlanPtr plan, Datum *values, const char *nulls,
							 bool read_only, long count);
extern int64	  PrmGetInt64(int row, int col, bool *isnull);
extern bool	  PrmHasColumn(const char *relname, const char *column);
extern char		 *PrmGetText(int row, int col);
extern void		  PrmSpiConnect(void);
extern void		  PrmSpiConnectReadOnly(void);
extern bool		  PrmSpiIsReadOnly(void);
extern void		  PrmSpiFinish(void);

/*
 * loop.c: the one loop helper for batches of items.  A statement holds at
 * most PRM_MAX_SUBXACTS of prm's subtransactions (PostgreSQL caches 64 per
 * backend); items run in groups of PRM_ITEM_GROUP per subtransaction.
 */
#define PRM_MAX_SUBXACTS 48
#define PRM_ITEM_GROUP 32

typedef struct PrmItemLoop
{
	int64 (*run)(void *ctx, int i);						/* item i, inside SPI; its result */
	void (*failed)(void *ctx, int i, ErrorData *edata); /* after rollback */
	void *ctx;
	int64 done;		/* sum of the results of the items that succeeded */
	int	  failures; /* items that failed */
	/* is this error the item's own?  NULL: all but those ending the statement */
	bool (*is_item_error)(const ErrorData *edata);
	bool unbounded; /* run every item, whatever the subtransaction budget */
} PrmItemLoop;

extern int		  PrmRunItems(PrmItemLoop *loop, int n);
extern ErrorData *PrmRunInSubtransaction(int64 (*fn)(void *arg), void *arg,
										 int64 *result);
extern int		  PrmSubxactBudgetLeft(void);
extern bool		  PrmErrorEndsStatement(const ErrorData *edata);
extern bool		  PrmErrorIsTransient(const ErrorData *edata);

/* prm.c: events and notifications */
extern void	 PrmEmitEvent(int64 org_id, const char *kind, const char *entity,
						  int64 entity_id, const char *payload_json);
extern void	 PrmEmitPatientEvent(int64 org_id, const char *kind, const char *entity,
								 int64 entity_id, int64 patient_id, const char *payload_json);
/* notify_relay.c: NOTIFY at most once per transaction, relayed at commit */
extern void	 PrmNotifyOnce(const char *channel);
extern void	 PrmRelayInit(void);
extern Size	 PrmRelayShmemSize(void);
extern void	 PrmRelayShmemStartup(void);
extern char *PrmNotifierStatusJson(void);
/* journey.c: journeys react to events about a patient (inside SPI) */
extern void	 PrmJourneyOnEvent(int64 org_id, int64 event_id, const char *kind,
							   int64 patient_id, const char *payload);
extern char *PrmJsonString(const char *s);

/* directory.c */
typedef enum PrmEntity
{
	PRM_ENTITY_LOCATION,
	PRM_ENTITY_PROVIDER,
	PRM_ENTITY_PATIENT,
	PRM_ENTITY_APPOINTMENT,
	PRM_ENTITY_SLOT,
	PRM_ENTITY_WAITLIST_ENTRY,
	PRM_ENTITY_OFFER,
	PRM_ENTITY_OUTBOUND_MESSAGE,
	PRM_ENTITY_CONVERSATION,
	PRM_ENTITY_STAFF,
	PRM_ENTITY_TICKET,
	PRM_ENTITY_COUNT
} PrmEntity;

extern void	 PrmRequireRow(int64 org_id, PrmEntity entity, int64 id,
						   bool for_update);
extern void	 PrmLockProvider(int64 org_id, int64 provider_id);
extern void	 PrmCheckProviderFree(int64 org_id, int64 provider_id,
								  TimestampTz starts_at, TimestampTz ends_at,
								  int64 except_id);
extern void	 PrmTakeCoveredSlots(int64 org_id, int64 provider_id,
								 TimestampTz starts_at, TimestampTz ends_at,
								 int64 appt_id, int64 except_slot);
extern int64 PrmBookAppointment(int64 org_id, int64 patient_id,
								int64 provider_id, TimestampTz starts_at,
								TimestampTz ends_at, int64 slot_id);

/* conversation.c: threading every message of a patient */
extern int64 PrmThreadMessage(int64 org_id, const char *channel,
							  const char *address, int64 patient_id,
							  bool inbound, bool unread, const char *body,
							  int64 inbound_id, int64 outbound_id);
extern int64 PrmConversationTimers(int limit);

/* conversation_inbound.c: inbound traffic of every channel */
extern char *PrmKeyword(const char *body);
extern bool	 PrmAsksForPerson(int64 org_id, const char *body);
extern char *PrmInboundAddress(const char *channel, const char *raw,
							   const char *region);
extern int64 PrmRouteInbound(const char *channel, const char *to_raw);
extern int64 PrmRecordInbound(int64 org_id, const char *channel,
							  const char *pmid, const char *from,
							  const char *body, const char *keyword,
							  int64 patient_id, char **replay);
extern void	 PrmCloseInbound(int64 org_id, int64 inbound_id, int64 patient_id,
							 int64 offer_id, int64 conversation_id,
							 const char *reply, bool thread_reply);
extern char *PrmHandoff(int64 org_id, const char *channel, const char *address,
						int64 patient_id, int64 conversation_id,
						int64 inbound_id, const char *body,
						const char *language);
extern char *PrmHandleInboundOther(const char *channel, const char *to_raw,
								   const char *from_raw, const char *body,
								   const char *pmid);

/* phone.c */
extern char *PrmNormalizePhone(const char *input, const char *region);
extern void	 PrmCheckPhoneRegion(const char *region);
extern char *PrmTryNormalizePhone(const char *input, const char *region);
extern char *PrmOrgPhoneRegion(int64 org_id);

/*
 * settings.c: the effective settings of one organization.  Every field but
 * org_id and the organization's own columns (timezone, name, sms_number) is
 * a setting of the same name, loaded by the registry in settings.c: a new
 * setting is one registry line there plus its field here.
 */
typedef struct PrmSettings
{
	int64	 org_id;
	int32	 batch_size;
	Interval offer_hold;
	Interval first_batch_delay;
	Interval min_notice;
	int32	 max_batches;
	Interval recent_offer_window;
	int32	 recent_offer_penalty;
	int32	 weight_urgent;
	int32	 weight_wait;
	int32	 weight_seniority;
	int32	 wait_full_days;
	int32	 seniority_full_days;
	bool	 quiet_hours;
	TimeADT	 quiet_start;
	TimeADT	 quiet_end;
	int32	 offer_daily_cap;
	int32	 offer_weekly_cap;
	int32	 max_attempts;
	Interval retry_base;
	char	 phone_region[8]; /* null: prm.default_region */
	char	 locale[16];
	char	 timezone[65];	  /* prm.organization.timezone */
	char	 name[201 * 4];	  /* prm.organization.name */
	char	 sms_number[20];  /* prm.organization.sms_number, or "" */
	char	 accept_url[256]; /* null: "" */
	Interval late_accept_window;
	double	 churn_critical_ratio;
	double	 churn_high_ratio;
	double	 churn_medium_ratio;
	double	 default_visit_interval_days;
	double	 engagement_full_visits;
	double	 engagement_high_score;
	double	 engagement_moderate_score;
	double	 engagement_low_score;
	int32	 retention_days;
	double	 ltv_horizon_days;
	/* conversations */
	Interval conversation_inactive_after;
	Interval conversation_closed_after;
	char	 handoff_keywords[256]; /* null: "" */
	/* tickets (ticket.c, ticket_sla.c) */
	Interval ticket_autoclose_after;
	int32	 max_open_tickets_per_staff;
	/* companion monitoring (monitor*.c) */
	Interval reminder_missed_after;
	int32	 reminder_horizon_days;
	int32	 activity_retention_days;
	/* appointment reminders */
	bool appointment_reminders;
	char reminder_offsets[128]; /* null: none */
	char reminder_channel[8];	/* null: "sms" */
	/* communications */
	int32 promotional_daily_cap;
	int32 promotional_weekly_cap;
	char  consent_required[160]; /* null: "" */
	/* offers reaching the right people at the right time */
	bool offer_reachable_first;
	bool notify_slot_taken;
} PrmSettings;

extern void				  PrmLoadSettings(int64 org_id, PrmSettings *s);
extern const PrmSettings *PrmGetSettings(int64 org_id);
extern char				 *SettingsDefaultsJson(void);

/* settings.c: the one interval conversion and checked time arithmetic */
extern bool		   PrmIntervalToUsecs(const Interval *iv, int64 *usecs);
extern int64	   PrmIntervalUsecs(const Interval *iv);
extern TimestampTz PrmTimestampPlusUsecs(TimestampTz t, int64 usecs);
extern void		   PrmCheckFiniteTimestamp(TimestampTz t, const char *name);
extern char		  *PrmFormatSeconds(int64 secs);

/* scoring.c */
typedef struct PrmScoreParts
{
	int	   urgent;	  /* points for urgency */
	int	   boost;	  /* the manual boost, as is */
	int	   wait;	  /* points for the wait until the current appointment */
	int	   seniority; /* points for time on the list */
	int	   total;
	double days_to_wait; /* -1 when there is no current appointment */
	double days_on_list;
} PrmScoreParts;

extern void		   PrmComputeScore(bool urgent, int boost, bool has_appt,
								   TimestampTz appt_at, TimestampTz joined_at,
								   TimestampTz as_of, const PrmSettings *w,
								   PrmScoreParts *out);
extern TimestampTz PrmScoreNextChange(bool urgent, int boost, bool has_appt,
									  TimestampTz appt_at, TimestampTz joined_at,
									  TimestampTz as_of, const PrmSettings *w,
									  const PrmScoreParts *now_parts);
extern int64	   PrmRescoreDue(int limit);
extern void		   PrmCheckBoost(int boost);
extern char		  *PrmJsonTimestamp(TimestampTz ts);

#define PRM_GETARG_INT64_NOTNULL(n, name) \
	(PrmArgNotNull(fcinfo, (n), (name)), PG_GETARG_INT64(n))
#define PRM_GETARG_INT32_NOTNULL(n, name) \
	(PrmArgNotNull(fcinfo, (n), (name)), PG_GETARG_INT32(n))
#define PRM_GETARG_BOOL_NOTNULL(n, name) \
	(PrmArgNotNull(fcinfo, (n), (name)), PG_GETARG_BOOL(n))
#define PRM_GETARG_TIMESTAMPTZ_NOTNULL(n, name) \
	(PrmArgNotNull(fcinfo, (n), (name)), PG_GETARG_TIMESTAMPTZ(n))

/* outbox.c, outbox_recipient.c (quiet hours and recipient rules) */
typedef struct PrmTemplateVar
{
	const char *name;
	const char *value;
} PrmTemplateVar;

extern char		  *PrmRender(int64 org_id, const char *kind, const char *channel,
							 const char *locale, const PrmTemplateVar *vars, int nvars);
extern char		  *PrmRenderIfPossible(int64 org_id, const char *kind, const char *channel,
									   const char *locale, const PrmTemplateVar *vars,
									   int nvars, char **missing);
extern bool		   PrmKindIsBuiltIn(const char *kind);
extern const char *PrmMessageClass(int64 org_id, const char *kind);
extern const char *PrmRequireMessageKind(int64 org_id, const char *kind);
extern TimestampTz PrmQuietRelease(const PrmSettings *s, const char *tz,
								   TimestampTz t);
extern int64	   PrmEnqueue(int64 org_id, const char *channel, const char *to,
							  const char *body, const char *kind, int64 patient_id,
							  int64 offer_id, const char *dedup_key,
							  TimestampTz not_before);
extern int64	   PrmEnqueueOrRefuse(int64 org_id, const char *channel, const char *to,
									  const char *body, const char *kind, int64 patient_id,
									  int64 offer_id, const char *dedup_key,
									  TimestampTz not_before, const char *refusal);
extern TimestampTz PrmRecipientRules(int64 org_id, const char *channel,
									 const char *to, int64 patient_id,
									 TimestampTz not_before);
extern TimestampTz PrmRecipientCheck(int64 org_id, const char *channel,
									 const char *to, int64 patient_id,
									 TimestampTz not_before, char **refusal);
extern int		   PrmReleaseExpiredLeases(int limit);
extern int		   PrmArchiveMessages(int limit);
extern bool		   PrmArchiveInProgress(void);

/* fill.c */
extern void PrmSlotFreed(int64 org_id, int64 slot_id);
extern void PrmSlotTaken(int64 org_id, int64 slot_id);
extern void PrmWithdrawEntryOffers(int64 org_id, int64 entry_id,
								   const char *reason);
/* fill_sweep.c */
extern int		   PrmExpireOffers(TimestampTz as_of, Datum *orgs, int norgs,
								   int limit);
extern int		   PrmSendDueBatches(int limit);
extern const char *PrmFillTakeSweepError(void);

/* directory.c */
extern void	 PrmCheckPatientPhone(int64 org_id, const char *e164);
extern int64 PrmCancelAppointment(int64 org_id, int64 appointment_id,
								  const char *reason);

/* matching_contact.c */
extern int64 PrmMatchingFollowUps(void);

/* privacy.c */
extern int64 PrmApplyRetention(void);

/* jobs.c */
extern int		   PrmJobCount(void);
extern const char *PrmJobName(int i);
extern int64	   PrmRunJob(int i);
extern void		   PrmRecordJobError(int i, const char *message);
extern TimestampTz PrmNextDeadline(void);

/* reminder.c: appointment reminders */
#define PRM_MAX_REMINDERS 5
extern int	PrmParseReminderOffsets(const char *str, int64 *usecs, const char **error);
extern int	PrmScheduleReminders(int64 org_id, int64 appointment_id);
extern bool PrmReminderReply(int64 org_id, Datum patients, const char *keyword,
							 const char *language, char **reply);

/* worker.c; the launcher runs a worker and a notifier per database */
#define PRM_MAX_DATABASES 32
extern void PrmWorkerInit(void);
extern void PrmWakeWorker(TimestampTz deadline);
extern char *PrmWorkerStatusJson(void);

/* outbox.c: the outbox's part of prm.health() */
extern PGDLLEXPORT Datum prm_health(PG_FUNCTION_ARGS);

#endif /* PRM_H */
