#!/usr/bin/env bash
# scripts/realkernel/run.sh: run a pytest selection inside Debian's stock kernel under qemu.
#
# The host has no sch_netem, SCTP or openvswitch kernel module (and no KVM), so tests marked
# `realkernel` would only ever be skipped.  This boots Debian's linux-image-amd64 under qemu
# (TCG is enough) with the host's own root filesystem shared read-only over 9p plus a tmpfs
# overlay, so the guest runs the very same userspace and .venv as the host, loads sctp,
# sch_netem and openvswitch, starts Open vSwitch and runs `.venv/bin/python -m pytest ARGS`
# in the repository.  Pytest's exit code becomes this script's exit code.
#
# Usage: scripts/realkernel/run.sh [--out DIR] [--timeout SEC] [--mem SIZE] [--smp N]
#                                  [--rebuild] [--run] [--] [PYTEST ARGS... | COMMAND...]
#   --run          run COMMAND (e.g. `.venv/bin/python benchmarks/links.py --backend netem`)
#                  instead of pytest; its output goes to pytest.log, its exit code is returned
#   --out DIR      results on the host (default: <repo>/results/realkernel): junit.xml,
#                  pytest.log (guest output), console.log (kernel console), rc, summary.txt
#   --timeout SEC  wall-clock limit for the whole VM run (default 1500; env RK_TIMEOUT)
#   --mem SIZE     guest memory (default 4G; env RK_MEM)
#   --smp N        guest CPUs (default: host CPUs, at most 4; env RK_SMP)
#   --rebuild      rebuild the cached initramfs
# Env: EMULAB_RK_CACHE (default <repo>/.realkernel) caches the initramfs per kernel version;
#      RK_KERNEL picks a kernel version (default: newest *-amd64 in /lib/modules with a
#      /boot/vmlinuz-*).
# Exit codes: pytest's own (0 passed, 1 failures, 5 nothing collected, ...); 2 bad usage or
#      missing prerequisites (no kernel, no qemu); 124 timeout; 125 guest crashed or never
#      ran pytest (console tail printed).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
out="$repo/results/realkernel"
timeout_s=${RK_TIMEOUT:-1500}
mem=${RK_MEM:-4G}
ncpu=$(nproc 2>/dev/null || echo 2)
smp=${RK_SMP:-$((ncpu > 4 ? 4 : ncpu))}
cache=${EMULAB_RK_CACHE:-$repo/.realkernel}
rebuild=0
run_cmd=0

die() { echo "realkernel: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    --run) run_cmd=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
pytest_args=("$@")

# ---- prerequisites -------------------------------------------------------------------------
command -v qemu-system-x86_64 >/dev/null \
  || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86; see scripts/install-debian.sh)"
[ -x /bin/busybox ] || die "/bin/busybox not found (apt-get install busybox-static)"
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"
[ -x "$repo/.venv/bin/python" ] || die "$repo/.venv missing: run 'make setup' first"
if [ -n "${RK_KERNEL:-}" ]; then
  kver=$RK_KERNEL
else
  kver=""
  for d in $(ls /lib/modules 2>/dev/null | grep -- '-amd64$' | sort -V); do
    [ -f "/boot/vmlinuz-$d" ] && kver=$d
  done
fi
[ -n "$kver" ] && [ -f "/boot/vmlinuz-$kver" ] && [ -d "/lib/modules/$kver" ] \
  || die "no Debian kernel installed (need /boot/vmlinuz-<ver> and /lib/modules/<ver>; apt-get install linux-image-amd64)"
[ -r "/boot/vmlinuz-$kver" ] || die "/boot/vmlinuz-$kver is not readable (run as root)"
for m in sctp sch_netem openvswitch; do
  modinfo -k "$kver" -n "$m" >/dev/null 2>&1 || die "kernel $kver has no module $m"
done

