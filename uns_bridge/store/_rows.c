/*
 * Native loop of the store writer's hot path (uns_bridge.store._rows): samples -> uns.sample rows.
 *
 * sample_rows(samples, start, metric_ids, current, out, good) walks samples[start:] and, for each plain
 * sample, does what StoreWriter._python_rows does for it: the row
 *
 *   (time µs since 2000, metric id, vhash, kind, quality 0, is_historical, v_int, v_float, None x 5)
 *
 * appended to ``out``, and the newest row per metric id kept in ``current``. Plain means: the metric
 * already has an id in ``metric_ids``; the timestamp is an int whose time fits 64-bit microseconds;
 * the quality is ``good``; is_historical is True or False; the value is a float, or an int (not a
 * bool) that fits 64 bits signed. At the first sample that is not plain it stops and returns that
 * sample's index, so the Python loop handles exactly that one (learning a metric, a dead letter for a
 * time out of range, any other value kind) and calls back for the rest; it returns len(samples) when
 * done. The Python loop stays the definition: tests/test_store_rows.py checks both give the same rows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PG_EPOCH_MS 946684800000LL /* 2000-01-01 in ms since 1970 */
#define ROW_COLUMNS 13
enum { K_INT = 1, K_FLOAT = 3 }; /* uns_bridge.store.values kinds */

static PyObject *kind_int, *kind_float, *quality_good;

