"""Many processes on one SQLite file: every job runs exactly once, nobody sees "database is locked"."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import Env, wait_until

from conveyor import Conveyor

ENQUEUER = """
import sys, time
from jobsapp import app, square
deadline = time.monotonic() + float(sys.argv[1])
ids = []
i = 0
while time.monotonic() < deadline:
    if i % 10 == 0:
        ids += [h.id for h in app.enqueue_many([square.prepare(n) for n in range(i, i + 10)])]
        i += 10
    else:
        ids.append(square.enqueue(i).id)
        i += 1
    time.sleep(0.002)
print(" ".join(map(str, ids)))
"""
SECONDS = 15  # of enqueueing by four processes while two workers take the jobs


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_four_enqueuers_and_two_workers_share_one_file(env: Env, tmp_path: Path) -> None:
    workers = [env.worker("--processes", "1", "--concurrency", "4") for _ in range(2)]
    enqueuers = [
        subprocess.Popen([sys.executable, "-c", ENQUEUER, str(SECONDS)], env=env.vars,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    enqueued: list[int] = []
    for proc in enqueuers:
        out, err = proc.communicate(timeout=SECONDS + 60)
        assert proc.returncode == 0, err
        assert "locked" not in err
        enqueued += [int(x) for x in out.split()]
    assert len(enqueued) == len(set(enqueued)) > 1000

    store = Conveyor(env.url).store
    wait_until(lambda: not any(
        s.count(state) for s in store.queue_stats() for state in ("ready", "running")
    ), 120, "all jobs done")
    outputs = [env.stop(w)[1] for w in workers]
    assert all("locked" not in out for out in outputs)
    runs = Counter(int(line[0]) for line in env.lines())
    assert set(runs) == set(enqueued), "every enqueued job ran"
    assert max(runs.values()) == 1, "no job ran twice"
    print(f"\n{len(enqueued)} jobs from 4 enqueuers in {SECONDS}s, run once each by 2 workers")
