"""How mycontainer ends: one line on stderr, and docker's exit codes.

Whatever goes wrong in mycontainer itself is ``mycontainer: error: <what went wrong and what
to do>`` and exit code 125; a command's own failure keeps the command's code (126, 127,
128+N: see runtime.process). SIGINT, SIGTERM or SIGHUP while mycontainer is at work (an
import, say) undo what it had begun, and it exits 128+N, as a shell would.
"""

from __future__ import annotations

import os
import signal
import sys

from runtime.process import EXIT_RUNTIME_ERROR, EXIT_SIGNAL_BASE


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived while mycontainer itself was at work (importing an
    image, say): raised wherever it was, so that what it had begun is undone on the way
    out. A BaseException, as KeyboardInterrupt, so that no ``except Exception`` stops it."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = EXIT_SIGNAL_BASE + signum  # 130 for SIGINT, as shells and docker


class interruptible:
    """Within the ``with`` block, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted`
    (SIGTERM and SIGHUP would otherwise end the process at once, leaving its work behind).
    After the first, they are ignored: the clean-up they started runs to its end."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> None:
        self.previous = {sig: signal.signal(sig, self._interrupt) for sig in self.SIGNALS}

    def __exit__(self, *_exception) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _interrupt(self, signum: int, _frame) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)


def fail(message: str, exit_code: int = EXIT_RUNTIME_ERROR) -> None:
    """Print ``mycontainer: error: MESSAGE`` as the one line on stderr, and exit."""
    sys.stderr.write(f"mycontainer: error: {message}\n")
    sys.exit(exit_code)


def exit_with_result(action, *args, **kwargs) -> None:
    """Run ``action`` and exit with its code, turning a runtime failure into one line."""
    from runtime.container import ContainerError
    from runtime.imagespec import ImageError
    from runtime.state import StateError

    try:
        code = action(*args, **kwargs)
    except (ContainerError, ImageError, Interrupted) as error:
        fail(str(error), error.exit_code)
    except StateError as error:
        fail(str(error))
    except KeyboardInterrupt:  # SIGINT outside an interruptible() block
        fail(str(Interrupted(signal.SIGINT)), EXIT_SIGNAL_BASE + signal.SIGINT)
    except OSError as error:
        fail(str(error))
    # Skip the interpreter's teardown (garbage collection, module cleanup): ~5 ms per run,
    # and nothing is left to clean up. Buffered output must go out first.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
