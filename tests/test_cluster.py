"""The workflow through `--profile profiles/slurm` on a REAL single-node SLURM cluster.

Starts munged, MariaDB, slurmdbd, slurmctld and slurmd on localhost (tests/cluster/slurm_cluster.py)
with a fake GPU gres named as the profile's `gpu_model`. The cluster run reuses the finished local run of
tests/configs/tiny.yaml (the `workflow_run` fixture): a copy of it loses one trained model, one model's
attention table, a CKA table and its figure, and the SLURM executor rebuilds exactly those (train_model,
cache, attention_distance: GPU rules; cka, plot_cross_cka: CPU rules). Checks (1) the rebuilt outputs
equal the local run's (tables within float tolerance, trained models' accuracies equal) and nothing else
was rebuilt, (2) every job of a rule with `resources: gpu=1` was submitted to the profile's GPU partition
with a GPU request (sacct ReqTRES has gres/gpu) and no other job was. That every GPU rule of the workflow
has its SLURM settings in the profile is checked statically over every rule (tests/test_profiles.py).
Every daemon is stopped afterwards, also when the run fails.

Needs root and Debian's slurm-wlm, munge, slurmdbd and mariadb-server (`.ci/install_cluster_deps.sh`);
skips with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PROFILE = REPO / "profiles" / "slurm"
# What the cluster rebuilds in a copy of the local tiny run: each kind of job the profile routes (a trained model,
# a Gram cache and an attention pass on the GPU partition; a CKA table and a figure on the CPU one), and one job
# that reads another's output (the CKA of the rebuilt cache). Two waves of jobs: the plugin's status checks back
# off by 10 s per check that saw no job finish, so a longer chain costs more in waiting than in work.
REBUILT = (
    "results/models/resnet",
    "results/cache/digits/vit_variant",
    "results/attention/digits/vit.parquet",
    "results/cka/digits/vit_variant__vit_variant.parquet",
    "results/cka/digits/vit_variant__vit_variant.groups.npz",  # the same job's second output
    "results/figures/digits/fig1_self_cka/vit.png",
    "results/figures/digits/fig1_self_cka/vit.pdf",
)
TARGETS = (
    "results/models/resnet/model.json",
    "results/attention/digits/vit.parquet",
    "results/cka/digits/vit_variant__vit_variant.parquet",
    "results/cka/digits/vit_variant__vit_variant.groups.npz",  # the same job's second output
    "results/figures/digits/fig1_self_cka/vit.png",
)
EXPECTED_RULES = {"train_model", "cache", "attention_distance", "cka", "plot_self_cka"}
# Model metrics and table values: equal up to float reordering (different processes, same threads).
RTOL, ATOL = 1e-4, 1e-6
# Keys of JSON outputs that legitimately differ between two runs (host, paths, timings).
VOLATILE_KEYS = {
    "created",
    "date",
    "elapsed",
    "elapsed_s",
    "host",
    "hostname",
    "images_per_second",
    "path",
    "root",
    "seconds",
    "time",
    "timestamp",
    "versions",
    "wall_s",
}


def _harness():
    path = Path(__file__).with_name("cluster") / "slurm_cluster.py"
    spec = importlib.util.spec_from_file_location("seelike_test_slurm_cluster", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


slurm_cluster = _harness()


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _cluster_shape(profile: dict) -> dict:
    """Partitions, GPU type and node size the profile asks of a cluster, so it runs unedited."""
    default = profile.get("default-resources") or {}
    per_rule = profile.get("set-resources") or {}
    partitions = [default.get("slurm_partition", "cpu")]
    partitions += [r["slurm_partition"] for r in per_rule.values() if "slurm_partition" in r]
    gpu_models = {r["gpu_model"] for r in per_rule.values() if "gpu_model" in r}
    assert len(gpu_models) <= 1, f"the fake cluster has one GPU type; profile names {gpu_models}"
    # Two fake GPUs let independent GPU jobs overlap (the jobs' Python start-up dominates here);
    # the node advertises the CPUs and memory those jobs ask for (scheduling only, config_overrides:
    # rules ask 8-16 GB each, the tiny jobs use far less).
    n_gpus = min(2, len(slurm_cluster.fake_gpu_devices()))
    cpus_per_gpu = max([int(r.get("cpus_per_gpu", 1)) for r in per_rule.values()] + [1])
    return {
        "partitions": tuple(dict.fromkeys(partitions)),
        "gpu_type": next(iter(gpu_models), "tgpu"),
        "n_gpus": n_gpus,
        "cpus": cpus_per_gpu * n_gpus + 4,
        "mem_mb": 128000,
    }


def _parse_jobs(log: str) -> dict[str, dict[str, str]]:
    """rule name -> its printed resources, from Snakemake's job blocks ("rule X:" ... "resources: ...")."""
    rules: dict[str, dict[str, str]] = {}
    current = None
    for line in log.splitlines():
        m = re.match(r"^(local)?rule (\S+):$", line.strip())
        if m:
            current = None if m.group(1) else m.group(2)
            continue
        if current and line.strip().startswith("resources:"):
            res = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].split(", ") if "=" in kv)
            rules[current] = {k.strip(): v.strip() for k, v in res.items()}
            current = None
    return rules


