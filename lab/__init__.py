"""The VM lab: run the privileged test suite on a pure cgroup v2 kernel.

Hosts such as our CI machines boot with a cgroup v1/v2 hybrid, so everything
that touches cgroup v2 can only be exercised inside a virtual machine.

- ``lab.qemu``  -- command line and :func:`lab.qemu.run_in_vm` (what tasks.py and CI call)
- ``lab.image`` -- builds and caches the Debian kernel + root filesystem image
- ``lab.vm``    -- boots one throw-away QEMU VM and streams a command's output
- ``lab/guest`` -- the two init stages that run inside the VM
- ``lab/provision.sh`` -- provisioning for the Vagrant lab on users' machines
- ``lab.provision_check`` -- runs provision.sh in a bare Debian 12 chroot
- ``lab.box`` -- builds the lab's own Vagrant box (libvirt, Debian 12, systemd, offline)
- ``lab.vagrant_check`` -- ``vagrant up`` of the Vagrantfile on that box, in namespaces (CI)
- ``lab.conformance`` -- the OCI runtime-tools suite against mycontainer-oci, in namespaces (CI)

Everything here is standard library only, so it runs from a fresh clone.
"""

import signal
import sys


def exit_on_sigterm() -> None:
    """Make SIGTERM (a CI timeout, kill) a SystemExit, so that the ``finally`` blocks run:
    they kill QEMU and remove the temporary directories and the mounts in them."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
