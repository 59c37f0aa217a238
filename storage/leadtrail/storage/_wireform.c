/* The wire form of events and answers as plain bytes: the compiled twin of _wireform_py.py.
 *
 * Both twins write protobuf's canonical encoding (fields in number order, proto3 defaults
 * left out) with no message objects, byte for byte alike; _wireform_py.py documents each
 * function and the tests hold the two to the same bytes and the same exception types.
 *
 * Output goes to one growable buffer. A length-delimited piece reserves one byte for its
 * length, is written in place, and is moved up only in the rare case that its length needs
 * more than one byte, so nested messages are written in one pass.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define INLINE_CAPACITY 2048

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
    PyObject *bytes; /* past the inline buffer, the bytes object being filled (returned as is) */
    char inline_data[INLINE_CAPACITY]; /* small answers are built here, with no allocation */
} Buf;

static PyObject *mapping_type; /* collections.abc.Mapping */

static void buf_init(Buf *b) {
    b->data = b->inline_data;
    b->len = 0;
    b->cap = INLINE_CAPACITY;
    b->bytes = NULL;
}

static void buf_free(Buf *b) {
    Py_CLEAR(b->bytes);
    b->data = b->inline_data;
}

/* Moves the buffer to a bytes object of `cap` bytes (or resizes the one it is in). */
static int buf_move(Buf *b, Py_ssize_t cap) {
    if (b->bytes == NULL) {
        b->bytes = PyBytes_FromStringAndSize(NULL, cap);
        if (b->bytes == NULL) {
            return -1;
        }
        memcpy(PyBytes_AS_STRING(b->bytes), b->inline_data, (size_t)b->len);
    } else if (_PyBytes_Resize(&b->bytes, cap) < 0) {
        return -1; /* b->bytes is NULL: freed */
    }
    b->data = PyBytes_AS_STRING(b->bytes);
    b->cap = cap;
    return 0;
}

/* A buffer that will hold about `size` bytes: one allocation up front when it is large, so that
 * an answer of stored events is copied once, into the bytes object returned. */
static int buf_init_sized(Buf *b, Py_ssize_t size) {
    buf_init(b);
    return size > INLINE_CAPACITY ? buf_move(b, size) : 0;
}

static int buf_grow(Buf *b, Py_ssize_t extra) {
    Py_ssize_t cap = b->cap;
    if (extra > PY_SSIZE_T_MAX - b->len) {
        PyErr_NoMemory();
        return -1;
    }
    while (cap < b->len + extra) {
        cap = cap > PY_SSIZE_T_MAX / 2 ? b->len + extra : cap * 2;
    }
    return buf_move(b, cap);
}

static inline int buf_reserve(Buf *b, Py_ssize_t extra) {
    return b->cap - b->len >= extra ? 0 : buf_grow(b, extra);
}

static inline int put_raw(Buf *b, const void *data, Py_ssize_t size) {
    if (buf_reserve(b, size) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, data, (size_t)size);
    b->len += size;
    return 0;
}

static inline int varint_size(uint64_t n) {
    int size = 1;
    while (n > 0x7F) {
        n >>= 7;
        size++;
    }
    return size;
}

static inline void write_varint(char *out, uint64_t n) {
    while (n > 0x7F) {
        *out++ = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *out = (char)n;
}

static inline int put_varint(Buf *b, uint64_t n) {
    if (buf_reserve(b, 10) < 0) {
        return -1;
    }
    while (n > 0x7F) {
        b->data[b->len++] = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    b->data[b->len++] = (char)n;
    return 0;
}

/* A tag of a field number under 16 is one byte: every tag here but Event's 18 and 19. */
#define TAG(field, wire_type) ((uint64_t)(((field) << 3) | (wire_type)))
enum { VARINT = 0, FIXED64 = 1, LENGTH_DELIMITED = 2 };

static inline int put_field_bytes(Buf *b, uint64_t tag, const char *data, Py_ssize_t size) {
    if (buf_reserve(b, 20 + size) < 0) {
        return -1;
    }
    write_varint(b->data + b->len, tag);
    b->len += varint_size(tag);
    write_varint(b->data + b->len, (uint64_t)size);
    b->len += varint_size((uint64_t)size);
    memcpy(b->data + b->len, data, (size_t)size);
    b->len += size;
    return 0;
}

/* Opens a length-delimited piece: returns where its body starts (after one reserved byte). */
static inline Py_ssize_t open_piece(Buf *b, uint64_t tag) {
    if (put_varint(b, tag) < 0 || buf_reserve(b, 1) < 0) {
        return -1;
    }
    b->len += 1;
    return b->len;
}

/* Closes a piece opened at `start`: writes its length, moving the body up when it needs more. */
static int close_piece(Buf *b, Py_ssize_t start) {
    uint64_t size = (uint64_t)(b->len - start);
    int extra = varint_size(size) - 1;
    if (extra > 0) {
        if (buf_reserve(b, extra) < 0) {
            return -1;
        }
        memmove(b->data + start + extra, b->data + start, (size_t)size);
        b->len += extra;
    }
    write_varint(b->data + start - 1, size);
    return 0;
}

static PyObject *buf_finish(Buf *b) {
    PyObject *out;
    if (b->bytes == NULL) {
        return PyBytes_FromStringAndSize(b->data, b->len);
    }
    out = b->bytes;
    b->bytes = NULL;
    b->data = b->inline_data;
    if (_PyBytes_Resize(&out, b->len) < 0) { /* a shrink: in place */
        return NULL;
    }
    return out;
}

/* -- argument checks (the same exception types as the pure twin) ------------------------------ */

static int text_arg(PyObject *value, const char *name, const char **data, Py_ssize_t *size) {
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s must be str, not %.200s", name, Py_TYPE(value)->tp_name);
        return -1;
    }
    *data = PyUnicode_AsUTF8AndSize(value, size);
    return *data == NULL ? -1 : 0;
}

/* A bytes-like argument; release the view with PyBuffer_Release. */
static int blob_arg(PyObject *value, const char *name, Py_buffer *view) {
    if (PyObject_GetBuffer(value, view, PyBUF_SIMPLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Format(PyExc_TypeError, "%s must be bytes-like, not %.200s", name, Py_TYPE(value)->tp_name);
        }
        return -1;
    }
    return 0;
}

/* An int in [low, high]. */
static int int_arg(PyObject *value, const char *name, long long low, long long high, long long *out) {
    int overflow;
    long long n;
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s must be int, not %.200s", name, Py_TYPE(value)->tp_name);
        return -1;
    }
    n = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || n < low || n > high) {
        PyErr_Format(PyExc_ValueError, "%s %S is out of range [%lld, %lld]", name, value, low, high);
        return -1;
    }
    *out = n;
    return 0;
}

static int uint64_arg(PyObject *value, const char *name, uint64_t *out) {
    unsigned long long n;
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "%s must be int, not %.200s", name, Py_TYPE(value)->tp_name);
        return -1;
    }
    n = PyLong_AsUnsignedLongLong(value);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Format(PyExc_ValueError, "%s %S is out of range [0, 2**64)", name, value);
        }
        return -1;
    }
    *out = n;
    return 0;
}

