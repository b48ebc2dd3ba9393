"""The shipped example files stay valid and complete."""

import re
from pathlib import Path

from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_documents_every_variable_the_code_reads() -> None:
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    source = (ROOT / "bot" / "config.py").read_text()
    read = set(re.findall(r'env(?:\.get)?\(\s*"([A-Z_]+)"', source))
    read |= set(re.findall(r'_(?:int|float|bool)\(env, "([A-Z_]+)"', source))
    assert read, "the pattern no longer finds the variables"
    assert read <= documented, f"undocumented: {sorted(read - documented)}"


def test_env_example_holds_placeholders_only() -> None:
    text = (ROOT / ".env.example").read_text()
    assert not re.search(r"hf_[A-Za-z0-9]{30,}", text)
    assert not re.search(r"[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}", text)


def test_models_example_loads() -> None:
    env = {
        "DISCORD_TOKEN": "x",
        "HUGGINGFACE_ENDPOINT": "https://e.example",
        "MODELS_FILE": str(ROOT / "models.example.toml"),
    }
    settings = Settings.from_env(env)
    assert {"llama-3.2-3b", "unlearning-to-rest", "qwen-2.5-7b", "my-base-model"} == set(
        settings.models
    )
