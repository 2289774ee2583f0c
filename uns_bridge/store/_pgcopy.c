/*
 * PostgreSQL binary COPY encoder for the store's rows (uns_bridge.store._pgcopy).
 *
 * encode(rows, kinds) turns a list of equal-length tuples into one COPY ... FROM STDIN (FORMAT binary)
 * stream: the signature and header, one tuple per row, the trailer. ``kinds`` names each column's type,
 * one ASCII letter per column:
 *
 *   T  timestamptz   int, microseconds since 2000-01-01 UTC (the server's binary form)
 *   q  bigint        int that fits 64 bits signed
 *   h  smallint      int that fits 16 bits signed
 *   ?  boolean       True / False
 *   d  double        float
 *   t  text          str (UTF-8)
 *   y  bytea         bytes
 *   j  jsonb         str holding the JSON text
 *   D  double[]      list or tuple of floats (one dimension, no NULL elements)
 *
 * With ``order_by`` (a column index) the rows go into the stream stably sorted by that column, which
 * must hold an int that fits 64 bits in every row (else None): the list itself is left as it is.
 *
 * None is NULL in every column. A row or cell outside this (another type, a value out of range, a str
 * that cannot be UTF-8, a row of the wrong length) makes encode return None without raising: the caller
 * then hands the rows to asyncpg's own encoder, which stores them or words the error. So this module
 * only ever answers for rows asyncpg would encode to the same bytes; it raises only MemoryError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FLOAT8_OID 701

typedef struct {
    char *data;
    size_t used;
    size_t size;
} Buffer;

/* Room for n more bytes; 0 (MemoryError set) when it cannot grow. */
static int reserve(Buffer *b, size_t n)
{
    if (b->used + n <= b->size)
        return 1;
    size_t size = b->size ? b->size : 4096;
    while (size < b->used + n) {
        if (size > ((size_t)PY_SSIZE_T_MAX) / 2) {
            PyErr_NoMemory();
            return 0;
        }
        size *= 2;
    }
    char *grown = PyMem_Realloc(b->data, size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    b->data = grown;
    b->size = size;
    return 1;
}

/* The put_* helpers write big-endian (network order) values into reserved room. */
static inline void put_u16(Buffer *b, uint16_t v)
{
    unsigned char *p = (unsigned char *)b->data + b->used;
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    b->used += 2;
}

static inline void put_u32(Buffer *b, uint32_t v)
{
    unsigned char *p = (unsigned char *)b->data + b->used;
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    b->used += 4;
}

static inline void put_u64(Buffer *b, uint64_t v)
{
    put_u32(b, (uint32_t)(v >> 32));
    put_u32(b, (uint32_t)v);
}

static inline uint64_t double_bits(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return bits;
}

enum { OK = 0, DECLINE = 1, FAILED = -1 }; /* FAILED: a Python exception is set */

/* A length-prefixed byte field. */
static int put_bytes(Buffer *b, const char *data, Py_ssize_t len, int jsonb)
{
    if (len > INT32_MAX - 1)
        return DECLINE;
    if (!reserve(b, 5 + (size_t)len))
        return FAILED;
    put_u32(b, (uint32_t)(len + jsonb));
    if (jsonb)
        b->data[b->used++] = 1; /* jsonb binary format version */
    memcpy(b->data + b->used, data, (size_t)len);
    b->used += (size_t)len;
    return OK;
}

static int put_text(Buffer *b, PyObject *cell, int jsonb)
{
    if (!PyUnicode_CheckExact(cell))
        return DECLINE;
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(cell, &len);
    if (utf8 == NULL) { /* lone surrogates: asyncpg's encoder says what is wrong */
        if (PyErr_ExceptionMatches(PyExc_MemoryError))
            return FAILED;
        PyErr_Clear();
        return DECLINE;
    }
    return put_bytes(b, utf8, len, jsonb);
}

static int put_float_array(Buffer *b, PyObject *cell)
{
    if (!PyList_CheckExact(cell) && !PyTuple_CheckExact(cell))
        return DECLINE;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(cell);
    PyObject **items = PySequence_Fast_ITEMS(cell);
    if (n > (INT32_MAX - 20) / 12)
        return DECLINE;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyFloat_CheckExact(items[i]))
            return DECLINE;
    /* an empty array has no dimensions; otherwise one dimension of n elements, lower bound 1 */
    size_t body = n ? 20 + 12 * (size_t)n : 12;
    if (!reserve(b, 4 + body))
        return FAILED;
    put_u32(b, (uint32_t)body);
    put_u32(b, n ? 1 : 0); /* dimensions */
    put_u32(b, 0);         /* no NULL elements */
    put_u32(b, FLOAT8_OID);
    if (n) {
        put_u32(b, (uint32_t)n);
        put_u32(b, 1);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        put_u32(b, 8);
        put_u64(b, double_bits(PyFloat_AS_DOUBLE(items[i])));
    }
    return OK;
}

/* An int column's value, or DECLINE for a non-int (bool included) or a value out of [lo, hi]. */
static int int_cell(PyObject *cell, long long lo, long long hi, long long *out)
{
    if (!PyLong_Check(cell) || PyBool_Check(cell))
        return DECLINE;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(cell, &overflow);
    if (v == -1 && PyErr_Occurred())
        return FAILED;
    if (overflow || v < lo || v > hi)
        return DECLINE;
    *out = v;
    return OK;
}