/* A string field, left out when empty. */
static int put_text_field(Buf *b, uint64_t tag, PyObject *value, const char *name) {
    const char *data;
    Py_ssize_t size;
    if (text_arg(value, name, &data, &size) < 0) {
        return -1;
    }
    return size ? put_field_bytes(b, tag, data, size) : 0;
}

static int put_blob_field(Buf *b, uint64_t tag, PyObject *value, const char *name) {
    Py_buffer view;
    int result = 0;
    if (blob_arg(value, name, &view) < 0) {
        return -1;
    }
    if (view.len) {
        result = put_field_bytes(b, tag, view.buf, view.len);
    }
    PyBuffer_Release(&view);
    return result;
}

/* A Timestamp field, always present (an empty message for the epoch). */
static int put_timestamp(Buf *b, uint64_t tag, PyObject *value, const char *name) {
    long long ms, seconds, rest;
    Py_ssize_t start;
    if (int_arg(value, name, INT64_MIN, INT64_MAX, &ms) < 0) {
        return -1;
    }
    seconds = ms / 1000; /* divmod: seconds floored, the rest never negative */
    rest = ms % 1000;
    if (rest < 0) {
        rest += 1000;
        seconds -= 1;
    }
    start = open_piece(b, tag);
    if (start < 0) {
        return -1;
    }
    if (seconds && (put_varint(b, TAG(1, VARINT)) < 0 || put_varint(b, (uint64_t)seconds) < 0)) {
        return -1;
    }
    if (rest && (put_varint(b, TAG(2, VARINT)) < 0 || put_varint(b, (uint64_t)(rest * 1000000)) < 0)) {
        return -1;
    }
    return close_piece(b, start);
}

/* -- events ---------------------------------------------------------------------------------- */

static PyObject *encode_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    static const char *text_names[] = {"id", "type"};
    long long number;
    Py_ssize_t head_len;
    Buf b;
    PyObject *event;
    (void)module;
    if (nargs != 14) {
        PyErr_Format(PyExc_TypeError, "encode_event takes 14 arguments (%zd given)", nargs);
        return NULL;
    }
    buf_init(&b);
    for (int i = 0; i < 2; i++) {
        if (put_text_field(&b, TAG(i + 1, LENGTH_DELIMITED), args[i], text_names[i]) < 0) {
            goto error;
        }
    }
    if (put_timestamp(&b, TAG(3, LENGTH_DELIMITED), args[2], "timestamp_ms") < 0) {
        goto error;
    }
    head_len = b.len;
    if (put_text_field(&b, TAG(7, LENGTH_DELIMITED), args[3], "lead_id") < 0 ||
        put_text_field(&b, TAG(8, LENGTH_DELIMITED), args[4], "flow_id") < 0 ||
        put_text_field(&b, TAG(9, LENGTH_DELIMITED), args[5], "entity_id") < 0) {
        goto error;
    }
    if (int_arg(args[6], "outcome", INT32_MIN, INT32_MAX, &number) < 0) {
        goto error;
    }
    if (number && (put_varint(&b, TAG(10, VARINT)) < 0 || put_varint(&b, (uint64_t)number) < 0)) {
        goto error;
    }
    if (put_text_field(&b, TAG(11, LENGTH_DELIMITED), args[7], "reason") < 0) {
        goto error;
    }
    if (int_arg(args[8], "duration_ms", 0, UINT32_MAX, &number) < 0) {
        goto error;
    }
    if (number && (put_varint(&b, TAG(12, VARINT)) < 0 || put_varint(&b, (uint64_t)number) < 0)) {
        goto error;
    }
    if (put_text_field(&b, TAG(13, LENGTH_DELIMITED), args[9], "integration") < 0) {
        goto error;
    }
    if (int_arg(args[10], "response_code", 0, UINT32_MAX, &number) < 0) {
        goto error;
    }
    if (number && (put_varint(&b, TAG(14, VARINT)) < 0 || put_varint(&b, (uint64_t)number) < 0)) {
        goto error;
    }
    if (put_text_field(&b, TAG(15, LENGTH_DELIMITED), args[11], "price") < 0 ||
        put_blob_field(&b, TAG(18, LENGTH_DELIMITED), args[12], "details_json") < 0 ||
        put_blob_field(&b, TAG(19, LENGTH_DELIMITED), args[13], "lead_json") < 0) {
        goto error;
    }
    event = buf_finish(&b);
    if (event == NULL) {
        return NULL;
    }
    return Py_BuildValue("(Nn)", event, head_len);
error:
    buf_free(&b);
    return NULL;
}

static PyObject *splice_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer event, account;
    long long head_len;
    uint64_t position;
    Buf b;
    PyObject *out = NULL;
    (void)module;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "splice_event takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    if (blob_arg(args[0], "event_pb", &event) < 0) {
        return NULL;
    }
    buf_init(&b);
    if (int_arg(args[1], "head_len", 0, event.len, &head_len) < 0) {
        goto release_event;
    }
    /* Fields 4..6 first, in the inline buffer; then the whole event in one bytes object. */
    if (put_timestamp(&b, TAG(4, LENGTH_DELIMITED), args[2], "recorded_at_ms") < 0 ||
        uint64_arg(args[3], "position", &position) < 0) {
        goto release_event;
    }
    if (position && (put_varint(&b, TAG(5, VARINT)) < 0 || put_varint(&b, position) < 0)) {
        goto release_event;
    }
    if (blob_arg(args[4], "account_id", &account) < 0) {
        goto release_event;
    }
    if (account.len == 0 || put_field_bytes(&b, TAG(6, LENGTH_DELIMITED), account.buf, account.len) == 0) {
        out = PyBytes_FromStringAndSize(NULL, event.len + b.len);
    }
    PyBuffer_Release(&account);
    if (out != NULL) {
        char *data = PyBytes_AS_STRING(out);
        memcpy(data, event.buf, (size_t)head_len);
        memcpy(data + head_len, b.data, (size_t)b.len);
        memcpy(data + head_len + b.len, (const char *)event.buf + head_len, (size_t)(event.len - head_len));
    }
release_event:
    buf_free(&b);
    PyBuffer_Release(&event);
    return out;
}

/* -- JSON values (google.protobuf.Value / Struct / ListValue) -------------------------------- */

static int put_value(Buf *b, PyObject *item);
static int put_struct_body(Buf *b, PyObject *mapping);

static int put_number(Buf *b, double number) {
    if (buf_reserve(b, 9) < 0) {
        return -1;
    }
    b->data[b->len++] = (char)TAG(2, FIXED64);
    if (PyFloat_Pack8(number, b->data + b->len, 1) < 0) {
        return -1;
    }
    b->len += 8;
    return 0;
}

static int put_text_value(Buf *b, PyObject *item) {
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(item, &size);
    if (data == NULL) {
        return -1;
    }
    return put_field_bytes(b, TAG(3, LENGTH_DELIMITED), data, size);
}

