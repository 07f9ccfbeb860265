/* The fast lane: runs of plain files and directories created in C, many per call.
 *
 * create_files(buffer, pos, dir_fd, prefix, owner_uid, owner_gid, chown_all)
 *     -> (end, names, dirs, other_dir)
 *
 * Starting at `pos` in `buffer` (decompressed layer tar), take entries one by
 * one while each is the simplest kind of tar member: a ustar/v7 regular file
 * ('0' or NUL) or directory ('5') with plain octal fields and a valid
 * checksum, permission bits only (no setuid/setgid/sticky), whose name is
 * `prefix` (a directory, with its '/') followed by one ASCII component that
 * is not ".", "..", or a whiteout (".wh." prefix) — a directory's with one
 * trailing '/' allowed — and whose headers and data lie wholly in `buffer`.
 * The name is the header's name field (the ustar prefix field must be empty)
 * or the value of a PAX header ('x') before it that holds a single "path"
 * record: how Go's archive/tar and Python's tarfile write names past 100 bytes.
 *
 * Each is made in directory `dir_fd` as the Python applier would, under the
 * caller's umask 0: a file with openat(O_CREAT|O_EXCL|O_NOFOLLOW) and its mode,
 * its data written, fchown to its uid:gid unless that is (owner_uid,
 * owner_gid) and not `chown_all` (a setgid parent), and futimens to its mtime;
 * a directory with mkdirat and its mode, and the same owner rule (none is
 * made in a setgid parent, whose group it would inherit). Directory times are
 * left to the caller, which sets them after the last layer.
 *
 * The lane stops, without consuming it, at the first entry that is anything
 * else, or whose create fails (an existing name, for instance): the Python
 * reader and applier then handle that entry with the full rules.  If a step
 * after the create fails, what was made is removed first, so the Python path
 * meets the same state and reports the error itself.
 *
 * Returns the offset after the last entry taken; the names made, in order;
 * (name, inode, mtime) of the directories among them; and — when the lane
 * stopped at an entry that is all of the above but in another directory —
 * that directory as named (with its '/'), so the caller may check it and go
 * on there; else None.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 512
#define NAME_FIELD 100
#define WHITEOUT ".wh."
#define NAME_MAX_BYTES 255
#define PAX_PATH_MAX 4096

typedef struct {
    Py_ssize_t name_off, name_len;
    int is_dir;
    unsigned long long inode, mtime;
} taken_name;

/* An octal field padded with spaces or NULs on either side; 0 if it is anything else. */
static int parse_octal(const unsigned char *field, int width, unsigned long long *value)
{
    int start = 0, end = width;
    while (start < end && (field[start] == ' ' || field[start] == '\0'))
        start++;
    while (end > start && (field[end - 1] == ' ' || field[end - 1] == '\0'))
        end--;
    if (start == end)
        return 0;
    unsigned long long v = 0;
    for (int i = start; i < end; i++) {
        if (field[i] < '0' || field[i] > '7')
            return 0;
        v = v * 8 + (unsigned long long)(field[i] - '0');
    }
    *value = v;
    return 1;
}

static int checksum_ok(const unsigned char *h, unsigned long long stored)
{
    unsigned long long sum = 8 * ' ';
    for (int i = 0; i < BLOCK; i++)
        if (i < 148 || i >= 156)
            sum += h[i];
    return sum == stored;
}

/* Where the last component of `name` starts, if it is a plain ASCII name (not empty, not
 * "." or "..", not a whiteout, at most NAME_MAX bytes); -1 if it is not. */
static Py_ssize_t plain_base(const unsigned char *name, Py_ssize_t len)
{
    Py_ssize_t start = len;
    while (start > 0 && name[start - 1] != '/')
        start--;
    const unsigned char *base = name + start;
    Py_ssize_t n = len - start;
    if (n == 0 || n > NAME_MAX_BYTES)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (base[i] == '\0' || base[i] >= 0x80)
            return -1;
    if ((n == 1 && base[0] == '.') || (n == 2 && base[0] == '.' && base[1] == '.'))
        return -1;
    if (n >= 4 && memcmp(base, WHITEOUT, 4) == 0)
        return -1;
    return start;
}

