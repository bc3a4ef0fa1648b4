"""Crash-safe runs: atomic files, SIGKILL and SIGTERM mid-epoch, --resume, the run directory's format."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from infinimodal.cli import EXIT_INTERRUPTED, main
from infinimodal.runfiles import RUN_FORMAT, atomic_write, read_state_dict

DATA = "synthetic:n=3000,features=12"
TRAIN = [
    "train",
    "--data",
    DATA,
    "--epochs",
    "3",
    "--hidden",
    "32",
    "--latent-dim",
    "6",
    "--kl-warmup",
    "2",
    "--batch-size",
    "50",
    "--quiet",
]


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "infinimodal.cli", *args]


def progress(run: Path) -> dict:
    path = run / "progress.json"
    return json.loads(path.read_text()) if path.is_file() else {"epochs_done": 0}


def start_and_stop_mid_epoch(run: Path, sig: int, after_epochs: int = 1, resume: bool = False) -> tuple[int, str]:
    """Start training into `run` (or resume it), send `sig` a little after epoch `after_epochs` has been written;
    (exit code, stderr)."""
    args = ["train", "--out", str(run), "--resume", "--quiet"] if resume else [*TRAIN, "--out", str(run)]
    process = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while progress(run)["epochs_done"] < after_epochs:
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "training did not reach the epoch"
        time.sleep(0.01)
    time.sleep(0.2)  # into the next epoch (an epoch takes about a second here)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def weights(run: Path) -> dict:
    return read_state_dict(run / "model.ckpt")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "uninterrupted"
    subprocess.run(cli(*TRAIN, "--out", str(run)), check=True, capture_output=True)
    return run


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_run_stopped_mid_epoch_and_resumed_ends_with_the_uninterrupted_runs_weights(
    uninterrupted, tmp_path, sig, capsys
):
    run = tmp_path / "stopped"
    returncode, err = start_and_stop_mid_epoch(run, sig)
    stopped_at = progress(run)
    assert not stopped_at["finished"] and 1 <= stopped_at["epochs_done"] < 3
    if sig == signal.SIGTERM:
        # a stopped run says so: a non-zero exit, the epochs done, how to continue
        assert returncode == EXIT_INTERRUPTED
        assert "--resume" in err and f"after {stopped_at['epochs_done']} of 3 epochs" in err and "Traceback" not in err
        assert stopped_at["stopped"] == "stopped by SIGTERM"
        # evaluate warns and records it, rather than proceeding as if the run were finished
        assert (
            main(
                [
                    "evaluate",
                    str(run),
                    "--iw-samples",
                    "2",
                    "--max-test",
                    "50",
                    "--no-coherence",
                    "--no-baselines",
                    "--quiet",
                ]
            )
            == 0
        )
        assert "training did not finish" in capsys.readouterr().err
        assert json.loads((run / "eval.json").read_text())["training_finished"] is False
        assert main(["report", str(run), "--max-rows", "100", "--examples", "2", "--max-dims", "2", "--quiet"]) == 0
        assert "training did not finish" in capsys.readouterr().err
        assert (
            "Warning: " in (run / "report.html").read_text()
            and "training did not finish" in (run / "report.html").read_text()
        )
    else:
        assert returncode == -signal.SIGKILL
    # as a requeued job resumes: the very command line the run was started with, plus --resume
    resumed = subprocess.run(cli(*TRAIN, "--out", str(run), "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert progress(run) == {"epochs_done": 3, "epochs": 3, "finished": True, "stopped": None}
    expected, found = weights(uninterrupted), weights(run)
    assert set(expected) == set(found)
    for name in expected:  # optimiser, KL warm-up, data order and random streams all restored: the same numbers
        torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0, msg=name)
    # metrics.csv holds each epoch once, as the uninterrupted run's
    assert (run / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()
    assert json.loads((run / "config.json").read_text())["resumed"] == 1


def test_a_resumed_run_killed_again_loses_nothing(uninterrupted, tmp_path):
    run = tmp_path / "twice"
    start_and_stop_mid_epoch(run, signal.SIGKILL, after_epochs=1)
    start_and_stop_mid_epoch(run, signal.SIGKILL, after_epochs=2, resume=True)  # killed while resuming
    assert not progress(run)["finished"]
    assert subprocess.run(cli("train", "--out", str(run), "--resume", "--quiet"), capture_output=True).returncode == 0
    expected, found = weights(uninterrupted), weights(run)
    assert all(torch.equal(found[name], expected[name]) for name in expected)
    assert (run / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()
    assert not (run / "metrics.earlier.csv").exists()


def test_a_new_run_in_an_old_directory_clears_the_old_runs_files(uninterrupted, tmp_path):
    import shutil

    run = tmp_path / "reused"
    shutil.copytree(uninterrupted, run)
    (run / "eval.json").write_text("{}")
    assert (
        main(
            [
                "train",
                "--data",
                DATA,
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--max-train",
                "200",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert progress(run) == {"epochs_done": 1, "epochs": 1, "finished": True, "stopped": None}
    assert not (run / "eval.json").exists()  # it described the old model
    assert json.loads((run / "config.json").read_text())["hidden"] == [8]


@pytest.mark.parametrize(
    "mistake",
    [
        ["--predict", "y=10"],
        ["--weight", "x9=2"],
        ["--data", "synthetic:n=3000,features=12,labels=0.1", "--infomax", "x0=5"],
        ["--data", "/nonexistent/cohort.npz"],
    ],
    ids=["predict", "weight", "infomax", "data"],
)
def test_a_refused_run_leaves_the_old_run_in_its_directory(uninterrupted, tmp_path, capsys, mistake):
    # the data and the options are checked before the old run's files are cleared: a typo loses nothing
    import shutil

    run = tmp_path / "kept"
    shutil.copytree(uninterrupted, run)
    (run / "eval.json").write_text('{"elbo": -1.0}')
    before = {name: (run / name).read_bytes() for name in ("model.ckpt", "config.json", "eval.json", "progress.json")}
    assert main([*TRAIN, "--out", str(run), *mistake]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert {name: (run / name).read_bytes() for name in before} == before


def test_a_diverged_run_says_to_retrain_not_to_resume(tmp_path, capsys):
    from infinimodal.runfiles import DIVERGED, unfinished_warning, write_json

    write_json(
        tmp_path / "progress.json",
        {"epochs_done": 2, "epochs": 5, "finished": False, "stopped": f"{DIVERGED}: loss is nan at step 40"},
    )
    warning = unfinished_warning(tmp_path)
    assert "diverge again" in warning and "smaller --lr" in warning and "--resume`" not in warning


def test_resume_refuses_what_it_cannot_do(uninterrupted, tmp_path, capsys):
    assert main(["train", "--out", str(uninterrupted), "--resume", "--quiet"]) == 2
    assert "already finished" in capsys.readouterr().err
    assert main(["train", "--out", str(uninterrupted), "--resume", "--epochs", "9", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "drop --epochs (epochs=9 where the run has 3); --lr (lr=0.1 where the run has" in err
    # the run's own flags are accepted (a requeued job repeats them); only the one that differs is named
    assert main([*TRAIN, "--out", str(uninterrupted), "--resume", "--batch-size", "64"]) == 2
    err = capsys.readouterr().err
    assert (
        "drop --batch-size (batch_size=64 where the run has 50)" in err
        and "--epochs" not in err
        and "--hidden" not in err
    )
    assert main([*TRAIN, "--out", str(uninterrupted), "--resume"]) == 2
    assert "already finished" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_evaluate_is_deterministic(uninterrupted, tmp_path):
    results = []
    for _ in range(2):
        assert (
            main(
                ["evaluate", str(uninterrupted), "--iw-samples", "2", "--max-test", "100", "--no-baselines", "--quiet"]
            )
            == 0
        )
        result = json.loads((uninterrupted / "eval.json").read_text())
        result.pop("eval_seconds")
        results.append(result)
    assert results[0] == results[1] and results[0]["training_finished"] is True


def test_run_format_is_recorded_and_other_formats_are_refused(uninterrupted, tmp_path, capsys):
    import shutil

    config = json.loads((uninterrupted / "config.json").read_text())
    assert config["format"] == RUN_FORMAT
    newer = tmp_path / "newer"
    shutil.copytree(uninterrupted, newer)
    (newer / "config.json").write_text(json.dumps(config | {"format": RUN_FORMAT + 1}))
    assert main(["evaluate", str(newer), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"run format {RUN_FORMAT + 1} is newer" in err and f"format {RUN_FORMAT}" in err
    older = tmp_path / "older"
    shutil.copytree(uninterrupted, older)
    counts = [m | {"likelihood": "poisson"} if i == 0 else m for i, m in enumerate(config["modalities"])]
    (older / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k != "format"} | {"modalities": counts})
    )
    assert main(["evaluate", str(older), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run format 1" in err and "log(1 + x)" in err and "retrain" in err
    # format 2 differs only for categorical modalities: other runs of it still load, those are refused
    two = tmp_path / "two"
    shutil.copytree(uninterrupted, two)
    (two / "config.json").write_text(json.dumps(config | {"format": 2}))
    assert (
        main(
            [
                "evaluate",
                str(two),
                "--iw-samples",
                "2",
                "--max-test",
                "20",
                "--no-coherence",
                "--no-baselines",
                "--quiet",
            ]
        )
        == 0
    )
    categorical = [
        m | {"likelihood": "categorical", "shape": [2]} if i == 0 else m for i, m in enumerate(config["modalities"])
    ]
    (two / "config.json").write_text(json.dumps(config | {"format": 2, "modalities": categorical}))
    capsys.readouterr()
    assert main(["evaluate", str(two), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run format 2" in err and "embedding encoder" in err and "retrain" in err


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"the old checkpoint")

    def fails_half_way(tmp: Path) -> None:
        tmp.write_bytes(b"half of a new")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fails_half_way)
    assert path.read_bytes() == b"the old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]
    atomic_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new" and (os.stat(path).st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_two_cpu_processes_with_ddp_match_one_process_with_the_same_batch(uninterrupted, tmp_path):
    """Lightning DDP on two CPU processes (gloo), each taking 25 of the 50 rows of a step, against the one-process
    run: the same test ELBO and log p(x) within 1.5 nats (measured once on this setting: 0.26 and 0.18 nats apart)."""
    run = tmp_path / "ddp"
    done = subprocess.run(
        cli(*TRAIN, "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--out", str(run)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained ") == 1  # one process speaks and writes
    assert progress(run) == {"epochs_done": 3, "epochs": 3, "finished": True, "stopped": None}
    log = (run / "infinimodal.log").read_text()
    assert log.count("epoch 3:") == 1 and json.loads((run / "config.json").read_text())["devices"] == 2
    scores = {}
    for name, directory in (("one", uninterrupted), ("two", run)):
        assert (
            main(
                [
                    "evaluate",
                    str(directory),
                    "--iw-samples",
                    "5",
                    "--max-test",
                    "300",
                    "--no-coherence",
                    "--no-baselines",
                    "--quiet",
                ]
            )
            == 0
        )
        scores[name] = json.loads((directory / "eval.json").read_text())
    for key in ("elbo", "log_likelihood"):
        assert abs(scores["one"][key] - scores["two"][key]) < 1.5, (key, scores["one"][key], scores["two"][key])
