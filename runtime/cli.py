"""The ``mycontainer`` command line, in click. The only module of the package that imports it.

Errors are one line on stderr, ``mycontainer: error: <what went wrong and what to do>``, and
exit codes follow docker's: 125 when mycontainer itself fails (bad flags included), 126 when
the command cannot be executed, 127 when it is not found, 128+N when it is killed by signal N,
otherwise the command's own exit code. A plain ``run`` never gets here: see runtime.launcher.
"""

from __future__ import annotations

import click

from runtime import __version__, launcher

CONTEXT = {"help_option_names": ["-h", "--help"]}


class RunCommand(click.Command):
    """``run``, whose options may also follow the command (``run busybox hostname --hostname a``).

    Before click parses, launcher.split_run_args moves our options to the front; parsing then
    stops at IMAGE (``allow_interspersed_args = False``), so everything after IMAGE that is not
    ours, such as the ``-l`` of ``ls -l``, belongs to the command.
    """

    allow_interspersed_args = False

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(arg in CONTEXT["help_option_names"] for arg in args[:1]):
            return super().parse_args(ctx, args)
        try:
            ours, rest = launcher.split_run_args(args)
        except ValueError as error:
            raise click.UsageError(str(error), ctx) from None
        return super().parse_args(ctx, ours + rest)


def _checked_by(check):
    """A click callback that validates a value with one of launcher.RUN_OPTIONS's checks."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None):
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as error:  # the message names the option and the bad value
            raise click.ClickException(str(error)) from None

    return callback


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="mycontainer")
def cli() -> None:
    """A Linux container runtime in Python, built to learn containers from."""


@cli.command(cls=RunCommand, context_settings=CONTEXT)
@click.argument("image")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(image: str, command: tuple[str, ...], **options: str | None) -> int:
    """Run COMMAND in a new container made from IMAGE.

    IMAGE is a root filesystem directory, or 'busybox' for the rootfs that 'invoke rootfs'
    builds. Options may come before IMAGE or after COMMAND; put '--' before COMMAND to pass
    it an argument that looks like one of ours (run busybox -- echo --hostname).

    \b
    Examples:
      mycontainer run busybox sh
      mycontainer run --hostname box busybox hostname
      mycontainer run busybox sh -c 'echo $$' --hostname box
    """
    args = list(command[1:] if command[0] == "--" else command)
    if not args:
        raise click.UsageError("missing COMMAND after '--'")
    return launcher.run(image, args, **options)


for _name, (_check, _help) in reversed(launcher.RUN_OPTIONS.items()):
    run = click.option(_name, callback=_checked_by(_check), help=_help)(run)


@cli.command(context_settings=CONTEXT)
def prune() -> int:
    """Remove what containers whose mycontainer died left behind (state, cgroups).

    A container lives only as long as its 'mycontainer run': if that process was killed
    (say with SIGKILL), the container's processes are stopped and its cgroups removed here.
    Every 'mycontainer run' does this too.
    """
    from runtime import container

    container.check_host()
    for container_id in container.prune():
        click.echo(container_id)
    return 0


def main(argv: list[str]) -> None:
    """Run the click CLI; every failure becomes one line and an exit code (125 for ours)."""
    try:
        launcher.exit_with_result(
            cli.main, args=argv, prog_name="mycontainer", standalone_mode=False
        )
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "mycontainer"
        launcher.fail(f"{error.format_message().rstrip('.')} (see '{command} --help')")
    except click.ClickException as error:
        launcher.fail(error.format_message())
    except click.Abort:
        launcher.fail("aborted")