/* Parse the numeric fields and check the checksum: 0 unless all are plain octal. */
static int plain_fields(const unsigned char *h, unsigned long long *mode, unsigned long long *uid,
                        unsigned long long *gid, unsigned long long *size,
                        unsigned long long *mtime)
{
    unsigned long long sum;
    return parse_octal(h + 100, 8, mode) && parse_octal(h + 108, 8, uid)
           && parse_octal(h + 116, 8, gid) && parse_octal(h + 124, 12, size)
           && parse_octal(h + 136, 12, mtime) && parse_octal(h + 148, 8, &sum)
           && checksum_ok(h, sum);
}

/* PAX data that is exactly one record "LEN path=VALUE\n": set *value and *value_len. */
static int pax_path_only(const unsigned char *data, unsigned long long size,
                         const unsigned char **value, Py_ssize_t *value_len)
{
    unsigned long long i = 0, len = 0;
    while (i < size && i < 6 && data[i] >= '0' && data[i] <= '9')
        len = len * 10 + (unsigned long long)(data[i++] - '0');
    if (i == 0 || data[0] == '0' || len != size || i + 7 > size
        || memcmp(data + i, " path=", 6) != 0 || data[size - 1] != '\n')
        return 0;
    *value = data + i + 6;
    *value_len = (Py_ssize_t)(size - i - 7);
    return *value_len > 0;
}

static int write_all(int fd, const unsigned char *data, unsigned long long size)
{
    while (size) {
        size_t chunk = size > (1u << 30) ? (1u << 30) : (size_t)size;
        ssize_t n = write(fd, data, chunk);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        if (n == 0)
            return 0;
        data += n;
        size -= (unsigned long long)n;
    }
    return 1;
}

/* Create one file; 0 if anything failed (and then nothing is left behind). */
static int create_one(int dir_fd, const char *name, unsigned mode, const unsigned char *data,
                      unsigned long long size, unsigned long long uid, unsigned long long gid,
                      int chown_needed, unsigned long long mtime)
{
    int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return 0;
    struct timespec times[2] = {{(time_t)mtime, 0}, {(time_t)mtime, 0}};
    int ok = write_all(fd, data, size) && (!chown_needed || fchown(fd, (uid_t)uid, (gid_t)gid) == 0)
             && futimens(fd, times) == 0;
    if (close(fd) != 0)
        ok = 0;
    if (!ok)
        unlinkat(dir_fd, name, 0);
    return ok;
}

/* Make one directory; 0 if anything failed (and then nothing is left behind). */
static int make_dir(int dir_fd, const char *name, unsigned mode, unsigned long long uid,
                    unsigned long long gid, int chown_needed, unsigned long long *inode)
{
    struct stat st;
    if (mkdirat(dir_fd, name, mode) != 0)
        return 0;
    if ((chown_needed && fchownat(dir_fd, name, (uid_t)uid, (gid_t)gid, AT_SYMLINK_NOFOLLOW) != 0)
        || fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        unlinkat(dir_fd, name, AT_REMOVEDIR);
        return 0;
    }
    *inode = (unsigned long long)st.st_ino;
    return 1;
}

