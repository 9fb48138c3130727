/*-------------------------------------------------------------------------
 *
 * matching_solver.c
 *	  The assignment of placement requests to therapists: the exact method
 *	  (min-cost max-flow) and the greedy baseline.
 *
 * This file is pure C: it includes c.h and palloc.h only and calls nothing
 * of the server but palloc and pfree, so that test/unit/solver_test.c runs
 * it, against brute force, without a server.  It raises no errors: a
 * problem too large for exact integer arithmetic is reported to the caller
 * (matching_rank.c), which raises 54000; the caller also passes the
 * function that checks for query cancels between steps.  No locks: the
 * caller has read the rows it passes.
 *
 * The problem
 * -----------
 * prm.assign_placements proposes, for the open requests that have no
 * pending contact, at most one therapist each, giving each therapist at
 * most their free places (open places minus pending contacts).  The
 * candidate pairs (request, therapist, score) are built by matching_rank.c.
 * The objective is lexicographic:
 *
 *	1. as many requests matched as possible;
 *	2. among those, the highest total score;
 *	3. among those, the earliest registrations: the smallest sum of the
 *	   requests' positions in registration order, counted among the
 *	   requests that compete with each other (one connected component of
 *	   the candidate graph, see below).
 *
 * This is a min-cost max-flow problem on the network
 *
 *	source -(1, 0)-> request -(1, cost)-> therapist -(free places, 0)-> sink
 *
 * A maximum flow is objective 1; its minimum cost gives 2 and 3 when the
 * cost of a request-therapist arc is (10000 - score) * M + rank(request),
 * with M larger than any sum of ranks (n(n-1)/2 + 1 for n requests): one
 * centi-point of score then outweighs every difference in ranks.  All costs
 * are non-negative integers.
 *
 * The algorithm
 * -------------
 * The solver is the successive-shortest-path algorithm: augment one unit
 * along a shortest source-sink path of the residual network, repeat until
 * the sink is unreachable.  Each path is found with Dijkstra's algorithm on
 * reduced costs c(u,v) + pi(u) - pi(v), which stay non-negative because the
 * potentials pi are updated by the distances found (Edmonds-Karp / Tomizawa);
 * the search stops as soon as the sink is settled, and unsettled nodes get
 * the sink's distance added, which keeps the reduced costs non-negative.
 * Every intermediate flow is then a min-cost flow of its value, so the last
 * one is a min-cost maximum flow: the result is exact, not a heuristic.
 * There are at most n augmentations of O(E log E) each.  Requests and
 * therapists that share no candidate arc cannot influence each other, so
 * the network is first split into connected components (union-find) and
 * each is solved alone, its network freed before the next is built:
 * patients in Hamburg do not make the paths of patients in Munich longer.
 *
 * Overflow: potentials are bounded by (nodes) * (largest arc cost).  A
 * component whose bound would reach FLOW_INF / 4 is not solved: the solver
 * returns false and names its size.  With at most 50000 requests and
 * 100000 therapists per call (matching_rank.c) this does not happen before
 * a component has some tens of thousands of requests.
 *
 * The greedy method (method => 'greedy') is the registration-order baseline:
 * each request in turn takes its best-scoring therapist that still has a
 * free place (ties: the nearer, then the smaller therapist id).  It can
 * match fewer requests, and score less, than the exact method; the tests,
 * test/unit/solver_test.c and test/bench/matching.sh compare the two.
 *
 *-------------------------------------------------------------------------
 */
#include "c.h"

#include "utils/palloc.h"

#include "matching_solver.h"

/* The residual network of one component (arc e^1 is the reverse of e). */
typedef struct FlowGraph
{
	int	   nnodes;
	int	   narcs;
	int	  *head; /* first arc out of each node, or -1 */
	int	  *next; /* next arc out of the same node */
	int	  *to;
	int	  *cap;
	int64 *cost;
} FlowGraph;

/* A binary min-heap of (key, node) with lazy deletion. */
typedef struct FlowHeap
{
	int	   size;
	int	   max;
	int64 *key;
	int	  *node;
} FlowHeap;

#define FLOW_INF (PG_INT64_MAX / 4)

/* The candidate graph split into connected components. */
typedef struct MatchComponents
{
	int	 ncomp;
	int *start; /* first entry of each component in order */
	int *count; /* number of pairs of each component */
	int *order; /* pair indexes grouped by component, in pair order */
} MatchComponents;

static void FlowInit(FlowGraph *g, int nnodes, int maxedges);
static void FlowFree(FlowGraph *g);
static int	FlowAddEdge(FlowGraph *g, int u, int v, int cap, int64 cost);
static void FlowHeapPush(FlowHeap *h, int64 key, int node);
static int	FlowHeapPop(FlowHeap *h, int64 *key);
static int	FlowSolve(FlowGraph *g, int s, int t, int max_flow,
					  void (*check_interrupts)(void));
