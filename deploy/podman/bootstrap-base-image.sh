#!/usr/bin/env bash
# Stand-in for docker.io/library/python:3.11-slim on machines that reach Debian's mirror but no image registry.
# Debootstraps Debian bookworm (Python 3.11) with a venv at /opt/venv first on PATH, gives it the host's CA
# bundle (so pip inside a build reaches the package index the way the host does) and imports it under the real
# name, so the Dockerfile's unchanged FROM line resolves locally. Does nothing when the image already exists.
# Usage: deploy/podman/bootstrap-base-image.sh [IMAGE]   (run as root; needs podman and debootstrap)
set -euo pipefail

image="${1:-docker.io/library/python:3.11-slim}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if podman image exists "$image"; then
    echo "bootstrap-base-image: $image already present, nothing to do"
    exit 0
fi

rootfs="$(mktemp -d /var/tmp/cnnserve-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

start=$SECONDS
timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" \
    > "$rootfs.log" 2>&1 || { tail -n 40 "$rootfs.log"; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
chroot "$rootfs" /usr/bin/python3 -m venv /opt/venv
# The host's bundle may hold a CA that Debian's does not (an intercepting proxy in front of the registries).
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
# Trim what an image never needs: apt lists and caches, docs, man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    - "$image" > /dev/null
size="$(podman image inspect --format '{{.Size}}' "$image")"
echo "bootstrap-base-image: imported $image in $((SECONDS - start)) s ($((size / 1000000)) MB)"
