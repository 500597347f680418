#!/bin/sh
# Post-debootstrap recipe for the service images (controller, agent, PostgreSQL): drop
# what a service never reads, add the controller's user. Usage: strip.sh <rootfs dir>.
# Runs on the host as root against the unpacked tree. Every step is part of the recipe hash.
# apt stays (its lists are already gone): `make audit` reads the images' dpkg status, and
# an image is patched by rebuilding it (`python -m containers.service_images refresh`),
# never by upgrading a running container.
set -eu
R="$1"
[ -d "$R/usr/bin" ] || { echo "strip.sh: $R is not a rootfs" >&2; exit 2; }

rm -rf "$R/var/cache/apt"/*.bin "$R/var/cache/apt/archives"/*.deb
rm -rf "$R/usr/share/doc" "$R/usr/share/man" "$R/usr/share/info" "$R/usr/share/lintian" \
       "$R/usr/share/bug" "$R/usr/share/menu"
find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + \
    2>/dev/null || true
rm -rf "$R/var/log"/* "$R/tmp"/* "$R/var/tmp"/*
# Docker provides its own /dev.
find "$R/dev" -mindepth 1 -delete
rm -rf "$R/proc"/* "$R/sys"/* "$R/run"/*
mkdir -p "$R/run/postgresql" "$R/tmp" && chmod 1777 "$R/tmp"

# The controller's identity: an unprivileged user, uid/gid 10002, its state in
# /var/lib/data-sandbox (a volume in a deployment).
grep -q '^sandbox:' "$R/etc/passwd" || \
    echo 'sandbox:x:10002:10002:data-sandbox controller:/var/lib/data-sandbox:/usr/sbin/nologin' \
        >> "$R/etc/passwd"
grep -q '^sandbox:' "$R/etc/group" || echo 'sandbox:x:10002:' >> "$R/etc/group"
mkdir -p "$R/var/lib/data-sandbox"
chown 10002:10002 "$R/var/lib/data-sandbox"
chmod 0700 "$R/var/lib/data-sandbox"
# PostgreSQL's user as the tree names it (the host may give the name another uid).
pg=$(awk -F: '$1=="postgres"{print $3":"$4}' "$R/etc/passwd")
if [ -n "$pg" ]; then
    mkdir -p "$R/var/lib/postgresql/data"
    chown "$pg" "$R/run/postgresql" "$R/var/lib/postgresql" "$R/var/lib/postgresql/data"
    chmod 0700 "$R/var/lib/postgresql/data"
fi
: > "$R/etc/hostname"
: > "$R/etc/resolv.conf"
