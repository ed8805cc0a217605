# Shared by the maintainer scripts of the .deb and the .rpm (mkpackage prepends it).
# Without systemd running (a container, a chroot, CI) nothing here fails: the
# service is then simply not started.

# occupancyd_user makes the system user occupancyd, which the unit's DynamicUser=yes
# then uses (so that secret files can belong to its group).
occupancyd_user() {
	getent passwd occupancyd >/dev/null 2>&1 && return 0
	# the line of systemd/occupancyd.sysusers (inline: an RPM %pre runs before the
	# package's files are there)
	if command -v systemd-sysusers >/dev/null 2>&1 &&
		systemd-sysusers --inline '#SYSUSERS#' >/dev/null 2>&1 &&
		getent passwd occupancyd >/dev/null 2>&1; then
		return 0
	fi
	if command -v useradd >/dev/null 2>&1; then
		useradd --system --user-group --no-create-home --home-dir /var/lib/occupancyd \
			--shell /usr/sbin/nologin --comment "occupancyd MQTT gateway" occupancyd && return 0
	fi
	echo "occupancyd: could not create user occupancyd; systemd will run the service as a dynamic user" >&2
	return 0
}

# occupancyd_systemd_running: systemd is PID 1 (systemctl can start and stop units).
occupancyd_systemd_running() {
	[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}