def _sacct_rows(cluster, expected: int, timeout: float = 30) -> list[dict[str, str]]:
    """sacct rows (one per job allocation); slurmdbd records arrive asynchronously."""
    fmt = "JobID,JobName,Comment,Partition,State,ReqTRES,AllocTRES"
    deadline = time.monotonic() + timeout
    while True:
        out = cluster.run("sacct", "-X", "-P", "-a", "--starttime=now-1days", f"--format={fmt}")
        rows = [
            dict(zip(fmt.split(","), ln.split("|"), strict=True))
            for ln in out.strip().splitlines()[1:]
        ]
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def _rule_of(comment: str) -> str:
    m = re.match(r"^rule_(.+?)(?:_wildcards_.*)?$", comment)
    assert m, f"unexpected job comment {comment!r} (the SLURM plugin writes rule_<name>...)"
    return m.group(1)


def _copy_of_local_run(workflow_run: Path, dest: Path) -> Path:
    """The finished local run without REBUILT (mtimes kept, so nothing else is out of date)."""
    shutil.copytree(workflow_run / "config", dest / "config")
    shutil.copytree(workflow_run / "results", dest / "results")
    for rel in REBUILT:
        path = dest / rel
        assert path.exists(), f"the local tiny run has no {rel}: update REBUILT"
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return dest


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, workflow_run):
    """A copy of the local tiny run whose REBUILT outputs SLURM rebuilds; yields (workdir, sacct rows, log)."""
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(f"cluster test: {reason}")
    profile = _profile()
    cluster = slurm_cluster.SlurmCluster(**_cluster_shape(profile))
    try:
        try:
            cluster.start()
        except slurm_cluster.ClusterError as e:
            pytest.fail(f"the test cluster did not start: {e}")
        workdir = _copy_of_local_run(workflow_run, tmp_path_factory.mktemp("slurm_run"))
        env = cluster.env()
        env.update(HF_HUB_OFFLINE="1", TIMM_OFFLINE="1", PYTHONUNBUFFERED="1")
        cmd = [
            SNAKEMAKE,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--profile",
            str(PROFILE),
            # profiles/default sits beside the Snakefile, so Snakemake would also load it as the
            # workflow profile, whose keys win: its local `resources: gpu=1` would cap the cluster
            # at one GPU job at a time. The documented cluster command turns it off.
            "--workflow-profile",
            "none",
            # Profile value (20 s) suits a real cluster; here jobs finish in seconds.
            "--slurm-init-seconds-before-status-checks",
            "2",
            # the local run's torch threads (results depend on them); Snakemake passes it on to each job
            "--max-threads",
            "1",
            *TARGETS,
        ]
        t0 = time.monotonic()
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, env=env, timeout=1500
        )
        wall = time.monotonic() - t0
        log = proc.stdout + proc.stderr
        (workdir / "snakemake_slurm.log").write_text(log)
        if proc.returncode != 0:
            slurm_logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
            tails = "\n".join(
                f"==> {p} <==\n" + "\n".join(p.read_text(errors="replace").splitlines()[-20:])
                for p in slurm_logs[-3:]
            )
            pytest.fail(
                f"snakemake --profile profiles/slurm failed ({proc.returncode}):\n{log[-6000:]}\n"
                f"{tails}\n{cluster.log_tail(10)}"
            )
        n_jobs = len(re.findall(r"has been submitted with SLURM jobid", log))
        rows = _sacct_rows(cluster, n_jobs)
        print(f"cluster start {cluster.timings.get('start_s', 0):.1f} s, workflow {wall:.1f} s")
        yield workdir, rows, log
    finally:
        cluster.stop()
        assert not [
            pid
            for pid in slurm_cluster._all_pids()
            if slurm_cluster._has_marker(pid, str(cluster.root))
        ], "processes of the test cluster survived stop()"
        cluster.cleanup()


