/*
 * rserpool._selector: the ordered per-pool selection structure behind rserpool.policy.
 *
 * A B+-tree ordered by the key (k0, k1, seq, item), with per-child value sums in the inner
 * nodes, plus an open-addressing hash table item -> key so that update/remove by item id
 * can descend straight to the entry.  Every operation is O(log n) (worst case: every
 * non-root node holds at least CAP/4 entries).
 *
 * - "sorting order" policies (RR, WRR, PRIO, LU, LUD, PLU, PLUD, the DPF variants) use
 *   first(n): the first n items in key order;
 * - "value tree" policies (RAND, WRAND, RLU, ...) use total_value() and find_by_value(v):
 *   the item whose cumulative in-order value range contains v (RSPLIB's GetNodeByValue).
 *
 * Why a B+-tree rather than a binary tree (RSPLIB uses a red-black tree): a registrar pool of
 * 10^5 PEs does not fit in L2, and a binary tree pays one dependent cache miss per level
 * (~20 levels).  With 32 entries per node the tree has 4 levels at 10^5 entries, the upper
 * ones stay cached, and each node's key column is fetched with a few parallel prefetches.
 * Keys are stored column-wise (k0[], k1[], ...) because k0 alone decides almost every
 * comparison, so a binary search touches only the 256-byte k0 column.
 *
 * rserpool.selector.PySelector is the pure-Python reference with the same methods.
 *
 * The module also holds rserpool.transport's batched SCTP message I/O (sctp_recv_batch,
 * sctp_send_batch; see "SCTP message batches" below for why it is written in C).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CAP 32                  /* entries per node (leaf and inner) */
#define MIN_FILL (CAP / 4)      /* a non-root node below this is merged or refilled */
#define MERGE_FILL (CAP * 3 / 4) /* merge siblings only if the result leaves room to grow */
#define MAX_HEIGHT 32           /* >= 1 + log_8(2^64): cannot be reached */
#define FREE_KEEP 4             /* spare nodes kept per selector (splits/merges are rare) */
#define NODE_ALIGN 64
#define PREFETCH_SELECTED 4     /* first(n): warm the index slots of this many results */

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

typedef struct {
    uint64_t k0, k1, seq, item;
} Key;

/*
 * One type for leaves and inner nodes.  In an inner node, entry i routes to child[i] all keys
 * in [key[i], key[i+1]); key[0] is never read for routing (the parent's separator bounds the
 * node), which keeps redistribution between siblings simple.  w[] is the entry's value in a
 * leaf and the value sum of child[i]'s subtree in an inner node.
 */
typedef struct Node {
    uint32_t count;
    uint32_t leaf;
    struct Node *next; /* leaf: next leaf in key order (first/ordered walk the leaf chain) */
    uint64_t k0[CAP];
    uint64_t k1[CAP];
    uint64_t seq[CAP];
    uint64_t item[CAP];
    uint64_t w[CAP];
    struct Node *child[CAP]; /* inner only */
} Node;

#define NODE_SIZE ((sizeof(Node) + NODE_ALIGN - 1) / NODE_ALIGN * NODE_ALIGN)

typedef struct {
    PyObject_HEAD
    Node *root; /* never NULL once initialised: an empty selector has an empty leaf */
    int height; /* levels including the leaves; the root is a leaf iff height == 1 */
    Py_ssize_t count;
    uint64_t total; /* sum of all values, wrapping like the per-node sums */
    /* hash table: item 0 marks a free slot, so the item 0 itself lives in zero_entry */
    Key *table;
    size_t capacity; /* power of two */
    int has_zero;
    Key zero_entry;
    Node *spare; /* free list (linked through next) so a split can never fail half-way */
    int n_spare;
} SelectorObject;

/* ------------------------------------------------------------------ node helpers */

static inline int cmp_at(const Node *n, int i, const Key *t)
{
    if (n->k0[i] != t->k0) return n->k0[i] < t->k0 ? -1 : 1;
    if (n->k1[i] != t->k1) return n->k1[i] < t->k1 ? -1 : 1;
    if (n->seq[i] != t->seq) return n->seq[i] < t->seq ? -1 : 1;
    if (n->item[i] != t->item) return n->item[i] < t->item ? -1 : 1;
    return 0;
}

static inline void get_key(const Node *n, int i, Key *k)
{
    k->k0 = n->k0[i];
    k->k1 = n->k1[i];
    k->seq = n->seq[i];
    k->item = n->item[i];
}

static inline void set_key(Node *n, int i, const Key *k)
{
    n->k0[i] = k->k0;
    n->k1[i] = k->k1;
    n->seq[i] = k->seq;
    n->item[i] = k->item;
}

/*
 * Start fetching the header and the whole k0 column (5 lines) at once: a binary search would
 * otherwise pay one dependent miss per probe.
 */
static inline void prefetch_keys(const Node *n)
{
    for (const char *p = (const char *)n; p < (const char *)&n->k0[CAP]; p += NODE_ALIGN) PREFETCH(p);
}

/* Inner node: the child whose range holds t (largest i >= 1 with key[i] <= t, else 0). */
static inline int route(const Node *n, const Key *t)
{
    int lo = 1, hi = (int)n->count;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (cmp_at(n, mid, t) <= 0) lo = mid + 1;
        else hi = mid;
    }
    return lo - 1;
}

/* Leaf: first position whose key is >= t. */
static inline int lower_bound(const Node *n, const Key *t)
{
    int lo = 0, hi = (int)n->count;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (cmp_at(n, mid, t) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Copy `len` entries src[si..] to dst[di..]; the ranges may overlap (same node). */
static void move_entries(Node *dst, int di, const Node *src, int si, int len)
{
    if (len <= 0) return;
    size_t b = (size_t)len * sizeof(uint64_t);
    memmove(&dst->k0[di], &src->k0[si], b);
    memmove(&dst->k1[di], &src->k1[si], b);
    memmove(&dst->seq[di], &src->seq[si], b);
    memmove(&dst->item[di], &src->item[si], b);
    memmove(&dst->w[di], &src->w[si], b);
    if (!src->leaf) memmove(&dst->child[di], &src->child[si], (size_t)len * sizeof(Node *));
}

/* Insert one entry at position i (the node has room). */
static void put_entry(Node *n, int i, const Key *k, uint64_t w, Node *child)
{
    move_entries(n, i + 1, n, i, (int)n->count - i);
    set_key(n, i, k);
    n->w[i] = w;
    if (!n->leaf) n->child[i] = child;
    n->count++;
}

static void drop_entry(Node *n, int i)
{
    move_entries(n, i, n, i + 1, (int)n->count - i - 1);
    n->count--;
}

static uint64_t node_total(const Node *n)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < n->count; i++) s += n->w[i];
    return s;
}

/* ------------------------------------------------------------------ node allocation */

static Node *node_new_raw(void)
{
    return (Node *)aligned_alloc(NODE_ALIGN, NODE_SIZE);
}

