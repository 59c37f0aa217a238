/* The write path's per-event checks and keys: the compiled twin of _ingest_py.py.
 *
 * Each check says only yes or no, as its twin does; the messages naming a broken rule
 * are written by validation.py for both. A "no" here for something unusual that is
 * still valid (a subclass of str, int or dict, a Mapping that is not a dict, a price
 * with non-ASCII digits) is allowed: validation then asks the pure twin. A "yes" here
 * is given only where the pure twin says yes, which the tests check on the same inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define TYPE_MAX 64
#define ID_FIELD_MAX 128
#define REASON_MAX 1024
#define ACCOUNT_MAX 64
#define PRICE_MAX 32
#define FIELD_NAME_MAX 256
#define MAX_DEPTH 32
#define U32_MAX 4294967295LL
#define MAX_TIMESTAMP_MS 253402300799999LL
#define ID_PREFIX "evt_"
#define ID_LEN 30

static PyObject *outcome_type; /* leadtrail.storage.event.Outcome */

/* Attribute names of Event, interned once. */
static PyObject *s_id, *s_type, *s_lead_id, *s_flow_id, *s_entity_id, *s_integration, *s_reason,
    *s_account_id, *s_timestamp_ms, *s_outcome, *s_duration_ms, *s_response_code, *s_price;

/* Crockford base32 digit values; -1 where the canonical (upper case) alphabet has no digit. */
static int8_t crockford[128];

static int is_lower(Py_UCS4 c) { return c >= 'a' && c <= 'z'; }
static int is_digit(Py_UCS4 c) { return c >= '0' && c <= '9'; }
static int is_alnum(Py_UCS4 c) { return is_lower(c) || is_digit(c) || (c >= 'A' && c <= 'Z'); }

/* ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$ */
static int type_matches(PyObject *s) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    int parts = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        if (parts > 0) {
            if (PyUnicode_READ(kind, data, i) != '.') {
                return 0;
            }
            i++;
        }
        if (i >= n || !is_lower(PyUnicode_READ(kind, data, i))) {
            return 0;
        }
        i++;
        while (i < n) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (!(is_lower(c) || is_digit(c) || c == '_')) {
                break;
            }
            i++;
        }
        parts++;
    }
    return parts >= 2;
}

