"""mycontainer's runtime: a Linux container runtime, one module per concept.

==============  =====================================================================
syscalls        the system calls Python's ``os`` lacks (unshare, mount, pivot_root...)
namespaces      what a container sees: hostname, PIDs, mounts, IPC, network
filesystem      the container's root: private mounts, /proc, /sys, /dev, pivot_root
network         the container's network (for now: ``lo`` only)
process         the container's PID 1: fork, unshare, gate, execve, exit codes
container       the lifecycle: create, start, wait, delete, and the state on disk
image           what ``mycontainer run IMAGE`` names
rootfs          building a busybox root filesystem with no internet
cli             the ``mycontainer`` command (the only module that imports click)
==============  =====================================================================

The library runs only on Linux, as root; it imports anywhere, so that ``--help`` and the
tests' skip reasons work on macOS too.
"""

__version__ = "0.1.0"
