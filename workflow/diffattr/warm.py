"""Warm job starts: one interpreter per local workflow run imports torch, diffusers and every
stage once, then forks a child per job.

A ``diffattr`` job spends 1–4 CPU-seconds importing before it computes (torch alone ≈ 1.5 s,
README "Where the time goes"); a run of 130 jobs on 2 cores loses minutes to it. For a local run
the Snakefile's ``onstart`` starts :func:`serve` on a Unix socket and names it in
``DIFFATTR_WARM``. The ``diffattr`` command (:func:`main`) sends the server its arguments,
working folder and environment with its standard streams (SCM_RIGHTS) and waits; the server
forks, the child becomes the job (its own process group in the caller's session, at the
caller's niceness; the caller's streams, folder and environment; nothing of an earlier job,
since every child is forked from the server as it was after the imports) and the child's exit
status becomes the caller's. Server and jobs stay in Snakemake's session: on Linux's autogroup
scheduler a session is one CPU share, so ``nice snakemake …`` keeps the whole run below an
interactive session, as with cold jobs (a job in a session of its own took a share of its own).
The caller passes SIGINT, SIGTERM and SIGHUP on to the job; if the caller dies (SIGKILL: a
killed run), the server kills the job's process group at once.

A call runs in its own process, exactly as without a server, when: ``DIFFATTR_WARM`` is unset,
empty or ``0``; the server runs another interpreter or another copy of the package (a conda
environment); the call is inside a Slurm job; the platform lacks ``os.pidfd_open`` (Linux ≥ 5.3)
or ``socket.send_fds``; the server cannot be reached. The server never touches a GPU, so forked
children initialise CUDA themselves. It exits when the Snakemake process that started it ends.

Snakemake's benchmark files measure a job's process tree; a served job's work happens in the
server's child, so their CPU and memory columns then describe the waiting caller (their wall
seconds stay right). ``DIFFATTR_WARM=0 snakemake …`` measures jobs the classic way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

ENV = "DIFFATTR_WARM"
HEADER = struct.Struct("!Q")  # the request's byte length, sent with the three standard streams
STREAMS = 3


def identity() -> dict[str, str]:
    """What a served job must share with the server: the interpreter and the package."""
    return {
        "python": os.path.realpath(sys.executable),
        "package": os.path.realpath(Path(__file__).parent),
    }


# ---------------------------------------------------------------------------------------------
# The caller: the `diffattr` command


def main() -> None:
    """The ``diffattr`` command: served by the run's warm server where one serves this call,
    else run here (``diffattr.cli``)."""
    code = call(sys.argv[1:])
    if code is None:
        from .cli import main as run_here

        run_here()
    else:
        sys.exit(code)


def call(argv: list[str]) -> int | None:
    """The exit status of ``diffattr argv`` run by the warm server, or None where it cannot
    serve this call (the caller then runs it itself)."""
    path = os.environ.get(ENV, "")
    if path in ("", "0") or "SLURM_JOB_ID" in os.environ or not hasattr(socket, "send_fds"):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = json.dumps(
            {
                "argv": argv,
                "cwd": os.getcwd(),
                "env": dict(os.environ),
                "nice": os.getpriority(os.PRIO_PROCESS, 0),
                **identity(),
            }
        ).encode()
        socket.send_fds(conn, [HEADER.pack(len(request))], list(range(STREAMS)))
        conn.sendall(request)
        replies = conn.makefile("r")
        started = replies.readline().split()
        if len(started) != 2 or started[0] != "started":
            return None  # refused (another interpreter or package): nothing has run
    except OSError:
        return None
    # From here the job runs in the server's child: its status is ours, and so are the signals
    # Snakemake or a terminal send us (SIGKILL, which cannot be passed on, ends us: the server
    # sees the hang-up and kills the job). A lost server (no status line) leaves the job's
    # outcome unknown, which is a failure.
    job = int(started[1])
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda signum, _: _signal(job, signum))
    status = replies.readline().split()
    if len(status) != 2 or status[0] != "exit":
        print(f"diffattr: error: the warm server ({path}) ended during the job", file=sys.stderr)
        return 1
    return int(status[1])


def _signal(job: int, signum: int) -> None:
    """Pass a signal on to the job's process group (to the job alone before it has made one)."""
    try:
        os.killpg(job, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(job, signum)


# ---------------------------------------------------------------------------------------------
# The server


def preload() -> None:
    """Import what jobs import: every stage's module (torch, diffusers' UNets, h5py, pandas,
    scipy, matplotlib through them) and the CLI."""
    from . import cli, stages

    for command in stages.STAGES:
        stages.load(command)
    del cli


def serve(path: str, parent: int) -> None:
    """Serve jobs on the Unix socket ``path`` until process ``parent`` ends. The socket listens
    before the imports, so a job that calls during them waits instead of starting cold."""
    import selectors

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop(): clean up below
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)
    jobs: dict[int, tuple[socket.socket, int]] = {}  # pidfd → (caller, pid)
    try:
        preload()
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        while os.getppid() == parent:
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj is listener:
                    caller, _ = listener.accept()
                    started = _start(caller, [listener, selector, *_held(jobs)])
                    if started is None:
                        caller.close()
                        continue
                    pid, pidfd = started
                    jobs[pidfd] = (caller, pid)
                    selector.register(pidfd, selectors.EVENT_READ, "exit")
                    selector.register(caller, selectors.EVENT_READ, pidfd)
                elif key.data == "exit":  # a child ended: its status to its caller
                    caller, pid = jobs.pop(key.fd)
                    _, status, usage = os.wait4(pid, 0)
                    code = os.waitstatus_to_exitcode(status)
                    _log_end(pid, code, usage)
                    _reply(caller, f"exit {code if code >= 0 else 128 - code}")
                    selector.unregister(key.fd)
                    with contextlib.suppress(KeyError):  # unless it hung up before
                        selector.unregister(caller)
                    os.close(key.fd)
                    caller.close()
                else:  # the caller hung up (killed): so is its job
                    caller, pid = jobs[key.data]
                    selector.unregister(caller)
                    _kill(pid)
    finally:
        for _, pid in jobs.values():
            _kill(pid)
        os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))  # start()'s folder, when empty


