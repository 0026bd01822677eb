/*
 * envd's process start without fork(). Under gVisor's systrap a fork() costs 60-75 ms whatever the
 * size of the process (the sentry builds a new address space and copies the parent's mappings),
 * while a clone(CLONE_VM | CLONE_VFORK) that execs at once skips that copy: about 20 ms for
 * /bin/true, against 70-80 ms for Node's child_process (libuv forks). The child below does what
 * libuv's uv__process_child_init does, in the same order, so a command sees the same process
 * either way: signal dispositions reset, a session of its own, stdio on socketpairs (or /dev/null),
 * the working directory, supplementary groups dropped, gid then uid, an empty signal mask, and
 * execvp's PATH search (with its /bin/sh fallback for scripts without a #! line).
 *
 * The child shares the parent's memory until it execs, so it calls no allocator and nothing that
 * takes a lock: every buffer is prepared by the parent, ids change through raw system calls (glibc's
 * setuid would signal the parent's threads), and a failure is reported by writing errno into the
 * request before _exit. The parent thread is suspended until the exec or the exit (CLONE_VFORK).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <node_api.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <uv.h>

#define CHILD_STACK_BYTES (128 * 1024)
/* glibc's execvp when PATH is unset (confstr _CS_PATH). */
#define DEFAULT_PATH "/bin:/usr/bin"

struct request {
  const char *file;
  char **argv;
  /* argv with room for "/bin/sh" and the file in front: the ENOEXEC fallback. */
  char **shell_argv;
  char **envp;
  const char *path; /* PATH of envp, or NULL */
  const char *cwd;  /* NULL: inherited */
  int set_ids;
  uid_t uid;
  gid_t gid;
  int detached;
  int ctty;     /* stdin is a terminal's slave, to become the session's controlling terminal */
  int stdio[3]; /* the child's 0, 1, 2; -1: /dev/null */
  volatile int err;
};

static void child_exec(struct request *r, const char *file) {
  execve(file, r->argv, r->envp);
  if (errno == ENOEXEC) {
    /* execvp runs a file the kernel does not recognise as a shell script, with the file in argv[0]'s
     * place (the parent puts argv[0] back after the clone). */
    char *arg0 = r->shell_argv[1];
    r->shell_argv[1] = (char *)file;
    execve("/bin/sh", r->shell_argv, r->envp);
    r->shell_argv[1] = arg0;
    errno = ENOEXEC;
  }
}

/* execvp's search, on the PATH of the child's environment (libuv sets environ before execvp). */
static void child_execvp(struct request *r) {
  const char *file = r->file;
  if (*file == '\0') {
    errno = ENOENT;
    return;
  }
  if (strchr(file, '/') != NULL) {
    child_exec(r, file);
    return;
  }
  size_t file_len = strlen(file);
  if (file_len > NAME_MAX) {
    errno = ENAMETOOLONG;
    return;
  }
  const char *path = r->path != NULL ? r->path : DEFAULT_PATH;
  char buf[PATH_MAX + NAME_MAX + 2];
  int got_eacces = 0;
  for (const char *p = path;; p++) {
    const char *end = strchrnul(p, ':');
    size_t dir_len = (size_t)(end - p);
    if (dir_len < PATH_MAX) {
      /* An empty element is the current directory. */
      memcpy(buf, p, dir_len);
      size_t at = dir_len;
      if (dir_len > 0) buf[at++] = '/';
      memcpy(buf + at, file, file_len + 1);
      child_exec(r, buf);
      switch (errno) {
        case EACCES:
          got_eacces = 1;
          break;
        case ENOENT:
        case ESTALE:
        case ENOTDIR:
        case ENODEV:
        case ETIMEDOUT:
          break;
        default:
          return;
      }
    }
    if (*end == '\0') break;
    p = end;
  }
  if (got_eacces) errno = EACCES;
}

