/*
 * spark_ml.core.features._featkernel: SymbolState.update of core/features/fast.py in C, the same numbers bit for bit.
 *
 * The stream folds every snapshot into its symbol's indicators; in Python that was the largest single
 * cost of the hot path (about 2.7 us of 12 per message). This is the Python method transcribed
 * statement by statement: the same operations in the same order on IEEE doubles, compiled without
 * floating-point contraction (-ffp-contract=off, see setup.py), so every result is identical, and the
 * same exceptions at the same points (ValueError for a log of a non-positive number, ZeroDivisionError
 * where Python divides by zero). tests/core/test_featkernel.py holds it to the Python class on real
 * prices and on arbitrary hypothesis series, including extremes. spark_ml.core.features falls back to the
 * Python class when this module is not built.
 *
 * No I/O, no global state beyond interned attribute names and the out-of-order error factory that
 * spark_ml.core.features registers (so the exception is spark_ml.core.errors.InvalidInput, built in Python).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define W 20
#define NLOGS 5
#define SLOW 26
#define NFEAT 11

static const double BP = 1e4;
static const double BB_K = 2.0;
#define A_RSI (1.0 / 14.0)
#define A_FAST (2.0 / (12 + 1.0))
#define A_SLOW (2.0 / (26 + 1.0))
#define A_SIGNAL (2.0 / (9 + 1.0))

static PyObject *s_ts, *s_mid, *s_rsi14, *s_spread_bp, *s_vol1m;
static PyObject *out_of_order_factory = NULL; /* callable(snap, last_ts) -> exception instance */

/* A rolling window of W values whose sums are kept relative to a reference value and recomputed once per
   turn of the ring, as spark_ml.core.features.indicators.RollingWindow does. */
typedef struct {
    double vals[W];
    int i;
    double ref, s, sq;
} Window;

typedef struct {
    PyObject_HEAD
    double logs[NLOGS];
    int nlogs;
    Window rets; /* returns after the first snapshot */
    Window mids; /* Bollinger bands */
    double up, dn, last, fast, slow, signal;
    long long last_ts;
    long long n;
} State;

static PyTypeObject StateType;

/* Python's builtin sum() over floats: plain left-to-right addition up to 3.11, Neumaier-compensated from
   3.12 on. Rolling sums are recomputed with it once per turn of a window, so it must be matched. */
static double py_sum(const double *v, int k, double shift, int squares) {
    double f = 0.0;
#if PY_VERSION_HEX >= 0x030C0000
    double c = 0.0;
    for (int j = 0; j < k; j++) {
        double x = v[j] - shift;
        if (squares) x = x * x;
        double t = f + x;
        if (fabs(f) >= fabs(x)) c += (f - t) + x;
        else c += (x - t) + f;
        f = t;
    }
    if (c && isfinite(c)) f += c;
#else
    for (int j = 0; j < k; j++) {
        double x = v[j] - shift;
        if (squares) x = x * x;
        f += x;
    }
#endif
    return f;
}

/* sum(vals) with no shift: v - 0.0 is v for every double but -0.0, and 0.0 + -0.0 is 0.0 either way. */
static double py_sum_plain(const double *v, int k) {
    double f = 0.0;
#if PY_VERSION_HEX >= 0x030C0000
    double c = 0.0;
    for (int j = 0; j < k; j++) {
        double x = v[j];
        double t = f + x;
        if (fabs(f) >= fabs(x)) c += (f - t) + x;
        else c += (x - t) + f;
        f = t;
    }
    if (c && isfinite(c)) f += c;
#else
    for (int j = 0; j < k; j++) f += v[j];
#endif
    return f;
}

/* Push v into a window that already took `before` values (the Python code spells this out twice, with
   before = n - 1 for returns and n for mids). */
static void window_push(Window *w, long long before, double v) {
    double ref;
    if (before == 0) ref = w->ref = v;
    else ref = w->ref;
    double s = w->s, sq = w->sq;
    int i = w->i;
    if (before >= W) {
        double old = w->vals[i] - ref;
        s -= old;
        sq -= old * old;
    }
    w->vals[i] = v;
    double d = v - ref;
    s += d;
    sq += d * d;
    i += 1;
    if (i == W) {
        i = 0;
        if (before + 1 >= W) {
            ref = w->ref = py_sum_plain(w->vals, W) / W;
            s = py_sum(w->vals, W, ref, 0);
            sq = py_sum(w->vals, W, ref, 1);
        }
    }
    w->i = i;
    w->s = s;
    w->sq = sq;
}

