"""Real Hub clients (huggingface_hub, transformers, diffusers, datasets) round-trip through the loopback `FakeHub`.

`tests/conftest.py` points `HF_ENDPOINT` at the fake Hub before any of those libraries is imported; the autouse
`_loopback_only` fixture below fails a test that tries to open a connection anywhere but 127.0.0.1.
"""

import json
import os
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from fake_hub import FakeHub


class RealNetworkAccess(AssertionError):
    """Raised when code under test tries to reach a host other than 127.0.0.1."""


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch, fake_hub):
    """Refuse every connection that is not to the loopback interface, and fail on any 501 (unknown route)."""
    attempts = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None):
            attempts.append(host)
            raise RealNetworkAccess(f"test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            attempts.append(address)
            raise RealNetworkAccess(f"test tried to connect to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    unhandled_before = len(fake_hub.unhandled)
    yield attempts
    assert attempts == [], f"non-loopback network access: {attempts}"
    assert fake_hub.unhandled[unhandled_before:] == [], "the clients called routes FakeHub does not implement"


def _paths(fake_hub, start: int) -> list[str]:
    """'METHOD path' of the requests served since `start` (an index into `fake_hub.requests`)."""
    return [f"{m} {p}" for m, p, _ in fake_hub.requests[start:]]


def test_environment_points_every_client_at_the_fake_hub(fake_hub, _loopback_only):
    import datasets
    import huggingface_hub
    from huggingface_hub import constants

    assert os.environ["HF_ENDPOINT"] == fake_hub.endpoint
    assert constants.ENDPOINT == fake_hub.endpoint
    assert datasets.config.HF_ENDPOINT == fake_hub.endpoint
    assert not constants.is_offline_mode() and not datasets.config.HF_HUB_OFFLINE
    assert constants.HF_HOME == os.environ["HF_HOME"] and "flextok_hf_tests_hf_home_" in constants.HF_HOME
    assert huggingface_hub.whoami()["name"] == "fake-user"
    with pytest.raises(RealNetworkAccess):  # the guard itself works
        socket.create_connection(("huggingface.co", 443), timeout=1)
    assert _loopback_only == ["huggingface.co"]
    _loopback_only.clear()


def test_transformers_push_to_hub_and_from_pretrained(fake_hub):
    from transformers import AutoModel, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = BertModel(config).eval()
    model.push_to_hub("fake-user/tiny-bert")

    files = fake_hub.list_files("fake-user/tiny-bert")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert not any(f.endswith(".bin") for f in files)

    reloaded = AutoModel.from_pretrained("fake-user/tiny-bert").eval()
    assert type(reloaded) is BertModel
    state, state2 = model.state_dict(), reloaded.state_dict()
    assert state.keys() == state2.keys()
    assert all(torch.equal(state[k], state2[k]) for k in state)
    ids = torch.tensor([[1, 5, 7, 2]])
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, reloaded(ids).last_hidden_state)


def test_model_card_with_eval_results_round_trips(fake_hub):
    from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

    result = EvalResult(task_type="image-to-image", dataset_type="mnist", dataset_name="MNIST", dataset_split="test",
                        metric_type="psnr", metric_name="PSNR (k=32)", metric_value=16.6)  # fmt: skip
    data = ModelCardData(license="apache-2.0", library_name="flextok_hf", tags=["image-tokenizer"],
                         model_name="FlexTok tiny", eval_results=[result])  # fmt: skip
    card = ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n# {{ title }}\n", title="Tiny")
    HfApi().create_repo("fake-user/tiny-card")
    card.push_to_hub("fake-user/tiny-card")

    loaded = ModelCard.load("fake-user/tiny-card")
    assert loaded.text.strip() == "# Tiny"
    assert loaded.data.license == "apache-2.0" and loaded.data.tags == ["image-tokenizer"]
    assert loaded.data.model_name == "FlexTok tiny"
    assert loaded.data.eval_results == [result]
    # The server parses the card's front matter too, as the real Hub does for `model_info`.
    info = HfApi().model_info("fake-user/tiny-card")
    assert info.card_data.eval_results == [result] and info.tags == ["image-tokenizer"]


def _tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                         latent_channels=4, norm_num_groups=4, sample_size=32).eval()  # fmt: skip