def _volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key.endswith(("_seconds", "_s", "_time"))


def _assert_json_close(a, b, where: str) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = {k for k in set(a) | set(b) if not _volatile(k)}
        for k in sorted(keys):
            assert k in a and k in b, f"{where}: key {k!r} only in one run"
            _assert_json_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_json_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _result_files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in (root / "results").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _rebuilt(local: Path, remote: Path) -> set[str]:
    """Result files of the SLURM copy that are new or newer than the local run's (copies keep mtimes)."""
    out = set()
    for rel in _result_files(remote):
        a, b = local / rel, remote / rel
        if not a.exists() or b.stat().st_mtime_ns != a.stat().st_mtime_ns:
            out.add(rel)
    return out


def test_slurm_outputs_equal_local_run(slurm_run, workflow_run):
    from seelike.io import read_table

    slurm_root, _, _ = slurm_run
    local, remote = _result_files(workflow_run), _result_files(slurm_root)
    assert local == remote, (
        f"only local: {sorted(local - remote)[:10]}, only SLURM: {sorted(remote - local)[:10]}"
    )
    rebuilt = _rebuilt(workflow_run, slurm_root)
    # What was removed and the jobs' benchmark files; nothing else (the retrained model's cache is not a target).
    beyond = {r for r in rebuilt if not r.startswith((*REBUILT, "results/benchmarks/"))}
    assert not beyond, f"rebuilt beyond the targets: {sorted(beyond)[:10]}"
    for rel in REBUILT:
        assert any(r == rel or r.startswith(rel + "/") for r in rebuilt), f"{rel} was not rebuilt"
    # Training is deterministic under its seed on CPU: the same accuracies, not merely close.
    for model_json in sorted(workflow_run.glob("results/models/*/model.json")):
        rel = model_json.relative_to(workflow_run)
        la = json.loads(model_json.read_text()).get("metrics") or {}
        ra = json.loads((slurm_root / rel).read_text()).get("metrics") or {}
        la, ra = ({k: v for k, v in m.items() if not _volatile(k)} for m in (la, ra))
        assert la == ra, f"{rel}: metrics differ, local {la} vs SLURM {ra}"
    n_tables = n_grams = 0
    for rel in sorted(rebuilt):
        a, b = workflow_run / rel, slurm_root / rel
        if rel.endswith((".parquet", ".csv")):
            (da, ma), (db, mb) = read_table(a), read_table(b)
            pd.testing.assert_frame_equal(da, db, check_exact=False, rtol=RTOL, atol=ATOL, obj=rel)
            _assert_json_close(ma, mb, f"{rel} metadata")
            n_tables += 1
        elif rel.endswith(".json") and not rel.endswith(".meta.json"):
            _assert_json_close(json.loads(a.read_text()), json.loads(b.read_text()), rel)
        elif rel.startswith("results/cache/") and rel.endswith(".npy"):
            ga, gb = np.load(a), np.load(b)
            np.testing.assert_allclose(gb, ga, rtol=RTOL, atol=ATOL, err_msg=rel)
            n_grams += 1
    assert n_tables >= 2 and n_grams > 0, f"compared {n_tables} tables and {n_grams} Gram files"


