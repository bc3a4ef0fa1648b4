"""Run directories are data, never code: planted checkpoints cannot execute, malformed files give one line."""

import json
import shutil

import pytest
import torch

from infinimodal import MultimodalVAE, api
from infinimodal.cli import main
from infinimodal.errors import InfinimodalError

TINY = [
    "--data",
    "synthetic:n=400,features=5",
    "--epochs",
    "1",
    "--hidden",
    "16",
    "--batch-size",
    "50",
    "--truncation",
    "4",
    "--latent-dim",
    "3",
    "--quiet",
]


class _Planted:
    """Unpickling this object creates `target`: what an attacker's checkpoint would do with os.system."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def copy_run(run, tmp_path):
    target = tmp_path / "shared_run"
    shutil.copytree(run, target)
    return target


def one_line_error(capsys, code):
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


COMMANDS = [
    lambda d, tmp: ["evaluate", str(d), "--iw-samples", "2", "--quiet"],
    lambda d, tmp: ["sample", str(d), "--n", "2", "--out", str(tmp / "s.npz")],
    lambda d, tmp: ["report", str(d), "--quiet"],
    lambda d, tmp: ["embed", str(d), "--data", "synthetic:n=400,features=5", "--out", str(tmp / "z.npy")],
]


@pytest.mark.parametrize("command", COMMANDS, ids=["evaluate", "sample", "report", "embed"])
def test_a_planted_checkpoint_never_runs(run, tmp_path, capsys, command):
    shared = copy_run(run, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": _Planted(marker)}, shared / "model.ckpt")
    # the plant is live: an unrestricted unpickler runs it (this is what the old loader did)
    torch.load(shared / "model.ckpt", weights_only=False)
    assert marker.exists()
    marker.unlink()

    err = one_line_error(capsys, main(command(shared, tmp_path)))
    assert not marker.exists()
    assert "refused to load" in err and "model.ckpt" in err


def test_load_refuses_a_planted_checkpoint_in_python(run, tmp_path):
    shared = copy_run(run, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "extra": _Planted(marker)}, shared / "model.ckpt")
    with pytest.raises(InfinimodalError, match="refused to load"):
        MultimodalVAE.load(shared)
    assert not marker.exists()


def test_compare_refuses_a_planted_checkpoint(run, tmp_path, capsys):
    shared = copy_run(run, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": _Planted(marker)}, shared / "model.ckpt")
    err = one_line_error(capsys, main(["compare", str(run), str(shared), "--out", str(tmp_path / "c.html"), "--quiet"]))
    assert not marker.exists() and "refused to load" in err


def test_a_genuine_checkpoint_still_loads_with_its_weights(run):
    vae = MultimodalVAE.load(run)
    saved = torch.load(run / "model.ckpt", weights_only=True)["state_dict"]
    for key, value in vae.module.state_dict().items():
        assert torch.equal(value, saved[f"model.{key}"])


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garbage(path):
    path.write_bytes(b"\x00\x01 this is not a checkpoint" * 10)


def _wrong_shapes(path):
    state = torch.load(path, weights_only=True)
    state["state_dict"] = {k: torch.zeros(3, 3) for k in state["state_dict"]}
    torch.save(state, path)


def _no_state_dict(path):
    torch.save({"weights": [1, 2, 3]}, path)


def _a_list(path):
    torch.save([torch.zeros(2)], path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_truncate, "not a readable checkpoint"),
        (_garbage, "not a readable checkpoint"),
        (_wrong_shapes, "do not fit"),
        (_no_state_dict, "no 'state_dict'"),
        (_a_list, "no 'state_dict'"),
    ],
)
def test_a_damaged_checkpoint_gives_one_line(run, tmp_path, capsys, damage, message):
    shared = copy_run(run, tmp_path)
    damage(shared / "model.ckpt")
    err = one_line_error(capsys, main(["evaluate", str(shared), "--iw-samples", "2", "--quiet"]))
    assert message in err and "model.ckpt" in err


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"modalities": 3}', "'modalities' must be a list"),
        ('{"modalities": [{"name": "x0"}]}', "modality entry is malformed"),
        ("REPLACE latent_dim=abc", "config.json"),
        ("REPLACE latent=nonsense", "unknown latent"),
        ("REPLACE epochs=zero", "config.json"),
    ],
)
def test_a_damaged_config_gives_one_line(run, tmp_path, capsys, text, message):
    shared = copy_run(run, tmp_path)
    if text.startswith("REPLACE"):
        key, value = text.split()[1].split("=")
        record = json.loads((shared / "config.json").read_text())
        record[key] = value
        text = json.dumps(record)
    (shared / "config.json").write_text(text)
    err = one_line_error(capsys, main(["evaluate", str(shared), "--iw-samples", "2", "--quiet"]))
    assert message in err and "config.json" in err
    with pytest.raises(InfinimodalError):
        api.load(shared)


def test_a_run_on_a_data_file_works_from_any_directory_and_notices_a_changed_file(tmp_path, monkeypatch, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    study = tmp_path / "study"
    study.mkdir()
    np.savez(study / "cohort.npz", a=rng.normal(size=(200, 4)), b=rng.normal(size=(200, 3)))
    monkeypatch.chdir(study)  # trained with the path as a user types it, relative to where they are
    assert (
        main(
            [
                "train",
                "--data",
                "cohort.npz",
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--latent-dim",
                "3",
                "--quiet",
                "--out",
                "run",
            ]
        )
        == 0
    )
    record = json.loads((study / "run" / "config.json").read_text())
    assert (
        record["data"] == "cohort.npz"
        and record["data_file"] == str((study / "cohort.npz").resolve())
        and len(record["data_sha256"]) == 64
    )
    monkeypatch.chdir(tmp_path)  # used from elsewhere: the recorded absolute path
    assert main(["evaluate", "study/run", "--iw-samples", "2", "--no-coherence", "--no-baselines", "--quiet"]) == 0
    np.savez(tmp_path / "subjects.npz", a=rng.normal(size=(3, 4)), b=rng.normal(size=(3, 3)))
    assert main(["score", "study/run", "--data", "subjects.npz", "--samples", "2", "--out", "scores.csv"]) == 0
    capsys.readouterr()
    np.savez(
        study / "cohort.npz", a=rng.normal(size=(200, 4)), b=rng.normal(size=(200, 3))
    )  # the same name, other rows
    assert main(["score", "study/run", "--data", "subjects.npz", "--samples", "2", "--out", "scores.csv"]) == 2
    assert "is not the file study/run was trained on (its SHA-256 differs" in capsys.readouterr().err
    (study / "cohort.npz").unlink()
    assert main(["score", "study/run", "--data", "subjects.npz", "--samples", "2", "--out", "scores.csv"]) == 2
    err = capsys.readouterr().err
    assert "cohort.npz, which is missing" in err and "score: its validation rows, the reference population" in err
