/*
 * Native loop of the UNS sink's hot path (uns_bridge.uns._coalesce): live samples into the pending set.
 *
 * coalesce(samples, start, last, topics, pending, seq, limit) walks samples[start:] and does for each
 * sample what UnsSink._samples does: history (is_historical True) is skipped; a live sample becomes
 * its metric's last value (``last[info]``) and replaces whatever is pending for its topic
 * (``pending[topic] = (sample, seq)``). It stops, before touching anything for it, at the first sample
 * whose topic is not in the ``topics`` cache yet, whose topic is new while ``pending`` already holds
 * ``limit`` topics, or whose is_historical is not True or False: UnsSink._samples, the definition, does
 * that one (asking the placer, waiting for room) and calls back for the rest.
 * Returns (index reached, live values taken, values that replaced a pending one).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *coalesce(PyObject *self, PyObject *args)
{
    PyObject *samples, *last, *topics, *pending, *seq;
    Py_ssize_t start, limit;
    if (!PyArg_ParseTuple(args, "O!nO!O!O!On:coalesce", &PyTuple_Type, &samples, &start, &PyDict_Type, &last,
                          &PyDict_Type, &topics, &PyDict_Type, &pending, &seq, &limit))
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(samples), values = 0, coalesced = 0;
    Py_ssize_t i = start < 0 ? 0 : start;
    for (; i < count; i++) {
        PyObject *sample = PyTuple_GET_ITEM(samples, i);
        if (!PyTuple_Check(sample) || PyTuple_GET_SIZE(sample) != 5)
            break;
        PyObject *historical = PyTuple_GET_ITEM(sample, 4);
        if (historical == Py_True)
            continue; /* the database's business only */
        if (historical != Py_False)
            break;
        PyObject *info = PyTuple_GET_ITEM(sample, 0);
        PyObject *topic = PyDict_GetItemWithError(topics, info); /* borrowed; identity-hashed */
        if (topic == NULL) {
            if (PyErr_Occurred())
                return NULL;
            break; /* the placer's answer is not cached yet */
        }
        int known = PyDict_Contains(pending, topic);
        if (known < 0)
            return NULL;
        if (!known && PyDict_GET_SIZE(pending) >= limit)
            break; /* full: Python waits for room (or drops while the broker is away) */
        Py_INCREF(topic); /* the dict writes below may not drop the cache's reference under us */
        PyObject *entry = PyTuple_Pack(2, sample, seq);
        if (entry != NULL && !PyObject_GC_IsTracked(sample) && !PyObject_GC_IsTracked(seq))
            PyObject_GC_UnTrack(entry); /* an untracked sample and an int or None: no cycle through it */
        int failed = entry == NULL || PyDict_SetItem(last, info, sample) < 0 ||
                     PyDict_SetItem(pending, topic, entry) < 0;
        Py_XDECREF(entry);
        Py_DECREF(topic);
        if (failed)
            return NULL;
        values++;
        coalesced += known;
    }
    return Py_BuildValue("nnn", i, values, coalesced);
}

static PyMethodDef methods[] = {
    {"coalesce", coalesce, METH_VARARGS,
     "coalesce(samples, start, last, topics, pending, seq, limit) -> (index reached, values, coalesced)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_coalesce", "Native loop of the UNS sink's hot path: live samples to pending topics.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__coalesce(void) { return PyModule_Create(&module); }