/* Make sure `k` spare nodes exist, so the tree update that follows cannot fail midway. */
static int reserve_nodes(SelectorObject *s, int k)
{
    while (s->n_spare < k) {
        Node *n = node_new_raw();
        if (n == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        n->next = s->spare;
        s->spare = n;
        s->n_spare++;
    }
    return 0;
}

static Node *take_node(SelectorObject *s, int leaf)
{
    Node *n = s->spare; /* reserve_nodes() guaranteed one */
    s->spare = n->next;
    s->n_spare--;
    n->count = 0;
    n->leaf = (uint32_t)leaf;
    n->next = NULL;
    return n;
}

static void give_node(SelectorObject *s, Node *n)
{
    if (s->n_spare < FREE_KEEP) {
        n->next = s->spare;
        s->spare = n;
        s->n_spare++;
    } else {
        free(n);
    }
}

static void free_subtree(Node *n)
{
    if (!n->leaf) {
        for (uint32_t i = 0; i < n->count; i++) free_subtree(n->child[i]);
    }
    free(n);
}

static void free_spares(SelectorObject *s)
{
    while (s->spare != NULL) {
        Node *n = s->spare;
        s->spare = n->next;
        free(n);
    }
    s->n_spare = 0;
}

/* ------------------------------------------------------------------ tree operations */

/* Insert key k (not present) with value v.  Needs height + 1 spare nodes reserved. */
static void tree_insert(SelectorObject *s, const Key *k, uint64_t v)
{
    Node *path[MAX_HEIGHT];
    int idx[MAX_HEIGHT];
    int depth = 0;
    Node *n = s->root;
    while (!n->leaf) {
        prefetch_keys(n);
        int i = route(n, k);
        n->w[i] += v;
        path[depth] = n;
        idx[depth] = i;
        depth++;
        n = n->child[i];
    }
    prefetch_keys(n);
    int pos = lower_bound(n, k);
    s->total += v;
    if (n->count < CAP) {
        put_entry(n, pos, k, v, NULL);
        return;
    }

    /* split the full leaf, then carry the new right sibling up as long as parents are full */
    const int half = CAP / 2;
    Node *right = take_node(s, 1);
    move_entries(right, 0, n, half, CAP - half);
    right->count = CAP - half;
    n->count = half;
    right->next = n->next;
    n->next = right;
    if (pos <= half) put_entry(n, pos, k, v, NULL);
    else put_entry(right, pos - half, k, v, NULL);
    Key sep;
    get_key(right, 0, &sep);

    for (int d = depth - 1; d >= 0; d--) {
        Node *p = path[d];
        int i = idx[d];
        /* p->w[i] already includes v; split it between the two halves */
        p->w[i] = node_total(p->child[i]);
        uint64_t rsum = node_total(right);
        if (p->count < CAP) {
            put_entry(p, i + 1, &sep, rsum, right);
            return;
        }
        Node *q = take_node(s, 0);
        move_entries(q, 0, p, half, CAP - half);
        q->count = CAP - half;
        p->count = half;
        if (i + 1 <= half) put_entry(p, i + 1, &sep, rsum, right);
        else put_entry(q, i + 1 - half, &sep, rsum, right);
        /* q's entry 0 was a real separator inside p (index half >= 1), so it bounds q */
        get_key(q, 0, &sep);
        right = q;
    }

    Node *old = s->root;
    Node *root = take_node(s, 0);
    Key first;
    get_key(old, 0, &first); /* entry 0 of an inner node is never routed on */
    put_entry(root, 0, &first, node_total(old), old);
    put_entry(root, 1, &sep, node_total(right), right);
    s->root = root;
    s->height++;
}

/*
 * Child i of p has fewer than MIN_FILL entries: merge it with a neighbour, or move entries
 * over from a neighbour that has plenty.  Separators rotate through p, because key[0] of an
 * inner node carries no bound.
 */
static void fix_underflow(SelectorObject *s, Node *p, int i)
{
    int li = (i + 1 < (int)p->count) ? i : i - 1;
    int ri = li + 1;
    Node *L = p->child[li], *R = p->child[ri];
    int total = (int)(L->count + R->count);
    Key sep;
    get_key(p, ri, &sep);

    if (total <= MERGE_FILL) {
        if (!R->leaf) set_key(R, 0, &sep);
        move_entries(L, (int)L->count, R, 0, (int)R->count);
        L->count = (uint32_t)total;
        if (L->leaf) L->next = R->next;
        p->w[li] += p->w[ri];
        drop_entry(p, ri);
        give_node(s, R);
        return;
    }

    int want_left = total / 2;
    if ((int)L->count > want_left) {
        int m = (int)L->count - want_left; /* L's last m entries move to the front of R */
        move_entries(R, m, R, 0, (int)R->count);
        if (!R->leaf) set_key(R, m, &sep);
        move_entries(R, 0, L, want_left, m);
        R->count += (uint32_t)m;
        L->count = (uint32_t)want_left;
    } else {
        int m = want_left - (int)L->count; /* R's first m entries move to the end of L */
        if (!R->leaf) set_key(R, 0, &sep);
        move_entries(L, (int)L->count, R, 0, m);
        L->count += (uint32_t)m;
        move_entries(R, 0, R, m, (int)R->count - m);
        R->count -= (uint32_t)m;
    }
    /* R's entry 0 is now a real key (leaf) or a former separator from index >= 1 (inner) */
    get_key(R, 0, &sep);
    set_key(p, ri, &sep);
    p->w[li] = node_total(L);
    p->w[ri] = node_total(R);
}

/* Remove key k, which must be present; its value goes to *value.  -1 if it is missing. */
static int tree_remove(SelectorObject *s, const Key *k, uint64_t *value)
{
    Node *path[MAX_HEIGHT];
    int idx[MAX_HEIGHT];
    int depth = 0;
    Node *n = s->root;
    while (!n->leaf) {
        prefetch_keys(n);
        int i = route(n, k);
        path[depth] = n;
        idx[depth] = i;
        depth++;
        n = n->child[i];
    }
    prefetch_keys(n);
    int pos = lower_bound(n, k);
    if (pos >= (int)n->count || cmp_at(n, pos, k) != 0) return -1;
    uint64_t v = n->w[pos];
    *value = v;
    drop_entry(n, pos);
    s->total -= v;
    for (int d = 0; d < depth; d++) path[d]->w[idx[d]] -= v;

    for (int d = depth - 1; d >= 0 && n->count < MIN_FILL; d--) {
        fix_underflow(s, path[d], idx[d]);
        n = path[d];
    }
    while (!s->root->leaf && s->root->count == 1) {
        Node *old = s->root;
        s->root = old->child[0];
        s->height--;
        give_node(s, old);
    }
    return 0;
}

/*
 * Re-key the entry `old` (present) to `k` with value v.  When the new key keeps its place
 * (same leaf, between the same neighbours and inside the leaf's routing range, e.g. a
 * selection that only renews seq) the entry is rewritten in place: one descent instead of a
 * removal and an insertion.  Needs height + 1 spare nodes reserved.  -1 if `old` is missing.
 */
static int tree_update(SelectorObject *s, const Key *old, const Key *k, uint64_t v)
{
    Node *path[MAX_HEIGHT];
    int idx[MAX_HEIGHT];
    int depth = 0;
    const Node *lo_node = NULL, *hi_node = NULL; /* tightest routing bounds: [lo, hi) */
    int lo_i = 0, hi_i = 0;
    Node *n = s->root;
    while (!n->leaf) {
        prefetch_keys(n);
        int i = route(n, old);
        if (i > 0) {
            lo_node = n;
            lo_i = i;
        }
        if (i + 1 < (int)n->count) {
            hi_node = n;
            hi_i = i + 1;
        }
        path[depth] = n;
        idx[depth] = i;
        depth++;
        n = n->child[i];
    }
    prefetch_keys(n);
    int pos = lower_bound(n, old);
    if (pos >= (int)n->count || cmp_at(n, pos, old) != 0) return -1;

    int fits;
    if (pos > 0) fits = cmp_at(n, pos - 1, k) < 0;
    else fits = lo_node == NULL || cmp_at(lo_node, lo_i, k) <= 0;
    if (fits) {
        if (pos + 1 < (int)n->count) fits = cmp_at(n, pos + 1, k) > 0;
        else fits = hi_node == NULL || cmp_at(hi_node, hi_i, k) > 0;
    }
    if (!fits) {
        uint64_t old_value;
        if (tree_remove(s, old, &old_value) < 0) return -1;
        tree_insert(s, k, v);
        return 0;
    }
    uint64_t delta = v - n->w[pos]; /* modular: sums wrap like the values they add up */
    set_key(n, pos, k);
    n->w[pos] = v;
    for (int d = 0; d < depth; d++) path[d]->w[idx[d]] += delta;
    s->total += delta;
    return 0;
}

/* Value of the entry with key k (present), or -1. */
static int tree_value(const SelectorObject *s, const Key *k, uint64_t *value)
{
    const Node *n = s->root;
    while (!n->leaf) n = n->child[route(n, k)];
    int pos = lower_bound(n, k);
    if (pos >= (int)n->count || cmp_at(n, pos, k) != 0) return -1;
    *value = n->w[pos];
    return 0;
}

static const Node *leftmost_leaf(const SelectorObject *s)
{
    const Node *n = s->root;
    while (!n->leaf) n = n->child[0];
    return n;
}

/* ------------------------------------------------------------------ hash table */

static inline size_t hash_item(uint64_t item)
{
    /* splitmix64 finaliser: PE identifiers are often small or sequential */
    item ^= item >> 30;
    item *= 0xbf58476d1ce4e5b9ULL;
    item ^= item >> 27;
    item *= 0x94d049bb133111ebULL;
    item ^= item >> 31;
    return (size_t)item;
}

/* The stored key of `item`, or NULL. */
static Key *table_get(SelectorObject *s, uint64_t item)
{
    if (item == 0) return s->has_zero ? &s->zero_entry : NULL;
    size_t mask = s->capacity - 1;
    size_t i = hash_item(item) & mask;
    while (s->table[i].item != 0) {
        if (s->table[i].item == item) return &s->table[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

static void table_put_raw(Key *table, size_t capacity, const Key *k)
{
    size_t mask = capacity - 1;
    size_t i = hash_item(k->item) & mask;
    while (table[i].item != 0) i = (i + 1) & mask;
    table[i] = *k;
}

static int table_grow_if_needed(SelectorObject *s)
{
    /* keep the load factor <= 1/2 so probe sequences stay short */
    if ((size_t)(s->count + 1) * 2 <= s->capacity) return 0;
    size_t newcap = s->capacity * 2;
    Key *nt = (Key *)PyMem_Calloc(newcap, sizeof(Key));
    if (nt == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < s->capacity; i++) {
        if (s->table[i].item != 0) table_put_raw(nt, newcap, &s->table[i]);
    }
    PyMem_Free(s->table);
    s->table = nt;
    s->capacity = newcap;
    return 0;
}

static void table_put(SelectorObject *s, const Key *k)
{
    if (k->item == 0) {
        s->zero_entry = *k;
        s->has_zero = 1;
    } else {
        table_put_raw(s->table, s->capacity, k);
    }
}

/* Backward-shift deletion: no tombstones, so lookups never degrade after churn. */
static void table_delete(SelectorObject *s, Key *entry)
{
    if (entry == &s->zero_entry) {
        s->has_zero = 0;
        return;
    }
    size_t mask = s->capacity - 1;
    size_t hole = (size_t)(entry - s->table);
    size_t j = hole;
    s->table[hole].item = 0;
    for (;;) {
        j = (j + 1) & mask;
        if (s->table[j].item == 0) break;
        size_t home = hash_item(s->table[j].item) & mask;
        /* move entry j into the hole unless its home lies cyclically in (hole, j] */
        int in_range = (hole <= j) ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            s->table[hole] = s->table[j];
            s->table[j].item = 0;
            hole = j;
        }
    }
}

/* ------------------------------------------------------------------ argument parsing */

static int get_u64(PyObject *o, uint64_t *out, const char *what)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", what);
        return -1;
    }
#if ULONG_MAX == UINT64_MAX
    /* CPython 3.11's PyLong_AsUnsignedLongLong goes through a byte-array conversion for
     * values >= 2^30 (every load); PyLong_AsUnsignedLong is the plain digit loop */
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (v == (unsigned long)-1 && PyErr_Occurred()) return -1;
#else
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
#endif
    *out = (uint64_t)v;
    return 0;
}

/* (item, k0, k1, seq[, value]) */
static int parse_entry(PyObject *const *args, Py_ssize_t nargs, Key *k, uint64_t *value, const char *fname)
{
    if (nargs < 4 || nargs > 5) {
        PyErr_Format(PyExc_TypeError, "%s() takes 4 or 5 arguments (item, k0, k1, seq[, value])", fname);
        return -1;
    }
    if (get_u64(args[0], &k->item, "item") < 0 || get_u64(args[1], &k->k0, "k0") < 0 ||
        get_u64(args[2], &k->k1, "k1") < 0 || get_u64(args[3], &k->seq, "seq") < 0)
        return -1;
    *value = 0;
    if (nargs == 5 && get_u64(args[4], value, "value") < 0) return -1;
    return 0;
}

static PyObject *inconsistent(void)
{
    PyErr_SetString(PyExc_RuntimeError, "selector tree and index are inconsistent");
    return NULL;
}

/* ------------------------------------------------------------------ type methods */

static void drop_contents(SelectorObject *self)
{
    if (self->root != NULL) free_subtree(self->root);
    self->root = NULL;
    free_spares(self);
    PyMem_Free(self->table);
    self->table = NULL;
    self->count = 0;
    self->total = 0;
    self->has_zero = 0;
}

static int Selector_init(SelectorObject *self, PyObject *args, PyObject *kwds)
{
    /* seed shaped the old treap; kept so both selector classes take the same arguments */
    static char *kwlist[] = {"seed", NULL};
    unsigned long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|k", kwlist, &seed)) return -1;
    drop_contents(self);
    self->capacity = 16;
    self->table = (Key *)PyMem_Calloc(self->capacity, sizeof(Key));
    self->root = node_new_raw();
    if (self->table == NULL || self->root == NULL) {
        drop_contents(self);
        PyErr_NoMemory();
        return -1;
    }
    self->root->count = 0;
    self->root->leaf = 1;
    self->root->next = NULL;
    self->height = 1;
    return 0;
}

static void Selector_dealloc(SelectorObject *self)
{
    drop_contents(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_ready(SelectorObject *self)
{
    if (self->root == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Selector.__init__ was not called");
        return -1;
    }
    return 0;
}

static PyObject *Selector_insert(SelectorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Key k;
    uint64_t value;
    if (check_ready(self) < 0 || parse_entry(args, nargs, &k, &value, "insert") < 0) return NULL;
    if (table_get(self, k.item) != NULL) {
        PyErr_Format(PyExc_ValueError, "item %llu already present", (unsigned long long)k.item);
        return NULL;
    }
    if (table_grow_if_needed(self) < 0 || reserve_nodes(self, self->height + 1) < 0) return NULL;
    tree_insert(self, &k, value);
    table_put(self, &k);
    self->count++;
    Py_RETURN_NONE;
}

static PyObject *Selector_update(SelectorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Key k;
    uint64_t value;
    if (check_ready(self) < 0 || parse_entry(args, nargs, &k, &value, "update") < 0) return NULL;
    Key *entry = table_get(self, k.item);
    if (entry == NULL) {
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    /* removal can only free nodes, so reserving first makes the whole update infallible */
    if (reserve_nodes(self, self->height + 1) < 0) return NULL;
    if (tree_update(self, entry, &k, value) < 0) return inconsistent();
    *entry = k; /* same item, so the hash slot stays put */
    Py_RETURN_NONE;
}

static PyObject *Selector_remove(SelectorObject *self, PyObject *arg)
{
    uint64_t item, old_value;
    if (check_ready(self) < 0 || get_u64(arg, &item, "item") < 0) return NULL;
    Key *entry = table_get(self, item);
    if (entry == NULL) {
        PyErr_SetObject(PyExc_KeyError, arg);
        return NULL;
    }
    if (tree_remove(self, entry, &old_value) < 0) return inconsistent();
    table_delete(self, entry);
    self->count--;
    Py_RETURN_NONE;
}

static PyObject *Selector_clear(SelectorObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_ready(self) < 0) return NULL;
    Node *root = self->root;
    if (!root->leaf) {
        for (uint32_t i = 0; i < root->count; i++) free_subtree(root->child[i]);
        root->leaf = 1;
    }
    root->count = 0;
    root->next = NULL;
    self->height = 1;
    self->count = 0;
    self->total = 0;
    self->has_zero = 0;
    memset(self->table, 0, self->capacity * sizeof(Key));
    Py_RETURN_NONE;
}

/* The first `limit` items in key order, walking the leaf chain. */
static PyObject *collect(SelectorObject *self, Py_ssize_t limit)
{
    if (limit > self->count) limit = self->count;
    if (limit < 0) limit = 0;
    PyObject *list = PyList_New(limit);
    if (list == NULL) return NULL;
    const Node *n = leftmost_leaf(self);
    Py_ssize_t out = 0;
    while (out < limit && n != NULL) {
        for (uint32_t i = 0; i < n->count && out < limit; i++) {
            /* a handle resolution re-keys what it just selected: start loading its index slot
             * now, so the update() that follows does not stall on a cold hash table */
            if (out < PREFETCH_SELECTED) PREFETCH(&self->table[hash_item(n->item[i]) & (self->capacity - 1)]);
            PyObject *v = PyLong_FromUnsignedLongLong(n->item[i]);
            if (v == NULL) {
                Py_DECREF(list);
                return NULL;
            }
            PyList_SET_ITEM(list, out++, v);
        }
        n = n->next;
    }
    if (out != limit) {
        Py_DECREF(list);
        return inconsistent();
    }
    return list;
}

static PyObject *Selector_first(SelectorObject *self, PyObject *arg)
{
    if (check_ready(self) < 0) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    return collect(self, n);
}

static PyObject *Selector_ordered(SelectorObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_ready(self) < 0) return NULL;
    return collect(self, self->count);
}

static PyObject *Selector_total_value(SelectorObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(self->total);
}

static PyObject *Selector_find_by_value(SelectorObject *self, PyObject *arg)
{
    uint64_t v;
    if (check_ready(self) < 0 || get_u64(arg, &v, "value") < 0) return NULL;
    if (v >= self->total) {
        PyErr_SetString(PyExc_ValueError, "value must be below total_value()");
        return NULL;
    }
    const Node *n = self->root;
    for (;;) {
        uint32_t i = 0;
        while (i < n->count && v >= n->w[i]) v -= n->w[i++];
        if (i == n->count) break;
        if (n->leaf) return PyLong_FromUnsignedLongLong(n->item[i]);
        n = n->child[i];
    }
    PyErr_SetString(PyExc_RuntimeError, "selector value sums are inconsistent");
    return NULL;
}

static PyObject *Selector_key(SelectorObject *self, PyObject *arg)
{
    uint64_t item, value;
    if (check_ready(self) < 0 || get_u64(arg, &item, "item") < 0) return NULL;
    const Key *entry = table_get(self, item);
    if (entry == NULL) {
        PyErr_SetObject(PyExc_KeyError, arg);
        return NULL;
    }
    if (tree_value(self, entry, &value) < 0) return inconsistent();
    return Py_BuildValue("(KKKK)", (unsigned long long)entry->k0, (unsigned long long)entry->k1,
                         (unsigned long long)entry->seq, (unsigned long long)value);
}

static Py_ssize_t Selector_len(SelectorObject *self) { return self->count; }

static int Selector_contains(SelectorObject *self, PyObject *arg)
{
    if (self->root == NULL || !PyLong_Check(arg)) return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(arg);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* negative or huge ints cannot be members */
        return 0;
    }
    return table_get(self, (uint64_t)v) != NULL;
}

static PyMethodDef Selector_methods[] = {
    {"insert", (PyCFunction)(void (*)(void))Selector_insert, METH_FASTCALL,
     "insert(item, k0, k1, seq, value=0): add an item; ValueError if present."},
    {"update", (PyCFunction)(void (*)(void))Selector_update, METH_FASTCALL,
     "update(item, k0, k1, seq, value=0): re-key an item; KeyError if absent."},
    {"remove", (PyCFunction)Selector_remove, METH_O, "remove(item): KeyError if absent."},
    {"clear", (PyCFunction)Selector_clear, METH_NOARGS, "Remove every item."},
    {"first", (PyCFunction)Selector_first, METH_O, "first(n) -> the first n items in key order."},
    {"ordered", (PyCFunction)Selector_ordered, METH_NOARGS, "All items in key order."},
    {"total_value", (PyCFunction)Selector_total_value, METH_NOARGS, "Sum of all values."},
    {"find_by_value", (PyCFunction)Selector_find_by_value, METH_O,
     "find_by_value(v) -> item whose cumulative in-order value range holds v (0 <= v < total)."},
    {"key", (PyCFunction)Selector_key, METH_O, "key(item) -> (k0, k1, seq, value)."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Selector_as_sequence = {
    .sq_length = (lenfunc)Selector_len,
    .sq_contains = (objobjproc)Selector_contains,
};

static PyTypeObject SelectorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rserpool._selector.Selector",
    .tp_doc = "Ordered selection structure (B+-tree keyed by (k0, k1, seq, item) with value sums).",
    .tp_basicsize = sizeof(SelectorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Selector_init,
    .tp_dealloc = (destructor)Selector_dealloc,
    .tp_methods = Selector_methods,
    .tp_as_sequence = &Selector_as_sequence,
};

/* ------------------------------------------------------------------ SCTP message batches
 *
 * rserpool.transport's SCTP connections read all waiting messages with one recvmmsg() and send
 * the answers of one read burst with one sendmmsg(), each message with its PPID in an SCTP_SNDRCV
 * cmsg, as socket.recvmsg()/sendmsg() did one call per message.  Why in C: Python's socket module
 * has no recvmmsg()/sendmmsg(), and per message it built the ancillary-data lists and raised an
 * exception for the EAGAIN that ends every burst.  Measured in the real-kernel lane (qemu TCG,
 * benchmarks/registrar.py over SCTP against RSPLIB's registrar): a Python-level recvmsg cost
 * ~40 us, the closing EAGAIN ~14 us, a sendmsg ~96 us, and the registrar's handling of a handle
 * resolution itself only ~39 us, so the per-message system-call layer was what to cut.
 */
#include <errno.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#define SOL_SCTP_LEVEL 132 /* IPPROTO_SCTP */
#define SCTP_SNDRCV_CMSG 1

/* struct sctp_sndrcvinfo (linux/sctp.h, 32 bytes), without needing the SCTP headers */
typedef struct {
    uint16_t stream, ssn, flags, pad;
    uint32_t ppid, context, timetolive, tsn, cumtsn;
    int32_t assoc_id;
} SndRcvInfo;

#define BATCH_MAX 16       /* messages per system call */
#define BATCH_PIECE 16384  /* bytes per message and call; longer ones arrive in pieces (no MSG_EOR) */

static char recv_data[BATCH_MAX][BATCH_PIECE];

static int as_fd(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "bad file descriptor");
        return -1;
    }
    return (int)v;
}
static union {
    char buf[CMSG_SPACE(sizeof(SndRcvInfo))];
    struct cmsghdr align;
} recv_ctl[BATCH_MAX], send_ctl[BATCH_MAX];

static PyObject *sctp_recv_batch(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "sctp_recv_batch(fd, piece_size, count)");
        return NULL;
    }
    int fd = as_fd(args[0]);
    if (fd < 0) return NULL;
    Py_ssize_t piece = PyLong_AsSsize_t(args[1]);
    Py_ssize_t count = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (piece < 1 || piece > BATCH_PIECE) piece = BATCH_PIECE;
    if (count < 1 || count > BATCH_MAX) count = BATCH_MAX;
    struct mmsghdr msgs[BATCH_MAX];
    struct iovec iov[BATCH_MAX];
    memset(msgs, 0, sizeof(msgs[0]) * (size_t)count);
    for (Py_ssize_t i = 0; i < count; i++) {
        iov[i].iov_base = recv_data[i];
        iov[i].iov_len = (size_t)piece;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_control = recv_ctl[i].buf;
        msgs[i].msg_hdr.msg_controllen = sizeof(recv_ctl[i].buf);
    }
    int got = recvmmsg(fd, msgs, (unsigned int)count, MSG_DONTWAIT, NULL);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(got);
    if (out == NULL) return NULL;
    for (int i = 0; i < got; i++) {
        struct msghdr *h = &msgs[i].msg_hdr;
        unsigned long ppid = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level == SOL_SCTP_LEVEL && c->cmsg_type == SCTP_SNDRCV_CMSG
                && c->cmsg_len >= CMSG_LEN(sizeof(SndRcvInfo))) {
                SndRcvInfo info;
                memcpy(&info, CMSG_DATA(c), sizeof(info));
                ppid = ntohl(info.ppid);
            }
        }
        PyObject *t = Py_BuildValue("(y#ik)", recv_data[i], (Py_ssize_t)msgs[i].msg_len, h->msg_flags, ppid);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

