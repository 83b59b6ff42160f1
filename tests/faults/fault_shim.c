/* Test-only fault injector, loaded with LD_PRELOAD by tests/faults/test_faults.py; never
 * linked into hpctrain. It makes system calls on files whose path contains
 * HPCTRAIN_FAULT_PATH fail as a sick disk would:
 *
 *   HPCTRAIN_FAULT_OP=write   write/pwrite/writev fail with HPCTRAIN_FAULT_ERRNO (default
 *                             ENOSPC) once HPCTRAIN_FAULT_AFTER bytes (default 0) were
 *                             written to such files; a write crossing the limit is short
 *   HPCTRAIN_FAULT_OP=fsync   fsync/fdatasync fail (default EIO)
 *   HPCTRAIN_FAULT_OP=rename  rename/renameat with either name matching fails (default EIO)
 *   HPCTRAIN_FAULT_OP=slow    write/pwrite/writev succeed, each after HPCTRAIN_FAULT_AFTER
 *                             milliseconds (a slow disk: a test can kill a rank mid-write)
 *
 * With HPCTRAIN_FAULT_RANK=R only the MPI rank R (OMPI_COMM_WORLD_RANK) is faulty.
 * Without HPCTRAIN_FAULT_PATH it passes every call through. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 65536

static unsigned char matching[MAX_FDS];
static long long written;

static const char* pattern(void) {
  const char* only = getenv("HPCTRAIN_FAULT_RANK");
  const char* rank = getenv("OMPI_COMM_WORLD_RANK");
  if (only && *only && (!rank || strcmp(only, rank) != 0)) return NULL;
  const char* p = getenv("HPCTRAIN_FAULT_PATH");
  return p && *p ? p : NULL;
}

static int op_is(const char* op) {
  const char* o = getenv("HPCTRAIN_FAULT_OP");
  return o && strcmp(o, op) == 0;
}

static int fault_errno(int fallback) {
  const char* e = getenv("HPCTRAIN_FAULT_ERRNO");
  return e ? atoi(e) : fallback;
}

static int matches(const char* path) {
  const char* p = pattern();
  return p && path && strstr(path, p) != NULL;
}

static void track(int fd, const char* path) {
  if (fd >= 0 && fd < MAX_FDS) matching[fd] = (unsigned char)matches(path);
}

static int tracked(int fd) {
  return fd >= 0 && fd < MAX_FDS && matching[fd];
}

#define REAL(name)                      \
  static __typeof__(&name) real_##name; \
  if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

static int open_common(const char* name, int dirfd, const char* path, int flags, mode_t mode) {
  typedef int (*open_t)(const char*, int, ...);
  typedef int (*openat_t)(int, const char*, int, ...);
  int fd;
  if (dirfd == -1000) {
    open_t real = (open_t)dlsym(RTLD_NEXT, name);
    fd = real(path, flags, mode);
  } else {
    openat_t real = (openat_t)dlsym(RTLD_NEXT, name);
    fd = real(dirfd, path, flags, mode);
  }
  track(fd, path);
  return fd;
}

#define OPEN_MODE(flags, mode)           \
  mode_t mode = 0;                       \
  if ((flags) & (O_CREAT | O_TMPFILE)) { \
    va_list ap;                          \
    va_start(ap, flags);                 \
    mode = (mode_t)va_arg(ap, int);      \
    va_end(ap);                          \
  }

int open(const char* path, int flags, ...) {
  OPEN_MODE(flags, mode)
  return open_common("open", -1000, path, flags, mode);
}
int open64(const char* path, int flags, ...) {
  OPEN_MODE(flags, mode)
  return open_common("open64", -1000, path, flags, mode);
}
int openat(int dirfd, const char* path, int flags, ...) {
  OPEN_MODE(flags, mode)
  return open_common("openat", dirfd, path, flags, mode);
}
int openat64(int dirfd, const char* path, int flags, ...) {
  OPEN_MODE(flags, mode)
  return open_common("openat64", dirfd, path, flags, mode);
}
int creat(const char* path, mode_t mode) {
  return open_common("open", -1000, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int close(int fd) {
  REAL(close);
  if (fd >= 0 && fd < MAX_FDS) matching[fd] = 0;
  return real_close(fd);
}

/* How many of `count` bytes may go through; -1 with errno set when none may. */
static ssize_t allowed(int fd, size_t count) {
  const char* a = getenv("HPCTRAIN_FAULT_AFTER");
  if (tracked(fd) && op_is("slow")) {
    const long long ms = a ? atoll(a) : 0;
    const struct timespec pause = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
    return (ssize_t)count;
  }
  if (!tracked(fd) || !op_is("write")) return (ssize_t)count;
  const long long limit = a ? atoll(a) : 0;
  if (written >= limit) {
    errno = fault_errno(ENOSPC);
    return -1;
  }
  const long long room = limit - written;
  return (ssize_t)((long long)count < room ? (long long)count : room);
}

ssize_t write(int fd, const void* buf, size_t count) {
  REAL(write);
  const ssize_t n = allowed(fd, count);
  if (n < 0) return -1;
  const ssize_t done = real_write(fd, buf, (size_t)n);
  if (done > 0 && tracked(fd)) written += done;
  return done;
}

ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  REAL(pwrite);
  const ssize_t n = allowed(fd, count);
  if (n < 0) return -1;
  const ssize_t done = real_pwrite(fd, buf, (size_t)n, offset);
  if (done > 0 && tracked(fd)) written += done;
  return done;
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off_t offset) {
  return pwrite(fd, buf, count, offset);
}

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  REAL(writev);
  if (tracked(fd) && op_is("write")) {
    ssize_t total = 0;
    for (int i = 0; i < iovcnt; ++i) {
      const ssize_t n = write(fd, iov[i].iov_base, iov[i].iov_len);
      if (n < 0) return total > 0 ? total : -1;
      total += n;
      if ((size_t)n < iov[i].iov_len) break;
    }
    return total;
  }
  return real_writev(fd, iov, iovcnt);
}

int fsync(int fd) {
  REAL(fsync);
  if (tracked(fd) && op_is("fsync")) {
    errno = fault_errno(EIO);
    return -1;
  }
  return real_fsync(fd);
}

int fdatasync(int fd) {
  REAL(fdatasync);
  if (tracked(fd) && op_is("fsync")) {
    errno = fault_errno(EIO);
    return -1;
  }
  return real_fdatasync(fd);
}

int rename(const char* from, const char* to) {
  REAL(rename);
  if (op_is("rename") && (matches(from) || matches(to))) {
    errno = fault_errno(EIO);
    return -1;
  }
  return real_rename(from, to);
}

int renameat(int fromfd, const char* from, int tofd, const char* to) {
  REAL(renameat);
  if (op_is("rename") && (matches(from) || matches(to))) {
    errno = fault_errno(EIO);
    return -1;
  }
  return real_renameat(fromfd, from, tofd, to);
}
