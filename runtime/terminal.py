"""Terminals: a pseudo-terminal made inside the container, its master handed to the host.

A program that asks ``isatty(0)`` (a shell, ``tty``, ``stty``, ``top``) needs a terminal,
and a container must not be given one of the host's. So the container's init makes a
pseudo-terminal pair in the container's own devpts instance (pty(7), pts(4)): the *slave*
(``/dev/pts/0``) becomes the program's stdin, stdout, stderr and controlling terminal; the
*master*, which reads what the program writes and types what the user types, is sent out
of the container over a unix socket as SCM_RIGHTS ancillary data (unix(7)). That is the
OCI runtime spec's ``process.terminal`` with runc's ``--console-socket PATH``: the engine
(conmon, containerd's shim, runc's recvtty) listens on PATH, the runtime connects to it on
the host and hands the connected socket to the init, which cannot reach the host's paths
after pivot_root(2). ``mycontainer run -t`` uses the same machinery over a socketpair(2),
and relays between the user's terminal and the master itself (:class:`Relay`).

Why inside, not on the host: a pty made from the host's /dev/ptmx would be a host
terminal, visible and reachable from outside the container (runc issue #814).

What a hostile container could try, and what stops it. A container that runs already
(``exec -t``) may have replaced /dev/ptmx, /dev/pts or /dev/console with symbolic links,
so that the runtime opens or mounts a host file (CVE-2016-9962's kin; CVE-2025-52565 made
runc bind-mount the target of a /dev/pts/N link over /dev/console). So: /dev and /dev/pts
are opened without following a link (O_NOFOLLOW), ``ptmx`` is opened relative to that
directory and must be the character device 5:2; the slave is not looked up by name at
all but asked of the master (TIOCGPTPEER, Linux 4.13) and must be a Unix98 pty slave of
the same devpts instance (its st_dev is /dev/pts's); /dev/console is opened without
following a link and the bind mount goes from descriptor to descriptor
(/proc/self/fd/N), so no path is resolved twice.

Man pages: https://man7.org/linux/man-pages/man7/pty.7.html,
https://man7.org/linux/man-pages/man4/pts.4.html,
https://man7.org/linux/man-pages/man2/TIOCSCTTY.2const.html,
https://man7.org/linux/man-pages/man7/unix.7.html (SCM_RIGHTS),
https://github.com/opencontainers/runc/blob/main/docs/terminals.md
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import stat
import struct
import termios
import threading
import tty

from runtime.syscalls import MS_BIND, mount

# ioctls of <asm-generic/ioctls.h>, the same on x86_64 and aarch64.
TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int): the pty's number N, of /dev/pts/N
TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int): lock (1) or unlock (0) the slave
TIOCGPTPEER = 0x5441  # _IO('T', 0x41): open the slave from the master, without a path

PTMX_DEVICE = os.makedev(5, 2)  # TTYAUX_MAJOR, the multiplexer (<linux/major.h>)
PTY_SLAVE_MAJORS = range(136, 144)  # UNIX98_PTY_SLAVE_MAJOR and the 7 after it
MASTER_NAME = "/dev/pts/ptmx"  # the name sent with the master, as runc sends the path it opened
MAX_NAME = 4096  # the longest name a sender may attach (runc's MaxNameLen)
RELAY_CHUNK = 65536


class TerminalError(Exception):
    """A terminal could not be made, sent or received; the message says which and why."""


def connect(path: str) -> int:
    """Connect to the console socket at ``path`` (``--console-socket``) and return the
    descriptor: on the host, before the container's init is made, which inherits it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise TerminalError(f"cannot connect to console socket {path}: {reason}") from None
    return sock.detach()