static int	MatchFind(int *parent, int x);
static void MatchSplitComponents(const MatchProblem *p, MatchComponents *out);
static bool MatchSolveComponent(const MatchProblem *p, const int *idx, int np,
								int *local, int *choice,
								MatchTooLarge *too_large);
static bool MatchPairBetter(const MatchPair *a, const MatchPair *b,
							const int64 *therapist_ids);

/* Allocate a network of nnodes nodes with room for maxedges edges. */
static void
FlowInit(FlowGraph *g, int nnodes, int maxedges)
{
	int i;

	g->nnodes = nnodes;
	g->narcs = 0;
	g->head = palloc(sizeof(int) * nnodes);
	g->next = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * 2 * (Size) maxedges);
	g->to = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * 2 * (Size) maxedges);
	g->cap = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * 2 * (Size) maxedges);
	g->cost = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int64) * 2 * (Size) maxedges);
	for (i = 0; i < nnodes; i++)
		g->head[i] = -1;
}

/* Free the arrays of a network. */
static void
FlowFree(FlowGraph *g)
{
	pfree(g->head);
	pfree(g->next);
	pfree(g->to);
	pfree(g->cap);
	pfree(g->cost);
}

/* Add the arc u -> v and its reverse; return the forward arc. */
static int
FlowAddEdge(FlowGraph *g, int u, int v, int cap, int64 cost)
{
	int e = g->narcs;

	g->to[e] = v;
	g->cap[e] = cap;
	g->cost[e] = cost;
	g->next[e] = g->head[u];
	g->head[u] = e;
	g->to[e + 1] = u;
	g->cap[e + 1] = 0;
	g->cost[e + 1] = -cost;
	g->next[e + 1] = g->head[v];
	g->head[v] = e + 1;
	g->narcs += 2;
	return e;
}

/* Push (key, node) on the heap. */
static void
FlowHeapPush(FlowHeap *h, int64 key, int node)
{
	int i = h->size++;

	Assert(h->size <= h->max);
	while (i > 0)
	{
		int parent = (i - 1) / 2;

		if (h->key[parent] <= key)
			break;
		h->key[i] = h->key[parent];
		h->node[i] = h->node[parent];
		i = parent;
	}
	h->key[i] = key;
	h->node[i] = node;
}

/* Pop the smallest (key, node) from a non-empty heap. */
static int
FlowHeapPop(FlowHeap *h, int64 *key)
{
	int	  top = h->node[0];
	int64 lastkey;
	int	  lastnode;
	int	  i = 0;

	*key = h->key[0];
	h->size--;
	lastkey = h->key[h->size];
	lastnode = h->node[h->size];
	for (;;)
	{
		int child = 2 * i + 1;

		if (child >= h->size)
			break;
		if (child + 1 < h->size && h->key[child + 1] < h->key[child])
			child++;
		if (h->key[child] >= lastkey)
			break;
		h->key[i] = h->key[child];
		h->node[i] = h->node[child];
		i = child;
	}
	if (h->size > 0)
	{
		h->key[i] = lastkey;
		h->node[i] = lastnode;
	}
	return top;
}

/*
 * Min-cost max-flow from s to t by successive shortest paths (Dijkstra on
 * reduced costs, see the file header).  All initial arc costs must be
 * non-negative.  Returns the flow value; the flow is left in g->cap.
 * check_interrupts, when not NULL, is called before each augmentation.
 */
