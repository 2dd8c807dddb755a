"""The checks of step 9's exercises (docs/step9-oci.md), ``invoke check 9 --exercise K``.

Step 9 has no program of its own: the learner drives ``mycontainer-oci`` by hand on a
bundle, /tmp/step9/bundle (``MYCONTAINER_WORKSHOP_STEP9`` names another directory than
/tmp/step9). Exercises 5 and 6 change that bundle's config.json; their checkers run it as
the chapter does, with ``mycontainer-oci`` (``python -m runtime.ocicli``), in the sandbox's
namespaces, under a state root of their own (``--root`` in a temporary directory) and a
container id of their own, and delete the container afterwards, also when a check fails:

- exercise 5: the program is ``ip -o -4 addr``; between ``create`` and ``start`` the
  checker does an engine's part (a veth pair, one end moved into the init's network
  namespace, addresses on both), so the program's first instruction sees ``eth0``;
- exercise 6: ``delete`` runs the bundle's poststop hook, which writes the container's
  State to /tmp/step9/poststop.json.

What the learner's own run left in poststop.json is put back afterwards, in both.

Exercises 1 to 3 edit a container's state or kill its init by hand and ask what ``state``
and ``start`` say, and 4 edits runtime/process.py and asks where a message goes: what they
ask is an explanation, with nothing left to observe.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import tempfile

from workshop.checks import sandbox
from workshop.checks.check import Check, Exercise

DIRECTORY = os.environ.get("MYCONTAINER_WORKSHOP_STEP9") or "/tmp/step9"
BUNDLE = os.path.join(DIRECTORY, "bundle")
POSTSTOP = os.path.join(DIRECTORY, "poststop.json")
MODULE = "runtime.ocicli"  # mycontainer-oci
WAIT = 10  # seconds for the container to stop by itself: ip(8) takes milliseconds
ADDRESS = "10.0.9.2/24"  # the chapter's

PRELUDE = """\
oci() { step --root "$WORKSHOP_STATE" "$@"; }
stopped() {
  end=$(($(date +%s) + $WORKSHOP_WAIT))
  until oci state "$WORKSHOP_ID" | grep -q '"status": "stopped"'; do
    [ "$(date +%s)" -lt "$end" ] || { echo "still running"; exit 0; }
    sleep 0.1
  done
}
oci create --bundle "$WORKSHOP_BUNDLE" --pid-file "$WORKSHOP_SCRATCH/pid" "$WORKSHOP_ID" \\
  >"$WORKSHOP_SCRATCH/out" 2>&1 || { echo "create failed"; exit 0; }
"""
# The engine's part, in the sandbox's network namespace, as the chapter does it by hand.
NETWORK_WINDOW = """\
pid=$(cat "$WORKSHOP_SCRATCH/pid")
ip link add veth-demo type veth peer name eth0 netns "$pid" &&
  ip address add 10.0.9.1/24 dev veth-demo && ip link set veth-demo up &&
  nsenter --target "$pid" --net sh -c \\
    'ip address add 10.0.9.2/24 dev eth0 && ip link set eth0 up' || { echo "no veth"; exit 0; }
oci start "$WORKSHOP_ID" || { echo "start failed"; exit 0; }
stopped
echo stopped
"""
KILLED_AND_DELETED = """\
oci start "$WORKSHOP_ID" || { echo "start failed"; exit 0; }
oci kill "$WORKSHOP_ID" KILL 2>/dev/null  # its program may have ended already
stopped
oci delete "$WORKSHOP_ID" && echo deleted
"""


class Container:
    """A container of the learner's bundle, in a state root of the checker's own: its
    script runs once, for the first check that asks; the others read the same result."""

    def __init__(self, scratch: str):
        self.scratch = scratch
        self.state = os.path.join(scratch, "state")
        self.id = f"workshop-{secrets.token_hex(4)}"
        self.results: dict[str, sandbox.Result] = {}

    def run(self, program, script: str) -> sandbox.Result:
        if script not in self.results:
            self.results[script] = program.run(
                PRELUDE + script,
                WORKSHOP_STATE=self.state,
                WORKSHOP_ID=self.id,
                WORKSHOP_BUNDLE=BUNDLE,
                WORKSHOP_SCRATCH=self.scratch,
                WORKSHOP_WAIT=str(WAIT),
            )
        return self.results[script]

    def output(self) -> str:
        """What the container's program (or a failed create) wrote."""
        try:
            with open(os.path.join(self.scratch, "out"), errors="replace") as file:
                return file.read()
        except FileNotFoundError:
            return ""

    def remove(self) -> None:
        """``delete --force`` the container if a script left it, in a sandbox too."""
        if os.path.isdir(os.path.join(self.state, self.id)):
            command = f"step --root {shlex.quote(self.state)} delete --force {self.id}"
            sandbox.Program(MODULE).run(command)


