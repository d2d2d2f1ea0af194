"""``sclft bench --launcher ray|slurm``: the same runs, folders and tables as the in-process runner.

One local Ray cluster (2 CPUs, 1 logical GPU) serves the module; a tiny suite (4 runs of a few seconds, two
probes) is trained once in-process as the reference.
"""

import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time

import pytest
import yaml

from sclft import bench, cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "name": "tiny", "images_per_second": 150, "cost_unit": "CPU", "backbones": ["efficientnet_lite0"],
    "datasets": [{"name": "digits", "test_per_class": 4, "num_classes": 10, "train_size": 1347}],
    "defaults": {"image_size": 16, "epochs": 2, "batch_size": 16, "layer": "auto", "layer_rule": "profile",
                 "cache": "memory", "progress": False, "extra": {"selection": {"profile_per_class": 4}}},
    "groups": {"table": {"strategies": ["linear_probe", "scl_ft"], "seeds": [0, 1], "train_per_class": [3]}},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    """(suite file, the in-process runner's bench folder, trained with one torch thread as the Ray tasks are)."""
    root = tmp_path_factory.mktemp("tiny")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    suite = bench.load_suite(str(path))
    bench.run_suite(suite, root / "local", say=lambda _: None)
    bench.build_reports(suite, root / "local")
    return path, root / "local"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A Ray instance of the tests' own: ``address="local"`` (never the cluster ``ray start`` recorded in
    /tmp/ray/ray_current_cluster, nor ``RAY_ADDRESS``), in its own temporary folder (sessions, sockets, logs), with
    an authentication token of its own in the environment (Ray would otherwise create ~/.ray/auth_token, which a
    later ``ray start`` of the user's picks up)."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="sclft-ray-test-")  # short: Ray's socket paths live under it
    with pytest.MonkeyPatch.context() as mp:
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):  # gone, and restored as they were after
            mp.setenv(name, "")
            mp.delenv(name)
        mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))  # the token Ray's default token mode uses (no file)
        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
                 _temp_dir=temp)
        yield ray
        ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def _ids(out):
    return sorted(p.name for p in (out / "experiments").iterdir())


def _results(out):
    """Every run's metrics.json (timings left out) and nc1_layers.csv, by run id."""
    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if "seconds" not in k}
        return [untimed(v) for v in value] if isinstance(value, list) else value

    return {p.name: (untimed(json.loads((p / "metrics.json").read_text())),
                     (p / "nc1_layers.csv").read_text() if (p / "nc1_layers.csv").is_file() else None)
            for p in sorted((out / "experiments").iterdir())}


def _overlap(tasks):
    """The most tasks running at one time, from their start and end times."""
    events = sorted([(t["start"], 1) for t in tasks] + [(t["end"], -1) for t in tasks])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _kill_a_checkpointed_run(out, killed, done):
    """SIGKILL the first process seen training a run of ``out`` that has saved a checkpoint (its lock names it),
    waiting for that event, however long the machine takes, until the suite is ``done``."""
    while not done.is_set():
        for lock in out.glob("experiments/*/.sclft.lock"):
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                continue
            if (lock.parent / "checkpoint" / "latest.json").is_file():
                os.kill(holder["pid"], signal.SIGKILL)
                killed.append(lock.parent.name)
                return
        time.sleep(0.01)


@pytest.mark.slow  # a second Ray run of the suite, with one worker restart
def test_a_worker_killed_mid_run_is_retried_and_nothing_is_lost_or_duplicated(tiny, ray_cluster, tmp_path):
    from sclft.bench.launchers.ray import run_ray

    path, local = tiny
    out = tmp_path / "ray"
    killed, done = [], threading.Event()
    killer = threading.Thread(target=_kill_a_checkpointed_run, args=(out, killed, done), daemon=True)
    killer.start()
    try:
        session = run_ray(bench.load_suite(str(path)), out, gpus_per_run=0.0, cpus_per_run=1.0, retries=2)
    finally:
        done.set()
        killer.join()
    assert killed and not session["failed"] and not list(out.glob("experiments/*/error.log"))
    assert _ids(out) == _ids(local)
    assert sorted(t["id"] for t in session["tasks"] if t["kind"] == "train") == _ids(local)  # each once
    assert (out / "table.csv").read_text() == (local / "table.csv").read_text()


