# %postun, as %systemd_postun_with_restart docker-image-cleaner.service expands (see
# post_install.sh). $1 = 0 after removal, 1 or more after an upgrade: restart the service if it
# runs, so the new binary takes over. With systemd-update-helper the restart happens at the end
# of the transaction, from systemd's own file triggers.
if [ -x /usr/lib/systemd/systemd-update-helper ]; then
    if [ "$1" -ge 1 ]; then
        /usr/lib/systemd/systemd-update-helper mark-restart-system-units docker-image-cleaner.service || :
    fi
else
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart docker-image-cleaner.service >/dev/null 2>&1 || :
    fi
fi
