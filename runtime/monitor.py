"""A detached container's monitor: one small process per container, as conmon is podman's.

Someone must stay behind when ``mycontainer run -d`` returns: the container's output has to
go somewhere, and only a process's parent can read its exit status (wait(2)); once nobody
waits, the status is lost and the exited init lingers as a zombie. So the process that
created the container, which is the init's parent (a child subreaper: runtime.process),
replaces itself with this program (execve(2) keeps children and descriptors) and:

1. copies what the container writes on stdout and stderr (two pipes, or the master of its
   terminal) into a log of JSON records, one a line, as docker's json-file driver writes
   them: ``{"log":"hello\\n","stream":"stdout","time":"2026-12-05T10:00:00.123456789Z"}``.
   A log is capped at MAX_LOG bytes: past that it is renamed ``<log>.1`` (replacing the
   previous one) and a new one begins, so a container keeps at most twice MAX_LOG;
2. holds the container's stdin open (``run -d -i``), so that a shell reading it waits
   instead of reading end-of-file;
3. waits (waitpid(2)) for the init, writes its exit code to exit.json, and execs the exit
   command (``mycontainer cleanup ID``: release the network and cgroups, or remove the
   container with ``--rm``), as conmon runs podman's.

It runs as ``python3 -I -S -c "...; import monitor"``, found by its directory, and imports
nothing but three modules built into the interpreter: every module costs memory in each
container's monitor, and ``os`` alone (with the modules it pulls in) costs ~300 kB; it is
imported rather than run as a script, whose compiling would cost ~400 kB more. 20 detached
containers hold ~2.6-2.8 MB each (PSS, /proc/PID/smaps_rollup; bench/detached.py).

Killed (SIGKILL), it takes nothing with it: the container runs on, re-parented to the
host's init, and ``mycontainer stop``, ``rm`` and ``prune`` work without it; only its exit
code is lost.

Man pages: https://man7.org/linux/man-pages/man2/wait.2.html,
https://man7.org/linux/man-pages/man2/pidfd_open.2.html, https://man7.org/linux/man-pages/man2/poll.2.html
"""

import posix
import select
import sys
import time

MAX_LOG = 10 * 2**20
CHUNK = 65536
PARTIAL = 16384  # a line longer than this is logged in pieces, as docker's are
DRAIN_MS = 1000  # after the init exits: how long its output may still come

# JSON string escapes (RFC 8259, section 7), without importing json.
ESCAPES = {code: f"\\u{code:04x}" for code in range(0x20)}
ESCAPES.update({0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})


def timestamp() -> str:
    """Now, as docker writes it: RFC 3339 with nanoseconds, UTC."""
    now = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}Z"


class Log:
    """The container's log file: JSON records, one a line, rotated at MAX_LOG bytes."""

    def __init__(self, path: str):
        self.path = path
        self.fd = self._open(posix.O_APPEND)
        self.size = posix.fstat(self.fd).st_size

    def _open(self, mode: int) -> int:
        flags = posix.O_WRONLY | posix.O_CREAT | posix.O_CLOEXEC | mode
        return posix.open(self.path, flags, 0o640)

    def record(self, stream: str, data: bytes) -> None:
        text = data.decode("utf-8", "replace").translate(ESCAPES)
        line = f'{{"log":"{text}","stream":"{stream}","time":"{timestamp()}"}}\n'.encode()
        if self.size and self.size + len(line) > MAX_LOG:
            posix.rename(self.path, self.path + ".1")
            posix.close(self.fd)
            self.fd = self._open(posix.O_TRUNC)
            self.size = 0
        written = 0
        while written < len(line):
            written += posix.write(self.fd, line[written:])
        self.size += written


def copy_output(log: Log, streams: dict, pidfd: int) -> None:
    """Log what the container writes until every stream ends: EOF, or EIO on a terminal's
    master once no process has the terminal open; at most DRAIN_MS after the init exits."""
    pending = dict.fromkeys(streams, b"")
    poller = select.poll()
    for fd in streams:
        poller.register(fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    exited = False
    while streams:
        events = poller.poll(DRAIN_MS if exited else -1)
        if not events:
            break  # the init is gone, and what still holds a stream is not writing
        for fd, _ in events:
            if fd == pidfd:
                exited = True
                poller.unregister(pidfd)
                continue
            try:
                data = posix.read(fd, CHUNK)
            except OSError:  # EIO: the terminal's last user is gone
                data = b""
            if not data:
                poller.unregister(fd)
                if pending[fd]:
                    log.record(streams[fd], pending[fd])
                del streams[fd]
                continue
            lines = (pending[fd] + data).split(b"\n")
            pending[fd] = lines.pop()
            for line in lines:
                log.record(streams[fd], line + b"\n")
            while len(pending[fd]) > PARTIAL:
                log.record(streams[fd], pending[fd][:PARTIAL])
                pending[fd] = pending[fd][PARTIAL:]
    for fd, rest in pending.items():
        if rest and fd in streams:
            log.record(streams[fd], rest)


def main(argv: list[str]) -> None:
    """monitor.py PID EXIT_FILE LOG STDOUT_FD STDERR_FD STDIN_FD -- EXIT_COMMAND...
    (a descriptor of -1: none; with a terminal, STDOUT_FD is its master)."""
    pid, exit_file, log_path = int(argv[1]), argv[2], argv[3]
    out, err = int(argv[4]), int(argv[5])
    command = argv[argv.index("--") + 1 :]
    streams = {fd: name for fd, name in ((out, "stdout"), (err, "stderr")) if fd >= 0}
    pidfd = posix.pidfd_open(pid)
    copy_output(Log(log_path), streams, pidfd)
    _, status = posix.waitpid(pid, 0)
    signalled = posix.WIFSIGNALED(status)
    code = 128 + posix.WTERMSIG(status) if signalled else posix.WEXITSTATUS(status)
    try:
        with open(exit_file + ".tmp", "w") as file:
            file.write(f'{{"exitCode": {code}, "finishedAt": "{timestamp()}"}}\n')
        posix.rename(exit_file + ".tmp", exit_file)
    except FileNotFoundError:
        return  # removed meanwhile ('rm -f'): nothing left to clean up
    if command:
        posix.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