def _held(jobs: dict[int, tuple[socket.socket, int]]) -> list:
    """The server's descriptors of running jobs: their callers' sockets and their pidfds."""
    return [fd for pidfd, (caller, _) in jobs.items() for fd in (caller, pidfd)]


def _start(caller: socket.socket, held: list) -> tuple[int, int] | None:  # noqa: C901  (issue 32: not yet split)
    """Read a caller's request and fork its job: (pid, pidfd), or None where it is refused.
    The child closes ``held`` (the server's own descriptors) first."""
    import threading

    caller.settimeout(30)
    fds: list[int] = []
    try:
        header, fds, _, _ = socket.recv_fds(caller, HEADER.size, STREAMS)
        body = b""
        (size,) = HEADER.unpack(header)
        while len(body) < size:
            chunk = caller.recv(size - len(body))
            if not chunk:
                raise ConnectionError("the caller hung up")
            body += chunk
        request = json.loads(body)
    except (OSError, ValueError, struct.error) as err:
        print(f"warm: unreadable request: {err}", flush=True)
        for fd in fds:
            os.close(fd)
        return None
    caller.settimeout(None)
    refusal = None
    if len(fds) != STREAMS or {k: request.get(k) for k in identity()} != identity():
        refusal = "another interpreter or package"
    elif threading.active_count() != 1:  # forking a threaded process can copy a held lock
        refusal = "the server has threads"
    elif "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        refusal = "CUDA was initialised in the server (a forked child could not use it)"
    if refusal is not None:  # logged before the reply: the log is complete when a call returns
        print(f"warm: refused {request.get('argv')}: {refusal}", flush=True)
        _reply(caller, "refused")
        for fd in fds:
            os.close(fd)
        return None
    stdout = _path_of(fds[1])
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        for descriptor in [caller, *held]:
            if isinstance(descriptor, int):
                os.close(descriptor)
            else:
                descriptor.close()
        _job(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    command = " ".join(request["argv"][:1])
    print(f"warm: job {pid} started: diffattr {command} > {stdout}", flush=True)
    _reply(caller, f"started {pid}")
    return pid, os.pidfd_open(pid)


def _job(request: dict, fds: list[int]) -> None:
    """In the forked child: become the caller's job, run it, exit with its status."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group (killing the job kills what it started), in
        _adopt_niceness(request.get("nice"))  # the caller's session, at the caller's niceness
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["diffattr", *request["argv"]]
        from .cli import main as run_here

        run_here(request["argv"])
        code = 0
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
        code = 1 if isinstance(exit_.code, str) else exit_.code or 0
    except BaseException:  # as an uncaught exception ends a process: traceback, status 1
        import traceback

        traceback.print_exc()
    finally:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


def _adopt_niceness(nice: int | None) -> None:
    """Run at the caller's niceness (raising it is always allowed; lowering it below the
    server's needs privileges, and then the server's stays)."""
    if nice is None or nice == os.getpriority(os.PRIO_PROCESS, 0):
        return
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def _path_of(fd: int) -> str:
    """The file behind a descriptor (a job's log: its rule and name), or "?"."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _log_end(pid: int, code: int, usage) -> None:
    """The job's end with its own resources (Snakemake's benchmark sees only the caller)."""
    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"warm: job {pid} ended with status {code}: CPU {cpu:.2f} s,"
        f" max RSS {usage.ru_maxrss / 1024:.1f} MB",
        flush=True,
    )


def _reply(caller: socket.socket, line: str) -> None:
    with contextlib.suppress(OSError):  # unless the caller is gone
        caller.sendall(f"{line}\n".encode())


def _kill(pid: int) -> None:
    """Kill a job and its process group. Its pid stays reserved until the server reaps it, so
    no other process is hit."""
    _signal(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# The workflow's side: start and stop


_SERVER: list = []  # the server this process started (one per Snakemake process)


def start(log: Path) -> bool:
    """Start a warm server for this Snakemake process (its messages in ``log``) and name its
    socket in ``DIFFATTR_WARM`` for the jobs Snakemake starts; False where this platform cannot
    serve or ``DIFFATTR_WARM=0`` turns it off."""
    import subprocess
    import tempfile

    if _SERVER or os.environ.get(ENV) == "0" or not hasattr(os, "pidfd_open"):
        return bool(_SERVER)
    path = os.path.join(tempfile.mkdtemp(prefix="diffattr-warm-"), "socket")  # a short path
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "diffattr.warm", path, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group, so Ctrl-C in a terminal reaches Snakemake, not the server;
            # Snakemake's session (not a new one), so its jobs keep the run's CPU share.
            process_group=0,
        )
    while not os.path.exists(path):  # it binds before its imports: a fraction of a second
        if server.poll() is not None:
            return False  # it could not start (its log says why): jobs start cold
        time.sleep(0.01)
    _SERVER.append(server)
    os.environ[ENV] = path
    return True


def stop() -> None:
    """Stop the server :func:`start` started, if any (it also stops when Snakemake ends)."""
    os.environ.pop(ENV, None)
    while _SERVER:
        server = _SERVER.pop()
        server.terminate()
        server.wait()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
