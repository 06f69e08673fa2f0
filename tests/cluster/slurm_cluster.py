"""A real single-node SLURM cluster on localhost, for tests.

Starts munged, mariadbd, slurmdbd, slurmctld and slurmd from Debian's packages with every file
(configs, state, logs, pid files, sockets, database) under one temporary folder, so nothing on
the machine is touched and several clusters cannot collide (ports are picked free). A fake GPU
is declared as gres ``gpu:<type>:1`` backed by a character device, which is enough for SLURM to
schedule and account GPU requests (``--gpus=<type>:1``) without any GPU hardware.

Client commands are reached through wrapper scripts in ``<root>/bin`` that export SLURM_CONF:
the Snakemake SLURM plugin strips ``SLURM_*`` variables before its inner ``srun``, so the
variable alone would be lost inside jobs. Put ``cluster.env()`` into the environment of
anything that talks to the cluster.

``stop()`` ends every process it started: the daemons (by their handles, else their pid files)
and then anything still carrying this cluster's marker variable in its environment (job steps
that slurmd double-forked, jobs, a Snakemake left running). It runs from ``with``, ``atexit``
and SIGTERM, so a failing test leaves nothing behind.

Usage::

    with SlurmCluster(partitions=("cpu", "gpu"), gpu_type="tgpu") as cluster:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env(), check=True)
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

__all__ = [
    "ClusterError",
    "SlurmCluster",
    "fake_gpu_device",
    "fake_gpu_devices",
    "unavailable_reason",
]

# Daemons, in start order; stopped in reverse.
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
# Everything the harness executes itself (server side).
SERVER_BINARIES = (
    "mungekey",
    "munged",
    "mariadb-install-db",
    "mariadbd",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
)
# Client commands wrapped so that SLURM_CONF survives inside jobs.
CLIENT_BINARIES = (
    "srun",
    "sbatch",
    "squeue",
    "sacct",
    "scontrol",
    "scancel",
    "sinfo",
    "sacctmgr",
    "sshare",
    "salloc",
    "sstat",
)
MARKER_VAR = "SEELIKE_TEST_SLURM_CLUSTER"
CLUSTER_NAME = "seelike"
# Character devices that exist on almost every Linux; a gres GPU without File= is dropped
# and the node goes INVAL, so one must exist.
GPU_DEVICE_CANDIDATES = (
    *(f"/dev/tty{i}" for i in range(1, 9)),
    "/dev/tty0",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/urandom",
    "/dev/random",
)
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"]
)


class ClusterError(RuntimeError):
    """The cluster could not be started; the message points at the daemon log to read."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root: slurmd, munged and mariadbd must run as root (run as root in CI)"
    missing = [b for b in SERVER_BINARIES + CLIENT_BINARIES if _which(b) is None]
    if missing:
        return (
            f"SLURM/munge/MariaDB binaries missing ({', '.join(missing)}): "
            "run `.ci/install_cluster_deps.sh` as root on Debian"
        )
    if fake_gpu_device() is None:
        return f"no character device for the fake GPU among {GPU_DEVICE_CANDIDATES}"
    return None


def fake_gpu_devices() -> list[str]:
    """Existing character devices that can back fake GPUs (one distinct file per GPU)."""
    found = []
    for cand in GPU_DEVICE_CANDIDATES:
        try:
            if stat.S_ISCHR(os.stat(cand).st_mode):
                found.append(cand)
        except OSError:
            continue
    return found


def fake_gpu_device() -> str | None:
    """First existing character device to back a fake GPU gres."""
    devs = fake_gpu_devices()
    return devs[0] if devs else None


