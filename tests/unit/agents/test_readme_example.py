"""The README's worked agent example runs as its `wiretide agents test` line says: given the settings
on that line, the agent runs to the end over a server error and a success, logs the error, queues its
webhook (offline: not sent) and marks the entries — it never stops on a missing setting."""

from __future__ import annotations

import re
from pathlib import Path

from wiretide.agents.replay import replay

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_agent_example_runs_with_the_settings_its_test_line_gives() -> None:
    text = README.read_text(encoding="utf-8")
    source = re.search(r"cat > five-xx\.js <<'JS'\n(.*?)\nJS\n", text, re.DOTALL)
    line = re.search(r"^wiretide agents test five-xx\.js (.*)$", text, re.MULTILINE)
    assert source and line
    env = dict(pair.split("=", 1) for pair in re.findall(r"--env (\S+)", line.group(1)))
    entries = [
        {
            "id": "e1",
            "timestamp": 10**18,
            "protocol": "http",
            "status": 503,
            "path": "/pay",
            "summary": "POST /pay",
        },
        {
            "id": "e2",
            "timestamp": 10**18 + 1,
            "protocol": "http",
            "status": 200,
            "path": "/",
            "summary": "GET /",
        },
    ]
    result = replay(source.group(1), [entries], env=env)
    assert result.error == ""
    assert (result.passed, result.failed) == (1, 1)
    assert result.marks == {"e1": "fail", "e2": "pass"}
    assert [x.text for x in result.lines] == [
        "server error 503 /pay",
        "webhook POST https://hooks.example/abc: not sent (offline)",
    ]
