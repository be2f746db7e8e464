/*
 * rserpool._selector: the ordered per-pool selection structure behind rserpool.policy.
 *
 * A treap (deterministic xorshift priorities, so runs are reproducible) ordered by
 * (k0, k1, seq, item) with subtree value sums, plus an open-addressing hash table
 * item -> node so remove/update by item id are O(log n) expected.
 *
 * - "sorting order" policies (RR, WRR, PRIO, LU, LUD, PLU, PLUD, the DPF variants) use
 *   first(n): the first n items in key order;
 * - "value tree" policies (RAND, WRAND, RLU, ...) use total_value() and find_by_value(v):
 *   the item whose cumulative in-order value range contains v (RSPLIB's GetNodeByValue).
 *
 * rserpool.selector.PySelector is the pure-Python reference with the same methods.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct Node {
    uint64_t k0, k1, seq, item;
    uint64_t value;
    uint64_t sum;  /* value sum of this subtree */
    uint32_t prio;
    struct Node *left, *right;
} Node;

typedef struct {
    PyObject_HEAD
    Node *root;
    Py_ssize_t count;
    Node **table; /* open addressing, linear probing, NULL = empty */
    size_t capacity; /* power of two */
    uint32_t rng;
} SelectorObject;

/* ------------------------------------------------------------------ helpers */

static inline uint32_t next_prio(SelectorObject *s)
{
    uint32_t x = s->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s->rng = x;
    return x;
}

static inline int node_less(const Node *a, const Node *b)
{
    if (a->k0 != b->k0) return a->k0 < b->k0;
    if (a->k1 != b->k1) return a->k1 < b->k1;
    if (a->seq != b->seq) return a->seq < b->seq;
    return a->item < b->item;
}

static inline uint64_t sum_of(const Node *n) { return n ? n->sum : 0; }

static inline void pull(Node *n) { n->sum = n->value + sum_of(n->left) + sum_of(n->right); }

/* Recursion depth is the treap depth: O(log n) expected, ~40 for 10^6 items. */
static void split(Node *t, const Node *key, Node **l, Node **r)
{
    if (t == NULL) {
        *l = *r = NULL;
    } else if (node_less(t, key)) {
        split(t->right, key, &t->right, r);
        *l = t;
        pull(t);
    } else {
        split(t->left, key, l, &t->left);
        *r = t;
        pull(t);
    }
}

static Node *merge(Node *a, Node *b)
{
    if (a == NULL) return b;
    if (b == NULL) return a;
    if (a->prio > b->prio) {
        a->right = merge(a->right, b);
        pull(a);
        return a;
    }
    b->left = merge(a, b->left);
    pull(b);
    return b;
}

static Node *treap_insert(Node *t, Node *n)
{
    if (t == NULL) return n;
    if (n->prio > t->prio) {
        split(t, n, &n->left, &n->right);
        pull(n);
        return n;
    }
    if (node_less(n, t)) t->left = treap_insert(t->left, n);
    else t->right = treap_insert(t->right, n);
    pull(t);
    return t;
}

