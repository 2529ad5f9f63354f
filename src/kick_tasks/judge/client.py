"""Transport to an OpenAI-compatible chat-completions judge: config, retries, concurrency, cache.

`JudgeClient.run` takes a whole batch of requests and answers each with a `JudgeResult`; no
request is dropped: every one ends ``ok``, ``unparsed`` (the judge replied, twice, in a format
we could not read) or ``failed`` (the endpoint never gave a usable reply within the retries).
Retries use exponential backoff with jitter on 408/429/5xx, timeouts, refused connections and
malformed bodies, and honour ``Retry-After``. The API key is read from the environment only and
never logged, cached or written into results.

`check_endpoint` asks the endpoint once per process, before any generation, whether it accepts
the credentials and serves the model (a free ``GET /models``, or a one-token completion where
that is missing), so a refused key fails in seconds instead of after hours of generation.
A client made with ``fail_soft=True`` (what the lm-eval tasks use) turns a refusal that still
happens mid-run into ``failed`` results for the rest of the batch instead of raising.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from kick_common.env import BY_NAME, EnvError, read_env
from kick_common.paths import kick_cache_dir
from kick_tasks.judge.cache import VerdictCache, verdict_key
from kick_tasks.judge.parsing import (
    Parsed,
    parse_criteria,
    parse_review,
    parse_score,
    parse_verdict,
)
from kick_tasks.judge.prompts import PROMPT_VERSION, with_reminder

log = logging.getLogger(__name__)

PARSERS: dict[str, Callable[[str], Parsed]] = {"verdict": parse_verdict, "score": parse_score,
                                                "criteria": parse_criteria, "review": parse_review}
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_FORBIDDEN_METADATA = ("judge_api_key", "api_key", "openai_api_key")


class JudgeConfigError(ValueError):
    """Bad judge configuration, or the endpoint refused our credentials."""


def _default_cache_dir(env: Mapping[str, str] | None = None) -> str:
    """``judge/`` under kick's cache root (:func:`kick_common.paths.kick_cache_dir`)."""
    return str(kick_cache_dir(env) / "judge")


def _env(name: str, env: Mapping[str, str]) -> Any:
    """One variable read by kick's environment table, its refusal kept word for word (one parser, one message)."""
    try:
        return read_env(name, env)
    except EnvError as err:
        raise JudgeConfigError(str(err)) from None


def _openai_base_url(env: Mapping[str, str]) -> str | None:
    """``OPENAI_BASE_URL`` (the openai client's own variable), checked like ``KICK_JUDGE_BASE_URL``."""
    text = env.get("OPENAI_BASE_URL")
    if text is None or not text.strip():
        return None
    try:
        return BY_NAME["KICK_JUDGE_BASE_URL"].read("OPENAI_BASE_URL", text)
    except EnvError as err:
        raise JudgeConfigError(str(err)) from None


