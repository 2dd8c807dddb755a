"""The ``mycontainer`` command line, in click. The only module of the package that imports it.

Errors are one line on stderr, ``mycontainer: error: <what went wrong and what to do>``, and
exit codes follow docker's: 125 when mycontainer itself fails (bad flags included), 126 when
the command cannot be executed, 127 when it is not found, 128+N when it is killed by signal N,
otherwise the command's own exit code. A plain ``run`` never gets here: see runtime.launcher.
"""

from __future__ import annotations

import click

from runtime import __version__, commands, execoptions, exits, runoptions

CONTEXT = {"help_option_names": ["-h", "--help"]}
# pull's and login's: the same registry, reached the same way (runtime.registry)
TLS_VERIFY = click.option(
    "--tls-verify",
    type=click.BOOL,
    default=True,
    show_default=True,
    help="Verify the registry's certificate; false also allows plain HTTP.",
)


class RunCommand(click.Command):
    """``run``, whose options may also follow the command (``run busybox hostname --hostname a``).

    Before click parses, runoptions.split_run_args moves our options to the front; parsing then
    stops at IMAGE (``allow_interspersed_args = False``), so everything after IMAGE that is not
    ours, such as the ``-l`` of ``ls -l``, belongs to the command.
    """

    allow_interspersed_args = False

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(arg in CONTEXT["help_option_names"] for arg in args[:1]):
            return super().parse_args(ctx, args)
        try:
            ours, rest = runoptions.split_run_args(args)
        except ValueError as error:
            raise click.UsageError(str(error), ctx) from None
        return super().parse_args(ctx, ours + rest)


def _checked_by(check):
    """A click callback that validates a value with one of runoptions.RUN_OPTIONS's checks
    (each value, as a list, for a repeatable option)."""

    def callback(_ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return None
        try:
            return [check(one) for one in value] if param.multiple else check(value)
        except ValueError as error:  # the message names the option and the bad value
            raise click.ClickException(str(error)) from None

    return callback


def _with_options(command: click.Command, table, options: dict, flags: dict) -> click.Command:
    """``command`` with a click option for each of an option table's (runoptions,
    execoptions): ``options`` take a value that their check validates, ``flags`` none; the
    short names and the repeatable ones are the table's too."""
    for name, (check, help_) in options.items():
        short = [short for short, long in table.SHORT_OPTIONS.items() if long == name]
        multiple = name in table.REPEATABLE_OPTIONS
        option = click.option(
            name, *short, multiple=multiple, callback=_checked_by(check), help=help_
        )
        command = option(command)
    for name, help_ in flags.items():
        short = [short for short, long in table.SHORT_FLAGS.items() if long == name]
        command = click.option(name, *short, is_flag=True, help=help_)(command)
    return command


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="mycontainer")
def cli() -> None:
    """A Linux container runtime in Python, built to learn containers from."""


@cli.command(cls=RunCommand, context_settings=CONTEXT)
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(image: str, command: tuple[str, ...], **options: str | None) -> int:
    """Run COMMAND (default: the image's) in a new container made from IMAGE.

    IMAGE is an image in the store ('busybox' is built by 'invoke rootfs'; see 'mycontainer
    images'), an image file to import (OCI layout or archive, docker save archive, rootfs
    tarball; FILE:TAG picks one of several), or a root filesystem directory. Options may
    come before IMAGE or after COMMAND; put '--' before COMMAND to pass it an argument that
    looks like one of ours (run busybox -- echo --hostname). After IMAGE, only long options
    are ours: '-p' there is the command's (run busybox mkdir -p /a/b).

    The network (--net bridge) is bridge mycontainer0 with subnet 10.199.0.0/16; set
    MYCONTAINER_SUBNET (and MYCONTAINER_BRIDGE) in the environment to change them.

    \b
    Examples:
      mycontainer run -it busybox sh
      mycontainer run --hostname box busybox hostname
      mycontainer run busybox sh -c 'echo $$' --hostname box
      mycontainer run -p 8080:80 busybox httpd -f -p 80
    """
    args = list(command[1:] if command[:1] == ("--",) else command)
    return commands.run(image, args, **options)