def test_diffusers_model_and_scheduler_round_trip(fake_hub):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

    vae, scheduler = _tiny_vae(), FlowMatchEulerDiscreteScheduler(shift=3.0)
    vae.push_to_hub("fake-user/tiny-vae")
    scheduler.push_to_hub("fake-user/tiny-scheduler")

    vae2 = AutoencoderKL.from_pretrained("fake-user/tiny-vae").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(vae(x, sample_posterior=False).sample, vae2(x, sample_posterior=False).sample)
    scheduler2 = FlowMatchEulerDiscreteScheduler.from_pretrained("fake-user/tiny-scheduler")
    assert scheduler2.config.shift == 3.0
    scheduler.set_timesteps(4)
    scheduler2.set_timesteps(4)
    assert torch.equal(scheduler.timesteps, scheduler2.timesteps)


def test_pipeline_push_and_snapshot_download_with_subfolders(fake_hub, tmp_path):
    from diffusers import AutoencoderKL, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
    from huggingface_hub import snapshot_download

    class TinyVaePipeline(DiffusionPipeline):
        def __init__(self, vae, scheduler):
            super().__init__()
            self.register_modules(vae=vae, scheduler=scheduler)

    pipe = TinyVaePipeline(vae=_tiny_vae(), scheduler=FlowMatchEulerDiscreteScheduler())
    pipe.save_pretrained(tmp_path / "local")
    pipe.push_to_hub("fake-user/tiny-pipeline")

    start = len(fake_hub.requests)
    only_vae = snapshot_download("fake-user/tiny-pipeline", allow_patterns=["vae/*"])
    assert sorted(os.listdir(only_vae)) == ["vae"]
    assert any("/tree/" in p and "recursive=true" in p for p in _paths(fake_hub, start))
    folder = snapshot_download("fake-user/tiny-pipeline")
    local = tmp_path / "local"
    for rel in ("model_index.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                "scheduler/scheduler_config.json"):  # fmt: skip
        assert (local / rel).read_bytes() == open(os.path.join(folder, rel), "rb").read(), rel

    vae2 = AutoencoderKL.from_pretrained("fake-user/tiny-pipeline", subfolder="vae")
    assert all(torch.equal(a, b) for a, b in zip(pipe.vae.state_dict().values(), vae2.state_dict().values()))
    pipe2 = TinyVaePipeline.from_pretrained(folder)
    assert isinstance(pipe2.scheduler, FlowMatchEulerDiscreteScheduler)


def test_dataset_with_images_push_to_hub_and_load_dataset(fake_hub):
    from datasets import Dataset, Features, Image, Value, load_dataset
    from huggingface_hub import HfApi
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
    features = Features({"image": Image(), "label": Value("int64")})
    ds = Dataset.from_dict({"image": [PILImage.fromarray(a) for a in arrays], "label": [3, 1, 4, 1, 5]}, features)
    start = len(fake_hub.requests)
    ds.push_to_hub("fake-user/tiny-images")

    # datasets deletes each parquet shard right after `preupload_lfs_files`, so shards must go through LFS.
    assert any(p.endswith(".git/info/lfs/objects/batch") for p in _paths(fake_hub, start))
    tree = {f.path: f for f in HfApi().list_repo_tree("fake-user/tiny-images", repo_type="dataset", recursive=True)}
    assert tree["data/train-00000-of-00001.parquet"].lfs is not None
    assert tree["README.md"].lfs is None

    loaded = load_dataset("fake-user/tiny-images", split="train")
    assert loaded.features == features
    assert loaded["label"][:] == [3, 1, 4, 1, 5]
    assert all(np.array_equal(np.asarray(row["image"]), a) for row, a in zip(loaded, arrays))


def test_missing_file_revision_and_repo_raise_hub_errors(fake_hub):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    HfApi().create_repo("fake-user/errors", exist_ok=True)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("fake-user/errors", "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("fake-user/errors", ".gitattributes", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("fake-user/no-such-repo", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("fake-user/no-such-repo")
    with pytest.raises(RepositoryNotFoundError):  # a model repo is not a dataset repo
        HfApi().dataset_info("fake-user/errors")
    from transformers import AutoModel

    with pytest.raises(OSError, match="not a valid model identifier"):  # transformers wraps RepositoryNotFoundError
        AutoModel.from_pretrained("fake-user/no-such-repo")


def test_space_repo_upload_folder_and_download(fake_hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    (tmp_path / "space").mkdir()
    (tmp_path / "space" / "app.py").write_text("print('hello')\n")
    (tmp_path / "space" / "requirements.txt").write_text("gradio\n")
    api = HfApi()
    url = api.create_repo("fake-user/demo", repo_type="space", space_sdk="gradio")
    assert url.repo_type == "space" and url.repo_id == "fake-user/demo"
    api.upload_folder(folder_path=tmp_path / "space", repo_id="fake-user/demo", repo_type="space")
    info = api.space_info("fake-user/demo")
    assert info.sdk == "gradio"
    assert sorted(s.rfilename for s in info.siblings) == [".gitattributes", "app.py", "requirements.txt"]
    path = hf_hub_download("fake-user/demo", "app.py", repo_type="space")
    assert open(path).read() == "print('hello')\n"


def test_commits_revisions_and_repo_rules(fake_hub):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    api = HfApi()
    api.create_repo("fake-user/history")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("fake-user/history")  # exist_ok=False
    assert err.value.response.status_code == 409
    api.create_repo("fake-user/history", exist_ok=True)

    first = api.upload_file(path_or_fileobj=b"one", path_in_repo="a/x.txt", repo_id="fake-user/history")
    api.upload_file(path_or_fileobj=b"two", path_in_repo="a/x.txt", repo_id="fake-user/history")
    api.delete_file("a/x.txt", repo_id="fake-user/history")
    assert "a/x.txt" not in fake_hub.list_files("fake-user/history")
    assert open(hf_hub_download("fake-user/history", "a/x.txt", revision=first.oid), "rb").read() == b"one"
    titles = [c.title for c in api.list_repo_commits("fake-user/history")]
    assert titles[-1] == "initial commit" and len(titles) == 4

    infos = api.get_paths_info("fake-user/history", ["a", ".gitattributes", "missing"], revision=first.oid)
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFolder", "a"), ("RepoFile", ".gitattributes")]
    [entry] = api.list_repo_tree("fake-user/history", "a", revision=first.oid, expand=True)
    assert entry.path == "a/x.txt" and entry.size == 3 and entry.last_commit.oid == first.oid

    api.create_branch("fake-user/history", branch="dev", revision=first.oid)
    path = hf_hub_download("fake-user/history", "a/x.txt", revision="dev")
    assert open(path, "rb").read() == b"one"

    api.create_repo("fake-user/secret", private=True)
    assert api.model_info("fake-user/secret").private
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("fake-user/secret", token=False)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("someone-else/model")
    assert err.value.response.status_code == 403


def test_unknown_route_answers_501_and_is_recorded(fake_hub):
    url = f"{fake_hub.endpoint}/api/no-such-endpoint"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=10)
    assert err.value.code == 501
    assert "/api/no-such-endpoint" in json.loads(err.value.read())["error"]
    assert fake_hub.unhandled[-1] == ("GET", "/api/no-such-endpoint")
    fake_hub.unhandled.pop()  # expected here; the autouse fixture fails on any other 501


def test_root_directory_keeps_repos_across_restarts(tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    with FakeHub(root=str(tmp_path / "hub")) as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_fake")
        api.create_repo("fake-user/kept", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"kept", path_in_repo="f.txt", repo_id="fake-user/kept", repo_type="dataset")
    with FakeHub(root=str(tmp_path / "hub")) as hub:
        assert hub.read_file("fake-user/kept", "f.txt", repo_type="dataset") == b"kept"
        path = hf_hub_download("fake-user/kept", "f.txt", repo_type="dataset", endpoint=hub.endpoint,
                               cache_dir=tmp_path / "cache")  # fmt: skip
        assert open(path, "rb").read() == b"kept"


def test_serve_arguments_build_a_working_hub(tmp_path):
    from fake_hub import build_parser, hub_from_args

    args = build_parser().parse_args(["--port", "0", "--root", str(tmp_path), "--user", "alice", "--token", "hf_a"])
    with hub_from_args(args) as hub:
        request = urllib.request.Request(f"{hub.endpoint}/api/whoami-v2", headers={"Authorization": "Bearer hf_a"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["name"] == "alice"
    assert (tmp_path / "repos.json").exists() is False and (tmp_path / "blobs").is_dir()