def test_gpu_jobs_requested_a_gpu(slurm_run):
    _, rows, log = slurm_run
    profile = _profile()
    per_rule = profile.get("set-resources") or {}
    gpu_partition = {r: s.get("slurm_partition") for r, s in per_rule.items()}
    rules = _parse_jobs(log)
    gpu_rules = {r for r, res in rules.items() if res.get("gpu") == "1"}
    assert set(rules) == EXPECTED_RULES, f"rules run: {sorted(rules)}"
    assert {"train_model", "cache", "attention_distance"} <= gpu_rules, (
        f"GPU rules: {sorted(gpu_rules)}"
    )
    missing = gpu_rules - {r for r, s in per_rule.items() if "gpu_model" in s}
    assert not missing, (
        f"GPU rules without SLURM settings in profiles/slurm set-resources: {missing}"
    )
    assert rows, "sacct shows no jobs"
    seen = set()
    for row in rows:
        rule = _rule_of(row["Comment"])
        seen.add(rule)
        assert row["State"] == "COMPLETED", row
        if rule in gpu_rules:
            assert "gres/gpu" in row["ReqTRES"], f"{rule} job asked no GPU: {row}"
            assert "gres/gpu" in row["AllocTRES"], f"{rule} job got no GPU: {row}"
            assert row["Partition"] == gpu_partition[rule], row
        else:
            assert "gres/gpu" not in row["ReqTRES"], f"CPU rule {rule} asked a GPU: {row}"
    assert gpu_rules <= seen, f"GPU rules missing from sacct: {gpu_rules - seen}"
    assert seen == set(rules), f"rules run vs sacct: {sorted(set(rules) ^ seen)}"


def test_harness_runs_a_gpu_job_and_stops_everything(tmp_path):
    """The harness alone: a GPU batch job is scheduled on the fake GPU, accounted, and nothing
    the cluster started survives stop()."""
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(f"cluster test: {reason}")
    cluster = slurm_cluster.SlurmCluster(partitions=("cpu", "gpu"), gpu_type="tgpu")
    pids: list[int] = []
    try:
        cluster.start()
        out = tmp_path / "job.out"
        job = cluster.run(
            "sbatch", "--parsable", "-p", "gpu", "--gpus=tgpu:1", "--cpus-per-gpu=1",
            "--comment=rule_probe", f"--output={out}", "--wrap", "echo gpu=$CUDA_VISIBLE_DEVICES",
        ).strip()  # fmt: skip
        deadline = time.monotonic() + 60
        while cluster.run("squeue", "-h", "-j", job, check=False).strip():
            assert time.monotonic() < deadline, "the GPU job did not finish in 60 s"
            time.sleep(0.5)
        assert out.read_text().strip() == "gpu=0", "SLURM did not bind the fake GPU to the job"
        rows = _sacct_rows(cluster, 1)
        assert [r["Comment"] for r in rows] == ["rule_probe"], rows
        assert "gres/gpu:tgpu=1" in rows[0]["ReqTRES"], rows[0]
        pids = [p.pid for p in cluster._procs.values()]
        assert len(pids) == len(slurm_cluster.DAEMONS)
    finally:
        cluster.cleanup()
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and not slurm_cluster._is_zombie(p)]
    assert not alive, f"daemons still running after stop(): {alive}"
    assert not cluster.root.exists()