run = _with_options(run, runoptions, runoptions.RUN_OPTIONS, runoptions.RUN_FLAGS)


class ExecCommand(click.Command):
    """``exec``: options before CONTAINER only, as docker's; the rest is the command."""

    allow_interspersed_args = False


@cli.command("exec", cls=ExecCommand, context_settings=CONTEXT)
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(container: str, command: tuple[str, ...], **options) -> int:
    """Run COMMAND in running container CONTAINER (a name, an id or the start of one).

    COMMAND joins the container's namespaces and cgroups, as its user, in its working
    directory, with its environment and its boundaries (capabilities, no_new_privs,
    seccomp). The exit code is COMMAND's.

    \b
    Examples:
      mycontainer exec web ps
      mycontainer exec -it web sh
      mycontainer exec -u nobody -w /tmp -e DEBUG=1 web env
    """
    from runtime import execution

    return execution.command(container, list(command), **options)


exec_ = _with_options(exec_, execoptions, execoptions.EXEC_OPTIONS, execoptions.EXEC_FLAGS)


@cli.command(context_settings=CONTEXT)
@click.argument("file")
def load(file: str) -> int:
    """Import an image file into the store and print its name.

    FILE is an OCI image layout (directory or .tar/.tar.gz), a 'docker save' archive or a
    root filesystem tarball (.tar, .tar.gz, .tar.xz); FILE:TAG picks one image of several.
    Layers already in the store are not unpacked again.
    """
    return commands.load(file)


@cli.command(context_settings=CONTEXT)
@click.argument("reference")
@click.option("--platform", help="os/arch[/variant] of an image of several (default: the host's).")
@TLS_VERIFY
@click.option("--quiet", "-q", is_flag=True, help="Print the digest only, no progress.")
def pull(reference: str, platform: str | None, tls_verify: bool, quiet: bool) -> int:
    """Pull an image from its registry into the store and print its digest.

    REFERENCE is as docker's: alpine, alpine:3.20, ghcr.io/owner/name:tag,
    localhost:5000/name, name@sha256:DIGEST. Layers already in the store are not fetched
    again; each layer is unpacked while it downloads. Credentials come from 'mycontainer
    login' (docker's ~/.docker/config.json, podman's auth.json). A registry on this machine
    may answer in plain HTTP, so may those named in MYCONTAINER_INSECURE_REGISTRIES
    (host[:port], comma-separated).
    """
    from runtime import exits
    from runtime import pull as pulling

    with exits.interruptible():
        pulled = pulling.pull(reference, platform=platform, tls_verify=tls_verify, quiet=quiet)
    click.echo(pulled.details.get("digest"))
    return 0


