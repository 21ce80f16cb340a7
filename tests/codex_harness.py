"""Drive real Codex releases offline, for the real-Codex test tier.

The npm package ``@openai/codex`` ships the real CLI. ``.ci/install-codex``
installs pinned releases into a cache folder; this module finds them, points
them at a Responses-API stand-in on 127.0.0.1 (so nothing leaves the machine),
and speaks the app-server JSON-RPC protocol that Codex Desktop and the IDE
extension use. Tests build real ``CODEX_HOME`` folders with it, then check
what the real listing shows.

Everything has a timeout: a hung codex must fail a test, never hang the run.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

# The one list of releases: the harness, tests/homes.py and .ci/install-codex read it here.
# RELEASES are those every scenario runs on; 0.100.0 keeps no state DB (rollouts only) and
# runs where a test says so.
RELEASES = ("0.171.0", "0.169.0", "0.130.0", "0.120.0")
ROLLOUT_ONLY_RELEASE = "0.100.0"
INSTALLED_RELEASES = RELEASES + (ROLLOUT_ONLY_RELEASE,)

FAKE_KEY_ENV = "CSR_FAKE_KEY"
FAKE_KEY = "sk-csr-fake-key-for-local-stand-in"
STANDIN_MODEL = "gpt-5.5"
CUSTOM_PROVIDER = "csr-standin"

DEFAULT_TIMEOUT = 30.0


def version_tuple(version: str) -> tuple:
    return tuple(int(part) for part in version.split(".")[:3])


def at_least(version: str, floor: str) -> bool:
    """Whether ``version`` is ``floor`` or a later release (a behaviour measured in ``floor``
    that later releases kept)."""
    return version_tuple(version) >= version_tuple(floor)


def releases_dir() -> Path:
    override = os.environ.get("CODEX_RELEASES_DIR")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "codex-session-recovery" / "codex"


def codex_binary(version: str) -> Optional[Path]:
    """The npm launcher of an installed release, or None.

    The launcher (``node_modules/.bin/codex`` -> ``bin/codex.js``) picks the
    native binary out of ``@openai/codex-<platform>`` and sets the env the
    release expects (``CODEX_MANAGED_BY_NPM``, the bundled ``rg`` on PATH).
    """
    launcher = releases_dir() / version / "node_modules" / ".bin" / "codex"
    if launcher.exists() and os.access(launcher, os.X_OK):
        return launcher
    return None


def require_release(version: str) -> Path:
    """The release's launcher for a test: a missing release skips the test locally, but fails
    it in CI (env CI set), where .ci/install-codex must have run."""
    import pytest  # only tests call this; the harness itself needs nothing beyond the stdlib

    binary = codex_binary(version)
    if binary is None:
        message = "codex %s is not installed under %s; run .ci/install-codex %s" % (version, releases_dir(), version)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


# ---------------------------------------------------------------------------
# Responses-API stand-in


def _sse(event: str, data: Dict[str, Any]) -> bytes:
    data = dict(data, type=event)
    return ("event: %s\ndata: %s\n\n" % (event, json.dumps(data))).encode()


def _last_user_text(body: Dict[str, Any]) -> str:
    for item in reversed(body.get("input") or []):
        if item.get("type") == "message" and item.get("role") == "user":
            texts = [c.get("text", "") for c in item.get("content") or []
                     if isinstance(c, dict)]
            return " ".join(t for t in texts if t)
    return ""


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Codex drops idle keep-alive connections when it exits; a reset
        # socket is not a stand-in failure.
        pass


class ResponsesStandIn:
    """A tiny Responses-API server on 127.0.0.1 that always answers with one
    assistant message.

    ``reply`` is the assistant text; when None the reply echoes the last user
    text, so a test can see which turn produced which answer. Every request is
    recorded in ``requests`` as (method, path) for diagnosis.
    """

    def __init__(self, reply: Optional[str] = None) -> None:
        self.reply = reply
        self.requests: List[tuple] = []
        self.responses_served = 0
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "stand-in not started"
        return "http://127.0.0.1:%d/v1" % self._server.server_address[1]

    def __enter__(self) -> "ResponsesStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def _record(self) -> None:
                with standin._lock:
                    standin.requests.append((self.command, self.path))

            def _send_json(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._record()
                route = self.path.split("?")[0]
                if route.endswith("/models"):
                    # No release from 0.120.0 to 0.169.0 asked for this
                    # offline (each uses its bundled catalogue); an empty
                    # list is the harmless answer if one does.
                    self._send_json(200, {"models": [], "data": []})
                elif route.endswith("/responses"):
                    # CODEX-COMPAT: with the built-in openai provider,
                    # 0.120.0-0.169.0 first try a WebSocket upgrade here and
                    # retry it for ~6 s per turn; 426 makes them fall back to
                    # HTTP + SSE at once.
                    self._send_json(426, {"error": {
                        "message": "use HTTP streaming"}})
                else:
                    self._send_json(404, {"error": {"message": "not here"}})

            def do_POST(self) -> None:
                self._record()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not self.path.split("?")[0].endswith("/responses"):
                    self._send_json(404, {"error": {"message": "not here"}})
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                with standin._lock:
                    standin.responses_served += 1
                    serial = standin.responses_served
                text = standin.reply
                if text is None:
                    text = "echo: " + _last_user_text(body)
                self._send_stream(serial, text)

            def _send_stream(self, serial: int, text: str) -> None:
                response_id = "resp_csr_%d" % serial
                usage = {
                    "input_tokens": 10,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 5,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 15,
                }
                message = {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_csr_%d" % serial,
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text,
                                 "annotations": []}],
                }
                payload = b"".join([
                    _sse("response.created",
                         {"response": {"id": response_id}}),
                    _sse("response.output_item.done",
                         {"output_index": 0, "item": message}),
                    _sse("response.completed",
                         {"response": {"id": response_id, "usage": usage}}),
                ])
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="responses-standin", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# ---------------------------------------------------------------------------
# CODEX_HOME set-up


def write_config(home: Union[str, Path], provider: str, base_url: str, *,
                 model: str = STANDIN_MODEL, extra: str = "") -> Path:
    """Write ``home/config.toml`` so the release talks only to ``base_url``.

    ``provider="openai"`` keeps the built-in provider and moves its endpoint
    (the key then comes from ``login``); any other name defines a custom
    provider whose key is read from the ``CSR_FAKE_KEY`` env var.
    ``extra`` is appended verbatim (top-level keys must not go there, they
    would land inside the last table).
    """
    lines = [
        'model = "%s"' % model,
        # The release keeps the provider id of the moment in each rollout;
        # this is the value the default listing filters on.
        'model_provider = "%s"' % provider,
        # Update checks and analytics would reach the network; none was
        # seen offline with plugins off, these keep it that way.
        "check_for_update_on_startup = false",
    ]
    if provider == "openai":
        lines.append('openai_base_url = "%s"' % base_url)
    lines += [
        "",
        "[analytics]",
        "enabled = false",
        "",
        # CODEX-COMPAT: 0.120.0-0.169.0 clone github.com/openai/plugins and
        # query api.github.com and chatgpt.com at start-up unless plugins are
        # off; nothing else reached the network in any of them.
        "[features]",
        "plugins = false",
    ]
    if provider != "openai":
        lines += [
            "",
            "[model_providers.%s]" % provider,
            'name = "%s"' % provider,
            'base_url = "%s"' % base_url,
            'wire_api = "responses"',
            'env_key = "%s"' % FAKE_KEY_ENV,
        ]
    text = "\n".join(lines) + "\n" + extra
    path = Path(home) / "config.toml"
    path.write_text(text)
    return path


def clean_env(home: Union[str, Path], user_home: Union[str, Path],
              extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A minimal environment: nothing from the machine's own Codex set-up
    (``~/.codex``, ``OPENAI_*``, proxies) may leak into a test home."""
    node = shutil.which("node")
    path_dirs = [os.path.dirname(node)] if node else []
    path_dirs += ["/usr/local/bin", "/usr/bin", "/bin"]
    env = {
        "PATH": os.pathsep.join(dict.fromkeys(path_dirs)),
        "HOME": str(user_home),
        "CODEX_HOME": str(home),
        "LANG": "C.UTF-8",
        # Keeps ANSI colours out of the stderr quoted in failures.
        "NO_COLOR": "1",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        FAKE_KEY_ENV: FAKE_KEY,
    }
    env.update(extra or {})
    return env


