"""Private PostgreSQL clusters and Mosquitto brokers that a fault test may stop, kill and restart.

Each one lives in its own temporary directory on its own free port, so stopping it never disturbs the
machine's shared services or another test. Both are context managers and are torn down (process
stopped, directory removed) even when the test fails; a finaliser catches what a crashed test leaves.

PostgreSQL refuses to run as root: as root the cluster is created and run as the ``postgres`` user
(``runuser``); otherwise as the current user. The binaries are the system's PostgreSQL 15 when present,
else the ones bundled with the ``pgserver`` wheel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from uns_bridge.embedded import free_port, port_is_open

SYSTEM_PG_BIN = Path("/usr/lib/postgresql/15/bin")


class ServerError(RuntimeError):
    """A private server did not start or stop; the message carries the end of its log."""


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + log.read_text(errors="replace")[-2000:]
    raise ServerError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


def postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are, or None when this machine has neither (the tests then skip)."""
    if (SYSTEM_PG_BIN / "pg_ctl").exists():
        return SYSTEM_PG_BIN
    try:
        import pgserver
    except ImportError:
        return None
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return bundled if (bundled / "pg_ctl").exists() else None


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )


class PrivatePostgres:
    """A throw-away PostgreSQL cluster: ``start()``, ``stop()``, ``kill()``, ``restart()``, ``dsn``.

    The port stays the same across restarts, so clients configured with :attr:`dsn` reconnect to it.
    """

    def __init__(self, port: int | None = None) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ServerError("no PostgreSQL binaries (system PostgreSQL 15 or the pgserver wheel)")
        self.bin_dir = bin_dir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="uns-private-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_user: str | None = "postgres" if os.geteuid() == 0 else None
        if self._as_user is not None:
            shutil.chown(self.root, self._as_user, self._as_user)
        self.root.chmod(0o700)
        self._initialised = False
        self._ssl: tuple[Path, Path] | None = None
        self._pg_ctl = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data)]
        self._finalizer = weakref.finalize(self, _cleanup_postgres, self._command(self._pg_ctl), self.root)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _command(self, args: Sequence[str]) -> list[str]:
        if self._as_user is None:
            return list(args)
        return ["runuser", "-u", self._as_user, "--", *args]

    def _run(self, args: Sequence[str], timeout: float = 120) -> None:
        done = subprocess.run(
            self._command(args), capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ServerError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def enable_ssl(self, cert: Path, key: Path) -> None:
        """Serve TLS with this certificate and key (copied into the cluster, owned by its user, mode 0600)."""
        self._ssl = (cert, key)

    def _install_ssl(self) -> None:
        if self._ssl is None:
            return
        cert, key = self._ssl
        for source, name in ((cert, "server.crt"), (key, "server.key")):
            target = self.data / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if self._as_user is not None:
                shutil.chown(target, self._as_user, self._as_user)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")

    def start(self) -> None:
        if not self._initialised:
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--locale=C",
                ]
            )
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write(
                    f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                    "fsync = on\nshared_buffers = 32MB\nmax_connections = 40\nlog_min_messages = warning\n"
                )
            self._install_ssl()
            self._initialised = True
        self._run([*self._pg_ctl, "-l", str(self.log), "-w", "-t", "60", "start"])
        _wait_for(
            lambda: port_is_open("127.0.0.1", self.port), 60, f"PostgreSQL on port {self.port}", self.log
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients and shut down cleanly; ``immediate``: crash-like)."""
        if self.running:
            self._run([*self._pg_ctl, "-m", mode, "-w", "-t", "60", "stop"])

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends exit when they notice); the next start does crash recovery."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_for(lambda: not _alive(pid), 30, "the killed postmaster to go")
            _wait_for(lambda: not port_is_open("127.0.0.1", self.port), 30, "the port to close")

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        pid = self.pid
        return pid is not None and _alive(pid)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _cleanup_postgres(pg_ctl: list[str], root: Path) -> None:
    if (root / "data" / "postmaster.pid").exists():
        with contextlib.suppress(Exception):
            subprocess.run(
                [*pg_ctl, "-m", "immediate", "-w", "-t", "30", "stop"], capture_output=True, timeout=60
            )
    shutil.rmtree(root, ignore_errors=True)


class PrivateMosquitto:
    """A Mosquitto broker of this test's own, optionally with a TLS listener.

    ``persistence`` keeps sessions and queued QoS 1 messages across :meth:`restart`, as a production
    broker would. ``tls`` is ``(ca_file, cert_file, key_file)`` for a TLS-only listener.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        persistence: bool = True,
        tls: tuple[Path, Path, Path] | None = None,
        extra_config: str = "",
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise ServerError("no mosquitto binary on this machine")
        self.binary = binary
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="uns-private-mosquitto-"))
        self.log = self.root / "mosquitto.log"
        self.config = self.root / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.root}/",
            "autosave_interval 1",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 0",
            "max_inflight_messages 100",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        if tls is not None:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "require_certificate false"]
        self.config.write_text("\n".join(lines) + "\n" + extra_config)
        self._process: subprocess.Popen[bytes] | None = None
        self._holder: list[subprocess.Popen[bytes]] = []
        self._log_handle = open(self.log, "ab")  # noqa: SIM115 - closed by the finaliser
        self._finalizer = weakref.finalize(
            self, _cleanup_mosquitto, self._holder, self.root, self._log_handle
        )

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.running:
            return
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config)], stdout=self._log_handle, stderr=self._log_handle
        )
        self._holder[:] = [self._process]
        process = self._process

        def up() -> bool:
            if process.poll() is not None:
                raise ServerError(
                    f"mosquitto exited with {process.returncode}: {self.log.read_text()[-2000:]}"
                )
            return port_is_open("127.0.0.1", self.port, timeout=0.2)

        _wait_for(up, 30, f"mosquitto on port {self.port}", self.log)

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=30)
        self._process = None

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> PrivateMosquitto:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _cleanup_mosquitto(holder: list[subprocess.Popen[bytes]], root: Path, log_handle: object) -> None:
    for process in holder:
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(Exception):
                process.wait(timeout=30)
    with contextlib.suppress(Exception):
        log_handle.close()  # type: ignore[attr-defined]
    shutil.rmtree(root, ignore_errors=True)


def make_test_ca(directory: Path, common_name: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``common_name`` (also as IP SAN) made with the openssl CLI.

    Returns ``(ca_cert, server_cert, server_key)``.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerError("no openssl command on this machine")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text(f"subjectAltName=IP:{common_name},DNS:localhost\nbasicConstraints=CA:FALSE\n")

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ServerError(f"openssl {args[0]} failed: {done.stderr.strip()}")

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_cert),
        "-days",
        "2",
        "-subj",
        "/CN=uns-bridge test CA",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={common_name}",
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_cert),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    for path in (ca_key, key):
        path.chmod(0o644)  # mosquitto may run as another user
    return ca_cert, cert, key
