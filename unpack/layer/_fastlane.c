/* The fast lane: runs of plain files and directories made in C, many per call.
 *
 * The rules are Python's (unpack.layer.policy and unpack.layer.tarstream); this
 * file only repeats their simplest outcome, and gets its numbers from them:
 *
 *   configure(name_max, path_max, whiteout_prefix)
 *       the policy's NAME_MAX, PATH_MAX and whiteout prefix (fastlane.py calls it
 *       once, from unpack.layer.policy; nothing works before).
 *
 *   parse_plain(buffer, pos) -> None | (name, is_dir, mode, uid, gid, size, mtime, end)
 *       whether the entry at `pos` is a *plain* one, and what it says. Pure: used
 *       by create_run, and by the tests that check it against the Python reader
 *       and policy on generated headers (tests/test_fastlane_rules.py).
 *
 *   create_run(buffer, pos, dir_fd, prefix) -> (end, names, dirs, other_dir)
 *       make the plain entries from `pos` on that lie in directory `prefix` (the
 *       name of `dir_fd` in the tar, with its '/'), or in a directory the run
 *       made there or below (it goes down into the directory it made last in a
 *       directory of the walk, and back up to any directory of the walk).
 *
 * A plain entry is a ustar/v7 regular file ('0' or NUL) or directory ('5') with
 * plain octal fields and a valid checksum, permission bits only (no setuid,
 * setgid or sticky bit), whose name is a directory followed by one ASCII
 * component that is not ".", "..", or a whiteout — a directory's with one
 * trailing '/' allowed — and whose header and data lie wholly in `buffer`. The
 * name is the header's name field (the ustar prefix field must be empty) or the
 * value of a PAX header ('x') before it that holds one "path" record: how Go's
 * archive/tar and Python's tarfile write names past 100 bytes.
 *
 * Each is made in `dir_fd` as the Python applier makes it: a file with
 * openat(O_CREAT|O_EXCL|O_NOFOLLOW) and its data; a directory with mkdirat,
 * then opened (O_NOFOLLOW). Owner and mode are then settled from what fstat
 * says the kernel gave (a setgid or grpid parent's group, a default ACL's mask,
 * the umask), with fchown and fchmod where they differ; a file gets its mtime
 * (directory times are the caller's, after the last layer).
 *
 * The lane stops, without consuming it, at the first entry that is not plain,
 * or whose create fails (an existing name, for instance): the Python reader and
 * applier then handle it with the full rules. If a step after the create fails,
 * what was made is removed first, so the Python path meets the same state and
 * reports the error itself.
 *
 * create_run returns the offset after the last entry taken; the names made, in
 * order, as paths from `prefix` ("f", or "sub/f" below a directory it made);
 * (path, inode, mtime) of the directories among them; and, when it stopped at a
 * plain entry of a directory it could not go to, that directory as named (with its '/'),
 * so the caller may go on there; else None.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 512
#define NAME_FIELD 100
#define MAX_WHITEOUT 16

/* The policy's numbers, set by configure(). */
static struct {
    int ready;
    Py_ssize_t name_max, path_max, whiteout_len;
    char whiteout[MAX_WHITEOUT];
} rules;

/* What a plain entry says (the name points into the buffer). */
typedef struct {
    const unsigned char *name;
    Py_ssize_t name_len, base_off, data_off, end;
    int is_dir;
    unsigned long long mode, uid, gid, size, mtime;
} plain_entry;

typedef struct {
    Py_ssize_t name_off, name_len;
    int is_dir;
    unsigned long long inode, mtime;
} made_name;

/* -- reading ------------------------------------------------------------------------------ */

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

/* The header's checksum (unsigned byte sum, the field counted as spaces) is `stored`. */
static int checksum_ok(const unsigned char *h, unsigned long long stored)
{
    unsigned long long sum = 8 * ' ';
    for (int i = 0; i < BLOCK; i++)
        if (i < 148 || i >= 156)
            sum += h[i];
    return sum == stored;
}

/* The numeric fields, all plain octal, and a valid checksum. */
static int header_fields(const unsigned char *h, plain_entry *e)
{
    unsigned long long sum;
    return parse_octal(h + 100, 8, &e->mode) && parse_octal(h + 108, 8, &e->uid)
           && parse_octal(h + 116, 8, &e->gid) && parse_octal(h + 124, 12, &e->size)
           && parse_octal(h + 136, 12, &e->mtime) && parse_octal(h + 148, 8, &sum)
           && checksum_ok(h, sum);
}

