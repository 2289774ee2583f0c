/*
 * Native fast path of the Sparkplug B decoder (uns_bridge.sparkplug._native).
 *
 * It reads the protobuf wire format of a payload directly and builds the codec's Payload and Metric
 * tuples for the common DATA message: metrics that carry an alias, a timestamp, optionally a datatype,
 * and one integer, float, double, boolean, string or bytes value. For anything else it returns None and the
 * Python decoder (uns_bridge.sparkplug.decode) gives the answer or the error:
 *
 *   - a field the subset does not read (name, flags, metadata, properties, strings, datasets,
 *     templates, extensions, unknown field numbers), or a known field with another wire type;
 *   - a field sent twice, a metric without a value, a payload uuid that is not valid UTF-8;
 *   - a string that is not valid UTF-8;
 *   - a typed value that needs more than a range check (arrays, a value out of range for its datatype,
 *     a value field the datatype cannot hold);
 *   - any truncated or over-long varint, length or fixed-width field.
 *
 * So this code never raises for bad input and never disagrees with the Python decoder: where it
 * answers, the answer is the Python decoder's (tests/test_sparkplug_native.py checks that).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyTypeObject *metric_type;  /* uns_bridge.sparkplug.values.Metric (a tuple subclass) */
static PyTypeObject *payload_type; /* uns_bridge.sparkplug.values.Payload */

#define FALLBACK 1 /* not in the subset: the Python decoder takes over */

/* field numbers of the schema (schemas/sparkplug_b.proto) */
enum { P_TIMESTAMP = 1, P_METRICS, P_SEQ, P_UUID, P_BODY };
enum { M_ALIAS = 2, M_TIMESTAMP, M_DATATYPE, M_INT = 10, M_LONG, M_FLOAT, M_DOUBLE, M_BOOLEAN, M_STRING,
       M_BYTES };
#define HAS(seen, field) (((seen) >> (field)) & 1u)

/* Sparkplug datatypes the subset decodes to typed values */
enum { DT_INT8 = 1, DT_INT16, DT_INT32, DT_INT64, DT_UINT8, DT_UINT16, DT_UINT32, DT_UINT64,
       DT_FLOAT, DT_DOUBLE, DT_BOOLEAN, DT_STRING, DT_DATETIME, DT_TEXT, DT_UUID, DT_BYTES = 17,
       DT_FILE };

/* which value field of the Metric oneof was read */
enum { V_NONE, V_INT, V_LONG, V_FLOAT, V_DOUBLE, V_BOOLEAN, V_STRING, V_BYTES };

/* wire types */
enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2, WT_FIXED32 = 5 };

/* A varint of at most 64 bits; 0 when truncated or longer. */
static inline int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    if (p < end && !(*p & 0x80)) { /* the common one-byte case */
        *out = *p;
        *pp = p + 1;
        return 1;
    }
    uint64_t value = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
        uint8_t byte = *p++;
        if (shift == 63 && byte > 1)
            return 0;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            *pp = p;
            return 1;
        }
    }
    return 0;
}

/* A field's tag split into number and wire type; 0 when truncated. */
static inline int read_tag(const uint8_t **pp, const uint8_t *end, uint64_t *field, unsigned *wire)
{
    uint64_t tag;
    if (!read_varint(pp, end, &tag))
        return 0;
    *field = tag >> 3;
    *wire = (unsigned)(tag & 7);
    return 1;
}

/* A length-delimited field's bytes; 0 when the length runs past the end. */
static inline int read_len(const uint8_t **pp, const uint8_t *end, const uint8_t **start, Py_ssize_t *size)
{
    uint64_t n;
    if (!read_varint(pp, end, &n) || n > (uint64_t)(end - *pp))
        return 0;
    *start = *pp;
    *size = (Py_ssize_t)n;
    *pp += n;
    return 1;
}

static inline uint64_t load_le(const uint8_t *p, int bytes)
{
    uint64_t value = 0;
    for (int i = bytes - 1; i >= 0; i--)
        value = (value << 8) | p[i];
    return value;
}

typedef struct {
    unsigned seen; /* bit per field number already read */
    uint64_t alias, timestamp, datatype;
    int kind;      /* V_* */
    uint64_t integer;
    double real;
    const uint8_t *bytes;
    Py_ssize_t bytes_size;
} metric_fields;