@cli.command(context_settings=CONTEXT)
@click.option("--digests", is_flag=True, help="Show the registry digest of each image too.")
def images(digests: bool) -> int:
    """List the images in the store: repository, tag, id, size, when it was created."""
    rows = _image_rows(digests)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("   ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(row)).rstrip())
    return 0


def _image_rows(digests: bool) -> list[tuple[str, ...]]:
    """The table of ``images``, heading first, as docker's: the id is the config's digest,
    short; the size the layers' unpacked bytes; an image pulled by digest alone has no tag."""
    from runtime import image, listing

    heading = ("REPOSITORY", "TAG") + ("DIGEST",) * digests + ("IMAGE ID", "CREATED", "SIZE")
    rows = [heading]
    sizes: dict[str, int] = {}
    for each in image.list_images():
        if "@" in each.name:
            repository, tag = each.name.partition("@")[0], "<none>"
        else:
            repository, _, tag = each.name.rpartition(":")
        digest = (each.details.get("digest") or "<none>",) * digests
        created = each.details.get("created")
        ago = listing.ago(created) if created else ""
        size = sum(_layer_size(diff_id, sizes) for diff_id in each.layers)
        short_id = each.id.partition(":")[2][:12]
        rows.append(
            (repository, tag, *digest, short_id, f"{ago} ago" if ago else "N/A", _size(size))
        )
    return rows


def _layer_size(diff_id: str, sizes: dict[str, int]) -> int:
    """The bytes of a stored layer's files (each counted once per image that uses it, as
    docker's SIZE)."""
    import os

    from runtime import image

    if diff_id not in sizes:
        total = 0
        top = os.path.join(image.layers_root(), diff_id.partition(":")[2])
        for directory, _subdirectories, files in os.walk(top):
            for name in files:
                try:
                    total += os.lstat(os.path.join(directory, name)).st_size
                except FileNotFoundError:  # removed meanwhile
                    pass
        sizes[diff_id] = total
    return sizes[diff_id]


def _size(count: int) -> str:
    """docker's sizes: decimal units, three significant digits (``7.8MB``, ``124MB``)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            value = count / scale
            return f"{value:.3g}{unit}" if value < 1000 else f"{value:.0f}{unit}"
    return f"{count}B"


@cli.command(context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True)
def rmi(names: tuple[str, ...]) -> int:
    """Remove images from the store, with the layers no other image uses.

    NAME is a name (alpine, alpine:3.20, docker.io/library/alpine:3.20), REPOSITORY@DIGEST,
    or an image id or its start, as 'mycontainer images' shows them.
    """
    from runtime import container, image

    container.check_host()
    with image.StoreLock(exclusive=True):  # no import or starting container meanwhile
        try:
            for name in names:
                found = image.matching(name)
                if len(found) > 1 and not {"@", ":"} & set(name):
                    raise click.ClickException(
                        f"image id {name} is several images' ("
                        + ", ".join(i.name for i in found)
                        + "): remove them by name"
                    )
                for each in found:
                    users = container.containers_using(each.name)
                    if users:
                        raise click.ClickException(
                            f"image {name} is used by container {users[0][:12]}: "
                            "remove it first ('mycontainer rm -f')"
                        )
                    image.remove(each.name)
                    click.echo(f"removed {each.name}")
        finally:  # the layers of the images removed before an error go too
            image.remove_unused_layers(container.layers_in_use())
    return 0


@cli.command(context_settings=CONTEXT)
def prune() -> int:
    """Remove what a killed mycontainer left behind (state, cgroups, network, storage).

    A 'run --rm' container lives only as long as its 'mycontainer run': if that process was
    killed (say with SIGKILL), the container's processes are stopped and its cgroups, veth,
    address, published ports and storage removed here; so is the storage of containers that
    no longer exist (after a reboot, which empties /run). Every 'run --rm' does this too.
    Containers kept after they stopped stay: 'container prune' removes those. Then, if no
    container is left, prune also removes the bridge and its NAT rules, which 'run' keeps
    for the next container.
    """
    from runtime import container, image, network

    container.check_host()
    problems: list[str] = []
    for container_id in container.prune(problems=problems):
        click.echo(container_id)
    for problem in problems:
        click.echo(f"mycontainer: warning: {problem}", err=True)
    with image.StoreLock(exclusive=True):  # waits for running imports, and starting containers
        for leftover in image.prune_partial():
            click.echo(f"removed what an interrupted import left: {leftover}")
        for diff_id in image.remove_unused_layers(container.layers_in_use()):
            click.echo(f"removed a layer no image or container uses: {diff_id}")
    try:
        network.remove_unused_bridge(container.state_root())
    except network.NetworkError as error:
        raise click.ClickException(str(error)) from None
    return 0


# --- containers that outlive one command: docker's everyday commands ----------------------


def _root() -> str:
    from runtime import container

    container.check_host()
    return container.state_root()


# stop's and restart's grace period, as docker's -t
GRACE = click.option(
    "-t",
    "--time",
    "seconds",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)


def _each(references: tuple[str, ...], action) -> int:
    """Run ``action(found)`` for each container named, as docker does: a failure is one
    line and the others go on; then exit 125 if any failed."""
    from runtime import container, state

    root, failed = _root(), False
    for reference in references:
        try:
            action(state.find(root, reference))
        except (state.StateError, container.ContainerError) as error:
            click.echo(f"mycontainer: error: {error}", err=True)
            failed = True
    return exits.EXIT_RUNTIME_ERROR if failed else 0


@cli.command(context_settings=CONTEXT)
@click.option("-a", "--all", "every", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Only the ids.")
@click.option("--no-trunc", is_flag=True, help="Full ids and commands.")
def ps(every: bool, quiet: bool, no_trunc: bool) -> int:
    """List the running containers (all of them with -a)."""
    from runtime import listing

    found = listing.rows(_root(), every)
    if quiet:
        for one in found:
            click.echo(one.id if no_trunc else one.id[:12])
    else:
        click.echo(listing.table(found, full=no_trunc))
    return 0


@cli.command(context_settings=CONTEXT)
@click.argument("containers", nargs=-1, required=True)
def inspect(containers: tuple[str, ...]) -> int:
    """Print what is known of containers, as JSON (docker inspect's fields)."""
    import json

    from runtime import listing

    found = []
    code = _each(containers, lambda one: found.append(listing.inspect(one)))
    click.echo(json.dumps(found, indent=4))
    return code


@cli.command(context_settings=CONTEXT)
@click.argument("containers", nargs=-1, required=True)
def wait(containers: tuple[str, ...]) -> int:
    """Wait until containers stop; print each one's exit code."""
    from runtime import container

    def one(found) -> None:
        ended = container.wait_exit(found)
        if ended is None:
            raise container.ContainerError(
                f"the exit code of {container.shown(found)} is unknown: "
                "its monitor was killed before it ended"
            )
        click.echo(ended["exitCode"])

    return _each(containers, one)


@cli.command(context_settings=CONTEXT)
@GRACE
@click.argument("containers", nargs=-1, required=True)
def stop(seconds: int, containers: tuple[str, ...]) -> int:
    """Stop running containers: SIGTERM, then SIGKILL after the grace period."""
    from runtime import container

    def one(found) -> None:
        container.stop(found.root, found.id, seconds)
        click.echo(container.shown(found))

    return _each(containers, one)


@cli.command(context_settings=CONTEXT)
@GRACE
@click.argument("containers", nargs=-1, required=True)
def restart(seconds: int, containers: tuple[str, ...]) -> int:
    """Stop containers (as 'stop' does) if they run, then start them again."""
    from runtime import container, detached, state

    def one(found) -> None:
        if found.status() != state.STOPPED:
            container.stop(found.root, found.id, seconds)
            found = state.load(found.root, found.id)  # gone if it was run with --rm
        detached.restart(found.root, found)
        click.echo(container.shown(found))

    return _each(containers, one)


@cli.command(context_settings=CONTEXT)
@click.option("-s", "--signal", "name", default="KILL", show_default=True, help="The signal.")
@click.argument("containers", nargs=-1, required=True)
def kill(name: str, containers: tuple[str, ...]) -> int:
    """Send a signal to the main process of running containers."""
    from runtime import container, process, state

    try:
        signum = process.parse_signal(name)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--signal'") from None

    def one(found) -> None:
        if found.status() not in (state.RUNNING, state.PAUSED):
            raise container.ContainerError(f"container {container.shown(found)} is not running")
        container.kill(found.root, found.id, signum)
        click.echo(container.shown(found))

    return _each(containers, one)


@cli.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Kill and remove running containers too.")
@click.argument("containers", nargs=-1, required=True)
def rm(force: bool, containers: tuple[str, ...]) -> int:
    """Remove containers: their writable layer, log, name and address go."""
    from runtime import container

    def one(found) -> None:
        container.remove(found.root, found.id, force)
        click.echo(container.shown(found))

    return _each(containers, one)


@cli.command(context_settings=CONTEXT)
@click.argument("containers", nargs=-1, required=True)
def start(containers: tuple[str, ...]) -> int:
    """Start stopped containers again, in the background, with their configuration."""
    from runtime import container, detached

    def one(found) -> None:
        detached.restart(found.root, found)
        click.echo(container.shown(found))

    return _each(containers, one)


@cli.command(context_settings=CONTEXT)
@click.option("-f", "--follow", is_flag=True, help="Go on printing until the container stops.")
@click.option("-n", "--tail", default="all", help="Only the last N lines (default: all).")
@click.option("-t", "--timestamps", is_flag=True, help="Show each line's time.")
@click.argument("reference", metavar="CONTAINER")
def logs(follow: bool, tail: str, timestamps: bool, reference: str) -> int:
    """Print what a detached container wrote on stdout and stderr."""
    from runtime import container, logs, state

    if tail != "all" and not tail.isdigit():
        raise click.BadParameter(f"{tail!r} is not a number or 'all'", param_hint="'--tail'")
    found = state.find(_root(), reference)

    def running() -> bool:
        return found.init_alive() or (
            container.watcher_alive(found) and found.exit_status() is None
        )

    logs.show(
        container.log_path(found),
        None if tail == "all" else int(tail),
        timestamps,
        follow,
        running,
    )
    return 0


@cli.command(context_settings=CONTEXT)
@click.option("-u", "--username", help="The user name (default: asked on the terminal).")
@click.option(
    "-p", "--password", help="The password or access token (unsafe: use --password-stdin)."
)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@TLS_VERIFY
@click.argument("registry", default="docker.io")
def login(
    username: str | None,
    password: str | None,
    password_stdin: bool,
    tls_verify: bool,
    registry: str,
) -> int:
    """Log in to REGISTRY (host[:port], default Docker Hub): check the credentials against
    it, then save them where docker and podman look too (~/.docker/config.json, or
    REGISTRY_AUTH_FILE), for pull and run to use."""
    import sys

    from runtime import credentials
    from runtime import login as logging_in

    if password is not None:
        if password_stdin:
            raise click.UsageError("--password and --password-stdin are mutually exclusive")
        click.echo(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True
        )
    if password_stdin:
        if not username:
            raise click.UsageError("--password-stdin needs --username")
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if username is None or password is None:
        if not sys.stdin.isatty():
            raise click.UsageError(
                "cannot ask for a user name and password without a terminal:"
                " give --username and --password-stdin"
            )
        username = username or click.prompt("Username")
        password = click.prompt("Password", hide_input=True)
    if not username or not password:
        raise click.UsageError("a user name and a password are needed")
    try:
        logging_in.check(registry, username, password, tls_verify)
        path = credentials.store(registry, username, password)
    except (logging_in.LoginError, credentials.CredentialsError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"WARNING! Your password will be stored unencrypted in {path}.", err=True)
    click.echo("Login Succeeded")
    return 0


@cli.command(context_settings=CONTEXT)
@click.argument("registry", default="docker.io")
def logout(registry: str) -> int:
    """Log out of REGISTRY (default Docker Hub): remove its credentials from the file that
    'mycontainer login' writes."""
    from runtime import credentials

    name = credentials.normalize(registry)
    try:
        erased = credentials.erase(registry)
        left = credentials.where(registry)
    except credentials.CredentialsError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Removing login credentials for {name}" if erased else f"Not logged in to {name}")
    if left:
        click.echo(f"WARNING! {left} still has credentials for {name}, used from there.", err=True)
    return 0


@cli.group(context_settings=CONTEXT)
def container() -> None:
    """Manage containers (docker's 'container' commands)."""


@container.command("prune", context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
def container_prune(force: bool) -> int:
    """Remove all stopped containers."""
    from runtime import container as containers
    from runtime import listing, state

    if not force:  # docker's question, as volume prune's
        try:
            if not click.confirm("This will remove all stopped containers. Continue?", err=True):
                return 0
        except click.Abort:  # no answer (stdin at its end): no
            click.echo(err=True)
            return 0
    for found in listing.rows(_root(), every=True):
        if found.status() == state.STOPPED:
            try:
                containers.remove(found.root, found.id)
            except (state.StateError, containers.ContainerError):
                continue  # started again, or removed, meanwhile
            click.echo(found.id)
    return 0


@cli.command(context_settings=CONTEXT, hidden=True)
@click.option("--rm", "remove", is_flag=True)
@click.argument("container_id")
def cleanup(remove: bool, container_id: str) -> int:
    """What a detached container's monitor runs once the container has stopped."""
    from runtime import container

    container.cleanup(_root(), container_id, remove)
    return 0


@cli.group(context_settings=CONTEXT)
def volume() -> None:
    """Manage named volumes: directories of the store that containers mount with
    '-v NAME:/path', and that outlive them."""


@volume.command("create", context_settings=CONTEXT)
@click.argument("name", required=False)
def volume_create(name: str | None) -> int:
    """Create volume NAME (default: a random name) and print its name; an existing one is
    left as it is."""
    from runtime import image, volumes

    try:
        with image.StoreLock():  # shared: volume rm and prune wait
            made = volumes.create(name)
    except (ValueError, volumes.VolumeError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(made.name)
    return 0


@volume.command("ls", context_settings=CONTEXT)
@click.option("-q", "--quiet", is_flag=True, help="Only the names.")
def volume_ls(quiet: bool) -> int:
    """List the volumes."""
    from runtime import volumes

    found = _volumes(volumes.list_volumes)
    if not quiet:
        click.echo(f"{'DRIVER':<10}VOLUME NAME")
    for one in found:
        click.echo(one.name if quiet else f"{'local':<10}{one.name}")
    return 0


@volume.command("inspect", context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True)
def volume_inspect(names: tuple[str, ...]) -> int:
    """Print the volumes' details, as a JSON array (docker's fields)."""
    import json

    from runtime import volumes

    found = [_volumes(volumes.get, name).inspect() for name in names]
    click.echo(json.dumps(found, indent=4))
    return 0


@volume.command("rm", context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True)
def volume_rm(names: tuple[str, ...]) -> int:
    """Remove volumes and their data; a volume a container mounts is refused (remove the
    container first)."""
    from runtime import container, image, volumes

    with image.StoreLock(exclusive=True):  # no run between finding a volume and naming it
        users = container.mount_sources()
        for name in names:
            _volumes(volumes.remove, name, users)
            click.echo(name)
    return 0


@volume.command("prune", context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "-a",
    "--all",
    "every",
    is_flag=True,
    help="docker's, for its anonymous volumes: here every volume is named, and pruned.",
)
def volume_prune(force: bool, every: bool) -> int:
    """Remove every volume that no container mounts, with its data."""
    from runtime import container, image, volumes

    if not force:
        question = "This will remove all volumes not used by a container. Continue?"
        try:
            if not click.confirm(question, default=False, err=True):
                return 0
        except click.Abort:  # no answer (stdin at its end): no
            click.echo(err=True)
            return 0
    with image.StoreLock(exclusive=True):
        removed = _volumes(volumes.prune, container.mount_sources())
    if removed:
        click.echo("Deleted Volumes:")
        click.echo("".join(f"{name}\n" for name, _size in removed))
    total = sum(size for _name, size in removed)
    click.echo(f"Total reclaimed space: {volumes.human_size(total)}")
    return 0


def _volumes(action, *args):
    """``action(*args)`` of runtime.volumes, its failures one line."""
    from runtime import volumes

    try:
        return action(*args)
    except volumes.VolumeError as error:
        raise click.ClickException(str(error)) from None


def main(argv: list[str]) -> None:
    """Run the click CLI; every failure becomes one line and an exit code (125 for ours).

    Interrupted (SIGINT, SIGTERM, SIGHUP), a command undoes what it began and says so in one
    line, exit code 128+N; click itself would print an empty line, then "aborted", exit 1.
    """
    try:
        with exits.interruptible():
            exits.exit_with_result(
                cli.main, args=argv, prog_name="mycontainer", standalone_mode=False
            )
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "mycontainer"
        exits.fail(f"{error.format_message().rstrip('.')} (see '{command} --help')")
    except click.ClickException as error:
        exits.fail(error.format_message())
    except click.Abort:
        exits.fail("aborted")
