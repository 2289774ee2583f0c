/*
 * Native loop of the host's hot path (uns_bridge.host._plain): DATA metrics -> Samples.
 *
 * plain_samples(metrics, start, aliases, device, fallback, historical, out, rules) walks metrics[start:]
 * and, for each plain metric, does what the metric loop of Host._process does for it: the Sample
 *
 *   (info, fallback if timestamp is None else timestamp, None if is_null else value, GOOD,
 *    historical or is_historical)
 *
 * appended to ``out`` (nothing for a transient metric). Plain means: no name, an alias that
 * ``aliases`` knows for this ``device``; a datatype that is absent or the born one; no properties;
 * is_historical, is_transient and is_null True or False; a value that is None, or an int, float, bool,
 * str or bytes which, when the datatype is absent, already is the born type's value (an int below the
 * born integer type's bound, or exactly the born type's Python type) or a signed type's negative value
 * in one of the two sender conventions (converted as uns_bridge.sparkplug.coerce.signed does). At the first metric that is not
 * plain it stops and returns its index: Host._process then handles that one (unknown aliases, names,
 * coercions, mismatches, templates, properties) and calls back for the rest. It returns len(metrics)
 * when done. The Python loop stays the definition: tests/test_host_plain.py checks both agree.
 *
 * ``rules`` is (Sample type, GOOD quality, int bound per datatype, Python type per datatype, signed
 * width per datatype), the host's and the codec's own tables, so the two loops cannot drift apart.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *str_device, *str_datatype;

static int is_bool(PyObject *o) { return o == Py_True || o == Py_False; }

/* A signed born type's negative value as either sender convention put it on the wire (the width's two's
 * complement, or a 32- or 64-bit sign extension), as uns_bridge.sparkplug.coerce.signed reads it: 1 with
 * *typed set, 0 when the value is none of these (Python words the error), -1 on error. */
