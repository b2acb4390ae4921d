"""Real processes sharing one credential file: the flock makes exactly one of them refresh."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from ccproxy.testing.fake_oauth import FakeOAuth

from .helpers import soon, write_claude_file

SCRIPT = """
import asyncio, json, sys
from ccproxy.auth import TokenManager, get_provider
from ccproxy.testing.fake_oauth import fake_claude_settings

async def main():
    mgr = TokenManager(get_provider("claude", fake_claude_settings(sys.argv[1])))
    cred = await mgr.get()
    print(json.dumps({"token": cred.access_token, "refreshed": mgr.refresh_count}))

asyncio.run(main())
"""


async def test_three_processes_one_refresh(home: Path, oauth_url: str, fake: FakeOAuth) -> None:
    fake.claude.refresh_delay = 1.5  # all three are waiting on the lock while the first refreshes
    path = home / ".claude" / ".credentials.json"
    write_claude_file(path, fake.claude.issue_tokens(), expires_at=soon())
    env = {**os.environ, "HOME": str(home)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", SCRIPT, oauth_url, env=env, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    outputs = [json.loads((await p.communicate())[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert fake.claude.refresh_attempts == 1
    assert sum(o["refreshed"] for o in outputs) == 1
    assert len({o["token"] for o in outputs}) == 1
    assert json.loads(path.read_text())["claudeAiOauth"]["accessToken"] == outputs[0]["token"]
