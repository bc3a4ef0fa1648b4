import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests read the shared MNIST copy when present (CI sets INFINIMODAL_DATA to it too).
if "INFINIMODAL_DATA" not in os.environ and (SHARED_DATA / "mnist").is_dir():
    os.environ["INFINIMODAL_DATA"] = str(SHARED_DATA)
# Nothing in the tests may reach for the network.
os.environ.setdefault("INFINIMODAL_OFFLINE", "1")
# Built data sets and cached classifiers go to a fresh folder: tests neither read nor fill the user's cache.
os.environ["INFINIMODAL_CACHE"] = tempfile.mkdtemp(prefix="infinimodal-test-cache-")
atexit.register(shutil.rmtree, os.environ["INFINIMODAL_CACHE"], True)

# One thread per pytest-xdist worker (`make test` runs two on two cores), two when the tests run in one process; the
# processes a test starts (DDP ranks, a training killed and resumed, the console script) inherit one thread under xdist.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


@pytest.fixture
def mnist_dir() -> Path:
    path = Path(os.environ["INFINIMODAL_DATA"]) / "mnist"
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        raise RuntimeError(f"the tests need MNIST at {path}; set INFINIMODAL_DATA to the folder that holds mnist/")
    return path
