"""A stand-in for the Hugging Face Hub on 127.0.0.1: the `resolve` route that huggingface_hub uses
for file metadata (HEAD) and downloads (GET, with Range), gated and missing repos, and faults
(`FakeHub.fault`): stall (socket open, nothing more sent) or truncate (close) at a file offset,
flip the byte at an offset, ignore Range (200 with the whole file). It counts the bytes it sends
per file."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROUTE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
FAULT_KINDS = ("stall", "truncate", "flip", "ignore_range")


@dataclass
class Fault:
    """What the server does wrong for GETs of files whose name ends with ``files``: at file offset
    ``at`` it stalls (keeps the socket open, sends nothing more), truncates (closes the connection),
    or flips that byte; ``ignore_range`` answers every GET with 200 and the whole file."""

    kind: str
    at: int = 0
    files: str = ".safetensors"

    def __post_init__(self) -> None:
        assert self.kind in FAULT_KINDS, self.kind


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.sent: dict[str, int] = defaultdict(int)  # file name -> body bytes sent
        self.requests: list[tuple[str, str, str | None]] = []
        self.drop_after: int | None = None  # fault: close a ranged body after this many bytes
        self.fault: Fault | None = None
        self.release = threading.Event()  # ends stalls (set when the server stops)
        self.created: list[dict] = []  # create-repo requests
        self.invalid_cards: list[str] = []
        self.uploaded: dict[str, dict[str, bytes]] = defaultdict(dict)  # repo -> path -> content
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def handle(self) -> None:
                try:
                    super().handle()
                except (ConnectionError, TimeoutError):  # the client gave up on a fault: expected
                    pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def do_POST(self) -> None:
                """The upload side: create a repo, preupload (every file inline), commit (NDJSON)."""
                import base64
                import json

                hub.requests.append((self.command, self.path, None))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/api/validate-yaml":  # the card's front matter must parse
                    from huggingface_hub import ModelCard

                    try:
                        ModelCard(json.loads(body)["content"])
                    except Exception as e:
                        hub.invalid_cards.append(str(e))
                        return self._json({"errors": [{"message": str(e)}]}, status=400)
                    return self._json({"errors": [], "warnings": []})
                if self.path == "/api/repos/create":
                    req = json.loads(body)
                    hub.created.append(req)
                    repo = f"{req.get('organization') or 'user'}/{req['name']}"
                    return self._json({"url": f"{hub.endpoint}/{repo}"})
                m = re.match(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit)/(?P<rev>[^/?]+)", self.path)
                if not m:
                    return self._error(404, "EntryNotFound")
                if m["op"] == "preupload":
                    files = json.loads(body)["files"]
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in files]})
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item.get("key") == "file":
                        value = item["value"]
                        hub.uploaded[m["repo"]][value["path"]] = base64.b64decode(value["content"])
                oid = hashlib.sha1(body).hexdigest()
                return self._json({"commitUrl": f"{hub.endpoint}/{m['repo']}/commit/{oid}", "commitOid": oid,
                                   "success": True})

            def _json(self, obj, status: int = 200) -> None:
                import json

                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                m = ROUTE.match(self.path.split("?")[0])
                repo = hub.repos.get(m["repo"]) if m else None
                if repo is None:
                    return self._error(404, "RepoNotFound")
                if repo.get("gated"):
                    auth = self.headers.get("Authorization")
                    return self._error(401 if not auth else 403, "GatedRepo")
                if m["rev"] not in ("main", repo["commit"]):
                    return self._error(404, "RevisionNotFound")
                path = repo["folder"] / m["file"]
                if not path.is_file():
                    return self._error(404, "EntryNotFound")
                size = path.stat().st_size
                fault = hub.fault if hub.fault and m["file"].endswith(hub.fault.files) and body else None
                start, end, status = 0, size, 200
                rng = self.headers.get("Range")
                if rng and not (fault and fault.kind == "ignore_range"):
                    a, b = rng.removeprefix("bytes=").split("-")
                    start, end, status = int(a), min(int(b) + 1, size), 206
                self.send_response(status)
                self.send_header("X-Repo-Commit", repo["commit"])
                self.send_header("ETag", f'"{hashlib.sha1(f"{path}:{size}".encode()).hexdigest()}"')
                self.send_header("Content-Length", str(end - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as f:  # only the asked-for bytes
                    f.seek(start)
                    chunk = f.read(end - start)
                if status == 206 and hub.drop_after is not None and len(chunk) > hub.drop_after:
                    chunk = chunk[: hub.drop_after]
                    self.wfile.write(chunk)
                    hub.sent[m["file"]] += len(chunk)
                    self.close_connection = True
                    return
                if fault and start <= fault.at < end and fault.kind != "ignore_range":
                    cut = fault.at - start
                    if fault.kind == "flip":
                        chunk = chunk[:cut] + bytes([chunk[cut] ^ 0xFF]) + chunk[cut + 1:]
                    else:  # stall or truncate: send what comes before the offset, then nothing
                        self.wfile.write(chunk[:cut])
                        self.wfile.flush()
                        hub.sent[m["file"]] += cut
                        if fault.kind == "stall":
                            hub.release.wait(120)
                        self.close_connection = True
                        return
                self.wfile.write(chunk)
                hub.sent[m["file"]] += len(chunk)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_repo(self, repo_id: str, folder: Path, gated: bool = False) -> str:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = {"folder": Path(folder), "commit": commit, "gated": gated}
        return commit

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