def socketpair() -> tuple[int, int]:
    """(runtime's end, init's end) of a new unix socket pair: ``run -t``'s console socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return ours.detach(), theirs.detach()


def attach_console(sock_fd: int, console_size: dict | None = None, mount_console=True) -> str:
    """Give the calling process a new terminal of the container's devpts; send its master
    over ``sock_fd``. Runs in the container's init (or an exec'd process), after its /dev
    and /proc are mounted and it has pivoted into its root; returns the slave's name.

    1. open /dev, then pts, then pts/ptmx, never through a link; ptmx must be 5:2;
    2. unlock the new pty (unlockpt(3)) and open its slave from the master (TIOCGPTPEER);
       it must be a pty slave of that /dev/pts;
    3. set its size (TIOCSWINSZ) from ``console_size``, config.json's
       ``{"height": rows, "width": columns}``;
    4. with ``mount_console``, bind-mount it over /dev/console (the runtime spec's default
       devices: a container's init has its terminal there);
    5. send the master, with its name, over ``sock_fd`` (SCM_RIGHTS), and close both;
    6. make the slave descriptors 0, 1 and 2;
    7. become a session leader (setsid(2)) unless already one, and take the slave as
       the controlling terminal (TIOCSCTTY).

    Step 7 fails if the caller leads a process group but not a session: call this before
    setpgid(2), or call setsid(2) instead of it. Import this module before pivot_root:
    the host's Python library is not there to import from afterwards.
    """
    dev = _open_directory("/dev", None)
    try:
        pts = _open_directory("pts", dev, "/dev/pts")
        try:
            master, slave, name = _new_pty(pts)
        finally:
            os.close(pts)
        try:
            if console_size:
                resize(master, console_size.get("height", 0), console_size.get("width", 0))
            if mount_console:
                _mount_console(slave, dev)
            _send_master(sock_fd, master)
        except BaseException:
            os.close(slave)
            raise
        finally:
            os.close(master)
    finally:
        os.close(dev)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)  # inheritable: the program keeps them across execve
    if slave > 2:
        os.close(slave)
    if os.getsid(0) != os.getpid():
        os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    return name


def receive(sock_fd: int) -> tuple[int, str]:
    """(master descriptor, its name) of the one terminal sent over ``sock_fd``, as an engine
    receives it (runc's recvtty); close-on-exec. A message with no descriptor or more than one
    is refused, and what came with it closed."""
    sock = socket.socket(fileno=os.dup(sock_fd))
    try:
        name, fds, _flags, _address = socket.recv_fds(sock, MAX_NAME, 4, socket.MSG_CMSG_CLOEXEC)
    except OSError as error:
        raise TerminalError(f"cannot receive the container's terminal: {error}") from None
    finally:
        sock.close()
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        what = "nothing" if not fds else f"{len(fds)} descriptors"
        raise TerminalError(f"the container sent {what} instead of its terminal")
    return fds[0], name.decode(errors="replace")


def resize(fd: int, rows: int, columns: int) -> None:
    """Set the window size of the terminal ``fd`` (TIOCSWINSZ); its foreground process group
    gets SIGWINCH (tty_ioctl(4))."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of the terminal ``fd`` (TIOCGWINSZ); None if it is not a terminal."""
    try:
        rows, columns, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    except OSError:
        return None
    return rows, columns


class Relay:
    """While in this context, the user's terminal is the container's: what is typed reaches
    the terminal ``master``, what the container writes comes out on ``stdout``.

    As docker's ``-t``: a host terminal on ``stdin`` is put in raw mode, so that every key
    (Ctrl-C included) goes to the container's terminal, whose line discipline makes it a
    signal for the container's foreground job; its modes are restored on the way out,
    whatever ends the run. A window change (SIGWINCH) is passed on (TIOCSWINSZ), and the
    size is copied once on entry. When stdin ends, the container's terminal gets its
    end-of-file character (if in canonical mode), as if typed. Not a terminal, stdin is
    relayed all the same, without raw mode.

    The copying runs in a thread, so the caller can wait for the container meanwhile;
    enter it in the main thread (it installs a signal handler) and inside
    process.forwarding_signals, whose SIGWINCH it overrides. Leaving it, once the
    container's init has exited, copies what the container wrote until the terminal hangs
    up (all its slave descriptors closed: EIO), or until nothing came for LINGER seconds
    (a process that outlives the init, where there is no PID namespace to end it).
    """

    LINGER = 1.0

    def __init__(self, master: int, stdin: int = 0, stdout: int = 1):
        self.master = master
        self.stdin = stdin
        self.stdout = stdout
        self._saved_modes = None
        self._previous_handler = None
        self._wake = (-1, -1)
        self._thread = None

    def __enter__(self) -> Relay:
        try:
            if os.isatty(self.stdin):
                self._saved_modes = termios.tcgetattr(self.stdin)
                tty.setraw(self.stdin, termios.TCSANOW)
            self._previous_handler = signal.signal(signal.SIGWINCH, self._follow_window)
            self._follow_window()
            self._wake = os.pipe()
            os.set_blocking(self.master, False)
            self._thread = threading.Thread(target=self._copy, name="terminal relay", daemon=True)
            # Born with every signal blocked, the thread leaves them to the main thread: one
            # it took would wait to be handled until the main thread's waitpid returned.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            try:
                self._thread.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self._thread is not None:
                os.write(self._wake[1], b"x")
                self._thread.join()
        finally:
            for fd in self._wake:
                if fd != -1:
                    os.close(fd)
            self._wake = (-1, -1)
            if self._previous_handler is not None:
                signal.signal(signal.SIGWINCH, self._previous_handler)
                self._previous_handler = None
            if self._saved_modes is not None:
                termios.tcsetattr(self.stdin, termios.TCSADRAIN, self._saved_modes)
                self._saved_modes = None

    def _follow_window(self, _signum=None, _frame=None) -> None:
        size = window_size(self.stdin) or window_size(self.stdout)
        if size:
            try:
                resize(self.master, *size)
            except OSError:
                pass  # the container's terminal is gone; the run is ending

    def _copy(self) -> None:
        """The thread: copy both ways until told to stop, then the container's last words.

        Typed input the container's terminal cannot take yet waits, and stdin is not read
        meanwhile: a container that does not read its input does not stall its output.
        """
        pending = b""  # typed, not yet taken by the container's terminal
        stdin_open, stopping = True, False
        while True:
            poller = select.poll()  # what to wait for changes from round to round
            poller.register(self.master, select.POLLIN | (select.POLLOUT if pending else 0))
            if not stopping:
                poller.register(self._wake[0], select.POLLIN)
                if stdin_open and not pending:
                    poller.register(self.stdin, select.POLLIN)
            events = dict(poller.poll(self.LINGER * 1000 if stopping else None))
            if not events:
                return  # stopping, and the container wrote nothing more for LINGER seconds
            if self._wake[0] in events:
                stopping = True
            if events.get(self.master, 0) & ~select.POLLOUT and not self._output():
                return  # hung up: every descriptor of the container's terminal is closed
            if stopping:
                continue
            if events.get(self.master, 0) & select.POLLOUT:
                pending = self._type(pending)
            if self.stdin in events:
                data = read_chunk(self.stdin)
                if not data:
                    stdin_open = False
                    data = self._end_of_file()
                pending = self._type(data)

    def _output(self) -> bool:
        """Copy what the container wrote to stdout; False once its terminal hung up."""
        try:
            data = os.read(self.master, RELAY_CHUNK)
        except BlockingIOError:
            return True
        except OSError:  # EIO: no slave descriptor left open
            return False
        if not data:
            return False
        try:
            while data:
                data = data[os.write(self.stdout, data) :]
        except OSError:
            pass  # stdout is gone (EPIPE): the container's output goes nowhere, as docker's
        return True

    def _type(self, data: bytes) -> bytes:
        """Write ``data`` to the container's terminal; return what it could not take yet."""
        try:
            return data[os.write(self.master, data) :] if data else b""
        except BlockingIOError:
            return data
        except OSError:  # EIO: it hung up; input has nowhere to go
            return b""

    def _end_of_file(self) -> bytes:
        """The container terminal's end-of-file character (^D), if it reads lines; else
        nothing: a program in raw mode reads bytes, and ^D is not an end there."""
        try:
            modes = termios.tcgetattr(self.master)
        except OSError:
            return b""
        if not modes[3] & termios.ICANON:
            return b""
        character = modes[6][termios.VEOF]
        return character if isinstance(character, bytes) else bytes([character])


def read_chunk(fd: int) -> bytes:
    """Read what ``fd`` has; an error (EIO: a terminal hung up) counts as its end."""
    try:
        return os.read(fd, RELAY_CHUNK)
    except OSError:
        return b""


def _open_directory(name: str, parent: int | None, shown: str | None = None) -> int:
    """An O_PATH descriptor of directory ``name`` (in ``parent``), refusing a link."""
    flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=parent)
    except OSError as error:
        reason = "it is a symbolic link" if _is_link(name, parent) else error.strerror
        raise TerminalError(f"cannot open the container's {shown or name}: {reason}") from None


def _is_link(name: str, parent: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode)
    except OSError:
        return False


def _new_pty(pts: int) -> tuple[int, int, str]:
    """(master, slave, slave's name) of a new pty of the devpts instance ``pts``."""
    flags = os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        master = os.open("ptmx", flags, dir_fd=pts)
    except OSError as error:
        raise TerminalError(
            f"cannot open the container's /dev/pts/ptmx: {error.strerror}"
        ) from None
    try:
        found = os.fstat(master)
        if not stat.S_ISCHR(found.st_mode) or found.st_rdev != PTMX_DEVICE:
            raise TerminalError("the container's /dev/pts/ptmx is not the pty multiplexer (5:2)")
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0]
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    found = os.fstat(slave)
    if (
        not stat.S_ISCHR(found.st_mode)
        or os.major(found.st_rdev) not in PTY_SLAVE_MAJORS
        or found.st_dev != os.fstat(pts).st_dev
    ):
        os.close(slave)
        os.close(master)
        raise TerminalError("the new terminal is not one of the container's /dev/pts")
    return master, slave, f"/dev/pts/{number}"


def _mount_console(slave: int, dev: int) -> None:
    """Bind-mount the terminal ``slave`` over /dev/console (made if missing; never a link)."""
    try:
        os.close(
            os.open(
                "console", os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dev
            )
        )
    except FileExistsError:
        pass
    target = os.open("console", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev)
    try:
        if not stat.S_ISREG(os.fstat(target).st_mode) and not stat.S_ISCHR(
            os.fstat(target).st_mode
        ):
            raise TerminalError(
                "the container's /dev/console is not a file or a device: it cannot be mounted on"
            )
        try:
            mount(f"/proc/self/fd/{slave}", f"/proc/self/fd/{target}", None, MS_BIND)
        except OSError as error:
            raise TerminalError(f"cannot mount the terminal on /dev/console: {error}") from None
    finally:
        os.close(target)


def _send_master(sock_fd: int, master: int) -> None:
    """Send ``master`` over ``sock_fd`` with its name, as runc does; close the socket."""
    sock = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(sock, [MASTER_NAME.encode()], [master])
    except OSError as error:
        raise TerminalError(f"cannot send the terminal to the console socket: {error}") from None
    finally:
        sock.close()
