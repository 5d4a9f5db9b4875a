"""CPU threads are shared among the hpo workers running on one machine (each worker takes its
share once, at its start: tests/worker/test_thread_count.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpo.worker import threads


@pytest.fixture(autouse=True)
def private_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(threads.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    return threads.registry_dir()


def test_a_registered_worker_counts_while_it_runs(private_registry):
    assert threads.live_workers() == 1  # never zero: the caller itself is a worker
    with threads.registered_worker():
        assert (private_registry / str(os.getpid())).exists()
        assert threads.live_workers() == 1
        assert threads.choose_threads() == 8
    assert not (private_registry / str(os.getpid())).exists()


@pytest.mark.subprocess
def test_cores_are_divided_among_live_workers_and_dead_ones_are_forgotten(private_registry):
    others = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) for _ in range(3)]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        private_registry.mkdir()
        for process in [*others, dead]:
            (private_registry / str(process.pid)).touch()
        with threads.registered_worker():
            assert threads.live_workers() == 4
            assert threads.choose_threads() == 2
        assert not (private_registry / str(dead.pid)).exists()
        others[0].kill()
        others[0].wait()
        assert threads.live_workers() == 2
        assert threads.choose_threads() == 4
    finally:
        for process in others:
            process.kill()
            process.wait()


def test_hpo_threads_overrides(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "3")
    assert threads.choose_threads() == 3  # a bad value is refused: test_thread_count.py


def test_fix_threads_sets_torch_threads(private_registry):
    import torch

    before = torch.get_num_threads()
    try:
        with threads.registered_worker():
            assert threads.fix_threads() == 8 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
