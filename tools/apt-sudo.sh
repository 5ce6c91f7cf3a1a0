# Sourced by the ensure-*.sh scripts: sets SUDO to how this user may run
# apt-get ("" as root, "sudo -n" with password-less sudo), or to "none".
if ! command -v apt-get >/dev/null 2>&1; then
    SUDO=none
elif [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    SUDO=none
fi