static int signed_value(PyObject *value, PyObject *born, PyObject *signed_width, PyObject **typed)
{
    PyObject *width_obj = PyDict_GetItemWithError(signed_width, born);
    if (width_obj == NULL)
        return PyErr_Occurred() ? -1 : 0;
    long width = PyLong_AsLong(width_obj);
    if (width < 2 || width > 64)
        return PyErr_Occurred() ? -1 : 0;
    unsigned long long raw = PyLong_AsUnsignedLongLong(value); /* >= 2^64 or negative: not a wire value */
    if (raw == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    unsigned long long half = 1ULL << (width - 1);
    long long result;
    if (width == 64 || raw < (1ULL << width)) /* in the width: its two's complement (raw >= half here) */
        result = width == 64 ? (long long)raw : (long long)raw - (long long)(1ULL << width);
    else if (raw >= (1ULL << 32) - half && raw < (1ULL << 32))
        result = (long long)raw - (long long)(1ULL << 32);
    else if (raw >= 0ULL - half) /* 2^64 - half <= raw */
        result = (long long)raw; /* raw - 2^64 */
    else
        return 0;
    *typed = PyLong_FromLongLong(result);
    return *typed == NULL ? -1 : 1;
}

/* The typed value of an untyped wire value under the born type, a new reference in *typed: 1 done, 0
 * not plain (Python coerces or words the error), -1 on error. */
static int typed_value(PyObject *value, PyObject *born, PyObject *rules, PyObject **typed)
{
    PyObject *int_bound = PyTuple_GET_ITEM(rules, 2), *pass_type = PyTuple_GET_ITEM(rules, 3);
    PyObject *bound = PyDict_GetItemWithError(int_bound, born);
    if (bound != NULL) {
        if (!PyLong_CheckExact(value))
            return 0;
        int below = PyObject_RichCompareBool(value, bound, Py_LT);
        if (below != 0) {
            if (below > 0)
                *typed = Py_NewRef(value);
            return below;
        }
        return signed_value(value, born, PyTuple_GET_ITEM(rules, 4), typed);
    }
    if (PyErr_Occurred())
        return -1;
    PyObject *type = PyDict_GetItemWithError(pass_type, born);
    if (type == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if ((PyObject *)Py_TYPE(value) != type)
        return 0;
    *typed = Py_NewRef(value);
    return 1;
}

/* The Sample of a plain metric in *sample (NULL for a transient one); 1 done, 0 not plain, -1 error */
static int sample_of(PyObject *metric, PyObject *aliases, PyObject *device, PyObject *fallback,
                     PyObject *historical, PyObject *rules, PyObject **sample)
{
    *sample = NULL;
    if (!PyTuple_Check(metric) || PyTuple_GET_SIZE(metric) != 10)
        return 0;
    PyObject *name = PyTuple_GET_ITEM(metric, 0), *alias = PyTuple_GET_ITEM(metric, 1),
             *timestamp = PyTuple_GET_ITEM(metric, 2), *datatype = PyTuple_GET_ITEM(metric, 3),
             *value = PyTuple_GET_ITEM(metric, 4), *is_historical = PyTuple_GET_ITEM(metric, 5),
             *is_transient = PyTuple_GET_ITEM(metric, 6), *is_null = PyTuple_GET_ITEM(metric, 7),
             *props = PyTuple_GET_ITEM(metric, 9);
    if (name != Py_None || alias == Py_None || props != Py_None || !is_bool(is_historical) ||
        !is_bool(is_transient) || !is_bool(is_null))
        return 0;
    if (value != Py_None && !PyLong_CheckExact(value) && !PyFloat_CheckExact(value) && !PyBool_Check(value) &&
        !PyUnicode_CheckExact(value) && !PyBytes_CheckExact(value))
        return 0;
    PyObject *info = PyDict_GetItemWithError(aliases, alias); /* borrowed */
    if (info == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *info_device = PyObject_GetAttr(info, str_device);
    if (info_device == NULL)
        return -1;
    int other = PyObject_RichCompareBool(info_device, device, Py_NE);
    Py_DECREF(info_device);
    if (other != 0)
        return other < 0 ? -1 : 0;
    PyObject *born = PyObject_GetAttr(info, str_datatype);
    if (born == NULL)
        return -1;
    int ok;
    PyObject *typed = NULL;
    if (datatype == Py_None && value != Py_None) {
        ok = typed_value(value, born, rules, &typed);
    } else {
        ok = datatype == Py_None ? 1 : PyObject_RichCompareBool(datatype, born, Py_EQ);
        if (ok > 0)
            typed = Py_NewRef(value);
    }
    Py_DECREF(born);
    if (ok <= 0)
        return ok;
    if (is_transient == Py_True) {
        Py_DECREF(typed);
        return 1; /* checked, not stored */
    }
    PyTypeObject *sample_type = (PyTypeObject *)PyTuple_GET_ITEM(rules, 0);
    PyObject *made = sample_type->tp_alloc(sample_type, 5);
    if (made == NULL) {
        Py_DECREF(typed);
        return -1;
    }
    if (is_null == Py_True)
        Py_SETREF(typed, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(made, 0, Py_NewRef(info));
    PyTuple_SET_ITEM(made, 1, Py_NewRef(timestamp == Py_None ? fallback : timestamp));
    PyTuple_SET_ITEM(made, 2, typed);
    PyTuple_SET_ITEM(made, 3, Py_NewRef(PyTuple_GET_ITEM(rules, 1)));
    PyTuple_SET_ITEM(made, 4, Py_NewRef(historical == Py_True ? historical : is_historical));
    /* a metric's info and atoms (None, bool, int, float, str, bytes): no reference cycle can pass through
     * the sample, so the cyclic collector need not track it. Samples live on as the UNS sink's last and
     * pending values; tracked, each young collection walked them and promoted them to older ones. */
    PyObject_GC_UnTrack(made);
    *sample = made;
    return 1;
}

static PyObject *plain_samples(PyObject *self, PyObject *args)
{
    PyObject *metrics, *aliases, *device, *fallback, *historical, *out, *rules;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!nO!OOOO!O!:plain_samples", &PyTuple_Type, &metrics, &start, &PyDict_Type,
                          &aliases, &device, &fallback, &historical, &PyList_Type, &out, &PyTuple_Type, &rules))
        return NULL;
    if (PyTuple_GET_SIZE(rules) != 5 || !PyType_Check(PyTuple_GET_ITEM(rules, 0)) ||
        !PyType_IsSubtype((PyTypeObject *)PyTuple_GET_ITEM(rules, 0), &PyTuple_Type) ||
        !PyDict_Check(PyTuple_GET_ITEM(rules, 2)) || !PyDict_Check(PyTuple_GET_ITEM(rules, 3)) ||
        !PyDict_Check(PyTuple_GET_ITEM(rules, 4))) {
        PyErr_SetString(PyExc_TypeError,
                        "rules is (Sample type, GOOD, int bounds, pass types, signed widths), the dicts by datatype");
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(metrics);
    Py_ssize_t i = start < 0 ? 0 : start;
    for (; i < count; i++) {
        PyObject *sample;
        int status = sample_of(PyTuple_GET_ITEM(metrics, i), aliases, device, fallback, historical, rules, &sample);
        if (status < 0)
            return NULL;
        if (status == 0)
            break; /* not plain: Host._process takes this one */
        if (sample != NULL) {
            int appended = PyList_Append(out, sample);
            Py_DECREF(sample);
            if (appended < 0)
                return NULL;
        }
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"plain_samples", plain_samples, METH_VARARGS,
     "plain_samples(metrics, start, aliases, device, fallback, historical, out, rules) -> index of the first "
     "metric left to Host._process."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_plain", "Native loop of the host's hot path: plain DATA metrics to Samples.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__plain(void)
{
    str_device = PyUnicode_InternFromString("device");
    str_datatype = PyUnicode_InternFromString("datatype");
    if (str_device == NULL || str_datatype == NULL)
        return NULL;
    return PyModule_Create(&module);
}
