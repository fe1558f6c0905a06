"""Worker processes end with the process that started them."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PARENT = textwrap.dedent("""
    import os, sys, time
    from transferkit.jobs import map_jobs

    def job(path):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
        return 0

    if __name__ == "__main__":
        d = sys.argv[1]
        map_jobs(job, [(os.path.join(d, f"w{i}"),) for i in range(2)], 2, lambda i, r: None)
""")


def _written(path) -> bool:
    return path.exists() and path.read_text().strip().isdigit()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purpose
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:  # reaped in between
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not all(_written(tmp_path / f"w{i}") for i in range(2)):
            time.sleep(0.2)
        pids = [int((tmp_path / f"w{i}").read_text()) for i in range(2)]
        assert all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), "worker processes outlived their killed parent"
    finally:
        parent.kill()
        for i in range(2):
            if _written(tmp_path / f"w{i}"):
                try:
                    os.kill(int((tmp_path / f"w{i}").read_text()), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass


STOPPED = textwrap.dedent("""
    import os, sys, time
    from transferkit.jobs import map_jobs

    def job(d, i):
        if i == 0:  # returns once the other job has its progress bar, as a training job has
            while not os.path.exists(os.path.join(d, "bar")):
                time.sleep(0.1)
            return 0
        from tqdm import tqdm
        tqdm(total=1, disable=True)
        open(os.path.join(d, "bar"), "w").close()
        time.sleep(60)

    def on_done(i, result):
        raise KeyboardInterrupt  # as Ctrl-C while the first result is written: the pool is stopped

    if __name__ == "__main__":
        try:
            map_jobs(job, [(sys.argv[1], 0), (sys.argv[1], 1)], 2, on_done)
        except KeyboardInterrupt:
            print("stopped")
""")


def test_a_worker_ended_by_an_interrupt_leaves_no_leaked_semaphore(tmp_path):
    """A worker that a stopped pool terminates runs no finalizer: a named semaphore made in it
    (tqdm's default lock had one) stays for the resource tracker, which warns at exit."""
    script = tmp_path / "stopped.py"
    script.write_text(STOPPED)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.stdout.strip() == "stopped", done.stderr
    assert "leaked" not in done.stderr, done.stderr
