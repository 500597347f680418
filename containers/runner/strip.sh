#!/bin/sh
# Post-debootstrap recipe for the runner image: strip what a job never needs.
# Usage: strip.sh <rootfs dir>. Runs on the host as root against the unpacked tree
# (no chroot: nothing inside the tree is executed). Every step is part of the recipe hash.
set -eu
R="$1"
[ -d "$R/usr/bin" ] || { echo "strip.sh: $R is not a rootfs" >&2; exit 2; }

# Package manager and its state: a job must not install anything (the root fs is also
# mounted read-only), and apt's sources/keys are attack surface with no use at run time.
rm -rf "$R/etc/apt" "$R/var/lib/apt" "$R/var/cache/apt" "$R/var/cache/debconf"/*-old
rm -f "$R"/usr/bin/apt "$R"/usr/bin/apt-*
rm -rf "$R/usr/lib/apt"

# Documentation, manuals, info pages and translations: size only.
rm -rf "$R/usr/share/doc" "$R/usr/share/man" "$R/usr/share/info" "$R/usr/share/lintian" \
       "$R/usr/share/common-licenses" "$R/usr/share/bug" "$R/usr/share/menu"
# Locale data except C.UTF-8 (compiled into glibc's C.utf8 under /usr/lib/locale).
find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + \
    2>/dev/null || true
find "$R/usr/share/i18n" -mindepth 1 -delete 2>/dev/null || true
rm -rf "$R/var/log"/* "$R/var/cache/ldconfig"/* "$R/tmp"/* "$R/var/tmp"/*

# Privilege-changing binaries: the job runs as a non-root uid with no capabilities and
# no-new-privileges, so these cannot work; removing them is defense in depth should a
# runtime setting ever be lost.
for b in su mount umount passwd chsh chfn newgrp gpasswd chage expiry login \
         sulogin unix_chkpwd pam_extrausers_chkpwd runuser nsenter unshare setpriv; do
    for d in bin sbin usr/bin usr/sbin; do rm -f "$R/$d/$b"; done
done
# No setuid/setgid file may remain anywhere in the tree.
find "$R" -xdev -type f -perm /6000 -exec chmod ug-s {} +
# File capabilities (security.capability xattrs) would also grant privileges on exec; tar
# is run without --xattrs so none reach the image.

# Device nodes: Docker provides its own minimal /dev; ship none.
find "$R/dev" -mindepth 1 -delete
rm -rf "$R/proc"/* "$R/sys"/* "$R/run"/*

# The job's identity: a dedicated unprivileged user, uid/gid 10001, no shell, home /tmp.
grep -q '^runner:' "$R/etc/passwd" || \
    echo 'runner:x:10001:10001:data-sandbox job:/tmp:/usr/sbin/nologin' >> "$R/etc/passwd"
grep -q '^runner:' "$R/etc/group" || echo 'runner:x:10001:' >> "$R/etc/group"

# Mount points the executor binds (input read-only, job files read-only, output capped).
mkdir -p "$R/in" "$R/out" "$R/job"
chmod 0755 "$R/in" "$R/out" "$R/job"
: > "$R/etc/hostname"
: > "$R/etc/resolv.conf"