static PyObject *struct_error; /* struct.error: what struct.pack("!I", ppid) raised for a bad PPID */

/* A PPID (0..0xFFFFFFFF) from an int, or -1 with struct.error set, as struct.pack("!I", v) would. */
static long long ppid_of(PyObject *v)
{
    if (!PyLong_Check(v)) {
        PyErr_SetString(struct_error, "required argument is not an integer");
        return -1;
    }
    int overflow = 0;
    long long r = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (r == -1 && PyErr_Occurred()) return -1;
    if (overflow || r < 0 || r > 0xFFFFFFFFLL) {
        PyErr_SetString(struct_error, "'I' format requires 0 <= number <= 4294967295");
        return -1;
    }
    return r;
}

static PyObject *sctp_send_batch(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "sctp_send_batch(fd, [(bytes, ppid), ...])");
        return NULL;
    }
    int fd = as_fd(args[0]);
    if (fd < 0) return NULL;
    PyObject *items = args[1];
    Py_ssize_t total = PyList_GET_SIZE(items), sent = 0;
    struct mmsghdr msgs[BATCH_MAX];
    struct iovec iov[BATCH_MAX];
    /* every item checked before the first message leaves: a bad one sends nothing (as struct.pack
       refused it before sendmsg() in the one-by-one path); the loop below runs no Python code */
    for (Py_ssize_t i = 0; i < total; i++) {
        PyObject *it = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(it, 0))) {
            PyErr_SetString(PyExc_TypeError, "sctp_send_batch: items must be (bytes, ppid)");
            return NULL;
        }
        if (ppid_of(PyTuple_GET_ITEM(it, 1)) < 0) return NULL;
    }
    while (sent < total) {
        Py_ssize_t n = total - sent < BATCH_MAX ? total - sent : BATCH_MAX;
        memset(msgs, 0, sizeof(msgs[0]) * (size_t)n);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *it = PyList_GET_ITEM(items, sent + i);
            PyObject *data = PyTuple_GET_ITEM(it, 0);
            long long ppid = ppid_of(PyTuple_GET_ITEM(it, 1)); /* checked above: cannot fail */
            iov[i].iov_base = PyBytes_AS_STRING(data);
            iov[i].iov_len = (size_t)PyBytes_GET_SIZE(data);
            struct cmsghdr *c = (struct cmsghdr *)send_ctl[i].buf;
            c->cmsg_level = SOL_SCTP_LEVEL;
            c->cmsg_type = SCTP_SNDRCV_CMSG;
            c->cmsg_len = CMSG_LEN(sizeof(SndRcvInfo));
            SndRcvInfo info;
            memset(&info, 0, sizeof(info));
            info.ppid = htonl((uint32_t)ppid);
            memcpy(CMSG_DATA(c), &info, sizeof(info));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = c;
            msgs[i].msg_hdr.msg_controllen = CMSG_SPACE(sizeof(SndRcvInfo));
        }
        int r = sendmmsg(fd, msgs, (unsigned int)n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            if (sent == 0) return PyErr_SetFromErrno(PyExc_OSError);
            break; /* the error shows again on the next call */
        }
        sent += r;
        if (r < n) break;
    }
    return PyLong_FromSsize_t(sent);
}

