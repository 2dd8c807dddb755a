"""The checks of step 1's exercises (docs/step1-uts.md), ``invoke check 1 --exercise K``.

Each runs the learner's work as the exercise's solution says a program would see it: the
namespaces of a process in /proc (proc(5)), what a command prints, an exit status, the
calls strace(1) records. A step 1 container runs ``sh -c 'echo $$ >FILE; exec sleep'``:
without a PID namespace, ``$$`` is the host's PID of the process that becomes the sleep.
"""

from __future__ import annotations

import re
import shutil

from workshop.checks import sandbox
from workshop.checks.check import Check, Exercise

BOX = "box"
WAIT = 20  # seconds for the container to start; polled every 0.1
CONTAINER = (  # the function container MODULE: start one, set $pid to its sleep's, or fail
    "container() {\n"
    "  pidfile=$(mktemp)\n"
    '  "$WORKSHOP_PYTHON" -m "$1" --hostname ' + BOX + " -- "
    "sh -c 'echo $$ >'\"$pidfile\"'; exec sleep 60 >/dev/null 2>&1' >/dev/null &\n"
    "  tries=0\n"
    f'  while [ ! -s "$pidfile" ] && kill -0 $! 2>/dev/null && [ $tries -lt {WAIT * 10} ]; do\n'
    "    sleep 0.1; tries=$((tries + 1))\n"
    "  done\n"
    '  pid=$(cat "$pidfile"); rm -f "$pidfile"; [ -n "$pid" ]\n'
    "}\n"
)


def namespace_links(program) -> tuple[dict[str, str], dict[str, str]] | str:
    """({kind: link} of the host, of the learner's step 1 container's sleep), or what
    was seen instead."""
    result = program.run(
        CONTAINER + 'container "$WORKSHOP_MODULE" || exit 1\nfor kind in uts pid; do\n'
        '  echo "$kind $(readlink /proc/self/ns/$kind) $(readlink /proc/$pid/ns/$kind)"\n'
        "done; kill $pid"
    )
    links = [line.split() for line in result.out.splitlines()]
    links = [fields for fields in links if len(fields) == 3]
    if len(links) != 2:
        return result.seen("your step 1 did not start 'sleep 60' with --hostname box")
    return {kind: host for kind, host, _ in links}, {kind: inside for kind, _, inside in links}


def uts_differs(program, _scene) -> str | None:
    links = namespace_links(program)
    if isinstance(links, str):
        return links
    host, inside = links
    if inside["uts"] != host["uts"]:
        return None
    return f"the sleep's /proc/PID/ns/uts is the host's, {host['uts']}"


def pid_shared(program, _scene) -> str | None:
    links = namespace_links(program)
    if isinstance(links, str):
        return links
    host, inside = links
    if inside["pid"] == host["pid"]:
        return None
    return f"the sleep's /proc/PID/ns/pid is {inside['pid']}, not the host's {host['pid']}"


NAMESPACES_ARE_FILES = Exercise(
    [
        Check(
            "ex1-uts-differs",
            "a process in your step 1 has a UTS namespace other than the host's",
            uts_differs,
            (
                "Each namespace is a file of /proc/PID/ns, uts:[INODE]: two processes are in "
                "the same namespace if the inodes are the same (namespaces(7)). Your step 1 "
                "must put its command in a new one.",
                "readlink /proc/self/ns/uts and /proc/PID/ns/uts of the command your step "
                "started (lsns -t uts lists them): the step's NAMESPACES must hold "
                "runtime.namespaces.UTS for the two to differ.",
                "At the top of your step 1, write `NAMESPACES = namespaces.UTS`, then compare "
                "the two links of `readlink /proc/self/ns/uts` again.",
            ),
        ),
        Check(
            "ex1-pid-shared",
            "it shares the host's PID namespace (step 1 unshares the UTS one only)",
            pid_shared,
            (
                "A namespace is shared until a process unshares it (unshare(2)): step 1 makes "
                "a UTS namespace only, so /proc/PID/ns/pid is the host's.",
                "readlink /proc/self/ns/pid and /proc/PID/ns/pid: the same inode. Step 1's "
                "NAMESPACES is runtime.namespaces.UTS alone.",
                "At the top of your step 1, write `NAMESPACES = namespaces.UTS`.",
            ),
        ),
    ]
)