@contextlib.contextmanager
def container():
    """A Container in a directory of its own, deleted and removed afterwards. A poststop
    hook (exercise 6's) runs at each delete, so what the learner's own run left in
    poststop.json is put back as it was."""
    try:
        with open(POSTSTOP, "rb") as file:
            before = file.read()
    except FileNotFoundError:
        before = None
    scratch = tempfile.TemporaryDirectory(prefix="workshop-check-", ignore_cleanup_errors=True)
    try:
        with scratch as directory:
            made = Container(directory)
            try:
                yield made
            finally:
                made.remove()
    finally:
        if before is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(POSTSTOP)
        else:
            with open(POSTSTOP, "wb") as file:
                file.write(before)


def not_run(result: sandbox.Result, made: Container) -> str | None:
    """Why the container's program did not run to its end, in one line; None if it did."""
    said = result.last_line()
    if not os.path.isfile(os.path.join(BUNDLE, "config.json")):
        return f"there is no {BUNDLE}/config.json: make the bundle as Check your work does"
    if said == "create failed":
        output = made.output().strip().splitlines()
        return f"mycontainer-oci create failed: {output[-1] if output else 'it said nothing'}"
    if said == "still running":
        return (
            f"the container's program was still running {WAIT} seconds after start "
            "(is it still Check your work's sleep?)"
        )
    if said in ("start failed", "no veth"):
        return result.seen(f"the container could not be run: {said}")
    return None


def addresses(made: Container) -> list[str]:
    """The lines of ``ip -o -4 addr`` the container's program printed."""
    return [line for line in made.output().splitlines() if re.match(r"\d+: \S+ +inet ", line)]


def lists_addresses(program, made: Container) -> str | None:
    result = made.run(program, NETWORK_WINDOW)
    why = not_run(result, made)
    if why:
        return why
    if addresses(made):
        return None
    first = (made.output().strip().splitlines() or ["nothing"])[0]
    return f"the program printed {first!r}, not its IPv4 addresses"


def eth0_at_start(program, made: Container) -> str | None:
    result = made.run(program, NETWORK_WINDOW)
    why = not_run(result, made)
    if why:
        return why
    lines = addresses(made)
    names = [line.split()[1] for line in lines]
    if "veth-demo" in names:
        return (
            "the program sees veth-demo, the engine's end: the container shares the "
            "engine's network namespace (config.json's linux.namespaces has no network)"
        )
    if any(line.split()[1:4] == ["eth0", "inet", ADDRESS] for line in lines):
        return None
    return f"the program saw {', '.join(names) or 'no address'}, not eth0 with {ADDRESS}"


def poststop_file(program, made: Container) -> tuple[sandbox.Result, str | None]:
    """The container run and deleted as the chapter does: the script's result, and what
    the hook wrote into poststop.json (None if it wrote nothing)."""
    if KILLED_AND_DELETED not in made.results:  # a file of the learner's run: put back after
        with contextlib.suppress(FileNotFoundError):
            os.remove(POSTSTOP)
    result = made.run(program, KILLED_AND_DELETED)
    try:
        with open(POSTSTOP, errors="replace") as file:
            return result, file.read()
    except FileNotFoundError:
        return result, None


def hook_writes(program, made: Container) -> str | None:
    result, text = poststop_file(program, made)
    problem = not_run(result, made)
    if problem:
        return problem
    if result.last_line() != "deleted":
        return result.seen("mycontainer-oci delete failed")
    if text is None:
        return result.seen(f"after delete, there is no {POSTSTOP}: no poststop hook wrote it")
    return None