/* ------------------------------------------------------------------ handle resolution
 *
 * hr_reply() answers a plain ASAP Handle Resolution (Pool Handle [+ Handle Resolution Option])
 * for the registrar (rserpool.registrar_asap) in one call: it parses the request, selects as
 * rserpool.policy.SelectionPool.select() does for the sorting-order policies without an update
 * hook (RR, PRIO, LU, PLU and their DPF variants), applies the same side effects to the same
 * Python objects (entry.seq, entry.selection_counter, pool.global_seq, the selector's key), and
 * joins the reply from the registrar's cached TLVs.  It returns None, before changing anything,
 * whenever it is unsure (another message layout, an unknown pool, a long handle, another policy,
 * a TLV not cached yet, the pure-Python selector): the Python path then answers, with all its
 * checks.  Why in C: in the real-kernel lane (qemu TCG) the Python path cost ~39 us per handle
 * resolution, most of the registrar's own work per request once system calls were batched.
 */
static PyObject *s_selection, *s_policy, *s_elements, *s_selector, *s_global_seq, *s_by_value, *s_update,
    *s_key, *s_value, *s_default_max_increment, *s_seq, *s_selection_counter;

#define MAX_HR_ITEMS 128      /* registrar_asap.MAX_MAX_HANDLE_RESOLUTION_ITEMS */
#define MAX_HANDLE 32         /* handlespace.MAX_POOL_HANDLE_SIZE */

