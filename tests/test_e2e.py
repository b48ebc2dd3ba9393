"""End to end: the real bot (HFCord, its cogs, its store) against a loopback Discord and HF."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.client import HFCord
from bot.render import fences_balanced, split_message
from tests import fakehf
from tests.conftest import TEST_TOKEN
from tests.e2e import EPHEMERAL, MANAGE_MESSAGES, World, running

# --- chat -------------------------------------------------------------------------------


async def test_mention_gets_a_reply(world: World, bot: HFCord) -> None:
    reply = await world.ask(world.general, world.alice, "Hi there!")
    assert reply.content == "Hello from Llama."
    assert reply.referenced is not None and reply.referenced.author.id == world.alice.id
    assert reply.allowed_mentions is not None and reply.pinged == set()
    assert world.emu.typing[world.general.id] == 0  # an instant answer needs no "typing…"
    request = world.last_request()
    assert request["messages"][-1] == {"role": "user", "content": "Hi there!"}  # mention gone
    assert request["messages"][0]["role"] == "system"
    assert world.hf.requests[-1].headers["Authorization"] == f"Bearer {TEST_TOKEN}"


async def test_typing_shows_while_a_slow_model_works(world: World, bot: HFCord) -> None:
    release = world.hf.hold("done")
    await world.emu.user_message(world.general, world.alice, "slow one", mention_bot=True)
    await world.emu.wait_for(lambda: world.emu.typing[world.general.id] >= 1)
    release.set()
    await world.emu.wait_for_bot_message(world.general)
    assert await bot.conversation.drain(5)
    calls = [r for r in world.emu.requests if f"/channels/{world.general.id}/" in r]
    # "typing…" never follows the answer (it would linger for seconds).
    assert calls[-1].endswith("/messages") and calls[-2].endswith("/typing")


async def test_conversation_continues(world: World, bot: HFCord) -> None:
    world.hf.queue_replies("Nice to meet you, Alice.", "Your name is Alice.")
    await world.ask(world.general, world.alice, "My name is Alice.")
    reply = await world.ask(world.general, world.alice, "What is my name?")
    assert reply.content == "Your name is Alice."
    assert [m["content"] for m in world.last_request()["messages"][1:]] == [
        "My name is Alice.",
        "Nice to meet you, Alice.",
        "What is my name?",
    ]


async def test_several_people_are_told_apart(world: World, bot: HFCord) -> None:
    await world.ask(world.general, world.alice, "I like tea.")
    await world.ask(world.general, world.bob, "And I like coffee.")
    contents = [m["content"] for m in world.last_request()["messages"][1:]]
    assert contents == ["alice: I like tea.", "Hello from Llama.", "bob: And I like coffee."]


async def test_channels_are_isolated(world: World, bot: HFCord) -> None:
    await world.ask(world.general, world.alice, "secret in general")
    await world.ask(world.random, world.alice, "hello random")
    assert [m["content"] for m in world.last_request()["messages"][1:]] == ["hello random"]


async def test_replies_to_the_bot_and_dms_are_answered(world: World, bot: HFCord) -> None:
    first = await world.ask(world.general, world.alice, "Tell me a fact.")
    # A reply pings the replied-to author by default, which lets the bot read it.
    await world.emu.user_message(world.general, world.alice, "more!", reply_to=first)
    second = await world.emu.wait_for_bot_message(world.general)
    assert second.referenced is not None and second.referenced.content == "more!"
    assert world.last_request()["messages"][-1]["content"] == "more!"
    dm = world.emu.dm_channel(world.bob)
    await world.emu.user_message(dm, world.bob, "psst, in private")
    answer = await world.emu.wait_for_bot_message(dm)
    assert answer.content == "Hello from Llama."
    assert world.last_request()["messages"][-1]["content"] == "psst, in private"


async def test_reply_without_the_mention_gets_a_hint(world: World, bot: HFCord) -> None:
    first = await world.ask(world.general, world.alice, "Hello")
    requests = len(world.hf.requests)
    await world.emu.user_message(
        world.general, world.alice, "no ping reply", reply_to=first, ping_reply=False
    )
    hint = await world.emu.wait_for_bot_message(world.general)
    assert "could not read your reply" in hint.content
    assert len(world.hf.requests) == requests


async def test_other_bots_and_itself_are_ignored(world: World, bot: HFCord) -> None:
    await world.emu.user_message(world.general, world.robot, "hey bot", mention_bot=True)
    await world.ask(world.general, world.alice, "only me")
    # The robot's message came first; only Alice's reached the model, and the bot's own
    # messages (which Discord echoes back over the gateway) started nothing.
    assert len(world.hf.requests) == 1
    assert len(world.emu.bot_messages(world.general)) == 1


async def test_empty_mention_and_attachment_only(world: World, bot: HFCord) -> None:
    note = await world.ask(world.general, world.alice, "   ")
    assert "without a question" in note.content
    await world.emu.user_message(
        world.general, world.alice, "", mention_bot=True, attachments=["photo.png"]
    )
    note = await world.emu.wait_for_bot_message(world.general)
    assert "no text in your message" in note.content
    assert "skipped photo.png: I can only read text files" in note.content
    assert world.hf.requests == []


async def test_long_answer_is_split_into_valid_messages(world: World, tmp_path: Path) -> None:
    code = "\n".join(f"    total += values[{i}]  # accumulate" for i in range(60))
    prose = "All work and no play makes Jack a dull boy. " * 45
    answer = f"{prose}\n\n```python\ndef f(values):\n    total = 0\n{code}\n```\n\n{prose}"
    assert len(answer) > 4500
    world.hf.reply = answer
    models = tmp_path / "models.toml"
    # Room for the whole answer: the stand-in cuts at max_tokens like a real endpoint.
    models.write_text('[[models]]\nname = "llama-3.2-3b"\nparameters = { max_new_tokens = 3000 }\n')
    async with running(world, MODELS_FILE=str(models)) as bot:
        await world.emu.user_message(world.general, world.alice, "long one", mention_bot=True)
        await world.hf.wait_for_requests(1)
        assert await bot.conversation.drain(5)  # the turn is posted and recorded
        history = await bot.store.history(world.general.id)
    messages = world.emu.bot_messages(world.general)
    assert [m.content for m in messages] == split_message(answer)
    assert len(messages) == 4
    assert all(len(m.content) <= 2000 for m in messages)
    assert all(fences_balanced(m.content) for m in messages)
    assert " ".join(m.content for m in messages).split()[:40] == answer.split()[:40]
    assert any(m.content.startswith("```python\n") for m in messages[1:])
    assert messages[0].referenced is not None
    assert history[-1].content == answer.strip()  # the whole answer, recorded once


async def test_model_output_pings_nobody(world: World, bot: HFCord) -> None:
    role = world.emu.add_role(world.guild, "everyone-role", mentionable=True)
    world.hf.reply = (
        f"@everyone @here look! <@{world.bob.id}> and <@&{role.id}> and <@{world.alice.id}>"
    )
    reply = await world.ask(world.general, world.alice, "ping people")
    assert "@everyone" in reply.content
    assert reply.pinged == set()


async def test_burst_in_one_channel_is_answered_in_order(world: World, bot: HFCord) -> None:
    world.hf.responder = lambda body: "answer to " + body["messages"][-1]["content"]
    asked = [
        await world.emu.user_message(world.general, world.alice, f"q{i}", mention_bot=True)
        for i in range(5)
    ]
    replies = await world.emu.wait_for(
        lambda: (m := world.emu.bot_messages(world.general)) and len(m) == 5 and m
    )
    assert [r.content for r in replies] == [f"answer to q{i}" for i in range(5)]
    assert [r.referenced for r in replies] == asked
    assert world.hf.max_in_flight == 1  # one turn at a time per channel
    # Each turn saw the previous ones.
    assert len(world.hf.requests[-1].json["messages"]) == 1 + 8 + 1


async def test_a_slow_channel_does_not_hold_up_another(world: World, bot: HFCord) -> None:
    release = world.hf.hold("done", only="slow")
    await world.emu.user_message(world.general, world.alice, "slow", mention_bot=True)
    await world.hf.wait_for_requests(1)
    fast = await world.ask(world.random, world.bob, "fast")
    assert fast.content == "done" and world.emu.bot_messages(world.general) == []
    release.set()
    assert (await world.emu.wait_for_bot_message(world.general)).content == "done"


async def test_token_never_reaches_discord(world: World, bot: HFCord) -> None:
    echo = {"error": f"Bad request header Authorization: Bearer {TEST_TOKEN}"}
    world.hf.add_faults(fakehf.status(422, json=echo))
    note = await world.ask(world.general, world.alice, "leak?")
    assert "Bad request header Authorization: [redacted]" in note.content
    assert TEST_TOKEN not in note.content


async def test_forbidden_channel_is_survived(
    world: World, bot: HFCord, caplog: pytest.LogCaptureFixture
) -> None:
    world.emu.forbidden_channels.add(world.random.id)
    for text in ("can you talk?", "hello?"):
        await world.emu.user_message(world.random, world.alice, text, mention_bot=True)
    reply = await world.ask(world.general, world.alice, "and here?")
    assert reply.content == "Hello from Llama."
    assert await bot.conversation.drain(5)
    # Nobody saw those answers, so nothing was recorded; the refusal was logged once.
    assert await bot.store.history(world.random.id) == []
    refusals = [r for r in caplog.records if "Cannot post in channel" in r.getMessage()]
    assert len(refusals) == 1 and str(world.random.id) in refusals[0].getMessage()


# --- slash commands ---------------------------------------------------------------------


async def test_commands_are_registered(world: World, bot: HFCord) -> None:
    commands = {c["name"]: c for c in world.emu.commands[None]}
    assert set(commands) == {"model", "reset"}
    assert {o["name"] for o in commands["model"]["options"]} == {"list", "set", "current"}
    assert int(commands["reset"]["default_member_permissions"]) == MANAGE_MESSAGES


async def test_model_set_switches_the_endpoint(world: World, bot: HFCord) -> None:
    await world.ask(world.general, world.alice, "before")
    ix = await world.emu.invoke_slash(
        world.general, world.mod, "model", subcommand="set", options={"name": "unlearning-to-rest"}
    )
    response = await ix.wait_response()
    assert response.type == 4 and response.at < 3
    assert "Unlearning to Rest" in response.data["content"]
    assert not response.data.get("flags", 0) & EPHEMERAL  # the channel sees the switch
    reply = await world.ask(world.general, world.alice, "after")
    assert reply.content == "Hello from Unlearning."
    assert world.last_request(world.unlearning)["model"] == "martindisley/unlearning-to-rest"
    assert len(world.hf.requests) == 1
    # Other channels keep the default.
    assert (await world.ask(world.random, world.alice, "x")).content == "Hello from Llama."

    current = await world.emu.invoke_slash(
        world.general, world.alice, "model", subcommand="current"
    )
    assert "Unlearning to Rest" in (await current.wait_response()).data["content"]
    listing = await world.emu.invoke_slash(world.general, world.alice, "model", subcommand="list")
    data = (await listing.wait_response()).data
    assert data["flags"] & EPHEMERAL
    assert "`meta-llama/Llama-3.2-3B-Instruct`" in data["content"]
    assert "`martindisley/unlearning-to-rest`" in data["content"]
    assert "This channel uses **Unlearning to Rest**" in data["content"]


async def test_model_set_needs_manage_messages(world: World, bot: HFCord) -> None:
    ix = await world.emu.invoke_slash(
        world.general,
        world.alice,
        "model",
        subcommand="set",
        options={"name": "unlearning-to-rest"},
    )
    response = await ix.wait_response()
    assert "Manage Messages" in response.data["content"]
    assert response.data["flags"] & EPHEMERAL
    assert (await bot.store.channel(world.general.id)).model is None


async def test_model_set_unknown_name(world: World, bot: HFCord) -> None:
    ix = await world.emu.invoke_slash(
        world.general, world.mod, "model", subcommand="set", options={"name": "gpt-9"}
    )
    content = (await ix.wait_response()).data["content"]
    assert "no model called `gpt-9`" in content and "`llama-3.2-3b`" in content


async def test_model_autocomplete_puts_current_first(world: World, bot: HFCord) -> None:
    await bot.store.set_model(world.general.id, "unlearning-to-rest")
    choices = await world.emu.autocomplete(
        world.general, world.alice, "model", subcommand="set", option="name", value=""
    )
    assert [c["value"] for c in choices] == ["unlearning-to-rest", "llama-3.2-3b"]
    assert "current" in choices[0]["name"]
    narrowed = await world.emu.autocomplete(
        world.general, world.alice, "model", subcommand="set", option="name", value="llama"
    )
    assert [c["value"] for c in narrowed] == ["llama-3.2-3b"]


async def test_reset_excludes_earlier_turns(world: World, bot: HFCord) -> None:
    await world.ask(world.general, world.alice, "remember the number 7")
    await world.ask(world.general, world.alice, "and 8")
    assert await bot.conversation.drain(5)  # both turns recorded
    ix = await world.emu.invoke_slash(world.general, world.mod, "reset")
    response = await ix.wait_response()
    assert "4 earlier messages set aside" in response.data["content"]
    await world.ask(world.general, world.alice, "what numbers?")
    assert [m["content"] for m in world.last_request()["messages"][1:]] == ["what numbers?"]
    assert await bot.conversation.drain(5)
    assert len(await bot.store.history(world.general.id)) == 6  # nothing deleted
    denied = await world.emu.invoke_slash(world.general, world.alice, "reset")
    assert "Manage Messages" in (await denied.wait_response()).data["content"]


async def test_commands_answer_quickly_while_the_model_is_slow(world: World, bot: HFCord) -> None:
    release = world.hf.hold("finally")
    await world.emu.user_message(world.general, world.alice, "think hard", mention_bot=True)
    await world.hf.wait_for_requests(1)
    started = time.monotonic()
    for name, sub in (("model", "list"), ("model", "current"), ("reset", None)):
        user = world.mod if name == "reset" else world.alice
        ix = await world.emu.invoke_slash(world.general, user, name, subcommand=sub)
        assert (await ix.wait_response(timeout=3)).at < 3
    assert time.monotonic() - started < 3
    release.set()
    await world.emu.wait_for_bot_message(world.general, lambda m: m.content == "finally")


# --- restarts ---------------------------------------------------------------------------


async def test_restart_keeps_history_model_and_reset(world: World) -> None:
    async with running(world) as bot:
        await world.ask(world.general, world.alice, "old news")
        await (await world.emu.invoke_slash(world.general, world.mod, "reset")).wait_response()
        await world.ask(world.general, world.alice, "remember: blue")
        ix = await world.emu.invoke_slash(
            world.general,
            world.mod,
            "model",
            subcommand="set",
            options={"name": "unlearning-to-rest"},
        )
        await ix.wait_response()
    syncs = _command_syncs(world)
    assert syncs == 1

    async with running(world) as bot:
        assert _command_syncs(world) == 1  # definitions unchanged: no second sync
        reply = await world.ask(world.general, world.alice, "what colour?")
        assert reply.content == "Hello from Unlearning."
        assert [m["content"] for m in world.last_request(world.unlearning)["messages"][1:]] == [
            "remember: blue",
            "Hello from Llama.",
            "what colour?",
        ]
        assert await bot.conversation.drain(5)
        assert len(await bot.store.history(world.general.id)) == 6

    async with running(world, force_sync=True):
        assert _command_syncs(world) == 2  # `python -m bot sync` forces it


def _command_syncs(world: World) -> int:
    return sum(1 for r in world.emu.requests if r.startswith("PUT ") and r.endswith("/commands"))


async def test_sync_to_one_server_when_configured(world: World) -> None:
    async with running(world, DISCORD_GUILD_ID=str(world.guild.id)):
        puts = [r for r in world.emu.requests if r.startswith("PUT ")]
        assert puts == [
            f"PUT /api/v10/applications/{world.emu.application_id}/guilds/{world.guild.id}/commands"
        ]


async def test_a_long_catalogue_is_listed_in_several_messages(world: World, tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        "".join(
            f'[[models]]\nname = "model-{i}"\nhub_id = "org/model-{i}"\n'
            f'endpoint = "{world.hf.url}"\ndescription = "{"A fine model. " * 8}"\n'
            for i in range(30)
        )
    )
    async with running(world, MODELS_FILE=str(models)):
        ix = await world.emu.invoke_slash(world.general, world.alice, "model", subcommand="list")
        first = (await ix.wait_response()).data["content"]
        followups = await ix.wait_followups(1)
    texts = [first, *(m.content for m in followups)]
    assert all(len(t) <= 2000 for t in texts) and len(texts) >= 2
    assert all(f"`model-{i}`" in "".join(texts) for i in range(30))


async def test_no_model_call_where_the_bot_may_not_post(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    readonly = world.emu.add_guild("read-only")
    readonly.roles[readonly.id].permissions &= ~(1 << 11)  # @everyone loses Send Messages
    announcements = world.emu.add_text_channel(readonly, "announcements")
    world.emu.add_member(readonly, world.alice)
    async with running(world) as bot:
        for text in ("hello?", "anyone?"):
            await world.emu.user_message(announcements, world.alice, text, mention_bot=True)
        # Handled in order: once the general channel answers, both were looked at.
        reply = await world.ask(world.general, world.alice, "and here?")
        assert reply.content == "Hello from Llama."
        assert await bot.conversation.drain(5)
    assert len(world.hf.requests) == 1  # only the general channel's message reached a model
    assert world.emu.bot_messages(announcements) == []
    refusals = [r.getMessage() for r in caplog.records if "Cannot post" in r.getMessage()]
    assert len(refusals) == 1 and "no Send Messages" in refusals[0]