static int put_list_body(Buf *b, PyObject *sequence) {
    /* A list or tuple: its items are read where they are, no copy. */
    Py_ssize_t n = PySequence_Fast_GET_SIZE(sequence);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *element = PySequence_Fast_GET_ITEM(sequence, i);
        Py_ssize_t start;
        int result;
        Py_INCREF(element); /* the list may change under a callback of a nested value */
        start = open_piece(b, TAG(1, LENGTH_DELIMITED));
        result = start < 0 ? -1 : put_value(b, element);
        Py_DECREF(element);
        if (result < 0 || close_piece(b, start) < 0) {
            return -1;
        }
        n = PySequence_Fast_GET_SIZE(sequence);
    }
    return 0;
}

static int put_container(Buf *b, uint64_t tag, PyObject *item, int is_struct) {
    Py_ssize_t start = open_piece(b, tag);
    int result;
    if (start < 0 || Py_EnterRecursiveCall(" while encoding a JSON value")) {
        return -1;
    }
    result = is_struct ? put_struct_body(b, item) : put_list_body(b, item);
    Py_LeaveRecursiveCall();
    return result < 0 ? -1 : close_piece(b, start);
}

/* The Value's message body, in python_to_value's order of kinds. */
static int put_value(Buf *b, PyObject *item) {
    int is_mapping;
    if (PyUnicode_CheckExact(item)) {
        return put_text_value(b, item);
    }
    if (PyFloat_CheckExact(item)) {
        return put_number(b, PyFloat_AS_DOUBLE(item));
    }
    if (item == Py_None) {
        return put_raw(b, "\x08\x00", 2);
    }
    if (PyBool_Check(item)) {
        return put_raw(b, item == Py_True ? "\x20\x01" : "\x20\x00", 2);
    }
    if (PyLong_Check(item) || PyFloat_Check(item)) {
        double number = PyFloat_AsDouble(item); /* float(item), as struct.pack("<d", item) takes it */
        if (number == -1.0 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Format(PyExc_ValueError, "int %S is out of a double's range", item);
            }
            return -1;
        }
        return put_number(b, number);
    }
    if (PyUnicode_Check(item)) {
        return put_text_value(b, item);
    }
    if (PyDict_CheckExact(item)) {
        return put_container(b, TAG(5, LENGTH_DELIMITED), item, 1);
    }
    if (PyList_CheckExact(item) || PyTuple_CheckExact(item)) {
        return put_container(b, TAG(6, LENGTH_DELIMITED), item, 0);
    }
    is_mapping = PyObject_IsInstance(item, mapping_type);
    if (is_mapping < 0) {
        return -1;
    }
    if (is_mapping) {
        return put_container(b, TAG(5, LENGTH_DELIMITED), item, 1);
    }
    if (PyList_Check(item) || PyTuple_Check(item)) {
        return put_container(b, TAG(6, LENGTH_DELIMITED), item, 0);
    }
    PyErr_Format(PyExc_TypeError,
                 "%.200s is not a JSON value (use str, number, bool, None, dict or list)", Py_TYPE(item)->tp_name);
    return -1;
}

/* One Struct entry: a map entry message with the key (field 1) and the Value (field 2). */
static int put_struct_entry(Buf *b, PyObject *key, PyObject *value) {
    const char *data;
    Py_ssize_t size, entry, start;
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "key %R is not a string", key);
        return -1;
    }
    data = PyUnicode_AsUTF8AndSize(key, &size);
    if (data == NULL) {
        return -1;
    }
    entry = open_piece(b, TAG(1, LENGTH_DELIMITED));
    if (entry < 0 || put_field_bytes(b, TAG(1, LENGTH_DELIMITED), data, size) < 0) {
        return -1;
    }
    start = open_piece(b, TAG(2, LENGTH_DELIMITED));
    if (start < 0 || put_value(b, value) < 0 || close_piece(b, start) < 0) {
        return -1;
    }
    return close_piece(b, entry);
}

static int put_struct_body(Buf *b, PyObject *mapping) {
    PyObject *items, *iterator, *pair;
    int result = 0;
    if (PyDict_CheckExact(mapping)) {
        Py_ssize_t position = 0;
        PyObject *key, *value;
        while (PyDict_Next(mapping, &position, &key, &value)) {
            Py_INCREF(key);
            Py_INCREF(value);
            result = put_struct_entry(b, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (result < 0) {
                return -1;
            }
        }
        return 0;
    }
    /* Any other mapping (OrderedDict, a dict subclass, ...) in the order its items() gives. */
    items = PyObject_CallMethod(mapping, "items", NULL);
    if (items == NULL) {
        return -1;
    }
    iterator = PyObject_GetIter(items);
    Py_DECREF(items);
    if (iterator == NULL) {
        return -1;
    }
    while (result == 0 && (pair = PyIter_Next(iterator)) != NULL) {
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "a mapping's items() must give (key, value) pairs");
            result = -1;
        } else {
            result = put_struct_entry(b, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1));
        }
        Py_DECREF(pair);
    }
    Py_DECREF(iterator);
    return result < 0 || PyErr_Occurred() ? -1 : 0;
}

static PyObject *value_bytes(PyObject *module, PyObject *value) {
    Buf b;
    (void)module;
    buf_init(&b);
    if (put_value(&b, value) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_finish(&b);
}

static int check_mapping(PyObject *value, const char *name) {
    int is_mapping = PyDict_CheckExact(value) ? 1 : PyObject_IsInstance(value, mapping_type);
    if (is_mapping == 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a mapping, not %.200s", name, Py_TYPE(value)->tp_name);
    }
    return is_mapping == 1 ? 0 : -1;
}

static PyObject *struct_bytes(PyObject *module, PyObject *obj) {
    Buf b;
    (void)module;
    if (check_mapping(obj, "obj") < 0) {
        return NULL;
    }
    buf_init(&b);
    if (Py_EnterRecursiveCall(" while encoding a JSON value")) {
        return NULL;
    }
    if (put_struct_body(&b, obj) < 0) {
        Py_LeaveRecursiveCall();
        buf_free(&b);
        return NULL;
    }
    Py_LeaveRecursiveCall();
    return buf_finish(&b);
}

/* -- timelines ------------------------------------------------------------------------------- */

/* JSON values: true is not 1, but 1 and 1.0 are the same number (timelines._same). */
static int same_value(PyObject *a, PyObject *b) {
    PyObject *equal;
    int result;
    if (PyBool_Check(a) || PyBool_Check(b)) {
        return Py_TYPE(a) == Py_TYPE(b) && a == b;
    }
    equal = PyObject_RichCompare(a, b, Py_EQ);
    if (equal == NULL) {
        return -1;
    }
    result = PyObject_IsTrue(equal);
    Py_DECREF(equal);
    return result;
}

/* mapping.get(key): a new reference, NULL with no error when absent. dict.get (subclasses
 * included) never calls __missing__, so neither does this. */
static PyObject *lookup(PyObject *mapping, PyObject *key) {
    PyObject *value;
    if (PyDict_Check(mapping)) {
        value = PyDict_GetItemWithError(mapping, key);
        Py_XINCREF(value);
        return value;
    }
    value = PyObject_GetItem(mapping, key);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
    }
    return value;
}

