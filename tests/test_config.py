"""Configuration: environment parsing, the model catalogue and the problem list."""

from pathlib import Path

import pytest

from bot.config import ConfigError, Settings
from tests.conftest import TEST_TOKEN, make_settings

ENV = {
    "DISCORD_TOKEN": "d",
    "HUGGINGFACE_API_TOKEN": TEST_TOKEN,
    "HUGGINGFACE_ENDPOINT": "https://abc.eu-west-1.aws.endpoints.huggingface.cloud",
}


def test_defaults_give_the_brief_catalogue() -> None:
    settings = Settings.from_env(ENV)
    assert list(settings.models) == ["llama-3.2-3b", "unlearning-to-rest"]
    llama = settings.models["llama-3.2-3b"]
    assert llama.hub_id == "meta-llama/Llama-3.2-3B-Instruct"
    assert llama.api == "chat"
    assert dict(llama.parameters) == {"max_new_tokens": 500, "temperature": 0.7, "top_p": 0.9}
    assert settings.models["unlearning-to-rest"].hub_id == "martindisley/unlearning-to-rest"
    assert settings.default_model == "llama-3.2-3b"
    assert settings.database_path == Path("hfcord.sqlite3")


def test_unlearning_endpoint_falls_back_to_the_standard_one() -> None:
    settings = Settings.from_env(ENV)
    assert settings.models["unlearning-to-rest"].endpoint == ENV["HUGGINGFACE_ENDPOINT"]
    own = Settings.from_env({**ENV, "HUGGINGFACE_ENDPOINT_UNLEARNING": "https://other.example"})
    assert own.models["unlearning-to-rest"].endpoint == "https://other.example"
    assert own.models["llama-3.2-3b"].endpoint == ENV["HUGGINGFACE_ENDPOINT"]


def test_every_problem_is_listed_at_once() -> None:
    env = {
        "HISTORY_MAX_MESSAGES": "many",
        "HF_TIMEOUT_SECONDS": "-3",
        "DEFAULT_MODEL": "gpt-9",
        "LOG_LEVEL": "chatty",
        "DISCORD_GUILD_ID": "my-server",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    problems = caught.value.problems
    text = str(caught.value)
    assert any("DISCORD_TOKEN" in p for p in problems)
    assert sum("no endpoint" in p for p in problems) == 2
    assert any("HISTORY_MAX_MESSAGES" in p for p in problems)
    assert any("HF_TIMEOUT_SECONDS" in p for p in problems)
    assert any("DEFAULT_MODEL" in p for p in problems)
    assert any("LOG_LEVEL" in p for p in problems)
    assert any("DISCORD_GUILD_ID" in p for p in problems)
    assert ".env.example" in text


def test_check_mode_does_not_need_a_discord_token() -> None:
    env = {k: v for k, v in ENV.items() if k != "DISCORD_TOKEN"}
    with pytest.raises(ConfigError):
        Settings.from_env(env)
    assert Settings.from_env(env, require_discord=False).discord_token is None


def test_blank_values_count_as_missing() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**ENV, "DISCORD_TOKEN": "  ", "HUGGINGFACE_ENDPOINT": ""})
    assert any("DISCORD_TOKEN" in p for p in caught.value.problems)


def test_describe_never_shows_tokens_or_paths() -> None:
    settings = Settings.from_env(
        {**ENV, "HUGGINGFACE_ENDPOINT": "https://abc.endpoints.huggingface.cloud/secret/path"}
    )
    lines = settings.describe()
    assert lines[0] == "Hugging Face API: Configured"
    joined = "\n".join(lines)
    assert TEST_TOKEN not in joined
    assert "abc.endpoints.huggingface.cloud" in joined
    assert "/secret/path" not in joined
    no_token = Settings.from_env({k: v for k, v in ENV.items() if k != "HUGGINGFACE_API_TOKEN"})
    assert no_token.describe()[0] == "Hugging Face API: Not configured"


