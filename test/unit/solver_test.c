/*-------------------------------------------------------------------------
 *
 * solver_test.c
 *	  Unit test of the assignment solver (src/matching_solver.c), built and
 *	  run without a server: make unit.
 *
 * The solver needs palloc and pfree only; the shim below gives it malloc
 * and counts the blocks, so the test also proves that the solver frees
 * what it allocates.  Hand-made cases check capacities, ties, requests
 * nobody can take, a case where greedy is wrong, the refusal of a
 * component too large for exact arithmetic and the interrupt callback;
 * then a few hundred random small problems are checked against brute
 * force: the exact solver must reach the lexicographic optimum (most
 * requests, then highest score, then smallest sum of registration ranks
 * inside each component), and greedy must never beat it.
 *
 * Output is TAP ("ok N - ...", "not ok N - ...", then "1..N"); the exit
 * status is 1 when a check failed.
 *
 *-------------------------------------------------------------------------
 */
#include "c.h"

#include "utils/palloc.h"

#include "matching_solver.h"

/* c.h maps these to libpgport's; the test uses the C library's */
#undef printf
#undef fprintf
#undef vprintf

#include <stdlib.h>

/* ---------------------------------------------------------------------
 * The shim: palloc and friends on malloc, with a count of live blocks
 * ---------------------------------------------------------------------
 */

MemoryContext CurrentMemoryContext = NULL;
static long	  live_blocks = 0;

/* malloc that never returns NULL. */
static void *
ShimAlloc(Size size)
{
	void *p = malloc(size > 0 ? size : 1);

	if (p == NULL)
	{
		fprintf(stderr, "out of memory\n");
		abort();
	}
	live_blocks++;
	return p;
}

void *
palloc(Size size)
{
	return ShimAlloc(size);
}

void *
palloc0(Size size)
{
	void *p = ShimAlloc(size);

	memset(p, 0, size);
	return p;
}

void *
MemoryContextAllocHuge(MemoryContext context, Size size)
{
	return ShimAlloc(size);
}

void
pfree(void *pointer)
{
	live_blocks--;
	free(pointer);
}

void
ExceptionalCondition(const char *conditionName, const char *errorType,
					 const char *fileName, int lineNumber)
{
	fprintf(stderr, "%s(\"%s\", File: \"%s\", Line: %d)\n", errorType,
			conditionName, fileName, lineNumber);
	abort();
}

/* ---------------------------------------------------------------------
 * TAP output
 * ---------------------------------------------------------------------
 */

static int tests = 0;
static int failures = 0;

/* Report one check. */
static void
Check(bool ok, const char *fmt, ...) pg_attribute_printf(2, 3);