def _setting(name: str, meta: Mapping, env: Mapping[str, str]) -> Any:
    """``judge_<name>`` from task metadata, else ``KICK_JUDGE_<NAME>``; both read by the variable's own reader."""
    var = f"KICK_JUDGE_{name.upper()}"
    value = meta.get(f"judge_{name}")
    if value is None or (isinstance(value, str) and not value.strip()):
        return _env(var, env)
    try:
        return BY_NAME[var].read(var, value)
    except EnvError as err:  # same refusal, naming where the value came from
        raise JudgeConfigError(str(err).replace(f"environment variable {var}", f"task metadata judge_{name}", 1)) from None


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to ask the judge. ``api_key`` is excluded from ``repr`` and ``to_dict``."""

    model: str
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 6
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_tokens: int = 512
    temperature: float = 0.0
    cache_dir: str | None = field(default_factory=_default_cache_dir)

    def __post_init__(self):
        if not self.model:
            raise JudgeConfigError("judge model name is empty; set KICK_JUDGE_MODEL")
        if not str(self.base_url).startswith(("http://", "https://")):
            scheme = urlsplit(str(self.base_url)).scheme  # not the URL: it may carry credentials
            raise JudgeConfigError(f"judge base URL must start with http:// or https://, not {scheme or 'no scheme'!r}")
        if self.concurrency < 1:
            raise JudgeConfigError(f"judge concurrency {self.concurrency} must be >= 1")
        if self.max_retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise JudgeConfigError(
                f"judge retries {self.max_retries} (>= 0), timeout {self.timeout} (> 0) and "
                f"backoff {self.backoff} (>= 0) out of range")

    @classmethod
    def from_env(cls, metadata: Mapping | None = None,
                 env: Mapping[str, str] | None = None) -> "JudgeConfig | None":
        """Build from ``judge_*`` task metadata over ``KICK_JUDGE_*`` variables; ``None`` if no model is set.

        The key comes only from ``KICK_JUDGE_API_KEY`` or ``OPENAI_API_KEY``; putting it in
        metadata is refused because metadata is written into lm-eval's results file.
        """
        env = os.environ if env is None else env
        meta = dict(metadata or {})
        bad = [k for k in _FORBIDDEN_METADATA if k in meta]
        if bad:
            raise JudgeConfigError(f"task metadata must not carry {bad}: metadata is written to "
                                   "results; set KICK_JUDGE_API_KEY in the environment instead")
        if _env("KICK_JUDGE_DISABLE", env):
            return None
        model = _setting("model", meta, env)
        if not model:
            return None
        base_url = _setting("base_url", meta, env) or _openai_base_url(env)
        numbers = {name: _setting(name, meta, env) for name in ("concurrency", "timeout", "max_retries", "backoff",
                                                                  "max_tokens")}
        use_cache = _setting("cache", meta, env)
        return cls(model=str(model), base_url=base_url or cls.base_url,
                   api_key=_env("KICK_JUDGE_API_KEY", env) or env.get("OPENAI_API_KEY") or None,
                   cache_dir=None if use_cache is False else str(_setting("cache_dir", meta, env) or _default_cache_dir(env)),
                   **{k: v for k, v in numbers.items() if v is not None})

    @property
    def endpoint(self) -> str:
        """The base URL without user/password and without a trailing slash (cache keys, results)."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}".rstrip("/")

    @property
    def host(self) -> str:
        """``host[:port]`` of the base URL, credentials removed."""
        return self.endpoint.split("://", 1)[1].split("/", 1)[0]

    def to_dict(self) -> dict:
        """JSON-able settings for results files (never the key, nor credentials in the URL)."""
        return {"model": self.model, "base_url": self.endpoint, "base_url_host": self.host,
                "prompt_version": PROMPT_VERSION, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "concurrency": self.concurrency,
                "timeout": self.timeout, "max_retries": self.max_retries,
                "api_key_set": bool(self.api_key)}


@dataclass(frozen=True)
class JudgeRequest:
    """One judge question: chat messages, the reply kind (a `PARSERS` key), the judged answers."""

    messages: list[dict]
    kind: str
    answers: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in PARSERS:
            raise ValueError(f"judge request kind {self.kind!r}; accepted: {sorted(PARSERS)}")