static long long attr_ll(PyObject *o, PyObject *name, int *ok)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) {
        *ok = 0;
        return 0;
    }
    long long r = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (r == -1 && PyErr_Occurred()) *ok = 0;
    return r;
}

static int set_ll(PyObject *o, PyObject *name, long long v)
{
    PyObject *x = PyLong_FromLongLong(v);
    if (x == NULL) return -1;
    int r = PyObject_SetAttr(o, name, x);
    Py_DECREF(x);
    return r;
}

static PyObject *Selector_update(SelectorObject *self, PyObject *const *args, Py_ssize_t nargs);

/* The answer to the request d[0..n) (a new reference: the reply bytes, or None), NULL on error.
 * ctx: pools, pe_cache, heads (dicts). */
static PyObject *hr_answer(const unsigned char *d, Py_ssize_t n, PyObject *const *ctx, long max_items,
                           long max_increment)
{
    /* the layout registrar_asap._fast_hr accepts, and nothing else */
    if (n < 8 || d[0] != 0x05 || d[1] != 0 || ((Py_ssize_t)d[2] << 8 | d[3]) != n) Py_RETURN_NONE;
    Py_ssize_t plen = (Py_ssize_t)d[6] << 8 | d[7];
    if (d[4] != 0 || d[5] != 0x09 || plen < 4 || 4 + plen > n) Py_RETURN_NONE;
    Py_ssize_t off = 4 + ((plen + 3) & ~(Py_ssize_t)3);
    unsigned long items = 0;
    if (off == n || 4 + plen == n) {
        items = 0;
    } else if (off + 8 == n && d[off] == 0x80 && d[off + 1] == 0x3f && d[off + 2] == 0 && d[off + 3] == 8) {
        items = (unsigned long)d[off + 4] << 24 | (unsigned long)d[off + 5] << 16 | (unsigned long)d[off + 6] << 8
                | d[off + 7];
    } else {
        Py_RETURN_NONE;
    }
    if (plen - 4 > MAX_HANDLE) Py_RETURN_NONE;
    long want = items ? (items > MAX_HR_ITEMS ? MAX_HR_ITEMS : (long)items) : max_items;
    if (want > MAX_HR_ITEMS) want = MAX_HR_ITEMS;
    if (want < 1) Py_RETURN_NONE;

    PyObject *result = NULL, *handle = NULL, *sel = NULL, *policy = NULL, *elements = NULL, *selector = NULL;
    PyObject *keyf = NULL, *valuef = NULL, *head = NULL;
    PyObject *ents[MAX_HR_ITEMS], *tlvs[MAX_HR_ITEMS];
    uint64_t ids[MAX_HR_ITEMS];
    Py_ssize_t got = 0, held = 0;
    handle = PyBytes_FromStringAndSize((const char *)d + 8, plen - 4);
    if (handle == NULL) return NULL;
    PyObject *pool = PyDict_GetItemWithError(ctx[0], handle); /* borrowed, used before any Python code */
    if (pool == NULL) goto none;
    /* held: the Python code run below (attribute look-ups, the policy's key) may change the dict */
    head = PyDict_GetItemWithError(ctx[2], handle);
    if (head == NULL || !PyBytes_Check(head)) {
        head = NULL;
        goto none;
    }
    Py_INCREF(head);
    if ((sel = PyObject_GetAttr(pool, s_selection)) == NULL || (policy = PyObject_GetAttr(sel, s_policy)) == NULL
        || (elements = PyObject_GetAttr(sel, s_elements)) == NULL
        || (selector = PyObject_GetAttr(sel, s_selector)) == NULL)
        goto error;
    if (!PyDict_Check(elements) || PyDict_GET_SIZE(elements) == 0 || Py_TYPE(selector) != &SelectorType
        || ((SelectorObject *)selector)->root == NULL)
        goto none;
    {
        PyObject *by_value = PyObject_GetAttr(policy, s_by_value);
        if (by_value == NULL) goto error;
        int plain = by_value == Py_False;
        Py_DECREF(by_value);
        if (!plain) goto none;
        PyObject *update = PyObject_GetAttr(policy, s_update);
        if (update == NULL) goto error;
        plain = update == Py_None;
        Py_DECREF(update);
        if (!plain) goto none;
    }
    int ok = 1;
    long long inc = max_increment ? max_increment : attr_ll(policy, s_default_max_increment, &ok);
    if (!ok) goto error;
    long long seq = attr_ll(sel, s_global_seq, &ok);
    if (!ok) goto error;
    /* the first `want` items in key order (SelectionPool.select: selector.first(n)) */
    SelectorObject *so = (SelectorObject *)selector;
    for (const Node *nd = leftmost_leaf(so); nd != NULL && got < want; nd = nd->next)
        for (uint32_t i = 0; i < nd->count && got < want; i++) ids[got++] = nd->item[i];
    /* everything the reply needs must be cached before anything is changed */
    Py_ssize_t size = 4 + PyBytes_GET_SIZE(head);
    for (Py_ssize_t i = 0; i < got; i++, held++) {
        PyObject *id = PyLong_FromUnsignedLongLong(ids[i]);
        if (id == NULL) goto error;
        PyObject *e = PyDict_GetItemWithError(elements, id);
        if (e == NULL) {
            Py_DECREF(id);
            goto none; /* an error, or the selector and the elements disagree: Python answers */
        }
        Py_INCREF(e); /* before the next allocation (a garbage collection may run Python code) */
        PyObject *k = PyTuple_Pack(2, handle, id);
        Py_DECREF(id);
        PyObject *c = k ? PyDict_GetItemWithError(ctx[1], k) : NULL;
        Py_XDECREF(k);
        if (c == NULL || !PyTuple_Check(c) || PyTuple_GET_SIZE(c) != 2
            || !PyBytes_Check(PyTuple_GET_ITEM(c, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(c, 1))) {
            Py_DECREF(e);
            goto none; /* not cached yet: Python answers (an error, if one is set, is returned) */
        }
        Py_INCREF(c);
        ents[i] = e;
        tlvs[i] = c;
        size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(c, 0));
        if (i == 0) size += PyBytes_GET_SIZE(PyTuple_GET_ITEM(c, 1));
    }
    if (got == 0 || size > 0xFFFF) goto none;
    /* the selection's side effects, as SelectionPool.select() applies them (no update hook) */
    if ((keyf = PyObject_GetAttr(policy, s_key)) == NULL || (valuef = PyObject_GetAttr(policy, s_value)) == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < got && i < inc; i++) {
        PyObject *e = ents[i];
        long long counter = attr_ll(e, s_selection_counter, &ok);
        if (!ok || set_ll(e, s_seq, seq) < 0 || set_ll(sel, s_global_seq, seq + 1) < 0
            || set_ll(e, s_selection_counter, counter + 1) < 0)
            goto error;
        seq++;
        PyObject *kk = PyObject_CallOneArg(keyf, e);
        if (kk == NULL) goto error;
        PyObject *vv = PyObject_CallOneArg(valuef, e);
        if (vv == NULL || !PyTuple_Check(kk) || PyTuple_GET_SIZE(kk) != 2) {
            Py_DECREF(kk);
            Py_XDECREF(vv);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "policy key must be a pair");
            goto error;
        }
        PyObject *id = PyLong_FromUnsignedLongLong(ids[i]);
        PyObject *sq = PyLong_FromLongLong(seq - 1);
        PyObject *uargs[5] = {id, PyTuple_GET_ITEM(kk, 0), PyTuple_GET_ITEM(kk, 1), sq, vv};
        PyObject *r = (id && sq) ? Selector_update(so, uargs, 5) : NULL;
        Py_XDECREF(id);
        Py_XDECREF(sq);
        Py_DECREF(kk);
        Py_DECREF(vv);
        if (r == NULL) goto error;
        Py_DECREF(r);
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) goto error;
    {
        char *w = PyBytes_AS_STRING(result);
        w[0] = 0x06;
        w[1] = 0;
        w[2] = (char)(size >> 8);
        w[3] = (char)(size & 0xFF);
        w += 4;
        memcpy(w, PyBytes_AS_STRING(head), (size_t)PyBytes_GET_SIZE(head));
        w += PyBytes_GET_SIZE(head);
        PyObject *pol = PyTuple_GET_ITEM(tlvs[0], 1); /* the pool's policy is the first PE's (RSPLIB) */
        memcpy(w, PyBytes_AS_STRING(pol), (size_t)PyBytes_GET_SIZE(pol));
        w += PyBytes_GET_SIZE(pol);
        for (Py_ssize_t i = 0; i < got; i++) {
            PyObject *pe = PyTuple_GET_ITEM(tlvs[i], 0);
            memcpy(w, PyBytes_AS_STRING(pe), (size_t)PyBytes_GET_SIZE(pe));
            w += PyBytes_GET_SIZE(pe);
        }
    }
    goto done;
