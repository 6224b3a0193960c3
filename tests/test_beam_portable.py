"""ClusterPerKey on the PortableRunner: Beam's Python job service and an EXTERNAL worker pool, the
Fn API path that Flink, Spark and Dataflow use."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from streamrbf.beam import ClusterPerKey

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[1]
BAD = [("s0", "{not json"), ("s0", [1.0, float("nan")]), ("s0", [1.0, 2.0, 3.0]), (42, [1.0, 2.0]),
       ("s1", {"x": 1.0}), ("s0", []), "just a string"]


def keyed_events(n_per_key: int, seed: int) -> list[tuple[str, list[float]]]:
    rng = np.random.default_rng(seed)
    centres = {"s0": [[0, 0], [6, 0], [0, 6]], "s1": [[20, 20], [26, 20], [20, 26]]}
    return [(key, (np.asarray(cs[i % 3]) + rng.normal(0, 0.3, 2)).tolist())
            for i in range(n_per_key) for key, cs in centres.items()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on port {port}")


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    env = dict(os.environ)
    # The pool starts workers with a bare `python` from PATH: the venv's must come first, and
    # the workers must import streamrbf from this checkout.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    job_port, pool_port = _free_port(), _free_port()
    logs = tmp_path_factory.mktemp("portable")
    procs = []
    try:
        for args, port, name in [
            (["-m", "apache_beam.runners.portability.local_job_service_main",
              "--port", str(job_port)], job_port, "job"),
            (["-m", "apache_beam.runners.worker.worker_pool_main",
              "--service_port", str(pool_port)], pool_port, "pool"),
        ]:
            log = open(logs / f"{name}.log", "wb")
            procs.append(subprocess.Popen([sys.executable, *args], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            _wait_for(port, procs[-1])
        yield job_port, pool_port
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_portable_runner_external_worker_pool(portable_services):
    job_port, pool_port = portable_services
    options = PipelineOptions([
        "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
        "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}",
    ])
    events = keyed_events(60, seed=9) + BAD
    with beam.Pipeline(options=options) as p:
        out = p | beam.Create(events) | ClusterPerKey(3, batch_size=40, warmup=40,
                                                      snapshot_every=1)
        labels = ((out.assignments | "A" >> beam.Map(lambda kv: "assignment"),
                   out.dead_letters | "D" >> beam.Map(lambda d: "dead"))
                  | beam.Flatten() | beam.combiners.Count.PerElement())
        assert_that(labels, equal_to([("assignment", 120), ("dead", 7)]), label="Count")
        # Each stream initialised on 40 events, then one step per batch of 40: 60 events.
        assert_that(out.snapshots | beam.Map(lambda s: (s.key, s.n_seen)),
                    equal_to([("s0", 40), ("s0", 60), ("s1", 40), ("s1", 60)]), label="Snaps")