/* The fields of one metric message; FALLBACK when it is not in the subset. */
static int read_metric(const uint8_t *p, const uint8_t *end, metric_fields *m)
{
    memset(m, 0, sizeof *m);
    while (p < end) {
        uint64_t field;
        unsigned wire;
        if (!read_tag(&p, end, &field, &wire) || field > M_BYTES || HAS(m->seen, field))
            return FALLBACK; /* truncated, not read here, or sent twice */
        m->seen |= 1u << field;
        switch (field) {
        case M_ALIAS:
        case M_TIMESTAMP:
        case M_DATATYPE:
        case M_INT:
        case M_LONG:
        case M_BOOLEAN: {
            uint64_t value;
            if (wire != WT_VARINT || !read_varint(&p, end, &value))
                return FALLBACK;
            if (field == M_ALIAS)
                m->alias = value;
            else if (field == M_TIMESTAMP)
                m->timestamp = value;
            else if (field == M_DATATYPE)
                m->datatype = (uint32_t)value; /* a uint32 field keeps the low 32 bits */
            else {
                if (m->kind != V_NONE)
                    return FALLBACK;
                m->kind = field == M_INT ? V_INT : field == M_LONG ? V_LONG : V_BOOLEAN;
                m->integer = field == M_INT ? (uint32_t)value : field == M_LONG ? value : value != 0;
            }
            break;
        }
        case M_FLOAT:
            if (wire != WT_FIXED32 || end - p < 4 || m->kind != V_NONE)
                return FALLBACK;
            {
                uint32_t bits = (uint32_t)load_le(p, 4);
                float f;
                memcpy(&f, &bits, 4);
                m->real = (double)f;
            }
            m->kind = V_FLOAT;
            p += 4;
            break;
        case M_DOUBLE:
            if (wire != WT_FIXED64 || end - p < 8 || m->kind != V_NONE)
                return FALLBACK;
            {
                uint64_t bits = load_le(p, 8);
                memcpy(&m->real, &bits, 8);
            }
            m->kind = V_DOUBLE;
            p += 8;
            break;
        case M_STRING:
        case M_BYTES:
            if (wire != WT_LEN || m->kind != V_NONE || !read_len(&p, end, &m->bytes, &m->bytes_size))
                return FALLBACK;
            m->kind = field == M_STRING ? V_STRING : V_BYTES;
            break;
        default:
            return FALLBACK;
        }
    }
    return m->kind == V_NONE ? FALLBACK : 0;
}

/* A string field's text; NULL without an exception set when it is not valid UTF-8 (the Python decoder
 * says so). */
static PyObject *utf8_text(const uint8_t *start, Py_ssize_t size)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)start, size, NULL);
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        PyErr_Clear();
    return text;
}

/* The wire value of a metric without a datatype (resolve_metric applies the birth's later). */
static PyObject *wire_value(const metric_fields *m)
{
    switch (m->kind) {
    case V_INT:
    case V_LONG:
        return PyLong_FromUnsignedLongLong(m->integer);
    case V_FLOAT:
    case V_DOUBLE:
        return PyFloat_FromDouble(m->real);
    case V_BOOLEAN:
        return PyBool_FromLong((long)m->integer);
    case V_STRING:
        return utf8_text(m->bytes, m->bytes_size);
    default:
        return PyBytes_FromStringAndSize((const char *)m->bytes, m->bytes_size);
    }
}

/* A wire integer read as a signed value of `width` bits, whichever sender convention was used
 * (the width's two's complement, or a 32- or 64-bit sign extension); 0 when out of range. */
static int signed_value(uint64_t value, int width, int64_t *out)
{
    if (width == 64) {
        *out = (int64_t)value;
        return 1;
    }
    uint64_t span = (uint64_t)1 << width, half = span >> 1;
    if (value < span)
        *out = value >= half ? (int64_t)value - (int64_t)span : (int64_t)value;
    else if (value >= ((uint64_t)1 << 32) - half && value < ((uint64_t)1 << 32))
        *out = (int64_t)value - ((int64_t)1 << 32);
    else if (value >= (uint64_t)0 - half)
        *out = (int64_t)value;
    else
        return 0;
    return 1;
}