none:
    if (!PyErr_Occurred()) {
        result = Py_None;
        Py_INCREF(result);
    }
    goto done;
error:
    Py_CLEAR(result);
done:
    for (Py_ssize_t i = 0; i < held; i++) {
        Py_DECREF(ents[i]);
        Py_DECREF(tlvs[i]);
    }
    Py_XDECREF(keyf);
    Py_XDECREF(valuef);
    Py_XDECREF(selector);
    Py_XDECREF(elements);
    Py_XDECREF(policy);
    Py_XDECREF(sel);
    Py_XDECREF(head);
    Py_DECREF(handle);
    return result;
}

static int hr_args(PyObject *const *args, long *max_items, long *max_increment)
{
    if (!PyDict_Check(args[0]) || !PyDict_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "pools, pe_cache and heads must be dicts");
        return -1;
    }
    *max_items = PyLong_AsLong(args[3]);
    *max_increment = PyLong_AsLong(args[4]);
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *hr_reply(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    long max_items, max_increment;
    if (nargs != 6 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hr_reply(data, pools, pe_cache, heads, max_items, max_increment)");
        return NULL;
    }
    if (hr_args(args + 1, &max_items, &max_increment) < 0) return NULL;
    return hr_answer((const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), args + 1,
                     max_items, max_increment);
}