/* Python's max(x, 0.0): x unless 0.0 > x (so NaN and -0.0 pass through). */
static inline double py_max0(double x) { return (0.0 > x) ? 0.0 : x; }

static int zero_division(void) {
    PyErr_SetString(PyExc_ZeroDivisionError, "float division by zero");
    return -1;
}

static int domain_error(void) {
    PyErr_SetString(PyExc_ValueError, "math domain error");
    return -1;
}

/* A float attribute of the snapshot; *is_none set when it is None (optional fields). */
static int get_double(PyObject *snap, PyObject *name, double *out, int *is_none) {
    PyObject *v = PyObject_GetAttr(snap, name);
    if (v == NULL) return -1;
    if (v == Py_None) {
        Py_DECREF(v);
        if (is_none == NULL) {
            PyErr_Format(PyExc_TypeError, "snapshot %U is None", name);
            return -1;
        }
        *is_none = 1;
        *out = 0.0;
        return 0;
    }
    if (is_none) *is_none = 0;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    if (*out == -1.0 && PyErr_Occurred()) return -1;
    return 0;
}

/* Python truthiness of an optional float field: None, 0.0 and -0.0 are false. */
static inline int truthy(double v, int is_none) { return !is_none && v != 0.0; }

/* Folds the snapshot into the state and writes its feature vector to out. Returns 0, or -1 with an exception
   set; the state may then be half-updated, which state_update_impl undoes. */
static int state_fold(State *self, PyObject *snap, double *out) {
    PyObject *ts_obj = PyObject_GetAttr(snap, s_ts);
    if (ts_obj == NULL) return -1;
    int overflow = 0;
    long long ts = PyLong_AsLongLongAndOverflow(ts_obj, &overflow);
    if (ts == -1 && PyErr_Occurred()) {
        Py_DECREF(ts_obj);
        return -1;
    }
    if (overflow) {
        Py_DECREF(ts_obj);
        PyErr_SetString(PyExc_ValueError, "ts does not fit in 64 bits");
        return -1;
    }
    if (ts < self->last_ts) {
        PyObject *last = PyLong_FromLongLong(self->last_ts);
        PyObject *exc = NULL;
        if (last != NULL && out_of_order_factory != NULL)
            exc = PyObject_CallFunctionObjArgs(out_of_order_factory, snap, last, NULL);
        Py_XDECREF(last);
        Py_DECREF(ts_obj);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        } else if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "out-of-order factory not configured");
        }
        return -1;
    }
    Py_DECREF(ts_obj);

    double mid, rsi14, spread, vol1m;
    int rsi_none, spread_none, vol_none;
    if (get_double(snap, s_mid, &mid, NULL) < 0) return -1;
    if (get_double(snap, s_rsi14, &rsi14, &rsi_none) < 0) return -1;
    if (get_double(snap, s_spread_bp, &spread, &spread_none) < 0) return -1;
    if (get_double(snap, s_vol1m, &vol1m, &vol_none) < 0) return -1;

    long long n = self->n;
    if (isnan(mid)) {
        /* math.log(nan) is nan */
    } else if (mid <= 0.0) {
        domain_error();
        return -1;
    }
    double log_mid = log(mid);
    double ret_1, ret_5, vol, rsi, fast, slow;
    if (n) {
        double *logs = self->logs;
        ret_1 = (log_mid - logs[self->nlogs - 1]) * BP;
        ret_5 = (self->nlogs == NLOGS) ? (log_mid - logs[0]) * BP : 0.0;
        if (self->nlogs == NLOGS) {
            memmove(logs, logs + 1, (NLOGS - 1) * sizeof(double));
            logs[NLOGS - 1] = log_mid;
        } else {
            logs[self->nlogs++] = log_mid;
        }
        /* Rolling std of returns: the window holds the returns after the first snapshot (count = n). */
        window_push(&self->rets, n - 1, ret_1);
        long long k = n < W ? n : W;
        if (k < 2) {
            vol = 0.0;
        } else {
            double m = self->rets.s / (double)k;
            vol = sqrt(py_max0(self->rets.sq / (double)k - m * m));
        }
        /* Wilder RSI: both averages start at 0 (the first bar is a zero change). */
        double change = mid - self->last;
        double up = self->up, dn = self->dn;
        up += A_RSI * ((change > 0.0 ? change : 0.0) - up);
        dn += A_RSI * ((change < 0.0 ? -change : 0.0) - dn);
        self->up = up;
        self->dn = dn;
        if (dn == 0.0) {
            rsi = up > 0.0 ? 100.0 : 50.0;
        } else {
            double q = 1.0 + up / dn;
            if (q == 0.0) {
                zero_division();
                return -1;
            }
            rsi = 100.0 - 100.0 / q;
        }
        fast = self->fast;
        fast += A_FAST * (mid - fast);
        slow = self->slow;
        slow += A_SLOW * (mid - slow);
        self->fast = fast;
        self->slow = slow;
    } else {
        ret_1 = ret_5 = vol = 0.0;
        self->logs[self->nlogs++] = log_mid;
        rsi = 50.0;
        self->fast = self->slow = fast = slow = mid;
    }
    self->last = mid;
    if (!rsi_none) rsi = rsi14;
    long long count = n + 1;
    double macd, signal, hist;
    if (count < SLOW) {
        macd = signal = hist = 0.0;
    } else {
        macd = fast - slow;
        if (count == SLOW) {
            signal = self->signal = macd;
        } else {
            signal = self->signal;
            signal += A_SIGNAL * (macd - signal);
            self->signal = signal;
        }
        hist = macd - signal;
    }
    /* Bollinger bands over the last W mids. */
    window_push(&self->mids, n, mid);
    double ref = self->mids.ref, s = self->mids.s, sq = self->mids.sq;
    double pctb = 0.5, width = 0.0;
    if (count >= W) {
        double mean = ref + s / W;
        double m = s / W;
        double half = BB_K * sqrt(py_max0(sq / W - m * m));
        if (!(half <= 0.0)) { /* as in Python: a NaN half goes on to NaN features */
            pctb = (mid - (mean - half)) / (2.0 * half);
            if (mean == 0.0) {
                zero_division();
                return -1;
            }
            width = 2.0 * half / mean;
        }
    }
    self->last_ts = ts;
    self->n = count;
    double scale = BP / mid;
    double log_vol = 0.0;
    if (truthy(vol1m, vol_none)) {
        if (!isnan(vol1m) && vol1m <= -1.0) {
            domain_error();
            return -1;
        }
        log_vol = log1p(vol1m);
    }
    const double row[NFEAT] = {
        ret_1, ret_5, vol, rsi, macd * scale, signal * scale, hist * scale,
        pctb, width * BP, truthy(spread, spread_none) ? spread : 0.0, log_vol,
    };
    memcpy(out, row, sizeof(row));
    return 0;
}