static Node *treap_erase(Node *t, const Node *n)
{
    if (t == NULL) return NULL; /* not reached: callers only erase linked nodes */
    if (t == n) return merge(t->left, t->right);
    if (node_less(n, t)) t->left = treap_erase(t->left, n);
    else t->right = treap_erase(t->right, n);
    pull(t);
    return t;
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

static Py_ssize_t table_find_slot(SelectorObject *s, uint64_t item)
{
    size_t mask = s->capacity - 1;
    size_t i = hash_item(item) & mask;
    while (s->table[i] != NULL) {
        if (s->table[i]->item == item) return (Py_ssize_t)i;
        i = (i + 1) & mask;
    }
    return -1;
}

static Node *table_get(SelectorObject *s, uint64_t item)
{
    Py_ssize_t slot = table_find_slot(s, item);
    return slot < 0 ? NULL : s->table[slot];
}

static void table_put_raw(Node **table, size_t capacity, Node *n)
{
    size_t mask = capacity - 1;
    size_t i = hash_item(n->item) & mask;
    while (table[i] != NULL) i = (i + 1) & mask;
    table[i] = n;
}

static int table_grow_if_needed(SelectorObject *s)
{
    /* keep the load factor <= 1/2 so probe sequences stay short */
    if ((size_t)(s->count + 1) * 2 <= s->capacity) return 0;
    size_t newcap = s->capacity * 2;
    Node **nt = (Node **)PyMem_Calloc(newcap, sizeof(Node *));
    if (nt == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < s->capacity; i++) {
        if (s->table[i]) table_put_raw(nt, newcap, s->table[i]);
    }
    PyMem_Free(s->table);
    s->table = nt;
    s->capacity = newcap;
    return 0;
}

/* Backward-shift deletion: no tombstones, so lookups never degrade after churn. */
static void table_delete_slot(SelectorObject *s, size_t slot)
{
    size_t mask = s->capacity - 1;
    size_t hole = slot;
    size_t j = slot;
    s->table[hole] = NULL;
    for (;;) {
        j = (j + 1) & mask;
        Node *n = s->table[j];
        if (n == NULL) break;
        size_t home = hash_item(n->item) & mask;
        /* move n into the hole unless its home lies cyclically in (hole, j] */
        int in_range = (hole <= j) ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            s->table[hole] = n;
            s->table[j] = NULL;
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
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* (item, k0, k1, seq[, value]) */
static int parse_entry(PyObject *const *args, Py_ssize_t nargs, uint64_t *item, uint64_t *k0,
                       uint64_t *k1, uint64_t *seq, uint64_t *value, const char *fname)
{
    if (nargs < 4 || nargs > 5) {
        PyErr_Format(PyExc_TypeError, "%s() takes 4 or 5 arguments (item, k0, k1, seq[, value])", fname);
        return -1;
    }
    if (get_u64(args[0], item, "item") < 0 || get_u64(args[1], k0, "k0") < 0 ||
        get_u64(args[2], k1, "k1") < 0 || get_u64(args[3], seq, "seq") < 0)
        return -1;
    *value = 0;
    if (nargs == 5 && get_u64(args[4], value, "value") < 0) return -1;
    return 0;
}

/* ------------------------------------------------------------------ type methods */

static void free_tree(Node *t)
{
    /* iterative via the hash table would also work; the tree walk needs no extra memory */
    if (t == NULL) return;
    free_tree(t->left);
    free_tree(t->right);
    PyMem_Free(t);
}

static int Selector_init(SelectorObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"seed", NULL};
    unsigned long seed = 0x2545F491UL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|k", kwlist, &seed)) return -1;
    free_tree(self->root);
    self->root = NULL;
    self->count = 0;
    PyMem_Free(self->table);
    self->capacity = 16;
    self->table = (Node **)PyMem_Calloc(self->capacity, sizeof(Node *));
    if (self->table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->rng = (uint32_t)seed ? (uint32_t)seed : 0x2545F491U; /* xorshift needs a non-zero state */
    return 0;
}

static void Selector_dealloc(SelectorObject *self)
{
    free_tree(self->root);
    self->root = NULL;
    PyMem_Free(self->table);
    self->table = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Selector_insert(SelectorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t item, k0, k1, seq, value;
    if (parse_entry(args, nargs, &item, &k0, &k1, &seq, &value, "insert") < 0) return NULL;
    if (table_get(self, item) != NULL) {
        PyErr_Format(PyExc_ValueError, "item %llu already present", (unsigned long long)item);
        return NULL;
    }
    if (table_grow_if_needed(self) < 0) return NULL;
    Node *n = (Node *)PyMem_Malloc(sizeof(Node));
    if (n == NULL) return PyErr_NoMemory();
    n->k0 = k0;
    n->k1 = k1;
    n->seq = seq;
    n->item = item;
    n->value = value;
    n->sum = value;
    n->prio = next_prio(self);
    n->left = n->right = NULL;
    self->root = treap_insert(self->root, n);
    table_put_raw(self->table, self->capacity, n);
    self->count++;
    Py_RETURN_NONE;
}

static PyObject *Selector_update(SelectorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t item, k0, k1, seq, value;
    if (parse_entry(args, nargs, &item, &k0, &k1, &seq, &value, "update") < 0) return NULL;
    Node *n = table_get(self, item);
    if (n == NULL) {
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    self->root = treap_erase(self->root, n);
    n->k0 = k0;
    n->k1 = k1;
    n->seq = seq;
    n->value = value;
    n->sum = value;
    n->left = n->right = NULL;
    self->root = treap_insert(self->root, n);
    Py_RETURN_NONE;
}

static PyObject *Selector_remove(SelectorObject *self, PyObject *arg)
{
    uint64_t item;
    if (get_u64(arg, &item, "item") < 0) return NULL;
    Py_ssize_t slot = table_find_slot(self, item);
    if (slot < 0) {
        PyErr_SetObject(PyExc_KeyError, arg);
        return NULL;
    }
    Node *n = self->table[slot];
    self->root = treap_erase(self->root, n);
    table_delete_slot(self, (size_t)slot);
    self->count--;
    PyMem_Free(n);
    Py_RETURN_NONE;
}

static PyObject *Selector_clear(SelectorObject *self, PyObject *Py_UNUSED(ignored))
{
    free_tree(self->root);
    self->root = NULL;
    self->count = 0;
    memset(self->table, 0, self->capacity * sizeof(Node *));
    Py_RETURN_NONE;
}

/* In-order walk appending up to `limit` items; returns -1 on error. */
static int collect(Node *t, PyObject *list, Py_ssize_t limit)
{
    while (t != NULL) {
        if (collect(t->left, list, limit) < 0) return -1;
        if (PyList_GET_SIZE(list) >= limit) return 0;
        PyObject *v = PyLong_FromUnsignedLongLong(t->item);
        if (v == NULL) return -1;
        int rc = PyList_Append(list, v);
        Py_DECREF(v);
        if (rc < 0) return -1;
        if (PyList_GET_SIZE(list) >= limit) return 0;
        t = t->right; /* tail position: loop instead of recursing */
    }
    return 0;
}

static PyObject *Selector_first(SelectorObject *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    if (n > 0 && collect(self->root, list, n) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static PyObject *Selector_ordered(SelectorObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    if (collect(self->root, list, self->count) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static PyObject *Selector_total_value(SelectorObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(sum_of(self->root));
}

static PyObject *Selector_find_by_value(SelectorObject *self, PyObject *arg)
{
    uint64_t v;
    if (get_u64(arg, &v, "value") < 0) return NULL;
    if (v >= sum_of(self->root)) {
        PyErr_SetString(PyExc_ValueError, "value must be below total_value()");
        return NULL;
    }
    Node *t = self->root;
    while (t != NULL) {
        uint64_t ls = sum_of(t->left);
        if (v < ls) {
            t = t->left;
        } else if (v < ls + t->value) {
            return PyLong_FromUnsignedLongLong(t->item);
        } else {
            v -= ls + t->value;
            t = t->right;
        }
    }
    PyErr_SetString(PyExc_RuntimeError, "selector value sums are inconsistent");
    return NULL;
}

static PyObject *Selector_key(SelectorObject *self, PyObject *arg)
{
    uint64_t item;
    if (get_u64(arg, &item, "item") < 0) return NULL;
    Node *n = table_get(self, item);
    if (n == NULL) {
        PyErr_SetObject(PyExc_KeyError, arg);
        return NULL;
    }
    return Py_BuildValue("(KKKK)", (unsigned long long)n->k0, (unsigned long long)n->k1,
                         (unsigned long long)n->seq, (unsigned long long)n->value);
}

static Py_ssize_t Selector_len(SelectorObject *self) { return self->count; }

static int Selector_contains(SelectorObject *self, PyObject *arg)
{
    if (!PyLong_Check(arg)) return 0;
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
    .tp_doc = "Ordered selection structure (treap keyed by (k0, k1, seq, item) with value sums).",
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
    "_selector",
    "C implementation of the RSerPool pool-element selection structure.",
    -1,
    NULL,
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
