#!/bin/sh
# What `make test` needs beyond Python to run everything CI runs: qemu-user-static
# (the emulated Raspberry Pi check) and Chromium with its WebDriver (the web
# view's browser test). Installs them when apt is usable (root, or sudo without
# a password), as CI does; otherwise names the one command and carries on:
# those tests are then skipped, and pytest's summary says so and why.
need=""
command -v qemu-aarch64-static >/dev/null 2>&1 || need="$need qemu-user-static"
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need="$need chromium"
command -v chromedriver >/dev/null 2>&1 || need="$need chromium-driver"
[ -z "$need" ] && exit 0

. "$(dirname "$0")/apt-sudo.sh"
if [ "$SUDO" = none ]; then
    echo "note: missing$need; the emulated Pi check and/or the browser test will be skipped." >&2
    echo "      To run everything CI runs: sudo apt-get install$need" >&2
    exit 0
fi
echo "Installing$need (for the emulated Pi check and the browser test) ..."
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq $need >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $need; } \
    || echo "warning: apt-get install$need failed; those tests will be skipped" >&2
exit 0
