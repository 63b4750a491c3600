#!/bin/sh
# The bake's provisioning, run as root on the instance being baked: by the template's shell
# provisioner (docker-image-cleaner.pkr.hcl: sudo, after the file provisioners have uploaded the
# package and the node-name files), and by packaging/test-packer.sh in a Debian 12 container
# whose PID 1 is systemd, so that the file tested is the file baked.
#
# Environment:
#   PACKAGE  the uploaded .deb or .rpm, an absolute path (/tmp/docker-image-cleaner_0.1.0-1_amd64.deb)
#   FILES    the directory holding the uploaded docker-image-cleaner-node-name and
#            docker-image-cleaner-node-name.service (/tmp)
#
# Leaves docker-image-cleaner.service enabled and NOT started: a cleaner started now would
# measure the build instance's disk and could remove the images other provisioners pre-pull.
# Do not add `systemctl start`. The first boot of each instance starts it.
set -eux
: "${PACKAGE:?the .deb or .rpm to install}" "${FILES:?the directory of the node-name files}"

# Install: the package enables docker-image-cleaner.service and does not start it.
case $PACKAGE in
*.deb) DEBIAN_FRONTEND=noninteractive apt-get install -y "$PACKAGE" ;;
*.rpm) dnf install -y "$PACKAGE" ;;
*)
    echo "provision.sh: PACKAGE=$PACKAGE is neither a .deb nor an .rpm" >&2
    exit 1
    ;;
esac

# Boot-time node name from the instance metadata, written before the cleaner starts (the unit
# is WantedBy=docker-image-cleaner.service and ordered Before= it).
install -m 0755 "$FILES/docker-image-cleaner-node-name" /usr/local/sbin/docker-image-cleaner-node-name
install -m 0644 "$FILES/docker-image-cleaner-node-name.service" \
    /etc/systemd/system/docker-image-cleaner-node-name.service
# A builder that runs the provisioners in a chroot has no systemd to reload; enabling works
# without one.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
systemctl enable docker-image-cleaner-node-name.service docker-image-cleaner.service

# The bake must end with the cleaner enabled and not running.
systemctl is-enabled docker-image-cleaner.service
if systemctl is-active --quiet docker-image-cleaner.service; then
    echo "provision.sh: docker-image-cleaner.service is running during the bake" >&2
    exit 1
fi

# Nothing of this instance may leak into the image: each node starts with its own state and
# its own node name.
find /var/lib/docker-image-cleaner -mindepth 1 -delete
rm -f /etc/default/docker-image-cleaner
rm -f "$PACKAGE" "$FILES/docker-image-cleaner-node-name" "$FILES/docker-image-cleaner-node-name.service"
