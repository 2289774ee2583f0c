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

/* A row's encoded tuple in the buffer and its sort key: rows are encoded in list order (the Python
 * objects are read where they lie in memory) and their tuples copied out in key order afterwards. */
typedef struct {
    size_t start;
    size_t length;
} Chunk;

/* Memory kept from one call to the next (calls hold the GIL, so one at a time): a batch's buffers are
 * reused by the next instead of being mapped afresh, whose page faults cost more than the sorting. A
 * block above KEPT_MAX is given back after the call. */
typedef struct {
    void *data;
    size_t size;
} Kept;

#define KEPT_MAX ((size_t)16 << 20)

static void *kept(Kept *block, size_t need)
{
    if (need == 0)
        need = 1; /* never NULL for an empty batch */
    if (need > block->size) {
        void *grown = PyMem_Realloc(block->data, need);
        if (grown == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        block->data = grown;
        block->size = need;
    }
    return block->data;
}

static void trim(Kept *block)
{
    if (block->size > KEPT_MAX) {
        PyMem_Free(block->data);
        block->data = NULL;
        block->size = 0;
    }
}

static Kept kept_chunks, kept_keys, kept_scratch, kept_buffer;

typedef struct {
    uint64_t key; /* the signed key with its sign bit flipped: unsigned order is signed order */
    Py_ssize_t row;
} Key;

/* Stable LSD radix sort of keys by key, a byte per pass (passes where every key has the same byte are
 * skipped); 0 with MemoryError set when it cannot get its scratch array. */
static int radix_sort(Key *keys, Py_ssize_t count)
{
    Key *scratch = kept(&kept_scratch, sizeof(Key) * (size_t)count);
    if (scratch == NULL)
        return 0;
    Key *from = keys, *to = scratch;
    for (int shift = 0; shift < 64; shift += 8) {
        size_t counts[256] = {0};
        for (Py_ssize_t i = 0; i < count; i++)
            counts[(from[i].key >> shift) & 0xFF]++;
        if (count == 0 || counts[(from[0].key >> shift) & 0xFF] == (size_t)count)
            continue;
        size_t offset = 0;
        for (int b = 0; b < 256; b++) {
            size_t n = counts[b];
            counts[b] = offset;
            offset += n;
        }
        for (Py_ssize_t i = 0; i < count; i++)
            to[counts[(from[i].key >> shift) & 0xFF]++] = from[i];
        Key *swap = from;
        from = to;
        to = swap;
    }
    if (from != keys)
        memcpy(keys, from, sizeof(Key) * (size_t)count);
    return 1;
}

static const char SIGNATURE[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};

/* The rows' tuples into b (after the header); with chunks, each tuple's place and key too. */
static int encode_rows(Buffer *b, PyObject *rows, const char *kinds, Py_ssize_t columns, Py_ssize_t order_by,
                       Chunk *chunks, Key *keys)
{
    Py_ssize_t count = PyList_GET_SIZE(rows);
    int status = OK;
    for (Py_ssize_t r = 0; r < count && status == OK; r++) {
        /* the list may not change under us: nothing here calls back into Python code */
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != columns)
            return DECLINE;
        if (chunks != NULL) {
            long long key;
            if ((status = int_cell(PyTuple_GET_ITEM(row, order_by), INT64_MIN, INT64_MAX, &key)) != OK)
                return status;
            keys[r].key = (uint64_t)key ^ (UINT64_C(1) << 63);
            keys[r].row = r;
            chunks[r].start = b->used;
        }
        if (!reserve(b, 2))
            return FAILED;
        put_u16(b, (uint16_t)columns);
        for (Py_ssize_t c = 0; c < columns && status == OK; c++)
            status = put_cell(b, kinds[c], PyTuple_GET_ITEM(row, c));
        if (chunks != NULL)
            chunks[r].length = b->used - chunks[r].start;
    }
    return status;
}

#define HEADER_SIZE 19 /* signature, flags, header extension length */

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
    Py_ssize_t count = PyList_GET_SIZE(rows);
    Chunk *chunks = NULL;
    Key *keys = NULL;
    if (order_by >= 0) {
        chunks = kept(&kept_chunks, sizeof(Chunk) * (size_t)count);
        keys = chunks == NULL ? NULL : kept(&kept_keys, sizeof(Key) * (size_t)count);
        if (keys == NULL)
            return NULL;
    }
    Buffer b = {kept_buffer.data, 0, kept_buffer.size};
    PyObject *result = NULL;
    /* a typical row (a float sample) takes 2 + 13 * 4 + 3 * 8 + 2 * 2 + 1 bytes: start near that */
    int status = reserve(&b, HEADER_SIZE + 2 + (size_t)count * (2 + (size_t)columns * 7)) ? OK : FAILED;
    if (status == OK) {
        memcpy(b.data, SIGNATURE, sizeof SIGNATURE);
        b.used = sizeof SIGNATURE;
        put_u32(&b, 0); /* flags */
        put_u32(&b, 0); /* header extension length */
        status = encode_rows(&b, rows, kinds, columns, order_by, chunks, keys);
    }
    if (status == OK && !reserve(&b, 2))
        status = FAILED;
    if (status == OK) {
        put_u16(&b, UINT16_MAX); /* trailer: -1 */
        if (chunks == NULL) {
            result = PyBytes_FromStringAndSize(b.data, (Py_ssize_t)b.used);
        } else if (radix_sort(keys, count) && (result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)b.used))) {
            char *out = PyBytes_AS_STRING(result);
            memcpy(out, b.data, HEADER_SIZE);
            size_t used = HEADER_SIZE;
            for (Py_ssize_t r = 0; r < count; r++) {
                const Chunk *chunk = &chunks[keys[r].row];
                memcpy(out + used, b.data + chunk->start, chunk->length);
                used += chunk->length;
            }
            memcpy(out + used, b.data + b.used - 2, 2);
        }
    } else if (status == DECLINE) {
        result = Py_NewRef(Py_None);
    }
    kept_buffer.data = b.data; /* reserve() may have moved it */
    kept_buffer.size = b.size;
    trim(&kept_buffer);
    trim(&kept_chunks);
    trim(&kept_keys);
    trim(&kept_scratch);
    return result;
}

/* int_range(rows, column) -> (lowest, highest) of an int column, or None (no rows, or a cell that is no
 * int fitting 64 bits): the writer's partition check, one pass in C instead of three in Python. */
static PyObject *int_range(PyObject *self, PyObject *args)
{
    PyObject *rows;
    Py_ssize_t column;
    if (!PyArg_ParseTuple(args, "O!n:int_range", &PyList_Type, &rows, &column))
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(rows);
    if (count == 0 || column < 0)
        Py_RETURN_NONE;
    long long lo = INT64_MAX, hi = INT64_MIN;
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        long long v;
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) <= column)
            Py_RETURN_NONE;
        int status = int_cell(PyTuple_GET_ITEM(row, column), INT64_MIN, INT64_MAX, &v);
        if (status == FAILED)
            return NULL;
        if (status == DECLINE)
            Py_RETURN_NONE;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    return Py_BuildValue("LL", lo, hi);
}

static PyMethodDef methods[] = {
    {"int_range", int_range, METH_VARARGS, "int_range(rows, column) -> (lowest, highest) | None."},
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