static int contains(PyObject *mapping, PyObject *key) {
    return PyDict_CheckExact(mapping) ? PyDict_Contains(mapping, key) : PySequence_Contains(mapping, key);
}

enum { ADDED = 1, CHANGED = 2, REMOVED = 3 };

/* One FieldChange as a TimelineStep's field 3 entry; `before`/`after` NULL when absent. */
static int put_change(Buf *b, PyObject *field, int kind, PyObject *before, PyObject *after) {
    const char *name;
    Py_ssize_t size, change, start;
    if (text_arg(field, "field name", &name, &size) < 0) {
        return -1;
    }
    change = open_piece(b, TAG(3, LENGTH_DELIMITED));
    if (change < 0 || (size && put_field_bytes(b, TAG(1, LENGTH_DELIMITED), name, size) < 0)) {
        return -1;
    }
    if (before != NULL) {
        start = open_piece(b, TAG(2, LENGTH_DELIMITED));
        if (start < 0 || put_value(b, before) < 0 || close_piece(b, start) < 0) {
            return -1;
        }
    }
    if (after != NULL) {
        start = open_piece(b, TAG(3, LENGTH_DELIMITED));
        if (start < 0 || put_value(b, after) < 0 || close_piece(b, start) < 0) {
            return -1;
        }
    }
    if (put_varint(b, TAG(4, VARINT)) < 0 || put_varint(b, (uint64_t)kind) < 0) {
        return -1;
    }
    return close_piece(b, change);
}

/* Appends to `changed` the fields of `before` missing from `after`. */
static int removed_fields(PyObject *before, PyObject *after, PyObject *changed) {
    PyObject *iterator, *field;
    int result = 0;
    if (PyDict_CheckExact(before) && PyDict_CheckExact(after)) {
        Py_ssize_t position = 0;
        PyObject *value;
        while (PyDict_Next(before, &position, &field, &value)) {
            int present = PyDict_Contains(after, field);
            if (present < 0 || (!present && PyList_Append(changed, field) < 0)) {
                return -1;
            }
        }
        return 0;
    }
    iterator = PyObject_GetIter(before);
    if (iterator == NULL) {
        return -1;
    }
    while (result == 0 && (field = PyIter_Next(iterator)) != NULL) {
        int present = contains(after, field);
        result = present < 0 ? -1 : (present ? 0 : PyList_Append(changed, field));
        Py_DECREF(field);
    }
    Py_DECREF(iterator);
    return result < 0 || PyErr_Occurred() ? -1 : 0;
}

static inline int same_text(PyObject *a, PyObject *b) {
    Py_ssize_t length = PyUnicode_GET_LENGTH(a);
    int kind = PyUnicode_KIND(a);
    return length == PyUnicode_GET_LENGTH(b) && kind == (int)PyUnicode_KIND(b) &&
           memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)(length * kind)) == 0;
}

/* Appends `field` to `changed` unless its value in `before` (`old`, borrowed; NULL when absent)
 * is the same as `value`. */
static int compare_field(PyObject *old, PyObject *field, PyObject *value, PyObject *changed) {
    int same;
    if (old == NULL) {
        return PyList_Append(changed, field);
    }
    if (old == value) {
        return 0;
    }
    if (PyUnicode_CheckExact(old) && PyUnicode_CheckExact(value)) {
        same = same_text(old, value); /* most fields hold strings: str == str without a call */
    } else {
        same = same_value(old, value);
    }
    if (same < 0) {
        return -1;
    }
    return same ? 0 : PyList_Append(changed, field);
}

/* Appends `field` to `changed` when it is new in `after` or not the same as in `before`. */
static int differing_field(PyObject *before, PyObject *field, PyObject *value, PyObject *changed) {
    PyObject *old = lookup(before, field);
    int result;
    if (old == NULL && PyErr_Occurred()) {
        return -1;
    }
    result = compare_field(old, field, value, changed);
    Py_XDECREF(old);
    return result;
}

static inline int same_key(PyObject *a, PyObject *b) {
    return a == b || (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b) && same_text(a, b));
}

/* Two plain dicts, walked side by side while their keys are the same in the same order (a lead's
 * next snapshot is mostly the previous one with fields added at the end): no lookups until they
 * part, and no search for removed fields when every field of `before` was met. */
static int dict_changes(PyObject *before, PyObject *after, PyObject *changed) {
    Py_ssize_t in_before = 0, in_after = 0, matched = 0;
    PyObject *before_key, *old, *field, *value;
    int aligned = 1, result = 0;
    while (result == 0 && PyDict_Next(after, &in_after, &field, &value)) {
        Py_INCREF(field);
        Py_INCREF(value);
        if (aligned && PyDict_Next(before, &in_before, &before_key, &old) && same_key(before_key, field)) {
            Py_INCREF(old);
            matched++;
            result = compare_field(old, field, value, changed);
            Py_DECREF(old);
        } else {
            aligned = 0;
            result = differing_field(before, field, value, changed);
        }
        Py_DECREF(field);
        Py_DECREF(value);
    }
    if (result == 0 && matched < PyDict_GET_SIZE(before)) {
        result = removed_fields(before, after, changed);
    }
    return result;
}

static int differing_fields(PyObject *before, PyObject *after, PyObject *changed) {
    PyObject *items, *iterator, *pair;
    int result = 0;
    if (PyDict_CheckExact(after)) {
        Py_ssize_t position = 0;
        PyObject *field, *value;
        while (result == 0 && PyDict_Next(after, &position, &field, &value)) {
            Py_INCREF(field);
            Py_INCREF(value);
            result = differing_field(before, field, value, changed);
            Py_DECREF(field);
            Py_DECREF(value);
        }
        return result;
    }
    items = PyObject_CallMethod(after, "items", NULL);
    if (items == NULL) {
        return -1;
    }
    iterator = PyObject_GetIter(items);
    Py_DECREF(items);
    if (iterator == NULL) {
        return -1;
    }
    while (result == 0 && (pair = PyIter_Next(iterator)) != NULL) {
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "a mapping's items() must give (key, value) pairs");
            result = -1;
        } else {
            result = differing_field(before, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), changed);
        }
        Py_DECREF(pair);
    }
    Py_DECREF(iterator);
    return result < 0 || PyErr_Occurred() ? -1 : 0;
}