def test_models_file_adds_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        """
[[models]]
name = "llama-3.2-3b"
endpoint = "https://llama.example/v1"
parameters = { temperature = 0.2 }

[[models]]
name = "qwen-2.5-7b"
label = "Qwen 2.5 7B Instruct"
hub_id = "Qwen/Qwen2.5-7B-Instruct"
endpoint = "https://router.huggingface.co/v1"
api = "chat"
parameters = { max_new_tokens = 800, top_p = 0.8 }

[[models]]
name = "old-style"
hub_id = "gpt2/gpt2"
endpoint = "https://gpt2.example"
api = "text"
parameters = { stop = ["###"] }
""",
        encoding="utf-8",
    )
    settings = make_settings(MODELS_FILE=str(path), DEFAULT_MODEL="qwen-2.5-7b")
    llama = settings.models["llama-3.2-3b"]
    assert llama.endpoint == "https://llama.example/v1"
    assert llama.parameters["temperature"] == 0.2
    assert llama.parameters["max_new_tokens"] == 500  # kept from the default entry
    assert llama.hub_id == "meta-llama/Llama-3.2-3B-Instruct"
    qwen = settings.models["qwen-2.5-7b"]
    assert (qwen.label, qwen.hub_id, qwen.parameters["max_new_tokens"]) == (
        "Qwen 2.5 7B Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
        800,
    )
    assert settings.models["old-style"].stop == ("###",)
    assert settings.model(None).name == "qwen-2.5-7b"
    assert settings.model("nope").name == "qwen-2.5-7b"


def test_models_file_can_replace_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        'replace_defaults = true\n[[models]]\nname = "only"\nhub_id = "a/b"\n'
        'endpoint = "http://127.0.0.1:1"\n',
        encoding="utf-8",
    )
    settings = make_settings(MODELS_FILE=str(path))
    assert list(settings.models) == ["only"]
    assert settings.default_model == "only"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('name = "x"\nendpoint = "https://x.example"', "needs 'hub_id'"),
        ('name = "x"\nhub_id = "llama3.2:3b"\nendpoint = "https://x.example"', "Ollama"),
        ('name = "x"\nhub_id = "a/b"\nendpoint = "ftp://x.example"', "http(s) URL"),
        ('name = "x"\nhub_id = "a/b"\nendpoint = "https://x.example"\napi = "rpc"', "api must"),
        (
            'name = "x"\nhub_id = "a/b"\nendpoint = "https://x.example"\n'
            "parameters = { top_p = 1.0 }",
            "top_p",
        ),
        (
            'name = "x"\nhub_id = "a/b"\nendpoint = "https://x.example"\napi = "text"\n'
            "parameters = { temperature = 0 }",
            "temperature must be > 0",
        ),
        (
            'name = "x"\nhub_id = "a/b"\nendpoint = "https://x.example"\n'
            'parameters = { stop = ["a", "b", "c", "d"] }',
            "at most 3",
        ),
        (
            'name = "x"\nhub_id = "a/b"\nendpoint = "https://x.example"\n'
            "parameters = { max_new_tokens = 0 }",
            "max_new_tokens",
        ),
        ('name = "x"\nhub_id = "a/b"\nendpoint = "https://x.example"\ncolour = "red"', "colour"),
        ('name = "Bad Name"\nhub_id = "a/b"\nendpoint = "https://x.example"', "lower-case"),
    ],
)
def test_models_file_problems(tmp_path: Path, entry: str, expected: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f"[[models]]\n{entry}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        make_settings(MODELS_FILE=str(path))
    assert expected in str(caught.value)


def test_models_file_missing_or_broken(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        make_settings(MODELS_FILE=str(tmp_path / "absent.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[[models]\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot be read"):
        make_settings(MODELS_FILE=str(broken))


def test_numbers_and_paths_are_read() -> None:
    settings = make_settings(
        HISTORY_MAX_MESSAGES="7",
        HISTORY_MAX_CHARS="900",
        HF_TIMEOUT_SECONDS="12.5",
        DATABASE_PATH="data/x/hf.db",
        SYSTEM_PROMPT="Be brief.",
        DISCORD_GUILD_ID="1234",
        LOG_LEVEL="debug",
    )
    assert settings.history_messages == 7
    assert settings.history_chars == 900
    assert settings.request_timeout == 12.5
    assert settings.database_path == Path("data/x/hf.db")
    assert settings.system_prompt == "Be brief."
    assert settings.sync_guild_id == 1234
    assert settings.log_level == "DEBUG"


def test_problems_and_repr_never_show_tokens() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**ENV, "HUGGINGFACE_ENDPOINT": TEST_TOKEN})  # pasted in the wrong place
    assert TEST_TOKEN not in str(caught.value)
    settings = Settings.from_env({**ENV, "DISCORD_TOKEN": "discord-secret"})
    assert TEST_TOKEN not in repr(settings) and "discord-secret" not in repr(settings)