def script_joins(program, _scene) -> str | None:
    result = program.run(
        CONTAINER + 'container steps.step1_uts || exit 1\nstep "$pid" '
        "sh -c 'hostname; readlink /proc/self/ns/uts'; readlink /proc/$pid/ns/uts; kill $pid"
    )
    lines = result.out.split()
    if result.code == 0 and len(lines) == 3 and lines[0] == BOX and lines[1] == lines[2]:
        return None
    if lines[:1] == [BOX]:
        return "the command printed 'box' but is not in the container's UTS namespace"
    printed = lines[0] if len(lines) == 3 else ""
    return result.seen(
        f"'python3 uts_enter.py PID hostname' printed {printed!r}, not the container's 'box'"
    )


def script_leaves_host(program, _scene) -> str | None:
    result = program.run(
        CONTAINER + 'container steps.step1_uts || exit 1\nstep "$pid" hostname >/dev/null; '
        "kill $pid; hostname"
    )
    if result.last_line() == sandbox.HOSTNAME:
        return None
    return result.seen(
        f"the host's hostname became {result.last_line()!r} (the checker's throw-away host)"
    )


JOIN_IT = Exercise(
    [
        Check(
            "ex2-script-joins",
            "python3 uts_enter.py PID hostname prints the container's hostname",
            script_joins,
            (
                "setns(2) moves the calling process into the namespace an open "
                "/proc/PID/ns/uts names; what it then execs inherits it (nsenter(1)). Write "
                "uts_enter.py in the repository's top directory.",
                "os.open(f'/proc/{pid}/ns/uts', os.O_RDONLY), then "
                "runtime.syscalls.setns(fd, syscalls.CLONE_NEWUTS), then os.execvp(command[0], "
                "command): join first, exec after.",
                "Write `syscalls.setns(fd, syscalls.CLONE_NEWUTS)` after opening the file, then "
                "`os.execvp(command[0], command)`.",
            ),
        ),
        Check(
            "ex2-host-keeps-hostname",
            "the host keeps its hostname",
            script_leaves_host,
            (
                "setns(2) changes the namespaces of its caller only; the host's hostname "
                "stays unless something calls sethostname(2) outside the container.",
                "The script joins with runtime.syscalls.setns and names nothing: no "
                "sethostname in it.",
                "Join with `syscalls.setns(fd, syscalls.CLONE_NEWUTS)` and exec the command, "
                "nothing else.",
            ),
        ),
    ],
    module="uts_enter",
)


TRACED = re.compile(r"^(\d+) +(\w+)\((.*)\) += (-?\d+)", re.MULTILINE)


def unshare_then_sethostname(program, _scene) -> str | None:
    if not shutil.which("strace"):
        return "strace is not installed: install it (apt install strace), then check again"
    log = "/tmp/workshop-strace.$$"  # the sandbox's /tmp is the host's: one per run
    result = program.run(
        f"strace -f -o {log} -e trace=execve,unshare,sethostname "
        f'"$WORKSHOP_PYTHON" -m "$WORKSHOP_MODULE" --hostname {BOX} -- true; '
        f"cat {log}; rm -f {log}"
    )
    calls = [
        (int(pid), name, args, int(code)) for pid, name, args, code in TRACED.findall(result.out)
    ]
    if not calls:
        return result.seen("strace recorded no call of your step")
    step = calls[0][0]  # its first execve: python itself
    unshared = [
        pid
        for pid, name, args, code in calls
        if name == "unshare" and "CLONE_NEWUTS" in args and code == 0
    ]
    named = [
        pid
        for pid, name, args, code in calls
        if name == "sethostname" and args.startswith(f'"{BOX}"') and code == 0
    ]
    if not unshared:
        return result.seen("no process of your step called unshare(CLONE_NEWUTS)")
    if not named:
        return result.seen(f'no process of your step called sethostname("{BOX}")')
    for pid in unshared:
        own = [name for caller, name, *_ in calls if caller == pid]
        if pid != step and "sethostname" in own[own.index("unshare") :]:
            return None
    if step in unshared:
        return "the step's own process unshared, not a child: the step itself left the host"
    return "no process called unshare(CLONE_NEWUTS) and then sethostname: see the order"


SAME_WITH_UTIL_LINUX = Exercise(
    [
        Check(
            "ex3-unshare-then-sethostname",
            "under strace -f, a child of your step calls unshare(CLONE_NEWUTS), then sethostname",
            unshare_then_sethostname,
            (
                "unshare(1) unshares itself and becomes the command; the step forks first, so "
                "that it stays on the host, and only its child unshares (unshare(2)), then "
                "names the new namespace (sethostname(2)).",
                "common.run forks the child; in it, unshare(NAMESPACES) with "
                "runtime.namespaces.UTS, then setup(hostname) calls "
                "runtime.namespaces.set_hostname.",
                "Write `NAMESPACES = namespaces.UTS` and, in setup(hostname), "
                "`namespaces.set_hostname(hostname)`.",
            ),
        )
    ]
)


