#!/usr/bin/env bash
# Provision a mycontainer lab machine: Ubuntu 24.04 (the Vagrant box) or
# Debian 12. Idempotent: run it again after a `git pull` to catch up.
#
#   sudo bash lab/provision.sh [PROJECT_DIR]      # default: /vagrant
#
# What it does, each part skipped when already done:
#   1. apt packages: the lab's own (ping, kmod, CA certificates) and the base
#      ones the fallback in 2 needs (setup.sh installs those and more itself)
#   2. the project's own ./setup.sh: its apt packages, .venv with
#      `pip install -e '.[dev,fast]'`, the busybox rootfs (invoke rootfs) and a
#      first container as a smoke test (without setup.sh, a minimal venv +
#      pip install -e + invoke rootfs)
#   3. `invoke` and `mycontainer` on root's PATH, so `sudo invoke ...` works
#   4. a check that the kernel gives us a pure cgroup v2 hierarchy
#
# The venv is PROJECT_DIR/.venv, as tasks.py expects. On a shared folder that
# is also the host's: a .venv made on macOS or Windows cannot run here, and
# this script stops with a message rather than mix the two.
set -euo pipefail

project=${1:-${MYCONTAINER_DIR:-/vagrant}}
venv=$project/.venv

say() { printf 'provision: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
	exec sudo bash "$0" "$project"
fi
if [ ! -f "$project/pyproject.toml" ]; then
	say "no pyproject.toml in $project: pass the project directory as the first argument" >&2
	exit 2
fi

# -- 1. packages -------------------------------------------------------------
# Partly setup.sh's too: kept here for a PROJECT_DIR without setup.sh (the fallback in 2).
packages=(
	python3 python3-venv busybox-static iproute2 util-linux
	nftables iptables iputils-ping kmod procps libcap2-bin
	umoci skopeo ca-certificates
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
else
	say "packages already installed"
fi

# -- 2. venv, project, rootfs ---------------------------------------------------
if [ -e "$venv/bin/python" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then
	say "$venv exists but its python cannot run here (made on the host OS?)." >&2
	say "Move the host's venv elsewhere (e.g. ~/.venvs/mycontainer), delete $venv, retry." >&2
	exit 1
fi
if [ -f "$project/setup.sh" ]; then
	say "running $project/setup.sh"
	sh "$project/setup.sh"
else
	[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
	"$venv/bin/python" -m pip install -q --disable-pip-version-check -e "${project}[dev,fast]"
	(cd "$project" && "$venv/bin/invoke" rootfs)
fi

# -- 3. commands on root's PATH (sudo's secure_path includes /usr/local/bin) ---
for cmd in invoke mycontainer; do
	if [ -x "$venv/bin/$cmd" ]; then
		ln -sfn "$venv/bin/$cmd" "/usr/local/bin/$cmd"
	fi
done

# -- 4. cgroup v2 check --------------------------------------------------------
fstype=$(stat -fc %T /sys/fs/cgroup)
if [ "$fstype" = cgroup2fs ]; then
	say "cgroup v2: $(cat /sys/fs/cgroup/cgroup.controllers)"
else
	say "WARNING: /sys/fs/cgroup is $fstype, not cgroup2fs: cgroup steps will fail." >&2
	say "Boot with systemd.unified_cgroup_hierarchy=1 or use the default box." >&2
fi
say "done. Try: cd $project && sudo invoke --list"
