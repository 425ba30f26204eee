"""The agent's tools, one file each; the Environment (rest_loop/agent/env.py) runs them.

    base.py        Tool (what a tool declares) and ToolResult (what a call gives back)
    search.py      Search: BM25 over a local JSONL corpus (bm25s), index cached by content
    calculator.py  Calculator: arithmetic parsed with ast, never eval'd
    finish.py      Finish: the final answer; the rollout stops on it
"""

from rest_loop.agent.tools.base import Tool, ToolResult, ToolStatus

__all__ = ["Tool", "ToolResult", "ToolStatus"]