/* PAX data that is exactly one record "LEN path=VALUE\n": its value. */
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

/* Where the last component of `name` starts, if it is a plain ASCII name (not empty, not
 * "." or "..", not a whiteout, at most name_max bytes); -1 if it is not. */
static Py_ssize_t plain_base(const unsigned char *name, Py_ssize_t len)
{
    Py_ssize_t start = len;
    while (start > 0 && name[start - 1] != '/')
        start--;
    const unsigned char *base = name + start;
    Py_ssize_t n = len - start;
    if (n == 0 || n > rules.name_max)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (base[i] == '\0' || base[i] >= 0x80)
            return -1;
    if ((n == 1 && base[0] == '.') || (n == 2 && base[0] == '.' && base[1] == '.'))
        return -1;
    if (n >= rules.whiteout_len && memcmp(base, rules.whiteout, (size_t)rules.whiteout_len) == 0)
        return -1;
    return start;
}

/* Whether the entry at `pos` is plain; if so, what it says. */
static int next_plain(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos, plain_entry *e)
{
    if (len - pos < BLOCK)
        return 0;
    const unsigned char *h = buf + pos;
    if (!header_fields(h, e))
        return 0;
    if (h[156] == 'x') { /* a PAX header with one "path" record, then the entry */
        unsigned long long pax_stored = (e->size + BLOCK - 1) / BLOCK * BLOCK;
        if (e->size > (unsigned long long)rules.path_max
            || pax_stored + BLOCK > (unsigned long long)(len - pos - BLOCK)
            || !pax_path_only(h + BLOCK, e->size, &e->name, &e->name_len))
            return 0;
        pos += BLOCK + (Py_ssize_t)pax_stored;
        h = buf + pos;
        if (!header_fields(h, e))
            return 0;
    } else {
        const unsigned char *nul = memchr(h, '\0', NAME_FIELD);
        e->name = h;
        e->name_len = nul ? nul - h : NAME_FIELD;
        if (memcmp(h + 257, "ustar\0", 6) == 0 && h[345] != '\0')
            return 0; /* the ustar prefix field extends the name */
    }
    e->is_dir = h[156] == '5';
    if (!e->is_dir && h[156] != '0' && h[156] != '\0')
        return 0;
    if (e->is_dir && e->name_len > 0 && e->name[e->name_len - 1] == '/')
        e->name_len--;
    unsigned long long stored = e->is_dir ? 0 : (e->size + BLOCK - 1) / BLOCK * BLOCK;
    e->base_off = plain_base(e->name, e->name_len);
    if (e->mode & 07000 || e->base_off < 0 || stored > (unsigned long long)(len - pos - BLOCK))
        return 0; /* special bits, not a plain name, or the data continues in the next chunk */
    e->mode &= 0777;
    e->data_off = pos + BLOCK;
    e->end = pos + BLOCK + (Py_ssize_t)stored;
    return 1;
}

/* -- making ------------------------------------------------------------------------------- */

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

/* Give the new name behind `fd` the entry's owner and mode, where fstat says it has not. */
static int settle(int fd, const plain_entry *e, struct stat *st)
{
    if (fstat(fd, st) != 0)
        return 0;
    if ((st->st_uid != (uid_t)e->uid || st->st_gid != (gid_t)e->gid)
        && fchown(fd, (uid_t)e->uid, (gid_t)e->gid) != 0)
        return 0;
    return ((unsigned long long)(st->st_mode & 07777) == e->mode) || fchmod(fd, (mode_t)e->mode) == 0;
}

/* Make one file; 0 if anything failed (and then nothing is left behind). */
static int make_file(int dir_fd, const char *base, const plain_entry *e, const unsigned char *data)
{
    int fd = openat(dir_fd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    (mode_t)e->mode);
    if (fd < 0)
        return 0;
    struct stat st;
    struct timespec times[2] = {{(time_t)e->mtime, 0}, {(time_t)e->mtime, 0}};
    int ok = write_all(fd, data, e->size) && settle(fd, e, &st) && futimens(fd, times) == 0;
    if (close(fd) != 0)
        ok = 0;
    if (!ok)
        unlinkat(dir_fd, base, 0);
    return ok;
}

