"""`python -m bot`: configuration errors at start and the connection check."""

import asyncio
import os
import sys
from pathlib import Path

from tests import fakehf
from tests.conftest import TEST_TOKEN

ROOT = Path(__file__).resolve().parent.parent


async def run_bot(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run `python -m bot ARGS` with only env (plus PATH), return exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode()


async def test_missing_configuration_stops_with_one_message(tmp_path: Path) -> None:
    code, out = await run_bot(env={"HF_TIMEOUT_SECONDS": "soon"}, cwd=tmp_path)
    assert code == 2
    assert out.startswith("hfcord cannot start")
    assert "DISCORD_TOKEN" in out and "HUGGINGFACE_ENDPOINT" in out
    assert "HF_TIMEOUT_SECONDS" in out and ".env.example" in out
    assert "Traceback" not in out


async def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "HUGGINGFACE_ENDPOINT=http://127.0.0.1:9\nHF_TIMEOUT_SECONDS=oops\n", encoding="utf-8"
    )
    code, out = await run_bot(env={}, cwd=tmp_path)
    assert code == 2 and "HF_TIMEOUT_SECONDS" in out and "no endpoint" not in out
    code, out = await run_bot(env={"HF_TIMEOUT_SECONDS": "5"}, cwd=tmp_path)
    assert code == 2 and "HF_TIMEOUT_SECONDS" not in out and "DISCORD_TOKEN" in out


async def test_check_reports_each_model_without_leaking_the_token(tmp_path: Path) -> None:
    async with (
        fakehf.FakeHF(token=TEST_TOKEN) as good,
        fakehf.FakeHF(token=TEST_TOKEN) as cold,
    ):
        cold.add_faults(*[fakehf.loading()] * 3)
        env = {
            "HUGGINGFACE_API_TOKEN": TEST_TOKEN,
            "HUGGINGFACE_ENDPOINT": good.url,
            "HUGGINGFACE_ENDPOINT_UNLEARNING": cold.url,
        }
        code, out = await run_bot("check", env=env, cwd=tmp_path)
    assert code == 1, out
    assert "Hugging Face API: Configured" in out
    assert "OK  llama-3.2-3b" in out and ": reachable:" in out
    assert "ERR unlearning-to-rest" in out and ": cold:" in out
    assert "127.0.0.1" in out
    assert TEST_TOKEN not in out


async def test_check_needs_no_discord_token_and_flags_a_bad_token(tmp_path: Path) -> None:
    async with fakehf.FakeHF(token=TEST_TOKEN) as hf:
        env = {"HUGGINGFACE_API_TOKEN": "hf_wrong", "HUGGINGFACE_ENDPOINT": hf.url}
        code, out = await run_bot("check", env=env, cwd=tmp_path)
    assert code == 1
    assert out.count(": unauthorized:") == 2
    assert "hf_wrong" not in out
