#!/bin/busybox sh
# shellcheck shell=dash
# Stage 1 of the lab VM: PID 1 inside the initramfs, run by busybox.
#
# Why it exists: Debian's generic kernel builds virtio and ext4 as modules, so
# something must load them before the root filesystem image can be mounted.
# Its output goes to the serial console, i.e. the kernel log file on the host.
#
# Steps: load /modules/* in /modules/order, mount /dev/vda, finish a foreign
# debootstrap if the image still needs it (the arm64 image is bootstrapped on
# an x86 host and completed here), then hand over to stage 2 (init.py).

/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /newroot
/bin/busybox --install -s

fail() {
	echo "lab stage 1: $*"
	poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

while read -r module; do
	insmod "/modules/$module" || echo "lab stage 1: insmod $module failed"
done </modules/order

tries=0
while [ ! -b /dev/vda ]; do
	tries=$((tries + 1))
	[ "$tries" -gt 300 ] && fail "the root disk /dev/vda never appeared"
	sleep 0.1
done
mount -t ext4 /dev/vda /newroot || fail "cannot mount /dev/vda"

mkdir -p /newroot/run /newroot/dev
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run
cp -a /lab /newroot/run/lab
mount --move /dev /newroot/dev

if [ -x /newroot/debootstrap/debootstrap ]; then
	echo "lab stage 1: finishing debootstrap (second stage) inside the VM"
	PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot /newroot /debootstrap/debootstrap --second-stage ||
		fail "debootstrap --second-stage failed (see /debootstrap/debootstrap.log)"
	# Prove the second stage ran to the end: python3 is what stage 2 needs.
	[ -x /newroot/usr/bin/python3 ] || fail "python3 missing after debootstrap"
fi

umount /proc /sys 2>/dev/null
exec switch_root /newroot /usr/bin/python3 /run/lab/init.py
