#!/usr/bin/env bash
# Installs the Debian packages emulab needs (Debian 12 / Ubuntu 24.04). Idempotent: only missing
# packages are installed, and the package lists are refreshed only when something is missing.
# Used by `make setup` and by the Vagrantfile, so there is one install path.
set -euo pipefail

PACKAGES=(
  # the testbed: Mininet, Open vSwitch, iproute2/tc, traffic tools
  mininet openvswitch-switch iproute2 iputils-ping ethtool iptables iperf3 procps psmisc
  # Python: a venv that sees Debian's Mininet, headers for the C selector
  python3 python3-venv python3-dev python3-pip build-essential
  # protocol conformance (text2pcap, tshark's ASAP/ENRP/CalcApp dissectors)
  tshark
  # lab radio: detect a USRP B210
  uhd-host
  # real-kernel lane and RSPLIB interoperability
  rsplib-registrar rsplib-services rsplib-tools qemu-system-x86 linux-image-amd64 busybox-static cpio kmod
  # the dashboard's browser tests (Playwright drives this system browser)
  chromium
)

if [ "$(id -u)" != 0 ]; then
  echo "install-debian.sh: must run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-debian.sh: all ${#PACKAGES[@]} Debian packages present"
  exit 0
fi

echo "install-debian.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer for it.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
