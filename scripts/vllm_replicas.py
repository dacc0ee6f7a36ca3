"""Start and stop N vLLM CPU replicas of the tiny model on free loopback ports.

Usable two ways:

* from Python (pytest fixtures, the benchmark)::

      with VLLMReplicas(n=2) as replicas:
          print(replicas.urls)
          replicas.kill(0)       # simulate a crash (SIGKILL)
          replicas.restart(0)    # same port, waits for readiness

* from the command line::

      python scripts/vllm_replicas.py start --n 2     # prints one URL a line, then returns
      python scripts/vllm_replicas.py status
      python scripts/vllm_replicas.py stop

  The CLI records the processes it started in a state file
  (`~/.cache/budgetflow/replicas.json`) and `stop` ends exactly those, by process id.

vLLM runs from its own virtual environment (`scripts/setup_vllm.sh`,
`$BUDGETFLOW_VLLM_VENV`, default `~/.cache/budgetflow/vllm-venv`); budgetflow only
talks to it over HTTP. Each replica listens on 127.0.0.1 only, with prefix caching,
`--enable-prompt-tokens-details` (so responses report cached prompt tokens), a small
`--max-model-len`, and optionally a fixed number of KV blocks
(`--num-gpu-blocks-override`) so that the cache is small enough to evict.
`VLLM_SERVER_DEV_MODE=1` exposes `POST /reset_prefix_cache`, which the benchmark uses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["ReplicaOptions", "VLLMReplicas", "default_venv", "main", "vllm_python"]

_CACHE = Path("~/.cache/budgetflow").expanduser()
_PLUGINS = Path(__file__).resolve().parent / "vllm_plugins"
"""vLLM plugins for the test replicas (loaded only when `ReplicaOptions` asks)."""
_STATE_FILE = _CACHE / "replicas.json"


def default_venv() -> Path:
    """The vLLM venv: `$BUDGETFLOW_VLLM_VENV` or `~/.cache/budgetflow/vllm-venv`."""
    return Path(os.environ.get("BUDGETFLOW_VLLM_VENV", str(_CACHE / "vllm-venv"))).expanduser()


def vllm_python(venv: Path | None = None) -> Path | None:
    """The vLLM venv's interpreter, or `None` when the venv is missing."""
    python = (venv or default_venv()) / "bin" / "python"
    return python if python.is_file() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, kw_only=True)