static int
FlowSolve(FlowGraph *g, int s, int t, int max_flow,
		  void (*check_interrupts)(void))
{
	int64	*pot = palloc0(sizeof(int64) * g->nnodes);
	int64	*dist = palloc(sizeof(int64) * g->nnodes);
	int		*prev = palloc(sizeof(int) * g->nnodes);
	bool	*done = palloc(sizeof(bool) * g->nnodes);
	FlowHeap heap;
	int		 flow = 0;

	heap.max = g->narcs + g->nnodes + 1;
	heap.key = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int64) * (Size) heap.max);
	heap.node = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * (Size) heap.max);

	while (flow < max_flow)
	{
		int	  v;
		int64 d;

		if (check_interrupts)
			check_interrupts();
		for (v = 0; v < g->nnodes; v++)
		{
			dist[v] = FLOW_INF;
			done[v] = false;
			prev[v] = -1;
		}
		dist[s] = 0;
		heap.size = 0;
		FlowHeapPush(&heap, 0, s);
		while (heap.size > 0)
		{
			int u = FlowHeapPop(&heap, &d);
			int e;

			if (done[u])
				continue;
			done[u] = true;
			if (u == t)
				break; /* the rest cannot shorten the path to t */
			for (e = g->head[u]; e >= 0; e = g->next[e])
			{
				int	  w = g->to[e];
				int64 nd;

				if (g->cap[e] <= 0 || done[w])
					continue;
				nd = d + g->cost[e] + pot[u] - pot[w];
				Assert(g->cost[e] + pot[u] - pot[w] >= 0);
				if (nd < dist[w])
				{
					dist[w] = nd;
					prev[w] = e;
					FlowHeapPush(&heap, nd, w);
				}
			}
		}
		if (!done[t])
			break; /* no augmenting path: the flow is maximum */

		/* settled nodes move by their distance, the others by t's */
		for (v = 0; v < g->nnodes; v++)
			pot[v] += done[v] ? dist[v] : dist[t];

		/* augment one unit: every source arc has capacity 1 */
		for (v = t; v != s; v = g->to[prev[v] ^ 1])
		{
			g->cap[prev[v]] -= 1;
			g->cap[prev[v] ^ 1] += 1;
		}
		flow++;
	}
	pfree(pot);
	pfree(dist);
	pfree(prev);
	pfree(done);
	pfree(heap.key);
	pfree(heap.node);
	return flow;
}

/* Union-find root with path halving. */
static int
MatchFind(int *parent, int x)
{
	while (parent[x] != x)
	{
		parent[x] = parent[parent[x]];
		x = parent[x];
	}
	return x;
}

/*
 * Split the candidate graph of p into connected components (requests and
 * therapists joined by pairs), numbered in request order, and bucket the
 * pairs by component, keeping their order.
 */
static void
MatchSplitComponents(const MatchProblem *p, MatchComponents *out)
{
	int	 nr = p->nrequests;
	int	 nt = p->ntherapists;
	int *parent = palloc(sizeof(int) * (nr + nt + 1));
	int *comp_of = palloc(sizeof(int) * (nr + 1));
	int *number = palloc(sizeof(int) * (nr + nt + 1));
	int	 i,
		c;

	for (i = 0; i < nr + nt; i++)
		parent[i] = i;
	for (i = 0; i < p->npairs; i++)
	{
		int a = MatchFind(parent, p->pairs[i].r);
		int b = MatchFind(parent, nr + p->pairs[i].t);

		if (a != b)
			parent[a] = b;
	}
	/* number the components of the requests, in request order */
	out->ncomp = 0;
	for (i = 0; i < nr + nt; i++)
		number[i] = -1;
	for (i = 0; i < nr; i++)
	{
		int root = MatchFind(parent, i);

		if (number[root] < 0)
			number[root] = out->ncomp++;
		comp_of[i] = number[root];
	}
	/* bucket the pairs by component, keeping request order */
	out->count = palloc0(sizeof(int) * (out->ncomp + 1));
	out->start = palloc0(sizeof(int) * (out->ncomp + 1));
	out->order = MemoryContextAllocHuge(CurrentMemoryContext,
										sizeof(int) * (Size) (p->npairs + 1));
	for (i = 0; i < p->npairs; i++)
		out->count[comp_of[p->pairs[i].r]]++;
	for (c = 1; c <= out->ncomp; c++)
		out->start[c] = out->start[c - 1] + out->count[c - 1];
	memset(out->count, 0, sizeof(int) * (out->ncomp + 1));
	for (i = 0; i < p->npairs; i++)
	{
		c = comp_of[p->pairs[i].r];
		out->order[out->start[c] + out->count[c]++] = i;
	}
	pfree(parent);
	pfree(comp_of);
	pfree(number);
}

/*
 * Solve one component, given as the np pair indexes idx, as a min-cost max
 * flow, and set choice[r] for its matched requests.  local is scratch of
 * nrequests + ntherapists entries, all -1, and left so.  False (and
 * nothing chosen) when the component is too large for exact arithmetic.
 */