static int child_main(void *arg) {
  struct request *r = arg;
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  /* The child has its own copy of the handlers (no CLONE_SIGHAND): resetting them is its own. */
  for (int n = 1; n < 32; n++) {
    if (n == SIGKILL || n == SIGSTOP) continue;
    if (sigaction(n, &dfl, NULL) != 0) goto fail;
  }
  if (r->detached) setsid();

  int stdio[3] = {r->stdio[0], r->stdio[1], r->stdio[2]};
  /* Move a source that is itself a low number out of the way before any dup2 overwrites it. */
  for (int fd = 0; fd < 3; fd++) {
    if (stdio[fd] < 0 || stdio[fd] >= fd) continue;
    stdio[fd] = fcntl(stdio[fd], F_DUPFD_CLOEXEC, 3);
    if (stdio[fd] < 0) goto fail;
  }
  for (int fd = 0; fd < 3; fd++) {
    int use = stdio[fd];
    int opened = -1;
    if (use < 0) {
      close(fd);
      use = opened = open("/dev/null", fd == 0 ? O_RDONLY : O_RDWR);
      if (use < 0) goto fail;
    }
    if (use == fd) {
      if (opened < 0 && fcntl(fd, F_SETFD, 0) != 0) goto fail;
    } else if (dup2(use, fd) < 0) {
      goto fail;
    }
    if (opened < 0) {
      int flags = fcntl(fd, F_GETFL);
      if (flags >= 0 && (flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    }
    if (opened > 2) close(opened);
  }

  /* As login_tty (node-pty's forkpty): the new session's controlling terminal is the slave. */
  if (r->ctty && ioctl(0, TIOCSCTTY, 0) != 0) goto fail;
  if (r->cwd != NULL && chdir(r->cwd) != 0) goto fail;
  if (r->set_ids) {
    /* As libuv: dropping extra groups is best effort, the gid and uid are not. */
    syscall(SYS_setgroups, 0, NULL);
    if (syscall(SYS_setgid, r->gid) != 0) goto fail;
    if (syscall(SYS_setuid, r->uid) != 0) goto fail;
  }
  sigset_t empty;
  sigemptyset(&empty);
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, NULL, _NSIG / 8);
  child_execvp(r);
fail:
  r->err = errno != 0 ? errno : EINVAL;
  _exit(127);
}

/*
 * A new terminal: the master (envd's end, non-blocking) and the slave (the child's), with
 * node-pty's settings (its pty.cc), so that a terminal is the same whichever way it was started.
 */
static int open_terminal(int cols, int rows, int *master_out, int *slave_out) {
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return errno;
  char name[64];
  int slave = -1;
  if (grantpt(master) != 0 || unlockpt(master) != 0 || ptsname_r(master, name, sizeof name) != 0) goto fail;
  slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) goto fail;
  struct termios t;
  if (tcgetattr(slave, &t) != 0) goto fail;
  t.c_iflag = ICRNL | IXON | IXANY | IMAXBEL | BRKINT;
  t.c_oflag = OPOST | ONLCR;
  t.c_cflag = CREAD | CS8 | HUPCL;
  t.c_lflag = ICANON | ISIG | IEXTEN | ECHO | ECHOE | ECHOK | ECHOKE | ECHOCTL;
  t.c_cc[VEOF] = 4;
  t.c_cc[VEOL] = (cc_t)-1;
  t.c_cc[VEOL2] = (cc_t)-1;
  t.c_cc[VERASE] = 0x7f;
  t.c_cc[VWERASE] = 23;
  t.c_cc[VKILL] = 21;
  t.c_cc[VREPRINT] = 18;
  t.c_cc[VINTR] = 3;
  t.c_cc[VQUIT] = 0x1c;
  t.c_cc[VSUSP] = 26;
  t.c_cc[VSTART] = 17;
  t.c_cc[VSTOP] = 19;
  t.c_cc[VLNEXT] = 22;
  t.c_cc[VDISCARD] = 15;
  t.c_cc[VMIN] = 1;
  t.c_cc[VTIME] = 0;
  cfsetispeed(&t, B38400);
  cfsetospeed(&t, B38400);
  if (tcsetattr(slave, TCSANOW, &t) != 0) goto fail;
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  if (ioctl(master, TIOCSWINSZ, &ws) != 0) goto fail;
  int flags = fcntl(master, F_GETFL);
  if (flags < 0 || fcntl(master, F_SETFL, flags | O_NONBLOCK) != 0) goto fail;
  *master_out = master;
  *slave_out = slave;
  return 0;
fail:;
  int err = errno != 0 ? errno : EINVAL;
  if (slave >= 0) close(slave);
  close(master);
  return err;
}

