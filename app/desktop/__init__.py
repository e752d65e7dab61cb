"""Desktop integration without Qt: the user's menu entry, icons, user service and
autostart (:mod:`app.desktop.install`), the system-library check that runs before
Qt loads (:mod:`app.desktop.preflight`) and the version report
(:mod:`app.desktop.about`)."""
