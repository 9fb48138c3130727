/*-------------------------------------------------------------------------
 *
 * matching_solver.c
 *	  The assignment of placement requests to therapists: the exact method
 *	  (min-cost max-flow) and the greedy baseline.
 *
 * The problem
 * -----------
 * prm.assign_placements proposes, for the open requests that have no
 * pending contact, at most one therapist each, giving each therapist at
 * most their free places (open places minus pending contacts).  The
 * objective is lexicographic:
 *
 *	1. as many requests matched as possible;
 *	2. among those, the highest total score;
 *	3. among those, the earliest registrations: the smallest sum of the
 *	   requests' positions in registration order.
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
 * each is solved alone, in its own memory context: patients in Hamburg do
 * not make the paths of patients in Munich longer.
 *
 * Overflow: potentials are bounded by (nodes) * (largest arc cost).  With
 * at most MATCH_MAX_REQUESTS requests and MATCH_MAX_THERAPISTS therapists
 * per call this stays below 2^62; larger organizations are refused with
 * 54000 rather than solved wrongly.
 *
 * The greedy method (method => 'greedy') is the registration-order baseline:
 * each request in turn takes its best-scoring therapist that still has a
 * free place.  It can match fewer requests, and score less, than the exact
 * method; the tests and test/bench/matching.sh compare the two.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/memutils.h"

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
 */
static int
FlowSolve(FlowGraph *g, int s, int t, int max_flow)
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

		CHECK_FOR_INTERRUPTS();
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

/* Is pair a better choice than b for the same request (greedy order)? */
static bool
MatchPairBetter(const MatchPair *a, const MatchPair *b, const MatchTherapist *ts)
{
	if (a->score != b->score)
		return a->score > b->score;
	if (a->distance_km != b->distance_km)
		return a->distance_km < b->distance_km;
	return ts[a->t].id < ts[b->t].id;
}

/* Greedy: each request in registration order takes its best free therapist. */
void
MatchGreedy(MatchPair *pairs, int npairs, MatchTherapist *ts, int *choice)
{
	int i = 0;

	while (i < npairs)
	{
		int r = pairs[i].r;
		int best = -1;
		int j;

		for (j = i; j < npairs && pairs[j].r == r; j++)
			if (ts[pairs[j].t].capacity > 0 &&
				(best < 0 || MatchPairBetter(&pairs[j], &pairs[best], ts)))
				best = j;
		if (best >= 0)
		{
			ts[pairs[best].t].capacity--;
			choice[r] = best;
		}
		i = j;
	}
}

/*
 * Exact: split the candidate graph into connected components and solve
 * each as a min-cost max-flow (see the file header).  choice[r] gets the
 * index of the chosen pair of request r.
 */
void
MatchExact(MatchPair *pairs, int npairs, int nr, MatchTherapist *ts, int nt,
		   int *choice)
{
	int *parent = palloc(sizeof(int) * (nr + nt));
	int *comp_of = palloc(sizeof(int) * nr);
	int *count;
	int *start;
	int *order;
	int *local = palloc(sizeof(int) * (nr + nt));
	int	 ncomp = 0;
	int	 i,
		c;
	MemoryContext work;
	MemoryContext old;

	for (i = 0; i < nr + nt; i++)
		parent[i] = i;
	for (i = 0; i < npairs; i++)
	{
		int a = MatchFind(parent, pairs[i].r);
		int b = MatchFind(parent, nr + pairs[i].t);

		if (a != b)
			parent[a] = b;
	}
	/* number the components that have pairs, in request order */
	for (i = 0; i < nr + nt; i++)
		local[i] = -1;
	for (i = 0; i < nr; i++)
	{
		int root = MatchFind(parent, i);

		if (local[root] < 0)
			local[root] = ncomp++;
		comp_of[i] = local[root];
	}
	/* bucket the pairs by component, keeping request order */
	count = palloc0(sizeof(int) * (ncomp + 1));
	start = palloc0(sizeof(int) * (ncomp + 1));
	order = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int) * (Size) (npairs + 1));
	for (i = 0; i < npairs; i++)
		count[comp_of[pairs[i].r]]++;
	for (c = 1; c <= ncomp; c++)
		start[c] = start[c - 1] + count[c - 1];
	memset(count, 0, sizeof(int) * (ncomp + 1));
	for (i = 0; i < npairs; i++)
	{
		c = comp_of[pairs[i].r];
		order[start[c] + count[c]++] = i;
	}

	work = AllocSetContextCreate(CurrentMemoryContext, "prm assignment component",
								 ALLOCSET_DEFAULT_SIZES);
	for (i = 0; i < nr + nt; i++)
		local[i] = -1;
	for (c = 0; c < ncomp; c++)
	{
		int first = start[c];
		int np = count[c];
		int nreq = 0,
			nther = 0,
			capsum = 0,
			k;
		int64	  m;
		FlowGraph g;
		int		 *arc;
		int		 *req_global;
		int		 *ther_global;

		if (np == 0)
			continue;
		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(work);
		req_global = palloc(sizeof(int) * np);
		ther_global = palloc(sizeof(int) * np);
		for (k = first; k < first + np; k++)
		{
			MatchPair *p = &pairs[order[k]];

			if (local[p->r] < 0)
			{
				req_global[nreq] = p->r;
				local[p->r] = nreq++;
			}
			if (local[nr + p->t] < 0)
			{
				ther_global[nther] = p->t;
				local[nr + p->t] = nther++;
				capsum += ts[p->t].capacity;
			}
		}
		/* rank = position in registration order inside the component */
		m = (int64) nreq * (nreq - 1) / 2 + 1;
		if ((double) (MATCH_SCORE_MAX + 1) * m * (nreq + nther + 2) >= (double) (FLOW_INF / 4))
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("%d requests and %d therapists that share candidates are too many for one exact assignment",
							nreq, nther),
					 errhint("Use method => 'greedy', or assign after fewer requests have piled up.")));

		/* nodes: 0 source, 1 sink, 2.. requests, then therapists */
		FlowInit(&g, nreq + nther + 2, np + nreq + nther);
		for (k = 0; k < nreq; k++)
			FlowAddEdge(&g, 0, 2 + k, 1, 0);
		for (k = 0; k < nther; k++)
			FlowAddEdge(&g, 2 + nreq + k, 1, ts[ther_global[k]].capacity, 0);
		arc = palloc(sizeof(int) * np);
		for (k = 0; k < np; k++)
		{
			MatchPair *p = &pairs[order[first + k]];
			int		   lr = local[p->r];

			arc[k] = FlowAddEdge(&g, 2 + lr, 2 + nreq + local[nr + p->t], 1,
								 (int64) (MATCH_SCORE_MAX - p->score) * m + lr);
		}
		FlowSolve(&g, 0, 1, Min(nreq, capsum));
		for (k = 0; k < np; k++)
			if (g.cap[arc[k]] == 0)
			{
				MatchPair *p = &pairs[order[first + k]];

				choice[p->r] = order[first + k];
				ts[p->t].capacity--;
			}
		for (k = 0; k < nreq; k++)
			local[req_global[k]] = -1;
		for (k = 0; k < nther; k++)
			local[nr + ther_global[k]] = -1;
		MemoryContextSwitchTo(old);
		MemoryContextReset(work);
	}
	MemoryContextDelete(work);
}