# ---- initramfs (cached per kernel version) -------------------------------------------------
initrd="$cache/initramfs-$kver.gz"
boot_mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay"
if [ "$rebuild" = 1 ] || [ ! -s "$initrd" ] || [ "$initrd" -ot "$0" ]; then
  mkdir -p "$cache"
  stage=$(mktemp -d "$cache/stage.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,mods,proc,sys,dev,newroot,lower,upper,xfer}
  cp /bin/busybox "$stage/bin/busybox"
  : > "$stage/mods/order"
  for m in $boot_mods; do
    f=$(modinfo -k "$kver" -n "$m" 2>/dev/null || true)
    case "$f" in /*.ko|/*.ko.*) cp "$f" "$stage/mods/$m.ko"; echo "$m" >> "$stage/mods/order" ;; esac
  done
  cat > "$stage/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m.ko 2>/dev/null; done
fail() { echo "RK-INIT-FAIL: $*"; echo o > /proc/sysrq-trigger; sleep 5; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 host0 /lower || fail "9p root"
mount -t tmpfs -o size=75% tmpfs /upper; mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot || fail overlay
mkdir -p /newroot/run/rk-xfer
mount -t tmpfs tmpfs /newroot/run
mkdir -p /newroot/run/rk-xfer
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=512000 xfer /newroot/run/rk-xfer || fail "9p xfer"
for d in proc sys dev; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /bin/bash /run/rk-xfer/guest.sh
INIT
  chmod +x "$stage/init"
  (cd "$stage" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$initrd.tmp") && mv "$initrd.tmp" "$initrd"
  rm -rf "$stage"; trap - EXIT
fi

# ---- guest script --------------------------------------------------------------------------
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out"/{rc,junit.xml,pytest.log,boot.log,console.log,summary.txt,guest.sh,pytest-args,artifacts}
printf '%s\0' "${pytest_args[@]+"${pytest_args[@]}"}" > "$out/pytest-args"
cat > "$out/guest.sh" <<GUEST
#!/bin/bash
# Runs as PID 1 in the guest (written by scripts/realkernel/run.sh).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
export EMULAB_REALKERNEL=1 PYTHONDONTWRITEBYTECODE=1 EMULAB_RK_ARTIFACTS=/run/rk-xfer/artifacts
x=/run/rk-xfer
{
  set -x
  mount -t tmpfs tmpfs /tmp
  mkdir -p /dev/pts /dev/shm /run/netns /run/lock /var/run /run/openvswitch
  mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
  mount -t tmpfs tmpfs /dev/shm
  mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
  mount -t debugfs none /sys/kernel/debug 2>/dev/null
  hostname rk-guest
  ip link set lo up
  for m in sctp sch_netem openvswitch tun sch_htb sch_tbf sch_fq sch_fq_codel sch_ingress cls_u32 act_mirred ifb veth 8021q bridge; do
    modprobe \$m
  done
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random --no-monitor
  ovs-vsctl --timeout=30 show
  uname -a; lsmod | grep -E 'sctp|netem|openvswitch'
  set +x
} > \$x/boot.log 2>&1
cd "$repo"
mapfile -d '' args < \$x/pytest-args
set +e
if [ "$run_cmd" = 1 ]; then cmd=("\${args[@]}"); else
  cmd=(.venv/bin/python -m pytest -p no:cacheprovider --junitxml=\$x/junit.xml "\${args[@]}"); fi
timeout --kill-after=30 $((timeout_s > 120 ? timeout_s - 60 : timeout_s)) "\${cmd[@]}" > \$x/pytest.log 2>&1
rc=\$?
echo \$rc > \$x/rc
/usr/share/openvswitch/scripts/ovs-ctl stop >/dev/null 2>&1
sync
echo o > /proc/sysrq-trigger
sleep 10
GUEST
chmod +x "$out/guest.sh"

# ---- boot ----------------------------------------------------------------------------------
echo "realkernel: kernel $kver, smp $smp, mem $mem, timeout ${timeout_s}s, out $out" >&2
echo "realkernel: pytest ${pytest_args[*]-}" >&2
start=$(date +%s)
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp "$smp" -m "$mem" \
  -nographic -no-reboot -nodefaults -serial stdio \
  -kernel "/boot/vmlinuz-$kver" -initrd "$initrd" \
  -append "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic" \
  -virtfs local,path=/,mount_tag=host0,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$out",mount_tag=xfer,security_model=none,multidevs=remap \
  < /dev/null > "$out/console.log" 2>&1
qrc=$?
set -e
elapsed=$(( $(date +%s) - start ))

[ -f "$out/pytest.log" ] && grep -E '^=+ .*(passed|failed|error|skipped|no tests ran|xfailed|deselected).* in [0-9.]+s' "$out/pytest.log" | tail -1 > "$out/summary.txt" || true
echo "realkernel: VM ran ${elapsed}s (qemu exit $qrc)" >&2
if [ -s "$out/rc" ]; then
  rc=$(cat "$out/rc")
  [ -s "$out/summary.txt" ] && echo "realkernel: $(cat "$out/summary.txt")" >&2
  [ "$rc" = 124 ] && echo "realkernel: pytest hit the in-guest time limit" >&2
  exit "$rc"
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  echo "realkernel: TIMEOUT after ${timeout_s}s; console tail:" >&2
  tail -n 40 "$out/console.log" >&2 || true
  [ -f "$out/pytest.log" ] && { echo "--- pytest.log tail:" >&2; tail -n 40 "$out/pytest.log" >&2; }
  exit 124
fi
echo "realkernel: guest crashed or never finished pytest (qemu exit $qrc); console tail:" >&2
tail -n 40 "$out/console.log" >&2 || true
[ -f "$out/boot.log" ] && { echo "--- boot.log tail:" >&2; tail -n 20 "$out/boot.log" >&2; }
[ -f "$out/pytest.log" ] && { echo "--- pytest.log tail:" >&2; tail -n 40 "$out/pytest.log" >&2; }
exit 125
