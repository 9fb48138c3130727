/*-------------------------------------------------------------------------
 *
 * matching.h
 *	  What the rooms of matching share: the profile structs, the fixed
 *	  vocabularies, and the helpers of matching.c the other rooms call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MATCHING_H
#define MATCHING_H

#include "prm.h"

#include "utils/array.h"

#include "matching_solver.h"

#define MINUTES_PER_DAY 1440

/* Fixed vocabularies (matching.c): therapy types and ISO 639-1 languages. */
extern const char *const match_therapy_types[5];
extern const char *const match_language_codes[48];
extern const char *const match_genders[3];

/* A weekly window, in minutes since Monday 00:00 local time. */
typedef struct MatchWindow
{
	int start;
	int end;
} MatchWindow;

/* A therapist profile as matching reads it. */
typedef struct MatchTherapist
{
	int64		 id;
	double		 lat;
	double		 lon;
	uint64		 langs;	 /* bit i: match_language_codes[i] */
	uint32		 types;	 /* bit i: match_therapy_types[i] */
	int			 gender; /* 0 unknown, else 1 + index in match_genders */
	int			 open_places;
	int			 capacity; /* free places for the assignment */
	int			 contacts;
	int			 answers;
	int			 nwin;
	MatchWindow *win;
} MatchTherapist;

/* A placement request as matching reads it. */
typedef struct MatchRequest
{
	int64		 id;
	double		 lat;
	double		 lon;
	double		 max_km;
	uint64		 langs;
	int			 type;		  /* index in match_therapy_types */
	int			 gender_pref; /* 0 none, else 1 + index in match_genders */
	int			 nwin;
	MatchWindow *win;
} MatchRequest;

/* The score of one (request, therapist) candidate, part by part. */
typedef struct MatchScore
{
	double distance_km;
	int	   score; /* centi-points */
	double distance_pts;
	double gender_pts;
	double times_pts;
	double reply_pts;
	double places_pts;
	int	   overlap_min;
} MatchScore;

/* Column list MatchReadTherapist expects (alias t). */
#define THERAPIST_COLUMNS                                                    \
	"t.id, t.latitude, t.longitude, t.languages, t.therapy_types, t.gender," \
	" t.open_places, t.contacts_total, t.answers_total"

/* Column list MatchReadRequest expects (alias r). */
#define REQUEST_COLUMNS                                              \
	"r.id, r.latitude, r.longitude, r.max_distance_km, r.languages," \
	" r.therapy_type, r.gender_preference"

/* matching.c */
extern int	  MatchOneOf(const char *const *vocab, int n, const char *value,
						 const char *what);
extern Datum  MatchMaskArray(uint64 mask, const char *const *vocab, int n);
extern double MatchCoordinate(FunctionCallInfo fcinfo, int argno,
							  const char *name, double limit);
extern void	  MatchRequireRow(int64 org_id, const char *table, int64 id,
							  bool for_update);
extern int	  MatchGetInt32(int row, int col);
extern void	  MatchReadTherapist(int row, MatchTherapist *t);
extern void	  MatchReadRequest(int row, MatchRequest *r);
extern void	  MatchLoadRequest(int64 org_id, int64 request_id, MatchRequest *r);
extern void	  MatchLoadPhoneHours(int64 org_id, MatchTherapist *ts, int nt);
extern bool	  MatchNextWindow(const char *tz, const MatchWindow *win, int nwin,
							  TimestampTz as_of, TimestampTz *start,
							  TimestampTz *end);

/* matching_contact.c */
extern void MatchCancelSettledCalls(int64 org_id, int64 request_id,
									TimestampTz as_of);
extern int	MatchWithdrawContacts(int64 org_id, int64 request_id,
								  int64 keep_contact_id);

#endif /* MATCHING_H */