/*
 * hr_batch(msgs, start, out, pools, pe_cache, heads, max_items, max_increment) -> index
 *
 * msgs as sctp_recv_batch returns them; from msgs[start] on, every whole ASAP message (MSG_EOR,
 * PPID 11 or 0) that hr_answer() answers gets its reply appended to `out` as (reply, 11); stops
 * at the first other one and returns its index (len(msgs) if none), so that the caller handles
 * it, and what follows, in order.  Why: the read loop and the registrar's dispatch cost more in
 * Python than the answer itself in C (see "SCTP message batches").
 */
static PyObject *ppid_asap;

static PyObject *hr_batch(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    long max_items, max_increment;
    if (nargs != 8 || !PyList_Check(args[0]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "hr_batch(msgs, start, out, pools, pe_cache, heads, max_items, max_increment)");
        return NULL;
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if ((i == -1 && PyErr_Occurred()) || hr_args(args + 3, &max_items, &max_increment) < 0) return NULL;
    PyObject *msgs = args[0], *out = args[2];
    for (; i >= 0 && i < PyList_GET_SIZE(msgs); i++) {
        PyObject *m = PyList_GET_ITEM(msgs, i);
        if (!PyTuple_Check(m) || PyTuple_GET_SIZE(m) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(m, 0))) break;
        long flags = PyLong_AsLong(PyTuple_GET_ITEM(m, 1));
        if (flags == -1 && PyErr_Occurred()) return NULL;
        long ppid = PyLong_AsLong(PyTuple_GET_ITEM(m, 2));
        if (ppid == -1 && PyErr_Occurred()) return NULL;
        if (!(flags & MSG_EOR) || (flags & 0x8000) || (ppid != 11 && ppid != 0)) break; /* 0x8000: MSG_NOTIFICATION */
        PyObject *data = PyTuple_GET_ITEM(m, 0);
        PyObject *reply = hr_answer((const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                                    args + 3, max_items, max_increment);
        if (reply == NULL) return NULL;
        if (reply == Py_None) {
            Py_DECREF(reply);
            break;
        }
        PyObject *t = PyTuple_Pack(2, reply, ppid_asap);
        Py_DECREF(reply);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            return NULL;
        }
        Py_DECREF(t);
    }
    return PyLong_FromSsize_t(i);
}

/*
 * sctp_drain(conn): the read callback of an rserpool.transport.SCTPMessageConnection whose handler
 * offers `hr_ctx` (the registrar's: pools, pe_cache, heads, config, handlespace, stats).  One
 * recvmmsg(); if every message is a plain Handle Resolution hr_answer() answers, the answers leave
 * with one sendmmsg() and stats["handle_resolution"] counts them, without any Python frame;
 * otherwise (or with a partial message, queued sends, a rate limit, an error) conn's Python
 * methods take over (_burst continues where this stopped, with the answers so far).  An error
 * after the read is not raised: the messages are out of the kernel and the answers built so far
 * had their selection side effects, so conn._drain_error logs it and hands both to _burst.  Why: in
 * the real-kernel lane the Python read loop and dispatch around the C answer cost ~2 us on the
 * host, ~45 us under qemu, per read burst.
 */
static PyObject *s_fd, *s_partial, *s_outq, *s_handler, *s_hr_ctx, *s_max_hr_rate, *s_max_hr_items,
    *s_max_increment, *s_hr_stat;

/* The raised exception as an object (a new reference), the error indicator cleared. */
static PyObject *take_exception(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL && v != NULL) PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}

static PyObject *sctp_drain(PyObject *mod, PyObject *conn)
{
    PyObject *result = NULL, *msgs = NULL, *out = NULL, *handler = NULL, *ctx = NULL, *partial = NULL,
             *outq = NULL, *fdo = NULL, *fdl = NULL, *idx = NULL;
    long max_items = 0, max_inc = 0;
    Py_ssize_t start = 0; /* after the read: the first message not handled yet */
    if ((fdo = PyObject_GetAttr(conn, s_fd)) == NULL) return NULL;
    long fd = PyLong_AsLong(fdo);
    Py_DECREF(fdo);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd < 0) Py_RETURN_NONE; /* closed meanwhile */
    if ((partial = PyObject_GetAttr(conn, s_partial)) == NULL || (outq = PyObject_GetAttr(conn, s_outq)) == NULL
        || (handler = PyObject_GetAttr(conn, s_handler)) == NULL)
        goto error;
    ctx = PyObject_GetAttr(handler, s_hr_ctx);
    if (ctx == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) goto error;
        PyErr_Clear();
    }
    int quick = ctx != NULL && PyTuple_Check(ctx) && PyTuple_GET_SIZE(ctx) == 6 && PyList_Check(outq)
                && PyList_GET_SIZE(outq) == 0;
    if (quick) {
        Py_ssize_t plen = PyObject_Length(partial);
        if (plen < 0) goto error;
        quick = plen == 0;
    }
    if (quick) { /* each call checked before the next: none may run with an exception set */
        PyObject *cfg = PyTuple_GET_ITEM(ctx, 3), *hs = PyTuple_GET_ITEM(ctx, 4);
        PyObject *v = PyObject_GetAttr(cfg, s_max_hr_rate);
        if (v == NULL) goto error;
        double r = PyFloat_AsDouble(v);
        Py_DECREF(v);
        if (r == -1.0 && PyErr_Occurred()) goto error;
        if ((v = PyObject_GetAttr(cfg, s_max_hr_items)) == NULL) goto error;
        max_items = PyLong_AsLong(v);
        Py_DECREF(v);
        if (max_items == -1 && PyErr_Occurred()) goto error;
        if ((v = PyObject_GetAttr(hs, s_max_increment)) == NULL) goto error;
        max_inc = PyLong_AsLong(v);
        Py_DECREF(v);
        if (max_inc == -1 && PyErr_Occurred()) goto error;
        quick = r <= 0;
    }
    if (!quick) {
        result = PyObject_CallMethod(conn, "_on_readable_batched", NULL);
        goto done;
    }
    {
        PyObject *rargs[3];
        PyObject *piece = PyLong_FromLong(BATCH_PIECE), *cnt = PyLong_FromLong(BATCH_MAX);
        fdl = PyLong_FromLong(fd);
        if (fdl && piece && cnt) {
            rargs[0] = fdl;
            rargs[1] = piece;
            rargs[2] = cnt;
            msgs = sctp_recv_batch(mod, rargs, 3);
        }
        Py_XDECREF(piece);
        Py_XDECREF(cnt);
        if (msgs == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_OSError)) goto error;
            PyObject *exc = take_exception();
            result = PyObject_CallMethod(conn, "_drain_failed", "O", exc);
            Py_DECREF(exc);
            goto done;
        }
    }
    /* From here on the messages are out of the kernel: an error must not lose them (read_error). */
    Py_ssize_t got = PyList_GET_SIZE(msgs);
    if (got == 0) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    if ((out = PyList_New(0)) == NULL) goto read_error;
    {
        PyObject *zero = PyLong_FromLong(0), *mi = PyLong_FromLong(max_items), *mc = PyLong_FromLong(max_inc);
        if (zero && mi && mc) {
            PyObject *bargs[8] = {msgs, zero, out, PyTuple_GET_ITEM(ctx, 0), PyTuple_GET_ITEM(ctx, 1),
                                  PyTuple_GET_ITEM(ctx, 2), mi, mc};
            idx = hr_batch(mod, bargs, 8);
        }
        Py_XDECREF(zero);
        Py_XDECREF(mi);
        Py_XDECREF(mc);
    }
    if (idx == NULL) {
        /* from msgs[0]: one answer in `out` per message answered, side effects applied; the failed one
           (its side effects maybe in part) and the rest go to Python */
        start = PyList_GET_SIZE(out);
        goto read_error;
    }
    Py_ssize_t done_n = PyLong_AsSsize_t(idx);
    if (done_n > 0) { /* stats["handle_resolution"] += done_n */
        PyObject *stats = PyTuple_GET_ITEM(ctx, 5);
        PyObject *old = PyObject_GetItem(stats, s_hr_stat);
        PyObject *nw = old ? PyNumber_Add(old, idx) : NULL;
        int bad = nw == NULL || PyObject_SetItem(stats, s_hr_stat, nw) < 0;
        Py_XDECREF(old);
        Py_XDECREF(nw);
        if (bad) {
            start = done_n;
            goto read_error;
        }
    }
    if (done_n < got || got == BATCH_MAX) { /* the rest (and any further reads) in Python, in order */
        result = PyObject_CallMethod(conn, "_burst", "OOO", msgs, idx, out);
        goto done;
    }
    {
        PyObject *sargs[2] = {fdl, out};
        PyObject *sent = sctp_send_batch(mod, sargs, 2);
        if (sent == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_OSError)) {
                start = got;
                goto read_error;
            }
            PyObject *exc = take_exception();
            result = PyObject_CallMethod(conn, "_send_failed", "O", exc);
            Py_DECREF(exc);
            goto done;
        }
        if (PyLong_AsSsize_t(sent) < PyList_GET_SIZE(out)) {
            result = PyObject_CallMethod(conn, "_queue_unsent", "OO", out, sent);
            Py_DECREF(sent);
            goto done;
        }
        Py_DECREF(sent);
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
read_error: {
        /* Python logs it and goes on from msgs[start] with the answers so far (conn._drain_error) */
        PyObject *exc = take_exception();
        if (exc == NULL) { /* cannot be: every way here sets an exception */
            exc = Py_None;
            Py_INCREF(exc);
        }
        result = PyObject_CallMethod(conn, "_drain_error", "OOnO", exc, msgs, start, out ? out : Py_None);
        Py_DECREF(exc);
        goto done;
    }