static bool
MatchSolveComponent(const MatchProblem *p, const int *idx, int np, int *local,
					int *choice, MatchTooLarge *too_large)
{
	int	 nr = p->nrequests;
	int *req_global = palloc(sizeof(int) * np);
	int *ther_global = palloc(sizeof(int) * np);
	int *arc;
	int	 nreq = 0,
		nther = 0,
		capsum = 0,
		k;
	int64	  m;
	FlowGraph g;
	bool	  fits;

	for (k = 0; k < np; k++)
	{
		const MatchPair *pp = &p->pairs[idx[k]];

		if (local[pp->r] < 0)
		{
			req_global[nreq] = pp->r;
			local[pp->r] = nreq++;
		}
		if (local[nr + pp->t] < 0)
		{
			ther_global[nther] = pp->t;
			local[nr + pp->t] = nther++;
			capsum += p->capacity[pp->t];
		}
	}
	/* rank = position in registration order inside the component */
	m = (int64) nreq * (nreq - 1) / 2 + 1;
	fits = (double) (MATCH_SCORE_MAX + 1) * m * (nreq + nther + 2) < (double) (FLOW_INF / 4);
	if (!fits)
	{
		too_large->nrequests = nreq;
		too_large->ntherapists = nther;
	}
	else
	{
		/* nodes: 0 source, 1 sink, 2.. requests, then therapists */
		FlowInit(&g, nreq + nther + 2, np + nreq + nther);
		for (k = 0; k < nreq; k++)
			FlowAddEdge(&g, 0, 2 + k, 1, 0);
		for (k = 0; k < nther; k++)
			FlowAddEdge(&g, 2 + nreq + k, 1, p->capacity[ther_global[k]], 0);
		arc = palloc(sizeof(int) * np);
		for (k = 0; k < np; k++)
		{
			const MatchPair *pp = &p->pairs[idx[k]];
			int				 lr = local[pp->r];

			Assert(pp->score >= 0 && pp->score <= MATCH_SCORE_MAX);
			arc[k] = FlowAddEdge(&g, 2 + lr, 2 + nreq + local[nr + pp->t], 1,
								 (int64) (MATCH_SCORE_MAX - pp->score) * m + lr);
		}
		FlowSolve(&g, 0, 1, Min(nreq, capsum), p->check_interrupts);
		for (k = 0; k < np; k++)
			if (g.cap[arc[k]] == 0)
				choice[p->pairs[idx[k]].r] = idx[k];
		pfree(arc);
		FlowFree(&g);
	}
	for (k = 0; k < nreq; k++)
		local[req_global[k]] = -1;
	for (k = 0; k < nther; k++)
		local[nr + ther_global[k]] = -1;
	pfree(req_global);
	pfree(ther_global);
	return fits;
}

/*
 * Exact: the lexicographic optimum of the file header.  choice[r] gets the
 * index in p->pairs of the pair chosen for request r, or -1.  Returns false,
 * with the size of the offending component in too_large, when a component
 * is too large for exact integer arithmetic; choice is then incomplete.
 */
bool
MatchSolveExact(const MatchProblem *p, int *choice, MatchTooLarge *too_large)
{
	MatchComponents comps;
	int			   *local;
	int				i,
		c;
	bool ok = true;

	for (i = 0; i < p->nrequests; i++)
		choice[i] = -1;
	for (i = 1; i < p->npairs; i++)
		Assert(p->pairs[i - 1].r <= p->pairs[i].r);
	MatchSplitComponents(p, &comps);
	local = palloc(sizeof(int) * (p->nrequests + p->ntherapists + 1));
	for (i = 0; i < p->nrequests + p->ntherapists; i++)
		local[i] = -1;
	for (c = 0; c < comps.ncomp && ok; c++)
	{
		if (comps.count[c] == 0)
			continue;
		if (p->check_interrupts)
			p->check_interrupts();
		ok = MatchSolveComponent(p, comps.order + comps.start[c], comps.count[c],
								 local, choice, too_large);
	}
	pfree(local);
	pfree(comps.count);
	pfree(comps.start);
	pfree(comps.order);
	return ok;
}

/* Is pair a a better choice than b for the same request (greedy order)? */
static bool
MatchPairBetter(const MatchPair *a, const MatchPair *b,
				const int64 *therapist_ids)
{
	if (a->score != b->score)
		return a->score > b->score;
	if (a->distance_km != b->distance_km)
		return a->distance_km < b->distance_km;
	return therapist_ids[a->t] < therapist_ids[b->t];
}

/*
 * Greedy: each request in registration order takes its best therapist with
 * a free place left.  choice as for MatchSolveExact.
 */
void
MatchSolveGreedy(const MatchProblem *p, int *choice)
{
	int *left = palloc(sizeof(int) * (p->ntherapists + 1));
	int	 i = 0;

	for (i = 0; i < p->nrequests; i++)
		choice[i] = -1;
	for (i = 0; i < p->ntherapists; i++)
		left[i] = p->capacity[i];
	i = 0;
	while (i < p->npairs)
	{
		int r = p->pairs[i].r;
		int best = -1;
		int j;

		for (j = i; j < p->npairs && p->pairs[j].r == r; j++)
			if (left[p->pairs[j].t] > 0 &&
				(best < 0 || MatchPairBetter(&p->pairs[j], &p->pairs[best],
											 p->therapist_ids)))
				best = j;
		if (best >= 0)
		{
			left[p->pairs[best].t]--;
			choice[r] = best;
		}
		i = j;
	}
	pfree(left);
}