def state_stopped(program, made: Container) -> str | None:
    result, text = poststop_file(program, made)
    if text is None:
        return not_run(result, made) or f"after delete, there is no {POSTSTOP}"
    try:
        written = json.loads(text)
    except ValueError:
        return f"{POSTSTOP} holds {text.strip()[:60]!r}, not a State in JSON"
    if not isinstance(written, dict) or written.get("id") != made.id:
        return f"{POSTSTOP} does not hold the State of the checker's container {made.id}"
    if written.get("status") != "stopped" or "pid" in written:
        seen = f"status {written.get('status')!r}" + (", a pid" if "pid" in written else "")
        return f"the State in {POSTSTOP} has {seen}, not status 'stopped' and no pid"
    return None


NETWORK_WINDOW_EXERCISE = Exercise(
    [
        Check(
            "ex5-lists-addresses",
            f"the program of {BUNDLE} is ip -o -4 addr: it lists the container's IPv4 "
            "addresses, then exits",
            lists_addresses,
            (
                "A bundle's program is config.json's process.args, argv as execve(2) takes it "
                "(runtime-spec config.md, Process). Start from Check your work's bundle; the "
                "exercise makes its program ip -o -4 addr, which prints one line per address.",
                f"In {BUNDLE}/config.json, make process.args "
                '["ip", "-o", "-4", "addr"] (the line "sh", "-c", ... of Check your work).',
                'Write `sed -i \'s/^\\(\\s*\\)"sh", .*/\\1"ip", "-o", "-4", "addr"/\' '
                "/tmp/step9/bundle/config.json`.",
            ),
        ),
        Check(
            "ex5-eth0-at-start",
            "given an engine's veth between create and start, the program's first instruction "
            f"sees eth0 with {ADDRESS}",
            eth0_at_start,
            (
                "Between create and start, the init waits at its gate with its namespaces "
                "made: an engine (netavark, a CNI plugin) configures the container's network "
                "then, knowing its pid, so the program finds it ready (runtime-spec runtime.md, "
                "Lifecycle; network_namespaces(7)).",
                "The checker does the engine's part as the chapter does; your bundle must give "
                'the container a network namespace of its own: {"type": "network"} in '
                "config.json's linux.namespaces, as mycontainer-oci spec writes it.",
                "The checker runs the chapter's "
                "`ip link add veth-demo type veth peer name eth0 netns $pid`, into the init's "
                'own network namespace: keep {"type": "network"} in config.json, change its '
                "program only.",
            ),
        ),
    ],
    module=MODULE,
    scene=container,
)

A_HOOK = Exercise(
    [
        Check(
            "ex6-hook-writes",
            f"delete runs the bundle's poststop hook, which writes {POSTSTOP}",
            hook_writes,
            (
                "Hooks are programs an engine asks the runtime to run at points of the "
                "lifecycle, from config.json's hooks; poststop ones run in delete, once the "
                "container is gone, in the runtime's namespaces (runtime-spec config.md, "
                "POSIX-platform Hooks).",
                f'In {BUNDLE}/config.json, add "hooks": {{"poststop": [{{"path": "/bin/sh", '
                '"args": [...]}]}: path is the program on the host, args its whole argv, '
                "args[0] included.",
                'Write `config["hooks"] = {"poststop": [{"path": "/bin/sh", "args": ["sh", '
                '"-c", "cat > /tmp/step9/poststop.json"]}]}` into the bundle\'s config.json.',
            ),
        ),
        Check(
            "ex6-state-stopped",
            f"{POSTSTOP} holds the deleted container's State: its id, status stopped, no pid",
            state_stopped,
            (
                "A hook gets the container's State on its stdin, as state ID prints it "
                "(runtime-spec runtime.md, State): in poststop, the container is gone, so "
                "its status is stopped and it has no pid.",
                "The hook must keep its stdin whole: sh -c 'cat > FILE' writes what it reads; "
                "the checker compares the file with its own container's id and status.",
                "Make the hook's command `cat > /tmp/step9/poststop.json`, nothing else.",
            ),
        ),
    ],
    module=MODULE,
    scene=container,
)

EXERCISES = {5: NETWORK_WINDOW_EXERCISE, 6: A_HOOK}
