# %post, as %systemd_post docker-image-cleaner.service expands on EL9 and Amazon Linux 2023
# (systemd 252), with the classic expansion as the fallback where systemd-update-helper is absent.
# $1 = 1 on a fresh install, 2 or more on an upgrade.
# A fresh install applies the preset, which
# /usr/lib/systemd/system-preset/50-docker-image-cleaner.preset (this package) makes "enable".
# Nothing starts the service here: see README.md, "Why installing does not start the service".
install -d -m 0700 /var/lib/docker-image-cleaner || :
if [ -x /usr/lib/systemd/systemd-update-helper ]; then
    if [ "$1" -eq 1 ]; then
        /usr/lib/systemd/systemd-update-helper install-system-units docker-image-cleaner.service || :
    fi
else
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl --no-reload preset docker-image-cleaner.service >/dev/null 2>&1 || :
    fi
fi
