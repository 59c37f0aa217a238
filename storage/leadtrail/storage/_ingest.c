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

/* prefix + the 16 bytes of a valid event id (ValueError for anything else). */
static PyObject *new_id_key(PyObject *prefix, PyObject *id) {
    if (!PyBytes_Check(prefix) || !PyUnicode_Check(id)) {
        PyErr_SetString(PyExc_TypeError, "id_key(prefix: bytes, event_id: str)");
        return NULL;
    }
    if (!id_matches(id)) {
        PyErr_Format(PyExc_ValueError, "%R is not a valid event id", id);
        return NULL;
    }
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix);
    PyObject *out = PyBytes_FromStringAndSize(NULL, plen + 16);
    if (out == NULL) {
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(o, PyBytes_AS_STRING(prefix), (size_t)plen);
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

static PyObject *id_key(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "id_key(prefix: bytes, event_id: str)");
        return NULL;
    }
    return new_id_key(args[0], args[1]);
}



/* -- a group's index rows (index_rows) ----------------------------------------------------- */

static PyObject *s_event, *s_segment_base, *s_offset, *s_raw_bytes, *s_id_key, *s_position,
    *s_recorded_at_ms, *k_account, *k_type, *k_flow, *k_entity;

#define U48_MAX ((1LL << 48) - 1)

/* An int attribute as a long long, clamped to 0..U48_MAX (None counts as 0). -1 on error. */
static int clamped_u48(PyObject *v, long long *out) {
    if (v == Py_None) {
        *out = 0;
        return 0;
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow) {
        x = overflow > 0 ? U48_MAX : 0;
    }
    *out = x < 0 ? 0 : (x > U48_MAX ? U48_MAX : x);
    return 0;
}

