"""
Run a tool (``tools/NAME.py ARGS``) as a process of its own, without paying its imports each
time: :func:`run` is ``subprocess.run([sys.executable, tool, *args], capture_output=True,
text=True, ...)`` whose process is forked from a helper process that imported torch, torchvision
and Detectron2 once (~5 s of every tool's start on 2 cores; a suite runs ~50 tools).

What stays as in a fresh process: its own pid, exit status, stdout and stderr (files, not a
terminal), environment, working directory, ``sys.argv`` and ``sys.path[0]`` (the tool's folder),
``__main__`` (the tool, run by ``runpy``), Python's handling of an exception or ``SystemExit`` at
the end, and everything of pointrend_seg: the helper does not import it (nor Detectron2's
PointRend project), so the tool registers our components itself, as from a shell.
What differs: the third-party modules are imported before the environment is the test's (torch's
thread count is set from ``OMP_NUM_THREADS`` instead), and their import-time warnings are not in
the tool's stderr. Tests of a process's memory, of signals or of several processes keep using
``subprocess``.
"""
import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

_HELPER = r"""
import json, os, runpy, sys
import torch, torchvision  # noqa: F401
import detectron2.checkpoint, detectron2.config, detectron2.data, detectron2.engine  # noqa
import detectron2.evaluation, detectron2.modeling, detectron2.projects.deeplab  # noqa
import detectron2.utils.visualizer  # noqa: F401
assert not any(m == "pointrend_seg" or m.startswith("pointrend_seg.") for m in sys.modules)
sys.stdout.write("ready\n")
sys.stdout.flush()
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid:
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()
        continue
    os.setpgid(0, 0)  # its own process group: a timeout kills its workers too
    fds = [os.open(os.devnull, os.O_RDONLY)] + [
        os.open(request[k], os.O_WRONLY | os.O_CREAT | os.O_TRUNC) for k in ("stdout", "stderr")]
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name="__main__")
    sys.exit(0)
"""

_helper = None
TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _start():
    global _helper
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # torch's default; each tool sets its own
    _helper = subprocess.Popen([sys.executable, "-c", _HELPER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, bufsize=0, env=env)
    atexit.register(_helper.terminate)
    if _reply() != "ready":
        raise RuntimeError("the tool helper process did not start")


def _reply(timeout=None):
    """The helper's next line (JSON), or None after ``timeout`` seconds. Read unbuffered, byte
    by byte (two short lines per tool), so that ``select`` sees every line not yet read."""
    line, deadline = b"", None if timeout is None else time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if left is not None and not select.select([_helper.stdout], [], [], left)[0]:
            return None
        byte = os.read(_helper.stdout.fileno(), 1)
        if not byte:
            raise RuntimeError("the tool helper process ended")
        line += byte
    return json.loads(line) if line.startswith(b"{") else line.decode().strip()


def tool(name, *args, threads=1, timeout=300):
    """``tools/NAME ARGS`` (:func:`run`) from the checkout's root, as a user runs it: with
    ``OMP_NUM_THREADS=threads`` and without ``POINTREND_SEG_DEBUG`` (errors in one line)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("POINTREND_SEG_DEBUG", None)
    return run([sys.executable, os.path.join(TOOLS, name), *args], cwd=os.path.dirname(TOOLS),
               env=env, timeout=timeout)


def run(argv, *, cwd=None, env=None, timeout=None):
    """
    ``argv``: ``[sys.executable, "path/to/tool.py", *args]`` (the form ``subprocess.run`` takes).
    Returns a ``subprocess.CompletedProcess`` with text stdout and stderr; raises
    ``subprocess.TimeoutExpired`` (the process group killed) after ``timeout`` seconds.
    """
    if argv[0] != sys.executable or not str(argv[1]).endswith(".py"):
        raise ValueError(f"not a tool command: {argv}")
    if _helper is None or _helper.poll() is not None:
        _start()
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {k: os.path.join(tmp, k) for k in ("stdout", "stderr")}
        request = dict(argv=[str(a) for a in argv[1:]], cwd=os.path.abspath(cwd or os.getcwd()),
                       env=dict(os.environ if env is None else env), **outputs)
        data = (json.dumps(request) + "\n").encode()
        while data:  # unbuffered: a write may take part of it
            data = data[os.write(_helper.stdin.fileno(), data):]
        pid = _reply()["pid"]
        done = _reply(timeout)
        if done is None:
            os.killpg(pid, signal.SIGKILL)
            _reply()
        texts = {}
        for k, path in outputs.items():
            with open(path, errors="replace") as f:
                texts[k] = f.read()
        if done is None:
            raise subprocess.TimeoutExpired(argv, timeout, texts["stdout"], texts["stderr"])
        return subprocess.CompletedProcess(argv, done["status"], texts["stdout"], texts["stderr"])