/* One changed field, as timelines.changes writes it: added, removed or changed. */
static int put_field_change(Buf *b, PyObject *before, PyObject *after, PyObject *field) {
    PyObject *old = NULL, *new = NULL;
    int result = -1, same;
    int in_before = contains(before, field);
    if (in_before < 0) {
        return -1;
    }
    if (!in_before) {
        new = PyObject_GetItem(after, field);
        result = new == NULL ? -1 : put_change(b, field, ADDED, NULL, new);
        Py_XDECREF(new);
        return result;
    }
    int in_after = contains(after, field);
    if (in_after < 0) {
        return -1;
    }
    old = PyObject_GetItem(before, field);
    if (old == NULL) {
        return -1;
    }
    if (!in_after) {
        result = put_change(b, field, REMOVED, old, NULL);
        Py_DECREF(old);
        return result;
    }
    new = PyObject_GetItem(after, field);
    if (new != NULL) {
        same = same_value(old, new);
        result = same < 0 ? -1 : (same ? 0 : put_change(b, field, CHANGED, old, new));
    }
    Py_DECREF(old);
    Py_XDECREF(new);
    return result;
}

static PyObject *field_changes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *before, *after, *changed;
    Buf b;
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "field_changes takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    before = args[0];
    after = args[1];
    if (check_mapping(before, "before") < 0 || check_mapping(after, "after") < 0) {
        return NULL;
    }
    changed = PyList_New(0);
    if (changed == NULL) {
        return NULL;
    }
    buf_init(&b);
    /* `changed` is sorted before use: the order the fields are found in does not matter. */
    if (PyDict_CheckExact(before) && PyDict_CheckExact(after)) {
        if (dict_changes(before, after, changed) < 0) {
            goto error;
        }
    } else if (removed_fields(before, after, changed) < 0 || differing_fields(before, after, changed) < 0) {
        goto error;
    }
    if (PyList_Sort(changed) < 0) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(changed); i++) {
        if (put_field_change(&b, before, after, PyList_GET_ITEM(changed, i)) < 0) {
            goto error;
        }
    }
    Py_DECREF(changed);
    return buf_finish(&b);
error:
    Py_DECREF(changed);
    buf_free(&b);
    return NULL;
}

/* About what a list or tuple of bytes takes as entries of a repeated field (0 for anything else):
 * a hint, so that a page of events is written straight into the bytes object returned. */
static Py_ssize_t messages_size(PyObject *messages, int tag_size) {
    Py_ssize_t size = 0;
    if (!PyList_CheckExact(messages) && !PyTuple_CheckExact(messages)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(messages); i++) {
        PyObject *message = PySequence_Fast_GET_ITEM(messages, i);
        size += tag_size + 3 + (PyBytes_CheckExact(message) ? PyBytes_GET_SIZE(message) : 0);
    }
    return size;
}

/* The same for a timeline's steps: their events and changes, when they are bytes. */
static Py_ssize_t steps_size(PyObject *steps) {
    Py_ssize_t size = 0;
    if (!PyList_CheckExact(steps) && !PyTuple_CheckExact(steps)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(steps); i++) {
        PyObject *step = PySequence_Fast_GET_ITEM(steps, i);
        size += 20;
        if (PyTuple_CheckExact(step) && PyTuple_GET_SIZE(step) == 3) {
            PyObject *event = PyTuple_GET_ITEM(step, 0), *changes = PyTuple_GET_ITEM(step, 2);
            size += PyBytes_CheckExact(event) ? PyBytes_GET_SIZE(event) : 0;
            size += PyBytes_CheckExact(changes) ? PyBytes_GET_SIZE(changes) : 0;
        }
    }
    return size;
}

/* A TimelineStep from (event bytes, since_previous_ms, changes bytes). */
static int put_step(Buf *b, PyObject *step) {
    PyObject *fields = PySequence_Fast(step, "a timeline step must be (event, since_previous_ms, changes)");
    Py_buffer event, changes;
    long long since;
    Py_ssize_t start;
    int result = -1;
    if (fields == NULL) {
        return -1;
    }
    if (PySequence_Fast_GET_SIZE(fields) != 3) {
        PyErr_Format(PyExc_ValueError, "a timeline step has 3 parts (event, since_previous_ms, changes), not %zd",
                     PySequence_Fast_GET_SIZE(fields));
        Py_DECREF(fields);
        return -1;
    }
    if (blob_arg(PySequence_Fast_GET_ITEM(fields, 0), "step event", &event) < 0) {
        Py_DECREF(fields);
        return -1;
    }
    if (blob_arg(PySequence_Fast_GET_ITEM(fields, 2), "step changes", &changes) < 0) {
        PyBuffer_Release(&event);
        Py_DECREF(fields);
        return -1;
    }
    if (int_arg(PySequence_Fast_GET_ITEM(fields, 1), "since_previous_ms", INT64_MIN, INT64_MAX, &since) == 0 &&
        (start = open_piece(b, TAG(2, LENGTH_DELIMITED))) >= 0 &&
        put_field_bytes(b, TAG(1, LENGTH_DELIMITED), event.buf, event.len) == 0 &&
        (since == 0 || (put_varint(b, TAG(2, VARINT)) == 0 && put_varint(b, (uint64_t)since) == 0)) &&
        put_raw(b, changes.buf, changes.len) == 0) {
        result = close_piece(b, start);
    }
    PyBuffer_Release(&event);
    PyBuffer_Release(&changes);
    Py_DECREF(fields);
    return result;
}

/* Each item of an iterable through `put`; -1 on the first failure. */
static int put_each(Buf *b, PyObject *iterable, int (*put)(Buf *, PyObject *)) {
    PyObject *iterator = PyObject_GetIter(iterable), *item;
    int result = 0;
    if (iterator == NULL) {
        return -1;
    }
    while (result == 0 && (item = PyIter_Next(iterator)) != NULL) {
        result = put(b, item);
        Py_DECREF(item);
    }
    Py_DECREF(iterator);
    return result < 0 || PyErr_Occurred() ? -1 : 0;
}

/* An entry of a repeated message field: written even when empty (put_blob_field leaves it out). */
static int put_message_field(Buf *b, uint64_t tag, PyObject *message, const char *name) {
    Py_buffer view;
    int result;
    if (blob_arg(message, name, &view) < 0) {
        return -1;
    }
    result = put_field_bytes(b, tag, view.buf, view.len);
    PyBuffer_Release(&view);
    return result;
}

static int put_audit_entry(Buf *b, PyObject *event) {
    return put_message_field(b, TAG(5, LENGTH_DELIMITED), event, "audit event");
}

static PyObject *timeline_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    long long total;
    Buf b;
    (void)module;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "timeline_bytes takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    if (buf_init_sized(&b, 64 + steps_size(args[1]) + messages_size(args[4], 1)) < 0) {
        return NULL;
    }
    if (put_text_field(&b, TAG(1, LENGTH_DELIMITED), args[0], "lead_id") < 0 || put_each(&b, args[1], put_step) < 0 ||
        int_arg(args[2], "total_ms", INT64_MIN, INT64_MAX, &total) < 0) {
        goto error;
    }
    if (total && (put_varint(&b, TAG(3, VARINT)) < 0 || put_varint(&b, (uint64_t)total) < 0)) {
        goto error;
    }
    if (put_text_field(&b, TAG(4, LENGTH_DELIMITED), args[3], "next_page_token") < 0 ||
        put_each(&b, args[4], put_audit_entry) < 0) {
        goto error;
    }
    return buf_finish(&b);
