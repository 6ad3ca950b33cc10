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