static void put_be(unsigned char *o, unsigned long long v, int n) {
    for (int i = n - 1; i >= 0; i--) {
        o[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

/* (key, value) appended to `list`; steals neither reference. */
static int append_row(PyObject *list, PyObject *key, PyObject *value) {
    PyObject *row = PyTuple_Pack(2, key, value);
    if (row == NULL) {
        return -1;
    }
    int rc = PyList_Append(list, row);
    Py_DECREF(row);
    return rc;
}

/* prefix + suffix as a new bytes object. */
static PyObject *concat(PyObject *prefix, PyObject *suffix) {
    if (!PyBytes_Check(prefix) || !PyBytes_Check(suffix)) {
        PyErr_SetString(PyExc_TypeError, "index key parts must be bytes");
        return NULL;
    }
    Py_ssize_t a = PyBytes_GET_SIZE(prefix), b = PyBytes_GET_SIZE(suffix);
    PyObject *out = PyBytes_FromStringAndSize(NULL, a + b);
    if (out != NULL) {
        memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(prefix), (size_t)a);
        memcpy(PyBytes_AS_STRING(out) + a, PyBytes_AS_STRING(suffix), (size_t)b);
    }
    return out;
}

/* The key of `name` under the account `acct` in `cache` (name -> key), made once:
 * acct + number(kind, name), or acct + lead_hash(name) when kind is NULL. Borrowed. */
static PyObject *cached_key(PyObject *cache, PyObject *acct, PyObject *kind, PyObject *name,
                            PyObject *number, PyObject *lead_hash) {
    PyObject *key = PyDict_GetItemWithError(cache, name);
    if (key != NULL || PyErr_Occurred()) {
        return key;
    }
    PyObject *suffix = kind != NULL ? PyObject_CallFunctionObjArgs(number, kind, name, NULL)
                                    : PyObject_CallOneArg(lead_hash, name);
    if (suffix == NULL) {
        return NULL;
    }
    key = concat(acct, suffix);
    Py_DECREF(suffix);
    if (key == NULL) {
        return NULL;
    }
    int rc = PyDict_SetItem(cache, name, key);
    Py_DECREF(key);
    return rc < 0 ? NULL : key; /* the cache holds it */
}

/* One account's caches: (types, flows, entities, leads), name -> key. Borrowed. */
static PyObject *account_caches(PyObject *by_account, PyObject *acct) {
    PyObject *caches = PyDict_GetItemWithError(by_account, acct);
    if (caches != NULL || PyErr_Occurred()) {
        return caches;
    }
    caches = Py_BuildValue("(NNNN)", PyDict_New(), PyDict_New(), PyDict_New(), PyDict_New());
    if (caches == NULL) {
        return NULL;
    }
    int rc = PyDict_SetItem(by_account, acct, caches);
    Py_DECREF(caches);
    return rc < 0 ? NULL : caches;
}

typedef struct {
    PyObject *item, *event, *account, *base_obj, *offset_obj, *raw_obj, *id_key, *event_id, *position_obj,
        *timestamp_obj, *recorded_obj, *lead_id, *type, *flow_id, *entity_id;
} ItemFields;

static void fields_clear(ItemFields *f) {
    Py_CLEAR(f->event);
    Py_CLEAR(f->account);
    Py_CLEAR(f->base_obj);
    Py_CLEAR(f->offset_obj);
    Py_CLEAR(f->raw_obj);
    Py_CLEAR(f->id_key);
    Py_CLEAR(f->event_id);
    Py_CLEAR(f->position_obj);
    Py_CLEAR(f->timestamp_obj);
    Py_CLEAR(f->recorded_obj);
    Py_CLEAR(f->lead_id);
    Py_CLEAR(f->type);
    Py_CLEAR(f->flow_id);
    Py_CLEAR(f->entity_id);
}

static int fields_read(ItemFields *f, PyObject *item) {
    memset(f, 0, sizeof *f);
    f->item = item;
#define GET(slot, obj, name)                                                                        \
    if (((slot) = PyObject_GetAttr((obj), (name))) == NULL) {                                       \
        return -1;                                                                                  \
    }
    GET(f->event, item, s_event);
    GET(f->base_obj, item, s_segment_base);
    GET(f->offset_obj, item, s_offset);
    GET(f->raw_obj, item, s_raw_bytes);
    GET(f->id_key, item, s_id_key);
    GET(f->account, f->event, s_account_id);
    GET(f->event_id, f->event, s_id);
    GET(f->position_obj, f->event, s_position);
    GET(f->timestamp_obj, f->event, s_timestamp_ms);
    GET(f->recorded_obj, f->event, s_recorded_at_ms);
    GET(f->lead_id, f->event, s_lead_id);
    GET(f->type, f->event, s_type);
    GET(f->flow_id, f->event, s_flow_id);
    GET(f->entity_id, f->event, s_entity_id);
#undef GET
    return 0;
}

static PyObject *index_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "index_rows(located, number, lead_hash)");
        return NULL;
    }
    PyObject *number = args[1], *lead_hash = args[2];
    /* A tuple of the items: the callbacks run Python code, which must not be able to
     * change what is being walked. */
    PyObject *seq = PySequence_Tuple(args[0]);
    if (seq == NULL) {
        return NULL;
    }
    PyObject *lists[7] = {NULL}; /* ids, positions, lead, type, time, flow, entity */
    PyObject *segacct = PyDict_New(), *accounts = PyDict_New(), *by_account = PyDict_New(),
             *base_keys = PyDict_New(), *raw = PyLong_FromLong(0), *result = NULL;
    ItemFields f;
    memset(&f, 0, sizeof f);
    if (segacct == NULL || accounts == NULL || by_account == NULL || base_keys == NULL || raw == NULL) {
        goto done;
    }
    for (int i = 0; i < 7; i++) {
        if ((lists[i] = PyList_New(0)) == NULL) {
            goto done;
        }
    }
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (fields_read(&f, PyTuple_GET_ITEM(seq, i)) < 0) {
            goto done;
        }
        /* The account's 4 bytes, looked up once a group. */
        PyObject *acct = PyDict_GetItemWithError(accounts, f.account);
        if (acct == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            PyObject *made = PyObject_CallFunctionObjArgs(number, k_account, f.account, NULL);
            if (made == NULL || PyDict_SetItem(accounts, f.account, made) < 0) {
                Py_XDECREF(made);
                goto done;
            }
            Py_DECREF(made);
            acct = made; /* held by `accounts` */
        }
        if (!PyBytes_Check(acct)) {
            PyErr_SetString(PyExc_TypeError, "an account's number must be bytes");
            goto done;
        }
        long long position, timestamp;
        if (clamped_u48(f.position_obj, &position) < 0 || clamped_u48(f.timestamp_obj, &timestamp) < 0) {
            goto done;
        }
        long long exact_position = PyLong_AsLongLong(f.position_obj);
        long long base = PyLong_AsLongLong(f.base_obj);
        long long offset = PyLong_AsLongLong(f.offset_obj);
        if (PyErr_Occurred()) {
            goto done;
        }
        if (exact_position < 0 || exact_position > U48_MAX) {
            PyErr_Format(PyExc_ValueError, "position %lld does not fit 48 bits", exact_position);
            goto done;
        }
        if (exact_position - base < 0 || exact_position - base > (long long)UINT32_MAX || offset < 0 ||
            offset > (long long)UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "a record's place in its segment does not fit 32 bits");
            goto done;
        }
        PyObject *value = PyBytes_FromStringAndSize(NULL, 12);
        if (value == NULL) {
            goto done;
        }
        put_be((unsigned char *)PyBytes_AS_STRING(value), (unsigned long long)timestamp, 6);
        put_be((unsigned char *)PyBytes_AS_STRING(value) + 6, (unsigned long long)position, 6);
        int failed = 0;
        /* ids: account + id -> position (6 bytes) */
        PyObject *id_key = f.id_key != Py_None ? (Py_INCREF(f.id_key), f.id_key) : new_id_key(acct, f.event_id);
        PyObject *at = PyBytes_FromStringAndSize(NULL, 6);
        if (id_key == NULL || at == NULL) {
            failed = 1;
        } else {
            put_be((unsigned char *)PyBytes_AS_STRING(at), (unsigned long long)exact_position, 6);
            failed = append_row(lists[0], id_key, at) < 0;
        }
        Py_XDECREF(id_key);
        Py_XDECREF(at);
        /* positions: segment base -> (position - base, offset) */
        PyObject *base_key = NULL;
        if (!failed) {
            base_key = PyDict_GetItemWithError(base_keys, f.base_obj);
            if (base_key == NULL && !PyErr_Occurred()) {
                base_key = PyBytes_FromStringAndSize(NULL, 8);
                if (base_key != NULL) {
                    put_be((unsigned char *)PyBytes_AS_STRING(base_key), (unsigned long long)base, 8);
                    int rc = PyDict_SetItem(base_keys, f.base_obj, base_key);
                    Py_DECREF(base_key);
                    if (rc < 0) {
                        base_key = NULL;
                    }
                }
            }
            PyObject *posoff = PyBytes_FromStringAndSize(NULL, 8);
            if (base_key == NULL || posoff == NULL) {
                failed = 1;
            } else {
                put_be((unsigned char *)PyBytes_AS_STRING(posoff), (unsigned long long)(exact_position - base), 4);
                put_be((unsigned char *)PyBytes_AS_STRING(posoff) + 4, (unsigned long long)offset, 4);
                failed = append_row(lists[1], base_key, posoff) < 0;
            }
            Py_XDECREF(posoff);
        }
        /* lead, type, time, flow, entity: key -> (timestamp, position) */
        PyObject *caches = failed ? NULL : account_caches(by_account, acct);
        if (caches == NULL) {
            failed = 1;
        } else {
            PyObject *key = cached_key(PyTuple_GET_ITEM(caches, 3), acct, NULL, f.lead_id, number, lead_hash);
            failed = key == NULL || append_row(lists[2], key, value) < 0;
            if (!failed) {
                key = cached_key(PyTuple_GET_ITEM(caches, 0), acct, k_type, f.type, number, lead_hash);
                failed = key == NULL || append_row(lists[3], key, value) < 0;
            }
            if (!failed) {
                failed = append_row(lists[4], acct, value) < 0;
            }
            if (!failed) {
                key = cached_key(PyTuple_GET_ITEM(caches, 1), acct, k_flow, f.flow_id, number, lead_hash);
                failed = key == NULL || append_row(lists[5], key, value) < 0;
            }
            if (!failed) {
                int has_entity = PyObject_IsTrue(f.entity_id);
                if (has_entity < 0) {
                    failed = 1;
                } else if (has_entity) {
                    key = cached_key(PyTuple_GET_ITEM(caches, 2), acct, k_entity, f.entity_id, number, lead_hash);
                    failed = key == NULL || append_row(lists[6], key, value) < 0;
                }
            }
        }
        Py_DECREF(value);
        /* segacct: segment base + account -> (min, max) recorded_at */
        if (!failed) {
            PyObject *bounds_key = concat(base_key, acct);
            failed = bounds_key == NULL;
            if (!failed) {
                PyObject *bounds = PyDict_GetItemWithError(segacct, bounds_key);
                if (bounds == NULL && PyErr_Occurred()) {
                    failed = 1;
                } else if (bounds == NULL) {
                    PyObject *pair = PyTuple_Pack(2, f.recorded_obj, f.recorded_obj);
                    failed = pair == NULL || PyDict_SetItem(segacct, bounds_key, pair) < 0;
                    Py_XDECREF(pair);
                } else {
                    PyObject *low = PyTuple_GET_ITEM(bounds, 0), *high = PyTuple_GET_ITEM(bounds, 1);
                    int below = PyObject_RichCompareBool(f.recorded_obj, low, Py_LT);
                    int above = below < 0 ? -1 : PyObject_RichCompareBool(f.recorded_obj, high, Py_GT);
                    if (below < 0 || above < 0) {
                        failed = 1;
                    } else if (below || above) {
                        PyObject *pair = PyTuple_Pack(2, below ? f.recorded_obj : low, above ? f.recorded_obj : high);
                        failed = pair == NULL || PyDict_SetItem(segacct, bounds_key, pair) < 0;
                        Py_XDECREF(pair);
                    }
                }
                Py_DECREF(bounds_key);
            }
        }
        if (!failed) {
            PyObject *sum = PyNumber_Add(raw, f.raw_obj);
            failed = sum == NULL;
            if (sum != NULL) {
                Py_SETREF(raw, sum);
            }
        }
        fields_clear(&f);
        if (failed) {
            goto done;
        }
    }
    result = Py_BuildValue("(OOOOOOOOnO)", lists[0], lists[1], lists[2], lists[3], lists[4], lists[5],
                           lists[6], segacct, n, raw);