/* ---- N-API glue ---- */

/*
 * Children are reaped as libuv reaps its own: a SIGCHLD watcher on envd's loop tries each running
 * child with waitpid(WNOHANG) and calls back at once. No thread per child, and the pid stays the
 * child's until JavaScript hears of the exit, so a signal envd sends to the process group before
 * that cannot reach a process that reused the number.
 */
struct child {
  pid_t pid;
  napi_ref on_exit;
  napi_async_context async;
  struct child *next;
};

static napi_env envd_env;
static struct child *children;
static uv_signal_t sigchld;
static int sigchld_started;

/* Calls the child's callback with its wait status (-1: none to reap), and forgets the child. */
static void report_exit(struct child *c, int status) {
  napi_env env = envd_env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value callback, recv, arg;
  napi_get_reference_value(env, c->on_exit, &callback);
  /* napi_make_callback wants an object for `this`. */
  napi_get_global(env, &recv);
  napi_create_int32(env, status, &arg);
  if (napi_make_callback(env, c->async, recv, callback, 1, &arg, NULL) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
  napi_delete_reference(env, c->on_exit);
  napi_async_destroy(env, c->async);
  free(c);
}

static void on_sigchld(uv_signal_t *handle, int signum) {
  (void)signum;
  for (struct child **at = &children; *at != NULL;) {
    struct child *c = *at;
    int status = 0;
    pid_t got;
    do {
      got = waitpid(c->pid, &status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got == 0) {
      at = &c->next;
      continue;
    }
    /* ECHILD: nothing to reap (no one else waits for envd's children, so this is not expected). */
    if (got < 0) status = -1;
    *at = c->next;
    /* Nothing left to wait for: the watcher no longer holds envd's loop open. */
    if (children == NULL) uv_unref((uv_handle_t *)handle);
    report_exit(c, status);
  }
}

/* The watcher, started before the first child so that no SIGCHLD goes unseen. It holds envd's
 * loop open only while a child runs, as Node's ChildProcess does. */
static int start_sigchld_watcher(napi_env env) {
  if (sigchld_started) return envd_env == env ? 0 : EINVAL;
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return EINVAL;
  int err = uv_signal_init(loop, &sigchld);
  if (err == 0) err = uv_signal_start(&sigchld, on_sigchld, SIGCHLD);
  if (err != 0) return -err;
  uv_unref((uv_handle_t *)&sigchld);
  envd_env = env;
  sigchld_started = 1;
  return 0;
}

static char *string_arg(napi_env env, napi_value value) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (s != NULL) napi_get_value_string_utf8(env, value, s, len + 1, &len);
  return s;
}

/* A NULL-terminated copy of a JS array of strings, with `front` empty slots before it. */
static char **string_array(napi_env env, napi_value array, uint32_t front, uint32_t *count) {
  uint32_t n = 0;
  if (napi_get_array_length(env, array, &n) != napi_ok) return NULL;
  char **out = calloc(front + n + 1, sizeof *out);
  if (out == NULL) return NULL;
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    napi_get_element(env, array, i, &item);
    out[front + i] = string_arg(env, item);
    if (out[front + i] == NULL) return out;
  }
  if (count != NULL) *count = n;
  return out;
}

static void free_array(char **array, uint32_t from) {
  if (array == NULL) return;
  for (char **p = array + from; *p != NULL; p++) free(*p);
  free(array);
}

static napi_value throw_errno(napi_env env, int err, const char *syscall_name) {
  napi_value code, msg, error, num;
  napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &msg);
  napi_create_int32(env, -err, &num);
  napi_create_string_utf8(env, "ESPAWN", NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_set_named_property(env, error, "errno", num);
  napi_throw(env, error);
  return NULL;
}

