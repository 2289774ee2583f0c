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
 * born integer type's bound, or exactly the born type's Python type). At the first metric that is not
 * plain it stops and returns its index: Host._process then handles that one (unknown aliases, names,
 * coercions, mismatches, templates, properties) and calls back for the rest. It returns len(metrics)
 * when done. The Python loop stays the definition: tests/test_host_plain.py checks both agree.
 *
 * ``rules`` is (Sample type, GOOD quality, int bound per datatype, Python type per datatype), the
 * host's own tables, so the two loops cannot drift apart.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *str_device, *str_datatype;

static int is_bool(PyObject *o) { return o == Py_True || o == Py_False; }

/* 1 when the untyped wire value already is the born type's value, 0 when not, -1 on error */
static int passes(PyObject *value, PyObject *born, PyObject *int_bound, PyObject *pass_type)
{
    PyObject *bound = PyDict_GetItemWithError(int_bound, born);
    if (bound != NULL)
        return PyLong_CheckExact(value) ? PyObject_RichCompareBool(value, bound, Py_LT) : 0;
    if (PyErr_Occurred())
        return -1;
    PyObject *type = PyDict_GetItemWithError(pass_type, born);
    if (type == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return (PyObject *)Py_TYPE(value) == type;
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
    if (datatype == Py_None)
        ok = value == Py_None ? 1
                              : passes(value, born, PyTuple_GET_ITEM(rules, 2), PyTuple_GET_ITEM(rules, 3));
    else
        ok = PyObject_RichCompareBool(datatype, born, Py_EQ);
    Py_DECREF(born);
    if (ok <= 0)
        return ok;
    if (is_transient == Py_True)
        return 1; /* checked, not stored */
    PyTypeObject *sample_type = (PyTypeObject *)PyTuple_GET_ITEM(rules, 0);
    PyObject *made = sample_type->tp_alloc(sample_type, 5);
    if (made == NULL)
        return -1;
    PyTuple_SET_ITEM(made, 0, Py_NewRef(info));
    PyTuple_SET_ITEM(made, 1, Py_NewRef(timestamp == Py_None ? fallback : timestamp));
    PyTuple_SET_ITEM(made, 2, Py_NewRef(is_null == Py_True ? Py_None : value));
    PyTuple_SET_ITEM(made, 3, Py_NewRef(PyTuple_GET_ITEM(rules, 1)));
    PyTuple_SET_ITEM(made, 4, Py_NewRef(historical == Py_True ? historical : is_historical));
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
    if (PyTuple_GET_SIZE(rules) != 4 || !PyType_Check(PyTuple_GET_ITEM(rules, 0)) ||
        !PyType_IsSubtype((PyTypeObject *)PyTuple_GET_ITEM(rules, 0), &PyTuple_Type) ||
        !PyDict_Check(PyTuple_GET_ITEM(rules, 2)) || !PyDict_Check(PyTuple_GET_ITEM(rules, 3))) {
        PyErr_SetString(PyExc_TypeError, "rules is (Sample type, GOOD, int bounds dict, pass types dict)");
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
