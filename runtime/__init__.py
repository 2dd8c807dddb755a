"""mycontainer's runtime: a Linux container runtime, one module per concept.

The lifecycle
==============  =====================================================================
state           a container on disk: its state directory, status derived from facts
container       the lifecycle: create, start, wait, kill, delete, prune
execution       exec: a process entering a running container, within its boundaries
process         the container's PID 1: fork, namespaces, the gate, execve, exit codes
reaper          ``run --init``: a PID 1 that forwards signals and reaps, the program PID 2
bundle          an OCI bundle's config.json, as the lifecycle takes it
spec            config.json read and checked, field by field
hooks           the six kinds of OCI hooks
terminal        a pty of the container's own, over a console socket or relayed
==============  =====================================================================

What a container sees and may do
==============  =====================================================================
syscalls        the system calls Python's ``os`` lacks (unshare, mount, pivot_root...)
namespaces      what a container sees: hostname, PIDs, mounts, IPC, network
userns          user namespaces: uid/gid maps
filesystem      the container's root: its mounts, devices, pivot_root
mounts          config.json's mounts, applied inside the root
runmounts       ``run``'s -v, --tmpfs and --read-only, as config.json's mounts
rootpath        paths resolved inside a root, never out of it
sysctl          namespaced kernel parameters
removal         removing a tree that may hold mounts
cgroups         limits: cgroup v1 and v2, cgroupsPath, freezer
devices         the device allow-list (v1 rules, v2 eBPF)
capabilities    capability names and sets
security        capabilities, no_new_privs, seccomp, masked paths: the mechanism
policy          docker's defaults and flags for them
seccomp         seccomp profiles compiled to BPF (syscall_table: the numbers)
process_settings  rlimits, oomScoreAdj, umask, the user and its groups
users           USER[:GROUP] from the image's /etc/passwd and /etc/group
network         the container's network: lo, a bridge, NAT, published ports
netbridge       the bridge and veth pairs (ip, and ioctls inside the container)
netdevice       one interface by ioctl: flags, IPv4 address, a route
netfilter       NAT and published ports (nft or iptables)
==============  =====================================================================

Images and commands
==============  =====================================================================
image           the image store, and what ``mycontainer run IMAGE`` names
volumes         named volumes: the store's directories that outlive containers
imagesource     image files: OCI layouts and archives, docker save, rootfs tarballs
imagespec       the rules both check: names, digests, configs
layer           layers unpacked safely
rootfs          building a busybox root filesystem with no internet
launcher        ``mycontainer``'s entry point and its fast paths (``run``, ``exec``)
timings         ``MYCONTAINER_TIMINGS=1``: each phase of a run, timed on stderr
runoptions      ``run``'s options, shared by the fast path and click
execoptions     ``exec``'s options, shared likewise
commands        ``run`` and ``load``
exits, progress one-line errors and exit codes; the import progress bar
cli             the ``mycontainer`` command (the only module that imports click)
ocicli          ``mycontainer-oci``: runc's command line
==============  =====================================================================

The library runs only on Linux, as root; it imports anywhere, so that ``--help`` and the
tests' skip reasons work on macOS too.
"""

__version__ = "0.1.0"