/* time in µs since 2000 for ms since 1970; 0 when it does not fit 64 bits (Python words that) */
static int pg_time(PyObject *timestamp, long long *out)
{
    int overflow;
    long long ms = PyLong_AsLongLongAndOverflow(timestamp, &overflow);
    if (overflow || (ms == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    long long since;
    return !__builtin_sub_overflow(ms, PG_EPOCH_MS, &since) && !__builtin_mul_overflow(since, 1000LL, out);
}

/* The row of a plain sample, a new reference; NULL without an error set when the sample is not plain. */
static PyObject *row_of(PyObject *sample, PyObject *ids, PyObject *good, long long *t, PyObject **mid)
{
    if (!PyTuple_Check(sample) || PyTuple_GET_SIZE(sample) != 5)
        return NULL;
    PyObject *info = PyTuple_GET_ITEM(sample, 0), *timestamp = PyTuple_GET_ITEM(sample, 1),
             *value = PyTuple_GET_ITEM(sample, 2), *quality = PyTuple_GET_ITEM(sample, 3),
             *historical = PyTuple_GET_ITEM(sample, 4);
    if (quality != good || (historical != Py_True && historical != Py_False) || !PyLong_CheckExact(timestamp))
        return NULL;
    *mid = PyDict_GetItemWithError(ids, info); /* borrowed; MetricInfo hashes by identity */
    if (*mid == NULL || !pg_time(timestamp, t))
        return NULL;
    PyObject *vhash, *kind, *v_int = Py_None, *v_float = Py_None;
    if (PyFloat_CheckExact(value)) {
        double d = PyFloat_AS_DOUBLE(value);
        long long bits;
        memcpy(&bits, &d, sizeof bits); /* the double's bit pattern as a signed 64-bit integer */
        vhash = PyLong_FromLongLong(bits);
        kind = kind_float;
        v_float = value;
    } else if (PyLong_CheckExact(value)) {
        int overflow;
        (void)PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow)
            return NULL;
        vhash = Py_NewRef(value);
        kind = kind_int;
        v_int = value;
    } else {
        return NULL;
    }
    PyObject *pg = PyLong_FromLongLong(*t);
    PyObject *row = PyTuple_New(ROW_COLUMNS);
    if (vhash == NULL || pg == NULL || row == NULL) {
        Py_XDECREF(vhash);
        Py_XDECREF(pg);
        Py_XDECREF(row);
        return NULL; /* MemoryError set */
    }
    PyObject *cells[ROW_COLUMNS] = {pg, Py_NewRef(*mid), vhash, Py_NewRef(kind), Py_NewRef(quality_good),
                                    Py_NewRef(historical), Py_NewRef(v_int), Py_NewRef(v_float)};
    for (int c = 8; c < ROW_COLUMNS; c++)
        cells[c] = Py_NewRef(Py_None);
    for (int c = 0; c < ROW_COLUMNS; c++)
        PyTuple_SET_ITEM(row, c, cells[c]);
    /* only ints, floats, bools and None: the row can be in no reference cycle, so the collector need not
     * look at it (it would untrack it at its first young collection anyway, ~150 ns a row here) */
    PyObject_GC_UnTrack(row);
    return row;
}

/* current[mid] = row, for history only when it is not older than what current holds; 0 on error */
static int keep_current(PyObject *current, PyObject *mid, PyObject *row, long long t, int historical)
{
    if (historical) {
        PyObject *old = PyDict_GetItemWithError(current, mid);
        if (old == NULL && PyErr_Occurred())
            return 0;
        if (old != NULL && PyTuple_Check(old) && PyTuple_GET_SIZE(old) > 0) {
            long long old_t = PyLong_AsLongLong(PyTuple_GET_ITEM(old, 0));
            if (old_t == -1 && PyErr_Occurred())
                return 0;
            if (old_t > t)
                return 1;
        }
    }
    return PyDict_SetItem(current, mid, row) == 0;
}

static PyObject *sample_rows(PyObject *self, PyObject *args)
{
    PyObject *samples, *ids, *current, *out, *good;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!nO!O!O!O:sample_rows", &PyTuple_Type, &samples, &start, &PyDict_Type, &ids,
                          &PyDict_Type, &current, &PyList_Type, &out, &good))
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(samples);
    Py_ssize_t i = start < 0 ? 0 : start;
    for (; i < count; i++) {
        PyObject *sample = PyTuple_GET_ITEM(samples, i);
        long long t;
        PyObject *mid;
        PyObject *row = row_of(sample, ids, good, &t, &mid);
        if (row == NULL) {
            if (PyErr_Occurred())
                return NULL;
            break; /* not plain: the Python loop takes this one */
        }
        int ok = PyList_Append(out, row) == 0 &&
                 keep_current(current, mid, row, t, PyTuple_GET_ITEM(sample, 4) == Py_True);
        Py_DECREF(row);
        if (!ok)
            return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static int is_atom(PyObject *o)
{
    return o == Py_None || PyBool_Check(o) || PyLong_CheckExact(o) || PyFloat_CheckExact(o) ||
           PyUnicode_CheckExact(o) || PyBytes_CheckExact(o);
}

/* current_rows(current) -> [(r[1], r[0], *r[3:]) for r in current.values()]: sample rows (keyed by metric
 * id) as uns.metric_current rows, the collector told not to track the ones holding atoms only. */
static PyObject *current_rows(PyObject *self, PyObject *current)
{
    if (!PyDict_Check(current)) {
        PyErr_SetString(PyExc_TypeError, "current_rows() takes a dict of sample rows");
        return NULL;
    }
    PyObject *out = PyList_New(PyDict_GET_SIZE(current));
    if (out == NULL)
        return NULL;
    Py_ssize_t pos = 0, n = 0;
    PyObject *key, *row;
    while (PyDict_Next(current, &pos, &key, &row)) {
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < 3) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "current_rows(): a value is not a sample row");
            return NULL;
        }
        Py_ssize_t width = PyTuple_GET_SIZE(row) - 1;
        PyObject *made = PyTuple_New(width);
        if (made == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        int atoms = 1;
        for (Py_ssize_t c = 0; c < width; c++) {
            PyObject *cell = PyTuple_GET_ITEM(row, c == 0 ? 1 : c == 1 ? 0 : c + 1);
            atoms = atoms && is_atom(cell);
            PyTuple_SET_ITEM(made, c, Py_NewRef(cell));
        }
        if (atoms)
            PyObject_GC_UnTrack(made);
        PyList_SET_ITEM(out, n++, made);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"sample_rows", sample_rows, METH_VARARGS,
     "sample_rows(samples, start, metric_ids, current, out, good) -> index of the first sample left to Python."},
    {"current_rows", current_rows, METH_O,
     "current_rows(current) -> the metric_current rows of a dict of sample rows, as StoreWriter._seal makes them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rows", "Native loop of the store writer's hot path: samples to sample rows.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__rows(void)
{
    kind_int = PyLong_FromLong(K_INT);
    kind_float = PyLong_FromLong(K_FLOAT);
    quality_good = PyLong_FromLong(0);
    if (kind_int == NULL || kind_float == NULL || quality_good == NULL)
        return NULL;
    return PyModule_Create(&module);
}
