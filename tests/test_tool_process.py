"""The tests' tool runner (tests/tool_process.py) gives what subprocess.run gives for a script: a
process of its own with its exit status, output, environment, folder and import path, and no
pointrend_seg imported before the script imports it."""
import json
import os
import subprocess
import sys

import pytest

import tool_process

SCRIPT = r"""
import json, os, sys
print(json.dumps({"pid": os.getpid(), "cwd": os.getcwd(), "argv": sys.argv, "path0": sys.path[0],
                  "env": os.environ.get("TOOL_PROCESS_TEST"), "main": __name__,
                  "ours": sorted(m for m in sys.modules if m.split(".")[0] == "pointrend_seg"),
                  "threads": __import__("torch").get_num_threads()}))
print("to stderr", file=sys.stderr)
mode = sys.argv[1]
if mode == "exit":
    sys.exit(int(sys.argv[2]))
if mode == "raise":
    raise ValueError("raised at the end")
if mode == "message":
    sys.exit("a message")
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "tools" / "script.py"
    path.parent.mkdir()
    path.write_text(SCRIPT)
    return str(path)


@pytest.mark.parametrize("mode,args,status", [("normal", [], 0), ("exit", ["3"], 3),
                                              ("raise", [], 1), ("message", [], 1)])
def test_a_tool_process_is_what_subprocess_gives(script, tmp_path, mode, args, status):
    argv = [sys.executable, script, mode, *args]
    env = dict(os.environ, TOOL_PROCESS_TEST="set", OMP_NUM_THREADS="1")
    proc = tool_process.run(argv, cwd=str(tmp_path), env=env, timeout=60)
    assert proc.returncode == status, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[0])
    assert seen["pid"] != os.getpid() and seen["cwd"] == str(tmp_path)
    assert seen["argv"] == [script, mode, *args] and seen["path0"] == os.path.dirname(script)
    assert seen["env"] == "set" and seen["main"] == "__main__" and seen["ours"] == []
    assert seen["threads"] == 1
    assert proc.stderr.startswith("to stderr\n")
    if mode == "raise":
        assert proc.stderr.rstrip().endswith("ValueError: raised at the end")
    if mode == "message":
        assert proc.stderr.rstrip().endswith("a message")


def test_a_tool_process_past_its_timeout_is_killed(tmp_path):
    path, pid_file = tmp_path / "sleeper.py", tmp_path / "pid"
    path.write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                    "time.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        tool_process.run([sys.executable, str(path)], timeout=1)
    assert not os.path.exists(f"/proc/{pid_file.read_text()}")  # killed and reaped
