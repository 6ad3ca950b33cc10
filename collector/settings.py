"""The one settings object for HouseStyle, read from `HOUSESTYLE_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob HouseStyle has. Each field is also `HOUSESTYLE_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="HOUSESTYLE_", env_file=None, extra="ignore")

    # --- where state lives -------------------------------------------------------------
    home: Path = Field(Path(".housestyle"), description="Folder for the database, exports, base models and adapters.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the store; default a SQLite file under HOME. Postgres: postgresql://..."
    )

    # --- the company's voice --------------------------------------------------------------
    company_name: str = Field("GadgetCorp", description="Company the assistant speaks for.")
    system_prompt: str = Field(
        "You are a helpful customer support assistant for 'GadgetCorp'.",
        description="System prompt applied to every exported conversation and every generation.",
    )
    public_model_name: str = Field(
        "gadgetcorp-assistant", description="Stable model name clients use; adapter versions change behind it."
    )

    # --- data hygiene (collector export) --------------------------------------------------
    order_id_pattern: str = Field(r"\b(?:GC|ORD)-?\d{5,10}\b", description="Regex for order ids to redact.")
    account_id_pattern: str = Field(r"\bACC-?\d{4,10}\b", description="Regex for account ids to redact.")
    max_macro_copies: int = Field(20, description="Keep at most this many copies of an identical canned reply.")
    phone_region: str = Field(
        "US", description="Country (ISO 3166 alpha-2) assumed for phone numbers written without a +country code."
    )
    export_workers: int = Field(
        0, description="Processes that redact PII during a large export; 0: one per CPU core, 1: no extra processes."
    )
    max_message_chars: int = Field(
        20_000, description="Longest message (characters) `housestyle import` accepts; a longer one makes its line a bad "
        "line. The service's own limit on a customer message is 8,000."
    )
    near_duplicate_threshold: float = Field(
        0.8, description="Word-bigram Jaccard similarity (0..1) from which two conversations count as near duplicates."
    )

    # --- the plugin service (housestyle serve) ------------------------------------------------
    default_reply_mode: str = Field(
        "assist", description="Reply mode of channels not in CHANNEL_MODES: assist (agent reviews first) or auto."
    )
    channel_modes: dict[str, str] = Field(
        default_factory=dict, description='Reply mode per channel, JSON, e.g. {"web": "auto", "chatwoot": "assist"}.'
    )
    widget_origins: list[str] = Field(
        default_factory=list, description='Web origins allowed to call the API from a browser (CORS), JSON list.'
    )
    rate_limit_per_second: float = Field(20.0, description="Requests per second each API key may make on average.")
    rate_limit_burst: int = Field(40, description="Requests an API key may make at once before the rate limit bites.")
    max_request_bytes: int = Field(1_000_000, description="Largest request body the service accepts (413 above).")
    key_cache_seconds: float = Field(
        2.0, description="How long the service trusts a checked API key before asking the store again (revocation delay)."
    )
    claim_ttl_seconds: int = Field(300, description="How long an agent's claim on a draft lasts before others may take it.")
    reply_max_tokens: int = Field(256, description="Longest reply, in tokens, the assistant drafts for a customer.")
    reply_temperature: float = Field(
        0.0, description="Sampling temperature of the assistant's drafts; 0 is greedy: the replies the adapter learned."
    )
    retry_after_seconds: int = Field(5, description="Retry-After sent with 503 while no model server is ready.")
    chatwoot_url: str | None = Field(None, description="Base URL of your Chatwoot, e.g. https://chatwoot.example.com.")
    chatwoot_api_token: str | None = Field(None, description="The agent bot's access token (api_access_token header).")
    chatwoot_webhook_token: str | None = Field(
        None, description="Shared secret Chatwoot sends as ?token= on the bot's webhook URL; required to accept events."
    )
    chatwoot_edit_threshold: float = Field(
        0.5,
        description="Similarity (0..1: 1 - normalised edit distance) from which an agent's Chatwoot reply counts as an "
        "edit of the pending draft; below it the reply was written from scratch and the draft counts as rejected.",
    )

    # --- serving (vLLM with LoRA; serving/) ----------------------------------------------------
    base_model: str | None = Field(
        None, description="Path or hub id of the base model vLLM serves; default HOME/models/base."
    )
    vllm_urls: str | None = Field(
        None,
        description="Attach mode: comma-separated base URLs of vLLM servers already running (e.g. GPU/TP deployments); "
        "unset: HouseStyle starts and supervises its own vLLM.",
    )
    vllm_api_key: str | None = Field(
        None, description="API key vLLM requires on /v1 routes; unset in managed mode: a random one per start."
    )
    vllm_port: int | None = Field(None, description="Port of the first managed vLLM server; unset: a free port.")
    vllm_replicas: int = Field(1, description="How many vLLM servers to start in managed mode.")
    vllm_extra_args: str = Field(
        "", description="Extra vLLM command-line flags for managed servers, shell-quoted, e.g. '--max-model-len 2048'."
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, description="vLLM's --gpu-memory-utilization (the CPU build needs 0.3; raise it on a GPU)."
    )
    vllm_cpu_kvcache_gib: int = Field(1, description="KV cache size in GiB for the CPU build of vLLM.")
    vllm_start_timeout_s: float = Field(600.0, description="Give up on a managed vLLM that is not healthy by then.")
    max_lora_rank: int = Field(16, description="Largest LoRA rank vLLM accepts (--max-lora-rank); higher ranks are refused.")
    max_loras: int = Field(
        4, description="Adapters vLLM keeps at once (--max-loras); live + canary + one being swapped in need 3."
    )
    health_interval_s: float = Field(2.0, description="Seconds between health checks of each vLLM replica.")
    canary_share: float = Field(0.1, description="Default share (0..1) of new conversations routed to a canary version.")
    swap_drain_timeout_s: float = Field(
        600.0, description="How long a swap waits for requests on the old version to finish before unloading it anyway."
    )

    # --- training and evaluation (trainer/) ----------------------------------------------------
    cpu_threads: int = Field(
        1,
        description="Threads torch may use when training, generating or evaluating on CPU; 0: one per core. 1 is the "
        "safe default: on a shared or busy machine extra threads spin-wait on each other and run 5-20x slower.",
    )

    # --- the feedback loop (plugin/refresh.py, plugin/scheduler.py) ------------------------------
    train_preset: str = Field(
        "default", description="Training preset for refreshes: default (real 1-8B models) or tiny (the demo base)."
    )
    refresh_interval_minutes: float | None = Field(
        None, description="`housestyle serve` refreshes this often (minutes); unset: no timed refresh."
    )
    refresh_min_new_reviews: int | None = Field(
        None, description="`housestyle serve` refreshes once this many new reviews arrived since the last refresh."
    )
    refresh_eval_limit: int = Field(64, description="Held-out replies scored per version in a refresh's evaluation.")
    gate_min_chrf_gain: float = Field(
        1.0, description="A candidate must beat the live version's held-out chrF by at least this many points."
    )
    gate_min_loss_gain: float = Field(
        0.0, description="A candidate's held-out loss must be at least this much lower than the live version's."
    )
    gate_golden_tolerance: float = Field(
        2.0, description="A candidate may score at most this many chrF points below the live version on the golden set."
    )
    refresh_canary_share: float = Field(
        0.0, description="0: a refresh that passes the gate promotes at once; above 0: it starts a canary at this share."
    )
    rollback_margin: float = Field(
        0.05, description="Automatic rollback when the live version's correction rate is worse than the previous one's "
        "by more than this (0..1) ..."
    )
    rollback_alpha: float = Field(0.05, description="... at this significance (one-sided two-proportion z-test) ...")
    rollback_min_reviews: int = Field(30, description="... once both versions have at least this many reviews.")

    @property
    def resolved_database_url(self) -> str:
        """The store URL: the configured one, else a SQLite file inside HOME."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'housestyle.db').resolve()}"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
