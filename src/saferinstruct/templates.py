"""Prompt templates shared by training and generation, so the reversed model is prompted exactly as it was trained."""

from __future__ import annotations

from typing import Literal

# The instruction-induction template of Safer-Instruct / Humpback-style backtranslation: the response is the prompt,
# the instruction the completion.
REVERSE_PROMPT = (
    "Below is a response to a certain instruction. Write the instruction that the response is trying to complete.\n\n"
    "### Response:\n{response}\n\n### Instruction:\n"
)

# The same task as a chat turn, for the chat-template variant (params: train_reverse.template = chat).
REVERSE_CHAT_SYSTEM = "You write the instruction that a given response is answering. Reply with the instruction only."

ReverseTemplate = Literal["paper", "chat"]


def reverse_prompt(response: str) -> str:
    return REVERSE_PROMPT.format(response=response.strip())


def reverse_messages(response: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": REVERSE_CHAT_SYSTEM},
            {"role": "user", "content": f"Response:\n{response.strip()}\n\nWrite the instruction."}]
