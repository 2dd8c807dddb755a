"""What ``mycontainer ps`` and ``inspect`` show of containers, as docker shows them.

Everything here is read from the state on disk (runtime.state) at the moment it is asked:
the status from the init's facts, the exit code from exit.json, the address from the
network's lease. Nothing is cached, so nothing is stale.
"""

from __future__ import annotations

import calendar
import json
import shlex
import time

from runtime import state
from runtime.container import log_path

COMMAND_WIDTH = 20  # docker truncates the COMMAND column, as "sh -c 'while tr…"


def _seconds(timestamp: str) -> float | None:
    """An RFC 3339 UTC timestamp of ours (``2026-12-05T10:00:00.123456789Z``) -> epoch."""
    try:
        whole, _, fraction = timestamp.rstrip("Z").partition(".")
        stamp = time.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    except (ValueError, AttributeError):
        return None
    return calendar.timegm(stamp) + float(f"0.{fraction or 0}")  # UTC, whatever the zone


def ago(timestamp: str, now: float | None = None) -> str:
    """docker's human durations: "Less than a second", "3 seconds", "About a minute",
    "5 minutes", "About an hour", "2 hours", "3 days", "2 weeks", "4 months"."""
    then = _seconds(timestamp)
    if then is None:
        return ""
    seconds = max(0, (now or time.time()) - then)
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = round(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    days = seconds / 86400
    if days < 14:
        return f"{int(days)} days"
    if days < 60:
        return f"{int(days / 7)} weeks"
    if days < 365 * 2:
        return f"{int(days / 30)} months"
    return f"{int(days / 365)} years"


def status_line(found: state.State) -> str:
    """The STATUS column: "Up 5 minutes", "Up 2 seconds (Paused)", "Created",
    "Exited (3) 2 minutes ago"; an exit nobody recorded (its watcher was killed) shows
    as "Exited (unknown)"."""
    status = found.status()
    if status in (state.RUNNING, state.PAUSED):
        up = f"Up {ago(found.record.get('started', found.record.get('created', '')))}"
        return up + (" (Paused)" if status == state.PAUSED else "")
    if status in (state.CREATED, state.CREATING):
        return "Created"
    ended = found.exit_status()
    if ended is None:
        return "Exited (unknown)"
    return f"Exited ({ended['exitCode']}) {ago(ended.get('finishedAt', ''))} ago"


def ports(found: state.State) -> str:
    """The PORTS column, as docker prints published ports: ``0.0.0.0:8080->80/tcp``."""
    shown = []
    for published in found.config.get("publish", []):
        host, _, inside = published.partition(":")
        shown.append(f"0.0.0.0:{host}->{inside}" if "/" in inside else f"0.0.0.0:{published}")
    return ", ".join(shown)


def command_line(found: state.State, width: int | None = COMMAND_WIDTH) -> str:
    text = shlex.join(found.config.get("args", []))
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return f'"{text}"'


def rows(root: str, every: bool) -> list[state.State]:
    """The containers of ``root``, newest first; only those running unless ``every``."""
    found = []
    for container_id in state.ids(root):
        try:
            one = state.load(root, container_id)
        except state.StateError:
            continue  # removed meanwhile
        if every or one.status() in (state.RUNNING, state.PAUSED):
            found.append(one)
    return sorted(found, key=lambda one: one.record.get("created", ""), reverse=True)


def table(containers: list[state.State], full: bool = False) -> str:
    """``ps``'s table: columns as wide as their widest cell, as docker's."""
    header = ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")
    lines = [header]
    for one in containers:
        created = one.record.get("created", "")
        lines.append(
            (
                one.id if full else one.id[:12],
                one.config.get("image", "") or one.record.get("bundle", ""),
                command_line(one, None if full else COMMAND_WIDTH),
                f"{ago(created)} ago" if created else "",
                status_line(one),
                ports(one),
                one.name,
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def inspect(found: state.State) -> dict:
    """docker inspect's object, for the fields this runtime has."""
    status = found.status()
    ended = found.exit_status() or {}
    config = found.config
    docker_status = {state.STOPPED: "exited", state.CREATING: "created"}.get(status, status)
    network = {}
    try:
        with open(found.path("network.json")) as file:
            network = json.load(file)
    except (OSError, ValueError):
        pass
    return {
        "Id": found.id,
        "Name": f"/{found.name}" if found.name else "",
        "Created": found.record.get("created", ""),
        "Path": (config.get("args") or [""])[0],
        "Args": (config.get("args") or [])[1:],
        "State": {
            "Status": docker_status,
            "Running": status in (state.RUNNING, state.PAUSED),
            "Paused": status == state.PAUSED,
            "OOMKilled": bool(ended.get("oomKilled", False)),
            "Pid": found.pid if status in (state.RUNNING, state.PAUSED, state.CREATED) else 0,
            "ExitCode": ended.get("exitCode", 0),
            "StartedAt": found.record.get("started", ""),
            "FinishedAt": ended.get("finishedAt", ""),
        },
        "Image": config.get("image", ""),
        "Config": {
            "Hostname": config.get("hostname") or found.id[:12],
            "User": config.get("user") or "",
            "Env": [f"{key}={value}" for key, value in (config.get("env") or {}).items()],
            "Cmd": config.get("args", []),
            "WorkingDir": config.get("cwd", "/"),
            "Tty": bool(config.get("tty")),
            "OpenStdin": bool(found.record.get("interactive")),
        },
        "HostConfig": {
            "AutoRemove": bool(found.record.get("rm")),
            "NetworkMode": config.get("net", ""),
            "Memory": config.get("memory") or 0,
            "PidsLimit": config.get("pids_limit") or 0,
            "CapAdd": config.get("cap_add", []),
            "CapDrop": config.get("cap_drop", []),
            "SecurityOpt": config.get("security_opt", []),
        },
        "NetworkSettings": {
            "IPAddress": network.get("address", "").split("/")[0],
            "Gateway": network.get("gateway", ""),
            "Ports": config.get("publish", []),
        },
        "Mounts": [
            mount
            for mount in config.get("mounts", [])
            if mount.get("type") == "bind" and mount.get("source", "").startswith("/")
        ],
        "LogPath": log_path(found),
    }