static int put_cell(Buffer *b, char kind, PyObject *cell)
{
    long long v;
    int status;
    if (cell == Py_None) {
        if (!reserve(b, 4))
            return FAILED;
        put_u32(b, UINT32_MAX); /* -1: NULL */
        return OK;
    }
    switch (kind) {
    case 'T':
    case 'q':
        if ((status = int_cell(cell, INT64_MIN, INT64_MAX, &v)) != OK)
            return status;
        if (!reserve(b, 12))
            return FAILED;
        put_u32(b, 8);
        put_u64(b, (uint64_t)v);
        return OK;
    case 'h':
        if ((status = int_cell(cell, INT16_MIN, INT16_MAX, &v)) != OK)
            return status;
        if (!reserve(b, 6))
            return FAILED;
        put_u32(b, 2);
        put_u16(b, (uint16_t)v);
        return OK;
    case '?':
        if (cell != Py_True && cell != Py_False)
            return DECLINE;
        if (!reserve(b, 5))
            return FAILED;
        put_u32(b, 1);
        b->data[b->used++] = cell == Py_True;
        return OK;
    case 'd':
        if (!PyFloat_CheckExact(cell))
            return DECLINE;
        if (!reserve(b, 12))
            return FAILED;
        put_u32(b, 8);
        put_u64(b, double_bits(PyFloat_AS_DOUBLE(cell)));
        return OK;
    case 't':
        return put_text(b, cell, 0);
    case 'j':
        return put_text(b, cell, 1);
    case 'y':
        if (!PyBytes_CheckExact(cell))
            return DECLINE;
        return put_bytes(b, PyBytes_AS_STRING(cell), PyBytes_GET_SIZE(cell), 0);
    case 'D':
        return put_float_array(b, cell);
    default:
        return DECLINE;
    }
}

/* a row's place in the stream: stable order by an integer column */
typedef struct {
    long long key;
    Py_ssize_t index;
} Place;

static int by_key(const void *a, const void *b)
{
    const Place *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* The rows' order by column ``column`` (an int in every row), a PyMem block; NULL with *status DECLINE
 * (a row without such a key) or FAILED (MemoryError). */
static Place *order_of(PyObject *rows, Py_ssize_t count, Py_ssize_t column, Py_ssize_t columns, int *status)
{
    Place *places = PyMem_Malloc(sizeof(Place) * (size_t)(count ? count : 1));
    if (places == NULL) {
        PyErr_NoMemory();
        *status = FAILED;
        return NULL;
    }
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != columns) {
            *status = DECLINE;
            break;
        }
        *status = int_cell(PyTuple_GET_ITEM(row, column), INT64_MIN, INT64_MAX, &places[r].key);
        if (*status != OK)
            break;
        places[r].index = r;
    }
    if (*status != OK) {
        PyMem_Free(places);
        return NULL;
    }
    qsort(places, (size_t)count, sizeof(Place), by_key);
    return places;
}

static const char SIGNATURE[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};

static PyObject *encode(PyObject *self, PyObject *args)
{
    PyObject *rows;
    const char *kinds;
    Py_ssize_t columns, order_by = -1;
    if (!PyArg_ParseTuple(args, "O!y#|n:encode", &PyList_Type, &rows, &kinds, &columns, &order_by))
        return NULL;
    if (columns < 1 || columns > INT16_MAX) {
        PyErr_SetString(PyExc_ValueError, "kinds names 1 to 32767 columns");
        return NULL;
    }
    if (order_by < -1 || order_by >= columns) {
        PyErr_SetString(PyExc_ValueError, "order_by is a column index (or -1: the rows' own order)");
        return NULL;
    }
    for (Py_ssize_t c = 0; c < columns; c++)
        if (kinds[c] == '\0' || strchr("Tqh?dtyjD", kinds[c]) == NULL)
            return PyErr_Format(PyExc_ValueError, "unknown column kind %c (one of T q h ? d t y j D)", kinds[c]);
    Buffer b = {NULL, 0, 0};
    Py_ssize_t count = PyList_GET_SIZE(rows);
    int status = OK;
    Place *order = order_by < 0 ? NULL : order_of(rows, count, order_by, columns, &status);
    if (status != OK)
        return status == DECLINE ? Py_NewRef(Py_None) : NULL;
    /* a typical row (a float sample) takes 2 + 13 * 4 + 3 * 8 + 2 * 2 + 1 bytes: start near that */
    if (!reserve(&b, 21 + (size_t)count * (2 + (size_t)columns * 7))) {
        PyMem_Free(order);
        return NULL;
    }
    memcpy(b.data, SIGNATURE, sizeof SIGNATURE);
    b.used = sizeof SIGNATURE;
    put_u32(&b, 0); /* flags */
    put_u32(&b, 0); /* header extension length */
    for (Py_ssize_t r = 0; r < count && status == OK; r++) {
        /* the list may not change under us: nothing here calls back into Python code */
        PyObject *row = PyList_GET_ITEM(rows, order ? order[r].index : r);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != columns) {
            status = DECLINE;
            break;
        }
        if (!reserve(&b, 2)) {
            status = FAILED;
            break;
        }
        put_u16(&b, (uint16_t)columns);
        for (Py_ssize_t c = 0; c < columns && status == OK; c++)
            status = put_cell(&b, kinds[c], PyTuple_GET_ITEM(row, c));
    }
    if (status == OK && !reserve(&b, 2))
        status = FAILED;
    PyObject *result = NULL;
    if (status == OK) {
        put_u16(&b, UINT16_MAX); /* trailer: -1 */
        result = PyBytes_FromStringAndSize(b.data, (Py_ssize_t)b.used);
    } else if (status == DECLINE) {
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(b.data);
    PyMem_Free(order);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS,
     "encode(rows, kinds, order_by=-1) -> bytes | None: the binary COPY stream of rows (stably ordered by "
     "the int column order_by when given), or None for rows it leaves to asyncpg."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pgcopy", "PostgreSQL binary COPY encoder for the store's rows.", -1, methods,
};

PyMODINIT_FUNC PyInit__pgcopy(void)
{
    return PyModule_Create(&module);
}
