"""The state of containers on disk: the one module that reads and writes a state directory.

A container outlives the command that made it: ``mycontainer-oci create`` returns while the
container's init waits, and a later ``start``, ``state``, ``kill`` or ``delete`` (another
process, maybe another engine) must find it by its id alone. So each container is a directory
under a *state root* (``/run/mycontainer``, a tmpfs: state vanishes with a reboot, as the
processes it describes do)::

    <root>/<id>/
        state.json   what was decided at create: bundle, init pid and start time, config...
        exec.fifo    the gate between create and start (see below); gone once started
        lock         flock(2)ed by whoever changes the container: create, start, delete,
                     and a foreground ``mycontainer run`` for as long as it lives
        exit.json    the program's exit code and when it ended, once its watcher saw it
    <root>/.names/<name>   a symbolic link to the id: ``--name``, unique by symlink(2)

The status is never stored: it is derived from facts each time it is asked (runc derives
it the same way), so it cannot go stale when a process dies without telling anyone:

- ``creating``: state.json names no init yet;
- ``stopped``: the init is gone. A pid alone proves nothing, since the kernel reuses pids:
  the init's *start time* (field 22 of /proc/PID/stat, in clock ticks since boot) is
  recorded with it, and a process with that pid but another start time is someone else.
  A zombie (exited, not yet reaped by its parent) counts as gone;
- ``created``: the init lives and its gate, ``exec.fifo``, is still there;
- ``running``: the init lives and has passed the gate;
- ``paused``: created or running, and its cgroup is frozen (``pause``; runc's status too).

The gate is a FIFO (mkfifo(3)), as runc's exec.fifo. The init opens it for reading *and*
writing before it enters the container, then, once set up, blocks in read(2) on it.
``start`` opens it for writing without blocking (O_NONBLOCK: ENXIO if no reader is left,
i.e. the init died), writes one byte, and removes it. Unlike a pipe, a FIFO has a name, so
``start`` works from any process, long after ``create`` exited.

Man pages: https://man7.org/linux/man-pages/man7/fifo.7.html,
https://man7.org/linux/man-pages/man5/proc.5.html (/proc/pid/stat),
https://man7.org/linux/man-pages/man2/flock.2.html
Spec: https://github.com/opencontainers/runtime-spec/blob/main/runtime.md ("State")
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re

from runtime import cgroups

DEFAULT_ROOT = "/run/mycontainer"
OCI_VERSION = "1.2.0"  # of the runtime spec whose state we report

CREATING, CREATED, RUNNING, STOPPED = "creating", "created", "running", "stopped"
PAUSED = "paused"  # runc's too: created or running, its cgroup frozen (pause/resume)
STATE_FILE, GATE, LOCK, EXIT_FILE = "state.json", "exec.fifo", "lock", "exit.json"
NAMES = ".names"  # not a container: hidden, and prune passes it by (see names below)

# docker's rule for the names of containers and volumes alike (daemon/names:
# [a-zA-Z0-9][a-zA-Z0-9_.-]+, so two characters at least), at most NAME_MAX (255) long:
# a container's name is a file of .names here, a volume's a directory of the store.
_VALID_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,254}")
# runc's rule for ids: letters, digits and a few marks; no "/" or "..", so an id is a name.
_VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+.-]{0,1023}")


class StateError(Exception):
    """A container cannot be found, made or changed; the message says which and why."""


class InvalidName(StateError, ValueError):
    """A name docker would refuse: bad input, to the option parsers (ValueError) too."""


def check_id(container_id: str) -> str:
    """Refuse an id that could not be a directory name of its own (``..``, ``a/b``, empty)."""
    if not _VALID_ID.fullmatch(container_id) or container_id in (".", ".."):
        raise StateError(
            f"invalid container id {container_id!r}: use letters, digits, '_', '+', '-' and '.', "
            "starting with a letter or digit"
        )
    return container_id


def valid_name(name: str) -> bool:
    """Whether docker's rule allows ``name`` for a container or a volume."""
    return _VALID_NAME.fullmatch(name) is not None