error:
    Py_CLEAR(result);
done:
    Py_XDECREF(idx);
    Py_XDECREF(fdl);
    Py_XDECREF(msgs);
    Py_XDECREF(out);
    Py_XDECREF(ctx);
    Py_XDECREF(handler);
    Py_XDECREF(outq);
    Py_XDECREF(partial);
    return result;
}

static PyMethodDef module_methods[] = {
    {"sctp_drain", (PyCFunction)sctp_drain, METH_O,
     "sctp_drain(conn): read callback of an SCTP message connection whose handler has hr_ctx (see _selector.c)."},
    {"hr_batch", (PyCFunction)(void (*)(void))hr_batch, METH_FASTCALL,
     "hr_batch(msgs, start, out, pools, pe_cache, heads, max_items, max_increment) -> index of the first\n"
     "message from msgs[start] on that hr_reply() would not answer; the answers are appended to out."},
    {"hr_reply", (PyCFunction)(void (*)(void))hr_reply, METH_FASTCALL,
     "hr_reply(data, pools, pe_cache, heads, max_items, max_increment) -> the Handle Resolution Response\n"
     "bytes for a plain Handle Resolution, with the selection's side effects applied; None (nothing\n"
     "changed) where the registrar's Python path must answer."},
    {"sctp_recv_batch", (PyCFunction)(void (*)(void))sctp_recv_batch, METH_FASTCALL,
     "sctp_recv_batch(fd, piece_size, count) -> [(data, msg_flags, ppid), ...]: the messages (or pieces)\n"
     "waiting on a non-blocking SCTP socket, up to count, with one recvmmsg(); [] if none; OSError."},
    {"sctp_send_batch", (PyCFunction)(void (*)(void))sctp_send_batch, METH_FASTCALL,
     "sctp_send_batch(fd, [(data, ppid), ...]) -> how many were sent (in order) with sendmmsg();\n"
     "fewer when the send buffer is full; OSError if the first fails otherwise."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef selector_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_selector",
    .m_doc = "C implementation of the RSerPool pool-element selection structure, and the registrar's hot path:\n"
             "batched SCTP message I/O for rserpool.transport (sctp_recv_batch/sctp_send_batch: recvmmsg/sendmmsg),\n"
             "handle resolution answered in one call (hr_reply, hr_batch) and the SCTP read callback that uses\n"
             "them (sctp_drain).  Why hand-written: measured in the real-kernel lane (qemu TCG, benchmarks/\n"
             "registrar.py --vs-rsplib over SCTP), a Python recvmsg cost ~40 us, the EAGAIN that ends each read\n"
             "~14 us, a sendmsg ~96 us and the Python handle-resolution path ~39 us, and the registrar spent\n"
             "1,050-1,650 us of CPU per resolution against RSPLIB's 460-650; with this path it spends 250-420.\n"
             "Python's socket module has no recvmmsg/sendmmsg.  Each part says when it leaves the work to Python.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__selector(void)
{
    if (PyType_Ready(&SelectorType) < 0) return NULL;
    struct { PyObject **slot; const char *name; } names[] = {
        {&s_selection, "selection"}, {&s_policy, "policy"}, {&s_elements, "elements"},
        {&s_selector, "selector"}, {&s_global_seq, "global_seq"}, {&s_by_value, "by_value"},
        {&s_update, "update"}, {&s_key, "key"}, {&s_value, "value"},
        {&s_default_max_increment, "default_max_increment"}, {&s_seq, "seq"},
        {&s_selection_counter, "selection_counter"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL) return NULL;
    if ((ppid_asap = PyLong_FromLong(11)) == NULL) return NULL;
    PyObject *structmod = PyImport_ImportModule("struct");
    if (structmod == NULL) return NULL;
    struct_error = PyObject_GetAttrString(structmod, "error");
    Py_DECREF(structmod);
    if (struct_error == NULL) return NULL;
    struct { PyObject **slot; const char *name; } names2[] = {
        {&s_fd, "_fd"}, {&s_partial, "_partial"}, {&s_outq, "_outq"}, {&s_handler, "handler"},
        {&s_hr_ctx, "hr_ctx"}, {&s_max_hr_rate, "max_hr_rate"}, {&s_max_hr_items, "max_hr_items"},
        {&s_max_increment, "max_increment"}, {&s_hr_stat, "handle_resolution"},
    };
    for (size_t i = 0; i < sizeof(names2) / sizeof(names2[0]); i++)
        if ((*names2[i].slot = PyUnicode_InternFromString(names2[i].name)) == NULL) return NULL;
    PyObject *m = PyModule_Create(&selector_module);
    if (m == NULL) return NULL;
    Py_INCREF(&SelectorType);
    if (PyModule_AddObject(m, "Selector", (PyObject *)&SelectorType) < 0) {
        Py_DECREF(&SelectorType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