error:
    buf_free(&b);
    return NULL;
}

static PyObject *repeated_field(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *iterator, *message;
    long long field_number;
    uint64_t tag;
    Buf b;
    int result = 0;
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "repeated_field takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (int_arg(args[0], "field_number", 1, (1 << 29) - 1, &field_number) < 0) {
        return NULL;
    }
    tag = TAG((uint64_t)field_number, LENGTH_DELIMITED);
    if (buf_init_sized(&b, messages_size(args[1], varint_size(tag))) < 0) {
        return NULL;
    }
    iterator = PyObject_GetIter(args[1]);
    if (iterator == NULL) {
        buf_free(&b);
        return NULL;
    }
    while (result == 0 && (message = PyIter_Next(iterator)) != NULL) {
        if (PyBytes_CheckExact(message)) {
            result = put_field_bytes(&b, tag, PyBytes_AS_STRING(message), PyBytes_GET_SIZE(message));
        } else {
            result = put_message_field(&b, tag, message, "message");
        }
        Py_DECREF(message);
    }
    Py_DECREF(iterator);
    if (result < 0 || PyErr_Occurred()) {
        buf_free(&b);
        return NULL;
    }
    return buf_finish(&b);
}

/* -- a body compressed against its base body ---------------------------------------------------
 *
 * libzstd is loaded at import with dlopen (no zstd.h is needed to build this file): the few stable
 * functions used are declared here by hand. Where the library cannot be loaded, the module has no
 * prefix_compress/prefix_decompress and wireform takes the pure twin's. The two contexts are made
 * once and reused; every call holds the GIL (a body is a few microseconds of work), so one pair
 * serves every thread. Frames are magicless and carry their content size and zstd's checksum of
 * the content: the record's CRC covers the frame, but only the checksum tells a body decoded
 * against the wrong base (a stale copy of a rewritten one) from the right one. */

#include <dlfcn.h>

#define ZSTD_C_COMPRESSION_LEVEL 100
#define ZSTD_C_CONTENT_SIZE_FLAG 200
#define ZSTD_C_CHECKSUM_FLAG 201
#define ZSTD_C_DICT_ID_FLAG 202
#define ZSTD_C_FORMAT 10     /* ZSTD_c_experimentalParam2 */
#define ZSTD_D_FORMAT 1000   /* ZSTD_d_experimentalParam1 */
#define ZSTD_F_MAGICLESS 1   /* ZSTD_f_zstd1_magicless */
#define ZSTD_MIN_VERSION 10400 /* 1.4.0: refPrefix and compress2 are stable */

typedef struct {
    void *(*createCCtx)(void);
    size_t (*CCtx_setParameter)(void *, int, int);
    size_t (*CCtx_refPrefix)(void *, const void *, size_t);
    size_t (*compress2)(void *, void *, size_t, const void *, size_t);
    size_t (*compressBound)(size_t);
    void *(*createDCtx)(void);
    size_t (*DCtx_setParameter)(void *, int, int);
    size_t (*DCtx_refPrefix)(void *, const void *, size_t);
    size_t (*decompressDCtx)(void *, void *, size_t, const void *, size_t);
    unsigned (*isError)(size_t);
    const char *(*getErrorName)(size_t);
    unsigned (*versionNumber)(void);
} Zstd;

static Zstd zstd;
static void *cctx, *dctx;
static int cctx_level = -1000;

/* 0 when libzstd is loaded and both contexts are set up; -1 (no Python error set) otherwise. */
static int zstd_load(void) {
    void *lib = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        return -1;
    }
#define ZSTD_SYMBOL(field, name)                     \
    *(void **)(&zstd.field) = dlsym(lib, name);      \
    if (zstd.field == NULL) {                        \
        return -1;                                   \
    }
    ZSTD_SYMBOL(createCCtx, "ZSTD_createCCtx")
    ZSTD_SYMBOL(CCtx_setParameter, "ZSTD_CCtx_setParameter")
    ZSTD_SYMBOL(CCtx_refPrefix, "ZSTD_CCtx_refPrefix")
    ZSTD_SYMBOL(compress2, "ZSTD_compress2")
    ZSTD_SYMBOL(compressBound, "ZSTD_compressBound")
    ZSTD_SYMBOL(createDCtx, "ZSTD_createDCtx")
    ZSTD_SYMBOL(DCtx_setParameter, "ZSTD_DCtx_setParameter")
    ZSTD_SYMBOL(DCtx_refPrefix, "ZSTD_DCtx_refPrefix")
    ZSTD_SYMBOL(decompressDCtx, "ZSTD_decompressDCtx")
    ZSTD_SYMBOL(isError, "ZSTD_isError")
    ZSTD_SYMBOL(getErrorName, "ZSTD_getErrorName")
    ZSTD_SYMBOL(versionNumber, "ZSTD_versionNumber")
#undef ZSTD_SYMBOL
    if (zstd.versionNumber() < ZSTD_MIN_VERSION) {
        return -1;
    }
    cctx = zstd.createCCtx();
    dctx = zstd.createDCtx();
    if (cctx == NULL || dctx == NULL) {
        return -1;
    }
    /* The library is never unloaded: the contexts live as long as the process. */
    if (zstd.isError(zstd.CCtx_setParameter(cctx, ZSTD_C_FORMAT, ZSTD_F_MAGICLESS)) ||
        zstd.isError(zstd.CCtx_setParameter(cctx, ZSTD_C_CONTENT_SIZE_FLAG, 1)) ||
        zstd.isError(zstd.CCtx_setParameter(cctx, ZSTD_C_CHECKSUM_FLAG, 1)) ||
        zstd.isError(zstd.CCtx_setParameter(cctx, ZSTD_C_DICT_ID_FLAG, 0)) ||
        zstd.isError(zstd.DCtx_setParameter(dctx, ZSTD_D_FORMAT, ZSTD_F_MAGICLESS))) {
        return -1;
    }
    return 0;
}

static int buffer_arg(PyObject *arg, Py_buffer *view, const char *name) {
    if (PyObject_GetBuffer(arg, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes-like, not %.100s", name, Py_TYPE(arg)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *prefix_compress(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer body, base;
    long long level;
    PyObject *out = NULL;
    size_t bound, written;
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "prefix_compress takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (int_arg(args[2], "level", -131072, 22, &level) < 0 || buffer_arg(args[0], &body, "body") < 0) {
        return NULL;
    }
    if (buffer_arg(args[1], &base, "base") < 0) {
        PyBuffer_Release(&body);
        return NULL;
    }
    if (level != cctx_level) {
        if (zstd.isError(zstd.CCtx_setParameter(cctx, ZSTD_C_COMPRESSION_LEVEL, (int)level))) {
            PyErr_SetString(PyExc_ValueError, "compression level refused");
            goto done;
        }
        cctx_level = (int)level;
    }
    bound = zstd.compressBound((size_t)body.len);
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)bound);
    if (out == NULL) {
        goto done;
    }
    written = zstd.CCtx_refPrefix(cctx, base.buf, (size_t)base.len);
    if (!zstd.isError(written)) {
        written = zstd.compress2(cctx, PyBytes_AS_STRING(out), bound, body.buf, (size_t)body.len);
    }
    if (zstd.isError(written)) {
        PyErr_Format(PyExc_ValueError, "zstd: %s", zstd.getErrorName(written));
        Py_CLEAR(out);
    } else {
        _PyBytes_Resize(&out, (Py_ssize_t)written); /* out is NULL, error set, if it fails */
    }