done:
    fields_clear(&f);
    for (int i = 0; i < 7; i++) {
        Py_XDECREF(lists[i]);
    }
    Py_XDECREF(segacct);
    Py_XDECREF(accounts);
    Py_XDECREF(by_account);
    Py_XDECREF(base_keys);
    Py_XDECREF(raw);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"plain_fields_ok", (PyCFunction)plain_fields_ok, METH_O,
     "Every field but details and lead obeys the contract (no messages)."},
    {"json_object_ok", (PyCFunction)json_object_ok, METH_O,
     "A details or lead object the contract admits, its size aside."},
    {"id_key", (PyCFunction)(void (*)(void))id_key, METH_FASTCALL,
     "prefix followed by the 16 bytes of a valid event id."},
    {"index_rows", (PyCFunction)(void (*)(void))index_rows, METH_FASTCALL,
     "A group's index rows, unsorted, with its segacct bounds, count and raw bytes."},
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
        intern(&s_response_code, "response_code") || intern(&s_price, "price") ||
        intern(&s_event, "event") || intern(&s_segment_base, "segment_base") || intern(&s_offset, "offset") ||
        intern(&s_raw_bytes, "raw_bytes") || intern(&s_id_key, "id_key") || intern(&s_position, "position") ||
        intern(&s_recorded_at_ms, "recorded_at_ms")) {
        return NULL;
    }
    k_account = PyBytes_FromString("a");
    k_type = PyBytes_FromString("t");
    k_flow = PyBytes_FromString("f");
    k_entity = PyBytes_FromString("e");
    if (k_account == NULL || k_type == NULL || k_flow == NULL || k_entity == NULL) {
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