/* Make one directory; 0 if anything failed (and then nothing is left behind). */
static int make_dir(int dir_fd, const char *base, const plain_entry *e, unsigned long long *inode)
{
    if (mkdirat(dir_fd, base, (mode_t)e->mode) != 0)
        return 0;
    struct stat st;
    int fd = openat(dir_fd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int ok = fd >= 0 && settle(fd, e, &st);
    if (fd >= 0 && close(fd) != 0)
        ok = 0;
    if (!ok) {
        unlinkat(dir_fd, base, AT_REMOVEDIR);
        return 0;
    }
    *inode = (unsigned long long)st.st_ino;
    return 1;
}

/* -- the Python functions ------------------------------------------------------------------ */

static PyObject *configure(PyObject *module, PyObject *args)
{
    Py_ssize_t name_max, path_max, whiteout_len;
    const char *whiteout;
    (void)module;
    if (!PyArg_ParseTuple(args, "nns#", &name_max, &path_max, &whiteout, &whiteout_len))
        return NULL;
    if (name_max < 1 || name_max > NAME_MAX || path_max < name_max || whiteout_len < 1
        || whiteout_len >= MAX_WHITEOUT) {
        PyErr_SetString(PyExc_ValueError, "configure: implausible rules");
        return NULL;
    }
    rules.name_max = name_max;
    rules.path_max = path_max;
    memcpy(rules.whiteout, whiteout, (size_t)whiteout_len);
    rules.whiteout_len = whiteout_len;
    rules.ready = 1;
    Py_RETURN_NONE;
}

static int check_ready(void)
{
    if (!rules.ready)
        PyErr_SetString(PyExc_RuntimeError, "_fastlane: configure() has not been called");
    return rules.ready;
}

static PyObject *parse_plain(PyObject *module, PyObject *args)
{
    Py_buffer buffer;
    Py_ssize_t pos;
    plain_entry e;
    (void)module;
    if (!check_ready() || !PyArg_ParseTuple(args, "y*n", &buffer, &pos))
        return NULL;
    PyObject *result = NULL;
    if (pos < 0 || pos > buffer.len)
        PyErr_SetString(PyExc_ValueError, "parse_plain: position outside the buffer");
    else if (!next_plain(buffer.buf, buffer.len, pos, &e))
        result = Py_NewRef(Py_None);
    else
        result = Py_BuildValue("(y#OKKKKKn)", e.name, e.name_len, e.is_dir ? Py_True : Py_False,
                               e.mode, e.uid, e.gid, e.is_dir ? 0ULL : e.size, e.mtime, e.end);
    PyBuffer_Release(&buffer);
    return result;
}

/* The directories a run works in: the one it was given (level 0), and below it the ones
 * it made itself and went into, each opened from its parent (O_NOFOLLOW, one component).
 * `path` holds the deepest one's name as in the tar, with its '/'; a level's name is its
 * first `len` bytes. `last` is the directory the run made last in a level, if any. */
#define MAX_DEPTH 64
typedef struct {
    int fd;
    Py_ssize_t len;
    const unsigned char *last;
    Py_ssize_t last_len;
} level;

typedef struct {
    level at[MAX_DEPTH];
    int depth; /* the current level */
    char path[PATH_MAX + 1];
} walk;

static void leave_to(walk *w, int depth)
{
    while (w->depth > depth)
        close(w->at[w->depth--].fd);
}

/* Make `dir` (an entry's directory, with its '/') the current level, if it is a level of
 * the walk or the directory the run made last in one: 1 if so, else 0. */
static int go_to(walk *w, const unsigned char *dir, Py_ssize_t dir_len)
{
    for (int k = w->depth; k >= 0; k--) {
        level *l = &w->at[k];
        if (dir_len < l->len || memcmp(dir, w->path, (size_t)l->len) != 0)
            continue;
        if (dir_len == l->len) {
            leave_to(w, k);
            return 1;
        }
        if (l->last == NULL || dir_len != l->len + l->last_len + 1
            || memcmp(dir + l->len, l->last, (size_t)l->last_len) != 0
            || k + 1 >= MAX_DEPTH || dir_len > PATH_MAX)
            return 0;
        char base[NAME_MAX + 1];
        memcpy(base, l->last, (size_t)l->last_len);
        base[l->last_len] = '\0';
        int fd = openat(l->fd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return 0;
        leave_to(w, k);
        memcpy(w->path + l->len, dir + l->len, (size_t)(dir_len - l->len));
        w->at[++w->depth] = (level){fd, dir_len, NULL, 0};
        return 1;
    }
    return 0;
}

/* The loop, without the GIL: make plain entries of `prefix`, and of the directories it
 * makes there and below, until one is not. */
static Py_ssize_t run_loop(const unsigned char *buf, Py_ssize_t len, Py_ssize_t pos, int dir_fd,
                           const char *pre, Py_ssize_t pre_len, made_name *made,
                           Py_ssize_t *count, const unsigned char **other,
                           Py_ssize_t *other_len)
{
    plain_entry e;
    walk w;
    if (pre_len > PATH_MAX)
        return pos;
    memcpy(w.path, pre, (size_t)pre_len);
    w.depth = 0;
    w.at[0] = (level){dir_fd, pre_len, NULL, 0};
    while (next_plain(buf, len, pos, &e)) {
        level *here = &w.at[w.depth];
        if ((e.base_off != here->len || memcmp(e.name, w.path, (size_t)here->len) != 0)
            && !go_to(&w, e.name, e.base_off)) {
            *other = e.name; /* a plain entry, but in another directory */
            *other_len = e.base_off;
            break;
        }
        here = &w.at[w.depth];
        Py_ssize_t base_len = e.name_len - e.base_off;
        char base[NAME_MAX + 1];
        if (base_len > NAME_MAX)
            break;
        memcpy(base, e.name + e.base_off, (size_t)base_len);
        base[base_len] = '\0';
        unsigned long long inode = 0;
        if (e.is_dir ? !make_dir(here->fd, base, &e, &inode)
                     : !make_file(here->fd, base, &e, buf + e.data_off))
            break;
        if (e.is_dir) {
            here->last = e.name + e.base_off;
            here->last_len = base_len;
        }
        /* named from level 0's directory: "f" there, "sub/f" below */
        made[*count] = (made_name){(e.name - buf) + pre_len, e.name_len - pre_len, e.is_dir,
                                   inode, e.mtime};
        (*count)++;
        pos = e.end;
    }
    leave_to(&w, 0);
    return pos;
}

static PyObject *create_run(PyObject *module, PyObject *args)
{
    Py_buffer buffer, prefix;
    Py_ssize_t pos;
    int dir_fd;
    (void)module;
    if (!check_ready() || !PyArg_ParseTuple(args, "y*niy*", &buffer, &pos, &dir_fd, &prefix))
        return NULL;
    PyObject *result = NULL, *names = NULL, *dirs = NULL;
    Py_ssize_t count = 0, other_len = 0;
    const unsigned char *other = NULL;
    made_name *made = NULL;
    if (pos < 0 || pos > buffer.len) {
        PyErr_SetString(PyExc_ValueError, "create_run: position outside the buffer");
        goto done;
    }
    made = PyMem_Malloc(sizeof(*made) * (size_t)((buffer.len - pos) / BLOCK + 1));
    if (made == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *buf = buffer.buf;
    Py_BEGIN_ALLOW_THREADS
    pos = run_loop(buf, buffer.len, pos, dir_fd, prefix.buf, prefix.len, made, &count, &other,
                   &other_len);
    Py_END_ALLOW_THREADS
    names = PyList_New(count);
    dirs = PyList_New(0);
    if (names == NULL || dirs == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyUnicode_DecodeASCII((const char *)buf + made[i].name_off,
                                               made[i].name_len, "strict");
        if (name == NULL)
            goto done;
        PyList_SET_ITEM(names, i, name);
        if (made[i].is_dir) {
            PyObject *dir = Py_BuildValue("(OKK)", name, made[i].inode, made[i].mtime);
            if (dir == NULL || PyList_Append(dirs, dir) != 0) {
                Py_XDECREF(dir);
                goto done;
            }
            Py_DECREF(dir);
        }
    }
    if (other != NULL)
        result = Py_BuildValue("(nOOy#)", pos, names, dirs, other, other_len);
    else
        result = Py_BuildValue("(nOOO)", pos, names, dirs, Py_None);
done:
    Py_XDECREF(names);
    Py_XDECREF(dirs);
    PyMem_Free(made);
    PyBuffer_Release(&buffer);
    PyBuffer_Release(&prefix);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(name_max, path_max, whiteout_prefix): the policy's numbers."},
    {"parse_plain", parse_plain, METH_VARARGS,
     "parse_plain(buffer, pos) -> None | (name, is_dir, mode, uid, gid, size, mtime, end)"},
    {"create_run", create_run, METH_VARARGS,
     "create_run(buffer, pos, dir_fd, prefix) -> (end, names, dirs, other_dir)"},
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
