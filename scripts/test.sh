#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing (Xvfb, Mesa's
# Vulkan driver, the X libraries; with apt-get, as root or through sudo), then runs
# `cargo test` with any arguments given. CI (.ci/run) runs this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v xvfb-run >/dev/null 2>&1 || need+=(xvfb xauth)
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
ldconfig -p | grep -q 'libvulkan.so.1' || need+=(libvulkan1)
for lib in libX11-xcb.so.1 libxkbcommon-x11.so.0 libXcursor.so.1 libXrandr.so.2 libXi.so.6; do
  ldconfig -p | grep -q "$lib" || need+=(libx11-xcb1 libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6)
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u)
fi

cargo test "$@"