def check_name(name: str, kind: str = "container") -> str:
    """Refuse a name of a ``kind`` (container or volume) that docker would refuse; say the
    rule."""
    if not valid_name(name):
        raise InvalidName(
            f"invalid {kind} name {name!r}: use 2 to 255 letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return name


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None if it is gone or a
    zombie. proc(5): field 22 of /proc/PID/stat; field 3 is its state (Z: zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()  # after "(comm)", which may hold spaces
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class State:
    """One container's record: what ``create`` decided, and where to find its processes."""

    def __init__(self, root: str, container_id: str, record: dict):
        self.root = root
        self.id = container_id
        self.directory = os.path.join(root, container_id)
        self.record = record  # state.json's object

    @property
    def pid(self) -> int:
        return self.record.get("pid", 0)

    @property
    def config(self) -> dict:
        return self.record.get("config", {})

    @property
    def name(self) -> str:
        return self.record.get("name", "")

    def exit_status(self) -> dict | None:
        """exit.json: ``exitCode``, ``finishedAt`` (and ``oomKilled`` once cleaned up), as
        the container's watcher wrote it when its program ended; None if none did (the
        program runs, or its watcher was killed before it)."""
        try:
            with open(self.path(EXIT_FILE)) as file:
                return json.load(file)
        except (FileNotFoundError, ValueError):
            return None

    def init_alive(self) -> bool:
        """Whether the init recorded here still runs: same pid, same start time."""
        return bool(self.pid) and process_start_time(self.pid) == self.record.get("start_time")

    def status(self) -> str:
        """creating, created, running, paused or stopped: derived now (the module's docstring)."""
        if not self.pid:
            return CREATING
        if not self.init_alive():
            return STOPPED
        if cgroups.is_frozen(self.record.get("cgroups", [])):
            return PAUSED
        return CREATED if os.path.lexists(self.path(GATE)) else RUNNING

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def oci_state(self) -> dict:
        """The runtime spec's State object, as ``state ID`` prints it."""
        status = self.status()
        state = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": status,
            "bundle": self.record.get("bundle", ""),
            "rootfs": self.record.get("rootfs", ""),
            "created": self.record.get("created", ""),
            "annotations": self.record.get("annotations", {}),
        }
        if status in (CREATED, RUNNING, PAUSED):
            state["pid"] = self.pid
        return state

    def save(self) -> None:
        """Write state.json atomically (write, then rename(2)): readers never see half."""
        path = self.path(STATE_FILE)
        with open(path + ".tmp", "w") as file:
            file.write(json.dumps(self.record) + "\n")  # one write: json.dump makes hundreds
        os.replace(path + ".tmp", path)


def root_directory(root: str | None = None) -> str:
    """The state root: ``root`` if given, else ``MYCONTAINER_STATE`` (for tests; empty:
    unset), else /run/mycontainer. Relative paths are refused: a later command run from
    another directory would look elsewhere."""
    path = root or os.environ.get("MYCONTAINER_STATE") or DEFAULT_ROOT
    if not os.path.isabs(path):
        name = "--root" if root else "MYCONTAINER_STATE"
        raise StateError(f"{name} must be an absolute path (got {path!r})")
    return path


def load(root: str, container_id: str) -> State:
    """The container ``container_id`` of state root ``root``, as any process finds it."""
    check_id(container_id)
    directory = os.path.join(root, container_id)
    try:
        with open(os.path.join(directory, STATE_FILE)) as file:
            record = json.load(file)
    except FileNotFoundError:
        if os.path.isdir(directory):
            return State(root, container_id, {})  # being created: state.json comes next
        raise StateError(f"container {container_id!r} does not exist") from None
    except (OSError, ValueError) as error:
        raise StateError(f"container {container_id!r}: unreadable state ({error})") from None
    return State(root, container_id, record)


def ids(root: str) -> list[str]:
    """The ids of the containers in ``root`` (hidden names are makings and removals)."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if not name.startswith("."))


def make(root: str, container_id: str, record: dict) -> tuple[State, int]:
    """Create the state directory of a new container; return it and its lock, held.

    The directory is made under a hidden name, its lock file made and locked, then renamed
    into place (rename(2) fails if the id exists: ``EEXIST``/``ENOTEMPTY``). So a visible
    directory always has a lock file, and one whose lock nobody holds while it names no
    init is a making cut short, which ``prune`` removes. A concurrent prune may take the
    hidden directory for abandoned before it is locked; prune unlinks a lock file before
    it lets go of it, so a lock with no links left means: start again.
    """
    check_id(container_id)
    os.makedirs(root, mode=0o700, exist_ok=True)
    final = os.path.join(root, container_id)
    making = os.path.join(root, f".{container_id}")
    while True:
        if os.path.lexists(final):
            raise StateError(f"container {container_id!r} already exists")
        try:
            os.mkdir(making, 0o700)
        except FileExistsError:
            raise StateError(f"container {container_id!r} is being created") from None
        try:
            lock = os.open(os.path.join(making, LOCK), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.fstat(lock).st_nlink == 0:
            os.close(lock)
            continue
        state = State(root, container_id, record)
        state.directory = making
        state.save()
        os.mkfifo(state.path(GATE), 0o600)
        try:
            os.rename(making, final)
        except OSError as error:  # another create of this id won the race
            remove(state)
            os.close(lock)
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise StateError(f"container {container_id!r} already exists") from None
            raise
        state.directory = final
        return state, lock


def renew(root: str, container_id: str, record: dict) -> State:
    """Make a stopped container's state directory ready for its next run, in place: what
    ``make`` does for a new one. The caller holds its lock, from before it saw it stopped
    until the new run is created (``mycontainer start``).

    The directory and its lock file stay: a command that found the container meanwhile
    (``rm``, ``container prune``, another ``start``) waits for that lock, then finds it
    running; had the directory gone for a moment, it would have found nothing and taken
    that for a removal. What the last run left (its exit.json, its /etc files) goes;
    state.json is replaced (atomically: readers see the old or the new), then the gate is
    made.
    """
    found = State(root, check_id(container_id), record)
    for name in os.listdir(found.directory):
        if name not in (LOCK, STATE_FILE):
            os.unlink(found.path(name))
    found.save()
    os.mkfifo(found.path(GATE), 0o600)
    return found


def lock(state: State, wait: bool = True) -> int:
    """Take the container's lock (flock(2)); return its descriptor, to close when done.

    Without ``wait``, a lock held by another process (a foreground ``mycontainer run``, a
    create or delete at work) raises StateError at once.
    """
    try:
        fd = os.open(state.path(LOCK), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StateError(f"container {state.id!r} does not exist") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise StateError(f"container {state.id!r} is in use by another mycontainer") from None
    if os.fstat(fd).st_nlink == 0:  # removed while we waited
        os.close(fd)
        raise StateError(f"container {state.id!r} does not exist")
    return fd


def try_lock(directory: str) -> int | None:
    """The lock of state directory ``directory``, taken, if no process holds it; -1 if it has
    no lock file (a removal cut short: see remove); None while someone holds it."""
    try:
        fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    except NotADirectoryError:
        return None  # not a container's
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def open_gate(state: State) -> None:
    """Let the init of a created container go on to execve its program (see the module's
    docstring); the caller holds the lock, so the gate opens once."""
    try:
        gate = os.open(state.path(GATE), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StateError(f"container {state.id!r} has already been started") from None
    except OSError as error:
        if error.errno != errno.ENXIO:
            raise
        raise StateError(f"container {state.id!r} has stopped: its init is gone") from None
    try:
        os.write(gate, b"0")
    finally:
        os.close(gate)
    os.unlink(state.path(GATE))


def record_exit(state: State, status: dict) -> None:
    """Write exit.json (atomically, as save does): how the program ended."""
    path = state.path(EXIT_FILE)
    with open(path + ".tmp", "w") as file:
        file.write(json.dumps(status) + "\n")
    os.replace(path + ".tmp", path)


# --- names ------------------------------------------------------------------------------
# A name is a symbolic link <root>/.names/<name> -> <id>. symlink(2) fails with EEXIST if the
# name exists, so two runs that want one name cannot both get it, without a lock. A link whose
# container is gone (its runtime was killed between the two removals) is stale: the next
# claim replaces it, under an flock(2) of .names, so that two claims never both replace it.


def name_owner(root: str, name: str) -> str | None:
    """The id that ``name`` names in ``root``, if its container exists."""
    try:
        container_id = os.readlink(os.path.join(root, NAMES, name))
    except (FileNotFoundError, NotADirectoryError, OSError):
        return None
    return container_id if os.path.isdir(os.path.join(root, container_id)) else None


def check_name_free(root: str, name: str) -> None:
    """StateError if a container of ``root`` has ``name``."""
    owner = name_owner(root, check_name(name))
    if owner is not None:
        raise StateError(
            f"the name {name!r} is already in use by container {owner[:12]}: "
            "remove it ('mycontainer rm') or choose another name"
        )


def claim_name(root: str, name: str, container_id: str) -> None:
    """Make ``name`` name ``container_id``; StateError if another container has it."""
    check_name(name)
    directory = os.path.join(root, NAMES)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    link = os.path.join(directory, name)
    lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if name_owner(root, name) == container_id:
            return
        check_name_free(root, name)
        if os.path.lexists(link):
            os.unlink(link)  # stale
        os.symlink(container_id, link)
    finally:
        os.close(lock)


def release_name(root: str, name: str, container_id: str) -> None:
    """Remove ``name`` if it still names ``container_id``."""
    link = os.path.join(root, NAMES, name)
    try:
        if os.readlink(link) == container_id:
            os.unlink(link)
    except (FileNotFoundError, OSError):
        pass


def prune_names(root: str) -> None:
    """Remove the names whose containers are gone.

    Every ``run --rm`` prunes: the names are looked at without the lock, which is taken
    only if one is stale, so that runs at once do not queue for it (nor ``--name`` claims
    behind them). Under the lock each is looked at again: a claim may have replaced it.
    """
    directory = os.path.join(root, NAMES)
    try:
        stale = [name for name in os.listdir(directory) if name_owner(root, name) is None]
        if not stale:
            return
        lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in stale:
            if name_owner(root, name) is None:
                try:
                    os.unlink(os.path.join(directory, name))
                except FileNotFoundError:
                    pass  # released meanwhile
    finally:
        os.close(lock)


def find(root: str, reference: str) -> State:
    """The container ``reference`` names, as docker finds it: a full id, a name, or a
    prefix of exactly one id."""
    if _VALID_ID.fullmatch(reference) and os.path.isdir(os.path.join(root, reference)):
        return load(root, reference)
    owner = name_owner(root, reference)
    if owner:
        return load(root, owner)
    matches = [i for i in ids(root) if i.startswith(reference)] if reference else []
    if len(matches) == 1:
        return load(root, matches[0])
    if matches:
        raise StateError(
            f"{reference!r} is the start of {len(matches)} container ids: give more of it"
        )
    raise StateError(f"no such container: {reference}")


def remove(state: State) -> None:
    """Remove a container's state directory (it holds only files), and its name; missing
    is fine.

    The caller holds its lock, whose file goes last: a directory without one is then only
    ever a removal cut short, which prune recognises.
    """
    if state.name:
        release_name(state.root, state.name, state.id)
    try:
        names = sorted(os.listdir(state.directory), key=lambda name: name == LOCK)
        for name in names:
            os.unlink(os.path.join(state.directory, name))
        os.rmdir(state.directory)
    except FileNotFoundError:
        pass
