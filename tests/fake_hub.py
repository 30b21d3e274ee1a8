"""A small Hub-compatible HTTP server on 127.0.0.1 for offline tests of publishing.

`FakeHub` implements the part of the Hugging Face Hub API that `huggingface_hub` 2.4, transformers, diffusers and
datasets use to create repos, commit files and download them again. Point the clients at it with
`HF_ENDPOINT=<FakeHub.endpoint>` *before* importing `huggingface_hub` (the endpoint is read at import time).

Uploads: `preupload` answers `uploadMode: "regular"`, so file contents arrive base64-encoded inside the NDJSON commit,
except for paths matching `lfs_patterns` (by default `*.parquet`), which go through the Git LFS batch API with the
"basic" transfer (one `PUT` per object). datasets needs that: it deletes each parquet shard right after
`preupload_lfs_files`, so the shard cannot be inlined into the commit later. Clients must use the LFS path rather than
Xet for those files: set `HF_HUB_DISABLE_XET=1` (hf_xet, when installed, is otherwise always used for LFS uploads).

Routes the server does not know answer `501` with the path in the body and are recorded in `FakeHub.unhandled`, so a
missing endpoint fails loudly instead of hanging. The module uses only the standard library (plus PyYAML, a
huggingface_hub dependency, to read README front matter). It is test-only code and not part of the installed package:
`tests/conftest.py` starts it for the `fake_hub` fixture, and `python tests/fake_hub.py --port N` serves it by hand.
"""

import argparse
import base64
import fnmatch
import hashlib
import json
import logging
import os
import re
import signal
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)

__all__ = ["FakeHub", "HubError", "HubStore", "git_blob_oid"]

REPO_TYPES = ("model", "dataset", "space")
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_JSON = {"Content-Type": "application/json"}


