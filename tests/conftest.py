"""Shared test setup for flextok_hf.

Hub environment (runs at import time, on purpose)
-------------------------------------------------
`huggingface_hub.constants` reads `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN` and the offline flags once, when it is first
imported, and transformers, diffusers and datasets copy some of those values into their own module globals when *they*
are imported. pytest imports this conftest before it collects (imports) any test module, so setting the variables here
at module level is the one place where they are guaranteed to be in effect before anything imports those libraries.
A fixture would be too late: test modules import transformers at collection time.

What it sets:
- `HF_ENDPOINT` -> `http://127.0.0.1:<free port>`: every Hub call goes to the loopback `FakeHub`, which the
  `fake_hub` fixture starts on that port. Until a test has requested the fixture, Hub calls get "connection
  refused" instead of reaching huggingface.co, so nothing in the suite can touch the real Hub. (Importing
  `flextok_hf` imports transformers, so this file must not import it at module level before the variables are set.)
- `HF_TOKEN=hf_fake`: the token `FakeHub` accepts (user "fake-user").
- `HF_HOME` -> a temporary directory for this test session (download cache, xet cache, stored tokens), so tests
  never read or pollute the user's real cache.
- `HF_HUB_DISABLE_XET=1`: with hf_xet installed, huggingface_hub uploads every LFS file (datasets' parquet shards)
  through Xet storage, which `FakeHub` does not implement; disabled, it uses the Git LFS batch API, which it does.
- `HF_HUB_DISABLE_TELEMETRY=1`, `GRADIO_ANALYTICS_ENABLED=False`: no telemetry calls.
- `HF_UPDATE_DOWNLOAD_COUNTS=0`: datasets' `load_dataset` otherwise sends a HEAD to s3.amazonaws.com (a download
  counter) whatever `HF_ENDPOINT` says.
- `TOKENIZERS_PARALLELISM=false`: silences the fork warning of the tokenizers library.
- The offline flags (`HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE`, `HF_DATASETS_OFFLINE`) are removed: the endpoint is
  loopback, and offline mode would stop the fake-Hub round trips from running at all.
"""

import os
import socket
import sys
import tempfile

import pytest


def _free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAKE_HUB_PORT = _free_port()
FAKE_HUB_ENDPOINT = f"http://127.0.0.1:{FAKE_HUB_PORT}"
FAKE_HUB_TOKEN = "hf_fake"
# Removed with the interpreter at exit (TemporaryDirectory's finalizer).
_HF_HOME = tempfile.TemporaryDirectory(prefix="flextok_hf_tests_hf_home_")

os.environ.update(
    {
        "HF_ENDPOINT": FAKE_HUB_ENDPOINT,
        "HF_TOKEN": FAKE_HUB_TOKEN,
        "HF_HOME": _HF_HOME.name,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
for _flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.pop(_flag, None)

if "huggingface_hub" in sys.modules:  # e.g. a pytest plugin imported it before this file ran
    raise pytest.UsageError(
        "huggingface_hub was imported before tests/conftest.py could set HF_ENDPOINT; the fake Hub would be bypassed."
    )


@pytest.fixture(scope="session")
def fake_hub():
    """A `FakeHub` on `HF_ENDPOINT`, started the first time a test asks for it and stopped at the end of the session.

    Repos live in memory and persist across tests of the session, so give each test its own repo names.
    """
    import datasets.config

    from fake_hub import FakeHub

    # `load_dataset(repo_id)` asks the dataset viewer at "http://datasets-server.<HF_ENDPOINT host>" for exported
    # infos; for 127.0.0.1 that name goes to the system DNS resolver. datasets has no environment switch for it.
    datasets.config.USE_PARQUET_EXPORT = False
    with FakeHub(port=FAKE_HUB_PORT, token=FAKE_HUB_TOKEN, user="fake-user") as hub:
        yield hub


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: tiny models run fastest on one thread, and far faster than on two when
    the cores are busy."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