def test_ray_gives_the_in_process_runs_and_table_and_packs_two_runs_per_gpu(tiny, ray_cluster, tmp_path, capsys):
    path, local = tiny
    out = tmp_path / "ray"
    args = ["bench", "--suite", str(path), "--out", str(out), "--launcher", "ray", "--gpus-per-run", "0.5",
            "--cpus-per-run", "0.5"]
    assert cli.main(args) == 0
    assert _ids(out) == _ids(local) == sorted(r.id for r in bench.expand_suite(bench.load_suite(str(path))))
    assert (out / "table.csv").read_text() == (local / "table.csv").read_text()
    # issue 35: every number of every run, not only the table (NC1, train accuracy, history, the probes' NC1), is
    # the in-process runner's at the same torch thread count (here one: the one_thread fixture, --cpus-per-run 0.5)
    assert _results(out) == _results(local)
    session = json.loads((out / "bench.json").read_text())["sessions"][-1]
    assert session["launcher"] == "ray" and session["trained"] == 4 and len(session["tasks"]) == 6
    assert {t["torch_threads"] for t in session["tasks"]} == {1}
    # four tasks' worth of CPUs, two of GPU: the logical GPU decides, two at a time in separate workers
    assert _overlap(session["tasks"]) == 2 and len({t["pid"] for t in session["tasks"]}) >= 2
    assert cli.main(args) == 0  # the same command again: everything was finished
    assert "4 runs (4 already done, 0 trained)" in capsys.readouterr().out


def test_a_killed_progress_actor_does_not_fail_the_bench(tiny, ray_cluster, tmp_path, monkeypatch, capsys):
    """issue 35: the progress bookkeeping actor (ray.util.queue's ``_QueueActor``) killed for good before the first
    task starts: no task fails (retries=0, so none is hidden by a retry), the driver says so, and the run (one of
    the tiny suite's, with its probe) is the in-process one."""
    import ray.util.queue

    from sclft.bench.launchers.ray import run_ray

    killed = []

    class KilledQueue(ray.util.queue.Queue):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            ray_cluster.kill(self.actor)  # no_restart=True: gone for good
            killed.append(self.actor)

    monkeypatch.setattr(ray.util.queue, "Queue", KilledQueue)
    _, local = tiny
    one = {**TINY, "groups": {"table": {**TINY["groups"]["table"], "strategies": ["scl_ft"], "seeds": [0]}}}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one))
    out = tmp_path / "ray"
    session = run_ray(bench.load_suite(str(tmp_path / "one.yaml")), out, gpus_per_run=0.0, retries=0)
    assert killed and not session["failed"] and [t["kind"] for t in session["tasks"]] == ["train", "probe"]
    assert "progress actor lost (ActorDiedError)" in "".join(capsys.readouterr())
    (rid,) = _ids(out)
    for name in ("metrics.json", "nc1_layers.csv"):
        assert (out / "experiments" / rid / name).is_file() and (local / "experiments" / rid / name).is_file()
    assert [json.loads((o / "experiments" / rid / "metrics.json").read_text())["test_accuracy"]
            for o in (out, local)] == [session["tasks"][0]["test_accuracy"]] * 2


def test_without_an_address_the_launcher_starts_its_own_ray_and_never_joins_another(monkeypatch, tmp_path):
    """``--launcher ray`` with no ``--address``: ``address="local"`` in a temporary folder of its own (so neither
    RAY_ADDRESS nor a cluster recorded by ``ray start`` is joined), shut down and removed afterwards."""
    ray = pytest.importorskip("ray")
    from sclft.bench.launchers.ray import connect

    calls = []
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # another cluster's address: must be ignored
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", {})))
    with connect(None, num_cpus=3) as started:
        assert started and os.path.isdir(calls[0][1]["_temp_dir"])
    (_, init), (end, _) = calls
    assert init["address"] == "local" and init["num_cpus"] == 3 and end == "shutdown"
    assert os.path.basename(init["_temp_dir"]).startswith("sclft-ray-") and not os.path.exists(init["_temp_dir"])
    calls.clear()
    with connect("auto") as started:
        assert started
    assert calls[0] == ("init", {"address": "auto", "log_to_driver": False})