/* A snapshot that is refused (an error, or a feature that is not finite) leaves the state as it was: an extreme
   price folded into the windows would otherwise poison the next W..SLOW snapshots of the symbol. */
static PyObject *state_update_impl(State *self, PyObject *snap) {
    const size_t head = sizeof(PyObject), size = sizeof(State) - sizeof(PyObject);
    State saved;
    memcpy((char *)&saved + head, (char *)self + head, size);
    double out[NFEAT];
    int bad = state_fold(self, snap, out) < 0;
    for (int j = 0; !bad && j < NFEAT; j++) {
        if (!isfinite(out[j])) {
            PyErr_SetString(PyExc_FloatingPointError, "features are not finite");
            bad = 1;
        }
    }
    if (bad) {
        memcpy((char *)self + head, (char *)&saved + head, size);
        return NULL;
    }
    PyObject *list = PyList_New(NFEAT);
    if (list == NULL) return NULL;
    for (int j = 0; j < NFEAT; j++) {
        PyObject *f = PyFloat_FromDouble(out[j]);
        if (f == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, j, f);
    }
    return list;
}

static PyObject *state_update(PyObject *self, PyObject *snap) { return state_update_impl((State *)self, snap); }

static PyObject *state_clone_impl(State *self) {
    State *copy = (State *)StateType.tp_alloc(&StateType, 0);
    if (copy == NULL) return NULL;
    /* Everything after the object header is plain data. */
    memcpy((char *)copy + sizeof(PyObject), (char *)self + sizeof(PyObject), sizeof(State) - sizeof(PyObject));
    return (PyObject *)copy;
}

static PyObject *state_clone(PyObject *self, PyObject *Py_UNUSED(ignored)) { return state_clone_impl((State *)self); }

