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

static struct PyModuleDef selector_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_selector",
    .m_doc = "C implementation of the RSerPool pool-element selection structure.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__selector(void)
{
    if (PyType_Ready(&SelectorType) < 0) return NULL;
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
