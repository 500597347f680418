/*
 * ledger._merkle_accel: optional C speed-up for the RFC 9162 Merkle hot paths.
 *
 * The pure-Python code in ledger/merkle.py and ledger/audit.py is the reference and
 * the fallback; this module only computes hashes faster, and every security decision
 * (index/size/proof-length checks, comparing the result with the signed root) stays in
 * Python. SHA-256 is OpenSSL's (libcrypto), never our own.
 *
 *   node hash, RFC 9162 §2.1.1:  HASH(0x01 || left || right), 32-byte SHA-256 hashes.
 *
 *   inclusion_root(leaf_hash, index, inner, proof) -> bytes
 *       The root an inclusion proof leads to (RFC 9162 §2.1.3.2), in the split form of
 *       transparency-dev/merkle: the first ``inner`` proof hashes are siblings below the
 *       point where the paths to ``index`` and ``size - 1`` part, on the left when bit i
 *       of ``index`` is 1 and on the right when it is 0; the remaining hashes are left
 *       siblings on the tree's right border.
 *   perfect_root(hashes) -> bytes
 *       MTH (RFC 9162 §2.1.1) of a power-of-two number of leaf hashes.
 *   leaf_hashes(entries) -> list[bytes]
 *       Leaf hashes HASH(0x00 || entry) (RFC 9162 §2.1.1) of many entries, for the audit.
 *
 * Every argument is validated: a hash or entry that is not ``bytes`` raises TypeError, a
 * hash that is not exactly 32 bytes ValueError (ledger.merkle turns both into
 * MalformedProofError).
 * The GIL is held throughout: a proof takes microseconds, and the audit runs its chunks
 * in worker processes, not threads, so releasing it would not help anything measured.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L  /* OpenSSL 1.1: no fetch, no Init_ex2 */
#define EVP_DigestInit_ex2(ctx, md, params) EVP_DigestInit_ex((ctx), (md), NULL)
#endif

#define HASH_SIZE 32
#define NODE_INPUT (1 + 2 * HASH_SIZE)

/* SHA-256, looked up once at import: with OpenSSL 3 a fetch per hash (what the one-shot
 * SHA256() and EVP_get_digestbyname paths do) would cost more than the hash itself. */
static EVP_MD *sha256_md;

/* HASH(0x01 || left || right) into out, with a context the caller owns and reuses. */
static int
node(EVP_MD_CTX *ctx, const unsigned char *left, const unsigned char *right,
     unsigned char *out)
{
    unsigned char buf[NODE_INPUT];
    buf[0] = 0x01;
    memcpy(buf + 1, left, HASH_SIZE);
    memcpy(buf + 1 + HASH_SIZE, right, HASH_SIZE);
    /* One context per call, re-initialised per hash: ~250 ns per node on the dev VM
     * (OpenSSL 3.0, SHA-NI) against ~375 ns for EVP_Digest, which allocates a context
     * every time. */
    return EVP_DigestInit_ex2(ctx, sha256_md, NULL)
        && EVP_DigestUpdate(ctx, buf, NODE_INPUT)
        && EVP_DigestFinal_ex(ctx, out, NULL);
}

/* The 32 bytes of a hash argument, or NULL with TypeError/ValueError set. `exact`:
 * refuse bytes subclasses, as ledger.merkle does for proof hashes (type(p) is bytes);
 * the leaf hash, like there, may be a subclass (isinstance). */
static const unsigned char *
hash_bytes(PyObject *obj, int exact, const char *what, Py_ssize_t i)
{
    if (exact ? !PyBytes_CheckExact(obj) : !PyBytes_Check(obj)) {
        if (i < 0)
            PyErr_Format(PyExc_TypeError, "%s is not bytes", what);
        else
            PyErr_Format(PyExc_TypeError, "%s %zd is not bytes", what, i);
        return NULL;
    }
    if (PyBytes_GET_SIZE(obj) != HASH_SIZE) {
        if (i < 0)
            PyErr_Format(PyExc_ValueError, "%s is not a %d-byte hash", what, HASH_SIZE);
        else
            PyErr_Format(PyExc_ValueError, "%s %zd is not a %d-byte hash", what, i,
                         HASH_SIZE);
        return NULL;
    }
    return (const unsigned char *)PyBytes_AS_STRING(obj);
}

static PyObject *
hash_failed(void)
{
    ERR_clear_error();  /* leave no stale error for hashlib's later calls */
    PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
    return NULL;
}

PyDoc_STRVAR(inclusion_root_doc,
"inclusion_root(leaf_hash, index, inner, proof, /) -> bytes\n\n"
"The root that an RFC 9162 \xc2\xa7" "2.1.3.2 inclusion proof leads to. The first `inner`\n"
"hashes of `proof` are placed left of the running hash when bit i of `index` is 1,\n"
"right when it is 0; the rest are placed left. The caller checks index < size, the\n"
"proof length and compares the result with the root. OverflowError: index >= 2**64.");

