"""The Java→Python prompt: one Python function in a fenced block (overridable with a template
file holding ``{java}``; ``{name}`` and ``{entry_point}`` are filled too)."""

from __future__ import annotations

from nose.model.generation import PromptConfig

SYSTEM = "You are an expert programmer who translates code between languages."
TEMPLATE = ("Translate the following Java function to Python 3. Keep the function name in "
            "snake_case, use only the standard library, and answer with the Python function "
            "in one ```python code block.\n\n```java\n{java}\n```")

PROMPT = PromptConfig(TEMPLATE, SYSTEM, cue="\n\nPython:\n", required="java")