static PyObject *create_files(PyObject *module, PyObject *args)
{
    Py_buffer buffer, prefix;
    Py_ssize_t pos;
    int dir_fd, chown_all;
    unsigned long long owner_uid, owner_gid;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*niy*KKp", &buffer, &pos, &dir_fd, &prefix, &owner_uid,
                          &owner_gid, &chown_all))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t len = buffer.len, count = 0, other_dir_len = 0;
    const unsigned char *other_dir = NULL;
    taken_name *taken = NULL;
    if (pos < 0 || pos > len) {
        PyErr_SetString(PyExc_ValueError, "create_files: position outside the buffer");
        goto done;
    }
    taken = PyMem_Malloc(sizeof(*taken) * (size_t)((len - pos) / BLOCK + 1));
    if (taken == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *buf = buffer.buf;
    const char *pre = prefix.buf;
    Py_BEGIN_ALLOW_THREADS
    while (len - pos >= BLOCK) {
        const unsigned char *h = buf + pos, *name;
        unsigned long long mode, uid, gid, size, mtime;
        Py_ssize_t name_len, base_off, base_len, start = pos;
        if (!plain_fields(h, &mode, &uid, &gid, &size, &mtime))
            break;
        if (h[156] == 'x') {  /* a PAX header with one "path" record, then the file */
            unsigned long long pax_stored = (size + BLOCK - 1) / BLOCK * BLOCK;
            if (size > PAX_PATH_MAX || pax_stored + BLOCK > (unsigned long long)(len - pos - BLOCK)
                || !pax_path_only(h + BLOCK, size, &name, &name_len))
                break;
            h += BLOCK + pax_stored;
            pos += BLOCK + (Py_ssize_t)pax_stored;
            if (!plain_fields(h, &mode, &uid, &gid, &size, &mtime)) {
                pos = start;
                break;
            }
        } else {
            const unsigned char *nul = memchr(h, '\0', NAME_FIELD);
            name = h;
            name_len = nul ? nul - h : NAME_FIELD;
            if (memcmp(h + 257, "ustar\0", 6) == 0 && h[345] != '\0')
                break;  /* the ustar prefix field extends the name */
        }
        int is_dir = h[156] == '5';
        if (is_dir && name_len > 0 && name[name_len - 1] == '/')
            name_len--;
        unsigned long long stored = is_dir ? 0 : (size + BLOCK - 1) / BLOCK * BLOCK;
        base_off = plain_base(name, name_len);
        if ((h[156] != '0' && h[156] != '\0' && !is_dir) || mode & 07000 || base_off < 0
            || (is_dir && chown_all) || stored > (unsigned long long)(len - pos - BLOCK)) {
            pos = start;  /* not plain, or a new directory would inherit a setgid group,
                             or the data continues in the next chunk */
            break;
        }
        if (base_off != prefix.len || memcmp(name, pre, (size_t)base_off) != 0) {
            other_dir = name;  /* a plain entry, but in another directory */
            other_dir_len = base_off;
            pos = start;
            break;
        }
        base_len = name_len - base_off;
        char base[NAME_MAX_BYTES + 1];
        memcpy(base, name + base_off, (size_t)base_len);
        base[base_len] = '\0';
        int chown_needed = chown_all || uid != owner_uid || gid != owner_gid;
        unsigned long long inode = 0;
        if (is_dir ? !make_dir(dir_fd, base, (unsigned)(mode & 0777), uid, gid, chown_needed,
                               &inode)
                   : !create_one(dir_fd, base, (unsigned)(mode & 0777), h + BLOCK, size, uid,
                                 gid, chown_needed, mtime)) {
            pos = start;
            break;
        }
        taken[count] = (taken_name){(name - buf) + base_off, base_len, is_dir, inode, mtime};
        count++;
        pos += BLOCK + (Py_ssize_t)stored;
    }
    Py_END_ALLOW_THREADS
    PyObject *names = PyList_New(count), *dirs = PyList_New(0);
    if (names == NULL || dirs == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyUnicode_DecodeASCII((const char *)buf + taken[i].name_off,
                                               taken[i].name_len, "strict");
        if (name == NULL)
            goto fail;
        PyList_SET_ITEM(names, i, name);
        if (taken[i].is_dir) {
            PyObject *made = Py_BuildValue("(OKK)", name, taken[i].inode, taken[i].mtime);
            if (made == NULL || PyList_Append(dirs, made) != 0) {
                Py_XDECREF(made);
                goto fail;
            }
            Py_DECREF(made);
        }
    }
    if (other_dir != NULL)
        result = Py_BuildValue("(nNNy#)", pos, names, dirs, other_dir, other_dir_len);
    else
        result = Py_BuildValue("(nNNO)", pos, names, dirs, Py_None);
    goto done;
fail:
    Py_XDECREF(names);
    Py_XDECREF(dirs);
done:
    PyMem_Free(taken);
    PyBuffer_Release(&buffer);
    PyBuffer_Release(&prefix);
    return result;
}

static PyMethodDef methods[] = {
    {"create_files", create_files, METH_VARARGS,
     "create_files(buffer, pos, dir_fd, prefix, owner_uid, owner_gid, chown_all)"
     " -> (end, names, dirs, other_dir): make a run of plain files and directories."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastlane", "Plain files and directories made in C, a run at a time.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastlane(void)
{
    return PyModule_Create(&module_def);
}