/* The typed value of a metric with a datatype; NULL without an exception set when the subset does not
 * cover it (the Python decoder converts it or says why it cannot be). */
static PyObject *typed_value(const metric_fields *m)
{
    int integer = m->kind == V_INT || m->kind == V_LONG;
    switch (m->datatype) {
    case DT_INT8:
    case DT_INT16:
    case DT_INT32:
    case DT_INT64: {
        int64_t value;
        if (!integer || !signed_value(m->integer, 8 << (m->datatype - DT_INT8), &value))
            return NULL;
        return PyLong_FromLongLong(value);
    }
    case DT_UINT8:
    case DT_UINT16:
    case DT_UINT32: {
        int width = 8 << (m->datatype - DT_UINT8);
        if (!integer || m->integer >> width)
            return NULL;
        return PyLong_FromUnsignedLongLong(m->integer);
    }
    case DT_UINT64:
    case DT_DATETIME:
        return integer ? PyLong_FromUnsignedLongLong(m->integer) : NULL;
    case DT_FLOAT:
    case DT_DOUBLE:
        return m->kind == V_FLOAT || m->kind == V_DOUBLE ? PyFloat_FromDouble(m->real) : NULL;
    case DT_BOOLEAN:
        return m->kind == V_BOOLEAN ? PyBool_FromLong((long)m->integer) : NULL;
    case DT_STRING:
    case DT_TEXT:
    case DT_UUID:
        return m->kind == V_STRING ? utf8_text(m->bytes, m->bytes_size) : NULL;
    case DT_BYTES:
    case DT_FILE:
        return m->kind == V_BYTES ? PyBytes_FromStringAndSize((const char *)m->bytes, m->bytes_size) : NULL;
    default:
        return NULL;
    }
}

static PyObject *new_record(PyTypeObject *type, Py_ssize_t size)
{
    return type->tp_alloc(type, size);
}

/* Stores `item` (a new reference, or NULL on failure) as field `index` of a record just allocated;
 * -1 when it is NULL, so a chain of put() || put() stops at the first failure. Deallocating the record
 * releases what was stored. */
static inline int put(PyObject *record, Py_ssize_t index, PyObject *item)
{
    if (item == NULL)
        return -1;
    PyTuple_SET_ITEM(record, index, item);
    return 0;
}

static inline PyObject *optional_u64(int present, uint64_t value)
{
    if (present)
        return PyLong_FromUnsignedLongLong(value);
    Py_RETURN_NONE;
}

