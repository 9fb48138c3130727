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
#include "utils/jsonb.h"
#include "utils/date.h"
#include "utils/timestamp.h"

/* Access levels, in increasing order of power for the ordered ones. */
typedef enum PrmAccessLevel
{
	PRM_LEVEL_SENDER,			/* claims and acknowledges outbound messages */
	PRM_LEVEL_WEBHOOK,			/* delivers inbound messages and statuses */
	PRM_LEVEL_READONLY,			/* reads the organization's rows */
	PRM_LEVEL_STAFF,			/* runs the clinic: patients, bookings, fills */
	PRM_LEVEL_ADMIN				/* settings and access of the organization */
} PrmAccessLevel;

/* Longest accepted length of short free-text fields (names, reasons). */
#define PRM_MAX_NAME_LEN	200
#define PRM_MAX_TEXT_LEN	2000

/* settings (prm.c) */
extern char *prm_default_region;

/* prm.c: argument checks */
extern void PrmArgNotNull(FunctionCallInfo fcinfo, int argno, const char *name);
extern char *PrmTextArg(FunctionCallInfo fcinfo, int argno, const char *name,
						int maxlen);
extern char *PrmTextArgOrNull(FunctionCallInfo fcinfo, int argno,
							  const char *name, int maxlen);
extern void PrmCheckTextLength(const char *value, const char *name, int maxlen);
extern char *PrmValidateTimezone(const char *tzname);

/* prm.c: tenancy */
extern bool PrmCallerIsPrivileged(void);
extern void PrmRequireOrgAccess(int64 org_id, PrmAccessLevel level);
extern PrmAccessLevel PrmParseLevel(const char *level);
extern const char *PrmLevelName(PrmAccessLevel level);

/* prm.c: SPI helpers */
extern SPIPlanPtr PrmPrepare(SPIPlanPtr *cache, const char *sql, int nargs,
							 Oid *argtypes);
extern int	PrmExecute(SPIPlanPtr plan, Datum *values, const char *nulls,
					   bool read_only, long count);
extern int64 PrmGetInt64(int row, int col, bool *isnull);
extern char *PrmGetText(int row, int col);
extern void PrmSpiConnect(void);
extern void PrmSpiFinish(void);

/* prm.c: events and notifications */
extern void PrmEmitEvent(int64 org_id, const char *kind, const char *entity,
						 int64 entity_id, const char *payload_json);
extern void PrmNotifyOnce(const char *channel);
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
	PRM_ENTITY_COUNT
} PrmEntity;

extern void PrmRequireRow(int64 org_id, PrmEntity entity, int64 id,
						  bool for_update);
extern int64 PrmBookAppointment(int64 org_id, int64 patient_id,
								int64 provider_id, TimestampTz starts_at,
								TimestampTz ends_at, int64 slot_id);

/* phone.c */
extern char *PrmNormalizePhone(const char *input, const char *region);
extern void PrmCheckPhoneRegion(const char *region);
extern char *PrmOrgPhoneRegion(int64 org_id);

/* settings.c: the effective settings of one organization */
typedef struct PrmSettings
{
	int64		org_id;
	int32		batch_size;
	Interval	offer_hold;
	Interval	first_batch_delay;
	Interval	min_notice;
	int32		max_batches;
	Interval	recent_offer_window;
	int32		recent_offer_penalty;
	int32		weight_urgent;
	int32		weight_wait;
	int32		weight_seniority;
	int32		wait_full_days;
	int32		seniority_full_days;
	bool		quiet_hours;
	TimeADT		quiet_start;
	TimeADT		quiet_end;
	int32		offer_daily_cap;
	int32		offer_weekly_cap;
	int32		max_attempts;
	Interval	retry_base;
	char		phone_region[8];
	char		locale[16];
	char		timezone[65];
	char		name[201 * 4];
	char		sms_number[20];
} PrmSettings;

extern void PrmLoadSettings(int64 org_id, PrmSettings *s);
extern char *PrmFormatSeconds(int64 secs);

#define PRM_GETARG_INT64_NOTNULL(n, name) \
	(PrmArgNotNull(fcinfo, (n), (name)), PG_GETARG_INT64(n))
#define PRM_GETARG_INT32_NOTNULL(n, name) \
	(PrmArgNotNull(fcinfo, (n), (name)), PG_GETARG_INT32(n))
#define PRM_GETARG_BOOL_NOTNULL(n, name) \
	(PrmArgNotNull(fcinfo, (n), (name)), PG_GETARG_BOOL(n))
#define PRM_GETARG_TIMESTAMPTZ_NOTNULL(n, name) \
	(PrmArgNotNull(fcinfo, (n), (name)), PG_GETARG_TIMESTAMPTZ(n))

#endif							/* PRM_H */