@dataclass
class JudgeResult:
    """``status``: 'ok' (``value`` set), 'unparsed' (reply unreadable twice) or 'failed' (no reply)."""

    status: str
    value: float | str | dict | list | None = None
    reason: str = ""
    reply: str | None = None
    cached: bool = False
    reformatted: bool = False


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _Fatal(JudgeConfigError):
    """The endpoint answered in a way no retry can fix (bad credentials, bad request)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class JudgeStats:
    """Counters over one client's life: HTTP requests sent, retries, cache hits, outcomes."""

    http_requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    reformat_retries: int = 0
    ok: int = 0
    unparsed: int = 0
    failed: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class JudgeClient:
    """Batched, cached, retrying judge over the ``openai`` client (one thread per in-flight request)."""

    def __init__(self, config: JudgeConfig, *, sleep: Callable[[float], None] = time.sleep,
                 fail_soft: bool = False):
        self.config = config
        self.cache = VerdictCache(config.cache_dir) if config.cache_dir else None
        self.stats = JudgeStats()
        self.fail_soft = fail_soft
        self.fatal: str | None = None  # set by the first refusal under fail_soft; later requests skip
        self._lock = threading.Lock()
        self._sleep = sleep
        self._rng = random.Random()
        self._url = config.endpoint + "/chat/completions"
        import openai  # imported here: lm_eval processes that never judge do not pay for it

        # Retries are ours (counted, Retry-After honoured, jittered backoff), so the client's are off.
        # A keyless local server (vLLM, llama.cpp) gets a placeholder: the client insists on a key.
        self._api = openai.OpenAI(api_key=config.api_key or "no-key", base_url=config.base_url,
                                  timeout=config.timeout, max_retries=0)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    # --------------------------------------------------------------- transport
    def _call(self, url: str, fn: Callable[[], Any]) -> Any:
        """Run one ``openai`` client call; its errors sorted into `_Retryable` / `_Fatal`."""
        import openai

        try:
            return fn()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            raise _Fatal(f"judge endpoint {url} refused the credentials "
                         f"(HTTP {err.status_code}); check KICK_JUDGE_API_KEY") from None
        except openai.APIStatusError as err:
            code = err.status_code
            if code in RETRY_STATUS or code >= 500:
                retry_after = _retry_after_seconds(err.response.headers.get("retry-after"))
                raise _Retryable(f"HTTP {code}", retry_after) from None
            hint = (f"; is KICK_JUDGE_MODEL={self.config.model!r} served there and the base URL "
                    "right (it usually ends in /v1)?" if code == 404 else "")
            raise _Fatal(f"judge endpoint {url} answered HTTP {code}: "
                         f"{err.response.text[:200]!r}{hint}", status=code) from None
        except openai.APIConnectionError as err:  # includes APITimeoutError
            cause = err.__cause__ or err
            raise _Retryable(f"transport error: {type(cause).__name__}: {cause}") from None
        except (openai.APIResponseValidationError, ValueError) as err:
            raise _Retryable(f"malformed response body ({type(err).__name__})") from None

    def _post_once(self, messages: list[dict], max_tokens: int | None = None) -> str:
        """One chat-completions call through the ``openai`` client; errors sorted into retry / fatal."""
        self._count("http_requests")
        completion = self._call(self._url, lambda: self._api.chat.completions.create(
            model=self.config.model, messages=messages, temperature=self.config.temperature,
            max_tokens=max_tokens or self.config.max_tokens, n=1))
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise _Retryable(f"malformed response body {str(completion)[:80]!r}") from None
        if not isinstance(content, str):
            raise _Retryable("response message has no text content")
        return content

    def complete(self, messages: list[dict]) -> str:
        """The judge's reply text, retrying transient failures; raises RuntimeError when out of tries."""
        return self._retrying(lambda: self._post_once(messages))

    def _retrying(self, attempt_once: Callable[[], Any]) -> Any:
        last = "no attempt"
        for attempt in range(self.config.max_retries + 1):
            try:
                return attempt_once()
            except _Retryable as err:
                last = str(err)
                if attempt == self.config.max_retries:
                    break
                delay = min(self.config.max_backoff, self.config.backoff * 2 ** attempt)
                delay *= 1.0 + 0.25 * self._rng.random()
                if err.retry_after is not None:
                    delay = min(self.config.max_backoff, max(err.retry_after, delay * 0.1))
                self._count("retries")
                log.debug("judge request failed (%s); retry %d in %.2fs", last, attempt + 1, delay)
                self._sleep(delay)
        raise RuntimeError(f"judge gave no usable reply after {self.config.max_retries + 1} "
                           f"attempts; last error: {last}")

    def check(self) -> str:
        """Raise `JudgeConfigError` unless the endpoint takes our key (and serves the model).

        Asks ``GET /models`` (free); where an endpoint has no listing (404/405/501) one
        completion of one token is sent instead. Returns ``"models"`` or ``"completion"``.
        """
        import openai

        def list_models():
            try:
                return self._api.models.list()
            except openai.APIStatusError as err:
                if err.status_code in (404, 405, 501):
                    return None
                raise

        try:
            listing = self._retrying(lambda: self._call(self.config.endpoint + "/models", list_models))
            if listing is None:
                self._retrying(lambda: self._post_once(
                    [{"role": "user", "content": "Reply with the single word OK."}], max_tokens=1))
                return "completion"
        except _Fatal as err:
            raise JudgeConfigError(str(err)) from None
        except RuntimeError as err:
            raise JudgeConfigError(
                f"judge endpoint {self.config.endpoint} is not reachable ({err}); start it, fix "
                "KICK_JUDGE_BASE_URL, or set KICK_JUDGE_DISABLE=1 to run without judge scores") from None
        served = [getattr(m, "id", None) for m in getattr(listing, "data", None) or []]
        if served and self.config.model not in served:
            log.warning("judge endpoint %s does not list model %r (it lists %s); requests may fail",
                        self.config.endpoint, self.config.model, served[:10])
        return "models"

    # --------------------------------------------------------------- one request
    def _settings(self) -> dict:
        return {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}

    def _key(self, request: JudgeRequest) -> str:
        return verdict_key(self.config.model, request.messages, request.answers, self._settings(),
                           endpoint=self.config.endpoint)

    def judge_one(self, request: JudgeRequest) -> JudgeResult:
        key = self._key(request)
        if self.cache is not None:
            record = self.cache.get(key)
            # Only parsed verdicts are reused: an unreadable reply may be a passing fault, so a
            # rerun asks again (records written by older versions with status 'unparsed' too).
            if record is not None and record.get("status") == "ok":
                self._count("cache_hits")
                self._count("ok")
                return JudgeResult(**{**record, "cached": True})
        if self.fatal is not None:
            self._count("failed")
            return JudgeResult("failed", reason=f"not sent: {self.fatal}")
        try:
            return self._ask(request, key)
        except _Fatal as err:
            if not self.fail_soft:
                raise
            with self._lock:
                first = self.fatal is None
                self.fatal = self.fatal or str(err)
            if first:
                log.error("%s; the remaining judge requests are counted as judge_failed", err)
            self._count("failed")
            return JudgeResult("failed", reason=str(err))

    def _ask(self, request: JudgeRequest, key: str) -> JudgeResult:
        parse = PARSERS[request.kind]
        try:
            reply = self.complete(request.messages)
            parsed, reformatted = parse(reply), False
            if not parsed.ok:
                self._count("reformat_retries")
                first_reason = parsed.reason
                reply = self.complete(with_reminder(request.messages, reply, request.kind))
                parsed, reformatted = parse(reply), True
                if not parsed.ok:
                    parsed = Parsed(None, f"{first_reason}; after reminder: {parsed.reason}")
        except RuntimeError as err:
            self._count("failed")
            log.warning("%s", err)
            return JudgeResult("failed", reason=str(err))
        result = JudgeResult("ok" if parsed.ok else "unparsed", parsed.value, parsed.reason,
                             reply, reformatted=reformatted)
        self._count(result.status)
        if self.cache is not None and result.status == "ok":
            self.cache.put(key, {"status": result.status, "value": result.value,
                                 "reason": result.reason, "reply": result.reply,
                                 "reformatted": result.reformatted})
        return result

    # --------------------------------------------------------------- batch
    def run(self, requests: list[JudgeRequest], desc: str = "judge") -> list[JudgeResult]:
        """Answer every request (same order), at most ``config.concurrency`` in flight.

        Identical requests (same messages, answers and judge settings) are sent once and
        share the verdict, so a run's request count does not depend on thread timing.
        """
        if not requests:
            return []
        first_of: dict[str, int] = {}
        source = [first_of.setdefault(self._key(r), i) for i, r in enumerate(requests)]
        copies = Counter(source)
        answered: dict[int, JudgeResult] = {}
        with ThreadPoolExecutor(max_workers=self.config.concurrency,
                                thread_name_prefix="kick-judge") as pool, \
                tqdm(total=len(requests), desc=desc, disable=None) as bar:
            futures = {pool.submit(self.judge_one, requests[i]): i for i in sorted(copies)}
            try:
                for future, i in futures.items():
                    answered[i] = future.result()
                    bar.update(copies[i])
            except _Fatal:
                for f in futures:
                    f.cancel()
                raise
        return [answered[j] for j in source]



_checked: dict[tuple[str, str, str], str] = {}
_check_lock = threading.Lock()


def check_endpoint(config: JudgeConfig) -> str:
    """`JudgeClient.check` once per process for each (model, endpoint, key); raises `JudgeConfigError`."""
    ident = (config.model, config.endpoint, hashlib.sha256((config.api_key or "").encode()).hexdigest())
    with _check_lock:
        if ident not in _checked:
            _checked[ident] = JudgeClient(config).check()
        return _checked[ident]