def test_the_deadline_cancels_unfinished_runs_and_still_builds_the_reports(tiny, ray_cluster, tmp_path, capsys):
    path, _ = tiny
    out = tmp_path / "ray"
    assert cli.main(["bench", "--suite", str(path), "--out", str(out), "--launcher", "ray", "--deadline", "0.01"]) == 1
    assert "deadline of 0.01 s reached" in capsys.readouterr().err
    session = json.loads((out / "bench.json").read_text())["sessions"][-1]
    assert session["stopped"] == "deadline" and len(session["unfinished"]) + len(session["tasks"]) == 6
    assert not list(out.glob("experiments/*/metrics.json"))  # nothing finished in 0.01 s


def test_ctrl_c_cancels_the_outstanding_tasks_and_says_how_to_resume(tiny, ray_cluster, tmp_path, capsys,
                                                                     monkeypatch):
    path, _ = tiny
    cancelled, cancel = [], ray_cluster.cancel

    def interrupted(*args, **kwargs):  # Ctrl-C while the driver waits for the first result
        raise KeyboardInterrupt

    def record(ref, force):
        cancelled.append(ref)
        cancel(ref, force=force)

    monkeypatch.setattr(ray_cluster, "wait", interrupted)
    monkeypatch.setattr(ray_cluster, "cancel", record)
    out = tmp_path / "ray"
    assert cli.main(["bench", "--suite", str(path), "--out", str(out), "--launcher", "ray"]) == 130
    assert len(cancelled) == 4  # four runs; the two probes wait for theirs and fail with them (not cancelled too:
    # cancelling a task and one waiting for it at once can abort the driver in Ray, issue 35)
    assert not list(out.glob("experiments/*/metrics.json")) and not list(out.glob("experiments/*/nc1_layers.csv"))
    assert "interrupted; the unfinished tasks were cancelled" in capsys.readouterr().err


def test_slurm_without_sbatch_says_so(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    path, _ = tiny
    assert cli.main(["bench", "--suite", str(path), "--out", str(tmp_path / "o"), "--launcher", "slurm"]) == 1
    assert "sbatch is not on PATH" in capsys.readouterr().err


def test_slurm_array_of_two_shards_merges_into_the_in_process_report(tiny, tmp_path):
    pytest.importorskip("submitit")
    from sclft.bench.launchers.slurm import run_slurm

    path, local = tiny
    suite = bench.load_suite(str(path))
    out = tmp_path / "slurm"
    session = run_slurm(suite, out, shards=2, gpus_per_job=0, cluster="debug")
    assert session["trained"] == 4 and not session["failed"]
    ids = [r.id for r in bench.expand_suite(suite)]
    assert [_ids(out / "shards" / s) for s in ("shard_1", "shard_2")] == [sorted(ids[0::2]), sorted(ids[1::2])]
    assert (out / "table.csv").read_text() == (local / "table.csv").read_text()
    caches = {json.loads(p.read_text())["cache_dir"] for p in out.glob("shards/*/experiments/*/train_config.json")}
    assert caches == {str(out.absolute() / "cache")}  # one frozen-prefix cache for the array


def test_slurm_no_wait_prints_the_merge_command(tiny, tmp_path, capsys):
    pytest.importorskip("submitit")
    path, _ = tiny
    out = tmp_path / "slurm"
    assert cli.main(["bench", "--suite", str(path), "--out", str(out), "--launcher", "slurm", "--slurm-cluster",
                     "debug", "--shards", "2", "--gpus-per-job", "0", "--no-wait"]) == 0
    said = capsys.readouterr().out
    assert f"--report {out.absolute()}/shards/shard_1 {out.absolute()}/shards/shard_2" in said


@pytest.mark.parametrize("flags, message", [
    (["--launcher", "ray", "--shard", "1/2"], "--shard is one job of an array"),
    (["--launcher", "ray", "--deadline", "-5"], "--deadline must be a positive number"),
    (["--launcher", "ray", "--retries", "-1"], "--retries >= 0"),
    (["--launcher", "slurm", "--shards", "0"], "--shards"),
])
def test_bad_launcher_flags_are_usage_errors(tiny, tmp_path, capsys, flags, message):
    path, _ = tiny
    assert cli.main(["bench", "--suite", str(path), "--out", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_engine_says_how_to_install_it(tiny, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    path, _ = tiny
    assert cli.main(["bench", "--suite", str(path), "--out", str(tmp_path), "--launcher", "ray"]) == 2
    assert "pip install 'sclft[ray]'" in capsys.readouterr().err