static PyObject *state_peek(PyObject *self, PyObject *snap) {
    State *copy = (State *)state_clone_impl((State *)self);
    if (copy == NULL) return NULL;
    PyObject *row = state_update_impl(copy, snap);
    Py_DECREF(copy);
    return row;
}

/* ---- The portable layout (spark_ml.core.features.layout): a tuple the Python twin writes and reads too. ---- */

#define NFIELDS 19
#define INT64_LIMIT 9223372036854775807LL

static PyObject *floats_tuple(const double *v, int k) {
    PyObject *t = PyTuple_New(k);
    if (t == NULL) return NULL;
    for (int j = 0; j < k; j++) {
        PyObject *f = PyFloat_FromDouble(v[j]);
        if (f == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, j, f);
    }
    return t;
}

static PyObject *state_to_state(PyObject *op, PyObject *Py_UNUSED(ignored)) {
    State *self = (State *)op;
    const Window *r = &self->rets, *b = &self->mids;
    PyObject *logs = floats_tuple(self->logs, self->nlogs);
    PyObject *rv = logs ? floats_tuple(r->vals, W) : NULL;
    PyObject *bv = rv ? floats_tuple(b->vals, W) : NULL;
    if (bv == NULL) {
        Py_XDECREF(logs);
        Py_XDECREF(rv);
        return NULL;
    }
    /* N steals the three tuples, even when building fails. */
    return Py_BuildValue("(NNidddNidddddddddLL)", logs, rv, r->i, r->ref, r->s, r->sq, bv, b->i, b->ref, b->s, b->sq,
                         self->up, self->dn, self->last, self->fast, self->slow, self->signal, self->last_ts, self->n);
}

static int bad_state(const char *name, const char *what) {
    PyErr_Format(PyExc_ValueError, "feature state: %s %s", name, what);
    return -1;
}

/* A number of the layout: a float or an int (never a bool), as a double. */
static int read_double(PyObject *o, const char *name, double *out) {
    if (PyBool_Check(o) || !(PyFloat_Check(o) || PyLong_Check(o))) return bad_state(name, "is not a number");
    *out = PyFloat_AsDouble(o);
    if (*out == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return bad_state(name, "is out of range");
    }
    return 0;
}

static int read_ll(PyObject *o, const char *name, long long low, long long *out) {
    if (PyBool_Check(o) || !PyLong_Check(o)) return bad_state(name, "is not an integer");
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (*out == -1 && PyErr_Occurred()) return -1;
    if (overflow || *out < low) return bad_state(name, "is out of range");
    return 0;
}

/* A list or tuple of numbers; its length in *k, which must equal `want` unless want < 0 (then at most NLOGS). */
static int read_doubles(PyObject *o, const char *name, double *out, int want, int *k) {
    if (!PyTuple_Check(o) && !PyList_Check(o)) return bad_state(name, "is not a sequence");
    Py_ssize_t len = PySequence_Fast_GET_SIZE(o);
    if ((want >= 0 && len != want) || (want < 0 && len > NLOGS)) return bad_state(name, "has the wrong length");
    PyObject **items = PySequence_Fast_ITEMS(o);
    for (Py_ssize_t j = 0; j < len; j++)
        if (read_double(items[j], name, &out[j]) < 0) return -1;
    *k = (int)len;
    return 0;
}

static int read_window(PyObject **f, const char *name, Window *w) {
    int k;
    long long i;
    if (read_doubles(f[0], name, w->vals, W, &k) < 0) return -1;
    if (read_ll(f[1], name, 0, &i) < 0) return -1;
    if (i >= W) return bad_state(name, "slot is out of range");
    w->i = (int)i;
    if (read_double(f[2], name, &w->ref) < 0 || read_double(f[3], name, &w->s) < 0) return -1;
    return read_double(f[4], name, &w->sq);
}