def _gpu_devices(n: int) -> list[str]:
    devs = fake_gpu_devices()[:n]
    if len(devs) < n:
        raise ClusterError(
            f"{n} fake GPUs need {n} distinct character devices; found {devs}: lower n_gpus"
        )
    return devs


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _detect_node() -> tuple[int, int]:
    """(CPUs, RealMemory MB) as slurmd sees this machine."""
    out = subprocess.run(
        [_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    return int(fields["CPUs"]), int(fields["RealMemory"])


class SlurmCluster:
    """Single-node SLURM with accounting and a fake GPU, all under one temporary folder.

    partitions: partition names on the one node; the first is the default partition.
    gpu_type: the gres type of the fake GPU (match the profile's ``gpu_model``).
    n_gpus: number of fake GPUs (all backed by the same character device).
    cpus / mem_mb: what the node advertises; when above the machine's real values the node
        is declared with ``SlurmdParameters=config_overrides`` (scheduling only).
    """

    def __init__(
        self,
        root: Path | None = None,
        partitions: tuple[str, ...] = ("cpu", "gpu"),
        gpu_type: str = "tgpu",
        n_gpus: int = 1,
        cpus: int | None = None,
        mem_mb: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if not partitions:
            raise ValueError("partitions must name at least one partition")
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="seelike-slurm-"))
        self.partitions = tuple(dict.fromkeys(partitions))
        self.gpu_type = gpu_type
        self.n_gpus = n_gpus
        self.cpus = cpus
        self.mem_mb = mem_mb
        self.start_timeout = start_timeout
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._prev_sigterm = None
        # Paths: short, because unix socket paths are limited to ~107 bytes.
        self.etc = self.root / "etc"
        self.run_dir = self.root / "run"
        self.log_dir = self.root / "log"
        self.bin = self.root / "bin"
        self.slurm_conf = self.etc / "slurm.conf"
        self.munge_socket = self.run_dir / "munge.sock"
        self.db_socket = self.run_dir / "mysqld.sock"
        self.ports = {k: _free_port() for k in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ public
    def __enter__(self) -> SlurmCluster:  # noqa: PYI034 - py3.10 has no typing.Self
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for anything that talks to this cluster (clients, Snakemake)."""
        env = dict(os.environ if base is None else base)
        # A CI runner that itself runs under SLURM must not leak its job's variables.
        for key in [k for k in env if k.startswith("SLURM_")]:
            del env[key]
        env["SLURM_CONF"] = str(self.slurm_conf)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env[MARKER_VAR] = str(self.root)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Run a SLURM client command (e.g. ``run("sacct", "-P")``) and return stdout."""
        proc = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            env=self.env(),
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ClusterError(
                f"`{' '.join(args)}` failed (rc={proc.returncode}): {proc.stderr.strip()}"
            )
        return proc.stdout

    def start(self) -> None:
        """Start every daemon; on any failure stop what was started and raise ClusterError."""
        reason = unavailable_reason()
        if reason:
            raise ClusterError(reason)
        atexit.register(self.stop)
        self._install_sigterm_handler()
        t0 = time.monotonic()
        try:
            for d in (self.etc, self.run_dir, self.log_dir, self.bin):
                d.mkdir(parents=True, exist_ok=True)
            self.root.chmod(0o700)
            self._write_wrappers()
            self._start_munge()
            self._start_mariadb()
            self._write_slurm_conf()
            self._start_slurmdbd()
            self._start_slurmctld()
            self._start_slurmd()
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - t0

    def stop(self) -> None:
        """Stop everything this cluster started. Safe to call many times."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        t0 = time.monotonic()
        # Cancel jobs first so slurmd tears down their steps while it still runs.
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", f"--clusters={CLUSTER_NAME}", "--user=root", check=False,
                         timeout=10)  # fmt: skip
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    out = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10)
                    if not out.strip():
                        break
                    time.sleep(0.5)
            except (subprocess.SubprocessError, OSError):
                pass
        for name in reversed(DAEMONS):
            self._stop_daemon(name)
        self._kill_marked()
        atexit.unregister(self.stop)
        self._restore_sigterm_handler()
        self.timings["stop_s"] = time.monotonic() - t0

    def cleanup(self) -> None:
        """Stop, then delete the cluster's folder (keep it to read logs after a failure)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        """Last lines of every daemon log, for failure messages."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"==> {log} <==\n" + "\n".join(lines))
        return "\n".join(parts)

    # ----------------------------------------------------------------- daemons
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.log_dir / f"{name}.stdout.log", "ab")  # noqa: SIM115 - kept by Popen
        full_env = self.env() if env is None else env
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=self.root,
            # Own session: a Ctrl-C to the test does not reach the daemons half-way; stop() does.
            start_new_session=True,
        )
        log.close()
        self._procs[name] = proc
        (self.run_dir / f"{name}.popen.pid").write_text(f"{proc.pid}\n")

    def _wait(self, name: str, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        proc = self._procs.get(name)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise ClusterError(
                    f"{name} exited with {proc.returncode} while starting; logs:\n"
                    + self.log_tail()
                )
            try:
                if ready():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        raise ClusterError(f"{name}: timed out waiting for {what}; logs:\n" + self.log_tail())

    def _run_checked(self, argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run(
            argv, check=False, capture_output=True, text=True, env=env or self.env(), timeout=60
        )
        if proc.returncode != 0:
            raise ClusterError(f"{what} failed (rc={proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def _start_munge(self) -> None:
        t0 = time.monotonic()
        key = self.etc / "munge.key"
        self._run_checked([_which("mungekey"), "--create", f"--keyfile={key}"], "mungekey")
        key.chmod(0o600)
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.run_dir / 'munged.pid'}",
                f"--log-file={self.log_dir / 'munged.log'}",
                f"--seed-file={self.run_dir / 'munged.seed'}",
                # The temporary folder sits under world-writable /tmp, which munged distrusts.
                "--force",
            ],
        )
        self._wait("munged", self.munge_socket.exists, "its socket")
        self.timings["munged_s"] = time.monotonic() - t0

    def _start_mariadb(self) -> None:
        t0 = time.monotonic()
        data = self.root / "db"
        self._run_checked(
            [
                _which("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            "mariadb-install-db",
        )
        self._spawn(
            "mariadbd",
            [
                _which("mariadbd"),
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={self.db_socket}",
                f"--port={self.ports['mariadb']}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.run_dir / 'mariadbd.pid'}",
                f"--log-error={self.log_dir / 'mariadbd.log'}",
                "--user=root",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                # slurmdbd's schema creation does many small commits; durability is moot here.
                "--innodb-flush-log-at-trx-commit=0",
            ],
        )
        self._wait("mariadbd", lambda: _port_open(self.ports["mariadb"]), "its TCP port")
        sql = (
            "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
            "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
            "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm'; "
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; "
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
        )
        self._run_checked(
            [_which("mariadb"), "--no-defaults", f"--socket={self.db_socket}", "-uroot", "-e", sql],
            "creating the accounting database",
        )
        self.timings["mariadbd_s"] = time.monotonic() - t0

    def _node_line(self) -> tuple[str, str]:
        real_cpus, real_mem = _detect_node()
        cpus = self.cpus or real_cpus
        # A little under the detected memory, or slurmd reports "Low RealMemory".
        mem = self.mem_mb or max(512, real_mem - 512)
        overrides = cpus > real_cpus or mem > real_mem
        gres = f"gpu:{self.gpu_type}:{self.n_gpus}"
        line = (
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} "
            f"Gres={gres} State=UNKNOWN"
        )
        return line, ("SlurmdParameters=config_overrides" if overrides else "")

    def _write_slurm_conf(self) -> None:
        node_line, overrides = self._node_line()
        parts = "\n".join(
            f"PartitionName={p} Nodes=localhost MaxTime=INFINITE State=UP"
            + (" Default=YES" if i == 0 else "")
            for i, p in enumerate(self.partitions)
        )
        r, lg = self.run_dir, self.log_dir
        conf = f"""\
# Written by tests/cluster/slurm_cluster.py; everything lives under {self.root}
ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={self.ports["slurmctld"]}
SlurmdPort={self.ports["slurmd"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.root / "state"}
SlurmdSpoolDir={self.root / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={lg / "slurmctld.log"}
SlurmdLogFile={lg / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups on these machines.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Without it a job that asks no memory takes the whole node.
DefMemPerCPU=1024
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10
GresTypes=gpu
{overrides}
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports["slurmdbd"]}
# slurmctld reaches slurmdbd through the munge socket named here, not AuthInfo's.
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu,gres/gpu:{self.gpu_type}
# Keep --comment in sacct: the Snakemake plugin puts the rule name there.
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
{node_line}
{parts}
"""
        self.slurm_conf.write_text(conf)
        # One gres line per fake GPU, each backed by its own character device.
        (self.etc / "gres.conf").write_text(
            "".join(
                f"NodeName=localhost Name=gpu Type={self.gpu_type} File={dev}\n"
                for dev in _gpu_devices(self.n_gpus)
            )
        )
        dbd = self.etc / "slurmdbd.conf"
        dbd.write_text(
            f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.ports["slurmdbd"]}
SlurmUser=root
PidFile={r / "slurmdbd.pid"}
LogFile={lg / "slurmdbd.log"}
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports["mariadb"]}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
"""
        )
        dbd.chmod(0o600)  # slurmdbd refuses a readable password file

    def _start_slurmdbd(self) -> None:
        t0 = time.monotonic()
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])
        self._wait("slurmdbd", lambda: _port_open(self.ports["slurmdbd"]), "its port")
        for args in (
            ("add", "cluster", CLUSTER_NAME),
            ("add", "account", CLUSTER_NAME, "Description=test", "Organization=test"),
            ("add", "user", "root", f"DefaultAccount={CLUSTER_NAME}"),
        ):
            deadline = time.monotonic() + 20
            while True:
                proc = subprocess.run(
                    [str(self.bin / "sacctmgr"), "-i", *args],
                    check=False,
                    capture_output=True,
                    text=True,
                    env=self.env(),
                    timeout=30,
                )
                out = proc.stdout + proc.stderr
                if proc.returncode == 0 or "Nothing new added" in out or "already" in out:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"sacctmgr {' '.join(args)} failed: {out.strip()}")
                time.sleep(0.5)
        self.timings["slurmdbd_s"] = time.monotonic() - t0

    def _start_slurmctld(self) -> None:
        t0 = time.monotonic()
        (self.root / "state").mkdir(exist_ok=True)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i"])
        self._wait(
            "slurmctld",
            lambda: "UP" in self.run("scontrol", "ping", check=False, timeout=10),
            "`scontrol ping` to answer UP",
        )
        self.timings["slurmctld_s"] = time.monotonic() - t0

    def _start_slurmd(self) -> None:
        t0 = time.monotonic()
        (self.root / "spool").mkdir(exist_ok=True)
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost"])

        def node_ready() -> bool:
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10)
            states = {s.strip().rstrip("*~#") for s in state.split()}
            if states & {"inval", "drained", "draining", "down"}:
                detail = self.run("scontrol", "show", "node", "localhost", check=False)
                raise ClusterError(f"node is {states}:\n{detail}\n{self.log_tail()}")
            return "idle" in states

        self._wait("slurmd", node_ready, "the node to become idle")
        gres = self.run("scontrol", "show", "node", "localhost")
        if f"gpu:{self.gpu_type}" not in gres:
            raise ClusterError(f"the fake GPU gres is missing from the node:\n{gres}")
        self.timings["slurmd_s"] = time.monotonic() - t0

    # -------------------------------------------------------------------- stop
    def _stop_daemon(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            return
        # Not started by this object (e.g. a stop after a crash): use the pid file.
        pid_file = self.run_dir / f"{name}.popen.pid"
        if pid_file.exists():
            try:
                pid = int(pid_file.read_text().strip())
            except ValueError:
                return
            if _has_marker(pid, str(self.root)):
                _kill_and_wait(pid)

    def _kill_marked(self) -> None:
        """Kill every process that carries this cluster's marker (job steps, jobs), never this
        process or its ancestors (a caller started inside ``env()`` carries the marker too)."""
        spared = _ancestors(os.getpid())
        for _ in range(3):
            victims = [
                pid for pid in _all_pids() if pid not in spared and _has_marker(pid, str(self.root))
            ]
            if not victims:
                return
            for pid in victims:
                _kill_and_wait(pid, grace=2.0)

    def _install_sigterm_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        prev = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: object) -> None:
            self.stop()
            if callable(prev):
                prev(signum, frame)
            raise SystemExit(128 + signum)

        self._prev_sigterm = prev
        signal.signal(signal.SIGTERM, handler)

    def _restore_sigterm_handler(self) -> None:
        if self._prev_sigterm is None:
            return
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._prev_sigterm)
        self._prev_sigterm = None

    def _write_wrappers(self) -> None:
        for name in CLIENT_BINARIES:
            real = _which(name)
            if real is None:
                continue
            w = self.bin / name
            w.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.slurm_conf}"\nexec "{real}" "$@"\n')
            w.chmod(0o755)


def _ancestors(pid: int) -> set[int]:
    out = {pid}
    while pid > 1:
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat_line.rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        out.add(pid)
    return out


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _has_marker(pid: int, root: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER_VAR}={root}".encode() in environ.split(b"\0")


def _kill_and_wait(pid: int, grace: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