/* The Metric tuple of one metric message; NULL with no exception set for FALLBACK. */
static PyObject *decode_metric(const uint8_t *p, const uint8_t *end)
{
    metric_fields m;
    if (read_metric(p, end, &m) == FALLBACK)
        return NULL;
    int typed = HAS(m.seen, M_DATATYPE);
    PyObject *value = typed ? typed_value(&m) : wire_value(&m);
    if (value == NULL)
        return NULL;
    PyObject *metric = new_record(metric_type, 10);
    if (metric == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(metric, 4, value);
    if (put(metric, 1, optional_u64(HAS(m.seen, M_ALIAS), m.alias)) ||
        put(metric, 2, optional_u64(HAS(m.seen, M_TIMESTAMP), m.timestamp)) ||
        put(metric, 3, optional_u64(typed, m.datatype))) {
        Py_DECREF(metric);
        return NULL;
    }
    PyTuple_SET_ITEM(metric, 0, Py_NewRef(Py_None)); /* name */
    PyTuple_SET_ITEM(metric, 5, Py_NewRef(Py_False)); /* is_historical */
    PyTuple_SET_ITEM(metric, 6, Py_NewRef(Py_False)); /* is_transient */
    PyTuple_SET_ITEM(metric, 7, Py_NewRef(Py_False)); /* is_null */
    PyTuple_SET_ITEM(metric, 8, Py_NewRef(Py_None));  /* metadata */
    PyTuple_SET_ITEM(metric, 9, Py_NewRef(Py_None));  /* properties */
    return metric;
}

/* decode(data: bytes) -> Payload | None */
static PyObject *decode(PyObject *module, PyObject *arg)
{
    if (metric_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "uns_bridge.sparkplug._native.setup() was not called");
        return NULL;
    }
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "decode() takes bytes");
        return NULL;
    }
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(arg);
    const uint8_t *end = p + PyBytes_GET_SIZE(arg);
    unsigned seen = 0;
    uint64_t timestamp = 0, seq = 0;
    const uint8_t *uuid = NULL, *body = NULL;
    Py_ssize_t uuid_size = 0, body_size = 0;
    PyObject *metrics = PyList_New(0);
    if (metrics == NULL)
        return NULL;
    while (p < end) {
        uint64_t field;
        unsigned wire;
        if (!read_tag(&p, end, &field, &wire))
            goto fallback;
        if (field == P_METRICS) {
            const uint8_t *start;
            Py_ssize_t size;
            if (wire != WT_LEN || !read_len(&p, end, &start, &size))
                goto fallback;
            PyObject *metric = decode_metric(start, start + size);
            if (metric == NULL)
                goto fallback;
            int failed = PyList_Append(metrics, metric);
            Py_DECREF(metric);
            if (failed)
                goto error;
            continue;
        }
        if (field < P_TIMESTAMP || field > P_BODY || HAS(seen, field))
            goto fallback; /* extensions, unknown fields, a field sent twice */
        seen |= 1u << field;
        if (field == P_TIMESTAMP || field == P_SEQ) {
            if (wire != WT_VARINT || !read_varint(&p, end, field == P_TIMESTAMP ? &timestamp : &seq))
                goto fallback;
        } else if (wire != WT_LEN || !read_len(&p, end, field == P_UUID ? &uuid : &body,
                                               field == P_UUID ? &uuid_size : &body_size)) {
            goto fallback;
        }
    }
    PyObject *payload = new_record(payload_type, 5);
    if (payload == NULL)
        goto error;
    int failed = put(payload, 1, PyList_AsTuple(metrics)) ||
                 put(payload, 0, optional_u64(HAS(seen, P_TIMESTAMP), timestamp)) ||
                 put(payload, 2, optional_u64(HAS(seen, P_SEQ), seq)) ||
                 put(payload, 3, uuid ? utf8_text(uuid, uuid_size) : Py_NewRef(Py_None)) ||
                 put(payload, 4, body ? PyBytes_FromStringAndSize((const char *)body, body_size)
                                      : Py_NewRef(Py_None));
    Py_DECREF(metrics);
    if (failed) {
        Py_DECREF(payload);
        if (PyErr_Occurred())
            return NULL; /* memory */
        Py_RETURN_NONE;  /* the uuid is not UTF-8: the Python decoder names the field */
    }
    return payload;

fallback:
    Py_DECREF(metrics);
    if (PyErr_Occurred())
        return NULL; /* memory */
    Py_RETURN_NONE;
error:
    Py_DECREF(metrics);
    return NULL;
}

static int plain_tuple_subclass(PyObject *type)
{
    return PyType_Check(type) && PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type) &&
           ((PyTypeObject *)type)->tp_basicsize == PyTuple_Type.tp_basicsize &&
           ((PyTypeObject *)type)->tp_itemsize == PyTuple_Type.tp_itemsize;
}

/* setup(Metric, Payload): the record types decode() builds */
static PyObject *setup(PyObject *module, PyObject *args)
{
    PyObject *metric, *payload;
    if (!PyArg_ParseTuple(args, "OO:setup", &metric, &payload))
        return NULL;
    if (!plain_tuple_subclass(metric) || !plain_tuple_subclass(payload)) {
        PyErr_SetString(PyExc_TypeError, "setup() takes two tuple subclasses without instance dictionaries");
        return NULL;
    }
    Py_XSETREF(metric_type, (PyTypeObject *)Py_NewRef(metric));
    Py_XSETREF(payload_type, (PyTypeObject *)Py_NewRef(payload));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_O,
     "decode(data: bytes) -> Payload | None\n\nThe payload when it is a DATA payload of plain metrics, "
     "else None (the Python decoder handles it)."},
    {"setup", setup, METH_VARARGS, "setup(Metric, Payload): the record types decode() builds."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "Native fast path of the Sparkplug B decoder.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}