static void
Check(bool ok, const char *fmt, ...)
{
	va_list ap;

	tests++;
	if (!ok)
		failures++;
	printf("%sok %d - ", ok ? "" : "not ", tests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* ---------------------------------------------------------------------
 * Problems
 * ---------------------------------------------------------------------
 */

#define MAX_R 64
#define MAX_T 16
#define MAX_PAIRS 512

/* A problem and the arrays behind it. */
typedef struct TestProblem
{
	int		  nr;
	int		  nt;
	int		  capacity[MAX_T];
	int64	  ids[MAX_T];
	MatchPair pairs[MAX_PAIRS];
	int		  npairs;
} TestProblem;

/* An empty problem of nr requests and nt therapists, ids 100, 101, ... */
static void
TestInit(TestProblem *tp, int nr, int nt)
{
	int i;

	memset(tp, 0, sizeof(*tp));
	tp->nr = nr;
	tp->nt = nt;
	for (i = 0; i < nt; i++)
	{
		tp->capacity[i] = 1;
		tp->ids[i] = 100 + i;
	}
}

/* Add the pair (r, t) with a score in points (0-100); keep r in order. */
static void
TestPair(TestProblem *tp, int r, int t, double points)
{
	MatchPair *p = &tp->pairs[tp->npairs++];

	p->r = r;
	p->t = t;
	p->score = (int) (points * 100.0 + 0.5);
	p->distance_km = 1.0f;
}

/* The MatchProblem view of tp. */
static MatchProblem
TestView(const TestProblem *tp, void (*check_interrupts)(void))
{
	MatchProblem p;

	p.nrequests = tp->nr;
	p.ntherapists = tp->nt;
	p.capacity = tp->capacity;
	p.therapist_ids = tp->ids;
	p.pairs = tp->pairs;
	p.npairs = tp->npairs;
	p.check_interrupts = check_interrupts;
	return p;
}

/* The therapist chosen for request r (-1: none). */
static int
Chosen(const TestProblem *tp, const int *choice, int r)
{
	return choice[r] < 0 ? -1 : tp->pairs[choice[r]].t;
}

/* Run the exact solver; false when it refused the problem. */
static bool
RunExact(const TestProblem *tp, int *choice)
{
	MatchProblem  p = TestView(tp, NULL);
	MatchTooLarge big;

	return MatchSolveExact(&p, choice, &big);
}

/* Run the greedy solver. */
static void
RunGreedy(const TestProblem *tp, int *choice)
{
	MatchProblem p = TestView(tp, NULL);

	MatchSolveGreedy(&p, choice);
}

/* The value of an assignment: matched, total score, rank sum. */
typedef struct Value
{
	int	  matched;
	int64 score;
	int64 ranks;
} Value;

/* Compare values: > 0 when a is better. */
static int
ValueCmp(Value a, Value b)
{
	if (a.matched != b.matched)
		return a.matched > b.matched ? 1 : -1;
	if (a.score != b.score)
		return a.score > b.score ? 1 : -1;
	if (a.ranks != b.ranks)
		return a.ranks < b.ranks ? 1 : -1;
	return 0;
}

/* Union-find root. */
static int
Root(int *parent, int x)
{
	while (parent[x] != x)
		x = parent[x] = parent[parent[x]];
	return x;
}

/*
 * The rank of each request: the number of earlier requests that share its
 * component of the candidate graph (the solver's third objective).
 */
static void
Ranks(const TestProblem *tp, int *rank)
{
	int parent[MAX_R + MAX_T];
	int i,
		j;

	for (i = 0; i < tp->nr + tp->nt; i++)
		parent[i] = i;
	for (i = 0; i < tp->npairs; i++)
	{
		int a = Root(parent, tp->pairs[i].r);
		int b = Root(parent, tp->nr + tp->pairs[i].t);

		parent[a] = b;
	}
	for (i = 0; i < tp->nr; i++)
	{
		rank[i] = 0;
		for (j = 0; j < i; j++)
			if (Root(parent, j) == Root(parent, i))
				rank[i]++;
	}
}

/*
 * Is choice a valid assignment of tp (each request at most one of its own
 * pairs, no therapist above capacity)?  Its value in *v.
 */
static bool
Valid(const TestProblem *tp, const int *choice, Value *v)
{
	int used[MAX_T] = {0};
	int rank[MAX_R];
	int r;

	Ranks(tp, rank);
	memset(v, 0, sizeof(*v));
	for (r = 0; r < tp->nr; r++)
	{
		const MatchPair *p;

		if (choice[r] < 0)
			continue;
		if (choice[r] >= tp->npairs)
			return false;
		p = &tp->pairs[choice[r]];
		if (p->r != r || ++used[p->t] > tp->capacity[p->t])
			return false;
		v->matched++;
		v->score += p->score;
		v->ranks += rank[r];
	}
	return true;
}

/* The best value over every assignment, by enumeration. */
static void
BruteForce(const TestProblem *tp, int r, int *choice, Value *best)
{
	int	  i;
	Value v;

	if (r == tp->nr)
	{
		if (Valid(tp, choice, &v) && ValueCmp(v, *best) > 0)
			*best = v;
		return;
	}
	choice[r] = -1;
	BruteForce(tp, r + 1, choice, best);
	for (i = 0; i < tp->npairs; i++)
		if (tp->pairs[i].r == r)
		{
			choice[r] = i;
			BruteForce(tp, r + 1, choice, best);
		}
	choice[r] = -1;
}

/* ---------------------------------------------------------------------
 * Hand-made cases
 * ---------------------------------------------------------------------
 */

static int interrupt_checks = 0;

/* The interrupt callback of the tests: count the calls. */
static void
CountInterruptChecks(void)
{
	interrupt_checks++;
}

/* No requests, or no pairs: nothing is chosen, nothing crashes. */
static void
TestEmpty(void)
{
	TestProblem tp;
	int			choice[MAX_R];

	TestInit(&tp, 0, 0);
	Check(RunExact(&tp, choice), "empty problem: exact succeeds");
	TestInit(&tp, 3, 2);
	choice[0] = choice[1] = choice[2] = 7;
	Check(RunExact(&tp, choice) && choice[0] == -1 && choice[1] == -1 && choice[2] == -1,
		  "requests without candidates: exact chooses nothing (-1 each)");
	choice[0] = choice[1] = choice[2] = 7;
	RunGreedy(&tp, choice);
	Check(choice[0] == -1 && choice[1] == -1 && choice[2] == -1,
		  "requests without candidates: greedy chooses nothing");
}

/* Capacities: a therapist takes at most their free places, 0 means none. */
static void
TestCapacity(void)
{
	TestProblem tp;
	int			choice[MAX_R];
	Value		v;

	/* three requests, one therapist with two places: the two best go */
	TestInit(&tp, 3, 1);
	tp.capacity[0] = 2;
	TestPair(&tp, 0, 0, 50);
	TestPair(&tp, 1, 0, 90);
	TestPair(&tp, 2, 0, 70);
	Check(RunExact(&tp, choice) && Valid(&tp, choice, &v) && v.matched == 2 &&
			  Chosen(&tp, choice, 0) == -1 && Chosen(&tp, choice, 1) == 0 &&
			  Chosen(&tp, choice, 2) == 0,
		  "capacity 2: exact places the two best-scoring requests");
	RunGreedy(&tp, choice);
	Check(Valid(&tp, choice, &v) && v.matched == 2 && Chosen(&tp, choice, 2) == -1,
		  "capacity 2: greedy places the first two registrations");

	/* a therapist without free places is never chosen */
	TestInit(&tp, 2, 2);
	tp.capacity[0] = 0;
	TestPair(&tp, 0, 0, 100);
	TestPair(&tp, 0, 1, 10);
	TestPair(&tp, 1, 0, 100);
	Check(RunExact(&tp, choice) && Chosen(&tp, choice, 0) == 1 && Chosen(&tp, choice, 1) == -1,
		  "capacity 0: exact never proposes the full therapist");
	RunGreedy(&tp, choice);
	Check(Chosen(&tp, choice, 0) == 1 && Chosen(&tp, choice, 1) == -1,
		  "capacity 0: greedy neither");

	/* a request nobody can take does not block the others */
	TestInit(&tp, 3, 1);
	TestPair(&tp, 1, 0, 40);
	Check(RunExact(&tp, choice) && Chosen(&tp, choice, 0) == -1 &&
			  Chosen(&tp, choice, 1) == 0 && Chosen(&tp, choice, 2) == -1,
		  "infeasible requests stay unmatched, the feasible one is placed");
}

/* Ties: equal scores go to the earlier registration. */
static void
TestTies(void)
{
	TestProblem tp;
	int			choice[MAX_R];

	TestInit(&tp, 2, 1);
	TestPair(&tp, 0, 0, 80);
	TestPair(&tp, 1, 0, 80);
	Check(RunExact(&tp, choice) && Chosen(&tp, choice, 0) == 0 && Chosen(&tp, choice, 1) == -1,
		  "equal scores for one place: exact serves the earlier registration");
	RunGreedy(&tp, choice);
	Check(Chosen(&tp, choice, 0) == 0 && Chosen(&tp, choice, 1) == -1,
		  "equal scores for one place: greedy too");

	/* but one centi-point of score outweighs registration order */
	TestInit(&tp, 2, 1);
	TestPair(&tp, 0, 0, 80);
	TestPair(&tp, 1, 0, 80.01);
	Check(RunExact(&tp, choice) && Chosen(&tp, choice, 0) == -1 && Chosen(&tp, choice, 1) == 0,
		  "one centi-point more: exact serves the later registration");

	/* greedy: equal score and distance, the smaller therapist id wins */
	TestInit(&tp, 1, 2);
	tp.ids[0] = 200;
	tp.ids[1] = 150;
	TestPair(&tp, 0, 0, 60);
	TestPair(&tp, 0, 1, 60);
	RunGreedy(&tp, choice);
	Check(Chosen(&tp, choice, 0) == 1, "greedy tie: the smaller therapist id");
	tp.pairs[1].distance_km = 2.0f;
	RunGreedy(&tp, choice);
	Check(Chosen(&tp, choice, 0) == 0, "greedy tie: the nearer therapist before the smaller id");

	/* among equally good sets, the earlier registrations are placed */
	TestInit(&tp, 3, 2);
	TestPair(&tp, 0, 0, 50);
	TestPair(&tp, 1, 0, 50);
	TestPair(&tp, 1, 1, 50);
	TestPair(&tp, 2, 1, 50);
	Check(RunExact(&tp, choice) && Chosen(&tp, choice, 0) == 0 && Chosen(&tp, choice, 1) == 1 &&
			  Chosen(&tp, choice, 2) == -1,
		  "two places, three equal requests: the first two registrations");
}

/* Greedy is wrong: it strands a request, or scores less. */
static void
TestGreedyWrong(void)
{
	TestProblem tp;
	int			choice[MAX_R];
	Value		e,
		g;

	/* r0 prefers t0, which is r1's only candidate */
	TestInit(&tp, 2, 2);
	TestPair(&tp, 0, 0, 90);
	TestPair(&tp, 0, 1, 80);
	TestPair(&tp, 1, 0, 85);
	RunGreedy(&tp, choice);
	Check(Valid(&tp, choice, &g) && g.matched == 1 && Chosen(&tp, choice, 1) == -1,
		  "greedy: r0 takes t0 and strands r1");
	Check(RunExact(&tp, choice) && Valid(&tp, choice, &e) && e.matched == 2 &&
			  Chosen(&tp, choice, 0) == 1 && Chosen(&tp, choice, 1) == 0,
		  "exact: r0 goes to t1 so that r1 gets t0, both placed");

	/* as many placed, but greedy's total is lower */
	TestInit(&tp, 2, 2);
	TestPair(&tp, 0, 0, 60);
	TestPair(&tp, 0, 1, 50);
	TestPair(&tp, 1, 0, 100);
	TestPair(&tp, 1, 1, 10);
	RunGreedy(&tp, choice);
	Valid(&tp, choice, &g);
	Check(RunExact(&tp, choice) && Valid(&tp, choice, &e) && e.matched == 2 && g.matched == 2 &&
			  e.score == 15000 && g.score == 7000,
		  "exact scores 150 where greedy scores 70 with as many placed");

	/* more placed beats more score */
	TestInit(&tp, 2, 2);
	TestPair(&tp, 0, 0, 100);
	TestPair(&tp, 1, 0, 100);
	TestPair(&tp, 1, 1, 1);
	Check(RunExact(&tp, choice) && Valid(&tp, choice, &e) && e.matched == 2 && e.score == 10100,
		  "two placed with 101 points beat one placed with 100");
}

/* Independent components are solved alone and give the same answers. */
static void
TestComponents(void)
{
	TestProblem tp;
	int			choice[MAX_R];
	Value		v;

	/* Hamburg: r0, r2 and t0; Munich: r1, r3 and t1 (two places) */
	TestInit(&tp, 4, 2);
	tp.capacity[1] = 2;
	TestPair(&tp, 0, 0, 30);
	TestPair(&tp, 1, 1, 40);
	TestPair(&tp, 2, 0, 70);
	TestPair(&tp, 3, 1, 20);
	Check(RunExact(&tp, choice) && Valid(&tp, choice, &v) && v.matched == 3 &&
			  Chosen(&tp, choice, 0) == -1 && Chosen(&tp, choice, 2) == 0 &&
			  Chosen(&tp, choice, 1) == 1 && Chosen(&tp, choice, 3) == 1,
		  "two cities: each solved on its own");
}

/* A component too large for exact arithmetic is refused, not solved. */
static void
TestTooLarge(void)
{
	static MatchPair pairs[50000];
	int				*choice = malloc(sizeof(int) * 50000);
	int				 capacity[1] = {1};
	int64			 ids[1] = {1};
	MatchProblem	 p;
	MatchTooLarge	 big = {0, 0};
	int				 i;
	bool			 ok;
	long			 before = live_blocks;

	for (i = 0; i < 50000; i++)
	{
		pairs[i].r = i;
		pairs[i].t = 0;
		pairs[i].score = 5000;
		pairs[i].distance_km = 1.0f;
	}
	p.nrequests = 50000;
	p.ntherapists = 1;
	p.capacity = capacity;
	p.therapist_ids = ids;
	p.pairs = pairs;
	p.npairs = 50000;
	p.check_interrupts = NULL;
	ok = MatchSolveExact(&p, choice, &big);
	Check(!ok && big.nrequests == 50000 && big.ntherapists == 1,
		  "50000 requests competing for one therapist: refused, with the component's size");
	Check(live_blocks == before, "the refusal frees what it allocated");
	free(choice);
}

/* The interrupt callback is called while solving. */
static void
TestInterrupts(void)
{
	TestProblem	  tp;
	int			  choice[MAX_R];
	MatchProblem  p;
	MatchTooLarge big;
	bool		  ok;

	TestInit(&tp, 2, 2);
	TestPair(&tp, 0, 0, 90);
	TestPair(&tp, 0, 1, 80);
	TestPair(&tp, 1, 0, 85);
	p = TestView(&tp, CountInterruptChecks);
	interrupt_checks = 0;
	ok = MatchSolveExact(&p, choice, &big);
	Check(ok && interrupt_checks >= 2, "the interrupt callback is called (%d calls)",
		  interrupt_checks);
}

/* ---------------------------------------------------------------------
 * Random cases against brute force
 * ---------------------------------------------------------------------
 */

/* A small deterministic generator (xorshift64*), so failures reproduce. */
static uint64 rng_state = UINT64CONST(0x9E3779B97F4A7C15);

/* A random integer in [0, n). */
static int
Rand(int n)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (int) (((rng_state * UINT64CONST(2685821657736338717)) >> 33) % (uint64) n);
}

/* A random problem: up to 7 requests, 4 therapists, scores with ties. */
static void
RandomProblem(TestProblem *tp)
{
	static const int scores[] = {0, 2500, 5000, 5000, 7500, 10000};
	int				 r,
		t;

	TestInit(tp, 1 + Rand(7), 1 + Rand(4));
	for (t = 0; t < tp->nt; t++)
	{
		tp->capacity[t] = Rand(3);
		tp->ids[t] = 1000 - t * 7;
	}
	for (r = 0; r < tp->nr; r++)
		for (t = 0; t < tp->nt; t++)
			if (Rand(100) < 45)
			{
				MatchPair *p = &tp->pairs[tp->npairs++];

				p->r = r;
				p->t = t;
				p->score = Rand(2) ? scores[Rand(lengthof(scores))] : Rand(MATCH_SCORE_MAX + 1);
				p->distance_km = (float) Rand(4);
			}
}

/* Exact reaches the brute-force optimum; greedy never beats it. */
static void
TestRandom(int ncases)
{
	int	 exact_wrong = 0;
	int	 greedy_better = 0;
	int	 invalid = 0;
	int	 greedy_worse = 0;
	long before = live_blocks;
	int	 k;

	for (k = 0; k < ncases; k++)
	{
		TestProblem tp;
		int			choice[MAX_R];
		int			scratch[MAX_R];
		Value		best = {-1, 0, 0};
		Value		e,
			g;

		RandomProblem(&tp);
		BruteForce(&tp, 0, scratch, &best);
		if (!RunExact(&tp, choice) || !Valid(&tp, choice, &e))
		{
			invalid++;
			continue;
		}
		if (ValueCmp(e, best) != 0)
		{
			exact_wrong++;
			if (exact_wrong <= 3)
				printf("# case %d: exact %d/%lld/%lld, optimum %d/%lld/%lld\n", k,
					   e.matched, (long long) e.score, (long long) e.ranks,
					   best.matched, (long long) best.score, (long long) best.ranks);
		}
		RunGreedy(&tp, choice);
		if (!Valid(&tp, choice, &g))
			invalid++;
		else if (g.matched > e.matched || (g.matched == e.matched && g.score > e.score))
			greedy_better++;
		else if (ValueCmp(g, e) < 0)
			greedy_worse++;
	}
	Check(invalid == 0, "random: every assignment is valid (%d cases)", ncases);
	Check(exact_wrong == 0, "random: exact reaches the brute-force optimum in all %d cases (%d wrong)",
		  ncases, exact_wrong);
	Check(greedy_better == 0, "random: greedy never places more or scores more than exact");
	Check(greedy_worse > 0, "random: greedy is worse than exact in some cases (%d of %d)",
		  greedy_worse, ncases);
	Check(live_blocks == before, "random: the solvers free what they allocate (%ld blocks left)",
		  live_blocks - before);
}

int
main(void)
{
	TestEmpty();
	TestCapacity();
	TestTies();
	TestGreedyWrong();
	TestComponents();
	TestTooLarge();
	TestInterrupts();
	TestRandom(500);
	printf("1..%d\n", tests);
	if (failures > 0)
		printf("# %d of %d checks failed\n", failures, tests);
	return failures > 0 ? 1 : 0;
}