/* ^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$ (the length is checked by the caller) */
static int account_matches(PyObject *s) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (n == 0 || !is_alnum(PyUnicode_READ(kind, data, 0))) {
        return 0;
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (!(is_alnum(c) || c == '_' || c == '.' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

/* ^[+-]?(\d+(\.\d*)?|\.\d+)$ over ASCII; any other character is left to the pure twin
 * (Python's \d also takes digits of other scripts). */
static int price_matches(PyObject *s) {
    if (!PyUnicode_IS_ASCII(s)) {
        return 0;
    }
    const char *p = (const char *)PyUnicode_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), i = 0, before = 0, after = 0;
    if (i < n && (p[i] == '+' || p[i] == '-')) {
        i++;
    }
    while (i < n && is_digit((Py_UCS4)p[i])) {
        i++, before++;
    }
    if (i < n && p[i] == '.') {
        i++;
        while (i < n && is_digit((Py_UCS4)p[i])) {
            i++, after++;
        }
        return i == n && (before > 0 || after > 0);
    }
    return i == n && before > 0;
}

/* ^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$ */
static int id_matches(PyObject *s) {
    if (PyUnicode_GET_LENGTH(s) != ID_LEN || !PyUnicode_IS_ASCII(s)) {
        return 0;
    }
    const char *p = (const char *)PyUnicode_DATA(s);
    if (memcmp(p, ID_PREFIX, 4) != 0 || p[4] < '0' || p[4] > '7') {
        return 0;
    }
    for (int i = 5; i < ID_LEN; i++) {
        if (crockford[(unsigned char)p[i]] < 0) {
            return 0;
        }
    }
    return 1;
}

static int no_control_characters(PyObject *s) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x20 || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* An exact str of low..high characters. */
static int text_ok(PyObject *v, Py_ssize_t low, Py_ssize_t high) {
    if (!PyUnicode_CheckExact(v)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    return n >= low && n <= high;
}

/* An exact int in low..high. */
static int int_in(PyObject *v, long long low, long long high) {
    if (!PyLong_CheckExact(v)) {
        return 0;
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return x >= low && x <= high;
}

/* Checks one field of `event`; 1 yes, 0 no, -1 an error (the attribute could not be read). */
#define FIELD(name, check)                                                                          \
    do {                                                                                            \
        PyObject *v = PyObject_GetAttr(event, (name));                                              \
        if (v == NULL) {                                                                            \
            return -1;                                                                              \
        }                                                                                           \
        int ok_ = (check);                                                                          \
        Py_DECREF(v);                                                                               \
        if (!ok_) {                                                                                 \
            return 0;                                                                               \
        }                                                                                           \
    } while (0)

/* An id is given (and valid) or left out: empty, or any other false value of a plain type
 * (None, 0, b""); other types are left to the pure twin (their truth may run Python code). */
static int id_ok(PyObject *v) {
    if (PyUnicode_CheckExact(v)) {
        return PyUnicode_GET_LENGTH(v) == 0 || id_matches(v);
    }
    if (v == Py_None) {
        return 1;
    }
    if (PyLong_CheckExact(v) || PyBytes_CheckExact(v) || PyBool_Check(v)) {
        return PyObject_Not(v) == 1;
    }
    return 0;
}

static int plain_fields(PyObject *event) {
    FIELD(s_id, id_ok(v));
    FIELD(s_type, text_ok(v, 1, TYPE_MAX) && type_matches(v));
    FIELD(s_lead_id, text_ok(v, 1, ID_FIELD_MAX) && no_control_characters(v));
    FIELD(s_flow_id, text_ok(v, 1, ID_FIELD_MAX) && no_control_characters(v));
    FIELD(s_entity_id, text_ok(v, 0, ID_FIELD_MAX) && no_control_characters(v));
    FIELD(s_integration, text_ok(v, 0, ID_FIELD_MAX));
    FIELD(s_reason, text_ok(v, 0, REASON_MAX));
    FIELD(s_account_id, text_ok(v, 1, ACCOUNT_MAX) && account_matches(v));
    FIELD(s_timestamp_ms, v == Py_None || int_in(v, 0, MAX_TIMESTAMP_MS));
    FIELD(s_outcome, (PyObject *)Py_TYPE(v) == outcome_type);
    FIELD(s_duration_ms, int_in(v, 0, U32_MAX));
    FIELD(s_response_code, int_in(v, 0, U32_MAX));
    FIELD(s_price, PyUnicode_CheckExact(v) &&
                       (PyUnicode_GET_LENGTH(v) == 0 ||
                        (PyUnicode_GET_LENGTH(v) <= PRICE_MAX && price_matches(v))));
    return 1;
}

static PyObject *plain_fields_ok(PyObject *self, PyObject *event) {
    int ok = plain_fields(event);
    if (ok < 0) {
        return NULL;
    }
    return PyBool_FromLong(ok);
}

/* A JSON scalar of an exact type the contract admits: 1; not a scalar: 0; a bad scalar: -1. */
static int scalar_ok(PyObject *v) {
    if (v == Py_None || v == Py_True || v == Py_False || PyUnicode_CheckExact(v)) {
        return 1;
    }
    if (PyLong_CheckExact(v)) {
        return int_in(v, INT64_MIN, INT64_MAX) ? 1 : -1;
    }
    if (PyFloat_CheckExact(v)) {
        return isfinite(PyFloat_AS_DOUBLE(v)) ? 1 : -1;
    }
    return 0;
}

static int value_ok(PyObject *v, int depth) {
    int scalar = scalar_ok(v);
    if (scalar != 0) {
        return scalar > 0;
    }
    if (depth >= MAX_DEPTH) {
        return 0;
    }
    if (PyDict_CheckExact(v)) {
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(v, &pos, &key, &item)) {
            if (!PyUnicode_CheckExact(key) || !value_ok(item, depth + 1)) {
                return 0;
            }
        }
        return 1;
    }
    if (PyList_CheckExact(v) || PyTuple_CheckExact(v)) {
        /* Nothing here runs Python code, so the list cannot change while it is walked. */
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        PyObject **items = PySequence_Fast_ITEMS(v);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!value_ok(items[i], depth + 1)) {
                return 0;
            }
        }
        return 1;
    }
    return 0;
}

static PyObject *json_object_ok(PyObject *self, PyObject *value) {
    if (!PyDict_CheckExact(value)) {
        Py_RETURN_FALSE;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *item;
    while (PyDict_Next(value, &pos, &key, &item)) {
        if (!text_ok(key, 1, FIELD_NAME_MAX) || !value_ok(item, 1)) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

static PyObject *id_key(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "id_key(prefix: bytes, event_id: str)");
        return NULL;
    }
    PyObject *id = args[1];
    if (!id_matches(id)) {
        PyErr_Format(PyExc_ValueError, "%R is not a valid event id", id);
        return NULL;
    }
    Py_ssize_t plen = PyBytes_GET_SIZE(args[0]);
    PyObject *out = PyBytes_FromStringAndSize(NULL, plen + 16);
    if (out == NULL) {
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(o, PyBytes_AS_STRING(args[0]), (size_t)plen);
    /* 26 digits of 5 bits: 130 bits, the top two zero (the first digit is 0..7). */
    const char *p = (const char *)PyUnicode_DATA(id) + 4;
    uint64_t hi = 0, lo = 0;
    for (int i = 0; i < 26; i++) {
        hi = (hi << 5) | (lo >> 59);
        lo = (lo << 5) | (uint64_t)crockford[(unsigned char)p[i]];
    }
    for (int i = 0; i < 8; i++) {
        o[plen + i] = (unsigned char)(hi >> (56 - 8 * i));
        o[plen + 8 + i] = (unsigned char)(lo >> (56 - 8 * i));
    }
    return out;
}

static PyMethodDef methods[] = {
    {"plain_fields_ok", (PyCFunction)plain_fields_ok, METH_O,
     "Every field but details and lead obeys the contract (no messages)."},
    {"json_object_ok", (PyCFunction)json_object_ok, METH_O,
     "A details or lead object the contract admits, its size aside."},
    {"id_key", (PyCFunction)(void (*)(void))id_key, METH_FASTCALL,
     "prefix followed by the 16 bytes of a valid event id."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ingest", "The write path's checks and keys (compiled twin of _ingest_py).",
    -1, methods,
};

static int intern(PyObject **slot, const char *name) {
    *slot = PyUnicode_InternFromString(name);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__ingest(void) {
    const char *alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    memset(crockford, -1, sizeof crockford);
    for (int i = 0; i < 32; i++) {
        crockford[(unsigned char)alphabet[i]] = (int8_t)i;
    }
    if (intern(&s_id, "id") || intern(&s_type, "type") || intern(&s_lead_id, "lead_id") ||
        intern(&s_flow_id, "flow_id") || intern(&s_entity_id, "entity_id") ||
        intern(&s_integration, "integration") || intern(&s_reason, "reason") ||
        intern(&s_account_id, "account_id") || intern(&s_timestamp_ms, "timestamp_ms") ||
        intern(&s_outcome, "outcome") || intern(&s_duration_ms, "duration_ms") ||
        intern(&s_response_code, "response_code") || intern(&s_price, "price")) {
        return NULL;
    }
    PyObject *event_module = PyImport_ImportModule("leadtrail.storage.event");
    if (event_module == NULL) {
        return NULL;
    }
    outcome_type = PyObject_GetAttrString(event_module, "Outcome");
    Py_DECREF(event_module);
    if (outcome_type == NULL) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL || PyModule_AddStringConstant(m, "IMPLEMENTATION", "compiled") < 0) {
        Py_XDECREF(m);
        return NULL;
    }
    return m;
}
