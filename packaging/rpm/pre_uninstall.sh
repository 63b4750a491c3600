# %preun, as %systemd_preun docker-image-cleaner.service expands (see post_install.sh).
# $1 = 0 on removal (stop and disable), 1 or more on an upgrade (leave it running).
if [ "$1" -eq 0 ]; then
    if [ -x /usr/lib/systemd/systemd-update-helper ]; then
        /usr/lib/systemd/systemd-update-helper remove-system-units docker-image-cleaner.service || :
    else
        systemctl --no-reload disable --now docker-image-cleaner.service >/dev/null 2>&1 || :
    fi
fi