class HubError(Exception):
    """An HTTP error answered to the client, with the Hub's `X-Error-Code` header when it has one."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.headers = status, message, error_code, headers or {}


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file, which the Hub reports as `oid` / `ETag` for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _flag(query: dict, name: str) -> bool:
    return query.get(name, [""])[0].lower() in ("1", "true")


@dataclass
class Commit:
    """One commit: id, parent, message and the whole tree, `path -> {"oid", "sha256", "size", "lfs"}`.

    `sha256` keys the content in the blob store; `oid` is the git id (of the content, or of the LFS pointer).
    """

    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, dict]


@dataclass
class Repo:
    """A repo: branches and tags point at commits; commits hold whole trees, so every revision stays readable."""

    repo_type: str
    repo_id: str
    private: bool = False
    sdk: str | None = None
    created_at: str = field(default_factory=_now)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


class HubStore:
    """Repos and content-addressed blobs (by sha256), in memory or under `root` so they survive restarts."""

    def __init__(self, root: str | None = None):
        self.root = root
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._counter = 0
        if root is not None:
            os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
            if os.path.exists(state := os.path.join(root, "repos.json")):
                with open(state, encoding="utf-8") as f:
                    for raw in json.load(f):
                        commits = {oid: Commit(**c) for oid, c in raw.pop("commits").items()}
                        self.repos[(raw["repo_type"], raw["repo_id"])] = Repo(**raw, commits=commits)

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if self.root is None:
            self._blobs[sha] = data
        elif not os.path.exists(path := os.path.join(self.root, "blobs", sha)):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        return sha

    def has_blob(self, sha: str) -> bool:
        return sha in self._blobs if self.root is None else os.path.exists(os.path.join(self.root, "blobs", sha))

    def get_blob(self, sha: str) -> bytes:
        if self.root is None:
            return self._blobs[sha]
        with open(os.path.join(self.root, "blobs", sha), "rb") as f:
            return f.read()

    def file_entry(self, data: bytes | None, lfs_sha256: str | None = None) -> dict:
        """Store a regular file (`data`) or reference an uploaded LFS object (`lfs_sha256`): a `Commit.files` value."""
        if lfs_sha256 is None:
            return {"oid": git_blob_oid(data), "sha256": self.put_blob(data), "size": len(data), "lfs": False}
        size = len(self.get_blob(lfs_sha256))
        return {"oid": git_blob_oid(_lfs_pointer(lfs_sha256, size)), "sha256": lfs_sha256, "size": size, "lfs": True}

    def save(self) -> None:
        """Write the repo index to `root/repos.json` (no-op in memory)."""
        if self.root is not None:
            state = os.path.join(self.root, "repos.json")
            with open(state + ".tmp", "w", encoding="utf-8") as f:
                json.dump([asdict(r) for r in self.repos.values()], f)
            os.replace(state + ".tmp", state)

    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        if (repo := self.repos.get((repo_type, repo_id))) is None:
            raise HubError(404, f"Repository Not Found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def create_repo(
        self, repo_type: str, repo_id: str, private: bool, sdk: str | None, gitattributes: bytes = b""
    ) -> tuple[Repo, bool]:
        """Return `(repo, created)`; an existing repo is returned unchanged. New repos hold a `.gitattributes`."""
        if (repo_type, repo_id) in self.repos:
            return self.repos[(repo_type, repo_id)], False
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_type=repo_type, repo_id=repo_id, private=private, sdk=sdk)
        files = {".gitattributes": self.file_entry(gitattributes)}
        repo.branches["main"] = self.new_commit(repo, None, "initial commit", "", files).oid
        self.save()
        return repo, True

    def new_commit(self, repo: Repo, parent: str | None, title: str, message: str, files: dict) -> Commit:
        self._counter += 1
        seed = json.dumps([repo.repo_id, parent, title, message, sorted(files), self._counter, time.time()])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, message, _now(), dict(files))
        repo.commits[commit.oid] = commit
        return commit

    def resolve(self, repo: Repo, revision: str) -> Commit:
        """A branch, tag, `refs/heads/<b>`, `refs/tags/<t>` or (7+ character prefix of a) commit id -> `Commit`."""
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        oid = repo.branches.get(name) or repo.tags.get(name)
        if oid is None and len(revision) >= 7 and re.fullmatch(r"[0-9a-f]+", revision):
            matches = [c for c in repo.commits if c.startswith(revision)]
            oid = matches[0] if len(matches) == 1 else None
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def last_commit_of(self, repo: Repo, head: Commit, path: str) -> Commit:
        """The most recent commit reachable from `head` that changed `path` (a file or a folder)."""

        def view(c: Commit) -> dict:
            return {p: e["oid"] for p, e in c.files.items() if p == path or p.startswith(path + "/")}

        commit = head
        while commit.parent is not None and view(repo.commits[commit.parent]) == view(commit):
            commit = repo.commits[commit.parent]
        return commit


def _path_info(store: HubStore, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
    """One `/tree` or `/paths-info` item: `{"type", "path", "oid", "size"[, "lfs"][, "lastCommit"]}`."""
    if (entry := commit.files.get(path)) is not None:
        info = {"type": "file", "path": path, "oid": entry["oid"], "size": entry["size"]}
        if entry["lfs"]:
            pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
            info["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
    else:
        listing = sorted((p, e["oid"]) for p, e in commit.files.items() if p.startswith(path + "/"))
        info = {"type": "directory", "path": path, "oid": hashlib.sha1(json.dumps(listing).encode()).hexdigest()}
        info["size"] = 0
    if expand:
        last = store.last_commit_of(repo, commit, path)
        info["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
    return info


def _tree(store: HubStore, repo: Repo, commit: Commit, prefix: str, recursive: bool, expand: bool) -> list:
    """The `/tree` listing under `prefix`: directories first, then files, each sorted by path."""
    base = prefix.strip("/")
    files = [p for p in commit.files if not base or p.startswith(base + "/")]
    if base and not files:
        raise HubError(404, f"{base} is not a folder of {commit.oid}", "EntryNotFound")
    start, dirs, listed = len(base) + 1 if base else 0, set(), []
    for path in files:
        parts = path[start:].split("/")
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            dirs.add(path[:start] + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            listed.append(path)
    return [_path_info(store, repo, commit, p, expand) for p in sorted(dirs) + sorted(listed)]


def _front_matter(text: str):
    """Parse the YAML block between the leading `---` lines of a README; `{}` when there is none."""
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n?---\s*(\n|$)", text, re.DOTALL)
    return yaml.safe_load(match.group(1)) if match else {}


class _Handler(BaseHTTPRequestHandler):
    """Passes one request to `FakeHub.handle`; every answer carries a Content-Length (keep-alive safe)."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 60  # idle keep-alive connections are closed after this many seconds

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self, method: str) -> None:
        hub: FakeHub = self.server.hub
        url = urlsplit(self.path)
        try:
            status, headers, payload = hub.handle(
                method, url.path, parse_qs(url.query), self.headers, self._read_body()
            )
        except HubError as err:
            status, headers, payload = (
                err.status,
                {**_JSON, **err.headers},
                json.dumps({"error": err.message}).encode(),
            )
            # Header values must be latin-1: replace anything else rather than fail mid-response.
            headers["X-Error-Message"] = err.message.splitlines()[0].encode("latin-1", "replace").decode("latin-1")
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
        except (json.JSONDecodeError, KeyError, TypeError) as err:  # a malformed request body
            status, headers, payload = 400, dict(_JSON), json.dumps({"error": f"Malformed request: {err!r}"}).encode()
        except Exception as err:  # a bug in the fake must answer, never hang the client
            logger.exception("FakeHub crashed on %s %s", method, self.path)
            status, headers, payload = 500, dict(_JSON), json.dumps({"error": f"FakeHub error: {err!r}"}).encode()
        hub.requests.append((method, self.path, status))
        if status == 501:
            hub.unhandled.append((method, self.path))
            logger.warning("FakeHub: no route for %s %s", method, self.path)
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format, *args):
        logger.debug("FakeHub %s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """`ThreadingHTTPServer` that remembers open connections, so `stop()` can also end keep-alive connections."""

    daemon_threads = True

    def __init__(self, port: int, hub: "FakeHub"):
        super().__init__(("127.0.0.1", port), _Handler)
        self.hub, self.connections = hub, set()

    def process_request(self, request, client_address):
        self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        for conn in list(self.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeHub:
    """A Hub-compatible server on `127.0.0.1`, run in a daemon thread.

    Args:
        port: TCP port; 0 picks a free one (read it back from `.port` / `.endpoint`).
        root: directory for blobs and the repo index; `None` keeps everything in memory.
        token: the only accepted access token (`Authorization: Bearer <token>`); writes need it.
        user: the user that `token` belongs to (`/api/whoami-v2`), and the default namespace.
        orgs: extra namespaces the user may create repos in.
        lfs_patterns: `fnmatch` patterns of paths uploaded through Git LFS; every other file is "regular".

    Example:
        >>> with FakeHub() as hub:  # clients need HF_ENDPOINT=hub.endpoint, set before they are imported
        ...     hub.endpoint
        'http://127.0.0.1:...'
    """

    def __init__(self, port: int = 0, root: str | None = None, token: str = "hf_fake", user: str = "fake-user",
                 orgs: tuple[str, ...] = (), lfs_patterns: tuple[str, ...] = ("*.parquet",)):  # fmt: skip
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"`port` must be an int in [0, 65535], got {port!r}")
        self.port, self.token, self.user, self.orgs = port, token, user, tuple(orgs)
        self.lfs_patterns = tuple(lfs_patterns)
        self.store = HubStore(root)
        self.requests: list[tuple[str, str, int]] = []  # (method, raw path, status) of every request served
        self.unhandled: list[tuple[str, str]] = []  # requests answered with 501 (no such route here)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeHub":
        if self._server is None:
            self._server = _Server(self.port, self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, name="FakeHub", daemon=True)
            self._thread.start()
            logger.info("FakeHub serving on %s", self.endpoint)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def list_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[str]:
        """Paths of all files of a repo at `revision`, sorted."""
        with self.store.lock:
            return sorted(self.store.resolve(self.store.get_repo(repo_type, repo_id), revision).files)

    def read_file(self, repo_id: str, path: str, repo_type: str = "model", revision: str = "main") -> bytes:
        """The bytes of one file at `revision`."""
        with self.store.lock:
            commit = self.store.resolve(self.store.get_repo(repo_type, repo_id), revision)
            return self.store.get_blob(commit.files[path]["sha256"])

    # -- routing ----------------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, bytes]:
        """Answer one request: returns `(status, headers, body)` or raises `HubError`."""
        segs = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        authorized = headers.get("Authorization", "") == f"Bearer {self.token}"
        with self.store.lock:
            if segs[:1] == ["api"]:
                result = self._api(method, segs[1:], query, headers, body, authorized)
            elif segs[:2] == ["__lfs__", "upload"] and len(segs) == 3 and method == "PUT":
                result = self._lfs_put(segs[2], body)
            elif segs == ["__lfs__", "verify"] and method == "POST":
                data = json.loads(body or b"{}")
                result = {} if self.store.has_blob(data.get("oid", "")) else None
            elif segs[-4:] == ["info", "lfs", "objects", "batch"]:
                result = self._lfs_batch(segs, body, authorized) if method == "POST" else None
            else:
                result = self._resolve(method, segs, headers, authorized)
        if result is None:
            raise HubError(501, f"FakeHub does not implement {method} {path}")
        return result if isinstance(result, tuple) else (200, dict(_JSON), json.dumps(result).encode())

    def _api(self, method, segs, query, headers, body, authorized):
        if segs == ["whoami-v2"] and method == "GET":
            self._require_auth(authorized)
            token = {"displayName": "fake", "role": "write", "fineGrained": None}
            return {"type": "user", "id": "0" * 24, "name": self.user, "fullname": "Fake User", "isPro": False,
                    "orgs": [{"type": "org", "name": o, "roleInOrg": "admin"} for o in self.orgs],
                    "auth": {"type": "access_token", "accessToken": token}}  # fmt: skip
        if segs == ["validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if segs[:1] == ["repos"]:
            return self._repos(method, segs[1:], json.loads(body or b"{}"), authorized)
        if len(segs) < 3 or segs[0] not in ("models", "datasets", "spaces"):
            return None
        repo = self._readable_repo(segs[0][:-1], f"{segs[1]}/{segs[2]}", authorized)
        rest = segs[3:]
        if rest[:1] in (["xet-write-token"], ["xet-read-token"]):
            raise HubError(
                501, "FakeHub has no Xet storage: set HF_HUB_DISABLE_XET=1 before importing huggingface_hub"
            )
        if method == "GET" and (rest == [] or (len(rest) == 2 and rest[0] == "revision")):
            return self._repo_info(repo, self.store.resolve(repo, rest[1] if rest else "main"), _flag(query, "blobs"))
        if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
            commit, prefix = self.store.resolve(repo, rest[1]), "/".join(rest[2:])
            return _tree(self.store, repo, commit, prefix, _flag(query, "recursive"), _flag(query, "expand"))
        if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            return self._paths_info(repo, self.store.resolve(repo, rest[1]), headers, body)
        if method == "GET" and rest == ["refs"]:
            ref = lambda kind, name, oid: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}  # noqa: E731
            return {"branches": [ref("heads", b, o) for b, o in repo.branches.items()], "converts": [],
                    "tags": [ref("tags", t, o) for t, o in repo.tags.items()], "pullRequests": []}  # fmt: skip
        if method == "GET" and len(rest) == 2 and rest[0] == "commits":
            commit, history = self.store.resolve(repo, rest[1]), []
            while commit is not None:
                history.append({"id": commit.oid, "title": commit.title, "message": commit.message,
                                "date": commit.date, "authors": [{"user": self.user}]})  # fmt: skip
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return history
        if method in ("POST", "DELETE") and len(rest) == 2 and rest[0] in ("branch", "tag", "preupload", "commit"):
            self._require_auth(authorized)
            if rest[0] in ("preupload", "commit") and method == "POST":
                branch = self._branch(repo, rest[1], query)
                handler = self._preupload if rest[0] == "preupload" else self._commit
                return handler(repo, branch, body)
            return self._ref(repo, method, rest[0], rest[1], json.loads(body or b"{}"))
        return None

    def _require_auth(self, authorized: bool) -> None:
        if not authorized:
            raise HubError(401, "Invalid credentials in Authorization header")

    def _readable_repo(self, repo_type: str, repo_id: str, authorized: bool) -> Repo:
        repo = self.store.get_repo(repo_type, repo_id)
        if repo.private and not authorized:
            raise HubError(404, f"Repository Not Found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    # -- repos, cards and info --------------------------------------------------------------------------------
    def _repos(self, method: str, action: list, data: dict, authorized: bool):
        self._require_auth(authorized)
        repo_type = data.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"repo `type` must be one of {REPO_TYPES}, got {repo_type!r}")
        namespace = data.get("organization") or self.user
        repo_id = f"{namespace}/{data.get('name')}"
        if action == ["delete"] and method == "DELETE":
            self.store.get_repo(repo_type, repo_id)
            del self.store.repos[(repo_type, repo_id)]
            self.store.save()
            return {}
        if action != ["create"] or method != "POST":
            return None
        if namespace not in (self.user, *self.orgs):
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace {namespace!r}")
        if repo_type == "space" and not data.get("sdk"):
            raise HubError(400, "A Space needs an `sdk` (gradio, docker or static)")
        private = data.get("visibility", "public") != "public" or bool(data.get("private"))
        attributes = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in self.lfs_patterns).encode()
        repo, created = self.store.create_repo(repo_type, repo_id, private, data.get("sdk"), attributes)
        answer = {"url": f"{self.endpoint}/{_URL_PREFIX[repo_type]}{repo_id}", "name": repo_id, "id": repo_id}
        if not created:  # huggingface_hub reads `url` from the 409 body when exist_ok=True
            return (
                409,
                dict(_JSON),
                json.dumps({**answer, "error": f"You already created this {repo_type} repo"}).encode(),
            )
        return answer

    def _validate_yaml(self, data: dict) -> tuple:
        import yaml

        errors = []
        try:
            meta = _front_matter(data.get("content") or "")
            if meta is not None and not isinstance(meta, dict):
                errors.append({"message": f"YAML metadata must be a mapping, got {type(meta).__name__}"})
        except yaml.YAMLError as err:
            errors.append({"message": f"Invalid YAML in README front matter: {err}"})
        return 400 if errors else 200, dict(_JSON), json.dumps({"errors": errors, "warnings": []}).encode()

    def _repo_info(self, repo: Repo, commit: Commit, blobs: bool) -> dict:
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
                    sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": pointer_size}
            siblings.append(sibling)
        card = None
        if (readme := commit.files.get("README.md")) is not None:
            try:
                card = _front_matter(self.store.get_blob(readme["sha256"]).decode("utf-8", "replace"))
            except Exception:  # the real Hub also serves repos whose card does not parse
                card = None
        card = json.loads(json.dumps(card, default=str)) if isinstance(card, dict) else None
        info = {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": commit.oid, "private": repo.private, "gated": False,
                "disabled": False, "likes": 0, "downloads": 0, "tags": list((card or {}).get("tags") or []),
                "createdAt": repo.created_at, "lastModified": commit.date, "siblings": siblings, "cardData": card,
                "usedStorage": sum(e["size"] for e in commit.files.values())}  # fmt: skip
        if repo.repo_type == "model":
            info.update(modelId=repo.repo_id, library_name=(card or {}).get("library_name"))
            info["pipeline_tag"] = (card or {}).get("pipeline_tag")
        elif repo.repo_type == "space":
            info.update(sdk=repo.sdk, runtime={"stage": "NO_APP_FILE", "hardware": {"current": None}})
        return info

    def _paths_info(self, repo: Repo, commit: Commit, headers, body: bytes) -> list:
        if headers.get("Content-Type", "").startswith("application/json"):
            data = json.loads(body or b"{}")
            paths, expand = data.get("paths") or [], bool(data.get("expand"))
        else:  # huggingface_hub sends a form: paths=a&paths=b&expand=False
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), _flag(form, "expand")
        exists = lambda p: p in commit.files or any(f.startswith(p + "/") for f in commit.files)  # noqa: E731
        paths = [p.strip("/") for p in paths]
        return [_path_info(self.store, repo, commit, p, expand) for p in paths if p and exists(p)]

    # -- uploads and commits ----------------------------------------------------------------------------------
    def _branch(self, repo: Repo, revision: str, query: dict) -> str:
        if _flag(query, "create_pr"):
            raise HubError(501, "FakeHub does not implement pull requests (create_pr=True)")
        if (branch := revision.removeprefix("refs/heads/")) not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision} (commits go to an existing branch)", "RevisionNotFound")
        return branch

    def _is_lfs(self, path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern) for pattern in self.lfs_patterns)

    def _preupload(self, repo: Repo, branch: str, body: bytes) -> dict:
        head, files = repo.commits[repo.branches[branch]], []
        for item in json.loads(body or b"{}").get("files", []):
            lfs, entry = self._is_lfs(item["path"]), head.files.get(item["path"])
            # The remote oid lets the client skip unchanged files: sha256 for LFS, git blob id for regular files.
            oid = None if entry is None or entry["lfs"] != lfs else entry["sha256" if lfs else "oid"]
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})  # fmt: skip
        return {"files": files, "commitOid": head.oid}

    def _lfs_batch(self, segs: list, body: bytes, authorized: bool) -> dict:
        """`POST /[datasets/|spaces/]{ns}/{name}.git/info/lfs/objects/batch` (Git LFS batch API, basic transfer)."""
        self._require_auth(authorized)
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(segs[0], "model")
        ns_name = segs[1:3] if repo_type != "model" else segs[0:2]
        if len(ns_name) != 2 or not ns_name[1].endswith(".git"):
            return None
        self.store.get_repo(repo_type, f"{ns_name[0]}/{ns_name[1].removesuffix('.git')}")
        data, objects = json.loads(body or b"{}"), []
        if data.get("operation") != "upload":
            raise HubError(501, f"FakeHub only implements LFS uploads, not {data.get('operation')!r}")
        for obj in data.get("objects", []):
            answer = {"oid": obj["oid"], "size": obj["size"]}
            if not self.store.has_blob(obj["oid"]):  # no `actions` = already uploaded
                answer["authenticated"] = True
                answer["actions"] = {"upload": {"href": f"{self.endpoint}/__lfs__/upload/{obj['oid']}"},
                                     "verify": {"href": f"{self.endpoint}/__lfs__/verify"}}  # fmt: skip
            objects.append(answer)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_put(self, sha256: str, body: bytes) -> dict:
        if hashlib.sha256(body).hexdigest() != sha256:
            raise HubError(400, f"LFS upload for {sha256} has a different sha256")
        self.store.put_blob(body)
        return {}

    def _commit(self, repo: Repo, branch: str, body: bytes) -> dict:
        head = repo.commits[repo.branches[branch]]
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a `header` line")
        header, files = lines[0]["value"], dict(head.files)
        if header.get("parentCommit") and header["parentCommit"] != head.oid:
            raise HubError(412, f"parentCommit {header['parentCommit']} is not the head of {branch} ({head.oid})")
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "").strip("/")
            if key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                files[path] = self.store.file_entry(data)
            elif key == "lfsFile":
                if not self.store.has_blob(value.get("oid", "")):
                    raise HubError(400, f"LFS object {value.get('oid')} for {path} was never uploaded")
                files[path] = self.store.file_entry(None, lfs_sha256=value["oid"])
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"Cannot delete {path}: no such file on {branch}", "EntryNotFound")
            elif key == "deletedFolder":
                if not (inside := [p for p in files if p.startswith(path + "/")]):
                    raise HubError(404, f"Cannot delete folder {path}: not found on {branch}", "EntryNotFound")
                for p in inside:
                    del files[p]
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}")
        commit = self.store.new_commit(repo, head.oid, header.get("summary", ""), header.get("description", ""), files)
        repo.branches[branch] = commit.oid
        self.store.save()
        url = f"{self.endpoint}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{commit.oid}"
        return {"commitUrl": url, "commitOid": commit.oid, "success": True, "pullRequestUrl": None}

    def _ref(self, repo: Repo, method: str, kind: str, name: str, data: dict):
        """Create/delete a branch (`/branch/{name}`, `startingPoint`) or a tag (`/tag/{revision}`, `{"tag": name}`)."""
        refs = repo.branches if kind == "branch" else repo.tags
        if method == "DELETE":
            if refs.pop(name, None) is None:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
        else:
            new_name, target = (name, data.get("startingPoint") or "main") if kind == "branch" else (data["tag"], name)
            if new_name in refs:
                return 409, dict(_JSON), json.dumps({"error": f"{kind} {new_name!r} already exists"}).encode()
            refs[new_name] = self.store.resolve(repo, target).oid
        self.store.save()
        return {}

    # -- downloads --------------------------------------------------------------------------------------------
    def _resolve(self, method, segs, headers, authorized):
        """`GET`/`HEAD /[datasets/|spaces/]{ns}/{name}/resolve/{revision}/{path}`, with single-range support."""
        if method not in ("GET", "HEAD"):
            return None
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(segs[0] if segs else "", "model")
        segs = segs[1:] if repo_type != "model" else segs
        if len(segs) < 5 or segs[2] != "resolve":
            return None
        repo = self._readable_repo(repo_type, f"{segs[0]}/{segs[1]}", authorized)
        commit, path = self.store.resolve(repo, segs[3]), "/".join(segs[4:])
        base = {"X-Repo-Commit": commit.oid}
        if (entry := commit.files.get(path)) is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers=base)
        data = self.store.get_blob(entry["sha256"])
        etag = f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
        out = {**base, "ETag": etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if entry["lfs"]:  # the real Hub redirects LFS files to a CDN and names their sha256 in X-Linked-Etag
            out.update({"X-Linked-Etag": etag, "X-Linked-Size": str(entry["size"])})
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            start, end = (int(first), int(last or len(data) - 1)) if first else (len(data) - int(last), len(data) - 1)
            if start >= len(data) or start > end:
                raise HubError(
                    416, f"Range {headers.get('Range')} not satisfiable for {len(data)} bytes", headers=base
                )
            end = min(end, len(data) - 1)
            out["Content-Range"] = f"bytes {max(start, 0)}-{end}/{len(data)}"
            return 206, out, data[max(start, 0) : end + 1]
        return 200, out, data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve a fake Hugging Face Hub on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (0 = any free port)")
    parser.add_argument("--root", default=None, help="directory that keeps repos across restarts (default: temp dir)")
    parser.add_argument("--token", default="hf_fake", help="the accepted access token")
    parser.add_argument("--user", default="fake-user", help="the user name of that token")
    return parser


def hub_from_args(args: argparse.Namespace) -> FakeHub:
    """The (not yet started) `FakeHub` described by parsed command-line arguments."""
    return FakeHub(port=args.port, root=args.root or tempfile.mkdtemp(prefix="fake_hub_"), token=args.token,
                   user=args.user)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`python tests/fake_hub.py --port N --root DIR`: serve until Ctrl-C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logger.setLevel(logging.DEBUG)
    hub = hub_from_args(args).start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the server like Ctrl-C does
    print(f"export HF_ENDPOINT={hub.endpoint} HF_TOKEN={hub.token} HF_HUB_DISABLE_XET=1  # repos in {hub.store.root}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
