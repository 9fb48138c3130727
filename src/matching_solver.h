/*-------------------------------------------------------------------------
 *
 * matching_solver.h
 *	  The assignment solver of matching (matching_solver.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef MATCHING_SOLVER_H
#define MATCHING_SOLVER_H

#include "matching.h"

extern void MatchGreedy(MatchPair *pairs, int npairs, MatchTherapist *ts,
						int *choice);
extern void MatchExact(MatchPair *pairs, int npairs, int nr, MatchTherapist *ts,
					   int nt, int *choice);

#endif /* MATCHING_SOLVER_H */