done:
    PyBuffer_Release(&body);
    PyBuffer_Release(&base);
    return out;
}

/* The content size a magicless frame header states (RFC 8878, 3.1.1.1), or -1 with an error set. */
static long long frame_content_size(const unsigned char *frame, Py_ssize_t size) {
    static const int dict_id_sizes[4] = {0, 1, 2, 4};
    unsigned descriptor;
    int single_segment, fcs_code, fcs_size;
    Py_ssize_t at;
    unsigned long long value = 0;
    if (size < 1) {
        PyErr_SetString(PyExc_ValueError, "zstd frame is empty");
        return -1;
    }
    descriptor = frame[0];
    single_segment = (descriptor >> 5) & 1;
    fcs_code = (int)(descriptor >> 6);
    fcs_size = fcs_code == 0 ? single_segment : 1 << fcs_code;
    if (fcs_size == 0 || (descriptor & 0x08)) {
        PyErr_SetString(PyExc_ValueError, "zstd frame states no content size");
        return -1;
    }
    at = 1 + (single_segment ? 0 : 1) + dict_id_sizes[descriptor & 3];
    if (at + fcs_size > size) {
        PyErr_SetString(PyExc_ValueError, "zstd frame shorter than its header");
        return -1;
    }
    for (int i = fcs_size - 1; i >= 0; i--) {
        value = value << 8 | frame[at + i];
    }
    if (fcs_size == 2) {
        value += 256;
    }
    if (value > (unsigned long long)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_ValueError, "zstd frame content size out of range");
        return -1;
    }
    return (long long)value;
}

static PyObject *prefix_decompress(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer frame, base;
    long long max_size, content_size;
    PyObject *out = NULL;
    size_t written;
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "prefix_decompress takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (int_arg(args[2], "max_size", 0, PY_SSIZE_T_MAX, &max_size) < 0 ||
        buffer_arg(args[0], &frame, "frame") < 0) {
        return NULL;
    }
    if (buffer_arg(args[1], &base, "base") < 0) {
        PyBuffer_Release(&frame);
        return NULL;
    }
    content_size = frame_content_size(frame.buf, frame.len);
    if (content_size < 0) {
        goto done;
    }
    if (content_size > max_size) {
        PyErr_Format(PyExc_ValueError, "zstd frame content size %lld is over %lld", content_size, max_size);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)content_size);
    if (out == NULL) {
        goto done;
    }
    written = zstd.DCtx_refPrefix(dctx, base.buf, (size_t)base.len);
    if (!zstd.isError(written)) {
        written = zstd.decompressDCtx(dctx, PyBytes_AS_STRING(out), (size_t)content_size, frame.buf,
                                      (size_t)frame.len);
    }
    if (zstd.isError(written)) {
        PyErr_Format(PyExc_ValueError, "zstd: %s", zstd.getErrorName(written));
        Py_CLEAR(out);
    } else if (written != (size_t)content_size) {
        PyErr_Format(PyExc_ValueError, "zstd frame holds %zu bytes, not the %lld it states", written,
                     content_size);
        Py_CLEAR(out);
    }
done:
    PyBuffer_Release(&frame);
    PyBuffer_Release(&base);
    return out;
}

static PyMethodDef zstd_methods[] = {
    {"prefix_compress", (PyCFunction)(void (*)(void))prefix_compress, METH_FASTCALL,
     "A magicless zstd frame of body, compressed against base (raw content)."},
    {"prefix_decompress", (PyCFunction)(void (*)(void))prefix_decompress, METH_FASTCALL,
     "The body a prefix_compress frame holds, given the same base."},
    {NULL, NULL, 0, NULL},
};

/* -- the hash chain (FORMAT.md, "Hash chain") ------------------------------------------------
 *
 * A new event's chain block and chain hash: three SHA-256 (its content's salted commitment, its
 * digest, the link) in one call. SHA-256 is OpenSSL's, found with dlopen like libzstd above (no
 * header is needed to build this file): the process has libcrypto loaded already (Python's
 * hashlib uses it), and it uses the CPU's SHA instructions where there are some. Without it,
 * chain_block is not in the module and the pure twin's (hashlib) is used. */

/* OpenSSL's low-level SHA-256 (SHA256_Init/Update/Final): its one-shot SHA256() goes through the
 * EVP layer, which looks the algorithm up on every call and costs more than hashing a snapshot.
 * The context is opaque here: a buffer larger than OpenSSL's SHA256_CTX (112 bytes). */
typedef struct {
    int (*init)(void *);
    int (*update)(void *, const void *, size_t);
    int (*final)(unsigned char *, void *);
} Sha256;
typedef union {
    unsigned char bytes[256];
    uint64_t align;
} Sha256Ctx;
static Sha256 sha256;

static int crypto_load(void) {
    static const char *names[] = {"libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so", NULL};
    for (int i = 0; names[i] != NULL; i++) {
        void *lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (lib == NULL) {
            continue;
        }
        *(void **)(&sha256.init) = dlsym(lib, "SHA256_Init");
        *(void **)(&sha256.update) = dlsym(lib, "SHA256_Update");
        *(void **)(&sha256.final) = dlsym(lib, "SHA256_Final");
        if (sha256.init != NULL && sha256.update != NULL && sha256.final != NULL) {
            return 0; /* never unloaded */
        }
    }
    return -1;
}

static inline void put_be(char *out, uint64_t n, int size) {
    for (int i = size - 1; i >= 0; i--) {
        out[i] = (char)(n & 0xFF);
        n >>= 8;
    }
}

static int put_be_raw(Buf *b, uint64_t n, int size) {
    char out[8];
    put_be(out, n, size);
    return put_raw(b, out, size);
}

/* lp(x): 4-byte big-endian length, then the UTF-8 text. */
static int put_lp_text(Buf *b, PyObject *value, const char *name) {
    const char *data;
    Py_ssize_t size;
    if (text_arg(value, name, &data, &size) < 0) {
        return -1;
    }
    return put_be_raw(b, (uint64_t)size, 4) < 0 || put_raw(b, data, size) < 0 ? -1 : 0;
}

static const char *CHAIN_TEXT_NAMES[] = {"account_id", "id",          "type", "lead_id",
                                         "flow_id",    "entity_id"};

/* chain_block(prev, salt, position, recorded_at_ms, timestamp_ms, account_id, id, type, lead_id,
 *             flow_id, entity_id, outcome, duration_ms, integration, response_code, price,
 *             reason, details_json, lead_json) -> (block, chain_hash) */
