"""Runs OAI's softmodems with normal scheduling and without touching host-wide settings.

Run as root, OAI puts its threads on real-time scheduling: ``threadCreate`` (common/utils/system.c)
creates every thread with ``PTHREAD_EXPLICIT_SCHED`` + ``SCHED_RR``, the UE's ``init_thread``
(executables/lte-ue.c) calls ``pthread_setschedparam(SCHED_FIFO)``, the telnet server
``sched_setscheduler``. OAI has no option to switch that off (only a Fedora-RT-in-a-container
heuristic), and the obvious ways fail: dropping CAP_SYS_NICE makes ``pthread_create`` fail with
EPERM, which OAI turns into an ``AssertFatal`` abort; ``chrt`` before exec is overridden by OAI's own
calls. So emulab preloads a tiny shim (its C source is below, compiled once per start with the
C compiler that built OAI) that makes those requests keep the caller's normal policy: new threads
inherit ``SCHED_OTHER``, and requests for ``SCHED_FIFO``/``SCHED_RR`` succeed without effect. The
softmodems then compete for the CPU like every other process of the testbed (on 2 cores an RT
softmodem starves the emulated network and the pool elements).

Host-wide settings: the rfsim eNB runs ``sysctl -w net.core.{r,w}mem_*``; those sysctls exist only
in the initial network namespace, and the softmodems run in the nodes' namespaces, where the
writes fail (OAI logs a warning and goes on), so nothing host-wide changes. OAI's
``set_latency_target`` writes every CPU's ``cpufreq/scaling_min_freq``: the launcher runs the
softmodem in a private mount namespace where ``/sys/devices/system/cpu`` is a read-only bind, so
that write fails too. (``/dev/cpu_dma_latency`` is held open by the process only, and released by
the kernel when it exits, even on SIGKILL.)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SHIM_NAME = "libemulab-oai-nort.so"

SHIM_SOURCE = r"""
/* emulab: keep OpenAirInterface's threads on the caller's (normal) scheduling policy. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

static void note(const char *what, int policy) {
  static int said;
  if (!said) {
    said = 1;
    fprintf(stderr, "emulab: %s(policy %d) kept at normal scheduling (real-time disabled)\n", what, policy);
  }
}

int pthread_attr_setinheritsched(pthread_attr_t *attr, int inherit) {
  static int (*real)(pthread_attr_t *, int);
  if (!real) real = (int (*)(pthread_attr_t *, int))dlsym(RTLD_NEXT, "pthread_attr_setinheritsched");
  (void)inherit; /* new threads inherit the creator's policy: SCHED_OTHER */
  return real(attr, PTHREAD_INHERIT_SCHED);
}

int pthread_setschedparam(pthread_t thread, int policy, const struct sched_param *param) {
  static int (*real)(pthread_t, int, const struct sched_param *);
  if (policy == SCHED_FIFO || policy == SCHED_RR) { note("pthread_setschedparam", policy); return 0; }
  if (!real) real = (int (*)(pthread_t, int, const struct sched_param *))dlsym(RTLD_NEXT, "pthread_setschedparam");
  return real(thread, policy, param);
}

int sched_setscheduler(pid_t pid, int policy, const struct sched_param *param) {
  static int (*real)(pid_t, int, const struct sched_param *);
  if (policy == SCHED_FIFO || policy == SCHED_RR) { note("sched_setscheduler", policy); return 0; }
  if (!real) real = (int (*)(pid_t, int, const struct sched_param *))dlsym(RTLD_NEXT, "sched_setscheduler");
  return real(pid, policy, param);
}
"""

#: read-only in the softmodem's private mount namespace (OAI writes cpufreq settings there)
READONLY_PATHS = ("/sys/devices/system/cpu",)


class ShimError(RuntimeError):
    """The scheduling shim cannot be built (no C compiler)."""


def build_shim(directory: Path) -> Path:
    """Compile the shim into ``directory`` (the run's OAI directory); return the library's path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise ShimError("no C compiler (cc) to build the normal-scheduling shim for OAI's softmodems")
    directory.mkdir(parents=True, exist_ok=True)
    src, lib = directory / "emulab-oai-nort.c", directory / SHIM_NAME
    src.write_text(SHIM_SOURCE)
    out = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src)],
                         capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise ShimError(f"building {lib.name} failed: {(out.stderr or out.stdout).strip()[:400]}")
    return lib


def wrap(argv: list[str], shim: Path) -> list[str]:
    """``argv`` run in a private mount namespace (READONLY_PATHS read-only) with the shim preloaded."""
    binds = " ".join(f'[ -d {p} ] && mount --bind -o ro {p} {p};' for p in READONLY_PATHS)
    script = f'{binds} exec env LD_PRELOAD={shim} "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "emulab-oai", *argv]