/*
 * spawn(file, argv, envp, cwd | null, uid, gid, detached, stdinPipe, onExit(status), terminal)
 *   → [pid, stdinFd | -1, stdoutFd, stderrFd], or with a terminal [pid, masterFd, writerFd, -1]
 * uid and gid are -1 to keep envd's. `terminal` is null, or [cols, rows] for a process on a new
 * terminal (a session of its own whose controlling terminal it is, stdin/stdout/stderr its slave);
 * envd reads the master and writes a duplicate of it.
 * Throws an Error whose errno is the negative errno of the step that failed (the exec, the chdir,
 * the setuid…), as libuv reports it. onExit gets the raw wait status, or -1 when there was none
 * to reap.
 */
static napi_value spawn(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value args[10];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc != 10) {
    napi_throw_type_error(env, NULL, "spawn takes 10 arguments");
    return NULL;
  }
  struct request r;
  memset(&r, 0, sizeof r);
  napi_value result = NULL;
  int fds[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  int master = -1, master_writer = -1, slave = -1;
  int32_t cols = 0, rows = 0;
  bool terminal = false;
  napi_is_array(env, args[9], &terminal);
  if (terminal) {
    napi_value v;
    napi_get_element(env, args[9], 0, &v);
    napi_get_value_int32(env, v, &cols);
    napi_get_element(env, args[9], 1, &v);
    napi_get_value_int32(env, v, &rows);
  }
  void *stack = MAP_FAILED;
  uint32_t argv_count = 0;
  char *file = string_arg(env, args[0]);
  char **shell_argv = string_array(env, args[1], 1, &argv_count);
  char **envp = string_array(env, args[2], 0, NULL);
  napi_valuetype cwd_type;
  napi_typeof(env, args[3], &cwd_type);
  char *cwd = cwd_type == napi_string ? string_arg(env, args[3]) : NULL;
  int32_t uid = -1, gid = -1;
  bool detached = false, stdin_pipe = false;
  napi_get_value_int32(env, args[4], &uid);
  napi_get_value_int32(env, args[5], &gid);
  napi_get_value_bool(env, args[6], &detached);
  napi_get_value_bool(env, args[7], &stdin_pipe);
  if (file == NULL || shell_argv == NULL || envp == NULL || argv_count == 0) {
    napi_throw_type_error(env, NULL, "spawn: bad file, argv or envp");
    goto done;
  }
  shell_argv[0] = "/bin/sh";
  r.file = file;
  r.argv = shell_argv + 1;
  r.shell_argv = shell_argv;
  r.envp = envp;
  for (char **e = envp; *e != NULL; e++) {
    if (strncmp(*e, "PATH=", 5) == 0) r.path = *e + 5;
  }
  r.cwd = cwd;
  r.set_ids = uid >= 0 || gid >= 0;
  r.uid = uid >= 0 ? (uid_t)uid : getuid();
  r.gid = gid >= 0 ? (gid_t)gid : getgid();
  r.detached = detached;

  if (terminal) {
    if (cols < 1 || rows < 1 || cols > 65535 || rows > 65535) {
      napi_throw_range_error(env, NULL, "spawn: terminal size out of range");
      goto done;
    }
    int err = open_terminal(cols, rows, &master, &slave);
    if (err != 0) {
      throw_errno(env, err, "openpty");
      goto done;
    }
    /* Writes go through a descriptor of their own: envd's loop watches the master for reads. */
    master_writer = fcntl(master, F_DUPFD_CLOEXEC, 3);
    if (master_writer < 0) {
      throw_errno(env, errno, "dup");
      goto done;
    }
    r.stdio[0] = r.stdio[1] = r.stdio[2] = slave;
    r.detached = 1;
    r.ctty = 1;
  } else {
    /* Socketpairs, as libuv gives a child's piped stdio. [0] is envd's end, [1] the child's. */
    for (int i = stdin_pipe ? 0 : 1; i < 3; i++) {
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds[i]) != 0) {
        throw_errno(env, errno, "socketpair");
        goto done;
      }
    }
    r.stdio[0] = fds[0][1];
    r.stdio[1] = fds[1][1];
    r.stdio[2] = fds[2][1];
  }

  int watch_err = start_sigchld_watcher(env);
  if (watch_err != 0) {
    throw_errno(env, watch_err, "uv_signal_start");
    goto done;
  }
  stack = mmap(NULL, CHILD_STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
               -1, 0);
  if (stack == MAP_FAILED) {
    throw_errno(env, errno, "mmap");
    goto done;
  }
  /* No handler of envd's may run on the child's stack: block everything until it resets them. */
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &old);
  char *arg0 = shell_argv[1];
  pid_t pid = clone(child_main, (char *)stack + CHILD_STACK_BYTES, CLONE_VM | CLONE_VFORK | SIGCHLD, &r);
  int clone_errno = errno;
  sigprocmask(SIG_SETMASK, &old, NULL);
  /* A script run through /bin/sh left the file in argv[0]'s slot (child_exec). */
  shell_argv[1] = arg0;
  if (pid < 0) {
    throw_errno(env, clone_errno, "clone");
    goto done;
  }
  if (r.err != 0) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    throw_errno(env, r.err, "exec");
    goto done;
  }

  struct child *c = calloc(1, sizeof *c);
  napi_value name;
  napi_create_string_utf8(env, "moat spawn", NAPI_AUTO_LENGTH, &name);
  if (c == NULL || napi_create_reference(env, args[8], 1, &c->on_exit) != napi_ok ||
      napi_async_init(env, NULL, name, &c->async) != napi_ok) {
    /* The child runs; nothing would report its end, so it must not outlive the call. */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (c != NULL && c->on_exit != NULL) napi_delete_reference(env, c->on_exit);
    free(c);
    throw_errno(env, ENOMEM, "spawn");
    goto done;
  }
  /* Its SIGCHLD, if it already exited, is handled on a later turn of the loop: after this. */
  c->pid = pid;
  if (children == NULL) uv_ref((uv_handle_t *)&sigchld);
  c->next = children;
  children = c;

  napi_create_array_with_length(env, 4, &result);
  int32_t out[4] = {pid, terminal ? master : fds[0][0], terminal ? master_writer : fds[1][0], fds[2][0]};
  for (uint32_t i = 0; i < 4; i++) {
    napi_value v;
    napi_create_int32(env, out[i], &v);
    napi_set_element(env, result, i, v);
  }
  /* envd keeps its ends; the child's ends are the child's alone now. */
  fds[0][0] = fds[1][0] = fds[2][0] = -1;
  master = master_writer = -1;