class ReplicaOptions:
    """How each replica is launched."""

    served_model: str = "tiny-llama"
    """Name the replicas serve the model under (`--served-model-name`)."""
    max_model_len: int = 4096
    """`--max-model-len`."""
    kv_blocks: int | None = None
    """Fixed KV cache size in blocks (`--num-gpu-blocks-override`); `None`: from memory."""
    kvcache_space_gib: int = 1
    """`VLLM_CPU_KVCACHE_SPACE`, GiB of memory for the KV cache."""
    block_size: int | None = None
    """KV block size in tokens (`--block-size`); `None`: vLLM's default for the platform."""
    max_num_seqs: int = 16
    """Requests a replica batches at once (`--max-num-seqs`)."""
    max_num_batched_tokens: int | None = None
    """Tokens an engine step takes at most (`--max-num-batched-tokens`; vLLM CPU's default
    for the API server is 2048): a longer uncached prompt is prefilled in chunks."""
    startup_timeout_s: float = 400.0
    """Give up waiting for readiness after this long."""
    decode_delay: bool = False
    """Load the `DecodeDelay` logits processor (`scripts/vllm_plugins/budgetflow_decode_delay.py`):
    a request sending `"vllm_xargs": {"decode_delay_ms": D}` then generates one token per
    D ms at most, so tests can act while a long answer is certainly still being generated."""
    extra_args: tuple[str, ...] = ()
    """More `api_server` flags."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """More environment variables."""


@dataclass
class _Replica:
    port: int
    proc: subprocess.Popen[bytes] | None
    log_path: Path
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class VLLMReplicas:
    """N vLLM replicas of one model, started and stopped together.

    Args:
        n: number of replicas.
        model_dir: model folder; default: the tiny model, built if missing.
        options: launch options.
        venv: vLLM venv; default `default_venv()`.
        log_dir: where replica logs go; default a folder under `~/.cache/budgetflow/logs`.
    """

    def __init__(
        self,
        n: int = 2,
        *,
        model_dir: Path | None = None,
        options: ReplicaOptions | None = None,
        venv: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        python = vllm_python(venv)
        if python is None:
            raise FileNotFoundError(
                f"vLLM venv `{venv or default_venv()}` is missing; run `scripts/setup_vllm.sh`"
            )
        self._python = python
        self._n = n
        self._model_dir = model_dir
        self.options = options or ReplicaOptions()
        self._log_dir = log_dir or _CACHE / "logs" / f"replicas-{os.getpid()}-{int(time.time())}"
        self._replicas: list[_Replica] = []

    @property
    def urls(self) -> list[str]:
        """Base URLs of the replicas, e.g. `http://127.0.0.1:41234`."""
        return [r.url for r in self._replicas]

    @property
    def pids(self) -> list[int | None]:
        """Process ids (each replica leads its own process group)."""
        return [r.proc.pid if r.proc else r.pid for r in self._replicas]

    def log_path(self, index: int) -> Path:
        """Log file of replica `index`."""
        return self._replicas[index].log_path

    def start(self) -> list[str]:
        """Launch all replicas at once and wait until every one answers `/health`."""
        model_dir = self._model_dir or _ensure_model()
        self._model_dir = model_dir
        self._log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for index in range(self._n):
                replica = _Replica(
                    port=_free_port(), proc=None, log_path=self._log_dir / f"replica-{index}.log"
                )
                self._replicas.append(replica)
                self._launch(index)
            for index in range(self._n):
                self._wait_ready(index)
        except BaseException:
            self.stop()
            raise
        return self.urls

    def _launch(self, index: int) -> None:
        replica = self._replicas[index]
        opts = self.options
        assert self._model_dir is not None
        cmd = [
            str(self._python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self._model_dir),
            "--served-model-name",
            opts.served_model,
            "--host",
            "127.0.0.1",
            "--port",
            str(replica.port),
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            "--max-model-len",
            str(opts.max_model_len),
            "--max-num-seqs",
            str(opts.max_num_seqs),
            "--dtype",
            "bfloat16",
            "--seed",
            "0",
        ]
        if opts.block_size is not None:
            cmd += ["--block-size", str(opts.block_size)]
        if opts.kv_blocks is not None:
            cmd += ["--num-gpu-blocks-override", str(opts.kv_blocks)]
        if opts.max_num_batched_tokens is not None:
            cmd += ["--max-num-batched-tokens", str(opts.max_num_batched_tokens)]
        if opts.decode_delay:
            cmd += ["--logits-processors", "budgetflow_decode_delay:DecodeDelay"]
        cmd += list(opts.extra_args)
        cpus = os.cpu_count() or 1
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": str(opts.kvcache_space_gib),
            # One core per replica (round robin) so replicas do not fight over OpenMP threads.
            "VLLM_CPU_OMP_THREADS_BIND": str(index % cpus),
            "VLLM_SERVER_DEV_MODE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **opts.extra_env,
        }
        env.pop("VIRTUAL_ENV", None)
        if opts.decode_delay:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PLUGINS), env.get("PYTHONPATH")]))
        log = replica.log_path.open("ab")
        replica.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()

    def _wait_ready(self, index: int) -> None:
        replica = self._replicas[index]
        deadline = time.monotonic() + self.options.startup_timeout_s
        while time.monotonic() < deadline:
            if replica.proc is not None and replica.proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM replica {index} exited with code {replica.proc.returncode} before it was"
                    f" ready; log `{replica.log_path}`:\n{_tail(replica.log_path)}"
                )
            if _healthy(replica.url):
                return
            time.sleep(1.0)
        raise TimeoutError(
            f"vLLM replica {index} at {replica.url} not ready after"
            f" {self.options.startup_timeout_s:.0f}s; log `{replica.log_path}`:\n"
            f"{_tail(replica.log_path)}"
        )

    def kill(self, index: int) -> None:
        """SIGKILL replica `index` and its children (simulates a crash)."""
        replica = self._replicas[index]
        if replica.proc is not None and replica.proc.poll() is None:
            _signal_group(replica.proc.pid, signal.SIGKILL)
            replica.proc.wait(timeout=30)

    def pause(self, index: int) -> None:
        """SIGSTOP replica `index` (it stops answering but keeps its state)."""
        proc = self._replicas[index].proc
        if proc is not None:
            _signal_group(proc.pid, signal.SIGSTOP)

    def resume(self, index: int) -> None:
        """SIGCONT replica `index` after `pause`."""
        proc = self._replicas[index].proc
        if proc is not None:
            _signal_group(proc.pid, signal.SIGCONT)

    def restart(self, index: int) -> str:
        """Stop replica `index` if running, start it again on the same port, wait until ready."""
        self._stop_one(self._replicas[index])
        self._launch(index)
        self._wait_ready(index)
        return self._replicas[index].url

    def stop(self) -> None:
        """Stop every replica: SIGTERM, then SIGKILL after 20 s."""
        for replica in self._replicas:
            self._stop_one(replica)

    @staticmethod
    def _stop_one(replica: _Replica) -> None:
        proc = replica.proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGCONT)
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        # Children of the api server (engine core) share its process group.
        _signal_group(proc.pid, signal.SIGKILL)

    def __enter__(self) -> VLLMReplicas:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ensure_model() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from build_tiny_model import ensure_tiny_model
    finally:
        sys.path.pop(0)
    return ensure_tiny_model()


def _cli_start(args: argparse.Namespace) -> int:
    if _STATE_FILE.is_file():
        print(f"replicas already recorded in `{_STATE_FILE}`; run `stop` first", file=sys.stderr)
        return 1
    options = ReplicaOptions(kv_blocks=args.kv_blocks, max_model_len=args.max_model_len)
    replicas = VLLMReplicas(args.n, options=options)
    urls = replicas.start()
    _STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    state = {"urls": urls, "pids": replicas.pids}
    _STATE_FILE.write_text(json.dumps(state))
    for url in urls:
        print(url)
    return 0


def _cli_stop() -> int:
    if not _STATE_FILE.is_file():
        print("no replicas recorded; nothing to stop")
        return 0
    state = json.loads(_STATE_FILE.read_text())
    for pid in state["pids"]:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for pid in state["pids"]:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        _signal_group(pid, signal.SIGKILL)
    _STATE_FILE.unlink()
    print(f"stopped {len(state['pids'])} replicas")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _cli_status() -> int:
    if not _STATE_FILE.is_file():
        print("no replicas recorded")
        return 0
    state = json.loads(_STATE_FILE.read_text())
    for url, pid in zip(state["urls"], state["pids"], strict=True):
        print(f"{url} pid={pid} {'healthy' if _healthy(url) else 'DOWN'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description="Start/stop vLLM CPU replicas of the tiny model")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start replicas in the background and print their URLs")
    start.add_argument("--n", type=int, default=2, help="number of replicas")
    start.add_argument("--kv-blocks", type=int, default=None, help="KV blocks per replica")
    start.add_argument("--max-model-len", type=int, default=4096)
    sub.add_parser("stop", help="stop the replicas started by `start`")
    sub.add_parser("status", help="show the recorded replicas")
    args = parser.parse_args(argv)
    if args.command == "start":
        return _cli_start(args)
    if args.command == "stop":
        return _cli_stop()
    return _cli_status()


if __name__ == "__main__":
    sys.exit(main())