def login_with_api_key(binary: Path, home: Union[str, Path],
                       user_home: Union[str, Path],
                       timeout: float = DEFAULT_TIMEOUT) -> None:
    """``codex login --with-api-key`` with a fake key: the built-in
    ``openai`` provider refuses to start a turn without stored auth."""
    proc = subprocess.run(
        [str(binary), "login", "--with-api-key"], input=FAKE_KEY + "\n",
        env=clean_env(home, user_home), cwd=str(home), capture_output=True,
        text=True, timeout=timeout)
    if proc.returncode != 0:
        raise CodexError("codex login failed (%d): %s"
                         % (proc.returncode, proc.stderr.strip()))


def build_home(version: str, home_dir: Union[str, Path],
               standin: "ResponsesStandIn", provider: str = "openai",
               user_home: Optional[Union[str, Path]] = None) -> Path:
    """Create a ready-to-use CODEX_HOME for ``version`` (config, plus a fake
    login for the built-in provider). ``user_home`` defaults to a
    ``user-home`` folder next to the CODEX_HOME."""
    binary = require_binary(version)
    home = Path(home_dir)
    home.mkdir(parents=True, exist_ok=True)
    user_home = Path(user_home) if user_home else home.parent / "user-home"
    user_home.mkdir(parents=True, exist_ok=True)
    write_config(home, provider, standin.base_url)
    if provider == "openai":
        # CODEX-COMPAT: 0.120.0-0.169.0 all need stored auth for the
        # built-in provider; 0.169.0 also leaves auth.json.lock and auth.lock.
        login_with_api_key(binary, home, user_home)
    return home