LONG = "0" * 65  # the kernel's limit is 64 bytes (__NEW_UTS_LEN)


def domainname_inside(program, _scene) -> str | None:
    result = program.run("step --hostname box --domainname lab -- domainname")
    if result.code == 0 and result.last_line() == "lab":
        return None
    return result.seen(f"'domainname' inside printed {result.last_line()!r}, not 'lab'")


def host_keeps_domainname(program, _scene) -> str | None:
    result = program.run(
        "before=$(domainname); step --hostname box --domainname lab -- true >/dev/null; "
        'echo "$before"; domainname'
    )
    lines = result.out.strip().splitlines()
    if len(lines) >= 2 and lines[-1] == lines[-2]:
        return None
    before = lines[-2] if len(lines) >= 2 else "?"
    return result.seen(f"the host's domain name went from {before!r} to {result.last_line()!r}")


def too_long_refused(program, _scene) -> str | None:
    result = program.run(f"step --hostname box --domainname {LONG} -- true; echo $?")
    if result.last_line() == "125":
        return None
    return result.seen(f"a domain name of 65 bytes: the step exited {result.last_line() or '?'}")


THE_OTHER_STRING = Exercise(
    [
        Check(
            "ex4-domainname-inside",
            "--domainname lab -- domainname prints lab",
            domainname_inside,
            (
                "The UTS namespace holds a second string, the NIS domain name "
                "(uts_namespaces(7)); setdomainname(2) sets it, like sethostname(2), for the "
                "caller's namespace.",
                "A wrapper runtime.syscalls.setdomainname(name) through ctypes, as "
                "syscalls.sethostname; a --domainname option (common.parser, then "
                "parser.add_argument); setup() calls the wrapper inside the new namespace.",
                'Write `parser.add_argument("--domainname", help="NIS domain name inside")` '
                "and, in setup, `syscalls.setdomainname(domainname)`.",
            ),
        ),
        Check(
            "ex4-host-keeps-domainname",
            "the host keeps its domain name",
            host_keeps_domainname,
            (
                "setdomainname(2) names the caller's UTS namespace: call it in the child, "
                "after the unshare, never in the step's own process.",
                "Call syscalls.setdomainname in setup(), which common.run runs inside the new "
                "namespaces, not in main().",
                "In setup, write `syscalls.setdomainname(domainname)`, after "
                "`namespaces.set_hostname(hostname)`.",
            ),
        ),
        Check(
            "ex4-too-long-refused",
            "a domain name of 65 bytes is refused: exit status 125",
            too_long_refused,
            (
                "The kernel refuses a domain name of more than 64 bytes with EINVAL "
                "(setdomainname(2)); the step must say so and exit 125, the runtime's own "
                "failure, as for a bad hostname.",
                "The wrapper raises OSError when the call returns -1 (syscalls._check); "
                "raised in setup(), common.run reports it and exits 125.",
                "Write `_check(LIBC.setdomainname(encoded, ctypes.c_size_t(len(encoded))), "
                '"setdomainname", name)` in the wrapper.',
            ),
        ),
    ]
)


def host_renamed(program, _scene) -> str | None:
    result = program.run(f"step --hostname {BOX} -- true >/dev/null; hostname")
    if result.last_line() == BOX:
        return None
    if result.last_line() == sandbox.HOSTNAME:
        return "the host kept its hostname: your step still makes a UTS namespace of its own"
    return result.seen(f"the host's hostname is {result.last_line()!r}, not {BOX!r}")


BREAK_IT = Exercise(
    [
        Check(
            "ex5-host-renamed",
            "with NAMESPACES = 0 your step renames the host (the checker's throw-away one); "
            "put the line back after",
            host_renamed,
            (
                "unshare(2) with no flags succeeds and does nothing: sethostname(2) then "
                "renames the namespace the step was in, the host's. The checker runs your step "
                "in a UTS namespace of its own, so your machine keeps its name.",
                "Set the step's NAMESPACES to 0: common.run then unshares nothing before "
                "setup(hostname).",
                "At the top of your step 1, write `NAMESPACES = 0` in place of "
                "NAMESPACES = namespaces.UTS.",
            ),
        )
    ]
)

EXERCISES = {
    1: NAMESPACES_ARE_FILES,
    2: JOIN_IT,
    3: SAME_WITH_UTIL_LINUX,
    4: THE_OTHER_STRING,
    5: BREAK_IT,
}