done:
  if (master >= 0) close(master);
  if (master_writer >= 0) close(master_writer);
  if (slave >= 0) close(slave);
  for (int i = 0; i < 3; i++) {
    if (fds[i][0] >= 0) close(fds[i][0]);
    if (fds[i][1] >= 0) close(fds[i][1]);
  }
  if (stack != MAP_FAILED) munmap(stack, CHILD_STACK_BYTES);
  free(file);
  free(cwd);
  free_array(shell_argv, 1);
  free_array(envp, 0);
  return result;
}

/* resize(masterFd, cols, rows): the terminal's new size; the kernel signals its foreground group. */
static napi_value resize(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  int32_t fd = -1, cols = 0, rows = 0;
  if (argc != 3 || napi_get_value_int32(env, args[0], &fd) != napi_ok ||
      napi_get_value_int32(env, args[1], &cols) != napi_ok ||
      napi_get_value_int32(env, args[2], &rows) != napi_ok) {
    napi_throw_type_error(env, NULL, "resize takes (fd, cols, rows)");
    return NULL;
  }
  if (cols < 1 || rows < 1 || cols > 65535 || rows > 65535) {
    napi_throw_range_error(env, NULL, "resize: terminal size out of range");
    return NULL;
  }
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  if (ioctl(fd, TIOCSWINSZ, &ws) != 0) return throw_errno(env, errno, "ioctl");
  return NULL;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  napi_create_function(env, "spawn", NAPI_AUTO_LENGTH, spawn, NULL, &fn);
  napi_set_named_property(env, exports, "spawn", fn);
  napi_create_function(env, "resize", NAPI_AUTO_LENGTH, resize, NULL, &fn);
  napi_set_named_property(env, exports, "resize", fn);
  return exports;
}