def require_binary(version: str) -> Path:
    binary = codex_binary(version)
    if binary is None:
        raise CodexError("codex %s is not installed under %s; run "
                         ".ci/install-codex" % (version, releases_dir()))
    return binary


# ---------------------------------------------------------------------------
# Processes


class CodexError(RuntimeError):
    pass


class JsonRpcError(CodexError):
    def __init__(self, method: str, error: Dict[str, Any], stderr: str = ""):
        self.method = method
        self.error = error
        message = "%s failed: %s" % (method, json.dumps(error))
        if stderr:
            message += "\n--- codex stderr (tail) ---\n" + stderr
        super().__init__(message)


def _stop_process_group(proc: subprocess.Popen, grace: float) -> None:
    """Stop a codex we started in its own session: the npm launcher of older
    releases keeps the native binary as a child, so the whole group goes."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(grace)


def run_exec(binary: Path, home: Union[str, Path], cwd: Union[str, Path],
             prompt: str, env: Optional[Dict[str, str]] = None,
             timeout: float = 60.0) -> str:
    """Run ``codex exec`` once and return the new thread id (an ``exec``
    thread). ``env`` defaults to ``clean_env`` with a throw-away HOME."""
    with tempfile.TemporaryDirectory(prefix="csr-user-home-") as user_home:
        if env is None:
            env = clean_env(home, user_home)
        proc = subprocess.Popen(
            [str(binary), "exec", "--skip-git-repo-check", "--json", prompt],
            cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_process_group(proc, 5)
            raise CodexError("codex exec timed out after %ss" % timeout)
    if proc.returncode != 0:
        raise CodexError("codex exec failed (%d): %s"
                         % (proc.returncode, err.strip()[-2000:]))
    for line in out.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        # CODEX-COMPAT: 0.120.0-0.169.0 all open --json output with
        # {"type": "thread.started", "thread_id": ...}.
        if event.get("type") == "thread.started":
            return event["thread_id"]
    raise CodexError("codex exec printed no thread.started event:\n" + out)


class AppServer:
    """``codex app-server`` over stdio: newline-delimited JSON-RPC 2.0.

    Use as a context manager; ``__enter__`` performs the ``initialize`` /
    ``initialized`` handshake. The client name becomes the ``originator`` of
    the threads it starts (their ``source`` is ``vscode``).
    """

    def __init__(self, binary: Path, home: Union[str, Path], *,
                 cwd: Optional[Union[str, Path]] = None,
                 env: Optional[Dict[str, str]] = None,
                 client_name: str = "csr_tests",
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.binary = Path(binary)
        self.home = Path(home)
        self.cwd = Path(cwd) if cwd else self.home
        self.timeout = timeout
        self.client_name = client_name
        self._env = env
        self._user_home: Optional[tempfile.TemporaryDirectory] = None
        self._proc: Optional[subprocess.Popen] = None
        self._next_id = 0
        self._responses: Dict[int, Dict[str, Any]] = {}
        self.notifications: List[Dict[str, Any]] = []
        self.server_requests: List[Dict[str, Any]] = []
        self._stderr_tail: collections.deque = collections.deque(maxlen=40)
        self._changed = threading.Condition()
        self._write_lock = threading.Lock()

    # -- life cycle ---------------------------------------------------------

    def __enter__(self) -> "AppServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> Dict[str, Any]:
        env = self._env
        if env is None:
            self._user_home = tempfile.TemporaryDirectory(
                prefix="csr-user-home-")
            env = clean_env(self.home, self._user_home.name)
        self._proc = subprocess.Popen(
            [str(self.binary), "app-server"], cwd=str(self.cwd), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            result = self.request("initialize", {"clientInfo": {
                "name": self.client_name,
                "title": "codex-session-recovery tests", "version": "0.0.0"}})
            self.notify("initialized")
        except BaseException:
            # A bad config.toml makes the release exit at once; leave no
            # process behind when the caller never reaches close().
            self.close()
            raise
        return result

    def close(self) -> None:
        """Close stdin (the app-server exits on EOF), then terminate."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                _stop_process_group(proc, 5)
        if self._user_home is not None:
            self._user_home.cleanup()
            self._user_home = None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    # -- wire ---------------------------------------------------------------

    def _read_stdout(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                self._stderr_tail.append("stdout (not JSON): " + line)
                continue
            if "method" in message and "id" in message:
                self._refuse_server_request(message)
            with self._changed:
                if "method" in message and "id" not in message:
                    self.notifications.append(message)
                elif "id" in message and "method" not in message:
                    self._responses[message["id"]] = message
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        for line in proc.stderr:
            self._stderr_tail.append(line.rstrip())

    def _refuse_server_request(self, message: Dict[str, Any]) -> None:
        # Approval prompts and the like: a text-only turn against the
        # stand-in should raise none, so record it and answer with an error
        # rather than leave the release waiting for a user.
        self.server_requests.append(message)
        self._send({"jsonrpc": "2.0", "id": message["id"], "error": {
            "code": -32601, "message": "not supported by the test client"}})

    def _send(self, message: Dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise CodexError("app-server is not running")
        try:
            with self._write_lock:
                proc.stdin.write(json.dumps(message) + "\n")
                proc.stdin.flush()
        except OSError as error:
            raise CodexError("app-server %s, cannot send %s: %s\n%s" % (
                self._state(), message.get("method", "a reply"), error,
                self.stderr_tail()))

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    def notify(self, method: str, params: Optional[Dict[str, Any]] = None
               ) -> None:
        message: Dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def request(self, method: str, params: Optional[Dict[str, Any]] = None,
                timeout: Optional[float] = None) -> Any:
        """Send one request and return its ``result``; a JSON-RPC error
        raises ``JsonRpcError``, silence raises ``CodexError``."""
        with self._changed:
            self._next_id += 1
            request_id = self._next_id
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method,
                    "params": params if params is not None else {}})
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._changed:
            while request_id not in self._responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._exited():
                    break
                self._changed.wait(min(remaining, 0.5))
            response = self._responses.pop(request_id, None)
        if response is None:
            raise CodexError("%s: no answer within %ss (app-server %s)\n%s"
                             % (method, timeout or self.timeout,
                                self._state(), self.stderr_tail()))
        if "error" in response:
            raise JsonRpcError(method, response["error"], self.stderr_tail())
        return response.get("result")

    def _exited(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def _state(self) -> str:
        if self._proc is None:
            return "closed"
        code = self._proc.poll()
        return "running" if code is None else "exited with %s" % code

    def wait_for_notification(
            self, method: str,
            predicate: Optional[Callable[[Dict[str, Any]], bool]] = None,
            timeout: Optional[float] = None) -> Dict[str, Any]:
        """The ``params`` of the first notification ``method`` (received at
        any time so far, or later) for which ``predicate(params)`` holds."""
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = 0
        with self._changed:
            while True:
                for message in self.notifications[seen:]:
                    params = message.get("params") or {}
                    if message["method"] == method and (
                            predicate is None or predicate(params)):
                        return params
                seen = len(self.notifications)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._exited():
                    break
                self._changed.wait(min(remaining, 0.5))
        raise CodexError("no %s notification within %ss (app-server %s)\n%s"
                         % (method, timeout or self.timeout, self._state(),
                            self.stderr_tail()))

    # -- thread API ---------------------------------------------------------

    def start_thread(self, cwd: Optional[Union[str, Path]] = None) -> str:
        result = self.request("thread/start", {"cwd": str(cwd or self.cwd)})
        return result["thread"]["id"]

    def run_turn(self, thread_id: str, text: str,
                 timeout: Optional[float] = None) -> Dict[str, Any]:
        """Start a turn and wait for it to finish; returns the completed
        ``turn`` object (``status`` should be ``completed``)."""
        result = self.request("turn/start", {
            "threadId": thread_id,
            "input": [{"type": "text", "text": text}]})
        turn_id = result["turn"]["id"]
        # CODEX-COMPAT: 0.169.0 puts the turn's items in turn/completed;
        # 0.130.0 and 0.120.0 send them empty (itemsView "notLoaded"), so
        # read the thread to see what was said.
        done = self.wait_for_notification(
            "turn/completed",
            lambda p: p.get("turn", {}).get("id") == turn_id,
            timeout=timeout)
        turn = done["turn"]
        if turn.get("status") != "completed":
            raise CodexError("turn %s ended %s: %s" % (
                turn_id, turn.get("status"), json.dumps(turn.get("error"))))
        return turn

    def list_threads(self, **params: Any) -> List[Dict[str, Any]]:
        """``thread/list``; no params = what a user sees (current provider,
        interactive sources, not archived). Follows ``nextCursor`` so the
        whole listing comes back.

        CODEX-COMPAT: items have 17 keys in 0.120.0, 19 in 0.130.0
        (``sessionId``, ``threadSource``) and 33 in 0.169.0 and 0.171.0 (``model``,
        ``historyMode``, ``recencyAt``, ``originator``, ...); ``id``,
        ``path``, ``preview``, ``source``, ``modelProvider``, ``cwd``,
        ``name`` are common to all.

        CODEX-COMPAT: 0.130.0's ``nextCursor`` is a whole-second timestamp
        and the next page skips threads made in that same second, so pages
        are asked for as large as the caller allows (a limit is not a
        filter: the listing's content stays what a user sees)."""
        items: List[Dict[str, Any]] = []
        cursor = None
        while True:
            page_params = dict(params)
            page_params.setdefault("limit", 1000)
            if cursor:
                page_params["cursor"] = cursor
            result = self.request("thread/list", page_params)
            items.extend(result.get("data") or [])
            cursor = result.get("nextCursor")
            if not cursor:
                return items

    def wait_until_listed(self, thread_id: str, preview: str,
                          timeout: float = 10.0) -> Dict[str, Any]:
        """Poll the default ``thread/list`` until the thread is listed with this preview.

        CODEX-COMPAT: a clean-clone run once saw 0.120.0 list a two-turn thread with its
        second question as the preview when the turns were sent back to back (not
        reproduced in 35 later runs, idle or under CPU load). Waiting for the first turn's
        listing before the next turn is sent keeps the sample home what a user typing at
        human speed makes, and a failure here names what was listed instead."""
        deadline = time.monotonic() + timeout
        item: Optional[Dict[str, Any]] = None
        while True:
            item = next((entry for entry in self.list_threads()
                         if entry["id"] == thread_id), None)
            if item is not None and item.get("preview") == preview:
                return item
            if time.monotonic() >= deadline:
                raise CodexError("thread %s not listed with preview %r within %.0f s; "
                                 "listed as %s" % (thread_id, preview, timeout,
                                                   json.dumps(item)))
            time.sleep(0.05)

    def listed_ids(self, **params: Any) -> List[str]:
        return [item["id"] for item in self.list_threads(**params)]

    def read_thread(self, thread_id: str,
                    include_turns: bool = True) -> Dict[str, Any]:
        """``thread/read``. CODEX-COMPAT: turn items carry ``userMessage``
        (``content`` parts) and ``agentMessage`` (``text``) in 0.120.0 to
        0.169.0; 0.169.0 adds timing fields and uses real item ids where
        older releases number them ``item-1``, ``item-2``..."""
        result = self.request("thread/read", {
            "threadId": thread_id, "includeTurns": include_turns})
        return result["thread"]

    def resume_thread(self, thread_id: str) -> Dict[str, Any]:
        return self.request("thread/resume", {"threadId": thread_id})

    def archive(self, thread_id: str) -> Any:
        return self.request("thread/archive", {"threadId": thread_id})

    def unarchive(self, thread_id: str) -> Any:
        return self.request("thread/unarchive", {"threadId": thread_id})

    def set_name(self, thread_id: str, name: str) -> Any:
        return self.request("thread/name/set",
                            {"threadId": thread_id, "name": name})


def populate_sample_home(version: str, home: Union[str, Path],
                         cwd: Union[str, Path]) -> Dict[str, Any]:
    """Fill a home made by ``build_home`` with the usual mix: two
    interactive app-server threads of two turns each, one ``exec`` thread,
    and one archived interactive thread. Returns their ids."""
    binary = require_binary(version)
    with AppServer(binary, home, cwd=cwd) as server:
        interactive = []
        for label in ("alpha", "beta"):
            thread_id = server.start_thread(cwd)
            server.run_turn(thread_id, "first question in %s" % label)
            server.wait_until_listed(thread_id, "first question in %s" % label)
            server.run_turn(thread_id, "second question in %s" % label)
            interactive.append(thread_id)
        archived = server.start_thread(cwd)
        server.run_turn(archived, "question in the archived thread")
        server.archive(archived)
    # Codex keeps updated_at in whole seconds: the exec thread starts in a later second, so it
    # is the newest thread of the folder without a tie for the listing's order to break.
    next_second = int(time.time()) + 1
    while time.time() < next_second:
        time.sleep(0.05)
    exec_id = run_exec(binary, home, cwd, "question from codex exec")
    return {"interactive": interactive, "exec": exec_id,
            "archived": archived}
