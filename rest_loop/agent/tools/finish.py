"""The finish tool: the agent gives its final answer with it, and the rollout stops there.

The Environment's `finish` names this tool (Environment.is_finish); the loop reads the answer
from the call's arguments, so run() only echoes it back as the last observation.

    >>> Finish().run(answer="42")
    '42'
"""

from __future__ import annotations

from rest_loop.agent.tools.base import Tool


class Finish(Tool):
    name = "finish"
    description = "Give your final answer. Call this once you know the answer; it ends the episode."
    parameters = {
        "type": "object",
        "properties": {"answer": {"type": "string", "description": "The final answer, as short as possible."}},
        "required": ["answer"],
    }

    def run(self, answer: str) -> str:
        return answer
