/*-------------------------------------------------------------------------
 *
 * matching_solver.h
 *	  The assignment solver of matching (matching_solver.c): which therapist
 *	  each placement request is proposed to.  Pure C: include c.h (or
 *	  postgres.h) first; the solver needs palloc and nothing else of the
 *	  server.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MATCHING_SOLVER_H
#define MATCHING_SOLVER_H

#define MATCH_SCORE_MAX 10000 /* centi-points: the score of a perfect pair */

/* A candidate pair: request r may be proposed to therapist t. */
typedef struct MatchPair
{
	int	  r;		   /* index of the request, in registration order */
	int	  t;		   /* index of the therapist */
	int	  score;	   /* 0..MATCH_SCORE_MAX */
	float distance_km; /* greedy's first tie-break */
} MatchPair;

/* An assignment problem: requests, therapists and their candidate pairs. */
typedef struct MatchProblem
{
	int				 nrequests;
	int				 ntherapists;
	const int		*capacity;		/* free places of each therapist */
	const int64		*therapist_ids; /* greedy's last tie-break: smaller first */
	const MatchPair *pairs;			/* grouped by request, in request order */
	int				 npairs;
	void (*check_interrupts)(void); /* called between steps, or NULL */
} MatchProblem;

/* The component the exact solver refused, too large for exact arithmetic. */
typedef struct MatchTooLarge
{
	int nrequests;
	int ntherapists;
} MatchTooLarge;

extern bool MatchSolveExact(const MatchProblem *p, int *choice,
							MatchTooLarge *too_large);
extern void MatchSolveGreedy(const MatchProblem *p, int *choice);

#endif /* MATCHING_SOLVER_H */