/* The checks of spark_ml.core.features.layout.check_state: a state this accepts updates as the writer's would. */
static PyObject *state_from_state(PyObject *cls, PyObject *arg) {
    if ((!PyTuple_Check(arg) && !PyList_Check(arg)) || PySequence_Fast_GET_SIZE(arg) != NFIELDS) {
        PyErr_SetString(PyExc_ValueError, "feature state: not a sequence of 19 fields");
        return NULL;
    }
    /* Hold the sequence: reading a list's items calls no Python code, but keep it alive regardless. */
    Py_INCREF(arg);
    PyObject **f = PySequence_Fast_ITEMS(arg);
    State st;
    memset(&st, 0, sizeof(st));
    long long n, last_ts;
    int nlogs = 0;
    int ok = read_ll(f[18], "n", 0, &n) == 0 && read_ll(f[17], "last_ts", -INT64_LIMIT - 1, &last_ts) == 0 &&
             read_doubles(f[0], "logs", st.logs, -1, &nlogs) == 0;
    if (ok && nlogs != (n < NLOGS ? n : NLOGS)) ok = bad_state("logs", "do not match n") == 0;
    ok = ok && read_window(f + 1, "r_vals", &st.rets) == 0 && read_window(f + 6, "b_vals", &st.mids) == 0;
    if (ok && (st.rets.i != (n > 0 ? n - 1 : 0) % W || st.mids.i != n % W))
        ok = bad_state("window slots", "do not match n") == 0;
    double *scalars[] = {&st.up, &st.dn, &st.last, &st.fast, &st.slow, &st.signal};
    static const char *names[] = {"up", "dn", "last", "fast", "slow", "signal"};
    for (int j = 0; ok && j < 6; j++) ok = read_double(f[11 + j], names[j], scalars[j]) == 0;
    Py_DECREF(arg);
    if (!ok) return NULL;
    State *self = (State *)StateType.tp_alloc(&StateType, 0);
    if (self == NULL) return NULL;
    memcpy((char *)self + sizeof(PyObject), (char *)&st + sizeof(PyObject), sizeof(State) - sizeof(PyObject));
    self->nlogs = nlogs;
    self->last_ts = last_ts;
    self->n = n;
    (void)cls;
    return (PyObject *)self;
}

static PyObject *state_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "SymbolState() takes no arguments");
        return NULL;
    }
    State *self = (State *)type->tp_alloc(type, 0); /* zeroed: every sum, average and index starts at 0 */
    if (self == NULL) return NULL;
    self->last_ts = -1;
    return (PyObject *)self;
}

static PyObject *get_last_ts(PyObject *self, void *Py_UNUSED(c)) { return PyLong_FromLongLong(((State *)self)->last_ts); }
static PyObject *get_n(PyObject *self, void *Py_UNUSED(c)) { return PyLong_FromLongLong(((State *)self)->n); }

static PyGetSetDef state_getset[] = {
    {"last_ts", get_last_ts, NULL, "ts of the last snapshot folded in (-1 before the first)", NULL},
    {"n", get_n, NULL, "number of snapshots folded in", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef state_methods[] = {
    {"update", state_update, METH_O, "Fold the next snapshot into the state and return its feature vector."},
    {"peek", state_peek, METH_O, "The vector update would return, leaving this state untouched."},
    {"clone", state_clone, METH_NOARGS, "An independent copy."},
    {"to_state", state_to_state, METH_NOARGS, "The state in the portable layout (spark_ml.core.features.layout)."},
    {"from_state", state_from_state, METH_O | METH_CLASS, "A state from the portable layout; ValueError if not one."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spark_ml.core.features._featkernel.SymbolState",
    .tp_doc = "Streaming indicator state of one symbol (C twin of spark_ml.core.features.SymbolState).",
    .tp_basicsize = sizeof(State),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = state_new,
    .tp_methods = state_methods,
    .tp_getset = state_getset,
};

static PyObject *set_out_of_order(PyObject *Py_UNUSED(module), PyObject *factory) {
    if (!PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError, "factory must be callable");
        return NULL;
    }
    Py_INCREF(factory);
    Py_XSETREF(out_of_order_factory, factory);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_out_of_order", set_out_of_order, METH_O, "Register factory(snap, last_ts) -> exception for stale ts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "spark_ml.core.features._featkernel", "C kernel of spark_ml.core.features.SymbolState.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__featkernel(void) {
    s_ts = PyUnicode_InternFromString("ts");
    s_mid = PyUnicode_InternFromString("mid");
    s_rsi14 = PyUnicode_InternFromString("rsi14");
    s_spread_bp = PyUnicode_InternFromString("spread_bp");
    s_vol1m = PyUnicode_InternFromString("vol1m");
    if (!s_ts || !s_mid || !s_rsi14 || !s_spread_bp || !s_vol1m) return NULL;
    if (PyType_Ready(&StateType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    Py_INCREF(&StateType);
    if (PyModule_AddObject(m, "SymbolState", (PyObject *)&StateType) < 0) {
        Py_DECREF(&StateType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