static PyObject *
inclusion_root(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "inclusion_root expected 4 arguments, got %zd", nargs);
        return NULL;
    }
    const unsigned char *leaf = hash_bytes(args[0], 0, "leaf hash", -1);
    if (leaf == NULL)
        return NULL;
    /* Only bits below `inner` are used; larger bits of an index < 2**64 are zero. */
    unsigned long long index = PyLong_AsUnsignedLongLong(args[1]);
    if (index == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t inner = PyLong_AsSsize_t(args[2]);
    if (inner == -1 && PyErr_Occurred())
        return NULL;
    PyObject *seq = PySequence_Fast(args[3], "proof must be a sequence of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (inner < 0 || inner > n) {
        PyErr_Format(PyExc_ValueError, "inner %zd outside 0..%zd", inner, n);
        Py_DECREF(seq);
        return NULL;
    }
    /* Validate every proof hash before hashing anything. */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (hash_bytes(items[i], 1, "proof hash", i) == NULL) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    unsigned char r[HASH_SIZE];
    memcpy(r, leaf, HASH_SIZE);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(items[i]);
        int right = i < inner && !(i < 64 && (index >> i) & 1);  /* sibling on the right */
        ok = right ? node(ctx, r, p, r) : node(ctx, p, r, r);
    }
    EVP_MD_CTX_free(ctx);
    Py_DECREF(seq);
    if (!ok)
        return hash_failed();
    return PyBytes_FromStringAndSize((const char *)r, HASH_SIZE);
}

PyDoc_STRVAR(perfect_root_doc,
"perfect_root(hashes, /) -> bytes\n\n"
"RFC 9162 \xc2\xa7" "2.1.1 MTH of a power-of-two number (>= 1) of 32-byte leaf hashes.");

static PyObject *
perfect_root(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyObject *seq = PySequence_Fast(arg, "hashes must be a sequence of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (n < 1 || (n & (n - 1)) != 0) {
        PyErr_Format(PyExc_ValueError, "%zd hashes is not a power of two", n);
        Py_DECREF(seq);
        return NULL;
    }
    if (n > PY_SSIZE_T_MAX / HASH_SIZE) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    unsigned char *buf = PyMem_Malloc((size_t)n * HASH_SIZE);
    if (buf == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *h = hash_bytes(items[i], 1, "hash", i);
        if (h == NULL) {
            PyMem_Free(buf);
            Py_DECREF(seq);
            return NULL;
        }
        memcpy(buf + i * HASH_SIZE, h, HASH_SIZE);
    }
    Py_DECREF(seq);
    /* One level at a time, in place: node i of the next level overwrites slot i, whose
     * old value (read when making node i / 2) is no longer needed. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL;
    for (Py_ssize_t width = n; ok && width > 1; width /= 2) {
        for (Py_ssize_t i = 0; ok && i < width / 2; i++) {
            ok = node(ctx, buf + 2 * i * HASH_SIZE, buf + (2 * i + 1) * HASH_SIZE,
                      buf + i * HASH_SIZE);
        }
    }
    EVP_MD_CTX_free(ctx);
    PyObject *root = ok ? PyBytes_FromStringAndSize((const char *)buf, HASH_SIZE)
                        : hash_failed();
    PyMem_Free(buf);
    return root;
}

PyDoc_STRVAR(leaf_hashes_doc,
"leaf_hashes(entries, /) -> list[bytes]\n\n"
"RFC 9162 \xc2\xa7" "2.1.1 leaf hashes HASH(0x00 || entry) of a sequence of bytes.");

static PyObject *
leaf_hashes(PyObject *Py_UNUSED(module), PyObject *arg)
{
    static const unsigned char leaf_prefix = 0x00;
    PyObject *seq = PySequence_Fast(arg, "entries must be a sequence of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (out == NULL)  /* MemoryError already set */
        goto fail;
    if (ctx == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Item by item, not a cached items array: nothing here runs Python code, but
         * this keeps the loop safe even if something did and resized the list. */
        if (i >= PySequence_Fast_GET_SIZE(seq)) {
            PyErr_SetString(PyExc_RuntimeError, "entries changed size");
            goto fail;
        }
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_CheckExact(item)) {
            PyErr_Format(PyExc_TypeError, "entry %zd is not bytes", i);
            goto fail;
        }
        unsigned char h[HASH_SIZE];
        if (!(EVP_DigestInit_ex2(ctx, sha256_md, NULL)
              && EVP_DigestUpdate(ctx, &leaf_prefix, 1)
              && EVP_DigestUpdate(ctx, PyBytes_AS_STRING(item),
                                  (size_t)PyBytes_GET_SIZE(item))
              && EVP_DigestFinal_ex(ctx, h, NULL))) {
            hash_failed();
            goto fail;
        }
        PyObject *b = PyBytes_FromStringAndSize((const char *)h, HASH_SIZE);
        if (b == NULL)
            goto fail;
        PyList_SET_ITEM(out, i, b);
    }
    EVP_MD_CTX_free(ctx);
    Py_DECREF(seq);
    return out;
fail:
    EVP_MD_CTX_free(ctx);
    Py_XDECREF(out);
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef methods[] = {
    {"inclusion_root", (PyCFunction)(void (*)(void))inclusion_root, METH_FASTCALL,
     inclusion_root_doc},
    {"perfect_root", perfect_root, METH_O, perfect_root_doc},
    {"leaf_hashes", leaf_hashes, METH_O, leaf_hashes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ledger._merkle_accel",
    .m_doc = "Optional C speed-up of ledger.merkle (RFC 9162 node hashing, OpenSSL SHA-256).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__merkle_accel(void)
{
    if (sha256_md == NULL) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
        sha256_md = (EVP_MD *)EVP_sha256();
#endif
        if (sha256_md == NULL) {
            PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
            return NULL;
        }
    }
    return PyModule_Create(&module_def);
}
