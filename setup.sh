#!/bin/sh
# Set up mycontainer on a fresh Debian or Ubuntu machine, as root, then run a first container.
#
#   sudo ./setup.sh
#
# Installs the apt packages it needs, creates .venv with the project and its tools, builds the
# busybox root filesystem (no internet needed for that), and runs `mycontainer run busybox`.
# Safe to run again: each part is skipped or redone idempotently.
set -eu
cd "$(dirname "$0")"

if [ "$(uname -s)" != Linux ]; then
    echo "setup.sh: this machine is not Linux: start the lab VM instead (see README: vagrant up)" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run it as root: sudo ./setup.sh" >&2
    exit 1
fi

# Tools the runtime and its tests use: a static busybox for the rootfs; nftables (or iptables)
# for the bridge network's NAT; iproute2, util-linux, xz-utils and cpio for the tests; procps
# (pgrep, ps) for the docs' checked transcripts; umoci and skopeo, which build the tests'
# images; capsh (libcap2-bin) to decode capability sets; runc and crun to benchmark against,
# and debootstrap for the Debian image of `invoke bench --image`; podman (with conmon) and
# containerd, the engines that drive mycontainer-oci in tests/test_engines.py; docker-registry
# (distribution), openssl and apache2-utils (htpasswd), the registry the pull tests start
# (tests/registry.py); strace, which step 1's exercise 3 and its checker run.
PACKAGES="python3 python3-venv busybox-static iproute2 util-linux nftables iptables xz-utils
cpio procps libcap2-bin umoci skopeo runc crun debootstrap podman conmon containerd
docker-registry openssl apache2-utils strace"
missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "setup.sh: installing$missing"
    apt-get update -qq
    # Only these: recommends would add (and time) what the lab never uses.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # The package starts a registry for the whole machine on port 5000 under systemd; the
    # tests start their own, on 127.0.0.1, and want no service listening on every interface.
    case " $missing " in
    *" docker-registry "*)
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
        fi ;;
    esac
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,fast]' \
    --config-settings editable_mode=compat
# Byte-compile now: a container start should not pay for compiling the runtime each time
# (and with PYTHONDONTWRITEBYTECODE set, it would pay every time).
.venv/bin/python -m compileall -q runtime steps

.venv/bin/invoke rootfs
# The first container uses --net none: setting up never changes this machine's network (the
# default, --net bridge, adds a bridge and NAT rules, at the first container that uses it).
echo "setup.sh: ready. Your first container:"
echo "+ .venv/bin/mycontainer run --rm --net none busybox sh -c 'echo hello from \$(hostname), PID \$\$'"
.venv/bin/mycontainer run --rm --net none busybox sh -c 'echo hello from $(hostname), PID $$'
