"""Shared fixtures: the real MNIST beside the project, and small models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from scratch import committed_params  # noqa: F401  (tests import it from here)

# Under pytest-xdist (`-n 2`, the README's test command) every worker gets its share of the cores for
# torch's threads, and so do the stages its DVC runs start (they inherit the variable). torch's default
# is one thread per core in every process, which oversubscribes the cores: `python bench/test_threads.py`
# measures both ways side by side (2.15x on a 2-core Xeon). Set before any test module imports torch.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                     // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# The longest files first. Under `--dist loadfile` pytest-xdist gives each worker the next file of its
# queue whenever it has two tests or fewer left; by default it orders that queue by the number of tests
# per file, so test_pipeline_e2e.py (7 tests, about 13 minutes of one worker) started late and ran alone
# at the end (13 of 28 minutes; pytest --durations, a 2-core AMD EPYC). Here the queue keeps this order:
# worker seconds per file (2026-12-04, same machine, --durations, the DVC benches deselected since):
# pipeline_e2e ~1,650 (its first 20 minutes beside another job), image_datasets_e2e ~550,
# folder_dataset ~350, benches ~140 without the DVC benches, distributed ~120, selective_e2e ~120;
# method_contract ~200 (2026-12-07, its fixture's in-process pipeline); files not listed follow in their order.
# Since the dataset runs moved in process (pipeline_checks.InProcessRun), image_datasets_e2e ~200 and
# folder_dataset ~100 of those (2026-12-07, --durations, same machine).
LONGEST_FIRST = ("test_pipeline_e2e.py", "test_image_datasets_e2e.py", "test_folder_dataset.py",
                 "test_method_contract.py", "test_benches.py",
                 "test_distributed.py", "test_selective_e2e.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the collection's order of files
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def _commit_checks_end_with_their_test():
    """A stage registers checks that run before each of its writes (`masktune.io.files.before_commit`: its
    params unchanged since it started); a test that loads a stage's config in this process must not leave
    them to hold the next test's writes to another test's params file."""
    yield
    from masktune.io import files

    files._COMMIT_CHECKS.clear()


ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("MASKTUNE_MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {MNIST_DIR} (set MASKTUNE_MNIST_DIR)")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from masktune.datasets.mnist_idx import load_mnist

    return load_mnist(mnist_dir)


@pytest.fixture(scope="session", params=["real", "synthetic"])
def digits(request, tmp_path_factory):
    """MNIST's two splits as `load_mnist` returns them: the real files (skipped when absent), and
    always their synthetic twin (fixtures_datasets.make_mnist, the same IDX format), for tests whose
    logic does not depend on which digits they see."""
    from fixtures_datasets import make_mnist

    from masktune.datasets.mnist_idx import load_mnist

    if request.param == "real":
        return request.getfixturevalue("mnist")
    return load_mnist(make_mnist(tmp_path_factory.mktemp("synthetic-mnist"), n_train=20_000, n_test=100))


class RecordingLive:
    """What `fit` needs of a dvclive `Live`: the logged metrics, per step (tests of training runs)."""

    def __init__(self):
        self.metrics, self.step = [], 0

    def log_metric(self, name, value):
        self.metrics.append((self.step, name, value))

    def next_step(self):
        self.step += 1