static PyObject *chain_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer prev, salt, details, lead;
    Buf b;
    Sha256Ctx ctx;
    uint64_t position, recorded_at, timestamp;
    long long outcome, duration, code;
    const char *reason;
    Py_ssize_t reason_len;
    unsigned char content[32], digest[32], chain[32], sizes[4];
    char block[25];
    PyObject *out = NULL;
    if (nargs != 19) {
        PyErr_Format(PyExc_TypeError, "chain_block takes 19 arguments (%zd given)", nargs);
        return NULL;
    }
    if (blob_arg(args[0], "prev", &prev) < 0) {
        return NULL;
    }
    if (blob_arg(args[1], "salt", &salt) < 0) {
        PyBuffer_Release(&prev);
        return NULL;
    }
    if (blob_arg(args[17], "details_json", &details) < 0) {
        PyBuffer_Release(&prev);
        PyBuffer_Release(&salt);
        return NULL;
    }
    if (blob_arg(args[18], "lead_json", &lead) < 0) {
        PyBuffer_Release(&prev);
        PyBuffer_Release(&salt);
        PyBuffer_Release(&details);
        return NULL;
    }
    buf_init(&b);
    if (prev.len != 32 || salt.len != 16) {
        PyErr_Format(PyExc_ValueError, "prev must be 32 bytes and salt 16 (%zd, %zd given)", prev.len,
                     salt.len);
        goto done;
    }
    if (uint64_arg(args[2], "position", &position) < 0 || uint64_arg(args[3], "recorded_at_ms", &recorded_at) < 0 ||
        uint64_arg(args[4], "timestamp_ms", &timestamp) < 0 ||
        int_arg(args[11], "outcome", 0, 255, &outcome) < 0 ||
        int_arg(args[12], "duration_ms", 0, 0xFFFFFFFFLL, &duration) < 0 ||
        int_arg(args[14], "response_code", 0, 0xFFFFFFFFLL, &code) < 0 ||
        text_arg(args[16], "reason", &reason, &reason_len) < 0) {
        goto done;
    }
    /* The content's commitment, hashed where the values are (no copy of the snapshot). */
    if (put_raw(&b, "leadtrail content v1\0", 21) < 0 || put_raw(&b, salt.buf, 16) < 0 ||
        put_be_raw(&b, (uint64_t)reason_len, 4) < 0 || put_raw(&b, reason, reason_len) < 0) {
        goto done;
    }
    sha256.init(&ctx);
    sha256.update(&ctx, b.data, (size_t)b.len);
    put_be((char *)sizes, (uint64_t)details.len, 4);
    sha256.update(&ctx, sizes, 4);
    sha256.update(&ctx, details.buf, (size_t)details.len);
    put_be((char *)sizes, (uint64_t)lead.len, 4);
    sha256.update(&ctx, sizes, 4);
    sha256.update(&ctx, lead.buf, (size_t)lead.len);
    sha256.final(content, &ctx);
    /* The digest. */
    b.len = 0;
    if (put_raw(&b, "leadtrail event v1\0", 19) < 0 || put_be_raw(&b, position, 8) < 0 ||
        put_be_raw(&b, recorded_at, 8) < 0 || put_be_raw(&b, timestamp, 8) < 0) {
        goto done;
    }
    for (int i = 0; i < 6; i++) {
        if (put_lp_text(&b, args[5 + i], CHAIN_TEXT_NAMES[i]) < 0) {
            goto done;
        }
    }
    if (put_be_raw(&b, (uint64_t)outcome, 1) < 0 || put_be_raw(&b, (uint64_t)duration, 4) < 0 ||
        put_lp_text(&b, args[13], "integration") < 0 || put_be_raw(&b, (uint64_t)code, 4) < 0 ||
        put_lp_text(&b, args[15], "price") < 0 || put_raw(&b, (const char *)content, 32) < 0) {
        goto done;
    }
    sha256.init(&ctx);
    sha256.update(&ctx, b.data, (size_t)b.len);
    sha256.final(digest, &ctx);
    /* The link. */
    sha256.init(&ctx);
    sha256.update(&ctx, prev.buf, 32);
    sha256.update(&ctx, digest, 32);
    sha256.final(chain, &ctx);
    block[0] = 1;
    memcpy(block + 1, salt.buf, 16);
    memcpy(block + 17, chain, 8);
    out = Py_BuildValue("(y#y#)", block, (Py_ssize_t)25, (const char *)chain, (Py_ssize_t)32);
done:
    buf_free(&b);
    PyBuffer_Release(&prev);
    PyBuffer_Release(&salt);
    PyBuffer_Release(&details);
    PyBuffer_Release(&lead);
    return out;
}

static PyMethodDef crypto_methods[] = {
    {"chain_block", (PyCFunction)(void (*)(void))chain_block, METH_FASTCALL,
     "(the chain block, the chain hash) of a new event after the chain hash prev."},
    {NULL, NULL, 0, NULL},
};

/* -- the module ------------------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"encode_event", (PyCFunction)(void (*)(void))encode_event, METH_FASTCALL,
     "An Event without its fields 4..6, and the length of the head (fields 1..3) they follow."},
    {"splice_event", (PyCFunction)(void (*)(void))splice_event, METH_FASTCALL,
     "The full Event: fields 4 (recorded_at), 5 (position) and 6 (account) put in at head_len."},
    {"value_bytes", value_bytes, METH_O, "A google.protobuf.Value holding a JSON value."},
    {"struct_bytes", struct_bytes, METH_O, "A google.protobuf.Struct holding a JSON object."},
    {"field_changes", (PyCFunction)(void (*)(void))field_changes, METH_FASTCALL,
     "A TimelineStep's changes (field 3 entries) from one snapshot to the next."},
    {"timeline_bytes", (PyCFunction)(void (*)(void))timeline_bytes, METH_FASTCALL,
     "A Timeline page from stored pieces."},
    {"repeated_field", (PyCFunction)(void (*)(void))repeated_field, METH_FASTCALL,
     "Messages as the entries of a repeated message field."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_wireform",
    "The wire form of events and answers as plain bytes: the compiled twin of _wireform_py.", -1, methods,
};

PyMODINIT_FUNC PyInit__wireform(void) {
    PyObject *module;
    PyObject *abc = PyImport_ImportModule("collections.abc");
    if (abc == NULL) {
        return NULL;
    }
    mapping_type = PyObject_GetAttrString(abc, "Mapping");
    Py_DECREF(abc);
    if (mapping_type == NULL) {
        return NULL;
    }
    module = PyModule_Create(&module_def);
    if (module != NULL && zstd_load() == 0 && PyModule_AddFunctions(module, zstd_methods) < 0) {
        Py_CLEAR(module);
    }
    if (module != NULL && crypto_load() == 0 && PyModule_AddFunctions(module, crypto_methods) < 0) {
        Py_CLEAR(module);
    }
    return module;
}
